"""The node-id step of a session: map ids back in requests and forward in responses.

The session asks :meth:`NodeIdStage.buffers_request` / :meth:`buffers_response`
from each frame's API key and version alone; only the frames they name are
buffered and handed to :meth:`map_request` / :meth:`map_response`. With the
identity mapping (the default) both say no to everything, so the session's
cut-through path is exactly what it is without virtual node ids.

Responses: :mod:`codec.node_ids` (Metadata, FindCoordinator, DescribeCluster,
Produce, Fetch, ShareFetch, ShareAcknowledge) and :mod:`codec.node_id_admin`
(config resources, reassignments, DescribeTopicPartitions). Requests: config
resources of type BROKER / BROKER_LOGGER, AlterPartitionReassignments,
CreateTopics and CreatePartitions replica assignments, UnregisterBroker,
AddRaftVoter and RemoveRaftVoter.
"""

from __future__ import annotations

from typing import Final

from codec import node_id_admin as admin
from codec.headers import parse_request_header, response_body_offset
from codec.node_ids import carries_node_ids, map_response_node_ids
from codec.primitives import Buffer
from policies.node_ids import NodeIdMap

_CONFIG_APIS: Final = frozenset(
    {admin.DESCRIBE_CONFIGS_KEY, admin.ALTER_CONFIGS_KEY, admin.INCREMENTAL_ALTER_CONFIGS_KEY}
)
#: Requests naming nodes outside config resources, and how their bodies are mapped.
_REQUEST_MAPPERS: Final = {
    admin.ALTER_PARTITION_REASSIGNMENTS_KEY: admin.map_reassignment_request,
    admin.CREATE_TOPICS_KEY: admin.map_create_topics_request,
    admin.CREATE_PARTITIONS_KEY: admin.map_create_partitions_request,
    admin.UNREGISTER_BROKER_KEY: admin.map_unregister_broker_request,
    admin.ADD_RAFT_VOTER_KEY: admin.map_add_raft_voter_request,
    admin.REMOVE_RAFT_VOTER_KEY: admin.map_remove_raft_voter_request,
}
_REQUEST_APIS: Final = _CONFIG_APIS | _REQUEST_MAPPERS.keys()
#: Admin responses naming nodes, and how their bodies are mapped.
_RESPONSE_MAPPERS: Final = {
    admin.LIST_PARTITION_REASSIGNMENTS_KEY: admin.map_list_reassignments_response,
    admin.DESCRIBE_TOPIC_PARTITIONS_KEY: admin.map_describe_topic_partitions_response,
    admin.DESCRIBE_QUORUM_KEY: admin.map_describe_quorum_response,
    admin.LIST_CONFIG_RESOURCES_KEY: admin.map_list_config_resources_response,
}
_ADMIN_RESPONSE_APIS: Final = _CONFIG_APIS | _RESPONSE_MAPPERS.keys()


class NodeIdStage:
    """Applies one virtual cluster's :class:`~policies.node_ids.NodeIdMap` to frames."""

    __slots__ = ("active", "mapping")

    def __init__(self, mapping: NodeIdMap) -> None:
        self.mapping = mapping
        #: False for the identity mapping: the session then never calls the stage.
        self.active = not mapping.is_identity

    def buffers_request(self, api_key: int) -> bool:
        """Whether a request of this API may name a node (it must then be buffered)."""
        return self.active and api_key in _REQUEST_APIS

    def buffers_response(self, api_key: int, api_version: int) -> bool:
        """Whether responses of this API version may name a node."""
        return self.active and (
            carries_node_ids(api_key, api_version) or api_key in _ADMIN_RESPONSE_APIS
        )

    def map_request(self, api_key: int, api_version: int, frame: Buffer) -> Buffer:
        """``frame`` (a whole request) with virtual node ids mapped back to upstream ids."""
        if not self.buffers_request(api_key):
            return frame
        offset = parse_request_header(frame).body_offset
        body = memoryview(frame)[offset:].toreadonly()
        upstream = self.mapping.upstream
        mapper = _REQUEST_MAPPERS.get(api_key)
        if mapper is not None:
            new_body = mapper(api_version, body, upstream)
        else:
            new_body = admin.map_config_request(api_key, api_version, body, upstream)
        return frame if new_body is None else bytes(frame[:offset]) + new_body

    def map_response_body(self, api_key: int, api_version: int, body: Buffer) -> Buffer | None:
        """Response ``body`` with upstream node ids mapped to virtual ones; None if unchanged."""
        forward = self.mapping.virtual
        if api_key in _CONFIG_APIS:
            return admin.map_config_response(api_key, api_version, body, forward)
        mapper = _RESPONSE_MAPPERS.get(api_key)
        if mapper is not None:
            return mapper(api_version, body, forward)
        return map_response_node_ids(api_key, api_version, body, forward)

    def map_response(self, api_key: int, api_version: int, frame: Buffer) -> Buffer:
        """A whole response frame (header included) with its node ids mapped."""
        offset = response_body_offset(frame, api_key, api_version)
        body = memoryview(frame)[offset:].toreadonly()
        new_body = self.map_response_body(api_key, api_version, body)
        return frame if new_body is None else bytes(frame[:offset]) + new_body
