"""What the checks of issue 9 cost per typical checked request (part of ``make bench``).

Printed in µs per request, best of several repeats, in process (no sockets):

* the bounded walk alone (:func:`codec.bounded.check_body`) and kio's decode alone, for
  Metadata v12 (10 topics), Fetch v12 (1 topic x 6 partitions), OffsetCommit v8
  (1 topic x 6 partitions) and JoinGroup v7 (2 protocols);
* a whole ``Enforcement.authorize`` of each, with a typical ACL (prefixed topic and
  group rules, default deny, everything asked allowed);
* the Fetch session steady state (KIP-227): an epoch-0 full fetch once, then
  incremental fetches naming nothing, with 1, 6 and 60 session partitions: the
  request side (``Enforcement.authorize``) and the response side of a buffered
  response (``fetch_check`` + ``filter_fetch_response``) and of a streamed one
  (``FetchTailWatcher`` with the check as inspector), by name (v12) and by id (v13+).

Run alone: ``python -m tests.benchmarks.checked_requests``.
"""

from __future__ import annotations

import datetime
import io
import logging
import time
import timeit
import typing
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import structlog
from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

from codec.bounded import check_body
from codec.fetch_stream import FetchTailWatcher
from codec.headers import encode_request_header, encode_response_header, parse_request_header
from gateway.enforcement import Enforcement
from policies.acl.config import AuthorizationConfig
from policies.acl.engine import AclEngine
from policies.auth.principal import Principal

__all__ = ["format_checked", "measure_checked"]

ACL = AuthorizationConfig.model_validate(
    {
        "default": "deny",
        "rules": [
            {
                "principals": ["User:alice"],
                "resource_type": "topic",
                "pattern_type": "prefixed",
                "resource_name": "orders-",
                "operations": ["Read", "Write", "Describe"],
            },
            {
                "principals": ["User:alice"],
                "resource_type": "group",
                "pattern_type": "prefixed",
                "resource_name": "billing-",
                "operations": ["Read", "Describe"],
            },
            {
                "principals": ["User:bob"],
                "resource_type": "topic",
                "pattern_type": "literal",
                "resource_name": "audit",
                "operations": ["All"],
            },
        ],
    }
)
ALICE = Principal(name="alice", mechanism="PLAIN")
FETCH = 1
TOPIC = "orders-eu"
TOPIC_ID = uuid.UUID(int=0x1234)
MS = datetime.timedelta(milliseconds=1)


def _encode(body: Any) -> bytes:
    out = io.BytesIO()
    entity_writer(type(body))(out, body)
    return out.getvalue()


def _frame(api_key: int, version: int, body: Any) -> bytes:
    return encode_request_header(api_key, version, 7, "bench-client") + _encode(body)


def _make(cls: type[Any], **values: Any) -> Any:
    """``cls(**values)`` with the fields this version lacks dropped."""
    names = cls.__dataclass_fields__
    return cls(**{k: v for k, v in values.items() if k in names})


def _nested(cls: type[Any], name: str) -> type[Any]:
    hint = typing.get_type_hints(cls)[name]
    for arg in typing.get_args(hint) or (hint,):
        inner = typing.get_args(arg) or (arg,)
        if isinstance(inner[0], type) and hasattr(inner[0], "__dataclass_fields__"):
            return inner[0]
    raise TypeError(name)


