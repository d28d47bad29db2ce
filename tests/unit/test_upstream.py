"""gateway.upstream: TCP + TLS + SASL to a fake broker on loopback, and the OAuth token source.

The fake broker speaks only SaslHandshake, SaslAuthenticate and Metadata, but its
SASL side is the gateway's own server sessions (``ListenerAuthenticator``), so
every exchange (PLAIN, SCRAM proofs and server signatures, JWT validation) is
real. Real Kafka brokers with SASL are in tests/integration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
from kio.schema.metadata.v12.response import MetadataResponse, MetadataResponseBroker
from kio.schema.types import BrokerId
from kio.serial import entity_writer
from kio.static.primitive import i32, i32Timedelta

from codec.framing import FrameDecoder, FrameError, encode_frame
from codec.headers import encode_response_header, parse_request_header
from codec.sasl import (
    SaslAuthenticateResponse,
    SaslHandshakeResponse,
    parse_sasl_authenticate_request,
    parse_sasl_handshake_request,
    sasl_authenticate_response_frame,
    sasl_handshake_response_frame,
)
from codec.stream import FrameStream
from gateway.discovery import (
    BrokerAddress,
    brokers_in_metadata,
    discover_brokers,
    request_response,
)
from gateway.net import UpstreamUnavailable
from gateway.upstream import (
    REAUTH_CORRELATION_IDS,
    UpstreamAuthenticationFailed,
    UpstreamConnection,
    UpstreamTokenSource,
    open_upstream,
    upstream_ssl_context,
)
from gateway.upstream_reauth import UpstreamReauthentication
from policies.auth import (
    AuthenticationFailed,
    ListenerAuthenticator,
    SaslServerSession,
    UnsupportedMechanism,
    derive_scram_credential,
    hash_password,
)
from policies.config import (
    AuthenticationConfig,
    ClientTlsConfig,
    HostPort,
    UpstreamConfig,
    UpstreamSaslConfig,
)
from tests.certs import CertAuthority, make_ca
from tests.jwks_server import JwksServer, SigningKey, jwks_of, make_ec_key

USER = "gateway"
PASSWORD = "gw-Pa55word-never-logged"
WRONG = "wrong-Pa55word-never-logged"
CLIENT_ID = "gateway-client"
CLIENT_SECRET = "client-secret-never-logged"
LIFETIME_MS = 60_000


# ---------------------------------------------------------------------- fake broker


def metadata_v12_body(port: int) -> bytes:
    """A Metadata v12 response body naming one broker, node 1, at ``port``."""
    response = MetadataResponse(
        throttle_time=i32Timedelta.parse(datetime.timedelta(0)),
        brokers=(
            MetadataResponseBroker(
                node_id=BrokerId(1), host="127.0.0.1", port=i32(port), rack=None
            ),
        ),
        cluster_id="fake",
        controller_id=BrokerId(1),
        topics=(),
    )
    buf = io.BytesIO()
    entity_writer(MetadataResponse)(buf, response)
    return buf.getvalue()


@dataclasses.dataclass
class Behaviour:
    """How the fake broker departs from Kafka's script."""

    #: Change the final (server-final / success) challenge.
    tamper: Callable[[bytes], bytes] | None = None
    #: Error code to answer SaslHandshake with, whatever is asked.
    handshake_error: int | None = None
    #: Put the client's token in the failure message (a careless broker).
    echo_token_in_error: bool = False
    #: Close the connection instead of answering SaslAuthenticate.
    close_on_authenticate: bool = False
    #: Never answer anything.
    silent: bool = False


@dataclasses.dataclass
class BrokerLog:
    mechanisms: list[str] = dataclasses.field(default_factory=list)
    authenticated: list[str] = dataclasses.field(default_factory=list)
    connections: int = 0


async def _read_frame(stream: trio.abc.Stream, decoder: FrameDecoder) -> bytes | None:
    while (frame := decoder.next_frame()) is None:
        data = await stream.receive_some(65536)
        if not data:
            return None
        decoder.feed(data)
    return frame


