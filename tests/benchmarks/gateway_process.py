"""Run the gateway for a benchmark and account for its CPU and memory.

The test harness (`tests/gateway_harness.py`) runs the gateway at debug level and has no
way to pass command-line options; a benchmark needs info level (a debug event per
request would be measured too) and `--workers N`. So this module starts
`python -m gateway.cli run` itself, with the harness's config format, and reuses the
harness's `RunningGateway` for waiting on log events and stopping.

CPU and RSS are summed over the gateway's whole process tree, so a multi-worker gateway
is measured the same way as a single process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from localkafka.probes import metadata_broker_ids
from tests.gateway_harness import REPO_ROOT, RunningGateway, gateway_config, ports_are_free

HOST = "127.0.0.1"
#: Below Linux's ephemeral range (32768+), so thousands of outgoing connections made by
#: the benchmark itself cannot take a port before the gateway binds it.
GATEWAY_PORT_RANGE = range(18100, 19000, 20)
PORT_BLOCK = 8
MIB = 1024 * 1024


def find_free_port_block(size: int = PORT_BLOCK) -> int:
    """First port of `size` consecutive free ports (bootstrap, then one per broker)."""
    for start in GATEWAY_PORT_RANGE:
        if ports_are_free(HOST, list(range(start, start + size))):
            return start
    raise RuntimeError(f"no {size} free ports in {GATEWAY_PORT_RANGE}")


@functools.cache
def workers_option_supported() -> bool:
    """Whether `kafka-gateway run` has `--workers` (older checkouts do not)."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    return "--workers" in result.stdout


@dataclass(frozen=True)
class PhaseUsage:
    """What the gateway's process tree used during one measured phase."""

    cpu_s: float
    wall_s: float
    peak_rss_mib: float

    @property
    def cores(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


class ProcessTreeMonitor:
    """Samples the RSS of a process tree in a thread; reads its CPU time on demand.

    Peak RSS needs sampling (psutil has no high-water mark for a live tree); CPU time is
    cumulative, so a phase's CPU is the difference of two readings. CPU used by a
    descendant that exits mid-phase is lost, which only matters if workers crash.
    """

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._phase_peak = 0
        self._lifetime_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                total += process.memory_info().rss
        return total

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> int:
        rss = self.rss_bytes()
        with self._lock:
            self._phase_peak = max(self._phase_peak, rss)
            self._lifetime_peak = max(self._lifetime_peak, rss)
        return rss

    @property
    def lifetime_peak_rss_mib(self) -> float:
        with self._lock:
            return self._lifetime_peak / MIB

    @contextlib.contextmanager
    def phase(self) -> Iterator[list[PhaseUsage]]:
        """Measure the enclosed block; the yielded list receives its `PhaseUsage`."""
        out: list[PhaseUsage] = []
        with self._lock:
            self._phase_peak = 0
        self.sample()
        cpu_before, started = self.cpu_seconds(), time.monotonic()
        yield out
        wall = time.monotonic() - started
        cpu = self.cpu_seconds() - cpu_before
        self.sample()
        with self._lock:
            peak = self._phase_peak
        out.append(PhaseUsage(cpu_s=cpu, wall_s=wall, peak_rss_mib=peak / MIB))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class BenchGateway:
    """A running gateway: its harness handle, port layout and resource monitor."""

    handle: RunningGateway
    port: int
    workers: int
    monitor: ProcessTreeMonitor

    @property
    def bootstrap(self) -> str:
        return self.handle.bootstrap

    @property
    def pid(self) -> int:
        return self.handle.process.pid

    def count_events(self, name: str) -> int:
        return sum(1 for event in self.handle.events() if event.get("event") == name)


def _command(config_path: Path, workers: int) -> list[str]:
    cmd = [sys.executable, "-m", "gateway.cli", "run", "--config", str(config_path)]
    if workers != 1:
        if not workers_option_supported():
            raise RuntimeError("this gateway has no --workers option yet")
        cmd += ["--workers", str(workers)]
    return cmd


def _wait_until_serving(
    gateway: RunningGateway,
    port: int,
    workers: int,
    timeout_s: float = 60.0,
    *,
    authenticated: bool = False,
) -> None:
    """Until every worker has discovered the brokers and a Metadata request answers.

    A listener that requires SASL answers no unauthenticated Metadata, so there the
    check is that the port accepts connections.
    """
    deadline = time.monotonic() + timeout_s
    ready = _accepts_connections if authenticated else _answers_metadata
    while True:
        discovered = {
            event.get("worker")
            for event in gateway.events()
            if event.get("event") == "brokers_discovered"
        }
        if len(discovered) >= workers and ready(port):
            return
        if time.monotonic() > deadline or gateway.process.poll() is not None:
            raise RuntimeError(f"gateway on port {port} is not serving; log:\n{gateway.tail()}")
        time.sleep(0.2)


def _answers_metadata(port: int) -> bool:
    try:
        return bool(metadata_broker_ids(HOST, port, timeout=5.0))
    except (OSError, struct.error):  # not listening yet, or a cut-off answer
        return False


def _accepts_connections(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=5.0).close()
    except OSError:
        return False
    return True


def _stop_tree(gateway: RunningGateway, monitor: ProcessTreeMonitor) -> None:
    """SIGTERM the gateway, then SIGKILL any of its descendants that outlive it."""
    descendants = monitor.processes()[1:]
    gateway.stop()
    _, alive = psutil.wait_procs(descendants, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


@contextlib.contextmanager
def bench_gateway(
    workdir: Path,
    upstream_bootstrap: str,
    *,
    workers: int = 1,
    log_level: str = "info",
    listener: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
) -> Iterator[BenchGateway]:
    """Run `kafka-gateway run [--workers N]` in front of `upstream_bootstrap` for the block.

    `listener` adds listener keys (such as `authentication`) to the harness's config;
    `cluster` adds virtual cluster keys (`authorization`, `quotas`).
    """
    port = find_free_port_block()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"gateway-{port}-w{workers}.yaml"
    config = gateway_config(
        upstream_bootstrap, port, log_level=log_level, listener=listener, cluster=cluster
    )
    config_path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    log_path = workdir / f"gateway-{port}-w{workers}-{time.time_ns()}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            _command(config_path, workers),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
        )
    handle = RunningGateway(process, f"{HOST}:{port}", log_path, config_path)
    monitor: ProcessTreeMonitor | None = None
    try:
        monitor = ProcessTreeMonitor(process.pid)
        authenticated = bool(listener and listener.get("authentication"))
        _wait_until_serving(handle, port, workers, authenticated=authenticated)
        yield BenchGateway(handle=handle, port=port, workers=workers, monitor=monitor)
    finally:
        if monitor is None:
            handle.stop()
        else:
            monitor.close()
            _stop_tree(handle, monitor)
