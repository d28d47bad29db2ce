"""Log lines: one event, one line, one write (several worker processes share stdout)."""

from __future__ import annotations

import io

import pytest
import structlog

from gateway.logs import LineLogger, configure_logging


class RecordingFile(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_each_event_is_written_whole_in_one_call() -> None:
    out = RecordingFile()
    logger = LineLogger(out)
    logger.info('{"event": "config_reloaded", "worker": 0}')
    logger.error('{"event": "config_reloaded", "worker": 1}')
    assert out.writes == [
        '{"event": "config_reloaded", "worker": 0}\n',
        '{"event": "config_reloaded", "worker": 1}\n',
    ]


def test_the_gateway_logs_through_it(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    try:
        structlog.get_logger("unit").info("hello", worker=1)
    finally:
        structlog.reset_defaults()
    captured = capsys.readouterr()
    (line,) = captured.out.splitlines()
    assert '"event": "hello"' in line and '"worker": 1' in line
