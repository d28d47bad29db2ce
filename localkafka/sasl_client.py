"""A SASL client for local brokers: PLAIN, SCRAM (RFC 5802/7677) and OAUTHBEARER logins,
and SCRAM user creation through the Admin API (AlterUserScramCredentials).

Test infrastructure only: the readiness probe and the SCRAM user creation need a SCRAM
client before (and independently of) the gateway's own implementation in
policies.auth, which the tests then check against these real brokers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import ssl
from collections.abc import Iterable

from codec import sasl
from codec.errors import NONE, SASL_AUTHENTICATION_FAILED, error_name
from codec.framing import encode_frame
from codec.headers import encode_request_header
from codec.primitives import CodecError, Reader, enc_int8, enc_int32, enc_string, enc_uvarint
from localkafka.errors import LocalKafkaError
from localkafka.probes import RawConnection
from localkafka.security import SCRAM_HASHES, SCRAM_MECHANISM_IDS, SCRAM_MIN_ITERATIONS


def plain_client_token(username: str, password: str) -> bytes:
    """RFC 4616: ``authzid NUL authcid NUL password`` with an empty authzid."""
    return f"\0{username}\0{password}".encode()


def scram_salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """``Hi(password, salt, i)``: what AlterUserScramCredentials upserts as salted_password."""
    return hashlib.pbkdf2_hmac(SCRAM_HASHES[mechanism], password.encode(), salt, iterations)


class ScramError(ValueError):
    """The server's SCRAM messages are malformed, or it failed to prove the password."""


class ScramClient:
    """One client-side SCRAM exchange, sans-I/O: first, final(server_first), verify(final)."""

    def __init__(self, mechanism: str, username: str, password: str, nonce: str = "") -> None:
        self._hash = SCRAM_HASHES[mechanism]
        self._mechanism = mechanism
        self._password = password
        self._nonce = nonce or base64.b64encode(secrets.token_bytes(24)).decode()
        name = username.replace("=", "=3D").replace(",", "=2C")
        self._first_bare = f"n={name},r={self._nonce}"
        self._server_signature = b""

    def first_message(self) -> bytes:
        return f"n,,{self._first_bare}".encode()

    def final_message(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = _scram_attributes(text)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "0")
        if not nonce.startswith(self._nonce) or nonce == self._nonce:
            raise ScramError(f"server nonce does not extend ours: {text!r}")
        if int(iterations) < SCRAM_MIN_ITERATIONS:
            raise ScramError(f"too few iterations: {text!r}")
        salted = scram_salted_password(
            self._mechanism, self._password, base64.b64decode(salt), int(iterations)
        )
        client_key = hmac.digest(salted, b"Client Key", self._hash)
        stored_key = hashlib.new(self._hash, client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, self._hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self._hash)
        self._server_signature = hmac.digest(server_key, auth_message, self._hash)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final: bytes) -> None:
        attrs = _scram_attributes(server_final.decode())
        if "e" in attrs:
            raise ScramError(f"server error: {attrs['e']}")
        signature = base64.b64decode(attrs.get("v", ""))
        if not self._server_signature or not hmac.compare_digest(signature, self._server_signature):
            raise ScramError("the server signature does not match")


def _scram_attributes(message: str) -> dict[str, str]:
    """``k=v,k=v`` (values may contain ``=``, as base64 does)."""
    pairs = (item.partition("=") for item in message.split(","))
    return {key: value for key, _sep, value in pairs}


# ------------------------------------------- SASL login and SCRAM users (raw protocol)

_ALTER_USER_SCRAM_CREDENTIALS = 51
_PROBE_ID = "local-kafka-probe"


class SaslLoginError(Exception):
    """The broker refused a SASL login; `error_code` is Kafka's (33, 34 or 58)."""

    def __init__(self, error_code: int, message: str | None) -> None:
        super().__init__(f"{error_name(error_code)} ({error_code}): {message or ''}".rstrip(": "))
        self.error_code = error_code
        self.error_message = message


