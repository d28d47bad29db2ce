"""QuotaManager: Kafka's entity precedence, throttle times, per-topic quotas, reloads."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.quotas.config import (
    ClientQuotaConfig,
    QuotasConfig,
    TopicQuotaConfig,
    WindowConfig,
    describe_entity,
)
from policies.quotas.manager import (
    FETCH_BYTES,
    NO_THROTTLE,
    PRODUCE_BYTES,
    REQUESTS,
    QuotaManager,
    Throttle,
)
from policies.quotas.store import InProcessQuotaStore

ALICE = "User:alice"
BOB = "User:bob"
DEFAULT = "<default>"
Entity = tuple[str | None, str | None]


def client(principal: str | None = None, client_id: str | None = None, **rates: float) -> Any:
    return ClientQuotaConfig(principal=principal, client_id=client_id, **rates)


def manager(*clients: ClientQuotaConfig, **config: Any) -> QuotaManager:
    return QuotaManager(QuotasConfig(clients=list(clients), **config))


# --- nothing configured ---------------------------------------------------------------


@pytest.mark.parametrize("config", [None, QuotasConfig()])
def test_no_quotas_never_throttle(config: QuotasConfig | None) -> None:
    quotas = QuotaManager(config)
    assert not quotas.enabled
    assert not (quotas.limits_produce or quotas.limits_fetch or quotas.limits_requests)
    assert not quotas.has_topic_quotas
    assert quotas.record_produce(ALICE, "c", 10**12, {"t": 10**12}, 0.0) is NO_THROTTLE
    assert quotas.record_fetch(ALICE, "c", 10**12, None, 0.0) is NO_THROTTLE
    assert quotas.record_request(ALICE, "c", 0.0) is NO_THROTTLE


def test_what_to_measure() -> None:
    quotas = manager(
        client(ALICE, fetch_bytes_per_second=10),
        topics=[TopicQuotaConfig(topic="t", produce_bytes_per_second=5)],
    )
    assert quotas.enabled
    assert (quotas.limits_produce, quotas.limits_fetch, quotas.limits_requests) == (
        True,
        True,
        False,
    )
    assert quotas.has_topic_quotas and quotas.has_topic_produce_quotas
    assert not quotas.has_topic_fetch_quotas
    assert manager(client(ALICE, requests_per_second=1)).limits_requests


# --- throttle time ---------------------------------------------------------------------


def test_throttle_time_matches_kafkas_formula() -> None:
    quotas = manager(client(ALICE, produce_bytes_per_second=100))
    # 900 B at t=0: 90 B/s over the 10 s minimum window, within quota.
    assert quotas.record_produce(ALICE, "c", 900, {}, 0.0) is NO_THROTTLE
    # 600 B more: 1500 B / 10 s = 150 B/s; (150 - 100) / 100 * 10 s = 5 s.
    throttle = quotas.record_produce(ALICE, "c", 600, {}, 0.0)
    assert throttle == Throttle(
        delay_ms=5000,
        quota=PRODUCE_BYTES,
        entity=f"principal={ALICE}",
        limit=100.0,
        rate=150.0,
    )


def test_throttle_is_capped_at_the_window() -> None:
    quotas = manager(
        client(ALICE, produce_bytes_per_second=1),
        window=WindowConfig(samples=5, sample_ms=200),
    )
    assert quotas.record_produce(ALICE, "c", 10**9, {}, 0.0).delay_ms == 1000


def test_recording_happens_even_when_throttled() -> None:
    # Kafka (KIP-219) serves the request and delays the client afterwards, so the
    # throttled bytes count: the next request is throttled longer.
    quotas = manager(client(ALICE, produce_bytes_per_second=100))
    first = quotas.record_produce(ALICE, "c", 1500, {}, 0.0)
    second = quotas.record_produce(ALICE, "c", 100, {}, 0.0)
    assert (first.delay_ms, second.delay_ms) == (5000, 6000)


def test_request_rate_quota() -> None:
    quotas = manager(client(client_id="poller", requests_per_second=2))
    delays = [quotas.record_request(ALICE, "poller", 0.0).delay_ms for _ in range(22)]
    # 20 requests in the 10 s minimum window are exactly 2/s; the 21st is over.
    assert delays[:20] == [0] * 20
    assert delays[20:] == [500, 1000]
    assert quotas.record_request(ALICE, "other", 0.0) is NO_THROTTLE


def test_fetch_quota_is_separate_from_produce() -> None:
    quotas = manager(client(ALICE, produce_bytes_per_second=100, fetch_bytes_per_second=1000))
    assert quotas.record_fetch(ALICE, "c", 5000, None, 0.0) is NO_THROTTLE
    assert quotas.record_produce(ALICE, "c", 900, {}, 0.0) is NO_THROTTLE
    throttle = quotas.record_fetch(ALICE, "c", 10_000, None, 0.0)
    assert (throttle.quota, throttle.delay_ms) == (FETCH_BYTES, 5000)


def test_null_client_id_is_the_empty_client_id() -> None:
    quotas = manager(client(client_id=DEFAULT, requests_per_second=1))
    meter = quotas.resolve(REQUESTS, ALICE, None)
    assert meter is not None and meter.entity == "client_id="
    assert quotas.resolve(REQUESTS, ALICE, "") == meter


# --- precedence (KIP-55) -----------------------------------------------------------------

# Kafka's order for user U = alice, client C = loader, with the meter each level gives.
LEVELS: list[tuple[Entity, str]] = [
    ((ALICE, "loader"), f"principal={ALICE}, client_id=loader"),
    ((ALICE, DEFAULT), f"principal={ALICE}, client_id=loader"),
    ((ALICE, None), f"principal={ALICE}"),
    ((DEFAULT, "loader"), f"principal={ALICE}, client_id=loader"),
    ((DEFAULT, DEFAULT), f"principal={ALICE}, client_id=loader"),
    ((DEFAULT, None), f"principal={ALICE}"),
    ((None, "loader"), "client_id=loader"),
    ((None, DEFAULT), "client_id=loader"),
]


@pytest.mark.parametrize("level", range(len(LEVELS)), ids=[str(e) for e, _ in LEVELS])
def test_each_precedence_level_wins_over_the_levels_below(level: int) -> None:
    # Configure this level and every less specific one, each with its own limit.
    entries = [
        client(*entity, produce_bytes_per_second=1000 + i)
        for i, (entity, _) in enumerate(LEVELS)
        if i >= level
    ]
    quotas = manager(*reversed(entries))  # file order must not matter
    meter = quotas.resolve(PRODUCE_BYTES, ALICE, "loader")
    entity, metered = LEVELS[level]
    assert meter is not None
    assert (meter.limit, meter.source, meter.entity) == (
        1000 + level,
        describe_entity(*entity),
        metered,
    )


def test_unmatched_principal_and_client_are_unlimited() -> None:
    quotas = manager(client(ALICE, "loader", produce_bytes_per_second=10))
    assert quotas.resolve(PRODUCE_BYTES, BOB, "loader") is None
    assert quotas.resolve(PRODUCE_BYTES, ALICE, "other") is None
    assert quotas.record_produce(BOB, "loader", 10**9, {}, 0.0) is NO_THROTTLE


def test_each_quota_kind_resolves_independently() -> None:
    quotas = manager(
        client(ALICE, "loader", produce_bytes_per_second=10),
        client(DEFAULT, fetch_bytes_per_second=20),
        client(client_id=DEFAULT, requests_per_second=30),
    )
    meters = [quotas.resolve(q, ALICE, "loader") for q in (PRODUCE_BYTES, FETCH_BYTES, REQUESTS)]
    assert [(m.limit, m.entity) for m in meters if m is not None] == [
        (10, f"principal={ALICE}, client_id=loader"),
        (20, f"principal={ALICE}"),
        (30, "client_id=loader"),
    ]


PRINCIPALS = [ALICE, BOB, "User:carol"]
CLIENTS = ["loader", "reporter", ""]
entity_options = st.tuples(
    st.sampled_from([ALICE, BOB, DEFAULT, None]),
    st.sampled_from(["loader", "reporter", DEFAULT, None]),
).filter(lambda entity: entity != (None, None))
quota_configs = st.dictionaries(
    entity_options,
    st.fixed_dictionaries(
        {},
        optional={
            PRODUCE_BYTES: st.integers(1, 10**6),
            FETCH_BYTES: st.integers(1, 10**6),
            REQUESTS: st.integers(1, 1000),
        },
    ).filter(bool),
    max_size=12,
)


def reference_resolution(
    config: dict[Entity, dict[str, int]], quota: str, principal: str, client_id: str
) -> tuple[Entity, int] | None:
    """KIP-55 spelt out: the first configured entity, in Kafka's order, that sets `quota`."""
    order = [
        ("user", "client"),
        ("user", "<default>"),
        ("user", None),
        ("<default>", "client"),
        ("<default>", "<default>"),
        ("<default>", None),
        (None, "client"),
        (None, "<default>"),
    ]
    actual = {"user": principal, "client": client_id}
    for user_part, client_part in order:
        entity = (
            actual.get(user_part or "", user_part),
            actual.get(client_part or "", client_part),
        )
        rates = config.get(entity, {})
        if quota in rates:
            return entity, rates[quota]
    return None


