"""Locating and raising ``throttle_time_ms`` in responses, checked against kio."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_codec_strategies import SETTINGS, decode, encode, produce_responses

from codec.api_table import API_TABLE
from codec.primitives import CodecError
from codec.throttle import patch_throttle_time, throttle_first_in_body, throttle_offset

KNOWN_MS = datetime.timedelta(milliseconds=1234)


@pytest.mark.parametrize("version", range(3, 14))
@SETTINGS
@given(data=st.data())
def test_produce_throttle_is_found_after_the_responses(version: int, data: Any) -> None:
    response = dataclasses.replace(data.draw(produce_responses(version)), throttle_time=KNOWN_MS)
    body = encode(response)
    offset = throttle_offset(body, 0, version)
    assert offset is not None
    assert int.from_bytes(body[offset : offset + 4], "big") == 1234


@pytest.mark.parametrize("version", range(3, 14))
@SETTINGS
@given(data=st.data())
def test_patch_raises_produce_throttle_and_keeps_everything_else(version: int, data: Any) -> None:
    response = dataclasses.replace(data.draw(produce_responses(version)), throttle_time=KNOWN_MS)
    frame = bytearray(b"\x00\x00\x00\x07" + encode(response))
    assert patch_throttle_time(frame, 4, 0, version, 5000)
    patched = decode(type(response), bytes(frame[4:]))
    assert patched == dataclasses.replace(
        response, throttle_time=datetime.timedelta(milliseconds=5000)
    )


def test_patch_never_lowers_the_brokers_throttle() -> None:
    frame = bytearray(b"\x00\x00\x00\x01" + (3000).to_bytes(4, "big") + b"\x00\x00")
    assert patch_throttle_time(frame, 4, 1, 12, 100)  # Fetch: throttle first
    assert int.from_bytes(frame[4:8], "big") == 3000


def test_most_responses_start_with_throttle_time() -> None:
    assert throttle_first_in_body(1, 4)  # Fetch
    assert throttle_first_in_body(3, 12)  # Metadata
    assert not throttle_first_in_body(3, 0)  # Metadata v0 has no throttle
    assert not throttle_first_in_body(18, 3)  # ApiVersions: error_code comes first
    assert not throttle_first_in_body(36, 2)  # SaslAuthenticate has none
    assert not throttle_first_in_body(0, 9)  # Produce: found by walking instead
    having = [
        key
        for key, (_, low, high, _) in API_TABLE.items()
        if any(throttle_first_in_body(key, v) for v in range(low, high + 1))
    ]
    assert len(having) > 40


def test_a_response_without_throttle_is_left_alone() -> None:
    frame = bytearray(b"\x00\x00\x00\x01\x00\x00")
    assert not patch_throttle_time(frame, 4, 36, 1, 100)
    assert frame == bytearray(b"\x00\x00\x00\x01\x00\x00")


def test_truncated_produce_response_is_an_error() -> None:
    with pytest.raises(CodecError):
        throttle_offset(b"\x00\x00\x00\x01\x00", 0, 3)
