"""Rewrite every broker address a client can see in a response body.

A client must only ever learn gateway addresses; if one upstream address leaks
it connects straight to a broker it may not be able to reach (or that bypasses
the gateway's policies). Addresses appear in:

* Metadata brokers (:mod:`codec.metadata`);
* FindCoordinator: v0-3 one coordinator, v4+ a ``coordinators`` array;
* DescribeCluster brokers;
* KIP-951 ``node_endpoints`` in Produce v10+, Fetch v16+, ShareFetch and
  ShareAcknowledge responses (:mod:`codec.node_endpoints`).

All rewriters are hand-written splices: they replace only host/port bytes and
copy everything else (unknown tagged fields included) from the original body.
Malformed input raises :class:`~codec.primitives.CodecError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from codec.endpoints import (
    AddressMapper,
    Splice,
    array_count,
    rewrite_endpoint,
    rewrite_node_array,
    skip_string,
    skip_tags,
)
from codec.metadata import METADATA_KEY, rewrite_metadata_response
from codec.node_endpoints import (
    FETCH_KEY,
    FETCH_NODE_ENDPOINT_VERSIONS,
    PRODUCE_KEY,
    PRODUCE_NODE_ENDPOINT_VERSIONS,
    SHARE_ACKNOWLEDGE_KEY,
    SHARE_FETCH_KEY,
    rewrite_fetch_response,
    rewrite_produce_response,
    rewrite_share_acknowledge_response,
    rewrite_share_fetch_response,
)
from codec.primitives import Buffer, CodecError, Reader

__all__ = [
    "AddressMapper",
    "carries_addresses",
    "rewrite_describe_cluster_response",
    "rewrite_find_coordinator_response",
    "rewrite_response",
]

FIND_COORDINATOR_KEY: Final = 10
DESCRIBE_CLUSTER_KEY: Final = 60

Rewriter = Callable[[Buffer, int, AddressMapper], bytes | None]


def rewrite_find_coordinator_response(body: Buffer, version: int, mapper: AddressMapper) -> bytes:
    """FindCoordinator v0-6. "No coordinator" entries (node -1, empty host) stay as they are."""
    if not 0 <= version <= 6:
        raise CodecError(f"FindCoordinator response v{version} is not supported (0-6)")
    flexible = version >= 3
    r = Reader(body)
    splice = Splice(body)
    if version >= 1:
        r.skip(4, "throttle_time_ms")
    if version <= 3:
        r.skip(2, "error_code")
        if version >= 1:
            skip_string(r, flexible)  # error_message
        rewrite_endpoint(r, splice, mapper, flexible, skip_absent=True)
    else:
        for _ in range(array_count(r, flexible, "coordinators")):
            skip_string(r, flexible)  # key
            rewrite_endpoint(r, splice, mapper, flexible, skip_absent=True)
            r.skip(2, "error_code")
            skip_string(r, flexible)  # error_message
            r.skip_tagged_fields()
    skip_tags(r, flexible)
    return splice.result()


def rewrite_describe_cluster_response(body: Buffer, version: int, mapper: AddressMapper) -> bytes:
    """DescribeCluster v0-2 (always flexible; v1 adds endpoint_type, v2 is_fenced per broker).

    With ``endpoint_type`` 2 the array lists controllers; they are mapped too, so
    no upstream address ever reaches the client.
    """
    if not 0 <= version <= 2:
        raise CodecError(f"DescribeCluster response v{version} is not supported (0-2)")
    r = Reader(body)
    splice = Splice(body)
    r.skip(6, "throttle_time_ms, error_code")
    skip_string(r, True)  # error_message
    if version >= 1:
        r.skip(1, "endpoint_type")
    skip_string(r, True)  # cluster_id
    r.skip(4, "controller_id")
    rewrite_node_array(r, splice, mapper, True, fixed_tail=1 if version >= 2 else 0)
    r.skip(4, "cluster_authorized_operations")
    r.skip_tagged_fields()
    return splice.result()


_REWRITERS: Final[dict[int, Rewriter]] = {
    PRODUCE_KEY: rewrite_produce_response,
    FETCH_KEY: rewrite_fetch_response,
    METADATA_KEY: rewrite_metadata_response,
    FIND_COORDINATOR_KEY: rewrite_find_coordinator_response,
    DESCRIBE_CLUSTER_KEY: rewrite_describe_cluster_response,
    SHARE_FETCH_KEY: rewrite_share_fetch_response,
    SHARE_ACKNOWLEDGE_KEY: rewrite_share_acknowledge_response,
}

#: First version of each API whose responses can carry broker addresses.
_FIRST_ADDRESS_VERSION: Final[dict[int, int]] = {
    PRODUCE_KEY: PRODUCE_NODE_ENDPOINT_VERSIONS[0],
    FETCH_KEY: FETCH_NODE_ENDPOINT_VERSIONS[0],
    METADATA_KEY: 0,
    FIND_COORDINATOR_KEY: 0,
    DESCRIBE_CLUSTER_KEY: 0,
    SHARE_FETCH_KEY: 0,
    SHARE_ACKNOWLEDGE_KEY: 0,
}


def carries_addresses(api_key: int, api_version: int) -> bool:
    """Cheap check the runtime can make before locating the response body."""
    first = _FIRST_ADDRESS_VERSION.get(api_key)
    return first is not None and api_version >= first


def rewrite_response(
    api_key: int, api_version: int, body: Buffer, mapper: AddressMapper
) -> bytes | None:
    """Return ``body`` with every broker address mapped, or ``None`` if it names none.

    ``body`` is the response body (after the response header). ``None`` means
    "forward the original bytes": the API/version carries no addresses, or
    this response happens to list no node endpoints.
    """
    rewriter = _REWRITERS.get(api_key)
    if rewriter is None:
        return None
    return rewriter(body, api_version, mapper)
