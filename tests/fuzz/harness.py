"""The atheris entry point: ``python -m tests.fuzz.harness [libFuzzer flags] [corpus dirs]``.

Run it through :mod:`tests.fuzz.run`, which supervises it from a parent process: a
native abort (kio's Rust runtime, for one) kills this process, and only a parent can
then keep the crashing input and report it. The gateway's own packages are
instrumented for coverage; kio's Python layer and its native reader are exercised
but not instrumented.
"""

from __future__ import annotations

import os
import sys

import atheris

with atheris.instrument_imports(include=["codec", "policies"]):
    # imported here, not lazily by the registry, so that they are instrumented too
    from policies.authorization import (  # noqa: F401
        admin,
        fetch_sessions,
        groups,
        metadata,
        partitioned,
        produce,
        transactions,
    )
    from tests.fuzz.targets import run_one


#: The supervisor passes a file where each input is written before it runs: if this
#: process dies without libFuzzer writing an artifact (SIGKILL, a second signal during
#: a native abort), the parent still knows which input did it.
_CURRENT = os.environ.get("FUZZ_CURRENT_INPUT")
_current_fd = os.open(_CURRENT, os.O_WRONLY | os.O_CREAT, 0o644) if _CURRENT else None


def _one_input(data: bytes) -> None:
    if _current_fd is not None:
        os.ftruncate(_current_fd, 0)
        os.pwrite(_current_fd, data, 0)
    run_one(data)


def main() -> None:
    atheris.Setup(sys.argv, _one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