async def _serve(
    authenticator: ListenerAuthenticator,
    behaviour: Behaviour,
    tls: ssl.SSLContext | None,
    port: list[int],
    broker_log: BrokerLog,
    tcp: trio.SocketStream,
) -> None:
    broker_log.connections += 1
    stream: trio.abc.Stream = tcp
    if tls is not None:
        stream = trio.SSLStream(tcp, tls, server_side=True)
    decoder = FrameDecoder()
    session: SaslServerSession | None = None
    quietly = (trio.BrokenResourceError, trio.ClosedResourceError, FrameError)
    with contextlib.suppress(*quietly):
        async with stream:
            while (frame := await _read_frame(stream, decoder)) is not None:
                if behaviour.silent:
                    continue
                header = parse_request_header(frame)
                body = frame[header.body_offset :]
                key, version, cid = header.api_key, header.api_version, header.correlation_id
                if key == 17:
                    mechanism = parse_sasl_handshake_request(body, version).mechanism
                    broker_log.mechanisms.append(mechanism)
                    try:
                        session = authenticator.server_session(mechanism)
                        answer = SaslHandshakeResponse(0, authenticator.mechanisms)
                    except UnsupportedMechanism as exc:
                        answer = SaslHandshakeResponse(33, exc.enabled)
                    if behaviour.handshake_error is not None:
                        answer = SaslHandshakeResponse(behaviour.handshake_error)
                    await stream.send_all(sasl_handshake_response_frame(cid, answer, version))
                elif key == 36:
                    if behaviour.close_on_authenticate:
                        return
                    assert session is not None
                    token = parse_sasl_authenticate_request(body, version).auth_bytes
                    reply = _authenticate(session, token, behaviour, broker_log)
                    await stream.send_all(sasl_authenticate_response_frame(cid, reply, version))
                    if reply.error_code:
                        return  # Kafka closes after a failed authentication
                elif key == 3:
                    head = encode_response_header(cid, 3, version)
                    await stream.send_all(encode_frame(head, metadata_v12_body(port[0])))


def _authenticate(
    session: SaslServerSession, token: bytes, behaviour: Behaviour, broker_log: BrokerLog
) -> SaslAuthenticateResponse:
    try:
        result = session.evaluate(token, time.time())
    except AuthenticationFailed as exc:
        message = exc.client_message
        if behaviour.echo_token_in_error:
            message += f" for token {token.decode(errors='replace')!r}"
        return SaslAuthenticateResponse(58, message)
    challenge = result.challenge
    if result.completed:
        assert result.principal is not None
        broker_log.authenticated.append(result.principal.name)
        if behaviour.tamper is not None:
            challenge = behaviour.tamper(challenge)
    return SaslAuthenticateResponse(0, None, challenge, result.session_lifetime_ms or 0)


@asynccontextmanager
async def fake_broker(
    authenticator: ListenerAuthenticator,
    behaviour: Behaviour | None = None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[int, BrokerLog]]:
    """A loopback "broker"; yields its port and what it saw."""
    port: list[int] = []
    broker_log = BrokerLog()
    handler = partial(_serve, authenticator, behaviour or Behaviour(), tls, port, broker_log)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port.append(listeners[0].socket.getsockname()[1])
        yield port[0], broker_log
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------- configs


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    return make_ec_key("broker-key")


@pytest.fixture
def authenticator(tmp_path: Path, signing_key: SigningKey) -> ListenerAuthenticator:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_of(signing_key)))
    config = AuthenticationConfig.model_validate(
        {
            "mechanisms": ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"],
            "users": {USER: hash_password(PASSWORD, n=16, r=1, p=1)},
            "scram_credentials": {
                USER: [
                    str(derive_scram_credential(PASSWORD, "SCRAM-SHA-256")),
                    str(derive_scram_credential(PASSWORD, "SCRAM-SHA-512")),
                ]
            },
            "oauthbearer": {
                "issuers": [
                    {
                        "issuer": "https://issuer.example",
                        "audience": "kafka-gateway",
                        "algorithms": ["ES256"],
                        "jwks_file": str(jwks),
                    }
                ],
                # the same user logs in with every mechanism here, on purpose
                "shared_principal_namespace": True,
            },
            "max_session_lifetime_ms": LIFETIME_MS,
            "failed_authentication_delay_ms": 0,
        }
    )
    return ListenerAuthenticator(config, now=time.time())


