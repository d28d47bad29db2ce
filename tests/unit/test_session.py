"""ClientSession's own logic, against a scripted fake broker on loopback.

Real clients against real Kafka are in tests/integration; the fake broker
(tests/session_harness.py) only exists to make the upstream misbehave in ways a healthy
broker never does (wrong correlation id, closing mid-request) and to pin down response
ordering exactly.
"""

from __future__ import annotations

import struct
import uuid

import trio
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.response import (
    MetadataResponseTopic,
)
from kio.schema.types import TopicName
from kio.static.primitive import i32

from codec.framing import FrameDecoder, encode_frame
from gateway.cluster import VirtualCluster
from policies.config_loader import parse_config
from tests.session_harness import (
    fake_broker,
    gateway_in_front_of,
    metadata_v12_body,
    read_frame,
    request,
)


async def test_local_unsupported_version_answer_waits_for_earlier_responses() -> None:
    release = trio.Event()

    async def slow_answer(api_key: int, version: int, cid: int, stream: trio.SocketStream) -> None:
        await release.wait()
        await stream.send_all(encode_frame(struct.pack(">i", cid), b"\x00" * 8))

    async with fake_broker(slow_answer) as upstream, gateway_in_front_of(upstream) as (port, _):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        decoder = FrameDecoder()
        await client.send_all(request(12, 0, 1) + request(18, 99, 2))  # Heartbeat, ApiVersions
        with trio.move_on_after(0.2):
            early = await read_frame(client, decoder)
            raise AssertionError(f"the local answer overtook the broker's: {early!r}")
        release.set()
        first = await read_frame(client, decoder)
        second = await read_frame(client, decoder)
        assert first is not None and second is not None
        assert struct.unpack_from(">i", first)[0] == 1
        assert struct.unpack_from(">i", second)[0] == 2
        assert second[4:6] == b"\x00\x23"  # UNSUPPORTED_VERSION
        await client.aclose()


async def test_wrong_correlation_id_from_upstream_closes_the_client() -> None:
    async def wrong_id(api_key: int, version: int, cid: int, stream: trio.SocketStream) -> None:
        await stream.send_all(encode_frame(struct.pack(">i", cid + 1), b"\x00" * 8))

    async with fake_broker(wrong_id) as upstream, gateway_in_front_of(upstream) as (port, _):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(request(12, 0, 41))
        with trio.fail_after(5):
            assert await read_frame(client, FrameDecoder()) is None


async def test_upstream_closing_mid_request_closes_the_client() -> None:
    async def hang_up(api_key: int, version: int, cid: int, stream: trio.SocketStream) -> None:
        await stream.aclose()

    async with fake_broker(hang_up) as upstream, gateway_in_front_of(upstream) as (port, _):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(request(12, 0, 7))
        with trio.fail_after(5):
            assert await read_frame(client, FrameDecoder()) is None


async def test_discovery_binds_broker_ports_and_maps_addresses() -> None:
    async def unused(api_key: int, version: int, cid: int, stream: trio.SocketStream) -> None:
        raise AssertionError("no client request expected")

    async with fake_broker(unused) as upstream, gateway_in_front_of(upstream) as (port, cluster):
        with trio.fail_after(5):
            await cluster.discovered.wait()
        assert cluster.upstream_of(1) is not None
        assert cluster.upstream_of(1).port == upstream  # type: ignore[union-attr]
        assert cluster.client_address(1, "127.0.0.1", upstream) == ("127.0.0.1", port + 1)
        # The broker port is bound and forwards to the fake broker.
        stream = await trio.open_tcp_stream("127.0.0.1", port + 1)
        await stream.aclose()


def test_topic_ids_resolve_lazily_from_remembered_metadata() -> None:
    config = parse_config(
        """
virtual_clusters:
  - name: unit
    listener: {bootstrap: "127.0.0.1:9092"}
    upstream: {bootstrap_servers: ["127.0.0.1:19092"]}
"""
    )
    cluster = VirtualCluster(config.virtual_clusters[0], config)
    orders_id, unknown_id = uuid.uuid4(), uuid.uuid4()
    topic = MetadataResponseTopic(
        error_code=ErrorCode.none,
        name=TopicName("orders"),
        topic_id=orders_id,
        is_internal=False,
        partitions=(),
        topic_authorized_operations=i32(-2147483648),
    )
    frame = b"\x00\x00\x00\x01\x00" + metadata_v12_body(19092, (topic,))
    cluster.remember_metadata(frame, 5, 12)
    assert cluster.topic_name(orders_id) == "orders"
    assert cluster.topic_name(unknown_id) is None
    cluster.remember_metadata(frame, 5, 9)  # before v10 there are no topic ids to learn
    assert cluster.topic_name(unknown_id) is None


async def test_a_client_pipelining_without_bound_has_at_most_max_in_flight_upstream() -> None:
    """Like a broker's muted channel: the gateway stops reading a client whose requests
    are not answered yet, so its memory per connection is bounded, and resumes as
    answers go out. Nothing is lost or reordered."""
    from gateway.session import MAX_IN_FLIGHT

    total = MAX_IN_FLIGHT * 2 + 500
    held: list[tuple[int, trio.SocketStream]] = []
    answered = 0
    worst_backlog = 0
    received_more = trio.Event()

    async def hold(api_key: int, version: int, cid: int, stream: trio.SocketStream) -> None:
        nonlocal worst_backlog
        held.append((cid, stream))
        worst_backlog = max(worst_backlog, len(held) - answered)
        received_more.set()

    async def received(count: int) -> None:
        nonlocal received_more
        with trio.fail_after(20):
            while len(held) < count:
                received_more = trio.Event()
                await received_more.wait()

    async def answer(count: int) -> None:
        nonlocal answered
        for cid, stream in held[answered : answered + count]:
            answered += 1  # counted before it can reach the gateway
            await stream.send_all(encode_frame(struct.pack(">i", cid), b"\x00\x00"))

    async with fake_broker(hold) as upstream, gateway_in_front_of(upstream) as (port, _):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(b"".join(request(12, 0, cid) for cid in range(total)))
        await received(MAX_IN_FLIGHT)
        await answer(500)
        await received(MAX_IN_FLIGHT + 500)
        while answered < total:
            await answer(min(MAX_IN_FLIGHT, total - answered))
            await received(min(total, answered + MAX_IN_FLIGHT))
        decoder = FrameDecoder()
        with trio.fail_after(20):
            for cid in range(total):
                frame = await read_frame(client, decoder)
                assert frame is not None and struct.unpack_from(">i", frame)[0] == cid
        await client.aclose()
    assert len(held) == total
    assert worst_backlog <= MAX_IN_FLIGHT, f"{worst_backlog} requests in flight upstream"
