"""Authorization of the transaction APIs, as Kafka 4's ``KafkaApis`` decides them.

A transactional producer needs Write on its transactional id for every step
(InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit),
plus Write on the topics it adds and Read on the group and topics whose offsets
it commits. An idempotent producer without a transactional id needs
IdempotentWrite on the cluster or Write on some topic. The admin APIs show only
the transactional ids (DescribeTransactions, ListTransactions) and topics the
principal may Describe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol, runtime_checkable

from kio.schema.errors import ErrorCode

from codec.headers import encode_response_header, peek_api, response_body_offset
from codec.primitives import (
    EMPTY_TAGGED_FIELDS,
    CodecError,
    Reader,
    enc_array_length,
    enc_int16,
    enc_int32,
    enc_int64,
    enc_string,
)
from policies.acl.model import AclDecision, Operation, ResourceType
from policies.auth.principal import Principal
from policies.authorization import Handler
from policies.authorization.messages import MessageError, decode_request, response_class
from policies.authorization.splitting import (
    NO_THROTTLE,
    Decisions,
    Split,
    answer_locally,
    build,
    forward_as_is,
    forward_rewritten,
    forward_split,
    nested_class,
    rewrite_response,
    split_entries,
    split_topics,
    topic_key,
)
from policies.authorization.verdict import AuthorizationContext, RequestVerdict

__all__ = ["HANDLERS", "INTERNAL_TOPICS", "ResourceTypeAuthorizer"]

TRANSACTIONAL_ID: Final = ResourceType.TRANSACTIONAL_ID
TOPIC: Final = ResourceType.TOPIC
GROUP: Final = ResourceType.GROUP
WRITE: Final = Operation.WRITE
READ: Final = Operation.READ
DESCRIBE: Final = Operation.DESCRIBE

TXN_DENIED: Final = ErrorCode.transactional_id_authorization_failed
GROUP_DENIED: Final = ErrorCode.group_authorization_failed
TOPIC_DENIED: Final = ErrorCode.topic_authorization_failed
CLUSTER_DENIED: Final = ErrorCode.cluster_authorization_failed

INIT_PRODUCER_ID: Final = 22
ADD_PARTITIONS_TO_TXN: Final = 24
ADD_OFFSETS_TO_TXN: Final = 25
END_TXN: Final = 26
TXN_OFFSET_COMMIT: Final = 28
DESCRIBE_TRANSACTIONS: Final = 65
LIST_TRANSACTIONS: Final = 66

#: Kafka's internal topics (``Topic.isInternal``): never added to a transaction by a client.
INTERNAL_TOPICS: Final = frozenset(
    {"__consumer_offsets", "__transaction_state", "__share_group_state"}
)
#: The ``rule`` of a refusal the gateway decides itself, for an internal topic.
INTERNAL_TOPIC_RULE: Final = "internal_topic"


@runtime_checkable
class ResourceTypeAuthorizer(Protocol):
    """An authorizer that can also answer Kafka's ``authorizeByResourceType``.

    ``authorize_any`` is allowed when some rule allows ``operation`` on at least one
    resource of ``resource_type`` and deny rules do not cover all of them. Without
    it, an idempotent producer needs IdempotentWrite on the cluster.
    """

    def authorize_any(
        self, principal: Principal, operation: Operation, resource_type: ResourceType
    ) -> AclDecision: ...


# --------------------------------------------------------------------------------------
# InitProducerId / AddOffsetsToTxn / EndTxn: a top-level error


def _refuse(
    frame: bytes, api_key: int, version: int, error: ErrorCode, decisions: Decisions
) -> RequestVerdict:
    """A top-level error; where the answer has a producer id and epoch (InitProducerId,
    EndTxn v5) they are -1, as in Kafka's refusals."""
    body = build(
        response_class(api_key, version),
        throttle_time=NO_THROTTLE,
        error_code=error,
        producer_id=-1,
        producer_epoch=-1,
    )
    return answer_locally(frame, api_key, version, body, decisions)


