"""Authorization of Produce (0), without decoding the records.

Kafka's ``handleProduceRequest`` checks (:func:`authorize_produce`): Write on
the transactional id of a transactional producer, Write on each topic. Refused
topics are cut out of the forwarded request by slicing its bytes
(:func:`produce_subset_frame`: records are copied once, never re-encoded) and
answered locally, merged into the broker's answer in the client's order.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from kio.schema.errors import ErrorCode

from codec import errors
from codec.endpoints import array_count, skip_string, skip_tags
from codec.headers import parse_request_header
from codec.primitives import CodecError, Reader, enc_array_length
from codec.produce import ProduceSummary, ProduceTopic, produce_topics
from policies.acl.model import Operation, ResourceType
from policies.authorization import Handler
from policies.authorization.messages import (
    MessageError,
    decode_response,
    encode_response,
    response_class,
)
from policies.authorization.splitting import Decisions, build
from policies.authorization.topics import (
    UNKNOWN_TOPIC_ID,
    ZERO_THROTTLE,
    TopicKey,
    TopicPartitionsShape,
    kio_entity,
    merge_in_client_order,
    request_correlation_id,
    response_correlation_id,
)
from policies.authorization.verdict import AuthorizationContext, RequestVerdict

__all__ = [
    "HANDLERS",
    "authorize_produce",
    "produce_subset_frame",
]

PRODUCE: Final = 0

_FIRST_FLEXIBLE_PRODUCE: Final = 9
_FIRST_PRODUCE_TOPIC_ID: Final = 13
#: kio has Produce response schemas from v3 on (Kafka 4 dropped v0-2).
_FIRST_KIO_PRODUCE: Final = 3


def _produce_response_shape(version: int) -> TopicPartitionsShape:
    name = "topic_id" if version >= _FIRST_PRODUCE_TOPIC_ID else "name"
    return TopicPartitionsShape("responses", name, "partition_responses", "index")


def _produce_key(topic: ProduceTopic, version: int) -> TopicKey:
    return topic.topic_id if version >= _FIRST_PRODUCE_TOPIC_ID else topic.name


def authorize_produce(
    context: AuthorizationContext, frame: bytes, version: int, max_entries: int | None = None
) -> RequestVerdict:
    """Kafka's ``handleProduceRequest`` checks, without decoding the records.

    With ``max_entries``, a request with more topic and partition entries raises
    :class:`~codec.produce.TooManyEntries` after reading at most that many, so the
    caller can decide it where per-entry work stalls no one.

    A transactional producer needs Write on its transactional id, else every
    partition gets ``TRANSACTIONAL_ID_AUTHORIZATION_FAILED``; each topic needs
    Write, else ``TOPIC_AUTHORIZATION_FAILED``; a v13 topic id the gateway does
    not know gets ``UNKNOWN_TOPIC_ID``. With ``acks=0`` there is no response to
    carry an error, so (as Kafka) the connection is closed instead.
    """
    try:
        body_offset = parse_request_header(frame).body_offset
        summary = produce_topics(frame, body_offset, version, max_entries)
    except CodecError as exc:
        raise MessageError(f"malformed Produce v{version} request: {exc}") from None
    checks = Decisions(context)
    local_errors = _produce_local_errors(context, checks, summary, version)
    if not local_errors:
        return RequestVerdict(forward=frame)
    denials = checks.denials
    if summary.acks == 0:
        return RequestVerdict(
            forward=None,
            denials=denials,
            close_connection=(
                f"acks=0 Produce refused for {len(local_errors)} topic(s); "
                "there is no response to carry the error, so the connection is closed as Kafka does"
            ),
        )
    if version < _FIRST_KIO_PRODUCE:
        return RequestVerdict(
            forward=None,
            denials=denials,
            close_connection=(
                f"Produce v{version} refused for {len(local_errors)} topic(s); "
                "the gateway cannot build v0-2 Produce responses"
            ),
        )
    client_order = [
        (_produce_key(topic, version), [p.index for p in topic.partitions])
        for topic in summary.topics
    ]
    keep = [_produce_key(topic, version) not in local_errors for topic in summary.topics]
    plan = _ProduceMerge(version, client_order, local_errors)
    if not any(keep):
        body = plan.response(())
        local = encode_response(request_correlation_id(frame), PRODUCE, version, body)
        return RequestVerdict(forward=None, local_response=local, denials=denials)
    forward = produce_subset_frame(frame, body_offset, version, summary, keep)
    return RequestVerdict(forward=forward, transform=plan.transform, denials=denials)


def _produce_local_errors(
    context: AuthorizationContext, checks: Decisions, summary: ProduceSummary, version: int
) -> dict[TopicKey, int]:
    keys = [_produce_key(topic, version) for topic in summary.topics]
    txn = summary.transactional_id
    if txn is not None and not checks.allows(Operation.WRITE, ResourceType.TRANSACTIONAL_ID, txn):
        return dict.fromkeys(keys, errors.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    local_errors: dict[TopicKey, int] = {}
    for key in dict.fromkeys(keys):
        if isinstance(key, uuid.UUID):
            name = context.topic_name(key)
            if name is None:
                local_errors[key] = UNKNOWN_TOPIC_ID
                continue
        else:
            name = str(key)
        if not checks.allows_topic(Operation.WRITE, name):
            local_errors[key] = errors.TOPIC_AUTHORIZATION_FAILED
    return local_errors


class _ProduceMerge:
    """Builds the Produce response: local partition errors merged into the upstream answer."""

    def __init__(
        self,
        version: int,
        client_order: list[tuple[TopicKey, list[int]]],
        local_errors: Mapping[TopicKey, int],
    ) -> None:
        self.version = version
        self.client_order = client_order
        self.local_errors = local_errors
        self.shape = _produce_response_shape(version)
        self.response_cls = response_class(PRODUCE, version)
        self.topic_cls = kio_entity(self.response_cls, "TopicProduceResponse")
        self.partition_cls = kio_entity(self.response_cls, "PartitionProduceResponse")

    def local_partition(self, key: TopicKey, index: int) -> Any | None:
        code = self.local_errors.get(key)
        if code is None:
            return None
        return build(
            self.partition_cls,
            index=index,
            error_code=ErrorCode(code),
            base_offset=-1,
            log_append_time=None,  # encoded as -1
            log_start_offset=-1,
            record_errors=(),
            error_message=None,
        )

    def response(self, upstream_topics: Iterable[Any], upstream: Any = None) -> Any:
        topics = merge_in_client_order(
            self.client_order, upstream_topics, self.local_partition, self.shape, self.topic_cls
        )
        if upstream is None:
            return build(self.response_cls, responses=topics, throttle_time=ZERO_THROTTLE)
        return dataclasses.replace(upstream, responses=topics)

    def transform(self, upstream_frame: bytes) -> bytes:
        upstream = decode_response(upstream_frame, PRODUCE, self.version)
        body = self.response(upstream.responses, upstream)
        correlation_id = response_correlation_id(upstream_frame)
        return encode_response(correlation_id, PRODUCE, self.version, body)


def produce_subset_frame(
    frame: bytes, body_offset: int, version: int, summary: ProduceSummary, keep: Sequence[bool]
) -> bytes:
    """The Produce request with only the topics where ``keep`` is true.

    The header, ``transactional_id``, ``acks``, ``timeout_ms`` and trailing
    tagged fields are the original bytes; kept topic entries are slices of the
    frame, so records are copied exactly once (by the join) and never re-encoded.
    """
    flexible = version >= _FIRST_FLEXIBLE_PRODUCE
    count_start, spans, entries_end = _produce_topic_spans(frame, body_offset, version, summary)
    view = memoryview(frame)
    kept = [view[start:end] for (start, end), wanted in zip(spans, keep, strict=True) if wanted]
    count = enc_array_length(len(kept), flexible)
    return b"".join([view[:count_start], count, *kept, view[entries_end:]])


def _produce_topic_spans(
    frame: bytes, body_offset: int, version: int, summary: ProduceSummary
) -> tuple[int, list[tuple[int, int]], int]:
    """``(topics count offset, [(start, end) per topic entry], end of the topics array)``.

    Uses the record spans the scan already found to jump over the records.
    """
    flexible = version >= _FIRST_FLEXIBLE_PRODUCE
    r = Reader(frame, body_offset)
    try:
        if version >= 3:
            skip_string(r, flexible)  # transactional_id
        r.skip(6, "acks, timeout_ms")
        count_start = r.pos
        array_count(r, flexible, "topics")
        spans = []
        for topic in summary.topics:
            start = r.pos
            if version >= _FIRST_PRODUCE_TOPIC_ID:
                r.skip(16, "topic_id")
            else:
                skip_string(r, flexible)
            array_count(r, flexible, "partitions")
            for partition in topic.partitions:
                r.pos = partition.records_end
                skip_tags(r, flexible)
            skip_tags(r, flexible)
            spans.append((start, r.pos))
    except CodecError as exc:
        raise MessageError(f"malformed Produce v{version} request: {exc}") from None
    return count_start, spans, r.pos


HANDLERS: dict[int, Handler] = {PRODUCE: authorize_produce}
