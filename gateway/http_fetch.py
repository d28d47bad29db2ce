"""HTTP fetches for authentication, on httpx (under Trio), with the gateway's guarantees.

The gateway fetches an issuer's JWKS (OAUTHBEARER on the client side) and its own
client-credentials token (OAUTHBEARER upstream). Both are one request with a small
JSON answer, from an endpoint the gateway trusts only so far. httpx does the HTTP
(it runs on Trio through httpcore's Trio backend); this module keeps what httpx
leaves to its caller:

* only ``https://`` URLs, or ``http://`` to the loopback host (local development),
  the rule of the configuration (:func:`policies.config._check_http_url`); the URL
  is parsed once, by httpx, for the check and the request alike;
* redirects are never followed (a 3xx is returned like any other status), so a
  compromised endpoint cannot bounce the gateway to an internal address;
* the body is streamed and the fetch stops once it exceeds ``max_body_bytes``
  (a larger ``Content-Length`` is refused before any of the body is read), so at
  most one socket read (64 KiB) beyond the limit is ever held; bodies are never
  decompressed (``Accept-Encoding: identity``, a compressed answer is refused);
* one deadline for the whole fetch (connect, TLS, request, response), not httpx's
  per-operation timeouts;
* https verifies the chain and host name against the system trust store, or only
  ``ca_file``'s CAs when given; nothing comes from the environment (no proxy
  variables, no ``.netrc`` credentials): ``trust_env=False``;
* every failure is a :class:`HttpFetchError` that names the URL without its query
  string and never carries request headers or bodies (they may hold client secrets).

:class:`JwksRefresher` keeps one issuer's :class:`~policies.auth.jwks.JwksKeySet`
up to date: on demand with single flight (:meth:`JwksRefresher.refresh`, what a
SASL session calls on ``KeyRefreshNeeded``) and periodically
(:meth:`JwksRefresher.run_periodic`). :class:`JwksRefreshers` holds one per issuer
of a :class:`~policies.auth.jwt_validation.JwtValidator` and is the
``KeyRefresher`` callable ``gateway.client_auth`` expects.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

import httpx
import structlog
import trio

from policies.auth.jwks import InvalidJwks, JwksKeySet

if TYPE_CHECKING:
    from policies.auth.jwt_validation import JwtValidator
    from policies.config import OAuthBearerConfig

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "HttpFetchError",
    "HttpResponse",
    "JwksRefresher",
    "JwksRefreshers",
    "UnsafeUrl",
    "fetch",
    "fetch_json",
]

#: Enough for any JWKS or token response; bounds what a hostile endpoint can make us buffer.
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_USER_AGENT: Final = "kafka-gateway"
#: Longest piece of a peer's error text (e.g. a garbage status line) put in a message.
_MAX_REASON_CHARS: Final = 200

log = structlog.get_logger("gateway.http_fetch")
# httpx logs every request with its full URL (query string included) at INFO, and
# httpcore traces at DEBUG: keep both quiet whatever logging set-up the process has.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class HttpFetchError(Exception):
    """The request could not be made or the answer was not valid HTTP (or too big, too slow).

    Messages name the URL without its query string and never carry request headers
    or bodies (they may hold client secrets).
    """


class UnsafeUrl(HttpFetchError):
    """Not an ``https://`` URL, nor ``http://`` to the loopback host."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete response: status, headers (lower-case names) and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Target:
    url: httpx.URL
    #: ``scheme://host:port/path`` (no query, no credentials), for messages.
    label: str


