"""Authorization of the data-plane APIs, with Kafka's per-topic semantics.

Covered: Produce (0), Fetch (1), ListOffsets (2), Metadata (3), DeleteRecords
(21), OffsetForLeaderEpoch (23), DescribeProducers (61) and
DescribeTopicPartitions (75). Like Kafka's ``KafkaApis``, a refused topic does
not fail the request: its partitions are answered with an error (usually
``TOPIC_AUTHORIZATION_FAILED``), the rest goes to the broker, and the two
answers are merged. Every decision goes through
:class:`~policies.authorization.splitting.Decisions`, which asks each (operation,
resource) once per request and keeps a :class:`~policies.authorization.verdict.Denial`
per refusal.

When everything is allowed the handlers return the original frame object, so
the common case costs one scan and a few authorizer calls, never a re-encode.

Reusable pieces (for other API families with the same topic/partition shape):
:func:`encode_entity`,
:class:`TopicPartitionsShape`, :func:`merge_in_client_order` and
:func:`authorize_by_topic` with a :class:`PartitionedApi` description.

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
* Fetch sessions (KIP-227): see :func:`authorize_fetch`.

Authorized operations: the bit fields a broker computes on request (Metadata
v8+) are computed for the gateway's upstream login, so they are recomputed
for the client's principal (:func:`topic_authorized_operations`,
:func:`cluster_authorized_operations`, also used for DescribeCluster).
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kio.schema.errors import ErrorCode

from codec import errors
from codec.endpoints import array_count, skip_string, skip_tags
from codec.fetch_sizes import fetch_response_topics
from codec.headers import parse_request_header, peek_api, response_body_offset
from codec.headers import response_correlation_id as upstream_correlation_id
from codec.metadata_topics import MetadataTopicEntry, metadata_topic_entries
from codec.primitives import Buffer, CodecError, Reader, enc_array_length, enc_int16
from codec.produce import ProduceSummary, ProduceTopic, produce_topics
from policies.acl.model import CLUSTER_NAME, Operation, ResourceType
from policies.authorization import Handler
from policies.authorization.encoding import EntryTemplate, name_template
from policies.authorization.encoding import encode_entity as fast_encode
from policies.authorization.messages import (
    MessageError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    response_class,
)
from policies.authorization.splitting import Decisions, build
from policies.authorization.verdict import (
    AuthorizationContext,
    Denial,
    RequestVerdict,
    ResponseTransform,
)

__all__ = [
    "AUTHORIZED_OPERATIONS_OMITTED",
    "CLUSTER_RESOURCE_OPERATIONS",
    "HANDLERS",
    "TOPIC_OPERATIONS",
    "PartitionedApi",
    "TopicPartitionsShape",
    "authorize_by_topic",
    "authorize_describe_topic_partitions",
    "authorize_fetch",
    "authorize_metadata",
    "authorize_produce",
    "cluster_authorized_operations",
    "encode_entity",
    "fetch_is_follower",
    "fetch_refused_topic",
    "fetch_topic_errors",
    "fetch_verdict",
    "kio_entity",
    "merge_in_client_order",
    "topic_authorized_operations",
]

PRODUCE: Final = 0
FETCH: Final = 1
LIST_OFFSETS: Final = 2
METADATA: Final = 3
DELETE_RECORDS: Final = 21
OFFSET_FOR_LEADER_EPOCH: Final = 23
DESCRIBE_PRODUCERS: Final = 61
DESCRIBE_TOPIC_PARTITIONS: Final = 75

#: Not in :mod:`codec.errors` (owned elsewhere); Kafka's code for a topic id it does not know.
UNKNOWN_TOPIC_ID: Final = 100

TOPIC: Final = ResourceType.TOPIC
ZERO_THROTTLE: Final = datetime.timedelta(0)
ZERO_UUID: Final = uuid.UUID(int=0)

#: A topic as a message names it: by name, or (Produce v13, Fetch v13+) by id.
TopicKey = Hashable


# --- decisions -------------------------------------------------------------------------


# --- kio helpers -----------------------------------------------------------------------


def kio_entity(container: type[Any], name: str) -> type[Any]:
    """The kio class ``name`` of the same API and version as ``container``."""
    cls: type[Any] = getattr(sys.modules[container.__module__], name)
    return cls


def encode_entity(entity: Any) -> bytes:
    """kio encoding of one (possibly nested) entity, e.g. a topic entry to splice in."""
    try:
        return fast_encode(entity)
    except Exception as exc:
        raise MessageError(f"cannot encode {type(entity).__name__}: {exc}") from None


def _correlation_id(frame: bytes) -> int:
    try:
        return peek_api(frame)[2]
    except CodecError as exc:
        raise MessageError(f"malformed request header: {exc}") from None


def _response_correlation_id(frame: bytes) -> int:
    try:
        return upstream_correlation_id(frame)
    except CodecError as exc:
        raise MessageError(f"malformed response header: {exc}") from None


# --- authorized operations -------------------------------------------------------------

#: Kafka's ``*_authorized_operations`` value when it was not asked for (or not computed).
AUTHORIZED_OPERATIONS_OMITTED: Final = -(2**31)

#: Operations reported in a topic's bit field (Kafka 4's
#: ``AclEntry.supportedOperations(TOPIC)``), with their ``AclOperation`` codes (the bits).
TOPIC_OPERATIONS: Final[tuple[tuple[Operation, int], ...]] = (
    (Operation.READ, 3),
    (Operation.WRITE, 4),
    (Operation.CREATE, 5),
    (Operation.DELETE, 6),
    (Operation.ALTER, 7),
    (Operation.DESCRIBE, 8),
    (Operation.DESCRIBE_CONFIGS, 10),
    (Operation.ALTER_CONFIGS, 11),
)

#: Operations reported in the cluster's bit field (``AclEntry.supportedOperations(CLUSTER)``).
CLUSTER_RESOURCE_OPERATIONS: Final[tuple[tuple[Operation, int], ...]] = (
    (Operation.CREATE, 5),
    (Operation.ALTER, 7),
    (Operation.DESCRIBE, 8),
    (Operation.CLUSTER_ACTION, 9),
    (Operation.DESCRIBE_CONFIGS, 10),
    (Operation.ALTER_CONFIGS, 11),
    (Operation.IDEMPOTENT_WRITE, 12),
)


def _operation_bits(
    checks: Decisions,
    resource_type: ResourceType,
    name: str,
    operations: tuple[tuple[Operation, int], ...],
) -> int:
    # Probes, as Kafka's ``authorizedOperations`` (no denial logged): a missing bit
    # refuses nothing.
    bits = 0
    for operation, code in operations:
        if checks.allows(operation, resource_type, name, audit=False):
            bits |= 1 << code
    return bits


def topic_authorized_operations(checks: Decisions, name: str) -> int:
    """A topic's ``topic_authorized_operations`` bit field for the client's principal."""
    return _operation_bits(checks, TOPIC, name, TOPIC_OPERATIONS)


def cluster_authorized_operations(checks: Decisions) -> int:
    """The ``cluster_authorized_operations`` bit field for the client's principal.

    As Kafka (Metadata v8-10, DescribeCluster): 0 without Describe on the cluster.
    """
    cluster = ResourceType.CLUSTER
    if not checks.allows(Operation.DESCRIBE, cluster, CLUSTER_NAME, audit=False):
        return 0
    return _operation_bits(checks, cluster, CLUSTER_NAME, CLUSTER_RESOURCE_OPERATIONS)


# --- topic/partition shaped messages -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicPartitionsShape:
    """Where a kio message keeps its topics, their names (or ids) and partition indexes."""

    topics: str
    name: str
    partitions: str
    #: Attribute holding a partition's index; ``None`` when partitions are bare ints.
    index: str | None

    def topic_list(self, message: Any) -> tuple[Any, ...]:
        topics: tuple[Any, ...] = getattr(message, self.topics)
        return topics

    def key(self, topic: Any) -> TopicKey:
        return getattr(topic, self.name)  # type: ignore[no-any-return]

    def partition_list(self, topic: Any) -> tuple[Any, ...]:
        partitions: tuple[Any, ...] = getattr(topic, self.partitions)
        return partitions

    def partition_index(self, partition: Any) -> int:
        return int(partition if self.index is None else getattr(partition, self.index))

    def client_order(self, message: Any) -> list[tuple[TopicKey, list[int]]]:
        """``[(topic key, [partition index...])]`` in the order the client listed them."""
        return [
            (self.key(topic), [self.partition_index(p) for p in self.partition_list(topic)])
            for topic in self.topic_list(message)
        ]


#: ``(topic key, partition index) -> partition entry answered locally``, or None to forward.
LocalPartition = Callable[[TopicKey, int], Any | None]


def merge_in_client_order(
    client_order: Sequence[tuple[TopicKey, Sequence[int]]],
    upstream_topics: Iterable[Any],
    local_partition: LocalPartition,
    shape: TopicPartitionsShape,
    topic_class: type[Any],
) -> tuple[Any, ...]:
    """Response topics listing exactly the client's partitions, in the client's order.

    Each partition comes from ``local_partition`` when it answers, else from the
    upstream response (matched by topic key and partition index; repeated
    partitions are matched in order). Anything upstream that matched no client
    partition is appended at the end, so nothing the broker said is lost.
    """
    upstream_topics = list(upstream_topics)
    pending: defaultdict[tuple[TopicKey, int], deque[Any]] = defaultdict(deque)
    for topic in upstream_topics:
        key = shape.key(topic)
        for partition in shape.partition_list(topic):
            pending[key, shape.partition_index(partition)].append(partition)
    merged = []
    for key, indexes in client_order:
        partitions = []
        for index in indexes:
            entry = local_partition(key, index)
            if entry is None:
                queue = pending.get((key, index))
                entry = queue.popleft() if queue else None
            if entry is not None:
                partitions.append(entry)
        merged.append(_topic_entry(topic_class, shape, key, partitions))
    for topic in upstream_topics:
        key = shape.key(topic)
        rest = []
        for partition in shape.partition_list(topic):
            queue = pending.get((key, shape.partition_index(partition)))
            if queue and queue[0] is partition:
                rest.append(queue.popleft())
        if rest:
            merged.append(_topic_entry(topic_class, shape, key, rest))
    return tuple(merged)


def _topic_entry(
    cls: type[Any], shape: TopicPartitionsShape, key: TopicKey, parts: list[Any]
) -> Any:
    return build(cls, **{shape.name: key, shape.partitions: tuple(parts)})


def _local_topics(
    client_order: Sequence[tuple[TopicKey, Sequence[int]]],
    local_partition: LocalPartition,
    shape: TopicPartitionsShape,
    topic_class: type[Any],
) -> tuple[bytes, ...]:
    """:func:`merge_in_client_order` with every partition answered locally, encoded:
    one encode per distinct partition entry, each topic rendered from a template."""
    template = topic_template(topic_class, shape.name, shape.partitions)
    encoded: dict[int, bytes] = {}  # id(entry) -> its encoding (entries are shared)

    def partition(key: TopicKey, index: int) -> bytes:
        entry = local_partition(key, index)
        found = encoded.get(id(entry))
        if found is None:
            found = encoded[id(entry)] = encode_entity(entry)
        return found

    return tuple(
        template.render(key, tuple([partition(key, index) for index in indexes]))
        for key, indexes in client_order
    )


_TOPIC_TEMPLATES: dict[tuple[type[Any], str, str], EntryTemplate] = {}


def topic_template(topic_class: type[Any], name: str, partitions: str) -> EntryTemplate:
    """A topic entry (only a name, or id, and partitions) with both fields open."""
    key = (topic_class, name, partitions)
    template = _TOPIC_TEMPLATES.get(key)
    if template is None:
        hole = "" if name != "topic_id" else ZERO_UUID
        entity = build(topic_class, **{name: hole, partitions: ()})
        template = _TOPIC_TEMPLATES[key] = EntryTemplate(entity, (name, partitions))
    return template


@dataclass(frozen=True, slots=True)
class PartitionedApi:
    """An API whose request and response are ``topics[name, partitions[index, ...]]``."""

    api_key: int
    #: What Kafka requires on each topic.
    operation: Operation
    request: TopicPartitionsShape
    response: TopicPartitionsShape
    #: kio class names of a response topic and partition.
    topic_class: str
    partition_class: str
    #: Fields of a refused partition besides its index and error code, as Kafka fills them.
    refused_fields: Mapping[str, Any] = field(default_factory=dict)
    #: A cluster-level operation that, when allowed, allows every topic (not audited).
    cluster_override: Operation | None = None


def authorize_by_topic(
    api: PartitionedApi, context: AuthorizationContext, frame: bytes, version: int
) -> RequestVerdict:
    """Check ``api.operation`` on every topic; refused topics are answered locally."""
    body_offset, request = decode_request(frame)
    checks = Decisions(context)
    if api.cluster_override is not None and checks.allows(
        api.cluster_override, ResourceType.CLUSTER, CLUSTER_NAME, audit=False
    ):
        return RequestVerdict(forward=frame)
    names = [str(api.request.key(topic)) for topic in api.request.topic_list(request)]
    refused: dict[TopicKey, int] = dict.fromkeys(
        checks.refused_names(api.operation, TOPIC, names), errors.TOPIC_AUTHORIZATION_FAILED
    )
    if not refused:
        return RequestVerdict(forward=frame)
    return split_by_topic(api, frame, body_offset, request, version, refused, checks.denials)


def split_by_topic(
    api: PartitionedApi,
    frame: bytes,
    body_offset: int,
    request: Any,
    version: int,
    local_errors: Mapping[TopicKey, int],
    denials: list[Denial],
) -> RequestVerdict:
    """Forward the topics not in ``local_errors``, answer those locally, merge in client order.

    With nothing left to forward the whole answer is local.
    """
    response_cls = response_class(api.api_key, version)
    topic_cls = kio_entity(response_cls, api.topic_class)
    partition_cls = kio_entity(response_cls, api.partition_class)
    index_field = api.response.index or "partition_index"

    built: dict[tuple[int, int], Any] = {}  # one entry object per (index, code)

    def local_partition(key: TopicKey, index: int) -> Any | None:
        code = local_errors.get(key)
        if code is None:
            return None
        entry = built.get((index, code))
        if entry is None:
            entry = built[index, code] = build(
                partition_cls,
                **{index_field: index, "error_code": ErrorCode(code)},
                **api.refused_fields,
            )
        return entry

    client_order = api.request.client_order(request)
    forwarded = tuple(
        topic
        for topic in api.request.topic_list(request)
        if api.request.key(topic) not in local_errors
    )
    if not forwarded:
        topics = _local_topics(client_order, local_partition, api.response, topic_cls)
        body = build(response_cls, throttle_time=ZERO_THROTTLE, **{api.response.topics: topics})
        local = encode_response(_correlation_id(frame), api.api_key, version, body)
        return RequestVerdict(forward=None, local_response=local, denials=denials)

    def transform(upstream_frame: bytes) -> bytes:
        upstream = decode_response(upstream_frame, api.api_key, version)
        topics = merge_in_client_order(
            client_order,
            api.response.topic_list(upstream),
            local_partition,
            api.response,
            topic_cls,
        )
        body = dataclasses.replace(upstream, **{api.response.topics: topics})
        correlation_id = _response_correlation_id(upstream_frame)
        return encode_response(correlation_id, api.api_key, version, body)

    reduced = dataclasses.replace(request, **{api.request.topics: forwarded})
    return RequestVerdict(
        forward=encode_request(frame, body_offset, reduced), transform=transform, denials=denials
    )


_NAME_INDEX_REQUEST: Final = TopicPartitionsShape("topics", "name", "partitions", "partition_index")

LIST_OFFSETS_API: Final = PartitionedApi(
    api_key=LIST_OFFSETS,
    operation=Operation.DESCRIBE,
    request=_NAME_INDEX_REQUEST,
    response=TopicPartitionsShape("topics", "name", "partitions", "partition_index"),
    topic_class="ListOffsetsTopicResponse",
    partition_class="ListOffsetsPartitionResponse",
    refused_fields={"timestamp": -1, "offset": -1, "leader_epoch": -1},
)

DELETE_RECORDS_API: Final = PartitionedApi(
    api_key=DELETE_RECORDS,
    operation=Operation.DELETE,
    request=_NAME_INDEX_REQUEST,
    response=TopicPartitionsShape("topics", "name", "partitions", "partition_index"),
    topic_class="DeleteRecordsTopicResult",
    partition_class="DeleteRecordsPartitionResult",
    refused_fields={"low_watermark": -1},
)

#: Kafka (KIP-320): ClusterAction on the cluster (followers) allows all, else Describe per topic.
OFFSET_FOR_LEADER_EPOCH_API: Final = PartitionedApi(
    api_key=OFFSET_FOR_LEADER_EPOCH,
    operation=Operation.DESCRIBE,
    request=TopicPartitionsShape("topics", "topic", "partitions", "partition"),
    response=TopicPartitionsShape("topics", "topic", "partitions", "partition"),
    topic_class="OffsetForLeaderTopicResult",
    partition_class="EpochEndOffset",
    refused_fields={"leader_epoch": -1, "end_offset": -1},
    cluster_override=Operation.CLUSTER_ACTION,
)

DESCRIBE_PRODUCERS_API: Final = PartitionedApi(
    api_key=DESCRIBE_PRODUCERS,
    operation=Operation.READ,
    request=TopicPartitionsShape("topics", "name", "partition_indexes", None),
    response=TopicPartitionsShape("topics", "name", "partitions", "partition_index"),
    topic_class="TopicResponse",
    partition_class="PartitionResponse",
    # Kafka answers ``new ApiError(TOPIC_AUTHORIZATION_FAILED)``: the error's default message.
    refused_fields={"error_message": "Topic authorization failed.", "active_producers": ()},
)


def _by_topic_handler(api: PartitionedApi) -> Handler:
    def handler(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
        return authorize_by_topic(api, context, frame, version)

    handler.__name__ = f"authorize_api_{api.api_key}"
    return handler


# --- Produce -----------------------------------------------------------------------------

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
        local = encode_response(_correlation_id(frame), PRODUCE, version, body)
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
        correlation_id = _response_correlation_id(upstream_frame)
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


# --- Fetch -------------------------------------------------------------------------------

_FIRST_FETCH_SESSION: Final = 7
_FIRST_FLEXIBLE_FETCH: Final = 12
_FIRST_FETCH_TOPIC_ID: Final = 13
_FIRST_REPLICA_STATE: Final = 15


def authorize_fetch(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """Kafka's ``handleFetchRequest`` checks, for a connection with no fetch session yet.

    The gateway keeps one :class:`~policies.authorization.fetch_sessions.FetchSessionGuard`
    per connection, which also checks the partitions of the connection's fetch
    session (KIP-227) that a request does not name; this stateless handler is that
    guard on a fresh connection (an incremental fetch is refused with
    ``FETCH_SESSION_ID_NOT_FOUND``). See :func:`fetch_verdict` for the answer.
    """
    from policies.authorization.fetch_sessions import FetchSessionGuard

    return FetchSessionGuard().authorize(context, frame, version).verdict


def fetch_verdict(
    frame: bytes,
    body_offset: int,
    request: Any,
    version: int,
    local_errors: Mapping[TopicKey, int],
    denials: list[Denial],
    *,
    session_partitions: Mapping[TopicKey, Iterable[int]] | None = None,
    changes: Mapping[str, Any] | None = None,
) -> RequestVerdict:
    """The verdict for a Fetch request whose refused topics are ``local_errors``.

    A consumer needs Read on each topic; a follower (``replica_id >= 0``) needs
    ClusterAction on the cluster (:func:`fetch_topic_errors`). Refused partitions
    get ``TOPIC_AUTHORIZATION_FAILED`` (a v13+ topic id the gateway does not know:
    ``UNKNOWN_TOPIC_ID``) with high watermark, last stable offset and log start
    offset -1, no aborted transactions and an empty (not null) record set:
    librdkafka rejects a null record set. Refused topics are not forwarded; their
    partitions are the request's, or ``session_partitions`` (a fetch session's,
    which the request need not name). ``changes`` are applied to the forwarded
    request (e.g. the session fields).

    A full fetch (session epoch 0 or -1) where everything is refused is answered
    locally with ``session_id`` 0, i.e. "no session": the client starts over with a
    full fetch, as after any sessionless response. Otherwise the request is
    forwarded, even with no topics left, and the upstream response of a split fetch
    is not re-encoded: the local topic entries are appended to its topics array by
    splicing bytes.
    """
    if not local_errors and not changes:
        return RequestVerdict(forward=frame)
    key_field = "topic_id" if version >= _FIRST_FETCH_TOPIC_ID else "topic"
    response_cls = response_class(FETCH, version)
    topic_cls = kio_entity(response_cls, "FetchableTopicResponse")
    partition_cls = kio_entity(response_cls, "PartitionData")
    refused: dict[TopicKey, list[int]] = {}
    for topic in request.topics:
        key = getattr(topic, key_field)
        if key in local_errors and (session_partitions is None or key not in session_partitions):
            refused.setdefault(key, []).extend(p.partition for p in topic.partitions)
    if session_partitions is not None:
        for key, indexes in session_partitions.items():
            if key in local_errors:
                refused.setdefault(key, []).extend(sorted(indexes))
    # Encoded: one encode per distinct (partition index, code), each topic from a template.
    template = topic_template(topic_cls, key_field, "partitions")
    encoded: dict[tuple[int, int], bytes] = {}
    local_topics = [
        template.render(
            key,
            tuple(
                [
                    _fetch_refused_partition(partition_cls, index, local_errors[key], encoded)
                    for index in indexes
                ]
            ),
        )
        for key, indexes in refused.items()
    ]
    forwarded = tuple(t for t in request.topics if getattr(t, key_field) not in local_errors)
    # As the client sent it: an incremental fetch turned into a session's last one
    # (``changes``) is still forwarded, so that the broker closes its session.
    full_fetch = version < _FIRST_FETCH_SESSION or request.session_epoch <= 0
    if not forwarded and full_fetch and local_topics:
        body = build(
            response_cls,
            throttle_time=ZERO_THROTTLE,
            error_code=ErrorCode.none,
            session_id=0,
            responses=tuple(local_topics),
        )
        local = encode_response(_correlation_id(frame), FETCH, version, body)
        return RequestVerdict(forward=None, local_response=local, denials=denials)
    reduced = dataclasses.replace(request, topics=forwarded, **(changes or {}))
    forward = encode_request(frame, body_offset, reduced)
    if not local_topics:
        return RequestVerdict(forward=forward, denials=denials)
    appended = local_topics
    return RequestVerdict(
        forward=forward, transform=_FetchAppend(version, appended), denials=denials
    )


def fetch_topic_errors(
    context: AuthorizationContext,
    checks: Decisions,
    keys: Iterable[TopicKey],
    version: int,
    follower: bool,
) -> dict[TopicKey, int]:
    """``{topic key: error code}`` for the topics of ``keys`` this fetch may not read."""
    by_id = version >= _FIRST_FETCH_TOPIC_ID
    if follower:  # a follower: Kafka checks the cluster, not the topics
        if checks.allows(Operation.CLUSTER_ACTION, ResourceType.CLUSTER, CLUSTER_NAME):
            return {}
        return dict.fromkeys(keys, errors.TOPIC_AUTHORIZATION_FAILED)
    if not by_id:  # one question for all the names
        names = [str(key) for key in keys]
        refused = checks.refused_names(Operation.READ, TOPIC, names)
        return dict.fromkeys(refused, errors.TOPIC_AUTHORIZATION_FAILED)
    local_errors: dict[TopicKey, int] = {}
    for key in keys:
        name = context.topic_name(key) if isinstance(key, uuid.UUID) else None
        if name is None:
            local_errors[key] = UNKNOWN_TOPIC_ID
        elif not checks.allows_topic(Operation.READ, str(name)):
            local_errors[key] = errors.TOPIC_AUTHORIZATION_FAILED
    return local_errors


def fetch_is_follower(request: Any, version: int) -> bool:
    replica_id = (
        request.replica_state.replica_id if version >= _FIRST_REPLICA_STATE else request.replica_id
    )
    return bool(replica_id >= 0)


def _fetch_refused_partition(
    partition_cls: type[Any], index: int, code: int, encoded: dict[tuple[int, int], bytes]
) -> bytes:
    """The encoding of :func:`fetch_refused_topic`'s partition entry, once per (index, code)."""
    found = encoded.get((index, code))
    if found is None:
        entry = _fetch_partition_refusal(partition_cls, index, code)
        found = encoded[index, code] = encode_entity(entry)
    return found


