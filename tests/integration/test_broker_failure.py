"""A broker dies behind the gateway while a producer and a consumer group use it.

One idempotent producer (acks=all) and one consumer in a group live through a
SIGKILL of the leader of partition 0 (replication factor 3, min.insync.replicas
2, so every acknowledged record is on a surviving replica). Through the
gateway, both must follow the new leaders on their own connections:

- no loss: every record the producer saw acknowledged is consumed;
- no duplicate in the log: each value is at exactly one offset (idempotence
  survives the producer's retries through the gateway);
- order: per partition, offsets follow the order the values were produced in,
  and the consumer sees offsets strictly increasing within each assignment
  (it never re-reads or skips while its assignment holds).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from tests.gateway_harness import running_gateway
from tests.integration.conftest import create_topic

pytestmark = pytest.mark.kafka

PARTITIONS = 6
BEFORE_KILL = 300  # acknowledged before the kill
IN_FLIGHT_AT_KILL = 120  # produced, not yet acknowledged, when the broker dies
AFTER_KILL = 300


@dataclass
class Acknowledged:
    """Delivery reports of the producer: (partition, offset) per value, or errors."""

    at: dict[str, tuple[int, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        with self.lock:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.at[msg.value().decode()] = (msg.partition(), msg.offset())


class RequestTimeouts:
    """librdkafka statistics: requests that timed out, summed over the client's brokers.

    A gateway that left a client's connection open after its broker died would make
    the client wait for its request timeout; one that closes it makes the client
    reconnect (to the new leader) at once, and no request times out.
    """

    def __init__(self) -> None:
        self.total = 0
        self.reports = 0

    def __call__(self, raw: str) -> None:
        brokers = json.loads(raw).get("brokers", {}).values()
        self.total = sum(int(b.get("req_timeouts", 0)) for b in brokers)
        self.reports += 1

    def settle(self, poll: Any) -> int:
        """The count in a report emitted after this call (``poll`` serves the callback)."""
        wanted = self.reports + 2
        deadline = time.monotonic() + 30
        while self.reports < wanted:
            assert time.monotonic() < deadline, "no statistics from the client"
            poll()
        return self.total


STATS_INTERVAL = {"statistics.interval.ms": 500}


class GroupConsumer(threading.Thread):
    """One consumer of a group, polling until stopped; keeps what it saw, in order."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.timeouts = RequestTimeouts()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"survivor-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "stats_cb": self.timeouts,
                **STATS_INTERVAL,
            }
        )
        self.consumer.subscribe([topic], on_assign=self._on_assign)
        #: (assignment generation, partition, offset, value) in the order received.
        self.seen: list[tuple[int, int, int, str]] = []
        self.errors: list[str] = []
        self.generation = 0
        self._stopping = threading.Event()

    def _on_assign(self, consumer: Consumer, partitions: list[Any]) -> None:
        self.generation += 1

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                msg = self.consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    if not msg.error().retriable():
                        self.errors.append(str(msg.error()))
                    continue
                item = (self.generation, msg.partition(), msg.offset(), msg.value().decode())
                self.seen.append(item)
        finally:
            self.consumer.close()

    def values(self) -> set[str]:
        return {value for *_, value in list(self.seen)}

    def stop(self) -> None:
        self._stopping.set()
        self.join(30)


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def produce(producer: Producer, topic: str, first: int, count: int) -> None:
    """Values numbered from ``first``, round-robin over the partitions; reports via poll."""
    for i in range(first, first + count):
        producer.produce(topic, value=f"v-{i:05d}".encode(), partition=i % PARTITIONS)
        producer.poll(0)


