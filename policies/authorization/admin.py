"""Authorization of the admin APIs, and the fallback for APIs without a handler.

Each check follows Kafka 4.x (``ControllerApis``, ``KafkaApis``, ``ConfigHelper``,
``AclApis``): the same operation on the same resource, the same error code in the
same place of the response. Requests naming several resources (CreateTopics,
DeleteTopics, CreatePartitions, the config APIs) are decided per resource: the
allowed ones are forwarded, the refused ones answered locally and merged back into
the upstream answer in the client's order. The ACL, quota, SCRAM, reassignment and
quorum APIs are decided as a whole by one cluster operation; the ACL APIs manage
the *upstream* cluster's ACLs, so they are gated exactly as Kafka gates them.
DescribeCluster needs no permission, but its ``cluster_authorized_operations`` are
recomputed for the client's principal.

An API with neither a handler nor an entry in ``NO_AUTHORIZATION`` is forwarded
only when a cluster-level rule allows it (:func:`authorize_unlisted`).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Final

from codec.errors import (
    CLUSTER_AUTHORIZATION_FAILED,
    GROUP_AUTHORIZATION_FAILED,
    INVALID_REQUEST,
    NONE,
    TOPIC_AUTHORIZATION_FAILED,
    error_name,
)
from codec.headers import peek_api, response_correlation_id
from policies.acl.model import CLUSTER_NAME, Operation, ResourceType
from policies.authorization import Handler
from policies.authorization.authorized_operations import cluster_authorized_operations
from policies.authorization.error_response import (
    AUTHORIZATION_FAILED_MESSAGE,
    build_entity,
    element_type,
    kafka_error_message,
    whole_request_error_response,
)
from policies.authorization.messages import (
    api_name,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    response_class,
)
from policies.authorization.splitting import Decisions, refusal_template
from policies.authorization.verdict import (
    AuthorizationContext,
    Denial,
    RequestVerdict,
    ResponseTransform,
)

__all__ = ["CLUSTER_OPERATIONS", "HANDLERS", "UNLISTED_CLUSTER_OPERATIONS", "authorize_unlisted"]

#: Not in ``codec.errors``: only DeleteTopics by id answers it.
UNKNOWN_TOPIC_ID: Final = 100
_ZERO_UUID: Final = uuid.UUID(int=0)

CREATE_TOPICS, DELETE_TOPICS, CREATE_PARTITIONS = 19, 20, 37
DESCRIBE_CONFIGS, ALTER_CONFIGS, INCREMENTAL_ALTER_CONFIGS = 32, 33, 44
DESCRIBE_CLUSTER: Final = 60

#: Admin APIs Kafka authorizes as a whole with one operation on the cluster.
CLUSTER_OPERATIONS: Final[Mapping[int, Operation]] = {
    29: Operation.DESCRIBE,  # DescribeAcls
    30: Operation.ALTER,  # CreateAcls
    31: Operation.ALTER,  # DeleteAcls
    34: Operation.ALTER,  # AlterReplicaLogDirs
    35: Operation.DESCRIBE,  # DescribeLogDirs
    43: Operation.ALTER,  # ElectLeaders
    45: Operation.ALTER,  # AlterPartitionReassignments
    46: Operation.DESCRIBE,  # ListPartitionReassignments
    48: Operation.DESCRIBE_CONFIGS,  # DescribeClientQuotas
    49: Operation.ALTER_CONFIGS,  # AlterClientQuotas
    50: Operation.DESCRIBE,  # DescribeUserScramCredentials
    51: Operation.ALTER,  # AlterUserScramCredentials
    55: Operation.DESCRIBE,  # DescribeQuorum
    57: Operation.ALTER,  # UpdateFeatures
    74: Operation.DESCRIBE_CONFIGS,  # ListConfigResources (was ListClientMetricsResources)
}

#: Cluster operations Kafka requires for well-known APIs the gateway has no handler
#: for (broker-to-broker, broker-to-controller and KRaft APIs). Any other unlisted API
#: needs ``All`` on the cluster.
UNLISTED_CLUSTER_OPERATIONS: Final[Mapping[int, Operation]] = {
    27: Operation.CLUSTER_ACTION,  # WriteTxnMarkers
    52: Operation.CLUSTER_ACTION,  # Vote
    53: Operation.CLUSTER_ACTION,  # BeginQuorumEpoch
    54: Operation.CLUSTER_ACTION,  # EndQuorumEpoch
    56: Operation.CLUSTER_ACTION,  # AlterPartition
    58: Operation.CLUSTER_ACTION,  # Envelope
    59: Operation.CLUSTER_ACTION,  # FetchSnapshot
    62: Operation.CLUSTER_ACTION,  # BrokerRegistration
    63: Operation.CLUSTER_ACTION,  # BrokerHeartbeat
    64: Operation.ALTER,  # UnregisterBroker
    67: Operation.CLUSTER_ACTION,  # AllocateProducerIds
    70: Operation.CLUSTER_ACTION,  # ControllerRegistration
    73: Operation.CLUSTER_ACTION,  # AssignReplicasToDirs
    80: Operation.ALTER,  # AddRaftVoter
    81: Operation.ALTER,  # RemoveRaftVoter
    82: Operation.CLUSTER_ACTION,  # UpdateRaftVoter
    83: Operation.CLUSTER_ACTION,  # InitializeShareGroupState
    84: Operation.CLUSTER_ACTION,  # ReadShareGroupState
    85: Operation.CLUSTER_ACTION,  # WriteShareGroupState
    86: Operation.CLUSTER_ACTION,  # DeleteShareGroupState
    87: Operation.CLUSTER_ACTION,  # ReadShareGroupStateSummary
}


# --- Decisions --------------------------------------------------------------------


# --- Verdicts ---------------------------------------------------------------------


def _refuse_whole(
    frame: bytes, api_key: int, api_version: int, error_code: int, denials: list[Denial]
) -> RequestVerdict:
    """Answer the whole request with ``error_code``, or close if no answer can carry it."""
    response = whole_request_error_response(
        frame, api_key, api_version, error_code, kafka_error_message(error_code)
    )
    if response is None:
        reason = (
            f"{api_name(api_key)} v{api_version} refused ({error_name(error_code)}) "
            "and no response can carry the error"
        )
        return RequestVerdict(forward=None, denials=denials, close_connection=reason)
    return RequestVerdict(forward=None, local_response=response, denials=denials)


@dataclasses.dataclass(frozen=True, slots=True)
class _EntryShape:
    """Where the per-resource entries of one API live, in the request and the response."""

    api_key: int
    request_field: str
    response_field: str
    #: The keys under which an upstream response entry can answer a request entry.
    response_keys: Callable[[Any], Iterable[Hashable]]


def _per_entry_verdict(
    shape: _EntryShape,
    frame: bytes,
    api_version: int,
    request: tuple[int, Any],
    keys: Sequence[Hashable],
    refusals: Mapping[Hashable, Mapping[str, Any] | bytes],
    checks: Decisions,
    adjust: Callable[[Any], Any] | None = None,
) -> RequestVerdict:
    """Forward the entries not refused, answer the refused ones locally, merge in order.

    ``request`` is ``(body_offset, body)``; ``keys`` names each request entry (in the
    order of ``getattr(body, shape.request_field)``); ``refusals`` maps the key of each
    refused entry to the fields of its local response entry. ``adjust`` rewrites each
    upstream response entry (CreateTopics hides configs the principal may not see).
    """
    if not refusals and adjust is None:
        return RequestVerdict(forward=frame, denials=checks.denials)
    body_offset, body = request
    entry_class = element_type(response_class(shape.api_key, api_version), shape.response_field)
    local = {
        key: fields if isinstance(fields, bytes) else build_entity(entry_class, **fields)
        for key, fields in refusals.items()
    }
    if keys and all(key in refusals for key in keys):
        # As _merge_in_request_order with nothing upstream: each key once, first-seen order.
        entries = tuple(map(local.__getitem__, dict.fromkeys(keys)))
        response = _encode_entries(shape, api_version, peek_api(frame)[2], entries)
        return RequestVerdict(forward=None, local_response=response, denials=checks.denials)
    forward = frame
    if refusals:
        entries = getattr(body, shape.request_field)
        kept = tuple(entry for entry, key in zip(entries, keys, strict=True) if key not in refusals)
        reduced = dataclasses.replace(body, **{shape.request_field: kept})
        forward = encode_request(frame, body_offset, reduced)
    transform = _merging_transform(shape, api_version, keys, local, adjust)
    return RequestVerdict(forward=forward, transform=transform, denials=checks.denials)


def _encode_entries(
    shape: _EntryShape, api_version: int, correlation_id: int, entries: tuple[Any, ...]
) -> bytes:
    body = build_entity(
        response_class(shape.api_key, api_version), **{shape.response_field: entries}
    )
    return encode_response(correlation_id, shape.api_key, api_version, body)


def _merging_transform(
    shape: _EntryShape,
    api_version: int,
    keys: Sequence[Hashable],
    local: Mapping[Hashable, Any],
    adjust: Callable[[Any], Any] | None,
) -> ResponseTransform:
    def transform(frame: bytes) -> bytes:
        body = decode_response(frame, shape.api_key, api_version)
        upstream = tuple(getattr(body, shape.response_field))
        if adjust is not None:
            upstream = tuple(adjust(entry) for entry in upstream)
        merged = _merge_in_request_order(keys, local, upstream, shape.response_keys)
        merged_body = dataclasses.replace(body, **{shape.response_field: merged})
        correlation_id = response_correlation_id(frame)
        return encode_response(correlation_id, shape.api_key, api_version, merged_body)

    return transform


def _merge_in_request_order(
    keys: Sequence[Hashable],
    local: Mapping[Hashable, Any],
    upstream: Sequence[Any],
    response_keys: Callable[[Any], Iterable[Hashable]],
) -> tuple[Any, ...]:
    """Response entries in the order the client asked, local and upstream interleaved.

    A refused key is answered once (Kafka answers a resource once however often it is
    named); an allowed key takes the next upstream entry answering it. Upstream
    entries nobody asked for (which a broker should not send) are kept at the end.
    """
    waiting: dict[Hashable, deque[int]] = {}
    for index, entry in enumerate(upstream):
        for key in response_keys(entry):
            waiting.setdefault(key, deque()).append(index)
    used: set[int] = set()
    answered_locally: set[Hashable] = set()
    merged: list[Any] = []
    for key in keys:
        if key in local:
            if key not in answered_locally:
                answered_locally.add(key)
                merged.append(local[key])
            continue
        queue = waiting.get(key, deque())
        while queue and queue[0] in used:
            queue.popleft()
        if queue:
            index = queue.popleft()
            used.add(index)
            merged.append(upstream[index])
    merged.extend(entry for index, entry in enumerate(upstream) if index not in used)
    return tuple(merged)


# --- CreateTopics -----------------------------------------------------------------

_CREATE_TOPICS = _EntryShape(CREATE_TOPICS, "topics", "topics", lambda entry: (entry.name,))
#: First CreateTopics version whose response returns the created topic's configs.
_CREATE_TOPICS_CONFIGS_VERSION: Final = 5


def _authorize_create_topics(
    context: AuthorizationContext, frame: bytes, api_version: int
) -> RequestVerdict:
    """Create on the cluster, else Create on each topic (``ControllerApis.createTopics``).

    Kafka also returns a created topic's configs only with DescribeConfigs on it;
    otherwise it sets ``topic_config_error_code`` and leaves configs, partition count
    and replication factor out, and so does the transform here.
    """
    request = decode_request(frame)
    names = [topic.name for topic in request[1].topics]
    checks = Decisions(context)
    on_cluster = checks.allows(Operation.CREATE, ResourceType.CLUSTER, CLUSTER_NAME, audit=False)
    refused: dict[str, None] = {}
    if not on_cluster:
        refused = checks.refused_names(Operation.CREATE, ResourceType.TOPIC, names)
    template = refusal_template(
        element_type(response_class(CREATE_TOPICS, api_version), "topics"),
        "name",
        error_code=TOPIC_AUTHORIZATION_FAILED,
        error_message=AUTHORIZATION_FAILED_MESSAGE,
        num_partitions=-1,
        replication_factor=-1,
    )
    refusals: dict[Hashable, Mapping[str, Any] | bytes] = dict(
        zip(refused, template.many(refused), strict=True)
    )
    hidden: set[str] = set()
    if api_version >= _CREATE_TOPICS_CONFIGS_VERSION:
        hidden = {
            name
            for name in names
            if name not in refused
            and not checks.allows(Operation.DESCRIBE_CONFIGS, ResourceType.TOPIC, name, audit=False)
        }
    adjust = _hiding_configs(hidden) if hidden else None
    return _per_entry_verdict(
        _CREATE_TOPICS, frame, api_version, request, names, refusals, checks, adjust
    )


def _hiding_configs(hidden: set[str]) -> Callable[[Any], Any]:
    def adjust(result: Any) -> Any:
        if result.name not in hidden or result.error_code != NONE:
            return result
        return dataclasses.replace(
            result,
            configs=(),
            num_partitions=-1,
            replication_factor=-1,
            topic_config_error_code=TOPIC_AUTHORIZATION_FAILED,
        )

    return adjust


# --- DeleteTopics -----------------------------------------------------------------

#: First DeleteTopics version naming topics by name or id (``topics``, not ``topic_names``).
_DELETE_TOPICS_BY_ID_VERSION: Final = 6


def _deleted_topic_keys(result: Any) -> tuple[Hashable, ...]:
    return (("name", result.name), ("id", getattr(result, "topic_id", None)))


def _authorize_delete_topics(
    context: AuthorizationContext, frame: bytes, api_version: int
) -> RequestVerdict:
    """Delete on the cluster, else Delete on each topic (``ControllerApis.deleteTopics``).

    A topic named by id is resolved through the ids the gateway has seen; an unknown
    id is answered UNKNOWN_TOPIC_ID, and a refused one names the topic only if the
    principal may describe it (Kafka does not reveal names behind ids).
    """
    request = decode_request(frame)
    body = request[1]
    by_id = api_version >= _DELETE_TOPICS_BY_ID_VERSION
    field = "topics" if by_id else "topic_names"
    shape = _EntryShape(DELETE_TOPICS, field, "responses", _deleted_topic_keys)
    entries = getattr(body, field)
    keys = [_delete_key(entry, by_id) for entry in entries]
    checks = Decisions(context)
    if checks.allows(Operation.DELETE, ResourceType.CLUSTER, CLUSTER_NAME, audit=False):
        return RequestVerdict(forward=frame)
    # Topics by name: one question for all; by id: each resolved on its own.
    names = [value for kind, value in keys if kind == "name"]
    refused = checks.refused_names(Operation.DELETE, ResourceType.TOPIC, names)
    template = refusal_template(
        element_type(response_class(DELETE_TOPICS, api_version), "responses"),
        "name",
        topic_id=_ZERO_UUID,
        error_code=TOPIC_AUTHORIZATION_FAILED,
        error_message=kafka_error_message(TOPIC_AUTHORIZATION_FAILED),
    )
    refusals: dict[Hashable, Mapping[str, Any] | bytes] = dict(
        zip([("name", name) for name in refused], template.many(refused), strict=True)
    )
    for key in keys:
        kind, value = key
        if kind == "id":
            refusal = _delete_refusal(context, checks, kind, value)
            if refusal is not None:
                refusals[key] = refusal
    return _per_entry_verdict(shape, frame, api_version, request, keys, refusals, checks)


def _delete_key(entry: Any, by_id: bool) -> tuple[str, Any]:
    """``("name", name)``, or ``("id", topic_id)`` for an entry naming its topic by id."""
    if not by_id:
        return ("name", entry)
    if entry.name is None:
        return ("id", entry.topic_id)
    return ("name", entry.name)


def _delete_refusal(
    context: AuthorizationContext, checks: Decisions, kind: str, value: Any
) -> Mapping[str, Any] | None:
    if kind == "name":
        if checks.allows(Operation.DELETE, ResourceType.TOPIC, value):
            return None
        return _deletion_error(value, _ZERO_UUID, TOPIC_AUTHORIZATION_FAILED)
    if value is None or value == _ZERO_UUID:
        return None  # names nothing: the broker answers INVALID_REQUEST itself
    name = context.topic_name(value)
    if name is None:
        return _deletion_error(None, value, UNKNOWN_TOPIC_ID)
    if checks.allows(Operation.DELETE, ResourceType.TOPIC, name):
        return None
    visible = checks.allows(Operation.DESCRIBE, ResourceType.TOPIC, name, audit=False)
    return _deletion_error(name if visible else None, value, TOPIC_AUTHORIZATION_FAILED)


def _deletion_error(name: str | None, topic_id: uuid.UUID, error_code: int) -> Mapping[str, Any]:
    return {
        "name": name,
        "topic_id": topic_id,
        "error_code": error_code,
        "error_message": kafka_error_message(error_code),
    }


# --- CreatePartitions -------------------------------------------------------------

_CREATE_PARTITIONS = _EntryShape(CREATE_PARTITIONS, "topics", "results", lambda r: (r.name,))


def _authorize_create_partitions(
    context: AuthorizationContext, frame: bytes, api_version: int
) -> RequestVerdict:
    """Alter on each topic; Kafka sets no message (``ControllerApis.createPartitions``)."""
    request = decode_request(frame)
    names = [topic.name for topic in request[1].topics]
    checks = Decisions(context)
    refusals: dict[Hashable, Mapping[str, Any]] = {
        name: {"name": name, "error_code": TOPIC_AUTHORIZATION_FAILED, "error_message": None}
        for name in names
        if not checks.allows(Operation.ALTER, ResourceType.TOPIC, name)
    }
    return _per_entry_verdict(
        _CREATE_PARTITIONS, frame, api_version, request, names, refusals, checks
    )


# --- DescribeConfigs, AlterConfigs, IncrementalAlterConfigs -------------------------

#: Config resource types (``ConfigResource.Type``).
_TOPIC, _BROKER, _BROKER_LOGGER, _CLIENT_METRICS, _GROUP = 2, 4, 8, 16, 32

#: What a config resource is checked against, and the error when refused.
_ON_TOPIC: Final = (ResourceType.TOPIC, TOPIC_AUTHORIZATION_FAILED)
_ON_CLUSTER: Final = (ResourceType.CLUSTER, CLUSTER_AUTHORIZATION_FAILED)
_ON_GROUP: Final = (ResourceType.GROUP, GROUP_AUTHORIZATION_FAILED)

_ConfigTargets = Mapping[int, tuple[ResourceType, int]]

#: ``ConfigHelper.handleDescribeConfigsRequest``.
_DESCRIBE_TARGETS: Final[_ConfigTargets] = {
    _TOPIC: _ON_TOPIC,
    _BROKER: _ON_CLUSTER,
    _BROKER_LOGGER: _ON_CLUSTER,
    _CLIENT_METRICS: _ON_CLUSTER,
    _GROUP: _ON_GROUP,
}
#: ``ControllerApis.authorizeAlterResource``; legacy AlterConfigs has no BROKER_LOGGER.
_ALTER_TARGETS: Final[_ConfigTargets] = {
    _TOPIC: _ON_TOPIC,
    _BROKER: _ON_CLUSTER,
    _CLIENT_METRICS: _ON_CLUSTER,
    _GROUP: _ON_GROUP,
}
#: As AlterConfigs, plus BROKER_LOGGER (``ConfigAdminManager.preprocess``).
_INCREMENTAL_ALTER_TARGETS: Final[_ConfigTargets] = {**_ALTER_TARGETS, _BROKER_LOGGER: _ON_CLUSTER}


def _config_keys(entry: Any) -> tuple[Hashable, ...]:
    return ((entry.resource_type, entry.resource_name),)


def _authorize_describe_configs(
    context: AuthorizationContext, frame: bytes, api_version: int
) -> RequestVerdict:
    """DescribeConfigs per resource; an unknown resource type fails the whole request
    with INVALID_REQUEST, as Kafka's ``ConfigHelper`` throws for it."""
    request = decode_request(frame)
    if any(r.resource_type not in _DESCRIBE_TARGETS for r in request[1].resources):
        return _refuse_whole(frame, DESCRIBE_CONFIGS, api_version, INVALID_REQUEST, [])
    shape = _EntryShape(DESCRIBE_CONFIGS, "resources", "results", _config_keys)
    return _authorize_configs(
        context, frame, api_version, request, shape, Operation.DESCRIBE_CONFIGS, _DESCRIBE_TARGETS
    )


