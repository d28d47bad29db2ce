"""KIP-368 session lifetimes and re-authentication rules.

A SaslAuthenticate v1+ response tells the client how long its authentication is
valid (``session_lifetime_ms``; 0 means forever). The client re-authenticates on
the same connection before then; a connection whose session expired is closed at
its next request (other than the re-authentication itself).
"""

from __future__ import annotations

import math

from policies.auth.errors import AuthenticationFailed, FailureReason
from policies.auth.principal import Principal

__all__ = ["check_reauthentication", "session_expired", "session_lifetime_ms"]


def session_lifetime_ms(
    *, now: float, credential_expires_at: float | None, max_session_lifetime_ms: int | None
) -> int | None:
    """``min(credential expiry - now, max_session_lifetime_ms)``, or ``None`` if both are unset.

    ``credential_expires_at`` is the token's ``exp`` (seconds since the epoch) for
    OAUTHBEARER, ``None`` for mechanisms whose credentials do not expire. The
    result is at least 1 ms: a token accepted within the clock-skew leeway after
    its ``exp`` gets a session that ends at once (0 would mean "unbounded").
    """
    bounds: list[int] = []
    if credential_expires_at is not None:
        bounds.append(math.floor((credential_expires_at - now) * 1000))
    if max_session_lifetime_ms is not None:
        bounds.append(max_session_lifetime_ms)
    if not bounds:
        return None
    return max(1, min(bounds))


def session_expired(now: float, authenticated_at: float, lifetime_ms: int | None) -> bool:
    """True once ``lifetime_ms`` has passed since ``authenticated_at`` (never for ``None``)."""
    if lifetime_ms is None:
        return False
    return now * 1000 >= authenticated_at * 1000 + lifetime_ms


def check_reauthentication(previous: Principal, current: Principal) -> None:
    """KIP-368: a re-authentication must keep the principal and the mechanism.

    Raises ``AuthenticationFailed(REAUTHENTICATION_MISMATCH)`` otherwise, like
    Kafka ("Cannot change principals during re-authentication").
    """
    if previous.mechanism != current.mechanism:
        raise AuthenticationFailed(
            FailureReason.REAUTHENTICATION_MISMATCH,
            f"re-authentication changed the mechanism from {previous.mechanism} "
            f"to {current.mechanism}",
            client_message="Cannot change the SASL mechanism during re-authentication",
            user=current.name,
            mechanism=current.mechanism,
        )
    if (previous.kind, previous.name) != (current.kind, current.name):
        raise AuthenticationFailed(
            FailureReason.REAUTHENTICATION_MISMATCH,
            f"re-authentication changed the principal from {previous} to {current}",
            client_message="Cannot change principals during re-authentication",
            user=current.name,
            mechanism=current.mechanism,
        )
