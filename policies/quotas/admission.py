"""Admission of client connections before they log in: caps on counts, and timeouts.

:class:`ConnectionCaps` counts open connections of one listener, in total and per
client IP, and among them those that have not logged in yet (*unauthenticated*).
The runtime calls, for every connection:

- ``admit(ip)`` when it is accepted: ``None`` means admitted and counted as
  unauthenticated; a string is the reason it is refused (nothing was counted);
- ``logged_in(ip)`` once, when its login completes (or its first request arrives
  on a listener without SASL): it stops counting as unauthenticated;
- ``release(ip, logged_in=...)`` once, when it closes.

:func:`timeout_verdict` decides whether a connection has outlived its
authentication deadline or its idle timeout, from times passed in (seconds on
one monotonic clock), like every decision in ``policies``.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.config import ListenerLimitsConfig

__all__ = ["ConnectionCaps", "TimeoutVerdict", "timeout_verdict"]


class ConnectionCaps:
    """Open connections per listener and per IP, unauthenticated ones separately.

    Not thread-safe (one Trio thread). Dict entries are dropped at zero, so memory is
    proportional to the IPs with open connections, which the caps bound.
    """

    def __init__(self, limits: ListenerLimitsConfig) -> None:
        self.limits = limits
        self.total = 0
        self.unauthenticated = 0
        self._per_ip: dict[str, int] = {}
        self._unauthenticated_per_ip: dict[str, int] = {}

    def admit(self, ip: str) -> str | None:
        """Count a new, unauthenticated connection from ``ip``; else say which cap refuses it."""
        limits = self.limits
        checks = (
            (self.total, limits.max_connections, "max_connections", "open connections"),
            (
                self._per_ip.get(ip, 0),
                limits.max_connections_per_ip,
                "max_connections_per_ip",
                f"open connections from {ip}",
            ),
            (
                self.unauthenticated,
                limits.max_unauthenticated_connections,
                "max_unauthenticated_connections",
                "connections not logged in yet",
            ),
            (
                self._unauthenticated_per_ip.get(ip, 0),
                limits.max_unauthenticated_connections_per_ip,
                "max_unauthenticated_connections_per_ip",
                f"connections from {ip} not logged in yet",
            ),
        )
        for count, limit, name, what in checks:
            if count >= limit:
                return f"{count} {what} (limit {name}={limit})"
        self.total += 1
        self.unauthenticated += 1
        _increment(self._per_ip, ip)
        _increment(self._unauthenticated_per_ip, ip)
        return None

    def logged_in(self, ip: str) -> None:
        """A connection admitted from ``ip`` completed its login (call once)."""
        self.unauthenticated -= 1
        _decrement(self._unauthenticated_per_ip, ip)

    def release(self, ip: str, *, logged_in: bool) -> None:
        """A connection admitted from ``ip`` closed (call once)."""
        self.total -= 1
        _decrement(self._per_ip, ip)
        if not logged_in:
            self.logged_in(ip)

    def open_connections(self, ip: str) -> tuple[int, int]:
        """``(open, of which unauthenticated)`` connections from ``ip``."""
        return self._per_ip.get(ip, 0), self._unauthenticated_per_ip.get(ip, 0)


@dataclass(frozen=True, slots=True)
class TimeoutVerdict:
    """``close_reason`` set: close now. Otherwise look again at ``check_at`` (or at login)."""

    close_reason: str | None
    check_at: float


def timeout_verdict(
    limits: ListenerLimitsConfig,
    *,
    now: float,
    accepted_at: float,
    logged_in: bool,
    last_activity: float,
    busy: bool,
) -> TimeoutVerdict:
    """Whether a connection must close for its authentication deadline or idle timeout.

    ``last_activity`` is when bytes last moved in either direction (as the caller last
    saw them), ``busy`` whether a request is in flight (a long JoinGroup is not idle).
    Before login only the deadline counts: it is shorter than any idle timeout.
    """
    if not logged_in:
        deadline_s = limits.authentication_timeout_ms / 1000
        deadline = accepted_at + deadline_s
        if now >= deadline:
            return TimeoutVerdict(f"authentication deadline exceeded ({_seconds(deadline_s)})", now)
        return TimeoutVerdict(None, deadline)
    idle_s = limits.connections_max_idle_ms / 1000
    if busy:
        return TimeoutVerdict(None, now + idle_s)
    expires = last_activity + idle_s
    if now >= expires:
        return TimeoutVerdict(f"idle for {_seconds(now - last_activity)}", now)
    return TimeoutVerdict(None, expires)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def _increment(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _decrement(counts: dict[str, int], key: str) -> None:
    remaining = counts.get(key, 0) - 1
    if remaining > 0:
        counts[key] = remaining
    else:
        counts.pop(key, None)
