"""Per-API authorization of the data-plane APIs (policies/authorization: produce,
fetch and fetch_sessions, metadata, partitioned).

Requests are built with kio and framed with a real request header; verdicts are
checked by decoding what would be forwarded or answered with kio again. The
handlers are called directly (the registry imports modules owned by others).
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from kio.static.primitive import Records
from test_codec_strategies import kio_module

from codec.api_table import API_TABLE
from codec.headers import encode_request_header, parse_request_header
from policies.acl.model import CLUSTER_NAME, Operation, ResourceType
from policies.authorization import fetch_sessions, metadata, partitioned, produce
from policies.authorization.messages import (
    MessageError,
    decode_response,
    response_class,
)
from policies.authorization.partitioned import (
    DELETE_RECORDS_API,
    DESCRIBE_PRODUCERS_API,
    LIST_OFFSETS_API,
    OFFSET_FOR_LEADER_EPOCH_API,
    PartitionedApi,
)
from policies.authorization.splitting import Decisions, build
from policies.authorization.topics import UNKNOWN_TOPIC_ID, kio_entity
from tests.authorization_fakes import (
    CORRELATION_ID,
    Question,
    allowing,
    assert_untouched,
    denial,
    encode,
    forwarded_body,
    local_answer,
    request_frame_of,
    response_frame_of,
    transformed,
)

TOPIC = ResourceType.TOPIC
CLUSTER = ResourceType.CLUSTER
DENIED = ErrorCode.topic_authorization_failed
NONE = ErrorCode.none
THROTTLE = datetime.timedelta(milliseconds=7)

#: The data-plane handlers, by API key.
HANDLERS = {
    **produce.HANDLERS,
    **fetch_sessions.HANDLERS,
    **metadata.HANDLERS,
    **partitioned.HANDLERS,
}


def topic_grants(operation: Operation, *names: str) -> list[Question]:
    return [(operation, TOPIC, name) for name in names]


# --- Decisions ---------------------------------------------------------------------


def test_checks_ask_each_question_once_and_audit_each_refusal_once() -> None:
    ctx = allowing((Operation.READ, TOPIC, "a"))
    checks = Decisions(ctx)
    assert checks.allows_topic(Operation.READ, "a") and checks.allows_topic(Operation.READ, "a")
    assert not checks.allows_topic(Operation.READ, "b", audit=False)
    assert checks.denials == []  # a probe is not audited...
    assert not checks.allows_topic(Operation.READ, "b")
    assert not checks.allows_topic(Operation.READ, "b")
    assert checks.denials == [
        denial(Operation.READ, TOPIC, "b")
    ]  # ...but the real question is, once
    assert ctx.authorizer.questions == [(Operation.READ, TOPIC, "a"), (Operation.READ, TOPIC, "b")]


def test_registry_covers_the_data_plane_apis() -> None:
    assert set(HANDLERS) == {0, 1, 2, 3, 21, 23, 61, 75}


# --- topic/partition APIs (ListOffsets, DeleteRecords, OffsetForLeaderEpoch, DescribeProducers)

TopicSpec = Sequence[tuple[str, Sequence[int]]]

#: Per API: kio module name, request/topic/partition class names, extra request fields.
REQUEST_CLASSES: dict[int, tuple[str, str, str, str | None, dict[str, Any]]] = {
    2: (
        "list_offsets",
        "ListOffsetsRequest",
        "ListOffsetsTopic",
        "ListOffsetsPartition",
        {"replica_id": -1, "isolation_level": 0, "timeout": datetime.timedelta(seconds=1)},
    ),
    21: (
        "delete_records",
        "DeleteRecordsRequest",
        "DeleteRecordsTopic",
        "DeleteRecordsPartition",
        {"timeout": datetime.timedelta(seconds=1)},
    ),
    23: (
        "offset_for_leader_epoch",
        "OffsetForLeaderEpochRequest",
        "OffsetForLeaderTopic",
        "OffsetForLeaderPartition",
        {"replica_id": -1},
    ),
    61: ("describe_producers", "DescribeProducersRequest", "TopicRequest", None, {}),
}

PARTITIONED = [
    pytest.param(LIST_OFFSETS_API, id="ListOffsets"),
    pytest.param(DELETE_RECORDS_API, id="DeleteRecords"),
    pytest.param(OFFSET_FOR_LEADER_EPOCH_API, id="OffsetForLeaderEpoch"),
    pytest.param(DESCRIBE_PRODUCERS_API, id="DescribeProducers"),
]


def supported_versions(api_key: int) -> range:
    _, low, high, _ = API_TABLE[api_key]
    return range(low, high + 1)


def partitioned_request(api: PartitionedApi, version: int, topics: TopicSpec) -> Any:
    module, request_name, topic_name, partition_name, extra = REQUEST_CLASSES[api.api_key]
    m = kio_module(module, version, "request")

    def partition(index: int) -> Any:
        if partition_name is None:
            return index
        return build(
            getattr(m, partition_name),
            partition_index=index,
            partition=index,
            timestamp=-1,
            offset=10,
            leader_epoch=3,
        )

    entries = tuple(
        build(
            getattr(m, topic_name),
            **{api.request.name: name, api.request.partitions: tuple(map(partition, indexes))},
        )
        for name, indexes in topics
    )
    return build(getattr(m, request_name), topics=entries, **extra)


def echo_upstream(api: PartitionedApi, version: int, request: Any, order: Sequence[int]) -> Any:
    """What a broker answers to ``request``: every partition with error 0, topics in ``order``."""
    response_cls = response_class(api.api_key, version)
    topic_cls = kio_entity(response_cls, api.topic_class)
    partition_cls = kio_entity(response_cls, api.partition_class)
    assert api.response.index is not None
    topics = [
        build(
            topic_cls,
            **{
                api.response.name: name,
                api.response.partitions: tuple(
                    build(
                        partition_cls,
                        **{**api.refused_fields, api.response.index: index, "error_code": NONE},
                    )
                    for index in indexes
                ),
            },
        )
        for name, indexes in api.request.client_order(request)
    ]
    return build(response_cls, throttle_time=THROTTLE, topics=tuple(topics[i] for i in order))


def response_partitions(api: PartitionedApi, response: Any) -> list[tuple[str, int, int]]:
    """``[(topic, partition, error code)]`` of a response, in order."""
    assert api.response.index is not None
    return [
        (name, getattr(p, api.response.index), p.error_code)
        for topic in api.response.topic_list(response)
        for name in [api.response.key(topic)]
        for p in api.response.partition_list(topic)
    ]


@pytest.mark.parametrize("api", PARTITIONED)
def test_partitioned_all_allowed_forwards_the_original_frame(api: PartitionedApi) -> None:
    for version in supported_versions(api.api_key):
        frame = request_frame_of(api.api_key, version, partitioned_request(api, version, SPEC))
        ctx = allowing(*topic_grants(api.operation, "a", "b"))
        assert_untouched(HANDLERS[api.api_key](ctx, frame, version), frame)
        # Each topic asked once although "a" is listed twice (plus a cluster probe for OFLE).
        topic_calls = [c for c in ctx.authorizer.questions if c[1] is TOPIC]
        assert topic_calls == topic_grants(api.operation, "a", "b")


SPEC: TopicSpec = [("a", [0, 1]), ("b", [2]), ("a", [5])]


@pytest.mark.parametrize("api", PARTITIONED)
def test_partitioned_all_denied_is_answered_locally(api: PartitionedApi) -> None:
    for version in supported_versions(api.api_key):
        frame = request_frame_of(api.api_key, version, partitioned_request(api, version, SPEC))
        verdict = HANDLERS[api.api_key](allowing(), frame, version)
        answer = local_answer(verdict, api.api_key, version)
        assert response_partitions(api, answer) == [
            ("a", 0, DENIED),
            ("a", 1, DENIED),
            ("b", 2, DENIED),
            ("a", 5, DENIED),
        ]
        assert verdict.denials == [
            denial(api.operation, TOPIC, "a"),
            denial(api.operation, TOPIC, "b"),
        ]
        if hasattr(answer, "throttle_time"):
            assert answer.throttle_time == datetime.timedelta(0)


def test_refused_partitions_carry_kafkas_fields() -> None:
    """The exact values Kafka puts in a refused partition, per API."""
    spec = [("x", [3])]
    expected: list[tuple[PartitionedApi, dict[str, Any]]] = [
        (LIST_OFFSETS_API, {"timestamp": -1, "offset": -1, "leader_epoch": -1}),
        (DELETE_RECORDS_API, {"low_watermark": -1}),
        (OFFSET_FOR_LEADER_EPOCH_API, {"leader_epoch": -1, "end_offset": -1}),
        (
            DESCRIBE_PRODUCERS_API,
            {"error_message": "Topic authorization failed.", "active_producers": ()},
        ),
    ]
    for api, fields in expected:
        version = supported_versions(api.api_key)[-1]
        frame = request_frame_of(api.api_key, version, partitioned_request(api, version, spec))
        answer = local_answer(
            HANDLERS[api.api_key](allowing(), frame, version), api.api_key, version
        )
        (partition,) = api.response.partition_list(api.response.topic_list(answer)[0])
        assert partition.error_code == DENIED
        assert {name: getattr(partition, name) for name in fields} == fields


@pytest.mark.parametrize("api", PARTITIONED)
def test_partitioned_split_forwards_allowed_and_merges_in_client_order(
    api: PartitionedApi,
) -> None:
    version = supported_versions(api.api_key)[-1]
    spec = [("a", [0, 1]), ("secret", [4]), ("b", [2]), ("a", [5]), ("secret", [0])]
    frame = request_frame_of(api.api_key, version, partitioned_request(api, version, spec))
    verdict = HANDLERS[api.api_key](
        allowing(*topic_grants(api.operation, "a", "b")), frame, version
    )
    assert verdict.denials == [denial(api.operation, TOPIC, "secret")]
    assert verdict.forward is not None
    header = parse_request_header(frame)
    assert verdict.forward[: header.body_offset] == frame[: header.body_offset]
    sent = forwarded_body(verdict)
    assert api.request.client_order(sent) == [("a", [0, 1]), ("b", [2]), ("a", [5])]
    upstream = echo_upstream(api, version, sent, order=[2, 0, 1])  # the broker reorders
    merged = transformed(verdict, api.api_key, version, upstream)
    assert response_partitions(api, merged) == [
        ("a", 0, NONE),
        ("a", 1, NONE),
        ("secret", 4, DENIED),
        ("b", 2, NONE),
        ("a", 5, NONE),
        ("secret", 0, DENIED),
    ]
    if hasattr(merged, "throttle_time"):
        assert merged.throttle_time == THROTTLE  # the broker's, kept


topic_names = st.sampled_from(["a", "b", "c", "d", "e"])
topic_specs = st.lists(
    st.tuples(topic_names, st.lists(st.integers(0, 9), max_size=4, unique=True)), max_size=6
)


@pytest.mark.parametrize("api", PARTITIONED)
@settings(max_examples=40, deadline=None)
@given(data=st.data(), spec=topic_specs, allowed=st.sets(topic_names))
def test_merge_keeps_exactly_the_client_partitions_in_order(
    api: PartitionedApi, data: Any, spec: TopicSpec, allowed: set[str]
) -> None:
    version = data.draw(st.sampled_from(supported_versions(api.api_key)))
    frame = request_frame_of(api.api_key, version, partitioned_request(api, version, spec))
    verdict = HANDLERS[api.api_key](
        allowing(*topic_grants(api.operation, *allowed)), frame, version
    )
    expected = [
        (name, index, NONE if name in allowed else DENIED)
        for name, indexes in spec
        for index in indexes
    ]
    if all(name in allowed for name, _ in spec):
        assert verdict.forward is frame
        return
    if verdict.forward is None:
        answer = local_answer(verdict, api.api_key, version)
    else:
        sent = forwarded_body(verdict)
        assert {name for name, _ in api.request.client_order(sent)} <= allowed
        order = data.draw(st.permutations(range(len(api.request.topic_list(sent)))))
        answer = transformed(
            verdict, api.api_key, version, echo_upstream(api, version, sent, order)
        )
    assert response_partitions(api, answer) == expected
    assert {d.name for d in verdict.denials} == {name for name, _ in spec} - allowed


def test_offset_for_leader_epoch_cluster_action_allows_every_topic() -> None:
    api = OFFSET_FOR_LEADER_EPOCH_API
    frame = request_frame_of(23, 4, partitioned_request(api, 4, [("secret", [0])]))
    ctx = allowing((Operation.CLUSTER_ACTION, CLUSTER, CLUSTER_NAME))
    assert_untouched(HANDLERS[23](ctx, frame, 4), frame)
    assert ctx.authorizer.questions == [(Operation.CLUSTER_ACTION, CLUSTER, CLUSTER_NAME)]
    # Without it, the cluster probe is not audited; the topic refusal is.
    verdict = HANDLERS[23](allowing(), frame, 4)
    assert verdict.denials == [denial(Operation.DESCRIBE, TOPIC, "secret")]


def test_merge_keeps_unexpected_upstream_partitions() -> None:
    """A partition the broker answers but the client did not ask for is not dropped."""
    api = LIST_OFFSETS_API
    frame = request_frame_of(2, 7, partitioned_request(api, 7, [("a", [0]), ("secret", [1])]))
    verdict = HANDLERS[2](allowing(*topic_grants(Operation.DESCRIBE, "a")), frame, 7)
    upstream = echo_upstream(api, 7, partitioned_request(api, 7, [("a", [0, 9])]), [0])
    merged = transformed(verdict, 2, 7, upstream)
    assert response_partitions(api, merged) == [
        ("a", 0, NONE),
        ("secret", 1, DENIED),
        ("a", 9, NONE),
    ]


# --- Produce -------------------------------------------------------------------------------


def produce_request(
    version: int,
    topics: Sequence[tuple[str | uuid.UUID, Sequence[int]]],
    *,
    acks: int = -1,
    transactional_id: str | None = None,
) -> Any:
    m = kio_module("produce", version, "request")
    key = "topic_id" if version >= 13 else "name"
    return m.ProduceRequest(
        transactional_id=transactional_id,
        acks=acks,
        timeout=datetime.timedelta(seconds=30),
        topic_data=tuple(
            m.TopicProduceData(
                **{key: name},
                partition_data=tuple(
                    m.PartitionProduceData(index=i, records=records_for(name, i)) for i in indexes
                ),
            )
            for name, indexes in topics
        ),
    )


def records_for(topic: str | uuid.UUID, index: int) -> Records | None:
    """Distinct record bytes per partition (None for partition 7, to cover null records)."""
    return None if index == 7 else Records(f"records of {topic}/{index};".encode() * (index + 1))


def produce_upstream(version: int, request: Any, order: Sequence[int] | None = None) -> Any:
    m = kio_module("produce", version)
    key = "topic_id" if version >= 13 else "name"
    topics = [
        m.TopicProduceResponse(
            **{key: getattr(topic, key)},
            partition_responses=tuple(
                build(
                    m.PartitionProduceResponse,
                    index=p.index,
                    error_code=NONE,
                    base_offset=100 + p.index,
                    log_append_time=None,
                    log_start_offset=0,
                    record_errors=(),
                    error_message=None,
                )
                for p in topic.partition_data
            ),
        )
        for topic in request.topic_data
    ]
    order = range(len(topics)) if order is None else order
    return build(
        m.ProduceResponse, responses=tuple(topics[i] for i in order), throttle_time=THROTTLE
    )


def produce_partitions(version: int, response: Any) -> list[tuple[Any, int, int, int]]:
    key = "topic_id" if version >= 13 else "name"
    return [
        (getattr(topic, key), p.index, p.error_code, p.base_offset)
        for topic in response.responses
        for p in topic.partition_responses
    ]


@pytest.mark.parametrize("version", range(3, 14))
def test_produce_all_allowed_forwards_the_original_frame(version: int) -> None:
    a, b = (uuid.uuid4(), uuid.uuid4()) if version >= 13 else ("a", "b")
    frame = request_frame_of(0, version, produce_request(version, [(a, [0]), (b, [1]), (a, [2])]))
    ctx = (
        allowing(*topic_grants(Operation.WRITE, "a", "b"), a=a, b=b)
        if version >= 13
        else (allowing(*topic_grants(Operation.WRITE, "a", "b")))
    )
    assert_untouched(produce.authorize_produce(ctx, frame, version), frame)
    assert ctx.authorizer.questions == topic_grants(Operation.WRITE, "a", "b")


@pytest.mark.parametrize("version", range(3, 14))
def test_produce_all_denied_is_answered_locally(version: int) -> None:
    a = uuid.uuid4() if version >= 13 else "a"
    frame = request_frame_of(0, version, produce_request(version, [(a, [0, 7])]))
    ctx = allowing(a=a) if isinstance(a, uuid.UUID) else allowing()
    verdict = produce.authorize_produce(ctx, frame, version)
    answer = local_answer(verdict, 0, version)
    assert produce_partitions(version, answer) == [(a, 0, DENIED, -1), (a, 7, DENIED, -1)]
    for partition in answer.responses[0].partition_responses:
        assert partition.log_append_time is None  # -1 on the wire
        assert getattr(partition, "log_start_offset", -1) == -1
    assert verdict.denials == [denial(Operation.WRITE, TOPIC, "a")]


@pytest.mark.parametrize("version", [3, 8, 9, 12, 13])
def test_produce_split_forwards_allowed_topics_and_merges(version: int) -> None:
    ids = {name: uuid.uuid4() for name in ("a", "secret", "b")}
    key = (lambda n: ids[n]) if version >= 13 else (lambda n: n)
    spec = [(key("a"), [0, 7]), (key("secret"), [1]), (key("b"), [2]), (key("secret"), [3])]
    request = produce_request(version, spec, acks=1)
    frame = request_frame_of(0, version, request)
    ctx = allowing(*topic_grants(Operation.WRITE, "a", "b"), **ids)
    verdict = produce.authorize_produce(ctx, frame, version)
    assert verdict.denials == [denial(Operation.WRITE, TOPIC, "secret")]
    assert verdict.forward is not None and verdict.close_connection is None
    body_offset = parse_request_header(frame).body_offset
    assert verdict.forward[:body_offset] == frame[:body_offset]
    sent = forwarded_body(verdict)
    expected_sent = dataclasses.replace(
        request, topic_data=(request.topic_data[0], request.topic_data[2])
    )
    assert sent == expected_sent  # same acks, timeout and record bytes
    merged = transformed(verdict, 0, version, produce_upstream(version, sent, order=[1, 0]))
    assert produce_partitions(version, merged) == [
        (key("a"), 0, NONE, 100),
        (key("a"), 7, NONE, 107),
        (key("secret"), 1, DENIED, -1),
        (key("b"), 2, NONE, 102),
        (key("secret"), 3, DENIED, -1),
    ]
    assert merged.throttle_time == THROTTLE


def test_produce_v13_unknown_topic_id() -> None:
    known, unknown = uuid.uuid4(), uuid.uuid4()
    request = produce_request(13, [(known, [0]), (unknown, [1, 2])])
    frame = request_frame_of(0, 13, request)
    verdict = produce.authorize_produce(
        allowing(*topic_grants(Operation.WRITE, "known"), known=known), frame, 13
    )
    assert verdict.denials == []  # not a refusal: the gateway does not know the id
    assert [t.topic_id for t in forwarded_body(verdict).topic_data] == [known]
    merged = transformed(verdict, 0, 13, produce_upstream(13, forwarded_body(verdict)))
    unknown_topic_id = ErrorCode(UNKNOWN_TOPIC_ID)
    assert produce_partitions(13, merged) == [
        (known, 0, NONE, 100),
        (unknown, 1, unknown_topic_id, -1),
        (unknown, 2, unknown_topic_id, -1),
    ]


@pytest.mark.parametrize("version", [3, 9, 13])
def test_produce_transactional_id_denied_fails_every_partition(version: int) -> None:
    a = uuid.uuid4() if version >= 13 else "a"
    request = produce_request(version, [(a, [0, 1])], transactional_id="txn-1")
    frame = request_frame_of(0, version, request)
    ctx = (
        allowing(*topic_grants(Operation.WRITE, "a"), a=a)
        if version >= 13
        else allowing(*topic_grants(Operation.WRITE, "a"))
    )
    verdict = produce.authorize_produce(ctx, frame, version)
    answer = local_answer(verdict, 0, version)
    failed = ErrorCode.transactional_id_authorization_failed
    assert produce_partitions(version, answer) == [(a, 0, failed, -1), (a, 1, failed, -1)]
    assert verdict.denials == [denial(Operation.WRITE, ResourceType.TRANSACTIONAL_ID, "txn-1")]
    # With Write on the transactional id the request goes through untouched.
    ctx.authorizer.listed.add((Operation.WRITE, ResourceType.TRANSACTIONAL_ID, "txn-1"))
    assert_untouched(produce.authorize_produce(ctx, frame, version), frame)


@pytest.mark.parametrize("version", [3, 9, 12])
def test_produce_acks_zero(version: int) -> None:
    request = produce_request(version, [("a", [0]), ("secret", [1])], acks=0)
    frame = request_frame_of(0, version, request)
    verdict = produce.authorize_produce(
        allowing(*topic_grants(Operation.WRITE, "a")), frame, version
    )
    assert verdict.forward is None and verdict.local_response is None
    assert verdict.close_connection is not None and "acks=0" in verdict.close_connection
    assert verdict.denials == [denial(Operation.WRITE, TOPIC, "secret")]
    allowed = allowing(*topic_grants(Operation.WRITE, "a", "secret"))
    assert_untouched(produce.authorize_produce(allowed, frame, version), frame)


def _produce_v2_frame(topics: Sequence[tuple[str, Sequence[int]]]) -> bytes:
    """Produce v2 is v3 without ``transactional_id`` (kio has no v0-2 schema)."""
    v3 = encode(produce_request(3, topics))
    assert v3[:2] == b"\xff\xff"  # null transactional_id
    return encode_request_header(0, 2, CORRELATION_ID, "old-client") + v3[2:]


def test_produce_v2_denial_closes_the_connection() -> None:
    frame = _produce_v2_frame([("a", [0]), ("secret", [1])])
    verdict = produce.authorize_produce(allowing(*topic_grants(Operation.WRITE, "a")), frame, 2)
    assert verdict.forward is None and verdict.local_response is None
    assert verdict.close_connection is not None and "v2" in verdict.close_connection
    allowed = allowing(*topic_grants(Operation.WRITE, "a", "secret"))
    assert_untouched(produce.authorize_produce(allowed, frame, 2), frame)


@pytest.mark.parametrize("version", [3, 9, 13])
@settings(max_examples=30, deadline=None)
@given(data_=st.data(), spec=topic_specs, allowed=st.sets(topic_names))
def test_produce_merge_keeps_exactly_the_client_partitions_in_order(
    version: int, data_: Any, spec: TopicSpec, allowed: set[str]
) -> None:
    ids = {name: uuid.UUID(int=ord(name)) for name in "abcde"}
    key = (lambda n: ids[n]) if version >= 13 else (lambda n: n)
    request = produce_request(version, [(key(n), idx) for n, idx in spec])
    frame = request_frame_of(0, version, request)
    ctx = allowing(*topic_grants(Operation.WRITE, *allowed), **ids)
    verdict = produce.authorize_produce(ctx, frame, version)
    if all(name in allowed for name, _ in spec):
        assert verdict.forward is frame
        return
    if verdict.forward is None:
        answer = local_answer(verdict, 0, version)
    else:
        sent = forwarded_body(verdict)
        kept = [t for t in request.topic_data if any(key(n) == _key(t, version) for n in allowed)]
        assert sent.topic_data == tuple(kept)
        order = data_.draw(st.permutations(range(len(sent.topic_data))))
        answer = transformed(verdict, 0, version, produce_upstream(version, sent, order))
    assert [(k, i, e) for k, i, e, _ in produce_partitions(version, answer)] == [
        (key(name), index, NONE if name in allowed else DENIED)
        for name, indexes in spec
        for index in indexes
    ]


def _key(topic: Any, version: int) -> Any:
    return topic.topic_id if version >= 13 else topic.name


# --- Fetch ---------------------------------------------------------------------------------


def fetch_request(
    version: int,
    topics: Sequence[tuple[str | uuid.UUID, Sequence[int]]],
    *,
    session_id: int = 0,
    session_epoch: int = -1,
    replica_id: int = -1,
) -> Any:
    m = kio_module("fetch", version, "request")
    key = "topic_id" if version >= 13 else "topic"
    extra: dict[str, Any] = {"replica_id": replica_id}
    if version >= 15:
        extra = {"replica_state": m.ReplicaState(replica_id=replica_id)}
    return build(
        m.FetchRequest,
        max_wait=datetime.timedelta(milliseconds=500),
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=session_id,
        session_epoch=session_epoch,
        forgotten_topics_data=(),
        rack_id="",
        topics=tuple(
            m.FetchTopic(
                **{key: name},
                partitions=tuple(
                    build(
                        m.FetchPartition, partition=i, fetch_offset=5, partition_max_bytes=1 << 16
                    )
                    for i in indexes
                ),
            )
            for name, indexes in topics
        ),
        **extra,
    )


def fetch_upstream(version: int, request: Any, *, error_code: ErrorCode = NONE) -> Any:
    m = kio_module("fetch", version)
    key = "topic_id" if version >= 13 else "topic"
    topics = tuple(
        m.FetchableTopicResponse(
            **{key: getattr(topic, key)},
            partitions=tuple(
                build(
                    m.PartitionData,
                    partition_index=p.partition,
                    error_code=NONE,
                    high_watermark=50,
                    last_stable_offset=50,
                    log_start_offset=0,
                    aborted_transactions=None,
                    records=Records(b"batch-" * (p.partition + 1)),
                )
                for p in topic.partitions
            ),
        )
        for topic in request.topics
    )
    return build(
        m.FetchResponse,
        throttle_time=THROTTLE,
        error_code=error_code,
        session_id=77,
        responses=() if error_code != NONE else topics,
    )


def fetch_partitions(version: int, response: Any) -> list[tuple[Any, int, int]]:
    key = "topic_id" if version >= 13 else "topic"
    return [
        (getattr(t, key), p.partition_index, p.error_code)
        for t in response.responses
        for p in t.partitions
    ]


def assert_refused_fetch_partition(partition: Any, error: ErrorCode = DENIED) -> None:
    assert partition.error_code == error
    assert partition.high_watermark == -1
    assert partition.last_stable_offset == -1
    assert getattr(partition, "log_start_offset", -1) == -1
    assert partition.aborted_transactions is None
    assert partition.records == b""  # empty, not null: librdkafka rejects a null record set


@pytest.mark.parametrize("version", range(4, 19))
def test_fetch_all_allowed_forwards_the_original_frame(version: int) -> None:
    a = uuid.uuid4() if version >= 13 else "a"
    frame = request_frame_of(1, version, fetch_request(version, [(a, [0, 1]), (a, [2])]))
    ctx = (
        allowing(*topic_grants(Operation.READ, "a"), a=a)
        if version >= 13
        else allowing(*topic_grants(Operation.READ, "a"))
    )
    assert_untouched(fetch_sessions.authorize_fetch(ctx, frame, version), frame)
    assert ctx.authorizer.questions == topic_grants(Operation.READ, "a")


@pytest.mark.parametrize("version", range(4, 19))
def test_fetch_full_request_all_denied_is_answered_locally(version: int) -> None:
    a = uuid.uuid4() if version >= 13 else "a"
    request = fetch_request(version, [(a, [0, 3])], session_id=0, session_epoch=0)
    frame = request_frame_of(1, version, request)
    ctx = allowing(a=a) if version >= 13 else allowing()
    verdict = fetch_sessions.authorize_fetch(ctx, frame, version)
    answer = local_answer(verdict, 1, version)
    assert fetch_partitions(version, answer) == [(a, 0, DENIED), (a, 3, DENIED)]
    for partition in answer.responses[0].partitions:
        assert_refused_fetch_partition(partition)
    assert answer.throttle_time == datetime.timedelta(0)
    if version >= 7:
        assert (answer.error_code, answer.session_id) == (NONE, 0)  # no session created
    assert verdict.denials == [denial(Operation.READ, TOPIC, "a")]


@pytest.mark.parametrize("version", [4, 7, 11, 12, 13, 16, 18])
def test_fetch_split_appends_refused_topics_without_touching_records(version: int) -> None:
    ids = {name: uuid.uuid4() for name in ("a", "secret", "b")}
    key = (lambda n: ids[n]) if version >= 13 else (lambda n: n)
    request = fetch_request(version, [(key("a"), [0, 1]), (key("secret"), [2]), (key("b"), [3])])
    frame = request_frame_of(1, version, request)
    ctx = allowing(*topic_grants(Operation.READ, "a", "b"), **ids)
    verdict = fetch_sessions.authorize_fetch(ctx, frame, version)
    assert verdict.denials == [denial(Operation.READ, TOPIC, "secret")]
    sent = forwarded_body(verdict)
    assert sent == dataclasses.replace(request, topics=(request.topics[0], request.topics[2]))
    upstream = fetch_upstream(version, sent)
    upstream_bytes = response_frame_of(1, version, upstream)
    assert verdict.transform is not None
    out = verdict.transform(upstream_bytes)
    merged = decode_response(out, 1, version)
    assert merged.responses[:2] == upstream.responses  # the broker's entries, unchanged
    assert fetch_partitions(version, merged)[3:] == [(key("secret"), 2, DENIED)]
    assert_refused_fetch_partition(merged.responses[2].partitions[0])
    assert (merged.throttle_time, getattr(merged, "session_id", 77)) == (THROTTLE, 77)
    # Spliced, not re-encoded: the upstream topics' bytes appear verbatim.
    entries = encode(upstream)
    first_topic = encode(upstream.responses[0])
    assert first_topic in out and len(out) > len(entries)


@pytest.mark.parametrize("version", [7, 12, 13])
def test_fetch_incremental_request_without_a_known_session_is_refused(version: int) -> None:
    # The stateless handler is a connection that has no session: nothing to forward.
    a = uuid.uuid4() if version >= 13 else "a"
    request = fetch_request(version, [(a, [0])], session_id=77, session_epoch=3)
    frame = request_frame_of(1, version, request)
    ctx = allowing(*topic_grants(Operation.READ, "a"), a=a)
    answer = local_answer(fetch_sessions.authorize_fetch(ctx, frame, version), 1, version)
    assert answer.error_code == ErrorCode.fetch_session_id_not_found
    assert (answer.session_id, answer.responses) == (0, ())


def test_fetch_upstream_top_level_error_is_passed_through() -> None:
    request = fetch_request(12, [("a", [0]), ("secret", [1])], session_id=0, session_epoch=0)
    verdict = fetch_sessions.authorize_fetch(
        allowing(*topic_grants(Operation.READ, "a")), request_frame_of(1, 12, request), 12
    )
    error = ErrorCode.invalid_fetch_session_epoch
    upstream_bytes = response_frame_of(1, 12, fetch_upstream(12, request, error_code=error))
    assert verdict.transform is not None
    assert verdict.transform(upstream_bytes) is upstream_bytes


@pytest.mark.parametrize("version", [13, 18])
def test_fetch_unknown_topic_id(version: int) -> None:
    known, unknown = uuid.uuid4(), uuid.uuid4()
    request = fetch_request(version, [(known, [0]), (unknown, [1])])
    frame = request_frame_of(1, version, request)
    ctx = allowing(*topic_grants(Operation.READ, "known"), known=known)
    verdict = fetch_sessions.authorize_fetch(ctx, frame, version)
    assert verdict.denials == []
    sent = forwarded_body(verdict)
    merged = transformed(verdict, 1, version, fetch_upstream(version, sent))
    unknown_topic_id = ErrorCode(UNKNOWN_TOPIC_ID)
    assert fetch_partitions(version, merged) == [(known, 0, NONE), (unknown, 1, unknown_topic_id)]
    assert_refused_fetch_partition(merged.responses[1].partitions[0], unknown_topic_id)


@pytest.mark.parametrize("version", [11, 15])
def test_follower_fetch_needs_cluster_action(version: int) -> None:
    a = uuid.uuid4() if version >= 13 else "a"
    request = fetch_request(version, [(a, [0])], replica_id=2)
    frame = request_frame_of(1, version, request)
    ctx = (
        allowing(*topic_grants(Operation.READ, "a"), a=a)
        if version >= 13
        else allowing(*topic_grants(Operation.READ, "a"))
    )
    verdict = fetch_sessions.authorize_fetch(ctx, frame, version)
    assert fetch_partitions(version, local_answer(verdict, 1, version)) == [(a, 0, DENIED)]
    assert verdict.denials == [denial(Operation.CLUSTER_ACTION, CLUSTER, CLUSTER_NAME)]
    follower = allowing((Operation.CLUSTER_ACTION, CLUSTER, CLUSTER_NAME))
    assert_untouched(fetch_sessions.authorize_fetch(follower, frame, version), frame)
    assert follower.authorizer.questions == [(Operation.CLUSTER_ACTION, CLUSTER, CLUSTER_NAME)]


# --- Metadata ------------------------------------------------------------------------------


def metadata_request(
    version: int, names: Sequence[str | uuid.UUID] | None, *, auto_create: bool = False
) -> Any:
    m = kio_module("metadata", version, "request")
    topics = None
    if names is not None:
        topics = tuple(
            build(
                m.MetadataRequestTopic,
                name=None if isinstance(n, uuid.UUID) else n,
                topic_id=n if isinstance(n, uuid.UUID) else None,
            )
            for n in names
        )
    return build(
        m.MetadataRequest,
        topics=topics,
        allow_auto_topic_creation=auto_create,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )


def metadata_upstream(
    version: int, topics: Sequence[tuple[str | None, ErrorCode, uuid.UUID | None]]
) -> Any:
    m = kio_module("metadata", version)
    broker = build(m.MetadataResponseBroker, node_id=1, host="kafka-1", port=9092, rack="r1")
    entries = tuple(
        build(
            m.MetadataResponseTopic,
            error_code=code,
            name=name,
            topic_id=topic_id,
            is_internal=False,
            partitions=()
            if code != NONE
            else (
                build(
                    m.MetadataResponsePartition,
                    error_code=NONE,
                    partition_index=0,
                    leader_id=1,
                    leader_epoch=4,
                    replica_nodes=(1,),
                    isr_nodes=(1,),
                    offline_replicas=(),
                ),
            ),
            topic_authorized_operations=-2147483648,
        )
        for name, code, topic_id in topics
    )
    return build(
        m.MetadataResponse,
        throttle_time=THROTTLE,
        brokers=(broker,),
        cluster_id="cluster",
        controller_id=1,
        topics=entries,
        cluster_authorized_operations=-2147483648,
        error_code=NONE,
    )


def metadata_topics(response: Any) -> list[tuple[str | None, int, int]]:
    return [(t.name, t.error_code, len(t.partitions)) for t in response.topics]


@pytest.mark.parametrize("version", range(14))
def test_metadata_named_topics_all_allowed_forward_the_original_frame(version: int) -> None:
    frame = request_frame_of(3, version, metadata_request(version, ["a", "b"], auto_create=True))
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "a", "b"), allow_all=False)
    ctx.authorizer.listed.add((Operation.CREATE, CLUSTER, CLUSTER_NAME))
    assert_untouched(metadata.authorize_metadata(ctx, frame, version), frame)


@pytest.mark.parametrize("version", range(14))
def test_metadata_all_topics_leaves_out_unauthorized_topics(version: int) -> None:
    names = [] if version == 0 else None
    frame = request_frame_of(3, version, metadata_request(version, names))
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "a", "c"))
    verdict = metadata.authorize_metadata(ctx, frame, version)
    assert verdict.forward is frame and verdict.denials == []
    assert verdict.transform is not None
    upstream = metadata_upstream(
        version, [("a", NONE, None), ("secret", NONE, None), ("c", NONE, None)]
    )
    filtered = transformed(verdict, 3, version, upstream)
    assert filtered == dataclasses.replace(
        upstream, topics=(upstream.topics[0], upstream.topics[2])
    )
    # Nothing to filter: the very same bytes come back.
    allowed = metadata_upstream(version, [("a", NONE, None), ("c", NONE, None)])
    allowed_bytes = response_frame_of(3, version, allowed)
    assert verdict.transform(allowed_bytes) is allowed_bytes


@pytest.mark.parametrize("version", [1, 4, 9, 12, 13])
def test_metadata_named_unauthorized_topic_is_not_forwarded(version: int) -> None:
    frame = request_frame_of(3, version, metadata_request(version, ["a", "secret"]))
    may_create = (Operation.CREATE, CLUSTER, CLUSTER_NAME)  # v1-3 always auto-create
    verdict = metadata.authorize_metadata(
        allowing(*topic_grants(Operation.DESCRIBE, "a"), may_create), frame, version
    )
    assert verdict.denials == [denial(Operation.DESCRIBE, TOPIC, "secret")]
    assert [t.name for t in forwarded_body(verdict).topics] == ["a"]
    upstream = metadata_upstream(version, [("a", NONE, uuid.uuid4())])
    answer = transformed(verdict, 3, version, upstream)
    assert metadata_topics(answer) == [("a", NONE, 1), ("secret", DENIED, 0)]
    refused = answer.topics[1]
    assert getattr(refused, "is_internal", False) is False
    assert getattr(refused, "topic_id", None) is None  # the zero id
    assert answer.brokers == upstream.brokers and answer.topics[0] == upstream.topics[0]


@pytest.mark.parametrize("version", [0, 1, 12])
def test_metadata_all_named_topics_unauthorized(version: int) -> None:
    frame = request_frame_of(3, version, metadata_request(version, ["secret"]))
    verdict = metadata.authorize_metadata(allowing(), frame, version)
    assert forwarded_body(verdict).topics == ()  # the broker still gives brokers and controller
    # An empty v0 list means "all topics": whatever the broker lists is dropped.
    upstream = metadata_upstream(version, [("other", NONE, None)] if version == 0 else [])
    answer = transformed(verdict, 3, version, upstream)
    assert metadata_topics(answer) == [("secret", DENIED, 0)]
    assert answer.brokers == upstream.brokers


@pytest.mark.parametrize("version", [4, 9, 12])
def test_metadata_auto_creation_without_create(version: int) -> None:
    """Describe but no Create: auto-creation is turned off; "unknown" becomes "unauthorized"."""
    frame = request_frame_of(
        3, version, metadata_request(version, ["new", "old"], auto_create=True)
    )
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "new", "old"))
    verdict = metadata.authorize_metadata(ctx, frame, version)
    sent = forwarded_body(verdict)
    assert [t.name for t in sent.topics] == ["new", "old"]
    assert sent.allow_auto_topic_creation is False
    assert verdict.denials == []  # a Create probe refuses nothing by itself
    unknown = ErrorCode.unknown_topic_or_partition
    upstream = metadata_upstream(version, [("new", unknown, None), ("old", NONE, None)])
    answer = transformed(verdict, 3, version, upstream)
    assert metadata_topics(answer) == [("new", DENIED, 0), ("old", NONE, 1)]
    assert answer.topics[1] == upstream.topics[1]
    # Create on the topic (or on the cluster) lets the request through untouched.
    for grant in [(Operation.CREATE, TOPIC, "new"), (Operation.CREATE, CLUSTER, CLUSTER_NAME)]:
        ctx = allowing(*topic_grants(Operation.DESCRIBE, "new"), grant)
        frame = request_frame_of(3, version, metadata_request(version, ["new"], auto_create=True))
        assert_untouched(metadata.authorize_metadata(ctx, frame, version), frame)


def test_metadata_auto_creation_mixed_create_rights_turns_creation_off_for_all() -> None:
    """Documented limitation: the flag is per request, so "mine" is not created either."""
    frame = request_frame_of(3, 12, metadata_request(12, ["mine", "theirs"], auto_create=True))
    ctx = allowing(
        *topic_grants(Operation.DESCRIBE, "mine", "theirs"), (Operation.CREATE, TOPIC, "mine")
    )
    verdict = metadata.authorize_metadata(ctx, frame, 12)
    assert forwarded_body(verdict).allow_auto_topic_creation is False
    unknown = ErrorCode.unknown_topic_or_partition
    upstream = metadata_upstream(12, [("mine", unknown, None), ("theirs", unknown, None)])
    answer = transformed(verdict, 3, 12, upstream)
    assert metadata_topics(answer) == [("mine", unknown, 0), ("theirs", DENIED, 0)]


def test_metadata_v3_auto_creation_without_create_is_refused_locally() -> None:
    """v0-3 cannot turn auto-creation off, so the topic is not sent to the broker at all."""
    frame = request_frame_of(3, 3, metadata_request(3, ["a", "new"]))
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "a", "new"), (Operation.CREATE, TOPIC, "a"))
    verdict = metadata.authorize_metadata(ctx, frame, 3)
    assert [t.name for t in forwarded_body(verdict).topics] == ["a"]
    assert verdict.denials == [denial(Operation.CREATE, TOPIC, "new")]
    answer = transformed(verdict, 3, 3, metadata_upstream(3, [("a", NONE, None)]))
    assert metadata_topics(answer) == [("a", NONE, 1), ("new", DENIED, 0)]


@pytest.mark.parametrize("version", [12, 13])
def test_metadata_topics_by_id_are_filtered_by_name(version: int) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    frame = request_frame_of(3, version, metadata_request(version, [mine, theirs]))
    verdict = metadata.authorize_metadata(
        allowing(*topic_grants(Operation.DESCRIBE, "mine")), frame, version
    )
    assert verdict.forward is frame  # ids are not names: forwarded as they are
    upstream = metadata_upstream(version, [("mine", NONE, mine), ("theirs", NONE, theirs)])
    answer = transformed(verdict, 3, version, upstream)
    assert answer.topics[0] == upstream.topics[0]
    refused = answer.topics[1]
    assert (refused.error_code, refused.name, refused.topic_id) == (DENIED, None, theirs)
    assert refused.partitions == () and refused.is_internal is False


# --- Metadata authorized operations ---------------------------------------------------------

OMITTED = -(2**31)
#: AclOperation codes of the operations Kafka reports for a topic.
TOPIC_BITS = {
    Operation.READ: 3,
    Operation.WRITE: 4,
    Operation.CREATE: 5,
    Operation.DELETE: 6,
    Operation.ALTER: 7,
    Operation.DESCRIBE: 8,
    Operation.DESCRIBE_CONFIGS: 10,
    Operation.ALTER_CONFIGS: 11,
}
ALL_TOPIC_BITS = 0b1101_1111_1000
#: What the broker computes for the gateway's own upstream login (more than the client has).
GATEWAY_BITS = ALL_TOPIC_BITS | (1 << 2)
GATEWAY_CLUSTER_BITS = 0b1_1111_1010_0000
OPERATIONS_VERSIONS = [8, 10, 12, 13]


def metadata_operations_request(
    version: int,
    names: Sequence[str | uuid.UUID] | None,
    *,
    topic_ops: bool = True,
    cluster_ops: bool = False,
    auto_create: bool = False,
) -> Any:
    request = metadata_request(version, names, auto_create=auto_create)
    changes: dict[str, bool] = {"include_topic_authorized_operations": topic_ops}
    if version <= 10:
        changes["include_cluster_authorized_operations"] = cluster_ops
    return dataclasses.replace(request, **changes)


def with_gateway_bits(upstream: Any) -> Any:
    """The broker's answer: every named topic carries the gateway login's bits."""
    topics = tuple(
        dataclasses.replace(t, topic_authorized_operations=GATEWAY_BITS)
        if t.error_code != DENIED
        else t
        for t in upstream.topics
    )
    changes: dict[str, Any] = {"topics": topics}
    if hasattr(upstream, "cluster_authorized_operations"):
        changes["cluster_authorized_operations"] = GATEWAY_CLUSTER_BITS
    return dataclasses.replace(upstream, **changes)


def topic_bits(response: Any) -> list[tuple[str | None, int]]:
    return [(t.name, t.topic_authorized_operations) for t in response.topics]


@pytest.mark.parametrize("version", OPERATIONS_VERSIONS)
def test_metadata_topic_operations_are_the_clients(version: int) -> None:
    frame = request_frame_of(3, version, metadata_operations_request(version, ["t"]))
    ctx = allowing(*topic_grants(Operation.READ, "t"), *topic_grants(Operation.DESCRIBE, "t"))
    verdict = metadata.authorize_metadata(ctx, frame, version)
    assert verdict.forward is frame and verdict.denials == []
    upstream = with_gateway_bits(metadata_upstream(version, [("t", NONE, uuid.uuid4())]))
    answer = transformed(verdict, 3, version, upstream)
    assert topic_bits(answer) == [("t", (1 << 3) | (1 << 8))]
    expected_topic = dataclasses.replace(upstream.topics[0], topic_authorized_operations=264)
    assert answer == dataclasses.replace(upstream, topics=(expected_topic,))
    # The probes refuse nothing; each operation is asked once (Describe at request time).
    assert verdict.denials == []
    assert Counter(ctx.authorizer.questions) == Counter((op, TOPIC, "t") for op in TOPIC_BITS)


@pytest.mark.parametrize("version", OPERATIONS_VERSIONS)
def test_metadata_topic_operations_of_a_super_user_on_all_topics(version: int) -> None:
    frame = request_frame_of(3, version, metadata_operations_request(version, None))
    verdict = metadata.authorize_metadata(allowing(allow_all=True), frame, version)
    upstream = with_gateway_bits(metadata_upstream(version, [("a", NONE, None), ("b", NONE, None)]))
    answer = transformed(verdict, 3, version, upstream)
    assert topic_bits(answer) == [("a", ALL_TOPIC_BITS), ("b", ALL_TOPIC_BITS)]


@pytest.mark.parametrize("version", OPERATIONS_VERSIONS)
def test_metadata_topic_operations_compose_with_the_topic_filter(version: int) -> None:
    """All topics: hidden topics are left out first, the rest get the client's bits."""
    frame = request_frame_of(3, version, metadata_operations_request(version, None))
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "a"), *topic_grants(Operation.WRITE, "a"))
    verdict = metadata.authorize_metadata(ctx, frame, version)
    upstream = with_gateway_bits(
        metadata_upstream(version, [("secret", NONE, None), ("a", NONE, None)])
    )
    answer = transformed(verdict, 3, version, upstream)
    assert topic_bits(answer) == [("a", (1 << 4) | (1 << 8))]
    assert verdict.denials == []  # neither the filter nor the probes refuse anything
    # The filter's Describe answers are reused for the bits, never asked twice.
    assert max(Counter(ctx.authorizer.questions).values()) == 1
    assert (Operation.READ, TOPIC, "secret") not in ctx.authorizer.questions  # hidden: no bits


