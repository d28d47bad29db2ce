"""ApiVersions: byte-exact round trips, tagged-field preservation, intersection, refusal."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kio.schema.api_versions.v0.response import ApiVersionsResponse as KioApiVersionsV0
from kio.schema.api_versions.v3.response import ApiVersionsResponse as KioApiVersionsV3
from test_codec_strategies import (
    SETTINGS,
    TRUNCATION_SETTINGS,
    api_versions_responses,
    decode,
    encode,
)

from codec.api_table import API_TABLE
from codec.api_versions import (
    DECODED_API_CAPS,
    ApiVersionRange,
    ApiVersionsResponse,
    encode_api_versions_response,
    gateway_version_ranges,
    intersect_api_versions,
    parse_api_versions_response,
    unsupported_version_response,
)
from codec.primitives import CodecError

VERSIONS = range(5)


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_round_trip_is_byte_exact_and_matches_kio(version: int, data: Any) -> None:
    message = data.draw(api_versions_responses(version))
    body = encode(message)
    parsed = parse_api_versions_response(body, version)
    assert encode_api_versions_response(parsed, version) == body
    assert parsed.error_code == message.error_code.value
    assert [(k.api_key, k.min_version, k.max_version) for k in parsed.api_keys] == [
        (k.api_key, k.min_version, k.max_version) for k in message.api_keys
    ]
    if version >= 1:
        assert parsed.throttle_time_ms == message.throttle_time // timedelta(milliseconds=1)


@pytest.mark.parametrize("version", VERSIONS)
@TRUNCATION_SETTINGS
@given(data=st.data())
def test_truncated_body_raises(version: int, data: Any) -> None:
    body = encode(data.draw(api_versions_responses(version)))
    for cut in range(len(body)):
        try:
            parsed = parse_api_versions_response(body[:cut], version)
        except CodecError:
            continue
        # A prefix can by chance be a well-formed v0 body: Kafka's client falls back
        # the same way, so that is the only acceptable non-error outcome.
        assert parsed.v0_fallback


# --- fixtures ------------------------------------------------------------------------

V3_WITH_FEATURES = bytes.fromhex(
    "0000"  # error_code
    "03"  # api_keys: 2
    "0012"
    "0000"
    "0004"
    "00"  # ApiVersions 0-4, no tags
    "0003"
    "0000"
    "000d"
    "01"
    "09"
    "01"
    "aa"  # Metadata 0-13, unknown entry tag 9
    "00000000"  # throttle_time_ms
    "02"  # 2 tagged fields
    "00"
    "08"
    "02"
    "02"
    "78"
    "0001"
    "0002"
    "00"  # supported_features: [("x", 1, 2)]
    "1f"
    "02"
    "bbcc"  # unknown tag 31
)


def test_v3_fixture_keeps_tagged_fields_verbatim() -> None:
    parsed = parse_api_versions_response(V3_WITH_FEATURES, 3)
    assert parsed == ApiVersionsResponse(
        error_code=0,
        api_keys=[
            ApiVersionRange(18, 0, 4),
            ApiVersionRange(3, 0, 13, tagged_fields=bytes.fromhex("010901aa")),
        ],
        throttle_time_ms=0,
        tagged_fields=bytes.fromhex("02000802027800010002001f02bbcc"),
    )
    assert encode_api_versions_response(parsed, 3) == V3_WITH_FEATURES


def test_intersected_v3_fixture_encodes_exactly() -> None:
    parsed = parse_api_versions_response(V3_WITH_FEATURES, 3)
    narrowed = intersect_api_versions(parsed.api_keys, {3: (1, 12)})
    out = encode_api_versions_response(
        ApiVersionsResponse(parsed.error_code, narrowed, 0, parsed.tagged_fields), 3
    )
    assert out == bytes.fromhex("00000200030001000c010901aa0000000002000802027800010002001f02bbcc")


def test_kio_reads_supported_features_of_the_fixture_without_unknown_tags() -> None:
    parsed = parse_api_versions_response(V3_WITH_FEATURES, 3)
    known_only = ApiVersionsResponse(
        0,
        [ApiVersionRange(k.api_key, k.min_version, k.max_version) for k in parsed.api_keys],
        0,
        bytes.fromhex("0100080202780001000200"),
    )
    message = decode(KioApiVersionsV3, encode_api_versions_response(known_only, 3))
    assert [(f.name, f.min_version, f.max_version) for f in message.supported_features] == [
        ("x", 1, 2)
    ]


def test_v0_body_for_a_newer_request_falls_back() -> None:
    """What a broker sends when it refuses the requested ApiVersions version."""
    v0 = unsupported_version_response(7, 0, 2)[4:]
    parsed = parse_api_versions_response(v0, 3)
    assert parsed.v0_fallback
    assert parsed.error_code == 35
    assert parsed.api_keys == [ApiVersionRange(18, 0, 2)]
    assert encode_api_versions_response(parsed, 3) == v0


def test_trailing_bytes_are_malformed() -> None:
    with pytest.raises(CodecError):
        parse_api_versions_response(bytes.fromhex("00000000000000"), 0)


def test_unsupported_version_response_fixture() -> None:
    frame = unsupported_version_response(7, 0, 4)
    assert frame == bytes.fromhex("00000007002300000001001200000004")
    message = decode(KioApiVersionsV0, frame[4:])
    assert message.error_code.value == 35
    assert [(k.api_key, k.min_version, k.max_version) for k in message.api_keys] == [(18, 0, 4)]


# --- intersection and gateway ranges -------------------------------------------------

ranges = st.tuples(st.integers(0, 20), st.integers(0, 20)).map(sorted).map(tuple)


@SETTINGS
@given(
    upstream=st.lists(st.tuples(st.integers(0, 30), ranges), max_size=20),
    gateway=st.dictionaries(st.integers(0, 30), ranges, max_size=20),
)
def test_intersection_properties(
    upstream: list[tuple[int, tuple[int, int]]], gateway: dict[int, tuple[int, int]]
) -> None:
    tags = b"\x01\x00\x00"
    entries = [ApiVersionRange(k, lo, hi, tags if k % 2 else b"") for k, (lo, hi) in upstream]
    out = intersect_api_versions(entries, gateway)
    expected = []
    for entry in entries:
        if entry.api_key in gateway:
            lo = max(entry.min_version, gateway[entry.api_key][0])
            hi = min(entry.max_version, gateway[entry.api_key][1])
            if lo <= hi:
                expected.append((entry.api_key, lo, hi, entry.tagged_fields))
    assert [(e.api_key, e.min_version, e.max_version, e.tagged_fields) for e in out] == expected
    assert intersect_api_versions(out, gateway) == out  # idempotent


def test_gateway_ranges_apply_caps() -> None:
    ranges = gateway_version_ranges()
    assert set(ranges) == set(API_TABLE)
    assert ranges[0] == (0, 13)  # Produce keeps v0 for old librdkafka (KAFKA-18659)
    assert ranges[3] == (0, 13)
    assert ranges[10] == (0, 6)
    assert ranges[60] == (0, 2)
    assert ranges[18] == (0, 4)
    assert ranges[1] == (4, 18)
    assert ranges[17] == (0, 1)
    assert ranges[36] == (0, 2)
    assert ranges[78] == ranges[79] == (1, 2)
    for key, (lo, hi) in ranges.items():
        _, table_lo, table_hi, _ = API_TABLE[key]
        assert lo <= hi <= table_hi
        if key not in DECODED_API_CAPS:
            assert (lo, hi) == (table_lo, table_hi)