@given(
    config=quota_configs,
    principal=st.sampled_from(PRINCIPALS),
    client_id=st.sampled_from(CLIENTS),
)
def test_resolution_matches_the_reference(
    config: dict[Entity, dict[str, int]], principal: str, client_id: str
) -> None:
    quotas = manager(
        *(
            ClientQuotaConfig.model_validate({"principal": p, "client_id": c, **rates})
            for (p, c), rates in config.items()
        )
    )
    for quota in (PRODUCE_BYTES, FETCH_BYTES, REQUESTS):
        expected = reference_resolution(config, quota, principal, client_id)
        meter = quotas.resolve(quota, principal, client_id)
        if expected is None:
            assert meter is None
            continue
        (entity_principal, entity_client), limit = expected
        assert meter is not None
        assert (meter.source, meter.limit) == (describe_entity(*expected[0]), limit)
        metered = []
        if entity_principal is not None:
            metered.append(f"principal={principal}")
        if entity_client is not None:
            metered.append(f"client_id={client_id}")
        assert meter.entity == ", ".join(metered)
        # Twice: the cached answer is the same.
        assert quotas.resolve(quota, principal, client_id) == meter


# --- shared and separate meters ------------------------------------------------------------


def test_default_principal_gives_each_principal_its_own_meter() -> None:
    quotas = manager(client(DEFAULT, produce_bytes_per_second=100))
    assert quotas.record_produce(ALICE, "a", 1000, {}, 0.0) is NO_THROTTLE
    assert quotas.record_produce(BOB, "b", 1000, {}, 0.0) is NO_THROTTLE
    assert quotas.record_produce(ALICE, "a", 500, {}, 0.0).delay_ms == 5000
    assert quotas.record_produce(BOB, "b", 100, {}, 0.0).delay_ms == 1000


