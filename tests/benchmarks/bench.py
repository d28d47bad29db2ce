"""Side-by-side benchmark: Apache Kafka directly vs. through the gateway (`make bench`).

    .venv/bin/python tests/benchmarks/bench.py [--quick] [--reps N] [--records N] ...
    make bench BENCH_JSON=out.json       # also write the results as JSON

One run starts a local Kafka (C2 JIT, not the tests' fast-start mode), warms it up until
its produce rate settles, and then, in each repetition, measures every test directly
and through one gateway process (no `--workers`), alternating which side goes first:

1. produce throughput: kafka-producer-perf-test, 1 KiB records, acks=all, unthrottled;
2. consume throughput: kafka-consumer-perf-test over the same (direct-produced) data;
3. latency at a fixed rate (10,000 records/s): p50/p99/p99.9 from a steady-state probe
   (latency_probe.py: librdkafka, start-up discarded; the headline `added_p99_ms`) and
   from kafka-producer-perf-test, whose percentiles include its JVM's start-up;
4. small requests: 50 pipelined connections of ApiVersions+Metadata from several
   generator processes (small_requests.py; their CPU is reported next to the
   gateway's, the broker's and the whole machine's, to show what the bottleneck is);
5. the gateway's CPU seconds (whole process tree) per phase, as millicores per MB/s,
   and its peak RSS;
8. produce again through a gateway with `--workers N` (default 2).

Once per run: 6. the codec's Metadata rewrite micro-benchmark (bench_codec.py), the
event-loop stall of worst-case checked requests (stall.py), and the µs each check of
issue 9 costs per typical checked request (checked_requests.py), and
7. idle connections (idle_connections.py, `--idle-connections`, default 10,000): each
sends one ApiVersions and then idles; reported: the gateway's RSS, and the broker's
open files, since the gateway opens one upstream connection per client connection. The
gateway needs two descriptors per connection; if RLIMIT_NOFILE cannot be raised far
enough (no CAP_SYS_RESOURCE), the count is capped and the report says so.

`--policies typical` puts a typical policy set on the gateway side (policy_sets.py: the
listener requires SASL SCRAM-SHA-512, so produce, consume, latency and workers clients
authenticate first, and ACL rules, quotas and connection limits are on); the direct
side stays unauthenticated plaintext, so the policies' cost is the difference between a
`--policies none` (the default) and a `typical` run. With `typical`, small requests are
skipped (their generator does not authenticate) and idle connections use a gateway
without policies. `--policies acl` puts the same ACLs and quotas on a plain listener (for
`User:ANONYMOUS`), so every test, small requests included, shows their cost alone.

`--only produce,small,...` runs a subset; `--profile DIR` records py-spy profiles of the
gateway (profiling.py). Results: a table on stdout (median [min..max] over repetitions;
ratios and differences are paired per repetition) and, when BENCH_JSON is set, the same
as JSON. Everything the benchmark starts (Kafka, gateways, tools, load generators,
probes) is stopped on exit, Ctrl-C, SIGTERM or error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `tests.*` importable
    sys.path.insert(0, str(REPO_ROOT))

import psutil  # noqa: E402

from codec.rewrite import rewrite_response  # noqa: E402
from localkafka.cluster import CONTROLLER_PORT_OFFSET, LocalKafkaCluster  # noqa: E402
from localkafka.distribution import stderr_progress  # noqa: E402
from localkafka.probes import metadata_broker_ids, port_is_free  # noqa: E402
from tests.benchmarks import bench_codec, kafka_perf  # noqa: E402
from tests.benchmarks.bench_report import (  # noqa: E402
    DIRECT,
    GATEWAY,
    Samples,
    format_table,
    headline,
    machine_info,
    workers_side,
)
from tests.benchmarks.checked_requests import format_checked, measure_checked  # noqa: E402
from tests.benchmarks.gateway_process import (  # noqa: E402
    BenchGateway,
    PhaseUsage,
    bench_gateway,
    workers_option_supported,
)
from tests.benchmarks.idle_connections import (  # noqa: E402
    open_idle_connections,
    raise_open_files_limit,
)
from tests.benchmarks.latency_probe import probe_in_subprocess  # noqa: E402
from tests.benchmarks.policy_sets import POLICY_SETS, PolicySet, policy_set  # noqa: E402
from tests.benchmarks.profiling import profiled  # noqa: E402
from tests.benchmarks.small_requests import api_versions_request, run_load  # noqa: E402
from tests.benchmarks.stall import format_stalls, measure_stalls  # noqa: E402

KAFKA_BASE_PORT = 19292  # away from `make run` (19092) and the test suite (29092+, 39092+)
HOST = "127.0.0.1"
MB = 1024 * 1024  # the perf tools' "MB"
WARMUP_TOLERANCE = 0.05  # warm once a round is no more than 5% faster than the one before
IDLE_FD_MARGIN = 64  # descriptors the gateway needs besides its connections
#: Other processes' CPU above which a measurement is flagged as disturbed (and redone).
NOISY_OTHER_CORES = 0.2


PER_REPETITION_TESTS = ("produce", "consume", "latency", "small")
ALL_TESTS = (*PER_REPETITION_TESTS, "workers", "idle")


@dataclass(frozen=True)
class Settings:
    """Everything that shapes a run; written into the JSON so results are reproducible."""

    reps: int = 3
    records: int = 1_000_000
    record_size: int = 1024
    partitions: int = 6
    brokers: int = 1
    latency_records: int = 150_000
    latency_rate: int = 10_000
    latency_warmup_s: float = 3.0
    latency_seconds: float = 15.0
    small_connections: int = 50
    small_processes: int = 2
    small_depth: int = 4
    small_seconds: float = 10.0
    idle_connections: int = 10_000
    workers: int = 2
    warmup_records: int = 300_000
    warmup_rounds: int = 10
    policies: str = "none"
    quick: bool = False
    only: tuple[str, ...] = ALL_TESTS
    quiet_wait_s: float = 120.0
    noisy_retries: int = 2
    profile_dir: str | None = None


QUICK = {
    "reps": 1,
    "records": 100_000,
    "latency_records": 20_000,
    "latency_warmup_s": 2.0,
    "latency_seconds": 3.0,
    "small_seconds": 3.0,
    "idle_connections": 1_000,
    "warmup_records": 50_000,
    "warmup_rounds": 2,
    "quiet_wait_s": 10.0,
    "noisy_retries": 0,
}


def parse_args(argv: list[str] | None) -> Settings:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        description="Benchmark Kafka directly and through the gateway, side by side.",
        epilog="Set BENCH_JSON=path to also write the results as JSON.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run of about a minute: " + str(QUICK)
    )
    parser.add_argument("--reps", type=int, help=f"repetitions (default {defaults.reps})")
    parser.add_argument(
        "--records", type=int, help=f"records per throughput run (default {defaults.records:,})"
    )
    parser.add_argument(
        "--brokers", type=int, default=defaults.brokers, help="local Kafka brokers (default 1)"
    )
    parser.add_argument(
        "--idle-connections",
        type=int,
        metavar="N",
        help=f"idle connections to hold open through the gateway; 0 skips the test "
        f"(default {defaults.idle_connections:,}, --quick {QUICK['idle_connections']:,})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        metavar="N",
        help="also measure produce through a gateway with --workers N; 1 skips (default 2)",
    )
    parser.add_argument(
        "--small-connections",
        type=int,
        default=defaults.small_connections,
        help="connections of the small-request test (default 50)",
    )
    parser.add_argument(
        "--small-processes",
        type=int,
        default=defaults.small_processes,
        help="load generator processes of the small-request test (default 2)",
    )
    parser.add_argument(
        "--small-depth",
        type=int,
        default=defaults.small_depth,
        help="requests in flight per connection in the small-request test (default 4; "
        "Java clients allow 5)",
    )
    parser.add_argument(
        "--policies",
        choices=POLICY_SETS,
        default="none",
        help="policies on the gateway side: 'none' (default), 'typical' (SASL SCRAM-SHA-512 "
        "logins, ACL rules, quotas) or 'acl' (the same ACLs and quotas without SASL); the "
        "direct side has none",
    )
    parser.add_argument(
        "--only",
        default=",".join(ALL_TESTS),
        metavar="TESTS",
        help="comma-separated subset of " + ",".join(ALL_TESTS) + " (default: all)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        metavar="S",
        help="before each measurement, wait up to S seconds while other processes use "
        f"more than {NOISY_OTHER_CORES} cores (default {defaults.quiet_wait_s:g}, "
        f"--quick {QUICK['quiet_wait_s']:g})",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record py-spy profiles of the gateway during produce, consume and small "
        "requests into DIR (raw collapsed stacks + a top-functions summary); perturbs timing",
    )
    args = parser.parse_args(argv)
    only = tuple(name for name in args.only.split(",") if name)
    unknown = set(only) - set(ALL_TESTS)
    if unknown:
        parser.error(f"--only: unknown tests {sorted(unknown)}; choose from {ALL_TESTS}")
    overrides: dict[str, Any] = dict(QUICK) if args.quick else {}
    for name in ("reps", "records", "idle_connections", "quiet_wait"):
        if getattr(args, name) is not None:
            overrides["quiet_wait_s" if name == "quiet_wait" else name] = getattr(args, name)
    overrides.update(
        brokers=args.brokers,
        workers=args.workers,
        small_connections=args.small_connections,
        small_processes=args.small_processes,
        small_depth=args.small_depth,
        policies=args.policies,
        quick=args.quick,
        only=only,
        profile_dir=args.profile,
    )
    settings = replace(defaults, **overrides)
    if settings.reps < 1 or settings.records < 1 or settings.brokers < 1:
        parser.error("--reps, --records and --brokers must be at least 1")
    return settings


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the table."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- set-up


def _raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def free_kafka_base_port(brokers: int) -> int:
    """A base port whose broker and controller ports are all free."""
    for base in range(KAFKA_BASE_PORT, KAFKA_BASE_PORT + 90, 10):
        ports = [base + i for i in range(brokers)]
        ports += [base + CONTROLLER_PORT_OFFSET + i for i in range(min(brokers, 3))]
        if all(port_is_free(port) for port in ports):
            return base
    raise RuntimeError(f"no free ports for {brokers} Kafka brokers from {KAFKA_BASE_PORT}")


def metadata_rewrite_us() -> float:
    """bench_codec's Metadata rewrite (100 topics x 6 partitions, 3 brokers), best of 5."""
    body = bench_codec.metadata_body()
    return bench_codec._time(
        "Metadata v12 rewrite, 100 topics x 6 partitions, 3 brokers",
        lambda: rewrite_response(3, 12, body, bench_codec._mapper),
        len(body),
    )


