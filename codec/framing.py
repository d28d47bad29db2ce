"""Kafka's size-delimited framing (int32 big-endian length, then that many bytes).

A pure, sans-I/O splitter in the style of h11: the runtime feeds it whatever the
socket returned and takes whole frames out. Size limits are checked as soon as
the four length bytes arrive, so an oversized frame is refused before a single
byte of its body is buffered.
"""

from __future__ import annotations

import struct
from typing import Final

from codec.primitives import Buffer

_SIZE: Final = struct.Struct(">i")

#: Kafka's own default for ``socket.request.max.bytes``.
DEFAULT_MAX_FRAME_BYTES: Final = 100 * 1024 * 1024


class FrameError(ValueError):
    """The byte stream is not valid Kafka framing; the connection must be closed."""


def check_frame_size(size: int, max_frame_bytes: int) -> None:
    """Raise :class:`FrameError` for a negative size or one above ``max_frame_bytes``."""
    if size < 0:
        raise FrameError(f"negative frame size {size}")
    if size > max_frame_bytes:
        raise FrameError(f"frame size {size} exceeds the maximum of {max_frame_bytes} bytes")


class FrameDecoder:
    """Splits a byte stream into frames (the bytes after each size prefix)."""

    __slots__ = ("_buf", "_max_frame_bytes", "_start")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes <= 0:
            raise ValueError(f"max_frame_bytes must be positive, got {max_frame_bytes}")
        self._max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._start = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf) - self._start

    def feed(self, data: Buffer) -> None:
        if self._start:
            # Compact lazily: dropping consumed bytes once per feed keeps the
            # buffer small without a memmove per frame.
            del self._buf[: self._start]
            self._start = 0
        self._buf += data

    def next_frame(self) -> bytes | None:
        """Return the next complete frame, or ``None`` if more bytes are needed.

        Raises :class:`FrameError` for a negative or oversized length prefix.
        """
        buf, start = self._buf, self._start
        if len(buf) - start < 4:
            return None
        (size,) = _SIZE.unpack_from(buf, start)
        check_frame_size(size, self._max_frame_bytes)
        end = start + 4 + size
        if len(buf) < end:
            return None
        frame = bytes(buf[start + 4 : end])
        self._start = end
        return frame


def size_prefix(length: int) -> bytes:
    return _SIZE.pack(length)


def encode_frame(*parts: Buffer) -> bytes:
    """Join ``parts`` into one size-prefixed frame."""
    body = b"".join(parts)
    return _SIZE.pack(len(body)) + body
