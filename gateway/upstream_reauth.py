"""KIP-368 re-authentication of a session's upstream connection, invisible to the client.

A broker with ``connections.max.reauth.ms`` answers the gateway's login with a
``session_lifetime_ms`` and closes the connection at the first request it reads
after that time, unless the connection re-authenticated (a SaslHandshake, which
the broker accepts even after expiry, then SaslAuthenticate rounds). The client
behind the gateway knows nothing of that login, so the gateway re-authenticates
itself, on the same connection, between the client's requests:

1. At ``reauthentication_delay_s`` (85-90 % of the lifetime, jittered) the
   :class:`UpstreamWriteGate` is taken: the session's request pump finishes the
   frame it is forwarding and then takes no further client request.
2. The exchange (:func:`gateway.upstream.sasl_reauthenticate`) sends its frames
   with reserved correlation ids. Each is queued in the session's in-flight FIFO
   behind the client's requests already sent: the broker answers in order, so
   their responses still reach the client first, and the response pump hands the
   gateway's own responses to this module instead of forwarding them.
3. The gate is released and the client's requests flow again; the next
   re-authentication is scheduled from the new lifetime. OAUTHBEARER takes a token
   from the shared :class:`~gateway.upstream.UpstreamTokenSource`, renewed when it
   passed its refresh time (the broker bounds the session by the token's ``exp``,
   and 85 % of such a session is always past the token's 80 % refresh point).

A failed re-authentication (rejected credentials, a timeout) ends the session
with a close reason saying so: the broker would close the connection anyway.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from codec.headers import peek_api
from gateway.net import UpstreamUnavailable
from gateway.upstream import UpstreamConnection, sasl_reauthenticate
from policies.auth.lifetime import reauthentication_delay_s

if TYPE_CHECKING:
    from codec.stream import FrameStream
    from policies.config import UpstreamConfig

__all__ = ["UpstreamReauthentication", "UpstreamReauthenticationFailed", "UpstreamWriteGate"]

#: ``expect(api_key, api_version, correlation_id, deliver)``: queue a gateway-owned request
#: in the session's in-flight FIFO; ``deliver(response frame)`` receives its response.
ExpectResponse = Callable[[int, int, int, Callable[[bytes], None]], None]


class UpstreamReauthenticationFailed(Exception):
    """The upstream connection could not re-authenticate; the message is the close reason."""


class UpstreamWriteGate:
    """Who writes requests to the upstream connection: the client, or the gateway's own
    re-authentication, one at a time and only between whole frames.

    The request pump calls :meth:`client_enter` before forwarding bytes and
    :meth:`client_leave` after; it keeps the gate while a frame is half forwarded
    (cut-through), so a re-authentication never splits a client's frame.
    """

    def __init__(self, requests: FrameStream) -> None:
        self._requests = requests
        # Two flags and a parking lot rather than a trio.Lock: the client's side runs for
        # every batch of requests, and a Lock's acquire and release cost about 2.5 us
        # there; these cost a few attribute reads. The gateway's side is rare.
        self._client_holds = False
        self._gateway_holds = False
        #: Re-authentications waiting for the gate: they go first when the client leaves.
        self._gateway_waiting = 0
        self._changed = trio.lowlevel.ParkingLot()

    async def client_enter(self) -> None:
        if self._client_holds:
            return
        while self._gateway_holds or self._gateway_waiting:
            await self._changed.park()
        self._client_holds = True  # the common case: no checkpoint, no task switch

    def client_leave(self) -> None:
        """Release the gate if the request stream is between frames."""
        if self._client_holds and not self._requests.in_frame:
            self._client_holds = False
            if self._changed:  # someone waits
                self._changed.unpark_all()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the gate against the client: its pump stops at the next frame boundary
        (its unread requests wait in the pump) until the block ends."""
        self._requests.pause_after_frame = True
        await trio.lowlevel.checkpoint()
        self._gateway_waiting += 1
        try:
            while self._client_holds or self._gateway_holds:
                await self._changed.park()
        finally:
            self._gateway_waiting -= 1
            if self._changed:  # a cancelled wait must not leave the client parked
                self._changed.unpark_all()
        self._gateway_holds = True
        try:
            yield
        finally:
            self._gateway_holds = False
            if self._changed:
                self._changed.unpark_all()


