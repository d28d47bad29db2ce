"""The `kafka-gateway` command line as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )


def test_validate_accepts_the_example() -> None:
    result = run_cli("validate", "deploy/examples/minimal.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK: deploy/examples/minimal.yaml" in result.stdout


def test_validate_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "virtual_clusters:\n"
        "  - name: local\n"
        "    listener:\n"
        "      bootstrap: 127.0.0.1:notaport\n"
        "    upstream:\n"
        "      bootstrap_servers: [127.0.0.1:19092]\n"
        "      conect_timeout_ms: 5\n"
    )
    result = run_cli("validate", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith(f"{bad}:4:") and "listener.bootstrap" in line for line in lines)
    assert any(line.startswith(f"{bad}:7:") and "conect_timeout_ms" in line for line in lines)


def test_run_with_a_bad_config_exits_with_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("virtual_clusters: []\n")
    result = run_cli("run", "--config", str(bad))
    assert result.returncode == 1
    assert f"{bad}:1:" in result.stderr


def test_run_on_a_port_in_use_says_which(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "gw.yaml"
        config.write_text(
            "virtual_clusters:\n"
            "  - name: local\n"
            f"    listener: {{bootstrap: '127.0.0.1:{port}'}}\n"
            "    upstream: {bootstrap_servers: ['127.0.0.1:1']}\n"
        )
        result = run_cli("run", "--config", str(config))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_local_kafka_is_handed_to_the_development_package() -> None:
    help_text = run_cli("local-kafka", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert help_text.stdout.startswith("usage: kafka-gateway local-kafka")
    assert "--download-only" in help_text.stdout

    refused = run_cli("local-kafka", "--brokers", "0")
    assert refused.returncode == 2
    assert "brokers must be in 1..99, got 0" in refused.stderr
