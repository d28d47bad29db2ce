"""KIP-368: the gateway re-authenticates its own upstream login without the client noticing.

The brokers here have ``connections.max.reauth.ms`` of a few seconds: a connection
that does not re-authenticate in time is closed by the broker at its next request.
A real producer and consumer run through the gateway for several session lifetimes;
neither may see an error, a lost record or a closed connection.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from localkafka.cluster import LocalKafkaCluster
from localkafka.distribution import KafkaDistribution
from localkafka.security import (
    ALL_SASL_MECHANISMS,
    DEFAULT_USERS,
    ClientSecurity,
    OAuthBearerValidation,
)
from tests.gateway_harness import RunningGateway, running_gateway
from tests.jwks_server import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    TOKEN_PATH,
    JwksServer,
    jwks_of,
    make_rsa_key,
)
from tests.security_fixtures import _stop, start_secure_cluster

pytestmark = pytest.mark.kafka

#: The brokers' session lifetime: the gateway re-authenticates about every 3 s.
REAUTH_MS = 4000
#: OAUTHBEARER tokens live this long, so the run also needs a token renewal.
TOKEN_LIFETIME_S = 6.0
#: How long the clients run: several session lifetimes.
RUN_S = 9.0
GATEWAY_PASSWORD = DEFAULT_USERS["gateway"]


@pytest.fixture(scope="module")
def token_issuer() -> Iterator[JwksServer]:
    key = make_rsa_key("reauth-issuer-key")
    with JwksServer(jwks_of(key)) as server:
        server.enable_token_endpoint(key, DEFAULT_USERS, lifetime=TOKEN_LIFETIME_S)
        yield server


@pytest.fixture(scope="module")
def reauth_cluster(
    kafka_distribution: KafkaDistribution,
    token_issuer: JwksServer,
    request: pytest.FixtureRequest,
) -> Iterator[LocalKafkaCluster]:
    """One broker, SASL_PLAINTEXT, every mechanism, sessions of ``REAUTH_MS``."""
    security = ClientSecurity(
        "SASL_PLAINTEXT",
        mechanisms=ALL_SASL_MECHANISMS,
        oauthbearer=OAuthBearerValidation(token_issuer.jwks_url, DEFAULT_ISSUER, DEFAULT_AUDIENCE),
    )
    cluster = start_secure_cluster(
        kafka_distribution, security, broker_config={"connections.max.reauth.ms": REAUTH_MS}
    )
    yield cluster
    _stop(cluster, keep_logs=request.session.testsfailed > 0)


class ClientStats:
    """The latest librdkafka statistics of one client: connects and disconnects per broker."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] = {}

    def __call__(self, raw: str) -> None:
        self.latest = json.loads(raw)

    def disconnects(self) -> dict[str, int]:
        brokers = self.latest.get("brokers", {}).values()
        return {b["name"]: b["disconnects"] for b in brokers if b.get("disconnects")}

    def connects(self) -> int:
        return sum(b.get("connects", 0) for b in self.latest.get("brokers", {}).values())


def run_clients(gw: RunningGateway, seconds: float) -> tuple[list[str], list[str], list[str]]:
    """Produce one record every ~20 ms and consume them at the same time for ``seconds``.

    Returns (produced values, consumed values, errors of either client).
    """
    topic = f"reauth-{uuid.uuid4().hex[:8]}"
    errors: list[str] = []
    producer_stats, consumer_stats = ClientStats(), ClientStats()
    common = {"bootstrap.servers": gw.bootstrap, "statistics.interval.ms": 500}
    producer = Producer(
        {**common, "linger.ms": 5, "stats_cb": producer_stats, "error_cb": errors.append}
    )

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            errors.append(f"delivery: {err}")

    consumer = Consumer(
        {
            **common,
            "group.id": f"g-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "topic.metadata.refresh.interval.ms": 1000,
            "stats_cb": consumer_stats,
            "error_cb": errors.append,
        }
    )
    produced: list[str] = []
    consumed: list[str] = []

    def consume(timeout: float) -> None:
        msg = consumer.poll(timeout)
        if msg is None:
            return
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                errors.append(f"consume: {msg.error()}")
            return
        consumed.append(msg.value().decode())

    producer.produce(topic, b"create")  # the topic is auto-created through the gateway
    assert producer.flush(30) == 0
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = f"v-{len(produced)}"
            producer.produce(topic, value.encode(), on_delivery=delivered)
            produced.append(value)
            producer.poll(0)
            consume(0.02)
        assert producer.flush(30) == 0
        catch_up = time.monotonic() + 30
        while len(set(consumed) & set(produced)) < len(produced) and time.monotonic() < catch_up:
            consume(0.2)
        producer.poll(0.6)  # let the final statistics arrive
        consume(0.6)
        assert producer_stats.latest and consumer_stats.latest, "no librdkafka statistics"
        assert producer_stats.disconnects() == {}, producer_stats.disconnects()
        assert consumer_stats.disconnects() == {}, consumer_stats.disconnects()
        # librdkafka drops its bootstrap connections itself once it knows the brokers.
        closed = [
            e["reason"]
            for e in gw.events()
            if e.get("event") == "connection_closed"
            and e["reason"] != "client closed the connection"
        ]
        assert closed == [], "the gateway closed client connections while they ran"
    finally:
        consumer.close()
    return produced, [c for c in consumed if c != "create"], errors


def upstream_login(mechanism: str, token_url: str) -> dict[str, Any]:
    if mechanism == "OAUTHBEARER":
        sasl = {
            "mechanism": "OAUTHBEARER",
            "token_endpoint_url": token_url,
            "client_id": "gateway",
            "client_secret": GATEWAY_PASSWORD,
        }
    else:
        sasl = {"mechanism": mechanism, "username": "gateway", "password": GATEWAY_PASSWORD}
    return {"sasl": sasl}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512", "OAUTHBEARER"])
def test_upstream_sessions_are_renewed_without_disturbing_clients(  # type: ignore[no-untyped-def]
    reauth_cluster, token_issuer: JwksServer, tmp_path: Path, mechanism: str
) -> None:
    upstream = upstream_login(mechanism, token_issuer.token_url)
    token_requests_before = token_issuer.request_count(TOKEN_PATH)
    with running_gateway(tmp_path, reauth_cluster.bootstrap_servers, upstream=upstream) as gw:
        produced, consumed, errors = run_clients(gw, RUN_S)

        assert errors == []
        assert len(produced) > 100
        assert sorted(set(consumed)) == sorted(produced)  # nothing lost
        reauths = [e for e in gw.events() if e.get("event") == "upstream_reauthenticated"]
        per_connection: dict[str, int] = {}
        for event in reauths:
            per_connection[event["client"]] = per_connection.get(event["client"], 0) + 1
            assert event["mechanism"] == mechanism
            assert 0 < event["session_lifetime_ms"] <= REAUTH_MS
        # Every client connection that lived through the run renewed its session repeatedly.
        assert per_connection and max(per_connection.values()) >= int(RUN_S * 1000 / REAUTH_MS)
        assert not [e for e in gw.events() if e.get("event") == "upstream_reauthentication_failed"]
    if mechanism == "OAUTHBEARER":
        # The first token expires during the run: re-authentication used a renewed one.
        assert token_issuer.request_count(TOKEN_PATH) - token_requests_before >= 2
