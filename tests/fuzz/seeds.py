"""The seed corpus: one small valid request per API key and version the gateway accepts.

Bodies are written straight from kio's entity classes (one element per array, short
names, zeros elsewhere), so the fuzzer starts from frames every decoder accepts and
mutates counts, lengths and tags from there. Each seed is checked by decoding it
with kio. ``python -m tests.fuzz.seeds`` rewrites ``tests/fuzz/corpus/seeds/``.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
import typing
from pathlib import Path
from typing import Any, Final

from kio.index import load_request_schema

from codec.api_versions import gateway_version_ranges
from codec.bounded import _array_element, _optional, _strip_optional
from codec.headers import encode_request_header
from policies.authorization.messages import decode_request

SEEDS_DIR: Final = Path(__file__).parent / "corpus" / "seeds"
_FIXED: Final = {
    "bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "error_code": 2,
    "int32": 4, "uint32": 4, "timedelta_i32": 4, "int64": 8, "uint64": 8,
    "timedelta_i64": 8, "datetime_i64": 8, "float64": 8,
}  # fmt: skip


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length(n: int, flexible: bool, wide: bool) -> bytes:
    if flexible:
        return _uvarint(n + 1)
    return struct.pack(">i" if wide else ">h", n)


def example_body(cls: Any) -> bytes:
    """A valid body of kio class ``cls``: every array holds one element."""
    flexible = bool(cls.__flexible__)
    hints = typing.get_type_hints(cls)
    out = bytearray()
    for field in dataclasses.fields(cls):
        if "tag" in field.metadata:
            continue  # tagged fields are left out: the count below is zero
        out += _example_value(field, hints[field.name], flexible)
    if flexible:
        out += b"\x00"
    return bytes(out)


def _example_value(field: dataclasses.Field[Any], hint: Any, flexible: bool) -> bytes:
    element = _array_element(hint)
    if element is not None:
        if dataclasses.is_dataclass(element):
            item = example_body(element)
        else:
            item = _example_primitive(field.metadata["kafka_type"], flexible)
        return (_uvarint(2) if flexible else struct.pack(">i", 1)) + item
    target = _strip_optional(hint)
    if dataclasses.is_dataclass(target):
        marker = b"\x01" if _optional(hint) else b""
        return marker + example_body(target)
    return _example_primitive(field.metadata["kafka_type"], flexible)


def _example_primitive(kafka_type: str, flexible: bool) -> bytes:
    if kafka_type in _FIXED:
        return bytes(_FIXED[kafka_type])
    if kafka_type == "uuid":
        return (1).to_bytes(16, "big")
    if kafka_type == "string":
        return _length(7, flexible, wide=False) + b"a-topic"
    return _length(0, flexible, wide=True)  # bytes, records: empty


def seed_frames() -> dict[str, bytes]:
    """``{file name: frame}`` for every request API key and version the gateway accepts."""
    frames: dict[str, bytes] = {}
    for api_key, (low, high) in sorted(gateway_version_ranges().items()):
        for version in range(low, high + 1):
            try:
                cls = load_request_schema(api_key, version)
            except Exception:  # kio does not know it: nothing to seed
                continue
            frame = encode_request_header(api_key, version, 7, "fuzz") + example_body(cls)
            decode_request(frame)  # a seed kio refuses would teach the fuzzer nothing
            frames[f"api{api_key}-v{version}"] = frame
    return frames


def write_seeds(directory: Path = SEEDS_DIR) -> int:
    """Write every seed once per target that takes a request frame; return the file count."""
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, frame in seed_frames().items():
        size = struct.pack(">i", len(frame))
        for selector, data in ((0, size + frame), (1, frame), (2, frame)):
            (directory / f"{selector}-{name}").write_bytes(bytes([selector]) + data)
            count += 1
    return count


if __name__ == "__main__":
    print(f"wrote {write_seeds()} seeds to {SEEDS_DIR}", file=sys.stderr)
