"""Authorization of the APIs shaped ``topics[name, partitions[index, ...]]``: one
operation on each topic; refused topics are answered locally, merged in the client's order.

Covered: ListOffsets (2, Describe), DeleteRecords (21, Delete),
OffsetForLeaderEpoch (23, Describe; ClusterAction on the cluster allows every
topic, as for a follower) and DescribeProducers (61, Read). Each is a
:class:`PartitionedApi` description checked by :func:`authorize_by_topic`;
another API of the same shape is one more description.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kio.schema.errors import ErrorCode

from codec import errors
from policies.acl.model import CLUSTER_NAME, Operation, ResourceType
from policies.authorization import Handler
from policies.authorization.messages import (
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
    LocalPartition,
    TopicKey,
    TopicPartitionsShape,
    encode_entity,
    kio_entity,
    merge_in_client_order,
    request_correlation_id,
    response_correlation_id,
    topic_template,
)
from policies.authorization.verdict import AuthorizationContext, Denial, RequestVerdict

__all__ = [
    "DELETE_RECORDS_API",
    "DESCRIBE_PRODUCERS_API",
    "HANDLERS",
    "LIST_OFFSETS_API",
    "OFFSET_FOR_LEADER_EPOCH_API",
    "PartitionedApi",
    "authorize_by_topic",
    "split_by_topic",
]

LIST_OFFSETS: Final = 2
DELETE_RECORDS: Final = 21
OFFSET_FOR_LEADER_EPOCH: Final = 23
DESCRIBE_PRODUCERS: Final = 61


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
        local = encode_response(request_correlation_id(frame), api.api_key, version, body)
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
        correlation_id = response_correlation_id(upstream_frame)
        return encode_response(correlation_id, api.api_key, version, body)

    reduced = dataclasses.replace(request, **{api.request.topics: forwarded})
    return RequestVerdict(
        forward=encode_request(frame, body_offset, reduced), transform=transform, denials=denials
    )


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


HANDLERS: dict[int, Handler] = {
    LIST_OFFSETS: _by_topic_handler(LIST_OFFSETS_API),
    DELETE_RECORDS: _by_topic_handler(DELETE_RECORDS_API),
    OFFSET_FOR_LEADER_EPOCH: _by_topic_handler(OFFSET_FOR_LEADER_EPOCH_API),
    DESCRIBE_PRODUCERS: _by_topic_handler(DESCRIBE_PRODUCERS_API),
}
