"""Hypothesis strategies building kio messages, shared by the codec tests.

kio is generated from Kafka's own JSON schemas, so it is the reference the
hand-written codecs are checked against: messages are built as kio dataclasses,
encoded with kio, run through our code, and decoded with kio again.

The few tests at the bottom check the strategies themselves (kio round-trips
what they build), so a broken strategy is not mistaken for a codec bug.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import io
import typing
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import Records

st.register_type_strategy(Records, st.binary(max_size=48).map(Records))

SETTINGS = settings(max_examples=40, deadline=None)
#: Truncation tests run the codec once per prefix length: fewer, smaller examples.
TRUNCATION_SETTINGS = settings(max_examples=15, deadline=None)

node_ids = st.integers(min_value=0, max_value=2**31 - 1)
hosts = st.text(max_size=24)
ports = st.integers(min_value=0, max_value=65535)
racks = st.none() | st.text(max_size=8)


def gw_mapper(node_id: int, host: str, port: int) -> tuple[str, int]:
    """The mapper used throughout the tests: a deterministic gateway address per node."""
    return f"gw{node_id}.local", 10000 + node_id % 50000


def kio_module(api: str, version: int, kind: str = "response") -> ModuleType:
    return importlib.import_module(f"kio.schema.{api}.v{version}.{kind}")


def entity(cls: type[Any], **overrides: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``builds(cls)`` drawing *every* field (defaulted ones too) from its type.

    Overrides naming fields this version of the class lacks are ignored, so one
    call can describe all versions of a message.
    """
    hints = typing.get_type_hints(cls)
    kwargs = {
        f.name: overrides[f.name] if f.name in overrides else st.from_type(hints[f.name])
        for f in dataclasses.fields(cls)
    }
    return st.builds(cls, **kwargs)


