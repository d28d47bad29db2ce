"""The validating walk run before kio (codec/bounded.py), and decoding behind it.

kio's native reader reserves memory for a claimed count before reading it; a failed
reservation aborts the interpreter. The crafted-frame tests therefore decode in a
child process and assert it exits normally with a MessageError: on the unfixed code
the child dies by SIGABRT instead. The property tests check the walk against kio
itself: every valid kio encoding is accepted and ends exactly where kio stops, and a
mutated one is either refused by the walk or decoded by kio (in-process is safe here,
since the walk runs first).
"""

from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader
from test_codec_strategies import encode

from codec.api_versions import gateway_version_ranges
from codec.bounded import BoundsError, _array_element, _optional, check_body, entity_plan
from codec.headers import encode_request_header
from policies.authorization import authorize_request
from policies.authorization.messages import MessageError, decode_request
from tests.fuzz.crafted import CRAFTED, HUGE_UVARINT, frame_with_null
from tests.fuzz.seeds import example_body
from tests.fuzz.targets import _CONTEXT

REPO_ROOT = Path(__file__).parents[2]
RANGES = gateway_version_ranges()


def _classes(load: Any) -> list[Any]:
    out = []
    for key, (low, high) in sorted(RANGES.items()):
        for version in range(low, high + 1):
            try:
                out.append(load(key, version))
            except Exception:  # kio does not know it
                continue
    return out


REQUESTS = _classes(load_request_schema)
RESPONSES = _classes(load_response_schema)


def _decode_in_child(frame: bytes, response_of: tuple[int, int] | None = None) -> str:
    """Decode ``frame`` in a fresh interpreter (a native abort kills only that one).

    Returns what the child printed: ``MessageError: <reason>`` or ``decoded``.
    """
    call = f"decode_response(frame, *{response_of!r})" if response_of else "decode_request(frame)"
    code = (
        "from policies.authorization.messages import MessageError, decode_request, "
        "decode_response\n"
        f"frame = bytes.fromhex({frame.hex()!r})\n"
        "try:\n"
        f"    {call}\n"
        "except MessageError as exc:\n"
        "    print('MessageError:', exc)\n"
        "else:\n"
        "    print('decoded')\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
        timeout=120,
    )
    died = f"decoder process died ({child.returncode}): {child.stderr[-600:]}"
    assert child.returncode == 0, died
    return child.stdout.strip()


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_huge_claims_are_refused_without_killing_the_process(name: str) -> None:
    assert _decode_in_child(CRAFTED[name]).startswith("MessageError: field ")


def test_the_issues_metadata_frame_names_the_field_and_the_bytes_left() -> None:
    frame = CRAFTED["metadata-v12-huge-topics"]
    assert len(frame) <= 20
    outcome = _decode_in_child(frame)
    assert re.fullmatch(
        r"MessageError: field topics: 34359738366 elements .* 3 bytes left", outcome
    )


def test_a_huge_string_length_is_refused() -> None:
    outcome = _decode_in_child(CRAFTED["offset-commit-v8-huge-string"])
    assert outcome.startswith("MessageError: field group_id: length 34359738366 exceeds"), outcome


def test_a_huge_count_in_a_broker_response_is_refused() -> None:
    body = struct.pack(">i", 0) + HUGE_UVARINT  # Metadata v12: throttle, brokers
    frame = struct.pack(">i", 7) + b"\x00" + body
    outcome = _decode_in_child(frame, response_of=(3, 12))
    assert outcome.startswith("MessageError: malformed metadata v12 response: field brokers"), (
        outcome
    )


def test_varints_longer_than_five_bytes_are_refused() -> None:
    frame = encode_request_header(3, 12, 1, None) + b"\x81\x80\x80\x80\x80\x00" + b"\x00" * 3
    with pytest.raises(MessageError, match="varint longer than 5 bytes"):
        decode_request(frame)


def test_a_tagged_field_must_fit_its_declared_size() -> None:
    # ApiVersions v3 request: client_software_name, _version, then tags; a tag claiming
    # more bytes than are left.
    frame = encode_request_header(18, 3, 1, None) + b"\x02a\x02b" + b"\x01\x00\x7f"
    with pytest.raises(MessageError, match="tag 0 size 127 exceeds"):
        decode_request(frame)


def test_every_schema_compiles_with_a_bounded_depth() -> None:
    plans = [entity_plan(cls) for cls in REQUESTS + RESPONSES]
    assert len(plans) > 500
    assert max(plan.depth for plan in plans) <= 8


