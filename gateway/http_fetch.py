"""A small async HTTP/1.1 client on Trio, for the few fetches authentication needs.

The gateway fetches an issuer's JWKS (OAUTHBEARER on the client side) and its own
client-credentials token (OAUTHBEARER upstream). Both are one request per
connection with a small JSON answer, so a full HTTP stack (and the anyio layer
``httpx`` would bring) is not worth a dependency: this module does GET and POST,
``https`` with certificate and host name verification, ``Content-Length``,
``chunked`` and read-to-close bodies, an overall timeout and a body size limit.
Redirects are not followed (a 3xx is returned like any other status), so a
compromised endpoint cannot bounce the gateway to an internal address.

Only ``https://`` URLs, or ``http://`` to the loopback host (local development),
the same rule as the configuration (:func:`policies.config._check_http_url`).

:class:`JwksRefresher` keeps one issuer's :class:`~policies.auth.jwks.JwksKeySet`
up to date: on demand with single flight (:meth:`JwksRefresher.refresh`, what a
SASL session calls on ``KeyRefreshNeeded``) and periodically
(:meth:`JwksRefresher.run_periodic`). :class:`JwksRefreshers` holds one per issuer
of a :class:`~policies.auth.jwt_validation.JwtValidator` and is the
``KeyRefresher`` callable ``gateway.client_auth`` expects.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode, urlsplit

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
_MAX_HEADER_BYTES: Final = 64 * 1024
_MAX_HEADERS: Final = 100
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_RECEIVE_SIZE: Final = 65536
_USER_AGENT: Final = "kafka-gateway"

log = structlog.get_logger("gateway.http_fetch")


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
    https: bool
    host: str
    port: int
    path: str
    host_header: str
    #: ``scheme://host:port/path`` (no query, no credentials), for messages.
    label: str


def _target(url: str) -> _Target:
    """Check ``url`` against the https-or-loopback rule and split it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    scheme = parts.scheme.lower()
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials in the URL are not supported")
    if not host or not (scheme == "https" or (scheme == "http" and host in _LOOPBACK_HOSTS)):
        raise UnsafeUrl(
            f"refusing {scheme}://{host}: only https:// URLs (http:// only for localhost)"
        )
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeUrl(f"invalid port in URL: {exc}") from None
    shown_host = f"[{host}]" if ":" in host else host
    default_port = port == (443 if scheme == "https" else 80)
    host_header = shown_host if default_port else f"{shown_host}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    label = f"{scheme}://{shown_host}:{port}{parts.path or '/'}"
    return _Target(scheme == "https", host, port, path, host_header, label)


def _check_header(name: str, value: str) -> None:
    if any(c in name + value for c in "\r\n\0") or not name or ":" in name:
        raise HttpFetchError(f"invalid HTTP header {name[:40]!r}")


