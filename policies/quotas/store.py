"""Where quota meters live: the :class:`QuotaStore` protocol and its in-process implementation.

The quota manager never holds meters itself; it records into a store by key
(``"produce|user=...|client=..."``, ``"fetch|topic=orders"``, ...). On a
configuration reload the runtime builds a new manager around the *same* store, so
meters survive reloads; meters of keys the new configuration no longer uses simply
go idle and are evicted.

A shared store (several gateway replicas enforcing one quota)
--------------------------------------------------------------
Implement :class:`QuotaStore` over a shared backend and pass it to every
:class:`~policies.quotas.manager.QuotaManager`. Kafka's samples (see
:mod:`policies.quotas.meters`) start whenever one process first records into them,
so replicas cannot add them up; a shared store uses clock-aligned buckets instead.
With Redis, for example, ``record`` would ``INCRBYFLOAT`` the bucket
``{key}:{now_ms // sample_ms}`` (expiring after one window) and read the live
buckets back (``MGET``, or a Lua script doing both in one round trip); the window
length is then ``now`` minus the start of the oldest non-empty live bucket, with
the same ``samples - 1`` floor. Aligned buckets measure a little leniently (the
oldest bucket's time before its first recording counts as window time): use short
samples (e.g. 100 ms) with a shared store.

What consistency this needs, and what it does not:

* Approximate is fine. Each replica adds its own amounts; the store aggregates.
  A replica that reads a slightly stale total throttles a little late or a little
  early; the windowed rate corrects itself on the following requests.
* Replica clocks must agree to well within one sample (NTP is plenty for 1 s
  samples) and ``now`` must then be a shared time base (wall clock) rather than
  each process's monotonic clock.
* ``record`` is on the request path and must not block the event loop: a
  networked store should record locally and reconcile asynchronously (e.g. push
  local deltas and pull the aggregate every few hundred milliseconds), answering
  ``record`` from its local view plus the last aggregate it has seen.
* Amounts may be negative (taking back a recording, as the connection limiter does
  for a refused connection); a sum store handles that for free.

The in-process store is not thread-safe; the gateway runs on one Trio thread.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, Protocol

from policies.quotas.config import WindowConfig
from policies.quotas.meters import RateReading, SampledRate

__all__ = ["DEFAULT_MAX_METERS", "InProcessQuotaStore", "QuotaStore"]

#: Meters an :class:`InProcessQuotaStore` keeps before evicting the least recently used.
DEFAULT_MAX_METERS: Final = 100_000

# Idle meters dropped per call: enough to keep up with churn, small enough to stay cheap.
_EVICTIONS_PER_CALL: Final = 2


class QuotaStore(Protocol):
    """Windowed rate meters, by key."""

    def record(self, key: str, amount: float, now: float, window: WindowConfig) -> RateReading:
        """Add ``amount`` to meter ``key`` at ``now``; the rate including it, and the window.

        ``amount`` may be negative to take back an earlier recording. A meter that
        does not exist yet (or whose window differs from ``window``) starts empty.
        """
        ...

    def measure(self, key: str, now: float, window: WindowConfig) -> RateReading:
        """The rate of meter ``key`` at ``now`` without recording (0 for an unknown key)."""
        ...


class InProcessQuotaStore:
    """Meters in a dict, at most ``max_meters`` of them.

    Idle meters (every sample out of the window, so they read as new) are evicted a
    couple per call, oldest use first; when the store is full the least recently
    used meter is evicted even if not idle, which forgets that client's recent
    usage (it is let through more, never throttled more).
    """

    def __init__(self, max_meters: int = DEFAULT_MAX_METERS) -> None:
        if max_meters < 1:
            raise ValueError(f"max_meters must be >= 1, got {max_meters}")
        self._max_meters = max_meters
        # Least recently used first; move_to_end on every use is O(1).
        self._meters: OrderedDict[str, SampledRate] = OrderedDict()

    def __len__(self) -> int:
        return len(self._meters)

    def __contains__(self, key: object) -> bool:
        return key in self._meters

    def record(self, key: str, amount: float, now: float, window: WindowConfig) -> RateReading:
        """See :meth:`QuotaStore.record`."""
        return self._meter(key, now, window).record(amount, now)

    def measure(self, key: str, now: float, window: WindowConfig) -> RateReading:
        """See :meth:`QuotaStore.measure`."""
        meter = self._meters.get(key)
        if meter is None or not _fits(meter, window):
            return RateReading(0.0, SampledRate(window.samples, window.sample_ms).measure(now)[1])
        return meter.measure(now)

    def _meter(self, key: str, now: float, window: WindowConfig) -> SampledRate:
        meters = self._meters
        meter = meters.get(key)
        if meter is not None and _fits(meter, window):
            meters.move_to_end(key)
        else:
            # New key, or the window changed on reload: start afresh.
            meter = SampledRate(window.samples, window.sample_ms)
            meters[key] = meter
            meters.move_to_end(key)
            while len(meters) > self._max_meters:
                meters.popitem(last=False)
        self._evict_idle(now)
        return meter

    def _evict_idle(self, now: float) -> None:
        meters = self._meters
        for _ in range(_EVICTIONS_PER_CALL):
            if len(meters) <= 1:
                return
            key, oldest = next(iter(meters.items()))
            if not oldest.is_idle(now):
                return
            del meters[key]


def _fits(meter: SampledRate, window: WindowConfig) -> bool:
    return meter.samples == window.samples and meter.sample_ms == window.sample_ms
