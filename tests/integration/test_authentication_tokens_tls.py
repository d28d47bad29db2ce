"""OAUTHBEARER (JWT) and TLS/mTLS at the gateway, with real clients in front of real Kafka."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from tests.certs import make_ca
from tests.gateway_harness import running_gateway
from tests.integration.clients import consume_values, produce_values
from tests.jwks_server import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    jwks_of,
    make_rsa_key,
    mint_token,
    standard_claims,
)

pytestmark = pytest.mark.kafka


def oauth_client_config(token_for: Any) -> dict[str, Any]:
    """librdkafka OAUTHBEARER with a token callback: the client sends our JWT as is."""

    def oauth_cb(_config: str) -> tuple[str, float]:
        token, expires_at = token_for()
        return token, expires_at

    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
        "oauth_cb": oauth_cb,
    }


def first_client_error(config: dict[str, Any], timeout: float = 15) -> Any:
    errors: list[Any] = []
    producer = Producer({**config, "error_cb": errors.append})
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    return errors[0] if errors else None


def test_oauthbearer_tokens_are_verified(kafka_cluster, tmp_path: Path, topic: str) -> None:  # type: ignore[no-untyped-def]
    key = make_rsa_key("k1")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks_of(key)))
    listener = {
        "authentication": {
            "mechanisms": ["OAUTHBEARER"],
            "failed_authentication_delay_ms": 50,
            "oauthbearer": {
                "issuers": [
                    {
                        "issuer": DEFAULT_ISSUER,
                        "audience": DEFAULT_AUDIENCE,
                        "algorithms": ["RS256"],
                        "jwks_file": str(jwks_file),
                    }
                ]
            },
        }
    }
    with running_gateway(tmp_path, kafka_cluster.bootstrap_servers, listener=listener) as gateway:

        def good_token() -> tuple[str, float]:
            claims = standard_claims("alice", lifetime=300)
            return mint_token(key, claims), claims["exp"]

        config = {**oauth_client_config(good_token), "bootstrap.servers": gateway.bootstrap}
        values = [f"jwt-{i}" for i in range(30)]
        produce_values(gateway.bootstrap, topic, values, **config)
        received = consume_values(gateway.bootstrap, topic, 30, f"g-{uuid.uuid4()}", **config)
        assert sorted(received) == sorted(values)
        success = gateway.wait_for_event(
            lambda e: e.get("event") == "authentication" and e.get("outcome") == "success"
        )
        assert success["principal"] == "User:alice" and success["mechanism"] == "OAUTHBEARER"
        assert 0 < success["session_lifetime_ms"] <= 300_000  # bounded by the token's exp

        def expired_token() -> tuple[str, float]:
            claims = standard_claims("alice", lifetime=-120)
            return mint_token(key, claims), time.time() + 60

        bad = {**oauth_client_config(expired_token), "bootstrap.servers": gateway.bootstrap}
        error = first_client_error(bad)
        assert error is not None and error.code() == KafkaError._AUTHENTICATION
        failure = gateway.wait_for_event(
            lambda e: e.get("event") == "authentication" and e.get("outcome") == "failure"
        )
        assert failure["mechanism"] == "OAUTHBEARER"
        assert "expired" in failure["reason"] or "expired" in failure.get("detail", "")
        log_text = gateway.log_path.read_text()
        assert good_token()[0].split(".")[2] not in log_text  # no token signature in any log


def test_tls_listener_with_client_certificates(kafka_cluster, tmp_path: Path, topic: str) -> None:  # type: ignore[no-untyped-def]
    ca = make_ca(tmp_path, "gateway-test-ca")
    server_cert, server_key = ca.issue_server()
    client_cert, client_key = ca.issue_client("alice", ou="payments", o="Example")
    listener = {
        "tls": {
            "cert_file": str(server_cert),
            "key_file": str(server_key),
            "ca_file": str(ca.cert_path),
            "client_auth": "required",
            "principal_mapping_rules": "RULE:^CN=([a-z]+),OU=.*$/$1/L,DEFAULT",
        }
    }
    with running_gateway(tmp_path, kafka_cluster.bootstrap_servers, listener=listener) as gateway:
        tls = {
            "security.protocol": "SSL",
            "ssl.ca.location": str(ca.cert_path),
            "ssl.certificate.location": str(client_cert),
            "ssl.key.location": str(client_key),
        }
        values = [f"tls-{i}" for i in range(30)]
        produce_values(gateway.bootstrap, topic, values, **tls)
        received = consume_values(gateway.bootstrap, topic, 30, f"g-{uuid.uuid4()}", **tls)
        assert sorted(received) == sorted(values)
        closed = gateway.wait_for_event(
            lambda e: e.get("event") == "connection_closed" and e.get("principal")
        )
        assert closed["principal"] == "User:alice"

        no_certificate = {"security.protocol": "SSL", "ssl.ca.location": str(ca.cert_path)}
        config = {**no_certificate, "bootstrap.servers": gateway.bootstrap}
        with pytest.raises(KafkaException):
            AdminClient(config).list_topics(timeout=5)
        gateway.wait_for_event(lambda e: e.get("event") == "tls_handshake_failed")


def _produce_one(config: dict[str, Any], topic: str) -> Any:
    """Produce one record; the delivery error (None on success)."""
    outcome: list[Any] = []
    producer = Producer(config)
    producer.produce(topic, b"x", on_delivery=lambda err, _msg: outcome.append(err))
    assert producer.flush(30) == 0
    return outcome[0]


def test_each_issuer_has_its_own_principal_namespace(
    kafka_cluster,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    topic: str,
) -> None:
    """Issuer B minting ``sub: admin`` (and A's group) gets none of issuer A's admin rights."""
    issuers = {"a": make_rsa_key("key-a"), "b": make_rsa_key("key-b")}
    configured = []
    for name, key in issuers.items():
        jwks_file = tmp_path / f"jwks-{name}.json"
        jwks_file.write_text(json.dumps(jwks_of(key)))
        configured.append(
            {
                "issuer": f"https://idp-{name}.example",
                "audience": DEFAULT_AUDIENCE,
                "jwks_file": str(jwks_file),
                "principal_prefix": f"idp-{name}/",
            }
        )
    listener = {
        "authentication": {
            "mechanisms": ["OAUTHBEARER"],
            "failed_authentication_delay_ms": 50,
            "oauthbearer": {"issuers": configured},
        }
    }
    authorization = {
        "default": "deny",
        "super_users": ["User:idp-a/admin"],
        "rules": [
            {
                "principals": ["Claim:groups=idp-a/writers"],
                "resource_type": "topic",
                "resource_name": topic,
                "operations": ["Write", "Describe"],
            }
        ],
    }
    with running_gateway(
        tmp_path,
        kafka_cluster.bootstrap_servers,
        listener=listener,
        cluster={"authorization": authorization},
    ) as gateway:

        def client(issuer: str, sub: str, **claims: Any) -> dict[str, Any]:
            def token_for() -> tuple[str, float]:
                minted = standard_claims(sub, iss=f"https://idp-{issuer}.example", **claims)
                return mint_token(issuers[issuer], minted), minted["exp"]

            return {**oauth_client_config(token_for), "bootstrap.servers": gateway.bootstrap}

        assert _produce_one(client("a", "admin"), topic) is None  # A's super user
        assert _produce_one(client("a", "carol", groups=["writers"]), topic) is None
        for impostor in (client("b", "admin"), client("b", "carol", groups=["writers"])):
            error = _produce_one(impostor, topic)
            assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        logins = {
            e["principal"]
            for e in gateway.events()
            if e.get("event") == "authentication" and e.get("outcome") == "success"
        }
        assert logins == {
            "User:idp-a/admin",
            "User:idp-a/carol",
            "User:idp-b/admin",
            "User:idp-b/carol",
        }
        denied = {
            e.get("principal") for e in gateway.events() if e.get("event") == "authorization_denied"
        }
        assert denied == {"User:idp-b/admin", "User:idp-b/carol"}
