"""The gateway's own requests to the brokers: broker discovery through Metadata.

Clients learn broker addresses from Metadata responses the gateway rewrites, but
the gateway must also know them on its own: after a restart clients reconnect
straight to broker ports with cached metadata, and new brokers must get their
port bound before any client is told about them.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import trio

from codec.framing import FrameDecoder, encode_frame
from codec.headers import encode_request_header, response_body_offset, response_correlation_id
from codec.metadata import metadata_topic_ids
from codec.primitives import CodecError, enc_array_length
from codec.rewrite import rewrite_response
from gateway.upstream import open_upstream
from policies.config import UpstreamConfig

T = TypeVar("T")

METADATA_KEY = 3
#: Metadata v12 is served by every Kafka from 3.1 to 4.x and is flexible.
DISCOVERY_METADATA_VERSION = 12
# topics=[] (compact array of 0), allow_auto_topic_creation=false,
# include_topic_authorized_operations=false, no tagged fields.
_METADATA_NO_TOPICS_V12 = b"\x01\x00\x00\x00"
# Per topic asked by id: the 16-byte id, then name=null and no tagged fields.
_BY_ID_TOPIC_TAIL = b"\x00\x00"
_CLIENT_ID = "kafka-gateway"

_correlation_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    node_id: int
    host: str
    port: int


class DiscoveryError(ConnectionError):
    """The upstream cluster could not be asked for its brokers."""


async def request_response(
    stream: trio.abc.Stream, api_key: int, version: int, body: bytes, timeout_s: float
) -> bytes:
    """Send one request on ``stream`` and return the body of its response."""
    correlation_id = next(_correlation_ids) & 0x7FFFFFFF
    header = encode_request_header(api_key, version, correlation_id, _CLIENT_ID)
    decoder = FrameDecoder()
    with trio.fail_after(timeout_s):
        await stream.send_all(encode_frame(header, body))
        while (frame := decoder.next_frame()) is None:
            data = await stream.receive_some(65536)
            if not data:
                raise DiscoveryError("broker closed the connection before answering")
            decoder.feed(data)
    if response_correlation_id(frame) != correlation_id:
        raise DiscoveryError("broker answered with another correlation id")
    return frame[response_body_offset(frame, api_key, version) :]


def brokers_in_metadata(body: bytes, version: int) -> list[BrokerAddress]:
    """The brokers listed in a Metadata response body."""
    found: list[BrokerAddress] = []

    def record(node_id: int, host: str, port: int) -> tuple[str, int]:
        found.append(BrokerAddress(node_id, host, port))
        return host, port

    rewrite_response(METADATA_KEY, version, body, record)
    return found


async def discover_brokers(upstream: UpstreamConfig) -> list[BrokerAddress]:
    """Ask the first reachable bootstrap server for the cluster's brokers.

    The connection is made like every upstream connection, with TLS and the gateway's
    own SASL credentials when configured (:func:`gateway.upstream.open_upstream`).
    """
    return await ask_upstream(
        upstream,
        (METADATA_KEY, DISCOVERY_METADATA_VERSION, _METADATA_NO_TOPICS_V12),
        lambda body: brokers_in_metadata(body, DISCOVERY_METADATA_VERSION),
        "metadata request to",
    )


async def ask_upstream(
    upstream: UpstreamConfig,
    request: tuple[int, int, bytes],
    parse: Callable[[bytes], T],
    what: str,
) -> T:
    """One request ``(api key, version, body)`` on a fresh upstream connection (TLS and
    the gateway's SASL login as configured), its answer's body read by ``parse``.

    Raises :class:`DiscoveryError` (``"<what> <address> failed: ..."``) if the broker
    does not answer in ``request_timeout_ms`` or its answer cannot be read.
    """
    api_key, version, body = request
    connection = await open_upstream(upstream.bootstrap_servers, upstream)
    async with connection.stream as stream:
        try:
            answer = await request_response(
                stream, api_key, version, body, upstream.request_timeout_ms / 1000
            )
            return parse(answer)
        except (trio.TooSlowError, trio.BrokenResourceError, CodecError) as exc:
            raise DiscoveryError(f"{what} {connection.address} failed: {exc!r}") from exc


API_VERSIONS_KEY = 18
#: ApiVersions v3+ names the client software (compact strings, then no tagged fields).
_API_VERSIONS_V3_BODY = b"\x0ekafka-gateway\x020\x00"


class BrokerApiVersions:
    """The brokers' ApiVersions answer per request version, fetched once and kept.

    A listener that terminates SASL answers ApiVersions itself before a client has
    logged in (it has no upstream connection yet); it serves the body a broker gave
    the gateway for the same request version, so the client sees what the forwarded
    path would show it. Entries are refreshed after ``metadata_refresh_interval_ms``;
    concurrent misses share one fetch.
    """

    def __init__(self, upstream: UpstreamConfig) -> None:
        self._upstream = upstream
        self._bodies: dict[int, tuple[bytes, float]] = {}
        self._lock = trio.Lock()

    async def body(self, version: int) -> bytes:
        """The broker's ApiVersions response body (after the correlation id) for ``version``."""
        max_age_s = self._upstream.metadata_refresh_interval_ms / 1000
        async with self._lock:
            cached = self._bodies.get(version)
            if cached is not None and trio.current_time() - cached[1] < max_age_s:
                return cached[0]
            body = await self._fetch(version)
            self._bodies[version] = (body, trio.current_time())
            return body

    async def _fetch(self, version: int) -> bytes:
        request = _API_VERSIONS_V3_BODY if version >= 3 else b""
        return await ask_upstream(
            self._upstream, (API_VERSIONS_KEY, version, request), bytes, "ApiVersions request to"
        )


def metadata_by_id_request(topic_ids: Sequence[uuid.UUID]) -> bytes:
    """A Metadata v12 request body for ``topic_ids`` (v12 is the first to accept ids)."""
    topics = b"".join(topic_id.bytes + _BY_ID_TOPIC_TAIL for topic_id in topic_ids)
    # allow_auto_topic_creation=false, include_topic_authorized_operations=false, no tags.
    return enc_array_length(len(topic_ids), True) + topics + b"\x00\x00\x00"


async def lookup_topic_ids(
    upstream: UpstreamConfig, topic_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Ask the upstream for the names of ``topic_ids``; unknown ids are left out.

    Kafka answers an unknown (or, for the gateway's principal, undescribable) id
    with an error and a null name, which :func:`metadata_topic_ids` skips.
    """
    return await ask_upstream(
        upstream,
        (METADATA_KEY, DISCOVERY_METADATA_VERSION, metadata_by_id_request(topic_ids)),
        lambda body: metadata_topic_ids(body, DISCOVERY_METADATA_VERSION),
        "topic id lookup at",
    )
