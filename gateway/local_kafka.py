"""Run a real Apache Kafka cluster (KRaft, no ZooKeeper) on this machine.

Used by `kafka-gateway local-kafka` for development and by the pytest fixtures, so the
gateway is always tested against the real broker rather than a mock. Everything is
synchronous `subprocess` work: it must run from plain pytest fixtures as well as the CLI.

Node ids are 1..N and broker i listens on 127.0.0.1:(base_port + i - 1). The KRaft
quorum is nodes 1..3 in combined broker+controller mode when N >= 3, else node 1 alone;
controllers listen on base_port + 100 + i - 1. JVMs never outlive this process: they get
SIGKILL when it dies (PR_SET_PDEATHSIG), and an atexit hook stops clusters still running.

With `security=ClientSecurity(...)` the client-facing listener (still base_port + i - 1,
so `bootstrap_servers` is unchanged) speaks SASL_PLAINTEXT, SSL or SASL_SSL, while
brokers talk to each other on a PLAINTEXT listener INTERNAL on base_port + 200 + i - 1
(`internal_bootstrap_servers`) and controllers stay PLAINTEXT: only what clients (and
the gateway) see is secured, and the readiness probes use the internal listener.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

from codec import sasl
from codec.errors import NONE, SASL_AUTHENTICATION_FAILED, error_name
from codec.framing import encode_frame
from codec.headers import encode_request_header
from codec.primitives import (
    CodecError,
    Reader,
    enc_int8,
    enc_int32,
    enc_string,
    enc_uvarint,
)
from gateway.kafka_dist import (
    BROKER_MAIN,
    KAFKA_VERSION,
    KafkaDistError,
    KafkaDistribution,
    bootstrap_checkpoint,
    die_with_parent_preexec,
    ensure_distribution,
    random_kafka_uuid,
    stderr_progress,
)

HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 19092
CONTROLLER_PORT_OFFSET = 100
INTERNAL_PORT_OFFSET = 200
MAX_BROKERS = CONTROLLER_PORT_OFFSET - 1
GATEWAY_PORTS = range(9092, 9100)
QUORUM_SIZE = 3
# Share groups (KIP-932) are off by default in 4.1; the feature level turns them on.
DEFAULT_FEATURES: tuple[str, ...] = ("share.version=1",)

BROKER_JVM_OPTS: tuple[str, ...] = (
    "-Xmx512m",
    "-Xms256m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Xshare:auto",
    "-Djava.awt.headless=true",
)
# C1 only: brokers start noticeably faster on two cores, at some cost in peak throughput.
FAST_START_JVM_OPTS: tuple[str, ...] = ("-XX:TieredStopAtLevel=1",)

ConfigValue = str | int | bool
Progress = Callable[[str], None]


class LocalKafkaError(RuntimeError):
    """The local cluster could not be started or controlled; the message says why."""


# ------------------------------------------------------------------ security

SECURITY_PROTOCOLS: tuple[str, ...] = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")
SASL_MECHANISMS: tuple[str, ...] = (sasl.PLAIN, sasl.SCRAM_SHA_256, sasl.SCRAM_SHA_512)
#: OAUTHBEARER also needs `ClientSecurity.oauthbearer` (where the brokers get keys).
ALL_SASL_MECHANISMS: tuple[str, ...] = (*SASL_MECHANISMS, sasl.OAUTHBEARER)
CLIENT_LISTENER = "CLIENT"
INTERNAL_LISTENER = "INTERNAL"
#: Users of secured test clusters (PLAIN and SCRAM alike); `gateway` is the super user.
DEFAULT_USERS: Mapping[str, str] = {
    "gateway": "gateway-secret",
    "alice": "alice-secret",
    "bob": "bob-secret",
}
_LOGIN_MODULES = {
    sasl.PLAIN: "org.apache.kafka.common.security.plain.PlainLoginModule",
    sasl.SCRAM_SHA_256: "org.apache.kafka.common.security.scram.ScramLoginModule",
    sasl.SCRAM_SHA_512: "org.apache.kafka.common.security.scram.ScramLoginModule",
    sasl.OAUTHBEARER: "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule",
}
_OAUTH_VALIDATOR = (
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
)
_BROKER_JWT_VALIDATOR = "org.apache.kafka.common.security.oauthbearer.BrokerJwtValidator"
#: Kafka 4 fetches OAuth URLs only if this JVM system property lists them.
_OAUTH_ALLOWED_URLS = "org.apache.kafka.sasl.oauthbearer.allowed.urls"
_CLIENT_AUTH = ("none", "requested", "required")
SCRAM_HASHES: Mapping[str, str] = {sasl.SCRAM_SHA_256: "sha256", sasl.SCRAM_SHA_512: "sha512"}
#: Kafka's ids of the mechanisms in AlterUserScramCredentials.
SCRAM_MECHANISM_IDS: Mapping[str, int] = {sasl.SCRAM_SHA_256: 1, sasl.SCRAM_SHA_512: 2}
#: Kafka refuses fewer iterations (ScramMechanism.minIterations).
SCRAM_MIN_ITERATIONS = 4096


@dataclass(frozen=True)
class BrokerTls:
    """PEM files for the client listener's TLS (Kafka 4 reads PEM: no keytool, no JKS).

    `ca` is the brokers' trust store for client certificates (mTLS) and, by default,
    what the readiness probe trusts; `client_cert`/`client_key` are what the probe
    presents when `client_auth` is "required" (e.g. the gateway's certificate).
    """

    cert: Path
    key: Path
    ca: Path
    client_auth: str = "none"
    client_cert: Path | None = None
    client_key: Path | None = None

    def __post_init__(self) -> None:
        if self.client_auth not in _CLIENT_AUTH:
            raise ValueError(f"client_auth must be one of {_CLIENT_AUTH}, got {self.client_auth!r}")

    def probe_context(self) -> ssl.SSLContext:
        """A client context for our own probes: trusts `ca`, checks 127.0.0.1 in the cert."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if self.client_cert is not None and self.client_key is not None:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


@dataclass(frozen=True)
class OAuthBearerValidation:
    """Broker-side OAUTHBEARER (KIP-768): JWTs verified with keys from a JWKS URL.

    The principal is the `sub_claim`; `iss` and `aud` are checked when given. Kafka
    bounds the KIP-368 session lifetime by the token's `exp`.
    """

    jwks_url: str
    issuer: str | None = None
    audience: str | None = None
    sub_claim: str = "sub"

    def broker_properties(self) -> dict[str, ConfigValue]:
        props: dict[str, ConfigValue] = {
            # Kafka 4.1's default (DefaultJwtValidator built without a key resolver)
            # falls back to ClientJwtValidator, which checks claims but NOT signatures:
            # any well-formed JWT would pass. BrokerJwtValidator verifies with the JWKS.
            "sasl.oauthbearer.jwt.validator.class": _BROKER_JWT_VALIDATOR,
            "sasl.oauthbearer.jwks.endpoint.url": self.jwks_url,
            "sasl.oauthbearer.sub.claim.name": self.sub_claim,
        }
        if self.issuer is not None:
            props["sasl.oauthbearer.expected.issuer"] = self.issuer
        if self.audience is not None:
            props["sasl.oauthbearer.expected.audience"] = self.audience
        return props


@dataclass(frozen=True)
class ClientSecurity:
    """How the client-facing listener is secured; see the module docstring for the layout.

    PLAIN users are listed in the listener's JAAS config; SCRAM users are created after
    start-up through the Admin API (AlterUserScramCredentials), for every enabled SCRAM
    mechanism, and `start()` returns only once every broker accepts them. `super_users`
    is set for when an authorizer is enabled (none is, by default). OAUTHBEARER may be
    added to `mechanisms` together with `oauthbearer`.
    """

    protocol: str = "SASL_PLAINTEXT"
    mechanisms: tuple[str, ...] = SASL_MECHANISMS
    plain_users: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    scram_users: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    super_users: tuple[str, ...] = ("User:gateway",)
    tls: BrokerTls | None = None
    scram_iterations: int = SCRAM_MIN_ITERATIONS
    oauthbearer: OAuthBearerValidation | None = None

    def __post_init__(self) -> None:
        if self.protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"protocol must be one of {SECURITY_PROTOCOLS}, got {self.protocol!r}")
        if self.uses_tls and self.tls is None:
            raise ValueError(f"{self.protocol} needs tls=BrokerTls(...)")
        unknown = set(self.mechanisms) - set(ALL_SASL_MECHANISMS)
        if self.uses_sasl and (unknown or not self.mechanisms):
            raise ValueError(f"mechanisms must be a non-empty subset of {ALL_SASL_MECHANISMS}")
        if (sasl.OAUTHBEARER in self.mechanisms) != (self.oauthbearer is not None):
            raise ValueError("OAUTHBEARER in mechanisms and oauthbearer=... go together")
        for name, password in {**self.plain_users, **self.scram_users}.items():
            if not name or any(c in name + password for c in '"\\\n'):
                raise ValueError(f"user {name!r}: names and passwords must not contain quotes")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @property
    def scram_mechanisms(self) -> tuple[str, ...]:
        return tuple(m for m in self.mechanisms if m in SCRAM_HASHES) if self.uses_sasl else ()

    def password(self, user: str, mechanism: str = sasl.PLAIN) -> str:
        """The configured password of `user` for `mechanism` (KeyError if none).

        SCRAM users' for any other mechanism: test OAuth clients reuse them as secrets.
        """
        users = self.plain_users if mechanism == sasl.PLAIN else self.scram_users
        return users[user]


