"""Windowed rate meters and Kafka's throttle-time formula.

A :class:`SampledRate` measures a rate the way Kafka's ``Rate`` over a
``SampledStat`` does: the window is ``samples`` samples of ``sample_ms`` each, the
rate is the sum of the live samples divided by the window length, and the window
length is the time since the start of the oldest live sample but never less than
``samples - 1`` full samples (``Rate.windowSize``). That floor is what keeps a
quiet client's first requests from measuring as an enormous rate.

As in Kafka, a sample starts at the first recording after the previous sample
ended, not at a clock boundary. That matters: with clock-aligned samples the
oldest sample's empty lead-in counts as window time, which measured a client
throttled to "as fast as allowed" up to ~8% over its quota in simulations, where
Kafka's samples stay within ~2%. (One Kafka quirk is not copied: Kafka resets an
expired sample to "now" and keeps it, so it can later pose as the oldest sample;
here an expired sample is simply gone.)

Time is always passed in (``now``, seconds on a monotonic clock); nothing here
reads a clock, so tests drive meters with an injected time.
"""

from __future__ import annotations

from collections import deque
from typing import Final, NamedTuple

__all__ = ["MIN_WINDOW_SECONDS", "RateReading", "SampledRate", "throttle_ms"]

#: Shortest window a rate is divided by (Kafka's 1 ms), so a rate is always finite.
MIN_WINDOW_SECONDS: Final = 0.001


class RateReading(NamedTuple):
    """A measured rate (per second) and the window length (seconds) it was measured over."""

    rate: float
    window_seconds: float


class SampledRate:
    """A sliding-window rate over at most ``samples`` samples of ``sample_ms`` milliseconds.

    As in Kafka's ``SampledStat``, a sample starts with the first recording after
    the previous sample has ended, and a sample expires ``samples * sample_ms``
    after its start. Recording and measuring cost O(1) amortised: the live samples
    sit in a deque with a running total.
    """

    __slots__ = ("_expiry_s", "_live", "_sample_ms", "_sample_s", "_samples", "_total")

    def __init__(self, samples: int, sample_ms: int) -> None:
        if samples < 1 or sample_ms < 1:
            raise ValueError(f"invalid window: {samples} samples of {sample_ms} ms")
        self._samples = samples
        self._sample_ms = sample_ms
        self._sample_s = sample_ms / 1000.0
        self._expiry_s = samples * sample_ms / 1000.0
        # Live samples, oldest first, each [start (seconds), sum]; newest is current.
        self._live: deque[list[float]] = deque()
        self._total = 0.0  # sum of the live samples

    @property
    def samples(self) -> int:
        """Number of samples in the window."""
        return self._samples

    @property
    def sample_ms(self) -> int:
        """Length of one sample in milliseconds."""
        return self._sample_ms

    def record(self, amount: float, now: float) -> RateReading:
        """Add ``amount`` (negative takes back an earlier recording) and measure at ``now``."""
        self._expire(now)
        live = self._live
        if not live or now - live[-1][0] >= self._sample_s:
            if len(live) == self._samples:
                self._total -= live.popleft()[1]
            live.append([now, amount])
        else:
            # Also when the clock stepped back: count it in the newest sample.
            live[-1][1] += amount
        self._total += amount
        return self._reading(now)

    def measure(self, now: float) -> RateReading:
        """The rate at ``now`` without recording anything."""
        self._expire(now)
        return self._reading(now)

    def is_idle(self, now: float) -> bool:
        """True when every sample has expired: the meter reads as new."""
        return not self._live or now - self._live[-1][0] >= self._expiry_s

    def window_seconds(self, now: float) -> float:
        """Kafka's ``Rate.windowSize``: time since the oldest live sample began.

        When fewer than ``samples - 1`` full samples have elapsed, the missing full
        samples are added, so the window is never shorter than ``samples - 1``
        samples: a quiet client's first requests do not measure as a huge rate.
        """
        live = self._live
        elapsed_ms = (now - live[0][0]) * 1000.0 if live else 0.0
        sample_ms = self._sample_ms
        full_samples = int(elapsed_ms // sample_ms)
        if full_samples < self._samples - 1:
            elapsed_ms += (self._samples - 1 - full_samples) * sample_ms
        return max(elapsed_ms / 1000.0, MIN_WINDOW_SECONDS)

    def _expire(self, now: float) -> None:
        live = self._live
        while live and now - live[0][0] >= self._expiry_s:
            self._total -= live.popleft()[1]
        if not live:
            self._total = 0.0  # no drift left over from float additions

    def _reading(self, now: float) -> RateReading:
        window = self.window_seconds(now)
        return RateReading(self._total / window, window)


def throttle_ms(rate: float, limit: float, window_seconds: float, max_ms: int) -> int:
    """How long to delay a client whose rate is ``rate`` against ``limit`` (Kafka's formula).

    ``(rate - limit) / limit * window`` is the time, with nothing more recorded, until
    the windowed rate falls back to ``limit`` (Kafka's ``QuotaUtils.throttleTime``).
    Capped at ``max_ms`` (the whole window) and 0 when the rate is within the limit.
    """
    if rate <= limit:
        return 0
    delay = (rate - limit) / limit * window_seconds * 1000.0
    return min(int(delay + 0.5), max_ms)