def _init_producer_id(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """Write on the transactional id; without one, IdempotentWrite on the cluster or
    Write on any topic (``CLUSTER_AUTHORIZATION_FAILED``).

    A two-phase-commit producer (v6 ``enable2_pc``) also needs Kafka's TwoPhaseCommit
    on the transactional id, which the gateway's vocabulary lacks; only ``All`` on it
    implies TwoPhaseCommit in Kafka, so that is what is asked.
    """
    _, request = decode_request(frame)
    decisions = Decisions(context)
    transactional_id = request.transactional_id
    if transactional_id is not None:
        allowed = decisions.allows(WRITE, TRANSACTIONAL_ID, transactional_id) and (
            not getattr(request, "enable2_pc", False)
            or decisions.allows(Operation.ALL, TRANSACTIONAL_ID, transactional_id)
        )
        if allowed:
            return forward_as_is(frame, decisions)
        return _refuse(frame, INIT_PRODUCER_ID, version, TXN_DENIED, decisions)
    if _may_produce_idempotently(context, decisions):
        return forward_as_is(frame, decisions)
    return _refuse(frame, INIT_PRODUCER_ID, version, CLUSTER_DENIED, decisions)


def _may_produce_idempotently(context: AuthorizationContext, decisions: Decisions) -> bool:
    """Kafka asks IdempotentWrite without logging a refusal, then Write on any topic;
    the refusal recorded is IdempotentWrite's when both say no."""
    if decisions.allows_on_cluster(Operation.IDEMPOTENT_WRITE, audit=False):
        return True
    authorizer = context.authorizer
    if (
        isinstance(authorizer, ResourceTypeAuthorizer)
        and authorizer.authorize_any(context.principal, WRITE, TOPIC).allowed
    ):
        return True
    decisions.allows_on_cluster(Operation.IDEMPOTENT_WRITE)  # record the refusal
    return False


def _add_offsets_to_txn(
    context: AuthorizationContext, frame: bytes, version: int
) -> RequestVerdict:
    """Write on the transactional id, then Read on the group."""
    _, request = decode_request(frame)
    decisions = Decisions(context)
    if not decisions.allows(WRITE, TRANSACTIONAL_ID, request.transactional_id):
        return _refuse(frame, ADD_OFFSETS_TO_TXN, version, TXN_DENIED, decisions)
    if not decisions.allows(READ, GROUP, request.group_id):
        return _refuse(frame, ADD_OFFSETS_TO_TXN, version, GROUP_DENIED, decisions)
    return forward_as_is(frame, decisions)


def _end_txn(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    _, request = decode_request(frame)
    decisions = Decisions(context)
    if decisions.allows(WRITE, TRANSACTIONAL_ID, request.transactional_id):
        return forward_as_is(frame, decisions)
    return _refuse(frame, END_TXN, version, TXN_DENIED, decisions)


# --------------------------------------------------------------------------------------
# AddPartitionsToTxn


_FIRST_BROKER_ADD_PARTITIONS: Final = 4


def _add_partitions_to_txn(
    context: AuthorizationContext, frame: bytes, version: int
) -> RequestVerdict:
    """v0-3 (clients): Write on the transactional id, else every partition fails; then
    Write on each topic (never on an internal one). One refused topic fails the whole
    request: refused partitions get ``TOPIC_AUTHORIZATION_FAILED``, the others
    ``OPERATION_NOT_ATTEMPTED``, and nothing is added.

    v4+ is only sent by brokers (batched, verify-only): ClusterAction on the cluster,
    else a top-level ``CLUSTER_AUTHORIZATION_FAILED``.
    """
    _, request = decode_request(frame)
    decisions = Decisions(context)
    cls = response_class(ADD_PARTITIONS_TO_TXN, version)
    if version >= _FIRST_BROKER_ADD_PARTITIONS:
        if decisions.allows_on_cluster(Operation.CLUSTER_ACTION):
            return forward_as_is(frame, decisions)
        body = build(
            cls, throttle_time=NO_THROTTLE, error_code=CLUSTER_DENIED, results_by_transaction=()
        )
        return answer_locally(frame, ADD_PARTITIONS_TO_TXN, version, body, decisions)
    topics = request.v3_and_below_topics
    if not decisions.allows(WRITE, TRANSACTIONAL_ID, request.v3_and_below_transactional_id):
        errors = {topic.name: dict.fromkeys(topic.partitions, TXN_DENIED) for topic in topics}
    else:
        refused = {topic.name for topic in topics if not _may_add(decisions, topic.name)}
        if not refused:
            return forward_as_is(frame, decisions)
        errors = _partition_errors(topics, refused)
    body = build(
        cls, throttle_time=NO_THROTTLE, results_by_topic_v3_and_below=_topic_results(cls, errors)
    )
    return answer_locally(frame, ADD_PARTITIONS_TO_TXN, version, body, decisions)


def _may_add(decisions: Decisions, topic: str) -> bool:
    if topic in INTERNAL_TOPICS:
        decisions.refuse(WRITE, TOPIC, topic, INTERNAL_TOPIC_RULE)
        return False
    return decisions.allows(WRITE, TOPIC, topic)


def _partition_errors(topics: Iterable[Any], refused: set[str]) -> dict[str, dict[int, ErrorCode]]:
    """Kafka's per-partition answer, one entry per distinct topic and partition."""
    errors: dict[str, dict[int, ErrorCode]] = {}
    for topic in topics:
        error = TOPIC_DENIED if topic.name in refused else ErrorCode.operation_not_attempted
        errors.setdefault(topic.name, {}).update(dict.fromkeys(topic.partitions, error))
    return errors


def _topic_results(cls: type[Any], errors: dict[str, dict[int, ErrorCode]]) -> tuple[Any, ...]:
    topic_cls = nested_class(cls, "results_by_topic_v3_and_below")
    partition_cls = nested_class(topic_cls, "results_by_partition")
    return tuple(
        topic_cls(
            name=name,
            results_by_partition=tuple(
                partition_cls(partition_index=index, partition_error_code=error)
                for index, error in partitions.items()
            ),
        )
        for name, partitions in errors.items()
    )


# --------------------------------------------------------------------------------------
# TxnOffsetCommit


def _txn_offset_commit(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """Write on the transactional id, then Read on the group (each refusal fails every
    partition), then Read on each topic (refused topics answered here)."""
    body_offset, request = decode_request(frame)
    decisions = Decisions(context)
    cls = response_class(TXN_OFFSET_COMMIT, version)
    topic_cls = nested_class(cls, "topics")
    partition_cls = nested_class(topic_cls, "partitions")

    def refused(topic: Any, error: ErrorCode) -> Any:
        partitions = tuple(
            partition_cls(partition_index=partition.partition_index, error_code=error)
            for partition in topic.partitions
        )
        return topic_cls(name=topic.name, partitions=partitions)

    def answer(topics: Iterable[Any]) -> RequestVerdict:
        body = build(cls, throttle_time=NO_THROTTLE, topics=tuple(topics))
        return answer_locally(frame, TXN_OFFSET_COMMIT, version, body, decisions)

    if not decisions.allows(WRITE, TRANSACTIONAL_ID, request.transactional_id):
        return answer(refused(topic, TXN_DENIED) for topic in request.topics)
    if not decisions.allows(READ, GROUP, request.group_id):
        return answer(refused(topic, GROUP_DENIED) for topic in request.topics)
    split = split_topics(decisions, request.topics, READ, refused)
    if split.all_forwarded:
        return forward_as_is(frame, decisions)
    if split.none_forwarded:  # Kafka answers without asking the coordinator
        return answer(split.local_entries())
    return forward_split(
        frame,
        body_offset,
        request,
        split,
        decisions,
        api=(TXN_OFFSET_COMMIT, version),
        fields=("topics", "topics"),
        key=topic_key,
    )


# --------------------------------------------------------------------------------------
# ListTransactions


def _list_transactions(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """Only the transactional ids the principal may Describe are listed."""
    decisions = Decisions(context)

    def rebuild(body: Any) -> Any:
        visible = tuple(
            state
            for state in body.transaction_states
            if decisions.allows(DESCRIBE, TRANSACTIONAL_ID, state.transactional_id)
        )
        return replace(body, transaction_states=visible)

    return forward_as_is(frame, decisions, rewrite_response(LIST_TRANSACTIONS, version, rebuild))


# --------------------------------------------------------------------------------------
# DescribeTransactions
#
# Its answer is rewritten at the byte level: kio refuses the negative
# ``transaction_start_time`` (-1) a broker sends for a transactional id with no
# ongoing transaction, so kio cannot decode real answers. Only v0 exists.


@dataclass(slots=True)
class _TransactionState:
    """One entry of a DescribeTransactions answer, kept as the bytes it came in."""

    transactional_id: str
    #: From ``error_code`` through ``producer_epoch``: everything before the topics.
    head: bytes
    #: ``(topic name, the encoded TopicData)`` in upstream order.
    topics: list[tuple[str, bytes]]
    #: The entry's tagged fields.
    tail: bytes

    def encode(self, visible: Callable[[str], bool]) -> bytes:
        kept = [raw for name, raw in self.topics if visible(name)]
        return self.head + enc_array_length(len(kept), True) + b"".join(kept) + self.tail


def _refused_transaction(transactional_id: str) -> _TransactionState:
    """Kafka's answer for a refused id: the error and defaults (empty state, zeros)."""
    head = (
        enc_int16(TXN_DENIED.value)
        + enc_string(transactional_id, True)
        + enc_string("", True)
        + enc_int32(0)  # transaction_timeout_ms
        + enc_int64(0)  # transaction_start_time_ms
        + enc_int64(0)  # producer_id
        + enc_int16(0)  # producer_epoch
    )
    return _TransactionState(transactional_id, head, [], EMPTY_TAGGED_FIELDS)


def _read_transaction_states(frame: bytes, offset: int) -> tuple[int, list[_TransactionState], int]:
    """``(throttle_time_ms, states, offset of the top-level tagged fields)``."""
    reader = Reader(frame, offset)
    throttle_time_ms = reader.int32()
    states = [_read_transaction_state(reader, frame) for _ in range(reader.array_length(True))]
    return throttle_time_ms, states, reader.pos


def _read_transaction_state(reader: Reader, frame: bytes) -> _TransactionState:
    start = reader.pos
    reader.int16()  # error_code
    transactional_id = reader.compact_string()
    reader.compact_string()  # transaction_state
    reader.int32()  # transaction_timeout_ms
    reader.int64()  # transaction_start_time_ms
    reader.int64()  # producer_id
    reader.int16()  # producer_epoch
    head = frame[start : reader.pos]
    topics = []
    for _ in range(max(reader.array_length(True), 0)):
        topic_start = reader.pos
        name = reader.compact_string()
        reader.skip(4 * max(reader.array_length(True), 0), "partition indexes")
        reader.skip_tagged_fields()
        topics.append((name, frame[topic_start : reader.pos]))
    tail_start = reader.pos
    reader.skip_tagged_fields()
    return _TransactionState(transactional_id, head, topics, frame[tail_start : reader.pos])


def _encode_transaction_states(
    states: Iterable[_TransactionState], visible: Callable[[str], bool]
) -> bytes:
    encoded = [state.encode(visible) for state in states]
    return enc_array_length(len(encoded), True) + b"".join(encoded)


def _describe_transactions(
    context: AuthorizationContext, frame: bytes, version: int
) -> RequestVerdict:
    """Describe per transactional id (refused ones answered here); in every described
    transaction, only the topics the principal may Describe are shown."""
    body_offset, request = decode_request(frame)
    decisions = Decisions(context)

    def refused(transactional_id: str) -> _TransactionState | None:
        if decisions.allows(DESCRIBE, TRANSACTIONAL_ID, transactional_id):
            return None
        return _refused_transaction(transactional_id)

    split: Split[str, _TransactionState] = split_entries(
        request.transactional_ids, refused, lambda transactional_id: transactional_id
    )

    def visible(topic: str) -> bool:
        return decisions.allows(DESCRIBE, TOPIC, topic)

    if split.none_forwarded:
        _, _, correlation_id = peek_api(frame)
        response = (
            encode_response_header(correlation_id, DESCRIBE_TRANSACTIONS, version)
            + enc_int32(0)
            + _encode_transaction_states(split.local_entries(), visible)
            + EMPTY_TAGGED_FIELDS
        )
        return RequestVerdict(forward=None, local_response=response, denials=decisions.denials)

    def transform(answer: bytes) -> bytes:
        try:
            offset = response_body_offset(answer, DESCRIBE_TRANSACTIONS, version)
            throttle_time_ms, states, tagged_at = _read_transaction_states(answer, offset)
        except CodecError as exc:
            raise MessageError(f"cannot decode describe_transactions response: {exc}") from None
        merged = split.merge(states, lambda state: state.transactional_id)
        return (
            answer[:offset]
            + enc_int32(throttle_time_ms)
            + _encode_transaction_states(merged, visible)
            + answer[tagged_at:]
        )

    if split.all_forwarded:
        return forward_as_is(frame, decisions, transform)
    reduced = replace(request, transactional_ids=tuple(split.forwarded))
    return forward_rewritten(frame, body_offset, reduced, transform, decisions)


HANDLERS: Final[dict[int, Handler]] = {
    INIT_PRODUCER_ID: _init_producer_id,
    ADD_PARTITIONS_TO_TXN: _add_partitions_to_txn,
    ADD_OFFSETS_TO_TXN: _add_offsets_to_txn,
    END_TXN: _end_txn,
    TXN_OFFSET_COMMIT: _txn_offset_commit,
    DESCRIBE_TRANSACTIONS: _describe_transactions,
    LIST_TRANSACTIONS: _list_transactions,
}
