"""The gateway's connections to the brokers: TCP, then TLS, then SASL with its own credentials.

Every upstream connection (client sessions and the gateway's own broker discovery)
is opened by :func:`open_upstream`, so a cluster behind ``SASL_SSL`` works the
same as a plaintext one. The SASL exchange follows Kafka's client
(``SaslClientAuthenticator``): SaslHandshake v1 names the mechanism, then
SaslAuthenticate v2 carries the tokens of the :class:`~policies.auth.SaslClientSession`
until it is complete, which for SCRAM includes verifying the broker's server
signature, so a man in the middle that does not know the credential is caught.

Failures raise :class:`UpstreamAuthenticationFailed` (wrong credentials, mechanism
not enabled, broker signature wrong, no OAuth token: retrying another broker will
not help) or :class:`~gateway.net.UpstreamUnavailable` (the broker could not be
reached, TLS failed, the connection broke: the next address is tried). Messages
name the address, the mechanism and Kafka's error code and message, never a
password, token or client secret.

OAUTHBEARER tokens come from :class:`UpstreamTokenSource`: a client-credentials
token from ``token_endpoint_url``, cached until its ``refresh_at`` and shared by
every connection of the process with the same credentials.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final
from urllib.parse import urlsplit

import structlog
import trio

from codec.errors import ILLEGAL_SASL_STATE, NONE, UNSUPPORTED_SASL_MECHANISM, error_name
from codec.framing import FrameDecoder, FrameError
from codec.primitives import CodecError
from codec.sasl import (
    DEFAULT_MAX_SASL_RECEIVE_SIZE,
    parse_sasl_authenticate_response_frame,
    parse_sasl_handshake_response_frame,
    sasl_authenticate_request_frame,
    sasl_handshake_request_frame,
)
from gateway.http_fetch import HttpFetchError, fetch
from gateway.net import UpstreamUnavailable, connect_first
from policies.auth import SaslClientError, SaslClientSession, sasl_client_for
from policies.auth.oauth_client import (
    AccessToken,
    TokenEndpointError,
    client_credentials_request,
    parse_token_response,
)
from policies.auth.tls import client_ssl_context

if TYPE_CHECKING:
    from policies.config import ClientTlsConfig, HostPort, UpstreamConfig, UpstreamSaslConfig

__all__ = [
    "AUTHENTICATE_VERSION",
    "HANDSHAKE_VERSION",
    "REAUTH_CORRELATION_IDS",
    "SaslRoundTrip",
    "UpstreamAuthenticationFailed",
    "UpstreamConnection",
    "UpstreamTokenSource",
    "open_upstream",
    "sasl_authenticate",
    "sasl_reauthenticate",
    "upstream_ssl_context",
]

#: SaslHandshake v1: tokens then travel in SaslAuthenticate requests (KIP-152).
HANDSHAKE_VERSION: Final = 1
#: SaslAuthenticate v2 (flexible; v1+ carries KIP-368's session_lifetime_ms).
AUTHENTICATE_VERSION: Final = 2
#: No mechanism needs more round trips (SCRAM: 2, OAUTHBEARER error path: 2).
MAX_SASL_ROUNDS: Final = 8
#: Correlation ids of re-authentication requests on a session's connection (the top of the
#: id space, as Kafka's SaslClientAuthenticator): a handshake and ``MAX_SASL_ROUNDS`` tokens.
REAUTH_CORRELATION_IDS: Final = range(2**31 - 1 - MAX_SASL_ROUNDS, 2**31)
#: The least time a token is used before it is renewed (see ``UpstreamTokenSource.refresh_at``).
MIN_TOKEN_REUSE_S: Final = 60.0
_CLIENT_ID: Final = "kafka-gateway"
_MAX_CACHED_CONTEXTS: Final = 32

log = structlog.get_logger("gateway.upstream")

#: ``round_trip(request frame with its size prefix, what) -> response frame without it``.
SaslRoundTrip = Callable[[bytes, str], Awaitable[bytes]]


class UpstreamAuthenticationFailed(UpstreamUnavailable):
    """The SASL exchange with a broker failed for a reason another broker would share.

    A subclass of :class:`~gateway.net.UpstreamUnavailable`, so code that handles
    unreachable upstreams handles this too. ``error_code`` is Kafka's (e.g. 58,
    ``SASL_AUTHENTICATION_FAILED``) when the broker sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        address: HostPort | None = None,
        mechanism: str | None = None,
        error_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.address = address
        self.mechanism = mechanism
        self.error_code = error_code