def plain_only() -> ListenerAuthenticator:
    config = AuthenticationConfig.model_validate(
        {"mechanisms": ["PLAIN"], "users": {USER: hash_password(PASSWORD, n=16, r=1, p=1)}}
    )
    return ListenerAuthenticator(config, now=time.time())


def upstream(*ports: int, sasl: dict[str, Any] | None = None, **extra: Any) -> UpstreamConfig:
    return UpstreamConfig.model_validate(
        {
            "bootstrap_servers": [f"127.0.0.1:{port}" for port in ports],
            "connect_timeout_ms": 2000,
            "request_timeout_ms": 2000,
            "sasl": sasl,
            **extra,
        }
    )


def password_sasl(mechanism: str, password: str = PASSWORD) -> dict[str, Any]:
    return {"mechanism": mechanism, "username": USER, "password": password}


def oauth_sasl(server: JwksServer, secret: str = CLIENT_SECRET) -> dict[str, Any]:
    return {
        "mechanism": "OAUTHBEARER",
        "token_endpoint_url": server.token_url,
        "client_id": CLIENT_ID,
        "client_secret": secret,
    }


async def connect(config: UpstreamConfig, **options: Any) -> UpstreamConnection:
    return await open_upstream(config.bootstrap_servers, config, **options)


async def metadata_works(connection: UpstreamConnection) -> None:
    """The stream is usable for ordinary requests after authentication."""
    body = await request_response(connection.stream, 3, 12, b"\x01\x00\x00\x00", 2)
    assert [b.node_id for b in brokers_in_metadata(body, 12)] == [1]


def assert_no_secret(exc: BaseException) -> None:
    text = str(exc) + repr(exc)
    for secret in (PASSWORD, WRONG, CLIENT_SECRET):
        assert secret not in text


# --------------------------------------------------------------------------- SASL


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_password_mechanisms(authenticator: ListenerAuthenticator, mechanism: str) -> None:
    async with fake_broker(authenticator) as (port, seen):
        connection = await connect(upstream(port, sasl=password_sasl(mechanism)))
        async with connection.stream:
            assert connection.address == HostPort("127.0.0.1", port)
            assert connection.mechanism == mechanism
            assert connection.session_lifetime_ms == LIFETIME_MS
            expires_at = connection.session_expires_at
            assert expires_at is not None
            assert abs(expires_at - connection.authenticated_at - LIFETIME_MS / 1000) < 1e-6
            await metadata_works(connection)
    assert seen.mechanisms == [mechanism]
    assert seen.authenticated == [USER]


async def read_responses(
    stream: trio.abc.Stream, in_flight: list[tuple[int, Callable[[bytes], None]]]
) -> None:
    """A session's response pump reduced to what re-authentication needs: hand each
    response to the entry first in the in-flight FIFO (the broker answers in order)."""
    decoder = FrameDecoder()
    while (frame := await _read_frame(stream, decoder)) is not None:
        correlation_id, deliver = in_flight.pop(0)
        assert int.from_bytes(frame[:4], "big") == correlation_id
        deliver(bytes(frame))


#: A broker session this short is renewed after 1 s (gateway's minimum interval).
SHORT_LIFETIME_MS = 2000


