"""An in-process gateway in front of a scripted fake broker, for ClientSession's unit tests.

``fake_broker(handler)`` listens on loopback, answers the gateway's own broker
discovery (Metadata) itself and hands every other request to ``handler``;
``gateway_in_front_of(upstream, extra)`` runs one ``VirtualCluster`` (bootstrap port
and broker 1's port) with ``extra`` YAML appended to its cluster entry. Real clients
against real Kafka are in tests/integration; this fake exists to make the upstream
misbehave in ways a healthy broker never does and to pin down ordering exactly.
"""

from __future__ import annotations

import contextlib
import datetime
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio
from kio.schema.metadata.v12.response import (
    MetadataResponse,
    MetadataResponseBroker,
    MetadataResponseTopic,
)
from kio.serial import entity_writer
from kio.static.primitive import i32

from codec.framing import FrameDecoder, encode_frame
from codec.headers import encode_request_header, encode_response_header, peek_api
from gateway.cluster import VirtualCluster
from policies.config_loader import parse_config
from tests.gateway_harness import free_port_block

#: A fake broker's answer to one request: (api_key, version, correlation_id, stream).
Handler = Callable[[int, int, int, trio.SocketStream], Awaitable[None]]

METADATA = 3


def metadata_v12_body(port: int, topics: tuple[MetadataResponseTopic, ...] = ()) -> bytes:
    """A Metadata v12 response body naming one broker (node 1 at 127.0.0.1:``port``)."""
    response = MetadataResponse(
        throttle_time=datetime.timedelta(0),
        brokers=(
            MetadataResponseBroker(node_id=i32(1), host="127.0.0.1", port=i32(port), rack=None),
        ),
        cluster_id="fake",
        controller_id=i32(1),
        topics=topics,
    )
    buf = io.BytesIO()
    entity_writer(MetadataResponse)(buf, response)
    return buf.getvalue()


@asynccontextmanager
async def fake_broker(handler: Handler) -> AsyncIterator[int]:
    """A loopback listener answering each request with ``handler``; yields its port."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder()
        with contextlib.suppress(trio.ClosedResourceError):
            while data := await stream.receive_some(65536):
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    api_key, version, correlation_id = peek_api(frame)
                    if api_key == METADATA:  # the gateway's own broker discovery
                        header = encode_response_header(correlation_id, METADATA, version)
                        await stream.send_all(encode_frame(header, metadata_v12_body(port)))
                    else:
                        await handler(api_key, version, correlation_id, stream)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, serve, listeners)
        yield port
        nursery.cancel_scope.cancel()


def cluster_yaml(port: int, upstream: int, extra: str = "") -> str:
    """One virtual cluster "unit": bootstrap on ``port``, broker 1 on ``port + 1``,
    upstream at ``upstream``; ``extra`` (indented YAML) is appended to its entry."""
    return f"""
virtual_clusters:
  - name: unit
    listener: {{bootstrap: "127.0.0.1:{port}", broker_ports: {{1: {port + 1}}}}}
    upstream: {{bootstrap_servers: ["127.0.0.1:{upstream}"]}}
{extra}
"""


@asynccontextmanager
async def gateway_in_front_of(
    upstream: int, extra: str = ""
) -> AsyncIterator[tuple[int, VirtualCluster]]:
    """A running gateway for ``cluster_yaml(port, upstream, extra)``; yields (port, cluster)."""
    port = free_port_block(2)
    config = parse_config(cluster_yaml(port, upstream, extra))
    cluster = VirtualCluster(config.virtual_clusters[0], config)
    async with trio.open_nursery() as nursery:
        await nursery.start(cluster.run)
        yield port, cluster
        nursery.cancel_scope.cancel()


async def read_frame(stream: trio.SocketStream, decoder: FrameDecoder) -> bytes | None:
    """The next whole frame from ``stream``, or None once it is closed."""
    while (frame := decoder.next_frame()) is None:
        data = await stream.receive_some(65536)
        if not data:
            return None
        decoder.feed(data)
    return frame


def request(api_key: int, version: int, correlation_id: int) -> bytes:
    """A size-prefixed request frame with a one-byte body (enough for forwarding tests)."""
    return encode_frame(encode_request_header(api_key, version, correlation_id, "unit"), b"\x00")
