"""ACLs, quotas, connection limits and reload inside ClientSession, against a fake broker.

The per-API decisions are tested in test_authorization_*; the real clients and real
Kafka in tests/integration. Here: the session answers denied requests locally in the
client's order without sending them upstream, reports and enforces quota delays,
refuses connections over a limit, and picks up new rules on the next request.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import trio
from kio.schema.heartbeat.v1.request import HeartbeatRequest
from kio.schema.types import GroupId
from kio.serial import entity_writer
from kio.static.primitive import i32

from codec.errors import GROUP_AUTHORIZATION_FAILED
from codec.framing import FrameDecoder, encode_frame
from codec.headers import encode_request_header
from policies.config_loader import parse_config
from tests.session_harness import cluster_yaml, fake_broker, gateway_in_front_of, read_frame

HEARTBEAT = 12

ALLOW_GROUP_OK = """
    authorization:
      rules:
        - principals: ["User:ANONYMOUS"]
          resource_type: group
          resource_name: ok
          operations: [Read]
"""


def heartbeat(correlation_id: int, group: str) -> bytes:
    body = io.BytesIO()
    entity_writer(HeartbeatRequest)(
        body, HeartbeatRequest(group_id=GroupId(group), generation_id=i32(1), member_id="m")
    )
    header = encode_request_header(HEARTBEAT, 1, correlation_id, "unit-client")
    return encode_frame(header, body.getvalue())


class Recorder:
    """A fake broker's handler: remembers each request, answers Heartbeat v1 with no error."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    async def __call__(self, api_key: int, version: int, cid: int, stream: Any) -> None:
        self.seen.append((cid, trio.current_time()))
        await stream.send_all(encode_frame(struct.pack(">i", cid), struct.pack(">ih", 0, 0)))


def heartbeat_answer(frame: bytes) -> tuple[int, int, int]:
    """(correlation id, throttle_time_ms, error_code) of a Heartbeat v1 response."""
    return struct.unpack_from(">iih", frame)


async def test_denied_request_is_answered_locally_in_order_and_never_sent_upstream() -> None:
    broker = Recorder()
    async with (
        fake_broker(broker) as upstream,
        gateway_in_front_of(upstream, ALLOW_GROUP_OK) as (port, _),
    ):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        decoder = FrameDecoder()
        await client.send_all(heartbeat(1, "ok") + heartbeat(2, "secret") + heartbeat(3, "ok"))
        answers = []
        with trio.fail_after(5):
            for _ in range(3):
                frame = await read_frame(client, decoder)
                assert frame is not None
                answers.append(heartbeat_answer(frame))
        assert [a[0] for a in answers] == [1, 2, 3]
        assert [a[2] for a in answers] == [0, GROUP_AUTHORIZATION_FAILED, 0]
        assert [cid for cid, _ in broker.seen] == [1, 3]
        await client.aclose()


async def test_new_rules_apply_to_an_open_connection_on_its_next_request() -> None:
    broker = Recorder()
    async with (
        fake_broker(broker) as upstream,
        gateway_in_front_of(upstream, ALLOW_GROUP_OK) as (port, vc),
    ):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        decoder = FrameDecoder()
        await client.send_all(heartbeat(1, "secret"))
        with trio.fail_after(5):
            frame = await read_frame(client, decoder)
        assert frame is not None and heartbeat_answer(frame)[2] == GROUP_AUTHORIZATION_FAILED
        reloaded = parse_config(
            cluster_yaml(port, upstream, ALLOW_GROUP_OK.replace("name: ok", "name: secret"))
        )
        assert vc.reconfigure(reloaded.virtual_clusters[0]) == []
        await client.send_all(heartbeat(2, "secret"))
        with trio.fail_after(5):
            frame = await read_frame(client, decoder)
        assert frame is not None and heartbeat_answer(frame) == (2, 0, 0)
        assert [cid for cid, _ in broker.seen] == [2]
        await client.aclose()


REQUEST_QUOTA = """
    quotas:
      window: {samples: 2, sample_ms: 1000}
      clients:
        - principal: "User:ANONYMOUS"
          requests_per_second: 2
"""