def _jaas(mechanism: str, users: Mapping[str, str]) -> str:
    """A listener's JAAS line; PLAIN's lists its users as user_<name>="<password>"."""
    entries = ""
    if mechanism == sasl.PLAIN:
        entries = "".join(f' user_{name}="{password}"' for name, password in users.items())
    return f"{_LOGIN_MODULES[mechanism]} required{entries};"


@dataclass
class BrokerNode:
    """One Kafka JVM: its ports, files and (while running) its process."""

    node_id: int
    port: int
    controller_port: int | None
    node_dir: Path
    #: The PLAINTEXT inter-broker listener of a secured cluster (None otherwise).
    internal_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    log_handle: IO[bytes] | None = field(default=None, repr=False)

    @property
    def is_controller(self) -> bool:
        return self.controller_port is not None

    @property
    def config_path(self) -> Path:
        return self.node_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.node_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.node_dir / "broker.log"

    @property
    def keystore_path(self) -> Path:
        """Private key + certificate chain in one PEM file, as ssl.keystore.location wants."""
        return self.node_dir / "client-listener-keystore.pem"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalKafkaCluster:
    """A KRaft Kafka cluster of `brokers` JVMs on 127.0.0.1, started and stopped by us.

    Use as a context manager, or call `start()` / `stop()`. `data_dir` defaults to a
    fresh temp dir that `stop()` removes unless `keep=True`. `broker_config` entries
    override the test-friendly defaults in `broker_properties()` for every node.
    `security` secures the client-facing listener (see `ClientSecurity`).
    """

    def __init__(
        self,
        brokers: int = 1,
        base_port: int = DEFAULT_BASE_PORT,
        data_dir: Path | None = None,
        *,
        keep: bool = False,
        broker_config: Mapping[str, ConfigValue] | None = None,
        dist: KafkaDistribution | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 20.0,
        fast_start: bool = True,
        features: tuple[str, ...] = DEFAULT_FEATURES,
        progress: Progress | None = stderr_progress,
        security: ClientSecurity | None = None,
    ) -> None:
        _validate_layout(brokers, base_port)
        self.security = security if security and security.protocol != "PLAINTEXT" else None
        if self.security is not None:
            _validate_internal_layout(brokers, base_port)
        self.brokers = brokers
        self.base_port = base_port
        self.keep = keep
        self.broker_config = dict(broker_config or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.fast_start = fast_start
        self.features = features
        self._dist = dist
        self._progress = progress or (lambda _msg: None)
        self._owns_data_dir = data_dir is None
        self._data_dir = data_dir
        self._nodes: dict[int, BrokerNode] = {}
        self._force_kill = threading.Event()
        self.cluster_id = random_kafka_uuid()

    # ----------------------------------------------------------------- layout

    @property
    def node_ids(self) -> list[int]:
        return list(range(1, self.brokers + 1))

    @property
    def controller_ids(self) -> list[int]:
        return list(range(1, min(self.brokers, QUORUM_SIZE) + 1)) if self.brokers >= 3 else [1]

    @property
    def replication_factor(self) -> int:
        """Default replication for topics and internal topics: min(3, brokers)."""
        return min(QUORUM_SIZE, self.brokers)

    def broker_port(self, node_id: int) -> int:
        self._check_node_id(node_id)
        return self.base_port + node_id - 1

    def controller_port(self, node_id: int) -> int | None:
        self._check_node_id(node_id)
        if node_id not in self.controller_ids:
            return None
        return self.base_port + CONTROLLER_PORT_OFFSET + node_id - 1

    def internal_port(self, node_id: int) -> int | None:
        """The PLAINTEXT inter-broker port of a secured cluster; None when not secured."""
        self._check_node_id(node_id)
        if self.security is None:
            return None
        return self.base_port + INTERNAL_PORT_OFFSET + node_id - 1

    def probe_port(self, node_id: int) -> int:
        """Where our own unauthenticated Metadata and admin requests go."""
        return self.internal_port(node_id) or self.broker_port(node_id)

    def all_ports(self) -> list[int]:
        ports = [self.broker_port(i) for i in self.node_ids]
        ports += [p for i in self.node_ids if (p := self.internal_port(i)) is not None]
        return ports + [p for i in self.node_ids if (p := self.controller_port(i)) is not None]

    @property
    def security_protocol(self) -> str:
        """What clients set as `security.protocol` for `bootstrap_servers`."""
        return self.security.protocol if self.security is not None else "PLAINTEXT"

    @property
    def internal_bootstrap_servers(self) -> str:
        """The PLAINTEXT listeners: `bootstrap_servers` when the cluster is not secured.

        For set-up and inspection without credentials (creating topics, reading
        metadata); what a test is about should go through `bootstrap_servers`.
        """
        return ",".join(f"{HOST}:{self.probe_port(i)}" for i in self.node_ids)

    @property
    def bootstrap_servers(self) -> str:
        """`127.0.0.1:<port>,...` for every broker, in node-id order."""
        return ",".join(f"{HOST}:{self.broker_port(i)}" for i in self.node_ids)

    @property
    def running_bootstrap_servers(self) -> str:
        """Like `bootstrap_servers`, but only brokers whose JVM is running now."""
        return ",".join(self.broker_address(i) for i in sorted(self.running_node_ids()))

    def broker_address(self, node_id: int) -> str:
        return f"{HOST}:{self.broker_port(node_id)}"

    @property
    def data_dir(self) -> Path:
        """Root of all node dirs; created (as a temp dir by default) on first use."""
        if self._data_dir is None:
            self._data_dir = _new_temp_data_dir(auto_remove=not self.keep)
        return self._data_dir

    def existing_data_dir(self) -> Path | None:
        """The data dir if it exists now (without creating one, unlike `data_dir`)."""
        path = self._data_dir
        return path if path is not None and path.exists() else None

    def log_path(self, node_id: int) -> Path:
        """The file holding broker `node_id`'s log4j output and JVM errors."""
        return self._node(node_id).log_path

    def log_paths(self) -> dict[int, Path]:
        return {i: self.log_path(i) for i in self.node_ids}

    def running_node_ids(self) -> list[int]:
        return [i for i, node in self._nodes.items() if node.is_running()]

    def pid(self, node_id: int) -> int | None:
        process = self._node(node_id).process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def dist(self) -> KafkaDistribution:
        if self._dist is None:
            self._dist = ensure_distribution(progress=self._progress)
        return self._dist

    def _check_node_id(self, node_id: int) -> None:
        if node_id not in range(1, self.brokers + 1):
            raise ValueError(f"node id {node_id} is not in 1..{self.brokers}")

    def _node(self, node_id: int) -> BrokerNode:
        self._check_node_id(node_id)
        if node_id not in self._nodes:
            self._nodes[node_id] = BrokerNode(
                node_id=node_id,
                port=self.broker_port(node_id),
                controller_port=self.controller_port(node_id),
                node_dir=self.data_dir / f"node-{node_id}",
                internal_port=self.internal_port(node_id),
            )
        return self._nodes[node_id]

    # ----------------------------------------------------------------- config

    def broker_properties(self, node_id: int) -> dict[str, ConfigValue]:
        """server.properties for one node: KRaft layout plus settings tuned for tests."""
        node = self._node(node_id)
        rf = self.replication_factor
        props: dict[str, ConfigValue] = {
            "process.roles": "broker,controller" if node.is_controller else "broker",
            "node.id": node_id,
            "controller.quorum.voters": self._quorum_voters(),
            "listeners": self._listeners(node),
            "advertised.listeners": f"PLAINTEXT://{HOST}:{node.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            **self._secured_listener_properties(node),
            "log.dirs": str(node.log_dir),
            "num.partitions": 1,
            "default.replication.factor": rf,
            "min.insync.replicas": 1,
            "auto.create.topics.enable": True,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 10,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": 1,
            "share.coordinator.state.topic.num.partitions": 10,
            "group.initial.rebalance.delay.ms": 0,
            "group.coordinator.rebalance.protocols": "classic,consumer,share",
            # Faster unfencing at start-up and faster failover when a test kills a broker.
            "broker.heartbeat.interval.ms": 500,
            "controller.quorum.election.timeout.ms": 500,
            "broker.session.timeout.ms": 4000,
            "replica.lag.time.max.ms": 10000,
            "controlled.shutdown.enable": True,
            "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
        }
        props.update(self.broker_config)
        return props

    def _quorum_voters(self) -> str:
        return ",".join(f"{i}@{HOST}:{self.controller_port(i)}" for i in self.controller_ids)

    @staticmethod
    def _listeners(node: BrokerNode) -> str:
        listeners = f"PLAINTEXT://{HOST}:{node.port}"
        if node.controller_port is not None:
            listeners += f",CONTROLLER://{HOST}:{node.controller_port}"
        return listeners

    def _secured_listener_properties(self, node: BrokerNode) -> dict[str, ConfigValue]:
        """Listener layout of a secured cluster: CLIENT secured, INTERNAL plaintext."""
        security = self.security
        if security is None:
            return {}
        client = f"{CLIENT_LISTENER}://{HOST}:{node.port}"
        internal = f"{INTERNAL_LISTENER}://{HOST}:{node.internal_port}"
        controller = f",CONTROLLER://{HOST}:{node.controller_port}" if node.is_controller else ""
        props: dict[str, ConfigValue] = {
            "listeners": f"{client},{internal}{controller}",
            "advertised.listeners": f"{client},{internal}",
            "listener.security.protocol.map": (
                f"{CLIENT_LISTENER}:{security.protocol},{INTERNAL_LISTENER}:PLAINTEXT,"
                "CONTROLLER:PLAINTEXT"
            ),
            "inter.broker.listener.name": INTERNAL_LISTENER,
            "super.users": ";".join(security.super_users),
        }
        if security.uses_sasl:
            props.update(self._sasl_properties(security))
        if security.tls is not None and security.uses_tls:
            props.update(self._tls_properties(security.tls, node))
        return props

    @staticmethod
    def _sasl_properties(security: ClientSecurity) -> dict[str, ConfigValue]:
        prefix = f"listener.name.{CLIENT_LISTENER.lower()}"
        props: dict[str, ConfigValue] = {
            f"{prefix}.sasl.enabled.mechanisms": ",".join(security.mechanisms),
        }
        for mechanism in security.mechanisms:
            props[f"{prefix}.{mechanism.lower()}.sasl.jaas.config"] = _jaas(
                mechanism, security.plain_users
            )
        if security.oauthbearer is not None:
            handler = f"{prefix}.oauthbearer.sasl.server.callback.handler.class"
            props[handler] = _OAUTH_VALIDATOR
            props.update(security.oauthbearer.broker_properties())
        return props

    def _security_jvm_opts(self) -> tuple[str, ...]:
        security = self.security
        if security is None or security.oauthbearer is None:
            return ()
        return (f"-D{_OAUTH_ALLOWED_URLS}={security.oauthbearer.jwks_url}",)

    @staticmethod
    def _tls_properties(tls: BrokerTls, node: BrokerNode) -> dict[str, ConfigValue]:
        prefix = f"listener.name.{CLIENT_LISTENER.lower()}"
        return {
            f"{prefix}.ssl.keystore.type": "PEM",
            f"{prefix}.ssl.keystore.location": str(node.keystore_path),
            f"{prefix}.ssl.truststore.type": "PEM",
            f"{prefix}.ssl.truststore.location": str(tls.ca),
            f"{prefix}.ssl.client.auth": tls.client_auth,
        }

    def _write_keystore(self, node: BrokerNode) -> None:
        security = self.security
        if security is None or security.tls is None or not security.uses_tls:
            return
        tls = security.tls
        node.keystore_path.write_bytes(tls.key.read_bytes() + b"\n" + tls.cert.read_bytes())
        node.keystore_path.chmod(0o600)

    def _write_config(self, node: BrokerNode) -> None:
        node.node_dir.mkdir(parents=True, exist_ok=True)
        self._write_keystore(node)
        lines = [
            f"{key}={_format_value(value)}"
            for key, value in self.broker_properties(node.node_id).items()
        ]
        node.config_path.write_text("\n".join(lines) + "\n")

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> LocalKafkaCluster:
        """Format storage, launch every JVM in parallel, wait until all brokers serve."""
        self._check_ports_free(self.all_ports())
        self._force_kill.clear()
        started = time.monotonic()
        nodes = [self._node(i) for i in self.node_ids]
        _LIVE_CLUSTERS.add(self)
        try:
            self._format(nodes)
            for node in nodes:
                self._launch(node)
            self.wait_until_ready(self.start_timeout)
            self._create_scram_users(started + self.start_timeout)
        except LocalKafkaError:
            self.stop(remove_data=False, graceful=False)  # the error points at the logs
            raise
        except BaseException:
            self.stop()
            raise
        self._progress(
            f"Kafka cluster of {self.brokers} broker(s) up in {time.monotonic() - started:.1f}s"
            f" at {self.bootstrap_servers} ({self.security_protocol})"
        )
        return self

    def stop(self, remove_data: bool | None = None, graceful: bool | None = None) -> None:
        """Stop every JVM and tidy up; safe to call twice.

        The data dir is removed when we created it, unless `keep` (or `remove_data=False`).
        Data that is about to be deleted needs no clean shutdown, so by default the JVMs
        then get SIGKILL at once (instant); otherwise SIGTERM, and SIGKILL after
        `stop_timeout`. A graceful stop of a whole cluster takes ~5 s: the last
        controllers wait for a quorum that is already gone.
        """
        if remove_data is None:
            remove_data = self._owns_data_dir and not self.keep
        if graceful is None:
            graceful = not remove_data
        running = [node for node in self._nodes.values() if node.is_running()]
        for node in running:
            _signal(node, signal.SIGTERM if graceful else signal.SIGKILL)
        self._wait_or_kill(running, self.stop_timeout)
        for node in self._nodes.values():
            _close_log(node)
        _LIVE_CLUSTERS.discard(self)
        if self._data_dir is not None:
            if remove_data:
                _remove_tree(self._data_dir)
            else:
                (self._data_dir / _OWNER_FILE).unlink(missing_ok=True)

    def force_stop(self) -> None:
        """Make a `stop()` in progress (e.g. in another thread) SIGKILL at once."""
        self._force_kill.set()

    def kill_broker(self, node_id: int) -> None:
        """SIGKILL one broker, as a crash would; its data dir stays for `start_broker`."""
        node = self._node(node_id)
        if node.is_running():
            _signal(node, signal.SIGKILL)
            self._wait_or_kill([node], self.stop_timeout)
        _close_log(node)

    def stop_broker(self, node_id: int, timeout: float | None = None) -> None:
        """Stop one broker cleanly (SIGTERM, then SIGKILL after `timeout`)."""
        node = self._node(node_id)
        if node.is_running():
            _signal(node, signal.SIGTERM)
            self._wait_or_kill([node], self.stop_timeout if timeout is None else timeout)
        _close_log(node)

    def start_broker(self, node_id: int, wait: bool = True) -> None:
        """Restart a stopped or killed broker on its existing data dir."""
        node = self._node(node_id)
        if node.is_running():
            raise LocalKafkaError(f"broker {node_id} is already running")
        own = (node.port, node.internal_port, node.controller_port)
        self._check_ports_free([port for port in own if port is not None])
        self._launch(node)
        if wait:
            self.wait_until_ready(self.start_timeout)

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Block until every running broker reports all running brokers in Metadata."""
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        expected = set(self.running_node_ids())
        while True:
            self._raise_if_crashed(expected)
            pending = [i for i in expected if self._broker_ids_seen(i) != expected]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise LocalKafkaError(self._not_ready_message(pending, expected, timeout))
            time.sleep(0.1)

    def _broker_ids_seen(self, node_id: int) -> set[int] | None:
        try:
            seen = metadata_broker_ids(HOST, self.probe_port(node_id), timeout=2.0)
        except (OSError, struct.error):  # not listening yet, or a cut-off answer
            return None
        if self.security is not None and not _accepts_connections(self.broker_port(node_id)):
            return None  # the secured listener is not bound yet
        return seen

    # ---------------------------------------------------------------- SCRAM

    def _create_scram_users(self, deadline: float) -> None:
        """Create the SCRAM users through the Admin API, then wait until every broker
        authenticates each of them (credentials reach brokers through the metadata log,
        a little after the controller acknowledged them)."""
        security = self.security
        if security is None or not security.scram_mechanisms or not security.scram_users:
            return
        upserts = [
            (user, mechanism, password)
            for user, password in security.scram_users.items()
            for mechanism in security.scram_mechanisms
        ]
        port = self.probe_port(self.running_node_ids()[0])
        for mechanism in security.scram_mechanisms:  # a user may appear once per request
            batch = [upsert for upsert in upserts if upsert[1] == mechanism]
            alter_user_scram_credentials(HOST, port, batch, security.scram_iterations)
        for node_id in self.running_node_ids():
            for user, mechanism, password in upserts:
                self._wait_for_login(node_id, mechanism, user, password, deadline)

    def _wait_for_login(
        self, node_id: int, mechanism: str, user: str, password: str, deadline: float
    ) -> None:
        context = self.client_ssl_context()
        while True:
            try:
                sasl_login(self.broker_address(node_id), mechanism, user, password, context)
                return
            except (SaslLoginError, ScramError, CodecError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise LocalKafkaError(
                        f"broker {node_id} never accepted {mechanism} user {user!r}: {exc}\n"
                        f"{self.describe_log(node_id)}"
                    ) from exc
            time.sleep(0.05)

    def client_ssl_context(self) -> ssl.SSLContext | None:
        """An `ssl` client context for the client listener (None unless it uses TLS)."""
        security = self.security
        if security is None or security.tls is None or not security.uses_tls:
            return None
        return security.tls.probe_context()

    def _raise_if_crashed(self, expected: Iterable[int]) -> None:
        for node_id in expected:
            node = self._nodes[node_id]
            if node.process is not None and node.process.poll() is not None:
                raise LocalKafkaError(
                    f"Kafka broker {node_id} exited with code {node.process.returncode} "
                    f"during start-up.\n{self.describe_log(node_id)}"
                )

    def _not_ready_message(
        self, pending: list[int], expected: set[int], timeout: float | None
    ) -> str:
        details = "\n".join(self.describe_log(i) for i in pending)
        return (
            f"Kafka brokers {pending} did not report all brokers {sorted(expected)} within "
            f"{timeout}s.\n{details}"
        )

    def describe_log(self, node_id: int, lines: int = 40) -> str:
        """The log path and last `lines` lines of a broker's log, for error messages."""
        path = self.log_path(node_id)
        return f"--- {path} (last {lines} lines) ---\n{tail_file(path, lines)}"

    def _format(self, nodes: list[BrokerNode]) -> None:
        """Do what `kafka-storage format` does, without a JVM per node.

        Each node gets the cached bootstrap.checkpoint (made by Kafka's StorageTool) and
        a meta.properties naming the cluster, the node and a fresh log-dir id.
        """
        checkpoint = bootstrap_checkpoint(self.dist, self.features)
        for node in nodes:
            if (node.log_dir / "meta.properties").exists():
                continue
            self._write_config(node)
            node.log_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkpoint, node.log_dir / "bootstrap.checkpoint")
            (node.log_dir / "meta.properties").write_text(
                f"node.id={node.node_id}\ndirectory.id={random_kafka_uuid()}\nversion=1\n"
                f"cluster.id={self.cluster_id}\n"
            )

    def _launch(self, node: BrokerNode) -> None:
        self._write_config(node)
        opts = BROKER_JVM_OPTS + (FAST_START_JVM_OPTS if self.fast_start else ())
        opts += self._security_jvm_opts()
        cmd = self.dist.java_command(
            BROKER_MAIN,
            [str(node.config_path)],
            jvm_opts=opts,
            log4j_config=self.dist.broker_log4j,
        )
        node.process = self._spawn(cmd, node, node.log_path.name)

    def _spawn(self, cmd: list[str], node: BrokerNode, log_name: str) -> subprocess.Popen[bytes]:
        """Start a JVM in its own session (Ctrl-C is ours to handle), logging to a file."""
        _close_log(node)
        node.log_handle = (node.node_dir / log_name).open("ab")
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=node.log_handle,
            stderr=subprocess.STDOUT,
            cwd=node.node_dir,
            start_new_session=True,
            preexec_fn=die_with_parent_preexec(),
        )

    def _wait_or_kill(self, nodes: list[BrokerNode], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for node in nodes:
            assert node.process is not None
            while node.process.poll() is None:
                if time.monotonic() > deadline or self._force_kill.is_set():
                    _signal(node, signal.SIGKILL)
                    node.process.wait()
                    break
                time.sleep(0.05)

    def _check_ports_free(self, ports: Iterable[int]) -> None:
        busy = [port for port in ports if not port_is_free(port)]
        if busy:
            raise LocalKafkaError(
                f"ports {busy} on {HOST} are already in use (another local Kafka still "
                "running?); pick another base port"
            )

    def __enter__(self) -> LocalKafkaCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalKafkaCluster(brokers={self.brokers}, bootstrap={self.bootstrap_servers!r})"


# --------------------------------------------------------------------- helpers


def _validate_layout(brokers: int, base_port: int) -> None:
    """Reject layouts whose controller ports would clash with brokers or the gateway."""
    if not 1 <= brokers <= MAX_BROKERS:
        raise ValueError(f"brokers must be in 1..{MAX_BROKERS}, got {brokers}")
    highest = base_port + CONTROLLER_PORT_OFFSET + min(brokers, QUORUM_SIZE) - 1
    if base_port < 1024 or highest > 65535:
        raise ValueError(f"base port {base_port} leaves ports outside 1024..65535")
    controllers = range(base_port + CONTROLLER_PORT_OFFSET, highest + 1)
    if set(controllers) & set(GATEWAY_PORTS):
        raise ValueError(
            f"base port {base_port} puts controller ports "
            f"{controllers.start}-{controllers.stop - 1} in the gateway's range "
            f"{GATEWAY_PORTS.start}-{GATEWAY_PORTS.stop - 1}"
        )


def _validate_internal_layout(brokers: int, base_port: int) -> None:
    """A secured cluster's INTERNAL listeners must fit below 65536 and miss the gateway."""
    internal = range(base_port + INTERNAL_PORT_OFFSET, base_port + INTERNAL_PORT_OFFSET + brokers)
    if internal.stop - 1 > 65535:
        raise ValueError(f"base port {base_port} puts internal listener ports above 65535")
    if set(internal) & set(GATEWAY_PORTS):
        raise ValueError(
            f"base port {base_port} puts internal listener ports "
            f"{internal.start}-{internal.stop - 1} in the gateway's range "
            f"{GATEWAY_PORTS.start}-{GATEWAY_PORTS.stop - 1}"
        )


def _accepts_connections(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _format_value(value: ConfigValue) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _signal(node: BrokerNode, sig: signal.Signals) -> None:
    if node.process is not None and node.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            node.process.send_signal(sig)


def _close_log(node: BrokerNode) -> None:
    if node.log_handle is not None:
        node.log_handle.close()
        node.log_handle = None


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


_OWNER_FILE = ".owner-pid"
_TEMP_PREFIX = "local-kafka-"


def _new_temp_data_dir(auto_remove: bool) -> Path:
    """A fresh temp dir; when it is ours to remove, it records our pid for `_sweep`."""
    _sweep_orphaned_temp_dirs()
    path = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX))
    if auto_remove:
        (path / _OWNER_FILE).write_text(str(os.getpid()))
    return path


