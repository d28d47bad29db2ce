"""FrameStream: every frame forwarded, buffered or dropped exactly, however bytes arrive."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.framing import FrameError, encode_frame
from codec.stream import BufferedFrame, Decision, FrameStream

DECISIONS = [Decision.FORWARD, Decision.BUFFER, Decision.DROP, Decision.PATCH_HEAD]


def run(stream_bytes: bytes, cuts: list[int], decisions: list[Decision], head_bytes: int):
    """Feed ``stream_bytes`` in pieces; return forwarded bytes, buffered frames, heads seen."""
    stream = FrameStream(max_frame_bytes=4096, head_bytes=head_bytes)
    heads: list[tuple[bytes, int]] = []

    def decide(head: memoryview, size: int) -> tuple[Decision, Any, bytes | None]:
        index = len(heads)
        heads.append((bytes(head), size))
        decision = decisions[index % len(decisions)]
        context = _inverted(head) if decision is Decision.PATCH_HEAD else index
        return decision, context, b"<%d>" % index

    forwarded = bytearray()
    buffered: list[tuple[bytes, Any]] = []
    pos, i = 0, 0
    while pos < len(stream_bytes):
        step = cuts[i % len(cuts)]
        for piece in stream.feed(stream_bytes[pos : pos + step], decide):
            if isinstance(piece, BufferedFrame):
                buffered.append((bytes(piece.frame), piece.context))
            else:
                forwarded += piece
        pos += step
        i += 1
    assert not stream.in_frame
    return bytes(forwarded), buffered, heads


@settings(max_examples=300)
@given(
    frames=st.lists(st.binary(max_size=200), max_size=15),
    cuts=st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=20),
    decisions=st.lists(st.sampled_from(DECISIONS), min_size=1, max_size=5),
    head_bytes=st.integers(min_value=0, max_value=40),
)
def test_every_frame_is_routed_by_its_decision(
    frames: list[bytes], cuts: list[int], decisions: list[Decision], head_bytes: int
) -> None:
    forwarded, buffered, heads = run(
        b"".join(encode_frame(f) for f in frames), cuts, decisions, head_bytes
    )
    expected_forward = b"".join(
        b"<%d>" % i + _expected_forward(f, decisions[i % len(decisions)], head_bytes)
        for i, f in enumerate(frames)
    )
    expected_buffered = [
        (f, i) for i, f in enumerate(frames) if decisions[i % len(decisions)] is Decision.BUFFER
    ]
    assert forwarded == expected_forward
    assert buffered == expected_buffered
    assert heads == [(f[:head_bytes], len(f)) for f in frames]


def _inverted(head: memoryview) -> bytes:
    return bytes(b ^ 0xFF for b in head)


def _expected_forward(frame: bytes, decision: Decision, head_bytes: int) -> bytes:
    if decision is Decision.FORWARD:
        return encode_frame(frame)
    if decision is Decision.PATCH_HEAD:
        head = memoryview(frame)[:head_bytes]
        return encode_frame(_inverted(head) + frame[head_bytes:])
    return b""


def test_a_chunk_forwarded_whole_is_not_copied() -> None:
    chunk = encode_frame(b"a" * 10) + encode_frame(b"b" * 5)
    pieces = FrameStream().feed(chunk, lambda head, size: (Decision.FORWARD, None, None))
    assert len(pieces) == 1 and pieces[0] is chunk


def test_large_frame_is_forwarded_before_it_is_complete() -> None:
    stream = FrameStream()
    frame = encode_frame(b"x" * 100_000)
    first = stream.feed(frame[:1000], lambda head, size: (Decision.FORWARD, None, None))
    assert b"".join(bytes(p) for p in first) == frame[:1000]  # type: ignore[arg-type]
    assert stream.in_frame


@pytest.mark.parametrize(
    ("prefix", "message"),
    [(struct.pack(">i", -1), "negative frame size"), (struct.pack(">i", 5000), "exceeds")],
)
def test_bad_sizes_are_frame_errors(prefix: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        FrameStream(max_frame_bytes=4096).feed(prefix, lambda h, s: (Decision.FORWARD, None, None))
    with pytest.raises(FrameError, match=message):  # also when the prefix arrives in pieces
        stream = FrameStream(max_frame_bytes=4096)
        stream.feed(prefix[:2], lambda h, s: (Decision.FORWARD, None, None))
        stream.feed(prefix[2:], lambda h, s: (Decision.FORWARD, None, None))


@settings(max_examples=200)
@given(
    frames=st.lists(st.binary(max_size=60), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
    pause_at=st.integers(min_value=0, max_value=7),
)
def test_a_pause_stops_after_the_frame_and_keeps_the_rest(
    frames: list[bytes], cuts: list[int], pause_at: int
) -> None:
    stream = FrameStream(max_frame_bytes=4096, head_bytes=8)
    decided: list[int] = []

    def decide(head: memoryview, size: int) -> tuple[Decision, Any, bytes | None]:
        decided.append(size)
        if len(decided) - 1 == pause_at:
            stream.pause_after_frame = True
        return Decision.FORWARD, None, None

    data = b"".join(encode_frame(f) for f in frames)
    forwarded = bytearray()
    pos, i, paused = 0, 0, False
    pending = b""
    while pos < len(data) or pending:
        if pending:
            chunk, pending = pending, b""
        else:
            chunk = data[pos : pos + cuts[i % len(cuts)]]
            pos += len(chunk)
            i += 1
        for piece in stream.feed(chunk, decide):
            forwarded += piece
        if stream.unconsumed:
            pending, stream.unconsumed = stream.unconsumed, b""
            # Nothing after the paused frame was decided or forwarded.
            assert len(decided) == pause_at + 1
            assert bytes(forwarded) == b"".join(encode_frame(f) for f in frames[: pause_at + 1])
            paused = True
    assert bytes(forwarded) == data
    assert len(decided) == len(frames)
    assert paused == (pause_at < len(frames) - 1)
