"""`kafka-gateway run --workers 2`: processes share the ports and both serve clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer

from tests.gateway_harness import (
    REPO_ROOT,
    Event,
    RunningGateway,
    free_port_block,
    gateway_config,
    running_gateway,
)
from tests.integration.clients import consume_values, produce_values
from tests.integration.conftest import create_topic
from tests.integration.test_protocol_edges import API_VERSIONS
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka


def test_two_workers_share_the_ports(kafka_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    topic = create_topic(kafka_cluster.bootstrap_servers)
    with running_gateway(
        tmp_path, kafka_cluster.bootstrap_servers, cli_args=["--workers", "2"]
    ) as gateway:
        for worker in (0, 1):
            gateway.wait_for_event(
                lambda e, w=worker: e.get("event") == "brokers_discovered" and e.get("worker") == w
            )
        for correlation_id in range(40):  # the kernel spreads connections over the workers
            with RawKafkaConnection(gateway.bootstrap) as conn:
                assert conn.request(API_VERSIONS, correlation_id).error_code == 0
        values = [f"w-{i}" for i in range(100)]
        produce_values(gateway.bootstrap, topic, values)
        assert sorted(consume_values(gateway.bootstrap, topic, 100, f"g-{uuid.uuid4()}")) == sorted(
            values
        )
        served_by = {
            e.get("worker") for e in gateway.events() if e.get("event") == "connection_opened"
        }
        assert served_by == {0, 1}
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=20) == 0
        stopped = [e for e in gateway.events() if e.get("event") == "gateway_stopped"]
        assert {e.get("worker") for e in stopped} == {0, 1}


# --------------------------------------------------------------------------------------
# small events stay small: early reloads, killed workers, rejected reloads


def _spawn(tmp_path: Path, upstream: str, *cli_args: str) -> tuple[RunningGateway, Path]:
    """Start `run --workers 2 --pid-file` without waiting for anything."""
    config_path, port = _write_config(tmp_path, upstream)
    log_path = tmp_path / f"gateway-{port}.log"
    pid_file = tmp_path / f"gateway-{port}.pid"
    command = [sys.executable, "-m", "gateway.cli", "run", "--config", str(config_path)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, "--workers", "2", "--pid-file", str(pid_file), *cli_args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    return RunningGateway(process, f"127.0.0.1:{port}", log_path, config_path), pid_file


def _write_config(tmp_path: Path, upstream: str) -> tuple[Path, int]:
    port = free_port_block()
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_path = tmp_path / f"gateway-{port}.yaml"
    config_path.write_text(json.dumps(gateway_config(upstream, port)))
    return config_path, port


def _events(gateway: RunningGateway, name: str, worker: int | None = None) -> list[Event]:
    return [
        e
        for e in gateway.events()
        if e.get("event") == name and (worker is None or e.get("worker") == worker)
    ]


def _wait_until(condition: Callable[[], bool], what: str, gateway: RunningGateway) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; log:\n{gateway.tail()}"
        assert gateway.process.poll() is None, f"supervisor exited; log:\n{gateway.tail()}"
        time.sleep(0.02)


def _worker_pids(gateway: RunningGateway, worker: int) -> list[int]:
    return [e["pid"] for e in _events(gateway, "worker_started", worker)]


def _kill_worker(gateway: RunningGateway, worker: int) -> None:
    """SIGKILL the worker's current process once it serves, and wait until it is reaped."""
    starts = len(_events(gateway, "worker_exited", worker)) + 1
    _wait_until(
        lambda: len(_events(gateway, "gateway_started", worker)) >= starts,
        f"worker {worker} to serve",
        gateway,
    )
    assert len(_worker_pids(gateway, worker)) == starts
    os.kill(_worker_pids(gateway, worker)[-1], signal.SIGKILL)
    _wait_until(
        lambda: len(_events(gateway, "worker_exited", worker)) >= starts,
        f"worker {worker} to be reaped",
        gateway,
    )


