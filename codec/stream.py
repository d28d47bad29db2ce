"""Cut-through framing: forward a frame's bytes as they arrive, buffer only what must be read.

:class:`codec.framing.FrameDecoder` hands out whole frames, so a proxy built on it
stores every frame completely before forwarding it: a 6 MiB Fetch response then
costs a full extra transfer time of latency, and each frame is copied twice. Here
the caller decides per frame, from its first bytes (the head), whether to

* ``FORWARD`` it: its bytes are handed back as slices of the received chunks, the
  size prefix included, as soon as they arrive (no copy when a chunk is forwarded
  whole);
* ``BUFFER`` it: it is collected into one buffer of the exact size and handed back
  whole once complete, for the few frames the gateway must decode or rewrite;
* ``DROP`` it: its bytes are consumed and nothing is handed back (the gateway
  answers it itself);
* ``WATCH`` or ``PATCH_HEAD`` it: forward it as it arrives, but with its tail
  (a :class:`Watcher`) or its head (replacement bytes) rewritten in place.

Sans-I/O like the rest of ``codec``: bytes in, pieces out.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from codec.framing import DEFAULT_MAX_FRAME_BYTES, check_frame_size
from codec.primitives import Buffer

_SIZE: Final = struct.Struct(">i")

#: Bytes of a frame (after its size prefix) that the head decision may look at: enough
#: for a request header with a client id and a Produce request's acks.
DEFAULT_HEAD_BYTES: Final = 512


class Decision(enum.Enum):
    FORWARD = "forward"
    BUFFER = "buffer"
    DROP = "drop"
    #: Forward as it arrives, except a tail the context (a :class:`Watcher`) rewrites.
    WATCH = "watch"
    #: Forward as it arrives, but with the head replaced by the context (``bytes`` of the
    #: same length): a field at the very start of a streamed frame can be changed.
    PATCH_HEAD = "patch_head"


class Watcher(Protocol):
    """Follows a streamed frame and rewrites its tail without changing its size."""

    #: Bytes of the frame (after the size prefix) known to come before the tail.
    safe: int

    def feed(self, data: memoryview) -> None: ...

    def finish(self, tail: Buffer) -> bytes: ...


@dataclass(slots=True)
class BufferedFrame:
    """A complete frame (without its size prefix), and what the head decision attached."""

    frame: bytes | bytearray
    context: Any


#: ``decide(head, frame_size) -> (decision, context, insert)``: head is the frame's first
#: ``min(size, head_bytes)`` bytes; ``insert`` (or None) is emitted just before the frame,
#: which lets a proxy slot its own answers in between forwarded ones.
Decider = Callable[[memoryview, int], tuple[Decision, Any, bytes | None]]
Piece = memoryview | bytes | BufferedFrame


class FrameStream:
    """Splits a byte stream into frames and routes each by the caller's decision."""

    __slots__ = (
        "_buffer",
        "_buffer_context",
        "_buffer_filled",
        "_head",
        "_head_bytes",
        "_held",
        "_mode",
        "_remaining",
        "_watch_forwarded",
        "_watcher",
        "max_frame_bytes",
        "pause_after_frame",
        "unconsumed",
    )

    def __init__(
        self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, head_bytes: int = DEFAULT_HEAD_BYTES
    ) -> None:
        if max_frame_bytes <= 0:
            raise ValueError(f"max_frame_bytes must be positive, got {max_frame_bytes}")
        #: Checked as each size prefix arrives; may be changed between frames (a proxy
        #: allows less before the client has authenticated).
        self.max_frame_bytes = max_frame_bytes
        self._head_bytes = head_bytes
        #: Bytes of the next frame's prefix and head received so far (between frames).
        self._head = bytearray()
        #: In the middle of a frame: its decision and how many body bytes are still to come.
        self._mode: Decision | None = None
        self._remaining = 0
        self._buffer = bytearray()
        self._buffer_filled = 0
        self._buffer_context: Any = None
        self._watcher: Watcher | None = None
        self._held = bytearray()
        self._watch_forwarded = 0
        #: Set (typically by a decision) to stop at the end of the current frame: ``feed``
        #: then returns early and leaves the rest of the chunk in :attr:`unconsumed`, for
        #: the caller to feed again later (a throttled client's pipelined requests wait).
        self.pause_after_frame = False
        self.unconsumed: bytes = b""

    @property
    def in_frame(self) -> bool:
        """True while part of a frame has been received but not all of it."""
        return self._mode is not None or bool(self._head)

    def feed(self, chunk: Buffer, decide: Decider) -> list[Piece]:
        """Consume ``chunk``; return the pieces to forward, in order.

        Raises :class:`codec.framing.FrameError` for a negative or oversized frame size.
        """
        view = memoryview(chunk)
        pieces: list[Piece] = []
        pos, end = 0, len(view)
        forward_from = -1  # start of a run of bytes of ``chunk`` to forward unchanged
        while pos < end:
            if self.pause_after_frame and self._mode is None and not self._head:
                self.pause_after_frame = False
                self.unconsumed = bytes(view[pos:])
                end = pos
                break
            if self._mode is None:
                if self._head or end - pos < 4:
                    # A prefix or head split across chunks: collect it separately.
                    if forward_from >= 0:
                        pieces.append(view[forward_from:pos])
                        forward_from = -1
                    pos = self._collect_head(view, pos, pieces, decide)
                    continue
                (size,) = _SIZE.unpack_from(view, pos)
                check_frame_size(size, self.max_frame_bytes)
                head_end = pos + 4 + min(size, self._head_bytes)
                if head_end > end:
                    if forward_from >= 0:
                        pieces.append(view[forward_from:pos])
                        forward_from = -1
                    pos = self._collect_head(view, pos, pieces, decide)
                    continue
                decision, context, insert = decide(view[pos + 4 : head_end], size)
                if decision is Decision.PATCH_HEAD:
                    if forward_from >= 0:
                        pieces.append(view[forward_from:pos])
                        forward_from = -1
                    if insert is not None:
                        pieces.append(insert)
                    pieces += (view[pos : pos + 4], _same_size(context, head_end - pos - 4))
                    self._start_patched(size, head_end - pos - 4)
                    pos = head_end
                    continue
                if insert is not None or decision is not Decision.FORWARD:
                    if forward_from >= 0:
                        pieces.append(view[forward_from:pos])
                        forward_from = -1
                    if insert is not None:
                        pieces.append(insert)
                if decision is Decision.FORWARD and forward_from < 0:
                    forward_from = pos
                elif decision is Decision.WATCH:
                    pieces.append(view[pos : pos + 4])
                self._start_frame(decision, context, size)
                pos += 4
            taken = min(self._remaining, end - pos)
            if self._mode is Decision.FORWARD:
                if forward_from < 0:
                    forward_from = pos
            elif self._mode is Decision.BUFFER:
                self._buffer[self._buffer_filled : self._buffer_filled + taken] = view[
                    pos : pos + taken
                ]
                self._buffer_filled += taken
            elif self._mode is Decision.WATCH:
                self._watch(view[pos : pos + taken], pieces)
            pos += taken
            self._remaining -= taken
            if self._remaining == 0:
                self._finish_frame(pieces)
        if forward_from >= 0:
            if forward_from == 0 and end == len(view) and isinstance(chunk, bytes):
                pieces.append(chunk)  # the whole chunk: no copy, no slice
            else:
                pieces.append(view[forward_from:end])
        return pieces

    def _collect_head(
        self, view: memoryview, pos: int, pieces: list[Piece], decide: Decider
    ) -> int:
        """Gather a prefix and head that arrive in pieces; decide once it is all here."""
        head = self._head
        if len(head) < 4:
            need = 4 - len(head)
            head += view[pos : pos + need]
            pos += min(need, len(view) - pos)
            if len(head) < 4:
                return pos
            check_frame_size(_SIZE.unpack_from(head, 0)[0], self.max_frame_bytes)
        (size,) = _SIZE.unpack_from(head, 0)
        wanted = 4 + min(size, self._head_bytes)
        need = wanted - len(head)
        head += view[pos : pos + need]
        pos += min(need, len(view) - pos)
        if len(head) < wanted:
            return pos
        decision, context, insert = decide(memoryview(head)[4:], size)
        if insert is not None:
            pieces.append(insert)
        self._head = bytearray()
        if decision is Decision.PATCH_HEAD:
            pieces.append(bytes(head[:4]) + _same_size(context, len(head) - 4))
            self._start_patched(size, len(head) - 4)
            return pos
        self._start_frame(decision, context, size)
        body_part = memoryview(head)[4:]
        if decision is Decision.FORWARD:
            pieces.append(bytes(head))
        elif decision is Decision.WATCH:
            pieces.append(bytes(head[:4]))
            self._watch(memoryview(bytes(body_part)), pieces)
        elif decision is Decision.BUFFER:
            self._buffer[: len(body_part)] = body_part
            self._buffer_filled = len(body_part)
        self._remaining -= len(body_part)
        if self._remaining == 0:
            self._finish_frame(pieces)
        return pos

    def _start_frame(self, decision: Decision, context: Any, size: int) -> None:
        self._mode = decision
        self._remaining = size
        if decision is Decision.BUFFER:
            self._buffer = bytearray(size)
            self._buffer_filled = 0
            self._buffer_context = context
        elif decision is Decision.WATCH:
            self._watcher = context
            self._held = bytearray()
            self._watch_forwarded = 0

    def _start_patched(self, size: int, head_size: int) -> None:
        """The head went out replaced; the rest of the frame is forwarded as it comes."""
        self._mode = Decision.FORWARD if size > head_size else None
        self._remaining = size - head_size

    def _watch(self, part: memoryview, pieces: list[Piece]) -> None:
        """Forward what the watcher knows precedes the tail; hold back the rest."""
        assert self._watcher is not None
        self._watcher.feed(part)
        forwardable = self._watcher.safe - self._watch_forwarded
        held = self._held
        if forwardable >= len(held):
            if held:
                pieces.append(bytes(held))
            cut = forwardable - len(held)
            if cut:
                pieces.append(part[:cut])
            self._held = bytearray(part[cut:])
        else:
            if forwardable:
                pieces.append(bytes(held[:forwardable]))
            self._held = held[forwardable:] + part
        self._watch_forwarded += forwardable

    def _finish_frame(self, pieces: list[Piece]) -> None:
        if self._mode is Decision.WATCH:
            assert self._watcher is not None
            tail = self._watcher.finish(self._held)
            if len(tail) != len(self._held):
                raise AssertionError("a watcher changed the size of a streamed frame")
            pieces.append(tail)
            self._watcher, self._held = None, bytearray()
        elif self._mode is Decision.BUFFER:
            pieces.append(BufferedFrame(self._buffer, self._buffer_context))
            self._buffer = bytearray()
            self._buffer_context = None
        self._mode = None


def _same_size(replacement: Any, size: int) -> bytes:
    if not isinstance(replacement, bytes | bytearray) or len(replacement) != size:
        raise AssertionError("a PATCH_HEAD decision must supply a head of the same size")
    return bytes(replacement)
