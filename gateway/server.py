"""The gateway process: every virtual cluster's listeners in one nursery, until a signal.

SIGHUP reloads the configuration file (``kafka-gateway reload`` sends it). A new
file that does not validate is rejected with the same line-precise errors as at
start-up, and the running configuration stays in force.
"""

from __future__ import annotations

import signal
from functools import partial

import structlog
import trio

from gateway.cluster import VirtualCluster
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


def reload_config(clusters: list[VirtualCluster], config_path: str) -> bool:
    """Re-read the config file and apply what can change at run time; False if rejected."""
    try:
        new = load_config(config_path)
    except ConfigError as exc:
        log.error(
            "config_reload_rejected",
            file=config_path,
            problems=[str(p) for p in exc.problems],
            action="the running configuration stays in force",
        )
        return False
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
    config: GatewayConfig, reuse_port: bool = False, config_path: str | None = None
) -> None:
    """Serve until SIGINT or SIGTERM, then close every connection and exit; SIGHUP reloads."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            clusters = await nursery.start(partial(serve, config, reuse_port=reuse_port))
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if config_path is None:
                        log.warning("config_reload_unavailable", reason="no config file")
                    else:
                        reload_config(clusters, config_path)
                    continue
                log.info("gateway_stopping", signal=signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    log.info("gateway_stopped")
