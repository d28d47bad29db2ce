"""Metadata response topic entry spans and topics-array rebuilding, checked against kio."""

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
    kio_module,
    metadata_responses,
)

from codec.metadata_topics import metadata_topic_entries, replace_metadata_topics
from codec.primitives import CodecError

VERSIONS = range(14)


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_entries_match_kio(version: int, data: Any) -> None:
    message = data.draw(metadata_responses(version))
    body = encode(message)
    layout = metadata_topic_entries(body, version, with_ids=True)
    m = kio_module("metadata", version)
    assert len(layout.topics) == len(message.topics)
    without_ids = metadata_topic_entries(body, version)
    assert [dataclasses.replace(t, topic_id=None) for t in layout.topics] == without_ids.topics
    for entry, expected in zip(layout.topics, message.topics, strict=True):
        assert entry.error_code == expected.error_code
        assert entry.name == expected.name
        assert entry.topic_id == (getattr(expected, "topic_id", None) or None)
        assert decode(m.MetadataResponseTopic, body[entry.start : entry.end]) == expected


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data(), prefix=st.binary(max_size=6))
def test_rebuilt_topics_array_is_what_kio_encodes(version: int, data: Any, prefix: bytes) -> None:
    """Dropping, reordering and adding entries changes the topics and nothing else."""
    message = data.draw(metadata_responses(version, max_topics=4))
    extra = data.draw(metadata_responses(version, max_topics=2)).topics
    framed = prefix + encode(message)
    layout = metadata_topic_entries(framed, version, len(prefix))
    order = data.draw(st.permutations(range(len(layout.topics))))
    keep = data.draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    chosen = [i for i, wanted in zip(order, keep, strict=True) if wanted]
    view = memoryview(framed)
    entries = [view[layout.topics[i].start : layout.topics[i].end] for i in chosen]
    entries += [encode(topic) for topic in extra]
    rebuilt = replace_metadata_topics(framed, version, layout, entries)
    assert rebuilt[: len(prefix)] == prefix
    expected_topics = tuple(message.topics[i] for i in chosen) + tuple(extra)
    expected = dataclasses.replace(message, topics=expected_topics)
    assert decode(type(message), rebuilt[len(prefix) :]) == expected


@pytest.mark.parametrize("version", [0, 1, 9, 10, 12, 13])
@TRUNCATION_SETTINGS
@given(data=st.data())
def test_truncated_body_raises_codec_error(version: int, data: Any) -> None:
    message = data.draw(metadata_responses(version, max_topics=2))
    body = encode(message)
    end = metadata_topic_entries(body, version).entries_end
    for cut in range(end):
        with pytest.raises(CodecError):
            metadata_topic_entries(body[:cut], version)


def test_zero_topic_id_reads_as_none() -> None:
    m = kio_module("metadata", 12)
    topic_id = uuid.uuid4()
    topics = tuple(
        m.MetadataResponseTopic(
            error_code=ErrorCode.none,
            name=name,
            topic_id=tid,
            partitions=(),
            topic_authorized_operations=0,
        )
        for name, tid in (("a", topic_id), (None, None))
    )
    message = m.MetadataResponse(
        throttle_time=datetime.timedelta(0),
        brokers=(),
        cluster_id=None,
        controller_id=1,
        topics=topics,
    )
    layout = metadata_topic_entries(encode(message), 12, with_ids=True)
    assert [(t.name, t.topic_id) for t in layout.topics] == [("a", topic_id), (None, None)]


@pytest.mark.parametrize("version", [-1, 14])
def test_unsupported_versions(version: int) -> None:
    with pytest.raises(CodecError, match="not supported"):
        metadata_topic_entries(b"", version)