def short_sessions() -> ListenerAuthenticator:
    """The password mechanisms of `authenticator`, with sessions of ``SHORT_LIFETIME_MS``."""
    config = AuthenticationConfig.model_validate(
        {
            "mechanisms": ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
            "users": {USER: hash_password(PASSWORD, n=16, r=1, p=1)},
            "scram_credentials": {
                USER: [
                    str(derive_scram_credential(PASSWORD, "SCRAM-SHA-256")),
                    str(derive_scram_credential(PASSWORD, "SCRAM-SHA-512")),
                ]
            },
            "max_session_lifetime_ms": SHORT_LIFETIME_MS,
            "failed_authentication_delay_ms": 0,
        }
    )
    return ListenerAuthenticator(config, now=time.time())


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_reauthentication_on_the_same_stream(mechanism: str) -> None:
    """KIP-368 as a session runs it (gateway.upstream_reauth): before the broker's session
    ends, the exchange runs again on the open connection, with reserved correlation ids,
    and the broker verifies it (real PLAIN and SCRAM server sessions)."""
    async with fake_broker(short_sessions()) as (port, seen):
        # A generous timeout: the SCRAM proofs are computed in a thread on a busy machine.
        config = upstream(port, sasl=password_sasl(mechanism), request_timeout_ms=30_000)
        connection = await connect(config)
        in_flight: list[tuple[int, Callable[[bytes], None]]] = []
        sent_ids: list[int] = []

        async def send(frame: bytes) -> None:
            sent_ids.append(int.from_bytes(frame[8:12], "big"))
            await connection.stream.send_all(frame)

        reauth = UpstreamReauthentication(
            FrameStream(),
            send=send,
            expect=lambda _key, _version, cid, deliver: in_flight.append((cid, deliver)),
            log=structlog.get_logger("test"),
            jitter=lambda: 0.0,
        )
        reauth.attach(connection, config)
        expires_at = connection.session_expires_at
        assert expires_at is not None and reauth.due_at is not None
        assert connection.authenticated_at < reauth.due_at < expires_at
        async with connection.stream:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_responses, connection.stream, in_flight)
                nursery.start_soon(reauth.run)
                with trio.fail_after(60):
                    while reauth.count < 1:
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            assert sent_ids and all(cid in REAUTH_CORRELATION_IDS for cid in sent_ids)
            assert not in_flight  # every response of the exchange was read
            await metadata_works(connection)  # the stream still serves ordinary requests
    assert seen.authenticated == [USER, USER] and seen.connections == 1
    assert seen.mechanisms == [mechanism, mechanism]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_wrong_password(authenticator: ListenerAuthenticator, mechanism: str) -> None:
    async with fake_broker(authenticator) as (port, seen):
        config = upstream(port, port, sasl=password_sasl(mechanism, WRONG))
        with pytest.raises(UpstreamAuthenticationFailed) as info:
            await connect(config)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and mechanism in message
    assert "SASL_AUTHENTICATION_FAILED (58)" in message
    assert info.value.error_code == 58 and info.value.mechanism == mechanism
    assert isinstance(info.value, UpstreamUnavailable)  # existing handlers catch it
    assert_no_secret(info.value)
    assert seen.connections == 1  # not retried on the second address: same credentials


async def test_a_broker_echoing_the_password_is_redacted(
    authenticator: ListenerAuthenticator,
) -> None:
    async with fake_broker(authenticator, Behaviour(echo_token_in_error=True)) as (port, _):
        with pytest.raises(UpstreamAuthenticationFailed) as info:
            await connect(upstream(port, sasl=password_sasl("PLAIN", WRONG)))
    assert "***" in str(info.value)
    assert_no_secret(info.value)


async def test_scram_server_signature_is_verified(authenticator: ListenerAuthenticator) -> None:
    tamper = Behaviour(tamper=lambda challenge: b"v=" + b"A" * 44)
    async with fake_broker(authenticator, tamper) as (port, _):
        with pytest.raises(UpstreamAuthenticationFailed, match="signature does not verify"):
            await connect(upstream(port, sasl=password_sasl("SCRAM-SHA-256")))


async def test_mechanism_not_enabled() -> None:
    async with fake_broker(plain_only()) as (port, _):
        with pytest.raises(UpstreamAuthenticationFailed) as info:
            await connect(upstream(port, sasl=password_sasl("SCRAM-SHA-512")))
    assert "not enabled on the broker (enabled: PLAIN)" in str(info.value)
    assert info.value.error_code == 33