@pytest.mark.parametrize("version", OPERATIONS_VERSIONS)
def test_metadata_topic_operations_of_error_entries(version: int) -> None:
    """Refused entries carry no bits (as Kafka's); other errors get the client's bits."""
    names = ["new", "gone", "secret"]
    request = metadata_operations_request(version, names, auto_create=True)
    frame = request_frame_of(3, version, request)
    ctx = allowing(
        *topic_grants(Operation.DESCRIBE, "new", "gone"), (Operation.CREATE, TOPIC, "gone")
    )
    verdict = metadata.authorize_metadata(ctx, frame, version)
    assert verdict.denials == [denial(Operation.DESCRIBE, TOPIC, "secret")]
    unknown = ErrorCode.unknown_topic_or_partition
    upstream = with_gateway_bits(
        metadata_upstream(version, [("new", unknown, None), ("gone", unknown, None)])
    )
    answer = transformed(verdict, 3, version, upstream)
    assert metadata_topics(answer) == [
        ("new", DENIED, 0),
        ("gone", unknown, 0),
        ("secret", DENIED, 0),
    ]
    gone_bits = (1 << 5) | (1 << 8)
    assert topic_bits(answer) == [("new", OMITTED), ("gone", gone_bits), ("secret", OMITTED)]


@pytest.mark.parametrize("version", [12, 13])
def test_metadata_topic_operations_leave_hidden_ids_alone(version: int) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    frame = request_frame_of(3, version, metadata_operations_request(version, [mine, theirs]))
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "mine"))
    verdict = metadata.authorize_metadata(ctx, frame, version)
    upstream = with_gateway_bits(
        metadata_upstream(version, [("mine", NONE, mine), ("theirs", NONE, theirs)])
    )
    answer = transformed(verdict, 3, version, upstream)
    assert topic_bits(answer) == [("mine", 1 << 8), (None, OMITTED)]
    assert answer.topics[1].topic_id == theirs


