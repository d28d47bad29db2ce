"""Connection caps and timeouts (pure), and the passthrough rule for a completed login."""

from __future__ import annotations

import pytest

from gateway.client_auth import passthrough_exchange_succeeded
from policies.config import ListenerLimitsConfig
from policies.quotas.admission import ConnectionCaps, timeout_verdict

LIMITS = ListenerLimitsConfig(
    max_connections=4,
    max_connections_per_ip=3,
    max_unauthenticated_connections=3,
    max_unauthenticated_connections_per_ip=2,
    authentication_timeout_ms=2000,
    connections_max_idle_ms=10000,
)


def test_unauthenticated_cap_per_ip_then_login_frees_the_slot() -> None:
    caps = ConnectionCaps(LIMITS)
    assert caps.admit("a") is None and caps.admit("a") is None
    refusal = caps.admit("a")
    assert refusal == (
        "2 connections from a not logged in yet (limit max_unauthenticated_connections_per_ip=2)"
    )
    caps.logged_in("a")
    assert caps.admit("a") is None
    assert caps.open_connections("a") == (3, 2)
    assert "limit max_connections_per_ip=3" in str(caps.admit("a"))


def test_total_caps_and_release() -> None:
    caps = ConnectionCaps(LIMITS)
    for ip in ("a", "b", "c"):
        assert caps.admit(ip) is None
    assert "limit max_unauthenticated_connections=3" in str(caps.admit("d"))
    caps.logged_in("a")
    assert caps.admit("d") is None
    assert "limit max_connections=4" in str(caps.admit("e"))
    caps.release("a", logged_in=True)
    caps.release("b", logged_in=False)
    assert (caps.total, caps.unauthenticated) == (2, 2)
    assert caps.open_connections("a") == (0, 0)


def test_deadline_before_login() -> None:
    ok = timeout_verdict(
        LIMITS, now=1.0, accepted_at=0.0, logged_in=False, last_activity=1.0, busy=True
    )
    assert ok.close_reason is None and ok.check_at == 2.0
    late = timeout_verdict(
        LIMITS, now=2.0, accepted_at=0.0, logged_in=False, last_activity=1.9, busy=True
    )
    assert late.close_reason == "authentication deadline exceeded (2.0 s)"


def test_idle_after_login_unless_a_request_is_in_flight() -> None:
    busy = timeout_verdict(
        LIMITS, now=50.0, accepted_at=0.0, logged_in=True, last_activity=0.0, busy=True
    )
    assert busy.close_reason is None
    idle = timeout_verdict(
        LIMITS, now=12.0, accepted_at=0.0, logged_in=True, last_activity=1.0, busy=False
    )
    assert idle.close_reason == "idle for 11 s"
    fresh = timeout_verdict(
        LIMITS, now=5.0, accepted_at=0.0, logged_in=True, last_activity=1.0, busy=False
    )
    assert fresh.close_reason is None and fresh.check_at == 11.0


@pytest.mark.parametrize(
    ("mechanism", "answers", "auth_bytes", "succeeded"),
    [
        ("PLAIN", 1, b"", True),
        ("SCRAM-SHA-256", 1, b"r=abc,s=c2FsdA==,i=4096", False),  # server-first: no proof yet
        ("SCRAM-SHA-256", 2, b"v=c2lnbmF0dXJl", True),
        ("SCRAM-SHA-512", 2, b"e=invalid-proof", False),
        ("SCRAM-SHA-512", 1, b"v=forged-early", False),
        ("OAUTHBEARER", 1, b"", True),
        ("OAUTHBEARER", 1, b'{"status":"invalid_token"}', False),  # error challenge
        (None, 1, b"", False),  # no SaslHandshake seen
    ],
)
def test_passthrough_login_completes_only_with_the_final_success(
    mechanism: str | None, answers: int, auth_bytes: bytes, succeeded: bool
) -> None:
    assert passthrough_exchange_succeeded(mechanism, answers, auth_bytes) is succeeded
