"""The work a checked request costs grows linearly with its entries, at a small constant.

A request naming many refused resources used to cost one pure-Python kio encode
and one audit event per refusal: 100,000 topics stalled the event loop for
seconds. Work is counted, not timed: Python function calls (a profile hook), kio
entity encodes, and audit events, as a function of the number of refused entries.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from functools import cache
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from codec.headers import parse_request_header
from gateway.enforcement import AUDIT_SAMPLE, Enforcement
from policies.acl.config import AuthorizationConfig
from policies.acl.engine import AclEngine
from policies.authorization import authorize_request
from tests.authorization_fakes import ALICE, FakeContext
from tests.worst_requests import WORST_REQUESTS, worst_request

#: Python function calls allowed per refused entry (today about 10-25).
MAX_CALLS_PER_ENTRY = 40
#: Produce (today 62): its hand-written scan reads each topic and partition head
#: (Produce is never given to kio, whose reader would copy the records), and its
#: refusal answer is merged back in the client's order. Still constant per entry.
MAX_CALLS_PER_PRODUCE_ENTRY = 70

ACL = AuthorizationConfig.model_validate(
    {
        "default": "deny",
        "rules": [
            {
                "principals": ["User:alice"],
                "resource_type": "topic",
                "pattern_type": "prefixed",
                "resource_name": "allowed-",
                "operations": ["All"],
            }
        ],
    }
)


def _context() -> FakeContext:
    """Alice's session, decided by the real engine with ``ACL``."""
    return FakeContext(AclEngine(ACL))


@cache
def _request(name: str, count: int) -> tuple[int, bytes]:
    return worst_request(name, count)


