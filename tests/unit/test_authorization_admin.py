"""Per-API authorization of the admin APIs, and the fallback for unlisted APIs.

Frames are built with kio and ``encode_request_header``; the fake authorizer
(tests/authorization_fakes.py, ``allowing``) allows exactly the (operation, resource)
triples it is given and records what it was asked. Verdicts are checked the way the
session uses them: the forwarded frame (the very same object when nothing changes),
the local response decoded with kio, and the transform applied to a made-up upstream
response.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections import Counter
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.api_table import API_TABLE
from codec.errors import (
    CLUSTER_AUTHORIZATION_FAILED,
    GROUP_AUTHORIZATION_FAILED,
    INVALID_REQUEST,
    TOPIC_AUTHORIZATION_FAILED,
)
from codec.headers import encode_request_header
from policies.acl.model import CLUSTER_NAME, Operation, ResourceType
from policies.authorization import NO_AUTHORIZATION
from policies.authorization.admin import (
    CLUSTER_OPERATIONS,
    HANDLERS,
    UNKNOWN_TOPIC_ID,
    UNLISTED_CLUSTER_OPERATIONS,
    authorize_unlisted,
)
from policies.authorization.error_response import build_entity, element_type
from policies.authorization.messages import (
    decode_response,
    request_class,
    response_class,
)
from policies.authorization.verdict import Denial, RequestVerdict
from tests.authorization_fakes import (
    CORRELATION_ID,
    REFUSING_RULE,
    FakeContext,
    Question,
    allowing,
    forwarded_body,
    local_answer,
    request_frame,
    response_frame,
    transformed,
)

CLUSTER = (ResourceType.CLUSTER, CLUSTER_NAME)
CREATE_TOPICS, DELETE_TOPICS, CREATE_PARTITIONS = 19, 20, 37
DESCRIBE_CONFIGS, ALTER_CONFIGS, INCREMENTAL_ALTER_CONFIGS = 32, 33, 44
DESCRIBE_CLUSTER = 60
TOPIC_CONFIG, BROKER_CONFIG, BROKER_LOGGER, CLIENT_METRICS, GROUP_CONFIG = 2, 4, 8, 16, 32
ZERO_UUID = uuid.UUID(int=0)


def versions(key: int) -> range:
    _, low, high, _ = API_TABLE[key]
    return range(low, high + 1)


# --- Helpers ----------------------------------------------------------------------

#: Admin tests name only the fields that matter; ``build_entity`` defaults the rest.
admin_request = partial(request_frame, fill_defaults=True)
admin_response = partial(response_frame, fill_defaults=True)


def on_topic(operation: Operation, name: str) -> Question:
    return (operation, ResourceType.TOPIC, name)


def on_cluster(operation: Operation) -> Question:
    return (operation, *CLUSTER)


def request_entry(key: int, version: int, field: str, **fields: Any) -> Any:
    return build_entity(element_type(request_class(key, version), field), **fields)


def response_entry(key: int, version: int, field: str, **fields: Any) -> Any:
    return build_entity(element_type(response_class(key, version), field), **fields)


def authorize(ctx: FakeContext, frame: bytes, key: int, version: int) -> RequestVerdict:
    return HANDLERS[key](ctx, frame, version)


def denied(*triples: tuple[Operation, ResourceType, str]) -> set[tuple[Any, ...]]:
    return set(triples)


def denial_triples(verdict: RequestVerdict) -> set[tuple[Any, ...]]:
    assert all(isinstance(d, Denial) and d.rule == REFUSING_RULE for d in verdict.denials)
    assert len(verdict.denials) == len(
        {(d.operation, d.resource_type, d.name) for d in verdict.denials}
    )
    return {(d.operation, d.resource_type, d.name) for d in verdict.denials}


# --- The registry -----------------------------------------------------------------


def test_handlers_cover_the_admin_apis_and_nothing_unauthorized() -> None:
    expected = {CREATE_TOPICS, DELETE_TOPICS, CREATE_PARTITIONS, DESCRIBE_CONFIGS}
    expected |= {ALTER_CONFIGS, INCREMENTAL_ALTER_CONFIGS, DESCRIBE_CLUSTER, *CLUSTER_OPERATIONS}
    assert set(HANDLERS) == expected
    assert not set(HANDLERS) & NO_AUTHORIZATION
    assert not set(UNLISTED_CLUSTER_OPERATIONS) & set(HANDLERS)


# --- CreateTopics -----------------------------------------------------------------


def create_topics_frame(version: int, *names: str, validate_only: bool = False) -> bytes:
    topics = tuple(
        request_entry(CREATE_TOPICS, version, "topics", name=n, num_partitions=3) for n in names
    )
    return admin_request(CREATE_TOPICS, version, topics=topics, validate_only=validate_only)


def created(version: int, name: str, **fields: Any) -> Any:
    return response_entry(CREATE_TOPICS, version, "topics", name=name, **fields)


@pytest.mark.parametrize("version", versions(CREATE_TOPICS))
def test_create_topics_with_cluster_create_forwards_the_original_frame(version: int) -> None:
    frame = create_topics_frame(version, "a", "b")
    describable = [on_topic(Operation.DESCRIBE_CONFIGS, n) for n in "ab"]
    verdict = authorize(allowing(on_cluster(Operation.CREATE), *describable), frame, 19, version)
    assert verdict.forward is frame
    assert verdict.transform is None
    assert verdict.denials == []


@pytest.mark.parametrize("version", versions(CREATE_TOPICS))
def test_create_topics_with_topic_create_forwards_the_original_frame(version: int) -> None:
    frame = create_topics_frame(version, "a", "b")
    rules = [on_topic(op, n) for n in "ab" for op in (Operation.CREATE, Operation.DESCRIBE_CONFIGS)]
    verdict = authorize(allowing(*rules), frame, CREATE_TOPICS, version)
    assert verdict.forward is frame
    assert verdict.transform is None
    assert verdict.denials == []  # the refused cluster-wide Create is not a denial, as in Kafka


@pytest.mark.parametrize("version", versions(CREATE_TOPICS))
def test_create_topics_all_refused_is_answered_locally(version: int) -> None:
    frame = create_topics_frame(version, "a", "b", "a")
    verdict = authorize(allowing(), frame, CREATE_TOPICS, version)
    body = local_answer(verdict, CREATE_TOPICS, version)
    assert [t.name for t in body.topics] == ["a", "b"]
    for topic in body.topics:
        assert topic.error_code == TOPIC_AUTHORIZATION_FAILED
        assert topic.error_message == "Authorization failed."
        if version >= 5:
            assert (topic.num_partitions, topic.replication_factor) == (-1, -1)
    assert denial_triples(verdict) == denied(
        on_topic(Operation.CREATE, "a"), on_topic(Operation.CREATE, "b")
    )


@pytest.mark.parametrize("version", versions(CREATE_TOPICS))
def test_create_topics_partly_allowed_forwards_the_rest_and_merges_in_order(version: int) -> None:
    frame = create_topics_frame(version, "a", "secret", "b", validate_only=True)
    rules = [on_topic(op, n) for n in "ab" for op in (Operation.CREATE, Operation.DESCRIBE_CONFIGS)]
    verdict = authorize(allowing(*rules), frame, CREATE_TOPICS, version)

    forwarded = forwarded_body(verdict)
    assert [t.name for t in forwarded.topics] == ["a", "b"]
    assert forwarded.validate_only is True
    assert forwarded.topics[0].num_partitions == 3
    assert verdict.forward is not None
    assert verdict.forward[:8] == frame[:8]  # same header, correlation id included

    upstream = admin_response(
        CREATE_TOPICS, version, topics=(created(version, "b"), created(version, "a"))
    )
    merged = transformed(verdict, CREATE_TOPICS, version, upstream)
    assert [(t.name, t.error_code) for t in merged.topics] == [
        ("a", 0),
        ("secret", TOPIC_AUTHORIZATION_FAILED),
        ("b", 0),
    ]
    assert denial_triples(verdict) == denied(on_topic(Operation.CREATE, "secret"))


@pytest.mark.parametrize("version", [5, 6, 7])
def test_create_topics_hides_configs_without_describe_configs(version: int) -> None:
    frame = create_topics_frame(version, "open", "closed")
    rules = [on_topic(Operation.CREATE, n) for n in ("open", "closed")]
    rules.append(on_topic(Operation.DESCRIBE_CONFIGS, "open"))
    verdict = authorize(allowing(*rules), frame, CREATE_TOPICS, version)
    assert verdict.forward is frame  # nothing refused: the request goes as is ...
    config_cls = element_type(element_type(response_class(19, version), "topics"), "configs")
    configs = (build_entity(config_cls, name="retention.ms", value="1"),)
    upstream = admin_response(
        CREATE_TOPICS,
        version,
        topics=tuple(
            created(version, n, num_partitions=3, replication_factor=2, configs=configs)
            for n in ("open", "closed")
        ),
    )
    open_result, closed_result = transformed(verdict, CREATE_TOPICS, version, upstream).topics
    # ... but the answer keeps configs only where DescribeConfigs is allowed, as Kafka.
    assert (
        open_result.configs,
        open_result.num_partitions,
        open_result.topic_config_error_code,
    ) == (
        configs,
        3,
        0,
    )
    assert closed_result.configs == ()
    assert (closed_result.num_partitions, closed_result.replication_factor) == (-1, -1)
    assert closed_result.topic_config_error_code == TOPIC_AUTHORIZATION_FAILED
    assert verdict.denials == []  # Kafka does not log the DescribeConfigs refusal


@pytest.mark.parametrize("version", [2, 4])
def test_create_topics_before_v5_needs_no_describe_configs(version: int) -> None:
    frame = create_topics_frame(version, "t")
    verdict = authorize(allowing(on_topic(Operation.CREATE, "t")), frame, CREATE_TOPICS, version)
    assert verdict.forward is frame
    assert verdict.transform is None


def test_create_topics_asks_each_question_once() -> None:
    ctx = allowing(on_topic(Operation.CREATE, "a"))
    frame = create_topics_frame(7, "a", "a", "b", "b", "a")
    authorize(ctx, frame, CREATE_TOPICS, 7)
    counts = Counter(ctx.authorizer.questions)
    assert counts and max(counts.values()) == 1
    assert set(counts) == {
        on_cluster(Operation.CREATE),
        on_topic(Operation.CREATE, "a"),
        on_topic(Operation.CREATE, "b"),
        on_topic(Operation.DESCRIBE_CONFIGS, "a"),
    }


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=8),
    allowed=st.sets(st.sampled_from("abcdefg")),
    data=st.data(),
)
def test_create_topics_merge_follows_the_client_order(
    names: list[str], allowed: set[str], data: st.DataObject
) -> None:
    rules = [
        on_topic(op, n) for n in allowed for op in (Operation.CREATE, Operation.DESCRIBE_CONFIGS)
    ]
    verdict = authorize(allowing(*rules), create_topics_frame(7, *names), CREATE_TOPICS, 7)
    distinct = list(dict.fromkeys(names))
    if not set(names) & allowed:
        body = local_answer(verdict, CREATE_TOPICS, 7)
        assert [t.name for t in body.topics] == distinct
        return
    forwarded = [t.name for t in forwarded_body(verdict).topics]
    assert forwarded == [n for n in names if n in allowed]
    if verdict.transform is None:
        assert verdict.forward is not None and set(names) <= allowed
        return
    # The broker answers each distinct forwarded topic once, in any order.
    answered = data.draw(st.permutations(list(dict.fromkeys(forwarded))))
    upstream = admin_response(
        CREATE_TOPICS, 7, topics=tuple(created(7, n, num_partitions=1) for n in answered)
    )
    merged = transformed(verdict, CREATE_TOPICS, 7, upstream).topics
    assert [t.name for t in merged] == distinct
    for topic in merged:
        expected = 0 if topic.name in allowed else TOPIC_AUTHORIZATION_FAILED
        assert topic.error_code == expected


# --- DeleteTopics -----------------------------------------------------------------


@pytest.mark.parametrize("version", range(1, 6))
def test_delete_topics_by_name_partly_allowed(version: int) -> None:
    frame = admin_request(DELETE_TOPICS, version, topic_names=("x", "keep", "y"))
    ctx = allowing(on_topic(Operation.DELETE, "x"), on_topic(Operation.DELETE, "y"))
    verdict = authorize(ctx, frame, DELETE_TOPICS, version)
    assert forwarded_body(verdict).topic_names == ("x", "y")
    upstream = admin_response(
        DELETE_TOPICS,
        version,
        responses=tuple(response_entry(20, version, "responses", name=n) for n in ("y", "x")),
    )
    merged = transformed(verdict, DELETE_TOPICS, version, upstream).responses
    assert [(r.name, r.error_code) for r in merged] == [
        ("x", 0),
        ("keep", TOPIC_AUTHORIZATION_FAILED),
        ("y", 0),
    ]
    if version >= 5:
        assert merged[1].error_message == "Topic authorization failed."
    assert denial_triples(verdict) == denied(on_topic(Operation.DELETE, "keep"))


@pytest.mark.parametrize("version", versions(DELETE_TOPICS))
def test_delete_topics_all_refused_and_cluster_delete(version: int) -> None:
    if version >= 6:
        topics = (request_entry(20, version, "topics", name="x", topic_id=None),)
        frame = admin_request(DELETE_TOPICS, version, topics=topics)
    else:
        frame = admin_request(DELETE_TOPICS, version, topic_names=("x",))
    body = local_answer(
        authorize(allowing(), frame, DELETE_TOPICS, version), DELETE_TOPICS, version
    )
    assert [(r.name, r.error_code) for r in body.responses] == [("x", TOPIC_AUTHORIZATION_FAILED)]
    everything = authorize(allowing(on_cluster(Operation.DELETE)), frame, DELETE_TOPICS, version)
    assert everything.forward is frame
    assert everything.transform is None


def test_delete_topics_v6_by_id() -> None:
    allowed_id, refused_id, hidden_id, unknown_id = (uuid.uuid4() for _ in range(4))
    entries = (
        request_entry(20, 6, "topics", name=None, topic_id=allowed_id),
        request_entry(20, 6, "topics", name=None, topic_id=refused_id),
        request_entry(20, 6, "topics", name="by-name", topic_id=None),
        request_entry(20, 6, "topics", name=None, topic_id=hidden_id),
        request_entry(20, 6, "topics", name=None, topic_id=unknown_id),
    )
    frame = admin_request(DELETE_TOPICS, 6, topics=entries)
    ctx = allowing(
        on_topic(Operation.DELETE, "ok"),
        on_topic(Operation.DELETE, "by-name"),
        on_topic(Operation.DESCRIBE, "visible"),
        ok=allowed_id,
        visible=refused_id,
        hidden=hidden_id,
    )
    verdict = authorize(ctx, frame, DELETE_TOPICS, 6)
    forwarded = forwarded_body(verdict).topics
    assert [(t.name, t.topic_id) for t in forwarded] == [(None, allowed_id), ("by-name", None)]

    by_name_id = uuid.uuid4()
    upstream = admin_response(
        DELETE_TOPICS,
        6,
        responses=(
            response_entry(20, 6, "responses", name="by-name", topic_id=by_name_id),
            response_entry(20, 6, "responses", name="ok", topic_id=allowed_id),
        ),
    )
    merged = transformed(verdict, DELETE_TOPICS, 6, upstream).responses
    assert [(r.name, r.topic_id, r.error_code) for r in merged] == [
        ("ok", allowed_id, 0),
        ("visible", refused_id, TOPIC_AUTHORIZATION_FAILED),  # describable: name shown
        ("by-name", by_name_id, 0),
        (None, hidden_id, TOPIC_AUTHORIZATION_FAILED),  # not describable: name withheld
        (None, unknown_id, UNKNOWN_TOPIC_ID),
    ]
    assert denial_triples(verdict) == denied(
        on_topic(Operation.DELETE, "visible"), on_topic(Operation.DELETE, "hidden")
    )


# --- CreatePartitions -------------------------------------------------------------


@pytest.mark.parametrize("version", versions(CREATE_PARTITIONS))
def test_create_partitions(version: int) -> None:
    topics = tuple(request_entry(37, version, "topics", name=n, count=6) for n in ("p", "q"))
    frame = admin_request(CREATE_PARTITIONS, version, topics=topics)

    everything = allowing(on_topic(Operation.ALTER, "p"), on_topic(Operation.ALTER, "q"))
    assert authorize(everything, frame, CREATE_PARTITIONS, version).forward is frame

    nothing = authorize(allowing(), frame, CREATE_PARTITIONS, version)
    body = local_answer(nothing, CREATE_PARTITIONS, version)
    assert [(r.name, r.error_code, r.error_message) for r in body.results] == [
        ("p", TOPIC_AUTHORIZATION_FAILED, None),
        ("q", TOPIC_AUTHORIZATION_FAILED, None),
    ]

    partly = authorize(allowing(on_topic(Operation.ALTER, "q")), frame, CREATE_PARTITIONS, version)
    assert [t.name for t in forwarded_body(partly).topics] == ["q"]
    upstream = admin_response(
        CREATE_PARTITIONS, version, results=(response_entry(37, version, "results", name="q"),)
    )
    merged = transformed(partly, CREATE_PARTITIONS, version, upstream).results
    assert [(r.name, r.error_code) for r in merged] == [("p", TOPIC_AUTHORIZATION_FAILED), ("q", 0)]
    assert denial_triples(partly) == denied(on_topic(Operation.ALTER, "p"))


# --- Config APIs ----------------------------------------------------------------


def config_frame(key: int, version: int, *resources: tuple[int, str]) -> bytes:
    entries = tuple(
        request_entry(key, version, "resources", resource_type=t, resource_name=n)
        for t, n in resources
    )
    return admin_request(key, version, resources=entries)


MIXED = (
    (TOPIC_CONFIG, "open"),
    (TOPIC_CONFIG, "closed"),
    (BROKER_CONFIG, "1"),
    (GROUP_CONFIG, "g"),
)


@pytest.mark.parametrize("version", versions(DESCRIBE_CONFIGS))
def test_describe_configs_mixed_resource_types(version: int) -> None:
    frame = config_frame(DESCRIBE_CONFIGS, version, *MIXED)
    ctx = allowing(
        on_topic(Operation.DESCRIBE_CONFIGS, "open"), on_cluster(Operation.DESCRIBE_CONFIGS)
    )
    verdict = authorize(ctx, frame, DESCRIBE_CONFIGS, version)
    forwarded = forwarded_body(verdict).resources
    assert [(r.resource_type, r.resource_name) for r in forwarded] == [
        (TOPIC_CONFIG, "open"),
        (BROKER_CONFIG, "1"),
    ]
    upstream = admin_response(
        DESCRIBE_CONFIGS,
        version,
        results=tuple(
            response_entry(32, version, "results", resource_type=t, resource_name=n)
            for t, n in ((BROKER_CONFIG, "1"), (TOPIC_CONFIG, "open"))
        ),
    )
    merged = transformed(verdict, DESCRIBE_CONFIGS, version, upstream).results
    assert [(r.resource_type, r.resource_name, r.error_code, r.error_message) for r in merged] == [
        (TOPIC_CONFIG, "open", 0, None),
        (TOPIC_CONFIG, "closed", TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed."),
        (BROKER_CONFIG, "1", 0, None),
        (GROUP_CONFIG, "g", GROUP_AUTHORIZATION_FAILED, "Group authorization failed."),
    ]
    assert denial_triples(verdict) == denied(
        on_topic(Operation.DESCRIBE_CONFIGS, "closed"),
        (Operation.DESCRIBE_CONFIGS, ResourceType.GROUP, "g"),
    )


@pytest.mark.parametrize("resource_type", [BROKER_CONFIG, BROKER_LOGGER, CLIENT_METRICS])
def test_describe_configs_of_cluster_resources_needs_the_cluster(resource_type: int) -> None:
    frame = config_frame(DESCRIBE_CONFIGS, 4, (resource_type, "1"))
    body = local_answer(authorize(allowing(), frame, DESCRIBE_CONFIGS, 4), DESCRIBE_CONFIGS, 4)
    assert [r.error_code for r in body.results] == [CLUSTER_AUTHORIZATION_FAILED]
    allowed = allowing(on_cluster(Operation.DESCRIBE_CONFIGS))
    assert authorize(allowed, frame, DESCRIBE_CONFIGS, 4).forward is frame


def test_describe_configs_with_an_unknown_resource_type_fails_as_a_whole() -> None:
    frame = config_frame(DESCRIBE_CONFIGS, 4, (TOPIC_CONFIG, "open"), (64, "what"))
    ctx = allowing(on_topic(Operation.DESCRIBE_CONFIGS, "open"))
    verdict = authorize(ctx, frame, DESCRIBE_CONFIGS, 4)
    body = local_answer(verdict, DESCRIBE_CONFIGS, 4)
    assert [(r.resource_name, r.error_code) for r in body.results] == [
        ("open", INVALID_REQUEST),
        ("what", INVALID_REQUEST),
    ]
    assert verdict.denials == []


@pytest.mark.parametrize(
    ("key", "version"),
    [(k, v) for k in (ALTER_CONFIGS, INCREMENTAL_ALTER_CONFIGS) for v in versions(k)],
)
def test_alter_configs_mixed_resource_types(key: int, version: int) -> None:
    frame = config_frame(key, version, *MIXED)
    ctx = allowing(on_topic(Operation.ALTER_CONFIGS, "open"), on_cluster(Operation.ALTER_CONFIGS))
    verdict = authorize(ctx, frame, key, version)
    assert [r.resource_name for r in forwarded_body(verdict).resources] == ["open", "1"]
    upstream = admin_response(
        key,
        version,
        responses=tuple(
            response_entry(key, version, "responses", resource_type=t, resource_name=n)
            for t, n in ((TOPIC_CONFIG, "open"), (BROKER_CONFIG, "1"))
        ),
    )
    merged = transformed(verdict, key, version, upstream).responses
    assert [(r.resource_name, r.error_code) for r in merged] == [
        ("open", 0),
        ("closed", TOPIC_AUTHORIZATION_FAILED),
        ("1", 0),
        ("g", GROUP_AUTHORIZATION_FAILED),
    ]
    everything = allowing(
        on_topic(Operation.ALTER_CONFIGS, "open"),
        on_topic(Operation.ALTER_CONFIGS, "closed"),
        on_cluster(Operation.ALTER_CONFIGS),
        (Operation.ALTER_CONFIGS, ResourceType.GROUP, "g"),
    )
    assert authorize(everything, frame, key, version).forward is frame


def test_broker_logger_is_altered_only_incrementally() -> None:
    ctx = allowing(on_cluster(Operation.ALTER_CONFIGS))
    incremental = config_frame(INCREMENTAL_ALTER_CONFIGS, 1, (BROKER_LOGGER, "1"))
    assert authorize(ctx, incremental, INCREMENTAL_ALTER_CONFIGS, 1).forward is incremental
    legacy = config_frame(ALTER_CONFIGS, 2, (BROKER_LOGGER, "1"))
    body = local_answer(authorize(ctx, legacy, ALTER_CONFIGS, 2), ALTER_CONFIGS, 2)
    assert [(r.error_code, r.error_message) for r in body.responses] == [
        (INVALID_REQUEST, "Unknown resource type 8")
    ]


# --- APIs authorized on the cluster -----------------------------------------------


CLUSTER_VERSIONS = [(k, v) for k in sorted(CLUSTER_OPERATIONS) for v in versions(k)]


@pytest.mark.parametrize(("key", "version"), CLUSTER_VERSIONS)
def test_cluster_operation_allowed_forwards_the_original_frame(key: int, version: int) -> None:
    frame = admin_request(key, version)
    ctx = allowing(on_cluster(CLUSTER_OPERATIONS[key]))
    verdict = authorize(ctx, frame, key, version)
    assert verdict.forward is frame
    assert verdict.transform is None
    assert ctx.authorizer.questions == [on_cluster(CLUSTER_OPERATIONS[key])]


@pytest.mark.parametrize(("key", "version"), CLUSTER_VERSIONS)
def test_cluster_operation_refused_is_answered_locally(key: int, version: int) -> None:
    frame = admin_request(key, version)
    other = Operation.READ  # any cluster permission but the one needed does not help
    verdict = authorize(allowing(on_cluster(other)), frame, key, version)
    body = local_answer(verdict, key, version)
    if "error_code" in {f.name for f in dataclasses.fields(body)}:
        assert body.error_code == CLUSTER_AUTHORIZATION_FAILED
    assert denial_triples(verdict) == denied(on_cluster(CLUSTER_OPERATIONS[key]))
    assert getattr(body, "throttle_time", datetime.timedelta(0)) == datetime.timedelta(0)


def test_describe_acls_refused_has_the_top_level_error() -> None:
    verdict = authorize(allowing(), admin_request(29, 3), 29, 3)
    body = local_answer(verdict, 29, 3)
    assert (body.error_code, body.error_message) == (31, "Cluster authorization failed.")


def test_create_and_delete_acls_refused_per_entry() -> None:
    creations = tuple(request_entry(30, 3, "creations", resource_name=n) for n in ("a", "b"))
    body = local_answer(
        authorize(allowing(), admin_request(30, 3, creations=creations), 30, 3), 30, 3
    )
    assert [r.error_code for r in body.results] == [CLUSTER_AUTHORIZATION_FAILED] * 2
    filters = (request_entry(31, 3, "filters"),)
    body = local_answer(authorize(allowing(), admin_request(31, 3, filters=filters), 31, 3), 31, 3)
    assert [r.error_code for r in body.filter_results] == [CLUSTER_AUTHORIZATION_FAILED]


@pytest.mark.parametrize("version", versions(35))
def test_describe_log_dirs_refused(version: int) -> None:
    topics = (request_entry(35, version, "topics", topic="t", partitions=(0, 1)),)
    verdict = authorize(allowing(), admin_request(35, version, topics=topics), 35, version)
    body = local_answer(verdict, 35, version)
    assert body.results == ()
    if version >= 3:
        assert body.error_code == CLUSTER_AUTHORIZATION_FAILED


def test_a_refusal_that_cannot_be_answered_closes_the_connection() -> None:
    # ElectLeaders v0 has only per-partition errors; a body kio cannot read has none.
    frame = encode_request_header(43, 0, CORRELATION_ID, "c") + b"\xff\xff"
    verdict = authorize(allowing(), frame, 43, 0)
    assert verdict.forward is None and verdict.local_response is None
    assert verdict.close_connection is not None and "elect_leaders" in verdict.close_connection


# --- DescribeCluster --------------------------------------------------------------

#: Kafka's value of a bit field nobody asked for.
OMITTED = -(2**31)
#: What the broker computes for the gateway's own (powerful) upstream login.
GATEWAY_CLUSTER_BITS = sum(1 << code for code in (2, 5, 7, 8, 9, 10, 11, 12))
#: Bits of every cluster operation Kafka reports (``AclEntry.supportedOperations(CLUSTER)``):
#: Create 5, Alter 7, Describe 8, ClusterAction 9, DescribeConfigs 10, AlterConfigs 11,
#: IdempotentWrite 12.
ALL_CLUSTER_BITS = 0b1_1111_1010_0000
CLUSTER_BIT_OPERATIONS = {
    Operation.CREATE: 5,
    Operation.ALTER: 7,
    Operation.DESCRIBE: 8,
    Operation.CLUSTER_ACTION: 9,
    Operation.DESCRIBE_CONFIGS: 10,
    Operation.ALTER_CONFIGS: 11,
    Operation.IDEMPOTENT_WRITE: 12,
}


def describe_cluster_frame(version: int, *, with_operations: bool) -> bytes:
    return admin_request(
        DESCRIBE_CLUSTER,
        version,
        include_cluster_authorized_operations=with_operations,
        endpoint_type=1,
        include_fenced_brokers=False,
    )


def describe_cluster_upstream(
    version: int, bits: int = GATEWAY_CLUSTER_BITS, error_code: int = 0
) -> bytes:
    broker = response_entry(
        DESCRIBE_CLUSTER, version, "brokers", broker_id=1, host="kafka-1", port=9092, rack="r1"
    )
    return admin_response(
        DESCRIBE_CLUSTER,
        version,
        throttle_time=datetime.timedelta(milliseconds=3),
        error_code=error_code,
        error_message=None if error_code == 0 else "mismatched endpoint type",
        cluster_id="cluster-1",
        controller_id=1,
        brokers=(broker,),
        cluster_authorized_operations=bits,
    )


def test_describe_cluster_is_inspected_now() -> None:
    assert DESCRIBE_CLUSTER not in NO_AUTHORIZATION


@pytest.mark.parametrize("version", versions(DESCRIBE_CLUSTER))
def test_describe_cluster_without_operations_is_forwarded_untouched(version: int) -> None:
    frame = describe_cluster_frame(version, with_operations=False)
    ctx = allowing()
    verdict = authorize(ctx, frame, DESCRIBE_CLUSTER, version)
    assert verdict.forward is frame
    assert verdict.transform is None and verdict.local_response is None
    assert verdict.denials == [] and ctx.authorizer.questions == []


@pytest.mark.parametrize("version", versions(DESCRIBE_CLUSTER))
def test_describe_cluster_operations_are_the_clients(version: int) -> None:
    frame = describe_cluster_frame(version, with_operations=True)
    ctx = allowing(on_cluster(Operation.DESCRIBE), on_cluster(Operation.IDEMPOTENT_WRITE))
    verdict = authorize(ctx, frame, DESCRIBE_CLUSTER, version)
    assert verdict.forward is frame and verdict.local_response is None
    assert ctx.authorizer.questions == []  # asked when the answer comes back
    upstream = describe_cluster_upstream(version)
    answer = transformed(verdict, DESCRIBE_CLUSTER, version, upstream)
    assert answer.cluster_authorized_operations == (1 << 8) | (1 << 12)
    expected = dataclasses.replace(
        decode_response(upstream, DESCRIBE_CLUSTER, version),
        cluster_authorized_operations=(1 << 8) | (1 << 12),
    )
    assert answer == expected  # nothing else changes
    # Each cluster operation asked once; probes refuse nothing.
    assert Counter(ctx.authorizer.questions) == Counter(
        on_cluster(op) for op in CLUSTER_BIT_OPERATIONS
    )
    assert verdict.denials == []


@pytest.mark.parametrize("version", versions(DESCRIBE_CLUSTER))
def test_describe_cluster_operations_of_a_principal_with_every_cluster_right(version: int) -> None:
    ctx = allowing(*(on_cluster(op) for op in Operation))
    verdict = authorize(ctx, describe_cluster_frame(version, with_operations=True), 60, version)
    answer = transformed(verdict, DESCRIBE_CLUSTER, version, describe_cluster_upstream(version))
    assert answer.cluster_authorized_operations == ALL_CLUSTER_BITS


@pytest.mark.parametrize("version", versions(DESCRIBE_CLUSTER))
def test_describe_cluster_operations_are_zero_without_cluster_describe(version: int) -> None:
    """As Kafka: no Describe on the cluster, no bits at all (Alter alone is not shown)."""
    ctx = allowing(on_cluster(Operation.ALTER))
    verdict = authorize(ctx, describe_cluster_frame(version, with_operations=True), 60, version)
    answer = transformed(verdict, DESCRIBE_CLUSTER, version, describe_cluster_upstream(version))
    assert answer.cluster_authorized_operations == 0
    assert verdict.denials == []


@pytest.mark.parametrize("version", versions(DESCRIBE_CLUSTER))
def test_describe_cluster_error_answer_passes_unchanged(version: int) -> None:
    ctx = allowing(on_cluster(Operation.DESCRIBE))
    verdict = authorize(ctx, describe_cluster_frame(version, with_operations=True), 60, version)
    assert verdict.transform is not None
    upstream = describe_cluster_upstream(version, bits=OMITTED, error_code=INVALID_REQUEST)
    assert verdict.transform(upstream) is upstream


@settings(max_examples=60, deadline=None)
@given(granted=st.sets(st.sampled_from(list(CLUSTER_BIT_OPERATIONS))))
def test_describe_cluster_bits_are_exactly_the_granted_operations(
    granted: set[Operation],
) -> None:
    ctx = allowing(*(on_cluster(op) for op in granted))
    verdict = authorize(ctx, describe_cluster_frame(2, with_operations=True), DESCRIBE_CLUSTER, 2)
    answer = transformed(verdict, DESCRIBE_CLUSTER, 2, describe_cluster_upstream(2))
    expected = 0
    if Operation.DESCRIBE in granted:
        expected = sum(1 << CLUSTER_BIT_OPERATIONS[op] for op in granted)
    assert answer.cluster_authorized_operations == expected


# --- authorize_unlisted -----------------------------------------------------------


def test_unlisted_api_is_refused_without_a_cluster_rule() -> None:
    frame = admin_request(38, 3)  # CreateDelegationToken: would mint a token upstream
    verdict = authorize_unlisted(allowing(on_cluster(Operation.ALTER)), frame, 38, 3)
    body = local_answer(verdict, 38, 3)
    assert body.error_code == CLUSTER_AUTHORIZATION_FAILED
    assert denial_triples(verdict) == denied(on_cluster(Operation.ALL))


def test_unlisted_api_is_forwarded_with_all_on_the_cluster() -> None:
    frame = admin_request(38, 3)
    verdict = authorize_unlisted(allowing(on_cluster(Operation.ALL)), frame, 38, 3)
    assert verdict.forward is frame
    assert verdict.transform is None and verdict.denials == []


def test_well_known_unlisted_api_needs_kafkas_cluster_operation() -> None:
    frame = admin_request(63, 2)  # BrokerHeartbeat
    allowed = authorize_unlisted(allowing(on_cluster(Operation.CLUSTER_ACTION)), frame, 63, 2)
    assert allowed.forward is frame
    with_all = authorize_unlisted(allowing(on_cluster(Operation.ALL)), frame, 63, 2)
    assert with_all.forward is frame
    refused = authorize_unlisted(allowing(on_cluster(Operation.DESCRIBE)), frame, 63, 2)
    assert local_answer(refused, 63, 2).error_code == CLUSTER_AUTHORIZATION_FAILED
    assert denial_triples(refused) == denied(on_cluster(Operation.CLUSTER_ACTION))


def test_unknown_api_key_is_forwarded_only_with_all_and_otherwise_closes() -> None:
    frame = encode_request_header(1000, 0, CORRELATION_ID, "c") + b"opaque"
    assert authorize_unlisted(allowing(on_cluster(Operation.ALL)), frame, 1000, 0).forward is frame
    refused = authorize_unlisted(allowing(), frame, 1000, 0)
    assert refused.forward is None and refused.local_response is None
    assert refused.close_connection is not None
