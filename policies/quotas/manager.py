"""Byte-rate and request-rate quotas, decided the way Kafka's ``ClientQuotaManager`` does.

The runtime tells the :class:`QuotaManager` what a client did (produced so many
bytes, fetched so many, sent a request) and gets back a :class:`Throttle`: how long
to delay that client. As in Kafka since KIP-219 the request is always served and
recorded; the delay afterwards brings the client's windowed rate back to its limit
(the runtime answers with ``throttle_time_ms`` and holds the connection back).

Which limit applies (KIP-55): for each kind of quota separately, the first quota
entity in Kafka's precedence that sets that kind::

    (principal=U, client_id=C), (U, <default>), (U),
    (<default>, C), (<default>, <default>), (<default>),
    (client_id=C), (client_id=<default>)

The meter is keyed by the matched entity with ``<default>`` replaced by the actual
value, so all connections of one entity share a meter and ``principal: <default>``
gives each principal its own. Per-topic quotas add a meter per topic, shared by
every client of that topic; a request is delayed by the largest of its throttles.

Entity and topic resolution is cached per (principal, client id) and per topic, so
a call is a few dictionary look-ups and one meter update per applicable quota.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from policies.quotas.config import (
    DEFAULT_ENTITY,
    QuotasConfig,
    TopicQuotaConfig,
    WindowConfig,
    describe_entity,
)
from policies.quotas.meters import throttle_ms
from policies.quotas.store import InProcessQuotaStore, QuotaStore

__all__ = [
    "FETCH_BYTES",
    "NO_THROTTLE",
    "PRODUCE_BYTES",
    "REQUESTS",
    "QuotaManager",
    "QuotaMeter",
    "Throttle",
    "precedence",
]

#: Quota names, as the configuration keys that set them.
PRODUCE_BYTES: Final = "produce_bytes_per_second"
FETCH_BYTES: Final = "fetch_bytes_per_second"
REQUESTS: Final = "requests_per_second"

# Short meter-key prefixes per quota (keys may end up in a shared store: keep them small).
_KEY_PREFIX: Final = {PRODUCE_BYTES: "produce", FETCH_BYTES: "fetch", REQUESTS: "request"}

# Resolution caches are dropped wholesale when they reach this size: far more
# (principal, client id) pairs or topics than a gateway sees, so it only bounds memory.
_MAX_CACHED: Final = 10_000

Entity = tuple[str | None, str | None]


@dataclass(frozen=True, slots=True)
class Throttle:
    """How long to delay a client, and (for logs and metrics) which quota caused it.

    ``delay_ms`` is the largest delay over every quota that applied; the other
    fields describe that quota: its name (e.g. ``"produce_bytes_per_second"``), the
    metered entity (``"principal=User:alice, client_id=loader"``, ``"topic=orders"``),
    its limit and the measured rate. :data:`NO_THROTTLE` when within every quota.
    """

    delay_ms: int
    quota: str = ""
    entity: str = ""
    limit: float = 0.0
    rate: float = 0.0


#: Within every quota: no delay.
NO_THROTTLE: Final = Throttle(0)


@dataclass(frozen=True, slots=True)
class QuotaMeter:
    """A resolved quota: the store key to record under, and what to report.

    ``entity`` is the metered entity (``"principal=User:bob"``), ``source`` the
    configuration entry that set the limit (``"principal='<default>'"``).
    """

    key: str
    quota: str
    entity: str
    limit: float
    source: str


# Per quota kind: the meter for a (principal, client id), or None when unlimited.
_ClientMeters = tuple[QuotaMeter | None, QuotaMeter | None, QuotaMeter | None]
# Per topic: the produce and fetch meters.
_TopicMeters = tuple[QuotaMeter | None, QuotaMeter | None]


def precedence(principal: str, client_id: str) -> tuple[Entity, ...]:
    """Kafka's quota entities for ``(principal, client_id)``, most specific first (KIP-55)."""
    default = DEFAULT_ENTITY
    return (
        (principal, client_id),
        (principal, default),
        (principal, None),
        (default, client_id),
        (default, default),
        (default, None),
        (None, client_id),
        (None, default),
    )


class _ClientQuotas:
    """Configured (principal, client id) limits, indexed per quota kind."""

    def __init__(self, config: QuotasConfig) -> None:
        self._limits: dict[str, dict[Entity, float]] = {q: {} for q in _KEY_PREFIX}
        for client in config.clients:
            for quota, limit in client.limits.items():
                self._limits[quota][client.entity] = limit

    def limits(self, quota: str) -> bool:
        return bool(self._limits[quota])

    def resolve(self, quota: str, principal: str, client_id: str) -> QuotaMeter | None:
        limits = self._limits[quota]
        if not limits:
            return None
        for entity in precedence(principal, client_id):
            limit = limits.get(entity)
            if limit is not None:
                return _client_meter(quota, entity, principal, client_id, limit)
        return None


