"""Connections that have not logged in cost the gateway little (issue 9, defects 4 and 7).

No upstream connection before login, an authentication deadline, an idle timeout,
default caps on connections, bounded password hashing under a login flood, and in
passthrough mode a principal adopted only from the broker's final SASL answer.
All against real Kafka; the gateway's sockets are counted with psutil.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import pytest
from confluent_kafka.admin import AdminClient
from kio.schema.api_versions.v3.request import ApiVersionsRequest as ApiVersionsV3
from kio.schema.metadata.v12.request import MetadataRequest

from codec.api_versions import parse_api_versions_response
from codec.errors import NONE, SASL_AUTHENTICATION_FAILED
from policies.auth import hash_password
from policies.auth.scram import ScramClientSession
from tests.gateway_harness import Event, RunningGateway, running_gateway
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka

PASSWORD = "alice-secret"
DEADLINE_MS = 1500
#: ApiVersions v3 with client software name and version, as librdkafka sends it.
API_VERSIONS_V3 = ApiVersionsV3(client_software_name="raw", client_software_version="1")
METADATA = MetadataRequest(
    topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False
)


def plain_listener(
    limits: dict[str, Any], *, users: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "authentication": {
            "mechanisms": ["PLAIN"],
            "users": users or {"alice": hash_password(PASSWORD, n=2**10)},
            "failed_authentication_delay_ms": 50,
        },
        "limits": limits,
    }


def upstream_connections(gateway: RunningGateway, upstream_bootstrap: str) -> int:
    """Established TCP connections from the gateway process to the upstream brokers."""
    ports = {int(server.rsplit(":", 1)[1]) for server in upstream_bootstrap.split(",")}
    return sum(
        1
        for c in psutil.Process(gateway.process.pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED
    )


def closed_events(gateway: RunningGateway, reason_part: str) -> list[Event]:
    return [
        e
        for e in gateway.events()
        if e.get("event") == "connection_closed" and reason_part in str(e.get("reason"))
    ]


def wait_for_count(
    gateway: RunningGateway, count: Callable[[list[Event]], int], wanted: int, timeout: float = 30
) -> None:
    gateway.wait_for_event(lambda _: count(gateway.events()) >= wanted, timeout=timeout)


def client_address(conn: RawKafkaConnection) -> str:
    host, port = conn.sock.getsockname()[:2]
    return f"{host}:{port}"


def api_versions_body(conn: RawKafkaConnection) -> bytes:
    conn.send_request(API_VERSIONS_V3, 7)
    return conn.read_frame()[4:]  # without the correlation id


@pytest.fixture
def sockets() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def test_silent_connections_hold_no_upstream_and_close_at_the_deadline(  # type: ignore[no-untyped-def]
    kafka_cluster, tmp_path: Path, sockets: ExitStack
) -> None:
    upstream = kafka_cluster.bootstrap_servers
    listener = plain_listener({"authentication_timeout_ms": DEADLINE_MS})
    with running_gateway(tmp_path, upstream, listener=listener) as gw:
        silent = [sockets.enter_context(RawKafkaConnection(gw.bootstrap)) for _ in range(15)]
        # Clients send ApiVersions before SASL: answered without an upstream connection.
        hello = [sockets.enter_context(RawKafkaConnection(gw.bootstrap)) for _ in range(15)]
        answers = {api_versions_body(conn) for conn in hello}
        counts = [upstream_connections(gw, upstream) for _ in range(5)]
        # At most a broker discovery (every 2 s) can be open; never one per client.
        assert max(counts) <= 1, counts
        assert len(answers) == 1

        # The local answer is the one the forwarded path gives after login (the same
        # ranges; only the finalized-features epoch in the tagged fields may have moved on).
        with RawKafkaConnection(gw.bootstrap) as conn:
            assert conn.plain_login("alice", PASSWORD).error_code == NONE
            forwarded = parse_api_versions_response(api_versions_body(conn), 3)
        local = parse_api_versions_response(answers.pop(), 3)
        assert (local.error_code, local.api_keys) == (forwarded.error_code, forwarded.api_keys)
        assert len(local.api_keys) > 40

        for conn in silent + hello:
            assert conn.is_closed_by_peer(timeout=10)
        wait_for_count(
            gw, lambda _: len(closed_events(gw, "authentication deadline exceeded (1.5 s)")), 30
        )


def test_idle_timeout_deadline_and_total_cap_on_a_listener_without_sasl(  # type: ignore[no-untyped-def]
    kafka_cluster, tmp_path: Path, sockets: ExitStack
) -> None:
    limits = {
        "authentication_timeout_ms": DEADLINE_MS,
        "connections_max_idle_ms": 1000,
        "max_connections": 3,
    }
    with running_gateway(
        tmp_path, kafka_cluster.bootstrap_servers, listener={"limits": limits}
    ) as gw:
        active = sockets.enter_context(RawKafkaConnection(gw.bootstrap))
        assert active.request(API_VERSIONS_V3, 1).error_code == 0  # logged in: first request
        silent = sockets.enter_context(RawKafkaConnection(gw.bootstrap))
        third = sockets.enter_context(RawKafkaConnection(gw.bootstrap))
        assert third.request(METADATA, 2).brokers
        refused = sockets.enter_context(RawKafkaConnection(gw.bootstrap))
        assert refused.is_closed_by_peer()
        event = gw.wait_for_event(lambda e: e.get("event") == "connection_refused")
        assert "limit max_connections=3" in event["reason"]

        assert silent.is_closed_by_peer()
        gw.wait_for_event(lambda _: bool(closed_events(gw, "authentication deadline exceeded")))
        assert active.is_closed_by_peer()
        gw.wait_for_event(lambda _: bool(closed_events(gw, "idle for")))
        assert closed_events(gw, "idle for")[0]["principal"] == "User:ANONYMOUS"


def test_default_caps_refuse_the_101st_silent_connection_from_one_ip(  # type: ignore[no-untyped-def]
    kafka_cluster, tmp_path: Path, sockets: ExitStack
) -> None:
    with running_gateway(
        tmp_path, kafka_cluster.bootstrap_servers, listener=plain_listener({})
    ) as gw:
        silent = [sockets.enter_context(RawKafkaConnection(gw.bootstrap)) for _ in range(100)]
        api_versions_body(silent[-1])  # the 100th is served
        extra = sockets.enter_context(RawKafkaConnection(gw.bootstrap))
        assert extra.is_closed_by_peer()
        event = gw.wait_for_event(lambda e: e.get("event") == "connection_refused")
        assert "limit max_unauthenticated_connections_per_ip=100" in event["reason"]
        # Another address is not crowded out by them.
        other = sockets.enter_context(RawKafkaConnection(gw.bootstrap, source_host="127.0.0.2"))
        assert other.plain_login("alice", PASSWORD).error_code == NONE
        assert other.request(METADATA, 3).brokers


def test_a_login_flood_from_one_ip_does_not_starve_a_real_login(  # type: ignore[no-untyped-def]
    kafka_cluster, tmp_path: Path
) -> None:
    # Full-cost scrypt hashes (the default parameters, ~50 ms on an idle core), as in a
    # real deployment. One hashing slot per IP and 60 flooding threads make a queue of
    # about 3 s of hashing at any speed of the machine, longer than the 1.5 s deadline,
    # so queued flood logins must give up while real ones from another IP still pass.
    listener = plain_listener(
        {"authentication_timeout_ms": 1500, "max_concurrent_logins_per_ip": 1},
        users={"alice": hash_password(PASSWORD)},
    )
    stop = threading.Event()

    def flood(bootstrap: str) -> None:
        while not stop.is_set():
            try:
                with RawKafkaConnection(bootstrap, source_host="127.0.0.2") as conn:
                    conn.plain_login("alice", "wrong-password")
            except (OSError, ConnectionError):
                pass

    def failures_logged(events: list[Event]) -> int:
        return sum(
            1
            for e in events
            if e.get("event") == "authentication" and e.get("outcome") == "failure"
        )

    with running_gateway(tmp_path, kafka_cluster.bootstrap_servers, listener=listener) as gw:
        threads = [threading.Thread(target=flood, args=(gw.bootstrap,)) for _ in range(60)]
        for thread in threads:
            thread.start()
        try:
            wait_for_count(gw, failures_logged, 20)  # the flood is hashing
            for _ in range(3):
                with RawKafkaConnection(gw.bootstrap) as conn:
                    before = failures_logged(gw.events())
                    assert conn.plain_login("alice", PASSWORD).error_code == NONE
                    address = client_address(conn)
                events = gw.events()
                success = next(
                    i
                    for i, e in enumerate(events)
                    if e.get("event") == "authentication" and e.get("client_address") == address
                )
                assert events[success]["outcome"] == "success"
                # Flood hashes finished while this login waited and ran: the flood's one
                # per-IP slot, and the ones already running, not the whole flood.
                overtaken = failures_logged(events[:success]) - before
                assert overtaken <= 6, f"{overtaken} flood logins went first"
            admin = AdminClient(
                {
                    "bootstrap.servers": gw.bootstrap,
                    "security.protocol": "SASL_PLAINTEXT",
                    "sasl.mechanism": "PLAIN",
                    "sasl.username": "alice",
                    "sasl.password": PASSWORD,
                }
            )
            assert admin.list_topics(timeout=10).brokers
            # The flood's queued logins give up at their deadline, and say why.
            gw.wait_for_event(
                lambda _: bool(closed_events(gw, "waiting for a password-hashing slot"))
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join()


def scram_first(conn: RawKafkaConnection, client: ScramClientSession) -> bytes:
    conn.sasl_handshake("SCRAM-SHA-256")
    server_first = conn.sasl_token(client.initial_response())
    assert server_first.error_code == NONE and server_first.auth_bytes.startswith(b"r=")
    return server_first.auth_bytes


def scram_final(conn: RawKafkaConnection, client: ScramClientSession, server_first: bytes) -> int:
    final = client.evaluate(server_first)
    assert final is not None
    return conn.sasl_token(final).error_code


def test_passthrough_scram_trusts_only_the_brokers_final_answer(  # type: ignore[no-untyped-def]
    sasl_kafka_cluster, tmp_path: Path
) -> None:
    listener = {
        "authentication": {"mechanisms": ["SCRAM-SHA-256"], "passthrough": True},
        "limits": {"authentication_timeout_ms": 2000},
    }
    upstream = sasl_kafka_cluster.bootstrap_servers
    with running_gateway(tmp_path, upstream, listener=listener, wait_for_brokers=False) as gw:

        def audited(address: str) -> list[Event]:
            return [
                e
                for e in gw.events()
                if e.get("event") == "authentication" and e.get("client_address") == address
            ]

        # After the broker's first (non-final) answer the client is still capped...
        with RawKafkaConnection(gw.bootstrap) as capped:
            scram_first(capped, ScramClientSession("SCRAM-SHA-256", "alice", PASSWORD))
            capped.send_raw(struct.pack(">i", 1024 * 1024) + b"\x00\x03\x00\x0c")
            assert capped.is_closed_by_peer()
            capped_address = client_address(capped)
        gw.wait_for_event(lambda _: bool(closed_events(gw, "exceeds the maximum of 524288")))
        # ...may send nothing but SASL...
        with RawKafkaConnection(gw.bootstrap) as early:
            scram_first(early, ScramClientSession("SCRAM-SHA-256", "alice", PASSWORD))
            early.send_request(METADATA, 3)
            assert early.is_closed_by_peer()
            early_address = client_address(early)
        gw.wait_for_event(lambda _: bool(closed_events(gw, "before authentication completed")))
        # ...and one that stalls is closed at the deadline.
        with RawKafkaConnection(gw.bootstrap) as stalled:
            scram_first(stalled, ScramClientSession("SCRAM-SHA-256", "alice", PASSWORD))
            assert stalled.is_closed_by_peer()
            stalled_address = client_address(stalled)
        gw.wait_for_event(lambda _: bool(closed_events(gw, "authentication deadline exceeded")))

        # A wrong proof is a failure, never a success.
        with RawKafkaConnection(gw.bootstrap) as wrong:
            client = ScramClientSession("SCRAM-SHA-256", "alice", "not-alice-secret")
            assert scram_final(wrong, client, scram_first(wrong, client)) == (
                SASL_AUTHENTICATION_FAILED
            )
            wrong_address = client_address(wrong)
        gw.wait_for_event(lambda _: bool(audited(wrong_address)))
        assert [e["outcome"] for e in audited(wrong_address)] == ["failure"]

        # The right proof: success is audited once, after the final answer.
        with RawKafkaConnection(gw.bootstrap) as good:
            client = ScramClientSession("SCRAM-SHA-256", "alice", PASSWORD)
            server_first = scram_first(good, client)
            good_address = client_address(good)
            assert audited(good_address) == []
            assert scram_final(good, client, server_first) == NONE
            assert good.request(METADATA, 4).brokers
        success = audited(good_address)
        assert [e["outcome"] for e in success] == ["success"]
        assert success[0]["principal"] == "User:alice"

        for address in (capped_address, early_address, stalled_address):
            assert audited(address) == [], address

        # A real client still works through passthrough.
        admin = AdminClient(
            {
                "bootstrap.servers": gw.bootstrap,
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-256",
                "sasl.username": "alice",
                "sasl.password": PASSWORD,
            }
        )
        assert admin.list_topics(timeout=10).brokers