@pytest.mark.parametrize("version", [8, 9, 10])
def test_metadata_cluster_operations_are_the_clients(version: int) -> None:
    frame = request_frame_of(
        3, version, metadata_operations_request(version, ["t"], topic_ops=False, cluster_ops=True)
    )
    ctx = allowing(
        *topic_grants(Operation.DESCRIBE, "t"),
        (Operation.DESCRIBE, CLUSTER, CLUSTER_NAME),
        (Operation.IDEMPOTENT_WRITE, CLUSTER, CLUSTER_NAME),
    )
    verdict = metadata.authorize_metadata(ctx, frame, version)
    assert verdict.forward is frame
    upstream = with_gateway_bits(metadata_upstream(version, [("t", NONE, None)]))
    answer = transformed(verdict, 3, version, upstream)
    assert answer.cluster_authorized_operations == (1 << 8) | (1 << 12)
    assert answer.topics == upstream.topics  # topic bits were not asked for
    # Without Describe on the cluster Kafka reports no cluster operation at all.
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "t"), (Operation.ALTER, CLUSTER, CLUSTER_NAME))
    verdict = metadata.authorize_metadata(ctx, frame, version)
    assert transformed(verdict, 3, version, upstream).cluster_authorized_operations == 0
    assert verdict.denials == []


