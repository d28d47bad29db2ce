"""Mutated Kafka request frames for flood tests and benchmarks.

Seeds are valid requests of every API key and version the gateway accepts, built from
kio's generated schemas (one element in every array, a short value in every field) and
encoded by kio, independently of the gateway's codec. Two kinds of mutants are made
from them, both reproducible from a seed number:

* **value mutants** re-encode a seed with one field set to an extreme value (a bound of
  its integer type, an empty or long string, an empty or 50-element array, a null):
  well-formed frames that reach the authorization logic (and the broker) with odd values;
* **byte mutants** corrupt the encoded bytes (a huge count or length written over a
  field, a varint claiming 2^35 elements inserted, truncation, bit flips, junk, a
  mutated header): malformed frames that must cost the sender its connection and
  nothing else.

Frames are size-prefixed, ready to send.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import io
import random
import struct
import types
import typing
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kio.index import load_request_schema
from kio.schema.types import GroupId, TopicName, TransactionalId
from kio.serial import entity_writer
from kio.static.primitive import (
    Interval,
    PhantomStr,
    Records,
    TZAware,
    TZAwareMicros,
    f64,
    i32Timedelta,
    i64Timedelta,
)

from codec.api_versions import gateway_version_ranges
from codec.headers import encode_request_header

SASL_HANDSHAKE, API_VERSIONS, SASL_AUTHENTICATE = 17, 18, 36
#: What Kafka accepts before authentication; anything else closes the connection.
PRE_LOGIN_KEYS = frozenset({API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE})
CLIENT_ID = "flood"


@dataclass(frozen=True, slots=True)
class Seed:
    """One valid request: its schema object, and the frame kio encodes for it."""

    api_key: int
    api_version: int
    request: Any


@dataclass(frozen=True, slots=True)
class Names:
    """The resource names seeds use: the attacker's own (allowed) ones, and others."""

    topic: str
    group: str
    other_topic: str


def request_frame(api_key: int, api_version: int, correlation_id: int, request: Any) -> bytes:
    """A size-prefixed request frame for a kio request object."""
    body = io.BytesIO()
    entity_writer(type(request))(body, request)
    payload = (
        encode_request_header(api_key, api_version, correlation_id, CLIENT_ID) + body.getvalue()
    )
    return struct.pack(">i", len(payload)) + payload


def header_length(api_key: int, api_version: int) -> int:
    return len(encode_request_header(api_key, api_version, 0, CLIENT_ID))


# --- seeds --------------------------------------------------------------------------


def build_seeds(names: Names, api_keys: Callable[[int], bool] = lambda _key: True) -> list[Seed]:
    """A valid request for every (API key, version) the gateway accepts that kio can build."""
    seeds = []
    for api_key, (low, high) in sorted(gateway_version_ranges().items()):
        if not api_keys(api_key):
            continue
        for version in range(low, high + 1):
            try:
                schema = load_request_schema(api_key, version)
                request = _build(schema, names, "")
                request_frame(api_key, version, 0, request)
            except Exception:
                continue
            seeds.append(Seed(api_key, version, request))
    return seeds


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(tp: Any, names: Names, field_name: str) -> Any:
    """A short, valid value of type ``tp`` (a kio entity, primitive, array or optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(inner[0], names, field_name)
    if origin is tuple:
        return (_build(typing.get_args(tp)[0], names, field_name),)
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)  # type: ignore[arg-type]
        return tp(  # type: ignore[operator]
            **{
                f.name: _build(hints[f.name], names, f.name)
                for f in dataclasses.fields(tp)
                if f.init
            }
        )
    return _leaf(tp, names, field_name)


def _leaf(tp: Any, names: Names, field_name: str) -> Any:
    if tp is bool:
        return False
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(iter(tp))
    if isinstance(tp, type) and issubclass(tp, Interval):
        return tp(1)
    if tp is f64 or tp is float:
        return f64(0.0)
    if tp is i32Timedelta or tp is i64Timedelta:
        return tp.parse(datetime.timedelta(milliseconds=100))
    if tp is TZAware or tp is TZAwareMicros:
        return tp.parse(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    if tp is uuid.UUID:
        return uuid.UUID(int=0x0F100D)
    if tp is Records:
        return Records(b"")
    if tp is bytes:
        return b"flood"
    if isinstance(tp, type) and issubclass(tp, (str, PhantomStr)):
        return _name_for(tp, names, field_name)
    raise TypeError(f"no value for {tp!r}")


def _name_for(tp: type, names: Names, field_name: str) -> str:
    if issubclass(tp, TopicName) or "topic" in field_name:
        return names.topic
    if issubclass(tp, GroupId) or "group" in field_name:
        return names.group
    if issubclass(tp, TransactionalId):
        return f"{names.topic}-tx"
    return "flood"


# --- value mutants ------------------------------------------------------------------


def _paths(
    value: Any, declared: Any, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], Any, Any]]:
    """Every (path, value, declared type) below a request object: fields by name, array
    items by index. kio's integer types are phantoms (values are plain ints), so the
    declared type is what bounds a replacement."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hints = _hints(type(value))
        for f in dataclasses.fields(value):
            child = getattr(value, f.name)
            yield (*path, f.name), child, hints[f.name]
            yield from _paths(child, hints[f.name], (*path, f.name))
    elif isinstance(value, tuple):
        item_type = typing.get_args(_non_optional(declared))[0]
        for i, item in enumerate(value):
            yield from _paths(item, item_type, (*path, i))