@dataclass
class Bench:
    """What every test needs: the settings, the cluster, where logs go, the samples."""

    settings: Settings
    cluster: LocalKafkaCluster
    workdir: Path
    samples: Samples
    rep: int = 0
    #: Measurements during which other processes used more than NOISY_OTHER_CORES.
    noisy: list[str] = field(default_factory=list)
    quiet_waited_s: float = 0.0
    retried: int = 0

    def wait_until_quiet(self) -> None:
        self.quiet_waited_s += wait_until_quiet(self.settings.quiet_wait_s)

    def profile(
        self, gateway: BenchGateway | None, phase: str
    ) -> contextlib.AbstractContextManager[None]:
        """A py-spy recording of the gateway during `phase` when `--profile DIR` is given."""
        out = self.settings.profile_dir
        if gateway is None or out is None:
            return contextlib.nullcontext()
        raw = Path(out) / f"{phase}-w{gateway.workers}-r{self.rep}.txt"
        return profiled(gateway.pid, raw, subprocesses=gateway.workers > 1)

    @property
    def policy(self) -> PolicySet:
        return policy_set(self.settings.policies)

    def skips_small_requests(self) -> bool:
        """The small-request generator speaks no SASL, so it cannot use an auth listener."""
        return self.policy.authenticated

    def java_props(self, gateway: BenchGateway | None) -> dict[str, str]:
        """Client settings for the Java tools: the policy set's on the gateway side only."""
        return self.policy.java_props if gateway else {}

    def librdkafka_config(self, gateway: BenchGateway | None) -> dict[str, str]:
        return self.policy.librdkafka if gateway else {}

    @property
    def direct(self) -> str:
        return self.cluster.bootstrap_servers

    @property
    def megabytes(self) -> float:
        return self.settings.records * self.settings.record_size / MB


