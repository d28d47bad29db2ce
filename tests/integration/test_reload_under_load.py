"""Config reloads while real clients are working: quota meters carried across a reload,
and ``--workers 2`` reloading both workers under a running producer and consumer group.

Everything is decided by counting (throttled responses, records, error codes per
worker), never by how fast the machine is.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, ThrottleEvent
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic

from tests.gateway_harness import Event, RunningGateway, running_gateway
from tests.integration.test_authorization import confluent_sasl, create_topics, plain_listener
from tests.integration.test_config_reload import write_config
from tests.integration.test_quotas import authenticate
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka

RUN = uuid.uuid4().hex[:8]


def reload_and_wait(
    gateway: RunningGateway, workers: tuple[int | None, ...] = (None,)
) -> tuple[int, list[Event]]:
    """SIGHUP the gateway (the supervisor, with ``--workers``) and wait until each of
    ``workers`` (None: a single-process gateway) logged ``config_reloaded``; returns the
    log mark taken before the signal and those events."""
    mark = gateway.log_mark()
    gateway.reload()
    reloaded = [
        gateway.wait_for_event(
            lambda e, w=worker: (
                e.get("event") in {"config_reloaded", "config_reload_rejected"}
                and e.get("worker") == w
            ),
            after=mark,
        )
        for worker in workers
    ]
    assert all(e["event"] == "config_reloaded" for e in reloaded), reloaded
    return mark, reloaded


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --------------------------------------------------------------------------------------
# Quota meters are carried across a reload

#: A long window: a meter holds a burst for SAMPLES seconds (Kafka's ``Rate`` divides by
#: at least (SAMPLES - 1) s until the oldest sample expires), far longer than the burst,
#: the reload and the requests after it take together.
SAMPLES, SAMPLE_MS = 30, 1000
PRODUCE_QUOTA = 8 * 1024  # bob's produced bytes per second
#: What a fresh meter lets through before it throttles.
FRESH_CREDIT = int((SAMPLES - 1) * SAMPLE_MS / 1000 * PRODUCE_QUOTA)
BATCH = 16384
VALUE = b"q" * 1000


def quota_config(alice_produce_quota: int) -> dict[str, Any]:
    return {
        "window": {"samples": SAMPLES, "sample_ms": SAMPLE_MS},
        "clients": [
            {"principal": "User:bob", "produce_bytes_per_second": PRODUCE_QUOTA},
            {"principal": "User:alice", "produce_bytes_per_second": alice_produce_quota},
        ],
    }


@dataclass
class ThrottledProducer:
    """A confluent-kafka producer that counts acknowledged bytes and the throttled
    responses it got (``throttle_cb``: each response with ``throttle_time_ms`` > 0)."""

    producer: Producer = field(init=False)
    acked_bytes: int = 0
    throttles: list[float] = field(default_factory=list)
    #: acknowledged bytes when each throttled response was reported
    acked_at_throttle: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, gateway: RunningGateway, user: str, client_id: str) -> ThrottledProducer:
        self = cls()
        self.producer = Producer(
            {
                "bootstrap.servers": gateway.bootstrap,
                **confluent_sasl(user, client_id),
                "linger.ms": 5,
                "batch.size": BATCH,
                "compression.type": "none",  # the quota counts what is on the wire
                "queue.buffering.max.kbytes": 64,  # a throttle holds the loop back at once
                "max.in.flight.requests.per.connection": 1,  # overshoot a throttle by one batch
                "throttle_cb": self._on_throttle,
                "error_cb": lambda err: self.errors.append(str(err)),
            }
        )
        return self

    def _on_throttle(self, event: ThrottleEvent) -> None:
        if event.throttle_time > 0:
            self.throttles.append(event.throttle_time)
            self.acked_at_throttle.append(self.acked_bytes)

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None and err.code() != KafkaError._PURGE_QUEUE:
            self.errors.append(str(err))
        elif err is None:
            self.acked_bytes += len(msg.value())

    def stop_producing(self) -> None:
        """Drop the records still queued, wait for those sent (a throttle was reported)."""
        self.producer.purge(in_queue=True, in_flight=False)
        self.flush()

    def produce(self, topic: str) -> None:
        try:
            self.producer.produce(topic, VALUE, on_delivery=self._on_delivery)
        except BufferError:
            self.producer.poll(0.01)
        self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(60) == 0, "records not delivered within 60 s"
        self.producer.poll(0.1)  # serve any callback still queued
        assert self.errors == [], self.errors


def throttled_event(gateway: RunningGateway, after: int, client_id: str) -> Event:
    return gateway.wait_for_event(
        lambda e: (
            e.get("event") == "throttled"
            and e.get("principal") == "User:bob"
            and e.get("client_id") == client_id
            and e.get("quota") == "produce_bytes_per_second"
        ),
        after=after,
        timeout=15,
    )


def test_a_throttled_producer_stays_throttled_across_a_reload(
    kafka_cluster,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """bob produces until his byte-rate meter throttles him; a reload that changes only
    alice's quota must leave his meter as it is: his very next Produce after the reload
    (a thousand bytes, against a fresh meter's FRESH_CREDIT) is throttled, and so is the
    first Produce of a new connection of his."""
    topic = f"reload-quota-{RUN}"
    create_topics(kafka_cluster.bootstrap_servers, [topic], partitions=1)
    with running_gateway(
        tmp_path,
        kafka_cluster.bootstrap_servers,
        listener=plain_listener(["alice", "bob"]),
        cluster={"quotas": quota_config(alice_produce_quota=PRODUCE_QUOTA)},
        log_level="info",
    ) as gateway:
        burst = ThrottledProducer.start(gateway, "bob", "meter-burst")
        started = time.monotonic()
        mark = gateway.log_mark()
        while not burst.throttles:
            assert burst.acked_bytes < 4 * FRESH_CREDIT, f"{burst.acked_bytes} bytes, no throttle"
            assert time.monotonic() - started < 60, f"{burst.acked_bytes} bytes in 60 s"
            burst.produce(topic)
        burst.stop_producing()
        # Throttled once past a fresh meter's credit, not before (two batches of slack).
        assert burst.acked_at_throttle[0] >= FRESH_CREDIT - 2 * BATCH, burst.acked_at_throttle
        throttled_event(gateway, mark, "meter-burst")

        # Reload a config that changes another principal's quota only.
        config = json.loads(gateway.config_path.read_text())
        config["virtual_clusters"][0]["quotas"] = quota_config(10 * PRODUCE_QUOTA)
        write_config(gateway, config)
        mark, _ = reload_and_wait(gateway)

        # The same (idle) producer: the response to its first Produce is throttled.
        throttles = len(burst.throttles)
        burst.produce(topic)
        burst.flush()
        elapsed = time.monotonic() - started
        assert len(burst.throttles) > throttles, (
            f"the first Produce after the reload was not throttled: the reload reset bob's "
            f"meter ({elapsed:.1f} s after the burst; the meter holds it for {SAMPLES} s)"
        )
        # A new connection of bob's shares the meter: its first Produce is throttled too.
        probe = ThrottledProducer.start(gateway, "bob", "meter-probe")
        probe.produce(topic)
        probe.flush()
        assert probe.throttles, "a new connection of bob's got a fresh meter after the reload"
        event = throttled_event(gateway, mark, "meter-probe")
        assert event["throttled_requests"] == 1 and event["delay_ms"] > 0, event
        assert event["limit"] == PRODUCE_QUOTA and event["rate"] > PRODUCE_QUOTA, event
        del burst, probe  # close their connections before the gateway stops


# --------------------------------------------------------------------------------------
# `--workers 2`: a reload reaches both workers while a producer and a consumer run

LOAD_TOPIC = f"reload-load-{RUN}"
#: Allowed to bob until the first reload revokes it.
REVOKED_TOPIC = f"reload-revoked-{RUN}"
GROUP = f"reload-load-group-{RUN}"
LOAD_PARTITIONS = 3
TOPIC_AUTHORIZATION_FAILED = 29


def load_authorization(revoked_topic_allowed: bool) -> dict[str, Any]:
    def rule(resource_type: str, name: str, operations: list[str]) -> dict[str, Any]:
        return {
            "principals": ["User:bob"],
            "resource_type": resource_type,
            "pattern_type": "literal",
            "resource_name": name,
            "operations": operations,
        }

    rules = [
        rule("topic", LOAD_TOPIC, ["Read", "Write", "Describe"]),
        rule("group", GROUP, ["Read", "Describe"]),
    ]
    if revoked_topic_allowed:
        rules.append(rule("topic", REVOKED_TOPIC, ["Write", "Describe"]))
    return {"default": "deny", "rules": rules}


def with_authorization(gateway: RunningGateway, authorization: dict[str, Any]) -> dict[str, Any]:
    config = json.loads(gateway.config_path.read_text())
    config["virtual_clusters"][0]["authorization"] = authorization
    return config


@dataclass
class Delivery:
    partition: int
    offset: int
    sequence: int


class RunningPair:
    """An idempotent producer and a consumer group member, each in its own thread,
    working through the gateway until :meth:`stop`.

    Every record's value is its sequence number; the producer keeps what was
    acknowledged, the consumer what it received, both with partition and offset.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.acked: list[Delivery] = []
        self.consumed: list[Delivery] = []
        self.errors: list[str] = []
        self._producing = threading.Event()
        self._consuming = threading.Event()
        self._threads = [
            threading.Thread(target=self._produce, name="pair-producer"),
            threading.Thread(target=self._consume, name="pair-consumer"),
        ]

    def __enter__(self) -> RunningPair:
        self._producing.set()
        self._consuming.set()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._producing.clear()
        self._consuming.clear()
        for thread in self._threads:
            thread.join(timeout=90)

    def stop_producing(self) -> None:
        self._producing.clear()
        self._threads[0].join(timeout=90)
        assert not self._threads[0].is_alive(), "the producer did not finish"

    def stop_consuming(self) -> None:
        self._consuming.clear()
        self._threads[1].join(timeout=90)
        assert not self._threads[1].is_alive(), "the consumer did not finish"

    def _error(self, who: str) -> Callable[[KafkaError], None]:
        return lambda err: self.errors.append(f"{who}: {err}")

    def _produce(self) -> None:
        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                self.errors.append(f"delivery: {err}")
            else:
                self.acked.append(Delivery(msg.partition(), msg.offset(), int(msg.value())))

        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                **confluent_sasl("bob", "reload-load-producer"),
                "enable.idempotence": True,
                "linger.ms": 5,
                "error_cb": self._error("producer"),
            }
        )
        sequence = 0
        while self._producing.is_set():
            producer.produce(
                LOAD_TOPIC,
                str(sequence).encode(),
                key=str(sequence).encode(),
                on_delivery=on_delivery,
            )
            sequence += 1
            producer.poll(0.01)  # about a hundred records a second
        if producer.flush(60) != 0:
            self.errors.append("producer: records not delivered within 60 s")

    def _consume(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                **confluent_sasl("bob", "reload-load-consumer"),
                "group.id": GROUP,
                "auto.offset.reset": "earliest",
                "error_cb": self._error("consumer"),
            }
        )
        consumer.subscribe([LOAD_TOPIC])
        try:
            while self._consuming.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        self.errors.append(f"consumer: {msg.error()}")
                    continue
                self.consumed.append(Delivery(msg.partition(), msg.offset(), int(msg.value())))
        finally:
            consumer.close()

    def wait_for_more(self, records: int) -> None:
        """Until ``records`` more records have been acknowledged and consumed."""
        acked, consumed = len(self.acked), len(self.consumed)
        wait_until(
            lambda: len(self.acked) >= acked + records and len(self.consumed) >= consumed + records,
            f"{records} more records through the gateway (errors: {self.errors})",
        )

    def assert_exactly_once_in_order(self) -> None:
        assert self.errors == [], self.errors
        counts = Counter(d.sequence for d in self.consumed)
        duplicates = {sequence: n for sequence, n in counts.items() if n > 1}
        assert not duplicates, f"consumed more than once: {duplicates}"
        missing = {d.sequence for d in self.acked} - counts.keys()
        assert not missing, f"{len(missing)} acknowledged records never consumed"
        assert len(self.consumed) == len(self.acked), "consumed records never acknowledged"
        by_partition: dict[int, list[Delivery]] = defaultdict(list)
        for delivery in self.consumed:
            by_partition[delivery.partition].append(delivery)
        for partition, deliveries in by_partition.items():
            offsets = [d.offset for d in deliveries]
            sequences = [d.sequence for d in deliveries]
            assert offsets == sorted(offsets), f"partition {partition}: offsets out of order"
            assert sequences == sorted(sequences), f"partition {partition}: records reordered"