def _authorize_alter_configs(
    context: AuthorizationContext, frame: bytes, api_version: int
) -> RequestVerdict:
    shape = _EntryShape(ALTER_CONFIGS, "resources", "responses", _config_keys)
    return _authorize_configs(
        context,
        frame,
        api_version,
        decode_request(frame),
        shape,
        Operation.ALTER_CONFIGS,
        _ALTER_TARGETS,
    )


def _authorize_incremental_alter_configs(
    context: AuthorizationContext, frame: bytes, api_version: int
) -> RequestVerdict:
    shape = _EntryShape(INCREMENTAL_ALTER_CONFIGS, "resources", "responses", _config_keys)
    return _authorize_configs(
        context,
        frame,
        api_version,
        decode_request(frame),
        shape,
        Operation.ALTER_CONFIGS,
        _INCREMENTAL_ALTER_TARGETS,
    )


def _authorize_configs(
    context: AuthorizationContext,
    frame: bytes,
    api_version: int,
    request: tuple[int, Any],
    shape: _EntryShape,
    operation: Operation,
    targets: _ConfigTargets,
) -> RequestVerdict:
    """``operation`` on each resource's target; an alteration of a resource type the API
    does not know is answered INVALID_REQUEST (the broker does so before forwarding)."""
    resources = request[1].resources
    keys: list[tuple[int, str]] = [(r.resource_type, r.resource_name) for r in resources]
    checks = Decisions(context)
    entry_class = element_type(response_class(shape.api_key, api_version), shape.response_field)
    names_by_type: dict[int, list[str]] = {}
    for resource_type, name in keys:
        names_by_type.setdefault(resource_type, []).append(name)
    refusals: dict[Hashable, Mapping[str, Any] | bytes] = {}
    for config_type, names in names_by_type.items():
        target = targets.get(config_type)
        if target is None:
            message = f"Unknown resource type {config_type}"
            refusals.update(
                ((config_type, name), _config_error(config_type, name, INVALID_REQUEST, message))
                for name in names
            )
            continue
        acl_type, error_code = target
        if acl_type is ResourceType.CLUSTER:
            if checks.allows(operation, acl_type, CLUSTER_NAME):
                continue
            refused = dict.fromkeys(names)
        else:
            refused = checks.refused_names(operation, acl_type, names)
        template = refusal_template(
            entry_class,
            "resource_name",
            resource_type=config_type,
            error_code=error_code,
            error_message=kafka_error_message(error_code),
        )
        keys_refused = [(config_type, name) for name in refused]
        refusals.update(zip(keys_refused, template.many(refused), strict=True))
    return _per_entry_verdict(shape, frame, api_version, request, keys, refusals, checks)


