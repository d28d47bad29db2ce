"""Fetch-byte, request-rate and per-topic quotas end to end, and quota meters across a
reload, through a real gateway in front of real Kafka.

Each test counts work instead of timing it: a fresh meter lets through
``(samples - 1) * sample_ms * limit`` before it throttles (Kafka's ``Rate``), so a
client that goes on past that amount must be throttled, whatever the machine's speed.
The window here is long (10 samples of 1 s, like Kafka's default): a meter stays over
its limit for seconds after a burst, so a reload in between cannot hide behind the
meter's own decay.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from kio.schema.metadata.v12.request import MetadataRequest

from tests.gateway_harness import Event, RunningGateway, running_gateway
from tests.integration.clients import produce_values
from tests.integration.test_authorization import confluent_sasl, create_topics, plain_listener
from tests.integration.test_config_reload import reload_by_signal, write_config
from tests.integration.test_quotas import authenticate
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka

RUN = uuid.uuid4().hex[:8]
SEEDED = f"quota-seeded-{RUN}"  # fetched by alice
LIMITED = f"quota-limited-{RUN}"  # a per-topic produce quota
UNLIMITED = f"quota-unlimited-{RUN}"  # no quota at all

SAMPLES, SAMPLE_MS = 10, 1000
FETCH_QUOTA = 32 * 1024  # alice's fetched bytes per second
REQUEST_QUOTA = 5  # bob's requests per second
TOPIC_PRODUCE_QUOTA = 32 * 1024  # produced to LIMITED per second, all clients together
#: What a fresh meter lets through before it throttles, per unit of its limit.
FRESH_CREDIT_S = (SAMPLES - 1) * SAMPLE_MS / 1000
VALUE = b"e" * 1000
SEEDED_RECORDS = 2 * int(FETCH_QUOTA * FRESH_CREDIT_S) // len(VALUE)

QUOTAS: dict[str, Any] = {
    "window": {"samples": SAMPLES, "sample_ms": SAMPLE_MS},
    "clients": [
        {"principal": "User:alice", "fetch_bytes_per_second": FETCH_QUOTA},
        {"principal": "User:bob", "requests_per_second": REQUEST_QUOTA},
    ],
    "topics": [{"topic": LIMITED, "produce_bytes_per_second": TOPIC_PRODUCE_QUOTA}],
}

METADATA = MetadataRequest(
    topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False
)


@pytest.fixture(scope="module")
def quota_gateway(
    kafka_cluster,  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway]:
    bootstrap = kafka_cluster.bootstrap_servers
    create_topics(bootstrap, [SEEDED, LIMITED, UNLIMITED], partitions=1)
    produce_values(
        bootstrap, SEEDED, [VALUE.decode()] * SEEDED_RECORDS, **{"compression.type": "none"}
    )
    with running_gateway(
        tmp_path_factory.mktemp("quota-e2e-gateway"),
        bootstrap,
        listener=plain_listener(["alice", "bob", "admin"]),
        cluster={"quotas": QUOTAS},
        log_level="info",
    ) as gateway:
        yield gateway


class ThrottleStats:
    """librdkafka statistics: the largest throttle_time_ms any broker reported."""

    def __init__(self) -> None:
        self.max_ms = 0

    def __call__(self, raw: str) -> None:
        for broker in json.loads(raw).get("brokers", {}).values():
            self.max_ms = max(self.max_ms, int(broker.get("throttle", {}).get("max", 0)))


def throttled_events(gateway: RunningGateway, principal: str, quota: str) -> list[Event]:
    return [
        e
        for e in gateway.events()
        if e.get("event") == "throttled"
        and e.get("principal") == principal
        and e.get("quota") == quota
    ]


def test_a_consumer_over_its_fetch_quota_is_throttled(quota_gateway: RunningGateway) -> None:
    stats = ThrottleStats()
    consumer = Consumer(
        {
            "bootstrap.servers": quota_gateway.bootstrap,
            **confluent_sasl("alice", "quota-e2e-alice"),
            "group.id": f"quota-e2e-{RUN}",
            "fetch.max.bytes": 16384,
            "message.max.bytes": 16384,
            "max.partition.fetch.bytes": 16384,
            "statistics.interval.ms": 200,
            "stats_cb": stats,
        }
    )
    fetched = 0
    try:
        consumer.assign([TopicPartition(SEEDED, 0, 0)])
        deadline = time.monotonic() + 60
        while not (
            stats.max_ms > 0
            and throttled_events(quota_gateway, "User:alice", "fetch_bytes_per_second")
        ):
            assert time.monotonic() < deadline, (
                f"alice fetched {fetched} bytes ({fetched / FETCH_QUOTA:.1f} s of her quota) "
                f"and was never throttled; client saw {stats.max_ms} ms"
            )
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                fetched += len(msg.value())
                if fetched == SEEDED_RECORDS * len(VALUE):  # all of it: a throttle is due now
                    deadline = min(deadline, time.monotonic() + 5)
            elif msg is not None and msg.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(f"consumer error: {msg.error()}")
    finally:
        consumer.close()
    # Throttled once past the fresh meter's credit, not before (one fetch of slack).
    assert fetched >= FETCH_QUOTA * FRESH_CREDIT_S - 2 * 16384, fetched
    event = throttled_events(quota_gateway, "User:alice", "fetch_bytes_per_second")[0]
    assert "User:alice" in event["entity"] and event["limit"] == FETCH_QUOTA, event
    assert event["delay_ms"] > 0, event


def throttle_ms(response: Any) -> float:
    """A response's throttle_time_ms (kio decodes it as a timedelta)."""
    return float(response.throttle_time.total_seconds() * 1000)


