"""The interfaces between the SASL mechanisms and the Trio session that drives them.

Server side (clients authenticating to the gateway): the session picks a
:class:`SaslServerSession` for the mechanism named in SaslHandshake, then feeds it
every SaslAuthenticate ``auth_bytes`` (or legacy unframed token) with the current
time; each call returns a :class:`SaslResult` (bytes to send back, and whether the
exchange is complete) or raises
:class:`~policies.auth.errors.AuthenticationFailed`.

Client side (the gateway authenticating to the brokers): a
:class:`SaslClientSession` produces the first token and answers each server
challenge until ``complete``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from policies.auth.errors import AuthenticationFailed, FailureReason
from policies.auth.principal import Principal

__all__ = [
    "SaslClientError",
    "SaslClientSession",
    "SaslResult",
    "SaslServerSession",
    "check_token_size",
]


@dataclass(frozen=True, slots=True)
class SaslResult:
    """One step of a server-side SASL exchange.

    * ``challenge``: the bytes to send back (SaslAuthenticate ``auth_bytes``; may be
      empty). For SCRAM's last step it is the server-final message, sent together
      with the success;
    * ``completed``: the client is authenticated as ``principal``;
    * ``session_lifetime_ms`` (KIP-368, completed only): how long the
      authentication is valid, for SaslAuthenticate v1+; ``None`` means unbounded
      (send 0, Kafka's "no re-authentication required").
    """

    challenge: bytes
    completed: bool = False
    principal: Principal | None = None
    session_lifetime_ms: int | None = None

    def __post_init__(self) -> None:
        if self.completed != (self.principal is not None):
            raise ValueError("a completed SaslResult has a principal, an incomplete one has none")


class SaslServerSession(Protocol):
    """The server side of one SASL exchange (one per SaslHandshake).

    ``evaluate`` is called once per client token. After it returned a completed
    result, or raised :class:`~policies.auth.errors.AuthenticationFailed`, the
    session is finished: any further call raises ``AuthenticationFailed`` with
    ``ILLEGAL_STATE``. ``now`` is wall-clock time in seconds since the epoch
    (``time.time()``), used for token expiry and session lifetimes.

    ``cpu_bound`` is true when ``evaluate`` may run a deliberately slow password
    hash (PLAIN's scrypt): run it in a worker thread then.
    """

    @property
    def mechanism(self) -> str: ...

    @property
    def cpu_bound(self) -> bool: ...

    def evaluate(self, token: bytes, now: float) -> SaslResult: ...


class SaslClientError(Exception):
    """The gateway's own (upstream) authentication cannot continue.

    The message never contains the password or token.
    """


class SaslClientSession(Protocol):
    """The client side of one SASL exchange, for the gateway's upstream connections.

    Send ``initial_response()`` in the first SaslAuthenticate request; feed each
    response's ``auth_bytes`` to ``evaluate``: it returns the next token to send,
    or ``None`` when there is nothing more to send (then ``complete`` is true).
    Raises :class:`SaslClientError` when the server's answer is wrong (e.g. a SCRAM
    server signature that does not verify) or reports an error.
    """

    @property
    def mechanism(self) -> str: ...

    @property
    def complete(self) -> bool: ...

    def initial_response(self) -> bytes: ...

    def evaluate(self, challenge: bytes) -> bytes | None: ...


def check_token_size(size: int, max_token_bytes: int, *, mechanism: str | None = None) -> None:
    """Raise ``AuthenticationFailed(TOKEN_TOO_LARGE)`` if a SASL token of ``size`` bytes is too big.

    The runtime can call it with the size announced by a frame header before
    reading the frame; the sessions built by
    :class:`~policies.auth.sasl.ListenerAuthenticator` check it again. The
    connection is closed without a response, like Kafka does for
    ``sasl.server.max.receive.size``.
    """
    if size > max_token_bytes:
        raise AuthenticationFailed(
            FailureReason.TOKEN_TOO_LARGE,
            f"SASL token of {size} bytes exceeds the limit of {max_token_bytes} bytes",
            client_message="SASL token too large",
            mechanism=mechanism,
        )
