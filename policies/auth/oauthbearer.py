"""SASL OAUTHBEARER (RFC 7628) as Kafka speaks it (KIP-255).

The client's only message::

    n,[a=<authzid>],\\x01auth=Bearer <jwt>\\x01[<key>=<value>\\x01]...\\x01

A valid token completes the exchange (empty server response). An invalid one
gets the RFC 7628 error JSON (``{"status":"invalid_token"}``) as a challenge;
the client answers ``\\x01`` and then the authentication fails, as in Kafka.

When the token names a signing key the issuer's JWKS does not hold (yet),
:meth:`OAuthBearerServerSession.evaluate` raises :class:`KeyRefreshNeeded`
instead: the runtime fetches that issuer's JWKS, updates the key set and calls
``evaluate`` again with the same token and the same session.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Final, Literal

from policies.auth.base import SaslClientError, SaslResult
from policies.auth.errors import AuthenticationFailed, FailureReason
from policies.auth.jwt_validation import JwtValidator, TokenRejected
from policies.auth.lifetime import session_lifetime_ms
from policies.auth.principal import Principal

__all__ = [
    "KeyRefreshNeeded",
    "OAuthBearerClientMessage",
    "OAuthBearerClientSession",
    "OAuthBearerServerSession",
    "oauthbearer_client_token",
    "oauthbearer_error_challenge",
    "parse_oauthbearer_client_message",
]

MECHANISM: Final = "OAUTHBEARER"
_SEP: Final = "\x01"
_AUTH_RE: Final = re.compile(r"([A-Za-z0-9_]+) +([-_.A-Za-z0-9]+)")
_KEY_RE: Final = re.compile(r"[A-Za-z]+")
_VALUE_RE: Final = re.compile(r"[\x21-\x7e \t\r\n]+")
_SASLNAME_RE: Final = re.compile(r"(?:[\x01-\x2b\x2d-\x3c\x3e-\x7f]|=2C|=3D)+")


def oauthbearer_error_challenge(
    status: str = "invalid_token",
    *,
    scope: str | None = None,
    openid_configuration: str | None = None,
) -> bytes:
    """The RFC 7628 section 3.2.2 error the server sends as its challenge.

    ``{"status":"invalid_token"}`` plus the optional ``scope`` and
    ``openid-configuration`` members, compact JSON in UTF-8 (Kafka's form).
    """
    body: dict[str, str] = {"status": status}
    if scope is not None:
        body["scope"] = scope
    if openid_configuration is not None:
        body["openid-configuration"] = openid_configuration
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class OAuthBearerClientMessage:
    """A parsed client message: the bearer token (hidden from ``repr``), authzid, extensions."""

    token: str = field(repr=False)
    authzid: str | None
    extensions: dict[str, str]


def parse_oauthbearer_client_message(message: bytes) -> OAuthBearerClientMessage:
    """Parse the GS2 client message; ``ValueError`` says what is wrong (never echoing the token)."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the OAUTHBEARER message is not UTF-8") from None
    flag, sep, rest = text.partition(",")
    if not sep or flag not in {"n", "y"}:
        raise ValueError(
            "invalid GS2 header (expected 'n,' or 'y,'; channel binding is not supported)"
        )
    authz, sep, rest = rest.partition(",")
    if not sep:
        raise ValueError("invalid GS2 header")
    authzid: str | None = None
    if authz:
        name = authz[2:]
        if not authz.startswith("a=") or _SASLNAME_RE.fullmatch(name) is None:
            raise ValueError("invalid authzid in the GS2 header")
        authzid = name.replace("=2C", ",").replace("=3D", "=")
    if not rest.startswith(_SEP) or not rest.endswith(_SEP + _SEP) or len(rest) < 3:
        raise ValueError("key/value pairs must be framed by \\x01 separators")
    pairs = rest[1:-2].split(_SEP)
    values: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or _KEY_RE.fullmatch(key) is None or _VALUE_RE.fullmatch(value) is None:
            raise ValueError("invalid key/value pair")
        if key in values:
            raise ValueError(f"duplicate key {key!r}")
        values[key] = value
    auth = values.pop("auth", None)
    if auth is None:
        raise ValueError("no auth=Bearer <token> pair")
    match = _AUTH_RE.fullmatch(auth)
    if match is None or match.group(1).lower() != "bearer":
        raise ValueError("the auth value is not 'Bearer <token>'")
    return OAuthBearerClientMessage(match.group(2), authzid, values)


def oauthbearer_client_token(
    token: str, *, authzid: str | None = None, extensions: dict[str, str] | None = None
) -> bytes:
    """The client message for ``token``: ``n,,\\x01auth=Bearer <token>\\x01\\x01``."""
    if _AUTH_RE.fullmatch(f"Bearer {token}") is None:
        raise ValueError("the bearer token contains characters a JWT cannot contain")
    gs2 = "n,," if not authzid else f"n,a={authzid.replace('=', '=3D').replace(',', '=2C')},"
    pairs = "".join(f"{k}={v}{_SEP}" for k, v in (extensions or {}).items())
    return f"{gs2}{_SEP}auth=Bearer {token}{_SEP}{pairs}{_SEP}".encode()


