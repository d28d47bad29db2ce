"""KIP-951 ``node_endpoints`` in Produce, Fetch, ShareFetch and ShareAcknowledge responses.

When a partition's leader moved, the broker tells the client the new leader's
address right in the Produce/Fetch response so it need not refresh Metadata.
A gateway that forwarded those addresses unchanged would send clients straight
to brokers they may not reach, so they are rewritten like Metadata brokers.

* Produce v10+ and Fetch v16+: ``node_endpoints`` is top-level **tagged field 0**,
  i.e. after everything else. The whole body is walked (record sets are skipped
  by length, never copied) to reach the tagged section; only if tag 0 is there
  is its payload rewritten and its size re-encoded. Other tags stay verbatim.
* ShareFetch / ShareAcknowledge (KIP-932, v0-2): ``node_endpoints`` is a
  **regular** field after ``responses``, so it is spliced in place.

Each function returns ``None`` when the response names no endpoints: the caller
then forwards the original bytes.
"""

from __future__ import annotations

from typing import Final

from codec.endpoints import (
    AddressMapper,
    Splice,
    array_count,
    rewrite_node_array,
    skip_string,
)
from codec.primitives import Buffer, CodecError, Reader, enc_uvarint
from codec.scan import check_within, skip_tags_at, uvarint_at

PRODUCE_KEY: Final = 0
FETCH_KEY: Final = 1
SHARE_FETCH_KEY: Final = 78
SHARE_ACKNOWLEDGE_KEY: Final = 79

#: First version carrying node_endpoints, and the newest version whose layout is known.
PRODUCE_NODE_ENDPOINT_VERSIONS: Final = (10, 13)
FETCH_NODE_ENDPOINT_VERSIONS: Final = (16, 18)
SHARE_VERSIONS: Final = (0, 2)

_NODE_ENDPOINTS_TAG: Final = 0


def _carries_endpoints(api: str, version: int, versions: tuple[int, int]) -> bool:
    first, last = versions
    if version > last:
        raise CodecError(f"{api} response v{version} is newer than the known v{last}")
    return version >= first


def rewrite_produce_response(body: Buffer, version: int, mapper: AddressMapper) -> bytes | None:
    """Rewrite the tagged ``node_endpoints`` of a Produce v10+ response."""
    if not _carries_endpoints("Produce", version, PRODUCE_NODE_ENDPOINT_VERSIONS):
        return None
    r = Reader(body)
    by_topic_id = version >= 13
    for _ in range(array_count(r, True, "responses")):
        if by_topic_id:
            r.skip(16, "topic_id")
        else:
            skip_string(r, True)  # name
        for _ in range(array_count(r, True, "partition_responses")):
            # index, error_code, base_offset, log_append_time_ms, log_start_offset
            r.skip(30, "partition response")
            for _ in range(array_count(r, True, "record_errors")):
                r.skip(4, "batch_index")
                skip_string(r, True)  # batch_index_error_message
                r.skip_tagged_fields()
            skip_string(r, True)  # error_message
            r.skip_tagged_fields()  # current_leader is tag 0 here
        r.skip_tagged_fields()
    r.skip(4, "throttle_time_ms")
    return rewrite_tagged_endpoints(body, r, mapper)


def rewrite_fetch_response(body: Buffer, version: int, mapper: AddressMapper) -> bytes | None:
    """Rewrite the tagged ``node_endpoints`` of a Fetch v16+ response."""
    if not _carries_endpoints("Fetch", version, FETCH_NODE_ENDPOINT_VERSIONS):
        return None
    r = Reader(body)
    r.skip(10, "throttle_time_ms, error_code, session_id")
    for _ in range(array_count(r, True, "responses")):
        r.skip(16, "topic_id")
        _skip_fetch_partitions(r, array_count(r, True, "partitions"))
        r.skip_tagged_fields()
    return rewrite_tagged_endpoints(body, r, mapper)


def _skip_fetch_partitions(r: Reader, count: int) -> None:
    """Skip ``count`` Fetch v12+ partitions.

    The hot loop of every Fetch v16+ response: offsets live in locals and the
    common one-byte varints / empty tag sections are read inline (measured
    ~0.3 us per partition, against ~0.9 us through :class:`Reader`).
    """
    buf, pos, end = r.buf, r.pos, r.end
    for _ in range(count):
        # partition_index, error_code, high_watermark, last_stable_offset, log_start_offset
        pos += 30
        if pos < end and buf[pos] <= 1:  # no aborted transactions (null or empty)
            pos += 1
        else:
            aborted, pos = uvarint_at(buf, pos, end)
            for _ in range(aborted - 1):
                pos = skip_tags_at(buf, pos + 16, end)  # producer_id, first_offset, tags
        size, pos = uvarint_at(buf, pos + 4, end)  # preferred_read_replica, records length
        if size > 1:
            pos += size - 1
        # tags: diverging_epoch, current_leader, snapshot_id
        if pos < end and buf[pos] == 0:
            pos += 1
        else:
            pos = skip_tags_at(buf, pos, end)
    check_within(pos, end, "fetch partitions")
    r.pos = pos


