"""SASL PLAIN (RFC 4616): ``authzid NUL authcid NUL passwd``, checked against scrypt hashes.

Kafka's rules: exactly three NUL-separated fields, a non-empty user name and
password, and an authorization id that is empty or equal to the user name. An
unknown user's password is still checked (against a dummy hash with the same
cost), so the response time does not reveal which users exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from policies.auth.base import SaslClientError, SaslResult
from policies.auth.errors import AuthenticationFailed, FailureReason
from policies.auth.lifetime import session_lifetime_ms
from policies.auth.passwords import PasswordHash, dummy_password_hash
from policies.auth.principal import Principal

__all__ = [
    "PlainClientSession",
    "PlainCredentials",
    "PlainServerSession",
    "parse_plain_token",
    "plain_client_token",
]

MECHANISM: Final = "PLAIN"
#: Kafka's message for a wrong user name or password.
_INVALID: Final = "Authentication failed: Invalid username or password"


@dataclass(frozen=True, slots=True)
class PlainCredentials:
    """A parsed PLAIN message. ``password`` is hidden from ``repr``."""

    authzid: str
    username: str
    password: str = field(repr=False)


def parse_plain_token(token: bytes) -> PlainCredentials:
    """Parse ``authzid\\0authcid\\0passwd`` and apply Kafka's rules.

    Raises ``AuthenticationFailed``: ``MALFORMED_MESSAGE`` (not UTF-8, not three
    fields, empty user name or password) or ``AUTHZID_MISMATCH``.
    """
    try:
        text = token.decode("utf-8")
    except UnicodeDecodeError:
        raise _failure(FailureReason.MALFORMED_MESSAGE, "PLAIN message is not UTF-8") from None
    fields = text.split("\0")
    if len(fields) != 3:
        raise _failure(
            FailureReason.MALFORMED_MESSAGE,
            f"invalid PLAIN message: expected 3 NUL-separated fields, got {len(fields)}",
            client_message="Authentication failed: invalid SASL/PLAIN message",
        )
    authzid, username, password = fields
    if not username:
        raise _failure(
            FailureReason.MALFORMED_MESSAGE,
            "PLAIN message without a user name",
            client_message="Authentication failed: username not specified",
        )
    if not password:
        raise _failure(
            FailureReason.MALFORMED_MESSAGE,
            "PLAIN message without a password",
            client_message="Authentication failed: password not specified",
            user=username,
        )
    if authzid and authzid != username:
        raise _failure(
            FailureReason.AUTHZID_MISMATCH,
            "authorization id differs from the user name",
            client_message=(
                "Authentication failed: Client requested an authorization id that is "
                "different from username"
            ),
            user=username,
        )
    return PlainCredentials(authzid, username, password)


def _failure(
    reason: FailureReason, detail: str, *, client_message: str = _INVALID, user: str | None = None
) -> AuthenticationFailed:
    return AuthenticationFailed(
        reason, detail, client_message=client_message, user=user, mechanism=MECHANISM
    )


def plain_client_token(username: str, password: str, authzid: str = "") -> bytes:
    """The PLAIN message a client sends: ``authzid\\0username\\0password`` in UTF-8."""
    for name, value in (("username", username), ("password", password), ("authzid", authzid)):
        if "\0" in value:
            raise ValueError(f"the PLAIN {name} must not contain NUL")
    return f"{authzid}\0{username}\0{password}".encode()


class PlainServerSession:
    """The server side of PLAIN: one message, then success or failure.

    ``lookup(user)`` returns the user's parsed password hash or ``None``.
    ``evaluate`` runs scrypt (``cpu_bound``): call it from a worker thread.
    """

    cpu_bound = True

    def __init__(
        self,
        lookup: Callable[[str], PasswordHash | None],
        *,
        max_session_lifetime_ms: int | None = None,
        dummy_hash: PasswordHash | None = None,
    ) -> None:
        self._lookup = lookup
        self._max_session_lifetime_ms = max_session_lifetime_ms
        self._dummy = dummy_hash
        self._done = False

    @property
    def mechanism(self) -> str:
        return MECHANISM

    def evaluate(self, token: bytes, now: float) -> SaslResult:
        if self._done:
            raise _failure(
                FailureReason.ILLEGAL_STATE,
                "PLAIN message after the exchange ended",
                client_message="Authentication failed: unexpected SASL/PLAIN message",
            )
        self._done = True
        credentials = parse_plain_token(token)
        stored = self._lookup(credentials.username)
        expected = stored if stored is not None else (self._dummy or dummy_password_hash())
        matches = expected.matches(credentials.password)
        if stored is None:
            raise _failure(FailureReason.UNKNOWN_USER, "no such user", user=credentials.username)
        if not matches:
            raise _failure(
                FailureReason.WRONG_PASSWORD, "wrong password", user=credentials.username
            )
        lifetime = session_lifetime_ms(
            now=now,
            credential_expires_at=None,
            max_session_lifetime_ms=self._max_session_lifetime_ms,
        )
        return SaslResult(
            b"",
            completed=True,
            principal=Principal(name=credentials.username, mechanism=MECHANISM),
            session_lifetime_ms=lifetime,
        )


class PlainClientSession:
    """The client side of PLAIN (see :class:`~policies.auth.base.SaslClientSession`)."""

    cpu_bound = False

    def __init__(self, username: str, password: str) -> None:
        self._token = plain_client_token(username, password)
        self._username = username
        self._sent = False
        self._complete = False

    def __repr__(self) -> str:
        return f"PlainClientSession(user={self._username!r})"

    @property
    def mechanism(self) -> str:
        return MECHANISM

    @property
    def complete(self) -> bool:
        return self._complete

    def initial_response(self) -> bytes:
        if self._sent:
            raise SaslClientError("the PLAIN exchange has already started")
        self._sent = True
        return self._token

    def evaluate(self, challenge: bytes) -> bytes | None:
        if not self._sent or self._complete:
            raise SaslClientError("unexpected PLAIN challenge")
        if challenge:
            raise SaslClientError("unexpected non-empty PLAIN server response")
        self._complete = True
        return None
