"""Node ids in admin requests and responses: config resources and partition reassignments.

With virtual node ids (:mod:`codec.node_ids`), a client names brokers by the ids
it was shown. Where an admin API carries one, it is mapped back in the request
and forward again in the response:

* DescribeConfigs v1-4, AlterConfigs v0-2, IncrementalAlterConfigs v0-1: a
  resource of type BROKER (4) or BROKER_LOGGER (8) is named by its node id as a
  decimal string (empty = cluster-wide default, left alone). Requests and
  responses both carry ``resource_type, resource_name``; the name is re-encoded
  (its length may change) and everything else is copied.
* ListConfigResources v1 response: ``config_resources[]`` of a broker type (name
  first, type after it). v0 lists client-metrics resources only.
* AlterPartitionReassignments v0-1 request: ``replicas`` per partition.
* CreateTopics v2-7 request: ``assignments[].broker_ids`` (manual replica placement).
* CreatePartitions v0-3 request: ``assignments[].broker_ids``.
* UnregisterBroker v0 request: ``broker_id``.
* AddRaftVoter v0-1 / RemoveRaftVoter v0 requests: ``voter_id`` (as DescribeQuorum
  shows voters with mapped ids, a client names them so).
* ListPartitionReassignments v0 response: ``replicas``, ``adding_replicas``,
  ``removing_replicas``.
* DescribeQuorum v0-2 response: ``leader_id``, voters' and observers' ``replica_id``,
  ``nodes[].node_id`` (v2). Voters are controllers: their ids go through the same
  map (in combined mode they are broker ids too), their listener addresses are not
  rewritten (clients never connect to controllers through the gateway).
* DescribeTopicPartitions v0 response: ``leader_id``, ``replica_nodes``,
  ``isr_nodes``, ``eligible_leader_replicas``, ``last_known_elr``,
  ``offline_replicas``.

Each function takes the body and an ``int -> int | None`` mapper (None: no node
behind that id; the name or id is then left as it is, and the broker answers
with its own error) and returns the new body, or None when nothing changed.
Malformed input raises :class:`~codec.primitives.CodecError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from codec.endpoints import Splice, array_count, skip_string, skip_tags
from codec.primitives import Buffer, CodecError, Reader, enc_string

#: ``node id -> node id`` (either direction); None means "no such node".
IdMapper = Callable[[int], int | None]

DESCRIBE_CONFIGS_KEY: Final = 32
ALTER_CONFIGS_KEY: Final = 33
ALTER_PARTITION_REASSIGNMENTS_KEY: Final = 45
LIST_PARTITION_REASSIGNMENTS_KEY: Final = 46
INCREMENTAL_ALTER_CONFIGS_KEY: Final = 44
DESCRIBE_TOPIC_PARTITIONS_KEY: Final = 75
CREATE_TOPICS_KEY: Final = 19
CREATE_PARTITIONS_KEY: Final = 37
UNREGISTER_BROKER_KEY: Final = 64
DESCRIBE_QUORUM_KEY: Final = 55
ADD_RAFT_VOTER_KEY: Final = 80
REMOVE_RAFT_VOTER_KEY: Final = 81
LIST_CONFIG_RESOURCES_KEY: Final = 74

#: Config resource types named by a node id.
BROKER_RESOURCE_TYPES: Final = frozenset({4, 8})
_INT32: Final = struct.Struct(">i")
_MAX_NODE_ID_DIGITS: Final = 10


def _flexible(api_key: int, version: int) -> bool:
    first = {
        DESCRIBE_CONFIGS_KEY: 4,
        ALTER_CONFIGS_KEY: 2,
        INCREMENTAL_ALTER_CONFIGS_KEY: 1,
    }
    return version >= first.get(api_key, 0)


def _mapped_name(name: str, mapper: IdMapper) -> str | None:
    """The resource name naming the mapped node, or None to keep ``name``."""
    if not name or len(name) > _MAX_NODE_ID_DIGITS or not name.isascii() or not name.isdigit():
        return None  # the default resource (""), or not a node id: the broker judges it
    mapped = mapper(int(name))
    return None if mapped is None or mapped < 0 or str(mapped) == name else str(mapped)


def _resource(r: Reader, splice: Splice, flexible: bool, mapper: IdMapper) -> bool:
    """Read ``resource_type, resource_name`` at the cursor; splice in a mapped name."""
    resource_type = r.int8()
    start = r.pos
    name = r.flex_string(flexible)
    if resource_type not in BROKER_RESOURCE_TYPES:
        return False
    mapped = _mapped_name(name, mapper)
    if mapped is None:
        return False
    splice.replace(start, r.pos, enc_string(mapped, flexible))
    return True


def map_config_request(api_key: int, version: int, body: Buffer, mapper: IdMapper) -> bytes | None:
    """DescribeConfigs / AlterConfigs / IncrementalAlterConfigs request: broker resource names."""
    flexible = _flexible(api_key, version)
    r, splice, changed = Reader(body), Splice(body), False
    for _ in range(array_count(r, flexible, "resources")):
        changed |= _resource(r, splice, flexible, mapper)
        if api_key == DESCRIBE_CONFIGS_KEY:
            keys = r.array_length(flexible)  # nullable: all keys
            for _ in range(max(keys, 0)):
                skip_string(r, flexible)
        else:
            for _ in range(array_count(r, flexible, "configs")):
                skip_string(r, flexible)  # name
                if api_key == INCREMENTAL_ALTER_CONFIGS_KEY:
                    r.skip(1, "config_operation")
                skip_string(r, flexible)  # value
                skip_tags(r, flexible)
        skip_tags(r, flexible)
    return splice.result() if changed else None


def map_config_response(api_key: int, version: int, body: Buffer, mapper: IdMapper) -> bytes | None:
    """The matching responses: each result's ``resource_type, resource_name``."""
    flexible = _flexible(api_key, version)
    r, splice, changed = Reader(body), Splice(body), False
    r.skip(4, "throttle_time_ms")
    for _ in range(array_count(r, flexible, "results")):
        r.skip(2, "error_code")
        skip_string(r, flexible)  # error_message
        changed |= _resource(r, splice, flexible, mapper)
        if api_key == DESCRIBE_CONFIGS_KEY:
            _skip_described_configs(r, version, flexible)
        skip_tags(r, flexible)
    return splice.result() if changed else None


