"""The package layout shows the architecture, and `lint-imports` keeps it so.

codec (sans-I/O protocol) <- policies (pure decisions) <- gateway (Trio runtime);
localkafka is development tooling that only `kafka-gateway local-kafka` loads.
"""

from __future__ import annotations

import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

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
        "tooling = ('localkafka', 'gateway.local_kafka', 'gateway.kafka_dist')\n"
        "print(sorted(m for m in sys.modules if m.startswith(tooling)))\n"
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


def test_the_tls_models_live_with_the_code_that_builds_ssl_contexts() -> None:
    """policies.auth.tls reaches nothing of policies.config, not even for annotations."""
    import grimp

    graph = grimp.build_graph("policies", exclude_type_checking_imports=False, cache_dir=None)
    assert (
        graph.find_shortest_chain(importer="policies.auth.tls", imported="policies.config") is None
    )
    for helpers_user in ("policies.acl.config", "policies.quotas.config", "policies.auth.tls"):
        assert graph.direct_import_exists(importer=helpers_user, imported="policies.config_base")


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """Every pydantic model an annotation names: ``X``, ``X | None``, ``list[X]``, ..."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _models_in(argument)


def test_every_configuration_section_has_the_one_shared_base() -> None:
    from policies.config import GatewayConfig
    from policies.config_base import Section

    seen: set[type[BaseModel]] = set()
    pending: list[type[BaseModel]] = [GatewayConfig]
    while pending:
        model = pending.pop()
        seen.add(model)
        for field in model.model_fields.values():
            pending += [nested for nested in _models_in(field.annotation) if nested not in seen]
    names = {model.__name__ for model in seen}
    assert {"AclRuleConfig", "ClientQuotaConfig", "ServerTlsConfig", "ClientTlsConfig"} <= names
    assert sorted(model.__name__ for model in seen if not issubclass(model, Section)) == []
