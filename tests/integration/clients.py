"""Small helpers around the real client libraries, shared by the integration tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from kafka import KafkaConsumer


class StatsRecorder:
    """Collects librdkafka statistics: they list every broker address the client used."""

    def __init__(self) -> None:
        self.broker_addresses: set[str] = set()

    def __call__(self, raw: str) -> None:
        stats = json.loads(raw)
        for broker in stats.get("brokers", {}).values():
            if broker.get("nodeid", -1) >= 0 or broker.get("source") != "logical":
                self.broker_addresses.add(broker["nodename"])


def gateway_addresses(bootstrap: str, span: int = 16) -> set[str]:
    """The addresses of a test gateway: its bootstrap port and the broker ports after it."""
    host, port = bootstrap.rsplit(":", 1)
    return {f"{host}:{p}" for p in range(int(port), int(port) + span)}


def produce_values(
    bootstrap: str, topic: str, values: list[str], **config: Any
) -> list[tuple[int, int]]:
    """Produce and wait for every delivery; returns (partition, offset) of each."""
    delivered: list[tuple[int, int]] = []
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append((msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})
    for i, value in enumerate(values):
        producer.produce(topic, value=value.encode(), key=str(i).encode(), on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0, f"{remaining} messages not delivered"
    assert not errors, errors
    return delivered


def consume_values(
    bootstrap: str, topic: str, expected: int, group: str, timeout: float = 60, **config: Any
) -> list[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            **config,
        }
    )
    consumer.subscribe([topic])
    values: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error: {msg.error()}")
            values.append(msg.value().decode())
        consumer.commit(asynchronous=False) if values else None
    finally:
        consumer.close()
    return values


def values_on_broker(bootstrap: str, topic: str, timeout: float = 30) -> list[bytes]:
    """Every record value of ``topic``, read directly from Kafka (``bootstrap`` is the
    cluster's, not a gateway's) from each partition's start to its end offset.

    What a test asserts "was never written" must be checked here: a gateway that
    answered an error but forwarded the request anyway is caught only on the broker.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"broker-check-{topic}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        ends: dict[int, int] = {}
        assignment = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            if high > low:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, low))
        values: list[bytes] = []
        if not assignment:
            return values
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout
        while ends:
            assert time.monotonic() < deadline, f"{topic}: partitions {sorted(ends)} not read"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    ends.pop(msg.partition(), None)
                    continue
                raise AssertionError(f"reading {topic} on the broker: {msg.error()}")
            values.append(msg.value())
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
        return values
    finally:
        consumer.close()


@contextmanager
def kafka_python_group_read(
    bootstrap: str, topic: str, count: int
) -> Iterator[tuple[list[str], KafkaConsumer]]:
    """A kafka-python group member that read up to ``count`` values from the start and
    committed; yields ``(values, consumer)`` (to look at what it learnt of the
    cluster), then closes it."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"kp-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=20000,
    )
    try:
        received: list[str] = []
        for message in consumer:
            received.append(message.value.decode())
            if len(received) == count:
                break
        consumer.commit()
        yield received, consumer
    finally:
        consumer.close()
