"""One client connection: its upstream connection and the two pumps between them.

A session moves through explicit states (``SessionState``): it connects upstream,
then forwards until either side closes or sends something invalid, then closes
both sides and logs one summary event. Requests are forwarded in arrival order;
Kafka answers in order on a connection, so in-flight requests are a FIFO and each
response must carry the correlation id at its head.

Frames are cut through (:mod:`codec.stream`): each is routed from its first bytes
and its remaining bytes are forwarded as they arrive, so a large Produce or Fetch
costs no store-and-forward delay and no copy. Requests are only decoded as far as
the gateway needs (header; ``acks`` of a Produce). Responses are buffered and
decoded only for the APIs that carry broker addresses or version ranges, except
large Fetch v16+ responses, whose tagged tail is rewritten as they stream past
(:mod:`codec.fetch_stream`). Everything else is forwarded byte for byte.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
import trio

from codec import api_versions
from codec.api_table import API_TABLE
from codec.fetch_stream import FetchTailWatcher
from codec.framing import FrameError, size_prefix
from codec.headers import (
    parse_request_header,
    peek_api,
    response_body_offset,
    response_correlation_id,
)
from codec.primitives import Buffer, CodecError
from codec.produce import produce_acks
from codec.rewrite import carries_addresses, rewrite_response
from codec.sasl import DEFAULT_MAX_SASL_RECEIVE_SIZE
from codec.stream import BufferedFrame, Decider, Decision, FrameStream, Piece
from codec.throttle import patch_throttle_time, throttle_first_in_body
from gateway.client_auth import Answer, AuthenticationClosed, ClientAuthentication, Route
from gateway.enforcement import Enforcement, decides_in_thread
from gateway.logs import debug_enabled
from gateway.net import UpstreamUnavailable
from gateway.upstream import open_upstream
from gateway.upstream_reauth import UpstreamReauthentication, UpstreamReauthenticationFailed
from policies.authorization import RequestVerdict, ResponseTransform
from policies.authorization.fetch_sessions import (
    FetchExchange,
    FetchResponseCheck,
    RefusedTopicInStream,
)
from policies.config import HostPort

if TYPE_CHECKING:
    from gateway.cluster import VirtualCluster
    from gateway.connection_guard import SessionGuard

PRODUCE, FETCH, METADATA, API_VERSIONS, SASL_AUTHENTICATE = 0, 1, 3, 18, 36
RECEIVE_BYTES = 256 * 1024
#: A request header with a long client id and a Produce request's ``acks`` fit in this.
REQUEST_HEAD_BYTES = 512
#: A response needs only its correlation id to be matched to its request; the next bytes
#: (an empty tag section, ``throttle_time_ms``) let a quota delay be patched in as it streams.
RESPONSE_HEAD_BYTES = 9
#: Fetch responses above this size stream through (only their tagged tail is held back);
#: smaller ones are buffered, which costs nothing and allows an exact rewrite.
STREAM_FETCH_ABOVE = 64 * 1024
#: Requests a connection may have in flight before the gateway stops reading from it,
#: as a broker's muted channel does: a client that pipelines without bound, or never
#: reads its answers, holds a bounded amount of gateway memory (entries, local answers).
MAX_IN_FLIGHT = 1000
#: Longest stretch of checked-request work (decoding, ACLs, local answers) one
#: connection does before letting the others run: a chunk of many small pipelined
#: requests must not stall the event loop.
REQUEST_TURN_S = 0.002

GATEWAY_VERSION_RANGES = api_versions.gateway_version_ranges()


@dataclasses.dataclass(frozen=True, slots=True)
class SessionSettings:
    max_frame_bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Which upstream a client connection is for: a broker node, or any bootstrap server."""

    node_id: int | None


class SessionState(enum.Enum):
    CONNECTING = "connecting"
    FORWARDING = "forwarding"
    CLOSED = "closed"


@dataclasses.dataclass(slots=True)
class InFlight:
    api_key: int
    api_version: int
    correlation_id: int
    sent_at: float
    #: Answered by the gateway itself (not sent upstream).
    local: bool = False
    #: That answer, once known; sent when this entry reaches the head of the queue.
    local_response: bytes | None = None
    #: Applied to the upstream response (a partly authorized request's merge); the
    #: verdict's denials found by it are audited when the response arrives.
    transform: ResponseTransform | None = None
    verdict: RequestVerdict | None = None
    #: The gateway's own quota delay, reported in the response's ``throttle_time_ms``.
    throttle_ms: int = 0
    client_id: str | None = None
    #: The gateway's own request (KIP-368 re-authentication): its response goes here,
    #: never to the client.
    on_response: Callable[[bytes], None] | None = None
    #: A Fetch: what its fetch-session check expects of the response, and that check.
    fetch: FetchExchange | None = None
    fetch_check: FetchResponseCheck | None = None


@dataclasses.dataclass(slots=True)
class _AwaitingAcks:
    """A Produce request buffered because its ``acks`` lay beyond the head."""

    entry: InFlight


