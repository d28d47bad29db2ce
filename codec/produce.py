"""Cheap scanner for Produce requests (API key 0, v0-13); never copies record batches.

Produce is the gateway's bulk path. Two things must be known about every
Produce request without decoding it:

* ``acks`` - with ``acks=0`` the broker sends no response, so a proxy that does
  not read it waits forever and leaks a pending entry per request
  (:func:`produce_acks`, a few fixed reads);
* which topics/partitions it writes, for policies and quotas
  (:func:`produce_topics`, one pass that skips record sets by their length and
  reports ``(start, end)`` spans into the frame instead of copying them).

Layout: ``transactional_id`` (v3+, nullable), ``acks int16``, ``timeout_ms int32``,
``topic_data [name (v0-12) | topic_id (v13+), partition_data [index int32,
records]]``; v9+ are flexible (compact lengths, tagged fields after each struct).
Kafka 4 dropped v0-2 but the gateway accepts them for old librdkafka
(KAFKA-18659); they are v3 without ``transactional_id``.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Final

from codec.endpoints import array_count, skip_string
from codec.primitives import Buffer, CodecError, Reader
from codec.scan import check_within, skip_tags_at, uvarint_at

PRODUCE_KEY: Final = 0
MAX_PRODUCE_VERSION: Final = 13
_FIRST_FLEXIBLE: Final = 9
_FIRST_TOPIC_ID: Final = 13
_FIRST_TRANSACTIONAL: Final = 3
_ACKS_TIMEOUT: Final = struct.Struct(">hi")
_INDEX: Final = struct.Struct(">i")
_INDEX_SIZE: Final = struct.Struct(">ii")


@dataclass(slots=True)
class ProducePartition:
    index: int
    #: ``frame[records_start:records_end]`` is the record data (empty if null).
    records_start: int
    records_end: int


@dataclass(slots=True)
class ProduceTopic:
    #: Topic name (v0-12), ``None`` from v13 on.
    name: str | None
    #: Topic id (v13+), ``None`` before.
    topic_id: uuid.UUID | None
    partitions: list[ProducePartition]


@dataclass(slots=True)
class ProduceSummary:
    transactional_id: str | None
    acks: int
    timeout_ms: int
    topics: list[ProduceTopic]


def _check_version(version: int) -> None:
    if not 0 <= version <= MAX_PRODUCE_VERSION:
        raise CodecError(f"Produce request v{version} is not supported (0-13)")


def _skip_transactional_id(r: Reader, version: int) -> None:
    if version >= _FIRST_TRANSACTIONAL:
        skip_string(r, version >= _FIRST_FLEXIBLE)


def produce_acks(frame: Buffer, body_offset: int, version: int) -> int:
    """``acks`` of a Produce request: 0 means the broker will not answer."""
    _check_version(version)
    r = Reader(frame, body_offset)
    _skip_transactional_id(r, version)
    return r.int16()


class TooManyEntries(Exception):
    """A Produce request holds more topic and partition entries than the caller's
    ``max_entries``: not an error, a signal to do the per-entry work elsewhere."""


def produce_topics(
    frame: Buffer, body_offset: int, version: int, max_entries: int | None = None
) -> ProduceSummary:
    """Topics, partitions and record spans of a Produce request, in one pass.

    With ``max_entries``, raises :class:`TooManyEntries` as soon as the topic and
    partition counts declared so far exceed it (before reading more of them).
    """
    _check_version(version)
    flexible = version >= _FIRST_FLEXIBLE
    r = Reader(frame, body_offset)
    transactional_id = None
    if version >= _FIRST_TRANSACTIONAL:
        transactional_id = r.flex_nullable_string(flexible)
    r.skip(6, "acks, timeout_ms")
    acks, timeout_ms = _ACKS_TIMEOUT.unpack_from(frame, r.pos - 6)
    count = array_count(r, flexible, "topics")
    if max_entries is None:
        topics = [_read_topic(r, version, flexible) for _ in range(count)]
    else:
        topics = _read_topics_within(r, version, flexible, count, max_entries)
    if flexible:
        r.skip_tagged_fields()
    return ProduceSummary(transactional_id, acks, timeout_ms, topics)


def _read_topics_within(
    r: Reader, version: int, flexible: bool, count: int, max_entries: int
) -> list[ProduceTopic]:
    entries = count
    topics = []
    for _ in range(count):
        if entries > max_entries:
            raise TooManyEntries(f"more than {max_entries} topic and partition entries")
        topic = _read_topic(r, version, flexible, max_entries - entries)
        entries += len(topic.partitions)
        topics.append(topic)
    if entries > max_entries:
        raise TooManyEntries(f"more than {max_entries} topic and partition entries")
    return topics


def _read_topic(
    r: Reader, version: int, flexible: bool, max_partitions: int | None = None
) -> ProduceTopic:
    if version >= _FIRST_TOPIC_ID:
        name, topic_id = None, r.uuid()
    else:
        name, topic_id = r.flex_string(flexible), None
    count = array_count(r, flexible, "partitions")
    if max_partitions is not None and count > max_partitions:
        raise TooManyEntries(f"more than {max_partitions} more partition entries")
    partitions = _read_flexible(r, count) if flexible else _read_classic(r, count)
    if flexible:
        r.skip_tagged_fields()
    return ProduceTopic(name, topic_id, partitions)


def _read_classic(r: Reader, count: int) -> list[ProducePartition]:
    """v0-8 partitions: ``index int32, records (int32 length, -1 = null)``."""
    buf, pos, end = r.buf, r.pos, r.end
    out = []
    for _ in range(count):
        if pos + 8 > end:
            raise CodecError(f"truncated produce partition at offset {pos} (end {end})")
        index, size = _INDEX_SIZE.unpack_from(buf, pos)
        pos += 8
        out.append(ProducePartition(index, pos, pos + max(size, 0)))
        pos += max(size, 0)
    check_within(pos, end, "produce records")
    r.pos = pos
    return out


def _read_flexible(r: Reader, count: int) -> list[ProducePartition]:
    """v9+ partitions: ``index int32, records (compact length), tagged fields``.

    Per-partition hot loop: empty tag sections (the norm) are read inline.
    """
    buf, pos, end = r.buf, r.pos, r.end
    out = []
    for _ in range(count):
        if pos + 4 > end:
            raise CodecError(f"truncated produce partition at offset {pos} (end {end})")
        (index,) = _INDEX.unpack_from(buf, pos)
        size, start = uvarint_at(buf, pos + 4, end)
        pos = start + size - 1 if size else start
        out.append(ProducePartition(index, start, pos))
        if pos < end and buf[pos] == 0:
            pos += 1
        else:
            pos = skip_tags_at(buf, pos, end)
    check_within(pos, end, "produce records")
    r.pos = pos
    return out