def _fetch_partition_refusal(partition_cls: type[Any], index: int, code: int) -> Any:
    return build(
        partition_cls,
        partition_index=index,
        error_code=ErrorCode(code),
        high_watermark=-1,
        last_stable_offset=-1,
        log_start_offset=-1,
        aborted_transactions=None,
        preferred_read_replica=-1,
        records=b"",
    )


def fetch_refused_topic(
    topic_cls: type[Any],
    partition_cls: type[Any],
    key_field: str,
    key: TopicKey,
    indexes: Iterable[int],
    code: int,
    built: dict[tuple[int, int], Any] | None = None,
) -> Any:
    """A topic entry whose partitions all carry ``code``, as Kafka's ``partitionResponse``.

    ``built`` shares one partition entry object per (index, code) across the topics of
    an answer, so that a request refusing many topics costs one build (and one encode)
    per distinct entry.
    """
    if built is None:
        built = {}
    partitions = []
    for index in indexes:
        entry = built.get((index, code))
        if entry is None:
            entry = built[index, code] = _fetch_partition_refusal(partition_cls, index, code)
        partitions.append(entry)
    return build(topic_cls, **{key_field: key, "partitions": tuple(partitions)})


class _FetchAppend:
    """Appends locally built topic entries to an upstream Fetch response, splicing bytes.

    The upstream records are copied once (by the join) and never decoded. A
    response with a top-level error (e.g. ``FETCH_SESSION_ID_NOT_FOUND``) carries
    no partitions and makes the client start over, so it is passed through.
    """

    __slots__ = ("entries", "version")

    def __init__(self, version: int, entries: list[bytes]) -> None:
        self.version = version
        self.entries = entries

    def __call__(self, upstream_frame: bytes) -> bytes:
        version = self.version
        try:
            offset = response_body_offset(upstream_frame, FETCH, version)
            if version >= _FIRST_FETCH_SESSION and _int16_at(upstream_frame, offset + 4) != 0:
                return upstream_frame
            layout = fetch_response_topics(upstream_frame, version, offset)
        except CodecError as exc:
            raise MessageError(f"malformed Fetch v{version} response: {exc}") from None
        view = memoryview(upstream_frame)
        count = enc_array_length(
            len(layout.topics) + len(self.entries), version >= _FIRST_FLEXIBLE_FETCH
        )
        return b"".join(
            [
                view[: layout.count_start],
                count,
                view[layout.entries_start : layout.entries_end],
                *self.entries,
                view[layout.entries_end :],
            ]
        )


