"""Streaming Fetch v16+ responses: byte-identical up to the tail, tail rewritten in place."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_response_schema
from test_codec_strategies import encode, fetch_responses, gw_mapper

from codec.fetch_sizes import fetch_response_topics
from codec.fetch_stream import FILLER_TAG, FetchTailWatcher, same_size_tagged_section
from codec.framing import encode_frame
from codec.headers import encode_response_header, response_body_offset
from codec.primitives import Reader, enc_uvarint
from codec.rewrite import rewrite_response
from codec.stream import BufferedFrame, Decision, FrameStream

FETCH = 1
HEADER_V1 = struct.pack(">i", 7) + b"\x00"


def stream_through(frame: bytes, version: int, cuts: list[int]) -> tuple[bytes, FetchTailWatcher]:
    watcher = FetchTailWatcher(version, gw_mapper)
    stream = FrameStream(max_frame_bytes=1 << 24, head_bytes=4)
    out = bytearray()
    data = encode_frame(frame)
    pos, i = 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        for piece in stream.feed(
            data[pos : pos + step], lambda h, s: (Decision.WATCH, watcher, None)
        ):
            assert not isinstance(piece, BufferedFrame)
            out += piece
        pos += step
        i += 1
    assert not stream.in_frame
    return bytes(out), watcher


def tags(section: bytes) -> list[tuple[int, bytes]]:
    r = Reader(section)
    found = []
    for _ in range(r.uvarint()):
        tag, size = r.uvarint(), r.uvarint()
        found.append((tag, section[r.pos : r.pos + size]))
        r.skip(size)
    assert r.pos == len(section)
    return found


def encode_tags(entries: list[tuple[int, bytes]]) -> bytes:
    return enc_uvarint(len(entries)) + b"".join(
        enc_uvarint(tag) + enc_uvarint(len(payload)) + payload for tag, payload in entries
    )


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    version=st.sampled_from([16, 17, 18]),
    cuts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=10),
)
def test_streamed_fetch_equals_the_buffered_rewrite(
    data: Any, version: int, cuts: list[int]
) -> None:
    body = encode(data.draw(fetch_responses(version)))
    out, watcher = stream_through(HEADER_V1 + body, version, cuts)
    assert len(out) == 4 + len(HEADER_V1) + len(body), "a streamed frame must keep its size"
    tail_at = watcher.safe - len(HEADER_V1)  # offset of the tagged tail within the body
    streamed_body = out[4 + len(HEADER_V1) :]
    assert streamed_body[:tail_at] == body[:tail_at]
    expected = rewrite_response(FETCH, version, body, gw_mapper)
    if expected is None:
        assert streamed_body == body
        return
    kept = [(tag, payload) for tag, payload in tags(streamed_body[tail_at:]) if tag != FILLER_TAG]
    if any(tag == 0 for tag, _ in kept):
        assert body[:tail_at] + encode_tags(kept) == expected
    else:  # blanked: the rewritten endpoints did not fit, and no upstream address is left
        assert watcher.hidden
        fillers = [p for t, p in tags(streamed_body[tail_at:]) if t == FILLER_TAG]
        assert all(p == bytes(len(p)) for p in fillers)


def test_shorter_endpoints_are_padded_to_the_same_size() -> None:
    endpoint = (
        b"\x00\x00\x00\x01" + b"\x0d" + b"broker-1.big" + struct.pack(">i", 9092) + b"\x00\x00"
    )
    payload = b"\x02" + endpoint
    section = encode_tags([(0, payload)])
    out = same_size_tagged_section(section, lambda n, h, p: ("gw", 1))
    assert len(out) == len(section)
    rewritten = dict(tags(out))
    assert rewritten[0].count(b"gw") == 1 and b"broker-1" not in out
    assert FILLER_TAG in rewritten


def test_longer_endpoints_are_blanked() -> None:
    endpoint = b"\x00\x00\x00\x01" + b"\x02" + b"b" + struct.pack(">i", 9092) + b"\x00\x00"
    section = encode_tags([(0, b"\x02" + endpoint)])
    out = same_size_tagged_section(section, lambda n, h, p: ("a-much-longer-gateway-name", 1))
    assert len(out) == len(section)
    assert tags(out) == [(FILLER_TAG, bytes(len(endpoint) + 1))]


class _Recorder:
    """A FetchInspector that records what it is shown."""

    def __init__(self) -> None:
        self.sessions: list[tuple[int, int]] = []
        self.topics: list[Any] = []

    def session(self, error_code: int, session_id: int) -> None:
        self.sessions.append((error_code, session_id))

    def topic(self, key: Any) -> None:
        self.topics.append(key)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    version=st.integers(min_value=4, max_value=18),
    cuts=st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=8),
)
def test_the_streamed_walk_sees_every_topic_and_stops_at_the_tail(
    data: Any, version: int, cuts: list[int]
) -> None:
    # Partition entries are read in place when whole in a chunk and field by field
    # when a chunk cuts them: wherever the cuts fall, the walk must show every topic
    # and stop exactly where the buffered layout walk says the topics end.
    strategy = (
        fetch_responses(version)
        if version >= 16
        else st.from_type(load_response_schema(1, version))
    )
    frame = encode_response_header(7, FETCH, version) + encode(data.draw(strategy))
    inspector = _Recorder()
    watcher = FetchTailWatcher(version, gw_mapper, inspector)
    pos, i = 0, 0
    while pos < len(frame):
        step = cuts[i % len(cuts)]
        watcher.feed(memoryview(frame)[pos : pos + step])
        pos, i = pos + step, i + 1
    layout = fetch_response_topics(frame, version, response_body_offset(frame, FETCH, version))
    assert watcher.done
    assert watcher.safe == layout.entries_end
    assert inspector.topics == [entry.key for entry in layout.topics]
    if version >= 7:
        assert inspector.sessions == [struct.unpack_from(">hi", frame, layout.count_start - 6)]
