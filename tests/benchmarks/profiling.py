"""Optional py-spy profiles of the gateway during benchmark phases (`bench.py --profile DIR`).

Throughput numbers say how fast; a profile says where the time goes. py-spy samples the
gateway from outside (no code changes, ~1-3% overhead at 100 Hz) and excludes idle
stacks, so the samples are the gateway's CPU. Each profiled phase leaves a raw
"collapsed stacks" file (`frame;frame;... count`, for flamegraph.pl or speedscope)
and a text summary of the functions with the most self and inclusive samples.
py-spy is not a project dependency: `.venv/bin/pip install py-spy`.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

MAX_PROFILE_S = 1800  # py-spy's own bound, should the benchmark fail to stop it
TOP = 25


def py_spy() -> str | None:
    """py-spy next to this Python (the venv), else on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def profiled(pid: int, raw_path: Path, *, subprocesses: bool = False) -> Iterator[None]:
    """Record `pid` (and its children with `subprocesses`) for the duration of the block."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(raw_path)]
    cmd += ["--duration", str(MAX_PROFILE_S), "--rate", "100"]
    if subprocesses:
        cmd.append("--subprocesses")
    log_path = raw_path.with_suffix(".py-spy.log")
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if raw_path.exists():
        raw_path.with_suffix(".summary.txt").write_text(summarize(raw_path))


def _function(frame: str) -> str:
    """`name (file.py:123)` -> `name (file.py)`: aggregate over line numbers."""
    name, _, location = frame.partition(" (")
    filename = location.rsplit(":", 1)[0] if ":" in location else location.rstrip(")")
    return f"{name} ({filename.rstrip(')')})" if location else name


def summarize(raw_path: Path, top: int = TOP) -> str:
    """Top functions by self samples (leaf frame) and by inclusive samples."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples\n"
    lines = [f"{total} samples (non-idle, 100 Hz)", "", "self %   function"]
    lines += [f"{100 * n / total:6.1f}   {name}" for name, n in self_counts.most_common(top)]
    lines += ["", "incl %   function"]
    lines += [f"{100 * n / total:6.1f}   {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1])), end="")
