"""Start the real gateway (the `kafka-gateway run` command) as a subprocess for tests.

Running it as its own process, exactly as a user does, keeps the blocking client
libraries out of the gateway's Trio loop and gives tests its JSON log to assert on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localkafka.probes import port_is_free

REPO_ROOT = Path(__file__).resolve().parent.parent
Event = dict[str, Any]


def ports_are_free(host: str, ports: list[int]) -> bool:
    return all(port_is_free(port, host) for port in ports)


#: Gateway ports come from below Linux's ephemeral range (32768-60999): thousands of
#: client connections (the benchmarks) must not be able to occupy them.
def _port_range(first: int = 20000, end: int = 24000) -> tuple[int, int]:
    """This process's share of the test ports: pytest-xdist workers (``make test``
    runs the unit suite on two) get disjoint ranges, so they never race for a port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return first, end
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    span = (end - first) // max(count, 1)
    start = first + int(worker[2:]) * span
    return start, start + span


PORT_RANGE = _port_range()
_next_port = PORT_RANGE[0] + (os.getpid() % 50) * 16


def free_port_block(size: int = 16, host: str = "127.0.0.1") -> int:
    """First port of ``size`` consecutive free ports (bootstrap + broker ports)."""
    global _next_port
    for _ in range((PORT_RANGE[1] - PORT_RANGE[0]) // size):
        if _next_port + size > PORT_RANGE[1]:
            _next_port = PORT_RANGE[0]
        start = _next_port
        _next_port += size
        if ports_are_free(host, list(range(start, start + size))):
            return start
    raise RuntimeError(f"no {size} consecutive free ports in {PORT_RANGE}")


@dataclass
class RunningGateway:
    process: subprocess.Popen[bytes]
    bootstrap: str
    log_path: Path
    config_path: Path

    def reload_with_cli(self) -> subprocess.CompletedProcess[str]:
        """``kafka-gateway reload --pid PID --config FILE`` against this gateway."""
        command = ["reload", "--pid", str(self.process.pid), "--config", str(self.config_path)]
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *command],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def log_mark(self) -> int:
        """A mark in the log (its size in bytes now): pass it as ``after`` to see only
        the events written later, not those of earlier tests sharing this gateway."""
        return self.log_path.stat().st_size

    def events(self, after: int = 0) -> list[Event]:
        """The JSON events of the log written after the mark ``after`` (see `log_mark`).

        A mark taken while a line was being written falls inside it: the rest of that
        line is no JSON object (its braces do not balance), so it is skipped like any
        non-JSON line.
        """
        with self.log_path.open("rb") as log:
            log.seek(after)
            text = log.read().decode(errors="replace")
        out = []
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line still being written, or a non-JSON line
            if isinstance(event, dict):
                out.append(event)
        return out

    def wait_for_event(
        self, predicate: Callable[[Event], bool], *, after: int = 0, timeout: float = 30
    ) -> Event:
        """The first event after the mark ``after`` (see `log_mark`) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(after):
                if predicate(event):
                    return event
            if self.process.poll() is not None:
                raise AssertionError(
                    f"gateway exited ({self.process.returncode}); log:\n{self.tail()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"no matching gateway event within {timeout}s; log:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def reload(self) -> None:
        """Ask the gateway to re-read its config file (SIGHUP, as `kafka-gateway reload`)."""
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def gateway_config(
    upstream_bootstrap: str,
    port: int,
    *,
    listener: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
    **gateway_keys: Any,
) -> dict[str, Any]:
    """A one-virtual-cluster config; ``cluster`` keys (e.g. ``authorization``, ``quotas``)
    go into the virtual cluster entry next to ``listener`` and ``upstream``."""
    return {
        "log": {"format": "json", "level": gateway_keys.pop("log_level", "debug")},
        **gateway_keys,
        "virtual_clusters": [
            {
                "name": "test",
                "listener": {
                    "bootstrap": f"127.0.0.1:{port}",
                    "broker_port_base": port,
                    **(listener or {}),
                },
                "upstream": {
                    "bootstrap_servers": upstream_bootstrap.split(","),
                    "connect_timeout_ms": 3000,
                    "metadata_refresh_interval_ms": 2000,
                    **(upstream or {}),
                },
                **(cluster or {}),
            }
        ],
    }


@contextmanager
def running_gateway(
    workdir: Path,
    upstream_bootstrap: str,
    *,
    wait_for_brokers: bool = True,
    cli_args: Sequence[str] = (),
    cluster: dict[str, Any] | None = None,
    listener_for_port: Callable[[int], dict[str, Any]] | None = None,
    **gateway_keys: Any,
) -> Iterator[RunningGateway]:
    """Run the gateway in front of ``upstream_bootstrap`` until the block ends.

    ``cluster`` keys are merged into the virtual cluster entry (see `gateway_config`);
    ``listener_for_port(bootstrap port)`` gives listener keys that depend on the port.
    """
    port = free_port_block()
    if listener_for_port is not None:
        gateway_keys["listener"] = listener_for_port(port)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"gateway-{port}.yaml"
    # JSON is valid YAML, and keeps the harness free of a YAML writer.
    config = gateway_config(upstream_bootstrap, port, cluster=cluster, **gateway_keys)
    config_path.write_text(json.dumps(config, indent=2))
    log_path = workdir / f"gateway-{port}.log"
    with log_path.open("wb") as log_file:
        # GATEWAY_PROFILE=<dir>: run the gateway under cProfile (written when it stops).
        profile_dir = os.environ.get("GATEWAY_PROFILE")
        profiler = ["-m", "cProfile", "-o", f"{profile_dir}/gateway-{port}.prof"]
        process = subprocess.Popen(
            [
                sys.executable,
                *(profiler if profile_dir else []),
                "-m",
                "gateway.cli",
                "run",
                "--config",
                str(config_path),
                *cli_args,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    gateway = RunningGateway(process, f"127.0.0.1:{port}", log_path, config_path)
    try:
        if wait_for_brokers:
            gateway.wait_for_event(lambda e: e.get("event") == "brokers_discovered", timeout=60)
        else:
            gateway.wait_for_event(lambda e: e.get("event") == "gateway_started", timeout=60)
        yield gateway
    finally:
        gateway.stop()
        print(f"gateway log: {log_path}")