@pytest.mark.parametrize("version", [8, 10])
def test_metadata_cluster_operations_not_asked_stay_omitted(version: int) -> None:
    frame = request_frame_of(3, version, metadata_operations_request(version, ["t"]))
    verdict = metadata.authorize_metadata(allowing(allow_all=True), frame, version)
    upstream = metadata_upstream(version, [("t", NONE, None)])
    answer = transformed(verdict, 3, version, upstream)
    assert answer.cluster_authorized_operations == OMITTED
    assert topic_bits(answer) == [("t", ALL_TOPIC_BITS)]


@pytest.mark.parametrize("version", OPERATIONS_VERSIONS)
def test_metadata_without_operations_flags_is_unchanged(version: int) -> None:
    """Not asked: the same verdict as before, same authorizer calls, no transform."""
    request = metadata_operations_request(version, ["t"], topic_ops=False)
    frame = request_frame_of(3, version, request)
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "t"))
    assert_untouched(metadata.authorize_metadata(ctx, frame, version), frame)
    assert ctx.authorizer.questions == topic_grants(Operation.DESCRIBE, "t")
    # All topics: only the topic filter, which returns the upstream frame itself.
    all_frame = request_frame_of(
        3, version, metadata_operations_request(version, None, topic_ops=False)
    )
    verdict = metadata.authorize_metadata(allowing(allow_all=True), all_frame, version)
    upstream = response_frame_of(
        3, version, with_gateway_bits(metadata_upstream(version, [("t", NONE, None)]))
    )
    assert verdict.transform is not None and verdict.transform(upstream) is upstream