def _config_error(config_type: int, name: str, error_code: int, message: str) -> Mapping[str, Any]:
    return {
        "error_code": error_code,
        "error_message": message,
        "resource_type": config_type,
        "resource_name": name,
    }


# --- Cluster-level APIs and the fallback --------------------------------------------


def _cluster_operation_handler(api_key: int, operation: Operation) -> Handler:
    """A handler allowing the whole request on ``operation`` on the cluster.

    Allowed requests are forwarded without decoding; refused ones get the response
    Kafka's ``getErrorResponse`` gives (``error_response``).
    """

    def authorize(context: AuthorizationContext, frame: bytes, api_version: int) -> RequestVerdict:
        checks = Decisions(context)
        if checks.allows(operation, ResourceType.CLUSTER, CLUSTER_NAME):
            return RequestVerdict(forward=frame)
        return _refuse_whole(
            frame, api_key, api_version, CLUSTER_AUTHORIZATION_FAILED, checks.denials
        )

    authorize.__name__ = f"authorize_{api_name(api_key)}"
    return authorize


def authorize_unlisted(
    context: AuthorizationContext, frame: bytes, api_key: int, api_version: int
) -> RequestVerdict:
    """Forward an API without a handler only if a cluster-level rule allows it.

    The gateway never passes through a request it cannot check: the principal needs
    the cluster operation Kafka requires for a well-known API
    (:data:`UNLISTED_CLUSTER_OPERATIONS`), or ``All`` on the cluster. Refused requests
    get CLUSTER_AUTHORIZATION_FAILED in whatever shape the response has; one whose
    response cannot carry it closes the connection.
    """
    checks = Decisions(context)
    required = UNLISTED_CLUSTER_OPERATIONS.get(api_key, Operation.ALL)
    if checks.allows(required, ResourceType.CLUSTER, CLUSTER_NAME):
        return RequestVerdict(forward=frame)
    # ``All`` grants every operation, whether or not the authorizer implies it.
    if required is not Operation.ALL and checks.allows(
        Operation.ALL, ResourceType.CLUSTER, CLUSTER_NAME, audit=False
    ):
        return RequestVerdict(forward=frame)
    return _refuse_whole(frame, api_key, api_version, CLUSTER_AUTHORIZATION_FAILED, checks.denials)


