"""Fetch sessions (KIP-227) under ACLs: the whole session is authorized at every request,
sessions are bound to their connection, and every topic of every response is checked."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from kio.static.primitive import Records
from test_authorization_data import (
    DENIED,
    NONE,
    assert_refused_fetch_partition,
    fetch_partitions,
    fetch_request,
    topic_grants,
)
from test_codec_strategies import gw_mapper, kio_module

from codec.fetch_stream import FetchTailWatcher
from codec.framing import encode_frame
from codec.stream import BufferedFrame, Decision, FrameStream
from policies.acl.model import Operation
from policies.auth.principal import Principal
from policies.authorization.fetch_sessions import (
    FetchDecision,
    FetchSessionGuard,
    RefusedTopicInStream,
)
from policies.authorization.messages import decode_response
from policies.authorization.splitting import build
from tests.authorization_fakes import (
    allowing,
    assert_untouched,
    forwarded_body,
    local_answer,
    request_frame_of,
    response_frame_of,
    transformed,
)

READ = Operation.READ
SECRET_RECORDS = b"SECRET-RECORDS-" * 8


def fetch_response(version: int, topics: list[tuple[Any, list[int]]], session_id: int) -> Any:
    m = kio_module("fetch", version)
    key = "topic_id" if version >= 13 else "topic"
    return build(
        m.FetchResponse,
        throttle_time=datetime.timedelta(0),
        error_code=NONE,
        session_id=session_id,
        responses=tuple(
            m.FetchableTopicResponse(
                **{key: name},
                partitions=tuple(
                    build(
                        m.PartitionData,
                        partition_index=index,
                        error_code=NONE,
                        high_watermark=50,
                        last_stable_offset=50,
                        log_start_offset=0,
                        aborted_transactions=None,
                        records=Records(SECRET_RECORDS),
                    )
                    for index in indexes
                ),
            )
            for name, indexes in topics
        ),
    )


def keys(version: int) -> dict[str, Any]:
    if version >= 13:
        return {name: uuid.uuid4() for name in ("a", "secret")}
    return {"a": "a", "secret": "secret"}


def ctx_for(version: int, ids: dict[str, Any], *readable: str) -> Any:
    named_ids = {n: i for n, i in ids.items() if isinstance(i, uuid.UUID)}
    return allowing(*topic_grants(READ, *readable), **named_ids)


def open_session(
    guard: FetchSessionGuard, ctx: Any, version: int, topics: list[tuple[Any, list[int]]]
) -> None:
    """A full fetch at epoch 0, answered by the broker with session 77."""
    request = fetch_request(version, topics, session_id=0, session_epoch=0)
    decision = guard.authorize(ctx, request_frame_of(1, version, request), version)
    assert decision.verdict.forward is not None and decision.exchange is not None
    response = response_frame_of(1, version, fetch_response(version, topics, 77))
    guard.response_check(decision.exchange, ctx, version).filter(response)
    assert guard.session_id == 77


def incremental(
    guard: FetchSessionGuard,
    ctx: Any,
    version: int,
    epoch: int,
    topics: list[tuple[Any, list[int]]] = (),  # type: ignore[assignment]
    session_id: int = 77,
) -> tuple[FetchDecision, bytes]:
    request = fetch_request(version, list(topics), session_id=session_id, session_epoch=epoch)
    frame = request_frame_of(1, version, request)
    return guard.authorize(ctx, frame, version), frame


VERSIONS = [7, 12, 13, 16, 18]


# --- binding -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_another_connection_replaying_a_session_gets_no_data(version: int) -> None:
    ids = keys(version)
    ctx = ctx_for(version, ids, "a")
    owner, intruder = FetchSessionGuard(), FetchSessionGuard()
    open_session(owner, ctx, version, [(ids["a"], [0])])
    # The intruder replays the owner's session id and next epoch, naming nothing.
    decision, _ = incremental(intruder, ctx, version, epoch=1)
    answer = local_answer(decision.verdict, 1, version)
    assert answer.error_code == ErrorCode.fetch_session_id_not_found
    assert (answer.session_id, answer.responses) == (0, ())
    assert decision.exchange is None and decision.foreign_session == 77
    # The owner's own incremental fetch is forwarded untouched.
    decision, frame = incremental(owner, ctx, version, epoch=1)
    assert_untouched(decision.verdict, frame)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_full_fetch_cannot_close_another_connections_session(version: int) -> None:
    ids = keys(version)
    ctx = ctx_for(version, ids, "a")
    request = fetch_request(version, [(ids["a"], [0])], session_id=77, session_epoch=0)
    decision = FetchSessionGuard().authorize(ctx, request_frame_of(1, version, request), version)
    sent = forwarded_body(decision.verdict)
    assert (sent.session_id, sent.session_epoch) == (0, 0)
    assert sent.topics == request.topics


@pytest.mark.parametrize("version", VERSIONS)
def test_an_epoch_out_of_sequence_is_refused(version: int) -> None:
    ids = keys(version)
    ctx = ctx_for(version, ids, "a")
    guard = FetchSessionGuard()
    open_session(guard, ctx, version, [(ids["a"], [0])])
    decision, _ = incremental(guard, ctx, version, epoch=2)  # epoch 1 never seen
    answer = local_answer(decision.verdict, 1, version)
    assert answer.error_code == ErrorCode.invalid_fetch_session_epoch


# --- the whole session at every request ------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_revoked_topic_in_the_session_closes_it_and_is_answered_refused(version: int) -> None:
    ids = keys(version)
    guard = FetchSessionGuard()
    open_session(guard, ctx_for(version, ids, "a", "secret"), version, [(ids["a"], [0])])
    decision, _ = incremental(
        guard, ctx_for(version, ids, "a", "secret"), version, 1, [(ids["secret"], [1, 2])]
    )
    assert decision.verdict.transform is None  # all allowed: forwarded as is
    # Read on "secret" is revoked; the next request names no topic at all.
    revoked = ctx_for(version, ids, "a")
    decision, _ = incremental(guard, revoked, version, epoch=2)
    sent = forwarded_body(decision.verdict)
    assert sent.session_epoch == -1 and sent.topics == ()  # the broker closes its session
    assert guard.session_id == 0
    upstream = fetch_response(version, [], 0)
    merged = transformed(decision.verdict, 1, version, upstream)
    assert merged.session_id == 0  # the client starts over with a full fetch
    assert fetch_partitions(version, merged) == [
        (ids["secret"], 1, DENIED),
        (ids["secret"], 2, DENIED),
    ]
    for partition in merged.responses[0].partitions:
        assert_refused_fetch_partition(partition)
    assert [d.name for d in decision.verdict.denials] == ["secret"]


@pytest.mark.parametrize("version", [7, 13])
def test_forgotten_partitions_leave_the_session(version: int) -> None:
    ids = keys(version)
    guard = FetchSessionGuard()
    open_session(
        guard,
        ctx_for(version, ids, "a", "secret"),
        version,
        [(ids["a"], [0]), (ids["secret"], [1])],
    )
    m = kio_module("fetch", version, "request")
    key = "topic_id" if version >= 13 else "topic"
    request = dataclasses.replace(
        fetch_request(version, [], session_id=77, session_epoch=1),
        forgotten_topics_data=(m.ForgottenTopic(**{key: ids["secret"]}, partitions=(1,)),),
    )
    frame = request_frame_of(1, version, request)
    assert_untouched(guard.authorize(ctx_for(version, ids, "a"), frame, version).verdict, frame)
    assert guard.partitions == {ids["a"]: {0}}


# --- every response is checked --------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 7, 11, 12, 13, 16, 18])
def test_buffered_response_with_a_refused_topic_loses_its_records(version: int) -> None:
    ids = keys(version)
    guard = FetchSessionGuard()
    response = fetch_response(version, [(ids["a"], [0]), (ids["secret"], [3, 4])], 77)
    frame = response_frame_of(1, version, response)
    check = guard.response_check(None, ctx_for(version, ids, "a"), version)
    out = bytes(check.filter(frame))
    assert out.count(SECRET_RECORDS) == 1  # only topic a's records are left
    answer = decode_response(out, 1, version)
    assert fetch_partitions(version, answer) == [
        (ids["a"], 0, NONE),
        (ids["secret"], 3, DENIED),
        (ids["secret"], 4, DENIED),
    ]
    for partition in answer.responses[1].partitions:
        assert_refused_fetch_partition(partition)
    assert [d.name for d in check.denials] == ["secret"]
    assert check.filter(
        response_frame_of(1, version, fetch_response(version, [(ids["a"], [0])], 77))
    )


def stream(frame: bytes, watcher: FetchTailWatcher, cut: int) -> bytes:
    """Feed the framed response in chunks of ``cut``; return what would reach the client."""
    frames = FrameStream(max_frame_bytes=1 << 24, head_bytes=4)
    data, sent = encode_frame(frame), bytearray()
    for pos in range(0, len(data), cut):
        for piece in frames.feed(
            data[pos : pos + cut], lambda h, s: (Decision.WATCH, watcher, None)
        ):
            assert not isinstance(piece, BufferedFrame)
            sent += piece
    return bytes(sent)


@pytest.mark.parametrize("version", range(4, 19))
@pytest.mark.parametrize("cut", [7, 64, 100_000])
def test_streamed_response_with_a_refused_topic_never_releases_its_records(
    version: int, cut: int
) -> None:
    ids = keys(version)
    guard = FetchSessionGuard()
    allowed_only = response_frame_of(1, version, fetch_response(version, [(ids["a"], [0, 1])], 77))
    check = guard.response_check(None, ctx_for(version, ids, "a"), version)
    assert (
        stream(allowed_only, FetchTailWatcher(version, gw_mapper, check), cut)[4:] == allowed_only
    )

    response = fetch_response(version, [(ids["a"], [0]), (ids["secret"], [3])], 77)
    frame = response_frame_of(1, version, response)
    check = guard.response_check(None, ctx_for(version, ids, "a"), version)
    watcher = FetchTailWatcher(version, gw_mapper, check)
    frames = FrameStream(max_frame_bytes=1 << 24, head_bytes=4)
    data, sent = encode_frame(frame), bytearray()
    with pytest.raises(RefusedTopicInStream):
        for pos in range(0, len(data), cut):
            for piece in frames.feed(
                data[pos : pos + cut], lambda h, s: (Decision.WATCH, watcher, None)
            ):
                sent += piece  # type: ignore[operator]
    assert bytes(sent).count(SECRET_RECORDS) <= 1  # topic a's, at most; never the secret's
    secret_at = frame.index(SECRET_RECORDS, frame.index(SECRET_RECORDS) + 1)
    assert len(sent) < 4 + secret_at
    assert [d.name for d in check.denials] == ["secret"]


def test_the_response_tells_the_guard_its_session() -> None:
    ids = keys(12)
    guard = FetchSessionGuard()
    ctx = ctx_for(12, ids, "a")
    request = fetch_request(12, [(ids["a"], [0, 1])], session_id=0, session_epoch=0)
    decision = guard.authorize(ctx, request_frame_of(1, 12, request), 12)
    check = guard.response_check(decision.exchange, ctx, 12)
    frame = response_frame_of(1, 12, fetch_response(12, [(ids["a"], [0, 1])], 91))
    stream(frame, FetchTailWatcher(12, gw_mapper, check), 5)
    assert (guard.session_id, guard.partitions) == (91, {"a": {0, 1}})


@pytest.mark.parametrize("version", [13, 18])
def test_a_decision_taken_again_after_an_id_lookup_keeps_the_session(version: int) -> None:
    """Enforcement decides again once unknown topic ids were looked up upstream: the
    mirror must then be as before the first decision, or the epoch would skip one."""
    ids = keys(version)
    ctx = ctx_for(version, ids, "a")
    guard = FetchSessionGuard()
    open_session(guard, ctx, version, [(ids["a"], [0])])
    saved = guard.save()
    decision, frame = incremental(guard, ctx, version, epoch=1, topics=[(ids["a"], [1])])
    assert guard.next_epoch == 2 and guard.partitions[ids["a"]] == {0, 1}
    guard.restore(saved)
    assert (guard.session_id, guard.next_epoch) == (77, 1)
    assert guard.partitions == {ids["a"]: {0}}
    decision, frame = incremental(guard, ctx, version, epoch=1, topics=[(ids["a"], [1])])
    assert_untouched(decision.verdict, frame)
    assert guard.next_epoch == 2 and guard.partitions[ids["a"]] == {0, 1}


# --- readable topics remembered per policy generation ----------------------------------------


@pytest.mark.parametrize("version", [7, 12, 13, 18])
def test_the_steady_state_asks_nothing_until_the_policy_changes(version: int) -> None:
    ids = keys(version)
    guard = FetchSessionGuard()
    policy = object()  # stands for one AclEngine; a reload makes a new one
    ctx = ctx_for(version, ids, "a", "secret")
    topics = [(ids["a"], [0, 1]), (ids["secret"], [2])]
    request = fetch_request(version, topics, session_id=0, session_epoch=0)
    decision = guard.authorize(ctx, request_frame_of(1, version, request), version, policy)
    check = guard.response_check(decision.exchange, ctx, version, policy)
    check.filter(response_frame_of(1, version, fetch_response(version, topics, 77)))
    asked = len(ctx.authorizer.questions)
    assert asked == 2  # each topic once, at the full fetch
    for epoch in range(1, 4):  # incremental fetches naming nothing, and their responses
        frame = incremental_frame(version, epoch)
        decision = guard.authorize(ctx, frame, version, policy)
        assert_untouched(decision.verdict, frame)
        check = guard.response_check(decision.exchange, ctx, version, policy)
        response = response_frame_of(1, version, fetch_response(version, topics, 77))
        assert check.filter(response) is response
    assert len(ctx.authorizer.questions) == asked  # nothing asked again

    # A reload revokes "secret": under the new policy object nothing remembered counts.
    revoked = ctx_for(version, ids, "a")
    decision = guard.authorize(revoked, incremental_frame(version, 4), version, object())
    assert forwarded_body(decision.verdict).session_epoch == -1  # the session is closed
    assert [d.name for d in decision.verdict.denials] == ["secret"]
    assert sorted(call[2] for call in revoked.authorizer.questions) == ["a", "secret"]


@pytest.mark.parametrize("version", [12, 13])
def test_a_response_is_checked_against_the_policy_of_its_arrival(version: int) -> None:
    ids = keys(version)
    guard = FetchSessionGuard()
    policy = object()
    ctx = ctx_for(version, ids, "a", "secret")
    topics = [(ids["a"], [0]), (ids["secret"], [1])]
    request = fetch_request(version, topics, session_id=0, session_epoch=0)
    decision = guard.authorize(ctx, request_frame_of(1, version, request), version, policy)
    # The policy is reloaded while the fetch is in flight: "secret" is refused now.
    check = guard.response_check(decision.exchange, ctx_for(version, ids, "a"), version, object())
    out = check.filter(response_frame_of(1, version, fetch_response(version, topics, 77)))
    assert bytes(out).count(SECRET_RECORDS) == 1
    assert [d.name for d in check.denials] == ["secret"]


def test_another_principal_is_not_answered_from_what_was_remembered() -> None:
    ids = keys(12)
    guard = FetchSessionGuard()
    policy = object()
    alice = ctx_for(12, ids, "a")
    request = fetch_request(12, [(ids["a"], [0])])
    frame = request_frame_of(1, 12, request)
    guard.authorize(alice, frame, 12, policy)
    other = ctx_for(12, ids, "a")
    other.principal = Principal(name="alice", mechanism="PLAIN")  # equal, but a new login
    guard.authorize(other, frame, 12, policy)
    assert len(other.authorizer.questions) == 1


def incremental_frame(version: int, epoch: int, session_id: int = 77) -> bytes:
    request = fetch_request(version, [], session_id=session_id, session_epoch=epoch)
    return request_frame_of(1, version, request)
