"""The session with virtual node ids, in front of a scripted broker.

A client names broker 101 (offset 100): the broker must be asked about broker 1,
and the answer must name 101 again, with and without ACLs in the way. Metadata
shows node 101 on the port of 101. With the identity mapping the request reaches
the broker byte for byte.
"""

from __future__ import annotations

import contextlib
import datetime
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
import trio
from kio.schema.describe_configs.v4.request import DescribeConfigsRequest, DescribeConfigsResource
from kio.schema.describe_configs.v4.response import DescribeConfigsResponse, DescribeConfigsResult
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.request import MetadataRequest
from kio.schema.metadata.v12.response import MetadataResponse
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i8

from codec.framing import FrameDecoder, encode_frame
from codec.headers import (
    encode_request_header,
    encode_response_header,
    parse_request_header,
    peek_api,
    response_body_offset,
)
from tests.session_harness import gateway_in_front_of, metadata_v12_body, read_frame

DESCRIBE_CONFIGS, METADATA = 32, 3
OFFSET_100 = """
    node_ids: {offset: 100}
"""
OFFSET_100_WITH_ACLS = (
    OFFSET_100
    + """
    authorization:
      rules:
        - principals: ["User:ANONYMOUS"]
          resource_type: cluster
          resource_name: kafka-cluster
          operations: [DescribeConfigs, Describe]
"""
)


def _encode(obj: Any) -> bytes:
    out = io.BytesIO()
    entity_writer(type(obj))(out, obj)
    return out.getvalue()


def _body(frame: bytes, cls: Any) -> Any:
    obj, _ = entity_reader(cls)(frame[parse_request_header(frame).body_offset :], 0)
    return obj


def describe_broker(correlation_id: int, name: str) -> bytes:
    request = DescribeConfigsRequest(
        resources=(
            DescribeConfigsResource(
                resource_type=i8(4), resource_name=name, configuration_keys=("node.id",)
            ),
        ),
        include_synonyms=False,
        include_documentation=False,
    )
    header = encode_request_header(DESCRIBE_CONFIGS, 4, correlation_id, "unit-client")
    return encode_frame(header, _encode(request))


def _describe_answer(frame: bytes) -> bytes:
    """DescribeConfigs v4 answer naming the resource the request named (as Kafka does)."""
    _, _, cid = peek_api(frame)
    request = _body(frame, DescribeConfigsRequest)
    response = DescribeConfigsResponse(
        throttle_time=datetime.timedelta(0),
        results=(
            DescribeConfigsResult(
                error_code=ErrorCode.none,
                error_message=None,
                resource_type=i8(4),
                resource_name=request.resources[0].resource_name,
                configs=(),
            ),
        ),
    )
    return encode_frame(encode_response_header(cid, DESCRIBE_CONFIGS, 4), _encode(response))


@asynccontextmanager
async def config_broker(frames: list[bytes]) -> AsyncIterator[int]:
    """A fake broker answering Metadata (node 1) and DescribeConfigs; keeps every frame."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder()
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            while data := await stream.receive_some(65536):
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    frame = bytes(frame)
                    api_key, version, cid = peek_api(frame)
                    if api_key == METADATA:
                        header = encode_response_header(cid, METADATA, version)
                        await stream.send_all(encode_frame(header, metadata_v12_body(port)))
                    else:
                        frames.append(frame)
                        await stream.send_all(_describe_answer(frame))

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, serve, listeners)
        yield port
        nursery.cancel_scope.cancel()


async def _ask(port: int, frame: bytes) -> bytes:
    client = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await client.send_all(frame)
        with trio.fail_after(5):
            answer = await read_frame(client, FrameDecoder())
    finally:
        await client.aclose()
    assert answer is not None
    return bytes(answer)


async def _describe(extra: str, name: str) -> tuple[bytes, bytes, str, str]:
    """(frame sent, frame the broker got, name the broker saw, name the client got back)."""
    received: list[bytes] = []
    sent = describe_broker(7, name)
    async with (
        config_broker(received) as upstream,
        gateway_in_front_of(upstream, extra) as (
            port,
            _,
        ),
    ):
        answer = await _ask(port, sent)
    body = answer[response_body_offset(answer, DESCRIBE_CONFIGS, 4) :]
    response, _ = entity_reader(DescribeConfigsResponse)(body, 0)
    (upstream_frame,) = received
    seen = _body(upstream_frame, DescribeConfigsRequest).resources[0].resource_name
    return sent[4:], upstream_frame, seen, response.results[0].resource_name


@pytest.mark.parametrize("extra", [OFFSET_100, OFFSET_100_WITH_ACLS], ids=["plain", "acls"])
async def test_describe_configs_of_a_virtual_broker_asks_about_the_upstream_one(
    extra: str,
) -> None:
    _, _, seen, answered = await _describe(extra, "101")
    assert (seen, answered) == ("1", "101")


async def test_identity_forwards_the_request_byte_for_byte() -> None:
    sent, upstream_frame, seen, answered = await _describe("", "101")
    assert upstream_frame == sent
    assert (seen, answered) == ("101", "101")


async def test_metadata_names_virtual_node_on_its_port() -> None:
    request = MetadataRequest(
        topics=(), allow_auto_topic_creation=False, include_topic_authorized_operations=False
    )
    frame = encode_frame(encode_request_header(METADATA, 12, 3, "unit"), _encode(request))
    async with (
        config_broker([]) as upstream,
        gateway_in_front_of(upstream, OFFSET_100) as (
            port,
            cluster,
        ),
    ):
        answer = await _ask(port, frame)
        body = answer[response_body_offset(answer, METADATA, 12) :]
        response, _ = entity_reader(MetadataResponse)(body, 0)
        (broker,) = response.brokers
        assert (broker.node_id, response.controller_id) == (101, 101)
        assert (broker.host, broker.port) == ("127.0.0.1", port + 1 + 101)
        assert cluster.upstream_of(101) is not None and cluster.upstream_of(1) is None
        # The broker port of 101 is bound and reaches upstream broker 1.
        again = await _ask(port + 1 + 101, frame)
        assert again[:4] == answer[:4]


async def test_a_malformed_request_naming_a_broker_closes_only_its_connection() -> None:
    received: list[bytes] = []
    good = describe_broker(7, "101")
    header = encode_request_header(DESCRIBE_CONFIGS, 4, 8, "unit-client")
    malformed = encode_frame(header, b"\x7f\xff\xff\xff")  # 126 resources in 3 bytes
    with structlog.testing.capture_logs() as events:
        async with (
            config_broker(received) as upstream,
            gateway_in_front_of(upstream, OFFSET_100) as (port, _),
        ):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(malformed)
            with trio.fail_after(5):
                assert await read_frame(client, FrameDecoder()) is None  # closed, no answer
            await client.aclose()
            assert await _ask(port, good)  # the gateway still serves others
    assert len(received) == 1  # only the good request reached the broker
    reasons = [e.get("reason", "") for e in events if e["event"] == "connection_closed"]
    expected = "cannot map node ids in describe_configs v4 request"
    assert any(r.startswith(expected) for r in reasons), reasons
