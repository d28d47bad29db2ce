"""Every way a login can be wrong is refused by the gateway, answered like Kafka and audited.

Raw SASL exchanges (codec.sasl frames over a socket) so each case controls exactly what
the client sends; the JWKS is served over HTTP and fetched by the gateway, so an unknown
key id exercises the refresh path.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from codec.errors import SASL_AUTHENTICATION_FAILED
from policies.auth import derive_scram_credential
from policies.auth.oauthbearer import oauthbearer_client_token
from policies.auth.scram import ScramClientSession
from tests.gateway_harness import RunningGateway, running_gateway
from tests.jwks_server import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    JwksServer,
    hs256_with_public_key,
    jwks_of,
    make_rsa_key,
    mint_token,
    standard_claims,
    tamper_payload,
    unsigned_token,
)
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka

KEY = make_rsa_key("current")
ROTATED = make_rsa_key("rotated")  # published only after the gateway first fetched the JWKS


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    server = JwksServer(jwks_of(KEY))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    kafka_cluster, jwks: JwksServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:  # type: ignore[no-untyped-def]
    listener = {
        "authentication": {
            "mechanisms": ["OAUTHBEARER", "SCRAM-SHA-256"],
            "failed_authentication_delay_ms": 20,
            "max_token_bytes": 4096,
            "scram_credentials": {
                "alice": [str(derive_scram_credential("alice-secret", "SCRAM-SHA-256"))]
            },
            "oauthbearer": {
                "issuers": [
                    {
                        "issuer": DEFAULT_ISSUER,
                        "audience": DEFAULT_AUDIENCE,
                        "algorithms": ["RS256"],
                        "jwks_url": jwks.jwks_url,
                        "jwks_refresh_min_interval_s": 1,
                        # tokens name 'alice' too, like the SCRAM user: its own namespace
                        "principal_prefix": "idp/",
                    }
                ]
            },
        }
    }
    workdir = tmp_path_factory.mktemp("negative")
    with running_gateway(workdir, kafka_cluster.bootstrap_servers, listener=listener) as gw:
        yield gw


def login(gateway: RunningGateway, mechanism: str, *tokens: bytes) -> list[tuple[int, bytes]]:
    """Handshake, then one SaslAuthenticate per token: (error code, auth bytes) of each."""
    answers = []
    with RawKafkaConnection(gateway.bootstrap) as conn:
        conn.sasl_handshake(mechanism)
        for token in tokens:
            response = conn.sasl_token(token)
            answers.append((response.error_code, response.auth_bytes))
            if response.error_code:
                assert conn.is_closed_by_peer(), "a failed login must close the connection"
                break
    return answers


def last_failure(gateway: RunningGateway, count_before: int) -> dict[str, Any]:
    """The newest authentication failure, once there are more than ``count_before``."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        failures = [
            e
            for e in gateway.events()
            if e.get("event") == "authentication" and e.get("outcome") == "failure"
        ]
        if len(failures) > count_before:
            return failures[-1]
        time.sleep(0.05)
    raise AssertionError(f"no new failure event; log:\n{gateway.tail()}")


def failures_so_far(gateway: RunningGateway) -> int:
    return sum(
        1
        for e in gateway.events()
        if e.get("event") == "authentication" and e.get("outcome") == "failure"
    )


def accepted(answers: list[tuple[int, bytes]]) -> bool:
    """A one-step OAUTHBEARER success: no error and no RFC 7628 error challenge."""
    return answers[-1][0] == 0 and b"invalid_token" not in answers[-1][1]


