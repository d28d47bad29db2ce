"""``kafka-gateway`` command line: run, reload, validate, credentials, local-kafka."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _keep_hypothesis_out() -> None:
    """Make ``import hypothesis`` fail in the gateway process.

    kio imports hypothesis whenever it is installed (to register its strategies), and
    importing hypothesis switches Trio's scheduler to deterministic mode for tests,
    which costs about 15% per scheduling step. It is installed wherever the test extras
    are; the gateway never needs it. (A ``None`` entry in ``sys.modules`` makes the
    import raise ImportError, which kio handles.)
    """
    sys.modules.setdefault("hypothesis", None)  # type: ignore[arg-type]


def _run(args: argparse.Namespace) -> int:
    _keep_hypothesis_out()  # before anything can import kio
    # Then at once: a reload or stop signal that arrives before its handler is installed
    # stays pending instead of killing the process (SIGHUP's default action).
    from gateway.workers import EXIT_START_FAILED, block_handled_signals

    block_handled_signals()
    import trio

    from gateway.logs import configure_logging
    from gateway.net import ListenError
    from gateway.server import ConfigFile, serve_until_signalled
    from policies.config_loader import ConfigError

    is_worker = args.worker_id is not None
    start_failed = EXIT_START_FAILED if is_worker else 1
    config_file = ConfigFile(args.config, args.config_base_dir)
    try:
        config = config_file.load()
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return start_failed
    configure_logging(config.log.format, args.log_level or config.log.level)
    if args.workers > 1:
        from gateway.workers import WorkerSupervisor

        extra = ["--log-level", args.log_level] if args.log_level else []
        return WorkerSupervisor(args.config, args.workers, extra, pid_file=args.pid_file).run()
    if args.pid_file and not is_worker:
        # Signals are blocked until serve_until_signalled handles them, so a reload
        # sent as soon as this file exists is held, not fatal.
        from pathlib import Path

        Path(args.pid_file).write_text(f"{os.getpid()}\n")
    if is_worker:
        import structlog

        structlog.contextvars.bind_contextvars(worker=args.worker_id)
    failures: list[BaseException] = []
    try:
        trio.run(serve_until_signalled, config, is_worker, config_file)
    except* ListenError as group:
        failures += _leaf_exceptions(group)
    for failure in failures:
        print(f"kafka-gateway: {failure}", file=sys.stderr)
    return start_failed if failures else 0


def _leaf_exceptions(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaf_exceptions(inner)]
    return [exc]


def _reload(args: argparse.Namespace) -> int:
    """Validate the new file here first (same errors as ``validate``), then send SIGHUP."""
    import signal

    from policies.config_loader import run_validate

    if args.config is not None and run_validate(args.config) != 0:
        print("kafka-gateway: not reloading: the new configuration is invalid", file=sys.stderr)
        return 1
    try:
        pid = args.pid if args.pid is not None else _read_pid(args.pid_file)
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"kafka-gateway: cannot signal the gateway: {exc}", file=sys.stderr)
        return 1
    print(f"kafka-gateway: asked process {pid} to reload its configuration")
    return 0


def _read_pid(pid_file: str) -> int:
    from pathlib import Path

    return int(Path(pid_file).read_text().strip())


def _validate(args: argparse.Namespace) -> int:
    from policies.config_loader import run_validate

    return run_validate(args.file)


LOCAL_KAFKA = "local-kafka"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from gateway import credentials_cli

    parser = argparse.ArgumentParser(
        prog="kafka-gateway", description="A Kafka wire-protocol gateway."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the gateway")
    run.add_argument("--config", "-c", required=True, help="YAML configuration file")
    run.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override log.level"
    )
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="worker processes sharing the ports (SO_REUSEPORT); default 1",
    )
    run.add_argument(
        "--pid-file", help="write the process id here, for `kafka-gateway reload --pid-file`"
    )
    run.add_argument("--worker-id", type=int, help=argparse.SUPPRESS)
    # Workers read the supervisor's copy of the file; relative paths in it resolve
    # against the original file's directory.
    run.add_argument("--config-base-dir", help=argparse.SUPPRESS)
    run.set_defaults(handler=_run)

    reload = commands.add_parser(
        "reload",
        help="make a running gateway re-read its configuration file (SIGHUP)",
        description=(
            "ACLs, quotas, connection limits and credentials take effect at once; an invalid "
            "file is rejected and the running configuration stays in force."
        ),
    )
    target = reload.add_mutually_exclusive_group(required=True)
    target.add_argument("--pid-file", help="the file given to `run --pid-file`")
    target.add_argument("--pid", type=int, help="process id of the gateway")
    reload.add_argument(
        "--config", "-c", help="check this file before signalling (the gateway reads its own)"
    )
    reload.set_defaults(handler=_reload)

    validate = commands.add_parser(
        "validate", help="check a configuration file and report every error"
    )
    validate.add_argument("file")
    validate.set_defaults(handler=_validate)

    hash_password = commands.add_parser(
        "hash-password", help="print a salted hash of a password for the `users` of PLAIN"
    )
    credentials_cli.add_hash_password_arguments(hash_password)
    hash_password.set_defaults(handler=credentials_cli.run_hash_password)

    scram = commands.add_parser(
        "scram-credential", help="print the stored SCRAM credential of a password"
    )
    credentials_cli.add_scram_credential_arguments(scram)
    scram.set_defaults(handler=credentials_cli.run_scram_credential)

    # Listed for --help only: main() hands `local-kafka` to the development package
    # before parsing, so the gateway's runtime never imports it.
    commands.add_parser(
        LOCAL_KAFKA,
        help="download (once) and run a local Apache Kafka cluster in KRaft mode",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [LOCAL_KAFKA]:
        from localkafka.cli import main as local_kafka_main

        return local_kafka_main(argv[1:], prog=f"kafka-gateway {LOCAL_KAFKA}")
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
