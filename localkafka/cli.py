"""`kafka-gateway local-kafka`: download Kafka once, run a local cluster until Ctrl-C.

`gateway.cli` imports this module only when the subcommand is used, so the gateway's
runtime never loads the development launcher.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType

from localkafka.cluster import DEFAULT_BASE_PORT, DEFAULT_FEATURES, LocalKafkaCluster
from localkafka.distribution import (
    KAFKA_VERSION,
    KafkaDistError,
    bootstrap_checkpoint,
    ensure_distribution,
)
from localkafka.errors import LocalKafkaError


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


def main(argv: Sequence[str], prog: str = "local-kafka") -> int:
    """Parse `argv` (the arguments after the subcommand) and run the cluster."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Download (once) and run a local Apache Kafka cluster in KRaft mode."
    )
    add_local_kafka_arguments(parser)
    return run_local_kafka(parser.parse_args(argv))


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
