"""The client side of authentication for one connection, as Kafka's SaslServerAuthenticator.

The session asks :meth:`ClientAuthentication.route` what to do with each request
from its header; SASL requests are then handed over whole to :meth:`handshake`,
:meth:`authenticate` or :meth:`legacy_token`, which answer them locally. The
policies themselves (mechanisms, credentials, tokens) are pure code in
:mod:`policies.auth`; this module only adds what needs the runtime: worker threads
for password hashing, JWKS fetches, the failed-authentication delay and audit logs.

Before authentication only ApiVersions, SaslHandshake and SaslAuthenticate are
accepted and anything else closes the connection, as Kafka does. After a
SaslHandshake v0 the client sends bare tokens without a request header (the
legacy flow) until the exchange completes. KIP-368: a session whose lifetime is
over is closed at its next request unless that request re-authenticates.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
import trio

from codec.api_table import API_TABLE
from codec.errors import ILLEGAL_SASL_STATE, NONE, SASL_AUTHENTICATION_FAILED
from codec.headers import RequestHeader, parse_request_header
from codec.primitives import Buffer, CodecError
from codec.sasl import (
    SaslAuthenticateResponse,
    answer_handshake,
    encode_legacy_token,
    parse_sasl_authenticate_request,
    parse_sasl_authenticate_response_frame,
    parse_sasl_handshake_request,
    sasl_authenticate_response_frame,
    sasl_handshake_response_frame,
)
from policies.auth import (
    AuthenticationFailed,
    FailureReason,
    KeyRefreshNeeded,
    ListenerAuthenticator,
    Principal,
    SaslResult,
    SaslServerSession,
    UnsupportedMechanism,
    authentication_event,
    check_reauthentication,
    passthrough_principal,
    session_expired,
)

SASL_HANDSHAKE, API_VERSIONS, SASL_AUTHENTICATE = 17, 18, 36

#: Fetches the JWKS of an issuer (single-flight, rate-limited by the key set).
KeyRefresher = Callable[[str], Awaitable[None]]

if TYPE_CHECKING:
    from gateway.connection_guard import LoginSlots

audit_log = structlog.get_logger("gateway.audit")
T = TypeVar("T")


class Route(enum.Enum):
    FORWARD = "forward"  # an ordinary request, or ApiVersions
    HANDSHAKE = "handshake"
    AUTHENTICATE = "authenticate"
    LEGACY_TOKEN = "legacy_token"
    #: Passthrough: forwarded to the broker, but read on the way to learn the principal.
    OBSERVE = "observe"
    #: ApiVersions before login on a listener that terminates SASL: answered by the
    #: gateway from the brokers' answer, as no upstream connection exists yet.
    LOCAL_API_VERSIONS = "local_api_versions"


class AuthenticationClosed(Exception):
    """The connection must close (after sending any answer already queued)."""


@dataclass(slots=True)
class Answer:
    """A local answer (frame content without its size prefix), and whether to close after."""

    frame: bytes
    close_after: str | None = None


class ClientAuthentication:
    """Authentication state of one client connection."""

    def __init__(
        self,
        authenticator: ListenerAuthenticator | None,
        *,
        peer_subject_dn: str | None,
        virtual_cluster: str,
        listener: str,
        client_address: str,
        refresh_keys: KeyRefresher | None = None,
        login_slots: LoginSlots | None = None,
        client_ip: str = "unknown",
    ) -> None:
        self._authenticator = authenticator
        self._refresh_keys = refresh_keys
        self._login_slots = login_slots
        self._client_ip = client_ip
        #: What a login is waiting for right now (for the deadline's close reason).
        self.waiting_for: str | None = None
        self.client_address = client_address
        self._audit: dict[str, Any] = {
            "virtual_cluster": virtual_cluster,
            "listener": listener,
            "client_address": client_address,
        }
        self._server: SaslServerSession | None = None
        self._relayed_mechanism: str | None = None
        self._claimed: Principal | None = None
        #: Passthrough: SaslAuthenticate answers the broker gave in this exchange.
        self._relayed_answers = 0
        self._legacy_flow = False
        self.authenticated_at = 0.0
        self.lifetime_ms: int | None = None
        #: Set once authenticated: at once when the listener needs no SASL (the mTLS
        #: principal or ANONYMOUS); in passthrough mode once the broker accepts the client.
        self.principal: Principal | None = None
        if authenticator is not None and not authenticator.sasl_required:
            self.principal = authenticator.principal_without_sasl(peer_subject_dn)
            self.authenticated_at = time.time()

    @property
    def sasl_terminated(self) -> bool:
        """True if the gateway itself runs the client's SASL exchange."""
        auth = self._authenticator
        return auth is not None and auth.sasl_required and not auth.passthrough

    @property
    def failed_authentication_delay_s(self) -> float:
        """Like Kafka's connection.failed.authentication.delay.ms: how long a connection
        whose login failed stays open after its answer (slows password guessing, and lets
        the client read why before the connection closes)."""
        auth = self._authenticator
        return auth.failed_authentication_delay_s if auth is not None else 0.0

    @property
    def expects_legacy_token(self) -> bool:
        """True while a SaslHandshake v0 exchange runs: frames are bare tokens."""
        return self._legacy_flow

    @property
    def authenticated(self) -> bool:
        """Logged in: the gateway, or in passthrough mode the broker, accepted the client."""
        auth = self._authenticator
        return self.principal is not None or auth is None or not auth.sasl_required

    @property
    def passthrough(self) -> bool:
        """True if the client's SASL exchange is relayed to the broker unchanged."""
        auth = self._authenticator
        return auth is not None and auth.sasl_required and auth.passthrough

    def route(self, api_key: int, now: float) -> Route:
        """What to do with a request (or bare token) on this connection now."""
        if self.passthrough:
            return self._passthrough_route(api_key)
        if not self.sasl_terminated:
            return Route.FORWARD
        if self._legacy_flow:
            return Route.LEGACY_TOKEN
        if api_key == SASL_HANDSHAKE:
            return Route.HANDSHAKE
        if api_key == SASL_AUTHENTICATE:
            return Route.AUTHENTICATE
        if api_key == API_VERSIONS:
            return Route.FORWARD if self.principal is not None else Route.LOCAL_API_VERSIONS
        if self.principal is None:
            raise AuthenticationClosed(f"{_name(api_key)} request before authentication completed")
        if session_expired(now, self.authenticated_at, self.lifetime_ms):
            raise AuthenticationClosed("session expired without re-authentication (KIP-368)")
        return Route.FORWARD

    # --- passthrough: the broker authenticates, the gateway learns who -----------------

    def _passthrough_route(self, api_key: int) -> Route:
        """As Kafka: before the broker accepted the login, only ApiVersions and SASL."""
        if api_key in (SASL_HANDSHAKE, SASL_AUTHENTICATE):
            return Route.OBSERVE
        if api_key != API_VERSIONS and self.principal is None:
            raise AuthenticationClosed(f"{_name(api_key)} request before authentication completed")
        return Route.FORWARD

    def observe_request(self, frame: bytes) -> None:
        """Read a relayed SaslHandshake or SaslAuthenticate request."""
        header = _header(frame)
        if header.api_key == SASL_HANDSHAKE:
            if header.api_version == 0:
                raise AuthenticationClosed(
                    "SaslHandshake v0 (unframed SASL tokens) cannot be relayed in passthrough mode"
                )
            self._relayed_mechanism = _parse(parse_sasl_handshake_request, frame, header).mechanism
            self._claimed = None
            self._relayed_answers = 0
            return
        request = _parse(parse_sasl_authenticate_request, frame, header)
        if self._claimed is None and self._relayed_mechanism is not None:
            self._claimed = passthrough_principal(self._relayed_mechanism, request.auth_bytes)

    def observe_response(self, frame: Buffer, api_version: int) -> None:
        """Read the broker's SaslAuthenticate answer; adopt the claimed principal only
        from the final, successful one (:func:`passthrough_exchange_succeeded`)."""
        try:
            _, response = parse_sasl_authenticate_response_frame(frame, api_version)
        except CodecError as exc:
            raise AuthenticationClosed(f"malformed SaslAuthenticate response: {exc}") from None
        self._relayed_answers += 1
        claimed = self._claimed
        if response.error_code == NONE and not passthrough_exchange_succeeded(
            self._relayed_mechanism, self._relayed_answers, response.auth_bytes
        ):
            return  # an intermediate challenge (SCRAM's server-first): nothing proven yet
        if response.error_code != NONE:
            failure = AuthenticationFailed(
                FailureReason.REJECTED_BY_BROKER,
                f"the broker answered error {response.error_code}: {response.error_message}",
                user=claimed.name if claimed is not None else None,
                mechanism=self._relayed_mechanism,
            )
            _audit(
                audit_log.warning, authentication_event(**self._audit, failure=failure).as_dict()
            )
            self._claimed = None
        elif claimed is not None and self.principal != claimed:
            self.principal = claimed
            self.authenticated_at = time.time()
            event = authentication_event(**self._audit, principal=claimed)
            _audit(audit_log.info, event.as_dict())

    # --- SaslHandshake -------------------------------------------------------------

    def handshake(self, frame: bytes) -> Answer:
        assert self._authenticator is not None
        header = _header(frame)
        request = _parse(parse_sasl_handshake_request, frame, header)
        enabled = self._authenticator.mechanisms
        response = answer_handshake(request, enabled)
        answer = sasl_handshake_response_frame(header.correlation_id, response, header.api_version)
        if response.error_code != NONE:
            return Answer(answer[4:], f"unsupported SASL mechanism {request.mechanism!r}")
        if self._server is not None and self.principal is None:
            return Answer(answer[4:], "SaslHandshake during an authentication exchange")
        try:
            self._server = self._authenticator.server_session(request.mechanism)
        except UnsupportedMechanism:  # pragma: no cover - answer_handshake checked it
            return Answer(answer[4:], f"unsupported SASL mechanism {request.mechanism!r}")
        self._legacy_flow = header.api_version == 0
        return Answer(answer[4:])

    # --- SaslAuthenticate and legacy tokens -------------------------------------------

    async def authenticate(self, frame: bytes) -> Answer:
        header = _header(frame)
        request = _parse(parse_sasl_authenticate_request, frame, header)
        version, correlation_id = header.api_version, header.correlation_id
        if self._server is None:
            response = SaslAuthenticateResponse(
                ILLEGAL_SASL_STATE, "SaslAuthenticate before SaslHandshake"
            )
            answer = sasl_authenticate_response_frame(correlation_id, response, version)
            return Answer(answer[4:], "SaslAuthenticate before SaslHandshake")
        try:
            result = await self._evaluate(request.auth_bytes)
        except AuthenticationFailed as failure:
            self._fail(failure)
            response = SaslAuthenticateResponse(SASL_AUTHENTICATION_FAILED, failure.client_message)
            answer = sasl_authenticate_response_frame(correlation_id, response, version)
            return Answer(answer[4:], f"authentication failed: {failure.reason.value}")
        lifetime = result.session_lifetime_ms if result.completed else None
        response = SaslAuthenticateResponse(NONE, None, result.challenge, lifetime or 0)
        return Answer(sasl_authenticate_response_frame(correlation_id, response, version)[4:])

    async def legacy_token(self, frame: bytes) -> Answer:
        """A bare token after a SaslHandshake v0; a failure just closes, as in Kafka."""
        try:
            result = await self._evaluate(bytes(frame))
        except AuthenticationFailed as failure:
            self._fail(failure)
            await trio.sleep(self.failed_authentication_delay_s)  # no answer to send first
            raise AuthenticationClosed(f"authentication failed: {failure.reason.value}") from None
        if result.completed:
            self._legacy_flow = False
        return Answer(encode_legacy_token(result.challenge)[4:])

    async def _evaluate(self, token: bytes) -> SaslResult:
        server = self._server
        assert server is not None
        now = time.time()
        try:
            result = await self._step(server, token, now)
        except KeyRefreshNeeded as refresh:
            if self._refresh_keys is not None:
                await self._refresh_keys(refresh.issuer)
            result = await self._step(server, token, time.time())
        if result.completed:
            assert result.principal is not None
            self._complete(result)
        return result

    async def _step(self, server: SaslServerSession, token: bytes, now: float) -> SaslResult:
        if not server.cpu_bound:
            return server.evaluate(token, now)
        # Password hashing: off the event loop, and only in a bounded slot, so a flood of
        # logins queues (until each one's deadline) instead of starving real ones.
        if self._login_slots is None:
            return await trio.to_thread.run_sync(server.evaluate, token, now)
        self.waiting_for = "waiting for a password-hashing slot"
        async with self._login_slots.hashing(self._client_ip):
            self.waiting_for = None
            return await trio.to_thread.run_sync(server.evaluate, token, now)

    def _complete(self, result: SaslResult) -> None:
        assert result.principal is not None
        previous = self.principal
        if previous is not None:
            check_reauthentication(previous, result.principal)
        self.principal = result.principal
        self.authenticated_at = time.time()
        self.lifetime_ms = result.session_lifetime_ms
        self._server = None
        event = authentication_event(
            **self._audit,
            principal=result.principal,
            session_lifetime_ms=result.session_lifetime_ms,
            reauthentication=previous is not None,
        )
        _audit(audit_log.info, event.as_dict())

    def _fail(self, failure: AuthenticationFailed) -> None:
        event = authentication_event(
            **self._audit, failure=failure, reauthentication=self.principal is not None
        )
        _audit(audit_log.warning, event.as_dict())
        self._server = None


