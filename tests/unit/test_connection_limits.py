"""ConnectionLimiter: open connections per IP and principal, creation rate per IP, reloads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.quotas.config import ConnectionLimitsConfig
from policies.quotas.connections import ConnectionLimiter

IP = "10.0.0.1"
OTHER_IP = "10.0.0.2"


def limiter(**limits: float) -> ConnectionLimiter:
    return ConnectionLimiter(ConnectionLimitsConfig(**limits))  # type: ignore[arg-type]


# --- open connections per IP ----------------------------------------------------------


def test_max_per_ip() -> None:
    limits = limiter(max_per_ip=2)
    assert limits.admit_ip(IP, 0.0) is None
    assert limits.admit_ip(IP, 0.0) is None
    assert limits.admit_ip(IP, 0.0) == (
        "client 10.0.0.1 has 2 open connections (limit max_per_ip=2)"
    )
    assert limits.open_connections(ip=IP) == 2  # the refused one is not counted
    assert limits.admit_ip(OTHER_IP, 0.0) is None  # another client is independent
    limits.release_ip(IP)
    assert limits.open_connections(ip=IP) == 1
    assert limits.admit_ip(IP, 0.0) is None


def test_counts_are_dropped_at_zero_and_never_negative() -> None:
    limits = limiter(max_per_ip=1)
    limits.release_ip(IP)  # never admitted: ignored
    assert limits.open_connections(ip=IP) == 0
    assert limits.admit_ip(IP, 0.0) is None
    limits.release_ip(IP)
    limits.release_ip(IP)
    assert limits.open_connections(ip=IP) == 0
    assert limits.admit_ip(IP, 0.0) is None
    assert limits.admit_ip(IP, 0.0) is not None


# --- open connections per principal --------------------------------------------------------


def test_max_per_principal() -> None:
    limits = limiter(max_per_principal=1)
    assert limits.admit_principal("User:alice") is None
    assert limits.admit_principal("User:alice") == (
        "principal User:alice has 1 open connections (limit max_per_principal=1)"
    )
    assert limits.admit_principal("User:bob") is None
    limits.release_principal("User:alice")
    assert limits.open_connections(principal="User:alice") == 0
    assert limits.admit_principal("User:alice") is None


def test_without_limits_everything_is_admitted_and_counted() -> None:
    limits = ConnectionLimiter(None)
    for _ in range(1000):
        assert limits.admit_ip(IP, 0.0) is None
        assert limits.admit_principal("User:alice") is None
    assert limits.open_connections(ip=IP) == 1000
    assert limits.open_connections(principal="User:alice") == 1000


def test_open_connections_needs_exactly_one_key() -> None:
    limits = ConnectionLimiter(None)
    with pytest.raises(ValueError, match="exactly one"):
        limits.open_connections()
    with pytest.raises(ValueError, match="exactly one"):
        limits.open_connections(ip=IP, principal="User:alice")


# --- creation rate per IP -------------------------------------------------------------


def test_creation_rate_admits_a_burst_of_the_limit_then_refuses() -> None:
    limits = limiter(max_creation_rate_per_ip=20)
    assert [limits.admit_ip(IP, 0.0) for _ in range(20)] == [None] * 20
    assert limits.admit_ip(IP, 0.0) == (
        "client 10.0.0.1 opens connections at 21.0/s (limit max_creation_rate_per_ip=20)"
    )
    assert limits.admit_ip(OTHER_IP, 0.0) is None
    # The window is a sliding second: still full at 1.0 s ...
    assert limits.admit_ip(IP, 1.0) is not None
    # ... and once the burst's sample has expired (11 samples of 100 ms), room again.
    assert limits.admit_ip(IP, 1.1) is None


def test_refused_connections_do_not_count_towards_the_rate() -> None:
    limits = limiter(max_creation_rate_per_ip=5)
    for _ in range(5):
        assert limits.admit_ip(IP, 0.0) is None
    for _ in range(100):  # a client hammering while refused
        assert limits.admit_ip(IP, 0.5) is not None
    assert limits.admit_ip(IP, 1.1) is None


def test_connection_count_refusal_does_not_count_towards_the_rate() -> None:
    limits = limiter(max_per_ip=1, max_creation_rate_per_ip=2)
    assert limits.admit_ip(IP, 0.0) is None
    for _ in range(10):
        assert "max_per_ip" in (limits.admit_ip(IP, 0.0) or "")
    limits.release_ip(IP)
    assert limits.admit_ip(IP, 0.0) is None  # 2 connections in the window: at the limit


@pytest.mark.parametrize(
    ("offered", "admitted_low", "admitted_high"), [(10, 10, 10), (50, 18, 22), (200, 18, 22)]
)
def test_steady_creation_rate_is_held_at_the_limit(
    offered: int, admitted_low: float, admitted_high: float
) -> None:
    limits = limiter(max_creation_rate_per_ip=20)
    admitted = 0
    seconds = 10
    for i in range(offered * seconds):
        now = 100.0 + i / offered
        if limits.admit_ip(IP, now) is None:
            admitted += 1
            limits.release_ip(IP)  # short-lived connections: only the rate matters
    assert admitted_low <= admitted / seconds <= admitted_high


# --- reloads --------------------------------------------------------------------------------


def test_with_config_keeps_the_counts() -> None:
    old = ConnectionLimiter(None)
    for _ in range(3):
        assert old.admit_ip(IP, 0.0) is None
    assert old.admit_principal("User:alice") is None
    new = old.with_config(ConnectionLimitsConfig(max_per_ip=3, max_per_principal=1))
    assert new.open_connections(ip=IP) == 3
    assert new.admit_ip(IP, 0.0) is not None
    assert new.admit_principal("User:alice") is not None
    # Connections admitted before the reload are released through the old limiter.
    old.release_ip(IP)
    assert new.admit_ip(IP, 0.0) is None
    assert new.config.max_per_ip == 3 and old.config.max_per_ip is None


def test_with_config_keeps_the_creation_rate() -> None:
    old = limiter(max_creation_rate_per_ip=10)
    for _ in range(10):
        assert old.admit_ip(IP, 0.0) is None
    new = old.with_config(ConnectionLimitsConfig(max_creation_rate_per_ip=5))
    assert new.admit_ip(IP, 0.5) is not None


operations = st.lists(
    st.tuples(st.sampled_from(["admit", "release"]), st.sampled_from([IP, OTHER_IP])),
    max_size=200,
)


@given(ops=operations, limit=st.integers(min_value=1, max_value=5))
def test_open_connections_never_exceed_the_limit(ops: list[tuple[str, str]], limit: int) -> None:
    limits = limiter(max_per_ip=limit)
    model = {IP: 0, OTHER_IP: 0}
    for op, ip in ops:
        if op == "admit":
            admitted = limits.admit_ip(ip, 0.0) is None
            assert admitted == (model[ip] < limit)
            model[ip] += admitted
        else:
            limits.release_ip(ip)
            model[ip] = max(model[ip] - 1, 0)
        assert limits.open_connections(ip=ip) == model[ip] <= limit
