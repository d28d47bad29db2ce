"""KIP-368 re-authentication of a session's upstream connection: when, and how it
interleaves with the client's requests (time passed in: a Trio mock clock)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
import trio
import trio.testing

from codec.headers import peek_api
from codec.sasl import (
    SaslAuthenticateResponse,
    SaslHandshakeResponse,
    sasl_authenticate_response_frame,
    sasl_handshake_response_frame,
)
from codec.stream import Decision, FrameStream
from gateway.upstream import REAUTH_CORRELATION_IDS, UpstreamConnection
from gateway.upstream_reauth import UpstreamReauthentication, UpstreamReauthenticationFailed
from policies.auth.lifetime import MIN_REAUTH_INTERVAL_S, reauthentication_delay_s
from policies.config import HostPort, UpstreamConfig

ADDRESS = HostPort("127.0.0.1", 9092)

# ------------------------------------------------------------------ the schedule


def test_no_lifetime_means_no_reauthentication() -> None:
    assert reauthentication_delay_s(0, 0.5) is None
    assert reauthentication_delay_s(-5, 0.5) is None  # a hostile broker's value


def test_long_sessions_are_renewed_at_85_to_90_percent() -> None:
    hour_ms = 3_600_000
    assert reauthentication_delay_s(hour_ms, 0.0) == pytest.approx(3060)
    assert reauthentication_delay_s(hour_ms, 1.0) == pytest.approx(3240)
    assert reauthentication_delay_s(hour_ms, 0.5) == pytest.approx(3150)
    # out-of-range jitter is clamped, never past 90 %
    assert reauthentication_delay_s(hour_ms, 7.0) == pytest.approx(3240)
    assert reauthentication_delay_s(hour_ms, -1.0) == pytest.approx(3060)


def test_short_sessions_keep_a_margin_and_the_brokers_one_second_floor() -> None:
    # 85 % of 4 s would leave 0.6 s for requests queued behind a long-polling Fetch.
    assert reauthentication_delay_s(4000, 0.0) == pytest.approx(3.0)
    # A broker refuses a re-authentication less than 1 s after the previous one.
    assert reauthentication_delay_s(1500, 0.5) == MIN_REAUTH_INTERVAL_S
    assert reauthentication_delay_s(1, 0.5) == MIN_REAUTH_INTERVAL_S


# ----------------------------------------------------- the exchange, with a fake broker


@dataclass
class FakeBroker:
    """Answers the gateway's SaslHandshake/SaslAuthenticate as the session's response pump
    would deliver them; records what was sent in which order."""

    lifetime_ms: int = 4000
    error_code: int = 0
    sent: list[tuple[int, int, int]] = field(default_factory=list)
    expected: list[tuple[int, Callable[[bytes], None]]] = field(default_factory=list)

    def expect(
        self, api_key: int, version: int, cid: int, deliver: Callable[[bytes], None]
    ) -> None:
        self.expected.append((cid, deliver))

    async def send(self, frame: bytes) -> None:
        api_key, version, cid = peek_api(memoryview(frame)[4:])
        self.sent.append((api_key, version, cid))
        expected_cid, deliver = self.expected.pop(0)
        assert expected_cid == cid  # queued before it was sent, in order
        if api_key == 17:
            answer = sasl_handshake_response_frame(
                cid, SaslHandshakeResponse(0, ("PLAIN",)), version
            )
        else:
            message = "Authentication failed" if self.error_code else None
            response = SaslAuthenticateResponse(self.error_code, message, b"", self.lifetime_ms)
            answer = sasl_authenticate_response_frame(cid, response, version)
        await trio.lowlevel.checkpoint()
        deliver(answer[4:])


def upstream_config() -> UpstreamConfig:
    return UpstreamConfig.model_validate(
        {
            "bootstrap_servers": [str(ADDRESS)],
            "request_timeout_ms": 2000,
            "sasl": {"mechanism": "PLAIN", "username": "gateway", "password": "s3cret-pw"},
        }
    )


def make_reauth(broker: FakeBroker, requests: FrameStream | None = None) -> Any:
    log = structlog.get_logger("test").bind()
    return UpstreamReauthentication(
        requests or FrameStream(),
        send=broker.send,
        expect=broker.expect,
        log=log,
        jitter=lambda: 0.0,
    )


def connection(lifetime_ms: int) -> UpstreamConnection:
    stream = trio.testing.MemorySendStream()  # never used: frames go through `send`
    return UpstreamConnection(stream, ADDRESS, "PLAIN", lifetime_ms, trio.current_time())  # type: ignore[arg-type]


async def test_reauthenticates_before_each_session_ends(autojump_clock: Any) -> None:
    broker = FakeBroker(lifetime_ms=4000)
    reauth = make_reauth(broker)
    start = trio.current_time()
    reauth.attach(connection(4000), upstream_config())
    assert reauth.due_at == pytest.approx(start + 3.0)
    with trio.move_on_after(10):  # three sessions of 4 s renewed every 3 s
        await reauth.run()
    assert reauth.count == 3
    assert [(key, version) for key, version, _ in broker.sent] == [(17, 1), (36, 2)] * 3
    assert all(cid in REAUTH_CORRELATION_IDS for _, _, cid in broker.sent)


async def test_a_shorter_new_lifetime_is_followed(autojump_clock: Any) -> None:
    broker = FakeBroker(lifetime_ms=2000)  # e.g. a token close to its expiry
    reauth = make_reauth(broker)
    start = trio.current_time()
    reauth.attach(connection(4000), upstream_config())
    with trio.move_on_after(3.5):
        await reauth.run()
    assert reauth.count == 1
    assert reauth.due_at == pytest.approx(start + 3.0 + 1.0)  # 2 s: the 1 s margin


async def test_no_lifetime_no_exchange(autojump_clock: Any) -> None:
    broker = FakeBroker()
    reauth = make_reauth(broker)
    reauth.attach(connection(0), upstream_config())
    with trio.move_on_after(100_000):
        await reauth.run()
    assert broker.sent == [] and reauth.due_at is None


async def test_a_rejected_reauthentication_ends_the_session_with_its_reason(
    autojump_clock: Any,
) -> None:
    broker = FakeBroker(error_code=58)
    reauth = make_reauth(broker)
    reauth.attach(connection(4000), upstream_config())
    with pytest.raises(UpstreamReauthenticationFailed) as info:
        await reauth.run()
    reason = str(info.value)
    assert reason.startswith("upstream re-authentication failed")
    assert "SASL_AUTHENTICATION_FAILED (58)" in reason and "s3cret-pw" not in reason


async def test_a_broker_that_never_answers_times_out(autojump_clock: Any) -> None:
    broker = FakeBroker()

    async def swallow(frame: bytes) -> None:
        broker.sent.append(peek_api(memoryview(frame)[4:]))

    reauth = UpstreamReauthentication(
        FrameStream(), send=swallow, expect=broker.expect, log=structlog.get_logger("t")
    )
    reauth.attach(connection(4000), upstream_config())
    with pytest.raises(UpstreamReauthenticationFailed, match="not finished within 2s"):
        await reauth.run()


# ------------------------------------------------------------------ the write gate


def _forward_all(stream: FrameStream, data: bytes) -> None:
    stream.feed(data, lambda head, size: (Decision.FORWARD, None, None))


async def test_reauthentication_waits_for_the_clients_frame_to_end(autojump_clock: Any) -> None:
    """A client request half forwarded (cut-through) is finished before the exchange,
    and the client's next request waits until the exchange is over."""
    requests = FrameStream()
    broker = FakeBroker()
    reauth = make_reauth(broker, requests)
    order: list[str] = []
    reauth.attach(connection(4000), upstream_config())
    frame = (8).to_bytes(4, "big") + bytes(8)  # a request of 8 bytes

    async def client() -> None:
        await reauth.gate.client_enter()
        _forward_all(requests, frame[:6])  # half a frame forwarded upstream...
        reauth.gate.client_leave()  # ...so the gate stays with the client
        order.append("client frame started")
        await trio.sleep(5)  # the rest arrives after the re-authentication is due
        await reauth.gate.client_enter()
        _forward_all(requests, frame[6:] + frame)
        assert requests.unconsumed == frame  # paused at the boundary for the exchange
        requests.unconsumed = b""
        order.append("client frame ended")
        reauth.gate.client_leave()
        await reauth.gate.client_enter()  # the next request waits for the exchange
        order.append(f"client resumed after {reauth.count} re-authentication")
        reauth.gate.client_leave()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        with trio.move_on_after(6):
            await reauth.run()
    assert order == [
        "client frame started",
        "client frame ended",
        "client resumed after 1 re-authentication",
    ]
