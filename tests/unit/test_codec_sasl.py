"""SASL codec: SaslHandshake/SaslAuthenticate against kio, legacy tokens, error table."""

from __future__ import annotations

import datetime
import io
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from kio.schema.response_header.v0.header import ResponseHeader as KioResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as KioResponseHeaderV1
from kio.serial import entity_writer
from kio.static.primitive import i32
from test_codec_strategies import (
    SETTINGS,
    TRUNCATION_SETTINGS,
    decode,
    encode,
    entity,
    kio_module,
)

from codec import errors
from codec.framing import FrameDecoder
from codec.headers import parse_request_header
from codec.primitives import CodecError
from codec.sasl import (
    AuthFrameKind,
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslFlow,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
    answer_handshake,
    classify_auth_frame,
    decode_legacy_token,
    encode_legacy_token,
    encode_sasl_authenticate_request,
    encode_sasl_authenticate_response,
    encode_sasl_handshake_request,
    encode_sasl_handshake_response,
    flow_after_handshake,
    parse_sasl_authenticate_request,
    parse_sasl_authenticate_response,
    parse_sasl_authenticate_response_frame,
    parse_sasl_handshake_request,
    parse_sasl_handshake_response,
    parse_sasl_handshake_response_frame,
    sasl_authenticate_request_frame,
    sasl_authenticate_response_frame,
    sasl_handshake_request_frame,
    sasl_handshake_response_frame,
)

HANDSHAKE_VERSIONS = range(2)
AUTHENTICATE_VERSIONS = range(3)
# kio converts through float seconds, so keep within 2**40 ms (35 years) for exactness.
lifetimes = st.integers(0, 2**40).map(lambda ms: datetime.timedelta(milliseconds=ms))


# --------------------------------------------------------------- strategies


def handshake_requests(version: int) -> st.SearchStrategy[Any]:
    return entity(kio_module("sasl_handshake", version, "request").SaslHandshakeRequest)


