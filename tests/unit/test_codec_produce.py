"""Produce request scanner: acks, topics and record spans, v0-13."""

from __future__ import annotations

import dataclasses
import struct
import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_codec_strategies import SETTINGS, TRUNCATION_SETTINGS, encode, produce_requests

from codec.headers import encode_request_header, parse_request_header
from codec.primitives import CodecError
from codec.produce import (
    ProducePartition,
    ProduceSummary,
    ProduceTopic,
    TooManyEntries,
    produce_acks,
    produce_topics,
)

ZERO_UUID = uuid.UUID(int=0)


def _frame(version: int, body: bytes) -> tuple[bytes, int]:
    header = encode_request_header(0, version, 42, "client")
    assert parse_request_header(header + body).body_offset == len(header)
    return header + body, len(header)


@pytest.mark.parametrize("version", range(3, 14))
@SETTINGS
@given(data=st.data())
def test_scan_matches_kio(version: int, data: Any) -> None:
    message = data.draw(produce_requests(version))
    frame, offset = _frame(version, encode(message))
    summary = produce_topics(frame, offset, version)
    assert produce_topics(memoryview(frame), offset, version) == summary
    assert produce_acks(frame, offset, version) == message.acks
    assert summary.acks == message.acks
    assert summary.timeout_ms == message.timeout // timedelta(milliseconds=1)
    assert summary.transactional_id == message.transactional_id
    assert len(summary.topics) == len(message.topic_data)
    for topic, expected in zip(summary.topics, message.topic_data, strict=True):
        if version >= 13:
            assert topic.name is None
            assert topic.topic_id == (expected.topic_id or ZERO_UUID)
        else:
            assert (topic.name, topic.topic_id) == (expected.name, None)
        assert [p.index for p in topic.partitions] == [p.index for p in expected.partition_data]
        for part, exp in zip(topic.partitions, expected.partition_data, strict=True):
            assert frame[part.records_start : part.records_end] == (exp.records or b"")


@pytest.mark.parametrize("version", range(3, 14))
@SETTINGS
@given(data=st.data(), limit=st.integers(0, 12))
def test_max_entries_stops_the_scan_of_larger_requests(version: int, data: Any, limit: int) -> None:
    message = data.draw(produce_requests(version))
    frame, offset = _frame(version, encode(message))
    entries = sum(1 + len(topic.partition_data) for topic in message.topic_data)
    if entries > limit:
        with pytest.raises(TooManyEntries):
            produce_topics(frame, offset, version, max_entries=limit)
    else:
        assert produce_topics(frame, offset, version, limit) == produce_topics(
            frame, offset, version
        )


def test_max_entries_is_checked_against_declared_counts_before_reading_them() -> None:
    # v3: transactional_id null, acks, timeout, then 100 topics declared and garbage:
    # refused as too many before any of it is read (a malformed one would raise
    # CodecError, closing the connection, instead).
    frame, offset = _frame(3, struct.pack(">hhii", -1, 1, 1000, 100) + b"\xff" * 200)
    with pytest.raises(TooManyEntries):
        produce_topics(frame, offset, 3, max_entries=64)


@pytest.mark.parametrize("version", range(3, 14))
@TRUNCATION_SETTINGS
@given(data=st.data())
def test_truncated_requests_raise(version: int, data: Any) -> None:
    message = data.draw(produce_requests(version))
    body = encode(message)
    frame, offset = _frame(version, body)
    acks_end = offset + _transactional_id_length(message, version) + 2
    for cut in range(offset, len(frame)):
        with pytest.raises(CodecError):
            produce_topics(frame[:cut], offset, version)
        if cut < acks_end:
            with pytest.raises(CodecError):
                produce_acks(frame[:cut], offset, version)
        else:
            assert produce_acks(frame[:cut], offset, version) == message.acks


def _transactional_id_length(message: Any, version: int) -> int:
    """Encoded size of the transactional id, from kio encodings only."""
    without = encode(dataclasses.replace(message, transactional_id=None))
    null_size = 1 if version >= 9 else 2
    return len(encode(message)) - len(without) + null_size