@dataclasses.dataclass(slots=True)
class _AwaitingNodeIds:
    """A request buffered whole so that the node ids it names can be mapped back."""

    entry: InFlight


@dataclasses.dataclass(slots=True)
class _AwaitingAuthorization:
    """A request buffered whole so that ACLs (or per-topic quotas) can be applied to it."""

    entry: InFlight


class SessionClosed(Exception):
    """Ends a session; the message is the close reason that is logged."""


class ClientSession:
    def __init__(
        self,
        cluster: VirtualCluster,
        target: UpstreamTarget,
        client: trio.abc.Stream,
        *,
        peer: str,
        auth: ClientAuthentication,
        guard: SessionGuard | None = None,
    ) -> None:
        self.cluster = cluster
        #: Maps virtual node ids back in requests and forward in responses (inactive: identity).
        self.node_ids = cluster.node_ids
        self.target = target
        self.client = client
        self.auth = auth
        #: Caps, authentication deadline and idle timeout (None: not enforced).
        self.guard = guard
        self._nursery: trio.Nursery | None = None
        self._logged_in = False
        self.state = SessionState.CONNECTING
        self.upstream: trio.abc.Stream | None = None
        self.upstream_address: HostPort | None = None
        self.in_flight: deque[InFlight] = deque()
        self._client_send_lock = trio.Lock()
        self._local_answers_sent = trio.Event()
        self._responses = FrameStream(cluster.settings.max_frame_bytes, RESPONSE_HEAD_BYTES)
        self._requests = FrameStream(cluster.settings.max_frame_bytes, REQUEST_HEAD_BYTES)
        self.bytes_from_client = 0
        self.bytes_to_client = 0
        self.requests = 0
        self.close_reason = "unknown"
        #: Quota throttling (KIP-219): the client's requests are not read before this
        #: time (``trio.current_time()``).
        self._muted_until = 0.0
        #: Set by the response side when a full in-flight queue has room again.
        self._in_flight_room: trio.Event | None = None
        #: Set by the response side after each read, while a Fetch decision waits.
        self._responses_moved: trio.Event | None = None
        self.log = structlog.get_logger("gateway.session").bind(
            virtual_cluster=cluster.name,
            client=peer,
            broker=target.node_id if target.node_id is not None else "bootstrap",
        )
        self._debug = debug_enabled(self.log)
        self.enforcement = Enforcement(cluster, auth, self.log)
        self.upstream_reauth = UpstreamReauthentication(
            self._requests,
            send=lambda frame: self._send_upstream([frame]),
            expect=self._expect_own_response,
            log=self.log,
        )

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        started = time.monotonic()
        try:
            self._admit_principal()
            # No upstream connection yet: it is opened for the first request that must be
            # forwarded, i.e. after login (unauthenticated connections cost no upstream).
            await self._forward()
        except SessionClosed as closed:
            self.close_reason = str(closed)
        except trio.Cancelled:
            self.close_reason = "gateway shutting down"
            raise
        except Exception as exc:
            # A bug must cost one connection, never the gateway: log it and close.
            self.log.exception("session_failed")
            self.close_reason = f"internal error: {exc!r}"
        finally:
            self.enforcement.release()
            await self._close()
            self.log.info(
                "connection_closed",
                upstream=str(self.upstream_address) if self.upstream_address else None,
                reason=self.close_reason,
                principal=str(self.auth.principal) if self.auth.principal else None,
                bytes_from_client=self.bytes_from_client,
                bytes_to_client=self.bytes_to_client,
                requests=self.requests,
                duration_s=round(time.monotonic() - started, 3),
            )

    def _transition(self, new_state: SessionState) -> None:
        allowed = {
            SessionState.CONNECTING: {SessionState.FORWARDING, SessionState.CLOSED},
            SessionState.FORWARDING: {SessionState.CLOSED},
            SessionState.CLOSED: set(),
        }
        if new_state not in allowed[self.state]:
            raise AssertionError(f"session cannot go from {self.state} to {new_state}")
        self.state = new_state

    async def _close(self) -> None:
        if self.state is not SessionState.CLOSED:
            self._transition(SessionState.CLOSED)
        with trio.CancelScope(shield=True):
            for stream in (self.client, self.upstream):
                if stream is not None:
                    await trio.aclose_forcefully(stream)

    async def _connect_upstream(self) -> None:
        """TCP, then TLS and the gateway's own SASL login when the upstream needs them;
        then start relaying responses."""
        try:
            connection = await open_upstream(
                await self._upstream_addresses(), self.cluster.config.upstream
            )
        except UpstreamUnavailable as exc:
            self.log.warning("upstream_unavailable", error=str(exc))
            raise SessionClosed(f"upstream unavailable: {exc}") from None
        self.upstream, self.upstream_address = connection.stream, connection.address
        self.upstream_reauth.attach(connection, self.cluster.config.upstream)
        self._transition(SessionState.FORWARDING)
        self.log.info("connection_opened", upstream=str(self.upstream_address))
        assert self._nursery is not None
        self._nursery.start_soon(self._pump, self._pump_responses, self._nursery.cancel_scope)

    async def _upstream_addresses(self) -> list[HostPort]:
        node_id = self.target.node_id
        if node_id is None:
            return list(self.cluster.config.upstream.bootstrap_servers)
        address = self.cluster.upstream_of(node_id)
        if address is None:
            # A client with metadata from before a gateway restart: ask the cluster.
            try:
                await self.cluster.refresh_brokers()
            except (ConnectionError, trio.TooSlowError, ValueError) as exc:
                raise SessionClosed(f"cannot locate broker {node_id}: {exc}") from None
            address = self.cluster.upstream_of(node_id)
        if address is None:
            raise SessionClosed(f"broker {node_id} is not in the upstream cluster's metadata")
        return [address]

    async def _forward(self) -> None:
        """Relay requests; responses once :meth:`_connect_upstream` has connected."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._pump, self._pump_requests, nursery.cancel_scope)
            # Waits for the upstream connection (made after login) before it schedules.
            nursery.start_soon(self._pump, self._reauthenticate_upstream, nursery.cancel_scope)
            if self.guard is not None:
                nursery.start_soon(self._pump, self._watch_timeouts, nursery.cancel_scope)
        raise SessionClosed(self.close_reason)

    async def _watch_timeouts(self) -> None:
        assert self.guard is not None
        reason = await self.guard.watch(
            lambda: self.bytes_from_client + self.bytes_to_client,
            lambda: bool(self.in_flight),
            lambda: self.auth.waiting_for,
        )
        raise SessionClosed(reason)

    async def _reauthenticate_upstream(self) -> None:
        """KIP-368: keep the upstream login alive (:mod:`gateway.upstream_reauth`)."""
        try:
            await self.upstream_reauth.run()
        except UpstreamReauthenticationFailed as exc:
            raise SessionClosed(str(exc)) from None

    def _expect_own_response(
        self, api_key: int, api_version: int, correlation_id: int, deliver: Callable[[bytes], None]
    ) -> None:
        entry = InFlight(api_key, api_version, correlation_id, time.perf_counter())
        entry.on_response = deliver
        self.in_flight.append(entry)

    async def _pump(self, pump: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
        """Run one direction; when it ends, for whatever reason, end the other too."""
        try:
            await pump()
        except SessionClosed as closed:
            self.close_reason = str(closed)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.close_reason = f"connection lost: {exc!r}"
        scope.cancel()

    # --- client -> upstream ----------------------------------------------------------

    async def _pump_requests(self) -> None:
        stream = self._requests
        stream.max_frame_bytes = self._request_frame_limit()
        pending: bytes | bytearray = b""
        while True:
            if self._muted_until and self._muted_until > trio.current_time():
                # Throttled (KIP-219): like a muted Kafka channel, take no further request,
                # not even one already received behind the one that was throttled.
                await trio.sleep_until(self._muted_until)
            if len(self.in_flight) >= MAX_IN_FLIGHT:
                await self._wait_for_in_flight_room()
            if pending:
                data, pending = pending, b""
            else:
                data = await self.client.receive_some(RECEIVE_BYTES)
                if not data:
                    raise SessionClosed("client closed the connection")
                self.bytes_from_client += len(data)
            await self.upstream_reauth.gate.client_enter()  # waits while it re-authenticates
            await self._forward_requests(stream, data)
            pending, stream.unconsumed = stream.unconsumed, b""
            self.upstream_reauth.gate.client_leave()  # only between frames

    async def _wait_for_in_flight_room(self) -> None:
        """Take no request until answers have gone out (backpressure, not an error)."""
        await self._flush_local_answers()  # answers due now need no upstream response
        while len(self.in_flight) >= MAX_IN_FLIGHT:
            self._in_flight_room = trio.Event()
            await self._in_flight_room.wait()
        self._in_flight_room = None

    def _note_in_flight_room(self) -> None:
        if self._in_flight_room is not None and len(self.in_flight) < MAX_IN_FLIGHT:
            self._in_flight_room.set()

    async def _forward_requests(self, stream: FrameStream, data: bytes | bytearray) -> None:
        """Route the requests in ``data``: forward, answer locally, or apply policies."""
        outgoing: list[Buffer] = []
        turn_ends = time.perf_counter() + REQUEST_TURN_S
        for piece in self._feed(stream, data, self._decide_request, "client"):
            if not isinstance(piece, BufferedFrame):
                outgoing.append(piece)
                continue
            context = piece.context
            if isinstance(context, _AwaitingAcks):
                self._admit_buffered_produce(piece.frame, context.entry)
                outgoing += (size_prefix(len(piece.frame)), piece.frame)
                continue
            if isinstance(context, _AwaitingNodeIds):
                forward = self._map_node_ids_back(context.entry, piece.frame)
                outgoing += (size_prefix(len(forward)), forward)
                continue
            if isinstance(context, _AwaitingAuthorization):
                forward = await self._authorize(context.entry, bytes(piece.frame), outgoing)
                if forward is not None:
                    outgoing += (size_prefix(len(forward)), forward)
                if time.perf_counter() > turn_ends:  # let other connections run
                    await trio.lowlevel.checkpoint()
                    turn_ends = time.perf_counter() + REQUEST_TURN_S
                continue
            route, entry = context
            if route is Route.OBSERVE:  # passthrough SASL: read it, then relay it
                self._observe(self.auth.observe_request, bytes(piece.frame))
                outgoing += (size_prefix(len(piece.frame)), piece.frame)
                continue
            # Requests after a SASL one must not overtake its answer.
            await self._send_upstream(outgoing)
            outgoing = []
            await self._answer_sasl(route, entry, bytes(piece.frame))
            stream.max_frame_bytes = self._request_frame_limit()
            self._admit_principal()
        await self._send_upstream(outgoing)
        self._note_login()
        if self._has_local_answer_due():
            await self._flush_local_answers()
        if self.enforcement.close_reason is not None:
            await self._close_after_local_answers(self.enforcement.close_reason)

    def _admit_principal(self) -> None:
        """Count the connection against its principal's limit once it is authenticated."""
        reason = self.enforcement.admit_principal()
        if reason is not None:
            raise SessionClosed(reason)
        self._note_login()

    def _note_login(self) -> None:
        """Once logged in (or, without SASL, once a request came): lift the pre-login limits."""
        if self._logged_in or self.auth.principal is None or self.requests == 0:
            return  # the common case, once per batch of requests: nothing to do
        self._logged_in = True
        if self.guard is not None:
            self.guard.login()
        self._requests.max_frame_bytes = self._request_frame_limit()

    async def _authorize(
        self, entry: InFlight, frame: bytes, outgoing: list[Buffer]
    ) -> bytes | None:
        """Apply ACLs and per-topic quotas; return what to forward upstream, if anything.

        ``outgoing`` (requests decided before this one, not sent yet) is sent first
        when this decision must wait for responses to them.
        """
        if entry.api_key == FETCH and decides_in_thread(FETCH, frame):
            await self._send_upstream(outgoing)
            outgoing.clear()
            await self._settle_fetch_responses(entry)
        verdict = await self.enforcement.authorize(
            entry.api_key, entry.api_version, frame, entry.client_id
        )
        if entry.api_key == FETCH:
            entry.fetch = self.enforcement.fetch_exchange
        if entry.api_key == PRODUCE:
            self._charge(self.enforcement.charge_produce(entry.client_id, frame, len(frame)), entry)
        if verdict.forward is None:
            if verdict.local_response is None:  # e.g. acks=0: no response can carry it
                self.in_flight.remove(entry)
            else:
                entry.local = True
                entry.local_response = verdict.local_response
            return None
        entry.transform = verdict.transform
        if verdict.transform is not None:
            entry.verdict = verdict
        if entry.api_key == PRODUCE and self._produce_acks(verdict.forward, entry.api_version) == 0:
            self.in_flight.remove(entry)  # acks=0: the broker will not answer
        if self.node_ids.active and self.node_ids.buffers_request(entry.api_key):
            return bytes(self._map_node_ids_back(entry, verdict.forward))
        return verdict.forward

    def _map_node_ids_back(self, entry: InFlight, frame: Buffer) -> Buffer:
        """The request with the virtual node ids it names mapped to upstream ids; a
        request that cannot be read closes its connection, naming what was wrong."""
        try:
            return self.node_ids.map_request(entry.api_key, entry.api_version, frame)
        except ValueError as exc:  # CodecError, or an id no INT32 can hold
            name = API_TABLE.get(entry.api_key, (str(entry.api_key),))[0]
            reason = f"cannot map node ids in {name} v{entry.api_version} request: {exc}"
            self.log.warning("request_not_mappable", error=reason)
            raise SessionClosed(reason) from None

    async def _settle_fetch_responses(self, entry: InFlight) -> None:
        """Wait until no earlier Fetch response is pending or streaming.

        A Fetch decided in a thread moves the fetch-session mirror that the checks
        of Fetch responses read and move too, so none may run meanwhile. Clients
        send one Fetch per connection at a time; only a pipelining one waits here.
        """
        while self._responses.in_frame or self._earlier_fetch_pending(entry):
            self._responses_moved = trio.Event()
            await self._responses_moved.wait()
        self._responses_moved = None

    def _earlier_fetch_pending(self, entry: InFlight) -> bool:
        """Whether a Fetch sent before ``entry`` still awaits its response. Only
        earlier ones: later ones in the queue are not sent until ``entry`` is decided."""
        for earlier in self.in_flight:
            if earlier is entry:
                return False
            if earlier.api_key == FETCH and not earlier.local:
                return True
        return False

    def _charge(self, delay_ms: int, entry: InFlight | None) -> None:
        """Throttle: report the delay in the response and stop reading for that long."""
        if delay_ms <= 0:
            return
        if entry is not None:
            entry.throttle_ms = max(entry.throttle_ms, delay_ms)
        self._muted_until = max(self._muted_until, trio.current_time() + delay_ms / 1000)
        self._requests.pause_after_frame = True  # pipelined requests wait for the delay

    async def _close_after_local_answers(self, reason: str) -> None:
        with trio.move_on_after(10):  # let answers queued behind upstream ones go out
            while any(e.local for e in self.in_flight):
                await self._local_answers_sent.wait()
                self._local_answers_sent = trio.Event()
        raise SessionClosed(reason)

    def _request_frame_limit(self) -> int:
        """Like Kafka's sasl.server.max.receive.size: before authentication a client may
        not make the gateway buffer a large frame."""
        if self.auth.authenticated:
            return self.cluster.settings.max_frame_bytes
        return min(DEFAULT_MAX_SASL_RECEIVE_SIZE, self.cluster.settings.max_frame_bytes)

    async def _send_upstream(self, outgoing: list[Buffer]) -> None:
        if outgoing:
            if self.upstream is None:
                await self._connect_upstream()
            assert self.upstream is not None
            await self.upstream.send_all(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def _decide_request(self, head: memoryview, size: int) -> tuple[Decision, Any, None]:
        """Route one request from its first bytes; record it as in flight if answered."""
        self.requests += 1
        if len(self.in_flight) >= MAX_IN_FLIGHT - 1:  # this one fills the queue
            self._requests.pause_after_frame = True
        if self.auth.expects_legacy_token:  # a bare SASL token: no request header
            entry = InFlight(-1, 0, -1, time.perf_counter(), local=True)
            self.in_flight.append(entry)
            return Decision.BUFFER, (Route.LEGACY_TOKEN, entry), None
        try:
            api_key, api_version, correlation_id = peek_api(head)
        except CodecError as exc:
            raise SessionClosed(f"malformed request header from client: {exc}") from None
        entry = InFlight(api_key, api_version, correlation_id, time.perf_counter())
        try:
            route = self.auth.route(api_key, time.time())
        except AuthenticationClosed as closed:
            raise SessionClosed(str(closed)) from None
        if route is Route.OBSERVE:
            self.in_flight.append(entry)  # relayed: the broker answers it
            return Decision.BUFFER, (route, entry), None
        if route is not Route.FORWARD:
            entry.local = True
            self.in_flight.append(entry)
            return Decision.BUFFER, (route, entry), None
        if api_key == API_VERSIONS and api_version > GATEWAY_VERSION_RANGES[API_VERSIONS][1]:
            low, high = GATEWAY_VERSION_RANGES[API_VERSIONS]
            entry.local = True
            entry.local_response = api_versions.unsupported_version_response(
                correlation_id, low, high
            )
            self.in_flight.append(entry)
            return Decision.DROP, None, None
        self._check_decodable(api_key, api_version)
        enforcement = self.enforcement
        policies_active = self.cluster.policies.active
        if policies_active:
            entry.client_id = enforcement.client_id(head)
            self._charge(enforcement.charge_request(api_key, entry.client_id), entry)
            if enforcement.must_inspect(api_key):
                self.in_flight.append(entry)
                return Decision.BUFFER, _AwaitingAuthorization(entry), None
        if self.node_ids.active and self.node_ids.buffers_request(api_key):  # names a broker
            self.in_flight.append(entry)
            return Decision.BUFFER, _AwaitingNodeIds(entry), None
        if api_key == PRODUCE:
            if len(head) < size and not _head_holds_acks(head, api_version):
                self.in_flight.append(entry)  # in arrival order; removed again if acks=0
                return Decision.BUFFER, _AwaitingAcks(entry), None  # a huge transactional id
            if policies_active:
                self._charge(enforcement.charge_produce(entry.client_id, None, size), entry)
            if self._produce_acks(head, api_version) == 0:
                return Decision.FORWARD, None, None  # acks=0: the broker will not answer
        self.in_flight.append(entry)
        return Decision.FORWARD, None, None

    def _observe(self, observe: Callable[[Any], None], frame: Buffer) -> None:
        try:
            observe(frame)
        except AuthenticationClosed as closed:
            raise SessionClosed(str(closed)) from None

    def _admit_buffered_produce(self, frame: Buffer, entry: InFlight) -> None:
        if self.cluster.policies.active:
            self._charge(self.enforcement.charge_produce(entry.client_id, None, len(frame)), entry)
        if self._produce_acks(frame, entry.api_version) == 0:
            self.in_flight.remove(entry)

    async def _answer_sasl(self, route: Route, entry: InFlight, frame: bytes) -> None:
        """Answer a SASL request locally, in order; close after a failed authentication."""
        try:
            if route is Route.LOCAL_API_VERSIONS:
                answer = Answer(await self._local_api_versions(frame))
            elif route is Route.HANDSHAKE:
                answer = self.auth.handshake(frame)
            elif route is Route.AUTHENTICATE:
                answer = await self.auth.authenticate(frame)
            else:
                answer = await self.auth.legacy_token(frame)
        except AuthenticationClosed as closed:
            raise SessionClosed(str(closed)) from None
        entry.local_response = answer.frame
        await self._flush_local_answers()
        if answer.close_after is not None:
            with trio.move_on_after(10):  # let an answer queued behind upstream ones go out
                while entry in self.in_flight:
                    await self._local_answers_sent.wait()
                    self._local_answers_sent = trio.Event()
            await trio.sleep(self.auth.failed_authentication_delay_s)
            raise SessionClosed(answer.close_after)

    async def _local_api_versions(self, frame: bytes) -> bytes:
        """The answer the forwarded path would give, from the brokers' cached answer."""
        _, api_version, correlation_id = peek_api(frame)
        low, high = GATEWAY_VERSION_RANGES[API_VERSIONS]
        if api_version > high:
            return api_versions.unsupported_version_response(correlation_id, low, high)
        try:
            body = await self.cluster.broker_api_versions.body(api_version)
        except (UpstreamUnavailable, ConnectionError) as exc:
            self.log.warning("upstream_unavailable", error=str(exc))
            raise SessionClosed(f"upstream unavailable: {exc}") from None
        return _intersect_api_versions(
            correlation_id.to_bytes(4, "big", signed=True) + body, api_version
        )

    def _check_decodable(self, api_key: int, api_version: int) -> None:
        """Refuse versions of address-carrying APIs the codec cannot rewrite.

        Clients negotiate versions through ApiVersions, which the gateway caps, so
        only a misbehaving client gets here; forwarding would leak broker addresses.
        """
        if not (carries_addresses(api_key, api_version) or api_key == API_VERSIONS):
            return
        low, high = GATEWAY_VERSION_RANGES.get(api_key, (0, -1))
        if not low <= api_version <= high:
            name = API_TABLE[api_key][0] if api_key in API_TABLE else str(api_key)
            raise SessionClosed(
                f"client sent {name} v{api_version}, outside the gateway's range v{low}-v{high}"
            )

    def _produce_acks(self, frame: Buffer, api_version: int) -> int:
        try:
            body_offset = parse_request_header(frame).body_offset
            return produce_acks(frame, body_offset, api_version)
        except CodecError as exc:
            raise SessionClosed(f"malformed Produce request: {exc}") from None

    def _has_local_answer_due(self) -> bool:
        return bool(self.in_flight) and self.in_flight[0].local_response is not None

    async def _flush_local_answers(self) -> None:
        """Send local answers that no upstream response is ahead of."""
        async with self._client_send_lock:
            if self._responses.in_frame:
                return  # mid-response: the response pump sends them once it is done
            outgoing: list[Buffer] = []
            self._take_local_responses(outgoing)
            if outgoing:
                await self._send_to_client(outgoing)

    # --- upstream -> client ----------------------------------------------------------

    async def _pump_responses(self) -> None:
        assert self.upstream is not None
        stream = self._responses
        while True:
            data = await self.upstream.receive_some(RECEIVE_BYTES)
            if not data:
                raise SessionClosed(
                    f"upstream closed the connection with {len(self.in_flight)} requests in flight"
                )
            async with self._client_send_lock:
                pieces = self._feed(stream, data, self._decide_response, "upstream")
                outgoing: list[Buffer] = []
                for piece in pieces:
                    if isinstance(piece, BufferedFrame) and _is_own(piece.context):
                        piece.context.on_response(bytes(piece.frame))  # re-authentication
                    elif isinstance(piece, BufferedFrame):
                        frame = await self._complete_response(piece.context, piece.frame)
                        outgoing += (size_prefix(len(frame)), frame)
                    else:
                        outgoing.append(piece)
                if not stream.in_frame:
                    self._take_local_responses(outgoing)
                if self.cluster.has_unbound_brokers:
                    await self.cluster.ensure_broker_listeners()  # a streamed Fetch named one
                if outgoing:
                    await self._send_to_client(outgoing)
            self._note_in_flight_room()
            if self._responses_moved is not None:
                self._responses_moved.set()

    def _decide_response(self, head: memoryview, size: int) -> tuple[Decision, Any, bytes | None]:
        """Match a response to its request; buffer it only if it must be rewritten."""
        if size < 4:
            raise SessionClosed(f"upstream sent a {size}-byte response frame")
        correlation_id = response_correlation_id(head)
        local: list[Buffer] = []
        self._take_local_responses(local)  # answers due before this response
        if not self.in_flight or self.in_flight[0].local:
            raise SessionClosed(
                f"upstream sent an unexpected response (correlation id {correlation_id})"
            )
        entry = self.in_flight.popleft()
        if entry.correlation_id != correlation_id:
            raise SessionClosed(
                f"upstream answered correlation id {correlation_id}, "
                f"expected {entry.correlation_id}"
            )
        if self._debug:
            self._log_request(entry)
        insert = b"".join(local) if local else None
        if entry.on_response is not None:  # the gateway's own request: not for the client
            return Decision.BUFFER, entry, insert
        api_key, api_version = entry.api_key, entry.api_version
        if api_key == FETCH:
            fetch_decision = self._decide_fetch(entry, size, insert)
            if fetch_decision is not None:
                return fetch_decision
        rewrite = (
            api_key == API_VERSIONS
            or entry.transform is not None
            or carries_addresses(api_key, api_version)
            or (self.node_ids.active and self.node_ids.buffers_response(api_key, api_version))
            or (api_key == SASL_AUTHENTICATE and self.auth.passthrough)
        )
        if rewrite:
            return Decision.BUFFER, entry, insert
        if entry.throttle_ms:
            return self._throttled_head(entry, head, insert)
        return Decision.FORWARD, entry, insert

    def _decide_fetch(
        self, entry: InFlight, size: int, insert: bytes | None
    ) -> tuple[Decision, Any, bytes | None] | None:
        """Fetch: quotas, the ACL check of every topic, and streaming of large responses."""
        api_version = entry.api_version
        if self.cluster.policies.active or entry.fetch is not None:
            entry.fetch_check = self.enforcement.fetch_check(entry.fetch, api_version)
        if self.cluster.policies.active:
            if self.enforcement.fetch_sizes_needed:
                return Decision.BUFFER, entry, insert  # per-topic quotas: walk it whole
            self._charge(self.enforcement.charge_fetch(entry.client_id, api_version, size), entry)
        check = entry.fetch_check
        if size > STREAM_FETCH_ABOVE and (api_version >= 16 or check is not None):
            if entry.throttle_ms or entry.transform is not None or self.node_ids.active:
                return Decision.BUFFER, entry, insert
            watcher = FetchTailWatcher(api_version, self.cluster.client_address, check)
            return Decision.WATCH, watcher, insert
        if check is not None:
            return Decision.BUFFER, entry, insert
        return None

    def _throttled_head(
        self, entry: InFlight, head: memoryview, insert: bytes | None
    ) -> tuple[Decision, Any, bytes | None]:
        """Put the gateway's delay into a streamed response's leading ``throttle_time_ms``."""
        api_key, api_version = entry.api_key, entry.api_version
        if not throttle_first_in_body(api_key, api_version):
            return Decision.BUFFER, entry, insert  # e.g. Produce: found by walking it
        patched = bytearray(head)
        body_offset = response_body_offset(patched, api_key, api_version)
        if len(patched) < body_offset + 4:
            return Decision.BUFFER, entry, insert  # a long tag section in the header
        patch_throttle_time(patched, body_offset, api_key, api_version, entry.throttle_ms)
        return Decision.PATCH_HEAD, bytes(patched), insert

    def _log_request(self, entry: InFlight) -> None:
        self.log.debug(
            "request",
            api=API_TABLE.get(entry.api_key, (str(entry.api_key),))[0],
            version=entry.api_version,
            correlation_id=entry.correlation_id,
            latency_ms=round((time.perf_counter() - entry.sent_at) * 1000, 3),
        )

    async def _complete_response(self, entry: InFlight, frame: bytes | bytearray) -> Buffer:
        try:
            return await self._rewrite_response(entry, frame)
        except ValueError as exc:  # CodecError, or a node id with no valid gateway port
            name = API_TABLE.get(entry.api_key, (str(entry.api_key),))[0]
            self.log.error(
                "response_rewrite_failed", api=name, version=entry.api_version, error=str(exc)
            )
            raise SessionClosed(
                f"cannot rewrite {name} v{entry.api_version} response: {exc}"
            ) from None

    async def _rewrite_response(self, entry: InFlight, frame: bytes | bytearray) -> Buffer:
        api_key, api_version = entry.api_key, entry.api_version
        if api_key == API_VERSIONS:
            rewritten: Buffer = _intersect_api_versions(frame, api_version)
        elif api_key == SASL_AUTHENTICATE:
            self._observe(lambda f: self.auth.observe_response(f, api_version), frame)
            self._admit_principal()
            rewritten = frame
        elif carries_addresses(api_key, api_version) or self.node_ids.buffers_response(
            api_key, api_version
        ):
            rewritten = self._rewrite_addresses(entry, frame)
            if self.cluster.has_unbound_brokers:
                # Bind before the client can learn of the port and connect to it.
                await self.cluster.ensure_broker_listeners()
        else:
            rewritten = frame
        if entry.transform is None and not entry.throttle_ms and api_key != FETCH:
            return rewritten  # the common case: no policy touches this response
        return self._apply_policies(entry, rewritten)

    def _apply_policies(self, entry: InFlight, rewritten: Buffer) -> Buffer:
        """Merge a split request's answer, charge per-topic fetch quotas, report throttling."""
        if entry.fetch_check is not None:
            rewritten = self._filter_fetch(entry, entry.fetch_check, rewritten)
        if entry.transform is not None:
            rewritten = self._transform(entry, rewritten)
        if entry.api_key == FETCH and self.enforcement.fetch_sizes_needed:
            charge = self.enforcement.charge_fetch(
                entry.client_id, entry.api_version, len(rewritten), bytes(rewritten)
            )
            self._charge(charge, entry)
        if entry.throttle_ms:
            patched = bytearray(rewritten)
            key, version = entry.api_key, entry.api_version
            offset = response_body_offset(patched, key, version)
            patch_throttle_time(patched, offset, key, version, entry.throttle_ms)
            return patched
        return rewritten

    def _filter_fetch(self, entry: InFlight, check: FetchResponseCheck, frame: Buffer) -> Buffer:
        try:
            return self.enforcement.filter_fetch_response(check, frame, entry.client_id)
        except ValueError as exc:
            self.log.error("response_rewrite_failed", api="Fetch", error=str(exc))
            raise SessionClosed(
                f"cannot check Fetch v{entry.api_version} response: {exc}"
            ) from None

    def _transform(self, entry: InFlight, frame: Buffer) -> bytes:
        assert entry.transform is not None and entry.verdict is not None
        denials = entry.verdict.denials
        audited = len(denials)
        transformed = entry.transform(bytes(frame))
        if len(denials) > audited:  # e.g. topics hidden from an all-topics answer
            self.enforcement.audit_denials(entry.api_key, denials[audited:], entry.client_id)
        return transformed

    def _rewrite_addresses(self, entry: InFlight, frame: bytes | bytearray) -> Buffer:
        api_key, api_version = entry.api_key, entry.api_version
        offset = response_body_offset(frame, api_key, api_version)
        body = memoryview(frame)[offset:].toreadonly()
        if self.node_ids.active:  # ids first: the address map below then sees virtual ids
            mapped = self.node_ids.map_response_body(api_key, api_version, body)
            if mapped is not None:
                frame = frame[:offset] + mapped
                body = memoryview(frame)[offset:].toreadonly()
        new_body = rewrite_response(api_key, api_version, body, self.cluster.client_address)
        if api_key == METADATA:
            self.cluster.remember_metadata(frame, offset, api_version)
        return frame if new_body is None else frame[:offset] + new_body

    def _take_local_responses(self, outgoing: list[Buffer]) -> None:
        """Move ready local answers at the head of the queue to ``outgoing``."""
        taken = False
        while self.in_flight and self.in_flight[0].local_response is not None:
            response = self.in_flight.popleft().local_response
            assert response is not None
            outgoing += (size_prefix(len(response)), response)
            taken = True
        if taken:
            self._local_answers_sent.set()

    async def _send_to_client(self, parts: list[Buffer]) -> None:
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.bytes_to_client += len(data)
        await self.client.send_all(data)

    def _feed(self, stream: FrameStream, data: Buffer, decide: Decider, side: str) -> list[Piece]:
        try:
            return stream.feed(data, decide)
        except FrameError as exc:
            self.log.warning("malformed_frame", side=side, error=str(exc))
            raise SessionClosed(f"malformed frame from {side}: {exc}") from None
        except RefusedTopicInStream as exc:  # an ACL reload raced a streamed Fetch
            self.enforcement.audit_denials(FETCH, exc.denials, None)
            self.log.warning("fetch_response_refused", error=str(exc))
            raise SessionClosed(str(exc)) from None
        except ValueError as exc:  # a streamed Fetch response that cannot be walked
            self.log.error("response_rewrite_failed", side=side, error=str(exc))
            raise SessionClosed(f"cannot rewrite streamed response: {exc}") from None


def _is_own(context: Any) -> bool:
    return isinstance(context, InFlight) and context.on_response is not None


def _head_holds_acks(head: memoryview, api_version: int) -> bool:
    """Whether a Produce request's head is long enough to read ``acks`` from."""
    try:
        produce_acks(head, parse_request_header(head).body_offset, api_version)
    except CodecError:
        return False
    return True


def _intersect_api_versions(frame: Buffer, api_version: int) -> bytes:
    """Advertise only versions both the broker and the gateway support."""
    body = bytes(frame[4:])  # ApiVersions always uses response header v0
    key = (api_version, body)
    narrowed = _NARROWED_API_VERSIONS.get(key)
    if narrowed is None:
        # Brokers answer every connection with the same bytes, so the parse, intersect
        # and encode (~40 us) are done once per distinct answer, not once per connection.
        parsed = api_versions.parse_api_versions_response(body, api_version)
        ranges = api_versions.intersect_api_versions(parsed.api_keys, GATEWAY_VERSION_RANGES)
        narrowed = api_versions.encode_api_versions_response(
            dataclasses.replace(parsed, api_keys=ranges), api_version
        )
        if len(_NARROWED_API_VERSIONS) >= 64:
            _NARROWED_API_VERSIONS.clear()
        _NARROWED_API_VERSIONS[key] = narrowed
    return bytes(frame[:4]) + narrowed


#: (ApiVersions version, upstream response body) -> the body with narrowed ranges.
_NARROWED_API_VERSIONS: dict[tuple[int, bytes], bytes] = {}
