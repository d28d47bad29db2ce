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

The same walk, given a :class:`FetchInspector`, shows an authorization check
each topic before its records go out, for every Fetch version (v4-18): see
:mod:`policies.authorization.fetch_sessions`.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Generator
from typing import Final, Protocol

from codec.endpoints import AddressMapper
from codec.node_endpoints import FETCH_NODE_ENDPOINT_VERSIONS, rewrite_tagged_endpoints
from codec.primitives import Buffer, CodecError, Reader, enc_uvarint

#: Tag given to padding and to blanked-out endpoints: unknown to Kafka for Fetch
#: responses (only tag 0 is defined), and a one-byte varint like tag 0.
FILLER_TAG: Final = 127

#: Oldest Fetch version the walk knows (Kafka 4 brokers answer v4+).
MIN_STREAMED_FETCH: Final = 4
_INT16: Final = struct.Struct(">h")
_INT32: Final = struct.Struct(">i")
_ERROR_AND_SESSION: Final = struct.Struct(">hi")
#: Kafka's limit is 249; anything much longer is a malformed response.
_MAX_TOPIC_NAME_BYTES: Final = 32767

#: A walk step asking to see the rest of the chunk at hand (sent back in, never empty);
#: the walker then skips what it read there.
PEEK: Final = 1 << 62
#: A walk step: n > 0 reads n bytes (sent back in), n < 0 skips -n bytes, 0 = tail here,
#: PEEK shows the bytes at hand.
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


def _int32() -> Generator[int, memoryview | None, int]:
    data = yield 4
    assert data is not None
    return int(_INT32.unpack_from(data)[0])


def _length(flexible: bool) -> Generator[int, memoryview | None, int]:
    """A (nullable) array or bytes length: compact (v12+) or int32; -1 means null."""
    if flexible:
        return (yield from _uvarint()) - 1
    return (yield from _int32())


def _topic_key(version: int, inspector: FetchInspector | None) -> _Walk:
    """A topic's id (v13+) or name; shown to ``inspector`` before any of its partitions."""
    if version >= 13:
        if inspector is None:
            yield -16
            return
        data = yield 16
        assert data is not None
        inspector.topic(uuid.UUID(bytes=bytes(data)))
        return
    if version >= 12:
        length = (yield from _uvarint()) - 1
    else:
        data = yield 2
        assert data is not None
        length = int(_INT16.unpack_from(data)[0])
    if length > _MAX_TOPIC_NAME_BYTES:
        raise CodecError(f"topic name of {length} bytes in Fetch response")
    if inspector is None:
        if length > 0:
            yield -length
        return
    name = b""
    if length > 0:
        data = yield length
        assert data is not None
        name = bytes(data)
    inspector.topic(name.decode("utf-8", "replace"))


def _walk_fetch(version: int, inspector: FetchInspector | None = None) -> _Walk:
    """The layout of a Fetch v4+ response frame, after its size prefix."""
    flexible = version >= 12
    yield -4  # correlation id
    if flexible:
        yield from _skip_tags()  # response header v1
    if version < 7:
        yield -4  # throttle_time_ms
    elif inspector is None:
        yield -10  # throttle_time_ms, error_code, session_id
    else:
        head = yield 10
        assert head is not None
        error_code, session_id = _ERROR_AND_SESSION.unpack_from(head, 4)
        inspector.session(error_code, session_id)
    layout = _PartitionLayout(version)
    for _ in range((yield from _length(flexible))):
        yield from _topic_key(version, inspector)
        remaining = yield from _length(flexible)
        while remaining > 0:
            # Whole partition headers in the bytes at hand are read in place (the usual
            # case: the records of small partitions, and the header of a large one);
            # the generator steps below take over where a header is cut by the chunk.
            window = yield PEEK
            assert window is not None
            done, used, records_left = layout.skip(window, remaining)
            remaining -= done
            skip = used + max(records_left, 0)
            if skip:
                yield -skip
            if records_left >= 0:  # a header read, its records (and tags) go on after
                if flexible:
                    yield from _skip_tags()
                remaining -= 1
            elif not done:  # a header cut by the end of the chunk
                yield from _partition(version, flexible, layout.fixed)
                remaining -= 1
        if flexible:
            yield from _skip_tags()
    yield 0  # the tail: top-level tagged fields (v12+), or nothing