def _request_bytes(
    method: str, target: _Target, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    fields = {
        "Host": target.host_header,
        "User-Agent": _USER_AGENT,
        "Accept": "application/json",
        "Accept-Encoding": "identity",
        "Connection": "close",
    }
    fields.update(headers)
    if body is not None or method == "POST":
        fields["Content-Length"] = str(len(body or b""))
    lines = [f"{method} {target.path} HTTP/1.1"]
    for name, value in fields.items():
        _check_header(name, value)
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class _Receiver:
    """Buffered reads from a stream: lines, exact sizes, or everything until EOF."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        data = await self._stream.receive_some(_RECEIVE_SIZE)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    async def line(self, limit: int) -> bytes:
        """One CRLF-terminated line (without the CRLF)."""
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > limit:
                raise HttpFetchError("response header line too long")
            if not await self._fill():
                raise HttpFetchError("connection closed in the middle of the response")
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    async def exactly(self, size: int) -> bytes:
        while len(self._buf) < size:
            if not await self._fill():
                raise HttpFetchError("connection closed before the whole body arrived")
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    async def until_eof(self, limit: int) -> bytes:
        while len(self._buf) <= limit and await self._fill():
            pass
        if len(self._buf) > limit:
            raise HttpFetchError(f"response body exceeds {limit} bytes")
        data = bytes(self._buf)
        self._buf.clear()
        return data


async def _read_head(receiver: _Receiver) -> tuple[int, dict[str, str]]:
    """Status line and headers; 1xx interim responses are skipped."""
    while True:
        status_line = await receiver.line(_MAX_HEADER_BYTES)
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise HttpFetchError(f"not an HTTP/1.x response: {status_line[:60]!r}")
        headers: dict[str, str] = {}
        size = 0
        while line := await receiver.line(_MAX_HEADER_BYTES):
            size += len(line)
            if size > _MAX_HEADER_BYTES or len(headers) >= _MAX_HEADERS:
                raise HttpFetchError("response headers too large")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise HttpFetchError(f"malformed response header {line[:60]!r}")
            key, value = name.lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        status = int(code)
        if not 100 <= status < 200:
            return status, headers


async def _read_chunked(receiver: _Receiver, limit: int) -> bytes:
    body = bytearray()
    while True:
        size_text = (await receiver.line(1024)).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpFetchError(f"invalid chunk size {size_text[:20]!r}") from None
        if size < 0 or len(body) + size > limit:
            raise HttpFetchError(f"response body exceeds {limit} bytes")
        if size == 0:
            while await receiver.line(_MAX_HEADER_BYTES):  # trailers, ignored
                pass
            return bytes(body)
        body += await receiver.exactly(size)
        if await receiver.exactly(2) != b"\r\n":
            raise HttpFetchError("malformed chunked body")


async def _read_body(
    receiver: _Receiver, status: int, headers: dict[str, str], limit: int
) -> bytes:
    if status in (204, 304):
        return b""
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise HttpFetchError(f"unsupported content-encoding {encoding[:40]!r}")
    transfer = headers.get("transfer-encoding")
    if transfer is not None:
        if transfer.lower() != "chunked":
            raise HttpFetchError(f"unsupported transfer-encoding {transfer[:40]!r}")
        return await _read_chunked(receiver, limit)
    length_text = headers.get("content-length")
    if length_text is None:
        return await receiver.until_eof(limit)
    lengths = {part.strip() for part in length_text.split(",")}
    length = lengths.pop() if len(lengths) == 1 else ""
    if not length.isdigit():
        raise HttpFetchError(f"invalid content-length {length_text[:40]!r}")
    if int(length) > limit:
        raise HttpFetchError(f"response body of {length} bytes exceeds {limit} bytes")
    return await receiver.exactly(int(length))


async def _connect(target: _Target, ca_file: str | None) -> trio.abc.Stream:
    tcp = await trio.open_tcp_stream(target.host, target.port)
    if not target.https:
        return tcp
    context = ssl.create_default_context(cafile=ca_file)
    stream = trio.SSLStream(tcp, context, server_hostname=target.host, https_compatible=True)
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


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
    request_headers = dict(headers or {})
    if form is not None:
        body = urlencode(form).encode("ascii")
        request_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    request = _request_bytes(method, target, request_headers, body)
    with trio.move_on_after(timeout_s):
        try:
            stream = await _connect(target, ca_file)
        except (OSError, ssl.SSLError, trio.BrokenResourceError) as exc:
            raise HttpFetchError(f"{target.label}: cannot connect: {_reason(exc)}") from None
        try:
            await stream.send_all(request)
            receiver = _Receiver(stream)
            status, response_headers = await _read_head(receiver)
            content = await _read_body(receiver, status, response_headers, max_body_bytes)
            return HttpResponse(status, response_headers, content)
        except HttpFetchError as exc:
            raise HttpFetchError(f"{target.label}: {exc}") from None
        except (OSError, ssl.SSLError, trio.BrokenResourceError) as exc:
            raise HttpFetchError(f"{target.label}: {_reason(exc)}") from None
        finally:
            await trio.aclose_forcefully(stream)
    raise HttpFetchError(f"{target.label}: no complete answer within {timeout_s:g}s")


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else None
    inner = cause or exc
    if isinstance(inner, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {inner.verify_message}"
    if isinstance(inner, ssl.SSLError):
        return f"TLS error: {inner.reason or inner}"
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    return str(inner) or type(inner).__name__


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