@dataclass(frozen=True, slots=True)
class UpstreamConnection:
    """A connection ready for Kafka requests (TLS and SASL done, as configured).

    ``session_lifetime_ms`` is the broker's KIP-368 answer: 0 means the broker
    never requires re-authentication; otherwise the connection must re-authenticate
    (:func:`sasl_authenticate` on the same stream, between requests) before
    ``session_expires_at`` (Trio clock), or the broker closes it.
    """

    stream: trio.abc.Stream
    address: HostPort
    mechanism: str | None = None
    session_lifetime_ms: int = 0
    #: ``trio.current_time()`` when the SASL exchange completed.
    authenticated_at: float = 0.0

    @property
    def session_expires_at(self) -> float | None:
        if not self.session_lifetime_ms:
            return None
        return self.authenticated_at + self.session_lifetime_ms / 1000


async def open_upstream(
    addresses: Sequence[HostPort],
    upstream: UpstreamConfig,
    *,
    token_source: UpstreamTokenSource | None = None,
) -> UpstreamConnection:
    """Connect to the first of ``addresses`` that answers, with TLS and SASL as configured.

    Each address gets ``connect_timeout_ms`` for TCP plus the TLS handshake and
    ``request_timeout_ms`` for the SASL exchange. An authentication failure is
    raised at once; other failures move on to the next address, and if none
    works :class:`~gateway.net.UpstreamUnavailable` lists what happened at each.
    OAUTHBEARER uses ``token_source``, by default the process-wide one for these
    credentials (:meth:`UpstreamTokenSource.shared`).
    """
    failures: list[str] = []
    for address in addresses:
        try:
            return await _open_one(address, upstream, token_source)
        except UpstreamAuthenticationFailed:
            raise
        except UpstreamUnavailable as exc:
            failures.append(str(exc))
    raise UpstreamUnavailable("; ".join(failures) or "no upstream address configured")


async def _open_one(
    address: HostPort, upstream: UpstreamConfig, token_source: UpstreamTokenSource | None
) -> UpstreamConnection:
    connect_timeout_s = upstream.connect_timeout_ms / 1000
    tcp, _ = await connect_first([address], connect_timeout_s)
    stream: trio.abc.Stream = tcp
    try:
        if upstream.tls is not None:
            stream = await _start_tls(tcp, upstream.tls, address, connect_timeout_s)
        if upstream.sasl is None:
            return UpstreamConnection(stream, address)
        lifetime_ms = await sasl_authenticate(
            stream,
            upstream.sasl,
            address=address,
            timeout_s=upstream.request_timeout_ms / 1000,
            token_source=token_source,
        )
        return UpstreamConnection(
            stream, address, upstream.sasl.mechanism, lifetime_ms, trio.current_time()
        )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


# ------------------------------------------------------------------------- TLS

_contexts: dict[ClientTlsConfig, tuple[tuple[object, ...], ssl.SSLContext]] = {}


def _files_stamp(paths: Iterable[str | None]) -> tuple[object, ...]:
    """What changes when a certificate file is replaced (so the context is rebuilt)."""
    stamp: list[object] = []
    for path in paths:
        try:
            info = os.stat(path) if path else None
        except OSError:
            info = None
        stamp.append(None if info is None else (info.st_mtime_ns, info.st_size, info.st_ino))
    return tuple(stamp)