def _sweep_orphaned_temp_dirs() -> None:
    """Remove temp data dirs whose creator died before cleaning up (SIGKILL, SIGTERM).

    Their JVMs died with it (PR_SET_PDEATHSIG); only the disk space is left to reclaim.
    """
    for marker in Path(tempfile.gettempdir()).glob(f"{_TEMP_PREFIX}*/{_OWNER_FILE}"):
        try:
            pid = int(marker.read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(pid):
            _remove_tree(marker.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tail_file(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a text file (reads at most the last 256 KiB)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            start = max(0, handle.tell() - 256 * 1024)
            handle.seek(start)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(cannot read {path})"
    kept = text.splitlines()[1 if start else 0 :]  # the first line may be cut
    return "\n".join(kept[-lines:])


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if we could listen on host:port (with SO_REUSEADDR, as the JVM does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def metadata_broker_ids(host: str, port: int, timeout: float = 2.0) -> set[int]:
    """Ask one broker for Metadata (v1, no topics) and return the broker ids it lists.

    A raw request keeps this free of client-library quirks and start-up noise.
    """
    client_id = b"local-kafka-probe"
    body = struct.pack(">hhih", 3, 1, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        payload = _recv_exact(sock, size)
    return _parse_metadata_v1_brokers(payload)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _parse_metadata_v1_brokers(payload: bytes) -> set[int]:
    """correlation_id, then [node_id int32, host string, port int32, rack nullable string]."""
    offset = 4
    (count,) = struct.unpack_from(">i", payload, offset)
    offset += 4
    ids: set[int] = set()
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", payload, offset)
        offset += 6 + host_len + 4
        (rack_len,) = struct.unpack_from(">h", payload, offset)
        offset += 2 + max(rack_len, 0)
        ids.add(node_id)
    return ids


# ------------------------------------------------ SCRAM client (RFC 5802/7677)
#
# Test infrastructure only: the readiness probe and the SCRAM user creation need a SCRAM
# client before (and independently of) the gateway's own implementation in
# policies.auth, which the tests then check against these real brokers.


def plain_client_token(username: str, password: str) -> bytes:
    """RFC 4616: ``authzid NUL authcid NUL password`` with an empty authzid."""
    return f"\0{username}\0{password}".encode()


def scram_salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """``Hi(password, salt, i)``: what AlterUserScramCredentials upserts as salted_password."""
    return hashlib.pbkdf2_hmac(SCRAM_HASHES[mechanism], password.encode(), salt, iterations)


class ScramError(ValueError):
    """The server's SCRAM messages are malformed, or it failed to prove the password."""


class ScramClient:
    """One client-side SCRAM exchange, sans-I/O: first, final(server_first), verify(final)."""

    def __init__(self, mechanism: str, username: str, password: str, nonce: str = "") -> None:
        self._hash = SCRAM_HASHES[mechanism]
        self._mechanism = mechanism
        self._password = password
        self._nonce = nonce or base64.b64encode(secrets.token_bytes(24)).decode()
        name = username.replace("=", "=3D").replace(",", "=2C")
        self._first_bare = f"n={name},r={self._nonce}"
        self._server_signature = b""

    def first_message(self) -> bytes:
        return f"n,,{self._first_bare}".encode()

    def final_message(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = _scram_attributes(text)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "0")
        if not nonce.startswith(self._nonce) or nonce == self._nonce:
            raise ScramError(f"server nonce does not extend ours: {text!r}")
        if int(iterations) < SCRAM_MIN_ITERATIONS:
            raise ScramError(f"too few iterations: {text!r}")
        salted = scram_salted_password(
            self._mechanism, self._password, base64.b64decode(salt), int(iterations)
        )
        client_key = hmac.digest(salted, b"Client Key", self._hash)
        stored_key = hashlib.new(self._hash, client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, self._hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self._hash)
        self._server_signature = hmac.digest(server_key, auth_message, self._hash)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final: bytes) -> None:
        attrs = _scram_attributes(server_final.decode())
        if "e" in attrs:
            raise ScramError(f"server error: {attrs['e']}")
        signature = base64.b64decode(attrs.get("v", ""))
        if not self._server_signature or not hmac.compare_digest(signature, self._server_signature):
            raise ScramError("the server signature does not match")


def _scram_attributes(message: str) -> dict[str, str]:
    """``k=v,k=v`` (values may contain ``=``, as base64 does)."""
    pairs = (item.partition("=") for item in message.split(","))
    return {key: value for key, _sep, value in pairs}


# ------------------------------------------- SASL login and SCRAM users (raw protocol)

_ALTER_USER_SCRAM_CREDENTIALS = 51


class SaslLoginError(Exception):
    """The broker refused a SASL login; `error_code` is Kafka's (33, 34 or 58)."""

    def __init__(self, error_code: int, message: str | None) -> None:
        super().__init__(f"{error_name(error_code)} ({error_code}): {message or ''}".rstrip(": "))
        self.error_code = error_code
        self.error_message = message


class _RawConnection:
    """One blocking request/response connection, optionally over TLS."""

    def __init__(self, address: str, context: ssl.SSLContext | None, timeout: float) -> None:
        host, port = address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock = context.wrap_socket(sock, server_hostname=host) if context else sock
        self._correlation_id = 0

    def next_correlation_id(self) -> int:
        self._correlation_id += 1
        return self._correlation_id

    def round_trip(self, frame: bytes) -> bytes:
        self.sock.sendall(frame)
        size = struct.unpack(">i", _recv_exact(self.sock, 4))[0]
        return _recv_exact(self.sock, size)

    def close(self) -> None:
        self.sock.close()


def sasl_login(
    address: str,
    mechanism: str,
    username: str,
    password: str,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> sasl.SaslAuthenticateResponse:
    """Log in to one broker with PLAIN, SCRAM-SHA-256/512 or OAUTHBEARER (`password` is
    then the JWT, `username` unused) and return the final response.

    SaslHandshake v1 then SaslAuthenticate v2, as the Java client does; raises
    `SaslLoginError` when the broker refuses (OSError if it cannot be reached).
    The returned response carries KIP-368's `session_lifetime_ms`.
    """
    conn = _RawConnection(address, ssl_context, timeout)
    try:
        _sasl_handshake(conn, mechanism)
        if mechanism == sasl.PLAIN:
            return _sasl_authenticate(conn, plain_client_token(username, password))
        if mechanism == sasl.OAUTHBEARER:
            return _oauthbearer_login(conn, password)
        client = ScramClient(mechanism, username, password)
        server_first = _sasl_authenticate(conn, client.first_message()).auth_bytes
        final = _sasl_authenticate(conn, client.final_message(server_first))
        client.verify_server_final(final.auth_bytes)
        return final
    finally:
        conn.close()


def _sasl_handshake(conn: _RawConnection, mechanism: str) -> None:
    frame = sasl.sasl_handshake_request_frame(conn.next_correlation_id(), _PROBE_ID, mechanism)
    _cid, response = sasl.parse_sasl_handshake_response_frame(conn.round_trip(frame), 1)
    if response.error_code != NONE:
        raise SaslLoginError(response.error_code, f"enabled: {list(response.mechanisms)}")


def _sasl_authenticate(conn: _RawConnection, token: bytes) -> sasl.SaslAuthenticateResponse:
    frame = sasl.sasl_authenticate_request_frame(conn.next_correlation_id(), _PROBE_ID, token)
    _cid, response = sasl.parse_sasl_authenticate_response_frame(conn.round_trip(frame), 2)
    if response.error_code != NONE:
        raise SaslLoginError(response.error_code, response.error_message)
    return response


def _oauthbearer_login(conn: _RawConnection, token: str) -> sasl.SaslAuthenticateResponse:
    """RFC 7628: a refused token gets an error *challenge* (error code 0, JSON body);
    the client acknowledges with 0x01, and only then does the broker fail the login."""
    response = _sasl_authenticate(conn, f"n,,\x01auth=Bearer {token}\x01\x01".encode())
    if not response.auth_bytes:
        return response
    challenge = response.auth_bytes.decode(errors="replace")
    try:
        _sasl_authenticate(conn, b"\x01")
    except SaslLoginError as exc:
        detail = exc.error_message if challenge in (exc.error_message or "") else challenge
        raise SaslLoginError(exc.error_code, detail) from exc
    raise SaslLoginError(SASL_AUTHENTICATION_FAILED, f"unexpected success after {challenge}")


_PROBE_ID = "local-kafka-probe"


def alter_user_scram_credentials(
    host: str,
    port: int,
    upserts: Iterable[tuple[str, str, str]],
    iterations: int = SCRAM_MIN_ITERATIONS,
    timeout: float = 30.0,
) -> None:
    """Create or update SCRAM credentials ``(user, mechanism, password)`` via the Admin API.

    Kafka refuses a user named twice in one request (even for two mechanisms): send
    one call per mechanism. AlterUserScramCredentials v0 on an unauthenticated
    (PLAINTEXT) listener; like
    Kafka's AdminClient, the salted password is computed here, so the password itself
    never travels. Raises `LocalKafkaError` if the broker refuses any of them.
    """
    body = _alter_scram_body(list(upserts), iterations)
    header = encode_request_header(_ALTER_USER_SCRAM_CREDENTIALS, 0, 1, _PROBE_ID)
    conn = _RawConnection(f"{host}:{port}", None, timeout)
    try:
        response = conn.round_trip(encode_frame(header, body))
    finally:
        conn.close()
    failures = [r for r in _parse_alter_scram_response(response) if r[1] != NONE]
    if failures:
        raise LocalKafkaError(f"AlterUserScramCredentials failed: {failures}")


def _alter_scram_body(upserts: list[tuple[str, str, str]], iterations: int) -> bytes:
    parts = [enc_uvarint(1), enc_uvarint(len(upserts) + 1)]  # no deletions, N upsertions
    for user, mechanism, password in upserts:
        salt = secrets.token_bytes(32)
        salted = scram_salted_password(mechanism, password, salt, iterations)
        parts += [
            enc_string(user, True),
            enc_int8(SCRAM_MECHANISM_IDS[mechanism]),
            enc_int32(iterations),
            enc_uvarint(len(salt) + 1) + salt,
            enc_uvarint(len(salted) + 1) + salted,
            b"\x00",  # no tagged fields
        ]
    parts.append(b"\x00")
    return b"".join(parts)


def _parse_alter_scram_response(frame: bytes) -> list[tuple[str, int, str | None]]:
    """``(user, error_code, error_message)`` per result (response header v1, body v0)."""
    try:
        r = Reader(frame, 4)
        r.skip_tagged_fields()
        r.int32()  # throttle_time_ms
        results = []
        for _ in range(r.array_length(True)):
            user, code, message = r.compact_string(), r.int16(), r.compact_nullable_string()
            r.skip_tagged_fields()
            results.append((user, code, message))
    except CodecError as exc:
        raise LocalKafkaError(f"unreadable AlterUserScramCredentials response: {exc}") from exc
    return results


# ------------------------------------------------------ process-lifetime safety

_LIVE_CLUSTERS: weakref.WeakSet[LocalKafkaCluster] = weakref.WeakSet()


@atexit.register
def _stop_leftover_clusters() -> None:
    """A Ctrl-C'd pytest run may skip fixture teardown; never leave JVMs behind."""
    for cluster in list(_LIVE_CLUSTERS):
        cluster.stop_timeout = min(cluster.stop_timeout, 5.0)
        cluster.stop()


# ------------------------------------------------------------------------ CLI


def add_local_kafka_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `kafka-gateway local-kafka`."""
    parser.add_argument(
        "--brokers",
        type=int,
        default=1,
        metavar="N",
        help="number of brokers (default 1; 3 or more run a 3-node KRaft quorum)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_BASE_PORT,
        metavar="P",
        help=f"port of broker 1; broker i listens on P+i-1 (default {DEFAULT_BASE_PORT})",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="D",
        help="where broker data and logs go (default: a new temp dir, removed on exit)",
    )
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the temp data dir on exit (a --data-dir is always kept)",
    )
    parser.add_argument(
        "--download-only",
        action="store_true",
        help=f"only download Kafka {KAFKA_VERSION} into the cache (with Maven) and exit",
    )


class _Shutdown(Exception):
    """Raised from our signal handler to leave the CLI's wait loop."""


def run_local_kafka(args: argparse.Namespace) -> int:
    """Download Kafka if needed, run the cluster until SIGINT/SIGTERM, stop it cleanly."""
    try:
        dist = ensure_distribution()
        if getattr(args, "download_only", False):
            bootstrap_checkpoint(dist, DEFAULT_FEATURES)  # the one-off format, done ahead
            print(f"Kafka {dist.version} is in {dist.home}", flush=True)
            return 0
        cluster = LocalKafkaCluster(
            brokers=args.brokers,
            base_port=args.port,
            data_dir=args.data_dir,
            keep=args.keep_data,
            dist=dist,
        )
    except (ValueError, KafkaDistError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    previous = _install_signal_handlers(_raise_shutdown)
    try:
        return _serve(cluster)
    finally:
        _install_signal_handlers(lambda _sig, _frame: cluster.force_stop())
        cluster.stop()
        _restore_signal_handlers(previous)
        kept = cluster.existing_data_dir()
        if kept is not None:
            print(f"Kafka data and logs kept in {kept}", file=sys.stderr)


def _serve(cluster: LocalKafkaCluster) -> int:
    try:
        cluster.start()
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except _Shutdown:
        print("Interrupted during start-up; Kafka stopped.", file=sys.stderr, flush=True)
        return 130
    print(f"Kafka is ready: bootstrap servers {cluster.bootstrap_servers}", flush=True)
    for node_id, path in cluster.log_paths().items():
        print(f"  broker {node_id} log: {path}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    _wait_for_shutdown(cluster)
    print("Stopping Kafka ...", file=sys.stderr, flush=True)
    return 0


def _wait_for_shutdown(cluster: LocalKafkaCluster) -> None:
    """Sleep until a signal arrives, warning once about any broker that dies meanwhile."""
    reported: set[int] = set()
    try:
        while True:
            time.sleep(0.5)
            for node_id in set(cluster.node_ids) - set(cluster.running_node_ids()) - reported:
                reported.add(node_id)
                print(
                    f"warning: broker {node_id} exited; see {cluster.log_path(node_id)}",
                    file=sys.stderr,
                    flush=True,
                )
    except _Shutdown:
        return


def _raise_shutdown(_signum: int, _frame: FrameType | None) -> None:
    raise _Shutdown


SignalHandler = Callable[[int, FrameType | None], object]


def _install_signal_handlers(handler: SignalHandler) -> dict[int, object]:
    previous: dict[int, object] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _restore_signal_handlers(previous: Mapping[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]
