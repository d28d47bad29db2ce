"""The listener authenticator, session lifetimes (KIP-368), upstream clients, audit events."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from policies.auth import (
    ANONYMOUS,
    AuthenticationFailed,
    FailureReason,
    KeyRefreshNeeded,
    ListenerAuthenticator,
    Principal,
    SaslResult,
    UnsupportedMechanism,
    allowed_before_authentication,
    authentication_event,
    check_reauthentication,
    check_token_size,
    passthrough_principal,
    sasl_client_for,
    session_expired,
    session_lifetime_ms,
)
from policies.auth.base import SaslClientSession, SaslServerSession
from policies.auth.oauth_client import (
    TokenEndpointError,
    client_credentials_request,
    parse_token_response,
)
from policies.auth.oauthbearer import oauthbearer_client_token
from policies.auth.passwords import hash_password
from policies.auth.plain import plain_client_token
from policies.auth.scram import ScramClientSession, derive_scram_credential
from policies.config import AuthenticationConfig, ServerTlsConfig, UpstreamSaslConfig

NOW = 1_700_000_000.0
EXAMPLES = Path(__file__).parents[2] / "deploy" / "examples"
ISSUER = "https://issuer.example"

PASSWORD = "S3cr3t-Pa55w0rd!"
HASH = hash_password(PASSWORD, n=16, r=1, p=1)
SCRAM_256 = str(derive_scram_credential(PASSWORD, "SCRAM-SHA-256"))
SCRAM_512 = str(derive_scram_credential(PASSWORD, "SCRAM-SHA-512", iterations=8192))


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_file(tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> Path:
    key = json.loads(RSAAlgorithm.to_jwk(signing_key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [dict(key, kid="k1")]}))
    return path


def token_for(
    key: rsa.RSAPrivateKey, sub: str = "alice", exp: float = NOW + 600, kid: str = "k1"
) -> str:
    claims = {"iss": ISSUER, "aud": "kafka-gateway", "sub": sub, "exp": int(exp)}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def auth_config(**data: Any) -> AuthenticationConfig:
    return AuthenticationConfig.model_validate(data)


def everything(jwks_file: Path, **extra: Any) -> AuthenticationConfig:
    return auth_config(
        mechanisms=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"],
        users={"alice": HASH},
        scram_credentials={"alice": [SCRAM_256, SCRAM_512]},
        oauthbearer={
            "issuers": [
                {"issuer": ISSUER, "audience": "kafka-gateway", "jwks_file": str(jwks_file)}
            ],
            # the same 'alice' logs in with every mechanism here, on purpose
            "shared_principal_namespace": True,
        },
        **extra,
    )


def drive(server: SaslServerSession, client: SaslClientSession, now: float = NOW) -> SaslResult:
    """What the runtime does: pass tokens back and forth until the server completes."""
    token: bytes | None = client.initial_response()
    while True:
        assert token is not None
        result = server.evaluate(token, now)
        token = client.evaluate(result.challenge)
        if result.completed:
            assert token is None and client.complete
            return result


# --------------------------------------------------------------------------------------
# ListenerAuthenticator


def test_default_listener_is_anonymous() -> None:
    authenticator = ListenerAuthenticator(AuthenticationConfig(), now=NOW)
    assert authenticator.mechanisms == () and not authenticator.sasl_required
    assert authenticator.principal_without_sasl(None) is ANONYMOUS
    assert str(ANONYMOUS) == "User:ANONYMOUS" and ANONYMOUS.is_anonymous
    with pytest.raises(UnsupportedMechanism) as info:
        authenticator.server_session("PLAIN")
    assert info.value.enabled == ()
    assert info.value.reason is FailureReason.UNSUPPORTED_MECHANISM


def test_every_mechanism_through_the_authenticator(
    jwks_file: Path, signing_key: rsa.RSAPrivateKey
) -> None:
    authenticator = ListenerAuthenticator(everything(jwks_file), now=NOW)
    assert authenticator.mechanisms == ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
    assert authenticator.failed_authentication_delay_s == 0.1
    clients: dict[str, SaslClientSession] = {
        "PLAIN": sasl_client_for(
            UpstreamSaslConfig(mechanism="PLAIN", username="alice", password=PASSWORD)  # type: ignore[arg-type]
        ),
        "SCRAM-SHA-256": ScramClientSession("SCRAM-SHA-256", "alice", PASSWORD),
        "SCRAM-SHA-512": ScramClientSession("SCRAM-SHA-512", "alice", PASSWORD),
        "OAUTHBEARER": sasl_client_for(
            UpstreamSaslConfig(
                mechanism="OAUTHBEARER",
                token_endpoint_url="https://idp.example/token",
                client_id="gw",
                client_secret="x",  # type: ignore[arg-type]
            ),
            oauth_token=token_for(signing_key),
        ),
    }
    for mechanism, client in clients.items():
        session = authenticator.server_session(mechanism)
        assert session.mechanism == mechanism
        assert session.cpu_bound == (mechanism == "PLAIN")
        result = drive(session, client)
        assert result.principal == Principal("alice", mechanism)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedMechanism) as info:
        authenticator.server_session("GSSAPI")
    assert info.value.enabled == authenticator.mechanisms


def test_users_file_users_authenticate(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(f"bob: '{HASH}'\n")
    config = AuthenticationConfig.model_validate(
        {"mechanisms": ["PLAIN"], "users_file": "users.yaml"}, context={"base_dir": tmp_path}
    )
    session = ListenerAuthenticator(config, now=NOW).server_session("PLAIN")
    result = session.evaluate(plain_client_token("bob", PASSWORD), NOW)
    assert result.principal is not None and result.principal.name == "bob"


def test_unknown_scram_user_looks_like_a_real_one(jwks_file: Path) -> None:
    authenticator = ListenerAuthenticator(everything(jwks_file), now=NOW)
    again = ListenerAuthenticator(everything(jwks_file), now=NOW + 5)

    def server_first(a: ListenerAuthenticator, mechanism: str, user: str) -> list[str]:
        text = a.server_session(mechanism).evaluate(f"n,,n={user},r=abc".encode(), NOW)
        return text.challenge.decode().split(",")

    real = server_first(authenticator, "SCRAM-SHA-512", "alice")
    fake = server_first(authenticator, "SCRAM-SHA-512", "mallory")
    assert fake[2] == real[2] == "i=8192"  # the iterations real users have
    assert len(fake[1]) == len(real[1])  # same salt size
    assert server_first(again, "SCRAM-SHA-512", "mallory")[1] == fake[1]  # stable across instances


def test_token_size_limit(jwks_file: Path) -> None:
    authenticator = ListenerAuthenticator(everything(jwks_file, max_token_bytes=1024), now=NOW)
    session = authenticator.server_session("OAUTHBEARER")
    with pytest.raises(AuthenticationFailed) as info:
        session.evaluate(b"n,,\x01auth=Bearer " + b"a" * 2000 + b"\x01\x01", NOW)
    assert info.value.reason is FailureReason.TOKEN_TOO_LARGE
    assert info.value.mechanism == "OAUTHBEARER"
    check_token_size(1024, 1024)
    with pytest.raises(AuthenticationFailed):
        check_token_size(1025, 1024)


def test_oauthbearer_lifetime_and_refresh(jwks_file: Path, signing_key: rsa.RSAPrivateKey) -> None:
    authenticator = ListenerAuthenticator(
        everything(jwks_file, max_session_lifetime_ms=300_000), now=NOW
    )
    session = authenticator.server_session("OAUTHBEARER")
    result = session.evaluate(oauthbearer_client_token(token_for(signing_key, exp=NOW + 120)), NOW)
    assert result.session_lifetime_ms == 120_000  # token exp < configured max
    session = authenticator.server_session("OAUTHBEARER")
    result = session.evaluate(oauthbearer_client_token(token_for(signing_key, exp=NOW + 900)), NOW)
    assert result.session_lifetime_ms == 300_000  # configured max < token exp
    # jwks_file keys are loaded at construction; an unknown kid asks for a refresh
    session = authenticator.server_session("OAUTHBEARER")
    with pytest.raises(KeyRefreshNeeded):
        session.evaluate(oauthbearer_client_token(token_for(signing_key, kid="k9")), NOW)
    assert authenticator.jwt_validator is not None
    key_sets = authenticator.jwt_validator.key_sets()
    assert set(key_sets) == {ISSUER} and key_sets[ISSUER].kids == {"k1"}
    # a reload keeps the key sets
    reloaded = ListenerAuthenticator(everything(jwks_file), now=NOW, key_sets=key_sets)
    assert (
        reloaded.jwt_validator is not None
        and reloaded.jwt_validator.key_set(ISSUER) is key_sets[ISSUER]
    )


def test_jwks_url_issuer_starts_empty_and_asks_for_a_fetch(signing_key: rsa.RSAPrivateKey) -> None:
    config = auth_config(
        mechanisms=["OAUTHBEARER"],
        oauthbearer={
            "issuers": [
                {
                    "issuer": ISSUER,
                    "audience": ["kafka-gateway"],
                    "jwks_url": "https://idp.example/jwks",
                }
            ]
        },
    )
    authenticator = ListenerAuthenticator(config, now=NOW)
    assert authenticator.jwt_validator is not None
    key_set = authenticator.jwt_validator.key_set(ISSUER)
    assert (
        key_set is not None and not key_set.loaded and key_set.source == "https://idp.example/jwks"
    )
    session = authenticator.server_session("OAUTHBEARER")
    message = oauthbearer_client_token(token_for(signing_key))
    with pytest.raises(KeyRefreshNeeded) as info:
        session.evaluate(message, NOW)
    assert info.value.issuer == ISSUER
    key = json.loads(RSAAlgorithm.to_jwk(signing_key.public_key()))
    key_set.update(json.dumps({"keys": [dict(key, kid="k1")]}), NOW)
    assert session.evaluate(message, NOW).completed


def test_mtls_principal_without_sasl(tmp_path: Path) -> None:
    config = AuthenticationConfig()
    tls = ServerTlsConfig.model_construct(
        cert_file="c", key_file="k", ca_file="ca", client_auth="required",
        principal_mapping_rules="RULE:^CN=([^,]*),.*$/$1/L,DEFAULT",
    )  # fmt: skip
    authenticator = ListenerAuthenticator(config, now=NOW, tls=tls)
    principal = authenticator.principal_without_sasl("CN=Alice,O=Example")
    assert str(principal) == "User:alice" and principal.mechanism == "MTLS"
    assert authenticator.principal_without_sasl(None) is ANONYMOUS
    no_client_auth = ServerTlsConfig.model_construct(
        cert_file="c", key_file="k", client_auth="none", principal_mapping_rules="DEFAULT"
    )
    plain_tls = ListenerAuthenticator(config, now=NOW, tls=no_client_auth)
    assert plain_tls.principal_without_sasl("CN=Alice") is ANONYMOUS


def test_passthrough_listener(signing_key: rsa.RSAPrivateKey) -> None:
    config = auth_config(mechanisms=["PLAIN", "SCRAM-SHA-256", "OAUTHBEARER"], passthrough=True)
    authenticator = ListenerAuthenticator(config, now=NOW)
    assert authenticator.passthrough and authenticator.jwt_validator is None
    with pytest.raises(ValueError, match="passthrough"):
        authenticator.server_session("PLAIN")
    plain = passthrough_principal("PLAIN", plain_client_token("alice", PASSWORD))
    assert plain == Principal("alice", "PLAIN", authenticated_by="upstream")
    scram = passthrough_principal("SCRAM-SHA-256", b"n,,n=bob,r=abc")
    assert scram is not None and (scram.name, scram.authenticated_by) == ("bob", "upstream")
    oauth = passthrough_principal(
        "OAUTHBEARER", oauthbearer_client_token(token_for(signing_key, sub="carol"))
    )
    assert oauth is not None and oauth.name == "carol" and not oauth.claims
    for mechanism, token in [
        ("PLAIN", b"garbage"),
        ("SCRAM-SHA-256", b"garbage"),
        ("OAUTHBEARER", b"n,,\x01auth=Bearer abc\x01\x01"),
        ("OAUTHBEARER", oauthbearer_client_token("a.e30.c")),
        ("GSSAPI", b"x"),
    ]:
        assert passthrough_principal(mechanism, token) is None


def test_pre_authentication_requests() -> None:
    assert [k for k in range(100) if allowed_before_authentication(k)] == [17, 18, 36]


# --------------------------------------------------------------------------------------
# session lifetime and re-authentication (KIP-368)


def test_session_lifetime() -> None:
    assert (
        session_lifetime_ms(now=NOW, credential_expires_at=None, max_session_lifetime_ms=None)
        is None
    )
    assert (
        session_lifetime_ms(now=NOW, credential_expires_at=None, max_session_lifetime_ms=5000)
        == 5000
    )
    assert (
        session_lifetime_ms(now=NOW, credential_expires_at=NOW + 10, max_session_lifetime_ms=None)
        == 10_000
    )
    assert (
        session_lifetime_ms(now=NOW, credential_expires_at=NOW + 10, max_session_lifetime_ms=5000)
        == 5000
    )
    assert (
        session_lifetime_ms(now=NOW, credential_expires_at=NOW + 2, max_session_lifetime_ms=5000)
        == 2000
    )
    assert (
        session_lifetime_ms(now=NOW, credential_expires_at=NOW - 5, max_session_lifetime_ms=None)
        == 1
    )
    assert (
        session_lifetime_ms(
            now=NOW, credential_expires_at=NOW + 0.0004, max_session_lifetime_ms=None
        )
        == 1
    )


def test_session_expired() -> None:
    assert not session_expired(NOW + 1e9, NOW, None)
    assert not session_expired(NOW + 4.999, NOW, 5000)
    assert session_expired(NOW + 5, NOW, 5000)
    assert session_expired(NOW + 60, NOW, 5000)


def test_a_session_that_outlives_its_token(jwks_file: Path, signing_key: rsa.RSAPrivateKey) -> None:
    authenticator = ListenerAuthenticator(everything(jwks_file), now=NOW)
    session = authenticator.server_session("OAUTHBEARER")
    result = session.evaluate(oauthbearer_client_token(token_for(signing_key, exp=NOW + 60)), NOW)
    assert not session_expired(NOW + 59, NOW, result.session_lifetime_ms)
    assert session_expired(NOW + 60, NOW, result.session_lifetime_ms)


def test_reauthentication_must_keep_principal_and_mechanism() -> None:
    alice = Principal("alice", "PLAIN")
    check_reauthentication(alice, Principal("alice", "PLAIN"))
    with pytest.raises(AuthenticationFailed) as info:
        check_reauthentication(alice, Principal("bob", "PLAIN"))
    assert info.value.reason is FailureReason.REAUTHENTICATION_MISMATCH
    assert "Cannot change principals" in info.value.client_message
    with pytest.raises(AuthenticationFailed, match="mechanism"):
        check_reauthentication(alice, Principal("alice", "SCRAM-SHA-256"))


# --------------------------------------------------------------------------------------
# upstream client sessions


def test_sasl_client_for() -> None:
    scram = sasl_client_for(
        UpstreamSaslConfig(mechanism="SCRAM-SHA-512", username="gw", password="pw")  # type: ignore[arg-type]
    )
    assert scram.mechanism == "SCRAM-SHA-512" and scram.initial_response().startswith(b"n,,n=gw,r=")
    oauth = UpstreamSaslConfig(
        mechanism="OAUTHBEARER",
        token_endpoint_url="https://idp/t",
        client_id="c",
        client_secret="s",  # type: ignore[arg-type]
    )
    with pytest.raises(ValueError, match="token"):
        sasl_client_for(oauth)
    broken = UpstreamSaslConfig.model_construct(mechanism="PLAIN", username=None, password=None)
    with pytest.raises(ValueError, match="username"):
        sasl_client_for(broken)


def test_client_credentials_request() -> None:
    request = client_credentials_request("https://idp/token", "gw id", "s3cr:t", scope="kafka")
    assert request.url == "https://idp/token"
    assert request.body == b"grant_type=client_credentials&scope=kafka"
    # RFC 6749 2.3.1: id and secret are form-url-encoded, then joined for Basic.
    assert (
        request.headers["Authorization"] == "Basic " + base64.b64encode(b"gw+id:s3cr%3At").decode()
    )
    assert "s3cr" not in repr(request)
    assert (
        client_credentials_request("https://idp/token", "a", "b").body
        == b"grant_type=client_credentials"
    )


def test_token_response() -> None:
    body = json.dumps(
        {"access_token": "a.b.c", "token_type": "Bearer", "expires_in": 3600}
    ).encode()
    token = parse_token_response(200, body, NOW)
    assert (token.value, token.expires_at) == ("a.b.c", NOW + 3600)
    assert token.refresh_at == NOW + 2880  # 80 % of the lifetime
    assert "a.b.c" not in repr(token)
    assert not token.expired(NOW + 3599) and token.expired(NOW + 3600)
    short = parse_token_response(200, b'{"access_token": "t", "expires_in": "600"}', NOW)
    assert short.refresh_at == NOW + 300  # not later than 5 minutes before expiry
    default = parse_token_response(200, b'{"access_token": "t"}', NOW)
    assert default.expires_at == NOW + 3600
    errors = [
        (401, b'{"error": "invalid_client", "error_description": "bad secret"}', "invalid_client"),
        (500, b"<html>", "HTTP 500"),
        (200, b"{}", "no access_token"),
        (200, b'{"access_token": "t", "token_type": "mac"}', "token_type"),
        (200, b'{"access_token": "t", "expires_in": -5}', "positive"),
    ]
    for status, response, message in errors:
        with pytest.raises(TokenEndpointError, match=message):
            parse_token_response(status, response, NOW)


# --------------------------------------------------------------------------------------
# audit events never contain secrets


def test_audit_events(jwks_file: Path, signing_key: rsa.RSAPrivateKey) -> None:
    authenticator = ListenerAuthenticator(everything(jwks_file), now=NOW)
    token = token_for(signing_key)
    bad_token = token_for(signing_key, exp=NOW - 3600)
    secrets = [PASSWORD, token, bad_token, bad_token.split(".")[2], "wrong-" + PASSWORD]
    events: list[dict[str, Any]] = []
    logged: list[str] = []

    def attempt(mechanism: str, *tokens: bytes) -> None:
        session = authenticator.server_session(mechanism)
        try:
            for item in tokens:
                result = session.evaluate(item, NOW)
                if result.completed:
                    assert result.principal is not None
                    events.append(
                        authentication_event(
                            virtual_cluster="local",
                            listener="127.0.0.1:9092",
                            client_address="127.0.0.1:50000",
                            principal=result.principal,
                            session_lifetime_ms=result.session_lifetime_ms,
                        ).as_dict()
                    )
        except AuthenticationFailed as failure:
            logged.extend([str(failure), repr(failure), failure.client_message])
            events.append(
                authentication_event(
                    virtual_cluster="local",
                    listener="127.0.0.1:9092",
                    client_address="127.0.0.1:50000",
                    failure=failure,
                ).as_dict()
            )

    attempt("PLAIN", plain_client_token("alice", PASSWORD))
    attempt("PLAIN", plain_client_token("alice", "wrong-" + PASSWORD))
    attempt("PLAIN", plain_client_token("mallory", PASSWORD))
    attempt("PLAIN", f"alice\0{PASSWORD}".encode())
    attempt("OAUTHBEARER", oauthbearer_client_token(token))
    attempt("OAUTHBEARER", oauthbearer_client_token(bad_token), b"\x01")
    for password in (PASSWORD, "wrong-" + PASSWORD):
        client = ScramClientSession("SCRAM-SHA-256", "alice", password)
        session = authenticator.server_session("SCRAM-SHA-256")
        final = client.evaluate(session.evaluate(client.initial_response(), NOW).challenge)
        assert final is not None
        secrets.append(final.decode().split(",p=")[1])  # the proof
        attempt_session = session
        try:
            result = attempt_session.evaluate(final, NOW)
            assert result.principal is not None
            events.append(
                authentication_event(
                    virtual_cluster="local",
                    listener="l",
                    client_address="c",
                    principal=result.principal,
                ).as_dict()
            )
        except AuthenticationFailed as failure:
            events.append(
                authentication_event(
                    virtual_cluster="local", listener="l", client_address="c", failure=failure
                ).as_dict()
            )
            logged.extend([str(failure), repr(failure)])

    outcomes = [(e["outcome"], e.get("principal"), e["mechanism"], e.get("reason")) for e in events]
    assert outcomes == [
        ("success", "User:alice", "PLAIN", None),
        ("failure", "User:alice", "PLAIN", "wrong_password"),
        ("failure", "User:mallory", "PLAIN", "unknown_user"),
        ("failure", None, "PLAIN", "malformed_message"),
        ("success", "User:alice", "OAUTHBEARER", None),
        ("failure", None, "OAUTHBEARER", "invalid_token"),
        ("success", "User:alice", "SCRAM-SHA-256", None),
        ("failure", "User:alice", "SCRAM-SHA-256", "wrong_proof"),
    ]
    assert all(e["event"] == "authentication" for e in events)
    assert events[5]["detail"].startswith("expired:")
    assert events[0]["client_address"] == "127.0.0.1:50000"
    text = json.dumps(events) + "\n".join(logged)
    for secret in secrets:
        assert secret not in text


def test_audit_event_shape() -> None:
    event = authentication_event(
        virtual_cluster="vc",
        listener="127.0.0.1:9092",
        client_address="10.0.0.1:1234",
        principal=Principal("alice", "MTLS", claims={"email": "a@example.com"}),
        reauthentication=True,
    ).as_dict()
    assert event == {
        "event": "authentication",
        "outcome": "success",
        "virtual_cluster": "vc",
        "listener": "127.0.0.1:9092",
        "client_address": "10.0.0.1:1234",
        "mechanism": "MTLS",
        "principal": "User:alice",
        "reauthentication": True,
    }
    failure = AuthenticationFailed(
        FailureReason.UNKNOWN_USER, "no such user\n" + "x" * 500, user="bad\x1b[31m"
    )
    event = authentication_event(
        virtual_cluster="vc", listener="l", client_address="c", failure=failure
    ).as_dict()
    assert event["principal"] == "User:bad?[31m"
    assert len(event["detail"]) == 300 and "\n" not in event["detail"]
    with pytest.raises(ValueError):
        authentication_event(virtual_cluster="vc", listener="l", client_address="c")


def test_principal_repr_hides_claims() -> None:
    principal = Principal("alice", "OAUTHBEARER", claims={"email": "alice@example.com"})
    assert "alice@example.com" not in repr(principal)
    assert principal.claims["email"] == "alice@example.com"
    with pytest.raises(TypeError):
        principal.claims["email"] = "x"  # type: ignore[index]
    assert principal == Principal("alice", "OAUTHBEARER")  # claims do not take part in equality


def test_examples_authenticate_alice() -> None:
    from policies.config_loader import load_config

    for name, mechanisms in (
        ("auth-plain.yaml", ["PLAIN"]),
        ("auth-scram.yaml", ["SCRAM-SHA-256", "SCRAM-SHA-512"]),
    ):
        config = load_config(EXAMPLES / name, env={})
        authenticator = ListenerAuthenticator(
            config.virtual_clusters[0].listener.authentication, now=NOW
        )
        assert list(authenticator.mechanisms) == mechanisms
        for mechanism in mechanisms:
            client: SaslClientSession = (
                sasl_client_for(
                    UpstreamSaslConfig(
                        mechanism="PLAIN",
                        username="alice",
                        password="alice-secret",  # type: ignore[arg-type]
                    )
                )
                if mechanism == "PLAIN"
                else ScramClientSession(mechanism, "alice", "alice-secret")  # type: ignore[arg-type]
            )
            result = drive(authenticator.server_session(mechanism), client)
            assert result.principal is not None and str(result.principal) == "User:alice"

    config = load_config(EXAMPLES / "auth-oauthbearer.yaml", env={})
    now = time.time()
    authenticator = ListenerAuthenticator(
        config.virtual_clusters[0].listener.authentication, now=now
    )
    token = jwt.encode(
        {
            "iss": ISSUER,
            "aud": "kafka-gateway",
            "sub": "alice",
            "iat": int(now),
            "exp": int(now) + 3600,
        },
        (EXAMPLES / "dev-signing-key.pem").read_text(),
        algorithm="RS256",
        headers={"kid": "kafka-gateway-dev-1"},
    )
    result = authenticator.server_session("OAUTHBEARER").evaluate(
        oauthbearer_client_token(token), now
    )
    assert result.principal is not None and str(result.principal) == "User:alice"
    assert result.session_lifetime_ms is not None and result.session_lifetime_ms <= 3_600_000
