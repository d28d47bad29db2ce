"""Map the broker node ids in response bodies to the ids clients see (virtual node ids).

Node ids are INT32s, so mapping one never changes the body's length: each walk
below copies the body once into a ``bytearray`` and patches the node-id fields in
place, copying everything else (unknown tagged fields, record sets) unchanged.
It runs before the address rewrite (:mod:`codec.rewrite`), which then sees the
virtual ids. With the identity mapping the runtime never calls it.

Fields mapped, by API (``-1`` and other negative ids mean "no node" and stay):

* Metadata v0-13: ``brokers[].node_id``, ``controller_id`` (v1+), and per partition
  ``leader_id``, ``replica_nodes``, ``isr_nodes``, ``offline_replicas`` (v5+);
* FindCoordinator: ``node_id`` (v0-3), ``coordinators[].node_id`` (v4+);
* DescribeCluster v0-2: ``controller_id``, ``brokers[].node_id``;
* Produce v10-13: partition tag 0 ``current_leader.leader_id``, top-level tag 0
  ``node_endpoints[].node_id``;
* Fetch v11-18: ``preferred_read_replica`` (v11+), partition tag 1
  ``current_leader.leader_id`` (v12+), top-level tag 0 ``node_endpoints`` (v16+);
* ShareFetch / ShareAcknowledge v0-2: ``current_leader.leader_id``,
  ``node_endpoints[].node_id``.

Malformed input raises :class:`~codec.primitives.CodecError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Final

from codec.endpoints import array_count, skip_string, skip_tags
from codec.primitives import Buffer, CodecError, Reader
from codec.scan import check_within, skip_tags_at, uvarint_at

#: ``upstream node id -> virtual node id``; only called for ids >= 0.
NodeIdMapper = Callable[[int], int]

PRODUCE_KEY: Final = 0
FETCH_KEY: Final = 1
METADATA_KEY: Final = 3
FIND_COORDINATOR_KEY: Final = 10
DESCRIBE_CLUSTER_KEY: Final = 60
SHARE_FETCH_KEY: Final = 78
SHARE_ACKNOWLEDGE_KEY: Final = 79

_INT32: Final = struct.Struct(">i")


class _Patcher:
    """A Reader over the original body plus the copy whose node ids are replaced."""

    __slots__ = ("_packed", "lists", "map_id", "out", "r")

    def __init__(self, body: Buffer, map_id: NodeIdMapper) -> None:
        self.r = Reader(body)
        self.out = bytearray(body)
        self.map_id = map_id
        #: Mapped ids by upstream id, packed: a cluster has few nodes, named many times.
        self._packed: dict[int, bytes] = {}
        #: Mapped replica lists by their upstream bytes: partitions share a few orders.
        self.lists: dict[bytes, bytes] = {}

    def packed(self, node: int) -> bytes:
        """The mapped id of ``node`` (>= 0) as INT32 bytes."""
        found = self._packed.get(node)
        if found is None:
            found = self._packed[node] = _INT32.pack(self.map_id(node))
        return found

    def node_id(self) -> None:
        """Map the INT32 node id at the cursor."""
        at = self.r.pos
        node = self.r.int32()
        if node >= 0:
            self.out[at : at + 4] = self.packed(node)

    def node_list(self, flexible: bool, what: str) -> None:
        """Map an array of INT32 node ids (replicas, ISR...)."""
        count = array_count(self.r, flexible, what)
        if count * 4 > self.r.remaining():
            raise CodecError(f"{what}: {count} node ids claimed, {self.r.remaining()} bytes left")
        for _ in range(count):
            self.node_id()

    def endpoints(self, flexible: bool, *, has_rack: bool = True, fixed_tail: int = 0) -> None:
        """Map ``node_id`` in an array of ``node_id, host, port[, rack][, tail][, tags]``."""
        r = self.r
        for _ in range(array_count(r, flexible, "brokers")):
            self.node_id()
            skip_string(r, flexible)  # host
            r.skip(4, "port")
            if has_rack:
                skip_string(r, flexible)
            if fixed_tail:
                r.skip(fixed_tail, "broker")
            skip_tags(r, flexible)

    def tags(self, handlers: Mapping[int, Callable[[int], None]]) -> None:
        """Walk a tagged-field section; ``handlers[tag](end)`` maps a known tag's payload."""
        r = self.r
        for _ in range(r.uvarint()):
            tag = r.uvarint()
            size = r.uvarint()
            start = r.pos
            r.skip(size, "tagged field")
            handler = handlers.get(tag)
            if handler is not None:
                r.pos = start
                handler(start + size)
                if r.pos > start + size:
                    raise CodecError(f"tagged field {tag} overruns its {size} bytes")
                r.pos = start + size

    def leader_tag(self, end: int) -> None:
        """``LeaderIdAndEpoch`` (leader_id, leader_epoch, tags) as a tagged field."""
        self.node_id()

    def endpoints_tag(self, end: int) -> None:
        self.endpoints(True)