def _non_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, tuple):
        return (*value[:head], _replace(value[head], rest, new), *value[head + 1 :])
    return dataclasses.replace(value, **{head: _replace(getattr(value, head), rest, new)})


def _extremes(current: Any, declared: Any, names: Names) -> list[Any]:
    """Odd but encodable values of the same type as ``current``."""
    tp = _non_optional(declared)
    if isinstance(current, bool):
        return [not current]
    if isinstance(tp, type) and issubclass(tp, Interval):
        low, high = tp.__low__, tp.__high__  # type: ignore[attr-defined]
        candidates = [low, high, 0, -1, 2**31 - 1, 2**15 - 1, 255]
        return [tp(v) for v in candidates if low <= v <= high]
    if isinstance(current, str):
        return ["", "x" * 300, names.other_topic, f"{names.topic}\u00fc", "__consumer_offsets"]
    if isinstance(current, bytes):
        return [b"", b"\x00" * 64, b"\xff" * 7]
    if isinstance(current, tuple):
        return [(), current * 50] if current else [()]
    return []


def value_mutant(seed: Seed, names: Names, rng: random.Random) -> Any | None:
    """The seed's request with one field (or array) set to an extreme value, or None."""
    paths = list(_paths(seed.request, type(seed.request)))
    for _ in range(4):
        if not paths:
            return None
        path, current, declared = rng.choice(paths)
        choices = _extremes(current, declared, names)
        if rng.random() < 0.15 and not isinstance(current, tuple):
            choices.append(None)  # a null where the schema may not allow one
        if not choices:
            continue
        candidate = _replace(seed.request, path, rng.choice(choices))
        try:
            request_frame(seed.api_key, seed.api_version, 0, candidate)
        except Exception:
            continue
        return candidate
    return None


class ValueMutantPool:
    """Pre-encoded value mutants (kio's encoder is pure Python: too slow per frame)."""

    def __init__(self, seeds: list[Seed], names: Names, size: int, rng_seed: int) -> None:
        rng = random.Random(rng_seed)
        self.frames: list[tuple[int, int, bytes]] = []  # (api key, version, frame)
        attempts = 0
        while len(self.frames) < size and attempts < size * 4:
            attempts += 1
            seed = rng.choice(seeds)
            request = value_mutant(seed, names, rng) if rng.random() < 0.85 else seed.request
            if request is not None:
                frame = request_frame(seed.api_key, seed.api_version, 0, request)
                self.frames.append((seed.api_key, seed.api_version, frame))

    def pick(self, rng: random.Random, correlation_id: int) -> bytes:
        _key, _version, frame = rng.choice(self.frames)
        return with_correlation_id(frame, correlation_id)


def with_correlation_id(frame: bytes, correlation_id: int) -> bytes:
    """``frame`` (size-prefixed) with its correlation id replaced."""
    return frame[:8] + struct.pack(">i", correlation_id & 0x7FFFFFFF) + frame[12:]


# --- byte mutants -------------------------------------------------------------------

#: Counts and lengths that make a decoder that trusts them reserve gigabytes.
HUGE_INT32S = (0x7FFFFFFF, 0x3FFFFFFF, 0x0FFFFFFF, 0x7FFFFFFE, 0x00FFFFFF, -2)
#: Unsigned varints of 2^35 - 2 and 2^28 + 1: compact array counts (N + 1) of billions.
HUGE_VARINTS = (b"\xff\xff\xff\xff\x7f", b"\x81\x80\x80\x80\x01", b"\xfe\xff\xff\xff\x0f")


def byte_mutant(frame: bytes, body_offset: int, rng: random.Random) -> bytes:
    """A corrupted copy of a size-prefixed frame; the size prefix matches the new payload.

    ``body_offset`` is where the request body starts in the payload (after the header):
    most mutations spare the header so that the frame reaches the body's decoder.
    """
    payload = bytearray(frame[4:])
    start = body_offset if rng.random() < 0.9 else 0
    span = max(len(payload) - start, 1)
    at = start + rng.randrange(span)
    kind = rng.randrange(8)
    if kind == 0:
        payload[at : at + 4] = struct.pack(">i", rng.choice(HUGE_INT32S))
    elif kind == 1:
        payload[at : at + 2] = struct.pack(">h", rng.choice((0x7FFF, -2, 0x4000)))
    elif kind == 2:
        payload[at:at] = rng.choice(HUGE_VARINTS)
    elif kind == 3:
        payload[at : at + 5] = rng.choice(HUGE_VARINTS)
    elif kind == 4:
        del payload[at:]
    elif kind == 5:
        for _ in range(rng.randint(1, 4)):
            i = start + rng.randrange(span)
            if i < len(payload):
                payload[i] ^= 1 << rng.randrange(8)
    elif kind == 6:
        payload += rng.randbytes(rng.randint(1, 64))
    else:
        payload[0:4] = struct.pack(">hh", rng.randrange(-2, 100), rng.randrange(-2, 20))
    return struct.pack(">i", len(payload)) + bytes(payload)
