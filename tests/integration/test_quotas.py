"""Quotas at the gateway: producers are slowed the way Kafka slows them (KIP-219), never
failed; connection limits close what is over the limit and admit again below it.

How precise "slowed to the quota" can be: the gateway measures a windowed rate
(here 5 samples of 200 ms, a window of 0.8-1.0 s) and, like Kafka, delays a client
once a request pushes that rate over its limit. A fresh meter starts with 0.8 s of
credit, which a producer spends at once: that burst is excluded by measuring only
after a 1 s warm-up. Afterwards, the bytes let through in any window are the
limit times the window, plus whatever got past the limit before the delay took
hold. Kafka reads one request at a time from a connection and, once one is
throttled, reads nothing more until the delay is over, so that excess is at most
one request: with 16 KiB batches, measured over the following 10 s (10 windows),
the rate is within a few percent of the quota, and 10% is a safe tolerance.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.metadata.v12.request import MetadataRequest

from tests.gateway_harness import RunningGateway, running_gateway
from tests.integration.conftest import _wait_until_every_broker_knows
from tests.integration.test_authorization import (
    PASSWORDS,
    confluent_sasl,
    create_topics,
    log_has_no_password,
    plain_listener,
)
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka

LOW_QUOTA = 256 * 1024  # bytes/s: alice's and carol's
HIGH_QUOTA = 512 * 1024  # bytes/s: bob's, twice theirs (a client on a busy machine offers more)
WARM_UP_S = 1.0
MEASURE_S = 10.0
TOLERANCE = 0.10
MESSAGE = b"q" * 1000

RUN = uuid.uuid4().hex[:8]
TOPICS = {user: f"quota-{user}-{RUN}" for user in ("alice", "bob", "carol")}

QUOTAS = {
    "window": {"samples": 5, "sample_ms": 200},
    "clients": [
        {"principal": "User:alice", "produce_bytes_per_second": LOW_QUOTA},
        {"principal": "User:bob", "produce_bytes_per_second": HIGH_QUOTA},
        {"principal": "User:carol", "produce_bytes_per_second": LOW_QUOTA},
    ],
}


@pytest.fixture(scope="module")
def quota_gateway(
    kafka_cluster,  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway]:
    create_topics(kafka_cluster.bootstrap_servers, list(TOPICS.values()), partitions=1)
    with running_gateway(
        tmp_path_factory.mktemp("quota-gateway"),
        kafka_cluster.bootstrap_servers,
        listener=plain_listener(TOPICS),
        cluster={"quotas": QUOTAS},
        log_level="info",  # debug logs every request: not what is measured here
    ) as gateway:
        yield gateway


@dataclass
class ProducerRun:
    """What one producer saw: acknowledged (time, bytes), errors, and its broker stats."""

    user: str
    acked: list[tuple[float, int]] = field(default_factory=list)
    #: (broker's append time in seconds, bytes), on topics with LogAppendTime timestamps.
    appended: list[tuple[float, int]] = field(default_factory=list)
    errors: list[KafkaError] = field(default_factory=list)
    throttle_max_ms: int = 0
    throttle_avg_ms: float = 0.0
    started: float = 0.0

    def rate(self, start: float, end: float) -> float:
        """Acknowledged payload bytes per second between two points of the run."""
        acked = sum(size for at, size in self.acked if start <= at < end)
        return acked / (end - start)

    def measured_rate(self) -> float:
        begin = self.started + WARM_UP_S
        return self.rate(begin, begin + MEASURE_S)

    def broker_rate(self) -> float:
        """The measured rate on the broker's clock (when it appended each batch), which
        the client's thread scheduling cannot skew: the warm-up after the first append,
        then ``MEASURE_S``."""
        begin = min(at for at, _ in self.appended) + WARM_UP_S
        acked = sum(size for at, size in self.appended if begin <= at < begin + MEASURE_S)
        return acked / MEASURE_S

    def measured_on_broker(self) -> bool:
        """True once appends cover the warm-up and the measurement on the broker's clock."""
        if not self.appended:
            return False
        first, last = self.appended[0][0], self.appended[-1][0]
        return last >= first + WARM_UP_S + MEASURE_S

    def broker_report(self, quota: float) -> str:
        first = min(at for at, _ in self.appended)
        kib = [0] * int(WARM_UP_S + MEASURE_S + 1)
        for at, size in self.appended:
            if 0 <= at - first < len(kib):
                kib[int(at - first)] += size
        return (
            f"{self.user} produced {self.broker_rate():.0f} B/s (broker's clock) against a "
            f"quota of {quota:.0f} B/s; KiB appended per second: {[k // 1024 for k in kib]}"
        )

    def per_second_kib(self) -> list[int]:
        """For failure messages: KiB acknowledged in each second of the run."""
        seconds = int(WARM_UP_S + MEASURE_S)
        return [
            round(self.rate(self.started + i, self.started + i + 1) / 1024) for i in range(seconds)
        ]

    def within(self, quota: float) -> bool:
        return abs(self.measured_rate() - quota) <= TOLERANCE * quota

    def report(self, quota: float) -> str:
        return (
            f"{self.user} produced {self.measured_rate():.0f} B/s against a quota of "
            f"{quota:.0f} B/s; KiB per second: {self.per_second_kib()}"
        )

    def record_stats(self, raw: str) -> None:
        for broker in json.loads(raw).get("brokers", {}).values():
            throttle = broker.get("throttle", {})
            self.throttle_max_ms = max(self.throttle_max_ms, int(throttle.get("max", 0)))
            self.throttle_avg_ms = max(self.throttle_avg_ms, float(throttle.get("avg", 0)))


