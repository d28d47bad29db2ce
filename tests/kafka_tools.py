"""Run Apache Kafka's own Java command-line tools against a bootstrap address.

The Java console producer/consumer and perf tools are the reference clients: if they
work through the gateway, real applications will too. They run from the same cached
jars as the local cluster (localkafka/distribution.py), logging only warnings to stderr.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localkafka.distribution import (
    TOOL_JVM_OPTS,
    KafkaDistribution,
    die_with_parent_preexec,
    ensure_distribution,
)

CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"
TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"
CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"

Props = Mapping[str, str | int | bool]


class KafkaToolError(RuntimeError):
    """A Java tool exited non-zero; the message carries its command line and output."""


@functools.cache
def distribution() -> KafkaDistribution:
    """The cached Kafka download (fetched on first use), shared by every tool call."""
    return ensure_distribution()


def java_tool(
    main_class: str,
    args: Sequence[str],
    *,
    input_text: str | None = None,
    timeout: float = 120.0,
    check: bool = True,
    jvm_opts: Sequence[str] = TOOL_JVM_OPTS,
) -> subprocess.CompletedProcess[str]:
    """Run one Kafka tool to completion; raise `KafkaToolError` on failure if `check`."""
    cmd = distribution().java_command(main_class, args, jvm_opts=jvm_opts)
    result = subprocess.run(
        cmd,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=die_with_parent_preexec(),  # a killed test run must not leave JVMs
    )
    if check and result.returncode != 0:
        raise KafkaToolError(
            f"{main_class} exited {result.returncode}\nargs: {list(args)}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def _prop_args(flag: str, props: Props | None) -> list[str]:
    """`--flag k=v` pairs; booleans in Java's lower case."""
    args: list[str] = []
    for key, value in (props or {}).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += [flag, f"{key}={text}"]
    return args


def console_produce(
    bootstrap: str,
    topic: str,
    lines: Sequence[str],
    *,
    key_separator: str | None = None,
    extra_props: Props | None = None,
    timeout: float = 120.0,
    jvm_opts: Sequence[str] = TOOL_JVM_OPTS,
) -> subprocess.CompletedProcess[str]:
    """Send each line as one record (acks=all); with `key_separator`, lines are key<sep>value."""
    args = ["--bootstrap-server", bootstrap, "--topic", topic, "--request-required-acks", "all"]
    if key_separator is not None:
        args += ["--property", "parse.key=true", "--property", f"key.separator={key_separator}"]
    args += _prop_args("--producer-property", extra_props)
    text = "".join(f"{line}\n" for line in lines)
    return java_tool(CONSOLE_PRODUCER, args, input_text=text, timeout=timeout, jvm_opts=jvm_opts)


def console_consume(
    bootstrap: str,
    topic: str,
    max_messages: int,
    *,
    group: str | None = None,
    timeout_ms: int = 30_000,
    from_beginning: bool = True,
    print_key: bool = False,
    isolation_level: str | None = None,
    extra_props: Props | None = None,
    jvm_opts: Sequence[str] = TOOL_JVM_OPTS,
) -> list[str]:
    """Consume up to `max_messages` records and return their values (or key\\tvalue).

    The tool stops after `max_messages` or after `timeout_ms` without a record, in which
    case fewer lines come back: callers assert on the list, not on the exit code.
    """
    args = ["--bootstrap-server", bootstrap, "--topic", topic]
    args += ["--max-messages", str(max_messages), "--timeout-ms", str(timeout_ms)]
    if from_beginning:
        args.append("--from-beginning")
    if group is not None:
        args += ["--group", group]
    if print_key:
        args += ["--property", "print.key=true"]
    if isolation_level is not None:
        args += ["--isolation-level", isolation_level]
    args += _prop_args("--consumer-property", extra_props)
    result = java_tool(
        CONSOLE_CONSUMER, args, timeout=timeout_ms / 1000 + 120, check=False, jvm_opts=jvm_opts
    )
    if result.returncode != 0 and "TimeoutException" not in result.stderr:
        raise KafkaToolError(f"console consumer failed:\n{result.stderr[-4000:]}")
    return result.stdout.splitlines()


def create_topic(
    bootstrap: str,
    topic: str,
    partitions: int = 1,
    replication_factor: int = 1,
    configs: Props | None = None,
    client_props: Props | None = None,
) -> subprocess.CompletedProcess[str]:
    """kafka-topics --create (fails if the topic exists); `client_props` e.g. SASL login."""
    args = ["--bootstrap-server", bootstrap, "--create", "--topic", topic]
    args += ["--partitions", str(partitions), "--replication-factor", str(replication_factor)]
    args += _prop_args("--config", configs)
    with _command_config(client_props) as extra:
        return java_tool(TOPIC_COMMAND, args + extra)


def describe_topic(bootstrap: str, topic: str, client_props: Props | None = None) -> str:
    """kafka-topics --describe output, for assertions and failure messages."""
    args = ["--bootstrap-server", bootstrap, "--describe", "--topic", topic]
    with _command_config(client_props) as extra:
        return java_tool(TOPIC_COMMAND, args + extra).stdout


@contextmanager
def _command_config(props: Props | None) -> Iterator[list[str]]:
    """`--command-config <file>` for admin tools, which take client settings only as a file."""
    if not props:
        yield []
        return
    with tempfile.NamedTemporaryFile("w", suffix=".properties") as handle:
        for key, value in props.items():
            handle.write(f"{key}={_escape_property(_java_value(value))}\n")
        handle.flush()
        yield ["--command-config", handle.name]