@settings(max_examples=60, deadline=None)
@given(
    granted=st.sets(st.sampled_from(list(TOPIC_BITS))), version=st.sampled_from(OPERATIONS_VERSIONS)
)
def test_metadata_topic_bits_are_exactly_the_granted_operations(
    granted: set[Operation], version: int
) -> None:
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "t"), *((op, TOPIC, "t") for op in granted))
    frame = request_frame_of(3, version, metadata_operations_request(version, ["t"]))
    verdict = metadata.authorize_metadata(ctx, frame, version)
    upstream = with_gateway_bits(metadata_upstream(version, [("t", NONE, None)]))
    answer = transformed(verdict, 3, version, upstream)
    expected = sum(1 << TOPIC_BITS[op] for op in granted | {Operation.DESCRIBE})
    assert topic_bits(answer) == [("t", expected)]


# --- DescribeTopicPartitions -------------------------------------------------------------


def dtp_request(names: Sequence[str], cursor: tuple[str, int] | None = None) -> Any:
    m = kio_module("describe_topic_partitions", 0, "request")
    return m.DescribeTopicPartitionsRequest(
        topics=tuple(m.TopicRequest(name=n) for n in names),
        response_partition_limit=2000,
        cursor=None
        if cursor is None
        else m.Cursor(topic_name=cursor[0], partition_index=cursor[1]),
    )


