"""The gateway process: every virtual cluster's listeners in one nursery, until a signal."""

from __future__ import annotations

import signal
from functools import partial

import structlog
import trio

from gateway.cluster import VirtualCluster
from policies.config import GatewayConfig

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


async def serve_until_signalled(config: GatewayConfig, reuse_port: bool = False) -> None:
    """Serve until SIGINT or SIGTERM, then close every connection and exit."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, config, reuse_port=reuse_port))
            async for signum in signals:
                log.info("gateway_stopping", signal=signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    log.info("gateway_stopped")
