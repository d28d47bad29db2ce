"""Address rewriting of FindCoordinator, DescribeCluster and KIP-951 node endpoints."""

from __future__ import annotations

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
    fetch_responses,
    find_coordinator_responses,
    gw_mapper,
    produce_responses,
    share_acknowledge_responses,
    share_fetch_responses,
    with_mapped_address,
)

from codec.api_versions import gateway_version_ranges
from codec.primitives import CodecError
from codec.rewrite import carries_addresses, rewrite_response

FIND_COORDINATOR, DESCRIBE_CLUSTER = 10, 60
PRODUCE, FETCH, SHARE_FETCH, SHARE_ACKNOWLEDGE = 0, 1, 78, 79


def _mapped_unless_absent(entry: Any) -> Any:
    if entry.node_id < 0 or entry.host == "":
        return entry
    return with_mapped_address(entry)


# --- FindCoordinator ---------------------------------------------------------------


@pytest.mark.parametrize("version", range(7))
@SETTINGS
@given(data=st.data())
def test_find_coordinator(version: int, data: Any) -> None:
    message = data.draw(find_coordinator_responses(version))
    out = rewrite_response(FIND_COORDINATOR, version, encode(message), gw_mapper)
    if version <= 3:
        expected = _mapped_unless_absent(message)
    else:
        coordinators = tuple(_mapped_unless_absent(c) for c in message.coordinators)
        expected = dataclasses.replace(message, coordinators=coordinators)
    assert out is not None
    assert decode(type(message), out) == expected


FIND_COORDINATOR_V0 = bytes.fromhex("0000000000010002623100002384")
FIND_COORDINATOR_V0_OUT = bytes.fromhex("00000000000100096777312e6c6f63616c00002711")
FIND_COORDINATOR_V4 = bytes.fromhex(
    "00000000"  # throttle_time_ms
    "03"  # coordinators: 2
    "02"
    "67"
    "00000001"
    "03"
    "6231"
    "00002384"
    "0000"
    "00"
    "00"  # "g" -> node 1 b1:9092
    "02"
    "68"
    "ffffffff"
    "01"
    "ffffffff"
    "000f"
    "00"
    "00"  # "h" -> none, error 15
    "00"
)
FIND_COORDINATOR_V4_OUT = bytes.fromhex(
    "00000000030267000000010a6777312e6c6f63616c00002711000000000268ffffffff01ffffffff000f000000"
)


def test_find_coordinator_fixtures() -> None:
    assert rewrite_response(FIND_COORDINATOR, 0, FIND_COORDINATOR_V0, gw_mapper) == (
        FIND_COORDINATOR_V0_OUT
    )
    assert rewrite_response(FIND_COORDINATOR, 4, FIND_COORDINATOR_V4, gw_mapper) == (
        FIND_COORDINATOR_V4_OUT
    )


def test_find_coordinator_error_is_left_alone() -> None:
    # v2: throttle, error_code 15 (COORDINATOR_NOT_AVAILABLE), message null, node -1, "", -1
    body = bytes.fromhex("00000000000fffffffffffff0000ffffffff")
    calls: list[int] = []

    def mapper(node_id: int, host: str, port: int) -> tuple[str, int]:
        calls.append(node_id)
        return gw_mapper(node_id, host, port)

    assert rewrite_response(FIND_COORDINATOR, 2, body, mapper) == body
    assert calls == []


# --- DescribeCluster ---------------------------------------------------------------


@pytest.mark.parametrize("version", range(3))
@SETTINGS
@given(data=st.data())
def test_describe_cluster(version: int, data: Any) -> None:
    message = data.draw(describe_cluster_responses(version))
    out = rewrite_response(DESCRIBE_CLUSTER, version, encode(message), gw_mapper)
    brokers = tuple(with_mapped_address(b, "broker_id") for b in message.brokers)
    assert out is not None
    assert decode(type(message), out) == dataclasses.replace(message, brokers=brokers)


DESCRIBE_CLUSTER_V2 = bytes.fromhex(
    "00000000"
    "0000"
    "00"  # throttle, error_code, error_message null
    "01"  # endpoint_type brokers
    "02"
    "63"
    "00000003"  # cluster_id "c", controller_id 3
    "02"
    "00000003"
    "03"
    "6233"
    "00002384"
    "00"
    "01"
    "00"  # broker 3 b3:9092 rack null fenced
    "80000000"
    "00"
)
DESCRIBE_CLUSTER_V2_OUT = bytes.fromhex(
    "000000000000000102630000000302000000030a6777332e6c6f63616c000027130001008000000000"
)


def test_describe_cluster_fixture() -> None:
    assert rewrite_response(DESCRIBE_CLUSTER, 2, DESCRIBE_CLUSTER_V2, gw_mapper) == (
        DESCRIBE_CLUSTER_V2_OUT
    )


# --- KIP-951 node endpoints ----------------------------------------------------------

NODE_ENDPOINT_CASES = [
    *[(PRODUCE, v, produce_responses) for v in range(10, 14)],
    *[(FETCH, v, fetch_responses) for v in range(16, 19)],
    *[(SHARE_FETCH, v, share_fetch_responses) for v in (1, 2)],
    *[(SHARE_ACKNOWLEDGE, v, share_acknowledge_responses) for v in (1, 2)],
]