@dataclass
class Window:
    """CPU used during one measured block: the gateway tree, the brokers, the machine.

    On a two-core machine the gateway, the broker and the client share the CPUs, so a
    gateway below one core may be starved rather than idle: machine busy cores near
    `nproc` say the machine, not the gateway, is the limit.
    """

    wall_s: float = 0.0
    gateway: PhaseUsage | None = None
    broker_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    #: CPU used by processes that are neither the benchmark's nor kernel threads.
    other_cpu_s: float = 0.0

    def cores(self, cpu_s: float) -> float:
        return cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def machine_busy_seconds(include_interrupts: bool = True) -> float:
    """CPU seconds all cores spent busy since boot, system-wide (steal and idle excluded).

    Without `include_interrupts` only process time counts: loopback networking runs in
    softirq, which is charged to no process, so comparing with processes' CPU needs it out.
    """
    times = psutil.cpu_times()
    busy = ["user", "nice", "system"]  # guest time is inside user
    if include_interrupts:
        busy += ["irq", "softirq"]
    return sum(getattr(times, name, 0.0) for name in busy)


def wait_until_quiet(max_wait_s: float, sample_s: float = 1.0) -> float:
    """Wait (at most `max_wait_s`) until other processes use under NOISY_OTHER_CORES.

    The machine may be shared (other people's test runs); starting a measurement while
    something else is busy only produces noise. Returns the seconds waited.
    """
    started = time.monotonic()
    announced = False
    while True:
        before = others_cpu_seconds()
        time.sleep(sample_s)
        others = (others_cpu_seconds() - before) / sample_s
        waited = time.monotonic() - started
        if others < NOISY_OTHER_CORES or waited >= max_wait_s:
            if announced:
                log(f"  ... waited {waited:.0f}s for other processes ({others:.2f} cores now)")
            return waited
        if not announced:
            log(f"  other processes use {others:.2f} cores; waiting up to {max_wait_s:.0f}s")
            announced = True