async def test_listener_without_sasl(authenticator: ListenerAuthenticator) -> None:
    async with fake_broker(authenticator, Behaviour(handshake_error=34)) as (port, _):
        with pytest.raises(UpstreamAuthenticationFailed, match="SASL listener"):
            await connect(upstream(port, sasl=password_sasl("PLAIN")))


async def test_broker_closing_mid_exchange_tries_the_next_address(
    authenticator: ListenerAuthenticator,
) -> None:
    closing = Behaviour(close_on_authenticate=True)
    async with (
        fake_broker(authenticator, closing) as (bad, _),
        fake_broker(authenticator) as (good, _),
    ):
        connection = await connect(upstream(bad, good, sasl=password_sasl("PLAIN")))
        async with connection.stream:
            assert connection.address.port == good
        with pytest.raises(UpstreamUnavailable) as info:
            await connect(upstream(bad, sasl=password_sasl("PLAIN")))
    assert not isinstance(info.value, UpstreamAuthenticationFailed)
    assert "closed the connection instead of answering SaslAuthenticate" in str(info.value)


async def test_silent_broker_times_out(authenticator: ListenerAuthenticator) -> None:
    async with fake_broker(authenticator, Behaviour(silent=True)) as (port, _):
        config = upstream(port, sasl=password_sasl("PLAIN"), request_timeout_ms=200)
        with pytest.raises(UpstreamUnavailable, match=r"not finished within 0\.2s"):
            await connect(config)


async def test_unreachable_addresses_are_all_reported() -> None:
    ports = []
    with trio.socket.socket() as one, trio.socket.socket() as two:
        for sock in (one, two):
            await sock.bind(("127.0.0.1", 0))  # bound, never listening: refused
            ports.append(sock.getsockname()[1])
        with pytest.raises(UpstreamUnavailable) as info:
            await connect(upstream(*ports, sasl=password_sasl("PLAIN")))
    assert all(f"127.0.0.1:{port}" in str(info.value) for port in ports)


async def test_plaintext_without_sasl(authenticator: ListenerAuthenticator) -> None:
    async with fake_broker(authenticator) as (port, seen):
        connection = await connect(upstream(port))
        async with connection.stream:
            assert connection.mechanism is None and connection.session_lifetime_ms == 0
            assert connection.session_expires_at is None
            await metadata_works(connection)
    assert seen.mechanisms == []


async def test_discovery_through_sasl(authenticator: ListenerAuthenticator) -> None:
    async with fake_broker(authenticator) as (port, seen):
        config = upstream(port, sasl=password_sasl("SCRAM-SHA-512"))
        brokers = await discover_brokers(config)
        assert brokers == [BrokerAddress(1, "127.0.0.1", port)]
    assert seen.authenticated == [USER]


# ---------------------------------------------------------------------------- TLS


def server_context(
    cert: tuple[Path, Path], client_ca: CertAuthority | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca.cert_path)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def test_sasl_over_tls(tmp_path: Path, authenticator: ListenerAuthenticator) -> None:
    ca = make_ca(tmp_path)
    tls = server_context(ca.issue_server())
    async with fake_broker(authenticator, tls=tls) as (port, seen):
        config = upstream(
            port, sasl=password_sasl("SCRAM-SHA-256"), tls={"ca_file": str(ca.cert_path)}
        )
        connection = await connect(config)
        async with connection.stream:
            assert isinstance(connection.stream, trio.SSLStream)
            await metadata_works(connection)
    assert seen.authenticated == [USER]


async def test_tls_with_an_unknown_ca(tmp_path: Path, authenticator: ListenerAuthenticator) -> None:
    broker_ca, other_ca = make_ca(tmp_path / "a"), make_ca(tmp_path / "b")
    async with fake_broker(authenticator, tls=server_context(broker_ca.issue_server())) as (
        port,
        seen,
    ):
        config = upstream(
            port, sasl=password_sasl("PLAIN"), tls={"ca_file": str(other_ca.cert_path)}
        )
        with pytest.raises(UpstreamUnavailable, match="certificate verify failed") as info:
            await connect(config)
    assert not isinstance(info.value, UpstreamAuthenticationFailed)
    assert seen.mechanisms == []  # no credentials sent to an unverified broker