def test_connections_of_one_entity_share_a_meter() -> None:
    # Entity (alice): every client id of alice counts against one meter.
    quotas = manager(client(ALICE, produce_bytes_per_second=100))
    assert quotas.record_produce(ALICE, "first", 1000, {}, 0.0) is NO_THROTTLE
    throttle = quotas.record_produce(ALICE, "second", 500, {}, 0.0)
    assert (throttle.delay_ms, throttle.entity) == (5000, f"principal={ALICE}")


def test_client_id_entity_is_shared_across_principals() -> None:
    quotas = manager(client(client_id="loader", produce_bytes_per_second=100))
    assert quotas.record_produce(ALICE, "loader", 1000, {}, 0.0) is NO_THROTTLE
    throttle = quotas.record_produce(BOB, "loader", 500, {}, 0.0)
    assert (throttle.delay_ms, throttle.entity) == (5000, "client_id=loader")


# --- per-topic quotas -------------------------------------------------------------------


def topic_quotas() -> QuotaManager:
    return manager(
        client(ALICE, produce_bytes_per_second=10**6),
        topics=[
            TopicQuotaConfig(
                topic="orders.", pattern_type="prefixed", produce_bytes_per_second=100
            ),
            TopicQuotaConfig(
                topic="orders.eu.", pattern_type="prefixed", produce_bytes_per_second=200
            ),
            TopicQuotaConfig(topic="orders.eu.vip", produce_bytes_per_second=300),
            TopicQuotaConfig(topic="*-audit", pattern_type="glob", fetch_bytes_per_second=50),
            TopicQuotaConfig(topic="orders.*", pattern_type="glob", fetch_bytes_per_second=60),
        ],
    )


