"""``kafka-gateway run --workers N``: N gateway processes sharing the listening ports.

Python runs one thread of protocol work at a time, so a gateway scales past one core
with processes. Each worker is a complete gateway with the same config; they bind the
same ports with SO_REUSEPORT and the kernel spreads new connections across them.
Because broker ports derive from node ids, every worker agrees on them. The supervisor
only starts, restarts and stops workers, and passes reloads on to them; it never
touches client traffic.

What a small event may do, and what it may not:

* **Signals are never lost or fatal.** The supervisor keeps SIGHUP, SIGINT and SIGTERM
  blocked for its whole life and takes them with ``sigtimedwait``; workers inherit the
  blocked mask through fork/exec and unblock only once their handlers are installed
  (:func:`gateway.server.serve_until_signalled`), so a reload that arrives while a
  worker is still starting waits for it instead of killing it.
* **Workers only ever see a configuration that validated.** The supervisor keeps a
  private copy of the last good file (:class:`LastGoodConfig`); workers start and
  reload from that copy. On SIGHUP the supervisor validates the file on disk first: a
  rejected file is logged and never reaches a worker, so a later restart still gets the
  last good configuration.
* **One worker's crashes are its own.** A worker that exits is restarted alone, after a
  delay that doubles with each quick exit in a row (:func:`restart_delay`); the others
  keep serving. The supervisor exits only on SIGINT/SIGTERM, or when every worker of
  the first start fails to start (exit code :data:`EXIT_START_FAILED`: invalid
  configuration, ports in use), since retrying a misconfiguration would only hide it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from policies.config_loader import ConfigError, ConfigProblem, parse_config_bytes

log = structlog.get_logger("gateway.workers")

#: Signals the supervisor takes itself; workers inherit them blocked.
HANDLED_SIGNALS: Final = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM})
#: A worker's exit code when it could not start (configuration, ports): ``EX_CONFIG``.
EXIT_START_FAILED: Final = 78
#: A worker that ran this long before exiting was healthy: its backoff starts over.
HEALTHY_AFTER_S: Final = 30.0
#: First restart delay, doubled for each further quick exit in a row, up to the cap.
BACKOFF_INITIAL_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
#: How long stopping workers may take before they are killed.
STOP_GRACE_S: Final = 30.0
#: How often the supervisor looks at its workers when no signal arrives.
POLL_S: Final = 0.1


def restart_delay(quick_exits: int) -> float:
    """Seconds before restarting a worker after ``quick_exits`` exits in a row (>= 1)."""
    return min(BACKOFF_INITIAL_S * 2.0 ** (quick_exits - 1), BACKOFF_MAX_S)


def block_handled_signals() -> None:
    """Hold SIGHUP/SIGINT/SIGTERM pending until someone is ready to handle them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)