def dtp_upstream(names: Sequence[str], cursor: tuple[str, int] | None = None) -> Any:
    m = kio_module("describe_topic_partitions", 0)
    partition = m.DescribeTopicPartitionsResponsePartition(
        error_code=NONE, partition_index=0, leader_id=1, replica_nodes=(1,), isr_nodes=(1,)
    )
    topics = tuple(
        m.DescribeTopicPartitionsResponseTopic(
            error_code=NONE, name=n, topic_id=uuid.uuid4(), partitions=(partition,)
        )
        for n in names
    )
    next_cursor = (
        None if cursor is None else m.Cursor(topic_name=cursor[0], partition_index=cursor[1])
    )
    return m.DescribeTopicPartitionsResponse(
        throttle_time=THROTTLE, topics=topics, next_cursor=next_cursor
    )


def test_describe_topic_partitions_named() -> None:
    frame = request_frame_of(75, 0, dtp_request(["b", "z-secret", "a", "secret"]))
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "a", "b"))
    verdict = metadata.authorize_describe_topic_partitions(ctx, frame, 0)
    assert [t.name for t in forwarded_body(verdict).topics] == ["b", "a"]
    assert verdict.denials == [  # asked in the client's order
        denial(Operation.DESCRIBE, TOPIC, "z-secret"),
        denial(Operation.DESCRIBE, TOPIC, "secret"),
    ]
    upstream = dtp_upstream(["a", "b"])
    answer = transformed(verdict, 75, 0, upstream)
    assert answer.topics[:2] == upstream.topics
    assert [(t.name, t.error_code, t.topic_id, t.partitions) for t in answer.topics[2:]] == [
        ("secret", DENIED, None, ()),
        ("z-secret", DENIED, None, ()),
    ]
    allowed = allowing(*topic_grants(Operation.DESCRIBE, "a", "b", "secret", "z-secret"))
    assert_untouched(metadata.authorize_describe_topic_partitions(allowed, frame, 0), frame)