def kernel_threads_cpu_seconds() -> float:
    """CPU seconds of kernel threads (the children of kthreadd, pid 2).

    They do work the benchmark causes, such as writing Kafka's logs back to disk, and
    are left out of "other processes" so that it is not mistaken for other users.
    """
    total = 0.0
    for process in psutil.process_iter(["ppid", "cpu_times"]):
        if process.info["ppid"] == 2 and process.info["cpu_times"] is not None:
            times = process.info["cpu_times"]
            total += times.user + times.system
    return total


def others_cpu_seconds() -> float:
    """A counter of CPU seconds used by processes that are neither ours nor the kernel's."""
    busy = machine_busy_seconds(include_interrupts=False)
    return busy - own_cpu_seconds() - kernel_threads_cpu_seconds()


def own_cpu_seconds() -> float:
    """CPU seconds of this process and every process it started (live or reaped).

    Reaped children (finished Java tools, generators) are in `os.times()`; live ones
    (brokers, gateways) are read directly. The machine's busy time minus this is what
    other users of the machine took during a measurement.
    """
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
    return total


def broker_cpu_seconds(cluster: LocalKafkaCluster) -> float:
    total = 0.0
    for node_id in cluster.running_node_ids():
        pid = cluster.pid(node_id)
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
    return total


@contextlib.contextmanager
def measured(bench: Bench, gateway: BenchGateway | None) -> Iterator[Window]:
    """Fill a `Window` for the block (the gateway part only on the gateway side)."""
    window = Window()
    broker_before, busy_before = broker_cpu_seconds(bench.cluster), machine_busy_seconds()
    others_before = others_cpu_seconds()
    started = time.monotonic()
    phase = gateway.monitor.phase() if gateway else contextlib.nullcontext([])
    with phase as usage:
        yield window
    window.wall_s = time.monotonic() - started
    window.broker_cpu_s = broker_cpu_seconds(bench.cluster) - broker_before
    window.machine_busy_s = machine_busy_seconds() - busy_before
    window.other_cpu_s = max(0.0, others_cpu_seconds() - others_before)
    window.gateway = usage[0] if usage else None


def record_window(bench: Bench, phase: str, side: str, window: Window, mb: float | None) -> str:
    """Add a window's CPU figures to the samples; returns them as text for the progress log."""
    add = bench.samples.add
    add(f"{phase}_broker_cores", side, window.cores(window.broker_cpu_s))
    add(f"{phase}_machine_cores", side, window.cores(window.machine_busy_s))
    add("other_processes_cores", side, window.cores(window.other_cpu_s))
    if window.cores(window.other_cpu_s) > NOISY_OTHER_CORES:
        bench.noisy.append(f"{phase} {side} (rep {bench.rep + 1})")
    text = f"broker {window.cores(window.broker_cpu_s):.2f}"
    text += f", machine {window.cores(window.machine_busy_s):.2f}"
    text += f", others {window.cores(window.other_cpu_s):.2f} cores"
    if window.gateway is not None:
        cpu = window.gateway.cpu_s
        add(f"{phase}_gateway_cpu_s", side, cpu)
        add(f"{phase}_gateway_cores", side, window.cores(cpu))
        if mb:
            add(f"{phase}_millicores_per_mb_s", side, 1000 * cpu / mb)
        text += f", gateway {window.cores(cpu):.2f} cores ({cpu:.1f} s)"
    return text


# --------------------------------------------------------------------------- measurements


def measure_produce(bench: Bench, side: str, gateway: BenchGateway | None, topic: str) -> None:
    """1 (and 8): unthrottled producer-perf, acks=all, 1 KiB records."""
    s = bench.settings
    bench.wait_until_quiet()
    bootstrap = gateway.bootstrap if gateway else bench.direct
    with bench.profile(gateway, "produce"), measured(bench, gateway) as window:
        result = kafka_perf.produce(
            bootstrap,
            topic,
            s.records,
            record_size=s.record_size,
            producer_props=bench.java_props(gateway),
        )
    bench.samples.add("produce_mb_s", side, result.mb_per_sec)
    bench.samples.add("produce_records_s", side, result.records_per_sec)
    cpu = record_window(bench, "produce", side, window, bench.megabytes)
    log(f"  produce  {side:<18} {result.mb_per_sec:8.2f} MB/s; {cpu}")


