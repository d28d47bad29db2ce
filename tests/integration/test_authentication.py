"""Clients authenticate to the gateway (SASL terminated there) in front of real Kafka."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from kafka import KafkaProducer
from kafka.errors import KafkaError as KafkaPythonError
from kio.schema.metadata.v12.request import MetadataRequest

from policies.auth import derive_scram_credential, hash_password
from tests.gateway_harness import RunningGateway, running_gateway
from tests.integration.clients import consume_values, produce_values
from tests.kafka_tools import console_consume, console_produce
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka

PASSWORD = "alice-secret"
WRONG = "not-the-password-9f3"


def sasl_listener(*mechanisms: str, **extra: Any) -> dict[str, Any]:
    scram = [
        str(derive_scram_credential(PASSWORD, m, iterations=4096))
        for m in mechanisms
        if m.startswith("SCRAM")
    ]
    auth: dict[str, Any] = {
        "mechanisms": list(mechanisms),
        "failed_authentication_delay_ms": 50,
        **extra,
    }
    if "PLAIN" in mechanisms:
        auth["users"] = {"alice": hash_password(PASSWORD)}
    if scram:
        auth["scram_credentials"] = {"alice": scram}
    return {"authentication": auth}


@pytest.fixture(scope="module")
def sasl_gateway(
    kafka_cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:  # type: ignore[no-untyped-def]
    listener = sasl_listener("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    with running_gateway(
        tmp_path_factory.mktemp("sasl-gateway"), kafka_cluster.bootstrap_servers, listener=listener
    ) as gateway:
        yield gateway


def sasl_config(mechanism: str, password: str = PASSWORD) -> dict[str, Any]:
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": "alice",
        "sasl.password": password,
    }


def audit_events(gateway: RunningGateway, after: int) -> list[dict[str, Any]]:
    """The ``authentication`` audit events written after the log mark ``after``."""
    return [e for e in gateway.events(after) if e.get("event") == "authentication"]


def gateway_time(event: dict[str, Any]) -> float:
    """When the gateway logged ``event``, on its own clock (seconds since the epoch)."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_confluent_kafka_authenticates_and_works(
    sasl_gateway: RunningGateway, topic: str, mechanism: str
) -> None:
    mark = sasl_gateway.log_mark()
    values = [f"{mechanism}-{i}" for i in range(50)]
    produce_values(sasl_gateway.bootstrap, topic, values, **sasl_config(mechanism))
    received = consume_values(
        sasl_gateway.bootstrap, topic, len(values), f"g-{uuid.uuid4()}", **sasl_config(mechanism)
    )
    assert sorted(v for v in received if v.startswith(mechanism)) == sorted(values)
    successes = [
        e
        for e in audit_events(sasl_gateway, mark)
        if e["outcome"] == "success" and e["mechanism"] == mechanism
    ]
    assert successes and all(e["principal"] == "User:alice" for e in successes)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_wrong_password_is_rejected_and_audited_without_the_secret(
    sasl_gateway: RunningGateway, mechanism: str
) -> None:
    mark = sasl_gateway.log_mark()
    errors: list[Any] = []
    producer = Producer(
        {
            **sasl_config(mechanism, WRONG),
            "bootstrap.servers": sasl_gateway.bootstrap,
            "error_cb": errors.append,
        }
    )
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert errors, "the client saw no error"
    assert errors[0].code() == KafkaError._AUTHENTICATION, errors[0]
    assert "Authentication failed" in errors[0].str()  # the text Kafka sends for the mechanism
    failure = sasl_gateway.wait_for_event(
        lambda e: (
            e.get("event") == "authentication"
            and e.get("outcome") == "failure"
            and e.get("mechanism") == mechanism
        ),
        after=mark,
    )
    assert failure["principal"] == "User:alice"
    assert failure["reason"] in {"wrong_password", "wrong_proof"}
    log_text = sasl_gateway.log_path.read_text()
    assert WRONG not in log_text and PASSWORD not in log_text