def metadata_request(topics: int = 10) -> bytes:
    cls = load_request_schema(3, 12)
    topic = _nested(cls, "topics")
    body = cls(
        topics=tuple(_make(topic, name=f"orders-{i}", topic_id=None) for i in range(topics)),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    return _frame(3, 12, body)


def fetch_request(
    version: int,
    partitions: int,
    *,
    session_id: int = 0,
    epoch: int = -1,
    named: bool = True,
) -> bytes:
    cls = load_request_schema(FETCH, version)
    topic_cls = _nested(cls, "topics")
    part_cls = _nested(topic_cls, "partitions")
    key = {"topic_id": TOPIC_ID} if version >= 13 else {"topic": TOPIC}
    parts = tuple(
        _make(
            part_cls,
            partition=i,
            current_leader_epoch=5,
            fetch_offset=1000 + i,
            last_fetched_epoch=-1,
            log_start_offset=-1,
            partition_max_bytes=1 << 20,
        )
        for i in range(partitions)
    )
    topics = (_make(topic_cls, **key, partitions=parts),) if named else ()
    body = _make(
        cls,
        cluster_id=None,
        replica_id=-1,
        replica_state=None,
        max_wait=500 * MS,
        min_bytes=1,
        max_bytes=50 << 20,
        isolation_level=1,
        session_id=session_id,
        session_epoch=epoch,
        topics=topics,
        forgotten_topics_data=(),
        rack_id="",
    )
    return _frame(FETCH, version, body)


def offset_commit_request(partitions: int = 6) -> bytes:
    cls = load_request_schema(8, 8)
    topic_cls = _nested(cls, "topics")
    part_cls = _nested(topic_cls, "partitions")
    parts = tuple(
        part_cls(
            partition_index=i,
            committed_offset=12345 + i,
            committed_leader_epoch=5,
            committed_metadata="",
        )
        for i in range(partitions)
    )
    body = cls(
        group_id="billing-consumers",
        generation_id_or_member_epoch=3,
        member_id="consumer-1-3f2a9c1e-6a37-4a4b-9a0e-0d3b3f1f6c11",
        group_instance_id=None,
        topics=(topic_cls(name=TOPIC, partitions=parts),),
    )
    return _frame(8, 8, body)


def join_group_request() -> bytes:
    cls = load_request_schema(11, 7)
    protocol = _nested(cls, "protocols")
    metadata = b"\x00\x03" + b"\x00\x00\x00\x01" + b"\x00\x09orders-eu" + b"\xff\xff\xff\xff" * 4
    body = cls(
        group_id="billing-consumers",
        session_timeout=45000 * MS,
        rebalance_timeout=300000 * MS,
        member_id="",
        group_instance_id=None,
        protocol_type="consumer",
        protocols=(
            protocol(name="range", metadata=metadata),
            protocol(name="cooperative-sticky", metadata=metadata),
        ),
    )
    return _frame(11, 7, body)


def fetch_response(version: int, partitions: int, session_id: int, records: int = 0) -> bytes:
    cls = load_response_schema(FETCH, version)
    topic_cls = _nested(cls, "responses")
    part_cls = _nested(topic_cls, "partitions")
    key = {"topic_id": TOPIC_ID} if version >= 13 else {"topic": TOPIC}
    parts = tuple(
        _make(
            part_cls,
            partition_index=i,
            error_code=ErrorCode.none,
            high_watermark=5000,
            last_stable_offset=5000,
            log_start_offset=0,
            aborted_transactions=None,
            preferred_read_replica=-1,
            records=b"r" * records if records else None,
        )
        for i in range(partitions)
    )
    responses = (_make(topic_cls, **key, partitions=parts),) if partitions else ()
    body = _make(
        cls,
        throttle_time=datetime.timedelta(0),
        error_code=ErrorCode.none,
        session_id=session_id,
        responses=responses,
        node_endpoints=(),
    )
    return encode_response_header(7, FETCH, version) + _encode(body)


# --- the gateway side -----------------------------------------------------------------


class _Cluster:
    def __init__(self, acl: Any) -> None:
        self.name = "bench"
        self.policies = SimpleNamespace(acl=acl, quotas=None)
        self._names = {TOPIC_ID: TOPIC}

    def topic_name(self, topic_id: uuid.UUID) -> str | None:
        return self._names.get(topic_id)

    def client_address(self, node_id: int, host: str, port: int) -> tuple[str, int]:
        return host, port


def enforcement(acl: Any | None = None) -> Enforcement:
    auth = SimpleNamespace(principal=ALICE, client_address="127.0.0.1:1")
    cluster = _Cluster(AclEngine(ACL) if acl is None else acl)
    return Enforcement(cluster, auth, structlog.get_logger("bench"))  # type: ignore[arg-type]


def _best_us(fn: Callable[[], object], number: int = 2000, repeat: int = 7) -> float:
    times = timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time)
    return min(times) / number * 1e6


