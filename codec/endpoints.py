"""Shared machinery for rewriting broker addresses inside response bodies.

Every response that names brokers (Metadata, FindCoordinator, DescribeCluster,
KIP-951 ``node_endpoints``) is rewritten the same way: walk the body with a
:class:`~codec.primitives.Reader`, and for each ``(node_id, host, port)`` ask an
:data:`AddressMapper` what the client must see. Only the host/port bytes are
replaced; everything else is copied verbatim as slices of the original buffer
(:class:`Splice`), so unknown tagged fields survive and record data is never
re-encoded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from codec.primitives import Buffer, CodecError, Reader, enc_string

AddressMapper = Callable[[int, str, int], tuple[str, int]]
"""``(node_id, upstream_host, upstream_port) -> (host, port)`` the client must see.

The runtime also uses the call to learn each broker's upstream address.
"""

_INT32: Final = struct.Struct(">i")


class Splice:
    """Builds a copy of ``buf`` with some byte ranges replaced, without copying twice.

    Replacements must be added in increasing offset order. The unchanged stretches
    are memoryview slices, so the only copy of the bulk of the body is the final
    ``bytes.join``.
    """

    __slots__ = ("_parts", "_pos", "_view")

    def __init__(self, buf: Buffer, start: int = 0) -> None:
        self._view = memoryview(buf)
        self._parts: list[Buffer] = []
        self._pos = start

    def replace(self, start: int, end: int, data: bytes) -> None:
        if start < self._pos:
            raise ValueError(f"replacement at {start} is before the cursor {self._pos}")
        self._parts.append(self._view[self._pos : start])
        self._parts.append(data)
        self._pos = end

    def result(self, end: int | None = None) -> bytes:
        """The spliced bytes from ``start`` up to ``end`` (default: end of buffer)."""
        return b"".join([*self._parts, self._view[self._pos : end]])


def array_count(r: Reader, flexible: bool, what: str) -> int:
    """Length of a non-nullable array; null is malformed (Kafka's own readers refuse it)."""
    at = r.pos
    n = r.array_length(flexible)
    if n < 0:
        raise CodecError(f"{what} array is null (length {n}) at offset {at}")
    return n


def skip_string(r: Reader, flexible: bool) -> None:
    """Skip a (nullable) STRING / COMPACT_STRING without decoding its UTF-8."""
    n = (r.uvarint() - 1) if flexible else r.int16()
    if n > 0:
        r.skip(n, "string")


def skip_tags(r: Reader, flexible: bool) -> None:
    if flexible:
        r.skip_tagged_fields()


def rewrite_endpoint(
    r: Reader,
    splice: Splice,
    mapper: AddressMapper,
    flexible: bool,
    *,
    skip_absent: bool = False,
) -> None:
    """Read ``node_id, host, port`` at the cursor and splice in the mapped host/port.

    ``skip_absent`` leaves "no node" entries (node id -1 or empty host, as in a
    FindCoordinator error) untouched: there is nothing a client could connect to.
    """
    node_id = r.int32()
    start = r.pos
    host = r.flex_string(flexible)
    port = r.int32()
    if skip_absent and (node_id < 0 or not host):
        return
    new_host, new_port = mapper(node_id, host, port)
    if new_host != host or new_port != port:
        splice.replace(start, r.pos, encode_host_port(new_host, new_port, flexible))


def encode_host_port(host: str, port: int, flexible: bool) -> bytes:
    if not -(2**31) <= port < 2**31:
        raise ValueError(f"mapped port {port} does not fit an int32")
    return enc_string(host, flexible) + _INT32.pack(port)


def rewrite_node_array(
    r: Reader,
    splice: Splice,
    mapper: AddressMapper,
    flexible: bool,
    *,
    has_rack: bool = True,
    fixed_tail: int = 0,
    what: str = "brokers",
) -> int:
    """Rewrite an array of ``node_id, host, port[, rack][, fixed_tail bytes][, tags]``.

    Covers Metadata brokers, DescribeCluster brokers (``fixed_tail=1`` for v2's
    ``is_fenced``) and KIP-951 node endpoints. Returns the number of entries.
    """
    count = array_count(r, flexible, what)
    for _ in range(count):
        rewrite_endpoint(r, splice, mapper, flexible)
        if has_rack:
            skip_string(r, flexible)
        if fixed_tail:
            r.skip(fixed_tail, what)
        skip_tags(r, flexible)
    return count
