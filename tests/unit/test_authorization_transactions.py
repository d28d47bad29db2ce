"""Per-API authorization of the transaction APIs (policies/authorization/transactions.py).

Frames are built with kio and the gateway's header encoder; local answers and
rewritten requests are decoded with kio and compared with what Kafka 4 answers.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from policies.acl.model import CLUSTER_NAME, Operation, ResourceType
from policies.authorization import authorize_request, transactions
from policies.authorization.messages import (
    MessageError,
    decode_request,
    decode_response,
    encode_response,
    response_class,
)
from policies.authorization.splitting import build
from policies.authorization.verdict import Denial, RequestVerdict
from tests.authorization_fakes import (
    CORRELATION_ID,
    NO_TIME,
    FakeContext,
    FakeResourceTypeAuthorizer,
    Question,
    assert_untouched,
    denial,
    denying,
    entry_class,
    local_answer,
    request_frame,
    response_frame,
    transformed,
)

OK = ErrorCode.none
TXN_DENIED = ErrorCode.transactional_id_authorization_failed
GROUP_DENIED = ErrorCode.group_authorization_failed
TOPIC_DENIED = ErrorCode.topic_authorization_failed
CLUSTER_DENIED = ErrorCode.cluster_authorization_failed
NOT_ATTEMPTED = ErrorCode.operation_not_attempted
READ, WRITE, DESCRIBE = Operation.READ, Operation.WRITE, Operation.DESCRIBE
GROUP, TOPIC, TXN_ID = ResourceType.GROUP, ResourceType.TOPIC, ResourceType.TRANSACTIONAL_ID
CLUSTER = ResourceType.CLUSTER


def handle(context: FakeContext, api_key: int, version: int, frame: bytes) -> RequestVerdict:
    return transactions.HANDLERS[api_key](context, frame, version)


def test_handlers_cover_the_transaction_apis() -> None:
    assert set(transactions.HANDLERS) == {22, 24, 25, 26, 28, 65, 66}


# --------------------------------------------------------------------------------------
# InitProducerId (22)


def init_frame(version: int, transactional_id: str | None, **extra: Any) -> bytes:
    return request_frame(
        22,
        version,
        transactional_id=transactional_id,
        transaction_timeout=timedelta(seconds=60),
        **extra,
    )


@pytest.mark.parametrize("version", [0, 3, 6])
def test_init_producer_id_transactional(version: int) -> None:
    frame = init_frame(version, "tx")
    assert_untouched(handle(denying(), 22, version, frame), frame)
    verdict = handle(denying((WRITE, TXN_ID, "tx")), 22, version, frame)
    answer = local_answer(verdict, 22, version)
    assert (answer.error_code, answer.producer_id, answer.producer_epoch) == (TXN_DENIED, -1, -1)
    assert verdict.denials == [denial(WRITE, TXN_ID, "tx")]


def test_init_producer_id_two_phase_commit_needs_all_on_the_transactional_id() -> None:
    frame = init_frame(6, "tx", enable2_pc=True)
    assert_untouched(handle(denying(), 22, 6, frame), frame)
    verdict = handle(denying((Operation.ALL, TXN_ID, "tx")), 22, 6, frame)
    assert local_answer(verdict, 22, 6).error_code == TXN_DENIED
    assert verdict.denials == [denial(Operation.ALL, TXN_ID, "tx")]
    # Without enable2_pc nothing beyond Write is asked.
    context = denying((Operation.ALL, TXN_ID, "tx"))
    plain = init_frame(6, "tx")
    assert_untouched(handle(context, 22, 6, plain), plain)
    assert context.authorizer.questions == [(WRITE, TXN_ID, "tx")]


@pytest.mark.parametrize("version", [0, 4, 6])
def test_init_producer_id_idempotent(version: int) -> None:
    frame = init_frame(version, None)
    assert_untouched(handle(denying(), 22, version, frame), frame)
    idempotent_write = (Operation.IDEMPOTENT_WRITE, CLUSTER, CLUSTER_NAME)
    context = denying(idempotent_write)
    verdict = handle(context, 22, version, frame)
    answer = local_answer(verdict, 22, version)
    assert (answer.error_code, answer.producer_id, answer.producer_epoch) == (
        CLUSTER_DENIED,
        -1,
        -1,
    )
    assert verdict.denials == [denial(*idempotent_write)]
    assert context.authorizer.questions == [idempotent_write]  # asked once


@pytest.mark.parametrize("writes_some_topic", [True, False])
def test_init_producer_id_idempotent_with_write_on_some_topic(writes_some_topic: bool) -> None:
    idempotent_write = (Operation.IDEMPOTENT_WRITE, CLUSTER, CLUSTER_NAME)
    authorizer = FakeResourceTypeAuthorizer([idempotent_write], writes_some_topic)
    frame = init_frame(4, None)
    verdict = handle(FakeContext(authorizer), 22, 4, frame)
    assert authorizer.any_questions == [(WRITE, TOPIC)]
    if writes_some_topic:
        assert_untouched(verdict, frame)
    else:
        assert local_answer(verdict, 22, 4).error_code == CLUSTER_DENIED


# --------------------------------------------------------------------------------------
# AddPartitionsToTxn (24)


def add_partitions_frame(version: int, topics: dict[str, tuple[int, ...]] | list[Any]) -> bytes:
    topic = entry_class(24, version, "request", "v3_and_below_topics")
    items = topics.items() if isinstance(topics, dict) else topics
    return request_frame(
        24,
        version,
        v3_and_below_transactional_id="tx",
        v3_and_below_producer_id=7,
        v3_and_below_producer_epoch=1,
        v3_and_below_topics=tuple(topic(name=name, partitions=parts) for name, parts in items),
    )


def partition_errors(answer: Any) -> list[tuple[str, list[tuple[int, ErrorCode]]]]:
    return [
        (t.name, [(p.partition_index, p.partition_error_code) for p in t.results_by_partition])
        for t in answer.results_by_topic_v3_and_below
    ]


@pytest.mark.parametrize("version", [0, 2, 3])
def test_add_partitions_to_txn_allowed_is_untouched(version: int) -> None:
    frame = add_partitions_frame(version, {"a": (0, 1), "b": (0,)})
    assert_untouched(handle(denying(), 24, version, frame), frame)


@pytest.mark.parametrize("version", [0, 3])
def test_add_partitions_to_txn_refused_transactional_id(version: int) -> None:
    frame = add_partitions_frame(version, {"a": (0, 1), "b": (2,)})
    context = denying((WRITE, TXN_ID, "tx"))
    answer = local_answer(handle(context, 24, version, frame), 24, version)
    assert partition_errors(answer) == [
        ("a", [(0, TXN_DENIED), (1, TXN_DENIED)]),
        ("b", [(2, TXN_DENIED)]),
    ]
    assert context.authorizer.questions == [(WRITE, TXN_ID, "tx")]


@pytest.mark.parametrize("version", [0, 1, 3])
def test_add_partitions_to_txn_one_refused_topic_fails_all(version: int) -> None:
    frame = add_partitions_frame(version, {"a": (0, 1), "secret": (0,), "b": (3,)})
    verdict = handle(denying((WRITE, TOPIC, "secret")), 24, version, frame)
    assert partition_errors(local_answer(verdict, 24, version)) == [
        ("a", [(0, NOT_ATTEMPTED), (1, NOT_ATTEMPTED)]),
        ("secret", [(0, TOPIC_DENIED)]),
        ("b", [(3, NOT_ATTEMPTED)]),
    ]
    assert verdict.denials == [denial(WRITE, TOPIC, "secret")]


def test_add_partitions_to_txn_never_adds_an_internal_topic() -> None:
    frame = add_partitions_frame(3, {"a": (0,), "__consumer_offsets": (4,)})
    context = denying()
    verdict = handle(context, 24, 3, frame)
    assert partition_errors(local_answer(verdict, 24, 3)) == [
        ("a", [(0, NOT_ATTEMPTED)]),
        ("__consumer_offsets", [(4, TOPIC_DENIED)]),
    ]
    assert (WRITE, TOPIC, "__consumer_offsets") not in context.authorizer.questions
    assert verdict.denials == [
        Denial(WRITE, TOPIC, "__consumer_offsets", transactions.INTERNAL_TOPIC_RULE)
    ]


def test_add_partitions_to_txn_answers_a_repeated_topic_once() -> None:
    frame = add_partitions_frame(2, [("a", (0,)), ("s", (1,)), ("a", (0, 2))])
    answer = local_answer(handle(denying((WRITE, TOPIC, "s")), 24, 2, frame), 24, 2)
    assert partition_errors(answer) == [
        ("a", [(0, NOT_ATTEMPTED), (2, NOT_ATTEMPTED)]),
        ("s", [(1, TOPIC_DENIED)]),
    ]


@pytest.mark.parametrize("version", [4, 5])
def test_add_partitions_to_txn_broker_versions_need_cluster_action(version: int) -> None:
    transaction = entry_class(24, version, "request", "transactions")
    topic = entry_class(24, version, "request", "transactions", "topics")
    frame = request_frame(
        24,
        version,
        transactions=(
            transaction(
                transactional_id="tx",
                producer_id=7,
                producer_epoch=1,
                verify_only=True,
                topics=(topic(name="a", partitions=(0,)),),
            ),
        ),
    )
    assert_untouched(handle(denying(), 24, version, frame), frame)
    cluster_action = (Operation.CLUSTER_ACTION, CLUSTER, CLUSTER_NAME)
    verdict = handle(denying(cluster_action), 24, version, frame)
    answer = local_answer(verdict, 24, version)
    assert (answer.error_code, answer.results_by_transaction) == (CLUSTER_DENIED, ())
    assert verdict.denials == [denial(*cluster_action)]


# --------------------------------------------------------------------------------------
# AddOffsetsToTxn (25), EndTxn (26)


@pytest.mark.parametrize("version", [0, 2, 4])
def test_add_offsets_to_txn(version: int) -> None:
    frame = request_frame(
        25, version, transactional_id="tx", producer_id=7, producer_epoch=1, group_id="grp"
    )
    assert_untouched(handle(denying(), 25, version, frame), frame)
    context = denying((WRITE, TXN_ID, "tx"), (READ, GROUP, "grp"))
    assert local_answer(handle(context, 25, version, frame), 25, version).error_code == TXN_DENIED
    assert context.authorizer.questions == [(WRITE, TXN_ID, "tx")]  # stops at the first
    verdict = handle(denying((READ, GROUP, "grp")), 25, version, frame)
    assert local_answer(verdict, 25, version).error_code == GROUP_DENIED
    assert verdict.denials == [denial(READ, GROUP, "grp")]


@pytest.mark.parametrize("version", [0, 3, 5])
def test_end_txn(version: int) -> None:
    frame = request_frame(
        26, version, transactional_id="tx", producer_id=7, producer_epoch=1, committed=True
    )
    assert_untouched(handle(denying(), 26, version, frame), frame)
    answer = local_answer(handle(denying((WRITE, TXN_ID, "tx")), 26, version, frame), 26, version)
    assert answer.error_code == TXN_DENIED
    if version >= 5:
        assert (answer.producer_id, answer.producer_epoch) == (-1, -1)


# --------------------------------------------------------------------------------------
# TxnOffsetCommit (28)


def txn_commit_frame(version: int, *names: str) -> bytes:
    topic = entry_class(28, version, "request", "topics")
    partition = entry_class(28, version, "request", "topics", "partitions")
    topics = tuple(
        topic(
            name=name,
            partitions=tuple(
                build(partition, partition_index=i, committed_offset=5, committed_metadata=None)
                for i in (0, 1)
            ),
        )
        for name in names
    )
    return request_frame(
        28,
        version,
        transactional_id="tx",
        group_id="grp",
        producer_id=7,
        producer_epoch=1,
        topics=topics,
    )


def commit_errors(answer: Any) -> list[tuple[str, list[tuple[int, ErrorCode]]]]:
    return [
        (t.name, [(p.partition_index, p.error_code) for p in t.partitions]) for t in answer.topics
    ]


@pytest.mark.parametrize("version", [0, 2, 5])
def test_txn_offset_commit_allowed_is_untouched(version: int) -> None:
    frame = txn_commit_frame(version, "a")
    assert_untouched(handle(denying(), 28, version, frame), frame)


@pytest.mark.parametrize(
    ("refused", "error"),
    [((WRITE, TXN_ID, "tx"), TXN_DENIED), ((READ, GROUP, "grp"), GROUP_DENIED)],
)
@pytest.mark.parametrize("version", [0, 3, 5])
def test_txn_offset_commit_refusal_fails_every_partition(
    version: int, refused: Question, error: ErrorCode
) -> None:
    verdict = handle(denying(refused), 28, version, txn_commit_frame(version, "a", "b"))
    assert commit_errors(local_answer(verdict, 28, version)) == [
        ("a", [(0, error), (1, error)]),
        ("b", [(0, error), (1, error)]),
    ]
    assert verdict.denials == [denial(*refused)]


@pytest.mark.parametrize("version", [0, 2, 5])
def test_txn_offset_commit_partly_refused_topics(version: int) -> None:
    frame = txn_commit_frame(version, "a", "s", "b")
    verdict = handle(denying((READ, TOPIC, "s")), 28, version, frame)
    assert [t.name for t in decode_request(verdict.forward or b"")[1].topics] == ["a", "b"]
    topic = entry_class(28, version, "response", "topics")
    partition = entry_class(28, version, "response", "topics", "partitions")
    upstream = response_frame(
        28,
        version,
        topics=tuple(
            topic(
                name=n,
                partitions=tuple(partition(partition_index=i, error_code=OK) for i in (0, 1)),
            )
            for n in ("b", "a")
        ),
    )
    assert commit_errors(transformed(verdict, 28, version, upstream)) == [
        ("a", [(0, OK), (1, OK)]),
        ("s", [(0, TOPIC_DENIED), (1, TOPIC_DENIED)]),
        ("b", [(0, OK), (1, OK)]),
    ]


def test_txn_offset_commit_all_topics_refused_is_answered_locally() -> None:
    frame = txn_commit_frame(4, "s")
    answer = local_answer(handle(denying((READ, TOPIC, "s")), 28, 4, frame), 28, 4)
    assert commit_errors(answer) == [("s", [(0, TOPIC_DENIED), (1, TOPIC_DENIED)])]


# --------------------------------------------------------------------------------------
# ListTransactions (66)


@pytest.mark.parametrize("version", [0, 1, 2])
def test_list_transactions_shows_only_describable_ids(version: int) -> None:
    frame = request_frame(66, version)
    context = denying((DESCRIBE, TXN_ID, "hidden"))
    verdict = handle(context, 66, version, frame)
    assert verdict.forward is frame
    state = entry_class(66, version, "response", "transaction_states")
    upstream = response_frame(
        66,
        version,
        error_code=OK,
        transaction_states=tuple(
            state(transactional_id=t, producer_id=i, transaction_state="Ongoing")
            for i, t in enumerate(["a", "hidden", "b"])
        ),
    )
    answer = transformed(verdict, 66, version, upstream)
    assert [s.transactional_id for s in answer.transaction_states] == ["a", "b"]
    assert (answer.error_code, answer.throttle_time) == (OK, NO_TIME)


# --------------------------------------------------------------------------------------
# DescribeTransactions (65)

STATE = entry_class(65, 0, "response", "transaction_states")
TOPIC_DATA = entry_class(65, 0, "response", "transaction_states", "topics")
START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def txn_state(transactional_id: str, *topics: str) -> Any:
    return STATE(
        error_code=OK,
        transactional_id=transactional_id,
        transaction_state="Ongoing",
        transaction_timeout=timedelta(seconds=60),
        transaction_start_time=START,
        producer_id=1000,
        producer_epoch=2,
        topics=tuple(TOPIC_DATA(topic=t, partitions=(0, 1)) for t in topics),
    )


def describe_frame(*ids: str) -> bytes:
    return request_frame(65, 0, transactional_ids=ids)


def test_describe_transactions_filters_topics_even_when_every_id_is_allowed() -> None:
    frame = describe_frame("a")
    verdict = handle(denying((DESCRIBE, TOPIC, "hidden")), 65, 0, frame)
    assert verdict.forward is frame and verdict.transform is not None
    upstream = response_frame(65, 0, transaction_states=(txn_state("a", "t", "hidden", "u"),))
    answer = transformed(verdict, 65, 0, upstream)
    assert answer.transaction_states == (txn_state("a", "t", "u"),)


def test_describe_transactions_partly_refused() -> None:
    frame = describe_frame("a", "secret", "b")
    verdict = handle(denying((DESCRIBE, TXN_ID, "secret")), 65, 0, frame)
    assert decode_request(verdict.forward or b"")[1].transactional_ids == ("a", "b")
    upstream = response_frame(65, 0, transaction_states=(txn_state("b", "t"), txn_state("a")))
    answer = transformed(verdict, 65, 0, upstream)
    assert [s.transactional_id for s in answer.transaction_states] == ["a", "secret", "b"]
    refused = answer.transaction_states[1]
    assert refused.error_code == TXN_DENIED
    assert (refused.transaction_state, refused.producer_id, refused.topics) == ("", 0, ())
    assert verdict.denials == [denial(DESCRIBE, TXN_ID, "secret")]


def test_describe_transactions_all_refused_is_answered_locally() -> None:
    frame = describe_frame("x", "y")
    verdict = handle(denying((DESCRIBE, TXN_ID, "x"), (DESCRIBE, TXN_ID, "y")), 65, 0, frame)
    answer = local_answer(verdict, 65, 0)
    assert [(s.transactional_id, s.error_code) for s in answer.transaction_states] == [
        ("x", TXN_DENIED),
        ("y", TXN_DENIED),
    ]
    assert answer.transaction_states[0].transaction_start_time == datetime(1970, 1, 1, tzinfo=UTC)


def test_describe_transactions_keeps_a_negative_start_time() -> None:
    """A broker sends -1 for an id without an ongoing transaction; kio cannot decode
    that, so the answer is rewritten byte by byte and the -1 passes through."""
    frame = describe_frame("idle", "s")
    verdict = handle(denying((DESCRIBE, TXN_ID, "s")), 65, 0, frame)
    marker = struct.pack(">q", 424242)
    upstream = response_frame(
        65,
        0,
        transaction_states=(
            STATE(
                error_code=OK,
                transactional_id="idle",
                transaction_state="Empty",
                transaction_timeout=timedelta(seconds=60),
                transaction_start_time=datetime.fromtimestamp(424.242, UTC),
                producer_id=5,
                producer_epoch=0,
                topics=(),
            ),
        ),
    ).replace(marker, struct.pack(">q", -1))
    assert verdict.transform is not None
    out = verdict.transform(upstream)
    assert out.count(struct.pack(">q", -1)) == 1
    answer = decode_response(out.replace(struct.pack(">q", -1), marker), 65, 0)
    assert [(s.transactional_id, s.transaction_state) for s in answer.transaction_states] == [
        ("idle", "Empty"),
        ("s", ""),
    ]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["t1", "t2", "t3", "t4"]),
            st.booleans(),
            st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
        ),
        max_size=6,
        unique_by=lambda item: item[0],
    ),
    st.sets(st.sampled_from(["a", "b", "c"])),
    st.integers(min_value=0, max_value=10_000),
)
def test_describe_transactions_rewrite_matches_kio(
    requested: list[tuple[str, bool, list[str]]], hidden_topics: set[str], throttle_ms: int
) -> None:
    """Whatever is refused, the byte-level rewrite is what kio would have encoded."""
    refused_ids = [(DESCRIBE, TXN_ID, txn) for txn, refused, _ in requested if refused]
    refused_topics = [(DESCRIBE, TOPIC, topic) for topic in hidden_topics]
    frame = describe_frame(*(txn for txn, _, _ in requested))
    verdict = handle(denying(*refused_ids, *refused_topics), 65, 0, frame)
    allowed = [(txn, topics) for txn, refused, topics in reversed(requested) if not refused]
    expected = []
    for txn, refused, topics in requested:
        if refused:
            expected.append(("refused", txn, ()))
        else:
            expected.append(("ok", txn, tuple(t for t in topics if t not in hidden_topics)))
    if verdict.local_response is not None:
        answer = decode_response(verdict.local_response, 65, 0)
    else:
        body = build(
            response_class(65, 0),
            throttle_time=timedelta(milliseconds=throttle_ms),
            transaction_states=tuple(txn_state(txn, *topics) for txn, topics in allowed),
        )
        answer = transformed(verdict, 65, 0, encode_response(CORRELATION_ID, 65, 0, body))
        assert answer.throttle_time == timedelta(milliseconds=throttle_ms)
    assert [
        (
            "refused" if s.error_code == TXN_DENIED else "ok",
            s.transactional_id,
            tuple(t.topic for t in s.topics),
        )
        for s in answer.transaction_states
    ] == expected


def test_describe_transactions_malformed_answer_is_a_message_error() -> None:
    verdict = handle(denying(), 65, 0, describe_frame("a"))
    assert verdict.transform is not None
    truncated = response_frame(65, 0, transaction_states=(txn_state("a", "t"),))[:-6]
    with pytest.raises(MessageError, match="describe_transactions"):
        verdict.transform(truncated)


def test_the_registry_dispatches_to_these_handlers() -> None:
    frame = request_frame(
        26, 3, transactional_id="tx", producer_id=7, producer_epoch=1, committed=False
    )
    verdict = authorize_request(denying((WRITE, TXN_ID, "tx")), 26, 3, frame)
    assert local_answer(verdict, 26, 3).error_code == TXN_DENIED
