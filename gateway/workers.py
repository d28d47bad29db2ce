"""``kafka-gateway run --workers N``: N gateway processes sharing the listening ports.

Python runs one thread of protocol work at a time, so a gateway scales past one core
with processes. Each worker is a complete gateway with the same config; they bind the
same ports with SO_REUSEPORT and the kernel spreads new connections across them.
Because broker ports derive from node ids, every worker agrees on them. The supervisor
only starts, restarts and stops workers, and passes SIGHUP (reload) on to them; it
never touches client traffic.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

import structlog

log = structlog.get_logger("gateway.workers")

#: A worker that dies sooner than this after starting is not restarted (e.g. a port in use).
MIN_HEALTHY_SECONDS = 5.0


def worker_command(config_path: str, worker_id: int, extra_args: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway.cli",
        "run",
        "--config",
        config_path,
        "--worker-id",
        str(worker_id),
        *extra_args,
    ]


class WorkerSupervisor:
    def __init__(self, config_path: str, workers: int, extra_args: Sequence[str] = ()) -> None:
        self.config_path = config_path
        self.count = workers
        self.extra_args = list(extra_args)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.stopping = False

    def _start(self, worker_id: int) -> None:
        command = worker_command(self.config_path, worker_id, self.extra_args)
        self.processes[worker_id] = subprocess.Popen(command)
        self.started_at[worker_id] = time.monotonic()
        log.info("worker_started", worker=worker_id, pid=self.processes[worker_id].pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signum)

    def _forward_reload(self, signum: int, _frame: FrameType | None) -> None:
        """Each worker re-reads the config file itself."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signum)

    def run(self) -> int:
        """Start the workers, restart crashed ones, stop all on SIGINT/SIGTERM."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGHUP, self._forward_reload)
        for worker_id in range(self.count):
            self._start(worker_id)
        exit_code = 0
        while self.processes:
            for worker_id, process in list(self.processes.items()):
                code = process.poll()
                if code is None:
                    continue
                del self.processes[worker_id]
                lived = time.monotonic() - self.started_at[worker_id]
                if self.stopping:
                    continue
                log.warning(
                    "worker_exited", worker=worker_id, exit_code=code, lived_s=round(lived, 1)
                )
                if lived < MIN_HEALTHY_SECONDS:
                    exit_code = code or 1
                    self._on_signal(signal.SIGTERM, None)
                else:
                    self._start(worker_id)
            time.sleep(0.2)
        log.info("workers_stopped", exit_code=exit_code)
        return exit_code