def test_describe_topic_partitions_all_named_denied_is_local() -> None:
    frame = request_frame_of(75, 0, dtp_request(["secret"]))
    answer = local_answer(metadata.authorize_describe_topic_partitions(allowing(), frame, 0), 75, 0)
    assert [(t.name, t.error_code) for t in answer.topics] == [("secret", DENIED)]
    assert answer.next_cursor is None


def test_describe_topic_partitions_cursor_on_a_denied_topic() -> None:
    """Kafka only describes topics from the cursor on; a denied cursor topic is dropped."""
    frame = request_frame_of(75, 0, dtp_request(["a", "m-secret", "z"], cursor=("m-secret", 3)))
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "a", "z"))
    verdict = metadata.authorize_describe_topic_partitions(ctx, frame, 0)
    sent = forwarded_body(verdict)
    assert [t.name for t in sent.topics] == ["z"] and sent.cursor is None
    answer = transformed(verdict, 75, 0, dtp_upstream(["z"]))
    assert [(t.name, t.error_code) for t in answer.topics] == [("z", NONE), ("m-secret", DENIED)]


def test_describe_topic_partitions_all_topics_filter_and_cursor() -> None:
    frame = request_frame_of(75, 0, dtp_request([]))
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "a", "c"))
    verdict = metadata.authorize_describe_topic_partitions(ctx, frame, 0)
    assert verdict.forward is frame and verdict.transform is not None
    upstream = dtp_upstream(["a", "b-secret", "c"], cursor=("d-secret", 2))
    answer = transformed(verdict, 75, 0, upstream)
    assert [t.name for t in answer.topics] == ["a", "c"]
    # The next page starts right after "c", without naming the refused topic.
    assert (answer.next_cursor.topic_name, answer.next_cursor.partition_index) == ("c\0", 0)
    plain = response_frame_of(75, 0, dtp_upstream(["a", "c"], cursor=("c", 5)))
    assert verdict.transform(plain) is plain