def test_unknown_user_is_rejected(sasl_gateway: RunningGateway) -> None:
    mark = sasl_gateway.log_mark()
    config = {**sasl_config("SCRAM-SHA-512"), "sasl.username": "mallory"}
    admin = AdminClient({**config, "bootstrap.servers": sasl_gateway.bootstrap})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    sasl_gateway.wait_for_event(
        lambda e: (
            e.get("event") == "authentication"
            and e.get("outcome") == "failure"
            and e.get("reason") == "unknown_user"
        ),
        after=mark,
    )


def test_request_before_authentication_closes_the_connection(
    sasl_gateway: RunningGateway,
) -> None:
    mark = sasl_gateway.log_mark()
    request = MetadataRequest(
        topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False
    )
    with RawKafkaConnection(sasl_gateway.bootstrap) as conn:
        conn.send_request(request, 1)
        assert conn.is_closed_by_peer()
    sasl_gateway.wait_for_event(
        lambda e: (
            e.get("event") == "connection_closed"
            and "before authentication" in str(e.get("reason"))
        ),
        after=mark,
    )


def test_kafka_python_with_scram(
    sasl_gateway: RunningGateway, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    producer = KafkaProducer(
        bootstrap_servers=sasl_gateway.bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_plain_username="alice",
        sasl_plain_password=PASSWORD,
    )
    metadata = producer.send(topic, b"kafka-python-scram").get(timeout=30)
    producer.close()
    assert metadata.offset >= 0
    with pytest.raises(KafkaPythonError) as failure:
        rejected = KafkaProducer(
            bootstrap_servers=sasl_gateway.bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username="alice",
            sasl_plain_password=WRONG,
            request_timeout_ms=5000,
            max_block_ms=5000,
            bootstrap_timeout_ms=5000,  # else kafka-python retries its bootstrap for 30 s
        )
        rejected.send(topic, b"never").get(timeout=10)
    # kafka-python reports a bootstrap timeout to the caller and logs the broker's error.
    assert failure.type.__name__ == "KafkaTimeoutError"
    assert "SaslAuthenticationFailedError" in caplog.text


def test_java_console_clients_with_plain(sasl_gateway: RunningGateway, topic: str) -> None:
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="alice" password="{PASSWORD}";'
    )
    props = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.jaas.config": jaas,
    }
    lines = [f"java-sasl-{i}" for i in range(20)]
    console_produce(sasl_gateway.bootstrap, topic, lines, extra_props=props)
    received = console_consume(
        sasl_gateway.bootstrap,
        topic,
        len(lines),
        group=f"j-{uuid.uuid4().hex[:6]}",
        extra_props=props,
    )
    assert sorted(received) == sorted(lines)


#: librdkafka re-authenticates at 90% of the session lifetime: 8 s leave it 0.8 s to get
#: its SaslHandshake to the gateway before the session ends, enough on a loaded machine.
CLIENT_LIFETIME_MS = 8000


def expired_closes(gateway: RunningGateway, after: int) -> list[dict[str, Any]]:
    return [
        e
        for e in gateway.events(after)
        if e.get("event") == "connection_closed" and "expired" in str(e.get("reason"))
    ]


