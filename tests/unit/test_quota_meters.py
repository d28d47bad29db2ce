"""Sampled rate meters, Kafka's throttle formula and the in-process meter store (injected clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.quotas.config import WindowConfig
from policies.quotas.meters import RateReading, SampledRate, throttle_ms
from policies.quotas.store import InProcessQuotaStore

KAFKA_DEFAULT = WindowConfig()  # 11 samples of 1 s


def meter() -> SampledRate:
    return SampledRate(samples=11, sample_ms=1000)


# --- window length (Kafka's Rate.windowSize) ---------------------------------------------


def test_first_recording_is_measured_over_samples_minus_one_full_samples() -> None:
    # Without the floor a first 1000-byte request would measure as 1000 B / 0 s.
    assert meter().record(1000, now=0.0) == RateReading(rate=100.0, window_seconds=10.0)


def test_window_grows_with_the_fraction_of_the_current_sample() -> None:
    rate = meter()
    rate.record(1000, now=0.0)
    # 2.5 s since the oldest sample began: 2 full samples, so 8 more are added.
    reading = rate.record(50, now=2.5)
    assert reading.window_seconds == pytest.approx(10.5)
    assert reading.rate == pytest.approx(1050 / 10.5)


def test_steady_window_spans_between_n_minus_one_and_n_samples() -> None:
    rate = meter()
    for second in range(30):
        reading = rate.record(100, now=second + 0.25)
    # Each recording started a sample; the 11 begun at 19.25 s .. 29.25 s are live.
    assert reading == pytest.approx((1100 / 10.0, 10.0))
    # Halfway through the current sample the window has grown by half a sample.
    assert rate.measure(29.75) == pytest.approx((1100 / 10.5, 10.5))
    # Then the oldest sample (begun 19.25 s) expires at 30.25 s.
    assert rate.measure(30.25) == pytest.approx((1000 / 10.0, 10.0))


def test_samples_leave_the_window_one_by_one() -> None:
    rate = meter()
    rate.record(500, now=0.0)
    rate.record(300, now=5.0)
    # At 10.9 s sample 0 is still the oldest of 11 live samples.
    assert rate.measure(10.9) == pytest.approx((800 / 10.9, 10.9))
    # At 11.0 s sample 0 has left; sample 5 would be the oldest but the window
    # floor of 10 samples still applies (6 s elapsed + 4 added).
    assert rate.measure(11.0) == pytest.approx((300 / 10.0, 10.0))
    # Once every sample has left, the meter reads zero again.
    assert not rate.is_idle(15.99)
    assert rate.is_idle(16.0)
    assert rate.measure(16.0).rate == 0.0


def test_samples_start_at_the_first_recording_not_on_the_clock() -> None:
    rate = meter()
    rate.record(10_000, now=0.0)
    # After a long gap, a new sample begins at 100.25 s: the window is the floor.
    assert rate.record(100, now=100.25) == pytest.approx((100 / 10.0, 10.0))
    # The sample runs until 101.25 s; a recording at 101.125 s still falls in it.
    assert rate.record(100, now=101.125) == pytest.approx((200 / 10.875, 10.875))
    # At 101.25 s a second sample begins: one full sample elapsed, 9 are added.
    assert rate.record(100, now=101.25) == pytest.approx((300 / 10.0, 10.0))


def test_negative_amount_takes_a_recording_back() -> None:
    rate = meter()
    rate.record(700, now=1.0)
    rate.record(1, now=1.5)
    assert rate.record(-1, now=1.5).rate == pytest.approx(700 / 10.5)


def test_clock_stepping_back_counts_in_the_newest_sample() -> None:
    rate = meter()
    rate.record(100, now=5.0)
    reading = rate.record(100, now=3.0)
    assert reading.rate * reading.window_seconds == pytest.approx(200)


def test_sub_second_samples() -> None:
    rate = SampledRate(samples=11, sample_ms=100)
    for i in range(20):
        rate.record(1, now=0.05 * i)
    # 20 events in 0.95 s: samples 0..9 live, 9 full ones, so one more is added.
    assert rate.measure(0.95) == pytest.approx((20 / 1.05, 1.05))
    # At 1.0 s, 10 full samples have elapsed: the window is exactly 1 s.
    assert rate.measure(1.0) == pytest.approx((20 / 1.0, 1.0))


def test_invalid_window_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid window"):
        SampledRate(samples=0, sample_ms=1000)


events = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=3, allow_nan=False),  # time since the previous event
        st.integers(min_value=0, max_value=10_000),  # amount
    ),
    min_size=1,
    max_size=60,
)


@given(
    events=events,
    samples=st.integers(min_value=2, max_value=12),
    sample_ms=st.sampled_from([10, 100, 250, 1000]),
)
def test_rate_covers_the_last_window_of_events(
    events: list[tuple[float, int]], samples: int, sample_ms: int
) -> None:
    """Every event of the last (n - 1) samples counts, none older than n samples does.

    A sample starts at most one sample length before any event in it and expires
    n samples after its start, which bounds what the live sum can hold.
    """
    rate = SampledRate(samples, sample_ms)
    sample_s = sample_ms / 1000
    now = 100.0
    history: list[tuple[float, int]] = []
    for gap, amount in events:
        now += gap
        history.append((now, amount))
        reading = rate.record(amount, now)
        live = reading.rate * reading.window_seconds
        surely_live = sum(a for t, a in history if now - t < (samples - 1) * sample_s - 1e-9)
        maybe_live = sum(a for t, a in history if now - t < samples * sample_s + 1e-9)
        assert surely_live - 1e-6 <= live <= maybe_live + 1e-6
        assert (samples - 1) * sample_s - 1e-9 <= reading.window_seconds
        assert reading.window_seconds <= samples * sample_s + 1e-9


# --- throttle time (Kafka's QuotaUtils.throttleTime) ---------------------------------


@pytest.mark.parametrize(
    ("rate", "limit", "window", "expected"),
    [
        (100.0, 100.0, 10.0, 0),  # at the limit: no delay
        (50.0, 100.0, 10.0, 0),
        (150.0, 100.0, 10.0, 5000),  # 50% over a 10 s window: 5 s
        (110.0, 100.0, 10.5, 1050),
        (100.0001, 100.0, 10.0, 0),  # rounds to 0 ms
        (100.0 + 0.05 / 1000, 100.0, 1000.0, 1),  # 0.5 ms rounds up
        (1e9, 1.0, 10.0, 11_000),  # capped at the whole window
    ],
)
def test_throttle_formula(rate: float, limit: float, window: float, expected: int) -> None:
    assert throttle_ms(rate, limit, window, max_ms=11_000) == expected


def test_throttle_of_a_burst_on_a_steady_rate() -> None:
    rate = meter()
    for second in range(20):
        rate.record(100, now=float(second))
    reading = rate.record(330, now=19.0)  # a burst: 1430 B over the 10 s window
    assert reading == pytest.approx((143.0, 10.0))
    delay = throttle_ms(reading.rate, 100.0, reading.window_seconds, 11_000)
    assert delay == 4300


# --- the in-process store ------------------------------------------------------------


def test_store_keeps_one_meter_per_key() -> None:
    store = InProcessQuotaStore()
    store.record("a", 100, 0.0, KAFKA_DEFAULT)
    store.record("a", 100, 0.5, KAFKA_DEFAULT)
    store.record("b", 10, 0.5, KAFKA_DEFAULT)
    assert store.measure("a", 0.5, KAFKA_DEFAULT).rate == pytest.approx(200 / 10.5)
    assert store.measure("b", 0.5, KAFKA_DEFAULT).rate == pytest.approx(10 / 10.0)
    assert store.measure("unknown", 0.5, KAFKA_DEFAULT) == (0.0, 10.0)
    assert len(store) == 2


def test_store_evicts_idle_meters() -> None:
    store = InProcessQuotaStore()
    store.record("quiet-1", 100, 0.0, KAFKA_DEFAULT)
    store.record("quiet-2", 100, 1.0, KAFKA_DEFAULT)
    store.record("busy", 100, 5.0, KAFKA_DEFAULT)
    store.record("busy", 100, 11.5, KAFKA_DEFAULT)  # quiet-1 idle since 11 s; quiet-2 not yet
    assert "quiet-1" not in store and "quiet-2" in store
    store.record("busy", 100, 12.0, KAFKA_DEFAULT)
    assert "quiet-2" not in store
    assert len(store) == 1


def test_store_never_evicts_the_meter_in_use() -> None:
    store = InProcessQuotaStore()
    store.record("a", 100, 0.0, KAFKA_DEFAULT)
    assert store.record("a", 100, 50.0, KAFKA_DEFAULT).rate == pytest.approx(10.0)
    assert "a" in store


def test_store_is_bounded_least_recently_used_first() -> None:
    store = InProcessQuotaStore(max_meters=2)
    store.record("a", 1, 0.0, KAFKA_DEFAULT)
    store.record("b", 1, 0.0, KAFKA_DEFAULT)
    store.record("a", 1, 0.1, KAFKA_DEFAULT)  # a is now more recent than b
    store.record("c", 1, 0.2, KAFKA_DEFAULT)
    assert ("a" in store, "b" in store, "c" in store) == (True, False, True)


def test_changed_window_restarts_the_meter() -> None:
    store = InProcessQuotaStore()
    store.record("a", 1000, 0.0, KAFKA_DEFAULT)
    short = WindowConfig(samples=2, sample_ms=1000)
    assert store.record("a", 10, 0.0, short).rate == pytest.approx(10 / 1.0)


def test_store_refuses_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="max_meters"):
        InProcessQuotaStore(max_meters=0)