def _target(url: str) -> _Target:
    """Check ``url`` against the https-or-loopback rule, parsed as httpx will use it."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UnsafeUrl(f"invalid URL: {_clip(str(exc))}") from None
    scheme, host = parsed.scheme, parsed.host
    if parsed.userinfo:
        raise UnsafeUrl("credentials in the URL are not supported")
    if not host or not (scheme == "https" or (scheme == "http" and host in _LOOPBACK_HOSTS)):
        raise UnsafeUrl(
            f"refusing {scheme}://{host}: only https:// URLs (http:// only for localhost)"
        )
    port = parsed.port or (443 if scheme == "https" else 80)
    if not 0 < port < 65536:
        raise UnsafeUrl(f"invalid port in URL: {port}")
    shown_host = f"[{host}]" if ":" in host else host
    return _Target(parsed, f"{scheme}://{shown_host}:{port}{parsed.path or '/'}")


def _check_header(name: str, value: str) -> None:
    if any(c in name + value for c in "\r\n\0") or not name or ":" in name:
        raise HttpFetchError(f"invalid HTTP header {name[:40]!r}")


def _request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    fields = {
        "User-Agent": _USER_AGENT,
        "Accept": "application/json",
        "Accept-Encoding": "identity",
        "Connection": "close",
    }
    fields.update(headers)
    for name, value in fields.items():
        _check_header(name, value)
    return fields


def _client(target: _Target, ca_file: str | None, timeout_s: float) -> httpx.AsyncClient:
    """A client for one request: no redirects, nothing from the environment, no pooling."""
    verify: ssl.SSLContext | bool = False  # plain http (loopback only): no TLS at all
    if target.url.scheme == "https":
        verify = ssl.create_default_context(cafile=ca_file)
    return httpx.AsyncClient(
        verify=verify,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
    )


async def _read_body(response: httpx.Response, limit: int) -> bytes:
    """The raw body, read as it arrives, refused as soon as it outgrows ``limit``."""
    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise HttpFetchError(f"unsupported content-encoding {encoding[:40]!r}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HttpFetchError(f"response body of {declared} bytes exceeds {limit} bytes")
    body = bytearray()
    async for chunk in response.aiter_raw():
        if len(body) + len(chunk) > limit:
            raise HttpFetchError(f"response body exceeds {limit} bytes")
        body += chunk
    return bytes(body)


async def _exchange(
    target: _Target,
    method: str,
    headers: dict[str, str],
    body: bytes | None,
    *,
    timeout_s: float,
    ca_file: str | None,
    max_body_bytes: int,
) -> HttpResponse:
    async with (
        _client(target, ca_file, timeout_s) as client,
        client.stream(method, target.url, headers=headers, content=body) as response,
    ):
        content = await _read_body(response, max_body_bytes)
        return HttpResponse(response.status_code, dict(response.headers.items()), content)


async def fetch(
    url: str,
    *,
    method: str = "GET",
    form: Mapping[str, str] | None = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float,
    ca_file: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> HttpResponse:
    """Make one request and return the whole response (any status; redirects not followed).

    ``form`` sends ``application/x-www-form-urlencoded`` (as does ``body`` with a
    ``Content-Type`` header of the caller's). https uses the system trust store, or
    only ``ca_file``'s CAs when given. Everything (connect, TLS, request, response)
    must finish within ``timeout_s``. Raises :class:`HttpFetchError`.
    """
    if method not in ("GET", "POST"):
        raise ValueError(f"unsupported method {method!r}")
    if form is not None and body is not None:
        raise ValueError("pass form or body, not both")
    target = _target(url)
    extra = dict(headers or {})
    if form is not None:
        body = urlencode(form).encode("ascii")
        extra.setdefault("Content-Type", "application/x-www-form-urlencoded")
    request_headers = _request_headers(extra)
    if method == "POST" and body is None:
        body = b""
    with trio.move_on_after(timeout_s):
        try:
            return await _exchange(
                target,
                method,
                request_headers,
                body,
                timeout_s=timeout_s,
                ca_file=ca_file,
                max_body_bytes=max_body_bytes,
            )
        except HttpFetchError as exc:
            raise HttpFetchError(f"{target.label}: {exc}") from None
        except httpx.TimeoutException:
            pass  # httpx's own per-operation timeout, at the same deadline: reported below
        except httpx.HTTPError as exc:
            raise HttpFetchError(f"{target.label}: {_describe(exc)}") from None
    raise HttpFetchError(f"{target.label}: no complete answer within {timeout_s:g}s")


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON_CHARS else text[:_MAX_REASON_CHARS] + "..."


def _describe(exc: httpx.HTTPError) -> str:
    """What went wrong, from the innermost cause httpx wrapped (never the request)."""
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {_reason(exc)}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"invalid HTTP response: {_reason(exc)}"
    return _reason(exc)


def _reason(exc: BaseException) -> str:
    inner: BaseException = exc
    seen = 0
    while seen < 10:  # httpx error <- httpcore error <- trio/ssl/OS error
        cause = inner.__cause__ or inner.__context__
        if cause is None:
            break
        inner, seen = cause, seen + 1
    for candidate in (inner, exc):
        if isinstance(candidate, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed: {candidate.verify_message}"
        if isinstance(candidate, ssl.SSLError):
            return f"TLS error: {candidate.reason or candidate}"
        if isinstance(candidate, OSError) and candidate.strerror:
            return candidate.strerror
    return _clip(str(exc) or str(inner) or type(inner).__name__)


async def fetch_json(
    url: str,
    *,
    method: str = "GET",
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float,
    ca_file: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> tuple[int, Any]:
    """``(status, parsed JSON body)``.

    A 2xx answer must be JSON (else :class:`HttpFetchError`); for other statuses a
    body that is not JSON (or empty) gives ``None``, so callers can still report
    the status.
    """
    response = await fetch(
        url,
        method=method,
        form=form,
        headers=headers,
        timeout_s=timeout_s,
        ca_file=ca_file,
        max_body_bytes=max_body_bytes,
    )
    try:
        return response.status, json.loads(response.body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        if 200 <= response.status < 300:
            raise HttpFetchError(f"{_target(url).label}: the response is not JSON") from None
        return response.status, None


# ------------------------------------------------------------------ JWKS refresh


class _Flight:
    """One fetch in progress; waiters read ``ok`` once ``done`` is set."""

    def __init__(self) -> None:
        self.done = trio.Event()
        #: True/False once the fetch finished; None if the fetching task was cancelled.
        self.ok: bool | None = None


class JwksRefresher:
    """Fetches one issuer's JWKS (URL or file) into its key set; single flight.

    The key set decides *whether* to refresh (rate limit, staleness); this class
    does the I/O. Concurrent :meth:`refresh` callers share one fetch. ``clock`` is
    wall-clock seconds, as the key set expects.
    """

    def __init__(
        self,
        key_set: JwksKeySet,
        *,
        jwks_url: str | None = None,
        jwks_file: str | None = None,
        timeout_s: float = 10.0,
        ca_file: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (jwks_url is None) == (jwks_file is None):
            raise ValueError("give exactly one of jwks_url and jwks_file")
        if jwks_url is not None:
            _target(jwks_url)  # fail now, not at the first token
        self.key_set = key_set
        self.jwks_url = jwks_url
        self.jwks_file = jwks_file
        # A fetch must end before the key set stops considering it "in flight".
        self.timeout_s = min(timeout_s, key_set.min_refresh_interval_s)
        self.ca_file = ca_file
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._flight: _Flight | None = None
        self.fetches = 0

    @property
    def source(self) -> str:
        return self.jwks_url or str(self.jwks_file)

    async def refresh(self, now: float | None = None) -> bool:
        """Bring the key set up to date, or wait for the fetch already running.

        Fetches only if the key set has a refresh claimed (``lookup`` claims one
        when it answers ``refresh_needed``) or lets one start now (rate limit).
        Returns True if the keys were (re)loaded by the fetch this call saw.
        If the task doing the fetch is cancelled, a waiter takes over.
        """
        while True:
            flight = self._flight
            if flight is not None:
                await flight.done.wait()
                if flight.ok is not None:
                    return flight.ok
                continue
            when = self._clock() if now is None else now
            if not (self.key_set.refresh_in_flight(when) or self.key_set.begin_refresh(when)):
                return False
            return await self._fetch(when)

    async def run_periodic(
        self,
        *,
        poll_interval_s: float = 1.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Refresh whenever the key set says so (never loaded, or older than its
        ``refresh_interval_s``; failures retry at its rate limit). Runs until cancelled;
        start it in the virtual cluster's nursery with ``nursery.start``."""
        task_status.started()
        while True:
            now = self._clock()
            if self._flight is None and self.key_set.refresh_due(now):
                self.key_set.begin_refresh(now)
                await self._fetch(now)
            await trio.sleep(poll_interval_s)

    async def _fetch(self, started_at: float) -> bool:
        flight = self._flight = _Flight()
        try:
            self.fetches += 1
            try:
                document = await self._load()
                skipped = self.key_set.update(document, self._clock())
            except (HttpFetchError, InvalidJwks, OSError) as exc:
                if not isinstance(exc, InvalidJwks):  # update() already recorded it
                    self.key_set.refresh_failed(self._clock())
                log.warning("jwks_refresh_failed", source=self.source, error=str(exc))
                flight.ok = False
            else:
                if skipped:
                    log.info("jwks_keys_skipped", source=self.source, skipped=skipped)
                log.info("jwks_refreshed", source=self.source, kids=sorted(self.key_set.kids))
                flight.ok = True
            return flight.ok
        finally:
            self._flight = None
            flight.done.set()

    async def _load(self) -> bytes:
        if self.jwks_file is not None:
            return await trio.Path(self.jwks_file).read_bytes()
        assert self.jwks_url is not None
        response = await fetch(
            self.jwks_url,
            timeout_s=self.timeout_s,
            ca_file=self.ca_file,
            max_body_bytes=self.max_body_bytes,
        )
        if response.status != 200:
            raise HttpFetchError(f"{_target(self.jwks_url).label}: HTTP {response.status}")
        return response.body


class JwksRefreshers:
    """One :class:`JwksRefresher` per issuer of a JWT validator.

    Calling it with an issuer refreshes that issuer's keys: it is the
    ``KeyRefresher`` of ``gateway.client_auth`` (``await refreshers(issuer)``).
    """

    def __init__(self, refreshers: Mapping[str, JwksRefresher]) -> None:
        self.by_issuer = dict(refreshers)

    @classmethod
    def for_validator(
        cls,
        validator: JwtValidator,
        config: OAuthBearerConfig,
        *,
        timeout_s: float = 10.0,
        ca_file: str | None = None,
    ) -> JwksRefreshers:
        """Refreshers for every issuer of ``config`` that has a key set in ``validator``."""
        refreshers: dict[str, JwksRefresher] = {}
        for issuer in config.issuers:
            key_set = validator.key_set(issuer.issuer)
            if key_set is None:
                continue
            refreshers[issuer.issuer] = JwksRefresher(
                key_set,
                jwks_url=issuer.jwks_url,
                jwks_file=None if issuer.jwks_url else issuer.jwks_file,
                timeout_s=timeout_s,
                ca_file=ca_file,
            )
        return cls(refreshers)

    async def __call__(self, issuer: str) -> None:
        await self.refresh(issuer)

    async def refresh(self, issuer: str, now: float | None = None) -> bool:
        refresher = self.by_issuer.get(issuer)
        return False if refresher is None else await refresher.refresh(now)

    async def run_periodic(
        self,
        *,
        poll_interval_s: float = 1.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Every issuer's periodic refresh, until cancelled."""
        async with trio.open_nursery() as nursery:
            for refresher in self.by_issuer.values():
                await nursery.start(
                    partial(refresher.run_periodic, poll_interval_s=poll_interval_s)
                )
            task_status.started()