def _client_meter(
    quota: str, entity: Entity, principal: str, client_id: str, limit: float
) -> QuotaMeter:
    # The configured entity, with <default> replaced by the actual value: everything
    # that maps to the same metered entity shares the meter.
    metered_principal = principal if entity[0] is not None else None
    metered_client = client_id if entity[1] is not None else None
    key = _KEY_PREFIX[quota]
    labels = []
    if metered_principal is not None:
        # Length-prefixed: a principal may contain any character, the key stays unambiguous.
        key += f"|user={len(metered_principal)}:{metered_principal}"
        labels.append(f"principal={metered_principal}")
    if metered_client is not None:
        key += f"|client={metered_client}"
        labels.append(f"client_id={metered_client}")
    return QuotaMeter(key, quota, ", ".join(labels), limit, describe_entity(*entity))


class _TopicPatterns:
    """Topic limits of one quota kind: literal names, prefixes and globs."""

    def __init__(self, quota: str, topics: list[TopicQuotaConfig]) -> None:
        self.quota = quota
        self.literal: dict[str, float] = {}
        prefixed: list[tuple[str, float]] = []
        self.globs: list[tuple[str, re.Pattern[str], float]] = []
        for topic in topics:
            limit: float | None = getattr(topic, quota)
            if limit is None:
                continue
            if topic.pattern_type == "literal":
                self.literal[topic.topic] = limit
            elif topic.pattern_type == "prefixed":
                prefixed.append((topic.topic, limit))
            else:
                self.globs.append((topic.topic, re.compile(fnmatch.translate(topic.topic)), limit))
        # Longest prefix first: the most specific one wins.
        self.prefixed = sorted(prefixed, key=lambda item: len(item[0]), reverse=True)

    def __bool__(self) -> bool:
        return bool(self.literal or self.prefixed or self.globs)

    def match(self, topic: str) -> tuple[float, str] | None:
        """``(limit, source)`` for ``topic``: literal, else longest prefix, else first glob."""
        limit = self.literal.get(topic)
        if limit is not None:
            return limit, f"topic={topic!r}"
        for prefix, limit in self.prefixed:
            if topic.startswith(prefix):
                return limit, f"topic={prefix!r} (prefixed)"
        for glob, pattern, limit in self.globs:
            if pattern.match(topic):
                return limit, f"topic={glob!r} (glob)"
        return None

    def resolve(self, topic: str) -> QuotaMeter | None:
        found = self.match(topic)
        if found is None:
            return None
        limit, source = found
        key = f"{_KEY_PREFIX[self.quota]}|topic={topic}"
        return QuotaMeter(key, self.quota, f"topic={topic}", limit, source)


