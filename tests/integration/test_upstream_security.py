"""The gateway logs in to secured brokers with its own credentials (SASL, TLS)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from kio.schema.api_versions.v3.request import ApiVersionsRequest

from tests.gateway_harness import running_gateway
from tests.integration.clients import consume_values, produce_values
from tests.raw_kafka import RawKafkaConnection
from tests.security_fixtures import SecurityPki

pytestmark = pytest.mark.kafka

GATEWAY_PASSWORD = "gateway-secret"  # the gateway's user on the test brokers


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_gateway_authenticates_upstream_and_clients_need_no_credentials(  # type: ignore[no-untyped-def]
    sasl_kafka_cluster, tmp_path: Path, mechanism: str
) -> None:
    upstream = {
        "sasl": {"mechanism": mechanism, "username": "gateway", "password": GATEWAY_PASSWORD}
    }
    with running_gateway(tmp_path, sasl_kafka_cluster.bootstrap_servers, upstream=upstream) as gw:
        topic = f"up-{uuid.uuid4().hex[:8]}"
        values = [f"{mechanism}-{i}" for i in range(40)]
        produce_values(gw.bootstrap, topic, values)  # auto-created through the gateway
        received = consume_values(gw.bootstrap, topic, len(values), f"g-{uuid.uuid4()}")
        assert sorted(received) == sorted(values)


def test_wrong_upstream_password_closes_clients_cleanly_and_says_why(  # type: ignore[no-untyped-def]
    sasl_kafka_cluster, tmp_path: Path
) -> None:
    wrong = "definitely-wrong-7c1"
    upstream = {"sasl": {"mechanism": "SCRAM-SHA-256", "username": "gateway", "password": wrong}}
    with running_gateway(
        tmp_path, sasl_kafka_cluster.bootstrap_servers, upstream=upstream, wait_for_brokers=False
    ) as gw:
        request = ApiVersionsRequest(client_software_name="raw", client_software_version="1")
        with RawKafkaConnection(gw.bootstrap) as conn:
            conn.send_request(request, 1)
            assert conn.is_closed_by_peer()
        event = gw.wait_for_event(lambda e: e.get("event") == "upstream_unavailable")
        assert "SCRAM-SHA-256" in event["error"] and "58" in event["error"]
        assert wrong not in gw.log_path.read_text()


def test_gateway_connects_to_tls_brokers(  # type: ignore[no-untyped-def]
    tls_kafka_cluster, security_pki: SecurityPki, tmp_path: Path
) -> None:
    upstream = {"tls": {"ca_file": str(security_pki.ca_path)}}
    with running_gateway(tmp_path, tls_kafka_cluster.bootstrap_servers, upstream=upstream) as gw:
        topic = f"tls-{uuid.uuid4().hex[:8]}"
        values = [f"tls-up-{i}" for i in range(40)]
        produce_values(gw.bootstrap, topic, values)
        received = consume_values(gw.bootstrap, topic, len(values), f"g-{uuid.uuid4()}")
        assert sorted(received) == sorted(values)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_passthrough_relays_the_clients_own_sasl_and_learns_the_principal(  # type: ignore[no-untyped-def]
    sasl_kafka_cluster, tmp_path: Path, mechanism: str
) -> None:
    listener = {"authentication": {"mechanisms": [mechanism], "passthrough": True}}
    client = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": "alice",
        "sasl.password": "alice-secret",
    }
    with running_gateway(
        tmp_path, sasl_kafka_cluster.bootstrap_servers, listener=listener, wait_for_brokers=False
    ) as gw:
        topic = f"pass-{uuid.uuid4().hex[:8]}"
        values = [f"pass-{i}" for i in range(20)]
        produce_values(gw.bootstrap, topic, values, **client)
        assert sorted(
            consume_values(gw.bootstrap, topic, 20, f"g-{uuid.uuid4()}", **client)
        ) == sorted(values)
        success = gw.wait_for_event(
            lambda e: e.get("event") == "authentication" and e.get("outcome") == "success"
        )
        assert success["principal"] == "User:alice"

        bad = {**client, "sasl.password": "wrong-password-55"}
        with pytest.raises(KafkaException):
            AdminClient({**bad, "bootstrap.servers": gw.bootstrap}).list_topics(timeout=5)
        failure = gw.wait_for_event(
            lambda e: e.get("event") == "authentication" and e.get("outcome") == "failure"
        )
        assert failure["reason"] == "rejected_by_broker"
        assert "wrong-password-55" not in gw.log_path.read_text()
