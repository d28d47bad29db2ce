"""Fetch response walker (record bytes per topic, topic entry spans), checked against kio."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from test_codec_strategies import (
    SETTINGS,
    TRUNCATION_SETTINGS,
    decode,
    encode,
    entity,
    fetch_responses,
    kio_module,
    small_tuples,
)

from codec.fetch_sizes import (
    FetchResponseTopics,
    fetch_record_bytes,
    fetch_response_topics,
)
from codec.primitives import CodecError

VERSIONS = range(4, 19)
ZERO_UUID = uuid.UUID(int=0)


def any_fetch_responses(version: int, max_topics: int = 3) -> st.SearchStrategy[Any]:
    """Fetch responses of any version; the shared strategy covers only v16+ (node endpoints)."""
    if version >= 16:
        return fetch_responses(version)
    m = kio_module("fetch", version)
    aborted = st.none() | small_tuples(entity(m.AbortedTransaction))
    partition = entity(m.PartitionData, aborted_transactions=aborted)
    topic = entity(m.FetchableTopicResponse, partitions=small_tuples(partition))
    return entity(m.FetchResponse, responses=small_tuples(topic, max_topics))


def _key(topic: Any, version: int) -> str | uuid.UUID:
    if version >= 13:
        return topic.topic_id or ZERO_UUID  # kio decodes the zero id as None
    return str(topic.topic)


def _expected_sizes(message: Any, version: int) -> dict[str | uuid.UUID, int]:
    sizes: dict[str | uuid.UUID, int] = {}
    for topic in message.responses:
        key = _key(topic, version)
        sizes[key] = sizes.get(key, 0) + sum(len(p.records or b"") for p in topic.partitions)
    return sizes


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_record_bytes_match_kio(version: int, data: Any) -> None:
    message = data.draw(any_fetch_responses(version))
    body = encode(message)
    assert fetch_record_bytes(body, version) == _expected_sizes(message, version)


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_topic_spans_decode_to_the_topic_entries(version: int, data: Any) -> None:
    """Each span is exactly one kio topic entry; the array bounds frame them all."""
    message = data.draw(any_fetch_responses(version))
    body = encode(message)
    layout = fetch_response_topics(body, version)
    m = kio_module("fetch", version)
    assert [t.key for t in layout.topics] == [_key(t, version) for t in message.responses]
    for span, expected in zip(layout.topics, message.responses, strict=True):
        assert decode(m.FetchableTopicResponse, body[span.start : span.end]) == expected
    header = 10 if version >= 7 else 4
    assert layout.count_start == header
    starts = [t.start for t in layout.topics]
    assert starts[:1] == [layout.entries_start][: len(starts)]
    assert [t.end for t in layout.topics] == [*starts[1:], layout.entries_end][: len(starts)]
    # What follows the array (top-level tagged fields) is what follows an empty array.
    empty = encode(dataclasses.replace(message, responses=()))
    empty_count = 1 if version >= 12 else 4
    assert body[layout.entries_end :] == empty[header + empty_count :]


@pytest.mark.parametrize("version", [4, 11, 12, 13, 18])
@SETTINGS
@given(data=st.data(), prefix=st.binary(max_size=9))
def test_start_offset_gives_the_same_walk_shifted(version: int, data: Any, prefix: bytes) -> None:
    message = data.draw(any_fetch_responses(version))
    body = encode(message)
    framed = prefix + body
    shifted = fetch_response_topics(memoryview(framed), version, len(prefix))
    plain = fetch_response_topics(body, version)
    assert shifted.count_start == plain.count_start + len(prefix)
    assert shifted.entries_end == plain.entries_end + len(prefix)
    assert [(t.key, t.start - len(prefix), t.record_bytes) for t in shifted.topics] == [
        (t.key, t.start, t.record_bytes) for t in plain.topics
    ]
    assert fetch_record_bytes(framed, version, len(prefix)) == fetch_record_bytes(body, version)


@pytest.mark.parametrize("version", [4, 7, 11, 12, 13, 16])
@TRUNCATION_SETTINGS
@given(data=st.data())
def test_truncated_body_raises_codec_error(version: int, data: Any) -> None:
    message = data.draw(any_fetch_responses(version, max_topics=2))
    body = encode(message)
    end = fetch_response_topics(body, version).entries_end
    for cut in range(end):
        with pytest.raises(CodecError):
            fetch_response_topics(body[:cut], version)


def test_large_records_are_counted_not_copied() -> None:
    """A multi-megabyte record set is skipped by its length."""
    m = kio_module("fetch", 13)
    records = bytes(3 * 1024 * 1024)
    topic_id = uuid.uuid4()
    partition = m.PartitionData(
        partition_index=0,
        error_code=ErrorCode.none,
        high_watermark=5,
        aborted_transactions=None,
        records=records,
    )
    message = m.FetchResponse(
        throttle_time=datetime.timedelta(0),
        error_code=ErrorCode.none,
        responses=(m.FetchableTopicResponse(topic_id=topic_id, partitions=(partition,) * 2),),
    )
    body = encode(message)
    assert fetch_record_bytes(memoryview(body), 13) == {topic_id: 2 * len(records)}


def test_negative_record_length_is_rejected() -> None:
    m = kio_module("fetch", 4)
    partition = m.PartitionData(
        partition_index=0,
        error_code=ErrorCode.none,
        high_watermark=5,
        aborted_transactions=None,
        records=None,
    )
    message = m.FetchResponse(
        throttle_time=datetime.timedelta(0),
        responses=(m.FetchableTopicResponse(topic="t", partitions=(partition,)),),
    )
    body = bytearray(encode(message))
    assert body[-4:] == b"\xff\xff\xff\xff"  # the null record set
    body[-4:] = (-2).to_bytes(4, "big", signed=True)
    with pytest.raises(CodecError, match="negative length"):
        fetch_record_bytes(bytes(body), 4)


@pytest.mark.parametrize("version", [3, 19])
def test_unsupported_versions(version: int) -> None:
    with pytest.raises(CodecError, match="not supported"):
        fetch_response_topics(b"", version)


def test_layout_type() -> None:
    m = kio_module("fetch", 12)
    message = m.FetchResponse(
        throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, responses=()
    )
    layout = fetch_response_topics(encode(message), 12)
    assert layout == FetchResponseTopics(
        count_start=10, entries_start=11, entries_end=11, topics=[]
    )