class QuotaManager:
    """Records client activity against the configured quotas and says how long to throttle.

    ``config`` ``None`` means no quotas (every call returns :data:`NO_THROTTLE`).
    On a configuration reload, build a new manager with the new config and the old
    manager's :attr:`store`: meters survive the reload. Not thread-safe (one Trio thread).
    """

    def __init__(self, config: QuotasConfig | None, store: QuotaStore | None = None) -> None:
        self._config = config if config is not None else QuotasConfig()
        self._store: QuotaStore = store if store is not None else InProcessQuotaStore()
        self._window: WindowConfig = self._config.window
        self._max_delay_ms = self._window.max_throttle_ms
        self._clients = _ClientQuotas(self._config)
        self._topic_produce = _TopicPatterns(PRODUCE_BYTES, self._config.topics)
        self._topic_fetch = _TopicPatterns(FETCH_BYTES, self._config.topics)
        self._client_cache: dict[tuple[str, str], _ClientMeters] = {}
        self._topic_cache: dict[str, _TopicMeters] = {}

    # --- what the runtime needs to measure ----------------------------------------

    @property
    def config(self) -> QuotasConfig:
        """The quotas in force (empty when constructed with ``None``)."""
        return self._config

    @property
    def store(self) -> QuotaStore:
        """Where the meters live; pass it to the manager that replaces this one."""
        return self._store

    @property
    def enabled(self) -> bool:
        """True if any byte-rate or request-rate quota is configured."""
        return self.limits_produce or self.limits_fetch or self.limits_requests

    @property
    def limits_produce(self) -> bool:
        """True if produced bytes must be recorded (a client or topic produce quota exists)."""
        return self._clients.limits(PRODUCE_BYTES) or bool(self._topic_produce)

    @property
    def limits_fetch(self) -> bool:
        """True if fetched bytes must be recorded (a client or topic fetch quota exists)."""
        return self._clients.limits(FETCH_BYTES) or bool(self._topic_fetch)

    @property
    def limits_requests(self) -> bool:
        """True if requests must be counted (a requests_per_second quota exists)."""
        return self._clients.limits(REQUESTS)

    @property
    def has_topic_quotas(self) -> bool:
        """True if the runtime must break byte counts down per topic."""
        return self.has_topic_produce_quotas or self.has_topic_fetch_quotas

    @property
    def has_topic_produce_quotas(self) -> bool:
        """True if ``record_produce`` needs ``topic_bytes``."""
        return bool(self._topic_produce)

    @property
    def has_topic_fetch_quotas(self) -> bool:
        """True if ``record_fetch`` needs ``topic_bytes`` (else pass ``None``)."""
        return bool(self._topic_fetch)

    # --- recording ------------------------------------------------------------------

    def record_produce(
        self,
        principal: str,
        client_id: str | None,
        nbytes: int,
        topic_bytes: Mapping[str, int],
        now: float,
    ) -> Throttle:
        """Record a produce request of ``nbytes`` (``topic_bytes``: its bytes per topic)."""
        throttle = NO_THROTTLE
        meter = self._client_meters(principal, client_id)[0]
        if meter is not None:
            throttle = self._record(meter, nbytes, now, throttle)
        if self._topic_produce:
            for topic, amount in topic_bytes.items():
                topic_meter = self._topic_meters(topic)[0]
                if topic_meter is not None:
                    throttle = self._record(topic_meter, amount, now, throttle)
        return throttle

    def record_fetch(
        self,
        principal: str,
        client_id: str | None,
        nbytes: int,
        topic_bytes: Mapping[str, int] | None,
        now: float,
    ) -> Throttle:
        """Record a fetch response of ``nbytes`` (``topic_bytes``: per topic, if measured)."""
        throttle = NO_THROTTLE
        meter = self._client_meters(principal, client_id)[1]
        if meter is not None:
            throttle = self._record(meter, nbytes, now, throttle)
        if topic_bytes is not None and self._topic_fetch:
            for topic, amount in topic_bytes.items():
                topic_meter = self._topic_meters(topic)[1]
                if topic_meter is not None:
                    throttle = self._record(topic_meter, amount, now, throttle)
        return throttle

    def record_request(self, principal: str, client_id: str | None, now: float) -> Throttle:
        """Count one request (of any kind) against the requests_per_second quota."""
        meter = self._client_meters(principal, client_id)[2]
        if meter is None:
            return NO_THROTTLE
        return self._record(meter, 1, now, NO_THROTTLE)

    # --- internals ------------------------------------------------------------------

    def _record(self, meter: QuotaMeter, amount: float, now: float, worst: Throttle) -> Throttle:
        rate, window = self._store.record(meter.key, amount, now, self._window)
        delay = throttle_ms(rate, meter.limit, window, self._max_delay_ms)
        if delay <= worst.delay_ms:
            return worst
        return Throttle(delay, meter.quota, meter.entity, meter.limit, rate)

    def _client_meters(self, principal: str, client_id: str | None) -> _ClientMeters:
        # Kafka reads a null client id as the empty string.
        cache_key = (principal, client_id or "")
        meters = self._client_cache.get(cache_key)
        if meters is None:
            if len(self._client_cache) >= _MAX_CACHED:
                self._client_cache.clear()
            resolve = self._clients.resolve
            meters = (
                resolve(PRODUCE_BYTES, *cache_key),
                resolve(FETCH_BYTES, *cache_key),
                resolve(REQUESTS, *cache_key),
            )
            self._client_cache[cache_key] = meters
        return meters

    def _topic_meters(self, topic: str) -> _TopicMeters:
        meters = self._topic_cache.get(topic)
        if meters is None:
            if len(self._topic_cache) >= _MAX_CACHED:
                self._topic_cache.clear()
            meters = (self._topic_produce.resolve(topic), self._topic_fetch.resolve(topic))
            self._topic_cache[topic] = meters
        return meters

    # --- diagnostics -------------------------------------------------------------

    def resolve(self, quota: str, principal: str, client_id: str | None) -> QuotaMeter | None:
        """The meter ``quota`` uses for this principal and client id; None if unlimited."""
        index = (PRODUCE_BYTES, FETCH_BYTES, REQUESTS).index(quota)
        return self._client_meters(principal, client_id)[index]

    def resolve_topic(self, quota: str, topic: str) -> QuotaMeter | None:
        """The meter ``quota`` (produce or fetch bytes) uses for ``topic``; None if unlimited."""
        index = (PRODUCE_BYTES, FETCH_BYTES).index(quota)
        return self._topic_meters(topic)[index]
