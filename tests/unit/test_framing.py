"""FrameDecoder: splitting a byte stream into Kafka frames, and refusing bad sizes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codec.framing import FrameDecoder, FrameError, encode_frame


def _drain(decoder: FrameDecoder) -> list[bytes]:
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


@given(
    frames=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30),
)
def test_frames_survive_any_split_of_the_stream(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder(max_frame_bytes=1024)
    out: list[bytes] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        decoder.feed(stream[pos : pos + step])
        out += _drain(decoder)
        pos += step
        i += 1
    assert out == frames
    assert decoder.buffered == 0


def test_partial_frame_waits_for_more_bytes() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"hello")[:-1])
    assert decoder.next_frame() is None
    decoder.feed(b"o")
    assert decoder.next_frame() == b"hello"


def test_oversized_frame_is_refused_before_its_body_arrives() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.feed(struct.pack(">i", 101))
    with pytest.raises(FrameError, match="frame size 101 exceeds the maximum of 100"):
        decoder.next_frame()


def test_negative_frame_size_is_refused() -> None:
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">i", -5))
    with pytest.raises(FrameError, match="negative frame size -5"):
        decoder.next_frame()


def test_frame_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    decoder.feed(encode_frame(b"x" * 10))
    assert decoder.next_frame() == b"x" * 10


def test_max_frame_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FrameDecoder(max_frame_bytes=0)
