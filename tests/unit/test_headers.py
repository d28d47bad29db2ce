"""Request/response headers and header-version selection, checked against kio."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kio.index import load_request_schema, load_response_schema
from kio.schema.index import api_key_map, schema_name_map
from kio.schema.request_header.v2.header import RequestHeader as KioRequestHeaderV2
from kio.serial import entity_writer
from kio.static.primitive import i16, i32

from codec.headers import (
    encode_request_header,
    encode_response_header,
    parse_request_header,
    peek_api,
    request_header_version,
    response_body_offset,
    response_header_version,
)
from codec.primitives import CodecError

ALL_API_VERSIONS = [
    (key, version) for key, name in api_key_map.items() for version in schema_name_map[name]
]


@pytest.mark.parametrize(("api_key", "version"), ALL_API_VERSIONS)
def test_header_versions_match_kio(api_key: int, version: int) -> None:
    request = load_request_schema(api_key, version)
    response = load_response_schema(api_key, version)
    expected_request = int(request.__header_schema__.__version__)
    expected_response = int(response.__header_schema__.__version__)
    assert request_header_version(api_key, version) == expected_request
    assert response_header_version(api_key, version) == expected_response


@given(
    version=st.integers(min_value=3, max_value=4),
    correlation_id=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    client_id=st.one_of(st.none(), st.text(max_size=40)),
)
def test_parse_request_header_v2_written_by_kio(
    version: int, correlation_id: int, client_id: str | None
) -> None:
    header = KioRequestHeaderV2(
        request_api_key=i16(18),
        request_api_version=i16(version),
        correlation_id=i32(correlation_id),
        client_id=client_id,
    )
    buf = io.BytesIO()
    entity_writer(KioRequestHeaderV2)(buf, header)
    raw = buf.getvalue() + b"BODY"
    parsed = parse_request_header(raw)
    assert (parsed.api_key, parsed.api_version, parsed.correlation_id) == (
        18,
        version,
        correlation_id,
    )
    assert parsed.client_id == client_id
    assert raw[parsed.body_offset :] == b"BODY"
    assert peek_api(raw) == (18, version, correlation_id)


def test_encoded_request_header_round_trips() -> None:
    raw = encode_request_header(3, 12, 77, "my-client") + b"\x01"
    parsed = parse_request_header(raw)
    assert parsed.client_id == "my-client"
    assert raw[parsed.body_offset :] == b"\x01"


def test_response_header_offsets() -> None:
    flexible = encode_response_header(5, 3, 12)
    assert flexible == b"\x00\x00\x00\x05\x00"
    assert response_body_offset(flexible + b"X", 3, 12) == 5
    # ApiVersions responses keep header v0 even in flexible versions.
    assert encode_response_header(5, 18, 3) == b"\x00\x00\x00\x05"
    assert response_body_offset(b"\x00\x00\x00\x05X", 18, 3) == 4


def test_truncated_header_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="needs 8 bytes"):
        parse_request_header(b"\x00\x03\x00")
    with pytest.raises(CodecError, match="truncated"):
        parse_request_header(b"\x00\x03\x00\x01\x00\x00\x00\x01\x00\x09ab")