def _escape_property(value: str) -> str:
    """java.util.Properties syntax: backslashes and line breaks must be escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "OAUTHBEARER": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule",
}
_OAUTH_LOGIN_HANDLER = (
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler"
)


def java_security_props(
    protocol: str,
    *,
    mechanism: str | None = None,
    username: str | None = None,
    password: str | None = None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    token_url: str | None = None,
) -> dict[str, str]:
    """Java client settings for a secured listener (broker or gateway).

    PEM files are used directly (`ssl.*.type=PEM`); the client key and certificate
    are joined into `<cert>-keystore.pem` next to the certificate, since a PEM key
    store file must hold both. Passwords must not contain double quotes.
    OAUTHBEARER fetches client-credentials tokens from `token_url` with `username` and
    `password` as client id and secret; the JVM then also needs
    `java_security_jvm_opts(token_url)`.
    """
    props = {"security.protocol": protocol}
    if protocol.startswith("SASL_"):
        if mechanism not in _LOGIN_MODULES or username is None or password is None:
            raise ValueError(
                f"{protocol} needs a mechanism of {list(_LOGIN_MODULES)}, user, password"
            )
        props["sasl.mechanism"] = mechanism
        props["sasl.jaas.config"] = (
            f'{_LOGIN_MODULES[mechanism]} required username="{username}" password="{password}";'
        )
        if mechanism == "OAUTHBEARER":
            props |= _java_oauth_props(username, password, token_url)
    if protocol.endswith("SSL"):
        if ca is not None:
            props |= {"ssl.truststore.type": "PEM", "ssl.truststore.location": str(ca)}
        if cert is not None and key is not None:
            keystore = cert.with_name(f"{cert.stem}-keystore.pem")
            keystore.write_bytes(key.read_bytes() + b"\n" + cert.read_bytes())
            props |= {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore)}
    return props


def _java_oauth_props(client_id: str, secret: str, token_url: str | None) -> dict[str, str]:
    if token_url is None:
        raise ValueError("OAUTHBEARER needs token_url")
    jaas = (
        f'{_LOGIN_MODULES["OAUTHBEARER"]} required clientId="{client_id}" clientSecret="{secret}";'
    )
    return {
        "sasl.jaas.config": jaas,
        "sasl.login.callback.handler.class": _OAUTH_LOGIN_HANDLER,
        "sasl.oauthbearer.token.endpoint.url": token_url,
    }


def java_security_jvm_opts(token_url: str | None) -> tuple[str, ...]:
    """Tool JVM options for OAUTHBEARER: Kafka 4 only fetches URLs this property allows."""
    if token_url is None:
        return TOOL_JVM_OPTS
    return (*TOOL_JVM_OPTS, f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={token_url}")


@dataclass(frozen=True)
class ProducerPerfResult:
    """The summary line of kafka-producer-perf-test."""

    records: int
    records_per_sec: float
    mb_per_sec: float
    avg_latency_ms: float
    max_latency_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    output: str


_PRODUCER_SUMMARY = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, ([\d.]+) ms 50th, ([\d.]+) ms 95th, ([\d.]+) ms 99th, "
    r"([\d.]+) ms 99.9th"
)


def producer_perf(
    bootstrap: str,
    topic: str,
    num_records: int,
    *,
    record_size: int = 100,
    throughput: int = -1,
    extra_props: Props | None = None,
    timeout: float = 600.0,
) -> ProducerPerfResult:
    """kafka-producer-perf-test; `throughput=-1` means unthrottled."""
    props = {"bootstrap.servers": bootstrap, **(extra_props or {})}
    args = ["--topic", topic, "--num-records", str(num_records)]
    args += ["--record-size", str(record_size), "--throughput", str(throughput)]
    args += ["--producer-props", *(f"{k}={_java_value(v)}" for k, v in props.items())]
    result = java_tool(PRODUCER_PERF, args, timeout=timeout)
    return parse_producer_perf(result.stdout)


def _java_value(value: str | int | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_producer_perf(output: str) -> ProducerPerfResult:
    """Parse the final summary line (the tool also prints periodic progress lines)."""
    matches = _PRODUCER_SUMMARY.findall(output)
    if not matches:
        raise KafkaToolError(f"no producer-perf summary in output:\n{output[-2000:]}")
    records, rate, mb, avg, top, p50, p95, p99, p999 = matches[-1]
    return ProducerPerfResult(
        records=int(records),
        records_per_sec=float(rate),
        mb_per_sec=float(mb),
        avg_latency_ms=float(avg),
        max_latency_ms=float(top),
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        p999_ms=float(p999),
        output=output,
    )


def consumer_perf(
    bootstrap: str,
    topic: str,
    messages: int,
    *,
    group: str | None = None,
    timeout_ms: int = 60_000,
    timeout: float = 600.0,
) -> dict[str, str]:
    """kafka-consumer-perf-test; returns its CSV summary as {column: value}."""
    args = ["--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(messages)]
    args += ["--timeout", str(timeout_ms)]
    if group is not None:
        args += ["--group", group]
    result = java_tool(CONSUMER_PERF, args, timeout=timeout)
    return parse_consumer_perf(result.stdout)


def parse_consumer_perf(output: str) -> dict[str, str]:
    """Pair the header line with the last data line of the tool's CSV output."""
    lines = [line for line in output.splitlines() if "," in line]
    header = next((line for line in lines if line.startswith("start.time")), None)
    if header is None or lines[-1] == header:
        raise KafkaToolError(f"no consumer-perf summary in output:\n{output[-2000:]}")
    keys = [key.strip() for key in header.split(",")]
    values = [value.strip() for value in lines[-1].split(",")]
    return dict(zip(keys, values, strict=False))
