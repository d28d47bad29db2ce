"""Authorization of the group APIs, as Kafka 4's ``KafkaApis`` decides them.

Membership (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, the consumer and share
group heartbeats) needs Read on the group; a refusal is a top-level
``GROUP_AUTHORIZATION_FAILED`` answered here. Offsets need Read (commit) or
Describe (fetch) on the group and on each topic; refused topics are answered
here and merged with the coordinator's answer for the rest. Describe and delete
APIs decide per group. Listing and describing also hide what the principal may
not Describe in the answer (ListGroups without cluster Describe, topics in
OffsetFetch of all topics and in group assignments), so those responses are
rewritten on the way back; the ``authorized_operations`` bit fields the broker
computes for the gateway's own upstream principal are recomputed for the client's.

Not handled here (they fall back to a cluster-level rule): ShareFetch and
ShareAcknowledge (share sessions carry partitions across requests, a data-plane
problem like Fetch sessions) and StreamsGroupHeartbeat (after answering, the
broker creates internal topics authorized against the gateway's principal, which
the gateway cannot see nor stop).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any, Final

from kio.schema.errors import ErrorCode

from policies.acl.model import Operation, ResourceType
from policies.authorization import Handler
from policies.authorization.messages import decode_request, response_class
from policies.authorization.splitting import (
    NO_THROTTLE,
    Decisions,
    Local,
    Slot,
    Split,
    Upstream,
    answer_locally,
    build,
    forward_as_is,
    forward_rewritten,
    forward_split,
    has_top_level_error,
    kafka_message,
    merge_in_client_order,
    nested_class,
    refusal_template,
    rewrite_response,
    split_entries,
    split_names,
    split_topics,
    topic_key,
)
from policies.authorization.verdict import AuthorizationContext, RequestVerdict

__all__ = ["GROUP_OPERATIONS", "HANDLERS", "group_authorized_operations"]

GROUP: Final = ResourceType.GROUP
TOPIC: Final = ResourceType.TOPIC
TRANSACTIONAL_ID: Final = ResourceType.TRANSACTIONAL_ID
READ: Final = Operation.READ
DESCRIBE: Final = Operation.DESCRIBE
DELETE: Final = Operation.DELETE

GROUP_DENIED: Final = ErrorCode.group_authorization_failed
TOPIC_DENIED: Final = ErrorCode.topic_authorization_failed

FIND_COORDINATOR: Final = 10
OFFSET_COMMIT: Final = 8
OFFSET_FETCH: Final = 9
JOIN_GROUP: Final = 11
HEARTBEAT: Final = 12
LEAVE_GROUP: Final = 13
SYNC_GROUP: Final = 14
DESCRIBE_GROUPS: Final = 15
LIST_GROUPS: Final = 16
DELETE_GROUPS: Final = 42
OFFSET_DELETE: Final = 47
CONSUMER_GROUP_HEARTBEAT: Final = 68
CONSUMER_GROUP_DESCRIBE: Final = 69
SHARE_GROUP_HEARTBEAT: Final = 76
SHARE_GROUP_DESCRIBE: Final = 77
STREAMS_GROUP_DESCRIBE: Final = 89

#: Kafka's ``authorized_operations`` value when it was not computed.
AUTHORIZED_OPERATIONS_OMITTED: Final = -(2**31)

#: Operations reported in a group's ``authorized_operations`` (Kafka 4's
#: ``AclEntry.supportedOperations(GROUP)``), with their ``AclOperation`` codes (the bits).
GROUP_OPERATIONS: Final[tuple[tuple[Operation, int], ...]] = (
    (Operation.READ, 3),
    (Operation.DELETE, 6),
    (Operation.DESCRIBE, 8),
    (Operation.DESCRIBE_CONFIGS, 10),
    (Operation.ALTER_CONFIGS, 11),
)

# Describe APIs replace a group whose assignment shows a topic the client may not see.
_HIDDEN_TOPICS_MESSAGE: Final = (
    "The group has described topic(s) that the client is not authorized to describe."
)
_HIDDEN_STREAMS_TOPICS_MESSAGE: Final = (
    "The described group uses topics that the client is not authorized to describe."
)


def group_authorized_operations(decisions: Decisions, group_id: str) -> int:
    """The ``authorized_operations`` bit field of a group for the client's principal.

    Asked silently, as Kafka's ``authorizedOperations``: a missing bit refuses nothing.
    """
    bits = 0
    for operation, code in GROUP_OPERATIONS:
        if decisions.allows(operation, GROUP, group_id, audit=False):
            bits |= 1 << code
    return bits


# --------------------------------------------------------------------------------------
# FindCoordinator


_GROUP_KEY: Final = 0
_TRANSACTION_KEY: Final = 1
_SHARE_KEY: Final = 2
_FIRST_BATCHED_VERSION: Final = 4
_FIRST_SHARE_KEY_VERSION: Final = 6

_COORDINATOR_CHECKS: Final = {
    _GROUP_KEY: (GROUP, GROUP_DENIED),
    _TRANSACTION_KEY: (TRANSACTIONAL_ID, ErrorCode.transactional_id_authorization_failed),
}


def _find_coordinator(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """Describe on the group or transactional id of each key (``getCoordinator``).

    Share-coordinator keys (type 2) are sent by brokers: Kafka requires ClusterAction
    on the cluster, and rejects them before v6. Unknown key types are invalid.
    """
    body_offset, request = decode_request(frame)
    decisions = Decisions(context)
    key_type = int(getattr(request, "key_type", _GROUP_KEY))  # v0 finds groups only
    batched = version >= _FIRST_BATCHED_VERSION
    keys: tuple[str, ...] = tuple(request.coordinator_keys) if batched else (request.key,)
    if key_type == _SHARE_KEY:
        return _find_share_coordinator(frame, version, keys, decisions)
    check = _COORDINATOR_CHECKS.get(key_type)
    if check is None:
        return _coordinator_failure(frame, version, keys, ErrorCode.invalid_request, decisions)
    resource_type, error = check
    if not batched:
        if decisions.allows(DESCRIBE, resource_type, request.key):
            return forward_as_is(frame, decisions)
        return _coordinator_failure(frame, version, keys, error, decisions)

    def refused(key: str) -> Any:
        if decisions.allows(DESCRIBE, resource_type, key):
            return None
        return _coordinator_entry(version, key, error)

    split: Split[str, Any] = split_entries(keys, refused, lambda key: key)
    if split.all_forwarded:
        return forward_as_is(frame, decisions)
    if split.none_forwarded:
        body = build(
            response_class(FIND_COORDINATOR, version),
            throttle_time=NO_THROTTLE,
            coordinators=tuple(split.local_entries()),
        )
        return answer_locally(frame, FIND_COORDINATOR, version, body, decisions)
    return forward_split(
        frame,
        body_offset,
        request,
        split,
        decisions,
        api=(FIND_COORDINATOR, version),
        fields=("coordinator_keys", "coordinators"),
        key=lambda coordinator: coordinator.key,
    )


def _find_share_coordinator(
    frame: bytes, version: int, keys: tuple[str, ...], decisions: Decisions
) -> RequestVerdict:
    invalid = ErrorCode.invalid_request
    if version < _FIRST_BATCHED_VERSION:
        return _coordinator_failure(frame, version, keys, invalid, decisions)
    if version < _FIRST_SHARE_KEY_VERSION:
        body = build(
            response_class(FIND_COORDINATOR, version),
            throttle_time=NO_THROTTLE,
            coordinators=tuple(_coordinator_entry(version, key, invalid) for key in keys),
        )
        return answer_locally(frame, FIND_COORDINATOR, version, body, decisions)
    if decisions.allows_on_cluster(Operation.CLUSTER_ACTION):
        return forward_as_is(frame, decisions)
    denied = ErrorCode.cluster_authorization_failed
    return _coordinator_failure(frame, version, keys, denied, decisions)


def _coordinator_entry(version: int, key: str, error: ErrorCode, message: str | None = None) -> Any:
    """One batched answer without a coordinator (Kafka's ``Node.noNode()``)."""
    cls = nested_class(response_class(FIND_COORDINATOR, version), "coordinators")
    return cls(key=key, node_id=-1, host="", port=-1, error_code=error, error_message=message)


def _coordinator_failure(
    frame: bytes, version: int, keys: tuple[str, ...], error: ErrorCode, decisions: Decisions
) -> RequestVerdict:
    """Kafka's ``FindCoordinatorRequest.getErrorResponse``: every key fails with the
    error and its default message."""
    cls = response_class(FIND_COORDINATOR, version)
    message = kafka_message(error)
    if version >= _FIRST_BATCHED_VERSION:
        entries = tuple(_coordinator_entry(version, key, error, message) for key in keys)
        body = build(cls, throttle_time=NO_THROTTLE, coordinators=entries)
    else:
        body = build(
            cls,
            throttle_time=NO_THROTTLE,
            error_code=error,
            error_message=message,
            node_id=-1,
            host="",
            port=-1,
        )
    return answer_locally(frame, FIND_COORDINATOR, version, body, decisions)


# --------------------------------------------------------------------------------------
# group membership: Read on the group, else a top-level error


def _membership_check(api_key: int, refusal: Callable[[type[Any]], Any]) -> Handler:
    def handler(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
        _, request = decode_request(frame)
        return _read_on_group(frame, (api_key, version), request, Decisions(context), refusal)

    return handler


def _read_on_group(
    frame: bytes,
    api: tuple[int, int],
    request: Any,
    decisions: Decisions,
    refusal: Callable[[type[Any]], Any],
) -> RequestVerdict:
    """Forward if the principal may Read the request's group, else answer ``refusal``."""
    if decisions.allows(READ, GROUP, request.group_id):
        return forward_as_is(frame, decisions)
    api_key, version = api
    body = refusal(response_class(api_key, version))
    return answer_locally(frame, api_key, version, body, decisions)


def _join_group_refusal(cls: type[Any]) -> Any:
    # JoinGroupRequest.getErrorResponse: no generation, no protocol, no member.
    return build(
        cls,
        throttle_time=NO_THROTTLE,
        error_code=GROUP_DENIED,
        generation_id=-1,
        protocol_name="",
        leader="",
        member_id="",
        members=(),
    )


def _top_level_refusal(cls: type[Any]) -> Any:
    # Heartbeat, LeaveGroup (v3+: no members), the group heartbeats (Kafka adds the
    # exception's message where the response has a field for it).
    return build(
        cls,
        throttle_time=NO_THROTTLE,
        error_code=GROUP_DENIED,
        error_message=kafka_message(GROUP_DENIED),
        members=(),
        member_epoch=0,
        heartbeat_interval=NO_THROTTLE,
    )


def _sync_group_refusal(cls: type[Any]) -> Any:
    return build(cls, throttle_time=NO_THROTTLE, error_code=GROUP_DENIED, assignment=b"")


_join_group: Final = _membership_check(JOIN_GROUP, _join_group_refusal)
_heartbeat: Final = _membership_check(HEARTBEAT, _top_level_refusal)
_leave_group: Final = _membership_check(LEAVE_GROUP, _top_level_refusal)


def _sync_group(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """From v5 the protocol type and name are mandatory; Kafka checks that first."""
    _, request = decode_request(frame)
    decisions = Decisions(context)
    if version >= 5 and (request.protocol_type is None or request.protocol_name is None):
        body = build(
            response_class(SYNC_GROUP, version),
            throttle_time=NO_THROTTLE,
            error_code=ErrorCode.inconsistent_group_protocol,
            assignment=b"",
        )
        return answer_locally(frame, SYNC_GROUP, version, body, decisions)
    return _read_on_group(frame, (SYNC_GROUP, version), request, decisions, _sync_group_refusal)


def _group_heartbeat(api_key: int) -> Handler:
    """ConsumerGroupHeartbeat / ShareGroupHeartbeat: Read on the group, then Describe on
    every subscribed topic name; one refused topic fails the heartbeat (without a
    message, as Kafka). A regex subscription is resolved by the coordinator."""

    def handler(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
        _, request = decode_request(frame)
        decisions = Decisions(context)
        if not decisions.allows(READ, GROUP, request.group_id):
            refusal = _top_level_refusal(response_class(api_key, version))
            return answer_locally(frame, api_key, version, refusal, decisions)
        names = dict.fromkeys(request.subscribed_topic_names or ())
        refused = [name for name in names if not decisions.allows(DESCRIBE, TOPIC, name)]
        if not refused:
            return forward_as_is(frame, decisions)
        body = build(
            response_class(api_key, version),
            throttle_time=NO_THROTTLE,
            error_code=TOPIC_DENIED,
            member_epoch=0,
            heartbeat_interval=NO_THROTTLE,
        )
        return answer_locally(frame, api_key, version, body, decisions)

    return handler


# --------------------------------------------------------------------------------------
# OffsetCommit / OffsetDelete


def _partition_results(
    partition_cls: type[Any], partitions: Iterable[Any], error: ErrorCode
) -> Any:
    return tuple(
        partition_cls(partition_index=partition.partition_index, error_code=error)
        for partition in partitions
    )


def _topic_results(api_key: int, version: int) -> Callable[[Any, ErrorCode], Any]:
    """``(request topic, error) -> response topic`` with the error on every partition."""
    topic_cls = nested_class(response_class(api_key, version), "topics")
    partition_cls = nested_class(topic_cls, "partitions")

    def refused(topic: Any, error: ErrorCode) -> Any:
        partitions = _partition_results(partition_cls, topic.partitions, error)
        name, topic_id = getattr(topic, "name", None), getattr(topic, "topic_id", None)
        return build(topic_cls, name=name, topic_id=topic_id, partitions=partitions)

    return refused


def _offset_commit(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """Read on the group, else every partition fails; then Read on each topic."""
    body_offset, request = decode_request(frame)
    decisions = Decisions(context)
    refused = _topic_results(OFFSET_COMMIT, version)
    cls = response_class(OFFSET_COMMIT, version)
    if not decisions.allows(READ, GROUP, request.group_id):
        topics = tuple(refused(topic, GROUP_DENIED) for topic in request.topics)
        body = build(cls, throttle_time=NO_THROTTLE, topics=topics)
        return answer_locally(frame, OFFSET_COMMIT, version, body, decisions)
    split = split_topics(decisions, request.topics, READ, refused)
    if split.all_forwarded:
        return forward_as_is(frame, decisions)
    if split.none_forwarded:  # Kafka answers without asking the coordinator
        body = build(cls, throttle_time=NO_THROTTLE, topics=tuple(split.local_entries()))
        return answer_locally(frame, OFFSET_COMMIT, version, body, decisions)
    return forward_split(
        frame,
        body_offset,
        request,
        split,
        decisions,
        api=(OFFSET_COMMIT, version),
        fields=("topics", "topics"),
        key=topic_key,
    )


def _offset_delete(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """Delete on the group (top-level error), then Read on each topic.

    Kafka asks the coordinator even when every topic is refused (it still checks the
    group), so the reduced request may have no topics; a top-level error in its
    answer replaces the per-topic errors, as in Kafka's ``OffsetDeleteResponse.Builder``.
    """
    body_offset, request = decode_request(frame)
    decisions = Decisions(context)
    cls = response_class(OFFSET_DELETE, version)
    if not decisions.allows(DELETE, GROUP, request.group_id):
        body = build(cls, throttle_time=NO_THROTTLE, error_code=GROUP_DENIED, topics=())
        return answer_locally(frame, OFFSET_DELETE, version, body, decisions)
    split = split_topics(decisions, request.topics, READ, _topic_results(OFFSET_DELETE, version))
    if split.all_forwarded:
        return forward_as_is(frame, decisions)
    return forward_split(
        frame,
        body_offset,
        request,
        split,
        decisions,
        api=(OFFSET_DELETE, version),
        fields=("topics", "topics"),
        key=topic_key,
        keep_upstream=has_top_level_error,
    )


# --------------------------------------------------------------------------------------
# OffsetFetch


_FIRST_MULTI_GROUP_FETCH: Final = 8
_FIRST_GROUP_ERROR_FETCH: Final = 2


@dataclasses.dataclass(slots=True)
class _FetchPlan:
    """What happens to one group of an OffsetFetch request."""

    #: The request's group entry (v8+) or the whole request body (v1-7).
    request: Any
    #: The group was refused: its whole answer is local.
    refused: bool
    #: Per-topic split; None when the client asked for all topics (null ``topics``).
    topics: Split[Any, Any] | None

    @property
    def reduced(self) -> bool:
        return self.topics is not None and not self.topics.all_forwarded

    @property
    def needs_transform(self) -> bool:
        return self.refused or self.topics is None or self.reduced


class _OffsetFetch:
    """OffsetFetch of one version: Describe on each group (v8+ batches groups), then
    Describe on each requested topic; all topics (``topics`` null) are filtered in the
    answer. Follows ``KafkaApis.handleOffsetFetchRequest`` and
    ``OffsetFetchResponse.groupError``."""

    def __init__(self, decisions: Decisions, version: int) -> None:
        self.decisions = decisions
        self.version = version
        self.response_cls = response_class(OFFSET_FETCH, version)
        self.multi_group = version >= _FIRST_MULTI_GROUP_FETCH
        container = (
            nested_class(self.response_cls, "groups") if self.multi_group else self.response_cls
        )
        self.group_cls = container
        self.topic_cls = nested_class(container, "topics")
        self.partition_cls = nested_class(self.topic_cls, "partitions")

    def plan(self, group: Any) -> _FetchPlan:
        if not self.decisions.allows(DESCRIBE, GROUP, group.group_id):
            return _FetchPlan(group, refused=True, topics=None)
        if group.topics is None:
            return _FetchPlan(group, refused=False, topics=None)
        split = split_topics(self.decisions, group.topics, DESCRIBE, self.topic_error)
        return _FetchPlan(group, refused=False, topics=split)

    def topic_error(self, topic: Any, error: ErrorCode) -> Any:
        partitions = tuple(
            build(
                self.partition_cls,
                partition_index=index,
                committed_offset=-1,
                committed_leader_epoch=-1,
                metadata="",
                error_code=error,
            )
            for index in topic.partition_indexes
        )
        name, topic_id = getattr(topic, "name", None), getattr(topic, "topic_id", None)
        return build(self.topic_cls, name=name, topic_id=topic_id, partitions=partitions)

    def refused_group(self, group: Any) -> Any:
        """The answer for a refused group; before v2 there is no group-level error
        field, so the error goes on each requested partition."""
        if self.version < _FIRST_GROUP_ERROR_FETCH:
            topics = tuple(self.topic_error(topic, GROUP_DENIED) for topic in group.topics or ())
            return build(self.group_cls, throttle_time=NO_THROTTLE, topics=topics)
        return build(
            self.group_cls,
            throttle_time=NO_THROTTLE,
            group_id=group.group_id,
            topics=(),
            error_code=GROUP_DENIED,
        )

    def reduced_group(self, plan: _FetchPlan) -> Any:
        if plan.topics is None or not plan.reduced:
            return plan.request
        return dataclasses.replace(plan.request, topics=tuple(plan.topics.forwarded))

    def rebuild_group(self, answer: Any, plan: _FetchPlan) -> Any:
        """Merge the local topic answers into one upstream group answer (or body)."""
        if has_top_level_error(answer):
            return answer  # the group failed upstream: Kafka drops the topic errors
        if plan.topics is None:
            visible = tuple(topic for topic in answer.topics if self.may_see(topic))
            return dataclasses.replace(answer, topics=visible)
        if not plan.reduced:
            return answer
        merged = plan.topics.merge(answer.topics, topic_key)
        return dataclasses.replace(answer, topics=tuple(merged))

    def may_see(self, topic: Any) -> bool:
        name = getattr(topic, "name", None)
        if name is None:
            name = self.decisions.topic_name(topic.topic_id)
        return name is not None and self.decisions.allows(DESCRIBE, TOPIC, name)


def _offset_fetch(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    body_offset, request = decode_request(frame)
    fetch = _OffsetFetch(Decisions(context), version)
    if fetch.multi_group:
        return _offset_fetch_groups(fetch, frame, body_offset, request)
    plan = fetch.plan(request)
    decisions = fetch.decisions
    if plan.refused:
        body = fetch.refused_group(request)
        return answer_locally(frame, OFFSET_FETCH, version, body, decisions)
    if not plan.needs_transform:
        return forward_as_is(frame, decisions)
    transform = rewrite_response(
        OFFSET_FETCH, version, lambda body: fetch.rebuild_group(body, plan)
    )
    if not plan.reduced:
        return forward_as_is(frame, decisions, transform)
    return forward_rewritten(frame, body_offset, fetch.reduced_group(plan), transform, decisions)


def _offset_fetch_groups(
    fetch: _OffsetFetch, frame: bytes, body_offset: int, request: Any
) -> RequestVerdict:
    decisions, version = fetch.decisions, fetch.version
    plans = [fetch.plan(group) for group in request.groups]
    slots: list[Slot[Any]] = [
        Local(fetch.refused_group(plan.request))
        if plan.refused
        else Upstream(plan.request.group_id)
        for plan in plans
    ]
    forwarded = [plan for plan in plans if not plan.refused]
    if not forwarded:
        groups = tuple(fetch.refused_group(plan.request) for plan in plans)
        body = build(fetch.response_cls, throttle_time=NO_THROTTLE, groups=groups)
        return answer_locally(frame, OFFSET_FETCH, version, body, decisions)
    if not any(plan.needs_transform for plan in plans):
        return forward_as_is(frame, decisions)

    def rebuild(body: Any) -> Any:
        # Upstream answers groups in request order; a group id listed twice is
        # matched to its plans in turn.
        queues: defaultdict[str, deque[_FetchPlan]] = defaultdict(deque)
        for plan in forwarded:
            queues[plan.request.group_id].append(plan)
        answers = []
        for answer in body.groups:
            queue = queues.get(answer.group_id)
            answers.append(fetch.rebuild_group(answer, queue.popleft()) if queue else answer)
        merged = merge_in_client_order(slots, answers, lambda group: group.group_id)
        return dataclasses.replace(body, groups=tuple(merged))

    transform = rewrite_response(OFFSET_FETCH, version, rebuild)
    if len(forwarded) == len(plans) and not any(plan.reduced for plan in plans):
        return forward_as_is(frame, decisions, transform)
    reduced = dataclasses.replace(
        request, groups=tuple(fetch.reduced_group(plan) for plan in forwarded)
    )
    return forward_rewritten(frame, body_offset, reduced, transform, decisions)


# --------------------------------------------------------------------------------------
# DescribeGroups / ListGroups / DeleteGroups


def _describe_groups(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """Describe per group; refused groups get Kafka's ``DescribeGroupsResponse.groupError``.

    With ``include_authorized_operations`` (v3+) the broker's bit fields describe the
    gateway's upstream principal, so they are recomputed for the client's.
    """
    body_offset, request = decode_request(frame)
    decisions = Decisions(context)
    group_cls = nested_class(response_class(DESCRIBE_GROUPS, version), "groups")

    refusal = refusal_template(
        group_cls,
        "group_id",
        error_code=GROUP_DENIED,
        error_message=None,
        group_state="",
        protocol_type="",
        protocol_data="",
        members=(),
        authorized_operations=AUTHORIZED_OPERATIONS_OMITTED,
    )
    groups = request.groups
    split: Split[str, Any] = split_names(decisions, DESCRIBE, GROUP, groups, groups, refusal)
    with_operations = bool(getattr(request, "include_authorized_operations", False))
    return _describe_per_group(
        frame,
        body_offset,
        request,
        split,
        decisions,
        api=(DESCRIBE_GROUPS, version),
        fields=("groups", "groups"),
        revise=_operations_reviser(decisions) if with_operations else None,
    )


def _operations_reviser(decisions: Decisions) -> Callable[[Any], Any]:
    def revise(group: Any) -> Any:
        if group.error_code != ErrorCode.none:
            return group
        bits = group_authorized_operations(decisions, group.group_id)
        return dataclasses.replace(group, authorized_operations=bits)

    return revise


def _describe_per_group(
    frame: bytes,
    body_offset: int,
    request: Any,
    split: Split[str, Any],
    decisions: Decisions,
    *,
    api: tuple[int, int],
    fields: tuple[str, str],
    revise: Callable[[Any], Any] | None,
) -> RequestVerdict:
    """Forward the permitted groups; merge refused ones back in the client's order and
    pass each upstream group through ``revise`` (None: leave the answer alone)."""
    api_key, version = api
    request_field, response_field = fields
    if split.none_forwarded:
        entries = {response_field: tuple(split.local_entries())}
        body = build(response_class(api_key, version), throttle_time=NO_THROTTLE, **entries)
        return answer_locally(frame, api_key, version, body, decisions)
    if split.all_forwarded and revise is None:
        return forward_as_is(frame, decisions)

    def rebuild(body: Any) -> Any:
        upstream = getattr(body, response_field)
        if revise is not None:
            upstream = [revise(group) for group in upstream]
        merged = split.merge(upstream, lambda group: group.group_id)
        return dataclasses.replace(body, **{response_field: tuple(merged)})

    transform = rewrite_response(api_key, version, rebuild)
    if split.all_forwarded:
        return forward_as_is(frame, decisions, transform)
    reduced = dataclasses.replace(request, **{request_field: tuple(split.forwarded)})
    return forward_rewritten(frame, body_offset, reduced, transform, decisions)


def _list_groups(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """All groups with Describe on the cluster; otherwise only the groups the principal
    may Describe (both asked silently, as Kafka: listing refuses nothing)."""
    decisions = Decisions(context)
    if decisions.allows_on_cluster(DESCRIBE, audit=False):
        return forward_as_is(frame, decisions)

    def rebuild(body: Any) -> Any:
        visible = tuple(
            group
            for group in body.groups
            if decisions.allows(DESCRIBE, GROUP, group.group_id, audit=False)
        )
        return dataclasses.replace(body, groups=visible)

    return forward_as_is(frame, decisions, rewrite_response(LIST_GROUPS, version, rebuild))


def _delete_groups(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """Delete per group; Kafka answers each distinct group once."""
    body_offset, request = decode_request(frame)
    decisions = Decisions(context)
    result_cls = nested_class(response_class(DELETE_GROUPS, version), "results")

    refusal = refusal_template(result_cls, "group_id", error_code=GROUP_DENIED)
    distinct = tuple(dict.fromkeys(request.groups_names))
    split: Split[str, Any] = split_names(decisions, DELETE, GROUP, distinct, distinct, refusal)
    if split.all_forwarded:
        return forward_as_is(frame, decisions)
    if split.none_forwarded:
        body = build(
            response_class(DELETE_GROUPS, version),
            throttle_time=NO_THROTTLE,
            results=tuple(split.local_entries()),
        )
        return answer_locally(frame, DELETE_GROUPS, version, body, decisions)
    return forward_split(
        frame,
        body_offset,
        request,
        split,
        decisions,
        api=(DELETE_GROUPS, version),
        fields=("groups_names", "results"),
        key=lambda result: result.group_id,
    )


# --------------------------------------------------------------------------------------
# ConsumerGroupDescribe / ShareGroupDescribe / StreamsGroupDescribe


def _consumer_group_topics(group: Any) -> Iterable[str]:
    for member in group.members:
        for assignment in (member.assignment, member.target_assignment):
            for partitions in assignment.topic_partitions:
                yield partitions.topic_name


def _share_group_topics(group: Any) -> Iterable[str]:
    for member in group.members:
        for partitions in member.assignment.topic_partitions:
            yield partitions.topic_name


def _streams_group_topics(group: Any) -> Iterable[str]:
    if group.topology is None:
        return
    for subtopology in group.topology.subtopologies or ():
        yield from subtopology.source_topics
        yield from subtopology.repartition_sink_topics
        yield from (topic.name for topic in subtopology.repartition_source_topics)
        yield from (topic.name for topic in subtopology.state_changelog_topics)


def _new_group_describe(
    api_key: int, topics_of: Callable[[Any], Iterable[str]], hidden_message: str
) -> Handler:
    """Describe per group, then, as Kafka, a described group whose assignment (or
    topology) names a topic the principal may not Describe is replaced by a
    ``TOPIC_AUTHORIZATION_FAILED`` entry; authorized operations are recomputed."""

    def handler(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
        body_offset, request = decode_request(frame)
        decisions = Decisions(context)
        group_cls = nested_class(response_class(api_key, version), "groups")

        def failed(group_id: str, error: ErrorCode, message: str | None) -> Any:
            return build(
                group_cls,
                error_code=error,
                error_message=message,
                group_id=group_id,
                group_state="",
                group_epoch=0,
                assignment_epoch=0,
                assignor_name="",
                topology=None,
                members=(),
                authorized_operations=AUTHORIZED_OPERATIONS_OMITTED,
            )

        def refused(group_id: str) -> Any:
            if decisions.allows(DESCRIBE, GROUP, group_id):
                return None
            return failed(group_id, GROUP_DENIED, None)

        with_operations = bool(request.include_authorized_operations)
        revise_operations = _operations_reviser(decisions)

        def revise(group: Any) -> Any:
            if with_operations:
                group = revise_operations(group)
            hidden = any(
                not decisions.allows(DESCRIBE, TOPIC, name) for name in set(topics_of(group))
            )
            return failed(group.group_id, TOPIC_DENIED, hidden_message) if hidden else group

        split: Split[str, Any] = split_entries(request.group_ids, refused, lambda gid: gid)
        return _describe_per_group(
            frame,
            body_offset,
            request,
            split,
            decisions,
            api=(api_key, version),
            fields=("group_ids", "groups"),
            revise=revise,
        )

    return handler


HANDLERS: Final[dict[int, Handler]] = {
    OFFSET_COMMIT: _offset_commit,
    OFFSET_FETCH: _offset_fetch,
    FIND_COORDINATOR: _find_coordinator,
    JOIN_GROUP: _join_group,
    HEARTBEAT: _heartbeat,
    LEAVE_GROUP: _leave_group,
    SYNC_GROUP: _sync_group,
    DESCRIBE_GROUPS: _describe_groups,
    LIST_GROUPS: _list_groups,
    DELETE_GROUPS: _delete_groups,
    OFFSET_DELETE: _offset_delete,
    CONSUMER_GROUP_HEARTBEAT: _group_heartbeat(CONSUMER_GROUP_HEARTBEAT),
    CONSUMER_GROUP_DESCRIBE: _new_group_describe(
        CONSUMER_GROUP_DESCRIBE, _consumer_group_topics, _HIDDEN_TOPICS_MESSAGE
    ),
    SHARE_GROUP_HEARTBEAT: _group_heartbeat(SHARE_GROUP_HEARTBEAT),
    SHARE_GROUP_DESCRIBE: _new_group_describe(
        SHARE_GROUP_DESCRIBE, _share_group_topics, _HIDDEN_TOPICS_MESSAGE
    ),
    STREAMS_GROUP_DESCRIBE: _new_group_describe(
        STREAMS_GROUP_DESCRIBE, _streams_group_topics, _HIDDEN_STREAMS_TOPICS_MESSAGE
    ),
}
