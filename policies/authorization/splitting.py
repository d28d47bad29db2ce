"""Machinery shared by the group and transaction checks: one decision per question,
splitting a request's entries by authorization, and merging the locally answered
entries back into the upstream response in the order the client asked.

Kafka answers a partly authorized request by handing the authorized part to the
coordinator and adding an error entry for each refused one. The gateway does the
same across the wire: it forwards a reduced request, remembers for every entry of
the client's request whether it went upstream or was answered here, and rebuilds
the response list from both in the client's order when the upstream answer comes
back. Entries are matched by a key (topic name or id, group id, coordinator key);
a key the client listed twice is matched to the upstream answers for it in turn.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import repeat
from typing import Any, Final, Generic, TypeVar
from uuid import UUID

from kio.schema.errors import ErrorCode

from codec.headers import peek_api, response_correlation_id
from policies.acl.engine import ConstantDecider
from policies.acl.model import CLUSTER_NAME, AclDecision, Operation, ResourceType
from policies.authorization.encoding import EntryTemplate
from policies.authorization.messages import (
    decode_response,
    encode_request,
    encode_response,
)
from policies.authorization.verdict import (
    AuthorizationContext,
    Denial,
    RequestVerdict,
    ResponseTransform,
)

__all__ = [
    "NO_THROTTLE",
    "Decisions",
    "Local",
    "Slot",
    "Split",
    "Upstream",
    "answer_locally",
    "build",
    "forward_as_is",
    "forward_rewritten",
    "forward_split",
    "has_top_level_error",
    "kafka_message",
    "merge_in_client_order",
    "nested_class",
    "refusal_template",
    "resolve_topic_name",
    "rewrite_response",
    "split_entries",
    "split_names",
    "split_topics",
    "topic_key",
]

T = TypeVar("T")
E = TypeVar("E")

#: ``throttle_time`` of a locally built response: the gateway never throttles through it.
NO_THROTTLE: Final = timedelta(0)

#: Kafka's default message (``Errors.message()``) of the codes answered with one.
_KAFKA_MESSAGES: Final[dict[ErrorCode, str]] = {
    ErrorCode.topic_authorization_failed: "Topic authorization failed.",
    ErrorCode.group_authorization_failed: "Group authorization failed.",
    ErrorCode.cluster_authorization_failed: "Cluster authorization failed.",
    ErrorCode.invalid_request: (
        "This most likely occurs because of a request being malformed by the client library"
        " or the message was sent to an incompatible broker. See the broker logs for more"
        " details."
    ),
    ErrorCode.transactional_id_authorization_failed: "Transactional Id authorization failed.",
}


def kafka_message(code: ErrorCode) -> str:
    """The message a Kafka broker puts next to ``code`` when it sends its default one."""
    return _KAFKA_MESSAGES[code]


# --------------------------------------------------------------------------------------
# decisions


class Decisions:
    """The authorizer's answers for one request: each distinct question asked once.

    A refused question is recorded as a :class:`Denial` (once) unless asked with
    ``audit=False``, which is for Kafka's silent filters (ListGroups without
    cluster Describe, authorized-operations bit fields) that refuse nothing.

    Verdicts share :attr:`denials`: refusals found while a response transform
    filters the answer (topics hidden from a described group, say) are appended to
    the verdict's list when the answer arrives, as Kafka logs them at that point.

    :meth:`refused_names` answers one question for all the names of a request at
    once: a request may name 100,000 resources, and its cost per name is a few
    dict operations (the authorizer's ``name_decider`` when it has one), no
    Python code per refusal recorded.
    """

    def __init__(self, context: AuthorizationContext) -> None:
        self._context = context
        #: ``(operation, resource type) -> {name: decision}``: names hash once, as str.
        self._answers: dict[tuple[Operation, ResourceType], dict[str, AclDecision]] = {}
        #: ``(operation, resource type) -> names whose refusal is in denials``.
        self._recorded: dict[tuple[Operation, ResourceType], set[str]] = {}
        self.denials: list[Denial] = []

    def allows(
        self, operation: Operation, resource_type: ResourceType, name: str, *, audit: bool = True
    ) -> bool:
        question = (operation, resource_type)
        answers = self._answers.get(question)
        if answers is None:
            answers = self._answers[question] = {}
        decision = answers.get(name)
        if decision is None:
            context = self._context
            decision = context.authorizer.authorize(
                context.principal, operation, resource_type, name
            )
            answers[name] = decision
        if not decision.allowed and audit:
            self._record(question, (name,), decision.rule)
        return decision.allowed

    def refused_names(
        self, operation: Operation, resource_type: ResourceType, names: Iterable[str]
    ) -> dict[str, None]:
        """The distinct ``names`` refused ``operation``, in first-seen order (a dict
        used as an ordered set); each refusal not yet recorded becomes a :class:`Denial`.

        Same answers as :meth:`allows` name by name, at a fraction of its cost.
        """
        question = (operation, resource_type)
        answers = self._answers.get(question)
        if answers is None:
            answers = self._answers[question] = {}
        distinct = dict.fromkeys(names)
        first = not answers
        new = list(distinct) if first else [name for name in distinct if name not in answers]
        decide = self._decider(operation, resource_type) if new else None
        if isinstance(decide, ConstantDecider):  # no rule applies: no question per name
            answers.update(dict.fromkeys(new, decide.decision))
            if first:
                refused = {} if decide.decision.allowed else distinct
                if refused:
                    self._record(question, new, decide.decision.rule)
                return refused
        elif decide is not None:
            answers.update(zip(new, map(decide, new), strict=True))
        refused = dict.fromkeys(name for name in distinct if not answers[name].allowed)
        by_rule: dict[str, list[str]] = {}
        for name in refused:  # usually one rule decides them all: group to record in bulk
            by_rule.setdefault(answers[name].rule, []).append(name)
        for rule, group in by_rule.items():
            self._record(question, group, rule)
        return refused

    def _decider(
        self, operation: Operation, resource_type: ResourceType
    ) -> Callable[[str], AclDecision]:
        context = self._context
        authorizer = context.authorizer
        make = getattr(authorizer, "name_decider", None)
        if make is not None:
            decider: Callable[[str], AclDecision] = make(
                context.principal, operation, resource_type
            )
            return decider
        return functools.partial(authorizer.authorize, context.principal, operation, resource_type)

    def _record(
        self, question: tuple[Operation, ResourceType], names: Sequence[str], rule: str
    ) -> None:
        recorded = self._recorded.get(question)
        if recorded is None:
            recorded = self._recorded[question] = set()
        fresh = [name for name in names if name not in recorded]
        if not fresh:
            return
        recorded.update(fresh)
        operation, resource_type = question
        rows = zip(repeat(operation), repeat(resource_type), fresh, repeat(rule))
        self.denials.extend(map(_new_denial, rows))

    def allows_on_cluster(self, operation: Operation, *, audit: bool = True) -> bool:
        return self.allows(operation, ResourceType.CLUSTER, CLUSTER_NAME, audit=audit)

    def allows_topic(self, operation: Operation, name: str, *, audit: bool = True) -> bool:
        return self.allows(operation, ResourceType.TOPIC, name, audit=audit)

    def refuse(
        self, operation: Operation, resource_type: ResourceType, name: str, rule: str
    ) -> None:
        """Record a refusal the gateway decided without asking (e.g. an internal topic)."""
        self._record((operation, resource_type), (name,), rule)

    def topic_name(self, topic_id: UUID | None) -> str | None:
        """The name of a topic id as the gateway knows it, or None."""
        return None if topic_id is None else self._context.topic_name(topic_id)


#: ``Denial`` from an ``(operation, resource_type, name, rule)`` row, in C.
_new_denial: Final[Callable[[tuple[Operation, ResourceType, str, str]], Denial]] = (
    functools.partial(tuple.__new__, Denial)
)


# --------------------------------------------------------------------------------------
# splitting and merging


# Not frozen: a frozen dataclass's __init__ costs a Python-level setattr per field, and a
# request may hold 100,000 slots.
@dataclass(slots=True)
class Local(Generic[T]):
    """A client entry answered by the gateway: its response entry."""

    entry: T


@dataclass(slots=True)
class Upstream:
    """A client entry forwarded upstream: the key its response entry carries."""

    key: Hashable


Slot = Local[T] | Upstream


def merge_in_client_order(
    slots: Sequence[Slot[T]], upstream: Iterable[T], key: Callable[[T], Hashable]
) -> list[T]:
    """The response entries in the client's order: local ones where they were answered,
    upstream ones where they were forwarded (the n-th slot of a key takes the n-th
    upstream entry with that key). Upstream entries no slot asked for are kept, at
    the end in upstream order; a forwarded slot the upstream did not answer is skipped.
    """
    arrival = list(upstream)
    pending: defaultdict[Hashable, deque[int]] = defaultdict(deque)
    for index, entry in enumerate(arrival):
        pending[key(entry)].append(index)
    merged: list[T] = []
    used: set[int] = set()
    for slot in slots:
        if isinstance(slot, Local):
            merged.append(slot.entry)
            continue
        queue = pending.get(slot.key)
        if queue:
            index = queue.popleft()
            used.add(index)
            merged.append(arrival[index])
    merged.extend(entry for index, entry in enumerate(arrival) if index not in used)
    return merged


@dataclass(slots=True)
class Split(Generic[E, T]):
    """A request list divided into the entries to forward and the local answers.

    ``slots`` has one element per client entry, in the client's order.
    """

    forwarded: list[E] = field(default_factory=list)
    slots: list[Slot[T]] = field(default_factory=list)
    #: When every entry is answered locally: the answers, in the client's order, and
    #: ``slots`` is left empty (no object per entry; :meth:`merge` builds them).
    all_local: list[T] | None = None

    @property
    def all_forwarded(self) -> bool:
        if self.all_local is not None:
            return not self.all_local
        return all(isinstance(slot, Upstream) for slot in self.slots)

    @property
    def none_forwarded(self) -> bool:
        return not self.forwarded

    def local_entries(self) -> list[T]:
        if self.all_local is not None:
            return self.all_local
        return [slot.entry for slot in self.slots if isinstance(slot, Local)]

    def merge(self, upstream: Iterable[T], key: Callable[[T], Hashable]) -> list[T]:
        slots = self.slots
        if self.all_local is not None:
            slots = [Local(entry) for entry in self.all_local]
        return merge_in_client_order(slots, upstream, key)


def split_entries(
    entries: Iterable[E],
    answer_locally: Callable[[E], T | None],
    key: Callable[[E], Hashable],
) -> Split[E, T]:
    """Split ``entries``: ``answer_locally`` returns the local response entry for a
    refused entry, or None to forward it; ``key`` is what its response entry carries.
    """
    split: Split[E, T] = Split()
    for entry in entries:
        local = answer_locally(entry)
        if local is None:
            split.forwarded.append(entry)
            split.slots.append(Upstream(key(entry)))
        else:
            split.slots.append(Local(local))
    return split


def split_names(
    decisions: Decisions,
    operation: Operation,
    resource_type: ResourceType,
    entries: Sequence[E],
    names: Sequence[str],
    refusal: EntryTemplate,
) -> Split[E, bytes]:
    """Split ``entries``, named ``names`` (same order), by ``operation`` on each name.

    A refused entry is answered with ``refusal`` rendered with its name (its
    encoding, which the fast encoder splices into the response list); one
    rendering per distinct name; a forwarded entry's key is its name. The cost
    per entry is a few C-level operations (:meth:`Decisions.refused_names`,
    :meth:`EntryTemplate.many`), whatever the number of refusals.
    """
    refused = decisions.refused_names(operation, resource_type, names)
    split: Split[E, bytes] = Split()
    if not refused:
        split.forwarded = list(entries)
        split.slots = [Upstream(name) for name in names]
        return split
    rendered = refusal.many(refused)
    if len(rendered) == len(names):  # all refused, no name twice: no slot per entry
        split.all_local = rendered
        return split
    answers = dict(zip(refused, rendered, strict=True))
    if len(answers) == len(dict.fromkeys(names)):  # all refused
        split.all_local = [answers[name] for name in names]
        return split
    for entry, name in zip(entries, names, strict=True):
        answer = answers.get(name)
        if answer is None:
            split.forwarded.append(entry)
            split.slots.append(Upstream(name))
        else:
            split.slots.append(Local(answer))
    return split


_TEMPLATES: dict[tuple[type[Any], str, tuple[tuple[str, Any], ...]], EntryTemplate] = {}


def refusal_template(cls: type[Any], hole: str, **values: Any) -> EntryTemplate:
    """The template of the entry of ``cls`` with ``values`` (Kafka's defaults for the
    other fields) and its string field ``hole`` open, built once per class and values."""
    key = (cls, hole, tuple(sorted(values.items())))
    template = _TEMPLATES.get(key)
    if template is None:
        from policies.authorization.error_response import build_entity

        entity = build_entity(cls, **{hole: ""}, **values)
        template = _TEMPLATES[key] = EntryTemplate(entity, (hole,))
    return template


def split_topics(
    decisions: Decisions,
    topics: Iterable[E],
    operation: Operation,
    refused: Callable[[E, ErrorCode], T],
) -> Split[E, T]:
    """Split a request's topic entries by ``operation`` on each topic, as Kafka's
    ``filterByAuthorized``: a refused topic is answered with ``refused(entry,
    TOPIC_AUTHORIZATION_FAILED)``; in the versions that name topics by id, an id the
    gateway cannot name gets ``UNKNOWN_TOPIC_ID`` (Kafka's answer for an unknown id;
    the client refreshes its metadata, through the gateway, and retries).
    """

    def answer(entry: E) -> T | None:
        name = resolve_topic_name(decisions, entry)
        if name is None:
            return refused(entry, ErrorCode.unknown_topic_id)
        if decisions.allows(operation, ResourceType.TOPIC, name):
            return None
        return refused(entry, ErrorCode.topic_authorization_failed)

    return split_entries(topics, answer, topic_key)


def topic_key(entry: Any) -> Hashable:
    """How a topic entry is matched between request and response: by name, or by id
    in the versions that carry only topic ids."""
    name = getattr(entry, "name", None)
    found: Hashable = name if name is not None else entry.topic_id
    return found


def resolve_topic_name(decisions: Decisions, entry: Any) -> str | None:
    """The name of a request's topic entry; for id-only versions, as the gateway knows it."""
    name = getattr(entry, "name", None)
    if name is not None:
        return str(name)
    return decisions.topic_name(entry.topic_id)


# --------------------------------------------------------------------------------------
# kio bodies


_FIELD_NAMES: dict[type[Any], frozenset[str]] = {}
_NESTED: dict[tuple[type[Any], str], type[Any]] = {}


def _field_names(cls: type[Any]) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


def build(cls: type[Any], **values: Any) -> Any:
    """An instance of the kio class ``cls`` from the ``values`` its version has.

    One call site serves all versions of an API: fields a version lacks (e.g.
    ``throttle_time`` before v1, ``topic_id`` before v10) are left out; missing
    required fields still fail, so a forgotten field is caught by the tests.
    """
    names = _field_names(cls)
    return cls(**{name: value for name, value in values.items() if name in names})


def nested_class(cls: type[Any], field_name: str) -> type[Any]:
    """The entry class of a kio list (or struct) field, e.g. the topic class of ``topics``."""
    found = _NESTED.get((cls, field_name))
    if found is None:
        found = _dataclass_in(typing.get_type_hints(cls)[field_name])
        if found is None:
            raise TypeError(f"{cls.__name__}.{field_name} holds no structs")
        _NESTED[(cls, field_name)] = found
    return found


def _dataclass_in(hint: Any) -> type[Any] | None:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------------------
# verdicts


def forward_as_is(
    frame: bytes, decisions: Decisions, transform: ResponseTransform | None = None
) -> RequestVerdict:
    """Forward the client's own frame (no copy); ``transform`` post-processes the answer."""
    return RequestVerdict(forward=frame, transform=transform, denials=decisions.denials)


def forward_rewritten(
    frame: bytes,
    body_offset: int,
    body: Any,
    transform: ResponseTransform,
    decisions: Decisions,
) -> RequestVerdict:
    """Forward the client's header with a reduced body, merging the answer with ``transform``."""
    return RequestVerdict(
        forward=encode_request(frame, body_offset, body),
        transform=transform,
        denials=decisions.denials,
    )


def forward_split(
    frame: bytes,
    body_offset: int,
    request: Any,
    split: Split[Any, Any],
    decisions: Decisions,
    *,
    api: tuple[int, int],
    fields: tuple[str, str],
    key: Callable[[Any], Hashable],
    keep_upstream: Callable[[Any], bool] | None = None,
) -> RequestVerdict:
    """Forward ``request`` with its list field reduced to ``split.forwarded`` and merge the
    local answers into the response list field, in the client's order.

    ``api`` is ``(api_key, api_version)``; ``fields`` names the request list and the
    response list; ``key`` matches response entries to request entries. When
    ``keep_upstream(response_body)`` is true (a top-level error, which in Kafka
    replaces the per-entry answers) the upstream answer is passed on unchanged.
    """
    request_field, response_field = fields
    reduced = dataclasses.replace(request, **{request_field: tuple(split.forwarded)})

    def rebuild(body: Any) -> Any:
        if keep_upstream is not None and keep_upstream(body):
            return body
        merged = split.merge(getattr(body, response_field), key)
        return dataclasses.replace(body, **{response_field: tuple(merged)})

    transform = rewrite_response(*api, rebuild)
    return forward_rewritten(frame, body_offset, reduced, transform, decisions)


def has_top_level_error(body: Any) -> bool:
    """True if a response body carries a top-level error (Kafka then drops entry errors)."""
    return bool(getattr(body, "error_code", ErrorCode.none) != ErrorCode.none)


def answer_locally(
    frame: bytes, api_key: int, api_version: int, body: Any, decisions: Decisions
) -> RequestVerdict:
    """Answer the request here with ``body``, under the request's correlation id."""
    _, _, correlation_id = peek_api(frame)
    response = encode_response(correlation_id, api_key, api_version, body)
    return RequestVerdict(forward=None, local_response=response, denials=decisions.denials)


def rewrite_response(
    api_key: int, api_version: int, rebuild: Callable[[Any], Any]
) -> ResponseTransform:
    """A transform that decodes the upstream answer, applies ``rebuild`` to its body and
    re-encodes it under the upstream correlation id."""

    def transform(frame: bytes) -> bytes:
        body = decode_response(frame, api_key, api_version)
        correlation_id = response_correlation_id(frame)
        return encode_response(correlation_id, api_key, api_version, rebuild(body))

    return transform
