"""Audit events for authentication successes and failures.

:func:`authentication_event` builds the structured event the runtime logs (e.g.
``log.info(**event)``). It takes only typed, non-secret inputs: the principal
comes from a :class:`~policies.auth.principal.Principal` (name and mechanism, not
its claims), the failure from an
:class:`~policies.auth.errors.AuthenticationFailed` (reason code and detail, both
written by the gateway, never copied from the client's token). Free text is
stripped of control characters and truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from policies.auth.errors import AuthenticationFailed
from policies.auth.principal import Principal

__all__ = ["AuthenticationEvent", "authentication_event"]

_MAX_TEXT: Final = 300


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    printable = "".join(c if c.isprintable() else "?" for c in text)
    return printable if len(printable) <= _MAX_TEXT else printable[: _MAX_TEXT - 3] + "..."


@dataclass(frozen=True, slots=True)
class AuthenticationEvent:
    """One audited authentication attempt; :meth:`as_dict` is what gets logged."""

    outcome: Literal["success", "failure"]
    virtual_cluster: str
    listener: str
    client_address: str
    mechanism: str | None
    principal: str | None
    reason: str | None = None
    detail: str | None = None
    session_lifetime_ms: int | None = None
    reauthentication: bool = False

    def as_dict(self) -> dict[str, Any]:
        """``{"event": "authentication", "outcome": ..., ...}``, unset fields left out."""
        event: dict[str, Any] = {
            "event": "authentication",
            "outcome": self.outcome,
            "virtual_cluster": self.virtual_cluster,
            "listener": self.listener,
            "client_address": self.client_address,
        }
        for key in ("mechanism", "principal", "reason", "detail", "session_lifetime_ms"):
            value = getattr(self, key)
            if value is not None:
                event[key] = value
        if self.reauthentication:
            event["reauthentication"] = True
        return event


def authentication_event(
    *,
    virtual_cluster: str,
    listener: str,
    client_address: str,
    principal: Principal | None = None,
    failure: AuthenticationFailed | None = None,
    mechanism: str | None = None,
    session_lifetime_ms: int | None = None,
    reauthentication: bool = False,
) -> AuthenticationEvent:
    """The audit event of a success (``principal``) or a failure (``failure``).

    ``listener`` names where the client connected (e.g. ``127.0.0.1:9092``);
    ``mechanism`` defaults to the principal's or the failure's. For a failure the
    principal is the user name the client claimed, if any (``User:<name>``).
    """
    if (principal is None) == (failure is None):
        raise ValueError("give exactly one of principal (success) or failure")
    if failure is not None:
        claimed = None if failure.user is None else f"User:{failure.user}"
        return AuthenticationEvent(
            outcome="failure",
            virtual_cluster=virtual_cluster,
            listener=listener,
            client_address=client_address,
            mechanism=mechanism or failure.mechanism,
            principal=_clean(claimed),
            reason=failure.reason.value,
            detail=_clean(failure.detail),
            reauthentication=reauthentication,
        )
    assert principal is not None
    return AuthenticationEvent(
        outcome="success",
        virtual_cluster=virtual_cluster,
        listener=listener,
        client_address=client_address,
        mechanism=mechanism or principal.mechanism,
        principal=_clean(str(principal)),
        session_lifetime_ms=session_lifetime_ms,
        reauthentication=reauthentication,
    )