@pytest.mark.parametrize(("api_key", "version", "strategy"), NODE_ENDPOINT_CASES)
@SETTINGS
@given(data=st.data())
def test_node_endpoints(api_key: int, version: int, strategy: Any, data: Any) -> None:
    message = data.draw(strategy(version))
    body = encode(message)
    out = rewrite_response(api_key, version, body, gw_mapper)
    framed = memoryview(b"\x00\x00\x00\x07\x00" + body)[5:]  # as sliced out of a frame
    assert rewrite_response(api_key, version, framed, gw_mapper) == out
    if not message.node_endpoints:
        assert out is None
        return
    endpoints = tuple(with_mapped_address(e) for e in message.node_endpoints)
    assert out is not None
    assert decode(type(message), out) == dataclasses.replace(message, node_endpoints=endpoints)


ALL_CASES = [
    *[(3, v, None) for v in range(14)],
    *[(FIND_COORDINATOR, v, find_coordinator_responses) for v in range(7)],
    *[(DESCRIBE_CLUSTER, v, describe_cluster_responses) for v in range(3)],
    *NODE_ENDPOINT_CASES,
]


@pytest.mark.parametrize(("api_key", "version", "strategy"), [c for c in ALL_CASES if c[2]])
@TRUNCATION_SETTINGS
@given(data=st.data())
def test_truncated_bodies_raise(api_key: int, version: int, strategy: Any, data: Any) -> None:
    """These rewriters read the whole body, so every proper prefix is malformed."""
    body = encode(data.draw(strategy(version)))
    for cut in range(len(body)):
        with pytest.raises(CodecError):
            rewrite_response(api_key, version, body[:cut], gw_mapper)


@pytest.mark.parametrize(("api_key", "version"), [c[:2] for c in ALL_CASES])
@SETTINGS
@given(garbage=st.binary(max_size=120))
def test_garbage_raises_only_codec_error(api_key: int, version: int, garbage: bytes) -> None:
    try:
        out = rewrite_response(api_key, version, garbage, gw_mapper)
    except CodecError:
        return
    assert out is None or isinstance(out, bytes)


FETCH_V16 = bytes.fromhex(
    "00000000"
    "0000"
    "00000000"  # throttle, error_code, session_id
    "01"  # responses: 0
    "02"  # 2 tagged fields
    "00"
    "0e"  # tag 0 node_endpoints, 14 bytes
    "02"
    "00000001"
    "03"
    "6231"
    "00002384"
    "00"
    "00"  # node 1 b1:9092 rack null
    "07"
    "01"
    "ff"  # unknown tag 7
)
FETCH_V16_OUT = bytes.fromhex(
    "000000000000000000000102001502000000010a6777312e6c6f63616c0000271100000701ff"
)


def test_fetch_fixture_resizes_tag_and_keeps_others() -> None:
    assert rewrite_response(FETCH, 16, FETCH_V16, gw_mapper) == FETCH_V16_OUT


def test_fetch_without_node_endpoints_tag_is_not_rewritten() -> None:
    body = bytes.fromhex("0000000000000000000001010701ff")
    assert rewrite_response(FETCH, 17, body, gw_mapper) is None


def test_node_endpoints_tag_with_trailing_bytes_is_malformed() -> None:
    body = bytes.fromhex("000000000000000000000101000201ee")
    with pytest.raises(CodecError, match="after its array"):
        rewrite_response(FETCH, 16, body, gw_mapper)


@SETTINGS
@given(message=share_fetch_responses(1))
def test_share_fetch_v0_has_the_v1_layout(message: Any) -> None:
    # ShareFetch v0 (Kafka 4.0 early access) differs from v1 only in the request.
    body = encode(message)
    assert rewrite_response(SHARE_FETCH, 0, body, gw_mapper) == rewrite_response(
        SHARE_FETCH, 1, body, gw_mapper
    )


@pytest.mark.parametrize(
    ("api_key", "version"),
    [(PRODUCE, 9), (PRODUCE, 3), (FETCH, 15), (FETCH, 4), (18, 3), (2, 5), (999, 0)],
)
def test_versions_without_addresses_return_none(api_key: int, version: int) -> None:
    assert not carries_addresses(api_key, version)
    assert rewrite_response(api_key, version, b"\x00" * 64, gw_mapper) is None


@pytest.mark.parametrize(
    ("api_key", "version"),
    [
        (PRODUCE, 14),
        (FETCH, 19),
        (3, 14),
        (FIND_COORDINATOR, 7),
        (DESCRIBE_CLUSTER, 3),
        (SHARE_FETCH, 3),
        (SHARE_ACKNOWLEDGE, 3),
    ],
)
def test_unknown_newer_versions_are_refused(api_key: int, version: int) -> None:
    """A layout the gateway does not know could hide addresses: refuse, don't forward."""
    assert carries_addresses(api_key, version)
    with pytest.raises(CodecError):
        rewrite_response(api_key, version, b"\x00" * 64, gw_mapper)


def test_out_of_range_mapped_port_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="int32"):
        rewrite_response(FIND_COORDINATOR, 0, FIND_COORDINATOR_V0, lambda n, h, p: (h, 2**31))


ADDRESS_APIS = [
    PRODUCE,
    FETCH,
    3,
    FIND_COORDINATOR,
    DESCRIBE_CLUSTER,
    SHARE_FETCH,
    SHARE_ACKNOWLEDGE,
]


@pytest.mark.parametrize("api_key", ADDRESS_APIS)
def test_advertised_versions_never_exceed_what_the_rewriters_know(api_key: int) -> None:
    """ApiVersions caps must keep clients on layouts whose addresses can be rewritten."""
    highest = gateway_version_ranges()[api_key][1]
    with pytest.raises(CodecError) as known:
        rewrite_response(api_key, highest, b"", gw_mapper)  # fails only for being empty
    assert f"v{highest}" not in str(known.value)
    with pytest.raises(CodecError, match=f"v{highest + 1}"):
        rewrite_response(api_key, highest + 1, b"", gw_mapper)