class _Work:
    """Python calls and kio entity encodes while active."""

    def __init__(self) -> None:
        self.calls = 0
        self.kio_encodes = 0

    def __call__(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            self.calls += 1
            code = frame.f_code
            if code.co_name == "write_entity" and "kio" in code.co_filename:
                self.kio_encodes += 1


def _work(name: str, count: int) -> _Work:
    api_key, frame = _request(name, count)
    version = parse_request_header(frame).api_version
    work = _Work()
    context = _context()
    sys.setprofile(work)
    try:
        verdict = authorize_request(context, api_key, version, frame)
    finally:
        sys.setprofile(None)
    assert verdict.forward is not None or verdict.local_response is not None
    return work


@pytest.fixture(autouse=True)
def _no_profile_left() -> Iterator[None]:
    yield
    sys.setprofile(None)


@pytest.mark.parametrize("name", sorted(WORST_REQUESTS))
def test_work_per_refused_entry_is_constant(name: str) -> None:
    _work(name, 4)  # compile the per-class writers and caches first
    small, medium, large = (_work(name, n) for n in (200, 400, 800))
    # kio's own (slow) writer is never used per entry.
    assert small.kio_encodes == medium.kio_encodes == large.kio_encodes
    first, second = medium.calls - small.calls, large.calls - medium.calls
    assert second <= 2.2 * first + 50, f"{name}: not linear ({first} then {second} calls)"
    allowed = MAX_CALLS_PER_PRODUCE_ENTRY if name == "Produce" else MAX_CALLS_PER_ENTRY
    assert second / 400 <= allowed, f"{name}: {second / 400:.1f} calls per entry"


def test_ten_or_ten_thousand_refused_topics_cost_the_same_encodes() -> None:
    few, many = _work("Metadata", 10), _work("Metadata", 10_000)
    assert few.kio_encodes == many.kio_encodes == 0


# --- audit -------------------------------------------------------------------------------


def _enforcement() -> Enforcement:
    cluster = SimpleNamespace(
        name="vc", policies=SimpleNamespace(acl=AclEngine(ACL)), topic_name=lambda _: None
    )
    auth = SimpleNamespace(principal=ALICE, client_address="127.0.0.1:5555")
    return Enforcement(cluster, auth, structlog.get_logger("test"))  # type: ignore[arg-type]


@pytest.mark.parametrize("count", [10, 10_000])
async def test_one_audit_event_per_request_whatever_the_number_of_refusals(count: int) -> None:
    api_key, frame = _request("Metadata", count)
    version = parse_request_header(frame).api_version
    with capture_logs() as events:
        verdict = await _enforcement().authorize(api_key, version, frame, "cid")
    assert verdict.forward is not None
    denied = [e for e in events if e["event"] == "authorization_denied"]
    assert len(denied) == 1
    (event,) = denied
    sample = min(count, AUDIT_SAMPLE)
    assert event == {
        "event": "authorization_denied",
        "log_level": "info",
        "virtual_cluster": "vc",
        "principal": str(ALICE),
        "client_address": "127.0.0.1:5555",
        "client_id": "cid",
        "api": "metadata",
        "denied": count,
        "allowed": 0,
        "operations": ["Describe"],
        "resource_types": ["topic"],
        "rules": ["default"],
        "resources": [f"denied-{i}" for i in range(sample)],
        "resources_omitted": count - sample,
    }


async def test_the_audit_event_counts_allowed_questions_and_names_each_rule() -> None:
    from tests.worst_requests import _metadata

    allowed = _metadata(3, "allowed-")
    denied = _metadata(2, "denied-")
    # Splice: the header and flags of one, the topics of both (v12: compact array).
    api_key, version = 3, 12
    merged = _merge_metadata_topics(allowed, denied)
    with capture_logs() as events:
        await _enforcement().authorize(api_key, version, merged, None)
    (event,) = [e for e in events if e["event"] == "authorization_denied"]
    # Describe and (auto-creation) Create on each allowed topic.
    assert (event["denied"], event["allowed"]) == (2, 3 + 3)
    assert event["resources"] == ["denied-0", "denied-1"]


def _merge_metadata_topics(first: bytes, second: bytes) -> bytes:
    from policies.authorization.messages import decode_request, encode_request

    offset, a = decode_request(first)
    _, b = decode_request(second)
    import dataclasses

    return encode_request(first, offset, dataclasses.replace(a, topics=a.topics + b.topics))


# --- the bulk path: same answers as one question at a time, same bytes as kio -----------


def test_per_entry_python_calls_stay_within_a_small_constant() -> None:
    """The shared paths (templates, bulk decisions) cost a few calls per refused entry."""
    for name in ("Metadata", "DescribeGroups", "DeleteGroups", "DescribeConfigs"):
        _work(name, 4)
        first, second = _work(name, 400), _work(name, 800)
        per_entry = (second.calls - first.calls) / 400
        assert per_entry <= 12, f"{name}: {per_entry:.1f} calls per refused entry"


@pytest.mark.parametrize(
    "names",
    [
        ["allowed-a", "denied-b", "allowed-a", "x", "denied-b", "allowed-"],
        [f"denied-{i}" for i in range(50)],
        [],
    ],
)
def test_refused_names_answers_as_allows_does(names: list[str]) -> None:
    from policies.acl.model import Operation, ResourceType
    from policies.authorization.splitting import Decisions

    bulk, single = Decisions(_context()), Decisions(_context())
    bulk.allows(Operation.READ, ResourceType.TOPIC, "x", audit=False)  # answered, not recorded
    single.allows(Operation.READ, ResourceType.TOPIC, "x", audit=False)
    refused = bulk.refused_names(Operation.READ, ResourceType.TOPIC, names)
    expected = [n for n in dict.fromkeys(names) if not single.allows_topic(Operation.READ, n)]
    assert list(refused) == expected
    assert bulk.denials == single.denials


def test_templates_render_what_kio_encodes() -> None:
    import io

    from kio.serial import entity_writer

    from policies.authorization.encoding import EntryTemplate
    from policies.authorization.error_response import build_entity, element_type
    from policies.authorization.messages import response_class

    def kio(entity: Any) -> bytes:
        out = io.BytesIO()
        entity_writer(type(entity))(out, entity)
        return out.getvalue()

    for api_key, version, field, hole in [
        (15, 5, "groups", "group_id"),
        (15, 0, "groups", "group_id"),
        (32, 4, "results", "resource_name"),
        (32, 1, "results", "resource_name"),
    ]:
        cls = element_type(response_class(api_key, version), field)
        values = {"error_code": 30, "error_message": "m"}
        template = EntryTemplate(build_entity(cls, **{hole: ""}, **values), (hole,))
        names = ["a", "é" * 70, "x" * 300, ""]
        expected = [kio(build_entity(cls, **{hole: n}, **values)) for n in names]
        assert template.many(names) == expected
        assert [template(n) for n in names] == expected
