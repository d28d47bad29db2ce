"""Virtual node ids: the pure mapping (policies.node_ids) and its config section."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from policies.config import NodeIdsConfig
from policies.node_ids import IDENTITY, MAX_NODE_ID, NodeIdMap, NodeIdOverflow

node_ids = st.integers(min_value=0, max_value=MAX_NODE_ID)


@st.composite
def node_id_maps(draw: st.DrawFn) -> NodeIdMap:
    """Any valid mapping: an offset and explicit virtual ids below it."""
    offset = draw(st.integers(min_value=0, max_value=MAX_NODE_ID))
    if offset == 0:
        return NodeIdMap(0)
    virtual_ids = draw(
        st.lists(st.integers(min_value=0, max_value=offset - 1), unique=True, max_size=8)
    )
    upstream_ids = draw(st.lists(node_ids, unique=True, min_size=len(virtual_ids)))
    return NodeIdMap(offset, dict(zip(upstream_ids, virtual_ids, strict=False)))


@settings(max_examples=300, deadline=None)
@given(node_id_maps(), st.lists(node_ids, max_size=20))
def test_back_after_forward_is_identity(mapping: NodeIdMap, upstream_ids: list[int]) -> None:
    for upstream in upstream_ids:
        try:
            virtual = mapping.virtual(upstream)
        except NodeIdOverflow:
            assert upstream + mapping.offset > MAX_NODE_ID
            continue
        assert 0 <= virtual <= MAX_NODE_ID
        assert mapping.upstream(virtual) == upstream


@settings(max_examples=300, deadline=None)
@given(node_id_maps(), st.lists(node_ids, max_size=20))
def test_forward_after_back_is_identity(mapping: NodeIdMap, virtual_ids: list[int]) -> None:
    for virtual in virtual_ids:
        upstream = mapping.upstream(virtual)
        if upstream is not None:
            assert mapping.virtual(upstream) == virtual


@settings(max_examples=200, deadline=None)
@given(node_id_maps(), st.lists(st.integers(min_value=0, max_value=10_000), unique=True))
def test_distinct_upstream_ids_get_distinct_virtual_ids(
    mapping: NodeIdMap, upstream_ids: list[int]
) -> None:
    virtual = [mapping.virtual(u) for u in upstream_ids if u + mapping.offset <= MAX_NODE_ID]
    assert len(set(virtual)) == len(virtual)


def test_offset_maps_brokers_added_later_by_the_same_rule() -> None:
    mapping = NodeIdsConfig.model_validate({"offset": 100}).node_id_map()
    assert [mapping.virtual(u) for u in (1, 2, 3, 4)] == [101, 102, 103, 104]
    assert [mapping.upstream(v) for v in (101, 104, 99, 7)] == [1, 4, None, None]
    assert not mapping.is_identity


def test_negative_ids_mean_no_node_and_pass_through() -> None:
    mapping = NodeIdMap(100, {1: 7})
    assert mapping.virtual(-1) == -1 and mapping.upstream(-1) == -1


def test_explicit_map_with_offset_fallback() -> None:
    mapping = NodeIdsConfig.model_validate({"offset": 10, "map": {1: 2, 2: 1}}).node_id_map()
    assert (mapping.virtual(1), mapping.virtual(2), mapping.virtual(3)) == (2, 1, 13)
    assert (mapping.upstream(2), mapping.upstream(1), mapping.upstream(13)) == (1, 2, 3)
    # 11 would be upstream 1 + offset, but upstream 1 is shown as 2: nothing is behind 11.
    assert mapping.upstream(11) is None and mapping.upstream(5) is None


def test_identity_is_the_default_and_free() -> None:
    assert NodeIdsConfig().node_id_map().is_identity and IDENTITY.is_identity
    assert NodeIdsConfig.model_validate("identity") == NodeIdsConfig()
    assert IDENTITY.virtual(5) == 5 and IDENTITY.upstream(5) == 5


def test_overflow_is_a_typed_error() -> None:
    with pytest.raises(NodeIdOverflow):
        NodeIdMap(100).virtual(MAX_NODE_ID)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"offset": 10, "map": {1: 5, 2: 5}}, "both map to 5"),
        ({"offset": 3, "map": {1: 5}}, "not below offset 3"),
        ({"map": {1: 0}}, "not below offset 0"),
        ({"offset": -1}, "greater than or equal to 0"),
        ({"offset": 2**31}, "less than or equal to 2147483647"),
        ({"map": {-1: 0}, "offset": 5}, "greater than or equal to 0"),
        ({"offset": True}, "expected an integer"),
        ({"offset": 1, "shift": 2}, "Extra inputs"),
        ("offset", "valid dictionary"),
    ],
)
def test_invalid_sections_are_refused(section: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NodeIdsConfig.model_validate(section)


def test_hand_built_ambiguous_map_is_refused() -> None:
    with pytest.raises(ValueError, match="both map"):
        NodeIdMap(10, {1: 3, 2: 3})