@pytest.mark.parametrize(
    ("quota", "topic", "limit", "source"),
    [
        (PRODUCE_BYTES, "orders.eu.vip", 300, "topic='orders.eu.vip'"),
        (PRODUCE_BYTES, "orders.eu.vip2", 200, "topic='orders.eu.' (prefixed)"),
        (PRODUCE_BYTES, "orders.us", 100, "topic='orders.' (prefixed)"),
        (PRODUCE_BYTES, "payments", None, None),
        (FETCH_BYTES, "orders.us", 60, "topic='orders.*' (glob)"),
        (FETCH_BYTES, "pay-audit", 50, "topic='*-audit' (glob)"),
        (FETCH_BYTES, "orders-audit", 50, "topic='*-audit' (glob)"),
    ],
)
def test_topic_pattern_precedence(
    quota: str, topic: str, limit: float | None, source: str | None
) -> None:
    meter = topic_quotas().resolve_topic(quota, topic)
    if limit is None:
        assert meter is None
    else:
        assert meter is not None
        assert (meter.limit, meter.source, meter.entity) == (limit, source, f"topic={topic}")


def test_topic_quota_is_shared_by_all_clients_and_separate_per_topic() -> None:
    quotas = topic_quotas()
    assert quotas.record_produce(ALICE, "a", 1000, {"orders.us": 1000}, 0.0) is NO_THROTTLE
    # Bob is not limited as a client, but orders.us is now at 1500 B / 10 s = 150 B/s.
    throttle = quotas.record_produce(BOB, "b", 500, {"orders.us": 500}, 0.0)
    assert throttle == Throttle(5000, PRODUCE_BYTES, "topic=orders.us", 100.0, 150.0)
    # Another topic matching the same pattern has its own meter.
    assert quotas.record_produce(BOB, "b", 1000, {"orders.fr": 1000}, 0.0) is NO_THROTTLE


def test_the_longest_delay_wins() -> None:
    quotas = manager(
        client(ALICE, produce_bytes_per_second=100),
        topics=[
            TopicQuotaConfig(topic="a", produce_bytes_per_second=50),
            TopicQuotaConfig(topic="b", produce_bytes_per_second=30),
        ],
    )
    # Client: 1200 B / 10 s = 120 B/s -> 2 s. a: 600/10 = 60 -> 2 s. b: 600/10 = 60 -> 10 s.
    throttle = quotas.record_produce(ALICE, "c", 1200, {"a": 600, "b": 600}, 0.0)
    assert (throttle.delay_ms, throttle.entity, throttle.limit) == (10_000, "topic=b", 30.0)


def test_fetch_topic_quota_needs_topic_bytes() -> None:
    quotas = topic_quotas()
    assert quotas.record_fetch(ALICE, "a", 10**6, None, 0.0) is NO_THROTTLE
    throttle = quotas.record_fetch(ALICE, "a", 1000, {"pay-audit": 1000}, 0.0)
    assert (throttle.delay_ms, throttle.entity) == (10_000, "topic=pay-audit")


