"""Per-API authorization with Kafka's semantics: which resources a request touches,
what to forward, what to answer locally, and how to merge the two.

Each API's checks live with its family (``produce``, ``fetch_sessions`` (Fetch),
``metadata`` (and DescribeTopicPartitions), ``partitioned`` (ListOffsets,
DeleteRecords, OffsetForLeaderEpoch, DescribeProducers), ``groups``,
``transactions``, ``admin``); every one of these modules exports ``HANDLERS``:
``{api_key: handler}``. APIs in
:data:`NO_AUTHORIZATION` are forwarded without inspection, as Kafka authorizes
nothing for them. Any other API without a handler is refused unless a
cluster-level rule allows it (``admin.authorize_unlisted``): the gateway never
passes through a request it cannot check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from policies.authorization.verdict import (
    AuthorizationContext,
    Denial,
    RequestVerdict,
    ResponseTransform,
)

__all__ = [
    "NO_AUTHORIZATION",
    "AuthorizationContext",
    "Denial",
    "Handler",
    "RequestVerdict",
    "ResponseTransform",
    "authorize_request",
]

#: ``handler(context, frame, api_version)``; ``frame`` is header + body, no size prefix.
Handler = Callable[[AuthorizationContext, bytes, int], RequestVerdict]

#: APIs Kafka answers for any authenticated principal.
NO_AUTHORIZATION: Final = frozenset(
    {
        17,  # SaslHandshake
        18,  # ApiVersions
        36,  # SaslAuthenticate
        71,  # GetTelemetrySubscriptions
        72,  # PushTelemetry
    }
)


def _handlers() -> dict[int, Handler]:
    from policies.authorization import (
        admin,
        fetch_sessions,
        groups,
        metadata,
        partitioned,
        produce,
        transactions,
    )

    table: dict[int, Handler] = {}
    families = (produce, fetch_sessions, metadata, partitioned, groups, transactions, admin)
    for module in families:
        overlap = table.keys() & module.HANDLERS.keys()
        assert not overlap, f"API keys handled twice: {sorted(overlap)}"
        table.update(module.HANDLERS)
    return table


_HANDLERS: dict[int, Handler] | None = None


def authorize_request(
    context: AuthorizationContext, api_key: int, api_version: int, frame: bytes
) -> RequestVerdict:
    """Decide one request; raises ``MessageError`` if it cannot be decoded."""
    global _HANDLERS
    if api_key in NO_AUTHORIZATION:
        return RequestVerdict(forward=frame)
    if _HANDLERS is None:
        _HANDLERS = _handlers()
    handler = _HANDLERS.get(api_key)
    if handler is None:
        from policies.authorization.admin import authorize_unlisted

        return authorize_unlisted(context, frame, api_key, api_version)
    return handler(context, frame, api_version)