async def test_request_quota_reports_throttle_time_and_mutes_the_client() -> None:
    broker = Recorder()
    async with (
        fake_broker(broker) as upstream,
        gateway_in_front_of(upstream, REQUEST_QUOTA) as (port, _),
    ):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        decoder = FrameDecoder()
        throttles, sent_at = [], []
        with trio.fail_after(20):
            for cid in range(1, 6):
                sent_at.append(trio.current_time())
                await client.send_all(heartbeat(cid, "any"))
                frame = await read_frame(client, decoder)
                assert frame is not None
                throttles.append(heartbeat_answer(frame)[1])
        assert throttles[0] == 0
        assert max(throttles) > 0
        assert [cid for cid, _ in broker.seen] == [1, 2, 3, 4, 5]
        # KIP-219: once it decided to throttle a request (after the client sent it), the
        # gateway reads nothing for the delay. So the next request reaches the broker at
        # least the delay after the throttled one was sent: a bound load cannot break
        # (every clock here is trio's; load only makes the gap longer).
        for sent, (_, next_seen), delay_ms in zip(
            sent_at[:-1], broker.seen[1:], throttles[:-1], strict=True
        ):
            assert next_seen - sent >= delay_ms / 1000, (sent_at, broker.seen, throttles)
        await client.aclose()


async def test_connections_over_the_per_ip_limit_are_refused() -> None:
    limits = "    quotas:\n      connections: {max_per_ip: 1}\n"
    broker = Recorder()
    async with fake_broker(broker) as upstream, gateway_in_front_of(upstream, limits) as (port, _):
        first = await trio.open_tcp_stream("127.0.0.1", port)
        await first.send_all(heartbeat(1, "g"))
        decoder = FrameDecoder()
        with trio.fail_after(5):
            assert await read_frame(first, decoder) is not None
        second = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(5):
            assert await second.receive_some(10) == b""  # closed at once
        await first.send_all(heartbeat(2, "g"))
        with trio.fail_after(5):
            frame = await read_frame(first, decoder)
        assert frame is not None and heartbeat_answer(frame)[0] == 2
        await first.aclose()
        await second.aclose()


FETCH_QUOTA = """
    quotas:
      window: {samples: 2, sample_ms: 1000}
      clients:
        - principal: "<default>"
          fetch_bytes_per_second: 10000
"""


def fetch_v4(correlation_id: int) -> bytes:
    # replica_id, max_wait_ms, min_bytes, max_bytes, isolation_level, topics (none)
    body = struct.pack(">iiiibi", -1, 0, 0, 1 << 20, 0, 0)
    return encode_frame(encode_request_header(1, 4, correlation_id, "unit-client"), body)


async def test_fetch_quota_patches_the_streamed_response_head() -> None:
    async def large_fetch_answer(api_key: int, version: int, cid: int, stream: Any) -> None:
        # Fetch v4 response: throttle_time_ms 0, no topics, then padding a client ignores
        # here (the gateway only looks at the head of a response it does not rewrite).
        body = struct.pack(">ii", 0, 0) + b"\x00" * 30_000
        await stream.send_all(encode_frame(struct.pack(">i", cid), body))

    async with (
        fake_broker(large_fetch_answer) as upstream,
        gateway_in_front_of(upstream, FETCH_QUOTA) as (port, _),
    ):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        decoder = FrameDecoder()
        throttles = []
        with trio.fail_after(20):
            for cid in (1, 2):
                await client.send_all(fetch_v4(cid))
                frame = await read_frame(client, decoder)
                assert frame is not None and len(frame) == 4 + 8 + 30_000
                assert struct.unpack_from(">i", frame)[0] == cid
                throttles.append(struct.unpack_from(">i", frame, 4)[0])
                assert frame[12:] == b"\x00" * 30_000  # the rest is untouched
        # 30 kB against 10 kB/s over a 1-2 s window: throttled from the first answer on.
        assert all(t > 0 for t in throttles), throttles
        await client.aclose()
