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
What a secured listener needs (properties, keystore, JAAS) is `localkafka.security`;
SCRAM users are created and checked with `localkafka.sasl_client`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from codec.primitives import CodecError
from localkafka.distribution import (
    BROKER_MAIN,
    KafkaDistribution,
    bootstrap_checkpoint,
    die_with_parent_preexec,
    ensure_distribution,
    random_kafka_uuid,
    stderr_progress,
)
from localkafka.errors import LocalKafkaError
from localkafka.probes import HOST, accepts_connections, metadata_broker_ids, port_is_free
from localkafka.sasl_client import (
    SaslLoginError,
    ScramError,
    alter_user_scram_credentials,
    sasl_login,
)
from localkafka.security import (
    ClientSecurity,
    ConfigValue,
    client_listener_properties,
    security_jvm_opts,
    write_keystore,
)
from localkafka.security import client_ssl_context as _client_ssl_context

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

Progress = Callable[[str], None]


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
        if self.security is None:
            return {}
        return client_listener_properties(
            self.security,
            HOST,
            node.port,
            node.internal_port,
            node.controller_port,
            node.keystore_path,
        )

    def _write_config(self, node: BrokerNode) -> None:
        node.node_dir.mkdir(parents=True, exist_ok=True)
        write_keystore(self.security, node.keystore_path)
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
        if self.security is not None and not accepts_connections(self.broker_port(node_id)):
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
        return _client_ssl_context(self.security)

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
        opts += security_jvm_opts(self.security)
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


# ------------------------------------------------------ process-lifetime safety

_LIVE_CLUSTERS: weakref.WeakSet[LocalKafkaCluster] = weakref.WeakSet()


@atexit.register
def _stop_leftover_clusters() -> None:
    """A Ctrl-C'd pytest run may skip fixture teardown; never leave JVMs behind."""
    for cluster in list(_LIVE_CLUSTERS):
        cluster.stop_timeout = min(cluster.stop_timeout, 5.0)
        cluster.stop()
