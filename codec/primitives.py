"""Kafka protocol primitive types: a cursor-style reader and encoders.

Hand-written rather than kio's entity readers because the gateway's hot path
(headers, Produce/Fetch scans, address splicing) must read single fields in
place without materialising whole messages. Everything here works on ``bytes``
or ``memoryview`` and never copies record data.

Reference: https://kafka.apache.org/protocol#protocol_types
"""

from __future__ import annotations

import struct
import uuid
from typing import Final

_INT8: Final = struct.Struct(">b")
_INT16: Final = struct.Struct(">h")
_INT32: Final = struct.Struct(">i")
_INT64: Final = struct.Struct(">q")
_UINT32: Final = struct.Struct(">I")

Buffer = bytes | bytearray | memoryview


class CodecError(ValueError):
    """A Kafka message could not be decoded: says what was wrong and at which byte offset."""


class Reader:
    """Reads Kafka primitive types from a buffer, advancing ``pos``.

    Every read checks bounds and raises :class:`CodecError` naming the field and
    the offset, so a malformed frame is reported precisely rather than as an
    ``IndexError`` deep inside ``struct``.
    """

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: Buffer, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise CodecError(
                f"truncated {what}: need {n} bytes at offset {self.pos}, have {self.end - self.pos}"
            )

    def int8(self) -> int:
        self._need(1, "int8")
        (v,) = _INT8.unpack_from(self.buf, self.pos)
        self.pos += 1
        return int(v)

    def boolean(self) -> bool:
        return self.int8() != 0

    def int16(self) -> int:
        self._need(2, "int16")
        (v,) = _INT16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(v)

    def int32(self) -> int:
        self._need(4, "int32")
        (v,) = _INT32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def uint32(self) -> int:
        self._need(4, "uint32")
        (v,) = _UINT32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def int64(self) -> int:
        self._need(8, "int64")
        (v,) = _INT64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(v)

    def uuid(self) -> uuid.UUID:
        self._need(16, "uuid")
        value = uuid.UUID(bytes=bytes(self.buf[self.pos : self.pos + 16]))
        self.pos += 16
        return value

    def uvarint(self) -> int:
        """Unsigned LEB128 varint, as used for compact lengths and tag numbers."""
        result = 0
        shift = 0
        buf, pos, end = self.buf, self.pos, self.end
        while True:
            if pos >= end:
                raise CodecError(f"truncated varint at offset {self.pos}")
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                self.pos = pos
                return result
            shift += 7
            if shift > 63:
                raise CodecError(f"varint longer than 10 bytes at offset {self.pos}")

    def varint(self) -> int:
        """Zig-zag signed varint (record fields)."""
        raw = self.uvarint()
        return (raw >> 1) ^ -(raw & 1)

    def skip(self, n: int, what: str = "bytes") -> None:
        self._need(n, what)
        self.pos += n

    def _text(self, n: int, what: str) -> str:
        self._need(n, what)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"invalid UTF-8 in {what} at offset {self.pos - n}") from exc

    def string(self) -> str:
        n = self.int16()
        if n < 0:
            raise CodecError(f"null where a non-null string was expected at offset {self.pos - 2}")
        return self._text(n, "string")

    def nullable_string(self) -> str | None:
        n = self.int16()
        return None if n < 0 else self._text(n, "string")

    def compact_string(self) -> str:
        n = self.uvarint() - 1
        if n < 0:
            raise CodecError(f"null where a non-null compact string was expected at {self.pos}")
        return self._text(n, "compact string")

    def compact_nullable_string(self) -> str | None:
        n = self.uvarint() - 1
        return None if n < 0 else self._text(n, "compact string")

    def flex_string(self, flexible: bool) -> str:
        return self.compact_string() if flexible else self.string()

    def flex_nullable_string(self, flexible: bool) -> str | None:
        return self.compact_nullable_string() if flexible else self.nullable_string()

    def skip_flex_bytes(self, flexible: bool) -> None:
        """Skip BYTES/NULLABLE_BYTES/RECORDS (int32 or compact length)."""
        n = (self.uvarint() - 1) if flexible else self.int32()
        if n > 0:
            self.skip(n, "bytes")

    def array_length(self, flexible: bool) -> int:
        """Length of an ARRAY / COMPACT_ARRAY; -1 means null."""
        n = (self.uvarint() - 1) if flexible else self.int32()
        if n > self.end - self.pos:
            # Every element takes at least one byte: a larger count is corrupt, and
            # rejecting it here stops a 2**31 element loop on garbage input.
            raise CodecError(f"array length {n} exceeds the {self.end - self.pos} bytes left")
        return n

    def skip_tagged_fields(self) -> None:
        count = self.uvarint()
        for _ in range(count):
            self.uvarint()  # tag
            size = self.uvarint()
            self.skip(size, "tagged field")

    def tagged_fields(self) -> list[tuple[int, int, int]]:
        """Return ``(tag, start, end)`` for each tagged field, spans into ``buf``."""
        out: list[tuple[int, int, int]] = []
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            size = self.uvarint()
            start = self.pos
            self.skip(size, "tagged field")
            out.append((tag, start, self.pos))
        return out


# --- encoders ---------------------------------------------------------------


def enc_int8(v: int) -> bytes:
    return _INT8.pack(v)


def enc_int16(v: int) -> bytes:
    return _INT16.pack(v)


def enc_int32(v: int) -> bytes:
    return _INT32.pack(v)


def enc_int64(v: int) -> bytes:
    return _INT64.pack(v)


def enc_uvarint(v: int) -> bytes:
    if v < 0:
        raise ValueError(f"uvarint cannot encode negative {v}")
    if v < 0x80:
        return bytes((v,))
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def enc_string(v: str, flexible: bool) -> bytes:
    raw = v.encode("utf-8")
    if flexible:
        return enc_uvarint(len(raw) + 1) + raw
    return _INT16.pack(len(raw)) + raw


def enc_nullable_string(v: str | None, flexible: bool) -> bytes:
    if v is None:
        return b"\x00" if flexible else _INT16.pack(-1)
    return enc_string(v, flexible)


def enc_array_length(n: int, flexible: bool) -> bytes:
    """Length prefix of an ARRAY / COMPACT_ARRAY; ``-1`` encodes null."""
    return enc_uvarint(n + 1) if flexible else _INT32.pack(n)


EMPTY_TAGGED_FIELDS: Final = b"\x00"
