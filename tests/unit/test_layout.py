"""The package layout shows the architecture, and `lint-imports` keeps it so.

codec (sans-I/O protocol) <- policies (pure decisions) <- gateway (Trio runtime);
localkafka is development tooling that only `kafka-gateway local-kafka` loads.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_the_import_contracts_hold() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    # every contract in pyproject.toml was checked, the gateway's cycle check included
    assert "no import cycles inside gateway KEPT" in result.stdout


def test_the_gateway_runtime_loads_no_development_tooling() -> None:
    """Parsing and starting any other subcommand leaves the local Kafka launcher unloaded."""
    probe = (
        "import sys\n"
        "import gateway.cli, gateway.server, gateway.workers\n"
        "gateway.cli.build_parser().parse_args(['run', '--config', 'x.yaml'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'localkafka'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_launcher_ships_its_resources() -> None:
    from localkafka.distribution import _resource_text

    assert "@KAFKA_VERSION@" in _resource_text("kafka-pom.xml")
    assert "<Configuration" in _resource_text("log4j2-broker.xml")
