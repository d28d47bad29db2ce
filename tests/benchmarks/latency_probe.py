"""Steady-state produce latency at a fixed rate, with the client's start-up left out.

kafka-producer-perf-test computes its percentiles over the whole run, and every run is
a fresh JVM: class loading, the first metadata fetch and the JIT make the first
~200 ms queue up ~2,000 records (at 10,000/s), which is more than 1% of a 150,000-record
run - so its p99 measures the client's start-up (40-200 ms, direct as much as through
the gateway), not the gateway. This probe uses librdkafka (confluent-kafka, a C client
with no JIT), produces at a fixed rate, discards everything sent during a warm-up, and
takes percentiles of librdkafka's own produce()-to-acknowledgement latency.

Run as a module (the benchmark starts it as a subprocess, so its GIL and CPU stay out
of the benchmark process); prints one JSON object:

    python -m tests.benchmarks.latency_probe --bootstrap 127.0.0.1:19292 --topic t
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka import KafkaError, Message, Producer

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL_SLEEP_S = 0.0005
FLUSH_TIMEOUT_S = 30.0


@dataclass
class LatencyResult:
    """Latency percentiles of the records sent after the warm-up, in milliseconds."""

    measured: int
    errors: int
    records_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    first_error: str | None = None


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


class _Collector:
    """Delivery callback: keeps the latency of acknowledged records sent after `from_ms`."""

    def __init__(self, from_ms: int) -> None:
        self.from_ms = from_ms
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error: str | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors += 1
            self.first_error = self.first_error or str(err)
            return
        _, created_ms = msg.timestamp()  # CreateTime, set by produce()
        latency = msg.latency()
        if created_ms >= self.from_ms and latency is not None:
            self.latencies.append(latency)


def run_probe(
    bootstrap: str,
    topic: str,
    *,
    rate: int,
    warmup_s: float,
    seconds: float,
    record_size: int,
    client_config: Mapping[str, str] | None = None,
) -> LatencyResult:
    """Produce `rate` records/s for `warmup_s + seconds`; measure the last `seconds`."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,  # the Java producer's default since Kafka 4.0
            "enable.idempotence": True,  # likewise
            "log_level": 3,
            **(client_config or {}),
        }
    )
    collector = _Collector(int((time.time() + warmup_s) * 1000))
    payload = b"x" * record_size
    started = time.perf_counter()
    end = started + warmup_s + seconds
    sent = 0
    while (now := time.perf_counter()) < end:
        due = int((now - started) * rate)
        while sent < due:
            producer.produce(topic, payload, on_delivery=collector)
            sent += 1
        producer.poll(0)
        time.sleep(POLL_SLEEP_S)
    producer.flush(FLUSH_TIMEOUT_S)
    latencies = sorted(collector.latencies)
    return LatencyResult(
        measured=len(latencies),
        errors=collector.errors,
        records_per_s=sent / (time.perf_counter() - started),
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        p999_ms=percentile(latencies, 0.999) * 1000,
        max_ms=(latencies[-1] * 1000) if latencies else 0.0,
        first_error=collector.first_error,
    )


def probe_in_subprocess(
    bootstrap: str,
    topic: str,
    *,
    rate: int,
    warmup_s: float,
    seconds: float,
    record_size: int,
    client_config: Mapping[str, str] | None = None,
) -> LatencyResult:
    """`run_probe` in its own process (killed if the benchmark is interrupted)."""
    cmd = [sys.executable, "-m", "tests.benchmarks.latency_probe", "--bootstrap", bootstrap]
    cmd += ["--topic", topic, "--rate", str(rate), "--warmup", str(warmup_s)]
    cmd += ["--seconds", str(seconds), "--record-size", str(record_size)]
    for key, value in (client_config or {}).items():
        cmd += ["--client-config", f"{key}={value}"]
    result = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=warmup_s + seconds + FLUSH_TIMEOUT_S + 60,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(
            f"latency probe exited {result.returncode}: {result.stdout[-2000:]}"
            f"{result.stderr[-2000:]}"
        )
    return LatencyResult(**json.loads(lines[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=int, default=10_000, help="records per second")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not measured")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds measured")
    parser.add_argument("--record-size", type=int, default=1024)
    parser.add_argument(
        "--client-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka setting, e.g. sasl.username=alice (repeatable)",
    )
    args = parser.parse_args(argv)
    client_config = dict(item.split("=", 1) for item in args.client_config)
    try:
        result = run_probe(
            args.bootstrap,
            args.topic,
            rate=args.rate,
            warmup_s=args.warmup,
            seconds=args.seconds,
            record_size=args.record_size,
            client_config=client_config,
        )
    except KeyboardInterrupt:
        return 130
    print(json.dumps(asdict(result)), flush=True)
    return 0 if result.errors == 0 and result.measured > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