class KeyRefreshNeeded(Exception):
    """The token's signing key is unknown and the issuer's JWKS should be refreshed.

    Not a failure: fetch the JWKS of ``issuer`` (or wait for the fetch already in
    flight), update its key set (``validator.key_set(issuer).update(document,
    now)``, or ``refresh_failed(now)`` if the fetch failed), then call
    ``evaluate`` again with the same token. The retry cannot ask again: the key
    set rate-limits refreshes.
    """

    def __init__(self, issuer: str) -> None:
        super().__init__(f"the JWKS of issuer {issuer!r} needs a refresh")
        self.issuer = issuer


class OAuthBearerServerSession:
    """The server side of OAUTHBEARER (see :class:`~policies.auth.base.SaslServerSession`)."""

    cpu_bound = False

    def __init__(
        self, validator: JwtValidator, *, max_session_lifetime_ms: int | None = None
    ) -> None:
        self._validator = validator
        self._max_session_lifetime_ms = max_session_lifetime_ms
        self._state: Literal["initial", "error_sent", "done"] = "initial"
        self._failure: AuthenticationFailed | None = None

    @property
    def mechanism(self) -> str:
        return MECHANISM

    def evaluate(self, token: bytes, now: float) -> SaslResult:
        state, self._state = self._state, "done"
        if state == "error_sent":
            assert self._failure is not None
            # RFC 7628: the client acknowledges the error with a lone %x01;
            # either way the authentication has failed.
            raise self._failure
        if state == "done":
            raise AuthenticationFailed(
                FailureReason.ILLEGAL_STATE,
                "OAUTHBEARER message after the exchange ended",
                client_message="Authentication failed: unexpected OAUTHBEARER message",
                mechanism=MECHANISM,
            )
        try:
            message = parse_oauthbearer_client_message(token)
        except ValueError as exc:
            raise AuthenticationFailed(
                FailureReason.MALFORMED_MESSAGE,
                f"invalid OAUTHBEARER client message: {exc}",
                client_message="Authentication failed: invalid OAUTHBEARER client message",
                mechanism=MECHANISM,
            ) from None
        try:
            validated = self._validator.validate(message.token, now)
        except TokenRejected as rejected:
            if rejected.refresh_issuer is not None:
                self._state = "initial"  # the runtime refreshes the JWKS and calls again
                raise KeyRefreshNeeded(rejected.refresh_issuer) from None
            challenge = oauthbearer_error_challenge()
            self._failure = AuthenticationFailed(
                FailureReason.INVALID_TOKEN,
                f"{rejected.reason.value}: {rejected.detail}",
                client_message=challenge.decode(),
                mechanism=MECHANISM,
            )
            self._state = "error_sent"
            return SaslResult(challenge)
        raw_name = validated.principal_name[len(validated.namespace) :]
        if message.authzid and message.authzid not in {validated.principal_name, raw_name}:
            raise AuthenticationFailed(
                FailureReason.AUTHZID_MISMATCH,
                "authorization id differs from the token's principal name",
                client_message=(
                    "Authentication failed: Client requested an authorization id that is "
                    "different from the token's principal name"
                ),
                user=validated.principal_name,
                mechanism=MECHANISM,
            )
        principal = Principal(
            name=validated.principal_name,
            mechanism=MECHANISM,
            claims=validated.claims,
            namespace=validated.namespace,
        )
        lifetime = session_lifetime_ms(
            now=now,
            credential_expires_at=validated.expires_at,
            max_session_lifetime_ms=self._max_session_lifetime_ms,
        )
        return SaslResult(b"", completed=True, principal=principal, session_lifetime_ms=lifetime)


class OAuthBearerClientSession:
    """The client side of OAUTHBEARER with a token obtained elsewhere (see ``oauth_client``).

    On an error challenge it answers ``\\x01`` (RFC 7628); the server then fails the
    authentication, and ``error`` holds the server's error JSON.
    """

    cpu_bound = False

    def __init__(self, token: str, *, extensions: dict[str, str] | None = None) -> None:
        self._message = oauthbearer_client_token(token, extensions=extensions)
        self._state: Literal["initial", "sent", "error", "done"] = "initial"
        self.error: str | None = None

    def __repr__(self) -> str:
        return "OAuthBearerClientSession()"

    @property
    def mechanism(self) -> str:
        return MECHANISM

    @property
    def complete(self) -> bool:
        return self._state == "done"

    def initial_response(self) -> bytes:
        if self._state != "initial":
            raise SaslClientError("the OAUTHBEARER exchange has already started")
        self._state = "sent"
        return self._message

    def evaluate(self, challenge: bytes) -> bytes | None:
        if self._state != "sent":
            raise SaslClientError("unexpected OAUTHBEARER challenge")
        if not challenge:
            self._state = "done"
            return None
        self._state = "error"
        self.error = challenge.decode("utf-8", errors="replace")[:500]
        return _SEP.encode()