def handshake_responses(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("sasl_handshake", version)
    return entity(m.SaslHandshakeResponse, mechanisms=st.lists(st.text(max_size=20)).map(tuple))


def authenticate_requests(version: int) -> st.SearchStrategy[Any]:
    return entity(kio_module("sasl_authenticate", version, "request").SaslAuthenticateRequest)


def authenticate_responses(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("sasl_authenticate", version)
    return entity(m.SaslAuthenticateResponse, session_lifetime=lifetimes)


def _ours(message: Any) -> Any:
    """The codec's dataclass equal to a kio message."""
    name = type(message).__name__
    if name == "SaslHandshakeRequest":
        return SaslHandshakeRequest(message.mechanism)
    if name == "SaslHandshakeResponse":
        return SaslHandshakeResponse(message.error_code.value, message.mechanisms)
    if name == "SaslAuthenticateRequest":
        return SaslAuthenticateRequest(message.auth_bytes)
    lifetime = getattr(message, "session_lifetime", datetime.timedelta(0))
    return SaslAuthenticateResponse(
        message.error_code.value,
        message.error_message,
        message.auth_bytes,
        lifetime // datetime.timedelta(milliseconds=1),
    )


Parse = Callable[[bytes, int], Any]
Encode = Callable[[Any, int], bytes]
Strategy = Callable[[int], st.SearchStrategy[Any]]

CASES: list[tuple[str, Strategy, Parse, Encode, int]] = [
    *[
        ("handshake request", handshake_requests, parse_sasl_handshake_request,
         encode_sasl_handshake_request, v)
        for v in HANDSHAKE_VERSIONS
    ],
    *[
        ("handshake response", handshake_responses, parse_sasl_handshake_response,
         encode_sasl_handshake_response, v)
        for v in HANDSHAKE_VERSIONS
    ],
    *[
        ("authenticate request", authenticate_requests, parse_sasl_authenticate_request,
         encode_sasl_authenticate_request, v)
        for v in AUTHENTICATE_VERSIONS
    ],
    *[
        ("authenticate response", authenticate_responses, parse_sasl_authenticate_response,
         encode_sasl_authenticate_response, v)
        for v in AUTHENTICATE_VERSIONS
    ],
]  # fmt: skip
CASE_IDS = [f"{name} v{version}" for name, _s, _p, _e, version in CASES]


# ------------------------------------------------------- kio round trips


@pytest.mark.parametrize(("name", "strategy", "parse", "enc", "version"), CASES, ids=CASE_IDS)
@SETTINGS
@given(data=st.data())
def test_matches_kio_both_ways(
    name: str, strategy: Strategy, parse: Parse, enc: Encode, version: int, data: Any
) -> None:
    message = data.draw(strategy(version))
    body = encode(message)
    parsed = parse(body, version)
    assert parsed == _ours(message)
    assert enc(parsed, version) == body
    assert decode(type(message), enc(parsed, version)) == message


@pytest.mark.parametrize(("name", "strategy", "parse", "enc", "version"), CASES, ids=CASE_IDS)
@TRUNCATION_SETTINGS
@given(data=st.data())
def test_truncated_input_raises_codec_error(
    name: str, strategy: Strategy, parse: Parse, enc: Encode, version: int, data: Any
) -> None:
    body = encode(data.draw(strategy(version)))
    for cut in range(len(body)):
        with pytest.raises(CodecError):
            parse(body[:cut], version)


@pytest.mark.parametrize(("name", "strategy", "parse", "enc", "version"), CASES, ids=CASE_IDS)
@TRUNCATION_SETTINGS
@given(data=st.data())
def test_trailing_bytes_raise(
    name: str, strategy: Strategy, parse: Parse, enc: Encode, version: int, data: Any
) -> None:
    body = encode(data.draw(strategy(version)))
    with pytest.raises(CodecError, match="unexpected bytes"):
        parse(body + b"\x00", version)


@pytest.mark.parametrize(("name", "strategy", "parse", "enc", "version"), CASES, ids=CASE_IDS)
def test_unsupported_versions_are_refused(
    name: str, strategy: Strategy, parse: Parse, enc: Encode, version: int
) -> None:
    top = 2 if "handshake" in name else 3
    with pytest.raises(CodecError, match="not supported"):
        parse(b"", top)
    with pytest.raises(CodecError, match="not supported"):
        parse(b"", -1)


# --------------------------------------------------------- byte fixtures


def test_handshake_fixtures() -> None:
    assert encode_sasl_handshake_request(SaslHandshakeRequest("PLAIN"), 1) == b"\x00\x05PLAIN"
    response = SaslHandshakeResponse(33, ("PLAIN", "SCRAM-SHA-256"))
    body = bytes.fromhex("0021 00000002 0005") + b"PLAIN" + b"\x00\x0dSCRAM-SHA-256"
    assert encode_sasl_handshake_response(response, 0) == body
    assert parse_sasl_handshake_response(body, 1) == response


def test_authenticate_fixtures() -> None:
    token = b"\x00alice\x00pw"
    assert encode_sasl_authenticate_request(SaslAuthenticateRequest(token), 0) == (
        b"\x00\x00\x00\x09" + token
    )
    assert encode_sasl_authenticate_request(SaslAuthenticateRequest(token), 2) == (
        b"\x0a" + token + b"\x00"
    )
    response = SaslAuthenticateResponse(58, "bad", b"", 0)
    assert encode_sasl_authenticate_response(response, 0) == bytes.fromhex(
        "003a 0003 626164 00000000"
    )
    ok = SaslAuthenticateResponse(0, None, b"v=x", 3_600_000)
    assert encode_sasl_authenticate_response(ok, 1) == bytes.fromhex(
        "0000 ffff 00000003 763d78 000000000036ee80"
    )
    assert encode_sasl_authenticate_response(ok, 2) == bytes.fromhex(
        "0000 00 04763d78 000000000036ee80 00"
    )


def test_null_fields_are_refused() -> None:
    with pytest.raises(CodecError, match="null"):
        parse_sasl_authenticate_request(b"\xff\xff\xff\xff", 0)
    with pytest.raises(CodecError, match="null"):
        parse_sasl_authenticate_request(b"\x00\x00", 2)
    with pytest.raises(CodecError, match="null"):
        parse_sasl_handshake_request(b"\xff\xff", 1)
    with pytest.raises(CodecError, match="null"):
        parse_sasl_handshake_response(b"\x00\x00\xff\xff\xff\xff", 0)


def test_request_tagged_fields_are_skipped() -> None:
    body = b"\x02x" + b"\x01\x07\x02ab"  # one unknown tagged field
    assert parse_sasl_authenticate_request(body, 2) == SaslAuthenticateRequest(b"x")


# ------------------------------------------------------------ whole frames


def _frames(encoded: bytes) -> list[bytes]:
    decoder = FrameDecoder()
    decoder.feed(encoded)
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    return out


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
def test_handshake_request_frame(version: int) -> None:
    (frame,) = _frames(sasl_handshake_request_frame(7, "gw", "SCRAM-SHA-512", version))
    header = parse_request_header(frame)
    assert (header.api_key, header.api_version, header.correlation_id) == (17, version, 7)
    assert header.client_id == "gw"
    body = frame[header.body_offset :]
    assert parse_sasl_handshake_request(body, version).mechanism == "SCRAM-SHA-512"
    kio_cls = kio_module("sasl_handshake", version, "request").SaslHandshakeRequest
    assert decode(kio_cls, body).mechanism == "SCRAM-SHA-512"


@pytest.mark.parametrize("version", AUTHENTICATE_VERSIONS)
def test_authenticate_request_frame(version: int) -> None:
    (frame,) = _frames(sasl_authenticate_request_frame(9, None, b"token", version))
    header = parse_request_header(frame)
    assert (header.api_key, header.api_version, header.correlation_id) == (36, version, 9)
    body = frame[header.body_offset :]
    kio_cls = kio_module("sasl_authenticate", version, "request").SaslAuthenticateRequest
    assert decode(kio_cls, body).auth_bytes == b"token"


def _kio_response_frame(message: Any, correlation_id: int) -> bytes:
    header_cls = message.__header_schema__
    buf = io.BytesIO()
    header = (
        KioResponseHeaderV1(correlation_id=i32(correlation_id))
        if header_cls is KioResponseHeaderV1
        else KioResponseHeaderV0(correlation_id=i32(correlation_id))
    )
    entity_writer(header_cls)(buf, header)
    entity_writer(type(message))(buf, message)
    return buf.getvalue()


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
@SETTINGS
@given(data=st.data())
def test_handshake_response_frames_match_kio(version: int, data: Any) -> None:
    message = data.draw(handshake_responses(version))
    frame = _kio_response_frame(message, 42)
    assert parse_sasl_handshake_response_frame(frame, version) == (42, _ours(message))
    ours = sasl_handshake_response_frame(42, _ours(message), version)
    assert _frames(ours) == [frame]


@pytest.mark.parametrize("version", AUTHENTICATE_VERSIONS)
@SETTINGS
@given(data=st.data())
def test_authenticate_response_frames_match_kio(version: int, data: Any) -> None:
    message = data.draw(authenticate_responses(version))
    frame = _kio_response_frame(message, -5)
    assert parse_sasl_authenticate_response_frame(frame, version) == (-5, _ours(message))
    ours = sasl_authenticate_response_frame(-5, _ours(message), version)
    assert _frames(ours) == [frame]


def test_answer_handshake_lists_enabled_mechanisms() -> None:
    enabled = ("PLAIN", "SCRAM-SHA-256")
    assert answer_handshake(SaslHandshakeRequest("PLAIN"), enabled) == (
        SaslHandshakeResponse(errors.NONE, enabled)
    )
    assert answer_handshake(SaslHandshakeRequest("GSSAPI"), enabled) == (
        SaslHandshakeResponse(errors.UNSUPPORTED_SASL_MECHANISM, enabled)
    )


# ---------------------------------------------------------- legacy tokens


def test_flow_after_handshake() -> None:
    assert flow_after_handshake(0) is SaslFlow.LEGACY
    assert flow_after_handshake(1) is SaslFlow.FRAMED
    with pytest.raises(CodecError):
        flow_after_handshake(2)


@given(tokens=st.lists(st.binary(max_size=64), max_size=5))
def test_legacy_tokens_are_bare_size_prefixed_frames(tokens: list[bytes]) -> None:
    stream = b"".join(encode_legacy_token(token) for token in tokens)
    assert [decode_legacy_token(frame) for frame in _frames(stream)] == tokens


def test_legacy_plain_success_is_an_empty_frame() -> None:
    assert encode_legacy_token(b"") == b"\x00\x00\x00\x00"


def test_classify_auth_frame() -> None:
    def frame(api_key: int) -> bytes:
        (only,) = _frames(sasl_handshake_request_frame(1, "c", "PLAIN"))
        return api_key.to_bytes(2, "big") + only[2:]

    assert classify_auth_frame(frame(18), False) is AuthFrameKind.API_VERSIONS
    assert classify_auth_frame(frame(17), False) is AuthFrameKind.SASL_HANDSHAKE
    assert classify_auth_frame(frame(36), False) is AuthFrameKind.SASL_AUTHENTICATE
    assert classify_auth_frame(frame(3), False) is AuthFrameKind.OTHER
    assert classify_auth_frame(frame(3), True) is AuthFrameKind.LEGACY_TOKEN
    assert classify_auth_frame(b"\x00u\x00p", True) is AuthFrameKind.LEGACY_TOKEN
    with pytest.raises(CodecError):
        classify_auth_frame(b"\x00u\x00p", False)


# ------------------------------------------------------------ error table


def test_error_constants_match_kio() -> None:
    for code, name in errors.ERROR_NAMES.items():
        assert ErrorCode[name.lower()].value == code, name
    assert errors.error_name(58) == "SASL_AUTHENTICATION_FAILED"
    assert errors.error_name(12345) == "ERROR_12345"
    assert sorted(errors.AUTHENTICATION_ERRORS) == [33, 34, 58]