def upstream_ssl_context(config: ClientTlsConfig) -> ssl.SSLContext:
    """The client context for ``config``, cached until one of its files changes.

    Building one reads the CA bundle (the whole system store by default), too slow
    to do per connection; replaced certificate files are picked up without a restart.
    Raises ``ssl.SSLError`` / ``OSError`` for unusable files.
    """
    stamp = _files_stamp((config.ca_file, config.cert_file, config.key_file))
    cached = _contexts.get(config)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    context = client_ssl_context(config)
    if len(_contexts) >= _MAX_CACHED_CONTEXTS:
        _contexts.clear()
    _contexts[config] = (stamp, context)
    return context


async def _start_tls(
    tcp: trio.SocketStream, config: ClientTlsConfig, address: HostPort, timeout_s: float
) -> trio.SSLStream[trio.SocketStream]:
    try:
        context = upstream_ssl_context(config)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise UpstreamUnavailable(f"{address}: cannot use the upstream TLS files: {exc}") from None
    hostname = config.server_hostname or address.host
    stream = trio.SSLStream(tcp, context, server_hostname=hostname)
    try:
        with trio.fail_after(timeout_s):
            await stream.do_handshake()
    except trio.TooSlowError:
        raise UpstreamUnavailable(
            f"{address}: TLS handshake not finished within {timeout_s:g}s"
        ) from None
    except trio.BrokenResourceError as exc:
        raise UpstreamUnavailable(
            f"{address}: TLS handshake failed (server name {hostname!r}): {_tls_reason(exc)}"
        ) from None
    return stream


