"""SCRAM-SHA-256/512 (RFC 5802, RFC 7677): credentials, server and client state machines."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.auth.base import SaslClientError
from policies.auth.errors import AuthenticationFailed, FailureReason
from policies.auth.scram import (
    ClientFirstMessage,
    InvalidScramCredential,
    ScramClientSession,
    ScramCredential,
    ScramMechanism,
    ScramServerSession,
    ServerFirstMessage,
    derive_scram_credential,
    salted_password,
)

NOW = 1_700_000_000.0
MECHANISMS: list[ScramMechanism] = ["SCRAM-SHA-256", "SCRAM-SHA-512"]
SECRET = b"unknown-user-secret"

# RFC 7677 section 3: user "user", password "pencil", SCRAM-SHA-256.
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def credentials(mechanism: ScramMechanism) -> dict[str, ScramCredential]:
    return {"alice": derive_scram_credential("alice-secret", mechanism)}


CREDS = {m: credentials(m) for m in MECHANISMS}


def server(
    mechanism: ScramMechanism = "SCRAM-SHA-256",
    lookup: Callable[[str], ScramCredential | None] | None = None,
    **kwargs: object,
) -> ScramServerSession:
    return ScramServerSession(
        mechanism,
        lookup or CREDS[mechanism].get,
        unknown_user_secret=SECRET,
        **kwargs,  # type: ignore[arg-type]
    )


def run_exchange(
    mechanism: ScramMechanism, user: str, password: str, session: ScramServerSession | None = None
) -> tuple[ScramClientSession, ScramServerSession, bytes]:
    """Client-first and server-first; returns the client-final to send."""
    client = ScramClientSession(mechanism, user, password)
    session = session or server(mechanism)
    server_first = session.evaluate(client.initial_response(), NOW)
    assert not server_first.completed
    client_final = client.evaluate(server_first.challenge)
    assert client_final is not None
    return client, session, client_final


# --------------------------------------------------------------------------------------
# RFC 7677 test vector


def test_rfc7677_credential_derivation() -> None:
    credential = derive_scram_credential("pencil", "SCRAM-SHA-256", iterations=4096, salt=RFC_SALT)
    vector = ScramServerSession(
        "SCRAM-SHA-256",
        {"user": credential}.get,
        unknown_user_secret=SECRET,
        nonce_factory=lambda: RFC_SERVER_NONCE,
    )
    assert vector.evaluate(RFC_CLIENT_FIRST, NOW).challenge == RFC_SERVER_FIRST
    final = vector.evaluate(RFC_CLIENT_FINAL, NOW)
    assert final.completed and final.challenge == RFC_SERVER_FINAL
    assert final.principal is not None and str(final.principal) == "User:user"


def test_rfc7677_client() -> None:
    client = ScramClientSession("SCRAM-SHA-256", "user", "pencil", nonce=RFC_CLIENT_NONCE)
    assert client.initial_response() == RFC_CLIENT_FIRST
    assert client.evaluate(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    assert not client.complete
    assert client.evaluate(RFC_SERVER_FINAL) is None
    assert client.complete


def test_client_rejects_a_forged_server_signature() -> None:
    client = ScramClientSession("SCRAM-SHA-256", "user", "pencil", nonce=RFC_CLIENT_NONCE)
    client.initial_response()
    client.evaluate(RFC_SERVER_FIRST)
    with pytest.raises(SaslClientError, match="does not verify"):
        client.evaluate(b"v=" + base64.b64encode(b"\0" * 32))
    assert not client.complete


# --------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_round_trip(mechanism: ScramMechanism) -> None:
    client, session, client_final = run_exchange(mechanism, "alice", "alice-secret")
    result = session.evaluate(client_final, NOW)
    assert result.completed
    assert result.principal is not None
    assert (str(result.principal), result.principal.mechanism) == ("User:alice", mechanism)
    assert result.session_lifetime_ms is None
    assert client.evaluate(result.challenge) is None and client.complete


def test_lifetime_is_the_configured_maximum() -> None:
    session = server(max_session_lifetime_ms=5000)
    _, _, client_final = run_exchange("SCRAM-SHA-256", "alice", "alice-secret", session)
    assert session.evaluate(client_final, NOW).session_lifetime_ms == 5000


def test_names_with_comma_and_equals_are_escaped() -> None:
    name = "a,b=c"
    creds = {name: derive_scram_credential("pw", "SCRAM-SHA-256")}
    client = ScramClientSession("SCRAM-SHA-256", name, "pw")
    first = client.initial_response()
    assert b"n=a=2Cb=3Dc," in first
    session = server(lookup=creds.get)
    final = client.evaluate(session.evaluate(first, NOW).challenge)
    assert final is not None
    result = session.evaluate(final, NOW)
    assert result.principal is not None and result.principal.name == name


def test_server_nonce_is_fresh_and_extends_the_client_nonce() -> None:
    firsts = []
    for _ in range(2):
        session = server()
        challenge = session.evaluate(b"n,,n=alice,r=abc", NOW).challenge.decode()
        nonce = challenge.split(",")[0][2:]
        assert nonce.startswith("abc") and len(nonce) > 20
        firsts.append(nonce)
    assert firsts[0] != firsts[1]


# --------------------------------------------------------------------------------------
# failures


def expect_failure(session: ScramServerSession, token: bytes) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as info:
        session.evaluate(token, NOW)
    return info.value


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_wrong_password(mechanism: ScramMechanism) -> None:
    _, session, client_final = run_exchange(mechanism, "alice", "wrong")
    failure = expect_failure(session, client_final)
    assert failure.reason is FailureReason.WRONG_PROOF
    assert failure.user == "alice" and failure.mechanism == mechanism
    assert "invalid credentials" in failure.client_message


def test_unknown_user_follows_the_same_path() -> None:
    # The server-first for an unknown user looks like a real one: same shape,
    # iterations and salt size, and the same salt every time for that name.
    session = server(fake_iterations=4096, fake_salt_bytes=24)
    first = session.evaluate(b"n,,n=mallory,r=abc", NOW).challenge.decode()
    _, salt, iterations = first.split(",")
    assert iterations == "i=4096"
    assert len(base64.b64decode(salt[2:])) == 24
    again = server().evaluate(b"n,,n=mallory,r=abc", NOW).challenge.decode()
    assert again.split(",")[1] == salt
    other = server().evaluate(b"n,,n=eve,r=abc", NOW).challenge.decode()
    assert other.split(",")[1] != salt
    with_other_secret = ScramServerSession(
        "SCRAM-SHA-256", CREDS["SCRAM-SHA-256"].get, unknown_user_secret=b"other"
    )
    assert (
        with_other_secret.evaluate(b"n,,n=mallory,r=abc", NOW).challenge.decode().split(",")[1]
        != salt
    )

    _, session, client_final = run_exchange("SCRAM-SHA-256", "mallory", "alice-secret")
    failure = expect_failure(session, client_final)
    assert failure.reason is FailureReason.UNKNOWN_USER
    _, session, wrong_final = run_exchange("SCRAM-SHA-256", "alice", "nope")
    assert expect_failure(session, wrong_final).client_message == failure.client_message


def test_replayed_client_final_is_rejected() -> None:
    client = ScramClientSession("SCRAM-SHA-256", "alice", "alice-secret")
    session = server()
    client_first = client.initial_response()
    client_final = client.evaluate(session.evaluate(client_first, NOW).challenge)
    assert client_final is not None
    assert session.evaluate(client_final, NOW).completed
    # Replaying it into the same (finished) exchange ...
    assert expect_failure(session, client_final).reason is FailureReason.ILLEGAL_STATE
    # ... or into a new exchange with the same client-first: the server nonce differs.
    fresh = server()
    fresh.evaluate(client_first, NOW)
    failure = expect_failure(fresh, client_final)
    assert failure.reason is FailureReason.NONCE_MISMATCH
    assert "replayed" in failure.detail


def test_client_final_with_a_forged_nonce() -> None:
    _, session, client_final = run_exchange("SCRAM-SHA-256", "alice", "alice-secret")
    text = client_final.decode()
    forged = text.replace(",r=", ",r=x", 1)
    assert expect_failure(session, forged.encode()).reason is FailureReason.NONCE_MISMATCH


def test_channel_binding_must_match_the_gs2_header() -> None:
    _, session, client_final = run_exchange("SCRAM-SHA-256", "alice", "alice-secret")
    forged = client_final.replace(b"c=biws", b"c=eSws")  # "y,,"
    failure = expect_failure(session, forged)
    assert failure.reason is FailureReason.CHANNEL_BINDING_MISMATCH


def manual_client_final(gs2: str, bare: str, server_first: str, password: str) -> bytes:
    """A client-final computed by hand (RFC 5802 section 3), for GS2 headers the
    ScramClientSession never sends."""
    first = ServerFirstMessage.parse(server_first)
    salted = salted_password(password, first.salt, first.iterations, "SCRAM-SHA-256")
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={first.nonce}"
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


@pytest.mark.parametrize("gs2", ["y,,", "n,a=alice,"])
def test_gs2_header_variants_are_bound_into_the_exchange(gs2: str) -> None:
    bare = "n=alice,r=abcdef"
    session = server()
    server_first = session.evaluate((gs2 + bare).encode(), NOW).challenge.decode()
    final = manual_client_final(gs2, bare, server_first, "alice-secret")
    result = session.evaluate(final, NOW)
    assert result.completed and result.principal is not None
    # c=biws (the usual "n,,") does not match what this client sent first.
    session = server()
    server_first = session.evaluate((gs2 + bare).encode(), NOW).challenge.decode()
    final = manual_client_final("n,,", bare, server_first, "alice-secret")
    assert expect_failure(session, final).reason is FailureReason.CHANNEL_BINDING_MISMATCH


def test_authzid_must_be_the_user() -> None:
    failure = expect_failure(server(), b"n,a=admin,n=alice,r=abc")
    assert failure.reason is FailureReason.AUTHZID_MISMATCH


def test_delegation_tokens_are_rejected() -> None:
    failure = expect_failure(server(), b"n,,n=alice,r=abc,tokenauth=true")
    assert failure.reason is FailureReason.UNSUPPORTED_FEATURE
    assert "delegation" in failure.detail
    # other extensions are ignored
    assert not server().evaluate(b"n,,n=alice,r=abc,foo=bar", NOW).completed


def test_channel_binding_and_mandatory_extensions_are_unsupported() -> None:
    failure = expect_failure(server(), b"p=tls-unique,,n=alice,r=abc")
    assert failure.reason is FailureReason.UNSUPPORTED_FEATURE
    assert "channel-binding-not-supported" in failure.client_message
    failure = expect_failure(server(), b"n,,m=ext,n=alice,r=abc")
    assert failure.reason is FailureReason.UNSUPPORTED_FEATURE


@pytest.mark.parametrize(
    "token",
    [
        b"",
        b"n",
        b"n,",
        b"x,,n=alice,r=abc",
        b"n,,r=abc,n=alice",
        b"n,,n=alice",
        b"n,,n=,r=abc",
        b"n,,n=al=ice,r=abc",
        b"n,,n=alice,r=a,b",
        b"n,,n=alice,r=",
        b"n,,n=\xff,r=abc",
        b"n,b=x,n=alice,r=abc",
    ],
)
def test_malformed_client_first(token: bytes) -> None:
    failure = expect_failure(server(), token)
    assert failure.reason is FailureReason.MALFORMED_MESSAGE


@pytest.mark.parametrize(
    "mangle",
    [
        lambda final: final.split(b",p=")[0],  # no proof
        lambda final: final.replace(b"c=", b"x="),
        lambda final: final.replace(b",r=", b",x="),
        lambda final: final + b"!!",  # proof not base64
        lambda final: b"\xff" + final,
        lambda final: b"",
    ],
)
def test_malformed_client_final(mangle: Callable[[bytes], bytes]) -> None:
    _, session, client_final = run_exchange("SCRAM-SHA-256", "alice", "alice-secret")
    failure = expect_failure(session, mangle(client_final))
    assert failure.reason is FailureReason.MALFORMED_MESSAGE
    assert failure.user == "alice"


def test_proof_of_the_wrong_length() -> None:
    _, session, client_final = run_exchange("SCRAM-SHA-256", "alice", "alice-secret")
    short = client_final.split(b",p=")[0] + b",p=" + base64.b64encode(b"x" * 5)
    assert expect_failure(session, short).reason is FailureReason.WRONG_PROOF


def test_a_failed_session_stays_failed() -> None:
    session = server()
    expect_failure(session, b"garbage")
    assert expect_failure(session, b"n,,n=alice,r=abc").reason is FailureReason.ILLEGAL_STATE


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_client_first_never_crashes(token: bytes) -> None:
    with contextlib.suppress(AuthenticationFailed):
        server().evaluate(token, NOW)


@given(user=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20))
def test_client_first_parses_any_escaped_name(user: str) -> None:
    client = ScramClientSession("SCRAM-SHA-256", user, "pw")
    parsed = ClientFirstMessage.parse(client.initial_response().decode())
    assert parsed.username == user and parsed.authzid is None


# --------------------------------------------------------------------------------------
# client failures


def test_client_rejects_a_bad_server_first() -> None:
    def fresh() -> ScramClientSession:
        client = ScramClientSession("SCRAM-SHA-256", "alice", "pw", nonce="abc")
        client.initial_response()
        return client

    salt = base64.b64encode(b"salt").decode()
    cases = {
        f"r=xyz123,s={salt},i=4096": "does not extend",
        f"r=abc,s={salt},i=4096": "does not extend",
        f"r=abcdef,s={salt},i=1024": "outside Kafka's bounds 4096..16384",
        # a broker asking for 2^31 PBKDF2 rounds would tie up a worker thread for minutes
        f"r=abcdef,s={salt},i=2147483648": "outside Kafka's bounds 4096..16384",
        f"r=abcdef,s={salt},i=16385": "outside Kafka's bounds",
        f"r=abcdef,s={salt},i={'9' * 1000}": "invalid iteration count",
        f"r=abcdef,s={base64.b64encode(bytes(257)).decode()},i=4096": "salt is 257 bytes",
        "r=abcdef,s=,i=4096": "salt is 0 bytes",
        f"r=abc{'x' * 600},s={salt},i=4096": "nonce is 603 characters",
        f"r=abcdef,s={salt},i=4096,{'x' * 3000}": "server-first message is",
        "r=abcdef,s=!!,i=4096": "base64",
        f"m=x,r=abcdef,s={salt},i=4096": "unsupported",
        "garbage": "expected",
    }
    for message, error in cases.items():
        with pytest.raises(SaslClientError, match=error):
            fresh().evaluate(message.encode())


def test_client_reports_a_server_error() -> None:
    client = ScramClientSession("SCRAM-SHA-256", "user", "pencil", nonce=RFC_CLIENT_NONCE)
    client.initial_response()
    client.evaluate(RFC_SERVER_FIRST)
    with pytest.raises(SaslClientError, match="invalid-proof"):
        client.evaluate(b"e=invalid-proof")


def test_client_state_errors_and_repr() -> None:
    client = ScramClientSession("SCRAM-SHA-512", "alice", "hunter2")
    assert "hunter2" not in repr(client)
    with pytest.raises(SaslClientError):
        client.evaluate(b"r=x")
    client = ScramClientSession("SCRAM-SHA-512", "alice", "hunter2")
    client.initial_response()
    with pytest.raises(SaslClientError):
        client.initial_response()


# --------------------------------------------------------------------------------------
# stored credentials


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_credential_text_round_trip(mechanism: ScramMechanism) -> None:
    credential = derive_scram_credential("pw", mechanism, iterations=8192)
    text = str(credential)
    assert text.startswith(f"{mechanism}:iterations=8192,salt=")
    assert ScramCredential.parse(text) == credential
    assert "stored_key" not in repr(credential)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice-secret", "expected 'SCRAM-SHA-256:"),
        ("SCRAM-SHA-1:iterations=4096", "expected 'SCRAM-SHA-256:"),
        ("SCRAM-SHA-256:iterations=4096,salt=c2FsdA==", "without server_key, stored_key"),
        ("SCRAM-SHA-256:iterations=4096,password=x", "unexpected item 'password'"),
        ("SCRAM-SHA-256:iterations=x,salt=a,stored_key=a,server_key=a", "must be an integer"),
        ("SCRAM-SHA-256:iterations=4096,iterations=4096", "appears twice"),
    ],
)
def test_malformed_credentials(text: str, message: str) -> None:
    with pytest.raises(InvalidScramCredential, match=message):
        ScramCredential.parse(text)


def test_credential_bounds() -> None:
    good = derive_scram_credential("pw", "SCRAM-SHA-256")
    for iterations in (4095, 16385):
        with pytest.raises(InvalidScramCredential, match=r"iterations must be in 4096\.\.16384"):
            ScramCredential.parse(str(good).replace("iterations=4096", f"iterations={iterations}"))
    short_key = base64.b64encode(b"k" * 16).decode()
    text = (
        f"SCRAM-SHA-256:iterations=4096,salt=c2FsdA==,stored_key={short_key},server_key={short_key}"
    )
    with pytest.raises(InvalidScramCredential, match="32 bytes"):
        ScramCredential.parse(text)
    with pytest.raises(InvalidScramCredential, match="base64"):
        ScramCredential.parse(text.replace("c2FsdA==", "***"))