def measure_consume(bench: Bench, side: str, gateway: BenchGateway | None, topic: str) -> None:
    """2: consumer-perf from the earliest offset, fresh group per run."""
    bench.wait_until_quiet()
    bootstrap = gateway.bootstrap if gateway else bench.direct
    group = f"bench-{side}-{time.time_ns()}"
    with bench.profile(gateway, "consume"), measured(bench, gateway) as window:
        result = kafka_perf.consume(
            bootstrap,
            topic,
            bench.settings.records,
            group=group,
            consumer_props=bench.java_props(gateway),
        )
    bench.samples.add("consume_mb_s", side, result.fetch_mb_per_sec)
    bench.samples.add("consume_total_mb_s", side, result.mb_per_sec)
    cpu = record_window(bench, "consume", side, window, result.mb)
    log(f"  consume  {side:<18} {result.fetch_mb_per_sec:8.2f} MB/s (fetch); {cpu}")


def measure_latency(bench: Bench, side: str, gateway: BenchGateway | None, topic: str) -> None:
    """3: produce at a fixed rate; send-to-acknowledgement latency percentiles.

    Twice: with kafka-producer-perf-test, whose percentiles include its JVM's start-up
    (see latency_probe.py), and with the steady-state probe, which is the headline.
    """
    s = bench.settings
    bench.wait_until_quiet()
    bootstrap = gateway.bootstrap if gateway else bench.direct
    tool = kafka_perf.produce(
        bootstrap,
        topic,
        s.latency_records,
        record_size=s.record_size,
        throughput=s.latency_rate,
        producer_props=bench.java_props(gateway),
    )
    bench.samples.add("perf_latency_p50_ms", side, tool.p50_ms)
    bench.samples.add("perf_latency_p99_ms", side, tool.p99_ms)
    bench.samples.add("perf_latency_p999_ms", side, tool.p999_ms)
    bench.samples.add("perf_latency_records_s", side, tool.records_per_sec)
    bench.wait_until_quiet()
    with measured(bench, gateway) as window:
        steady = probe_in_subprocess(
            bootstrap,
            topic,
            rate=s.latency_rate,
            warmup_s=s.latency_warmup_s,
            seconds=s.latency_seconds,
            record_size=s.record_size,
            client_config=bench.librdkafka_config(gateway),
        )
    cpu = record_window(bench, "latency", side, window, None)
    bench.samples.add("latency_p50_ms", side, steady.p50_ms)
    bench.samples.add("latency_p99_ms", side, steady.p99_ms)
    bench.samples.add("latency_p999_ms", side, steady.p999_ms)
    bench.samples.add("latency_records_s", side, steady.records_per_s)
    log(
        f"  latency  {side:<18} steady p50 {steady.p50_ms:.2f} p99 {steady.p99_ms:.2f} "
        f"p99.9 {steady.p999_ms:.2f} ms at {steady.records_per_s:.0f} rec/s; producer-perf "
        f"p50 {tool.p50_ms:.0f} p99 {tool.p99_ms:.0f} p99.9 {tool.p999_ms:.0f} ms; {cpu}"
    )


def measure_small_requests(
    bench: Bench, side: str, gateway: BenchGateway | None, topic: str
) -> None:
    """4: pipelined ApiVersions+Metadata from several generator processes."""
    s = bench.settings
    bench.wait_until_quiet()
    target = gateway.bootstrap if gateway else bench.direct.split(",")[0]
    windows: list[Window] = []

    @contextlib.contextmanager
    def load_window() -> Iterator[None]:
        with bench.profile(gateway, "small"), measured(bench, gateway) as window:
            yield
        windows.append(window)

    result = run_load(
        target,
        topic,
        connections=s.small_connections,
        processes=s.small_processes,
        depth=s.small_depth,
        seconds=s.small_seconds,
        window=load_window,
    )
    bench.samples.add("small_requests_s", side, result.requests_per_s)
    bench.samples.add("small_generator_cores", side, result.generator_cores)
    cpu = record_window(bench, "small", side, windows[0], None)
    text = f"  small    {side:<18} {result.requests_per_s:8.0f} req/s; generators "
    text += f"{result.generator_cores:.2f} cores, {cpu}"
    gateway_usage = windows[0].gateway
    if gateway_usage is not None:
        per_request = gateway_usage.cpu_s / max(result.completed, 1) * 1e6
        bench.samples.add("small_gateway_us_per_request", side, per_request)
        text += f", {per_request:.1f} us gateway CPU/request"
    log(text)


Measurement = Callable[[Bench, str, BenchGateway | None, str], None]


