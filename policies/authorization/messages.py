"""Decode and encode whole request and response bodies with kio, for the per-API checks.

kio is used here (not the hand-written codec) because these paths run only for
requests that must be inspected field by field, and most of them are small; the
hot paths (Produce records, large Fetch responses) never come through here
whole. kio decodes in Rust (about 0.5 us for a small request) but encodes in pure
Python (about 8 us for a small request), so encoding goes through the
byte-identical fast writer of :mod:`policies.authorization.encoding` (about
1 us per small entity), and re-encoding is kept to the partly authorized case.
kio needs read-only buffers, and fails on an unknown tagged field; both are
handled here so callers see a :class:`MessageError` naming the API.

kio's native reader reserves memory for any count it reads before reading the
elements, and a failed reservation aborts the process: every body is first walked
by :func:`codec.bounded.check_body` (lengths and counts against the bytes left,
nulls only where the schema allows them), and only a body that passed is given to
kio. This module is the only place that hands client or broker bytes to kio.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from codec.api_table import API_TABLE
from codec.bounded import BoundsError, check_body, entity_plan
from codec.headers import encode_response_header, parse_request_header, response_body_offset
from codec.primitives import CodecError
from policies.authorization.encoding import encode_entity

__all__ = [
    "MessageError",
    "api_name",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "preload_request_decoders",
    "request_class",
    "response_class",
]


class MessageError(ValueError):
    """A request or response body that cannot be decoded or encoded."""


def api_name(api_key: int) -> str:
    entry = API_TABLE.get(api_key)
    return entry[0] if entry is not None else f"api {api_key}"


@cache
def request_class(api_key: int, api_version: int) -> type[Any]:
    try:
        return load_request_schema(api_key, api_version)
    except Exception as exc:
        raise MessageError(f"no schema for {api_name(api_key)} v{api_version} request") from exc


@cache
def response_class(api_key: int, api_version: int) -> type[Any]:
    try:
        return load_response_schema(api_key, api_version)
    except Exception as exc:
        raise MessageError(f"no schema for {api_name(api_key)} v{api_version} response") from exc


_READERS: dict[type[Any], Any] = {}
_WRITERS: dict[type[Any], Any] = {}


def _reader(cls: type[Any]) -> Any:
    reader = _READERS.get(cls)
    if reader is None:
        reader = _READERS[cls] = entity_reader(cls)
    return reader


def _writer(cls: type[Any]) -> Any:
    writer = _WRITERS.get(cls)
    if writer is None:
        writer = _WRITERS[cls] = entity_writer(cls)
    return writer


def decode_request(frame: bytes) -> tuple[int, Any]:
    """``(body_offset, body)`` of a request frame (header + body, no size prefix)."""
    try:
        header = parse_request_header(frame)
    except CodecError as exc:
        raise MessageError(f"malformed request header: {exc}") from None
    cls = request_class(header.api_key, header.api_version)
    body = _decode(cls, frame, header.body_offset, "request", header.api_key, header.api_version)
    return header.body_offset, body


def decode_response(frame: bytes, api_key: int, api_version: int) -> Any:
    """The body of a response frame (header + body, no size prefix)."""
    try:
        offset = response_body_offset(frame, api_key, api_version)
    except CodecError as exc:
        raise MessageError(f"malformed {api_name(api_key)} response header: {exc}") from None
    cls = response_class(api_key, api_version)
    return _decode(cls, frame, offset, "response", api_key, api_version)


def _decode(cls: type[Any], frame: bytes, offset: int, kind: str, key: int, version: int) -> Any:
    data = frame if isinstance(frame, bytes) else bytes(frame)
    try:
        check_body(cls, data, offset)
    except BoundsError as exc:  # e.g. "field topics is null but not nullable"
        if kind == "request":  # the caller names the request already
            raise MessageError(str(exc)) from None
        raise MessageError(f"malformed {api_name(key)} v{version} {kind}: {exc}") from None
    try:
        body, _ = _reader(cls)(data, offset)  # bytes are read-only, as kio requires
    except Exception as exc:  # kio raises assorted errors on malformed input
        raise MessageError(f"cannot decode {api_name(key)} v{version} {kind}: {exc}") from None
    return body


def encode_request(frame: bytes, body_offset: int, body: Any) -> bytes:
    """The request frame with its original header and a new body."""
    return frame[:body_offset] + _encode(body)


def encode_response(correlation_id: int, api_key: int, api_version: int, body: Any) -> bytes:
    """A complete response frame (header + body, no size prefix)."""
    return encode_response_header(correlation_id, api_key, api_version) + _encode(body)


def _encode(body: Any) -> bytes:
    try:
        return encode_entity(body)
    except Exception as exc:
        raise MessageError(f"cannot encode {type(body).__name__}: {exc}") from None


def preload_request_decoders(versions: dict[int, tuple[int, int]]) -> int:
    """Load and compile everything a checked request of these API versions needs.

    kio imports a schema module per (API, version) on first use and each class's
    bounded walk and reader are compiled then too: about 3 ms each, 3 s for all of
    them. A client sending many different APIs (a fuzzer, a flood) would otherwise
    stall the event loop for that long; a gateway with ACLs runs this in a worker
    thread at start-up instead. Returns the number of request classes prepared.
    """
    prepared = 0
    for api_key, (low, high) in versions.items():
        for version in range(low, high + 1):
            try:
                cls = request_class(api_key, version)
            except MessageError:
                continue  # a version kio has no schema for: refused when it comes
            entity_plan(cls)
            _reader(cls)
            prepared += 1
    return prepared
