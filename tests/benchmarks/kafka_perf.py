"""Kafka's own perf tools and topic admin, tuned for benchmarking rather than for tests.

`tests/kafka_tools.py` runs the tools with a C1-only JIT and a 256 MiB heap so the test
suite starts them quickly; here that would make the client the bottleneck and flatter
the gateway, so the tools get the full JIT and a larger heap. Topics are managed with
confluent-kafka's AdminClient (already a test dependency): a JVM per topic would add
seconds to every repetition.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from tests.kafka_tools import (
    CONSUMER_PERF,
    PRODUCER_PERF,
    ProducerPerfResult,
    java_tool,
    parse_consumer_perf,
    parse_producer_perf,
)

#: Full C2 JIT and room for the producer's 32 MiB buffer plus 1 KiB records in flight.
BENCH_TOOL_JVM_OPTS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-Xshare:auto",
    "-Djava.awt.headless=true",
)
TOOL_TIMEOUT_S = 1800.0
ADMIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ConsumerPerfResult:
    """The CSV summary of kafka-consumer-perf-test, as numbers.

    `fetch_mb_per_sec` excludes the consumer-group join (`rebalance.time.ms`), so it is
    the steady-state rate; `mb_per_sec` is over the tool's whole run.
    """

    messages: int
    mb: float
    mb_per_sec: float
    fetch_mb_per_sec: float
    fetch_records_per_sec: float
    rebalance_ms: float


@contextlib.contextmanager
def _config_file(kind: str, props: Mapping[str, str | int] | None) -> Iterator[list[str]]:
    """`--<kind>.config <file>` holding `props` for the block; no arguments when empty."""
    if not props:
        yield []
        return
    with tempfile.TemporaryDirectory(prefix=f"{kind}-perf-") as tmp:
        config = Path(tmp) / f"{kind}.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
        yield [f"--{kind}.config", str(config)]


def produce(
    bootstrap: str,
    topic: str,
    records: int,
    *,
    record_size: int,
    throughput: int = -1,
    producer_props: Mapping[str, str | int] | None = None,
    jvm_opts: Sequence[str] = BENCH_TOOL_JVM_OPTS,
) -> ProducerPerfResult:
    """kafka-producer-perf-test (acks=all); `throughput=-1` is unthrottled.

    `producer_props` (e.g. SASL settings) go through `--producer.config`, a file:
    `--producer-props` rejects values that contain `=`, as `sasl.jaas.config` does.
    """
    props = {"bootstrap.servers": bootstrap, "acks": "all"}
    args = ["--topic", topic, "--num-records", str(records)]
    args += ["--record-size", str(record_size), "--throughput", str(throughput)]
    args += ["--producer-props", *(f"{key}={value}" for key, value in props.items())]
    with _config_file("producer", producer_props) as config_args:
        result = java_tool(
            PRODUCER_PERF, args + config_args, timeout=TOOL_TIMEOUT_S, jvm_opts=jvm_opts
        )
    summary = parse_producer_perf(result.stdout)
    if summary.records != records:
        raise RuntimeError(f"producer-perf sent {summary.records} of {records} records")
    return summary


def consume(
    bootstrap: str,
    topic: str,
    messages: int,
    *,
    group: str,
    consumer_props: Mapping[str, str | int] | None = None,
    jvm_opts: Sequence[str] = BENCH_TOOL_JVM_OPTS,
) -> ConsumerPerfResult:
    """kafka-consumer-perf-test from the earliest offset in a fresh consumer group.

    `consumer_props` (e.g. SASL settings) go through `--consumer.config`, a file: the
    tool takes client settings no other way.
    """
    args = ["--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(messages)]
    args += ["--timeout", "30000", "--group", group]
    with _config_file("consumer", consumer_props) as config_args:
        result = java_tool(
            CONSUMER_PERF, args + config_args, timeout=TOOL_TIMEOUT_S, jvm_opts=jvm_opts
        )
    row = parse_consumer_perf(result.stdout)
    summary = ConsumerPerfResult(
        messages=int(row["data.consumed.in.nMsg"]),
        mb=float(row["data.consumed.in.MB"]),
        mb_per_sec=float(row["MB.sec"]),
        fetch_mb_per_sec=float(row["fetch.MB.sec"]),
        fetch_records_per_sec=float(row["fetch.nMsg.sec"]),
        rebalance_ms=float(row["rebalance.time.ms"]),
    )
    if summary.messages < messages:
        raise RuntimeError(f"consumer-perf read {summary.messages} of {messages} records")
    return summary


def _admin(bootstrap: str) -> AdminClient:
    # log_level 3: errors only (librdkafka logs a notice about its queue when destroyed)
    return AdminClient(
        {"bootstrap.servers": bootstrap, "client.id": "kafka-gateway-bench", "log_level": 3}
    )


def create_topics(
    bootstrap: str, topics: Sequence[str], partitions: int, replication_factor: int
) -> None:
    """Create `topics` directly on the brokers (never through the gateway under test)."""
    admin = _admin(bootstrap)  # must outlive the futures, or they fail with _DESTROY
    futures = admin.create_topics(
        [NewTopic(name, partitions, replication_factor) for name in topics],
        operation_timeout=ADMIN_TIMEOUT_S,
        request_timeout=ADMIN_TIMEOUT_S,
    )
    for future in futures.values():
        future.result(timeout=ADMIN_TIMEOUT_S)


def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    """Delete a repetition's topics so a long run does not keep gigabytes on disk."""
    if not topics:
        return
    admin = _admin(bootstrap)
    futures = admin.delete_topics(
        list(topics), operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S
    )
    for future in futures.values():
        future.result(timeout=ADMIN_TIMEOUT_S)
