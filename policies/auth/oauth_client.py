"""The gateway's own OAUTHBEARER token: OAuth 2.0 client credentials (RFC 6749 section 4.4).

Pure halves of the token fetch; the runtime does the HTTP POST:

    request = client_credentials_request(url, client_id, client_secret, scope)
    # POST request.body to request.url with request.headers (HTTPS)
    token = parse_token_response(status, body, now)
    # use token.value in OAuthBearerClientSession; fetch again at token.refresh_at

``refresh_at`` follows Kafka's login refresh defaults: at 80 % of the token's
lifetime, but not later than 5 minutes before it expires.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote_plus, urlencode

__all__ = [
    "AccessToken",
    "TokenEndpointError",
    "TokenRequest",
    "client_credentials_request",
    "parse_token_response",
]

REFRESH_WINDOW_FACTOR: Final = 0.8
REFRESH_BUFFER_S: Final = 300.0
#: Used when the endpoint does not say how long the token lives (``expires_in``).
DEFAULT_LIFETIME_S: Final = 3600.0


class TokenEndpointError(Exception):
    """The token endpoint did not return a usable token. Never contains the secret."""


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """An HTTP POST to make; ``headers`` carry the client secret (do not log them)."""

    url: str
    body: bytes
    headers: dict[str, str] = field(repr=False)


def client_credentials_request(
    token_endpoint_url: str, client_id: str, client_secret: str, scope: str | None = None
) -> TokenRequest:
    """A ``grant_type=client_credentials`` request with HTTP Basic client authentication.

    Per RFC 6749 section 2.3.1 the id and secret are form-url-encoded before
    being joined for the Basic header.
    """
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    basic = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}".encode()
    headers = {
        "Authorization": "Basic " + base64.b64encode(basic).decode("ascii"),
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
    }
    return TokenRequest(token_endpoint_url, urlencode(form).encode("ascii"), headers)


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token (hidden from ``repr``) and when it expires / should be renewed."""

    value: str = field(repr=False)
    obtained_at: float
    expires_at: float

    @property
    def refresh_at(self) -> float:
        """When to fetch the next token: 80 % into its lifetime, at least 5 min before expiry."""
        lifetime = self.expires_at - self.obtained_at
        at = self.obtained_at + REFRESH_WINDOW_FACTOR * lifetime
        return max(self.obtained_at, min(at, self.expires_at - REFRESH_BUFFER_S))

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


def parse_token_response(status: int, body: bytes, now: float) -> AccessToken:
    """Read a token endpoint response (RFC 6749 section 5.1 / 5.2).

    Raises :class:`TokenEndpointError` for an HTTP error, an OAuth ``error``
    response or a body without ``access_token``.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if status != 200 or not isinstance(data, dict):
        error = data.get("error") if isinstance(data, dict) else None
        description = data.get("error_description") if isinstance(data, dict) else None
        detail = f": {error}" if isinstance(error, str) else ""
        if isinstance(description, str):
            detail += f" ({description[:200]})"
        raise TokenEndpointError(f"the token endpoint answered HTTP {status}{detail}")
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise TokenEndpointError("the token endpoint response has no access_token")
    token_type = data.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenEndpointError(f"unsupported token_type {str(token_type)[:40]!r}")
    expires_in = data.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        lifetime = DEFAULT_LIFETIME_S
    elif not math.isfinite(expires_in) or expires_in <= 0:
        raise TokenEndpointError("expires_in must be a positive number of seconds")
    else:
        lifetime = float(expires_in)
    return AccessToken(value=token, obtained_at=now, expires_at=now + lifetime)
