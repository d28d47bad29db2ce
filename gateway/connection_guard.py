"""Keeps connections that have not logged in (and idle ones) cheap: the runtime side of
:mod:`policies.quotas.admission`.

- :class:`ConnectionGuard` (one per virtual cluster) admits or refuses each accepted
  connection against the listener's caps and hands out a :class:`SessionGuard`.
- :class:`SessionGuard` (one per connection) is told when the connection has logged
  in and watches its authentication deadline and idle timeout; ``watch`` returns the
  close reason when one is exceeded.
- :class:`LoginSlots` bounds password hashing: one process-wide slot per CPU, taken
  in arrival order (Trio's ``CapacityLimiter`` is FIFO), and at most
  ``max_concurrent_logins_per_ip`` logins of one IP in that queue, so a flood of
  logins from one address cannot make a real client's login wait past its deadline.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from policies.config import ListenerLimitsConfig
from policies.quotas.admission import ConnectionCaps, timeout_verdict

__all__ = ["ConnectionGuard", "LoginSlots", "SessionGuard"]

#: After login, activity is sampled this many times per idle timeout, so a connection
#: is closed between 1 and 1.25 idle timeouts after its last byte.
_IDLE_SAMPLES = 4

_hashing_slots: trio.CapacityLimiter | None = None


def _process_hashing_slots() -> trio.CapacityLimiter:
    """One slot per CPU for the whole process (all listeners share the CPUs)."""
    global _hashing_slots
    if _hashing_slots is None:
        _hashing_slots = trio.CapacityLimiter(os.cpu_count() or 1)
    return _hashing_slots


class LoginSlots:
    """Password-hashing slots: per client IP (this listener), then per CPU (the process)."""

    def __init__(self, per_ip: int) -> None:
        self.per_ip = per_ip
        self._per_ip: dict[str, trio.CapacityLimiter] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def hashing(self, ip: str) -> AsyncIterator[None]:
        """Hold a hashing slot for the block; waits (cancellably) until one is free."""
        limiter = self._per_ip.get(ip)
        if limiter is None:
            limiter = self._per_ip[ip] = trio.CapacityLimiter(self.per_ip)
        self._users[ip] = self._users.get(ip, 0) + 1
        try:
            async with limiter, _process_hashing_slots():
                yield
        finally:
            remaining = self._users[ip] - 1
            if remaining:
                self._users[ip] = remaining
            else:  # no one of this IP holds or waits: forget it
                del self._users[ip], self._per_ip[ip]


class ConnectionGuard:
    """Caps and timeouts of one listener (virtual cluster)."""

    def __init__(self, limits: ListenerLimitsConfig) -> None:
        self.limits = limits
        self.caps = ConnectionCaps(limits)
        self.login_slots = LoginSlots(limits.max_concurrent_logins_per_ip)

    def admit(self, ip: str) -> SessionGuard | str:
        """A guard for a new connection from ``ip``, or the reason it is refused."""
        refusal = self.caps.admit(ip)
        if refusal is not None:
            return refusal
        return SessionGuard(self, ip)


class SessionGuard:
    """One connection's place in the caps, its deadline and its idle timeout."""

    def __init__(self, guard: ConnectionGuard, ip: str) -> None:
        self._guard = guard
        self.ip = ip
        self.accepted_at = trio.current_time()
        self.logged_in = False
        self._released = False
        self._login_event = trio.Event()

    def login(self) -> None:
        """The connection has logged in (or sent its first request without SASL)."""
        if not self.logged_in and not self._released:
            self.logged_in = True
            self._guard.caps.logged_in(self.ip)
            self._login_event.set()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._guard.caps.release(self.ip, logged_in=self.logged_in)

    async def watch(
        self,
        transferred: Callable[[], int],
        busy: Callable[[], bool],
        waiting_detail: Callable[[], str | None],
    ) -> str:
        """Return the close reason once the deadline or idle timeout is exceeded.

        ``transferred`` counts bytes moved in either direction (sampled, so the
        sessions' hot paths pay nothing), ``busy`` says whether a request is in
        flight, ``waiting_detail`` what a login is waiting for, if anything.
        """
        limits = self._guard.limits
        seen, last_activity = transferred(), trio.current_time()
        while True:
            now = trio.current_time()
            if (moved := transferred()) != seen:
                seen, last_activity = moved, now
            verdict = timeout_verdict(
                limits,
                now=now,
                accepted_at=self.accepted_at,
                logged_in=self.logged_in,
                last_activity=last_activity,
                busy=busy(),
            )
            if verdict.close_reason is not None:
                detail = None if self.logged_in else waiting_detail()
                return verdict.close_reason + (f" ({detail})" if detail else "")
            if not self.logged_in:
                with trio.move_on_at(verdict.check_at):
                    await self._login_event.wait()
                continue
            sample_s = limits.connections_max_idle_ms / 1000 / _IDLE_SAMPLES
            await trio.sleep_until(min(verdict.check_at, now + sample_s))
