"""Position-based helpers for the few loops that run once per partition.

:class:`~codec.primitives.Reader` costs a method call and a bounds check per
field, about 1 us per Fetch/Produce partition. The per-partition loops of the
Fetch, Produce and Metadata walkers instead keep the offset in a local variable,
read compact lengths and empty tagged sections through the one-byte fast paths
below (by far the common case), and check bounds where a read happens and once
at the end. They raise the same :class:`~codec.primitives.CodecError`.
"""

from __future__ import annotations

from codec.primitives import Buffer, CodecError, Reader


def uvarint_at(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """``(value, next_pos)`` of the unsigned varint at ``pos``."""
    if pos >= end:
        raise CodecError(f"truncated varint at offset {pos} (end {end})")
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    value, shift = byte & 0x7F, 7
    pos += 1
    while pos < end and shift <= 63:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise CodecError(f"truncated or over-long varint before offset {pos} (end {end})")


def skip_tags_at(buf: Buffer, pos: int, end: int) -> int:
    """Offset after the tagged-field section at ``pos``."""
    if pos >= end:
        raise CodecError(f"truncated tagged fields at offset {pos} (end {end})")
    if buf[pos] == 0:
        return pos + 1
    r = Reader(buf, pos, end)
    r.skip_tagged_fields()
    return r.pos


def check_within(pos: int, end: int, what: str) -> None:
    if pos > end:
        raise CodecError(f"truncated {what}: needs {pos - end} more bytes (end {end})")