def retry_if_disturbed(
    bench: Bench, measure: Measurement, side: str, gateway: BenchGateway | None, topic: str
) -> None:
    """Run `measure`; if other processes disturbed it, drop its samples and measure again.

    At most `noisy_retries` times; a measurement still disturbed then stays flagged.
    """
    for attempt in range(bench.settings.noisy_retries + 1):
        checkpoint, flagged = bench.samples.checkpoint(), len(bench.noisy)
        measure(bench, side, gateway, topic)
        if len(bench.noisy) == flagged or attempt == bench.settings.noisy_retries:
            return
        log("  ... disturbed by other processes: measuring again")
        bench.samples.rollback(checkpoint)
        del bench.noisy[flagged:]
        bench.retried += 1


def run_repetition(bench: Bench, rep: int) -> None:
    """All per-repetition tests, direct and via one gateway, alternating which goes first."""
    s = bench.settings
    log(f"repetition {rep + 1}/{s.reps}")
    bench.rep = rep
    topics = {
        name: f"bench-r{rep}-{name}-{time.time_ns()}" for name in ("pd", "pg", "pw", "ld", "lg")
    }
    kafka_perf.create_topics(
        bench.direct, list(topics.values()), s.partitions, bench.cluster.replication_factor
    )
    try:
        if set(s.only) & set(PER_REPETITION_TESTS):
            listener = bench.policy.listener
            with bench_gateway(
                bench.workdir, bench.direct, listener=listener, cluster=bench.policy.cluster
            ) as gateway:
                run_side_by_side(bench, rep, gateway, topics)
                bench.samples.add(
                    "gateway_peak_rss_mib", GATEWAY, gateway.monitor.lifetime_peak_rss_mib
                )
        if "workers" in s.only:
            run_workers_produce(bench, topics["pw"])
    finally:
        kafka_perf.delete_topics(bench.direct, list(topics.values()))


def run_side_by_side(bench: Bench, rep: int, gateway: BenchGateway, topics: dict[str, str]) -> None:
    """Tests 1-5 on both sides; odd repetitions start with the gateway to cancel order effects."""
    s = bench.settings
    order = (DIRECT, GATEWAY) if rep % 2 == 0 else (GATEWAY, DIRECT)
    gateways = {DIRECT: None, GATEWAY: gateway}
    if "produce" in s.only:
        for side in order:
            topic = topics["pd" if side == DIRECT else "pg"]
            retry_if_disturbed(bench, measure_produce, side, gateways[side], topic)
    elif "consume" in s.only:  # the consume test needs data
        kafka_perf.produce(bench.direct, topics["pd"], s.records, record_size=s.record_size)
    if "consume" in s.only:
        for side in order:  # both sides read the same, direct-produced batches
            retry_if_disturbed(bench, measure_consume, side, gateways[side], topics["pd"])
    if "latency" in s.only:
        for side in order:
            topic = topics["ld" if side == DIRECT else "lg"]
            retry_if_disturbed(bench, measure_latency, side, gateways[side], topic)
    if "small" in s.only and not bench.skips_small_requests():
        for side in order:
            retry_if_disturbed(bench, measure_small_requests, side, gateways[side], topics["pd"])


def run_workers_produce(bench: Bench, topic: str) -> None:
    """8: produce through a gateway with `--workers N` (N processes sharing the ports)."""
    workers = bench.settings.workers
    if workers <= 1:
        return
    if not workers_option_supported():
        log(f"  produce  {workers} workers: skipped, `kafka-gateway run` has no --workers yet")
        return
    side = workers_side(workers)
    policy = bench.policy
    with bench_gateway(
        bench.workdir,
        bench.direct,
        workers=workers,
        listener=policy.listener,
        cluster=policy.cluster,
    ) as gateway:
        retry_if_disturbed(bench, measure_produce, side, gateway, topic)
        bench.samples.add("gateway_peak_rss_mib", side, gateway.monitor.lifetime_peak_rss_mib)


def warm_up(bench: Bench) -> None:
    """Produce directly until the rate settles, then consume once: JIT warm-up.

    A fresh broker on two cores needs about a million records before C2 has compiled
    its hot paths (the first runs go at a third of the final rate), so rounds repeat
    until one is no more than `WARMUP_TOLERANCE` faster than the one before, at most
    `warmup_rounds` times.
    """
    s = bench.settings
    topic = f"bench-warmup-{time.time_ns()}"
    kafka_perf.create_topics(bench.direct, [topic], s.partitions, bench.cluster.replication_factor)
    try:
        rates: list[float] = []
        for _ in range(s.warmup_rounds):
            result = kafka_perf.produce(
                bench.direct, topic, s.warmup_records, record_size=s.record_size
            )
            rates.append(result.mb_per_sec)
            log(f"warm-up: {s.warmup_records:,} records directly, {result.mb_per_sec:.1f} MB/s")
            if len(rates) >= 2 and rates[-1] <= rates[-2] * (1 + WARMUP_TOLERANCE):
                break
        total = len(rates) * s.warmup_records
        kafka_perf.consume(bench.direct, topic, total, group=f"{topic}-group")
    finally:
        kafka_perf.delete_topics(bench.direct, [topic])


