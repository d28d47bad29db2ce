"""The generated configuration reference covers the whole model."""

from __future__ import annotations

import importlib.util
import types
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from policies.config import GatewayConfig
from policies.config_docs import iter_config_keys, render_config_reference

ROOT = Path(__file__).parents[2]


def all_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field path, found independently of policies.config_docs."""
    paths = []
    for name, field in model.model_fields.items():
        path = prefix + name
        paths.append(path)
        annotation: Any = field.annotation
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in {typing.Union, types.UnionType} and len(members) == 1:
            annotation = members[0]  # an optional section, e.g. `tls: ServerTlsConfig | None`
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += all_paths(annotation, path + ".")
        elif typing.get_origin(annotation) is list:
            (item,) = typing.get_args(annotation)
            if isinstance(item, type) and issubclass(item, BaseModel):
                paths += all_paths(item, path + "[].")
    return paths


def test_reference_lists_every_field_with_description() -> None:
    text = render_config_reference()
    paths = all_paths(GatewayConfig)
    assert "virtual_clusters[].listener.bootstrap" in paths
    for path in paths:
        assert f"| `{path}` |" in text, path
    assert [key.path for key in iter_config_keys(GatewayConfig)] == paths
    assert all(key.description for key in iter_config_keys(GatewayConfig))


def test_reference_rows() -> None:
    rows = {key.path: key for key in iter_config_keys(GatewayConfig)}
    assert rows["virtual_clusters"].default == "required"
    assert rows["max_frame_bytes"].default == "`104857600`"
    assert rows["max_frame_bytes"].type == "integer (1024..2147483647)"
    assert rows["log.format"].default == '`"auto"`'
    assert rows["virtual_clusters[].listener.bootstrap"].type == "`host:port`"
    assert rows["virtual_clusters[].listener.broker_ports"].default == "`{}`"
    assert rows["virtual_clusters[].upstream.connect_timeout_ms"].type == "integer (> 0)"
    # Pipes in literal types are escaped so the Markdown table stays intact.
    for line in render_config_reference().splitlines():
        if line.startswith("| `"):
            assert line.replace("\\|", "").count("|") == 5, line


def load_tool() -> ModuleType:
    path = ROOT / "tools" / "gen_config_docs.py"
    spec = importlib.util.spec_from_file_location("gen_config_docs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gen_tool_rewrites_only_the_marked_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = load_tool()
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n## Configuration\n\n<!-- config-reference:start -->\nSTALE TEXT\n"
        "<!-- config-reference:end -->\n\n## After\n"
    )
    assert tool.main(["--file", str(readme), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert tool.main(["--file", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\n## Configuration\n\n<!-- config-reference:start -->\n\n")
    assert text.endswith("\n\n<!-- config-reference:end -->\n\n## After\n")
    assert render_config_reference() in text
    assert "STALE TEXT" not in text
    assert tool.main(["--file", str(readme), "--check"]) == 0
    assert tool.main(["--file", str(readme)]) == 0  # idempotent
    assert readme.read_text() == text


def test_reference_lives_in_docs_and_is_current() -> None:
    """`make docs-check` (in `make test`) checks docs/configuration.md by default."""
    tool = load_tool()
    assert tool.REFERENCE == ROOT / "docs" / "configuration.md"
    assert tool.main(["--check"]) == 0
    reference = tool.REFERENCE.read_text(encoding="utf-8")
    assert render_config_reference() in reference
    # The front page links to the reference and carries no second copy of it.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert tool.START not in readme and tool.END not in readme
    assert "(docs/configuration.md)" in readme


def test_gen_tool_needs_markers(tmp_path: Path) -> None:
    tool = load_tool()
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert tool.main(["--file", str(readme), "--check"]) == 2
    assert tool.main(["--file", str(tmp_path / "missing.md")]) == 2
    readme.write_text("<!-- config-reference:end -->\n<!-- config-reference:start -->\n")
    assert tool.main(["--file", str(readme)]) == 2