def _tls_reason(exc: BaseException) -> str:
    inner = exc.__cause__ or exc
    if isinstance(inner, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {inner.verify_message}"
    if isinstance(inner, ssl.SSLError):
        return str(inner.reason or inner)
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    return str(inner) or "the broker closed the connection (is this a TLS port?)"


# ------------------------------------------------------------------------ SASL


async def sasl_authenticate(
    stream: trio.abc.Stream,
    sasl: UpstreamSaslConfig,
    *,
    address: HostPort,
    timeout_s: float,
    token_source: UpstreamTokenSource | None = None,
) -> int:
    """Authenticate ``stream`` with the gateway's own credentials; returns KIP-368's
    ``session_lifetime_ms`` (0: no re-authentication needed).

    Also a re-authentication step on a connection nobody else uses (a session's
    connection re-authenticates with :func:`sasl_reauthenticate`). The exchange (not
    the OAuth token fetch) must finish within ``timeout_s``. OAUTHBEARER takes its
    token from ``token_source`` (default: :meth:`UpstreamTokenSource.shared`); a token
    the broker rejects is dropped from it, so the next attempt fetches a new one.
    """
    return await _authenticate(
        sasl, address, timeout_s, token_source, _StreamRoundTrip(stream).round_trip
    )


async def sasl_reauthenticate(
    round_trip: SaslRoundTrip,
    sasl: UpstreamSaslConfig,
    *,
    address: HostPort,
    timeout_s: float,
    token_source: UpstreamTokenSource | None = None,
) -> int:
    """KIP-368 re-authentication of a connection whose bytes someone else reads.

    Like :func:`sasl_authenticate`, but each request frame goes through
    ``round_trip(frame, what) -> response frame`` (a session interleaves them with its
    client's traffic), with correlation ids from ``REAUTH_CORRELATION_IDS`` (Kafka's
    client reserves the top of the id space for them too). An OAUTHBEARER token
    past its refresh time is renewed first (:meth:`UpstreamTokenSource.token`).
    """
    return await _authenticate(
        sasl, address, timeout_s, token_source, round_trip, REAUTH_CORRELATION_IDS.start
    )


async def _authenticate(
    sasl: UpstreamSaslConfig,
    address: HostPort,
    timeout_s: float,
    token_source: UpstreamTokenSource | None,
    round_trip: SaslRoundTrip,
    first_correlation_id: int = 1,
) -> int:
    token: str | None = None
    if sasl.mechanism == "OAUTHBEARER":
        if token_source is None:
            token_source = UpstreamTokenSource.shared(sasl, timeout_s=timeout_s)
        token = await token_source.token()
    session = sasl_client_for(sasl, oauth_token=token)
    exchange = _SaslExchange(
        round_trip, address, session.mechanism, _secrets_of(sasl, token), first_correlation_id
    )
    try:
        with trio.fail_after(timeout_s):
            return await exchange.run(session)
    except trio.TooSlowError:
        raise UpstreamUnavailable(
            f"{address}: {session.mechanism} authentication not finished within {timeout_s:g}s"
        ) from None
    except UpstreamAuthenticationFailed:
        if token is not None and token_source is not None:
            token_source.invalidate(token)
        raise


def _secrets_of(sasl: UpstreamSaslConfig, token: str | None) -> tuple[str, ...]:
    values = [token, sasl.password and sasl.password.get_secret_value()]
    values.append(sasl.client_secret and sasl.client_secret.get_secret_value())
    return tuple(v for v in values if v)


def _redact(text: str, secrets: Iterable[str]) -> str:
    """Belt and braces: a broker or library message never echoes a credential."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class _StreamBroken(Exception):
    """A stream round trip failed; the message says how (the exchange adds who)."""


class _StreamRoundTrip:
    """Requests and responses on a stream that only the SASL exchange uses."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(DEFAULT_MAX_SASL_RECEIVE_SIZE)

    async def round_trip(self, frame: bytes, what: str) -> bytes:
        try:
            await self._stream.send_all(frame)
            while (response := self._decoder.next_frame()) is None:
                data = await self._stream.receive_some(65536)
                if not data:
                    raise _StreamBroken(
                        f"the broker closed the connection instead of answering {what} "
                        "(do the upstream TLS/SASL settings match the broker's listener?)"
                    )
                self._decoder.feed(data)
        except FrameError as exc:
            raise _StreamBroken(f"invalid {what} response: {exc}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _StreamBroken(f"connection lost during {what}: {_tls_reason(exc)}") from None
        return response


class _SaslExchange:
    """One SaslHandshake + SaslAuthenticate conversation through a round trip."""

    def __init__(
        self,
        round_trip: SaslRoundTrip,
        address: HostPort,
        mechanism: str,
        secrets: tuple[str, ...],
        first_correlation_id: int = 1,
    ) -> None:
        self._round_trip_of = round_trip
        self._address = address
        self._mechanism = mechanism
        self._secrets = secrets
        self._correlation_id = first_correlation_id - 1

    def _failed(self, what: str, error_code: int | None = None) -> UpstreamAuthenticationFailed:
        message = _redact(
            f"{self._address}: {self._mechanism} authentication {what}", self._secrets
        )
        return UpstreamAuthenticationFailed(
            message, address=self._address, mechanism=self._mechanism, error_code=error_code
        )

    async def run(self, session: SaslClientSession) -> int:
        await self._handshake()
        try:
            token = session.initial_response()
        except SaslClientError as exc:
            raise self._failed(f"could not start: {exc}") from None
        for _ in range(MAX_SASL_ROUNDS):
            code, message, challenge, lifetime_ms = await self._authenticate(token)
            if code != NONE:
                detail = getattr(session, "error", None)  # OAUTHBEARER's error JSON
                extra = f" ({detail})" if detail else ""
                raise self._failed(
                    f"rejected: {error_name(code)} ({code}): {message or 'no message'}{extra}",
                    code,
                )
            reply = await self._evaluate(session, challenge)
            if reply is None:
                if not session.complete:
                    raise self._failed("ended before the exchange completed")
                return lifetime_ms
            token = reply
        raise self._failed(f"did not complete within {MAX_SASL_ROUNDS} round trips")

    async def _evaluate(self, session: SaslClientSession, challenge: bytes) -> bytes | None:
        try:
            if getattr(session, "cpu_bound", False):  # SCRAM's PBKDF2: off the event loop
                return await trio.to_thread.run_sync(session.evaluate, challenge)
            return session.evaluate(challenge)
        except SaslClientError as exc:
            raise self._failed(f"failed: {exc}") from None

    async def _handshake(self) -> None:
        cid = self._next_id()
        frame = sasl_handshake_request_frame(cid, _CLIENT_ID, self._mechanism, HANDSHAKE_VERSION)
        response = await self._round_trip(frame, "SaslHandshake")
        try:
            got, answer = parse_sasl_handshake_response_frame(response, HANDSHAKE_VERSION)
        except CodecError as exc:
            raise self._broken(f"invalid SaslHandshake response: {exc}") from None
        self._check_id(got, cid)
        if answer.error_code == UNSUPPORTED_SASL_MECHANISM:
            enabled = ", ".join(answer.mechanisms) or "none"
            raise self._failed(
                f"is not enabled on the broker (enabled: {enabled})", answer.error_code
            )
        if answer.error_code == ILLEGAL_SASL_STATE:
            raise self._failed(
                "refused: ILLEGAL_SASL_STATE (34): is this broker port a SASL listener?",
                answer.error_code,
            )
        if answer.error_code != NONE:
            name = error_name(answer.error_code)
            raise self._failed(
                f"handshake refused: {name} ({answer.error_code})", answer.error_code
            )

    async def _authenticate(self, token: bytes) -> tuple[int, str | None, bytes, int]:
        cid = self._next_id()
        frame = sasl_authenticate_request_frame(cid, _CLIENT_ID, token, AUTHENTICATE_VERSION)
        response = await self._round_trip(frame, "SaslAuthenticate")
        try:
            got, answer = parse_sasl_authenticate_response_frame(response, AUTHENTICATE_VERSION)
        except CodecError as exc:
            raise self._broken(f"invalid SaslAuthenticate response: {exc}") from None
        self._check_id(got, cid)
        message = answer.error_message[:300] if answer.error_message else None
        return answer.error_code, message, answer.auth_bytes, answer.session_lifetime_ms

    async def _round_trip(self, frame: bytes, what: str) -> bytes:
        try:
            return await self._round_trip_of(frame, what)
        except _StreamBroken as exc:
            raise self._broken(str(exc)) from None

    def _broken(self, what: str) -> UpstreamUnavailable:
        return UpstreamUnavailable(
            _redact(f"{self._address}: {self._mechanism} authentication: {what}", self._secrets)
        )

    def _check_id(self, got: int, expected: int) -> None:
        if got != expected:
            raise self._broken(f"response correlation id {got}, expected {expected}")

    def _next_id(self) -> int:
        self._correlation_id += 1
        return self._correlation_id


# ------------------------------------------------------------------ OAUTHBEARER


class UpstreamTokenSource:
    """The gateway's own OAuth token (client-credentials grant), cached and renewed.

    :meth:`token` returns the cached token until :attr:`refresh_at` (80 % of its
    lifetime, as Kafka's login refresh), then fetches a new one; one fetch at a time
    (a ``trio.Lock``), so many connections opening together cause a single request.
    If the endpoint fails, a token that has not expired yet is still used, and for
    ``retry_after_failure_s`` callers get the last error without a new request.
    """

    _shared: ClassVar[dict[tuple[str, str, str, str | None], UpstreamTokenSource]] = {}

    def __init__(
        self,
        sasl: UpstreamSaslConfig,
        *,
        timeout_s: float = 30.0,
        ca_file: str | None = None,
        retry_after_failure_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if sasl.mechanism != "OAUTHBEARER":
            raise ValueError(f"{sasl.mechanism} does not use OAuth tokens")
        if not (sasl.token_endpoint_url and sasl.client_id and sasl.client_secret):
            raise ValueError("OAUTHBEARER needs token_endpoint_url, client_id and client_secret")
        self._url = sasl.token_endpoint_url
        parts = urlsplit(self._url)
        #: The endpoint for messages: no credentials, no query string.
        self._label = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        self._client_id = sasl.client_id
        self._client_secret = sasl.client_secret
        self._scope = sasl.scope
        self.timeout_s = timeout_s
        self.ca_file = ca_file
        self.retry_after_failure_s = retry_after_failure_s
        self._clock = clock
        self._lock = trio.Lock()
        self._token: AccessToken | None = None
        self._failure: tuple[float, str] | None = None
        #: Requests made to the token endpoint (for tests and metrics).
        self.fetches = 0

    @classmethod
    def shared(cls, sasl: UpstreamSaslConfig, *, timeout_s: float = 30.0) -> UpstreamTokenSource:
        """The process-wide source for these credentials (created on first use)."""
        secret = sasl.client_secret.get_secret_value() if sasl.client_secret else ""
        key = (sasl.token_endpoint_url or "", sasl.client_id or "", secret, sasl.scope)
        source = cls._shared.get(key)
        if source is None:
            source = cls._shared[key] = cls(sasl, timeout_s=timeout_s)
        return source

    @property
    def current(self) -> AccessToken | None:
        """The cached token, if any (its value is hidden from ``repr``)."""
        return self._token

    def invalidate(self, token: str | None = None) -> None:
        """Drop the cached token (only if it is ``token``, when given): the broker
        rejected it, so the next :meth:`token` fetches a new one."""
        if self._token is not None and (token is None or self._token.value == token):
            self._token = None
            self._failure = None

    async def token(self) -> str:
        """A token to send (raises :class:`UpstreamAuthenticationFailed` if none can be had)."""
        fresh = self._fresh(self._clock())
        if fresh is not None:
            return fresh
        async with self._lock:
            now = self._clock()
            fresh = self._fresh(now)  # fetched by the task that held the lock
            if fresh is not None:
                return fresh
            if self._failure is not None and now - self._failure[0] < self.retry_after_failure_s:
                return self._fallback(now, self._failure[1])
            try:
                self._token = await self._fetch(now)
            except (HttpFetchError, TokenEndpointError) as exc:
                where = "" if isinstance(exc, HttpFetchError) else f"{self._label}: "
                message = f"cannot get an OAUTHBEARER token: {where}{exc}"
                message = _redact(message, [self._client_secret.get_secret_value()])
                self._failure = (now, message)
                log.warning("upstream_token_fetch_failed", error=message)
                return self._fallback(now, message)
            self._failure = None
            log.info("upstream_token_fetched", expires_at=self._token.expires_at)
            return self._token.value

    @property
    def refresh_at(self) -> float | None:
        """When the cached token is renewed: its ``refresh_at``, but not before
        ``MIN_TOKEN_REUSE_S`` (or half its lifetime, if shorter) after it was
        obtained. Kafka's 5-minute refresh buffer would otherwise renew a token of 5
        minutes or less on every use (Kafka's own floor is
        ``sasl.login.refresh.min.period.seconds``, 60 s)."""
        token = self._token
        if token is None:
            return None
        lifetime = token.expires_at - token.obtained_at
        floor = token.obtained_at + min(MIN_TOKEN_REUSE_S, lifetime / 2)
        return max(token.refresh_at, floor)

    def _fresh(self, now: float) -> str | None:
        refresh_at = self.refresh_at
        if self._token is None or refresh_at is None or now >= refresh_at:
            return None
        return self._token.value

    def _fallback(self, now: float, message: str) -> str:
        """The old token while it lasts; without one, the fetch failure."""
        if self._token is not None and not self._token.expired(now):
            return self._token.value
        raise UpstreamAuthenticationFailed(message, mechanism="OAUTHBEARER")

    async def _fetch(self, now: float) -> AccessToken:
        request = client_credentials_request(
            self._url, self._client_id, self._client_secret.get_secret_value(), self._scope
        )
        self.fetches += 1
        response = await fetch(
            request.url,
            method="POST",
            body=request.body,
            headers=request.headers,
            timeout_s=self.timeout_s,
            ca_file=self.ca_file,
        )
        return parse_token_response(response.status, response.body, now)
