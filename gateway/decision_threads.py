"""Where a large request's ACL decision runs: a worker thread, with the cyclic GC paused.

A checked request's decision costs time in proportion to its entries (up to
~1.5 s per MiB of request when every entry is refused, see ``make bench``). On
the event loop that time stalls every connection of the process, so large
requests are decided in a thread (:func:`run_decision`) and the loop keeps
serving the others between the interpreter's GIL switches (every 5 ms).

Two things would still hold the GIL for the whole decision and stall the loop
anyway, and both are handled here:

* the cyclic garbage collector: a decision builds and drops hundreds of
  thousands of objects, which triggers full collections of 100-300 ms, run in
  whichever thread allocates and never interrupted by a GIL switch. It is
  paused while any decision thread runs (reference counting still frees almost
  everything a decision makes; cycles wait until the pause ends) and
  :func:`freeze_start_up_objects` moves what start-up loaded out of its reach;
* too many threads: at most :data:`DECISION_THREADS` decide at once, the rest
  wait their turn (the GIL makes more no faster).

A client sending large requests back to back could keep the collector paused for
good, and reference cycles made meanwhile would never be freed: after
:data:`MAX_COLLECTOR_PAUSE_S` of continuous pause, the end of a decision runs one
full collection on the event loop (one stall of that length, that often, instead
of unbounded memory).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import TypeVar

import trio

__all__ = ["DECISION_THREADS", "freeze_start_up_objects", "run_decision"]

T = TypeVar("T")

#: Decision threads per process: two let one client's large request proceed while
#: another's is decided.
DECISION_THREADS = 2

_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("decision_threads")
#: Decisions running in threads now; touched only on the event-loop thread.
_running = 0
#: Whether the first of them found the collector on (and so must turn it back on).
_collector_was_on = False
#: Longest continuous pause before one collection is forced anyway.
MAX_COLLECTOR_PAUSE_S = 10.0
#: When the current pause began, or the last forced collection ran.
_paused_since = 0.0


def _decision_limiter() -> trio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(DECISION_THREADS)
        _limiter.set(limiter)
        return limiter


async def run_decision(decide: Callable[..., T], *args: object) -> T:
    """``decide(*args)`` in a decision thread, the cyclic collector paused meanwhile.

    ``decide`` must only share state that is safe to share with the event loop
    (the caller's documentation says what). Not abandoned on cancellation: the
    decision is bounded, and its result may be needed to undo state it touched.
    """
    async with _decision_limiter():
        _pause_collector()
        try:
            return await trio.to_thread.run_sync(decide, *args)
        finally:
            _resume_collector()


def _pause_collector() -> None:
    global _running, _collector_was_on, _paused_since
    if _running == 0:
        _collector_was_on = gc.isenabled()
        _paused_since = time.monotonic()
        gc.disable()
    _running += 1


def _resume_collector() -> None:
    global _running, _paused_since
    _running -= 1
    if not _collector_was_on:
        return
    if _running == 0:
        gc.enable()
    elif time.monotonic() - _paused_since > MAX_COLLECTOR_PAUSE_S:
        gc.collect()  # decisions kept overlapping: free the cycles made meanwhile
        _paused_since = time.monotonic()


def freeze_start_up_objects() -> None:
    """Move every object alive now (modules, decoders, config) to the permanent
    generation: full collections then no longer walk them, which keeps each one
    short wherever it runs."""
    gc.collect()
    gc.freeze()
