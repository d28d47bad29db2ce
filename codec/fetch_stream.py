"""Stream a Fetch v16+ response through while still rewriting its ``node_endpoints``.

KIP-951 put ``node_endpoints`` in the top-level tagged fields, which come after the
record sets, so a gateway that buffered each Fetch response to rewrite them would
add a full transfer time of latency to every fetch (measured: consume throughput
fell to 0.5-0.8x of direct). Instead :class:`FetchTailWatcher` walks the response
as it streams past, skipping record sets by length, and tells
:class:`codec.stream.FrameStream` how many bytes are known to come before the tail.
Only the tail, a few dozen bytes, is held back and rewritten.

The frame size is already on its way to the client by then, so the tail must keep
its size: the rewritten ``node_endpoints`` is padded with an unknown tagged field
when it is shorter, and when it would be longer, the field is blanked into an
unknown tag instead. Clients skip unknown tags and look the new leader's node id
up in their metadata, which (port per broker) already names the gateway.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Final

from codec.endpoints import AddressMapper
from codec.node_endpoints import FETCH_NODE_ENDPOINT_VERSIONS, rewrite_tagged_endpoints
from codec.primitives import Buffer, CodecError, Reader, enc_uvarint

#: Tag given to padding and to blanked-out endpoints: unknown to Kafka for Fetch
#: responses (only tag 0 is defined), and a one-byte varint like tag 0.
FILLER_TAG: Final = 127

#: A walk step: n > 0 reads n bytes (sent back in), n < 0 skips -n bytes, 0 = tail here.
_Walk = Generator[int, memoryview | None, None]


def _uvarint() -> Generator[int, memoryview | None, int]:
    result, shift = 0, 0
    while True:
        data = yield 1
        assert data is not None
        byte = data[0]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
        shift += 7
        if shift > 35:
            raise CodecError("varint longer than 5 bytes in Fetch response")


def _skip_tags() -> Generator[int, memoryview | None, None]:
    for _ in range((yield from _uvarint())):
        yield from _uvarint()  # tag
        size = yield from _uvarint()
        if size:
            yield -size


def _walk_fetch(version: int) -> _Walk:
    """The layout of a Fetch v12+ response frame, after its size prefix."""
    yield -4  # correlation id
    yield from _skip_tags()  # response header v1
    yield -10  # throttle_time_ms, error_code, session_id
    for _ in range((yield from _uvarint()) - 1):
        if version >= 13:
            yield -16  # topic_id
        else:
            name_length = (yield from _uvarint()) - 1
            if name_length > 0:
                yield -name_length
        for _ in range((yield from _uvarint()) - 1):
            yield -30  # index, error_code, high_watermark, last_stable_offset, log_start_offset
            for _ in range((yield from _uvarint()) - 1):  # aborted transactions
                yield -16
                yield from _skip_tags()
            yield -4  # preferred_read_replica
            records = (yield from _uvarint()) - 1
            if records > 0:
                yield -records
            yield from _skip_tags()
        yield from _skip_tags()
    yield 0


class FetchTailWatcher:
    """Follows a Fetch v16+ response frame byte by byte; rewrites its tagged tail."""

    __slots__ = ("_carry", "_mapper", "_walk", "_want", "done", "hidden", "safe")

    def __init__(self, version: int, mapper: AddressMapper) -> None:
        first, last = FETCH_NODE_ENDPOINT_VERSIONS
        if not first <= version <= last:
            raise CodecError(f"Fetch v{version} has no streamable node_endpoints (v{first}-{last})")
        self._mapper = mapper
        self._walk = _walk_fetch(version)
        self._want = next(self._walk)
        self._carry = bytearray()
        #: Bytes of the frame known to come before the tail.
        self.safe = 0
        self.done = False
        #: Set when node_endpoints had to be blanked rather than rewritten.
        self.hidden = False

    def feed(self, data: memoryview) -> None:
        """Walk the next bytes of the frame (after its size prefix)."""
        pos, end = 0, len(data)
        while self._want and pos < end:
            want = self._want
            if want < 0:
                taken = min(-want, end - pos)
                pos += taken
                self.safe += taken
                self._want = want + taken or self._walk.send(None)
                continue
            if self._carry or end - pos < want:
                taken = min(want - len(self._carry), end - pos)
                self._carry += data[pos : pos + taken]
                pos += taken
                if len(self._carry) < want:
                    return
                value = memoryview(bytes(self._carry))
                self._carry.clear()
            else:
                value = data[pos : pos + want]
                pos += want
            self.safe += want
            self._want = self._walk.send(value)
        if not self._want:
            self.done = True

    def finish(self, tail: Buffer) -> bytes:
        """The tail (top-level tagged fields) rewritten to exactly its own size."""
        if not self.done:
            raise CodecError("Fetch response ended before its tagged fields")
        return same_size_tagged_section(bytes(tail), self._mapper, self)


def same_size_tagged_section(
    tail: bytes, mapper: AddressMapper, watcher: FetchTailWatcher | None = None
) -> bytes:
    rewritten = rewrite_tagged_endpoints(tail, Reader(tail), mapper)
    if rewritten is None or len(rewritten) == len(tail):
        return tail if rewritten is None else rewritten
    padded = _pad(rewritten, len(tail) - len(rewritten))
    if padded is not None:
        return padded
    if watcher is not None:
        watcher.hidden = True
    return _blank_node_endpoints(tail)


def _pad(section: bytes, extra: int) -> bytes | None:
    """Append a filler tagged field so the section grows by ``extra`` bytes, if possible."""
    r = Reader(section)
    count = r.uvarint()
    body = section[r.pos :]
    new_count = enc_uvarint(count + 1)
    extra -= len(new_count) - r.pos  # the count itself may grow
    size = extra - 2
    while size >= 0 and 1 + len(enc_uvarint(size)) + size != extra:
        size -= 1
    if size < 0:
        return None  # e.g. 1 byte: no tagged field is that small
    return new_count + body + enc_uvarint(FILLER_TAG) + enc_uvarint(size) + bytes(size)


def _blank_node_endpoints(section: bytes) -> bytes:
    """Turn tag 0 into a zero-filled filler tag of the same size."""
    out = bytearray(section)
    r = Reader(section)
    for _ in range(r.uvarint()):
        tag_at = r.pos
        tag = r.uvarint()
        size = r.uvarint()
        start = r.pos
        r.skip(size, "tagged field")
        if tag == 0:
            out[tag_at] = FILLER_TAG
            out[start : r.pos] = bytes(size)
    return bytes(out)
