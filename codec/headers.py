"""Request and response headers, and which header version each API version uses.

Parsing a request header is on every request's path, so it reads the three
fixed fields with one ``struct`` call and the client id without decoding more
than needed. Header versions follow Kafka's rule: flexible API versions use
request header v2 and response header v1, except that ApiVersions responses
always use header v0 (clients must be able to parse them before negotiating).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from codec.api_table import API_TABLE
from codec.primitives import Buffer, CodecError, Reader

_FIXED: Final = struct.Struct(">hhi")
_INT32: Final = struct.Struct(">i")
_INT16: Final = struct.Struct(">h")

API_VERSIONS_KEY: Final = 18
CONTROLLED_SHUTDOWN_KEY: Final = 7


def is_flexible(api_key: int, api_version: int) -> bool:
    entry = API_TABLE.get(api_key)
    if entry is None:
        return False
    first_flexible = entry[3]
    return first_flexible is not None and api_version >= first_flexible


def request_header_version(api_key: int, api_version: int) -> int:
    if api_key == CONTROLLED_SHUTDOWN_KEY and api_version == 0:
        return 0
    return 2 if is_flexible(api_key, api_version) else 1


def response_header_version(api_key: int, api_version: int) -> int:
    if api_key == API_VERSIONS_KEY:
        return 0
    return 1 if is_flexible(api_key, api_version) else 0


class RequestHeader(NamedTuple):
    """A parsed request header (a named tuple: made for every request, at tuple speed)."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    #: Offset of the request body within the frame.
    body_offset: int


def parse_request_header(frame: Buffer) -> RequestHeader:
    """Parse a request header (v1 or v2; v0 is only ControlledShutdown v0).

    For an API key the gateway does not know, the header is read as v1 and no
    tagged fields are assumed: such a frame is only forwarded, never decoded.
    """
    size = len(frame)
    if size < 8:
        raise CodecError(f"request header needs 8 bytes, frame has {size}")
    api_key, api_version, correlation_id = _FIXED.unpack_from(frame, 0)
    version = request_header_version(api_key, api_version)
    if version == 0:
        return RequestHeader(api_key, api_version, correlation_id, None, 8)
    # client_id stays a classic nullable string even in v2. Read inline (this runs for
    # every request), with the checks and messages of Reader.nullable_string.
    if size < 10:
        raise CodecError(f"truncated int16: need 2 bytes at offset 8, have {size - 8}")
    (length,) = _INT16.unpack_from(frame, 8)
    client_id: str | None = None
    pos = 10
    if length >= 0:
        pos += length
        if pos > size:
            raise CodecError(
                f"truncated string: need {length} bytes at offset 10, have {size - 10}"
            )
        try:
            client_id = str(frame[10:pos], "utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError("invalid UTF-8 in string at offset 10") from exc
    if version == 2:
        if pos < size and frame[pos] == 0:  # no tagged fields: the usual case
            pos += 1
        else:
            reader = Reader(frame, pos)
            reader.skip_tagged_fields()
            pos = reader.pos
    return RequestHeader(api_key, api_version, correlation_id, client_id, pos)


def peek_api(frame: Buffer) -> tuple[int, int, int]:
    """``(api_key, api_version, correlation_id)`` without parsing the client id."""
    if len(frame) < 8:
        raise CodecError(f"request header needs 8 bytes, frame has {len(frame)}")
    key, version, correlation_id = _FIXED.unpack_from(frame, 0)
    return int(key), int(version), int(correlation_id)


def response_correlation_id(frame: Buffer) -> int:
    if len(frame) < 4:
        raise CodecError(f"response header needs 4 bytes, frame has {len(frame)}")
    (correlation_id,) = _INT32.unpack_from(frame, 0)
    return int(correlation_id)


def response_body_offset(frame: Buffer, api_key: int, api_version: int) -> int:
    """Offset of the response body: after the correlation id, and tagged fields in v1."""
    if response_header_version(api_key, api_version) == 0:
        return 4
    reader = Reader(frame, 4)
    reader.skip_tagged_fields()
    return reader.pos


def encode_request_header(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None
) -> bytes:
    head = _FIXED.pack(api_key, api_version, correlation_id)
    if client_id is None:
        cid = b"\xff\xff"
    else:
        raw = client_id.encode("utf-8")
        cid = struct.pack(">h", len(raw)) + raw
    tail = b"\x00" if request_header_version(api_key, api_version) == 2 else b""
    return head + cid + tail


def encode_response_header(correlation_id: int, api_key: int, api_version: int) -> bytes:
    head = _INT32.pack(correlation_id)
    return head + b"\x00" if response_header_version(api_key, api_version) == 1 else head