def test_session_lifetime_makes_clients_reauthenticate(
    kafka_cluster, tmp_path: Path, topic: str
) -> None:  # type: ignore[no-untyped-def]
    listener = sasl_listener("PLAIN", max_session_lifetime_ms=CLIENT_LIFETIME_MS)
    with running_gateway(tmp_path, kafka_cluster.bootstrap_servers, listener=listener) as gateway:
        mark = gateway.log_mark()
        producer = Producer({**sasl_config("PLAIN"), "bootstrap.servers": gateway.bootstrap})

        def produce_one(i: int) -> None:
            producer.produce(topic, f"reauth-{i}".encode())
            assert producer.flush(10) == 0

        produce_one(0)
        logins = [e for e in audit_events(gateway, mark) if e["outcome"] == "success"]
        assert logins and all(e["session_lifetime_ms"] == CLIENT_LIFETIME_MS for e in logins)
        # Keep the connections busy until librdkafka re-authenticates (KIP-368).
        i, deadline = 1, time.monotonic() + 60
        while not [e for e in audit_events(gateway, mark) if e.get("reauthentication")]:
            assert time.monotonic() < deadline, "librdkafka never re-authenticated"
            produce_one(i)
            i += 1
            producer.poll(0.2)
        # Requests after the end of every connection's first session, by the gateway's
        # clock, are served: re-authentication started new sessions (the gateway closes
        # an expired one at its next request).
        logins = [e for e in audit_events(gateway, mark) if e["outcome"] == "success"]
        first_logins = [e for e in logins if not e.get("reauthentication")]
        first_sessions_end = max(gateway_time(e) for e in first_logins) + CLIENT_LIFETIME_MS / 1000
        while time.time() <= first_sessions_end:
            produce_one(i)
            i += 1
            producer.poll(0.2)
        produce_one(i)
        assert not expired_closes(gateway, mark)


def test_a_client_that_does_not_reauthenticate_is_closed(kafka_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Long enough that the first request is inside the lifetime on a loaded machine.
    lifetime_ms = 3000
    listener = sasl_listener("PLAIN", max_session_lifetime_ms=lifetime_ms)
    with running_gateway(tmp_path, kafka_cluster.bootstrap_servers, listener=listener) as gateway:
        mark = gateway.log_mark()
        with RawKafkaConnection(gateway.bootstrap) as conn:
            assert conn.plain_login("alice", PASSWORD).error_code == 0
            request = MetadataRequest(
                topics=None,
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=False,
            )
            assert conn.request(request, 3).brokers  # inside the session lifetime
            login = gateway.wait_for_event(lambda e: e.get("event") == "authentication", after=mark)
            # The gateway's session started before it logged the login: once the
            # lifetime has passed since the log line, the session has ended.
            session_end = gateway_time(login) + lifetime_ms / 1000
            time.sleep(max(0.0, session_end - time.time()) + 0.05)  # time must pass
            conn.send_request(request, 4)
            assert conn.is_closed_by_peer()
        gateway.wait_for_event(
            lambda e: e.get("event") == "connection_closed" and "expired" in str(e.get("reason")),
            after=mark,
        )


def test_a_large_frame_before_authentication_is_refused(sasl_gateway: RunningGateway) -> None:
    mark = sasl_gateway.log_mark()
    with RawKafkaConnection(sasl_gateway.bootstrap) as conn:
        # A 1 MiB SaslAuthenticate frame announced by an unauthenticated client.
        conn.send_raw((1024 * 1024).to_bytes(4, "big") + b"\x00\x24\x00\x02\x00\x00\x00\x01")
        assert conn.is_closed_by_peer()
    sasl_gateway.wait_for_event(
        lambda e: (
            e.get("event") == "connection_closed"
            and "exceeds the maximum of 524288 bytes" in str(e.get("reason"))
        ),
        after=mark,
    )


def test_legacy_unframed_plain_after_handshake_v0(sasl_gateway: RunningGateway) -> None:
    """SaslHandshake v0, then the bare PLAIN token with no request header (pre-KIP-152)."""
    mark = sasl_gateway.log_mark()
    request = MetadataRequest(
        topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False
    )
    with RawKafkaConnection(sasl_gateway.bootstrap) as conn:
        answer = conn.plain_login("alice", PASSWORD, handshake_version=0)  # a bare token
        assert answer.auth_bytes == b""  # PLAIN's empty success token, as from Kafka
        assert conn.request(request, 2).brokers
    sasl_gateway.wait_for_event(
        lambda e: (
            e.get("event") == "authentication"
            and e.get("outcome") == "success"
            and e.get("mechanism") == "PLAIN"
            and e.get("client_address") is not None
        ),
        after=mark,
    )
