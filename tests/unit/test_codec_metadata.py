"""Metadata response broker rewrite and topic-id map, checked against kio."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_codec_strategies import (
    SETTINGS,
    TRUNCATION_SETTINGS,
    decode,
    encode,
    gw_mapper,
    metadata_responses,
    with_mapped_address,
)

from codec.metadata import metadata_topic_ids, rewrite_metadata_response
from codec.primitives import CodecError
from codec.rewrite import rewrite_response

VERSIONS = range(14)


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_rewrite_changes_only_broker_addresses(version: int, data: Any) -> None:
    message = data.draw(metadata_responses(version))
    body = encode(message)
    out = rewrite_response(3, version, body, gw_mapper)
    framed = memoryview(bytearray(b"\x00\x00\x00\x07\x00" + body)).toreadonly()[5:]
    assert rewrite_response(3, version, framed, gw_mapper) == out
    assert metadata_topic_ids(framed, version) == metadata_topic_ids(body, version)
    assert out is not None
    expected = dataclasses.replace(
        message, brokers=tuple(with_mapped_address(b) for b in message.brokers)
    )
    assert decode(type(message), out) == expected


def _brokers_end(message: Any, version: int) -> int:
    """Offset just past the brokers array, computed from kio encodings only."""
    without = encode(dataclasses.replace(message, brokers=()))
    empty_array = 1 if version >= 9 else 4
    throttle = 4 if version >= 3 else 0
    return throttle + len(encode(message)) - len(without) + empty_array


@pytest.mark.parametrize("version", VERSIONS)
@TRUNCATION_SETTINGS
@given(data=st.data())
def test_rewrite_of_truncated_body(version: int, data: Any) -> None:
    """Cut inside what the rewrite reads -> CodecError; after it -> the same splice.

    The rewrite only reads up to the end of the brokers array and copies the rest
    untouched, so a body truncated later is forwarded as truncated.
    """
    message = data.draw(metadata_responses(version, max_topics=1))
    body = encode(message)
    full = rewrite_metadata_response(body, version, gw_mapper)
    delta = len(full) - len(body)
    end = _brokers_end(message, version)
    for cut in range(len(body)):
        if cut < end:
            with pytest.raises(CodecError):
                rewrite_metadata_response(body[:cut], version, gw_mapper)
        else:
            assert rewrite_metadata_response(body[:cut], version, gw_mapper) == full[: cut + delta]


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_topic_ids_match_kio(version: int, data: Any) -> None:
    message = data.draw(metadata_responses(version))
    expected = {}
    if version >= 10:
        for topic in message.topics:
            if topic.name is not None and topic.topic_id not in (None, uuid.UUID(int=0)):
                expected[topic.topic_id] = topic.name
    assert metadata_topic_ids(encode(message), version) == expected


@pytest.mark.parametrize("version", range(10, 14))
@TRUNCATION_SETTINGS
@given(data=st.data())
def test_topic_ids_of_truncated_body_raise(version: int, data: Any) -> None:
    body = encode(data.draw(metadata_responses(version, max_topics=2)))
    for cut in range(len(body)):
        with pytest.raises(CodecError):
            metadata_topic_ids(body[:cut], version)


# --- byte-exact fixtures -----------------------------------------------------------

V1_BODY = bytes.fromhex(
    "00000001"  # brokers: 1
    "00000001"
    "0002"
    "6231"
    "00002384"
    "ffff"  # node 1, "b1", 9092, rack null
    "00000001"  # controller_id
    "00000000"  # topics: 0
)
V1_REWRITTEN = bytes.fromhex(
    "00000001"
    "00000001"
    "0009"
    "6777312e6c6f63616c"
    "00002711"
    "ffff"  # "gw1.local", 10001
    "00000001"
    "00000000"
)

V12_BODY = bytes.fromhex(
    "00000000"  # throttle_time_ms
    "02"  # brokers: 1
    "00000002"
    "03"
    "6232"
    "00002384"
    "03"
    "7231"  # node 2, "b2", 9092, rack "r1"
    "01"
    "05"
    "02"
    "abcd"  # one unknown tagged field (tag 5) in the broker entry
    "02"
    "63"  # cluster_id "c"
    "00000002"  # controller_id
    "02"  # topics: 1
    "0000"
    "02"
    "74"  # error_code, name "t"
    "000102030405060708090a0b0c0d0e0f"  # topic_id
    "00"
    "01"
    "80000000"
    "00"  # is_internal, partitions: 0, authorized ops, tags
    "00"  # top-level tagged fields
)
V12_REWRITTEN = bytes.fromhex(
    "00000000"
    "02"
    "00000002"
    "0a"
    "6777322e6c6f63616c"
    "00002712"
    "03"
    "7231"  # "gw2.local", 10002
    "01"
    "05"
    "02"
    "abcd"
    "02"
    "63"
    "00000002"
    "02"
    "0000"
    "02"
    "74"
    "000102030405060708090a0b0c0d0e0f"
    "00"
    "01"
    "80000000"
    "00"
    "00"
)


def test_v1_fixture() -> None:
    assert rewrite_response(3, 1, V1_BODY, gw_mapper) == V1_REWRITTEN


def test_v12_fixture_keeps_unknown_broker_tags() -> None:
    out = rewrite_response(3, 12, V12_BODY, gw_mapper)
    assert out == V12_REWRITTEN


def test_v12_fixture_topic_ids() -> None:
    topic_id = uuid.UUID("00010203-0405-0607-0809-0a0b0c0d0e0f")
    assert metadata_topic_ids(V12_BODY, 12) == {topic_id: "t"}


def test_mapper_sees_upstream_addresses() -> None:
    seen: list[tuple[int, str, int]] = []

    def recording(node_id: int, host: str, port: int) -> tuple[str, int]:
        seen.append((node_id, host, port))
        return host, port

    assert rewrite_response(3, 12, V12_BODY, recording) == V12_BODY
    assert seen == [(2, "b2", 9092)]


def test_unknown_version_is_refused() -> None:
    with pytest.raises(CodecError):
        rewrite_response(3, 14, V12_BODY, gw_mapper)
    with pytest.raises(CodecError):
        metadata_topic_ids(V12_BODY, 14)


def test_null_brokers_array_is_malformed() -> None:
    with pytest.raises(CodecError, match="null"):
        rewrite_response(3, 1, bytes.fromhex("ffffffff"), gw_mapper)
