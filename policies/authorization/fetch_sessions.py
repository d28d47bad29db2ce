"""Fetch sessions (KIP-227) under ACLs: every partition of every Fetch response is checked.

Once a client has a fetch session, its requests name only the partitions that
changed; the broker answers for the whole session. A check of the partitions a
request names therefore misses a topic whose ACL was revoked (by a reload) after
the session was set up, and a session id is a bare number the broker accepts from
anyone (the gateway's upstream login is shared by all its clients). Two parts,
each with one job:

* **Request side** (:class:`FetchSessionGuard`, one per connection): mirrors the
  connection's upstream session (``session_id`` and its partitions: a full fetch at
  epoch 0 sets them when the broker answers with a session id; an incremental one
  adds the partitions it names and removes ``forgotten_topics_data``) and, at every
  request, authorizes the topics of the whole session, not only those named (ACL
  answers are cached: well under a microsecond per topic). An incremental fetch
  naming a session id the broker did not issue on this connection is answered
  locally as Kafka answers an unknown session: ``FETCH_SESSION_ID_NOT_FOUND``,
  ``session_id`` 0, no partitions (an epoch out of sequence: ``INVALID_FETCH_SESSION_EPOCH``,
  so a request the guard did not see, e.g. while no ACL was configured, cannot
  leave the mirror behind the broker); a full fetch naming such an id (closing it) has
  the id replaced by 0 (it must not close another connection's session). When a
  session partition is refused, the request is forwarded with session epoch -1
  (``FINAL_EPOCH``: the broker closes the session and answers the named allowed
  partitions sessionless), every refused session partition is answered with
  ``TOPIC_AUTHORIZATION_FAILED`` in the same response, and the response's
  ``session_id`` 0 makes the client start over with a full fetch, which the same
  checks filter. Closing rather than forgetting the refused partitions keeps the
  client's session and the broker's identical (with forgotten partitions, the
  client would wait forever for a partition whose ACL comes back), and Kafka too
  reports the error on every fetch while the topic stays refused.
* **Response side** (:class:`FetchResponseCheck`, one per response): checks every
  topic of every Fetch response against the ACL in force when the response
  arrives. Buffered responses (up to ``STREAM_FETCH_ABOVE``) get a refused topic
  entry replaced by its error entry. Streamed responses are walked as they pass
  (:class:`codec.fetch_stream.FetchTailWatcher` with this check as its inspector);
  a refused topic raises :class:`RefusedTopicInStream` before any of its records is
  released, and the connection is closed (the frame's size is already sent). The
  request side makes this a race only (an ACL reload between a request and its
  response), so large fetches keep streaming on the common path instead of being
  buffered whenever an ACL might change.

The Fetch entry of the per-API table, :func:`authorize_fetch`, is the request side
on a connection with no fetch session yet.

Cost per Fetch on the checked path: the request was already decoded for the
named-topic checks; the mirror update is a set operation per named partition. The
guard remembers the topics found readable under the current ACL generation (the
engine object a reload replaces) and principal, so the steady state (an
incremental fetch naming nothing, or a full fetch naming the same topics) asks the
authorizer nothing: one set comparison. On the response, the session fields and
each topic key are read as they pass (no copy of records), and a remembered topic
costs a set lookup. Measured (``python -m tests.benchmarks.checked_requests``):
a few µs per request and per response on top of the decode.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from kio.schema.errors import ErrorCode

from codec.fetch_sizes import fetch_response_topics, fetch_topic_partitions
from codec.headers import peek_api, response_body_offset
from codec.primitives import Buffer, CodecError
from policies.authorization import Handler
from policies.authorization.fetch import (
    fetch_is_follower,
    fetch_refused_topic,
    fetch_topic_errors,
    fetch_verdict,
)
from policies.authorization.messages import (
    MessageError,
    decode_request,
    encode_response,
    response_class,
)
from policies.authorization.splitting import Decisions, build
from policies.authorization.topics import ZERO_THROTTLE, TopicKey, encode_entity, kio_entity
from policies.authorization.verdict import AuthorizationContext, Denial, RequestVerdict

__all__ = [
    "FETCH_SESSION_ID_NOT_FOUND",
    "HANDLERS",
    "FetchDecision",
    "FetchExchange",
    "FetchResponseCheck",
    "FetchSessionGuard",
    "RefusedTopicInStream",
    "authorize_fetch",
]

FETCH: Final = 1
FETCH_SESSION_ID_NOT_FOUND: Final = 70
INVALID_FETCH_SESSION_EPOCH: Final = 71
_MAX_EPOCH: Final = 2**31 - 1
#: Fetch versions with sessions, topic ids, flexible encoding.
_FIRST_SESSION: Final = 7
_FIRST_FLEXIBLE: Final = 12
_FIRST_TOPIC_ID: Final = 13
_FINAL_EPOCH: Final = -1
_ERROR_AND_SESSION: Final = struct.Struct(">hi")
#: Readable topics remembered per connection (the set is cleared beyond this).
_MAX_REMEMBERED_TOPICS: Final = 10_000

Partitions = dict[TopicKey, set[int]]


class ExchangeKind(enum.Enum):
    #: No session after this response (v0-6, epoch -1, or a session being closed).
    SESSIONLESS = "sessionless"
    #: A full fetch at epoch 0: the response's session id starts a new session.
    NEW_SESSION = "new_session"
    #: An incremental fetch of the connection's session.
    INCREMENTAL = "incremental"


@dataclass(slots=True)
class FetchExchange:
    """What the guard expects of the response to one forwarded Fetch request."""

    version: int
    kind: ExchangeKind
    follower: bool = False
    #: ``NEW_SESSION``: the partitions the broker's new session holds.
    partitions: Partitions = field(default_factory=dict)


@dataclass(slots=True)
class FetchDecision:
    verdict: RequestVerdict
    #: None when nothing is forwarded (no upstream response will come).
    exchange: FetchExchange | None
    #: An incremental fetch's session id that this connection does not own (refused).
    foreign_session: int | None = None


class RefusedTopicInStream(ValueError):
    """A streamed Fetch response carries a topic the principal may not read now."""

    def __init__(self, message: str, denials: list[Denial]) -> None:
        super().__init__(message)
        self.denials = denials


class FetchSessionGuard:
    """One connection's fetch session, as the broker holds it; see the module docstring.

    ``policy`` (the methods' last argument) is the ACL generation the authorizer's
    answers come from: an object a reload replaces (the gateway passes its
    ``AclEngine``). Topics found readable under it are remembered, so a fetch whose
    topics (or session) were all found readable under the same policy and principal
    asks the authorizer nothing: the steady state of a consumer (an incremental fetch
    naming nothing, or a full fetch naming the same topics) is one set comparison,
    not one ACL answer per topic. A refusal is never remembered, and a request with
    any topic not remembered asks about all of them (so its audit counts are exact).
    None: nothing is remembered (e.g. while every allow is logged).
    """

    __slots__ = (
        "_allowed",
        "_allowed_policy",
        "_allowed_principal",
        "next_epoch",
        "partitions",
        "session_id",
    )

    def __init__(self) -> None:
        #: The session the broker issued on this connection (0: none).
        self.session_id = 0
        #: The epoch its next incremental fetch must carry: a request the guard did not
        #: see (e.g. while no ACL was configured) breaks the sequence, and the client
        #: is made to start over instead of using a session the mirror may not match.
        self.next_epoch = 1
        #: Its partitions: ``{topic key: {partition index}}``.
        self.partitions: Partitions = {}
        #: Topic keys found readable under ``_allowed_policy`` by ``_allowed_principal``.
        self._allowed: set[TopicKey] = set()
        self._allowed_policy: object | None = None
        self._allowed_principal: object | None = None

    def authorize(
        self,
        context: AuthorizationContext,
        frame: bytes,
        version: int,
        policy: object | None = None,
    ) -> FetchDecision:
        body_offset, request = decode_request(frame)
        follower = fetch_is_follower(request, version)
        key_field = "topic_id" if version >= _FIRST_TOPIC_ID else "topic"
        epoch = request.session_epoch if version >= _FIRST_SESSION else _FINAL_EPOCH
        if epoch > 0:
            return self._incremental(
                context, frame, body_offset, request, version, follower, key_field, policy
            )
        changes: dict[str, Any] = {}
        if version >= _FIRST_SESSION:
            session_id = request.session_id
            if session_id != 0 and session_id != self.session_id:
                changes["session_id"] = 0  # not this connection's to close
            self._forget()  # a full fetch closes or replaces the session
        named = dict.fromkeys([getattr(topic, key_field) for topic in request.topics])
        local_errors, denials = self._topic_errors(context, named, version, follower, policy)
        verdict = fetch_verdict(
            frame, body_offset, request, version, local_errors, denials, changes=changes
        )
        if verdict.forward is None:
            return FetchDecision(verdict, None)
        if epoch == 0:
            partitions = _named_partitions(request, key_field, local_errors)
            exchange = FetchExchange(version, ExchangeKind.NEW_SESSION, follower, partitions)
        else:
            exchange = FetchExchange(version, ExchangeKind.SESSIONLESS, follower)
        return FetchDecision(verdict, exchange)

    def _incremental(
        self,
        context: AuthorizationContext,
        frame: bytes,
        body_offset: int,
        request: Any,
        version: int,
        follower: bool,
        key_field: str,
        policy: object | None,
    ) -> FetchDecision:
        if self.session_id == 0 or request.session_id != self.session_id:
            verdict = _session_error(frame, version, FETCH_SESSION_ID_NOT_FOUND)
            return FetchDecision(verdict, None, request.session_id)
        if request.session_epoch != self.next_epoch:
            verdict = _session_error(frame, version, INVALID_FETCH_SESSION_EPOCH)
            return FetchDecision(verdict, None)
        self.next_epoch = _next_epoch(self.next_epoch)
        session = self.partitions
        for topic in request.forgotten_topics_data:
            key = getattr(topic, key_field)
            kept = session.get(key)
            if kept is not None:
                kept.difference_update(topic.partitions)
                if not kept:
                    del session[key]
        for topic in request.topics:
            key = getattr(topic, key_field)
            indexes = session.setdefault(key, set())
            indexes.update(p.partition for p in topic.partitions)
            if not indexes:  # named with no partitions
                del session[key]
        local_errors, denials = self._topic_errors(context, session, version, follower, policy)
        if not local_errors:
            return FetchDecision(
                RequestVerdict(forward=frame), FetchExchange(version, ExchangeKind.INCREMENTAL)
            )
        refused = {key: session[key] for key in local_errors}
        self._forget()
        changes = {"session_epoch": _FINAL_EPOCH, "forgotten_topics_data": ()}
        verdict = fetch_verdict(
            frame,
            body_offset,
            request,
            version,
            local_errors,
            denials,
            session_partitions=refused,
            changes=changes,
        )
        return FetchDecision(verdict, FetchExchange(version, ExchangeKind.SESSIONLESS, follower))

    def save(self) -> tuple[int, int, Partitions]:
        """The mirror's state, for :meth:`restore` when a decision must be taken again
        (topic ids looked up upstream in between): :meth:`authorize` moves it."""
        partitions = {key: set(indexes) for key, indexes in self.partitions.items()}
        return self.session_id, self.next_epoch, partitions

    def restore(self, saved: tuple[int, int, Partitions]) -> None:
        self.session_id, self.next_epoch, self.partitions = saved

    def _topic_errors(
        self,
        context: AuthorizationContext,
        keys: Collection[TopicKey],
        version: int,
        follower: bool,
        policy: object | None,
    ) -> tuple[dict[TopicKey, int], list[Denial]]:
        """``({refused key: error code}, denials)`` for a fetch of ``keys``."""
        remember = policy is not None and not follower  # a follower's check is the cluster's
        if remember:
            if self.remembers(policy, context.principal):
                if self._allowed.issuperset(keys):
                    return {}, []
            else:
                self._allowed = set()
                self._allowed_policy, self._allowed_principal = policy, context.principal
        checks = Decisions(context)
        local_errors = fetch_topic_errors(context, checks, keys, version, follower)
        if remember:
            self._remember(key for key in keys if key not in local_errors)
        return local_errors, checks.denials

    def remembers(self, policy: object | None, principal: object) -> bool:
        """Whether the readable topics remembered are those of ``policy`` and ``principal``."""
        return (
            policy is not None
            and self._allowed_policy is policy
            and self._allowed_principal is principal
        )

    def _remember(self, readable: Iterable[TopicKey]) -> None:
        allowed = self._allowed
        if len(allowed) >= _MAX_REMEMBERED_TOPICS:
            allowed.clear()  # bounded per connection; the next fetches ask again
        allowed.update(readable)

    def _forget(self) -> None:
        self.session_id = 0
        self.next_epoch = 1
        self.partitions = {}

    def response_session(
        self, exchange: FetchExchange | None, error_code: int, session_id: int
    ) -> None:
        """Learn the session state from a response's top-level fields."""
        if exchange is None:
            return  # a request the guard did not see (no ACL then): no session to trust
        if exchange.kind is ExchangeKind.NEW_SESSION:
            if error_code == 0 and session_id != 0:
                self.session_id = session_id
                self.next_epoch = 1
                self.partitions = exchange.partitions
            return
        if exchange.kind is ExchangeKind.INCREMENTAL and (
            error_code != 0 or session_id != self.session_id
        ):
            self._forget()  # rejected or closed by the broker: the client starts over

    def response_check(
        self,
        exchange: FetchExchange | None,
        context: AuthorizationContext | None,
        version: int,
        policy: object | None = None,
    ) -> FetchResponseCheck:
        """The check of one response; ``context`` None: no ACL in force now."""
        return FetchResponseCheck(self, exchange, context, version, policy)


def authorize_fetch(context: AuthorizationContext, frame: bytes, version: int) -> RequestVerdict:
    """Kafka's ``handleFetchRequest`` checks, for a connection with no fetch session yet.

    The gateway keeps one :class:`FetchSessionGuard` per connection, which also
    checks the partitions of the connection's fetch session (KIP-227) that a
    request does not name; this stateless handler is that guard on a fresh
    connection (an incremental fetch is refused with ``FETCH_SESSION_ID_NOT_FOUND``).
    See :func:`~policies.authorization.fetch.fetch_verdict` for the answer.
    """
    return FetchSessionGuard().authorize(context, frame, version).verdict


HANDLERS: dict[int, Handler] = {FETCH: authorize_fetch}


class FetchResponseCheck:
    """Checks one Fetch response's topics against the ACL in force now.

    An :class:`~codec.fetch_stream.FetchInspector` for streamed responses; call
    :meth:`filter` for a buffered one. :attr:`denials` lists the refusals found.
    """

    __slots__ = (
        "_checks",
        "_context",
        "_errors",
        "_exchange",
        "_follower",
        "_guard",
        "_remembered",
        "_version",
        "denials",
    )

    def __init__(
        self,
        guard: FetchSessionGuard,
        exchange: FetchExchange | None,
        context: AuthorizationContext | None,
        version: int,
        policy: object | None = None,
    ) -> None:
        self._guard = guard
        self._exchange = exchange
        self._context = context
        self._version = version
        self._follower = exchange is not None and exchange.follower
        #: Topics the guard found readable under the policy in force now (a reload
        #: since replaced the policy object: nothing remembered applies).
        self._remembered = (
            guard._allowed
            if context is not None
            and not self._follower
            and guard.remembers(policy, context.principal)
            else None
        )
        self._checks: Decisions | None = None  # made at the first topic not remembered
        self._errors: dict[TopicKey, int] = {}
        self.denials: list[Denial] = []

    def session(self, error_code: int, session_id: int) -> None:
        self._guard.response_session(self._exchange, error_code, session_id)

    def error_for(self, key: TopicKey) -> int:
        """0 if the topic may be read now, else the error code to answer it with."""
        context = self._context
        if context is None:
            return 0
        remembered = self._remembered
        if remembered is not None and key in remembered:
            return 0
        code = self._errors.get(key)
        if code is None:
            checks = self._checks
            if checks is None:
                checks = self._checks = Decisions(context)
            code = fetch_topic_errors(context, checks, (key,), self._version, self._follower).get(
                key, 0
            )
            self._errors[key] = code
            self.denials = checks.denials
            if code == 0 and remembered is not None:
                self._guard._remember((key,))
        return code

    def topic(self, key: str | uuid.UUID) -> None:
        if self.error_for(key):
            raise RefusedTopicInStream(
                f"a streamed Fetch response carries topic {key}, which the principal may no "
                "longer read (ACL changed while the fetch was in flight); its size was already "
                "sent, so the connection is closed",
                self.denials,
            )

    def filter(self, frame: Buffer) -> Buffer:
        """The buffered response with every refused topic entry replaced by its errors."""
        version = self._version
        try:
            offset = response_body_offset(frame, FETCH, version)
            if version >= _FIRST_SESSION:
                self.session(*_ERROR_AND_SESSION.unpack_from(frame, offset + 4))
            if self._context is None:
                return frame
            layout = fetch_response_topics(frame, version, offset)
            replaced: dict[int, bytes] = {}
            for index, entry in enumerate(layout.topics):
                code = self.error_for(entry.key)
                if code:
                    indexes = fetch_topic_partitions(frame, version, entry)
                    replaced[index] = _refused_entry(version, entry.key, indexes, code)
        except (CodecError, struct.error) as exc:
            raise MessageError(f"malformed Fetch v{version} response: {exc}") from None
        if not replaced:
            return frame
        view = memoryview(frame)
        parts: list[Buffer] = [view[: layout.entries_start]]
        for index, entry in enumerate(layout.topics):
            parts.append(replaced.get(index, view[entry.start : entry.end]))
        parts.append(view[layout.entries_end :])
        return b"".join(parts)


def _named_partitions(request: Any, key_field: str, refused: Iterable[TopicKey]) -> Partitions:
    skipped = set(refused)
    partitions: Partitions = {}
    for topic in request.topics:
        key = getattr(topic, key_field)
        if key not in skipped:
            partitions.setdefault(key, set()).update(p.partition for p in topic.partitions)
    return partitions


def _refused_entry(version: int, key: TopicKey, indexes: list[int], code: int) -> bytes:
    response_cls = response_class(FETCH, version)
    topic_cls = kio_entity(response_cls, "FetchableTopicResponse")
    partition_cls = kio_entity(response_cls, "PartitionData")
    key_field = "topic_id" if version >= _FIRST_TOPIC_ID else "topic"
    return encode_entity(
        fetch_refused_topic(topic_cls, partition_cls, key_field, key, indexes, code)
    )


def _next_epoch(epoch: int) -> int:
    """Kafka's ``FetchMetadata.nextEpoch``: after the largest int32 comes 1."""
    return 1 if epoch >= _MAX_EPOCH else epoch + 1


def _session_error(frame: bytes, version: int, code: int) -> RequestVerdict:
    """Kafka's answer to an incremental fetch it cannot serve (``SessionErrorContext``)."""
    try:
        correlation_id = peek_api(frame)[2]
    except CodecError as exc:
        raise MessageError(f"malformed request header: {exc}") from None
    body = build(
        response_class(FETCH, version),
        throttle_time=ZERO_THROTTLE,
        error_code=ErrorCode(code),
        session_id=0,
        responses=(),
    )
    return RequestVerdict(
        forward=None, local_response=encode_response(correlation_id, FETCH, version, body)
    )