def produce_flat_out(
    gateway: RunningGateway,
    user: str,
    seconds: float,
    topic: str | None = None,
    until: Any = None,
    **client_config: Any,
) -> ProducerRun:
    """Produce as fast as the client lets us for ``seconds`` (or, with ``until``, until
    ``until(run)`` holds, at most ``seconds``); every ack is timestamped.

    Small batches (16 KiB) keep one request small against the quota, so the measured
    rate is not dominated by the granularity of a few huge requests.
    """
    run = ProducerRun(user)

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is None:
            run.acked.append((time.monotonic(), len(msg.value())))
            kind, timestamp_ms = msg.timestamp()
            if kind == TIMESTAMP_LOG_APPEND_TIME:
                run.appended.append((timestamp_ms / 1000, len(msg.value())))
        elif err.code() != KafkaError._PURGE_QUEUE:
            run.errors.append(err)

    producer = Producer(
        {
            "bootstrap.servers": gateway.bootstrap,
            **confluent_sasl(user, f"quota-{user}"),
            "linger.ms": 5,
            "batch.size": 16384,
            "queue.buffering.max.messages": 2000,
            "statistics.interval.ms": 500,
            "stats_cb": run.record_stats,
            "error_cb": run.errors.append,
            **client_config,
        }
    )
    run.started = time.monotonic()
    end = run.started + seconds
    while time.monotonic() < end and not (until is not None and until(run)):
        try:
            producer.produce(topic or TOPICS[user], MESSAGE, on_delivery=on_delivery)
        except BufferError:  # the local queue is full: the quota holds us back
            producer.poll(0.005)
            continue
        producer.poll(0)
    producer.purge(in_queue=True, in_flight=False)
    producer.flush(10)  # what is in flight still gets its acknowledgement
    producer.poll(1)  # one more statistics report
    return run


def test_a_producer_is_slowed_to_its_quota_and_sees_the_throttle(
    quota_gateway: RunningGateway,
) -> None:
    """A producer with librdkafka's defaults, which pipeline requests (many in flight).

    A broker reads the next request of a connection only after answering the previous
    one, and not before a throttle delay has passed (KIP-219): pipelining cannot carry
    a client past its quota. The gateway must hold pipelined requests back likewise.
    """
    carol = produce_flat_out(quota_gateway, "carol", WARM_UP_S + MEASURE_S)

    assert not carol.errors, carol.errors
    # The delay reaches the client as Kafka's throttle_time_ms (librdkafka's statistics).
    assert carol.throttle_max_ms > 0 and carol.throttle_avg_ms > 0, carol.report(LOW_QUOTA)
    throttled = quota_gateway.wait_for_event(
        lambda e: e.get("event") == "throttled" and e.get("principal") == "User:carol"
    )
    assert throttled["quota"] == "produce_bytes_per_second"
    assert throttled["client_id"] == "quota-carol"
    assert "User:carol" in throttled["entity"]
    assert throttled["delay_ms"] > 0
    assert carol.within(LOW_QUOTA), carol.report(LOW_QUOTA)