def passthrough_exchange_succeeded(mechanism: str | None, answers: int, auth_bytes: bytes) -> bool:
    """Whether a broker's error-free SaslAuthenticate answer (the ``answers``-th of the
    exchange) completes the login.

    PLAIN has one exchange. OAUTHBEARER too, and its success carries no bytes (a failed
    token gets a JSON error challenge with no error code first). SCRAM succeeds only with
    the server-final message ``v=<signature>``, the answer to the client's proof; its
    first answer (``r=...,s=...,i=...``) proves nothing.
    """
    if mechanism == "PLAIN":
        return answers == 1
    if mechanism == "OAUTHBEARER":
        return answers == 1 and not auth_bytes
    if mechanism is not None and mechanism.startswith("SCRAM-"):
        return answers == 2 and auth_bytes.startswith(b"v=")
    return False


def _name(api_key: int) -> str:
    return API_TABLE.get(api_key, (str(api_key),))[0]


def _audit(emit: Callable[..., Any], fields: dict[str, Any]) -> None:
    emit(fields.pop("event"), **fields)


def _header(frame: bytes) -> RequestHeader:
    try:
        return parse_request_header(frame)
    except CodecError as exc:
        raise AuthenticationClosed(f"malformed SASL request: {exc}") from None


def _parse(parse: Callable[[memoryview, int], T], frame: bytes, header: RequestHeader) -> T:
    try:
        return parse(memoryview(frame)[header.body_offset :], header.api_version)
    except CodecError as exc:
        raise AuthenticationClosed(f"malformed SASL request: {exc}") from None
