"""SASL PLAIN (RFC 4616) with Kafka's rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.auth.base import SaslClientError
from policies.auth.errors import AuthenticationFailed, FailureReason
from policies.auth.passwords import PasswordHash, hash_password
from policies.auth.plain import (
    PlainClientSession,
    PlainServerSession,
    parse_plain_token,
    plain_client_token,
)

NOW = 1_700_000_000.0
USERS = {"alice": PasswordHash.parse(hash_password("alice-secret", n=16, r=1, p=1))}


def server(max_lifetime: int | None = None) -> PlainServerSession:
    return PlainServerSession(USERS.get, max_session_lifetime_ms=max_lifetime)


def fail(token: bytes) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as info:
        server().evaluate(token, NOW)
    assert info.value.mechanism == "PLAIN"
    return info.value


def test_success() -> None:
    result = server().evaluate(b"\0alice\0alice-secret", NOW)
    assert result.completed and result.challenge == b""
    assert result.principal is not None and str(result.principal) == "User:alice"
    assert result.principal.mechanism == "PLAIN"
    assert result.session_lifetime_ms is None


def test_session_lifetime_is_the_configured_maximum() -> None:
    result = server(max_lifetime=60_000).evaluate(b"\0alice\0alice-secret", NOW)
    assert result.session_lifetime_ms == 60_000


def test_wrong_password_and_unknown_user_look_the_same_to_the_client() -> None:
    wrong = fail(b"\0alice\0nope")
    unknown = fail(b"\0mallory\0alice-secret")
    assert wrong.reason is FailureReason.WRONG_PASSWORD
    assert unknown.reason is FailureReason.UNKNOWN_USER
    assert wrong.client_message == unknown.client_message
    assert wrong.client_message == "Authentication failed: Invalid username or password"
    assert (wrong.user, unknown.user) == ("alice", "mallory")


def test_authzid_rules() -> None:
    assert server().evaluate(b"alice\0alice\0alice-secret", NOW).completed
    failure = fail(b"admin\0alice\0alice-secret")
    assert failure.reason is FailureReason.AUTHZID_MISMATCH
    assert "authorization id that is different from username" in failure.client_message


@pytest.mark.parametrize(
    ("token", "client_message"),
    [
        (b"alice\0alice-secret", "invalid SASL/PLAIN message"),
        (b"\0alice\0alice-secret\0", "invalid SASL/PLAIN message"),
        (b"", "invalid SASL/PLAIN message"),
        (b"\0\0alice-secret", "username not specified"),
        (b"\0alice\0", "password not specified"),
        (b"\0al\xffice\0pw", "Invalid username or password"),
    ],
)
def test_malformed_messages(token: bytes, client_message: str) -> None:
    failure = fail(token)
    assert failure.reason is FailureReason.MALFORMED_MESSAGE
    assert client_message in failure.client_message


def test_second_message_is_an_illegal_state() -> None:
    session = server()
    session.evaluate(b"\0alice\0alice-secret", NOW)
    with pytest.raises(AuthenticationFailed) as info:
        session.evaluate(b"\0alice\0alice-secret", NOW)
    assert info.value.reason is FailureReason.ILLEGAL_STATE


def test_session_reports_cpu_bound() -> None:
    assert server().cpu_bound and server().mechanism == "PLAIN"


names = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), min_size=1)


@given(authzid=st.one_of(st.just(""), names), user=names, password=names)
def test_parse_round_trips_the_client_token(authzid: str, user: str, password: str) -> None:
    token = plain_client_token(user, password, authzid)
    if authzid and authzid != user:
        with pytest.raises(AuthenticationFailed) as info:
            parse_plain_token(token)
        assert info.value.reason is FailureReason.AUTHZID_MISMATCH
        return
    parsed = parse_plain_token(token)
    assert (parsed.authzid, parsed.username, parsed.password) == (authzid, user, password)
    assert "password=" not in repr(parsed)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(token: bytes) -> None:
    try:
        parse_plain_token(token)
    except AuthenticationFailed as exc:
        assert exc.reason in {FailureReason.MALFORMED_MESSAGE, FailureReason.AUTHZID_MISMATCH}


def test_client_token_rejects_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        plain_client_token("al\0ice", "pw")


def test_client_session() -> None:
    client = PlainClientSession("alice", "alice-secret")
    assert client.initial_response() == b"\0alice\0alice-secret"
    assert "alice-secret" not in repr(client)
    assert client.evaluate(b"") is None and client.complete
    with pytest.raises(SaslClientError):
        client.evaluate(b"")
    other = PlainClientSession("alice", "pw")
    other.initial_response()
    with pytest.raises(SaslClientError):
        other.evaluate(b"unexpected")