def _walk_and_decode(frame: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    header = parse_request_header(frame)
    cls = load_request_schema(header.api_key, header.api_version)
    offset = header.body_offset
    reader = entity_reader(cls)
    return (lambda: check_body(cls, frame, offset)), (lambda: reader(frame, offset))


def _authorize(frame: bytes) -> Callable[[], object]:
    header = parse_request_header(frame)
    enf = enforcement()
    key, version = header.api_key, header.api_version

    def run() -> object:
        verdict = enf.authorize(key, version, frame, "bench-client")
        assert verdict.forward is frame, verdict
        return verdict

    return run


def steady_fetch_cases(version: int, partitions: int) -> dict[str, Callable[[], object]]:
    """Request and response side of incremental fetches naming nothing, per fetch."""
    enf = enforcement()
    session_id = 4242
    full = fetch_request(version, partitions, epoch=0)
    verdict = enf.authorize(FETCH, version, full, "c")
    assert verdict.forward is full
    exchange = enf.fetch_exchange
    check = enf.fetch_check(exchange, version)
    assert check is not None
    enf.filter_fetch_response(check, fetch_response(version, partitions, session_id), "c")
    assert enf.fetch_sessions.session_id == session_id
    epoch = [1]
    # Pre-built frames for the epochs used (the frame differs only in the epoch).
    first = fetch_request(version, partitions, session_id=session_id, epoch=1, named=False)
    second = fetch_request(version, partitions, session_id=session_id, epoch=2, named=False)
    at = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b) - 3
    frames = [first[:at] + e.to_bytes(4, "big") + first[at + 4 :] for e in range(1, 20001)]
    empty_response = fetch_response(version, 0, session_id)
    full_response = fetch_response(version, partitions, session_id, records=200)

    def request() -> None:
        e = epoch[0]
        verdict = enf.authorize(FETCH, version, frames[e - 1], "c")
        assert verdict.forward is not None, verdict
        epoch[0] = e + 1

    def buffered(response: bytes) -> Callable[[], object]:
        def run() -> object:
            check = enf.fetch_check(enf.fetch_exchange, version)
            assert check is not None
            return enf.filter_fetch_response(check, response, "c")

        return run

    def streamed() -> None:
        check = enf.fetch_check(enf.fetch_exchange, version)
        assert check is not None
        watcher = FetchTailWatcher(version, enf.cluster.client_address, check)
        watcher.feed(memoryview(full_response)[:-1])
        assert watcher.done

    return {
        "request": request,
        "response, buffered, empty": buffered(empty_response),
        "response, buffered, all partitions": buffered(full_response),
        "response, streamed, all partitions": streamed,
    }


def measure_checked() -> dict[str, dict[str, float]]:
    """``{request label: {measurement: µs}}``."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        cache_logger_on_first_use=False,
    )
    requests = {
        "Metadata v12, 10 topics": metadata_request(),
        "Fetch v12, 1 topic x 6 partitions (full)": fetch_request(12, 6),
        "Fetch v13, 1 topic id x 6 partitions (full)": fetch_request(13, 6),
        "OffsetCommit v8, 1 topic x 6 partitions": offset_commit_request(),
        "JoinGroup v7, 2 protocols": join_group_request(),
    }
    results: dict[str, dict[str, float]] = {}
    for label, frame in requests.items():
        walk, decode = _walk_and_decode(frame)
        results[label] = {
            "bounded walk": _best_us(walk),
            "kio decode": _best_us(decode),
            "Enforcement.authorize": _best_us(_authorize(frame)),
        }
    for version in (12, 13):
        for partitions in (1, 6, 60):
            label = f"Fetch v{version} session steady state, {partitions} partitions"
            cases = steady_fetch_cases(version, partitions)
            # At most 20,000 epochs were built: 5 x 2,000 requests stay within them.
            results[label] = {
                name: _best_us(fn, number=2000, repeat=5 if name == "request" else 7)
                for name, fn in cases.items()
            }
    return results


def format_checked(results: dict[str, dict[str, float]]) -> str:
    lines = ["Cost of the checks per checked request (µs, best of 5-7 runs, in process):"]
    for label, values in results.items():
        lines.append(f"  {label}")
        for name, us in values.items():
            lines.append(f"    {name:<40} {us:8.2f} µs")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_checked(measure_checked()))
