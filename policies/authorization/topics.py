"""What the topic-shaped data-plane APIs share: topic keys, kio helpers, and the
merge of locally answered partitions into the broker's answer in the client's order.

Like Kafka's ``KafkaApis``, a refused topic does not fail a data-plane request
(Produce, Fetch, Metadata, the partitioned APIs): its partitions are answered with
an error (usually ``TOPIC_AUTHORIZATION_FAILED``), the rest goes to the broker, and
the two answers are merged. Every decision goes through
:class:`~policies.authorization.splitting.Decisions`, which asks each (operation,
resource) once per request and keeps a :class:`~policies.authorization.verdict.Denial`
per refusal. When everything is allowed the handlers return the original frame
object, so the common case costs one scan and a few authorizer calls, never a
re-encode.

* :data:`TopicKey`: a topic as a message names it, by name or (Produce v13, Fetch
  v13+) by id.
* :class:`TopicPartitionsShape`: where a kio message keeps
  ``topics[key, partitions[index, ...]]``.
* :func:`merge_in_client_order`: response topics listing exactly the client's
  partitions, each from the local answer or the broker's.
* :func:`topic_template`: a topic entry rendered around already encoded partitions.
* :func:`kio_entity`, :func:`encode_entity`, :func:`request_correlation_id`,
  :func:`response_correlation_id`: kio and header helpers raising
  :class:`~policies.authorization.messages.MessageError`.
"""

from __future__ import annotations

import datetime
import sys
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from codec.headers import peek_api
from codec.headers import response_correlation_id as upstream_correlation_id
from codec.primitives import CodecError
from policies.acl.model import ResourceType
from policies.authorization.encoding import EntryTemplate
from policies.authorization.encoding import encode_entity as fast_encode
from policies.authorization.messages import MessageError
from policies.authorization.splitting import build

__all__ = [
    "TOPIC",
    "UNKNOWN_TOPIC_ID",
    "ZERO_THROTTLE",
    "ZERO_UUID",
    "LocalPartition",
    "TopicKey",
    "TopicPartitionsShape",
    "encode_entity",
    "kio_entity",
    "merge_in_client_order",
    "request_correlation_id",
    "response_correlation_id",
    "topic_template",
]

#: Not in :mod:`codec.errors` (owned elsewhere); Kafka's code for a topic id it does not know.
UNKNOWN_TOPIC_ID: Final = 100

TOPIC: Final = ResourceType.TOPIC
ZERO_THROTTLE: Final = datetime.timedelta(0)
ZERO_UUID: Final = uuid.UUID(int=0)

#: A topic as a message names it: by name, or (Produce v13, Fetch v13+) by id.
TopicKey = Hashable


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


def request_correlation_id(frame: bytes) -> int:
    """A request frame's correlation id."""
    try:
        return peek_api(frame)[2]
    except CodecError as exc:
        raise MessageError(f"malformed request header: {exc}") from None


def response_correlation_id(frame: bytes) -> int:
    """An upstream response frame's correlation id."""
    try:
        return upstream_correlation_id(frame)
    except CodecError as exc:
        raise MessageError(f"malformed response header: {exc}") from None


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