async def test_tls_host_name(tmp_path: Path, authenticator: ListenerAuthenticator) -> None:
    ca = make_ca(tmp_path)
    tls = server_context(ca.issue_server(["kafka-1.internal"]))
    async with fake_broker(authenticator, tls=tls) as (port, _):
        base = {"ca_file": str(ca.cert_path)}
        with pytest.raises(UpstreamUnavailable, match=r"server name '127\.0\.0\.1'"):
            await connect(upstream(port, tls=base))
        named = await connect(upstream(port, tls={**base, "server_hostname": "kafka-1.internal"}))
        await named.stream.aclose()
        unchecked = await connect(upstream(port, tls={**base, "verify_hostname": False}))
        await unchecked.stream.aclose()


async def test_mtls_client_certificate(
    tmp_path: Path, authenticator: ListenerAuthenticator
) -> None:
    ca = make_ca(tmp_path)
    cert, key = ca.issue_client("gateway")
    tls = server_context(ca.issue_server(), client_ca=ca)
    async with fake_broker(authenticator, tls=tls) as (port, _):
        base = {"ca_file": str(ca.cert_path)}
        mutual = {**base, "cert_file": str(cert), "key_file": str(key)}
        connection = await connect(upstream(port, sasl=password_sasl("PLAIN"), tls=mutual))
        async with connection.stream:
            await metadata_works(connection)
        with pytest.raises(UpstreamUnavailable):  # TLS 1.3: refused after the handshake
            await connect(upstream(port, sasl=password_sasl("PLAIN"), tls=base))


async def test_tls_client_to_a_plaintext_port(authenticator: ListenerAuthenticator) -> None:
    async with fake_broker(authenticator) as (port, _):
        with pytest.raises(UpstreamUnavailable, match="TLS handshake"):
            await connect(upstream(port, tls={}, connect_timeout_ms=500))


