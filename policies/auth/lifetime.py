"""KIP-368 session lifetimes and re-authentication rules.

A SaslAuthenticate v1+ response tells the client how long its authentication is
valid (``session_lifetime_ms``; 0 means forever). The client re-authenticates on
the same connection before then; a connection whose session expired is closed at
its next request (other than the re-authentication itself).

The client side (the gateway's own upstream login) decides when to re-authenticate
with :func:`reauthentication_delay_s`.
"""

from __future__ import annotations

import math
from typing import Final

from policies.auth.errors import AuthenticationFailed, FailureReason
from policies.auth.principal import Principal

__all__ = [
    "MIN_REAUTH_INTERVAL_S",
    "REAUTH_SAFETY_MARGIN_S",
    "check_reauthentication",
    "reauthentication_delay_s",
    "session_expired",
    "session_lifetime_ms",
]

#: Re-authenticate between these fractions of the session lifetime (Kafka's client
#: uses 85-95 %; the upper bound is lower here because the gateway's SaslHandshake may
#: wait behind a client's in-flight requests, e.g. a long-polling Fetch).
REAUTH_FRACTION_LOW: Final = 0.85
REAUTH_FRACTION_HIGH: Final = 0.90
#: A broker treats a SaslHandshake that comes less than 1 s after the previous
#: re-authentication started as an ordinary (refused) request (Kafka's KafkaChannel).
MIN_REAUTH_INTERVAL_S: Final = 1.0
#: Re-authenticate at least this long before the session ends when the lifetime allows:
#: client requests queued behind a slow one are checked for expiry when the broker reads
#: them, not when they were sent.
REAUTH_SAFETY_MARGIN_S: Final = 1.0


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


def reauthentication_delay_s(session_lifetime_ms: int, jitter: float) -> float | None:
    """Seconds after an upstream (re-)authentication at which to re-authenticate.

    ``session_lifetime_ms`` is the broker's KIP-368 answer (0 or less: never);
    ``jitter`` in ``[0, 1)`` spreads connections that logged in together over the
    window, so they do not all re-authenticate at once. The delay is
    ``lifetime x (0.85 .. 0.90)``, at most ``lifetime - REAUTH_SAFETY_MARGIN_S`` and
    at least ``MIN_REAUTH_INTERVAL_S`` (below about 2 s of lifetime the margin
    cannot be kept: such sessions are re-authenticated every second).
    """
    if session_lifetime_ms <= 0:
        return None
    lifetime_s = session_lifetime_ms / 1000
    jitter = min(max(jitter, 0.0), 1.0)
    fraction = REAUTH_FRACTION_LOW + (REAUTH_FRACTION_HIGH - REAUTH_FRACTION_LOW) * jitter
    delay = min(lifetime_s * fraction, lifetime_s - REAUTH_SAFETY_MARGIN_S)
    return max(delay, MIN_REAUTH_INTERVAL_S)
