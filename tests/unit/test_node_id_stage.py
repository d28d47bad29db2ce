"""Node ids named by admin APIs (codec.node_id_admin) and the session step (NodeIdStage)."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader
from test_codec_strategies import SETTINGS, decode, encode, entity, kio_module, small_tuples

from codec.headers import encode_response_header, parse_request_header, request_header_version
from codec.node_id_admin import (
    ALTER_CONFIGS_KEY,
    DESCRIBE_CONFIGS_KEY,
    INCREMENTAL_ALTER_CONFIGS_KEY,
    map_config_request,
    map_config_response,
    map_describe_topic_partitions_response,
    map_list_reassignments_response,
    map_reassignment_request,
)
from codec.primitives import CodecError
from policies.node_id_stage import NodeIdStage
from policies.node_ids import IDENTITY, NodeIdMap

OFFSET_100 = NodeIdMap(100)
#: Resource names: node ids, the empty default, and names that are no node id.
names = st.sampled_from(["1", "2", "101", "", "0", "x1", "-1", "99999999999"]) | st.text(max_size=6)
resource_types = st.sampled_from([2, 4, 8, 16])
node_lists = small_tuples(st.integers(0, 2000), 4)


def _name(resource_type: int, name: str, mapper: Any) -> str:
    if resource_type in (4, 8) and name.isascii() and name.isdigit() and len(name) <= 10:
        mapped = mapper(int(name))
        return name if mapped is None else str(mapped)
    return name


CONFIG_CASES = [
    *[(DESCRIBE_CONFIGS_KEY, "describe_configs", v) for v in range(1, 5)],
    *[(ALTER_CONFIGS_KEY, "alter_configs", v) for v in range(3)],
    *[(INCREMENTAL_ALTER_CONFIGS_KEY, "incremental_alter_configs", v) for v in range(2)],
]


def _config_request(api: str, version: int) -> st.SearchStrategy[Any]:
    m = kio_module(api, version, "request")
    resource_cls = (
        m.DescribeConfigsResource if api == "describe_configs" else m.AlterConfigsResource
    )
    resource = entity(resource_cls, resource_type=resource_types, resource_name=names)
    top = (
        m.DescribeConfigsRequest
        if api == "describe_configs"
        else m.__dict__[
            "AlterConfigsRequest" if api == "alter_configs" else "IncrementalAlterConfigsRequest"
        ]
    )
    return entity(top, resources=small_tuples(resource))


def _config_response(api: str, version: int) -> st.SearchStrategy[Any]:
    m = kio_module(api, version)
    if api == "describe_configs":
        result = entity(m.DescribeConfigsResult, resource_type=resource_types, resource_name=names)
        return entity(m.DescribeConfigsResponse, results=small_tuples(result))
    result = entity(
        m.AlterConfigsResourceResponse, resource_type=resource_types, resource_name=names
    )
    top = m.AlterConfigsResponse if api == "alter_configs" else m.IncrementalAlterConfigsResponse
    return entity(top, responses=small_tuples(result))


def _with_names(message: Any, field: str, mapper: Any) -> Any:
    items = tuple(
        dataclasses.replace(i, resource_name=_name(i.resource_type, i.resource_name, mapper))
        for i in getattr(message, field)
    )
    return dataclasses.replace(message, **{field: items})


@pytest.mark.parametrize(("api_key", "api", "version"), CONFIG_CASES)
@SETTINGS
@given(data=st.data())
def test_config_requests_name_upstream_brokers(
    api_key: int, api: str, version: int, data: Any
) -> None:
    message = data.draw(_config_request(api, version))
    body = encode(message)
    out = map_config_request(api_key, version, body, OFFSET_100.upstream)
    expected = _with_names(message, "resources", OFFSET_100.upstream)
    assert decode(type(message), out if out is not None else body) == expected
    assert (out is None) == (expected == message)


@pytest.mark.parametrize(("api_key", "api", "version"), CONFIG_CASES)
@SETTINGS
@given(data=st.data())
def test_config_responses_name_virtual_brokers_and_back_is_identity(
    api_key: int, api: str, version: int, data: Any
) -> None:
    message = data.draw(_config_response(api, version))
    field = "results" if api == "describe_configs" else "responses"
    body = encode(message)
    out = map_config_response(api_key, version, body, OFFSET_100.virtual)
    expected = _with_names(message, field, OFFSET_100.virtual)
    assert decode(type(message), out if out is not None else body) == expected
    back = map_config_response(api_key, version, out or body, OFFSET_100.upstream)
    assert decode(type(message), back or out or body) == _with_names(
        expected, field, OFFSET_100.upstream
    )


@SETTINGS
@given(data=st.data(), version=st.integers(0, 1))
def test_reassignment_request_replicas_are_mapped_back(data: Any, version: int) -> None:
    m = kio_module("alter_partition_reassignments", version, "request")
    partition = entity(m.ReassignablePartition, replicas=st.none() | node_lists)
    topic = entity(m.ReassignableTopic, partitions=small_tuples(partition))
    message = data.draw(entity(m.AlterPartitionReassignmentsRequest, topics=small_tuples(topic)))
    body = encode(message)
    forward = NodeIdMap(100).virtual
    virtual_body = map_reassignment_request(version, body, forward) or body
    assert map_reassignment_request(version, virtual_body, OFFSET_100.upstream) in (body, None)


@SETTINGS
@given(data=st.data())
def test_list_reassignments_and_describe_topic_partitions_responses(data: Any) -> None:
    m = kio_module("list_partition_reassignments", 0)
    partition = entity(
        m.OngoingPartitionReassignment,
        replicas=node_lists,
        adding_replicas=node_lists,
        removing_replicas=node_lists,
    )
    topic = entity(m.OngoingTopicReassignment, partitions=small_tuples(partition))
    message = data.draw(entity(m.ListPartitionReassignmentsResponse, topics=small_tuples(topic)))
    out = map_list_reassignments_response(0, encode(message), OFFSET_100.virtual)
    decoded = decode(type(message), out or encode(message))
    for t_in, t_out in zip(message.topics, decoded.topics, strict=True):
        for p_in, p_out in zip(t_in.partitions, t_out.partitions, strict=True):
            for field in ("replicas", "adding_replicas", "removing_replicas"):
                assert getattr(p_out, field) == tuple(n + 100 for n in getattr(p_in, field))

    d = kio_module("describe_topic_partitions", 0)
    maybe = st.none() | node_lists
    dpart = entity(
        d.DescribeTopicPartitionsResponsePartition,
        leader_id=st.integers(-1, 2000),
        replica_nodes=node_lists,
        isr_nodes=node_lists,
        eligible_leader_replicas=maybe,
        last_known_elr=maybe,
        offline_replicas=node_lists,
    )
    dtopic = entity(d.DescribeTopicPartitionsResponseTopic, partitions=small_tuples(dpart))
    dmsg = data.draw(entity(d.DescribeTopicPartitionsResponse, topics=small_tuples(dtopic)))
    dout = map_describe_topic_partitions_response(0, encode(dmsg), OFFSET_100.virtual)
    ddec = decode(type(dmsg), dout or encode(dmsg))
    for t_in, t_out in zip(dmsg.topics, ddec.topics, strict=True):
        for p_in, p_out in zip(t_in.partitions, t_out.partitions, strict=True):
            assert p_out.leader_id == (p_in.leader_id + 100 if p_in.leader_id >= 0 else -1)
            assert p_out.replica_nodes == tuple(n + 100 for n in p_in.replica_nodes)
            assert p_out.isr_nodes == tuple(n + 100 for n in p_in.isr_nodes)
            assert p_out.offline_replicas == tuple(n + 100 for n in p_in.offline_replicas)
            for field in ("eligible_leader_replicas", "last_known_elr"):
                before = getattr(p_in, field)
                after = getattr(p_out, field)
                assert after == (None if before is None else tuple(n + 100 for n in before))


def test_a_virtual_id_with_no_upstream_keeps_its_name() -> None:
    m = kio_module("describe_configs", 4, "request")
    message = m.DescribeConfigsRequest(
        resources=(
            m.DescribeConfigsResource(resource_type=4, resource_name="7", configuration_keys=None),
        ),
        include_synonyms=False,
        include_documentation=False,
    )
    assert map_config_request(DESCRIBE_CONFIGS_KEY, 4, encode(message), OFFSET_100.upstream) is None


def test_truncated_config_request_raises_codec_error() -> None:
    m = kio_module("describe_configs", 4, "request")
    message = m.DescribeConfigsRequest(
        resources=(
            m.DescribeConfigsResource(
                resource_type=4, resource_name="101", configuration_keys=("a",)
            ),
        ),
        include_synonyms=False,
        include_documentation=False,
    )
    body = encode(message)
    for cut in range(len(body) - 3):  # the trailer (two flags, tags) is not read
        with pytest.raises(CodecError):
            map_config_request(DESCRIBE_CONFIGS_KEY, 4, body[:cut], OFFSET_100.upstream)


def test_identity_stage_buffers_nothing() -> None:
    stage = NodeIdStage(IDENTITY)
    assert not stage.active
    assert not any(stage.buffers_request(key) for key in range(100))
    assert not any(stage.buffers_response(key, v) for key in range(100) for v in range(20))


def test_offset_stage_maps_a_whole_describe_configs_exchange() -> None:
    stage = NodeIdStage(OFFSET_100)
    assert stage.buffers_request(DESCRIBE_CONFIGS_KEY)
    assert stage.buffers_response(3, 12) and stage.buffers_response(1, 11)
    assert not stage.buffers_response(1, 10) and not stage.buffers_request(3)
    request_module = kio_module("describe_configs", 4, "request")
    header = RequestHeader(
        request_api_key=32, request_api_version=4, correlation_id=9, client_id="c"
    )
    request = request_module.DescribeConfigsRequest(
        resources=(
            request_module.DescribeConfigsResource(
                resource_type=4, resource_name="101", configuration_keys=None
            ),
        ),
        include_synonyms=False,
        include_documentation=False,
    )
    frame = encode(header) + encode(request)
    mapped = stage.map_request(DESCRIBE_CONFIGS_KEY, 4, frame)
    offset = parse_request_header(mapped).body_offset
    assert decode(type(request), bytes(mapped[offset:])).resources[0].resource_name == "1"

    response_module = kio_module("describe_configs", 4)
    response = response_module.DescribeConfigsResponse(
        throttle_time=datetime.timedelta(0),
        results=(
            response_module.DescribeConfigsResult(
                error_code=ErrorCode.none,
                error_message=None,
                resource_type=4,
                resource_name="1",
                configs=(),
            ),
        ),
    )
    head = encode_response_header(9, DESCRIBE_CONFIGS_KEY, 4)
    out = stage.map_response(DESCRIBE_CONFIGS_KEY, 4, head + encode(response))
    assert decode(type(response), bytes(out[len(head) :])).results[0].resource_name == "101"


def _replaced_ids(obj: Any, mapper: Any) -> Any:
    """``obj`` with every ``broker_ids`` / ``broker_id`` mapped, recursively."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if field.name == "broker_ids":
            changes[field.name] = tuple(mapper(v) for v in value)
        elif field.name in ("broker_id", "voter_id"):
            changes[field.name] = mapper(value)
        elif isinstance(value, tuple):
            changes[field.name] = tuple(_replaced_ids(v, mapper) for v in value)
    return dataclasses.replace(obj, **changes)