def revoked_topic_answers(gateway: RunningGateway) -> dict[int, set[int]]:
    """Per worker, the error codes a fresh connection of bob's gets for a Metadata
    request naming REVOKED_TOPIC; new connections until both workers answered a few.

    The kernel spreads connections over the workers (SO_REUSEPORT); which worker served
    a connection is read from its ``authentication`` event (client address, worker).
    """
    request = MetadataRequest(
        topics=(MetadataRequestTopic(topic_id=uuid.UUID(int=0), name=REVOKED_TOPIC),),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    answers: dict[int, set[int]] = defaultdict(set)
    served: Counter[int] = Counter()
    mark = gateway.log_mark()
    for attempt in range(60):
        with RawKafkaConnection(gateway.bootstrap) as conn:
            host, port = conn.sock.getsockname()[:2]
            assert authenticate(conn, "bob") == 0
            error_code = conn.request(request, 10 + attempt).topics[0].error_code
        login = gateway.wait_for_event(
            lambda e, address=f"{host}:{port}": (
                e.get("event") == "authentication" and e.get("client_address") == address
            ),
            after=mark,
        )
        answers[login["worker"]].add(int(error_code))
        served[login["worker"]] += 1
        if served[0] >= 3 and served[1] >= 3:
            return dict(answers)
    raise AssertionError(f"60 connections and not 3 on each worker: {served}")


def worker_reload_events(gateway: RunningGateway, after: int) -> list[Event]:
    return [
        e
        for e in gateway.events(after)
        if e.get("event") in {"config_reloaded", "config_reload_rejected", "config_reload_failed"}
        and "worker" in e
    ]


def test_reloads_reach_both_workers_under_a_running_producer_and_consumer(
    kafka_cluster,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    create_topics(kafka_cluster.bootstrap_servers, [LOAD_TOPIC], partitions=LOAD_PARTITIONS)
    create_topics(kafka_cluster.bootstrap_servers, [REVOKED_TOPIC], partitions=1)
    with running_gateway(
        tmp_path,
        kafka_cluster.bootstrap_servers,
        cli_args=["--workers", "2"],
        listener=plain_listener(["bob"]),
        cluster={"authorization": load_authorization(revoked_topic_allowed=True)},
        log_level="info",
    ) as gateway:
        for worker in (0, 1):
            gateway.wait_for_event(
                lambda e, w=worker: e.get("event") == "brokers_discovered" and e.get("worker") == w
            )
        assert revoked_topic_answers(gateway) == {0: {0}, 1: {0}}

        with RunningPair(gateway.bootstrap) as pair:
            pair.wait_for_more(100)  # the consumer has joined its group

            # 1. SIGHUP to the supervisor: both workers apply the revocation.
            write_config(gateway, with_authorization(gateway, load_authorization(False)))
            mark, _ = reload_and_wait(gateway, workers=(0, 1))
            forwarded = [
                e for e in gateway.events(mark) if e.get("event") == "config_reload_forwarded"
            ]
            assert len(forwarded) == 1 and "worker" not in forwarded[0], forwarded
            assert revoked_topic_answers(gateway) == {
                0: {TOPIC_AUTHORIZATION_FAILED},
                1: {TOPIC_AUTHORIZATION_FAILED},
            }
            pair.wait_for_more(50)

            # 2. An invalid file: the supervisor rejects it, no worker ever sees it, and
            #    both keep the rules in force (the file would have allowed the topic again).
            invalid = with_authorization(gateway, load_authorization(True))
            invalid["virtual_clusters"][0]["authorization"]["rules"][2]["operations"] = ["Wirte"]
            write_config(gateway, invalid)
            mark = gateway.log_mark()
            gateway.reload()
            rejected = gateway.wait_for_event(
                lambda e: e.get("event") == "config_reload_rejected", after=mark
            )
            assert "worker" not in rejected, rejected
            assert revoked_topic_answers(gateway) == {
                0: {TOPIC_AUTHORIZATION_FAILED},
                1: {TOPIC_AUTHORIZATION_FAILED},
            }
            assert worker_reload_events(gateway, mark) == []
            pair.wait_for_more(50)

            # 3. `kafka-gateway reload --pid <supervisor>`: validated, then forwarded.
            write_config(gateway, with_authorization(gateway, load_authorization(True)))
            mark = gateway.log_mark()
            cli = gateway.reload_with_cli()
            assert cli.returncode == 0, cli.stderr
            for worker in (0, 1):
                gateway.wait_for_event(
                    lambda e, w=worker: (
                        e.get("event") == "config_reloaded" and e.get("worker") == w
                    ),
                    after=mark,
                )
            assert [e["event"] for e in worker_reload_events(gateway, mark)] == [
                "config_reloaded"
            ] * 2
            assert revoked_topic_answers(gateway) == {0: {0}, 1: {0}}
            pair.wait_for_more(50)

            pair.stop_producing()
            wait_until(
                lambda: len(pair.consumed) >= len(pair.acked),
                f"{len(pair.acked)} acknowledged records consumed (errors: {pair.errors})",
                timeout=60,
            )
            pair.stop_consuming()
        pair.assert_exactly_once_in_order()
        # No request of the pair was refused along the way (its rules never changed).
        assert [
            e
            for e in gateway.events()
            if e.get("event") == "authorization_denied"
            and e.get("client_id", "").startswith("reload-load-")
        ] == []
        assert gateway.process.poll() is None
