"""The topic id -> name map (gateway/topic_ids.py): learned from every Metadata
response however many arrive, newest id per name, and looked up upstream once
(single-flight, rate-limited) for ids no response has shown."""

from __future__ import annotations

import datetime
import io
import itertools
import uuid
from typing import Any

import pytest
import structlog
import trio
import trio.testing
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.request import MetadataRequest
from kio.schema.metadata.v12.response import (
    MetadataResponse,
    MetadataResponseBroker,
    MetadataResponseTopic,
)
from kio.schema.types import TopicName
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i32

from codec.framing import FrameDecoder, encode_frame
from codec.headers import encode_response_header, parse_request_header, peek_api
from gateway import topic_ids as topic_ids_module
from gateway.cluster import VirtualCluster
from gateway.discovery import lookup_topic_ids, metadata_by_id_request
from gateway.topic_ids import LOOKUP_INTERVAL_S, TopicIds
from policies.config_loader import parse_config

LOG = structlog.get_logger("test")


def metadata_body(topics: dict[uuid.UUID, str], error: ErrorCode = ErrorCode.none) -> bytes:
    """A Metadata v12 response body naming ``topics`` (id -> name)."""
    response = MetadataResponse(
        throttle_time=datetime.timedelta(0),
        brokers=(MetadataResponseBroker(node_id=i32(1), host="h", port=i32(1), rack=None),),
        cluster_id="fake",
        controller_id=i32(1),
        topics=tuple(
            MetadataResponseTopic(
                error_code=error,
                name=TopicName(name),
                topic_id=topic_id,
                is_internal=False,
                partitions=(),
                topic_authorized_operations=i32(-2147483648),
            )
            for topic_id, name in topics.items()
        ),
    )
    buf = io.BytesIO()
    entity_writer(MetadataResponse)(buf, response)
    return buf.getvalue()


def metadata_frame(topics: dict[uuid.UUID, str]) -> bytes:
    return b"\x00\x00\x00\x01\x00" + metadata_body(topics)  # correlation id, header tags


