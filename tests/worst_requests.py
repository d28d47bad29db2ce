"""Checked requests naming many resources, for the cost tests and the stall benchmark.

Each builder returns one request frame (header + body, no size prefix) of a
checked API whose list holds ``count`` distinct entries named ``{prefix}{i}``:
topics, groups or transactional ids, each with one partition where the API has
partitions. Bodies are built with kio (slow for large counts, so callers cache).
"""

from __future__ import annotations

import datetime
import io
import uuid
from collections.abc import Callable
from typing import Any, Final

from kio.index import load_request_schema
from kio.serial import entity_writer

from codec.headers import encode_request_header
from policies.authorization.error_response import build_entity, element_type

__all__ = ["WORST_REQUESTS", "worst_request"]

CORRELATION_ID: Final = 7


def _encode(body: Any) -> bytes:
    out = io.BytesIO()
    entity_writer(type(body))(out, body)
    return out.getvalue()


def _frame(api_key: int, version: int, body: Any) -> bytes:
    return encode_request_header(api_key, version, CORRELATION_ID, "worst") + _encode(body)


def _entries(cls: type[Any], field: str, count: int, prefix: str, **extra: Any) -> tuple[Any, ...]:
    entry = element_type(cls, field)
    return tuple(build_entity(entry, name=f"{prefix}{i}", **extra) for i in range(count))


def _with_partition(cls: type[Any], field: str, sub: str, **values: Any) -> Any:
    return (build_entity(element_type(element_type(cls, field), sub), **values),)


def _metadata(count: int, prefix: str) -> bytes:
    cls = load_request_schema(3, 12)
    topics = _entries(cls, "topics", count, prefix)
    return _frame(3, 12, build_entity(cls, topics=topics, allow_auto_topic_creation=True))


def _fetch(count: int, prefix: str) -> bytes:
    cls = load_request_schema(1, 12)
    entry = element_type(cls, "topics")
    part = build_entity(element_type(entry, "partitions"), partition=0, partition_max_bytes=1024)
    topics = tuple(
        build_entity(entry, topic=f"{prefix}{i}", partitions=(part,)) for i in range(count)
    )
    body = build_entity(cls, replica_id=-1, max_bytes=1 << 20, session_epoch=-1, topics=topics)
    return _frame(1, 12, body)


def _produce(count: int, prefix: str) -> bytes:
    cls = load_request_schema(0, 11)
    entry = element_type(cls, "topic_data")
    part = build_entity(element_type(entry, "partition_data"), index=0, records=None)
    topics = tuple(
        build_entity(entry, name=f"{prefix}{i}", partition_data=(part,)) for i in range(count)
    )
    body = build_entity(
        cls,
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=5),
        topic_data=topics,
    )
    return _frame(0, 11, body)


def _list_offsets(count: int, prefix: str) -> bytes:
    cls = load_request_schema(2, 7)
    entry = element_type(cls, "topics")
    part = build_entity(element_type(entry, "partitions"), partition_index=0, timestamp=-1)
    topics = tuple(
        build_entity(entry, name=f"{prefix}{i}", partitions=(part,)) for i in range(count)
    )
    return _frame(2, 7, build_entity(cls, replica_id=-1, topics=topics))


def _offset_commit(count: int, prefix: str) -> bytes:
    cls = load_request_schema(8, 8)
    entry = element_type(cls, "topics")
    part = build_entity(element_type(entry, "partitions"), partition_index=0, committed_offset=1)
    topics = tuple(
        build_entity(entry, name=f"{prefix}{i}", partitions=(part,)) for i in range(count)
    )
    body = build_entity(
        cls, group_id="worst-group", generation_id_or_member_epoch=-1, topics=topics
    )
    return _frame(8, 8, body)


def _offset_fetch(count: int, prefix: str) -> bytes:
    cls = load_request_schema(9, 8)
    groups = tuple(
        build_entity(element_type(cls, "groups"), group_id=f"{prefix}{i}", topics=None)
        for i in range(count)
    )
    return _frame(9, 8, build_entity(cls, groups=groups))


def _describe_groups(count: int, prefix: str) -> bytes:
    cls = load_request_schema(15, 5)
    return _frame(15, 5, build_entity(cls, groups=tuple(f"{prefix}{i}" for i in range(count))))


def _create_topics(count: int, prefix: str) -> bytes:
    cls = load_request_schema(19, 7)
    topics = _entries(cls, "topics", count, prefix, num_partitions=1, replication_factor=1)
    return _frame(19, 7, build_entity(cls, topics=topics, timeout=datetime.timedelta(seconds=5)))


def _delete_topics(count: int, prefix: str) -> bytes:
    cls = load_request_schema(20, 6)
    topics = _entries(cls, "topics", count, prefix, topic_id=uuid.UUID(int=0))
    return _frame(20, 6, build_entity(cls, topics=topics, timeout=datetime.timedelta(seconds=5)))


def _add_partitions_to_txn(count: int, prefix: str) -> bytes:
    cls = load_request_schema(24, 4)
    entry = element_type(cls, "transactions")
    txns = tuple(
        build_entity(entry, transactional_id=f"{prefix}{i}", producer_id=1, verify_only=True)
        for i in range(count)
    )
    return _frame(24, 4, build_entity(cls, transactions=txns))


def _describe_configs(count: int, prefix: str) -> bytes:
    cls = load_request_schema(32, 4)
    entry = element_type(cls, "resources")
    resources = tuple(
        build_entity(entry, resource_type=2, resource_name=f"{prefix}{i}", configuration_keys=None)
        for i in range(count)
    )
    return _frame(32, 4, build_entity(cls, resources=resources))


def _delete_groups(count: int, prefix: str) -> bytes:
    cls = load_request_schema(42, 2)
    return _frame(
        42, 2, build_entity(cls, groups_names=tuple(f"{prefix}{i}" for i in range(count)))
    )


def _offset_delete(count: int, prefix: str) -> bytes:
    cls = load_request_schema(47, 0)
    entry = element_type(cls, "topics")
    part = build_entity(element_type(entry, "partitions"), partition_index=0)
    topics = tuple(
        build_entity(entry, name=f"{prefix}{i}", partitions=(part,)) for i in range(count)
    )
    return _frame(47, 0, build_entity(cls, group_id="worst-group", topics=topics))


#: ``name -> (api_key, builder(count, prefix))``.
WORST_REQUESTS: Final[dict[str, tuple[int, Callable[[int, str], bytes]]]] = {
    "Produce": (0, _produce),
    "Metadata": (3, _metadata),
    "Fetch": (1, _fetch),
    "ListOffsets": (2, _list_offsets),
    "OffsetCommit": (8, _offset_commit),
    "OffsetFetch": (9, _offset_fetch),
    "DescribeGroups": (15, _describe_groups),
    "CreateTopics": (19, _create_topics),
    "DeleteTopics": (20, _delete_topics),
    "AddPartitionsToTxn": (24, _add_partitions_to_txn),
    "DescribeConfigs": (32, _describe_configs),
    "DeleteGroups": (42, _delete_groups),
    "OffsetDelete": (47, _offset_delete),
}


def worst_request(name: str, count: int, prefix: str = "denied-") -> tuple[int, bytes]:
    """``(api_key, frame)`` of the request ``name`` with ``count`` entries."""
    api_key, builder = WORST_REQUESTS[name]
    return api_key, builder(count, prefix)