class UpstreamReauthentication:
    """Schedules and runs KIP-368 re-authentication for one session's upstream connection.

    ``send(frame)`` writes to the upstream connection; ``expect`` queues a
    gateway-owned entry in the session's in-flight FIFO. :meth:`run` (a task of the
    session) waits for :meth:`attach`, which the session calls once its upstream
    connection is logged in, so a lazily opened connection works too.
    """

    def __init__(
        self,
        requests: FrameStream,
        *,
        send: Callable[[bytes], Awaitable[None]],
        expect: ExpectResponse,
        log: Any,  # the session's bound structlog logger
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.gate = UpstreamWriteGate(requests)
        self._send = send
        self._expect = expect
        self._log = log
        self._jitter = jitter
        self._attached = trio.Event()
        self._connection: UpstreamConnection | None = None
        self._upstream: UpstreamConfig | None = None
        self._due_at: float | None = None
        #: Re-authentications completed (for tests and the close summary).
        self.count = 0

    @property
    def due_at(self) -> float | None:
        """When the next re-authentication starts (``trio.current_time()``), if any."""
        return self._due_at

    def attach(self, connection: UpstreamConnection, upstream: UpstreamConfig) -> None:
        """Start scheduling for a freshly logged-in connection (no-op without a lifetime)."""
        self._connection, self._upstream = connection, upstream
        self._schedule(connection.authenticated_at, connection.session_lifetime_ms)
        self._attached.set()

    async def run(self) -> None:
        """Re-authenticate whenever due; never returns (the session cancels it)."""
        await self._attached.wait()
        while self._due_at is not None:
            await trio.sleep_until(self._due_at)
            await self._reauthenticate()
        await trio.sleep_forever()

    def _schedule(self, authenticated_at: float, lifetime_ms: int) -> None:
        delay = reauthentication_delay_s(lifetime_ms, self._jitter())
        self._due_at = None if delay is None else authenticated_at + delay

    async def _reauthenticate(self) -> None:
        connection, upstream = self._connection, self._upstream
        assert connection is not None and upstream is not None
        sasl = upstream.sasl
        if sasl is None or sasl.mechanism != connection.mechanism:
            # A reload changed the upstream login: this connection cannot keep its session.
            raise UpstreamReauthenticationFailed(
                "upstream session expires and the configured upstream SASL mechanism "
                f"changed from {connection.mechanism} to {sasl.mechanism if sasl else 'none'}"
            )
        async with self.gate.exclusive():
            started = trio.current_time()
            try:
                lifetime_ms = await sasl_reauthenticate(
                    self._round_trip,
                    sasl,
                    address=connection.address,
                    timeout_s=upstream.request_timeout_ms / 1000,
                )
            except UpstreamUnavailable as exc:
                self._log.warning(
                    "upstream_reauthentication_failed",
                    upstream=str(connection.address),
                    mechanism=connection.mechanism,
                    error=str(exc),
                )
                raise UpstreamReauthenticationFailed(
                    f"upstream re-authentication failed: {exc}"
                ) from None
        finished = trio.current_time()
        self.count += 1
        self._schedule(finished, lifetime_ms)
        self._log.info(
            "upstream_reauthenticated",
            upstream=str(connection.address),
            mechanism=connection.mechanism,
            session_lifetime_ms=lifetime_ms,
            latency_ms=round((finished - started) * 1000, 1),
            next_in_s=None if self._due_at is None else round(self._due_at - finished, 3),
        )

    async def _round_trip(self, frame: bytes, what: str) -> bytes:
        """Send one gateway-owned request in the client's stream; await its response."""
        api_key, api_version, correlation_id = peek_api(memoryview(frame)[4:])
        responses_in, responses_out = trio.open_memory_channel[bytes](1)
        self._expect(api_key, api_version, correlation_id, responses_in.send_nowait)
        await self._send(frame)
        return await responses_out.receive()
