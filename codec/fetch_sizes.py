"""Fetch responses (API key 1, v4-18): record bytes per topic and topic entry spans.

Fetch responses are the largest messages the gateway carries (megabytes of
records), so nothing here decodes or copies records: the walk reads each
partition's fixed header, skips its aborted transactions and record set by
their lengths, and reports, per topic entry, where it starts and ends in the
body and how many record bytes it carries. Two users:

* per-topic fetch quotas need the record bytes per topic
  (:func:`fetch_record_bytes`);
* the authorization of a partly denied Fetch appends locally built topic
  entries to the upstream response, which needs the offsets of the topics
  array (:func:`fetch_response_topics`) to splice bytes instead of re-encoding
  the records.

Layout: ``throttle_time_ms int32``, ``error_code int16`` and ``session_id
int32`` (v7+), ``responses [topic (v4-12) | topic_id (v13+), partitions
[partition_index int32, error_code int16, high_watermark int64,
last_stable_offset int64, log_start_offset int64 (v5+), aborted_transactions
[producer_id int64, first_offset int64] (nullable), preferred_read_replica
int32 (v11+), records (nullable)]]``; v12+ are flexible (compact lengths,
tagged fields after each struct and at the end of the body).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Final

from codec.endpoints import array_count
from codec.primitives import Buffer, CodecError, Reader
from codec.scan import check_within, skip_tags_at, uvarint_at

FETCH_KEY: Final = 1
MIN_FETCH_VERSION: Final = 4
MAX_FETCH_VERSION: Final = 18
FIRST_FLEXIBLE_FETCH: Final = 12
FIRST_TOPIC_ID_FETCH: Final = 13
_FIRST_SESSION: Final = 7
_FIRST_LOG_START_OFFSET: Final = 5
_FIRST_PREFERRED_REPLICA: Final = 11
_INT32: Final = struct.Struct(">i")
_ABORTED_TRANSACTION_SIZE: Final = 16  # producer_id int64, first_offset int64

#: A topic as a Fetch response names it: its name before v13, its id from v13 on.
TopicKey = str | uuid.UUID


@dataclass(slots=True)
class FetchTopicEntry:
    key: TopicKey
    #: ``body[start:end]`` is the whole topic entry, partitions and tagged fields included.
    start: int
    end: int
    #: Sum of the record set lengths of the entry's partitions (null counts as 0).
    record_bytes: int


@dataclass(slots=True)
class FetchResponseTopics:
    #: Offset of the ``responses`` array length.
    count_start: int
    #: Offset of the first topic entry (just after the array length).
    entries_start: int
    #: Offset just past the last topic entry: the top-level tagged fields (v12+) follow.
    entries_end: int
    topics: list[FetchTopicEntry]


def _check_version(version: int) -> None:
    if not MIN_FETCH_VERSION <= version <= MAX_FETCH_VERSION:
        raise CodecError(
            f"Fetch response v{version} is not supported ({MIN_FETCH_VERSION}-{MAX_FETCH_VERSION})"
        )


def fetch_response_topics(body: Buffer, version: int, start: int = 0) -> FetchResponseTopics:
    """Spans and record bytes of every topic entry of the Fetch response body at ``start``.

    Offsets are into ``body``, so a caller holding the whole frame passes the body
    offset instead of slicing.
    """
    _check_version(version)
    flexible = version >= FIRST_FLEXIBLE_FETCH
    r = Reader(body, start)
    r.skip(10 if version >= _FIRST_SESSION else 4, "throttle_time_ms, error_code, session_id")
    count_start = r.pos
    count = array_count(r, flexible, "responses")
    entries_start = r.pos
    topics = []
    for _ in range(count):
        entry_start = r.pos
        key: TopicKey = r.uuid() if version >= FIRST_TOPIC_ID_FETCH else r.flex_string(flexible)
        record_bytes = _skip_partitions(r, version, flexible)
        if flexible:
            r.skip_tagged_fields()
        topics.append(FetchTopicEntry(key, entry_start, r.pos, record_bytes))
    return FetchResponseTopics(count_start, entries_start, r.pos, topics)


def fetch_record_bytes(body: Buffer, version: int, start: int = 0) -> dict[TopicKey, int]:
    """Record bytes per topic of the Fetch response body at ``start`` (repeats are summed).

    Keys are topic names before v13 and topic ids from v13 on.
    """
    sizes: dict[TopicKey, int] = {}
    for topic in fetch_response_topics(body, version, start).topics:
        sizes[topic.key] = sizes.get(topic.key, 0) + topic.record_bytes
    return sizes


def fetch_topic_partitions(body: Buffer, version: int, entry: FetchTopicEntry) -> list[int]:
    """Partition indexes of one topic entry found by :func:`fetch_response_topics`."""
    _check_version(version)
    flexible = version >= FIRST_FLEXIBLE_FETCH
    r = Reader(body, entry.start, entry.end)
    if version >= FIRST_TOPIC_ID_FETCH:
        r.skip(16, "topic_id")
    else:
        r.flex_string(flexible)
    indexes: list[int] = []
    _skip_partitions(r, version, flexible, indexes)
    return indexes


def _skip_partitions(
    r: Reader, version: int, flexible: bool, indexes: list[int] | None = None
) -> int:
    """Skip a topic's partitions, returning their record bytes: the hot loop of the walk.

    ``indexes``, when given, collects the partition indexes.

    Offsets live in locals; reads past the buffer surface as IndexError /
    struct.error and are reported once as a CodecError.
    """
    fixed = 30 if version >= _FIRST_LOG_START_OFFSET else 22
    preferred_replica = 4 if version >= _FIRST_PREFERRED_REPLICA else 0
    count = array_count(r, flexible, "partitions")
    buf, pos, end = r.buf, r.pos, r.end
    if end != len(buf):
        buf = memoryview(buf)[:end]
    if flexible:
        return _skip_flexible_partitions(buf, pos, end, count, fixed, indexes, r)
    record_bytes = 0
    try:
        for _ in range(count):
            if indexes is not None:
                indexes.append(_INT32.unpack_from(buf, pos)[0])
            pos += fixed
            aborted, pos = _length_at(buf, pos, end, False)
            if aborted > 0:
                pos += _ABORTED_TRANSACTION_SIZE * aborted
            pos += preferred_replica
            size, pos = _length_at(buf, pos, end, False)
            if size > 0:
                record_bytes += size
                pos += size
    except (IndexError, struct.error) as exc:
        raise CodecError(f"truncated fetch partitions at offset {pos} (end {end})") from exc
    check_within(pos, end, "fetch partitions")
    r.pos = pos
    return record_bytes


def _skip_flexible_partitions(
    buf: Buffer,
    pos: int,
    end: int,
    count: int,
    fixed: int,
    indexes: list[int] | None,
    r: Reader,
) -> int:
    """:func:`_skip_partitions` for v12+ (compact lengths, tags): one-byte varints inline."""
    record_bytes = 0
    try:
        for _ in range(count):
            if indexes is not None:
                indexes.append(_INT32.unpack_from(buf, pos)[0])
            pos += fixed
            aborted = buf[pos] - 1  # aborted transactions (nullable): usually null or empty
            if aborted < 0x7F:
                pos += 1
            else:
                aborted, pos = uvarint_at(buf, pos, end)
                aborted -= 1
            if aborted > 0:
                for _ in range(aborted):
                    pos = skip_tags_at(buf, pos + _ABORTED_TRANSACTION_SIZE, end)
            pos += 4  # preferred_read_replica (v11+)
            size = buf[pos]  # records length + 1: one or two bytes up to 16 KiB
            if size < 0x80:
                pos += 1
            elif buf[pos + 1] < 0x80:
                size = size & 0x7F | buf[pos + 1] << 7
                pos += 2
            else:
                size, pos = uvarint_at(buf, pos, end)
            if size > 1:
                record_bytes += size - 1
                pos += size - 1
            if pos < end and buf[pos] == 0:
                pos += 1
            else:
                pos = skip_tags_at(buf, pos, end)
    except (IndexError, struct.error) as exc:
        raise CodecError(f"truncated fetch partitions at offset {pos} (end {end})") from exc
    check_within(pos, end, "fetch partitions")
    r.pos = pos
    return record_bytes


def _length_at(buf: Buffer, pos: int, end: int, flexible: bool) -> tuple[int, int]:
    """``(length, next_pos)`` of a nullable array/bytes length; -1 means null."""
    if flexible:
        raw, pos = uvarint_at(buf, pos, end)
        length = raw - 1
    else:
        (length,) = _INT32.unpack_from(buf, pos)
        pos += 4
    if length < -1:
        raise CodecError(f"negative length {length} before offset {pos}")
    return length, pos
