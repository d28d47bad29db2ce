"""Hand-crafted frames from issue 9: tiny requests claiming huge counts or lengths.

On the unfixed gateway each made kio's native reader reserve memory for the claimed
count, and the Rust runtime aborted the process. They are kept as fuzz regression
inputs (``tests/fuzz/crashes/crafted-*``) and used by the unit and integration tests.
"""

from __future__ import annotations

import dataclasses
import struct
import typing
from typing import Final

from kio.index import load_request_schema

from codec.headers import encode_request_header
from tests.fuzz.seeds import _example_value

#: 2^35 - 1 as a 5-byte unsigned varint: a compact array of 2^35 - 2 elements.
HUGE_UVARINT: Final = b"\xff\xff\xff\xff\x7f"


def _header(api_key: int, version: int, flexible: bool) -> bytes:
    head = struct.pack(">hhih", api_key, version, 7, -1)  # null client id
    return head + (b"\x00" if flexible else b"")


#: Metadata v12: ``topics`` claims 2^35 - 2 elements (the issue's 20-byte frame).
METADATA_HUGE_TOPICS: Final = _header(3, 12, True) + HUGE_UVARINT + b"\x00\x00\x00"

#: Metadata v4 (classic encoding): ``topics`` claims 2^31 - 1 elements.
METADATA_V4_HUGE_TOPICS: Final = _header(3, 4, False) + struct.pack(">i", 2**31 - 1) + b"\x00"

#: Fetch v12: the fixed fields, then ``topics`` claims 2^35 - 2 elements.
FETCH_HUGE_TOPICS: Final = (
    _header(1, 12, True) + struct.pack(">iiiibii", -1, 500, 1, 1 << 20, 0, 0, -1) + HUGE_UVARINT
)

#: JoinGroup v6: ``protocols`` claims 2^35 - 2 elements.
JOIN_GROUP_HUGE_PROTOCOLS: Final = (
    _header(11, 6, True)
    + b"\x02g"  # group_id "g"
    + struct.pack(">ii", 30000, 30000)
    + b"\x01"  # member_id ""
    + b"\x00"  # group_instance_id null
    + b"\x09consumer"
    + HUGE_UVARINT
)

#: OffsetCommit v8: ``group_id`` claims a 2^35 - 2 byte string.
OFFSET_COMMIT_HUGE_STRING: Final = _header(8, 8, True) + HUGE_UVARINT + b"\x00" * 8

CRAFTED: Final = {
    "metadata-v12-huge-topics": METADATA_HUGE_TOPICS,
    "metadata-v4-huge-topics": METADATA_V4_HUGE_TOPICS,
    "fetch-v12-huge-topics": FETCH_HUGE_TOPICS,
    "join-group-v6-huge-protocols": JOIN_GROUP_HUGE_PROTOCOLS,
    "offset-commit-v8-huge-string": OFFSET_COMMIT_HUGE_STRING,
}


def frame_with_null(api_key: int, version: int, null_field: str) -> bytes:
    """A valid request (see :mod:`tests.fuzz.seeds`) but for a null in ``null_field``."""
    cls = load_request_schema(api_key, version)
    hints = typing.get_type_hints(cls)
    assert null_field in hints, f"{cls.__name__} has no field {null_field}"
    body = bytearray()
    for field in dataclasses.fields(cls):
        if "tag" in field.metadata:
            continue
        if field.name == null_field:
            body += b"\x00" if cls.__flexible__ else struct.pack(">i", -1)
        else:
            body += _example_value(field, hints[field.name], cls.__flexible__)
    if cls.__flexible__:
        body += b"\x00"
    return encode_request_header(api_key, version, 1, "c") + bytes(body)
