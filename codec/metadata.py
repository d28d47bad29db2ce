"""Metadata responses (API key 3, v0-13): broker address rewrite and topic-id map.

The rewrite is on the path of every Metadata response, which can be tens of KB
(all topics and partitions). kio decodes such a body in ~0.4 ms and encodes it
in ~4 ms, so instead the brokers array - which comes first, right after
``throttle_time_ms`` - is read by hand, its host/port bytes are replaced, and
the rest of the body (cluster id, controller, topics...) is copied as one
slice. Broker entries' unknown tagged fields are preserved because only the
host and port bytes are touched.

The rewrite validates only the part it reads (up to the end of the brokers
array); the rest is forwarded as the broker sent it. :func:`metadata_topic_ids`
walks the whole body and is kept separate so the rewrite stays cheap.
"""

from __future__ import annotations

import struct
import uuid
from typing import Final

from codec.endpoints import (
    AddressMapper,
    Splice,
    array_count,
    rewrite_node_array,
    skip_string,
    skip_tags,
)
from codec.primitives import Buffer, CodecError, Reader
from codec.scan import check_within, skip_tags_at, uvarint_at

METADATA_KEY: Final = 3
MAX_METADATA_VERSION: Final = 13
_FIRST_FLEXIBLE: Final = 9
_INT32: Final = struct.Struct(">i")


def _check_version(version: int) -> None:
    if not 0 <= version <= MAX_METADATA_VERSION:
        raise CodecError(f"Metadata response v{version} is not supported (0-13)")


def rewrite_metadata_response(body: Buffer, version: int, mapper: AddressMapper) -> bytes:
    """Return ``body`` with every broker's host/port replaced by ``mapper``'s answer."""
    _check_version(version)
    flexible = version >= _FIRST_FLEXIBLE
    r = Reader(body)
    if version >= 3:
        r.skip(4, "throttle_time_ms")
    splice = Splice(body)
    rewrite_node_array(r, splice, mapper, flexible, has_rack=version >= 1)
    return splice.result()


def metadata_topic_ids(body: Buffer, version: int) -> dict[uuid.UUID, str]:
    """Map topic id -> name from a Metadata response (v10+; older versions have no ids).

    Used to resolve the topic ids of Produce v13 / Fetch v13+ for topic-name
    policies. Topics with the all-zero id or a null name (errors) are skipped.
    """
    _check_version(version)
    if version < 10:
        return {}
    flexible = version >= _FIRST_FLEXIBLE
    r = Reader(body)
    r.skip(4, "throttle_time_ms")
    _skip_brokers(r, flexible)
    skip_string(r, flexible)  # cluster_id
    r.skip(4, "controller_id")
    ids: dict[uuid.UUID, str] = {}
    for _ in range(array_count(r, flexible, "topics")):
        r.skip(2, "topic error_code")
        name = r.flex_nullable_string(flexible)  # null is only legal from v12: skipped anyway
        r.skip(17, "topic_id, is_internal")
        id_value = int.from_bytes(r.buf[r.pos - 17 : r.pos - 1], "big")
        _skip_partitions(r, version, flexible)
        r.skip(4, "topic_authorized_operations")
        skip_tags(r, flexible)
        if name is not None and id_value:
            ids[uuid.UUID(int=id_value)] = name
    _skip_trailer(r, version)
    return ids


def _skip_brokers(r: Reader, flexible: bool) -> None:
    for _ in range(array_count(r, flexible, "brokers")):
        r.skip(4, "node_id")
        skip_string(r, flexible)  # host
        r.skip(4, "port")
        skip_string(r, flexible)  # rack
        skip_tags(r, flexible)


def _skip_partitions(r: Reader, version: int, flexible: bool) -> None:
    """Skip a topic's partitions: the hot loop of the walk.

    Offsets live in locals, and reads past the buffer are caught as IndexError /
    struct.error instead of being bounds-checked one by one.
    """
    fixed = 14 if version >= 7 else 10  # error_code, index, leader_id[, leader_epoch]
    node_lists = range(3 if version >= 5 else 2)  # replicas, isr[, offline_replicas]
    count = array_count(r, flexible, "partitions")
    buf, pos, end = r.buf, r.pos, r.end
    if end != len(buf):
        buf = memoryview(buf)[:end]
    try:
        for _ in range(count):
            pos += fixed
            for _ in node_lists:
                if flexible:
                    size = buf[pos]  # compact length + 1: one byte below 127 replicas
                    if size < 0x80:
                        pos += 1
                    else:
                        size, pos = uvarint_at(buf, pos, end)
                    size -= 1
                else:
                    (size,) = _INT32.unpack_from(buf, pos)
                    pos += 4
                if size < 0:
                    raise CodecError(f"null replica list before offset {pos}")
                pos += 4 * size
            if flexible:
                if buf[pos]:
                    pos = skip_tags_at(buf, pos, end)
                else:
                    pos += 1
    except (IndexError, struct.error) as exc:
        raise CodecError(f"truncated partitions at offset {pos} (end {end})") from exc
    check_within(pos, end, "partitions")
    r.pos = pos


def _skip_trailer(r: Reader, version: int) -> None:
    if 8 <= version <= 10:
        r.skip(4, "cluster_authorized_operations")
    if version >= 13:
        r.skip(2, "error_code")
    r.skip_tagged_fields()