def test_request_rate_is_throttled_and_the_meter_survives_a_reload(
    quota_gateway: RunningGateway,
) -> None:
    """bob sends Metadata requests until the gateway reports a throttle in the response;
    after a reload that keeps his quota, his very next request is still throttled (a
    reset meter would let ``FRESH_CREDIT_S * REQUEST_QUOTA`` requests through)."""
    credit = int(FRESH_CREDIT_S * REQUEST_QUOTA)
    with RawKafkaConnection(quota_gateway.bootstrap, timeout=30) as conn:
        assert authenticate(conn, "bob") == 0
        unthrottled = 0
        while throttle_ms(conn.request(METADATA, 100 + unthrottled)) == 0:
            unthrottled += 1
            assert unthrottled <= 3 * credit, f"{unthrottled} requests and no throttle"
        assert unthrottled >= credit - 2, f"throttled after only {unthrottled} requests"
        event = quota_gateway.wait_for_event(
            lambda e: (
                e.get("event") == "throttled"
                and e.get("principal") == "User:bob"
                and e.get("quota") == "requests_per_second"
            )
        )
        assert event["limit"] == REQUEST_QUOTA and event["delay_ms"] > 0, event

        # Reload a changed config that keeps bob's quota as it is.
        config = json.loads(quota_gateway.config_path.read_text())
        quotas = config["virtual_clusters"][0]["quotas"]
        quotas["clients"].append({"principal": "User:carol", "requests_per_second": 100})
        write_config(quota_gateway, config)
        assert reload_by_signal(quota_gateway)["event"] == "config_reloaded"

        assert throttle_ms(conn.request(METADATA, 900)) > 0, "the reload reset bob's meter"
    # A new connection of bob's is measured by the same meter.
    with RawKafkaConnection(quota_gateway.bootstrap, timeout=30) as again:
        assert authenticate(again, "bob") == 0
        assert throttle_ms(again.request(METADATA, 901)) > 0


def produce_until_throttled(
    gateway: RunningGateway, topic: str, client_id: str, max_bytes: int
) -> tuple[int, int]:
    """Produce as admin (no client quota) until librdkafka reports a throttle or
    ``max_bytes`` are acknowledged: (acknowledged bytes, largest throttle in ms)."""
    stats = ThrottleStats()
    acked: list[int] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is None:
            acked.append(len(msg.value()))

    producer = Producer(
        {
            "bootstrap.servers": gateway.bootstrap,
            **confluent_sasl("admin", client_id),
            "linger.ms": 5,
            "batch.size": 16384,
            "compression.type": "none",
            "queue.buffering.max.kbytes": 64,  # a throttle holds the loop back at once
            "statistics.interval.ms": 200,
            "stats_cb": stats,
        }
    )
    deadline = time.monotonic() + 60
    while stats.max_ms == 0 and sum(acked) < max_bytes:
        assert time.monotonic() < deadline, f"{sum(acked)} bytes acknowledged in 60 s"
        try:
            producer.produce(topic, VALUE, on_delivery=on_delivery)
        except BufferError:
            producer.poll(0.01)
        producer.poll(0)
    producer.purge(in_queue=True, in_flight=False)
    producer.flush(30)
    producer.poll(0.5)  # one more statistics report
    return sum(acked), stats.max_ms


def test_a_topic_quota_throttles_its_topic_only(quota_gateway: RunningGateway) -> None:
    credit = int(TOPIC_PRODUCE_QUOTA * FRESH_CREDIT_S)
    # Twice the credit to a topic without a quota: admin has no client quota either.
    produced, throttle_ms = produce_until_throttled(
        quota_gateway, UNLIMITED, "quota-e2e-unlimited", 2 * credit
    )
    assert throttle_ms == 0 and produced >= 2 * credit, (produced, throttle_ms)

    produced, throttle_ms = produce_until_throttled(
        quota_gateway, LIMITED, "quota-e2e-limited", 4 * credit
    )
    assert throttle_ms > 0, f"{produced} bytes to {LIMITED} and no throttle"
    assert produced >= credit - 2 * 16384, f"throttled after {produced} bytes"
    event = quota_gateway.wait_for_event(
        lambda e: (
            e.get("event") == "throttled"
            and e.get("principal") == "User:admin"
            and e.get("quota") == "produce_bytes_per_second"
        )
    )
    assert LIMITED in event["entity"] and event["limit"] == TOPIC_PRODUCE_QUOTA, event