async def no_lookup(ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    raise AssertionError(f"no upstream look-up expected, asked for {ids}")


def cluster_config() -> Any:
    return parse_config(
        """
virtual_clusters:
  - name: unit
    listener: {bootstrap: "127.0.0.1:9092"}
    upstream: {bootstrap_servers: ["127.0.0.1:19092"]}
"""
    )


# --- learning from Metadata responses ---------------------------------------------


def test_every_topic_of_many_single_topic_responses_resolves() -> None:
    """The bug of issue 10: only the last 8 unread responses were kept."""
    config = cluster_config()
    cluster = VirtualCluster(config.virtual_clusters[0], config)
    topics = {uuid.uuid4(): f"topic-{n}" for n in range(30)}
    for topic_id, name in topics.items():
        cluster.remember_metadata(metadata_frame({topic_id: name}), 5, 12)
    assert {i: cluster.topic_name(i) for i in topics} == topics


def test_ids_stay_resolved_after_the_responses_were_read() -> None:
    ids = TopicIds(no_lookup, LOG)
    first, later = uuid.uuid4(), uuid.uuid4()
    ids.remember(metadata_frame({first: "first"}), 5, 12)
    assert ids.name_of(first) == "first"  # reads the unread response
    for n in range(20):
        ids.remember(metadata_frame({uuid.uuid4(): f"other-{n}"}), 5, 12)
    ids.remember(metadata_frame({later: "later"}), 5, 12)
    assert ids.name_of(later) == "later"
    assert ids.name_of(first) == "first"
    assert len(ids) == 22


def test_known_name_only_reads_what_is_indexed() -> None:
    # A decision thread asks known_name: it must not index pending responses (only
    # the event loop mutates the map); a miss is resolved on the loop, then re-asked.
    ids = TopicIds(no_lookup, LOG)
    topic_id = uuid.uuid4()
    ids.remember(metadata_frame({topic_id: "orders"}), 5, 12)
    assert ids.known_name(topic_id) is None
    assert ids.name_of(topic_id) == "orders"
    assert ids.known_name(topic_id) == "orders"


def test_metadata_before_v10_teaches_nothing() -> None:
    ids = TopicIds(no_lookup, LOG)
    topic_id = uuid.uuid4()
    ids.remember(metadata_frame({topic_id: "orders"}), 5, 9)
    assert ids.name_of(topic_id) is None


def test_a_recreated_topic_replaces_its_old_id() -> None:
    ids = TopicIds(no_lookup, LOG)
    old, new = uuid.uuid4(), uuid.uuid4()
    ids.remember(metadata_frame({old: "orders"}), 5, 12)
    assert ids.name_of(old) == "orders"
    ids.remember(metadata_frame({new: "orders"}), 5, 12)
    assert ids.name_of(new) == "orders"
    assert ids.name_of(old) is None
    assert len(ids) == 1


def test_newest_response_wins_when_read_together() -> None:
    ids = TopicIds(no_lookup, LOG)
    old, new = uuid.uuid4(), uuid.uuid4()
    ids.remember(metadata_frame({old: "orders"}), 5, 12)
    ids.remember(metadata_frame({new: "orders"}), 5, 12)
    assert ids.name_of(old) is None
    assert ids.name_of(new) == "orders"


def test_unread_responses_are_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory grows with topics, not with responses: over the byte bound they are read."""
    monkeypatch.setattr(topic_ids_module, "UNREAD_METADATA_BYTES", 10_000)
    ids = TopicIds(no_lookup, LOG)
    topic_id = uuid.uuid4()
    for _ in range(1000):  # the same topic, refreshed by many clients
        ids.remember(metadata_frame({topic_id: "orders"}), 5, 12)
        assert ids._unread_bytes <= 10_000
    assert len(ids) == 1
    assert ids.name_of(topic_id) == "orders"


def test_map_size_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topic_ids_module, "MAX_TOPIC_IDS", 3)
    ids = TopicIds(no_lookup, LOG)
    seen = [uuid.uuid4() for _ in range(5)]
    for n, topic_id in enumerate(seen):
        ids.learn({topic_id: f"t{n}"})
    assert len(ids) == 3
    assert [ids.name_of(i) for i in seen] == [None, None, "t2", "t3", "t4"]


def test_unreadable_metadata_is_logged_and_skipped() -> None:
    ids = TopicIds(no_lookup, LOG)
    good = uuid.uuid4()
    ids.remember(metadata_frame({uuid.uuid4(): "cut"})[:-7], 5, 12)
    ids.remember(metadata_frame({good: "good"}), 5, 12)
    assert ids.name_of(good) == "good"


# --- upstream look-ups --------------------------------------------------------------


class RecordingLookup:
    def __init__(self, known: dict[uuid.UUID, str], *, delay_s: float = 0.0) -> None:
        self.known = known
        self.delay_s = delay_s
        self.calls: list[tuple[float, list[uuid.UUID]]] = []

    async def __call__(self, asked: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        self.calls.append((trio.current_time(), asked))
        await trio.sleep(self.delay_s)
        return {i: self.known[i] for i in asked if i in self.known}


async def test_an_unseen_id_is_looked_up_before_it_is_refused() -> None:
    topic_id = uuid.uuid4()
    lookup = RecordingLookup({topic_id: "orders"})
    ids = TopicIds(lookup, LOG)
    await ids.resolve([topic_id])
    assert ids.name_of(topic_id) == "orders"
    assert [asked for _, asked in lookup.calls] == [[topic_id]]
    await ids.resolve([topic_id])  # known now: no second look-up
    assert len(lookup.calls) == 1


async def test_known_ids_cost_no_lookup() -> None:
    ids = TopicIds(no_lookup, LOG)
    topic_id = uuid.uuid4()
    ids.remember(metadata_frame({topic_id: "orders"}), 5, 12)
    await ids.resolve([topic_id])
    assert ids.lookups == 0


async def test_concurrent_misses_share_one_lookup(autojump_clock: trio.testing.MockClock) -> None:
    wanted = [uuid.uuid4() for _ in range(20)]
    lookup = RecordingLookup({i: f"t{n}" for n, i in enumerate(wanted)}, delay_s=1.0)
    ids = TopicIds(lookup, LOG)
    async with trio.open_nursery() as nursery:
        for topic_id in wanted:
            nursery.start_soon(ids.resolve, [topic_id])
    assert all(ids.name_of(i) is not None for i in wanted)
    # The first miss starts a look-up; all others wait and join the next one.
    assert len(lookup.calls) <= 2
    assert sorted(i for _, asked in lookup.calls for i in asked) == sorted(wanted)


async def test_lookups_are_rate_limited(autojump_clock: trio.testing.MockClock) -> None:
    lookup = RecordingLookup({})
    ids = TopicIds(lookup, LOG)
    for _ in range(5):  # a client naming random ids
        await ids.resolve([uuid.uuid4()])
    starts = [at for at, _ in lookup.calls]
    assert len(starts) == 5
    assert all(b - a >= LOOKUP_INTERVAL_S for a, b in itertools.pairwise(starts))


async def test_unknown_upstream_id_stays_unknown() -> None:
    ids = TopicIds(RecordingLookup({}), LOG)
    topic_id = uuid.uuid4()
    await ids.resolve([topic_id])
    assert ids.name_of(topic_id) is None


async def test_failed_lookup_is_not_raised() -> None:
    async def broken(asked: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        raise ConnectionRefusedError("upstream down")

    ids = TopicIds(broken, LOG)
    topic_id = uuid.uuid4()
    await ids.resolve([topic_id])
    assert ids.name_of(topic_id) is None


async def test_a_cancelled_lookup_is_taken_over(autojump_clock: trio.testing.MockClock) -> None:
    topic_id = uuid.uuid4()
    lookup = RecordingLookup({topic_id: "orders"}, delay_s=1.0)
    ids = TopicIds(lookup, LOG)
    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()

        async def impatient() -> None:
            with first:
                await ids.resolve([topic_id])

        nursery.start_soon(impatient)
        await trio.sleep(0.1)  # the impatient task runs the look-up
        nursery.start_soon(ids.resolve, [topic_id])
        await trio.sleep(0.1)
        first.cancel()  # its client went away mid-look-up
    assert ids.name_of(topic_id) == "orders"
    assert len(lookup.calls) == 2


# --- the look-up request on the wire -------------------------------------------------


def test_metadata_by_id_request_decodes_as_kafka_reads_it() -> None:
    wanted = [uuid.uuid4() for _ in range(200)]  # > 127: a two-byte array length
    body = metadata_by_id_request(wanted)
    request, size = entity_reader(MetadataRequest)(body, 0)
    assert size == len(body)
    assert request.topics is not None
    assert [t.topic_id for t in request.topics] == wanted
    assert all(t.name is None for t in request.topics)
    assert request.allow_auto_topic_creation is False


async def test_lookup_asks_the_upstream_by_id() -> None:
    known, unknown = uuid.uuid4(), uuid.uuid4()
    asked: list[list[uuid.UUID]] = []

    async def serve(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder()
        while (frame := decoder.next_frame()) is None:
            decoder.feed(await stream.receive_some(65536))
        api_key, version, correlation_id = peek_api(frame)
        assert (api_key, version) == (3, 12)
        body_offset = parse_request_header(frame).body_offset
        request, _ = entity_reader(MetadataRequest)(bytes(frame[body_offset:]), 0)
        asked.append([t.topic_id for t in request.topics])
        header = encode_response_header(correlation_id, 3, version)
        await stream.send_all(encode_frame(header, metadata_body({known: "orders"})))

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    config = parse_config(
        f"""
virtual_clusters:
  - name: unit
    listener: {{bootstrap: "127.0.0.1:9092"}}
    upstream: {{bootstrap_servers: ["127.0.0.1:{port}"]}}
"""
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, serve, listeners)
        with trio.fail_after(10):
            found = await lookup_topic_ids(config.virtual_clusters[0].upstream, [known, unknown])
        nursery.cancel_scope.cancel()
    assert asked == [[known, unknown]]
    assert found == {known: "orders"}
