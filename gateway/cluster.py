"""One virtual cluster at run time: its listeners, broker discovery and address map.

Port-per-broker: clients first reach the bootstrap port, and every broker
address they are shown points at ``advertised_host:broker_port(node_id)``, a port
of this gateway that forwards to that node. ``node_id`` is the virtual node id
clients see (``node_ids`` in the config; the upstream id by default), and the
broker map below is keyed by it. Ports are derived from node ids, so
several gateway replicas with the same config agree on them, and a port is bound
before any client is told about it.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterable
from functools import partial

import structlog
import trio

from codec.primitives import Buffer
from gateway.client_auth import ClientAuthentication
from gateway.connection_guard import ConnectionGuard, SessionGuard
from gateway.discovery import (
    BrokerAddress,
    BrokerApiVersions,
    DiscoveryError,
    discover_brokers,
    lookup_topic_ids,
)
from gateway.http_fetch import JwksRefreshers
from gateway.net import ListenError, UpstreamUnavailable, open_listeners
from gateway.policy_state import build_policies
from gateway.session import ClientSession, SessionSettings, UpstreamTarget
from gateway.tls_reload import ReloadingServerContext
from gateway.topic_ids import TopicIds
from policies.auth import ListenerAuthenticator, NoMatchingRule, subject_dn_from_der
from policies.config import GatewayConfig, HostPort, VirtualClusterConfig
from policies.node_id_stage import NodeIdStage

#: A client that has not finished its TLS handshake by then is disconnected.
TLS_HANDSHAKE_TIMEOUT_S = 10.0


class VirtualCluster:
    """State shared by all client sessions of one virtual cluster."""

    def __init__(
        self, config: VirtualClusterConfig, gateway: GatewayConfig, *, reuse_port: bool = False
    ) -> None:
        self.config = config
        #: Share ports with other gateway worker processes (SO_REUSEPORT).
        self.reuse_port = reuse_port
        self.name = config.name
        self.settings = SessionSettings(
            max_frame_bytes=gateway.max_frame_bytes,
        )
        self.log = structlog.get_logger("gateway.cluster").bind(virtual_cluster=self.name)
        listener = config.listener
        self._server_ssl = (
            ReloadingServerContext(listener.tls) if listener.tls is not None else None
        )
        self.authenticator = ListenerAuthenticator(
            listener.authentication, now=time.time(), tls=listener.tls
        )
        #: ACLs, quotas and connection limits; replaced as a whole by :meth:`reconfigure`.
        self.policies = build_policies(config)
        validator, oauth = self.authenticator.jwt_validator, listener.authentication.oauthbearer
        #: Fetches JWKS documents for OAUTHBEARER issuers (on unknown kid, and periodically).
        self.key_refreshers = (
            JwksRefreshers.for_validator(validator, oauth)
            if validator is not None and oauth is not None
            else None
        )
        #: The node ids clients see; everything below is keyed by these virtual ids.
        self.node_ids = NodeIdStage(config.node_ids.node_id_map())
        #: Where each broker node really is, learned from Metadata responses and discovery.
        self._upstream_by_node: dict[int, HostPort] = {}
        #: Gateway port of each node whose listener is bound (or failed to bind).
        self._bound_ports: dict[int, int] = {}
        self._unbound_nodes: set[int] = set()
        self._bind_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        #: Topic ids seen in Metadata responses, for APIs that carry ids instead of names.
        self.topic_ids = TopicIds(self._lookup_topic_ids, self.log)
        self.discovered = trio.Event()
        #: Caps, authentication deadline and idle timeout of this listener's connections.
        self.connection_guard = ConnectionGuard(listener.limits)
        #: The brokers' ApiVersions answers, for clients that have not logged in yet.
        self.broker_api_versions = BrokerApiVersions(config.upstream)

    # --- address map (called by sessions) ------------------------------------------

    def client_address(self, node_id: int, host: str, port: int) -> tuple[str, int]:
        """Map a broker address from an upstream response to the gateway address clients see.

        ``node_id`` is the virtual id (responses' node ids are mapped before addresses).
        """
        known = self._upstream_by_node.get(node_id)
        if known is None or known.host != host or known.port != port:
            self._upstream_by_node[node_id] = HostPort(host=host, port=port)
        if node_id not in self._bound_ports:
            self._unbound_nodes.add(node_id)
        listener = self.config.listener
        return listener.advertised(), listener.broker_port(node_id)

    @property
    def has_unbound_brokers(self) -> bool:
        return bool(self._unbound_nodes)

    def upstream_of(self, node_id: int) -> HostPort | None:
        return self._upstream_by_node.get(node_id)

    def remember_metadata(self, frame: Buffer, body_offset: int, api_version: int) -> None:
        """Keep a Metadata response so topic ids can be resolved from it later."""
        self.topic_ids.remember(frame, body_offset, api_version)

    def topic_name(self, topic_id: uuid.UUID) -> str | None:
        """The name of a topic id seen in any Metadata response (or looked up), else None."""
        return self.topic_ids.name_of(topic_id)

    def known_topic_name(self, topic_id: uuid.UUID) -> str | None:
        """:meth:`topic_name` without indexing pending responses: safe in a thread."""
        return self.topic_ids.known_name(topic_id)

    async def resolve_topic_ids(self, topic_ids: Iterable[uuid.UUID]) -> None:
        """Look up upstream the ids no Metadata response has shown yet (single-flight)."""
        await self.topic_ids.resolve(topic_ids)

    async def _lookup_topic_ids(self, topic_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        return await lookup_topic_ids(self.config.upstream, topic_ids)

    # --- reload ----------------------------------------------------------------------

    def reconfigure(self, new: VirtualClusterConfig) -> list[str]:
        """Apply a reloaded config; return the changed keys that need a restart instead.

        ACLs, quotas and connection limits apply from each connection's next request.
        Credentials (users, SCRAM credentials) apply to new logins. Listener addresses,
        TLS and the upstream are kept as they are until the gateway restarts.
        """
        old = self.config
        needs_restart = [
            key for key in ("upstream", "node_ids") if getattr(old, key) != getattr(new, key)
        ]
        listener_changes = [
            key
            for key in type(old.listener).model_fields
            if key != "authentication" and getattr(old.listener, key) != getattr(new.listener, key)
        ]
        needs_restart += [f"listener.{key}" for key in listener_changes]
        authentication = old.listener.authentication
        if new.listener.authentication != authentication:
            if new.listener.authentication.oauthbearer != authentication.oauthbearer:
                needs_restart.append("listener.authentication.oauthbearer")
            else:
                authentication = new.listener.authentication
                self.authenticator = ListenerAuthenticator(
                    authentication, now=time.time(), tls=old.listener.tls
                )
        self.config = old.model_copy(
            update={
                "authorization": new.authorization,
                "quotas": new.quotas,
                "listener": old.listener.model_copy(update={"authentication": authentication}),
            }
        )
        self.policies = build_policies(self.config, self.policies)
        return needs_restart

    # --- listeners -------------------------------------------------------------------

    async def ensure_broker_listeners(self) -> None:
        """Bind a port for every node clients may have been told about."""
        async with self._bind_lock:
            while self._unbound_nodes:
                node_id = self._unbound_nodes.pop()
                if node_id not in self._bound_ports:
                    await self._bind_broker_port(node_id)

    async def _bind_broker_port(self, node_id: int) -> None:
        assert self._nursery is not None, "cluster is not running"
        listener = self.config.listener
        port = listener.broker_port(node_id)
        self._bound_ports[node_id] = port
        try:
            sockets = await open_listeners(
                listener.bootstrap.host, port, reuse_port=self.reuse_port
            )
        except ListenError as exc:
            self.log.error("broker_port_bind_failed", node_id=node_id, port=port, error=str(exc))
            return
        target = UpstreamTarget(node_id=node_id)
        await self._nursery.start(trio.serve_listeners, partial(self._serve, target), sockets)
        self.log.info(
            "broker_port_bound",
            node_id=node_id,
            listen=f"{listener.bootstrap.host}:{port}",
            advertised=f"{listener.advertised()}:{port}",
            upstream=str(self._upstream_by_node.get(node_id)),
        )

    async def _serve(self, target: UpstreamTarget, stream: trio.SocketStream) -> None:
        ip, peer = _peer(stream)
        guard = self.connection_guard.admit(ip)
        if isinstance(guard, str):
            self.log.warning("connection_refused", client=peer, reason=guard)
            await trio.aclose_forcefully(stream)
            return
        try:
            await self._serve_within_limits(target, stream, ip, peer, guard)
        finally:
            guard.release()

    async def _serve_within_limits(
        self,
        target: UpstreamTarget,
        stream: trio.SocketStream,
        ip: str,
        peer: str,
        guard: SessionGuard,
    ) -> None:
        limiter = self.policies.connections
        refusal = limiter.admit_ip(ip, time.monotonic())
        if refusal is not None:
            self.log.warning("connection_refused", client=peer, reason=refusal)
            await trio.aclose_forcefully(stream)
            return
        try:
            await self._serve_admitted(target, stream, peer, guard)
        finally:
            limiter.release_ip(ip)

    async def _serve_admitted(
        self, target: UpstreamTarget, stream: trio.SocketStream, peer: str, guard: SessionGuard
    ) -> None:
        client: trio.abc.Stream = stream
        subject_dn = None
        if self._server_ssl is not None:
            tls = trio.SSLStream(stream, self._server_ssl.current(), server_side=True)
            try:
                with trio.fail_after(TLS_HANDSHAKE_TIMEOUT_S):
                    await tls.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError) as exc:
                cause = exc.__cause__ or exc
                self.log.warning("tls_handshake_failed", client=peer, error=str(cause))
                await trio.aclose_forcefully(stream)
                return
            certificate = tls.getpeercert(binary_form=True)
            subject_dn = subject_dn_from_der(certificate) if certificate else None
            client = tls
        try:
            auth = ClientAuthentication(
                self.authenticator,
                peer_subject_dn=subject_dn,
                virtual_cluster=self.name,
                listener=str(self.config.listener.bootstrap),
                client_address=peer,
                refresh_keys=self.key_refreshers,
                login_slots=self.connection_guard.login_slots,
                client_ip=guard.ip,
            )
        except NoMatchingRule as exc:
            self.log.warning("tls_principal_unmapped", client=peer, error=str(exc))
            await trio.aclose_forcefully(client)
            return
        await ClientSession(self, target, client, peer=peer, auth=auth, guard=guard).run()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``started()`` once the bootstrap port is bound."""
        bootstrap = self.config.listener.bootstrap
        sockets = await open_listeners(bootstrap.host, bootstrap.port, reuse_port=self.reuse_port)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(
                trio.serve_listeners, partial(self._serve, UpstreamTarget(node_id=None)), sockets
            )
            self.log.info(
                "virtual_cluster_listening",
                bootstrap=str(bootstrap),
                upstream=[str(s) for s in self.config.upstream.bootstrap_servers],
            )
            task_status.started()
            nursery.start_soon(self._discovery_loop)
            if self.key_refreshers is not None:
                await nursery.start(self.key_refreshers.run_periodic)

    # --- discovery -------------------------------------------------------------------

    async def refresh_brokers(self) -> list[BrokerAddress]:
        brokers = await discover_brokers(self.config.upstream)
        virtual = self.node_ids.mapping.virtual
        for broker in brokers:
            self.client_address(virtual(broker.node_id), broker.host, broker.port)
        await self.ensure_broker_listeners()
        return brokers

    async def _discovery_loop(self) -> None:
        interval_s = self.config.upstream.metadata_refresh_interval_ms / 1000
        failures = 0
        while True:
            try:
                brokers = await self.refresh_brokers()
            except (DiscoveryError, UpstreamUnavailable, ValueError) as exc:
                failures += 1
                self.log.warning("broker_discovery_failed", error=str(exc), attempt=failures)
                # Retry quickly while the upstream is coming up, then settle to the interval.
                await trio.sleep(min(interval_s, 0.5 * 2 ** min(failures, 6)))
                continue
            if failures or not self.discovered.is_set():
                self.log.info(
                    "brokers_discovered", brokers={b.node_id: f"{b.host}:{b.port}" for b in brokers}
                )
            failures = 0
            self.discovered.set()
            await trio.sleep(interval_s)


def _peer(stream: trio.SocketStream) -> tuple[str, str]:
    """The client's IP address (for per-IP limits) and ``ip:port`` (for logs)."""
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return "unknown", "unknown"
    if stream.socket.family == socket.AF_INET6:
        return str(host), f"[{host}]:{port}"
    return str(host), f"{host}:{port}"
