"""Virtual node ids: the broker ids clients see, derived from the configuration alone.

A virtual cluster may show its clients other node ids than the upstream brokers'
(so that routing and failover can later put brokers of several clusters behind
one id space). The mapping is a pure function of the configuration, so gateway
replicas with the same file agree on ids, and on the ports derived from them,
without talking to each other.

The rule, for an upstream node id ``u >= 0``::

    virtual(u) = map[u]          if u is in the explicit map
               = u + offset      otherwise (also for brokers added later)

The configuration check guarantees that every explicit virtual id is below
``offset``, so the two branches never collide and :meth:`NodeIdMap.upstream`
is an exact inverse. Negative ids (``-1`` is Kafka's "no node", e.g. no
leader, no coordinator) are never mapped: they pass through both ways.

Identity (offset 0, no map) is the default, and the runtime skips every node id
rewrite for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

#: Largest value of a Kafka INT32 node id.
MAX_NODE_ID: Final = 2**31 - 1


class NodeIdOverflow(ValueError):
    """An upstream node id whose virtual id would not fit an INT32."""


class NodeIdMap:
    """Forward (upstream -> virtual) and back (virtual -> upstream) node id mapping.

    ``offset`` is in ``0..MAX_NODE_ID``; ``explicit`` maps upstream ids to distinct
    virtual ids below ``offset`` (checked here as well as by the config model, so a
    hand-built map cannot be ambiguous).
    """

    __slots__ = ("_back", "_forward", "is_identity", "offset")

    def __init__(self, offset: int = 0, explicit: Mapping[int, int] | None = None) -> None:
        explicit = dict(explicit or {})
        problem = explicit_map_problem(offset, explicit)
        if problem is not None:
            raise ValueError(problem)
        self.offset = offset
        self._forward = explicit
        self._back = {virtual: upstream for upstream, virtual in explicit.items()}
        #: True when every id maps to itself: callers skip the rewrite entirely.
        self.is_identity = offset == 0 and not explicit

    def virtual(self, upstream_id: int) -> int:
        """The id clients see for upstream node ``upstream_id`` (negative ids unchanged)."""
        if upstream_id < 0:
            return upstream_id
        mapped = self._forward.get(upstream_id)
        if mapped is not None:
            return mapped
        virtual = upstream_id + self.offset
        if virtual > MAX_NODE_ID:
            raise NodeIdOverflow(
                f"upstream node {upstream_id} + offset {self.offset} does not fit an INT32"
            )
        return virtual

    def upstream(self, virtual_id: int) -> int | None:
        """The upstream node behind ``virtual_id``; None if no upstream id maps to it.

        Negative ids are returned unchanged (they name no node).
        """
        if virtual_id < 0:
            return virtual_id
        mapped = self._back.get(virtual_id)
        if mapped is not None:
            return mapped
        upstream = virtual_id - self.offset
        if upstream < 0 or upstream in self._forward:
            return None  # below the offset but not in the map, or shadowed by the map
        return upstream

    def __repr__(self) -> str:
        return f"NodeIdMap(offset={self.offset}, explicit={self._forward})"


def explicit_map_problem(offset: int, explicit: Mapping[int, int]) -> str | None:
    """Why ``(offset, explicit)`` is not a valid mapping, or None if it is."""
    if not 0 <= offset <= MAX_NODE_ID:
        return f"offset {offset} is outside 0..{MAX_NODE_ID}"
    seen: dict[int, int] = {}
    for upstream, virtual in explicit.items():
        if not 0 <= upstream <= MAX_NODE_ID or not 0 <= virtual <= MAX_NODE_ID:
            return f"node ids must be in 0..{MAX_NODE_ID}: {upstream} -> {virtual}"
        if virtual in seen:
            return f"upstream nodes {seen[virtual]} and {upstream} both map to {virtual}"
        seen[virtual] = upstream
        if virtual >= offset:
            return (
                f"upstream node {upstream} maps to {virtual}, not below offset {offset}: "
                f"ids of brokers outside the map (upstream id + offset) could collide with it"
            )
    return None


#: The default: every node keeps its upstream id.
IDENTITY: Final = NodeIdMap()