def _skip_described_configs(r: Reader, version: int, flexible: bool) -> None:
    for _ in range(array_count(r, flexible, "configs")):
        skip_string(r, flexible)  # name
        skip_string(r, flexible)  # value
        r.skip(3, "read_only, config_source, is_sensitive")
        for _ in range(array_count(r, flexible, "synonyms")):
            skip_string(r, flexible)  # name
            skip_string(r, flexible)  # value
            r.skip(1, "source")
            skip_tags(r, flexible)
        if version >= 3:
            r.skip(1, "config_type")
            skip_string(r, flexible)  # documentation
        skip_tags(r, flexible)


class _IdPatcher:
    """Patches INT32 node ids in a copy of the body (their size never changes)."""

    __slots__ = ("changed", "mapper", "out", "r")

    def __init__(self, body: Buffer, mapper: IdMapper) -> None:
        self.r = Reader(body)
        self.out = bytearray(body)
        self.mapper = mapper
        self.changed = False

    def node_id(self) -> None:
        at = self.r.pos
        node = self.r.int32()
        if node >= 0:
            mapped = self.mapper(node)
            if mapped is not None and mapped != node:
                _INT32.pack_into(self.out, at, mapped)
                self.changed = True

    def node_list(self, what: str, flexible: bool = True) -> None:
        """A (nullable) array of node ids."""
        count = self.r.array_length(flexible)
        if count * 4 > self.r.remaining():
            raise CodecError(f"{what}: {count} node ids claimed, {self.r.remaining()} bytes left")
        for _ in range(max(count, 0)):
            self.node_id()

    def result(self) -> bytes | None:
        return bytes(self.out) if self.changed else None


def map_reassignment_request(version: int, body: Buffer, mapper: IdMapper) -> bytes | None:
    """AlterPartitionReassignments v0-1 request (flexible): each partition's ``replicas``."""
    p = _IdPatcher(body, mapper)
    r = p.r
    r.skip(4, "timeout_ms")
    if version >= 1:
        r.skip(1, "allow_replication_factor_change")
    for _ in range(array_count(r, True, "topics")):
        skip_string(r, True)  # name
        for _ in range(array_count(r, True, "partitions")):
            r.skip(4, "partition_index")
            p.node_list("replicas")  # null cancels a reassignment
            r.skip_tagged_fields()
        r.skip_tagged_fields()
    return p.result()


def map_list_reassignments_response(version: int, body: Buffer, mapper: IdMapper) -> bytes | None:
    """ListPartitionReassignments v0 response: replicas, adding and removing replicas."""
    p = _IdPatcher(body, mapper)
    r = p.r
    r.skip(6, "throttle_time_ms, error_code")
    skip_string(r, True)  # error_message
    for _ in range(array_count(r, True, "topics")):
        skip_string(r, True)  # name
        for _ in range(array_count(r, True, "partitions")):
            r.skip(4, "partition_index")
            for what in ("replicas", "adding_replicas", "removing_replicas"):
                p.node_list(what)
            r.skip_tagged_fields()
        r.skip_tagged_fields()
    return p.result()


def map_describe_topic_partitions_response(
    version: int, body: Buffer, mapper: IdMapper
) -> bytes | None:
    """DescribeTopicPartitions v0 response: every partition's leader and replica lists."""
    p = _IdPatcher(body, mapper)
    r = p.r
    r.skip(4, "throttle_time_ms")
    for _ in range(array_count(r, True, "topics")):
        r.skip(2, "error_code")
        skip_string(r, True)  # name
        r.skip(17, "topic_id, is_internal")
        for _ in range(array_count(r, True, "partitions")):
            r.skip(6, "error_code, partition_index")
            p.node_id()  # leader_id
            r.skip(4, "leader_epoch")
            for what in ("replica_nodes", "isr_nodes", "eligible_leader_replicas"):
                p.node_list(what)
            p.node_list("last_known_elr")
            p.node_list("offline_replicas")
            r.skip_tagged_fields()
        r.skip(4, "topic_authorized_operations")
        r.skip_tagged_fields()
    return p.result()  # next_cursor names a topic and partition, no node


