"""Supervise the fuzzer from a parent process, and replay saved inputs in a child.

A native abort cannot be caught inside the process it kills, so both modes run the
inputs in a child process and judge it from outside:

* ``fuzz``: runs :mod:`tests.fuzz.harness` (atheris/libFuzzer) for ``--seconds``
  with a fixed ``--seed``; libFuzzer writes each crashing input (uncaught exception,
  or a deadly signal such as the SIGABRT of a Rust allocation failure) as
  ``crash-<sha1>`` into ``tests/fuzz/crashes/``. After a crash the child is started
  again until the time is up, so one run can keep several findings.
* ``replay``: runs every given file through :func:`tests.fuzz.targets.run_one` in
  one child, which names each file before running it; if the child dies by a
  signal, the last name it printed is the input that killed it.

Exit status 0 means every input had a clean outcome. Used by ``make fuzz`` and by
``tests/unit/test_fuzz_regressions.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

FUZZ_DIR: Final = Path(__file__).parent
CRASHES_DIR: Final = FUZZ_DIR / "crashes"
CORPUS_DIR: Final = FUZZ_DIR / "corpus"
REPO_ROOT: Final = FUZZ_DIR.parent.parent
RUNNING: Final = "RUNNING "
#: A child needs this long to load the seeds: a restart with less time left is skipped.
MIN_CHILD_SECONDS: Final = 20


@dataclass
class Outcome:
    """What a supervised child did: clean, or which inputs it crashed on and how."""

    clean: bool
    crashes: list[Path] = field(default_factory=list)
    report: str = ""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _describe(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def fuzz(seconds: int, seed: int, crashes_dir: Path = CRASHES_DIR) -> Outcome:
    """Fuzz for ``seconds``; crashing inputs land in ``crashes_dir``."""
    from tests.fuzz.seeds import write_seeds

    seeds, work = CORPUS_DIR / "seeds", CORPUS_DIR / "work"
    write_seeds(seeds)
    work.mkdir(parents=True, exist_ok=True)
    crashes_dir.mkdir(parents=True, exist_ok=True)
    before = set(crashes_dir.iterdir())
    current = CORPUS_DIR / "current-input"
    env = {**_env(), "FUZZ_CURRENT_INPUT": str(current)}
    deadline = time.monotonic() + seconds
    reports: list[str] = []
    clean = True
    while (left := int(deadline - time.monotonic())) >= MIN_CHILD_SECONDS:
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.fuzz.harness",
                f"-max_total_time={left}",
                f"-seed={seed}",
                f"-artifact_prefix={crashes_dir}/",
                "-timeout=20",
                "-rss_limit_mb=4096",
                "-max_len=4096",
                "-print_final_stats=1",
                str(work),
                str(seeds),
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
        )
        if child.returncode == 0:
            break
        clean = False
        if set(crashes_dir.iterdir()) == before and current.exists():  # died without artifact
            data = current.read_bytes()
            how = _describe(child.returncode).split()[-1]
            name = f"crash-{how}-{hashlib.sha1(data).hexdigest()}"
            (crashes_dir / name).write_bytes(data)
        reports.append(f"fuzzer child {_describe(child.returncode)}:\n{child.stderr[-4000:]}")
        seed += 1  # explore elsewhere instead of re-finding the same input at once
    crashes = sorted(set(crashes_dir.iterdir()) - before)
    return Outcome(clean and not crashes, crashes, "\n".join(reports))


def replay(paths: list[Path]) -> Outcome:
    """Run every file in ``paths`` in one child process; report the one that crashed it."""
    child = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", "replay-child", *map(str, paths)],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if child.returncode == 0:
        return Outcome(True)
    started = [
        line[len(RUNNING) :] for line in child.stdout.splitlines() if line.startswith(RUNNING)
    ]
    culprit = [Path(started[-1])] if started else []
    report = f"replay child {_describe(child.returncode)} on {culprit}:\n{child.stderr[-4000:]}"
    return Outcome(False, culprit, report)


def _replay_child(paths: list[str]) -> int:
    from tests.fuzz.targets import run_one

    for path in paths:
        print(RUNNING + path, flush=True)  # the parent's clue if a native abort follows
        try:
            run_one(Path(path).read_bytes())
        except Exception:
            traceback.print_exc()
            return 1
    return 0


def _inputs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("fuzz", help="fuzz for a while, keep crashing inputs")
    run.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "300")))
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--crashes", type=Path, default=CRASHES_DIR)
    again = sub.add_parser("replay", help="replay saved inputs (default: every saved crash)")
    again.add_argument("paths", type=Path, nargs="*")
    child = sub.add_parser("replay-child")
    child.add_argument("paths", nargs="*")
    args = parser.parse_args(argv)
    if args.mode == "replay-child":
        return _replay_child(args.paths)
    if args.mode == "replay":
        outcome = replay(args.paths or _inputs(CRASHES_DIR))
    else:
        outcome = fuzz(args.seconds, args.seed, args.crashes)
    if outcome.clean:
        print("fuzz: clean", file=sys.stderr)
        return 0
    print(outcome.report, file=sys.stderr)
    for crash in outcome.crashes:
        print(f"fuzz: crashing input saved as {crash}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