def _metadata(p: _Patcher, version: int) -> None:
    r, flexible = p.r, version >= 9
    if version >= 3:
        r.skip(4, "throttle_time_ms")
    p.endpoints(flexible, has_rack=version >= 1)
    if version >= 2:
        skip_string(r, flexible)  # cluster_id
    if version >= 1:
        p.node_id()  # controller_id
    for _ in range(array_count(r, flexible, "topics")):
        r.skip(2, "topic error_code")
        skip_string(r, flexible)  # name
        if version >= 10:
            r.skip(16, "topic_id")
        if version >= 1:
            r.skip(1, "is_internal")
        _metadata_partitions(p, version, flexible)
        if version >= 8:
            r.skip(4, "topic_authorized_operations")
        skip_tags(r, flexible)
    # The trailer (cluster_authorized_operations, error_code, tags) holds no node id.


def _metadata_partitions(p: _Patcher, version: int, flexible: bool) -> None:
    """Map a topic's partitions: leader, replicas, ISR, offline replicas.

    The hot loop of a Metadata response (every partition of every topic): offsets
    live in locals, node lists are read as one ``struct`` run, and mapped ids come
    from the patcher's caches (a cluster has few nodes, and partitions share a few
    replica orders).
    """
    r = p.r
    count = array_count(r, flexible, "partitions")
    after_leader = 8 if version >= 7 else 4  # leader_id[, leader_epoch]
    node_lists = range(3 if version >= 5 else 2)  # replicas, isr[, offline_replicas]
    buf, out, pos, end = r.buf, p.out, r.pos, r.end
    packed, unpack_int32 = p.packed, _INT32.unpack_from
    lists = p.lists
    try:
        for _ in range(count):
            pos += 6  # error_code, partition_index
            (leader,) = unpack_int32(buf, pos)
            if leader >= 0:
                out[pos : pos + 4] = packed(leader)
            pos += after_leader
            for _ in node_lists:
                if flexible:
                    size = buf[pos]
                    if size < 0x80:
                        pos += 1
                    else:
                        size, pos = uvarint_at(buf, pos, end)
                    size -= 1
                else:
                    (size,) = unpack_int32(buf, pos)
                    pos += 4
                if size < 0 or pos + 4 * size > end:
                    raise CodecError(f"bad replica list of {size} at offset {pos} (end {end})")
                if size:
                    stop = pos + 4 * size
                    raw = bytes(buf[pos:stop])
                    mapped = lists.get(raw)
                    if mapped is None:
                        mapped = lists[raw] = _map_run(raw, size, packed)
                    out[pos:stop] = mapped
                    pos = stop
            if flexible:
                if pos < end and buf[pos] == 0:
                    pos += 1
                else:
                    pos = skip_tags_at(buf, pos, end)
    except (IndexError, struct.error) as exc:
        raise CodecError(f"truncated partitions at offset {pos} (end {end})") from exc
    check_within(pos, end, "partitions")
    r.pos = pos


def _map_run(raw: bytes, size: int, packed: Callable[[int], bytes]) -> bytes:
    """``size`` INT32 node ids, each mapped (negative ones kept)."""
    ids = struct.unpack(f">{size}i", raw)
    return b"".join([packed(n) if n >= 0 else _INT32.pack(n) for n in ids])


def _find_coordinator(p: _Patcher, version: int) -> None:
    r, flexible = p.r, version >= 3
    if version >= 1:
        r.skip(4, "throttle_time_ms")
    if version <= 3:
        r.skip(2, "error_code")
        if version >= 1:
            skip_string(r, flexible)  # error_message
        p.node_id()
        return
    for _ in range(array_count(r, True, "coordinators")):
        skip_string(r, True)  # key
        p.node_id()
        skip_string(r, True)  # host
        r.skip(6, "port, error_code")
        skip_string(r, True)  # error_message
        r.skip_tagged_fields()


def _describe_cluster(p: _Patcher, version: int) -> None:
    r = p.r
    r.skip(6, "throttle_time_ms, error_code")
    skip_string(r, True)  # error_message
    if version >= 1:
        r.skip(1, "endpoint_type")
    skip_string(r, True)  # cluster_id
    p.node_id()  # controller_id
    p.endpoints(True, fixed_tail=1 if version >= 2 else 0)