def map_create_topics_request(version: int, body: Buffer, mapper: IdMapper) -> bytes | None:
    """CreateTopics v2-7 request: the brokers of each manually assigned partition."""
    flexible = version >= 5
    p = _IdPatcher(body, mapper)
    r = p.r
    for _ in range(array_count(r, flexible, "topics")):
        skip_string(r, flexible)  # name
        r.skip(6, "num_partitions, replication_factor")
        for _ in range(array_count(r, flexible, "assignments")):
            r.skip(4, "partition_index")
            p.node_list("broker_ids", flexible)
            skip_tags(r, flexible)
        for _ in range(array_count(r, flexible, "configs")):
            skip_string(r, flexible)  # name
            skip_string(r, flexible)  # value
            skip_tags(r, flexible)
        skip_tags(r, flexible)
    return p.result()


def map_create_partitions_request(version: int, body: Buffer, mapper: IdMapper) -> bytes | None:
    """CreatePartitions v0-3 request: the brokers of each new partition, if assigned."""
    flexible = version >= 2
    p = _IdPatcher(body, mapper)
    r = p.r
    for _ in range(array_count(r, flexible, "topics")):
        skip_string(r, flexible)  # name
        r.skip(4, "count")
        assignments = r.array_length(flexible)  # null: the controller places them
        for _ in range(max(assignments, 0)):
            p.node_list("broker_ids", flexible)
            skip_tags(r, flexible)
        skip_tags(r, flexible)
    return p.result()


def map_unregister_broker_request(version: int, body: Buffer, mapper: IdMapper) -> bytes | None:
    """UnregisterBroker v0 request: ``broker_id``."""
    p = _IdPatcher(body, mapper)
    p.node_id()
    return p.result()


def map_describe_quorum_response(version: int, body: Buffer, mapper: IdMapper) -> bytes | None:
    """DescribeQuorum v0-2 response (always flexible): leader, voters, observers, nodes."""
    p = _IdPatcher(body, mapper)
    r = p.r
    r.skip(2, "error_code")
    if version >= 2:
        skip_string(r, True)  # error_message
    for _ in range(array_count(r, True, "topics")):
        skip_string(r, True)  # topic_name
        for _ in range(array_count(r, True, "partitions")):
            r.skip(6, "partition_index, error_code")
            if version >= 2:
                skip_string(r, True)  # error_message
            p.node_id()  # leader_id
            r.skip(12, "leader_epoch, high_watermark")
            for what in ("current_voters", "observers"):
                for _ in range(array_count(r, True, what)):
                    p.node_id()  # replica_id
                    r.skip(8 + (16 if version >= 2 else 0) + (16 if version >= 1 else 0), what)
                    r.skip_tagged_fields()
            r.skip_tagged_fields()
        r.skip_tagged_fields()
    if version >= 2:
        for _ in range(array_count(r, True, "nodes")):
            p.node_id()
            for _ in range(array_count(r, True, "listeners")):
                skip_string(r, True)  # name
                skip_string(r, True)  # host
                r.skip(2, "port")
                r.skip_tagged_fields()
            r.skip_tagged_fields()
    return p.result()


def map_remove_raft_voter_request(version: int, body: Buffer, mapper: IdMapper) -> bytes | None:
    """RemoveRaftVoter v0 request: ``voter_id``."""
    p = _IdPatcher(body, mapper)
    skip_string(p.r, True)  # cluster_id
    p.node_id()
    return p.result()


def map_add_raft_voter_request(version: int, body: Buffer, mapper: IdMapper) -> bytes | None:
    """AddRaftVoter v0-1 request: ``voter_id``."""
    p = _IdPatcher(body, mapper)
    skip_string(p.r, True)  # cluster_id
    p.r.skip(4, "timeout_ms")
    p.node_id()  # voter_id
    return p.result()


def map_list_config_resources_response(
    version: int, body: Buffer, mapper: IdMapper
) -> bytes | None:
    """ListConfigResources v1 response: the names of broker and broker-logger resources."""
    if version < 1:
        return None  # client-metrics resources only
    r, splice, changed = Reader(body), Splice(body), False
    r.skip(6, "throttle_time_ms, error_code")
    for _ in range(array_count(r, True, "config_resources")):
        start = r.pos
        name = r.compact_string()
        end = r.pos
        if r.int8() in BROKER_RESOURCE_TYPES:
            mapped = _mapped_name(name, mapper)
            if mapped is not None:
                splice.replace(start, end, enc_string(mapped, True))
                changed = True
        r.skip_tagged_fields()
    return splice.result() if changed else None