def small_tuples(elements: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[Any]:
    return st.lists(elements, max_size=max_size).map(tuple)


def encode(obj: Any) -> bytes:
    out = io.BytesIO()
    entity_writer(type(obj))(out, obj)
    return out.getvalue()


def decode(cls: type[Any], data: bytes) -> Any:
    obj, used = entity_reader(cls)(data, 0)
    assert used == len(data), f"kio consumed {used} of {len(data)} bytes"
    return obj


def with_mapped_address(obj: Any, id_field: str = "node_id") -> Any:
    """``obj`` with host/port replaced the way :func:`gw_mapper` maps them."""
    host, port = gw_mapper(getattr(obj, id_field), obj.host, obj.port)
    return dataclasses.replace(obj, host=host, port=port)


def ms_timedeltas() -> st.SearchStrategy[datetime.timedelta]:
    return st.integers(0, 2**31 - 1).map(lambda ms: datetime.timedelta(milliseconds=ms))


# --- message strategies ------------------------------------------------------------


def metadata_responses(version: int, max_topics: int = 3) -> st.SearchStrategy[Any]:
    m = kio_module("metadata", version)
    broker = entity(m.MetadataResponseBroker, node_id=node_ids, host=hosts, port=ports, rack=racks)
    partition = entity(m.MetadataResponsePartition)
    topic = entity(m.MetadataResponseTopic, partitions=small_tuples(partition))
    return entity(
        m.MetadataResponse,
        brokers=small_tuples(broker, 4),
        topics=small_tuples(topic, max_topics),
    )


def find_coordinator_responses(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("find_coordinator", version)
    maybe_node = st.just(-1) | node_ids
    maybe_host = st.just("") | hosts
    if version <= 3:
        return entity(m.FindCoordinatorResponse, node_id=maybe_node, host=maybe_host, port=ports)
    coordinator = entity(m.Coordinator, node_id=maybe_node, host=maybe_host, port=ports)
    return entity(m.FindCoordinatorResponse, coordinators=small_tuples(coordinator, 4))


def describe_cluster_responses(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("describe_cluster", version)
    broker = entity(m.DescribeClusterBroker, broker_id=node_ids, host=hosts, port=ports, rack=racks)
    return entity(m.DescribeClusterResponse, brokers=small_tuples(broker, 4))


def _node_endpoints(m: ModuleType) -> st.SearchStrategy[Any]:
    endpoint = entity(m.NodeEndpoint, node_id=node_ids, host=hosts, port=ports, rack=racks)
    return small_tuples(endpoint, 3)


def produce_responses(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("produce", version)
    overrides = {}
    if hasattr(m, "BatchIndexAndErrorMessage"):  # v8+
        overrides["record_errors"] = small_tuples(entity(m.BatchIndexAndErrorMessage))
    partition = entity(m.PartitionProduceResponse, **overrides)
    topic = entity(m.TopicProduceResponse, partition_responses=small_tuples(partition))
    endpoints = _node_endpoints(m) if hasattr(m, "NodeEndpoint") else st.just(())
    return entity(m.ProduceResponse, responses=small_tuples(topic), node_endpoints=endpoints)


def fetch_responses(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("fetch", version)
    aborted = st.none() | small_tuples(entity(m.AbortedTransaction))
    partition = entity(m.PartitionData, aborted_transactions=aborted)
    topic = entity(m.FetchableTopicResponse, partitions=small_tuples(partition))
    return entity(m.FetchResponse, responses=small_tuples(topic), node_endpoints=_node_endpoints(m))


def share_fetch_responses(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("share_fetch", version)
    partition = entity(m.PartitionData, acquired_records=small_tuples(entity(m.AcquiredRecords)))
    topic = entity(m.ShareFetchableTopicResponse, partitions=small_tuples(partition))
    return entity(
        m.ShareFetchResponse, responses=small_tuples(topic), node_endpoints=_node_endpoints(m)
    )


def share_acknowledge_responses(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("share_acknowledge", version)
    partition = entity(m.PartitionData)
    topic = entity(m.ShareAcknowledgeTopicResponse, partitions=small_tuples(partition))
    return entity(
        m.ShareAcknowledgeResponse, responses=small_tuples(topic), node_endpoints=_node_endpoints(m)
    )


def produce_requests(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("produce", version, "request")
    partition = entity(m.PartitionProduceData, records=st.none() | st.from_type(Records))
    topic = entity(m.TopicProduceData, partition_data=small_tuples(partition, 4))
    return entity(
        m.ProduceRequest,
        acks=st.sampled_from([-1, 0, 1]),
        timeout=ms_timedeltas(),
        topic_data=small_tuples(topic, 4),
    )


def api_versions_responses(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("api_versions", version)
    api_key = entity(m.ApiVersion, api_key=st.integers(0, 100))
    overrides: dict[str, st.SearchStrategy[Any]] = {"api_keys": small_tuples(api_key, 8)}
    if version >= 3:
        overrides["supported_features"] = small_tuples(entity(m.SupportedFeatureKey))
        overrides["finalized_features"] = small_tuples(entity(m.FinalizedFeatureKey))
    return entity(m.ApiVersionsResponse, **overrides)


RESPONSE_STRATEGIES: dict[str, Any] = {
    "metadata": metadata_responses,
    "find_coordinator": find_coordinator_responses,
    "describe_cluster": describe_cluster_responses,
    "produce": produce_responses,
    "fetch": fetch_responses,
    "share_fetch": share_fetch_responses,
    "share_acknowledge": share_acknowledge_responses,
}

STRATEGY_CASES = [
    *[("metadata", v) for v in range(14)],
    *[("find_coordinator", v) for v in range(7)],
    *[("describe_cluster", v) for v in range(3)],
    *[("produce", v) for v in range(10, 14)],
    *[("fetch", v) for v in range(16, 19)],
    *[("share_fetch", v) for v in (1, 2)],
    *[("share_acknowledge", v) for v in (1, 2)],
]


@pytest.mark.parametrize(("api", "version"), STRATEGY_CASES)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_strategies_build_messages_kio_round_trips(api: str, version: int, data: Any) -> None:
    message = data.draw(RESPONSE_STRATEGIES[api](version))
    assert decode(type(message), encode(message)) == message


@pytest.mark.parametrize("version", range(3, 14))
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_produce_request_strategy_round_trips(version: int, data: Any) -> None:
    message = data.draw(produce_requests(version))
    assert decode(type(message), encode(message)) == message