def test_ssl_context_is_cached_until_files_change(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    config = ClientTlsConfig.model_validate({"ca_file": str(ca.cert_path)})
    first = upstream_ssl_context(config)
    assert upstream_ssl_context(config) is first
    stat = ca.cert_path.stat()
    os.utime(ca.cert_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert upstream_ssl_context(config) is not first


# --------------------------------------------------------------------- OAUTHBEARER


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp(signing_key: SigningKey) -> Any:
    with JwksServer(jwks_of(signing_key)) as server:
        server.enable_token_endpoint(signing_key, {CLIENT_ID: CLIENT_SECRET}, lifetime=3600)
        yield server


def token_source(idp: JwksServer, **options: Any) -> UpstreamTokenSource:
    sasl = UpstreamSaslConfig.model_validate(oauth_sasl(idp, options.pop("secret", CLIENT_SECRET)))
    return UpstreamTokenSource(sasl, timeout_s=5, **options)


async def test_oauthbearer(authenticator: ListenerAuthenticator, idp: JwksServer) -> None:
    source = token_source(idp)
    async with fake_broker(authenticator) as (port, seen):
        config = upstream(port, sasl=oauth_sasl(idp))
        for _ in range(3):
            connection = await connect(config, token_source=source)
            async with connection.stream:
                assert 0 < connection.session_lifetime_ms <= LIFETIME_MS
                await metadata_works(connection)
    assert seen.authenticated == [CLIENT_ID] * 3
    assert source.fetches == 1 and idp.request_count("/token") == 1  # cached


async def test_oauthbearer_shared_source_by_default(
    authenticator: ListenerAuthenticator, idp: JwksServer
) -> None:
    async with fake_broker(authenticator) as (port, seen):
        config = upstream(port, sasl=oauth_sasl(idp))
        for _ in range(2):
            connection = await connect(config)
            await connection.stream.aclose()
        assert config.sasl is not None
        assert UpstreamTokenSource.shared(config.sasl).fetches == 1
    assert seen.authenticated == [CLIENT_ID] * 2


async def test_rejected_token_is_dropped(
    authenticator: ListenerAuthenticator, idp: JwksServer, signing_key: SigningKey
) -> None:
    idp.enable_token_endpoint(signing_key, {CLIENT_ID: CLIENT_SECRET}, audience="someone-else")
    source = token_source(idp)
    async with fake_broker(authenticator) as (port, _):
        with pytest.raises(UpstreamAuthenticationFailed) as info:
            await connect(upstream(port, sasl=oauth_sasl(idp)), token_source=source)
    assert "OAUTHBEARER" in str(info.value) and "invalid_token" in str(info.value)
    assert source.current is None  # the next connection fetches a new token
    token = json.dumps(str(info.value))
    assert "eyJ" not in token  # no JWT in the message


async def test_token_endpoint_rejects_the_client(idp: JwksServer) -> None:
    source = token_source(idp, secret="not-the-" + CLIENT_SECRET)
    with pytest.raises(UpstreamAuthenticationFailed, match="HTTP 401: invalid_client") as info:
        await source.token()
    assert idp.token_url in str(info.value)
    assert_no_secret(info.value)
    # Within the back-off, the error is repeated without asking the endpoint again.
    with pytest.raises(UpstreamAuthenticationFailed):
        await source.token()
    assert source.fetches == 1


async def test_concurrent_callers_share_one_fetch(idp: JwksServer) -> None:
    source = token_source(idp)
    idp.set_delay(0.2)
    tokens: list[str] = []

    async def one() -> None:
        tokens.append(await source.token())

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(one)
    assert len(set(tokens)) == 1 and len(tokens) == 6
    assert source.fetches == 1


async def test_token_renewal_and_fallback(idp: JwksServer) -> None:
    clock = FakeClock()
    source = token_source(idp, clock=clock, retry_after_failure_s=5)
    first = await source.token()
    current, refresh_at = source.current, source.refresh_at
    assert current is not None and refresh_at == current.refresh_at  # 80 % of an hour
    clock.now = refresh_at - 1
    assert await source.token() == first and source.fetches == 1
    clock.now = refresh_at
    second = await source.token()
    assert second != first and source.fetches == 2
    renewed, refresh_at = source.current, source.refresh_at
    assert renewed is not None and refresh_at is not None
    idp.fail_with(503)
    clock.now = refresh_at + 1
    assert await source.token() == second  # endpoint down: the old token while it lasts
    assert source.fetches == 3
    clock.now += 1
    assert await source.token() == second and source.fetches == 3  # back-off
    clock.now = renewed.expires_at
    with pytest.raises(UpstreamAuthenticationFailed, match="HTTP 503"):
        await source.token()
    idp.fail_with(None)
    clock.now += 5
    assert await source.token() not in (first, second)


async def test_short_lived_tokens_are_reused_for_a_while(
    idp: JwksServer, signing_key: SigningKey
) -> None:
    """A 5-minute token is due at once under Kafka's 5-minute buffer; reuse it for 60 s."""
    idp.enable_token_endpoint(signing_key, {CLIENT_ID: CLIENT_SECRET}, lifetime=300)
    clock = FakeClock()
    source = token_source(idp, clock=clock)
    first = await source.token()
    assert source.current is not None and source.current.refresh_at == source.current.obtained_at
    assert source.refresh_at == clock.now + 60
    clock.now += 59
    assert await source.token() == first and source.fetches == 1
    clock.now += 1
    assert await source.token() != first and source.fetches == 2


def test_token_source_needs_oauth_settings() -> None:
    sasl = UpstreamSaslConfig.model_validate(password_sasl("PLAIN"))
    with pytest.raises(ValueError, match="does not use OAuth"):
        UpstreamTokenSource(sasl)
