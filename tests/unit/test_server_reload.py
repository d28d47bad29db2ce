"""A reload never ends the process: every failure keeps the running configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.server import ConfigFile, reload_config


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("virtual_clusters: " + "[" * 5000 + "]" * 5000 + "\n", ":1:83: nested too deeply"),
        ("virtual_clusters:\n  - name: " + "9" * 4301 + "\n", ":2:11: number too long"),
    ],
)
def test_hostile_reload_files_are_rejected(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with capture_logs() as logs:
        assert reload_config([], str(path)) is False
    (event,) = logs
    assert event["event"] == "config_reload_rejected" and event["log_level"] == "error"
    (reported,) = event["problems"]
    assert reported.startswith(f"{path}{problem}")


def test_an_unexpected_failure_keeps_the_running_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_self: ConfigFile) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ConfigFile, "load", broken)
    with capture_logs() as logs:
        assert reload_config([], ConfigFile(str(tmp_path / "x.yaml"))) is False
    (event,) = logs
    assert event["event"] == "config_reload_failed"
    assert event["error"] == "RuntimeError: a bug"
