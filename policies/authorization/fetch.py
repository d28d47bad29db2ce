"""Fetch (1): which topics a fetch may not read, and the answers for them.

The handler is :func:`policies.authorization.fetch_sessions.authorize_fetch`: it
also checks the partitions of the connection's fetch session (KIP-227) that a
request does not name, and builds its verdict with these pieces.

* :func:`fetch_topic_errors`: ``{topic key: error code}`` for the refused topics
  (Read on each topic; ClusterAction on the cluster for a follower).
* :func:`fetch_verdict`: the request without its refused topics, and their error
  entries spliced into the broker's answer (records never decoded).
* :func:`fetch_refused_topic`: a refused topic's entry, as Kafka builds it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

from kio.schema.errors import ErrorCode

from codec import errors
from codec.fetch_sizes import fetch_response_topics
from codec.headers import response_body_offset
from codec.primitives import Buffer, CodecError, Reader, enc_array_length
from policies.acl.model import CLUSTER_NAME, Operation, ResourceType
from policies.authorization.messages import (
    MessageError,
    encode_request,
    encode_response,
    response_class,
)
from policies.authorization.splitting import Decisions, build
from policies.authorization.topics import (
    TOPIC,
    UNKNOWN_TOPIC_ID,
    ZERO_THROTTLE,
    TopicKey,
    encode_entity,
    kio_entity,
    request_correlation_id,
    topic_template,
)
from policies.authorization.verdict import AuthorizationContext, Denial, RequestVerdict

__all__ = [
    "fetch_is_follower",
    "fetch_refused_topic",
    "fetch_topic_errors",
    "fetch_verdict",
]

FETCH: Final = 1

_FIRST_FETCH_SESSION: Final = 7
_FIRST_FLEXIBLE_FETCH: Final = 12
_FIRST_FETCH_TOPIC_ID: Final = 13
_FIRST_REPLICA_STATE: Final = 15


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
        local = encode_response(request_correlation_id(frame), FETCH, version, body)
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