def _int16_at(buf: Buffer, pos: int) -> int:
    return Reader(buf, pos).int16()


# --- Metadata ----------------------------------------------------------------------------

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
        correlation_id = _response_correlation_id(upstream_frame)
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
        local = encode_response(_correlation_id(frame), DESCRIBE_TOPIC_PARTITIONS, version, body)
        return RequestVerdict(forward=None, local_response=local, denials=checks.denials)

    def transform(upstream_frame: bytes) -> bytes:
        upstream = decode_response(upstream_frame, DESCRIBE_TOPIC_PARTITIONS, version)
        body = dataclasses.replace(upstream, topics=(*upstream.topics, *refusals))
        correlation_id = _response_correlation_id(upstream_frame)
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
        correlation_id = _response_correlation_id(upstream_frame)
        return encode_response(correlation_id, DESCRIBE_TOPIC_PARTITIONS, version, body)


# --- registry ----------------------------------------------------------------------------

HANDLERS: dict[int, Handler] = {
    PRODUCE: authorize_produce,
    FETCH: authorize_fetch,
    LIST_OFFSETS: _by_topic_handler(LIST_OFFSETS_API),
    METADATA: authorize_metadata,
    DELETE_RECORDS: _by_topic_handler(DELETE_RECORDS_API),
    OFFSET_FOR_LEADER_EPOCH: _by_topic_handler(OFFSET_FOR_LEADER_EPOCH_API),
    DESCRIBE_PRODUCERS: _by_topic_handler(DESCRIBE_PRODUCERS_API),
    DESCRIBE_TOPIC_PARTITIONS: authorize_describe_topic_partitions,
}