def bearer(token: str) -> bytes:
    return oauthbearer_client_token(token)


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "expired": lambda: mint_token(KEY, standard_claims(lifetime=-600)),
    "not yet valid": lambda: mint_token(KEY, standard_claims(not_before=600)),
    "wrong audience": lambda: mint_token(KEY, standard_claims(aud="someone-else")),
    "wrong issuer": lambda: mint_token(KEY, standard_claims(iss="https://evil.example")),
    "unsigned": lambda: unsigned_token(standard_claims()),
    "HS256 with the RSA public key": lambda: hs256_with_public_key(KEY, standard_claims()),
    "tampered payload": lambda: tamper_payload(mint_token(KEY, standard_claims()), sub="root"),
    "unknown kid": lambda: mint_token(make_rsa_key("nobody"), standard_claims()),
    # ~3 KB of nested JSON made the JSON parser raise RecursionError before login
    "nested JSON": lambda: nested_json_token(1200),
}


def nested_json_token(depth: int) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    payload = b'{"sub":"alice","x":' + b"[" * depth + b"]" * depth + b"}"
    header = b64(b'{"alg":"RS256"}')
    return f"{header}.{b64(payload)}.c2ln"


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused_and_audited(gateway: RunningGateway, case: str) -> None:
    before = failures_so_far(gateway)
    answers = login(gateway, "OAUTHBEARER", bearer(BAD_TOKENS[case]()), b"\x01")
    # RFC 7628: the error JSON comes as a challenge, the client acknowledges, then failure.
    assert answers[-1][0] == SASL_AUTHENTICATION_FAILED
    assert any(b"invalid_token" in auth for _, auth in answers)
    failure = last_failure(gateway, before)
    assert failure["mechanism"] == "OAUTHBEARER"
    assert failure["reason"] == "invalid_token"


def test_a_good_token_is_accepted_and_a_rotated_key_is_fetched(
    gateway: RunningGateway, jwks: JwksServer
) -> None:
    mark = gateway.log_mark()
    assert accepted(login(gateway, "OAUTHBEARER", bearer(mint_token(KEY, standard_claims()))))
    jwks.set_jwks(jwks_of(KEY, ROTATED))  # the issuer rotates keys
    rotated = mint_token(ROTATED, standard_claims(sub="bob"))
    # Refreshes are rate-limited (1 s here): an earlier unknown kid may have used the slot.
    deadline = time.monotonic() + 10
    while not accepted(login(gateway, "OAUTHBEARER", bearer(rotated))):
        assert time.monotonic() < deadline, "the rotated key was never fetched"
        time.sleep(0.2)
    gateway.wait_for_event(
        lambda e: e.get("event") == "authentication" and e.get("principal") == "User:idp/bob",
        after=mark,
    )


def test_scram_wrong_proof_and_replayed_nonce(gateway: RunningGateway) -> None:
    before = failures_so_far(gateway)
    wrong = ScramClientSession("SCRAM-SHA-256", "alice", "not-alice-secret")
    first = wrong.initial_response()
    with RawKafkaConnection(gateway.bootstrap) as conn:
        conn.sasl_handshake("SCRAM-SHA-256")
        server_first = conn.sasl_token(first)
        final = wrong.evaluate(server_first.auth_bytes)
        assert final is not None
        answer = conn.sasl_token(final)
    assert answer.error_code == SASL_AUTHENTICATION_FAILED
    assert last_failure(gateway, before)["reason"] == "wrong_proof"

    # Replaying that client-final on a new exchange: the server nonce no longer matches.
    before = failures_so_far(gateway)
    answers = login(gateway, "SCRAM-SHA-256", first, final)
    assert answers[-1][0] == SASL_AUTHENTICATION_FAILED
    assert last_failure(gateway, before)["reason"] == "nonce_mismatch"


def test_an_oversized_token_is_refused(gateway: RunningGateway) -> None:
    before = failures_so_far(gateway)
    answers = login(gateway, "OAUTHBEARER", b"n,,\x01auth=Bearer " + b"x" * 5000 + b"\x01\x01")
    assert answers[-1][0] == SASL_AUTHENTICATION_FAILED
    assert last_failure(gateway, before)["reason"] == "token_too_large"
