"""Node id mapping in response bodies (codec.node_ids), checked against kio.

Messages are built with kio, their node ids mapped by the hand-written walk,
then decoded with kio again: every node-id field must hold the mapped id, every
other field must be unchanged, and mapping back must give the original bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_codec_strategies import (
    SETTINGS,
    TRUNCATION_SETTINGS,
    decode,
    describe_cluster_responses,
    encode,
    entity,
    fetch_responses,
    find_coordinator_responses,
    kio_module,
    metadata_responses,
    produce_responses,
    share_acknowledge_responses,
    share_fetch_responses,
    small_tuples,
)

from codec.node_ids import carries_node_ids, map_response_node_ids
from codec.primitives import CodecError

PRODUCE, FETCH, METADATA, FIND_COORDINATOR, DESCRIBE_CLUSTER = 0, 1, 3, 10, 60
SHARE_FETCH, SHARE_ACKNOWLEDGE = 78, 79
_SPACE = 2**31

#: kio field names that hold one node id / a list of node ids.
ID_FIELDS = {
    "node_id",
    "broker_id",
    "leader_id",
    "controller_id",
    "preferred_read_replica",
}
ID_LIST_FIELDS = {"replica_nodes", "isr_nodes", "offline_replicas"}


def forward(node: int) -> int:
    """A bijection on 0..2^31-1 that moves every id (like an offset, wrapping)."""
    return (node + 100) % _SPACE


def back(node: int) -> int:
    return (node - 100) % _SPACE


def expected(obj: Any, mapper: Any = forward) -> Any:
    """``obj`` with every node-id field mapped (negative ids mean "none" and stay)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if field.name in ID_FIELDS and isinstance(value, int):
            changes[field.name] = mapper(value) if value >= 0 else value
        elif field.name in ID_LIST_FIELDS and value is not None:
            changes[field.name] = tuple(mapper(v) if v >= 0 else v for v in value)
        elif isinstance(value, tuple):
            changes[field.name] = tuple(expected(v, mapper) for v in value)
        elif dataclasses.is_dataclass(value):
            changes[field.name] = expected(value, mapper)
    return dataclasses.replace(obj, **changes)


def old_fetch_responses(version: int) -> st.SearchStrategy[Any]:
    """Fetch v11-15: no ``node_endpoints`` yet."""
    m = kio_module("fetch", version)
    aborted = st.none() | small_tuples(entity(m.AbortedTransaction))
    partition = entity(m.PartitionData, aborted_transactions=aborted)
    topic = entity(m.FetchableTopicResponse, partitions=small_tuples(partition))
    return entity(m.FetchResponse, responses=small_tuples(topic))


CASES = [
    *[(METADATA, v, metadata_responses) for v in range(14)],
    *[(FIND_COORDINATOR, v, find_coordinator_responses) for v in range(7)],
    *[(DESCRIBE_CLUSTER, v, describe_cluster_responses) for v in range(3)],
    *[(PRODUCE, v, produce_responses) for v in range(10, 14)],
    *[(FETCH, v, old_fetch_responses) for v in range(11, 16)],
    *[(FETCH, v, fetch_responses) for v in range(16, 19)],
    *[(SHARE_FETCH, v, share_fetch_responses) for v in range(1, 3)],
    *[(SHARE_ACKNOWLEDGE, v, share_acknowledge_responses) for v in range(1, 3)],
]


@pytest.mark.parametrize(("api_key", "version", "strategy"), CASES)
@SETTINGS
@given(data=st.data())
def test_every_node_id_is_mapped_and_back_is_the_original(
    api_key: int, version: int, strategy: Any, data: Any
) -> None:
    message = data.draw(strategy(version))
    body = encode(message)
    out = map_response_node_ids(api_key, version, body, forward)
    assert out is not None and len(out) == len(body)
    assert decode(type(message), bytes(out)) == expected(message)
    again = map_response_node_ids(api_key, version, bytes(out), back)
    assert again == body


@pytest.mark.parametrize(("api_key", "version", "strategy"), CASES)
@TRUNCATION_SETTINGS
@given(data=st.data())
def test_truncated_bodies_raise(api_key: int, version: int, strategy: Any, data: Any) -> None:
    body = encode(data.draw(strategy(version)))
    cut = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    # A cut inside the unmapped trailer may still parse; anything else is a CodecError.
    with contextlib.suppress(CodecError):
        map_response_node_ids(api_key, version, body[:cut], forward)


@pytest.mark.parametrize(("api_key", "version"), [c[:2] for c in CASES])
@SETTINGS
@given(garbage=st.binary(max_size=120))
def test_garbage_raises_only_codec_error(api_key: int, version: int, garbage: bytes) -> None:
    with contextlib.suppress(CodecError):
        map_response_node_ids(api_key, version, garbage, forward)


def test_a_huge_replica_count_is_refused_before_reading() -> None:
    # Metadata v1: no brokers, controller -1, one topic with one partition claiming 2^30 replicas.
    body = (
        b"\x00\x00\x00\x00"  # brokers: 0
        b"\xff\xff\xff\xff"  # controller_id
        b"\x00\x00\x00\x01"  # topics: 1
        b"\x00\x00" + b"\x00\x01t" + b"\x00"  # error, name, is_internal
        b"\x00\x00\x00\x01"  # partitions: 1
        b"\x00\x00\x00\x00\x00\x00" + b"\x00\x00\x00\x01"  # error, index, leader
        b"\x40\x00\x00\x00"  # replica_nodes: 2^30
    )
    with pytest.raises(CodecError, match=r"exceeds|claimed|bad replica list"):
        map_response_node_ids(METADATA, 1, body, forward)


@pytest.mark.parametrize(
    ("api_key", "version", "carries"),
    [
        (PRODUCE, 9, False),
        (PRODUCE, 10, True),
        (FETCH, 10, False),
        (FETCH, 11, True),
        (METADATA, 0, True),
        (18, 3, False),
        (SHARE_FETCH, 0, True),
    ],
)
def test_carries_node_ids(api_key: int, version: int, carries: bool) -> None:
    assert carries_node_ids(api_key, version) is carries
    if not carries:
        assert map_response_node_ids(api_key, version, b"", forward) is None


def test_newer_versions_are_refused() -> None:
    with pytest.raises(CodecError, match="newer"):
        map_response_node_ids(METADATA, 14, b"", forward)
