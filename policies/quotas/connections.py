"""Connection limits: open connections per IP and per principal, new connections per IP.

The runtime asks :meth:`ConnectionLimiter.admit_ip` when it accepts a connection
and :meth:`ConnectionLimiter.admit_principal` once the connection has
authenticated; ``None`` means admitted *and counted*, anything else is the reason
to refuse (for the log), and nothing was counted. Every admitted connection is
released exactly once when it closes (:meth:`release_ip`,
:meth:`release_principal`).

Counts are kept even without limits, so that a reload which introduces limits
sees the connections already open: :meth:`ConnectionLimiter.with_config` returns
a limiter with the new limits sharing this one's counts. The creation rate is only
metered while a rate limit is configured; its window is about one second, so a
reload that adds the limit loses no history worth having.

Like Kafka's connection creation-rate quota (KIP-612), a refused connection is not
counted in the rate (the recording is taken back), so a client retrying in a tight
loop is admitted again as soon as its earlier connections leave the window.
"""

from __future__ import annotations

from typing import Final

from policies.quotas.config import ConnectionLimitsConfig, WindowConfig
from policies.quotas.store import InProcessQuotaStore, QuotaStore

__all__ = ["CREATION_RATE_WINDOW", "ConnectionLimiter"]

#: Window of the per-IP creation rate: 11 samples of 100 ms, i.e. at least a full
#: second (Kafka's ``Rate`` never measures over fewer than ``samples - 1`` samples),
#: so a limit of N per second admits a burst of N and refuses the N+1st.
CREATION_RATE_WINDOW: Final = WindowConfig(samples=11, sample_ms=100)

# Rate meters per IP kept at most (idle ones are evicted first).
_MAX_RATE_METERS: Final = 100_000


class _Counts:
    """Open connections per IP and per principal, and the per-IP creation-rate meters."""

    def __init__(self) -> None:
        self.per_ip: dict[str, int] = {}
        self.per_principal: dict[str, int] = {}
        self.creation: QuotaStore = InProcessQuotaStore(_MAX_RATE_METERS)


class ConnectionLimiter:
    """Admits or refuses connections against :class:`ConnectionLimitsConfig` limits.

    ``config`` ``None`` means no limits (connections are still counted). ``now`` is
    seconds on a monotonic clock. Not thread-safe (one Trio thread).
    """

    def __init__(
        self, config: ConnectionLimitsConfig | None, *, _counts: _Counts | None = None
    ) -> None:
        self._config = config if config is not None else ConnectionLimitsConfig()
        self._counts = _counts if _counts is not None else _Counts()

    @property
    def config(self) -> ConnectionLimitsConfig:
        """The limits in force (all unset when constructed with ``None``)."""
        return self._config

    def with_config(self, config: ConnectionLimitsConfig | None) -> ConnectionLimiter:
        """A limiter with new limits that shares this one's counts (for a config reload)."""
        return ConnectionLimiter(config, _counts=self._counts)

    # --- per client IP ----------------------------------------------------------------

    def admit_ip(self, ip: str, now: float) -> str | None:
        """Count a new connection from ``ip``; ``None`` if admitted, else why it is refused."""
        per_ip = self._counts.per_ip
        open_now = per_ip.get(ip, 0)
        limit = self._config.max_per_ip
        if limit is not None and open_now >= limit:
            return f"client {ip} has {open_now} open connections (limit max_per_ip={limit})"
        refusal = self._check_creation_rate(ip, now)
        if refusal is not None:
            return refusal
        per_ip[ip] = open_now + 1
        return None

    def release_ip(self, ip: str) -> None:
        """A connection from ``ip`` admitted by :meth:`admit_ip` has closed."""
        _decrement(self._counts.per_ip, ip)

    def _check_creation_rate(self, ip: str, now: float) -> str | None:
        limit = self._config.max_creation_rate_per_ip
        if limit is None:
            return None
        store = self._counts.creation
        rate, _ = store.record(ip, 1, now, CREATION_RATE_WINDOW)
        if rate <= limit:
            return None
        # Refused connections do not count (KIP-612): take the recording back.
        store.record(ip, -1, now, CREATION_RATE_WINDOW)
        return (
            f"client {ip} opens connections at {rate:.1f}/s "
            f"(limit max_creation_rate_per_ip={_number(limit)})"
        )

    # --- per principal ----------------------------------------------------------------

    def admit_principal(self, principal: str) -> str | None:
        """Count an authenticated connection of ``principal``; ``None`` if admitted, else why."""
        per_principal = self._counts.per_principal
        open_now = per_principal.get(principal, 0)
        limit = self._config.max_per_principal
        if limit is not None and open_now >= limit:
            return (
                f"principal {principal} has {open_now} open connections "
                f"(limit max_per_principal={limit})"
            )
        per_principal[principal] = open_now + 1
        return None

    def release_principal(self, principal: str) -> None:
        """A connection of ``principal`` admitted by :meth:`admit_principal` has closed."""
        _decrement(self._counts.per_principal, principal)

    # --- introspection ----------------------------------------------------------------

    def open_connections(self, *, ip: str | None = None, principal: str | None = None) -> int:
        """Open connections counted for ``ip`` or for ``principal`` (give exactly one)."""
        if (ip is None) == (principal is None):
            raise ValueError("give exactly one of ip= and principal=")
        if ip is not None:
            return self._counts.per_ip.get(ip, 0)
        assert principal is not None
        return self._counts.per_principal.get(principal, 0)


def _decrement(counts: dict[str, int], key: str) -> None:
    # Entries are dropped at zero so the dicts only hold clients with open connections.
    # A release without an admit is ignored rather than driving a count negative.
    remaining = counts.get(key, 0) - 1
    if remaining > 0:
        counts[key] = remaining
    else:
        counts.pop(key, None)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)