# --- every supported version -------------------------------------------------------------


TOPIC_IDS = {name: uuid.uuid5(uuid.NAMESPACE_DNS, name) for name in ("a", "b")}


def key(version: int, name: str) -> str | uuid.UUID:
    """How Produce and Fetch name a topic: by id from v13 on."""
    return TOPIC_IDS[name] if version >= 13 else name


def _requests_for_every_version() -> Iterable[tuple[int, int, Callable[[], Any]]]:
    for api in (
        LIST_OFFSETS_API,
        DELETE_RECORDS_API,
        OFFSET_FOR_LEADER_EPOCH_API,
        DESCRIBE_PRODUCERS_API,
    ):
        for version in supported_versions(api.api_key):
            yield api.api_key, version, lambda api=api, v=version: partitioned_request(api, v, SPEC)
    for version in range(3, 14):
        yield (
            0,
            version,
            lambda v=version: produce_request(v, [(key(v, "a"), [0]), (key(v, "b"), [1])]),
        )
    for version in supported_versions(1):
        yield (
            1,
            version,
            lambda v=version: fetch_request(v, [(key(v, "a"), [0]), (key(v, "b"), [1])]),
        )
    for version in supported_versions(3):
        yield 3, version, lambda v=version: metadata_request(v, ["a", "b"], auto_create=True)
    yield 75, 0, lambda: dtp_request(["a", "b"])


@pytest.mark.parametrize(("api_key", "version", "build"), list(_requests_for_every_version()))
def test_every_supported_version_is_handled(
    api_key: int, version: int, build: Callable[[], Any]
) -> None:
    """Allowed: the original frame; "b" refused: a split or a local answer, never an error."""
    frame = request_frame_of(api_key, version, build())
    allowed = allowing(allow_all=True, a=TOPIC_IDS["a"], b=TOPIC_IDS["b"])
    assert_untouched(HANDLERS[api_key](allowed, frame, version), frame)
    ctx = allowing(a=TOPIC_IDS["a"], b=TOPIC_IDS["b"])
    ctx.authorizer.listed = {(op, TOPIC, "a") for op in Operation} | {
        (Operation.CREATE, CLUSTER, CLUSTER_NAME)
    }
    verdict = HANDLERS[api_key](ctx, frame, version)
    assert [d.name for d in verdict.denials] == ["b"]
    assert verdict.forward is not None and verdict.transform is not None


# --- malformed input -----------------------------------------------------------------------


def test_malformed_produce_request_raises_message_error() -> None:
    frame = request_frame_of(0, 9, produce_request(9, [("a", [0])]))
    with pytest.raises(MessageError, match="malformed Produce v9"):
        produce.authorize_produce(allowing(allow_all=True), frame[:-5], 9)


def test_malformed_upstream_responses_raise_message_error() -> None:
    fetch = fetch_request(12, [("a", [0]), ("secret", [1])])
    verdict = fetch_sessions.authorize_fetch(
        allowing(*topic_grants(Operation.READ, "a")), request_frame_of(1, 12, fetch), 12
    )
    assert verdict.transform is not None
    upstream = response_frame_of(1, 12, fetch_upstream(12, forwarded_body(verdict)))
    with pytest.raises(MessageError, match="malformed Fetch v12 response"):
        verdict.transform(upstream[:-8])
    metadata_verdict = metadata.authorize_metadata(
        allowing(), request_frame_of(3, 12, metadata_request(12, None)), 12
    )
    assert metadata_verdict.transform is not None
    upstream = response_frame_of(3, 12, metadata_upstream(12, [("a", NONE, None)]))
    with pytest.raises(MessageError, match="malformed Metadata v12 response"):
        metadata_verdict.transform(upstream[:-12])


def test_metadata_repeated_topic_is_asked_and_answered_once() -> None:
    frame = request_frame_of(3, 9, metadata_request(9, ["secret", "a", "secret"]))
    ctx = allowing(*topic_grants(Operation.DESCRIBE, "a"))
    verdict = metadata.authorize_metadata(ctx, frame, 9)
    assert ctx.authorizer.questions == topic_grants(Operation.DESCRIBE, "secret", "a")
    assert [t.name for t in forwarded_body(verdict).topics] == ["a"]
    answer = transformed(verdict, 3, 9, metadata_upstream(9, [("a", NONE, None)]))
    assert metadata_topics(answer) == [("a", NONE, 1), ("secret", DENIED, 0)]