# --- v0-2 (dropped by Kafka 4, kept by the gateway for old librdkafka) -------------


LegacyTopics = list[tuple[str, list[tuple[int, bytes | None]]]]


def _legacy_body(acks: int, timeout_ms: int, topics: LegacyTopics) -> bytes:
    out = struct.pack(">hi", acks, timeout_ms) + struct.pack(">i", len(topics))
    for name, partitions in topics:
        raw = name.encode()
        out += struct.pack(">h", len(raw)) + raw + struct.pack(">i", len(partitions))
        for index, records in partitions:
            if records is None:
                out += struct.pack(">ii", index, -1)
            else:
                out += struct.pack(">ii", index, len(records)) + records
    return out


legacy_topics = st.lists(
    st.tuples(
        st.text(max_size=12),
        st.lists(
            st.tuples(st.integers(0, 2**31 - 1), st.none() | st.binary(max_size=40)), max_size=3
        ),
    ),
    max_size=3,
)


@pytest.mark.parametrize("version", range(3))
@SETTINGS
@given(acks=st.sampled_from([-1, 0, 1]), timeout_ms=st.integers(0, 2**31 - 1), topics=legacy_topics)
def test_legacy_versions(version: int, acks: int, timeout_ms: int, topics: Any) -> None:
    frame, offset = _frame(version, _legacy_body(acks, timeout_ms, topics))
    assert produce_acks(frame, offset, version) == acks
    summary = produce_topics(frame, offset, version)
    assert (summary.transactional_id, summary.acks, summary.timeout_ms) == (None, acks, timeout_ms)
    assert [(t.name, [p.index for p in t.partitions]) for t in summary.topics] == [
        (name, [i for i, _ in parts]) for name, parts in topics
    ]
    spans = [frame[p.records_start : p.records_end] for t in summary.topics for p in t.partitions]
    assert spans == [r or b"" for _, parts in topics for _, r in parts]


# --- byte-exact fixtures --------------------------------------------------------------

V3_BODY = bytes.fromhex(
    "0003"
    "747831"  # transactional_id "tx1"
    "ffff"  # acks -1
    "00007530"  # timeout 30000
    "00000001"  # topics: 1
    "0001"
    "74"  # "t"
    "00000002"  # partitions: 2
    "00000000"
    "00000003"
    "aabbcc"  # partition 0, 3 bytes of records
    "00000005"
    "ffffffff"  # partition 5, null records
)

V13_BODY = bytes.fromhex(
    "00"  # transactional_id null
    "0000"  # acks 0
    "000003e8"  # timeout 1000
    "02"  # topics: 1
    "000102030405060708090a0b0c0d0e0f"  # topic_id
    "02"
    "00000007"
    "03"
    "dddd"
    "00"  # partitions: 1 -> 7, 2 bytes, no tags
    "00"  # topic tags
    "00"  # top-level tags
)


def test_v3_fixture() -> None:
    assert produce_acks(V3_BODY, 0, 3) == -1
    partitions = [ProducePartition(0, 30, 33), ProducePartition(5, 41, 41)]
    assert produce_topics(V3_BODY, 0, 3) == ProduceSummary(
        "tx1", -1, 30000, [ProduceTopic("t", None, partitions)]
    )
    assert V3_BODY[30:33] == b"\xaa\xbb\xcc"


def test_v13_fixture() -> None:
    topic_id = uuid.UUID("00010203-0405-0607-0809-0a0b0c0d0e0f")
    assert produce_acks(V13_BODY, 0, 13) == 0
    assert produce_topics(V13_BODY, 0, 13) == ProduceSummary(
        None, 0, 1000, [ProduceTopic(None, topic_id, [ProducePartition(7, 30, 32)])]
    )
    assert V13_BODY[30:32] == b"\xdd\xdd"


def test_unknown_version_is_refused() -> None:
    with pytest.raises(CodecError):
        produce_acks(V13_BODY, 0, 14)