# --- nulls where Kafka allows none ----------------------------------------------------


def _null_cases() -> list[tuple[int, int, str]]:
    """``(api_key, version, field)`` for every top-level non-nullable array of a request."""
    cases = []
    for cls in REQUESTS:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            hint = hints[field.name]
            if "tag" not in field.metadata and _array_element(hint) and not _optional(hint):
                cases.append((int(cls.__api_key__), int(cls.__version__), field.name))
    return cases


NULL_CASES = _null_cases()


def test_there_are_many_non_nullable_arrays() -> None:
    assert len({key for key, _, _ in NULL_CASES}) > 30


@pytest.mark.parametrize(("api_key", "version", "field"), NULL_CASES[::7])
def test_a_null_in_a_non_nullable_array_is_a_typed_error(
    api_key: int, version: int, field: str
) -> None:
    with pytest.raises(MessageError, match=f"field {field} is null but not nullable"):
        decode_request(frame_with_null(api_key, version, field))


@pytest.mark.parametrize(
    ("api_key", "version", "field"),
    [
        (3, 0, "topics"),  # Metadata
        (1, 12, "topics"),  # Fetch
        (2, 7, "topics"),  # ListOffsets
        (8, 8, "topics"),  # OffsetCommit
        (11, 6, "protocols"),  # JoinGroup
        (14, 5, "assignments"),  # SyncGroup
        (15, 5, "groups"),  # DescribeGroups
        (19, 5, "topics"),  # CreateTopics
        (20, 6, "topics"),  # DeleteTopics
        (21, 2, "topics"),  # DeleteRecords
        (24, 3, "v3_and_below_topics"),  # AddPartitionsToTxn
        (28, 3, "topics"),  # TxnOffsetCommit
        (42, 2, "groups_names"),  # DeleteGroups
        (47, 0, "topics"),  # OffsetDelete
    ],
)
def test_authorization_handlers_refuse_a_null_array_with_a_message_error(
    api_key: int, version: int, field: str
) -> None:
    frame = frame_with_null(api_key, version, field)
    with pytest.raises(MessageError, match=f"field {field} is null but not nullable"):
        authorize_request(_CONTEXT, api_key, version, frame)


def test_a_null_string_where_none_is_allowed_is_refused() -> None:
    # OffsetCommit v8: group_id is a non-nullable compact string.
    frame = encode_request_header(8, 8, 1, None) + b"\x00" + b"\x00" * 16
    with pytest.raises(MessageError, match="field group_id is null but not nullable"):
        decode_request(frame)


# --- the walk against kio ---------------------------------------------------------------

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def _valid_messages(draw: st.DrawFn) -> tuple[Any, bytes]:
    cls = draw(st.sampled_from(REQUESTS + RESPONSES))
    return cls, encode(draw(st.from_type(cls)))


@PROPERTY
@given(_valid_messages())
def test_every_valid_kio_encoding_is_accepted_and_ends_where_kio_ends(
    message: tuple[Any, bytes],
) -> None:
    cls, data = message
    assert check_body(cls, data, 0) == len(data)
    try:
        _, used = entity_reader(cls)(data, 0)
    except ValueError as exc:
        # kio's strategies can draw durations its own reader cannot turn back into a
        # timedelta (e.g. CreateDelegationToken's max lifetime): a limit of the oracle.
        if "timedelta" not in str(exc):
            raise
        return
    assert used == len(data)


@PROPERTY
@given(st.sampled_from(REQUESTS + RESPONSES))
def test_every_seed_body_is_accepted(cls: Any) -> None:
    data = example_body(cls)
    assert check_body(cls, data, 0) == len(data)


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[Any, bytes]:
    cls = draw(st.sampled_from(REQUESTS + RESPONSES))
    data = bytearray(example_body(cls))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "insert", "delete", "huge"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "set" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 4))]
        else:
            data[pos:pos] = draw(st.sampled_from([HUGE_UVARINT, b"\x7f\xff\xff\xff", b"\x00"]))
    return cls, bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_a_mutated_body_is_refused_by_the_walk_or_decoded_by_kio(
    message: tuple[Any, bytes],
) -> None:
    cls, data = message
    try:
        end = check_body(cls, data, 0)
    except BoundsError:
        return
    try:
        _, used = entity_reader(cls)(data, 0)
    except Exception:  # kio's own, catchable refusal (bad UTF-8, unknown tag, ...)
        return
    assert used == end  # kio read exactly what the walk checked