def test_a_producer_and_a_consumer_group_live_through_a_broker_kill(
    fresh_kafka_cluster: Any, tmp_path: Path
) -> None:
    cluster = fresh_kafka_cluster(brokers=3)
    topic = create_topic(
        cluster.bootstrap_servers,
        partitions=PARTITIONS,
        replication=3,
        **{"min.insync.replicas": "2"},
    )
    with running_gateway(tmp_path, cluster.bootstrap_servers) as gateway:
        acked = Acknowledged()
        producer_timeouts = RequestTimeouts()
        producer = Producer(
            {
                "bootstrap.servers": gateway.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.timeout.ms": 90000,
                "on_delivery": acked,
                "stats_cb": producer_timeouts,
                **STATS_INTERVAL,
            }
        )
        consumer = GroupConsumer(gateway.bootstrap, topic)
        consumer.start()
        try:
            produce(producer, topic, 0, BEFORE_KILL)
            assert producer.flush(60) == 0
            wait_until(lambda: len(consumer.seen) > 0, 60, "the consumer's first records")

            metadata = AdminClient({"bootstrap.servers": gateway.bootstrap}).list_topics(timeout=10)
            victim = metadata.topics[topic].partitions[0].leader
            produce(producer, topic, BEFORE_KILL, IN_FLIGHT_AT_KILL)
            cluster.kill_broker(victim)  # with records of the same producer in flight
            produce(producer, topic, BEFORE_KILL + IN_FLIGHT_AT_KILL, AFTER_KILL)
            assert producer.flush(90) == 0, "records neither acknowledged nor failed"

            total = BEFORE_KILL + IN_FLIGHT_AT_KILL + AFTER_KILL
            assert not acked.errors, acked.errors[:5]
            assert len(acked.at) == total
            wait_until(
                lambda: consumer.values() >= acked.at.keys(), 90, "every acknowledged record"
            )
            assert producer_timeouts.settle(lambda: producer.poll(0.1)) == 0
            assert consumer.timeouts.settle(lambda: time.sleep(0.1)) == 0
        finally:
            consumer.stop()

        assert not consumer.errors, consumer.errors[:5]
        check_log_and_consumption(acked, consumer.seen)

        # The clients moved off the dead broker: it leads nothing now, and the gateway
        # closed the sessions whose upstream was that broker.
        metadata = AdminClient({"bootstrap.servers": gateway.bootstrap}).list_topics(timeout=10)
        assert victim not in {p.leader for p in metadata.topics[topic].partitions.values()}
        gateway.wait_for_event(
            lambda e: (
                e.get("event") == "connection_closed"
                and e.get("broker") == victim
                and "upstream" in str(e.get("reason"))
            )
        )


def check_log_and_consumption(acked: Acknowledged, seen: list[tuple[int, int, int, str]]) -> None:
    # The log as consumed: one value per (partition, offset), one offset per value.
    log: dict[tuple[int, int], str] = {}
    for _, partition, offset, value in seen:
        assert log.setdefault((partition, offset), value) == value
    offsets_of: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for position, value in log.items():
        offsets_of[value].append(position)
    duplicated = {v: at for v, at in offsets_of.items() if len(at) > 1}
    assert not duplicated, f"written twice: {list(duplicated.items())[:5]}"
    # Acknowledged where it is: the delivery report's offset holds that value.
    misplaced = {v: at for v, at in acked.at.items() if log.get(at) != v}
    assert not misplaced, (
        f"acknowledged offsets not holding their value: {list(misplaced.items())[:5]}"
    )
    # Per partition, the log is in production order (the producer numbered the values).
    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for (partition, offset), value in sorted(log.items()):
        by_partition[partition].append((offset, value))
    for partition, entries in by_partition.items():
        values = [value for _, value in entries]
        assert values == sorted(values), f"partition {partition} out of production order"
    # The consumer never went back or skipped within one assignment.
    last: dict[tuple[int, int], int] = {}
    for generation, partition, offset, _ in seen:
        previous = last.get((generation, partition))
        assert previous is None or offset == previous + 1, (
            f"partition {partition}: offset {offset} after {previous} (assignment {generation})"
        )
        last[(generation, partition)] = offset