def create_log_append_time_topics(bootstrap: str, names: list[str]) -> None:
    """Topics whose records carry the broker's append time (the ack reports it)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"message.timestamp.type": "LogAppendTime"}
    new = [NewTopic(name, num_partitions=1, replication_factor=1, config=config) for name in names]
    for future in admin.create_topics(new).values():
        future.result(timeout=30)
    for name in names:
        _wait_until_every_broker_knows(bootstrap, name, 1)


def test_principals_are_held_to_their_own_quotas_at_the_same_time(
    quota_gateway: RunningGateway,
    kafka_cluster,  # type: ignore[no-untyped-def]
) -> None:
    """alice (256 KiB/s) and bob (512 KiB/s) at once: bob is not slowed to alice's rate.

    Two producers in one process share its time slices, so their acknowledgements are
    timed on the broker's clock (LogAppendTime), not by the client callbacks, and each
    produces until that clock covers the warm-up and the measurement.
    """
    topics = {user: f"quota-appended-{user}-{RUN}" for user in ("alice", "bob")}
    create_log_append_time_topics(kafka_cluster.bootstrap_servers, list(topics.values()))
    runs: dict[str, ProducerRun] = {}

    def produce(user: str) -> None:
        runs[user] = produce_flat_out(
            quota_gateway,
            user,
            seconds=60,  # a bound for a stuck producer; ``until`` ends a working one
            topic=topics[user],
            until=ProducerRun.measured_on_broker,
        )

    threads = [threading.Thread(target=produce, args=(user,)) for user in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert set(runs) == {"alice", "bob"}, "a producer thread failed"
    alice, bob = runs["alice"], runs["bob"]
    assert not alice.errors and not bob.errors, (alice.errors, bob.errors)
    assert alice.measured_on_broker() and bob.measured_on_broker(), "a producer stalled"
    assert alice.throttle_max_ms > 0 and bob.throttle_max_ms > 0
    assert abs(alice.broker_rate() - LOW_QUOTA) <= TOLERANCE * LOW_QUOTA, alice.broker_report(
        LOW_QUOTA
    )
    assert abs(bob.broker_rate() - HIGH_QUOTA) <= TOLERANCE * HIGH_QUOTA, bob.broker_report(
        HIGH_QUOTA
    )
    log_has_no_password(quota_gateway)


# --- connection limits -----------------------------------------------------------------

METADATA = MetadataRequest(
    topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False
)


def authenticate(conn: RawKafkaConnection, user: str) -> int:
    """A SASL PLAIN login as ``user`` (password from PASSWORDS); the error code."""
    return conn.plain_login(user, PASSWORDS[user]).error_code


def authenticated(gateway: RunningGateway, user: str) -> RawKafkaConnection:
    conn = RawKafkaConnection(gateway.bootstrap)
    assert authenticate(conn, user) == 0
    return conn


def closed_after_authentication(gateway: RunningGateway, user: str) -> bool:
    with RawKafkaConnection(gateway.bootstrap) as conn:
        try:
            authenticate(conn, user)  # the answer may or may not get out before the close
            conn.send_request(METADATA, 3)
        except (ConnectionError, OSError):
            return True
        return conn.is_closed_by_peer()


@pytest.fixture(scope="module")
def limited_gateway(
    kafka_cluster,  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway]:
    with running_gateway(
        tmp_path_factory.mktemp("limited-gateway"),
        kafka_cluster.bootstrap_servers,
        listener=plain_listener(["alice", "bob"]),
        cluster={"quotas": {"connections": {"max_per_principal": 2}}},
    ) as gateway:
        yield gateway


def test_connections_per_principal_are_limited(limited_gateway: RunningGateway) -> None:
    first, second = authenticated(limited_gateway, "alice"), authenticated(limited_gateway, "alice")
    try:
        for correlation_id, conn in enumerate((first, second), start=10):
            assert conn.request(METADATA, correlation_id).brokers

        assert closed_after_authentication(limited_gateway, "alice")
        refused = limited_gateway.wait_for_event(
            lambda e: e.get("event") == "connection_refused" and e.get("principal") == "User:alice"
        )
        assert refused.get("reason"), refused
        # Another principal has its own count.
        with authenticated(limited_gateway, "bob") as bob:
            assert bob.request(METADATA, 20).brokers
        assert second.request(METADATA, 21).brokers  # the two admitted ones still work

        first.close()
        limited_gateway.wait_for_event(
            lambda e: (
                e.get("event") == "connection_closed"
                and e.get("principal") == "User:alice"
                and e.get("reason") == "client closed the connection"
            )
        )
        with authenticated(limited_gateway, "alice") as again:
            assert again.request(METADATA, 30).brokers
    finally:
        first.close()
        second.close()