# --- DescribeCluster ------------------------------------------------------------------


def _authorize_describe_cluster(
    context: AuthorizationContext, frame: bytes, api_version: int
) -> RequestVerdict:
    """DescribeCluster needs no permission (as on a Kafka broker): always forwarded.

    When the client asks for ``cluster_authorized_operations`` the broker computes
    them for the gateway's upstream login, so the answer gets the client's own.
    """
    _, request = decode_request(frame)
    if not request.include_cluster_authorized_operations:
        return RequestVerdict(forward=frame)
    return RequestVerdict(
        forward=frame, transform=_cluster_operations_rewrite(context, api_version)
    )


def _cluster_operations_rewrite(
    context: AuthorizationContext, api_version: int
) -> ResponseTransform:
    def transform(frame: bytes) -> bytes:
        body = decode_response(frame, DESCRIBE_CLUSTER, api_version)
        if body.error_code != NONE:  # Kafka computes nothing for a failed request
            return frame
        bits = cluster_authorized_operations(Decisions(context))
        body = dataclasses.replace(body, cluster_authorized_operations=bits)
        correlation_id = response_correlation_id(frame)
        return encode_response(correlation_id, DESCRIBE_CLUSTER, api_version, body)

    return transform


HANDLERS: Final[dict[int, Handler]] = {
    CREATE_TOPICS: _authorize_create_topics,
    DELETE_TOPICS: _authorize_delete_topics,
    CREATE_PARTITIONS: _authorize_create_partitions,
    DESCRIBE_CONFIGS: _authorize_describe_configs,
    ALTER_CONFIGS: _authorize_alter_configs,
    INCREMENTAL_ALTER_CONFIGS: _authorize_incremental_alter_configs,
    DESCRIBE_CLUSTER: _authorize_describe_cluster,
    **{key: _cluster_operation_handler(key, op) for key, op in CLUSTER_OPERATIONS.items()},
}
