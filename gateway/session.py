"""One client connection: its upstream connection and the two pumps between them.

A session moves through explicit states (``SessionState``): it connects upstream,
then forwards until either side closes or sends something invalid, then closes
both sides and logs one summary event. Requests are forwarded in arrival order;
Kafka answers in order on a connection, so in-flight requests are a FIFO and each
response must carry the correlation id at its head.

Requests are only decoded as far as the gateway needs (header; ``acks`` of a
Produce). Responses are decoded only for the APIs that carry broker addresses or
version ranges; everything else is forwarded byte for byte.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
import trio

from codec import api_versions
from codec.api_table import API_TABLE
from codec.framing import FrameDecoder, FrameError, size_prefix
from codec.headers import (
    parse_request_header,
    peek_api,
    response_body_offset,
    response_correlation_id,
)
from codec.primitives import CodecError
from codec.produce import produce_acks
from codec.rewrite import carries_addresses, rewrite_response
from gateway.logs import debug_enabled
from gateway.net import UpstreamUnavailable, connect_first
from policies.config import HostPort

if TYPE_CHECKING:
    from gateway.cluster import VirtualCluster

PRODUCE, METADATA, API_VERSIONS = 0, 3, 18
RECEIVE_BYTES = 256 * 1024

GATEWAY_VERSION_RANGES = api_versions.gateway_version_ranges()


@dataclasses.dataclass(frozen=True, slots=True)
class SessionSettings:
    max_frame_bytes: int
    connect_timeout_s: float


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
    #: A response the gateway makes itself, sent when this entry reaches the head.
    local_response: bytes | None = None


class SessionClosed(Exception):
    """Ends a session; the message is the close reason that is logged."""


class ClientSession:
    def __init__(
        self, cluster: VirtualCluster, target: UpstreamTarget, client: trio.SocketStream
    ) -> None:
        self.cluster = cluster
        self.target = target
        self.client = client
        self.state = SessionState.CONNECTING
        self.upstream: trio.SocketStream | None = None
        self.upstream_address: HostPort | None = None
        self.in_flight: deque[InFlight] = deque()
        self._client_send_lock = trio.Lock()
        self.bytes_from_client = 0
        self.bytes_to_client = 0
        self.requests = 0
        self.close_reason = "unknown"
        self.log = structlog.get_logger("gateway.session").bind(
            virtual_cluster=cluster.name,
            client=_peer(client),
            broker=target.node_id if target.node_id is not None else "bootstrap",
        )
        self._debug = debug_enabled(self.log)

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        started = time.monotonic()
        try:
            await self._connect_upstream()
            self._transition(SessionState.FORWARDING)
            self.log.info("connection_opened", upstream=str(self.upstream_address))
            await self._forward()
        except SessionClosed as closed:
            self.close_reason = str(closed)
        except trio.Cancelled:
            self.close_reason = "gateway shutting down"
            raise
        finally:
            await self._close()
            self.log.info(
                "connection_closed",
                upstream=str(self.upstream_address) if self.upstream_address else None,
                reason=self.close_reason,
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
        timeout_s = self.cluster.settings.connect_timeout_s
        try:
            self.upstream, self.upstream_address = await connect_first(
                await self._upstream_addresses(), timeout_s
            )
        except UpstreamUnavailable as exc:
            self.log.warning("upstream_unavailable", error=str(exc))
            raise SessionClosed(f"upstream unavailable: {exc}") from None

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
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, self._pump_requests, nursery.cancel_scope)
            nursery.start_soon(self._pump, self._pump_responses, nursery.cancel_scope)
        raise SessionClosed(self.close_reason)

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
        assert self.upstream is not None
        decoder = FrameDecoder(self.cluster.settings.max_frame_bytes)
        while True:
            data = await self.client.receive_some(RECEIVE_BYTES)
            if not data:
                raise SessionClosed("client closed the connection")
            self.bytes_from_client += len(data)
            decoder.feed(data)
            outgoing: list[bytes] = []
            while (frame := self._next_frame(decoder, "client")) is not None:
                if await self._admit_request(frame):
                    outgoing += (size_prefix(len(frame)), frame)
            if outgoing:
                await self.upstream.send_all(b"".join(outgoing))

    async def _admit_request(self, frame: bytes) -> bool:
        """Record a request as in flight; False if the gateway answers it itself."""
        try:
            api_key, api_version, correlation_id = peek_api(frame)
        except CodecError as exc:
            raise SessionClosed(f"malformed request header from client: {exc}") from None
        self.requests += 1
        entry = InFlight(api_key, api_version, correlation_id, time.perf_counter())
        if api_key == API_VERSIONS and api_version > GATEWAY_VERSION_RANGES[API_VERSIONS][1]:
            low, high = GATEWAY_VERSION_RANGES[API_VERSIONS]
            entry.local_response = api_versions.unsupported_version_response(
                correlation_id, low, high
            )
            await self._answer_locally(entry)
            return False
        self._check_decodable(api_key, api_version)
        if api_key == PRODUCE and self._produce_acks(frame, api_version) == 0:
            return True  # acks=0: the broker sends no response, so nothing is in flight
        self.in_flight.append(entry)
        return True

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

    def _produce_acks(self, frame: bytes, api_version: int) -> int:
        try:
            body_offset = parse_request_header(frame).body_offset
            return produce_acks(frame, body_offset, api_version)
        except CodecError as exc:
            raise SessionClosed(f"malformed Produce request: {exc}") from None

    async def _answer_locally(self, entry: InFlight) -> None:
        async with self._client_send_lock:
            if self.in_flight:
                self.in_flight.append(entry)  # sent in order by the response pump
                return
            assert entry.local_response is not None
            await self._send_to_client(
                [size_prefix(len(entry.local_response)), entry.local_response]
            )

    # --- upstream -> client ----------------------------------------------------------

    async def _pump_responses(self) -> None:
        assert self.upstream is not None
        decoder = FrameDecoder(self.cluster.settings.max_frame_bytes)
        while True:
            data = await self.upstream.receive_some(RECEIVE_BYTES)
            if not data:
                raise SessionClosed(
                    f"upstream closed the connection with {len(self.in_flight)} requests in flight"
                )
            decoder.feed(data)
            async with self._client_send_lock:
                outgoing: list[bytes] = []
                while (frame := self._next_frame(decoder, "upstream")) is not None:
                    frame = await self._complete_response(frame)
                    outgoing += (size_prefix(len(frame)), frame)
                    self._take_local_responses(outgoing)
                if outgoing:
                    await self._send_to_client(outgoing)

    async def _complete_response(self, frame: bytes) -> bytes:
        correlation_id = response_correlation_id(frame)
        if not self.in_flight or self.in_flight[0].local_response is not None:
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
            self.log.debug(
                "request",
                api=API_TABLE.get(entry.api_key, (str(entry.api_key),))[0],
                version=entry.api_version,
                correlation_id=correlation_id,
                latency_ms=round((time.perf_counter() - entry.sent_at) * 1000, 3),
            )
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

    async def _rewrite_response(self, entry: InFlight, frame: bytes) -> bytes:
        api_key, api_version = entry.api_key, entry.api_version
        if api_key == API_VERSIONS:
            return _intersect_api_versions(frame, api_version)
        if not carries_addresses(api_key, api_version):
            return frame
        offset = response_body_offset(frame, api_key, api_version)
        body = memoryview(frame)[offset:].toreadonly()
        new_body = rewrite_response(api_key, api_version, body, self.cluster.client_address)
        if api_key == METADATA:
            self.cluster.remember_metadata(frame, offset, api_version)
        if self.cluster.has_unbound_brokers:
            # Bind before the client can learn of the port and connect to it.
            await self.cluster.ensure_broker_listeners()
        return frame if new_body is None else frame[:offset] + new_body

    def _take_local_responses(self, outgoing: list[bytes]) -> None:
        while self.in_flight and self.in_flight[0].local_response is not None:
            response = self.in_flight.popleft().local_response
            assert response is not None
            outgoing += (size_prefix(len(response)), response)

    async def _send_to_client(self, parts: list[bytes]) -> None:
        data = b"".join(parts)
        self.bytes_to_client += len(data)
        await self.client.send_all(data)

    def _next_frame(self, decoder: FrameDecoder, side: str) -> bytes | None:
        try:
            return decoder.next_frame()
        except FrameError as exc:
            self.log.warning("malformed_frame", side=side, error=str(exc))
            raise SessionClosed(f"malformed frame from {side}: {exc}") from None


def _intersect_api_versions(frame: bytes, api_version: int) -> bytes:
    """Advertise only versions both the broker and the gateway support."""
    body = memoryview(frame)[4:].toreadonly()  # ApiVersions always uses response header v0
    parsed = api_versions.parse_api_versions_response(body, api_version)
    narrowed = dataclasses.replace(
        parsed,
        api_keys=api_versions.intersect_api_versions(parsed.api_keys, GATEWAY_VERSION_RANGES),
    )
    return frame[:4] + api_versions.encode_api_versions_response(narrowed, api_version)


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except (OSError, AttributeError):
        return "unknown"
    return f"{host}:{port}"
