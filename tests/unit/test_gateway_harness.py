"""The test harness's log marks: a test sees only the gateway events written after its mark."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway_harness import RunningGateway


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    """A RunningGateway whose "process" is a sleeping Python and whose log the test writes."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    log_path = tmp_path / "gateway.log"
    log_path.write_bytes(b"")
    try:
        yield RunningGateway(process, "127.0.0.1:1", log_path, tmp_path / "gateway.yaml")
    finally:
        process.kill()
        process.wait()


def append(gateway: RunningGateway, data: bytes) -> None:
    with gateway.log_path.open("ab") as log:
        log.write(data)


def line(name: str) -> bytes:
    return json.dumps({"event": name}).encode() + b"\n"


def test_events_after_a_mark_leave_out_the_earlier_ones(gateway: RunningGateway) -> None:
    append(gateway, line("old") + b"not json\n")
    mark = gateway.log_mark()
    append(gateway, line("new"))
    assert [e["event"] for e in gateway.events()] == ["old", "new"]
    assert [e["event"] for e in gateway.events(after=mark)] == ["new"]
    assert gateway.wait_for_event(lambda e: True, after=mark, timeout=1)["event"] == "new"


def test_a_mark_inside_a_line_being_written_leaves_that_line_out(
    gateway: RunningGateway,
) -> None:
    # The gateway was writing "old" when the mark was taken: the rest of the line is
    # older than the mark, even though it lands in the file later.
    old = line("old-one-that-is-long")
    append(gateway, old[:10])
    mark = gateway.log_mark()
    append(gateway, old[10:] + line("new"))
    assert [e["event"] for e in gateway.events(after=mark)] == ["new"]


def test_waiting_sees_no_event_from_before_the_mark(gateway: RunningGateway) -> None:
    append(gateway, line("authentication"))
    mark = gateway.log_mark()
    with pytest.raises(AssertionError, match="no matching gateway event"):
        gateway.wait_for_event(lambda e: e["event"] == "authentication", after=mark, timeout=0.3)
