"""Per-API authorization of the group APIs (policies/authorization/groups.py) and the
split/merge machinery (policies/authorization/splitting.py).

Frames are built with kio and the gateway's header encoder; local answers and
rewritten requests are decoded with kio and compared with what Kafka 4 answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from policies.acl.model import CLUSTER_NAME, Operation, ResourceType
from policies.authorization import authorize_request, groups
from policies.authorization.messages import (
    encode_response,
    response_class,
)
from policies.authorization.splitting import (
    Decisions,
    Local,
    Upstream,
    build,
    merge_in_client_order,
)
from policies.authorization.verdict import RequestVerdict
from tests.authorization_fakes import (
    CORRELATION_ID,
    FakeContext,
    assert_untouched,
    denial,
    denying,
    entry_class,
    forwarded_body,
    local_answer,
    request_frame,
    response_frame,
    transformed,
)

OK = ErrorCode.none
GROUP_DENIED = ErrorCode.group_authorization_failed
TOPIC_DENIED = ErrorCode.topic_authorization_failed
READ, DESCRIBE, DELETE = Operation.READ, Operation.DESCRIBE, Operation.DELETE
GROUP, TOPIC, TXN_ID = ResourceType.GROUP, ResourceType.TOPIC, ResourceType.TRANSACTIONAL_ID
CLUSTER = ResourceType.CLUSTER
MIN_INT32 = -(2**31)


# --------------------------------------------------------------------------------------
# fakes and frame helpers


def handle(context: FakeContext, api_key: int, version: int, frame: bytes) -> RequestVerdict:
    return groups.HANDLERS[api_key](context, frame, version)


# --------------------------------------------------------------------------------------
# merge_in_client_order and Decisions


@st.composite
def client_requests(draw: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """Client entries (answered here or forwarded) and the expected merged answer."""
    keys = draw(st.lists(st.sampled_from("abcdef"), max_size=12))
    local = draw(st.lists(st.booleans(), min_size=len(keys), max_size=len(keys)))
    slots: list[Any] = []
    forwarded: list[Any] = []
    expected: list[Any] = []
    for index, (key, is_local) in enumerate(zip(keys, local, strict=True)):
        if is_local:
            slots.append(Local(("local", key, index)))
            expected.append(("local", key, index))
        else:
            slots.append(Upstream(key))
            forwarded.append(("upstream", key, index))
            expected.append(("upstream", key, index))
    return slots, forwarded, expected


def broker_order(forwarded: list[Any], random: Any) -> list[Any]:
    """Any interleaving of the keys, answering a key listed twice in request order."""
    positions = list(range(len(forwarded)))
    random.shuffle(positions)
    shuffled = [forwarded[i] for i in positions]
    by_key: dict[str, list[Any]] = {}
    for entry in forwarded:
        by_key.setdefault(entry[1], []).append(entry)
    return [by_key[entry[1]].pop(0) for entry in shuffled]


@given(client_requests(), st.randoms(use_true_random=False))
def test_merge_restores_the_client_order(request: Any, random: Any) -> None:
    slots, forwarded, expected = request
    upstream = broker_order(forwarded, random)
    merged = merge_in_client_order(slots, upstream, key=lambda entry: entry[1])
    assert merged == expected


@given(
    st.lists(st.sampled_from("abc"), max_size=6),
    st.lists(st.sampled_from("abcxyz"), max_size=6),
)
def test_merge_keeps_unasked_answers_and_skips_missing_ones(
    asked: list[str], answered: list[str]
) -> None:
    upstream = [(key, index) for index, key in enumerate(answered)]
    merged = merge_in_client_order([Upstream(key) for key in asked], upstream, lambda e: e[0])
    # A naive oracle: each asked key takes the first unused answer with that key;
    # answers nobody asked for follow, in the broker's order.
    unused = list(upstream)
    expected = []
    for key in asked:
        match = next((entry for entry in unused if entry[0] == key), None)
        if match is not None:
            unused.remove(match)
            expected.append(match)
    assert merged == expected + unused


def test_decisions_ask_each_question_once_and_record_one_denial() -> None:
    context = denying((READ, GROUP, "g"))
    decisions = Decisions(context)
    assert not decisions.allows(READ, GROUP, "g")
    assert not decisions.allows(READ, GROUP, "g")
    assert decisions.allows(READ, TOPIC, "t")
    assert not decisions.allows(READ, GROUP, "g", audit=False)
    assert context.authorizer.questions == [(READ, GROUP, "g"), (READ, TOPIC, "t")]
    assert decisions.denials == [denial(READ, GROUP, "g")]


def test_silent_refusals_are_not_recorded() -> None:
    decisions = Decisions(denying((DESCRIBE, CLUSTER, CLUSTER_NAME)))
    assert not decisions.allows_on_cluster(DESCRIBE, audit=False)
    assert decisions.denials == []


# --------------------------------------------------------------------------------------
# FindCoordinator (10)

FIND_COORDINATOR = 10


@pytest.mark.parametrize("version", [0, 3, 6])
def test_find_coordinator_allowed_is_forwarded_untouched(version: int) -> None:
    frame = request_frame(10, version, key="g1", key_type=0, coordinator_keys=("g1", "g2"))
    assert_untouched(handle(denying(), 10, version, frame), frame)


def test_find_coordinator_v0_refused_group() -> None:
    frame = request_frame(10, 0, key="g1")
    verdict = handle(denying((DESCRIBE, GROUP, "g1")), 10, 0, frame)
    answer = local_answer(verdict, 10, 0)
    assert (answer.error_code, answer.node_id, answer.host, answer.port) == (
        GROUP_DENIED,
        -1,
        "",
        -1,
    )
    assert verdict.denials == [denial(DESCRIBE, GROUP, "g1")]


@pytest.mark.parametrize(
    ("key_type", "resource_type", "error", "message"),
    [
        (0, GROUP, GROUP_DENIED, "Group authorization failed."),
        (
            1,
            TXN_ID,
            ErrorCode.transactional_id_authorization_failed,
            "Transactional Id authorization failed.",
        ),
    ],
)
def test_find_coordinator_v3_refusal_carries_kafkas_message(
    key_type: int, resource_type: ResourceType, error: ErrorCode, message: str
) -> None:
    frame = request_frame(10, 3, key="k", key_type=key_type)
    answer = local_answer(handle(denying((DESCRIBE, resource_type, "k")), 10, 3, frame), 10, 3)
    assert (answer.error_code, answer.error_message) == (error, message)
    assert (answer.node_id, answer.host, answer.port) == (-1, "", -1)


@pytest.mark.parametrize("version", [4, 6])
def test_find_coordinator_batched_partly_refused(version: int) -> None:
    frame = request_frame(10, version, key_type=1, coordinator_keys=("t1", "secret", "t2"))
    verdict = handle(denying((DESCRIBE, TXN_ID, "secret")), 10, version, frame)
    assert forwarded_body(verdict).coordinator_keys == ("t1", "t2")
    coordinator = entry_class(10, version, "response", "coordinators")

    def found(key: str, node: int) -> Any:
        return coordinator(
            key=key, node_id=node, host=f"b{node}", port=9092, error_code=OK, error_message=None
        )

    upstream = response_frame(10, version, coordinators=(found("t2", 2), found("t1", 1)))
    answer = transformed(verdict, 10, version, upstream)
    assert [c.key for c in answer.coordinators] == ["t1", "secret", "t2"]
    refused = answer.coordinators[1]
    assert (refused.node_id, refused.host, refused.port) == (-1, "", -1)
    assert refused.error_code == ErrorCode.transactional_id_authorization_failed
    assert refused.error_message is None  # Kafka sets no message on a per-key refusal
    assert answer.coordinators[0].node_id == 1 and answer.coordinators[2].node_id == 2


def test_find_coordinator_batched_all_refused_is_answered_locally() -> None:
    frame = request_frame(10, 6, key_type=0, coordinator_keys=("a", "b"))
    verdict = handle(denying((DESCRIBE, GROUP, "a"), (DESCRIBE, GROUP, "b")), 10, 6, frame)
    answer = local_answer(verdict, 10, 6)
    assert [(c.key, c.error_code) for c in answer.coordinators] == [
        ("a", GROUP_DENIED),
        ("b", GROUP_DENIED),
    ]
    assert len(verdict.denials) == 2


def test_find_coordinator_asks_each_key_once() -> None:
    context = denying()
    frame = request_frame(10, 5, key_type=0, coordinator_keys=("g", "g", "h"))
    handle(context, 10, 5, frame)
    assert context.authorizer.questions == [(DESCRIBE, GROUP, "g"), (DESCRIBE, GROUP, "h")]


def test_find_share_coordinator_needs_cluster_action() -> None:
    frame = request_frame(10, 6, key_type=2, coordinator_keys=("g:topic:0", "g:topic:1"))
    assert_untouched(handle(denying(), 10, 6, frame), frame)
    verdict = handle(denying((Operation.CLUSTER_ACTION, CLUSTER, CLUSTER_NAME)), 10, 6, frame)
    answer = local_answer(verdict, 10, 6)
    assert {c.error_code for c in answer.coordinators} == {ErrorCode.cluster_authorization_failed}
    assert {c.error_message for c in answer.coordinators} == {"Cluster authorization failed."}


@pytest.mark.parametrize("version", [3, 5])
def test_find_share_coordinator_before_v6_is_invalid(version: int) -> None:
    frame = request_frame(10, version, key="g:t:0", key_type=2, coordinator_keys=("g:t:0",))
    context = denying()
    answer = local_answer(handle(context, 10, version, frame), 10, version)
    errors = [c.error_code for c in answer.coordinators] if version >= 4 else [answer.error_code]
    assert errors == [ErrorCode.invalid_request]
    assert context.authorizer.questions == []


def test_find_coordinator_unknown_key_type_is_invalid() -> None:
    frame = request_frame(10, 6, key_type=9, coordinator_keys=("x",))
    answer = local_answer(handle(denying(), 10, 6, frame), 10, 6)
    assert [c.error_code for c in answer.coordinators] == [ErrorCode.invalid_request]


# --------------------------------------------------------------------------------------
# OffsetCommit (8)


def commit_topics(version: int, *names: str, ids: dict[str, uuid.UUID] | None = None) -> Any:
    topic = entry_class(8, version, "request", "topics")
    partition = entry_class(8, version, "request", "topics", "partitions")
    return tuple(
        build(
            topic,
            name=name,
            topic_id=(ids or {}).get(name),
            partitions=tuple(
                build(partition, partition_index=i, committed_offset=10 * i, committed_metadata="")
                for i in (0, 1)
            ),
        )
        for name in names
    )


def commit_frame(version: int, *names: str, ids: dict[str, uuid.UUID] | None = None) -> bytes:
    topics = commit_topics(version, *names, ids=ids)
    return request_frame(8, version, group_id="grp", member_id="m", topics=topics)


def commit_answer(version: int, *names: str, ids: dict[str, uuid.UUID] | None = None) -> bytes:
    topic = entry_class(8, version, "response", "topics")
    partition = entry_class(8, version, "response", "topics", "partitions")
    return response_frame(
        8,
        version,
        topics=tuple(
            build(
                topic,
                name=name,
                topic_id=(ids or {}).get(name),
                partitions=tuple(partition(partition_index=i, error_code=OK) for i in (0, 1)),
            )
            for name in names
        ),
    )


def errors_by_topic(topics: Iterable[Any], key: Callable[[Any], Any] = lambda t: t.name) -> Any:
    return [(key(t), [(p.partition_index, p.error_code) for p in t.partitions]) for t in topics]


@pytest.mark.parametrize("version", [2, 6, 9])
def test_offset_commit_allowed_is_untouched(version: int) -> None:
    frame = commit_frame(version, "a", "b")
    assert_untouched(handle(denying(), 8, version, frame), frame)


@pytest.mark.parametrize("version", [2, 9])
def test_offset_commit_refused_group_fails_every_partition(version: int) -> None:
    frame = commit_frame(version, "a", "b")
    context = denying((READ, GROUP, "grp"))
    verdict = handle(context, 8, version, frame)
    answer = local_answer(verdict, 8, version)
    assert errors_by_topic(answer.topics) == [
        ("a", [(0, GROUP_DENIED), (1, GROUP_DENIED)]),
        ("b", [(0, GROUP_DENIED), (1, GROUP_DENIED)]),
    ]
    assert verdict.denials == [denial(READ, GROUP, "grp")]
    assert context.authorizer.questions == [(READ, GROUP, "grp")]  # topics not asked


@pytest.mark.parametrize("version", [2, 6, 9])
def test_offset_commit_partly_refused_topics_merge_in_client_order(version: int) -> None:
    frame = commit_frame(version, "a", "secret", "b")
    verdict = handle(denying((READ, TOPIC, "secret")), 8, version, frame)
    assert [t.name for t in forwarded_body(verdict).topics] == ["a", "b"]
    assert verdict.denials == [denial(READ, TOPIC, "secret")]
    answer = transformed(verdict, 8, version, commit_answer(version, "b", "a"))
    assert errors_by_topic(answer.topics) == [
        ("a", [(0, OK), (1, OK)]),
        ("secret", [(0, TOPIC_DENIED), (1, TOPIC_DENIED)]),
        ("b", [(0, OK), (1, OK)]),
    ]


def test_offset_commit_all_topics_refused_is_answered_without_the_coordinator() -> None:
    frame = commit_frame(8, "x", "y")
    verdict = handle(denying((READ, TOPIC, "x"), (READ, TOPIC, "y")), 8, 8, frame)
    answer = local_answer(verdict, 8, 8)
    assert [t.name for t in answer.topics] == ["x", "y"]
    assert {p.error_code for t in answer.topics for p in t.partitions} == {TOPIC_DENIED}


def test_offset_commit_v10_names_topics_by_id() -> None:
    ids = {"a": uuid.uuid4(), "secret": uuid.uuid4(), "unknown": uuid.uuid4()}
    context = denying((READ, TOPIC, "secret"), a=ids["a"], secret=ids["secret"])
    frame = commit_frame(10, "a", "secret", "unknown", ids=ids)
    verdict = handle(context, 8, 10, frame)
    assert [t.topic_id for t in forwarded_body(verdict).topics] == [ids["a"]]
    answer = transformed(verdict, 8, 10, commit_answer(10, "a", ids=ids))
    by_id = {value: key for key, value in ids.items()}
    assert errors_by_topic(answer.topics, key=lambda t: by_id[t.topic_id]) == [
        ("a", [(0, OK), (1, OK)]),
        ("secret", [(0, TOPIC_DENIED), (1, TOPIC_DENIED)]),
        ("unknown", [(0, ErrorCode.unknown_topic_id), (1, ErrorCode.unknown_topic_id)]),
    ]
    # The unknown id was not a refusal: the gateway could not name it.
    assert verdict.denials == [denial(READ, TOPIC, "secret")]


# --------------------------------------------------------------------------------------
# OffsetFetch (9)


def fetch_topics(
    version: int, names: Iterable[str], ids: dict[str, uuid.UUID] | None = None
) -> Any:
    path = ("groups", "topics") if version >= 8 else ("topics",)
    topic = entry_class(9, version, "request", *path)
    return tuple(
        build(topic, name=name, topic_id=(ids or {}).get(name), partition_indexes=(0, 1))
        for name in names
    )


def fetched_topics(
    version: int, names: Iterable[str], ids: dict[str, uuid.UUID] | None = None
) -> Any:
    path = ("groups", "topics") if version >= 8 else ("topics",)
    topic = entry_class(9, version, "response", *path)
    partition = entry_class(9, version, "response", *path, "partitions")
    return tuple(
        build(
            topic,
            name=name,
            topic_id=(ids or {}).get(name),
            partitions=tuple(
                build(
                    partition,
                    partition_index=i,
                    committed_offset=100 + i,
                    committed_leader_epoch=3,
                    metadata="m",
                    error_code=OK,
                )
                for i in (0, 1)
            ),
        )
        for name in names
    )


def fetch_errors(topics: Iterable[Any], key: Callable[[Any], Any] = lambda t: t.name) -> Any:
    return [
        (
            key(t),
            [
                (p.partition_index, p.committed_offset, p.metadata, p.error_code)
                for p in t.partitions
            ],
        )
        for t in topics
    ]


@pytest.mark.parametrize("version", [1, 5, 7])
def test_offset_fetch_allowed_topics_are_untouched(version: int) -> None:
    frame = request_frame(9, version, group_id="grp", topics=fetch_topics(version, ["a"]))
    assert_untouched(handle(denying(), 9, version, frame), frame)


def test_offset_fetch_v1_refused_group_puts_the_error_on_each_partition() -> None:
    frame = request_frame(9, 1, group_id="grp", topics=fetch_topics(1, ["a", "b"]))
    answer = local_answer(handle(denying((DESCRIBE, GROUP, "grp")), 9, 1, frame), 9, 1)
    assert fetch_errors(answer.topics) == [
        ("a", [(0, -1, "", GROUP_DENIED), (1, -1, "", GROUP_DENIED)]),
        ("b", [(0, -1, "", GROUP_DENIED), (1, -1, "", GROUP_DENIED)]),
    ]


@pytest.mark.parametrize("version", [2, 5, 7])
def test_offset_fetch_refused_group_is_a_top_level_error(version: int) -> None:
    frame = request_frame(9, version, group_id="grp", topics=None)
    answer = local_answer(handle(denying((DESCRIBE, GROUP, "grp")), 9, version, frame), 9, version)
    assert (answer.error_code, answer.topics) == (GROUP_DENIED, ())


@pytest.mark.parametrize("version", [3, 7])
def test_offset_fetch_partly_refused_topics(version: int) -> None:
    frame = request_frame(9, version, group_id="grp", topics=fetch_topics(version, ["a", "s", "b"]))
    verdict = handle(denying((DESCRIBE, TOPIC, "s")), 9, version, frame)
    assert [t.name for t in forwarded_body(verdict).topics] == ["a", "b"]
    upstream = response_frame(9, version, topics=fetched_topics(version, ["b", "a"]), error_code=OK)
    answer = transformed(verdict, 9, version, upstream)
    assert fetch_errors(answer.topics) == [
        ("a", [(0, 100, "m", OK), (1, 101, "m", OK)]),
        ("s", [(0, -1, "", TOPIC_DENIED), (1, -1, "", TOPIC_DENIED)]),
        ("b", [(0, 100, "m", OK), (1, 101, "m", OK)]),
    ]
    if version >= 5:
        assert [p.committed_leader_epoch for p in answer.topics[1].partitions] == [-1, -1]


def test_offset_fetch_all_topics_refused_still_asks_the_coordinator() -> None:
    frame = request_frame(9, 6, group_id="grp", topics=fetch_topics(6, ["s"]))
    verdict = handle(denying((DESCRIBE, TOPIC, "s")), 9, 6, frame)
    assert forwarded_body(verdict).topics == ()  # empty, not null (null = all topics)
    # A group error from the coordinator replaces the topic answers, as in Kafka.
    failed = response_frame(9, 6, topics=(), error_code=ErrorCode.not_coordinator)
    assert transformed(verdict, 9, 6, failed).error_code == ErrorCode.not_coordinator
    assert transformed(verdict, 9, 6, failed).topics == ()
    answer = transformed(verdict, 9, 6, response_frame(9, 6, topics=(), error_code=OK))
    assert [t.name for t in answer.topics] == ["s"]


@pytest.mark.parametrize("version", [2, 7])
def test_offset_fetch_all_topics_hides_what_may_not_be_described(version: int) -> None:
    frame = request_frame(9, version, group_id="grp", topics=None)
    verdict = handle(denying((DESCRIBE, TOPIC, "hidden")), 9, version, frame)
    assert verdict.forward is frame  # nothing to reduce, only the answer to filter
    upstream = response_frame(
        9, version, topics=fetched_topics(version, ["a", "hidden", "b"]), error_code=OK
    )
    answer = transformed(verdict, 9, version, upstream)
    assert [t.name for t in answer.topics] == ["a", "b"]


@pytest.mark.parametrize("version", [8, 9])
def test_offset_fetch_batched_groups(version: int) -> None:
    group = entry_class(9, version, "request", "groups")
    frame = request_frame(
        9,
        version,
        groups=(
            build(group, group_id="all", topics=None),
            build(group, group_id="refused", topics=fetch_topics(version, ["a"])),
            build(group, group_id="some", topics=fetch_topics(version, ["a", "s"])),
        ),
    )
    context = denying((DESCRIBE, GROUP, "refused"), (DESCRIBE, TOPIC, "s"), (DESCRIBE, TOPIC, "h"))
    verdict = handle(context, 9, version, frame)
    sent = forwarded_body(verdict).groups
    assert [(g.group_id, g.topics and [t.name for t in g.topics]) for g in sent] == [
        ("all", None),
        ("some", ["a"]),
    ]
    answer_group = entry_class(9, version, "response", "groups")
    upstream = response_frame(
        9,
        version,
        groups=(
            answer_group(group_id="some", topics=fetched_topics(version, ["a"]), error_code=OK),
            answer_group(group_id="all", topics=fetched_topics(version, ["h", "a"]), error_code=OK),
        ),
    )
    answer = transformed(verdict, 9, version, upstream)
    assert [(g.group_id, g.error_code) for g in answer.groups] == [
        ("all", OK),
        ("refused", GROUP_DENIED),
        ("some", OK),
    ]
    assert [t.name for t in answer.groups[0].topics] == ["a"]  # "h" hidden
    assert answer.groups[1].topics == ()
    assert fetch_errors(answer.groups[2].topics) == [
        ("a", [(0, 100, "m", OK), (1, 101, "m", OK)]),
        ("s", [(0, -1, "", TOPIC_DENIED), (1, -1, "", TOPIC_DENIED)]),
    ]


def test_offset_fetch_batched_all_groups_refused() -> None:
    group = entry_class(9, 9, "request", "groups")
    frame = request_frame(9, 9, groups=(build(group, group_id="x", topics=None),))
    answer = local_answer(handle(denying((DESCRIBE, GROUP, "x")), 9, 9, frame), 9, 9)
    assert [(g.group_id, g.error_code, g.topics) for g in answer.groups] == [
        ("x", GROUP_DENIED, ())
    ]


def test_offset_fetch_batched_allowed_is_untouched() -> None:
    group = entry_class(9, 8, "request", "groups")
    frame = request_frame(9, 8, groups=(build(group, group_id="x", topics=fetch_topics(8, ["a"])),))
    assert_untouched(handle(denying(), 9, 8, frame), frame)


def test_offset_fetch_v10_by_topic_id() -> None:
    ids = {"a": uuid.uuid4(), "s": uuid.uuid4(), "unknown": uuid.uuid4(), "h": uuid.uuid4()}
    context = denying(
        (DESCRIBE, TOPIC, "s"), (DESCRIBE, TOPIC, "h"), a=ids["a"], s=ids["s"], h=ids["h"]
    )
    group = entry_class(9, 10, "request", "groups")
    frame = request_frame(
        9,
        10,
        groups=(
            build(group, group_id="g", topics=fetch_topics(10, ["a", "s", "unknown"], ids)),
            build(group, group_id="everything", topics=None),
        ),
    )
    verdict = handle(context, 9, 10, frame)
    assert [t.topic_id for t in forwarded_body(verdict).groups[0].topics] == [ids["a"]]
    answer_group = entry_class(9, 10, "response", "groups")
    stranger = uuid.uuid4()  # an id the gateway cannot name: not shown
    upstream = response_frame(
        9,
        10,
        groups=(
            answer_group(group_id="g", topics=fetched_topics(10, ["a"], ids), error_code=OK),
            answer_group(
                group_id="everything",
                topics=fetched_topics(10, ["a", "h", "x"], {**ids, "x": stranger}),
                error_code=OK,
            ),
        ),
    )
    answer = transformed(verdict, 9, 10, upstream)
    by_id = {value: key for key, value in ids.items()}
    assert [(by_id[t.topic_id], t.partitions[0].error_code) for t in answer.groups[0].topics] == [
        ("a", OK),
        ("s", TOPIC_DENIED),
        ("unknown", ErrorCode.unknown_topic_id),
    ]
    assert [by_id[t.topic_id] for t in answer.groups[1].topics] == ["a"]


# --------------------------------------------------------------------------------------
# JoinGroup (11), Heartbeat (12), LeaveGroup (13), SyncGroup (14)


@pytest.mark.parametrize("version", [0, 5, 9])
def test_join_group(version: int) -> None:
    protocol = entry_class(11, version, "request", "protocols")
    frame = request_frame(
        11,
        version,
        group_id="grp",
        session_timeout=timedelta(seconds=10),
        member_id="",
        protocol_type="consumer",
        protocols=(protocol(name="range", metadata=b"\x00"),),
    )
    assert_untouched(handle(denying(), 11, version, frame), frame)
    verdict = handle(denying((READ, GROUP, "grp")), 11, version, frame)
    answer = local_answer(verdict, 11, version)
    assert answer.error_code == GROUP_DENIED
    assert (answer.generation_id, answer.protocol_name, answer.leader, answer.member_id) == (
        -1,
        "",
        "",
        "",
    )
    assert answer.members == ()
    assert verdict.denials == [denial(READ, GROUP, "grp")]


@pytest.mark.parametrize("version", [0, 2, 4])
def test_heartbeat(version: int) -> None:
    frame = request_frame(12, version, group_id="grp", generation_id=3, member_id="m")
    assert_untouched(handle(denying(), 12, version, frame), frame)
    answer = local_answer(handle(denying((READ, GROUP, "grp")), 12, version, frame), 12, version)
    assert answer.error_code == GROUP_DENIED


@pytest.mark.parametrize("version", [0, 3, 5])
def test_leave_group_is_a_top_level_error_even_with_members(version: int) -> None:
    member = entry_class(13, version, "request", "members") if version >= 3 else None
    members = (member(member_id="m1"), member(member_id="m2")) if member else ()
    frame = request_frame(13, version, group_id="grp", member_id="m1", members=members)
    assert_untouched(handle(denying(), 13, version, frame), frame)
    answer = local_answer(handle(denying((READ, GROUP, "grp")), 13, version, frame), 13, version)
    assert answer.error_code == GROUP_DENIED
    if version >= 3:
        assert answer.members == ()


@pytest.mark.parametrize("version", [0, 3, 5])
def test_sync_group(version: int) -> None:
    frame = request_frame(
        14,
        version,
        group_id="grp",
        generation_id=1,
        member_id="m",
        protocol_type="consumer",
        protocol_name="range",
        assignments=(),
    )
    assert_untouched(handle(denying(), 14, version, frame), frame)
    answer = local_answer(handle(denying((READ, GROUP, "grp")), 14, version, frame), 14, version)
    assert (answer.error_code, answer.assignment) == (GROUP_DENIED, b"")


def test_sync_group_v5_without_protocol_is_inconsistent_before_authorization() -> None:
    frame = request_frame(14, 5, group_id="grp", generation_id=1, member_id="m", assignments=())
    context = denying((READ, GROUP, "grp"))
    verdict = handle(context, 14, 5, frame)
    assert local_answer(verdict, 14, 5).error_code == ErrorCode.inconsistent_group_protocol
    assert context.authorizer.questions == [] and verdict.denials == []


# --------------------------------------------------------------------------------------
# ConsumerGroupHeartbeat (68), ShareGroupHeartbeat (76)


@pytest.mark.parametrize(("api_key", "version"), [(68, 0), (68, 1), (76, 1)])
def test_group_heartbeat_needs_read_on_the_group(api_key: int, version: int) -> None:
    frame = request_frame(
        api_key, version, group_id="grp", member_id="m", member_epoch=0, topic_partitions=None
    )
    assert_untouched(handle(denying(), api_key, version, frame), frame)
    answer = local_answer(
        handle(denying((READ, GROUP, "grp")), api_key, version, frame), api_key, version
    )
    assert (answer.error_code, answer.error_message) == (
        GROUP_DENIED,
        "Group authorization failed.",
    )
    assert (answer.member_id, answer.assignment) == (None, None)


@pytest.mark.parametrize(("api_key", "version"), [(68, 0), (68, 1), (76, 1)])
def test_group_heartbeat_refuses_a_subscription_to_a_hidden_topic(
    api_key: int, version: int
) -> None:
    frame = request_frame(
        api_key,
        version,
        group_id="grp",
        member_id="m",
        member_epoch=0,
        subscribed_topic_names=("a", "s1", "a", "s2"),
        topic_partitions=None,
    )
    context = denying((DESCRIBE, TOPIC, "s1"), (DESCRIBE, TOPIC, "s2"))
    verdict = handle(context, api_key, version, frame)
    answer = local_answer(verdict, api_key, version)
    assert (answer.error_code, answer.error_message) == (TOPIC_DENIED, None)
    assert verdict.denials == [denial(DESCRIBE, TOPIC, "s1"), denial(DESCRIBE, TOPIC, "s2")]
    assert context.authorizer.questions.count((DESCRIBE, TOPIC, "a")) == 1


def test_consumer_group_heartbeat_regex_subscription_is_forwarded() -> None:
    frame = request_frame(
        68, 1, group_id="grp", member_id="m", member_epoch=0,
        subscribed_topic_regex="orders-.*", topic_partitions=None,
    )  # fmt: skip
    assert_untouched(handle(denying((DESCRIBE, TOPIC, "orders-1")), 68, 1, frame), frame)


# --------------------------------------------------------------------------------------
# DescribeGroups (15)


def described(
    version: int, group_id: str, error: ErrorCode = OK, operations: int = MIN_INT32
) -> Any:
    return build(
        entry_class(15, version, "response", "groups"),
        error_code=error,
        group_id=group_id,
        group_state="Stable",
        protocol_type="consumer",
        protocol_data="range",
        members=(),
        authorized_operations=operations,
    )


@pytest.mark.parametrize("version", [0, 3, 6])
def test_describe_groups_partly_refused(version: int) -> None:
    frame = request_frame(
        15, version, groups=("a", "secret", "b"), include_authorized_operations=False
    )
    verdict = handle(denying((DESCRIBE, GROUP, "secret")), 15, version, frame)
    assert forwarded_body(verdict).groups == ("a", "b")
    upstream = response_frame(
        15, version, groups=(described(version, "b"), described(version, "a"))
    )
    answer = transformed(verdict, 15, version, upstream)
    assert [(g.group_id, g.error_code, g.group_state) for g in answer.groups] == [
        ("a", OK, "Stable"),
        ("secret", GROUP_DENIED, ""),
        ("b", OK, "Stable"),
    ]
    refused = answer.groups[1]
    assert (refused.protocol_type, refused.protocol_data, refused.members) == ("", "", ())
    if version >= 3:
        assert refused.authorized_operations == MIN_INT32


@pytest.mark.parametrize("version", [0, 6])
def test_describe_groups_allowed_and_all_refused(version: int) -> None:
    frame = request_frame(15, version, groups=("a",), include_authorized_operations=False)
    assert_untouched(handle(denying(), 15, version, frame), frame)
    answer = local_answer(handle(denying((DESCRIBE, GROUP, "a")), 15, version, frame), 15, version)
    assert [(g.group_id, g.error_code) for g in answer.groups] == [("a", GROUP_DENIED)]


def test_describe_groups_recomputes_authorized_operations_for_the_client() -> None:
    frame = request_frame(15, 5, groups=("a",), include_authorized_operations=True)
    context = denying((DELETE, GROUP, "a"), (Operation.ALTER_CONFIGS, GROUP, "a"))
    verdict = handle(context, 15, 5, frame)
    assert verdict.forward is frame  # nothing refused: the request is unchanged
    # The broker answered for the gateway's own principal, which may do everything.
    upstream = response_frame(15, 5, groups=(described(5, "a", operations=0xFFF),))
    answer = transformed(verdict, 15, 5, upstream)
    read, describe, describe_configs = 1 << 3, 1 << 8, 1 << 10
    assert answer.groups[0].authorized_operations == read | describe | describe_configs
    assert verdict.denials == []  # the bit field refuses nothing


# --------------------------------------------------------------------------------------
# ListGroups (16)


@pytest.mark.parametrize("version", [0, 3, 5])
def test_list_groups(version: int) -> None:
    frame = request_frame(16, version)
    assert_untouched(handle(denying(), 16, version, frame), frame)
    context = denying((DESCRIBE, CLUSTER, CLUSTER_NAME), (DESCRIBE, GROUP, "hidden"))
    verdict = handle(context, 16, version, frame)
    assert verdict.forward is frame and verdict.denials == []
    listed = entry_class(16, version, "response", "groups")
    entries = tuple(
        build(
            listed, group_id=g, protocol_type="consumer", group_state="Stable", group_type="classic"
        )
        for g in ("a", "hidden", "b")
    )
    answer = transformed(
        verdict, 16, version, response_frame(16, version, error_code=OK, groups=entries)
    )
    assert [g.group_id for g in answer.groups] == ["a", "b"]
    assert verdict.denials == []


# --------------------------------------------------------------------------------------
# DeleteGroups (42)


@pytest.mark.parametrize("version", [0, 2])
def test_delete_groups(version: int) -> None:
    frame = request_frame(42, version, groups_names=("a", "s", "a", "b"))
    assert_untouched(handle(denying(), 42, version, frame), frame)
    verdict = handle(denying((DELETE, GROUP, "s")), 42, version, frame)
    assert forwarded_body(verdict).groups_names == ("a", "b")
    result = entry_class(42, version, "response", "results")
    upstream = response_frame(
        42,
        version,
        results=(
            result(group_id="b", error_code=OK),
            result(group_id="a", error_code=ErrorCode.non_empty_group),
        ),
    )
    answer = transformed(verdict, 42, version, upstream)
    # Each distinct group once, as Kafka, in the client's order.
    assert [(r.group_id, r.error_code) for r in answer.results] == [
        ("a", ErrorCode.non_empty_group),
        ("s", GROUP_DENIED),
        ("b", OK),
    ]
    assert verdict.denials == [denial(DELETE, GROUP, "s")]


def test_delete_groups_all_refused() -> None:
    frame = request_frame(42, 1, groups_names=("s",))
    answer = local_answer(handle(denying((DELETE, GROUP, "s")), 42, 1, frame), 42, 1)
    assert [(r.group_id, r.error_code) for r in answer.results] == [("s", GROUP_DENIED)]


# --------------------------------------------------------------------------------------
# OffsetDelete (47)


def offset_delete_frame(*names: str) -> bytes:
    topic = entry_class(47, 0, "request", "topics")
    partition = entry_class(47, 0, "request", "topics", "partitions")
    topics = tuple(topic(name=n, partitions=(partition(partition_index=0),)) for n in names)
    return request_frame(47, 0, group_id="grp", topics=topics)


def test_offset_delete_needs_delete_on_the_group() -> None:
    frame = offset_delete_frame("a")
    assert_untouched(handle(denying(), 47, 0, frame), frame)
    verdict = handle(denying((DELETE, GROUP, "grp")), 47, 0, frame)
    answer = local_answer(verdict, 47, 0)
    assert (answer.error_code, answer.topics) == (GROUP_DENIED, ())
    assert verdict.denials == [denial(DELETE, GROUP, "grp")]


def test_offset_delete_partly_refused_topics() -> None:
    frame = offset_delete_frame("a", "s")
    verdict = handle(denying((READ, TOPIC, "s")), 47, 0, frame)
    assert [t.name for t in forwarded_body(verdict).topics] == ["a"]
    topic = entry_class(47, 0, "response", "topics")
    partition = entry_class(47, 0, "response", "topics", "partitions")
    ok_topic = topic(name="a", partitions=(partition(partition_index=0, error_code=OK),))
    answer = transformed(verdict, 47, 0, response_frame(47, 0, error_code=OK, topics=(ok_topic,)))
    assert errors_by_topic(answer.topics) == [("a", [(0, OK)]), ("s", [(0, TOPIC_DENIED)])]
    # A group-level failure upstream replaces the per-topic answers, as in Kafka.
    failed = response_frame(47, 0, error_code=ErrorCode.group_id_not_found, topics=())
    answer = transformed(verdict, 47, 0, failed)
    assert (answer.error_code, answer.topics) == (ErrorCode.group_id_not_found, ())


def test_offset_delete_every_topic_refused_still_asks_the_coordinator() -> None:
    verdict = handle(denying((READ, TOPIC, "s")), 47, 0, offset_delete_frame("s"))
    assert forwarded_body(verdict).topics == ()


# --------------------------------------------------------------------------------------
# ConsumerGroupDescribe (69), ShareGroupDescribe (77), StreamsGroupDescribe (89)


def consumer_group(version: int, group_id: str, *topics: str) -> Any:
    group = entry_class(69, version, "response", "groups")
    member = entry_class(69, version, "response", "groups", "members")
    assignment = entry_class(69, version, "response", "groups", "members", "assignment")
    partitions = entry_class(
        69, version, "response", "groups", "members", "assignment", "topic_partitions"
    )
    owned = assignment(
        topic_partitions=tuple(
            partitions(topic_id=uuid.uuid4(), topic_name=t, partitions=(0,)) for t in topics
        )
    )
    return build(
        group,
        error_code=OK,
        group_id=group_id,
        group_state="Stable",
        group_epoch=3,
        assignment_epoch=3,
        assignor_name="uniform",
        members=(
            build(
                member,
                member_id="m",
                member_epoch=3,
                client_id="c",
                client_host="/h",
                assignment=owned,
                target_assignment=assignment(topic_partitions=()),
            ),
        ),
        authorized_operations=0xFFF,
    )


@pytest.mark.parametrize("version", [0, 1])
def test_consumer_group_describe(version: int) -> None:
    frame = request_frame(
        69, version, group_ids=("a", "secret", "b"), include_authorized_operations=True
    )
    context = denying(
        (DESCRIBE, GROUP, "secret"), (DESCRIBE, TOPIC, "hidden"), (DELETE, GROUP, "a")
    )
    verdict = handle(context, 69, version, frame)
    assert forwarded_body(verdict).group_ids == ("a", "b")
    upstream = response_frame(
        69,
        version,
        groups=(consumer_group(version, "b", "t", "hidden"), consumer_group(version, "a", "t")),
    )
    answer = transformed(verdict, 69, version, upstream)
    assert [(g.group_id, g.error_code) for g in answer.groups] == [
        ("a", OK),
        ("secret", GROUP_DENIED),
        ("b", TOPIC_DENIED),
    ]
    a, secret, b = answer.groups
    assert a.authorized_operations == (1 << 3) | (1 << 8) | (1 << 10) | (1 << 11)
    assert (secret.members, secret.error_message, secret.authorized_operations) == (
        (),
        None,
        MIN_INT32,
    )
    assert b.error_message == (
        "The group has described topic(s) that the client is not authorized to describe."
    )
    assert (b.members, b.group_state, b.authorized_operations) == ((), "", MIN_INT32)
    assert denial(DESCRIBE, TOPIC, "hidden") in verdict.denials


def test_consumer_group_describe_always_checks_the_answer() -> None:
    frame = request_frame(69, 1, group_ids=("a",), include_authorized_operations=False)
    verdict = handle(denying((DESCRIBE, TOPIC, "hidden")), 69, 1, frame)
    assert verdict.forward is frame and verdict.transform is not None
    upstream = response_frame(69, 1, groups=(consumer_group(1, "a", "hidden"),))
    assert transformed(verdict, 69, 1, upstream).groups[0].error_code == TOPIC_DENIED
    all_refused = handle(denying((DESCRIBE, GROUP, "a")), 69, 1, frame)
    assert local_answer(all_refused, 69, 1).groups[0].error_code == GROUP_DENIED


def test_share_group_describe_hides_groups_assigned_hidden_topics() -> None:
    frame = request_frame(77, 1, group_ids=("a",), include_authorized_operations=False)
    verdict = handle(denying((DESCRIBE, TOPIC, "hidden")), 77, 1, frame)
    group = entry_class(77, 1, "response", "groups")
    member = entry_class(77, 1, "response", "groups", "members")
    assignment = entry_class(77, 1, "response", "groups", "members", "assignment")
    partitions = entry_class(
        77, 1, "response", "groups", "members", "assignment", "topic_partitions"
    )
    shared = build(
        group,
        error_code=OK,
        group_id="a",
        group_state="Stable",
        group_epoch=1,
        assignment_epoch=1,
        assignor_name="simple",
        members=(
            build(
                member,
                member_id="m",
                member_epoch=1,
                client_id="c",
                client_host="/h",
                assignment=assignment(
                    topic_partitions=(
                        partitions(topic_id=uuid.uuid4(), topic_name="hidden", partitions=(0,)),
                    )
                ),
            ),
        ),
    )
    answer = transformed(verdict, 77, 1, response_frame(77, 1, groups=(shared,)))
    assert (answer.groups[0].error_code, answer.groups[0].members) == (TOPIC_DENIED, ())


def test_streams_group_describe_hides_groups_using_hidden_topics() -> None:
    frame = request_frame(89, 0, group_ids=("app", "other"), include_authorized_operations=False)
    verdict = handle(
        denying((DESCRIBE, GROUP, "other"), (DESCRIBE, TOPIC, "changelog")), 89, 0, frame
    )
    assert forwarded_body(verdict).group_ids == ("app",)
    group = entry_class(89, 0, "response", "groups")
    topology = entry_class(89, 0, "response", "groups", "topology")
    subtopology = entry_class(89, 0, "response", "groups", "topology", "subtopologies")
    topic_info = entry_class(
        89, 0, "response", "groups", "topology", "subtopologies", "state_changelog_topics"
    )
    streams = build(
        group,
        error_code=OK,
        group_id="app",
        group_state="Stable",
        group_epoch=1,
        assignment_epoch=1,
        topology=topology(
            epoch=1,
            subtopologies=(
                subtopology(
                    subtopology_id="0",
                    source_topics=("in",),
                    state_changelog_topics=(
                        topic_info(
                            name="changelog", partitions=1, replication_factor=1, topic_configs=()
                        ),
                    ),
                    repartition_source_topics=(),
                ),
            ),
        ),
        members=(),
    )
    answer = transformed(verdict, 89, 0, response_frame(89, 0, groups=(streams,)))
    assert [(g.group_id, g.error_code) for g in answer.groups] == [
        ("app", TOPIC_DENIED),
        ("other", GROUP_DENIED),
    ]
    assert answer.groups[0].topology is None
    assert answer.groups[0].error_message == (
        "The described group uses topics that the client is not authorized to describe."
    )


def test_handlers_cover_the_group_apis() -> None:
    assert set(groups.HANDLERS) == {8, 9, 10, 11, 12, 13, 14, 15, 16, 42, 47, 68, 69, 76, 77, 89}


def test_an_unchanged_field_survives_the_rewrite() -> None:
    """Fields the gateway does not touch (throttle time) pass through a rewrite."""
    frame = request_frame(42, 2, groups_names=("a", "s"))
    verdict = handle(denying((DELETE, GROUP, "s")), 42, 2, frame)
    result = entry_class(42, 2, "response", "results")
    body = build(
        response_class(42, 2),
        throttle_time=timedelta(milliseconds=250),
        results=(result(group_id="a", error_code=OK),),
    )
    answer = transformed(verdict, 42, 2, encode_response(CORRELATION_ID, 42, 2, body))
    assert answer.throttle_time == timedelta(milliseconds=250)
    assert replace(answer, results=()) == replace(body, results=())


def test_the_registry_dispatches_to_these_handlers() -> None:
    frame = request_frame(12, 4, group_id="grp", generation_id=3, member_id="m")
    assert_untouched(authorize_request(denying(), 12, 4, frame), frame)
    verdict = authorize_request(denying((READ, GROUP, "grp")), 12, 4, frame)
    assert local_answer(verdict, 12, 4).error_code == GROUP_DENIED