def sasl_login(
    address: str,
    mechanism: str,
    username: str,
    password: str,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> sasl.SaslAuthenticateResponse:
    """Log in to one broker with PLAIN, SCRAM-SHA-256/512 or OAUTHBEARER (`password` is
    then the JWT, `username` unused) and return the final response.

    SaslHandshake v1 then SaslAuthenticate v2, as the Java client does; raises
    `SaslLoginError` when the broker refuses (OSError if it cannot be reached).
    The returned response carries KIP-368's `session_lifetime_ms`.
    """
    conn = RawConnection(address, ssl_context, timeout)
    try:
        _sasl_handshake(conn, mechanism)
        if mechanism == sasl.PLAIN:
            return _sasl_authenticate(conn, plain_client_token(username, password))
        if mechanism == sasl.OAUTHBEARER:
            return _oauthbearer_login(conn, password)
        client = ScramClient(mechanism, username, password)
        server_first = _sasl_authenticate(conn, client.first_message()).auth_bytes
        final = _sasl_authenticate(conn, client.final_message(server_first))
        client.verify_server_final(final.auth_bytes)
        return final
    finally:
        conn.close()


def _sasl_handshake(conn: RawConnection, mechanism: str) -> None:
    frame = sasl.sasl_handshake_request_frame(conn.next_correlation_id(), _PROBE_ID, mechanism)
    _cid, response = sasl.parse_sasl_handshake_response_frame(conn.round_trip(frame), 1)
    if response.error_code != NONE:
        raise SaslLoginError(response.error_code, f"enabled: {list(response.mechanisms)}")


def _sasl_authenticate(conn: RawConnection, token: bytes) -> sasl.SaslAuthenticateResponse:
    frame = sasl.sasl_authenticate_request_frame(conn.next_correlation_id(), _PROBE_ID, token)
    _cid, response = sasl.parse_sasl_authenticate_response_frame(conn.round_trip(frame), 2)
    if response.error_code != NONE:
        raise SaslLoginError(response.error_code, response.error_message)
    return response


def _oauthbearer_login(conn: RawConnection, token: str) -> sasl.SaslAuthenticateResponse:
    """RFC 7628: a refused token gets an error *challenge* (error code 0, JSON body);
    the client acknowledges with 0x01, and only then does the broker fail the login."""
    response = _sasl_authenticate(conn, f"n,,\x01auth=Bearer {token}\x01\x01".encode())
    if not response.auth_bytes:
        return response
    challenge = response.auth_bytes.decode(errors="replace")
    try:
        _sasl_authenticate(conn, b"\x01")
    except SaslLoginError as exc:
        detail = exc.error_message if challenge in (exc.error_message or "") else challenge
        raise SaslLoginError(exc.error_code, detail) from exc
    raise SaslLoginError(SASL_AUTHENTICATION_FAILED, f"unexpected success after {challenge}")


def alter_user_scram_credentials(
    host: str,
    port: int,
    upserts: Iterable[tuple[str, str, str]],
    iterations: int = SCRAM_MIN_ITERATIONS,
    timeout: float = 30.0,
) -> None:
    """Create or update SCRAM credentials ``(user, mechanism, password)`` via the Admin API.

    Kafka refuses a user named twice in one request (even for two mechanisms): send
    one call per mechanism. AlterUserScramCredentials v0 on an unauthenticated
    (PLAINTEXT) listener; like
    Kafka's AdminClient, the salted password is computed here, so the password itself
    never travels. Raises `LocalKafkaError` if the broker refuses any of them.
    """
    body = _alter_scram_body(list(upserts), iterations)
    header = encode_request_header(_ALTER_USER_SCRAM_CREDENTIALS, 0, 1, _PROBE_ID)
    conn = RawConnection(f"{host}:{port}", None, timeout)
    try:
        response = conn.round_trip(encode_frame(header, body))
    finally:
        conn.close()
    failures = [r for r in _parse_alter_scram_response(response) if r[1] != NONE]
    if failures:
        raise LocalKafkaError(f"AlterUserScramCredentials failed: {failures}")


def _alter_scram_body(upserts: list[tuple[str, str, str]], iterations: int) -> bytes:
    parts = [enc_uvarint(1), enc_uvarint(len(upserts) + 1)]  # no deletions, N upsertions
    for user, mechanism, password in upserts:
        salt = secrets.token_bytes(32)
        salted = scram_salted_password(mechanism, password, salt, iterations)
        parts += [
            enc_string(user, True),
            enc_int8(SCRAM_MECHANISM_IDS[mechanism]),
            enc_int32(iterations),
            enc_uvarint(len(salt) + 1) + salt,
            enc_uvarint(len(salted) + 1) + salted,
            b"\x00",  # no tagged fields
        ]
    parts.append(b"\x00")
    return b"".join(parts)


def _parse_alter_scram_response(frame: bytes) -> list[tuple[str, int, str | None]]:
    """``(user, error_code, error_message)`` per result (response header v1, body v0)."""
    try:
        r = Reader(frame, 4)
        r.skip_tagged_fields()
        r.int32()  # throttle_time_ms
        results = []
        for _ in range(r.array_length(True)):
            user, code, message = r.compact_string(), r.int16(), r.compact_nullable_string()
            r.skip_tagged_fields()
            results.append((user, code, message))
    except CodecError as exc:
        raise LocalKafkaError(f"unreadable AlterUserScramCredentials response: {exc}") from exc
    return results