def unblock_handled_signals() -> None:
    """Deliver pending and future SIGHUP/SIGINT/SIGTERM (call once handlers are installed)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)


def worker_command(
    config_path: str, base_dir: str, worker_id: int, extra_args: Sequence[str]
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway.cli",
        "run",
        "--config",
        config_path,
        "--config-base-dir",
        base_dir,
        "--worker-id",
        str(worker_id),
        *extra_args,
    ]


class LastGoodConfig:
    """A private copy of the last configuration file that validated.

    Workers read the copy (``path``), with relative paths in it resolved against the
    original file's directory (``base_dir``). The copy lives in a directory only this
    user can read, since the file may hold secrets.
    """

    def __init__(self, source: str | Path) -> None:
        self.source = Path(source).absolute()
        self.base_dir = self.source.parent
        self._dir = Path(tempfile.mkdtemp(prefix="kafka-gateway-config-"))
        self.path = self._dir / "last-good.yaml"

    def refresh(self) -> int:
        """Validate the file on disk and make it the last good one; its virtual clusters.

        Raises :class:`~policies.config_loader.ConfigError` (the copy is unchanged).
        """
        try:
            data = self.source.read_bytes()
        except OSError as exc:
            problem = ConfigProblem(str(self.source), "", None, None, f"cannot read file: {exc}")
            raise ConfigError([problem]) from None
        config = parse_config_bytes(data, str(self.source), base_dir=self.base_dir)
        candidate = self._dir / "candidate.yaml"
        candidate.write_bytes(data)
        os.replace(candidate, self.path)  # atomic: a starting worker sees old or new
        return len(config.virtual_clusters)

    def remove(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class _Worker:
    worker_id: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    quick_exits: int = 0
    restart_at: float | None = None
    #: The worker's first run ended with EXIT_START_FAILED.
    first_start_failed: bool = False


class WorkerSupervisor:
    def __init__(
        self,
        config_path: str,
        workers: int,
        extra_args: Sequence[str] = (),
        *,
        pid_file: str | None = None,
    ) -> None:
        self.config_path = config_path
        self.count = workers
        self.extra_args = list(extra_args)
        self.pid_file = pid_file
        self.workers = {i: _Worker(i) for i in range(workers)}
        self.config = LastGoodConfig(config_path)

    def run(self) -> int:
        """Start the workers, restart exited ones, stop all on SIGINT/SIGTERM."""
        block_handled_signals()
        try:
            return self._supervise()
        finally:
            self.config.remove()

    def _supervise(self) -> int:
        try:
            self.config.refresh()
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return 1
        if self.pid_file:  # only now: every signal sent from here on is taken
            Path(self.pid_file).write_text(f"{os.getpid()}\n")
        for worker in self.workers.values():
            self._start(worker)
        while True:
            received = signal.sigtimedwait(HANDLED_SIGNALS, POLL_S)
            if received is not None and received.si_signo != signal.SIGHUP:
                return self._stop(received.si_signo)
            if received is not None:
                self._reload()
            now = time.monotonic()
            for worker in self.workers.values():
                self._check(worker, now)
            if all(w.first_start_failed for w in self.workers.values()):
                log.error(
                    "workers_failed_to_start",
                    workers=self.count,
                    action="stopping: no worker could start (see their errors above)",
                )
                self._stop(signal.SIGTERM)
                return 1

    def _start(self, worker: _Worker) -> None:
        command = worker_command(
            str(self.config.path), str(self.config.base_dir), worker.worker_id, self.extra_args
        )
        # Popen forks with this thread's mask: the child starts with our signals blocked.
        worker.process = subprocess.Popen(command)
        worker.started_at = time.monotonic()
        worker.starts += 1
        worker.restart_at = None
        log.info("worker_started", worker=worker.worker_id, pid=worker.process.pid)

    def _check(self, worker: _Worker, now: float) -> None:
        if worker.process is None:
            if worker.restart_at is not None and now >= worker.restart_at:
                self._start(worker)
            return
        code = worker.process.poll()
        if code is None:
            return
        lived = now - worker.started_at
        worker.process = None
        if worker.starts == 1 and code == EXIT_START_FAILED:
            worker.first_start_failed = True
        worker.quick_exits = 1 if lived >= HEALTHY_AFTER_S else worker.quick_exits + 1
        log.warning(
            "worker_exited",
            worker=worker.worker_id,
            exit_code=code,
            signal=signal.Signals(-code).name if code < 0 else None,
            lived_s=round(lived, 1),
        )
        delay = restart_delay(worker.quick_exits)
        worker.restart_at = now + delay
        log.warning(
            "worker_restart_scheduled",
            worker=worker.worker_id,
            delay_s=delay,
            exits_in_a_row=worker.quick_exits,
        )

    def _reload(self) -> None:
        """Validate the file on disk; only a good one replaces the copy workers read."""
        try:
            clusters = self.config.refresh()
        except ConfigError as exc:
            log.error(
                "config_reload_rejected",
                file=str(self.config.source),
                problems=[str(p) for p in exc.problems],
                action="the running configuration stays in force, also for restarted workers",
            )
            return
        log.info("config_reload_forwarded", file=str(self.config.source), virtual_clusters=clusters)
        for worker in self.workers.values():
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGHUP)

    def _stop(self, signum: int) -> int:
        log.info("workers_stopping", signal=signal.Signals(signum).name)
        running = [w.process for w in self.workers.values() if w.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signum)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in running:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                log.error("worker_killed", pid=process.pid, reason="did not stop in time")
                process.kill()
                process.wait()
        log.info("workers_stopped", exit_code=0)
        return 0
