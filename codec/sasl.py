"""SASL on the Kafka wire: SaslHandshake (key 17), SaslAuthenticate (key 36), and tokens.

Sans-I/O like the rest of ``codec``. Both directions are here because the gateway is
both a SASL server (its clients authenticate to it) and a SASL client (it
authenticates to the brokers with its own credentials):

* server side: ``parse_*_request`` and ``encode_*_response`` / ``*_response_frame``;
* client side: ``encode_*_request`` / ``*_request_frame`` and ``parse_*_response``.

Hand-written rather than kio: the messages are tiny, and this keeps one error type
(:class:`~codec.primitives.CodecError`) and plain ``int`` error codes. kio is the
reference in the unit tests, for every version.

**Legacy unframed tokens.** After a SaslHandshake **v0** the SASL tokens travel
without Kafka request/response headers: each is a bare size-prefixed frame, in both
directions, until the mechanism completes; a failed exchange just closes the
connection (there is no way to carry an error). After a **v1** handshake every token
is wrapped in a SaslAuthenticate request/response. :func:`flow_after_handshake`
says which applies, :func:`encode_legacy_token` frames a token and
:func:`classify_auth_frame` tells a pre-authentication frame's kind.

The tokens themselves (PLAIN, SCRAM, OAUTHBEARER messages) are mechanism
business and live in ``policies.auth``; this module only carries them.

References: https://kafka.apache.org/protocol#sasl_handshake ,
KIP-43 (handshake), KIP-152 (SaslAuthenticate), KIP-368 (session lifetime).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from codec.errors import NONE, UNSUPPORTED_SASL_MECHANISM
from codec.framing import encode_frame
from codec.headers import (
    encode_request_header,
    encode_response_header,
    peek_api,
    response_body_offset,
    response_correlation_id,
)
from codec.primitives import (
    EMPTY_TAGGED_FIELDS,
    Buffer,
    CodecError,
    Reader,
    enc_array_length,
    enc_int16,
    enc_int32,
    enc_int64,
    enc_nullable_string,
    enc_string,
    enc_uvarint,
)

SASL_HANDSHAKE_KEY: Final = 17
SASL_AUTHENTICATE_KEY: Final = 36
API_VERSIONS_KEY: Final = 18
HANDSHAKE_VERSIONS: Final = range(0, 2)
AUTHENTICATE_VERSIONS: Final = range(0, 3)
_AUTHENTICATE_FIRST_FLEXIBLE: Final = 2
_AUTHENTICATE_FIRST_LIFETIME: Final = 1

PLAIN: Final = "PLAIN"
SCRAM_SHA_256: Final = "SCRAM-SHA-256"
SCRAM_SHA_512: Final = "SCRAM-SHA-512"
OAUTHBEARER: Final = "OAUTHBEARER"

#: Kafka's ``sasl.server.max.receive.size`` default: the largest frame a broker reads
#: before authentication. A gateway should cap pre-auth frames the same way.
DEFAULT_MAX_SASL_RECEIVE_SIZE: Final = 524288


# ------------------------------------------------------------------ messages


@dataclass(frozen=True, slots=True)
class SaslHandshakeRequest:
    mechanism: str


@dataclass(frozen=True, slots=True)
class SaslHandshakeResponse:
    error_code: int
    #: The mechanisms the server has enabled (sent on success and on error 33).
    mechanisms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SaslAuthenticateRequest:
    auth_bytes: bytes


@dataclass(frozen=True, slots=True)
class SaslAuthenticateResponse:
    error_code: int
    error_message: str | None
    auth_bytes: bytes = b""
    #: KIP-368: v1+; 0 means "no limit", the client need not re-authenticate.
    session_lifetime_ms: int = 0


def _check_version(what: str, version: int, versions: range) -> None:
    if version not in versions:
        raise CodecError(
            f"{what} v{version} is not supported ({versions.start}-{versions.stop - 1})"
        )


def _check_consumed(r: Reader, what: str) -> None:
    if r.pos != r.end:
        raise CodecError(f"{r.end - r.pos} unexpected bytes after {what}")


def _read_bytes(r: Reader, flexible: bool, what: str) -> bytes:
    """A non-null BYTES / COMPACT_BYTES field, copied out."""
    n = (r.uvarint() - 1) if flexible else r.int32()
    if n < 0:
        raise CodecError(f"null {what} at offset {r.pos}")
    r.skip(n, what)
    return bytes(r.buf[r.pos - n : r.pos])


def _enc_bytes(value: bytes, flexible: bool) -> bytes:
    size = enc_uvarint(len(value) + 1) if flexible else enc_int32(len(value))
    return size + value


def _auth_flexible(version: int) -> bool:
    return version >= _AUTHENTICATE_FIRST_FLEXIBLE


# SaslHandshake: never flexible; v0 and v1 share one layout (v1 only changes the flow).


def parse_sasl_handshake_request(body: Buffer, version: int) -> SaslHandshakeRequest:
    _check_version("SaslHandshake request", version, HANDSHAKE_VERSIONS)
    r = Reader(body)
    mechanism = r.string()
    _check_consumed(r, "SaslHandshake request")
    return SaslHandshakeRequest(mechanism)


def encode_sasl_handshake_request(request: SaslHandshakeRequest, version: int) -> bytes:
    _check_version("SaslHandshake request", version, HANDSHAKE_VERSIONS)
    return enc_string(request.mechanism, False)


def parse_sasl_handshake_response(body: Buffer, version: int) -> SaslHandshakeResponse:
    _check_version("SaslHandshake response", version, HANDSHAKE_VERSIONS)
    r = Reader(body)
    error_code = r.int16()
    count = r.array_length(False)
    if count < 0:
        raise CodecError("SaslHandshake mechanisms array is null")
    mechanisms = tuple(r.string() for _ in range(count))
    _check_consumed(r, "SaslHandshake response")
    return SaslHandshakeResponse(error_code, mechanisms)


def encode_sasl_handshake_response(response: SaslHandshakeResponse, version: int) -> bytes:
    _check_version("SaslHandshake response", version, HANDSHAKE_VERSIONS)
    parts = [enc_int16(response.error_code), enc_array_length(len(response.mechanisms), False)]
    parts += [enc_string(mechanism, False) for mechanism in response.mechanisms]
    return b"".join(parts)


def answer_handshake(
    request: SaslHandshakeRequest, enabled: tuple[str, ...]
) -> SaslHandshakeResponse:
    """What Kafka answers: NONE, or UNSUPPORTED_SASL_MECHANISM (then it closes the
    connection); both list the enabled mechanisms, so a client can report them."""
    error = NONE if request.mechanism in enabled else UNSUPPORTED_SASL_MECHANISM
    return SaslHandshakeResponse(error, enabled)


# SaslAuthenticate: v1 adds session_lifetime_ms to the response, v2 is flexible.


def parse_sasl_authenticate_request(body: Buffer, version: int) -> SaslAuthenticateRequest:
    _check_version("SaslAuthenticate request", version, AUTHENTICATE_VERSIONS)
    flexible = _auth_flexible(version)
    r = Reader(body)
    auth_bytes = _read_bytes(r, flexible, "auth_bytes")
    if flexible:
        r.skip_tagged_fields()
    _check_consumed(r, "SaslAuthenticate request")
    return SaslAuthenticateRequest(auth_bytes)


def encode_sasl_authenticate_request(request: SaslAuthenticateRequest, version: int) -> bytes:
    _check_version("SaslAuthenticate request", version, AUTHENTICATE_VERSIONS)
    flexible = _auth_flexible(version)
    tail = EMPTY_TAGGED_FIELDS if flexible else b""
    return _enc_bytes(request.auth_bytes, flexible) + tail


def parse_sasl_authenticate_response(body: Buffer, version: int) -> SaslAuthenticateResponse:
    _check_version("SaslAuthenticate response", version, AUTHENTICATE_VERSIONS)
    flexible = _auth_flexible(version)
    r = Reader(body)
    error_code = r.int16()
    error_message = r.flex_nullable_string(flexible)
    auth_bytes = _read_bytes(r, flexible, "auth_bytes")
    lifetime = r.int64() if version >= _AUTHENTICATE_FIRST_LIFETIME else 0
    if flexible:
        r.skip_tagged_fields()
    _check_consumed(r, "SaslAuthenticate response")
    return SaslAuthenticateResponse(error_code, error_message, auth_bytes, lifetime)


def encode_sasl_authenticate_response(response: SaslAuthenticateResponse, version: int) -> bytes:
    _check_version("SaslAuthenticate response", version, AUTHENTICATE_VERSIONS)
    flexible = _auth_flexible(version)
    parts = [
        enc_int16(response.error_code),
        enc_nullable_string(response.error_message, flexible),
        _enc_bytes(response.auth_bytes, flexible),
    ]
    if version >= _AUTHENTICATE_FIRST_LIFETIME:
        parts.append(enc_int64(response.session_lifetime_ms))
    if flexible:
        parts.append(EMPTY_TAGGED_FIELDS)
    return b"".join(parts)


# ------------------------------------------------------------ whole frames


def sasl_handshake_request_frame(
    correlation_id: int, client_id: str | None, mechanism: str, version: int = 1
) -> bytes:
    """A size-prefixed SaslHandshake request, ready to send (the gateway as SASL client)."""
    header = encode_request_header(SASL_HANDSHAKE_KEY, version, correlation_id, client_id)
    body = encode_sasl_handshake_request(SaslHandshakeRequest(mechanism), version)
    return encode_frame(header, body)


def sasl_authenticate_request_frame(
    correlation_id: int, client_id: str | None, auth_bytes: bytes, version: int = 2
) -> bytes:
    """A size-prefixed SaslAuthenticate request, ready to send."""
    header = encode_request_header(SASL_AUTHENTICATE_KEY, version, correlation_id, client_id)
    body = encode_sasl_authenticate_request(SaslAuthenticateRequest(auth_bytes), version)
    return encode_frame(header, body)


def parse_sasl_handshake_response_frame(
    frame: Buffer, version: int
) -> tuple[int, SaslHandshakeResponse]:
    """``(correlation_id, response)`` from a response frame (without its size prefix)."""
    correlation_id = response_correlation_id(frame)
    offset = response_body_offset(frame, SASL_HANDSHAKE_KEY, version)
    return correlation_id, parse_sasl_handshake_response(memoryview(frame)[offset:], version)


def parse_sasl_authenticate_response_frame(
    frame: Buffer, version: int
) -> tuple[int, SaslAuthenticateResponse]:
    """``(correlation_id, response)`` from a response frame (without its size prefix)."""
    correlation_id = response_correlation_id(frame)
    offset = response_body_offset(frame, SASL_AUTHENTICATE_KEY, version)
    return correlation_id, parse_sasl_authenticate_response(memoryview(frame)[offset:], version)


def sasl_handshake_response_frame(
    correlation_id: int, response: SaslHandshakeResponse, version: int
) -> bytes:
    """A size-prefixed SaslHandshake response (the gateway as SASL server)."""
    header = encode_response_header(correlation_id, SASL_HANDSHAKE_KEY, version)
    return encode_frame(header, encode_sasl_handshake_response(response, version))


def sasl_authenticate_response_frame(
    correlation_id: int, response: SaslAuthenticateResponse, version: int
) -> bytes:
    """A size-prefixed SaslAuthenticate response."""
    header = encode_response_header(correlation_id, SASL_AUTHENTICATE_KEY, version)
    return encode_frame(header, encode_sasl_authenticate_response(response, version))


# ----------------------------------------------------- legacy unframed tokens


class SaslFlow(enum.Enum):
    """How tokens travel after a successful SaslHandshake."""

    #: v1: each token in a SaslAuthenticate request/response (errors have codes).
    FRAMED = "framed"
    #: v0: each token as a bare size-prefixed frame (a failure just closes the socket).
    LEGACY = "legacy"


def flow_after_handshake(handshake_version: int) -> SaslFlow:
    _check_version("SaslHandshake", handshake_version, HANDSHAKE_VERSIONS)
    return SaslFlow.LEGACY if handshake_version == 0 else SaslFlow.FRAMED


def encode_legacy_token(token: Buffer) -> bytes:
    """A raw token as it travels after a v0 handshake: size prefix, token, no header.

    Used for client tokens and server challenges alike; a PLAIN success is the empty
    token, i.e. four zero bytes.
    """
    return encode_frame(token)


def decode_legacy_token(frame: Buffer) -> bytes:
    """The token carried by a legacy frame (its whole content: there is no header)."""
    return bytes(frame)


class AuthFrameKind(enum.Enum):
    """What a frame received before authentication completed is."""

    API_VERSIONS = "api_versions"
    SASL_HANDSHAKE = "sasl_handshake"
    SASL_AUTHENTICATE = "sasl_authenticate"
    #: A bare token of the legacy (v0 handshake) flow.
    LEGACY_TOKEN = "legacy_token"
    #: Any other request: Kafka closes the connection (IllegalSaslStateException).
    OTHER = "other"


_PRE_AUTH_KINDS: Final = {
    API_VERSIONS_KEY: AuthFrameKind.API_VERSIONS,
    SASL_HANDSHAKE_KEY: AuthFrameKind.SASL_HANDSHAKE,
    SASL_AUTHENTICATE_KEY: AuthFrameKind.SASL_AUTHENTICATE,
}


def classify_auth_frame(frame: Buffer, legacy_token_expected: bool) -> AuthFrameKind:
    """Kind of a client frame during authentication (``frame`` without size prefix).

    A bare token has no header and may be anything (a PLAIN token starts with a NUL
    or the authzid), so only the connection state can tell: while a v0 handshake's
    exchange is in progress every frame is a token, as in Kafka's
    SaslServerAuthenticator. Otherwise the frame must be a request whose API key
    is allowed before authentication.
    """
    if legacy_token_expected:
        return AuthFrameKind.LEGACY_TOKEN
    api_key, _version, _correlation_id = peek_api(frame)
    return _PRE_AUTH_KINDS.get(api_key, AuthFrameKind.OTHER)
