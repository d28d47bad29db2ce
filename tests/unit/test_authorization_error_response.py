"""The generic "refused as a whole" response builder, over every API kio knows.

Requests are built with kio, refused with ``whole_request_error_response``, and the
answer decoded with kio again: it must be a valid response of the same API and
version, with the request's correlation id, and carry the error wherever the
response has a top-level error field, or in the entries mirrored from the request.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing
import uuid
from typing import Any

import pytest
import test_codec_strategies  # noqa: F401  (registers a strategy for kio's Records)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec.api_table import API_TABLE
from codec.errors import CLUSTER_AUTHORIZATION_FAILED, INVALID_REQUEST
from codec.headers import encode_request_header, response_correlation_id
from policies.authorization.error_response import (
    AUTHORIZATION_FAILED_MESSAGE,
    build_entity,
    element_type,
    error_response_body,
    kafka_error_message,
    whole_request_error_response,
)
from policies.authorization.messages import (
    decode_response,
    encode_response,
    request_class,
    response_class,
)
from tests.authorization_fakes import CORRELATION_ID, request_frame_of

ALL_VERSIONS = [
    (key, version)
    for key, (_, low, high, _) in sorted(API_TABLE.items())
    for version in range(low, high + 1)
]


def request(key: int, version: int, **fields: Any) -> Any:
    return build_entity(request_class(key, version), **fields)


def entry(key: int, version: int, field: str, kind: str = "request", **fields: Any) -> Any:
    cls = request_class(key, version) if kind == "request" else response_class(key, version)
    return build_entity(element_type(cls, field), **fields)


def refuse(key: int, version: int, body: Any, code: int = CLUSTER_AUTHORIZATION_FAILED) -> Any:
    """The decoded refusal of ``body``; fails the test if there is none."""
    response = whole_request_error_response(
        request_frame_of(key, version, body), key, version, code
    )
    assert response is not None
    assert response_correlation_id(response) == CORRELATION_ID
    return decode_response(response, key, version)


def top_level_fields(body: Any, kafka_type: str) -> list[str]:
    return [f.name for f in dataclasses.fields(body) if f.metadata.get("kafka_type") == kafka_type]


# --- Every API and version --------------------------------------------------------


@pytest.mark.parametrize(("key", "version"), ALL_VERSIONS)
def test_every_api_answers_an_empty_request(key: int, version: int) -> None:
    body = refuse(key, version, request(key, version))
    for name in top_level_fields(body, "error_code"):
        assert getattr(body, name) == CLUSTER_AUTHORIZATION_FAILED, name
    if "error_message" in top_level_fields(body, "string"):
        assert body.error_message == AUTHORIZATION_FAILED_MESSAGE
    for name in top_level_fields(body, "timedelta_i32"):
        assert getattr(body, name) == datetime.timedelta(0), name


def _carried_codes(entity: Any) -> list[int]:
    """Every error_code value in ``entity``, at any depth."""
    codes: list[int] = []
    for f in dataclasses.fields(entity):
        value = getattr(entity, f.name)
        if f.metadata.get("kafka_type") == "error_code":
            codes.append(int(value))
        elif dataclasses.is_dataclass(value):
            codes += _carried_codes(value)
        elif isinstance(value, tuple):
            for item in value:
                if dataclasses.is_dataclass(item):
                    codes += _carried_codes(item)
    return codes


def _requests_of_any_api() -> st.SearchStrategy[tuple[int, int, Any]]:
    return st.sampled_from(ALL_VERSIONS).flatmap(
        lambda kv: st.tuples(st.just(kv[0]), st.just(kv[1]), st.from_type(request_class(*kv)))
    )


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(_requests_of_any_api())
def test_any_request_gets_a_valid_refusal_carrying_the_error(sample: tuple[int, int, Any]) -> None:
    key, version, body = sample
    frame = request_frame_of(key, version, body)
    response = whole_request_error_response(frame, key, version, CLUSTER_AUTHORIZATION_FAILED)
    has_top_level_error = bool(top_level_fields(response_class(key, version), "error_code"))
    if response is None:
        # Only a response with per-entry errors alone may be impossible to build.
        assert not has_top_level_error
        return
    decoded = decode_response(response, key, version)
    assert response_correlation_id(response) == CORRELATION_ID
    codes = _carried_codes(decoded)
    assert set(codes) <= {CLUSTER_AUTHORIZATION_FAILED}
    if has_top_level_error:
        assert codes, "a top-level error field must carry the error"


# --- Kafka's shapes for the admin APIs ----------------------------------------------


def test_create_acls_answers_each_creation() -> None:
    creations = tuple(
        entry(30, 3, "creations", resource_name=f"t{i}", principal="User:x", host="*")
        for i in range(3)
    )
    body = refuse(30, 3, request(30, 3, creations=creations))
    assert [r.error_code for r in body.results] == [CLUSTER_AUTHORIZATION_FAILED] * 3
    assert {r.error_message for r in body.results} == {AUTHORIZATION_FAILED_MESSAGE}


def test_delete_acls_answers_each_filter_with_no_matching_acls() -> None:
    filters = (entry(31, 3, "filters"), entry(31, 3, "filters"))
    body = refuse(31, 3, request(31, 3, filters=filters))
    assert [r.error_code for r in body.filter_results] == [CLUSTER_AUTHORIZATION_FAILED] * 2
    assert all(r.matching_acls == () for r in body.filter_results)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_describe_acls_has_a_top_level_error(version: int) -> None:
    body = refuse(29, version, request(29, version))
    assert body.error_code == CLUSTER_AUTHORIZATION_FAILED
    assert body.resources == ()


def test_elect_leaders_answers_each_partition_and_at_top_level() -> None:
    topics = (entry(43, 2, "topic_partitions", topic="orders", partitions=(0, 2)),)
    body = refuse(43, 2, request(43, 2, topic_partitions=topics))
    assert body.error_code == CLUSTER_AUTHORIZATION_FAILED
    (result,) = body.replica_election_results
    assert result.topic == "orders"
    assert [(p.partition_id, p.error_code) for p in result.partition_result] == [
        (0, CLUSTER_AUTHORIZATION_FAILED),
        (2, CLUSTER_AUTHORIZATION_FAILED),
    ]


def test_elect_leaders_v0_has_only_per_partition_errors() -> None:
    topics = (entry(43, 0, "topic_partitions", topic="orders", partitions=(1,)),)
    body = refuse(43, 0, request(43, 0, topic_partitions=topics))
    assert body.replica_election_results[0].partition_result[0].error_code == 31


def test_alter_replica_log_dirs_answers_per_topic_across_directories() -> None:
    topic_cls = element_type(element_type(request_class(34, 2), "dirs"), "topics")
    dirs = (
        entry(
            34, 2, "dirs", path="/a", topics=(build_entity(topic_cls, name="x", partitions=(0,)),)
        ),
        entry(
            34, 2, "dirs", path="/b", topics=(build_entity(topic_cls, name="y", partitions=(3,)),)
        ),
    )
    body = refuse(34, 2, request(34, 2, dirs=dirs))
    assert [(r.topic_name, [p.partition_index for p in r.partitions]) for r in body.results] == [
        ("x", [0]),
        ("y", [3]),
    ]
    assert {p.error_code for r in body.results for p in r.partitions} == {31}


def test_alter_user_scram_credentials_answers_each_user_once_sorted() -> None:
    body = refuse(
        51,
        0,
        request(
            51,
            0,
            deletions=(entry(51, 0, "deletions", name="zed"),),
            upsertions=(
                entry(51, 0, "upsertions", name="amy"),
                entry(51, 0, "upsertions", name="zed"),
            ),
        ),
    )
    assert [(r.user, r.error_code) for r in body.results] == [("amy", 31), ("zed", 31)]


def test_describe_user_scram_credentials_names_each_user() -> None:
    body = refuse(50, 0, request(50, 0, users=(entry(50, 0, "users", name="amy"),)))
    assert body.error_code == CLUSTER_AUTHORIZATION_FAILED
    assert [(r.user, r.error_code) for r in body.results] == [("amy", 31)]


def test_alter_partition_reassignments_mirrors_topics_and_partitions() -> None:
    partition_cls = element_type(element_type(request_class(45, 0), "topics"), "partitions")
    topics = (
        entry(
            45, 0, "topics", name="t", partitions=(build_entity(partition_cls, partition_index=4),)
        ),
    )
    body = refuse(45, 0, request(45, 0, topics=topics))
    assert body.error_code == CLUSTER_AUTHORIZATION_FAILED
    assert [(r.name, r.partitions[0].partition_index) for r in body.responses] == [("t", 4)]
    assert body.responses[0].partitions[0].error_code == CLUSTER_AUTHORIZATION_FAILED


def test_alter_client_quotas_mirrors_the_entity_of_each_entry() -> None:
    entity_cls = element_type(element_type(request_class(49, 1), "entries"), "entity")
    entries = (
        entry(
            49,
            1,
            "entries",
            entity=(build_entity(entity_cls, entity_type="user", entity_name="amy"),),
        ),
    )
    body = refuse(49, 1, request(49, 1, entries=entries))
    (result,) = body.entries
    assert result.error_code == CLUSTER_AUTHORIZATION_FAILED
    assert [(e.entity_type, e.entity_name) for e in result.entity] == [("user", "amy")]


def test_describe_quorum_reports_only_the_top_level_error() -> None:
    partition_cls = element_type(element_type(request_class(55, 2), "topics"), "partitions")
    topics = (
        entry(
            55,
            2,
            "topics",
            topic_name="__cluster_metadata",
            partitions=(build_entity(partition_cls, partition_index=0),),
        ),
    )
    body = refuse(55, 2, request(55, 2, topics=topics))
    assert body.error_code == CLUSTER_AUTHORIZATION_FAILED
    assert body.topics == ()


@pytest.mark.parametrize("version", range(1, 6))
def test_describe_log_dirs_top_level_error_or_empty_results(version: int) -> None:
    topics = (entry(35, version, "topics", topic="t", partitions=(0,)),)
    body = refuse(35, version, request(35, version, topics=topics))
    assert body.results == ()
    if version >= 3:
        assert body.error_code == CLUSTER_AUTHORIZATION_FAILED


def test_describe_configs_answers_each_resource_by_type_and_name() -> None:
    resources = (
        entry(32, 4, "resources", resource_type=2, resource_name="orders"),
        entry(32, 4, "resources", resource_type=4, resource_name="1"),
    )
    body = refuse(32, 4, request(32, 4, resources=resources), INVALID_REQUEST)
    assert [(r.resource_type, r.resource_name, r.error_code) for r in body.results] == [
        (2, "orders", INVALID_REQUEST),
        (4, "1", INVALID_REQUEST),
    ]


def test_the_error_message_can_be_chosen() -> None:
    frame = request_frame_of(29, 3, request(29, 3))
    message = kafka_error_message(CLUSTER_AUTHORIZATION_FAILED)
    response = whole_request_error_response(frame, 29, 3, CLUSTER_AUTHORIZATION_FAILED, message)
    assert response is not None
    assert decode_response(response, 29, 3).error_message == "Cluster authorization failed."


# --- When no response can be built ------------------------------------------------


def test_unknown_api_key_has_no_response() -> None:
    frame = encode_request_header(1000, 0, CORRELATION_ID, None) + b"\x00\x01"
    assert whole_request_error_response(frame, 1000, 0, CLUSTER_AUTHORIZATION_FAILED) is None


def test_truncated_header_has_no_response() -> None:
    assert whole_request_error_response(b"\x00\x13", 19, 7, CLUSTER_AUTHORIZATION_FAILED) is None


def test_undecodable_request_without_top_level_error_has_no_response() -> None:
    frame = encode_request_header(19, 7, CORRELATION_ID, "c") + b"\xff\xff\xff"
    assert whole_request_error_response(frame, 19, 7, CLUSTER_AUTHORIZATION_FAILED) is None


def test_undecodable_request_with_top_level_error_still_gets_it() -> None:
    frame = encode_request_header(29, 3, CORRELATION_ID, "c") + b"\xff"
    response = whole_request_error_response(frame, 29, 3, CLUSTER_AUTHORIZATION_FAILED)
    assert response is not None
    assert decode_response(response, 29, 3).error_code == CLUSTER_AUTHORIZATION_FAILED


def test_error_response_body_of_unknown_version_is_none() -> None:
    assert error_response_body(19, 99, None, CLUSTER_AUTHORIZATION_FAILED) is None


# --- build_entity -------------------------------------------------------------------


def test_build_entity_fills_defaults_and_ignores_fields_of_other_versions() -> None:
    v2_cls = element_type(response_class(19, 2), "topics")
    v7_cls = element_type(response_class(19, 7), "topics")
    fields = {"name": "t", "error_code": 29, "num_partitions": 3}
    v2, v7 = build_entity(v2_cls, **fields), build_entity(v7_cls, **fields)
    assert (v2.name, v2.error_code, v2.error_message) == ("t", 29, None)
    assert not hasattr(v2, "num_partitions")
    assert (v7.num_partitions, v7.replication_factor, v7.topic_id) == (3, -1, uuid.UUID(int=0))
    assert v7.configs == ()
    assert type(v7.error_code).__name__ == "ErrorCode"  # kio's writer needs the enum


def test_build_entity_builds_required_nested_entities() -> None:
    body = build_entity(response_class(82, 0))  # UpdateRaftVoter: current_leader is an entity
    hints = typing.get_type_hints(type(body))
    assert isinstance(body.current_leader, hints["current_leader"])
    assert decode_response(encode_response(1, 82, 0, body), 82, 0) == body


def test_element_type_rejects_a_scalar_field() -> None:
    with pytest.raises(KeyError):
        element_type(request_class(19, 7), "timeout")