# --- reloads ------------------------------------------------------------------------------


def test_reload_with_the_same_store_keeps_the_meters() -> None:
    old = manager(client(ALICE, produce_bytes_per_second=100))
    assert old.record_produce(ALICE, "c", 1000, {}, 0.0) is NO_THROTTLE
    # The limit is lowered on reload: the 1000 B already sent count against it.
    config = QuotasConfig(clients=[client(ALICE, produce_bytes_per_second=80)])
    new = QuotaManager(config, old.store)
    assert new.store is old.store
    throttle = new.record_produce(ALICE, "c", 100, {}, 0.5)
    assert throttle.rate == pytest.approx(1100 / 10.5)
    assert throttle.delay_ms == round((1100 / 10.5 - 80) / 80 * 10_500)  # 3250 ms


def test_reload_without_the_store_starts_afresh() -> None:
    old = manager(client(ALICE, produce_bytes_per_second=100))
    old.record_produce(ALICE, "c", 1000, {}, 0.0)
    fresh = QuotaManager(old.config)
    assert fresh.record_produce(ALICE, "c", 100, {}, 0.5) is NO_THROTTLE


def test_two_managers_on_one_store_add_up() -> None:
    # What a store shared by two gateway replicas would do.
    store = InProcessQuotaStore()
    config = QuotasConfig(clients=[client(ALICE, produce_bytes_per_second=100)])
    first, second = QuotaManager(config, store), QuotaManager(config, store)
    assert first.record_produce(ALICE, "c", 1000, {}, 0.0) is NO_THROTTLE
    assert second.record_produce(ALICE, "c", 500, {}, 0.0).delay_ms == 5000


# --- a producer throttled to its quota -----------------------------------------------------


def throttled_producer(
    quotas: QuotaManager, request_bytes: int, start: float, until: float
) -> list[float]:
    """Send as fast as allowed, each request waiting its throttle; the send times."""
    now, sent = start, []
    while now < until:
        throttle = quotas.record_produce(ALICE, "producer", request_bytes, {}, now)
        sent.append(now)
        now += max(throttle.delay_ms / 1000, 0.001)  # at least 1 ms per round trip
    return sent


def bytes_per_second(sent: list[float], request_bytes: int, start: float, end: float) -> float:
    return sum(request_bytes for t in sent if start <= t < end) / (end - start)


@settings(max_examples=25, deadline=None)
@given(
    requests_per_second=st.integers(min_value=20, max_value=500),
    start=st.floats(min_value=0, max_value=1000, allow_nan=False),
)
def test_producer_converges_to_the_quota_within_ten_percent(
    requests_per_second: int, start: float
) -> None:
    quota = 1_048_576
    request_bytes = quota // requests_per_second
    window = WindowConfig(samples=11, sample_ms=100)  # an 1.1 s window
    quotas = manager(client(ALICE, produce_bytes_per_second=quota), window=window)
    # The first window admits a burst of a whole window's worth; measure after it.
    measured_from = start + 2.2
    sent = throttled_producer(quotas, request_bytes, start, measured_from + 10)
    rate = bytes_per_second(sent, request_bytes, measured_from, measured_from + 10)
    assert rate == pytest.approx(quota, rel=0.10)


def test_default_window_admits_one_window_burst_then_holds_the_quota() -> None:
    # With Kafka's default window (11 x 1 s) a fresh client may burst about 10 s worth
    # at once (the minimum window); it then averages out to the quota, in bursts.
    quota = 1_048_576
    quotas = manager(client(ALICE, produce_bytes_per_second=quota))
    sent = throttled_producer(quotas, 65536, 0.0, 132)
    # Requests take 1 ms here, and the window grows with time: 10.2 s by 0.2 s.
    burst = bytes_per_second(sent, 65536, 0.0, 0.2) * 0.2
    assert 10 * quota <= burst <= 10.2 * quota + 65536
    assert bytes_per_second(sent, 65536, 22, 132) == pytest.approx(quota, rel=0.03)
