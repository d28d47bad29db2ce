"""Where a response carries ``throttle_time_ms``, so the gateway can report its own quota delays.

KIP-219: a throttled client is told how long it is throttled in the response
itself, and then not served for that long. When the gateway throttles (its own
quotas) it must put its delay into the response the broker sent, keeping the
larger of the two. Almost every response has ``throttle_time_ms`` as the first
field of its body (known from kio's schemas, computed once per version); Produce
has it after its ``responses`` array, so that one is found by walking the body
(record errors and all, but Produce responses carry no records and are small).
"""

from __future__ import annotations

import dataclasses
import struct
from functools import cache
from typing import Final

from codec.endpoints import array_count, skip_string
from codec.primitives import Buffer, CodecError, Reader

__all__ = ["patch_throttle_time", "throttle_first_in_body", "throttle_offset"]

PRODUCE_KEY: Final = 0
_INT32: Final = struct.Struct(">i")
#: throttle_time_ms is an int32 count of milliseconds; Kafka never sends more than this.
MAX_THROTTLE_MS: Final = 2**31 - 1


@cache
def throttle_first_in_body(api_key: int, api_version: int) -> bool:
    """Whether this response version starts its body with ``throttle_time_ms``."""
    if api_key == PRODUCE_KEY:
        return False
    try:
        from kio.index import load_response_schema

        cls = load_response_schema(api_key, api_version)
    except Exception:  # an API or version kio does not know: treat as having none
        return False
    fields = dataclasses.fields(cls)
    return bool(fields) and fields[0].name == "throttle_time"


def throttle_offset(body: Buffer, api_key: int, api_version: int) -> int | None:
    """Offset of ``throttle_time_ms`` within a response body, or None if it has none."""
    if throttle_first_in_body(api_key, api_version):
        return 0 if len(body) >= 4 else None
    if api_key == PRODUCE_KEY and api_version >= 1:
        return _produce_throttle_offset(body, api_version)
    return None


def patch_throttle_time(
    frame: bytearray, body_offset: int, api_key: int, api_version: int, throttle_ms: int
) -> bool:
    """Raise the response's ``throttle_time_ms`` to at least ``throttle_ms``, in place.

    Returns False when this response has no such field (nothing changed).
    """
    offset = throttle_offset(memoryview(frame)[body_offset:], api_key, api_version)
    if offset is None:
        return False
    at = body_offset + offset
    (current,) = _INT32.unpack_from(frame, at)
    if throttle_ms > current:
        _INT32.pack_into(frame, at, min(throttle_ms, MAX_THROTTLE_MS))
    return True


def _produce_throttle_offset(body: Buffer, version: int) -> int:
    flexible = version >= 9
    r = Reader(body)
    for _ in range(array_count(r, flexible, "responses")):
        if version >= 13:
            r.skip(16, "topic_id")
        else:
            skip_string(r, flexible)
        for _ in range(array_count(r, flexible, "partition_responses")):
            _skip_produce_partition(r, version, flexible)
        if flexible:
            r.skip_tagged_fields()
    if r.remaining() < 4:
        raise CodecError(f"Produce v{version} response ends before throttle_time_ms")
    return r.pos


def _skip_produce_partition(r: Reader, version: int, flexible: bool) -> None:
    # index, error_code, base_offset; log_append_time_ms (v2+); log_start_offset (v5+)
    r.skip(14 + (8 if version >= 2 else 0) + (8 if version >= 5 else 0), "partition response")
    if version >= 8:
        for _ in range(array_count(r, flexible, "record_errors")):
            r.skip(4, "batch_index")
            skip_string(r, flexible)  # batch_index_error_message (nullable)
            if flexible:
                r.skip_tagged_fields()
        skip_string(r, flexible)  # error_message (nullable)
    if flexible:
        r.skip_tagged_fields()
