"""Authorization of Metadata (3) and DescribeTopicPartitions (75): Describe on
each topic, Create for Metadata's auto-creation.

Refused named topics are not forwarded and are answered with
``TOPIC_AUTHORIZATION_FAILED`` entries; an answer for all topics leaves out those
the principal may not Describe (:func:`authorize_metadata`,
:func:`authorize_describe_topic_partitions`). Metadata responses are filtered by
topic entry spans, so an unfiltered answer is never re-encoded.

Documented departures from a broker (the gateway cannot see what the broker knows):

* Metadata auto-creation: Kafka checks Create only for topics that do not
  exist. The gateway does not know which exist, so when a Describe-able
  requested topic lacks Create (on the cluster or the topic) it forwards the
  request with ``allow_auto_topic_creation`` off and turns an
  ``UNKNOWN_TOPIC_OR_PARTITION`` answer for that topic into
  ``TOPIC_AUTHORIZATION_FAILED``. The flag is per request, so in a request
  mixing topics with and without Create, topics the principal may create are
  not auto-created either (they come back ``UNKNOWN_TOPIC_OR_PARTITION``;
  creating them explicitly, or requesting them alone, works). Metadata v0-3 has
  no flag (auto-creation is implied), so there such a topic is answered
  ``TOPIC_AUTHORIZATION_FAILED`` without asking the broker. Create probes are
  not audited: for an existing topic nothing was refused.
* Authorized operations (v8+): the bit fields the broker computed for the
  gateway's upstream login are recomputed for the client's principal
  (:mod:`policies.authorization.authorized_operations`).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any, Final

from kio.schema.errors import ErrorCode

from codec import errors
from codec.headers import response_body_offset
from codec.metadata_topics import MetadataTopicEntry, metadata_topic_entries
from codec.primitives import Buffer, CodecError, enc_array_length, enc_int16
from policies.acl.model import CLUSTER_NAME, Operation, ResourceType
from policies.authorization import Handler
from policies.authorization.authorized_operations import (
    AUTHORIZED_OPERATIONS_OMITTED,
    cluster_authorized_operations,
    topic_authorized_operations,
)
from policies.authorization.encoding import name_template
from policies.authorization.messages import (
    MessageError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    response_class,
)
from policies.authorization.splitting import Decisions, build
from policies.authorization.topics import (
    TOPIC,
    ZERO_THROTTLE,
    encode_entity,
    kio_entity,
    request_correlation_id,
    response_correlation_id,
)
from policies.authorization.verdict import AuthorizationContext, RequestVerdict, ResponseTransform

__all__ = [
    "HANDLERS",
    "authorize_describe_topic_partitions",
    "authorize_metadata",
]

METADATA: Final = 3
DESCRIBE_TOPIC_PARTITIONS: Final = 75

_FIRST_AUTO_CREATE_FLAG: Final = 4
_FIRST_NULLABLE_TOPIC_NAME: Final = 12


def authorize_metadata(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """Kafka's ``handleTopicMetadataRequest`` checks (Describe, and Create for auto-creation).

    See :func:`_metadata_topics_verdict` for the topics. When the client asked for
    authorized operations (v8+), the bit fields the broker computed for the
    gateway's own login are recomputed for the client's principal after the topic
    filter ran; otherwise the verdict is exactly the topic checks' one.
    """
    body_offset, request = decode_request(frame)
    with_topics = bool(getattr(request, "include_topic_authorized_operations", False))
    with_cluster = bool(getattr(request, "include_cluster_authorized_operations", False))
    if not (with_topics or with_cluster):
        return _metadata_topics_verdict(context, frame, version, body_offset, request)
    # One set of answers for the request, the topic filter and the bit fields:
    # each (operation, resource) is asked once.
    shared = Decisions(context)
    verdict = _metadata_topics_verdict(context, frame, version, body_offset, request, shared)
    rewrite = _MetadataAuthorizedOperations(
        shared, version, topics=with_topics, cluster=with_cluster
    )
    topic_filter = verdict.transform
    transform = rewrite if topic_filter is None else _chain(topic_filter, rewrite)
    return dataclasses.replace(verdict, transform=transform)


def _metadata_topics_verdict(
    context: AuthorizationContext,
    frame: bytes,
    version: int,
    body_offset: int,
    request: Any,
    shared: Decisions | None = None,
) -> RequestVerdict:
    """The Describe and Create checks of a Metadata request's topics; ``shared``: the
    checks to use (also in the response filter) instead of fresh ones.

    * All topics (``topics`` null, or an empty list in v0): forwarded as is; the
      response leaves out the topics the principal may not Describe.
    * Named topics: those not Describe-able are not forwarded (so never
      auto-created) and are answered with a ``TOPIC_AUTHORIZATION_FAILED``
      entry (no partitions, zero topic id, not internal) after the broker's.
    * Topics by id (v12+): forwarded; a response entry for a requested id whose
      name the principal may not Describe becomes ``TOPIC_AUTHORIZATION_FAILED``
      with a null name, as Kafka does.
    * Auto-creation without Create: see the module docstring.
    """
    topics = request.topics
    if topics is None or (version == 0 and not topics):
        topic_filter = _MetadataFilter(context, version, checks=shared)
        return RequestVerdict(forward=frame, transform=topic_filter)
    checks = Decisions(context) if shared is None else shared
    auto_create = version < _FIRST_AUTO_CREATE_FLAG or bool(request.allow_auto_topic_creation)
    # Dicts as ordered sets: entries follow the client's order.
    names = [topic.name for topic in topics]
    by_id: set[uuid.UUID] = set()
    if None in names:
        by_id = {
            t.topic_id
            for t in topics
            if t.name is None and getattr(t, "topic_id", None) is not None
        }
        names = [name for name in names if name is not None]
    refused = checks.refused_names(Operation.DESCRIBE, TOPIC, names)
    no_create: dict[str, None] = {}
    if auto_create and len(refused) < len(names):
        no_create = dict.fromkeys(
            name
            for name in dict.fromkeys(names)
            if name not in refused and not _may_create(checks, name)
        )
    if no_create and version < _FIRST_AUTO_CREATE_FLAG:
        # No flag to turn auto-creation off: refuse (and audit) rather than let it happen.
        for name in no_create:
            checks.allows_topic(Operation.CREATE, name)
            refused[name] = None
        no_create.clear()
    if by_id and version < _FIRST_NULLABLE_TOPIC_NAME:
        by_id.clear()  # Kafka rejects ids before v12; nothing to filter
    if not refused and not no_create and not by_id:
        return RequestVerdict(forward=frame)
    forward = frame
    kept = tuple(t for t in topics if t.name is None or t.name not in refused)
    if refused or no_create:
        changes: dict[str, Any] = {"topics": kept}
        if no_create:
            changes["allow_auto_topic_creation"] = False
        forward = encode_request(frame, body_offset, dataclasses.replace(request, **changes))
    refusal_cls = kio_entity(response_class(METADATA, version), "MetadataResponseTopic")
    # One encode for all refused names (a request may name 100,000 topics).
    render = name_template(_metadata_refusal_entry(refusal_cls, "", None), "name")
    appended = render.many(refused)
    transform = _MetadataFilter(
        context,
        version,
        checks=shared,
        all_topics=False,
        drop_all=version == 0 and not kept,  # an empty v0 list would mean "all topics"
        no_create=frozenset(no_create),
        by_id=frozenset(by_id),
        appended=appended,
    )
    return RequestVerdict(forward=forward, transform=transform, denials=checks.denials)


def _may_create(checks: Decisions, name: str) -> bool:
    return checks.allows(
        Operation.CREATE, ResourceType.CLUSTER, CLUSTER_NAME, audit=False
    ) or checks.allows_topic(Operation.CREATE, name, audit=False)


def _metadata_refusal(cls: type[Any], name: str | None, topic_id: uuid.UUID | None) -> bytes:
    """A ``TOPIC_AUTHORIZATION_FAILED`` topic entry as Kafka builds it (no partitions)."""
    return encode_entity(_metadata_refusal_entry(cls, name, topic_id))


def _metadata_refusal_entry(cls: type[Any], name: str | None, topic_id: uuid.UUID | None) -> Any:
    return build(
        cls,
        error_code=ErrorCode.topic_authorization_failed,
        name=name,
        topic_id=topic_id,
        is_internal=False,
        partitions=(),
    )


class _MetadataFilter:
    """Filters a Metadata response by topic entry spans; only the array length is re-encoded.

    With ``all_topics`` (the answer to an all-topics request) entries the
    principal may not Describe are left out; otherwise see
    :func:`authorize_metadata`. When nothing changes the upstream frame itself
    is returned: this runs on every Metadata response, so the unfiltered case
    costs one walk over the topic entries and an authorizer call per topic.
    """

    __slots__ = (
        "all_topics",
        "appended",
        "by_id",
        "checks",
        "context",
        "drop_all",
        "no_create",
        "version",
    )

    def __init__(
        self,
        context: AuthorizationContext,
        version: int,
        *,
        checks: Decisions | None = None,
        all_topics: bool = True,
        drop_all: bool = False,
        no_create: frozenset[str] = frozenset(),
        by_id: frozenset[uuid.UUID] = frozenset(),
        appended: Sequence[bytes] = (),
    ) -> None:
        self.context = context
        self.version = version
        #: The request's checks when shared with the bit fields; None: fresh per response.
        self.checks = checks
        self.all_topics = all_topics
        self.drop_all = drop_all
        self.no_create = no_create
        self.by_id = by_id
        self.appended = appended

    def __call__(self, upstream_frame: bytes) -> bytes:
        version = self.version
        try:
            offset = response_body_offset(upstream_frame, METADATA, version)
            layout = metadata_topic_entries(
                upstream_frame, version, offset, with_ids=bool(self.by_id)
            )
        except CodecError as exc:
            raise MessageError(f"malformed Metadata v{version} response: {exc}") from None
        view = memoryview(upstream_frame)
        checks = self.checks if self.checks is not None else Decisions(self.context)
        entries: list[Buffer] = []
        changed = bool(self.appended)
        for entry in layout.topics:
            original = view[entry.start : entry.end]
            kept = self._entry(entry, original, checks)
            changed = changed or kept is not original
            if kept is not None:
                entries.append(kept)
        if not changed:
            return upstream_frame
        entries.extend(self.appended)
        count = enc_array_length(len(entries), version >= 9)
        return b"".join([view[: layout.count_start], count, *entries, view[layout.entries_end :]])

    def _entry(
        self, entry: MetadataTopicEntry, original: memoryview, checks: Decisions
    ) -> Buffer | None:
        """``original`` to keep the entry, None to drop it, or replacement bytes."""
        if self.drop_all:
            return None
        name = entry.name
        if name is None:
            return original
        if self.all_topics:
            return original if checks.allows_topic(Operation.DESCRIBE, name, audit=False) else None
        if name in self.no_create and entry.error_code == errors.UNKNOWN_TOPIC_OR_PARTITION:
            return enc_int16(errors.TOPIC_AUTHORIZATION_FAILED) + original[2:]
        if entry.topic_id in self.by_id and not checks.allows_topic(
            Operation.DESCRIBE, name, audit=False
        ):
            cls = kio_entity(response_class(METADATA, self.version), "MetadataResponseTopic")
            return _metadata_refusal(cls, None, entry.topic_id)
        return original


def _chain(first: ResponseTransform, then: ResponseTransform) -> ResponseTransform:
    def transform(upstream_frame: bytes) -> bytes:
        return then(first(upstream_frame))

    return transform


class _MetadataAuthorizedOperations:
    """Replaces the authorized-operations bit fields of a Metadata response (v8+).

    The broker computed them for the gateway's upstream login. Topic entries get
    the client's bits as Kafka computes them: for every entry it describes,
    errors like ``UNKNOWN_TOPIC_OR_PARTITION`` included; entries without a name
    (an unknown or hidden topic id) are left alone, and refused entries carry no
    bits (``AUTHORIZED_OPERATIONS_OMITTED``, as Kafka's; this also drops what the
    broker computed for a topic the auto-creation check turned into a refusal).
    """

    __slots__ = ("checks", "cluster", "topics", "version")

    def __init__(self, checks: Decisions, version: int, *, topics: bool, cluster: bool) -> None:
        self.checks = checks
        self.version = version
        self.topics = topics
        self.cluster = cluster

    def __call__(self, upstream_frame: bytes) -> bytes:
        version = self.version
        body = decode_response(upstream_frame, METADATA, version)
        checks = self.checks
        changes: dict[str, Any] = {}
        if self.topics:
            changes["topics"] = tuple(self._topic(topic, checks) for topic in body.topics)
        if self.cluster:
            changes["cluster_authorized_operations"] = cluster_authorized_operations(checks)
        body = dataclasses.replace(body, **changes)
        correlation_id = response_correlation_id(upstream_frame)
        return encode_response(correlation_id, METADATA, version, body)

    @staticmethod
    def _topic(topic: Any, checks: Decisions) -> Any:
        if topic.name is None:
            return topic
        if topic.error_code == ErrorCode.topic_authorization_failed:
            bits = AUTHORIZED_OPERATIONS_OMITTED
        else:
            bits = topic_authorized_operations(checks, str(topic.name))
        return dataclasses.replace(topic, topic_authorized_operations=bits)


# --- DescribeTopicPartitions -------------------------------------------------------------


def authorize_describe_topic_partitions(
    context: AuthorizationContext, frame: bytes, version: int
) -> RequestVerdict:
    """Kafka's ``DescribeTopicPartitionsRequestHandler`` checks (Describe on each topic).

    Named topics (only those at or after the cursor count, as in Kafka): refused
    ones are not forwarded and get ``TOPIC_AUTHORIZATION_FAILED`` entries (zero
    topic id, no partitions) after the broker's, in name order. If the cursor
    names a refused topic the cursor is dropped and only the allowed topics after
    it are forwarded, which is what the broker would describe. All topics (empty
    list): the response leaves out refused topics, see
    :class:`_DescribeTopicPartitionsFilter` for the cursor.
    """
    body_offset, request = decode_request(frame)
    checks = Decisions(context)
    if not request.topics:
        return RequestVerdict(
            forward=frame, transform=_DescribeTopicPartitionsFilter(context, version)
        )
    cursor_name = request.cursor.topic_name if request.cursor is not None else ""
    names = [str(t.name) for t in request.topics]
    refused = sorted(  # asked in the client's order, answered in name order
        n
        for n in dict.fromkeys(names)
        if n >= cursor_name and not checks.allows_topic(Operation.DESCRIBE, n)
    )
    if not refused:
        return RequestVerdict(forward=frame)
    response_cls = response_class(DESCRIBE_TOPIC_PARTITIONS, version)
    topic_cls = kio_entity(response_cls, "DescribeTopicPartitionsResponseTopic")
    refusals = tuple(
        build(
            topic_cls,
            error_code=ErrorCode.topic_authorization_failed,
            name=name,
            topic_id=None,
            is_internal=False,
            partitions=(),
        )
        for name in refused
    )
    kept = [t for t in request.topics if t.name not in refused]
    cursor = request.cursor
    if cursor is not None and cursor.topic_name in refused:
        kept = [t for t in kept if t.name >= cursor_name]
        cursor = None
    if not kept:
        body = build(response_cls, throttle_time=ZERO_THROTTLE, topics=refusals, next_cursor=None)
        local = encode_response(
            request_correlation_id(frame), DESCRIBE_TOPIC_PARTITIONS, version, body
        )
        return RequestVerdict(forward=None, local_response=local, denials=checks.denials)

    def transform(upstream_frame: bytes) -> bytes:
        upstream = decode_response(upstream_frame, DESCRIBE_TOPIC_PARTITIONS, version)
        body = dataclasses.replace(upstream, topics=(*upstream.topics, *refusals))
        correlation_id = response_correlation_id(upstream_frame)
        return encode_response(correlation_id, DESCRIBE_TOPIC_PARTITIONS, version, body)

    reduced = dataclasses.replace(request, topics=tuple(kept), cursor=cursor)
    return RequestVerdict(
        forward=encode_request(frame, body_offset, reduced),
        transform=transform,
        denials=checks.denials,
    )


class _DescribeTopicPartitionsFilter:
    """All-topics DescribeTopicPartitions: leave out topics the principal may not Describe.

    The broker pages with a cursor naming the topic where the next page starts.
    When that topic is refused, the cursor is moved to just after the last topic
    of this page (``name + "\\0"``, which sorts before any longer name): the next
    page then starts at the same place without naming the refused topic. Only
    when the page holds nothing but that topic is its name passed on, as the
    only cursor that still makes progress.
    """

    __slots__ = ("context", "version")

    def __init__(self, context: AuthorizationContext, version: int) -> None:
        self.context = context
        self.version = version

    def __call__(self, upstream_frame: bytes) -> bytes:
        version = self.version
        upstream = decode_response(upstream_frame, DESCRIBE_TOPIC_PARTITIONS, version)
        checks = Decisions(self.context)
        topics = tuple(
            t
            for t in upstream.topics
            if t.name is None or checks.allows_topic(Operation.DESCRIBE, t.name, audit=False)
        )
        cursor = upstream.next_cursor
        if cursor is not None and not checks.allows_topic(
            Operation.DESCRIBE, cursor.topic_name, audit=False
        ):
            before = [t.name for t in upstream.topics if t.name and t.name < cursor.topic_name]
            if before:
                cursor = dataclasses.replace(
                    cursor, topic_name=max(before) + "\0", partition_index=0
                )
        if len(topics) == len(upstream.topics) and cursor is upstream.next_cursor:
            return upstream_frame
        body = dataclasses.replace(upstream, topics=topics, next_cursor=cursor)
        correlation_id = response_correlation_id(upstream_frame)
        return encode_response(correlation_id, DESCRIBE_TOPIC_PARTITIONS, version, body)


HANDLERS: dict[int, Handler] = {
    METADATA: authorize_metadata,
    DESCRIBE_TOPIC_PARTITIONS: authorize_describe_topic_partitions,
}