def rewrite_share_fetch_response(body: Buffer, version: int, mapper: AddressMapper) -> bytes | None:
    """Rewrite the regular ``node_endpoints`` array of a ShareFetch response."""
    if not _carries_endpoints("ShareFetch", version, SHARE_VERSIONS):
        return None
    r = Reader(body)
    r.skip(6, "throttle_time_ms, error_code")
    skip_string(r, True)  # error_message
    r.skip(4, "acquisition_lock_timeout_ms")
    for _ in range(array_count(r, True, "responses")):
        r.skip(16, "topic_id")
        for _ in range(array_count(r, True, "partitions")):
            r.skip(6, "partition_index, error_code")
            skip_string(r, True)  # error_message
            r.skip(2, "acknowledge_error_code")
            skip_string(r, True)  # acknowledge_error_message
            _skip_leader_id_and_epoch(r)
            r.skip_flex_bytes(True)  # records
            for _ in range(array_count(r, True, "acquired_records")):
                r.skip(18, "acquired records")  # first_offset, last_offset, delivery_count
                r.skip_tagged_fields()
            r.skip_tagged_fields()
        r.skip_tagged_fields()
    return _rewrite_regular_endpoints(body, r, mapper)


def rewrite_share_acknowledge_response(
    body: Buffer, version: int, mapper: AddressMapper
) -> bytes | None:
    """Rewrite the regular ``node_endpoints`` array of a ShareAcknowledge response."""
    if not _carries_endpoints("ShareAcknowledge", version, SHARE_VERSIONS):
        return None
    r = Reader(body)
    r.skip(6, "throttle_time_ms, error_code")
    skip_string(r, True)  # error_message
    if version >= 2:
        r.skip(4, "acquisition_lock_timeout_ms")
    for _ in range(array_count(r, True, "responses")):
        r.skip(16, "topic_id")
        for _ in range(array_count(r, True, "partitions")):
            r.skip(6, "partition_index, error_code")
            skip_string(r, True)  # error_message
            _skip_leader_id_and_epoch(r)
            r.skip_tagged_fields()
        r.skip_tagged_fields()
    return _rewrite_regular_endpoints(body, r, mapper)


def _skip_leader_id_and_epoch(r: Reader) -> None:
    r.skip(8, "current_leader")
    r.skip_tagged_fields()


def _rewrite_regular_endpoints(body: Buffer, r: Reader, mapper: AddressMapper) -> bytes | None:
    splice = Splice(body)
    count = rewrite_node_array(r, splice, mapper, True, what="node_endpoints")
    r.skip_tagged_fields()
    return splice.result() if count else None


def rewrite_tagged_endpoints(body: Buffer, r: Reader, mapper: AddressMapper) -> bytes | None:
    """Rewrite tag 0 of the top-level tagged section at the cursor, if present.

    The tag's size prefix is re-encoded (host names change length); the bytes
    before and after it, including other tags, are kept verbatim.
    """
    found = _find_tag(r, _NODE_ENDPOINTS_TAG)
    if found is None:
        return None
    size_at, start, end = found
    inner = Reader(body, start, end)
    inner_splice = Splice(body, start)
    count = rewrite_node_array(inner, inner_splice, mapper, True, what="node_endpoints")
    if inner.pos != end:
        raise CodecError(
            f"node_endpoints tagged field has {end - inner.pos} bytes after its array "
            f"at offset {inner.pos}"
        )
    if not count:
        return None
    payload = inner_splice.result(end)
    splice = Splice(body)
    splice.replace(size_at, end, enc_uvarint(len(payload)) + payload)
    return splice.result()


def _find_tag(r: Reader, wanted: int) -> tuple[int, int, int] | None:
    """Scan a tagged-field section; ``(size_offset, start, end)`` of tag ``wanted``."""
    found = None
    for _ in range(r.uvarint()):
        tag = r.uvarint()
        size_at = r.pos
        size = r.uvarint()
        start = r.pos
        r.skip(size, "tagged field")
        if tag == wanted:
            found = (size_at, start, r.pos)
    return found
