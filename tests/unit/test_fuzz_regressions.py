"""Every crashing input found so far, a seed corpus, and a short seeded fuzz run.

The inputs run in a child process (tests/fuzz/run.py), because the class of bug they
guard against is a native abort, which would end pytest itself. ``make fuzz`` runs
the fuzzer for longer; what it finds lands in tests/fuzz/crashes/ and is replayed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.run import CRASHES_DIR, _inputs, fuzz, replay
from tests.fuzz.seeds import write_seeds

#: Long enough to load the seeds and mutate a few thousand inputs; fixed seed.
SHORT_FUZZ_SECONDS = 30
SHORT_FUZZ_SEED = 20260901


def test_there_are_saved_crashes_to_replay() -> None:
    names = [path.name for path in _inputs(CRASHES_DIR)]
    assert "crafted-metadata-v12-huge-topics" in names
    assert len(names) >= 5


def test_every_saved_crash_replays_cleanly() -> None:
    outcome = replay(_inputs(CRASHES_DIR))
    assert outcome.clean, outcome.report


def test_the_seed_corpus_replays_cleanly(tmp_path: Path) -> None:
    assert write_seeds(tmp_path) > 300
    outcome = replay(_inputs(tmp_path))
    assert outcome.clean, outcome.report


@pytest.mark.timeout(240)
def test_a_short_seeded_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    outcome = fuzz(SHORT_FUZZ_SECONDS, SHORT_FUZZ_SEED, crashes_dir=tmp_path)
    assert outcome.clean, f"{outcome.report}\ncrashing inputs: {outcome.crashes}"