def test_reloads_during_start_up_never_kill_anything(kafka_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGHUP as soon as the pid file exists, again and again while workers start."""
    for attempt in range(3):
        gateway, pid_file = _spawn(tmp_path / str(attempt), kafka_cluster.bootstrap_servers)
        try:
            _wait_until(pid_file.exists, "the pid file", gateway)
            pid = int(pid_file.read_text())
            assert pid == gateway.process.pid
            sent = 0
            while len({e.get("worker") for e in _events(gateway, "gateway_started")}) < 2:
                os.kill(pid, signal.SIGHUP)
                sent += 1
                assert gateway.process.poll() is None, gateway.tail()
                time.sleep(0.005)
                assert sent < 20_000, gateway.tail()
            # a reload arriving before a worker's handler exists is held, then applied
            for worker in (0, 1):
                _wait_until(
                    lambda w=worker, g=gateway: bool(_events(g, "config_reloaded", w)),
                    f"worker {worker} to reload",
                    gateway,
                )
            assert sent > 1
            assert _events(gateway, "worker_exited") == []
            assert [len(_worker_pids(gateway, w)) for w in (0, 1)] == [1, 1]
            with RawKafkaConnection(gateway.bootstrap) as conn:
                assert conn.request(API_VERSIONS, 1).error_code == 0
        finally:
            assert gateway.stop() == 0, gateway.tail()


def test_a_crash_looping_worker_is_backed_off_alone(kafka_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    topic = create_topic(kafka_cluster.bootstrap_servers)
    with running_gateway(
        tmp_path, kafka_cluster.bootstrap_servers, cli_args=["--workers", "2"]
    ) as gateway:
        _wait_until(lambda: len(_events(gateway, "gateway_started")) >= 2, "both workers", gateway)
        survivor_pid = _worker_pids(gateway, 1)[0]
        values = [f"v-{i}" for i in range(300)]
        errors: list[str] = []
        producing = threading.Thread(target=_produce_slowly, args=(gateway, topic, values, errors))
        producing.start()
        for _ in range(3):
            _kill_worker(gateway, 0)
        producing.join(timeout=120)
        assert not producing.is_alive()
        # the killed worker comes back, after delays that double
        _wait_until(
            lambda: len(_events(gateway, "gateway_started", 0)) == 4, "worker 0 back", gateway
        )
        delays = [e["delay_s"] for e in _events(gateway, "worker_restart_scheduled", 0)]
        assert delays == [0.5, 1.0, 2.0]
        exits = _events(gateway, "worker_exited")
        assert [(e["worker"], e["signal"]) for e in exits] == [(0, "SIGKILL")] * 3
        # the other worker served throughout: never restarted, and the client lost nothing
        assert _worker_pids(gateway, 1) == [survivor_pid]
        assert errors == []
        consumed = consume_values(gateway.bootstrap, topic, len(values), f"g-{uuid.uuid4()}")
        assert sorted(consumed) == sorted(values)
        assert gateway.process.poll() is None


def _produce_slowly(
    gateway: RunningGateway, topic: str, values: list[str], errors: list[str]
) -> None:
    """A real client producing while workers die: every record delivered, no error."""

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(
        {"bootstrap.servers": gateway.bootstrap, "enable.idempotence": True, "linger.ms": 0}
    )
    for value in values:
        producer.produce(topic, value=value.encode(), on_delivery=on_delivery)
        producer.poll(0.02)
    if producer.flush(60) != 0:
        errors.append("not every record was delivered")


def test_restarted_worker_uses_the_last_good_config(kafka_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    topic = create_topic(kafka_cluster.bootstrap_servers)
    with running_gateway(
        tmp_path, kafka_cluster.bootstrap_servers, cli_args=["--workers", "2"]
    ) as gateway:
        _wait_until(lambda: len(_events(gateway, "gateway_started")) >= 2, "both workers", gateway)
        good = gateway.config_path.read_text()
        gateway.config_path.write_text(good.replace('"virtual_clusters"', '"virtual_clustrs"'))
        gateway.reload()
        rejected = gateway.wait_for_event(lambda e: e.get("event") == "config_reload_rejected")
        assert "worker" not in rejected  # the supervisor refused it; no worker saw it
        assert any("virtual_clustrs" in p for p in rejected["problems"])
        _kill_worker(gateway, 0)
        _wait_until(
            lambda: len(_events(gateway, "gateway_started", 0)) == 2, "worker 0 back", gateway
        )
        assert _events(gateway, "config_reload_rejected", 0) == []
        # the restarted worker serves with the last good configuration
        served_before = len(_events(gateway, "connection_opened", 0))
        for correlation_id in range(40):
            with RawKafkaConnection(gateway.bootstrap) as conn:
                assert conn.request(API_VERSIONS, correlation_id).error_code == 0
        assert len(_events(gateway, "connection_opened", 0)) > served_before
        values = [f"lg-{i}" for i in range(50)]
        produce_values(gateway.bootstrap, topic, values)
        consumed = consume_values(gateway.bootstrap, topic, len(values), f"g-{uuid.uuid4()}")
        assert sorted(consumed) == sorted(values)
        assert [e["worker"] for e in _events(gateway, "worker_exited")] == [0]


def test_supervisor_gives_up_only_when_every_worker_fails_to_start(tmp_path: Path) -> None:
    """A port held by another process (without SO_REUSEPORT): no worker can ever start."""
    config_path, port = _write_config(tmp_path, "127.0.0.1:9")  # upstream never contacted
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        command = [sys.executable, "-m", "gateway.cli", "run", "--config", str(config_path)]
        result = subprocess.run(
            [*command, "--workers", "2"], capture_output=True, cwd=REPO_ROOT, timeout=60
        )
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith(b"{")]
    names = [e["event"] for e in events]
    assert names.count("worker_exited") >= 2 and "workers_failed_to_start" in names
    exits = [e for e in events if e["event"] == "worker_exited"]
    assert {e["exit_code"] for e in exits} == {78}  # EX_CONFIG: could not start
    assert b"address already in use" in result.stderr.lower() or b"in use" in result.stderr