def _produce(p: _Patcher, version: int) -> None:
    if version < 10:
        return  # no node ids before KIP-951
    r = p.r
    leader = {0: p.leader_tag}
    for _ in range(array_count(r, True, "responses")):
        if version >= 13:
            r.skip(16, "topic_id")
        else:
            skip_string(r, True)  # name
        for _ in range(array_count(r, True, "partition_responses")):
            r.skip(30, "partition response")
            for _ in range(array_count(r, True, "record_errors")):
                r.skip(4, "batch_index")
                skip_string(r, True)
                r.skip_tagged_fields()
            skip_string(r, True)  # error_message
            p.tags(leader)  # current_leader is tag 0
        r.skip_tagged_fields()
    r.skip(4, "throttle_time_ms")
    p.tags({0: p.endpoints_tag})


def _fetch(p: _Patcher, version: int) -> None:
    if version < 11:
        return  # no node ids before preferred_read_replica (KIP-392)
    r, flexible = p.r, version >= 12
    leader = {1: p.leader_tag}
    r.skip(10, "throttle_time_ms, error_code, session_id")
    for _ in range(array_count(r, flexible, "responses")):
        if version >= 13:
            r.skip(16, "topic_id")
        else:
            skip_string(r, flexible)  # topic
        for _ in range(array_count(r, flexible, "partitions")):
            r.skip(30, "partition header")
            aborted = r.array_length(flexible)  # nullable
            for _ in range(max(aborted, 0)):
                r.skip(16, "aborted transaction")
                skip_tags(r, flexible)
            p.node_id()  # preferred_read_replica
            r.skip_flex_bytes(flexible)  # records
            if flexible:
                p.tags(leader)  # current_leader is tag 1
        skip_tags(r, flexible)
    if flexible:
        p.tags({0: p.endpoints_tag} if version >= 16 else {})


def _share_partitions(p: _Patcher, fetch: bool) -> None:
    r = p.r
    for _ in range(array_count(r, True, "responses")):
        r.skip(16, "topic_id")
        for _ in range(array_count(r, True, "partitions")):
            r.skip(6, "partition_index, error_code")
            skip_string(r, True)  # error_message
            if fetch:
                r.skip(2, "acknowledge_error_code")
                skip_string(r, True)  # acknowledge_error_message
            p.node_id()  # current_leader.leader_id
            r.skip(4, "leader_epoch")
            r.skip_tagged_fields()
            if fetch:
                r.skip_flex_bytes(True)  # records
                for _ in range(array_count(r, True, "acquired_records")):
                    r.skip(18, "acquired records")
                    r.skip_tagged_fields()
            r.skip_tagged_fields()
        r.skip_tagged_fields()
    p.endpoints(True)


def _share_fetch(p: _Patcher, version: int) -> None:
    r = p.r
    r.skip(6, "throttle_time_ms, error_code")
    skip_string(r, True)  # error_message
    r.skip(4, "acquisition_lock_timeout_ms")
    _share_partitions(p, fetch=True)


def _share_acknowledge(p: _Patcher, version: int) -> None:
    r = p.r
    r.skip(6, "throttle_time_ms, error_code")
    skip_string(r, True)  # error_message
    if version >= 2:
        r.skip(4, "acquisition_lock_timeout_ms")
    _share_partitions(p, fetch=False)


_WALKS: Final[dict[int, tuple[Callable[[_Patcher, int], None], int, int]]] = {
    # api key: (walk, first version with node ids, last version whose layout is known)
    PRODUCE_KEY: (_produce, 10, 13),
    FETCH_KEY: (_fetch, 11, 18),
    METADATA_KEY: (_metadata, 0, 13),
    FIND_COORDINATOR_KEY: (_find_coordinator, 0, 6),
    DESCRIBE_CLUSTER_KEY: (_describe_cluster, 0, 2),
    SHARE_FETCH_KEY: (_share_fetch, 0, 2),
    SHARE_ACKNOWLEDGE_KEY: (_share_acknowledge, 0, 2),
}


def carries_node_ids(api_key: int, api_version: int) -> bool:
    """Whether responses of this API version name nodes (and must be buffered to map them)."""
    walk = _WALKS.get(api_key)
    return walk is not None and api_version >= walk[1]


def map_response_node_ids(
    api_key: int, api_version: int, body: Buffer, map_id: NodeIdMapper
) -> bytearray | None:
    """A copy of response ``body`` with every node id mapped; None if it names none."""
    walk = _WALKS.get(api_key)
    if walk is None or api_version < walk[1]:
        return None
    if api_version > walk[2]:
        raise CodecError(
            f"API {api_key} response v{api_version} is newer than the known v{walk[2]}"
        )
    patcher = _Patcher(body, map_id)
    walk[0](patcher, api_version)
    return patcher.out