def _partition(version: int, flexible: bool, fixed: int) -> _Walk:
    """One partition entry, a field at a time."""
    yield -fixed
    for _ in range((yield from _length(flexible))):  # aborted transactions (nullable)
        yield -16
        if flexible:
            yield from _skip_tags()
    if version >= 11:
        yield -4  # preferred_read_replica
    records = yield from _length(flexible)
    if records > 0:
        yield -records
    if flexible:
        yield from _skip_tags()


class _PartitionLayout:
    """Reads whole partition entries of one Fetch version in place, in a chunk at hand."""

    __slots__ = ("fixed", "flexible", "preferred")

    def __init__(self, version: int) -> None:
        #: index, error, high watermark, LSO, log start offset (v5+)
        self.fixed = 30 if version >= 5 else 22
        self.preferred = 4 if version >= 11 else 0
        self.flexible = version >= 12

    def skip(self, window: memoryview, count: int) -> tuple[int, int, int]:
        """``(entries done, bytes used, records left)`` for up to ``count`` entries.

        Stops before an entry whose header (up to its records) is not all in
        ``window``, or that has aborted transactions or tagged fields: those are left
        to the generator steps (records left -1). When an entry's header is in the
        window but its records or its tags go on after it, ``bytes used`` ends at its
        records and ``records left`` is their length (that entry is not counted done).
        """
        fixed, preferred, flexible = self.fixed, self.preferred, self.flexible
        end = len(window)
        pos = done = 0
        while done < count:
            at = pos + fixed
            if flexible:
                if at >= end or window[at] > 1:  # cut, or aborted transactions present
                    break
                at += 1 + preferred
                if at >= end:
                    break
                length = window[at]
                if length < 0x80:
                    at += 1
                else:
                    length, at = _window_uvarint(window, at, end)
                    if at < 0:
                        break
                records = length - 1
            else:
                if at + 4 > end or _INT32.unpack_from(window, at)[0] > 0:
                    break
                at += 4 + preferred
                if at + 4 > end:
                    break
                records = _INT32.unpack_from(window, at)[0]
                at += 4
            after = at + max(records, 0)
            if flexible:
                if after < end:
                    if window[after] != 0:  # tagged fields: the generator steps read them
                        break
                    pos, done = after + 1, done + 1
                    continue
            elif after <= end:
                pos, done = after, done + 1
                continue
            return done, at, after - at  # records (or the tags after them) go on after
        return done, pos, -1


def _window_uvarint(window: memoryview, pos: int, end: int) -> tuple[int, int]:
    """``(value, next pos)`` of a varint of at most 5 bytes; next pos -1 if cut or longer."""
    value = shift = 0
    while pos < end and shift < 35:
        byte = window[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return 0, -1


class FetchInspector(Protocol):
    """Sees the fields of a streamed Fetch response that a policy decides on.

    Both are called before any byte that follows the field is released to the
    client; raising stops the frame (the caller must then close the connection,
    since the frame's size is already on its way).
    """

    def session(self, error_code: int, session_id: int) -> None: ...

    def topic(self, key: str | uuid.UUID) -> None: ...


class FetchTailWatcher:
    """Follows a Fetch v4+ response frame byte by byte; rewrites its tagged tail (v16+).

    With an ``inspector`` it also reports the session fields and each topic as
    they pass (before that topic's partitions are released), which lets an
    authorization check stream any Fetch version.
    """

    __slots__ = ("_carry", "_endpoints", "_mapper", "_walk", "_want", "done", "hidden", "safe")

    def __init__(
        self, version: int, mapper: AddressMapper, inspector: FetchInspector | None = None
    ) -> None:
        first, last = FETCH_NODE_ENDPOINT_VERSIONS
        if not MIN_STREAMED_FETCH <= version <= last:
            raise CodecError(f"Fetch v{version} cannot be streamed (v{MIN_STREAMED_FETCH}-{last})")
        self._mapper = mapper
        self._endpoints = version >= first
        self._walk = _walk_fetch(version, inspector)
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
            if want == PEEK:  # the walker reads what it can in place
                self._want = self._walk.send(data[pos:])
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
        if not self._endpoints:
            return bytes(tail)  # no node_endpoints before v16
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