def _create_topics(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("create_topics", version, "request")
    assignment = entity(m.CreatableReplicaAssignment, broker_ids=node_lists)
    topic = entity(
        m.CreatableTopic,
        assignments=small_tuples(assignment),
        configs=small_tuples(entity(m.CreatableTopicConfig)),
    )
    return entity(m.CreateTopicsRequest, topics=small_tuples(topic))


def _create_partitions(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("create_partitions", version, "request")
    assignment = entity(m.CreatePartitionsAssignment, broker_ids=node_lists)
    topic = entity(m.CreatePartitionsTopic, assignments=st.none() | small_tuples(assignment))
    return entity(m.CreatePartitionsRequest, topics=small_tuples(topic))


def _add_voter(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("add_raft_voter", version, "request")
    return entity(
        m.AddRaftVoterRequest,
        voter_id=st.integers(100, 5000),
        listeners=small_tuples(entity(m.Listener)),
    )


def _remove_voter(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("remove_raft_voter", version, "request")
    return entity(m.RemoveRaftVoterRequest, voter_id=st.integers(100, 5000))


def _unregister(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("unregister_broker", version, "request")
    return entity(m.UnregisterBrokerRequest, broker_id=st.integers(100, 5000))


@pytest.mark.parametrize(
    ("api_key", "version", "strategy"),
    [
        *[(19, v, _create_topics) for v in range(2, 8)],
        *[(37, v, _create_partitions) for v in range(4)],
        (64, 0, _unregister),
        (80, 0, _add_voter),
        (80, 1, _add_voter),
        (81, 0, _remove_voter),
    ],
)
@SETTINGS
@given(data=st.data())
def test_replica_placement_requests_name_upstream_brokers(
    api_key: int, version: int, strategy: Any, data: Any
) -> None:
    """Virtual ids 100+ (offset 100) come out as upstream ids; nothing else changes."""
    message = data.draw(strategy(version))
    virtual = _replaced_ids(message, lambda n: n + 100)
    stage = NodeIdStage(OFFSET_100)
    assert stage.buffers_request(api_key)
    header_cls = RequestHeader if request_header_version(api_key, version) == 2 else RequestHeaderV1
    header = header_cls(
        request_api_key=api_key, request_api_version=version, correlation_id=1, client_id="c"
    )
    head = encode(header)
    out = stage.map_request(api_key, version, head + encode(virtual))
    assert decode(type(message), bytes(out[len(head) :])) == message


def _quorum(version: int) -> st.SearchStrategy[Any]:
    m = kio_module("describe_quorum", version)
    replica = entity(m.ReplicaState, replica_id=st.integers(0, 5000))
    partition = entity(
        m.PartitionData,
        leader_id=st.integers(-1, 5000),
        current_voters=small_tuples(replica),
        observers=small_tuples(replica),
    )
    topic = entity(m.TopicData, partitions=small_tuples(partition))
    extra = {}
    if version >= 2:
        listener = entity(m.Listener)
        node = entity(m.Node, node_id=st.integers(0, 5000), listeners=small_tuples(listener))
        extra["nodes"] = small_tuples(node)
    return entity(m.DescribeQuorumResponse, topics=small_tuples(topic), **extra)


def _quorum_ids(message: Any) -> list[int]:
    ids = []
    for topic in message.topics:
        for partition in topic.partitions:
            ids.append(partition.leader_id)
            ids += [r.replica_id for r in (*partition.current_voters, *partition.observers)]
    ids += [node.node_id for node in getattr(message, "nodes", ())]
    return ids


@pytest.mark.parametrize("version", range(3))
@SETTINGS
@given(data=st.data())
def test_describe_quorum_ids_are_virtual(version: int, data: Any) -> None:
    message = data.draw(_quorum(version))
    stage = NodeIdStage(OFFSET_100)
    assert stage.buffers_response(55, version)
    out = stage.map_response_body(55, version, encode(message))
    decoded = decode(type(message), bytes(out) if out is not None else encode(message))
    assert _quorum_ids(decoded) == [n + 100 if n >= 0 else n for n in _quorum_ids(message)]


@SETTINGS
@given(data=st.data())
def test_list_config_resources_names_virtual_brokers(data: Any) -> None:
    m = kio_module("list_config_resources", 1)
    resource = entity(m.ConfigResource, resource_type=resource_types, resource_name=names)
    message = data.draw(
        entity(m.ListConfigResourcesResponse, config_resources=small_tuples(resource))
    )
    out = NodeIdStage(OFFSET_100).map_response_body(74, 1, encode(message))
    decoded = decode(type(message), bytes(out) if out is not None else encode(message))
    assert decoded == _with_names(message, "config_resources", OFFSET_100.virtual)
