"""The gateway process: every virtual cluster's listeners in one nursery, until a signal.

SIGHUP reloads the configuration file (``kafka-gateway reload`` sends it). A new
file that does not validate is rejected with the same line-precise errors as at
start-up, and the running configuration stays in force; so does any other failure
of a reload, which is logged and never ends the process.

SIGHUP, SIGINT and SIGTERM arrive blocked (``gateway.cli`` blocks them first thing,
and workers inherit the supervisor's mask); they are unblocked only once Trio's
signal receiver is installed, so one sent during start-up is handled, not fatal.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import structlog
import trio

from codec import api_versions
from gateway.cluster import VirtualCluster
from gateway.decision_threads import freeze_start_up_objects
from gateway.workers import HANDLED_SIGNALS, block_handled_signals, unblock_handled_signals
from policies.authorization.messages import preload_request_decoders
from policies.config import GatewayConfig
from policies.config_loader import ConfigError, load_config

log = structlog.get_logger("gateway.server")


async def serve(
    config: GatewayConfig,
    *,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[list[VirtualCluster]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run all virtual clusters; ``started()`` with them once every bootstrap port is bound."""
    clusters = [VirtualCluster(vc, config, reuse_port=reuse_port) for vc in config.virtual_clusters]
    async with trio.open_nursery() as nursery:
        for cluster in clusters:
            await nursery.start(cluster.run)
        log.info("gateway_started", virtual_clusters=[c.name for c in clusters])
        task_status.started(clusters)
        if any(vc.authorization is not None for vc in config.virtual_clusters):
            nursery.start_soon(_preload_request_decoders)


async def _preload_request_decoders() -> None:
    """Compile the checked-request decoders off the event loop (see the function)."""
    started = time.monotonic()
    prepared = await trio.to_thread.run_sync(
        preload_request_decoders, api_versions.gateway_version_ranges(), abandon_on_cancel=True
    )
    freeze_start_up_objects()
    log.info(
        "request_decoders_preloaded",
        request_classes=prepared,
        duration_s=round(time.monotonic() - started, 2),
    )


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """Where the configuration comes from: a file, and the directory its relative
    paths resolve against (default: the file's own; a worker reads the supervisor's
    copy of the file and passes the original's directory)."""

    path: str
    base_dir: str | None = None

    def load(self) -> GatewayConfig:
        base_dir = Path(self.base_dir) if self.base_dir is not None else None
        return load_config(self.path, base_dir=base_dir)


def reload_config(clusters: list[VirtualCluster], config_file: ConfigFile | str) -> bool:
    """Re-read the config file and apply what can change at run time; False if rejected."""
    if isinstance(config_file, str):
        config_file = ConfigFile(config_file)
    try:
        new = config_file.load()
    except ConfigError as exc:
        log.error(
            "config_reload_rejected",
            file=config_file.path,
            problems=[str(p) for p in exc.problems],
            action="the running configuration stays in force",
        )
        return False
    except Exception as exc:  # a bug must not let a reload end the process
        log.error(
            "config_reload_failed",
            file=config_file.path,
            error=f"{type(exc).__name__}: {exc}"[:500],
            action="the running configuration stays in force",
            exc_info=True,
        )
        return False
    try:
        return _apply(clusters, new, config_file.path)
    except Exception as exc:
        log.error(
            "config_reload_failed",
            file=config_file.path,
            error=f"{type(exc).__name__}: {exc}"[:500],
            action="parts of the new configuration may not be in force; reload again",
            exc_info=True,
        )
        return False


def _apply(clusters: list[VirtualCluster], new: GatewayConfig, config_path: str) -> bool:
    running = {c.name: c for c in clusters}
    wanted = {vc.name for vc in new.virtual_clusters}
    needs_restart = [f"virtual cluster {name} added" for name in sorted(wanted - running.keys())]
    needs_restart += [f"virtual cluster {name} removed" for name in sorted(running.keys() - wanted)]
    for vc in new.virtual_clusters:
        cluster = running.get(vc.name)
        if cluster is not None:
            needs_restart += [f"{vc.name}: {key}" for key in cluster.reconfigure(vc)]
    log.info("config_reloaded", file=config_path, virtual_clusters=sorted(wanted & running.keys()))
    if needs_restart:
        log.warning("config_reload_needs_restart", changes=needs_restart)
    return True


async def serve_until_signalled(
    config: GatewayConfig,
    reuse_port: bool = False,
    config_file: ConfigFile | str | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then close every connection and exit; SIGHUP reloads."""
    if isinstance(config_file, str):
        config_file = ConfigFile(config_file)
    with trio.open_signal_receiver(*HANDLED_SIGNALS) as signals:
        # Handlers are in place: deliver what arrived during start-up, and what follows;
        # block them again before the handlers go away.
        unblock_handled_signals()
        try:
            await _serve_and_handle(config, reuse_port, config_file, signals)
        finally:
            block_handled_signals()
    log.info("gateway_stopped")


async def _serve_and_handle(
    config: GatewayConfig,
    reuse_port: bool,
    config_file: ConfigFile | None,
    signals: AsyncIterator[int],
) -> None:
    async with trio.open_nursery() as nursery:
        clusters = await nursery.start(partial(serve, config, reuse_port=reuse_port))
        async for signum in signals:
            if signum == signal.SIGHUP:
                if config_file is None:
                    log.warning("config_reload_unavailable", reason="no config file")
                else:
                    reload_config(clusters, config_file)
                continue
            log.info("gateway_stopping", signal=signal.Signals(signum).name)
            nursery.cancel_scope.cancel()
            break
