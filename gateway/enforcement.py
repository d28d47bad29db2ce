"""ACLs and quotas for one client session: the runtime side of :mod:`policies.acl`,
:mod:`policies.authorization` and :mod:`policies.quotas`.

The session asks this object, per request, whether the request must be inspected
whole, what the ACL verdict is, and how long to throttle; the decisions
themselves are pure code in ``policies``. Everything here reads the cluster's
current :class:`~gateway.policy_state.ClusterPolicies`, so a config reload
applies from each connection's next request. It also writes the audit log (one
aggregated event per request with refusals, so its cost does not grow with the
request; allows at debug level) and the throttle events, at most one per quota
per second per connection, so a throttled client cannot flood the log.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import structlog

from codec.fetch_sizes import fetch_record_bytes
from codec.headers import parse_request_header, response_body_offset
from codec.primitives import CodecError
from codec.produce import TooManyEntries, produce_topics
from gateway.decision_threads import run_decision
from gateway.logs import debug_enabled
from policies.acl.engine import ConstantDecider
from policies.acl.model import AclDecision, Authorizer, Operation, ResourceType
from policies.auth.principal import Principal
from policies.authorization import NO_AUTHORIZATION, Denial, RequestVerdict, authorize_request
from policies.authorization.fetch_sessions import (
    FetchExchange,
    FetchResponseCheck,
    FetchSessionGuard,
)
from policies.authorization.messages import MessageError, api_name
from policies.authorization.produce import authorize_produce
from policies.quotas.manager import Throttle

if TYPE_CHECKING:
    from gateway.client_auth import ClientAuthentication
    from gateway.cluster import VirtualCluster

PRODUCE, FETCH = 0, 1
#: Throttle events per quota and connection are logged at most this often.
THROTTLE_LOG_INTERVAL_S = 1.0
#: Refused resource names (and deciding rules) named in one ``authorization_denied`` event.
AUDIT_SAMPLE = 16
#: A checked request at least this large is decided in a worker thread
#: (:mod:`gateway.decision_threads`). Below it, the decision stays inline (at most
#: ~25 ms even with every entry refused), where the thread hop (~60-150 µs of CPU)
#: would cost more than it saves.
THREAD_DECISION_BYTES = 16 * 1024
#: A Produce is judged by its topic and partition entries instead (its records are
#: never read, so its size says nothing about the work, and most are large): it is
#: decided inline until its scan finds more entries than this, then in a thread.
THREAD_DECISION_PRODUCE_ENTRIES = 64


def decides_in_thread(api_key: int, frame: bytes) -> bool:
    """Whether the ACL decision of this request runs in a worker thread from the
    start (see :data:`THREAD_DECISION_BYTES`). A Produce starts inline and moves
    there once it proves to hold many entries (:meth:`Enforcement._decide`)."""
    return api_key != PRODUCE and len(frame) >= THREAD_DECISION_BYTES


audit_log = structlog.get_logger("gateway.audit")


@dataclass(slots=True)
class _Context:
    """What the per-API checks see of this connection (``AuthorizationContext``)."""

    principal: Principal
    authorizer: _CountingAuthorizer
    cluster: VirtualCluster
    #: Ids asked for that the cluster did not know: looked up, then decided again.
    unknown_ids: list[uuid.UUID] = field(default_factory=list)
    #: While deciding in a thread: topic ids are only read from what is indexed
    #: (the rest go to ``unknown_ids``, which the event loop resolves).
    in_thread: bool = False

    def topic_name(self, topic_id: uuid.UUID) -> str | None:
        cluster = self.cluster
        name = (
            cluster.known_topic_name(topic_id) if self.in_thread else cluster.topic_name(topic_id)
        )
        if name is None:
            self.unknown_ids.append(topic_id)
        return name


class _CountingAuthorizer:
    """Counts the allows of one request for its audit event; logs each at debug level.

    Denials are logged from the verdict, aggregated (:func:`denial_event`).
    """

    __slots__ = ("allowed", "inner", "log_allows")

    def __init__(self, inner: Authorizer, log_allows: bool) -> None:
        self.inner = inner
        self.log_allows = log_allows
        self.allowed = 0

    def authorize(
        self, principal: Principal, operation: Operation, resource_type: ResourceType, name: str
    ) -> AclDecision:
        decision = self.inner.authorize(principal, operation, resource_type, name)
        if decision.allowed:
            self._allowed(principal, operation, resource_type, name, decision)
        return decision

    def _allowed(
        self,
        principal: Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: str,
        decision: AclDecision,
    ) -> None:
        self.allowed += 1
        if self.log_allows:
            audit_log.debug(
                "authorization_allowed",
                principal=str(principal),
                operation=operation.value,
                resource_type=resource_type.value,
                resource=name,
                rule=decision.rule,
            )

    def authorize_any(
        self, principal: Principal, operation: Operation, resource_type: ResourceType
    ) -> AclDecision:
        return self.inner.authorize_any(principal, operation, resource_type)

    def name_decider(
        self, principal: Principal, operation: Operation, resource_type: ResourceType
    ) -> Callable[[str], AclDecision]:
        """The inner authorizer's ``name_decider`` (a request's many names), counted."""
        make = getattr(self.inner, "name_decider", None)
        if make is None:
            return functools.partial(self.authorize, principal, operation, resource_type)
        decide: Callable[[str], AclDecision] = make(principal, operation, resource_type)
        if isinstance(decide, ConstantDecider) and not decide.decision.allowed:
            return decide  # refusals are audited from the verdict: nothing to count

        def counted(name: str) -> AclDecision:
            decision = decide(name)
            if decision.allowed:
                self._allowed(principal, operation, resource_type, name, decision)
            return decision

        return counted


class Enforcement:
    """ACL and quota enforcement state of one connection."""

    def __init__(self, cluster: VirtualCluster, auth: ClientAuthentication, log: Any) -> None:
        self.cluster = cluster
        self.auth = auth
        self.log = log
        #: Set when a verdict requires closing the connection (after queued answers).
        self.close_reason: str | None = None
        self._counted_principal: str | None = None
        self._limiter: Any = None
        self._last_throttle_log: dict[str, float] = {}
        self._unlogged_throttles: dict[str, tuple[int, int]] = {}
        self._audit_allows = debug_enabled(audit_log)
        #: This connection's fetch session (KIP-227) as the broker holds it.
        self.fetch_sessions = FetchSessionGuard()
        #: What the last authorized Fetch request expects of its response.
        self.fetch_exchange: FetchExchange | None = None
        #: The checks' context, made again only when the ACL or the principal changes.
        self._context_cache: _Context | None = None

    # --- what to do with a request -----------------------------------------------

    def must_inspect(self, api_key: int) -> bool:
        """Whether the request must be buffered whole (ACLs, or per-topic produce quotas)."""
        policies = self.cluster.policies
        if policies.acl is not None and api_key not in NO_AUTHORIZATION:
            return True
        quotas = policies.quotas
        return api_key == PRODUCE and quotas is not None and quotas.has_topic_produce_quotas

    @staticmethod
    def client_id(head: memoryview) -> str | None:
        try:
            return parse_request_header(head).client_id
        except CodecError:  # a client id longer than the head: quotas by principal only
            return None

    # --- authorization -------------------------------------------------------------

    async def authorize(
        self, api_key: int, api_version: int, frame: bytes, client_id: str | None
    ) -> RequestVerdict:
        """Decide a request; topic ids it names that no Metadata showed are looked up
        upstream first, so an authorized request is never refused for a cold map."""
        acl = self.cluster.policies.acl
        principal = self.auth.principal
        self.fetch_exchange = None
        if acl is None or api_key in NO_AUTHORIZATION:
            return RequestVerdict(forward=frame)
        if principal is None:  # authentication routes such requests away: never unchecked
            reason = f"{api_name(api_key)} request before authentication"
            self.close_reason = reason
            return RequestVerdict(forward=None, close_connection=reason)
        context = self._context(acl, principal)
        authorizer = context.authorizer
        authorizer.allowed = 0  # counted per request, for its audit event
        context.unknown_ids.clear()
        saved_session = (
            self.fetch_sessions.save() if api_key == FETCH and api_version >= 13 else None
        )
        in_thread = decides_in_thread(api_key, frame)
        verdict = await self._decide_where_cheapest(
            in_thread, context, api_key, api_version, frame, acl
        )
        if context.unknown_ids:  # the decision is pure: redo it once the ids are known
            await self.cluster.resolve_topic_ids(context.unknown_ids)
            if saved_session is not None:  # the fetch-session mirror moved: undo that
                self.fetch_sessions.restore(saved_session)
            authorizer.allowed = 0
            context.unknown_ids.clear()
            verdict = await self._decide_where_cheapest(
                in_thread, context, api_key, api_version, frame, acl
            )
        self.audit_denials(api_key, verdict.denials, client_id, allowed=authorizer.allowed)
        if verdict.close_connection is not None:
            self.close_reason = verdict.close_connection
        return verdict

    async def _decide_where_cheapest(
        self,
        in_thread: bool,
        context: _Context,
        api_key: int,
        api_version: int,
        frame: bytes,
        acl: Authorizer,
    ) -> RequestVerdict:
        """:meth:`_decide`, inline or in a decision thread.

        In a thread, the decision shares only what is safe to share: the ACL engine
        (see :class:`~policies.acl.engine.AclEngine`), the topic-id map read only
        (:attr:`_Context.in_thread`), and memo caches that are only added to. This
        connection's own state is not touched meanwhile: its request pump awaits
        this call, and a Fetch waits for the connection's Fetch responses first
        (``ClientSession._authorize``), since their checks share the fetch-session
        mirror.
        """
        if not in_thread:
            try:
                return self._decide(context, api_key, api_version, frame, acl)
            except TooManyEntries:  # a Produce, found large before any work for it
                context.authorizer.allowed = 0
                context.unknown_ids.clear()
        context.in_thread = True
        try:
            return await run_decision(self._decide, context, api_key, api_version, frame, acl)
        finally:
            context.in_thread = False

    def _decide(
        self, context: _Context, api_key: int, api_version: int, frame: bytes, acl: Authorizer
    ) -> RequestVerdict:
        try:
            if api_key == FETCH:
                return self._authorize_fetch(context, api_version, frame, acl)
            if api_key == PRODUCE:
                inline = not context.in_thread
                limit = THREAD_DECISION_PRODUCE_ENTRIES if inline else None
                return authorize_produce(context, frame, api_version, limit)
            return authorize_request(context, api_key, api_version, frame)
        except MessageError as exc:
            reason = f"cannot authorize {api_name(api_key)} v{api_version} request: {exc}"
            self.log.warning("request_not_authorizable", error=reason)
            return RequestVerdict(forward=None, close_connection=reason)

    def _authorize_fetch(
        self, context: _Context, api_version: int, frame: bytes, acl: Authorizer
    ) -> RequestVerdict:
        decision = self.fetch_sessions.authorize(context, frame, api_version, self._policy(acl))
        self.fetch_exchange = decision.exchange
        if decision.foreign_session is not None:
            self.log.warning(
                "fetch_session_refused",
                principal=str(context.principal),
                session_id=decision.foreign_session,
                reason="not issued on this connection",
            )
        return decision.verdict

    def fetch_check(
        self, exchange: FetchExchange | None, api_version: int
    ) -> FetchResponseCheck | None:
        """The check of a Fetch response against the ACL now; None if nothing needs it."""
        acl, principal = self.cluster.policies.acl, self.auth.principal
        if acl is None or principal is None:
            if exchange is None:
                return None
            return self.fetch_sessions.response_check(exchange, None, api_version)
        context = self._context(acl, principal)
        return self.fetch_sessions.response_check(exchange, context, api_version, self._policy(acl))

    def _context(self, acl: Authorizer, principal: Principal) -> _Context:
        context = self._context_cache
        if (
            context is None
            or context.authorizer.inner is not acl
            or context.principal is not principal
        ):
            authorizer = _CountingAuthorizer(acl, self._audit_allows)
            context = self._context_cache = _Context(principal, authorizer, self.cluster)
        return context

    def _policy(self, acl: Authorizer) -> Authorizer | None:
        """The ACL generation the fetch guard may remember readable topics under.

        A reload replaces the engine object, so what was remembered under the old one
        no longer applies. None while every allow is logged (each must be asked).
        """
        return None if self._audit_allows else acl

    def filter_fetch_response(
        self, check: FetchResponseCheck, frame: Any, client_id: str | None
    ) -> Any:
        """A buffered Fetch response with the topics refused now replaced by errors."""
        filtered = check.filter(frame)
        self.audit_denials(FETCH, check.denials, client_id)
        return filtered

    def audit_denials(
        self, api_key: int, denials: Sequence[Denial], client_id: str | None, allowed: int = 0
    ) -> None:
        """One audit event for the refusals of a request (:func:`denial_event`), if any.

        A response transform may find more refusals later (topics hidden from an
        all-topics answer): they get one more event when the answer arrives.
        """
        if not denials:
            return
        audit_log.info(
            "authorization_denied",
            virtual_cluster=self.cluster.name,
            principal=str(self.auth.principal),
            client_address=self.auth.client_address,
            client_id=client_id,
            api=api_name(api_key),
            **denial_event(denials, allowed),
        )

    # --- quotas ----------------------------------------------------------------------

    def charge_request(self, api_key: int, client_id: str | None) -> int:
        quotas, principal = self.cluster.policies.quotas, self.auth.principal
        if quotas is None or principal is None or not quotas.limits_requests:
            return 0
        return self._throttle(quotas.record_request(str(principal), client_id, _now()), client_id)

    def charge_produce(self, client_id: str | None, frame: bytes | None, size: int) -> int:
        quotas, principal = self.cluster.policies.quotas, self.auth.principal
        if quotas is None or principal is None or not quotas.limits_produce:
            return 0
        topic_bytes: dict[str, int] = {}
        if frame is not None and quotas.has_topic_quotas:
            topic_bytes = self._produce_topic_bytes(frame)
        throttle = quotas.record_produce(str(principal), client_id, size, topic_bytes, _now())
        return self._throttle(throttle, client_id)

    @property
    def fetch_sizes_needed(self) -> bool:
        quotas = self.cluster.policies.quotas
        return quotas is not None and quotas.limits_fetch and quotas.has_topic_fetch_quotas

    def charge_fetch(
        self, client_id: str | None, api_version: int, size: int, frame: bytes | None = None
    ) -> int:
        quotas, principal = self.cluster.policies.quotas, self.auth.principal
        if quotas is None or principal is None or not quotas.limits_fetch:
            return 0
        topic_bytes = self._fetch_topic_bytes(frame, api_version) if frame is not None else None
        throttle = quotas.record_fetch(str(principal), client_id, size, topic_bytes, _now())
        return self._throttle(throttle, client_id)

    def _produce_topic_bytes(self, frame: bytes) -> dict[str, int]:
        try:
            header = parse_request_header(frame)
            summary = produce_topics(frame, header.body_offset, header.api_version)
        except CodecError:
            return {}  # the request is rejected upstream; the whole size was still charged
        sizes: dict[str, int] = {}
        for topic in summary.topics:
            name = topic.name
            if name is None and topic.topic_id is not None:
                name = self.cluster.topic_name(topic.topic_id)
            if name is not None:
                sizes[name] = sizes.get(name, 0) + sum(
                    p.records_end - p.records_start for p in topic.partitions
                )
        return sizes

    def _fetch_topic_bytes(self, frame: bytes, api_version: int) -> dict[str, int]:
        try:
            offset = response_body_offset(frame, FETCH, api_version)
            by_key = fetch_record_bytes(memoryview(frame)[offset:], api_version)
        except (CodecError, ValueError):
            return {}
        sizes: dict[str, int] = {}
        for key, size in by_key.items():
            name = key if isinstance(key, str) else self.cluster.topic_name(key)
            if name is not None:
                sizes[name] = sizes.get(name, 0) + size
        return sizes

    def _throttle(self, throttle: Throttle, client_id: str | None) -> int:
        if throttle.delay_ms <= 0:
            return 0
        now = time.monotonic()
        count, longest = self._unlogged_throttles.get(throttle.quota, (0, 0))
        count, longest = count + 1, max(longest, throttle.delay_ms)
        if now - self._last_throttle_log.get(throttle.quota, 0.0) < THROTTLE_LOG_INTERVAL_S:
            self._unlogged_throttles[throttle.quota] = (count, longest)
            return throttle.delay_ms
        self._last_throttle_log[throttle.quota] = now
        self._unlogged_throttles.pop(throttle.quota, None)
        self.log.info(
            "throttled",
            principal=str(self.auth.principal),
            client_id=client_id,
            quota=throttle.quota,
            entity=throttle.entity,
            limit=throttle.limit,
            rate=round(throttle.rate, 1),
            delay_ms=throttle.delay_ms,
            # Since the previous event of this quota on this connection:
            throttled_requests=count,
            max_delay_ms=longest,
        )
        return throttle.delay_ms

    # --- connection limits -----------------------------------------------------------

    def admit_principal(self) -> str | None:
        """Count this connection for its principal once known; a reason if over the limit."""
        principal = self.auth.principal
        if principal is None or self._counted_principal is not None:
            return None
        limiter = self.cluster.policies.connections
        reason = limiter.admit_principal(str(principal))
        if reason is not None:
            self.log.warning("connection_refused", principal=str(principal), reason=reason)
            return reason
        self._counted_principal, self._limiter = str(principal), limiter
        return None

    def release(self) -> None:
        if self._counted_principal is not None:
            self._limiter.release_principal(self._counted_principal)
            self._counted_principal = None


def denial_event(denials: Sequence[Denial], allowed: int = 0) -> dict[str, Any]:
    """The aggregated fields of an ``authorization_denied`` event, whatever the count.

    ``{"denied": n, "allowed": m, "operations": [...], "resource_types": [...],
    "rules": [...], "resources": [first AUDIT_SAMPLE names], "resources_omitted": k}``:
    ``denied`` counts the distinct refused (operation, resource) pairs of the
    request (a name the client repeated counts once), ``allowed`` the distinct
    questions the authorizer allowed; ``operations``, ``resource_types`` and
    ``rules`` list the distinct values in the order met; ``resources`` holds the
    first :data:`AUDIT_SAMPLE` refused names in the client's order, and
    ``resources_omitted`` how many more there were. The cost of the event does not
    grow with the request: one pass over the denials, bounded output.
    """
    # Distinct values by C-level passes over the columns; ``.value`` only per distinct one.
    operations = dict.fromkeys(map(attrgetter("operation"), denials))
    resource_types = dict.fromkeys(map(attrgetter("resource_type"), denials))
    rules = dict.fromkeys(map(attrgetter("rule"), denials))
    return {
        "denied": len(denials),
        "allowed": allowed,
        "operations": [operation.value for operation in operations],
        "resource_types": [resource_type.value for resource_type in resource_types],
        "rules": list(rules)[:AUDIT_SAMPLE],
        "resources": [denial.name for denial in denials[:AUDIT_SAMPLE]],
        "resources_omitted": max(0, len(denials) - AUDIT_SAMPLE),
    }


def _now() -> float:
    return time.monotonic()