def broker_open_files(cluster: LocalKafkaCluster) -> int:
    total = 0
    for node_id in cluster.running_node_ids():
        pid = cluster.pid(node_id)
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).num_fds()
    return total


def broker_log_errors(cluster: LocalKafkaCluster) -> int:
    """Lines in the broker logs that say it ran out of file descriptors."""
    count = 0
    for path in cluster.log_paths().values():
        with contextlib.suppress(OSError):
            count += path.read_text(errors="replace").count("Too many open files")
    return count


def idle_connection_capacity(gateway: BenchGateway) -> tuple[int, int]:
    """How many client connections the gateway's RLIMIT_NOFILE allows, and that limit.

    Each client connection costs the gateway two descriptors (client + upstream). The
    benchmark raises the limit it passes on, but only up to the hard limit unless the
    process has CAP_SYS_RESOURCE (containers often drop it, even for root).
    """
    process = psutil.Process(gateway.pid)
    soft, _hard = process.rlimit(psutil.RLIMIT_NOFILE)
    spare = soft - process.num_fds() - IDLE_FD_MARGIN
    return max(spare // 2, 0), soft


#: The idle benchmark opens ~10,000 connections from 127.0.0.1, up to 200 at a time
#: still saying hello: far above the default caps, which are for real deployments.
IDLE_LISTENER: dict[str, Any] = {
    "limits": {
        "max_connections": 30_000,
        "max_connections_per_ip": 30_000,
        "max_unauthenticated_connections": 2_000,
        "max_unauthenticated_connections_per_ip": 2_000,
    }
}


def run_idle_connections(bench: Bench) -> dict[str, Any]:
    """7: hold N idle client connections (after one ApiVersions each) through one gateway."""
    requested = bench.settings.idle_connections
    with bench_gateway(bench.workdir, bench.direct, listener=IDLE_LISTENER) as gateway:
        capacity, fd_limit = idle_connection_capacity(gateway)
        count = min(requested, capacity)
        if count < requested:
            log(
                f"idle connections: the gateway may open {fd_limit} files (2 per connection) "
                f"and this process cannot raise the hard limit; opening {count:,}, "
                f"not {requested:,}"
            )
        log(f"idle connections: opening {count:,} through the gateway")
        time.sleep(1.0)
        rss_before = gateway.monitor.sample() / MB
        broker_fds_before = broker_open_files(bench.cluster)
        conns = open_idle_connections(HOST, gateway.port, count, api_versions_request())
        try:
            time.sleep(2.0)  # let sessions settle (logging, upstream connects)
            rss_idle = gateway.monitor.sample() / MB
            broker_fds_idle = broker_open_files(bench.cluster)
            broker_ok = bool(metadata_broker_ids(HOST, bench.cluster.broker_port(1), timeout=10))
            opened = len(conns.sockets)
        finally:
            conns.close()
        time.sleep(2.0)
        rss_after = gateway.monitor.sample() / MB
        upstream_failures = gateway.count_events("upstream_unavailable")
    result = {
        "requested": requested,
        "attempted": count,
        "gateway_open_files_limit": fd_limit,
        "opened": opened,
        "failed": conns.failures,
        "first_error": conns.first_error,
        "open_seconds": round(conns.seconds, 2),
        "gateway_rss_mib_before": round(rss_before, 1),
        "gateway_rss_mib": round(rss_idle, 1),
        "gateway_kib_per_connection": round((rss_idle - rss_before) * 1024 / max(opened, 1), 1),
        "gateway_rss_mib_after_close": round(rss_after, 1),
        "gateway_upstream_failures": upstream_failures,
        "broker_open_files_before": broker_fds_before,
        "broker_open_files": broker_fds_idle,
        "broker_answers_metadata": broker_ok,
        "broker_too_many_open_files": broker_log_errors(bench.cluster),
    }
    log(f"  {json.dumps(result)}")
    return result


# --------------------------------------------------------------------------- report


def build_json(
    bench: Bench, codec_us: float, idle: dict[str, Any] | None, wall_s: float
) -> dict[str, Any]:
    s = bench.settings
    return {
        "policies": s.policies,
        "policies_description": bench.policy.describe(),
        "small_requests_skipped": "small" in s.only and bench.skips_small_requests(),
        **headline(bench.samples, s.workers),
        "metadata_rewrite_us": round(codec_us, 2),
        "idle_connections_rss_mib": idle["gateway_rss_mib"] if idle else None,
        "idle_connections": idle,
        "disturbed_measurements": bench.noisy,
        "waited_for_quiet_s": round(bench.quiet_waited_s, 1),
        "measurements_repeated": bench.retried,
        "metrics": bench.samples.as_json(),
        "settings": {
            **asdict(s),
            "gateway_workers_option": workers_option_supported(),
            "producer": {"acks": "all", "other": "Kafka defaults"},
        },
        "machine": machine_info(),
        "wall_time_s": round(wall_s, 1),
    }


def print_report(bench: Bench, codec_us: float, idle: dict[str, Any] | None, wall_s: float) -> None:
    s = bench.settings
    print()
    print(
        f"kafka-gateway benchmark: {s.reps} repetition(s), {s.records:,} x {s.record_size} B "
        f"records, {s.partitions} partitions, {s.brokers} broker(s); median [min..max]"
    )
    print(f"policies: {s.policies} ({bench.policy.describe()}; the direct side has none)")
    if "small" in s.only and bench.skips_small_requests():
        print("small requests: skipped (the load generator does not authenticate)")
    print(format_table(bench.samples, s.workers))
    print(f"Metadata rewrite (100 topics x 6 partitions, 3 brokers): {codec_us:.1f} us")
    if idle:
        print(
            f"idle connections: {idle['opened']:,}/{idle['attempted']:,} open in "
            f"{idle['open_seconds']} s; gateway RSS {idle['gateway_rss_mib_before']} -> "
            f"{idle['gateway_rss_mib']} MiB ({idle['gateway_kib_per_connection']} KiB each), "
            f"{idle['gateway_rss_mib_after_close']} MiB after close; broker open files "
            f"{idle['broker_open_files_before']} -> {idle['broker_open_files']}, "
            f"answers: {idle['broker_answers_metadata']}"
        )
        if idle["attempted"] < idle["requested"]:
            print(
                f"  ({idle['requested']:,} requested: capped by the gateway's open-files limit "
                f"{idle['gateway_open_files_limit']}, 2 per connection; the hard limit cannot "
                "be raised without CAP_SYS_RESOURCE)"
            )
    if bench.retried:
        print(f"{bench.retried} measurement(s) were repeated: other processes disturbed them")
    if bench.noisy:
        print(
            f"WARNING: other processes used more than {NOISY_OTHER_CORES} cores during "
            f"{len(bench.noisy)} measurement(s) ({', '.join(bench.noisy)}); those numbers "
            "are disturbed - rerun on a quiet machine"
        )
    print(
        f"wall time {wall_s / 60:.1f} min (of which {bench.quiet_waited_s / 60:.1f} min waiting "
        f"for other processes); gateway logs in {bench.workdir}"
    )


# --------------------------------------------------------------------------- main


def run(settings: Settings) -> dict[str, Any]:
    started = time.monotonic()
    # 2 fds per idle connection in the gateway (client + upstream), 1 here, 1 in the broker.
    needed = 2 * settings.idle_connections + 4096
    limits = raise_open_files_limit(needed)
    log(f"open files limit: {limits[0]} (inherited by Kafka and the gateway)")
    if limits[0] < needed:
        log(f"  wanted {needed}: the hard limit cannot be raised here (no CAP_SYS_RESOURCE)")
    log(f"policies: {settings.policies} ({policy_set(settings.policies).describe()})")
    if "small" in settings.only and policy_set(settings.policies).authenticated:
        log("  small requests: skipped, the load generator does not authenticate")
    codec_us = metadata_rewrite_us()
    stalls = measure_stalls()
    log(format_stalls(stalls))
    checked = measure_checked()
    log(format_checked(checked))
    workdir = Path(tempfile.mkdtemp(prefix="kafka-gateway-bench-"))
    cluster = LocalKafkaCluster(
        brokers=settings.brokers,
        base_port=free_kafka_base_port(settings.brokers),
        fast_start=False,
        progress=stderr_progress,
    )
    bench = Bench(settings, cluster, workdir, Samples())
    with cluster:
        if set(settings.only) - {"idle", "small"}:
            warm_up(bench)
        if set(settings.only) - {"idle"}:
            for rep in range(settings.reps):
                run_repetition(bench, rep)
        run_idle = "idle" in settings.only and settings.idle_connections > 0
        idle = run_idle_connections(bench) if run_idle else None
    wall_s = time.monotonic() - started
    print_report(bench, codec_us, idle, wall_s)
    print(format_stalls(stalls))
    print(format_checked(checked))
    return {
        **build_json(bench, codec_us, idle, wall_s),
        "checked_request_stalls": stalls,
        "checked_request_us": checked,
    }


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # clean up on SIGTERM too
    try:
        result = run(settings)
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    out = os.environ.get("BENCH_JSON")
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        log(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
