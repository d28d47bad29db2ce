"""The fakes and frame helpers shared by the per-API authorization unit tests.

A handler in policies/authorization takes a context (``principal``, ``authorizer``,
``topic_name(id)``) and a request frame, and returns a ``RequestVerdict``. Here:

- ``FakeAuthorizer`` answers from a fixed list of (operation, resource type, name)
  questions and records every question asked, in order. Built by ``allowing`` (only
  the listed questions pass) or by ``denying`` (only the listed questions are
  refused); every refusal names ``REFUSING_RULE``, as ``denial`` expects.
- Frames carry a real request header (``CORRELATION_ID``, ``CLIENT_ID``); bodies are
  kio entities built strictly with ``splitting.build`` (a missing required field
  fails the test), or with ``fill_defaults=True`` through
  ``error_response.build_entity`` (fields left out get defaults).
- Verdicts are read the way the session uses them: ``assert_untouched`` (the very
  same frame forwarded), ``forwarded_body``, ``local_answer`` (the local response,
  decoded), ``transformed`` (the transform applied to an upstream response).
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import uuid
from collections.abc import Iterable
from typing import Any

from kio.serial import entity_writer

from codec.headers import encode_request_header, response_correlation_id
from policies.acl.model import AclDecision, Operation, ResourceType
from policies.auth.principal import Principal
from policies.authorization.error_response import build_entity
from policies.authorization.messages import (
    decode_request,
    decode_response,
    encode_response,
    request_class,
    response_class,
)
from policies.authorization.splitting import build, nested_class
from policies.authorization.verdict import Denial, RequestVerdict

CORRELATION_ID = 4242
CLIENT_ID = "test-client"
ALICE = Principal(name="alice", mechanism="PLAIN")
NO_TIME = datetime.timedelta(0)

#: The rule an allowed question is attributed to.
ALLOWING_RULE = "rules[0]"
#: The rule every refusal of the fakes names: verdicts must report it as given.
REFUSING_RULE = "rules[7]"

Question = tuple[Operation, ResourceType, str]


# --- fakes ---------------------------------------------------------------------------


class FakeAuthorizer:
    """Answers each question by whether it is listed; records every question, in order.

    ``listed_allowed``: True for an allow-list (unlisted questions are refused), False
    for a deny-list (listed questions are refused). ``allow_all`` lets every question
    pass. ``principal``: the one principal the handler may ask about (the context's).
    """

    def __init__(
        self,
        listed: Iterable[Question] = (),
        *,
        listed_allowed: bool,
        allow_all: bool = False,
        principal: Principal = ALICE,
    ) -> None:
        self.listed = set(listed)
        self.listed_allowed = listed_allowed
        self.allow_all = allow_all
        self.principal = principal
        self.questions: list[Question] = []

    def authorize(
        self, principal: Principal, operation: Operation, resource_type: ResourceType, name: str
    ) -> AclDecision:
        assert principal == self.principal
        question = (operation, resource_type, name)
        self.questions.append(question)
        if self.allow_all or (question in self.listed) == self.listed_allowed:
            return AclDecision(allowed=True, rule=ALLOWING_RULE)
        return AclDecision(allowed=False, rule=REFUSING_RULE)


class FakeResourceTypeAuthorizer(FakeAuthorizer):
    """A deny-list that also answers ``authorize_any`` (the engine's
    ``authorizeByResourceType``): yes exactly when ``writes_some_topic``."""

    def __init__(self, denied: Iterable[Question], writes_some_topic: bool) -> None:
        super().__init__(denied, listed_allowed=False)
        self.writes_some_topic = writes_some_topic
        self.any_questions: list[tuple[Operation, ResourceType]] = []

    def authorize_any(
        self, principal: Principal, operation: Operation, resource_type: ResourceType
    ) -> AclDecision:
        assert principal == self.principal
        self.any_questions.append((operation, resource_type))
        return AclDecision(allowed=self.writes_some_topic, rule="rules[1]")


@dataclasses.dataclass
class FakeContext:
    """What a handler reads of the session: who asks, who decides, which topic ids are known."""

    authorizer: Any
    topic_ids: dict[uuid.UUID, str] = dataclasses.field(default_factory=dict)
    principal: Principal = ALICE

    def topic_name(self, topic_id: uuid.UUID) -> str | None:
        return self.topic_ids.get(topic_id)


def allowing(*grants: Question, allow_all: bool = False, **ids: uuid.UUID) -> FakeContext:
    """A context allowing only ``grants`` (or everything with ``allow_all``); ``ids`` maps
    topic names to the ids the gateway knows."""
    authorizer = FakeAuthorizer(grants, listed_allowed=True, allow_all=allow_all)
    return FakeContext(authorizer, {topic_id: name for name, topic_id in ids.items()})


def denying(*questions: Question, **ids: uuid.UUID) -> FakeContext:
    """A context refusing only ``questions``; ``ids`` maps topic names to known ids."""
    authorizer = FakeAuthorizer(questions, listed_allowed=False)
    return FakeContext(authorizer, {topic_id: name for name, topic_id in ids.items()})


def denial(operation: Operation, resource_type: ResourceType, name: str) -> Denial:
    """The denial a verdict reports when a fake authorizer refused the question."""
    return Denial(operation, resource_type, name, REFUSING_RULE)


# --- frames --------------------------------------------------------------------------


def encode(body: Any) -> bytes:
    """A kio entity's bytes."""
    out = io.BytesIO()
    entity_writer(type(body))(out, body)
    return out.getvalue()


def entry_class(api_key: int, version: int, kind: str, *path: str) -> type[Any]:
    """The kio class of a request/response body, or of the entries at ``path``."""
    cls = request_class(api_key, version) if kind == "request" else response_class(api_key, version)
    for name in path:
        cls = nested_class(cls, name)
    return cls


def _body(cls: type[Any], fill_defaults: bool, fields: dict[str, Any]) -> Any:
    return build_entity(cls, **fields) if fill_defaults else build(cls, **fields)


def request_frame_of(api_key: int, version: int, body: Any) -> bytes:
    """A request frame (header + body, no size prefix) carrying the kio ``body``."""
    return encode_request_header(api_key, version, CORRELATION_ID, CLIENT_ID) + encode(body)


def request_frame(
    api_key: int, version: int, /, *, fill_defaults: bool = False, **fields: Any
) -> bytes:
    """A request frame whose body has ``fields`` (those the version lacks are left out)."""
    body = _body(request_class(api_key, version), fill_defaults, fields)
    return request_frame_of(api_key, version, body)


def response_frame_of(api_key: int, version: int, body: Any) -> bytes:
    """An upstream response frame answering ``CORRELATION_ID`` with the kio ``body``."""
    return encode_response(CORRELATION_ID, api_key, version, body)


def response_frame(
    api_key: int, version: int, /, *, fill_defaults: bool = False, **fields: Any
) -> bytes:
    """An upstream response frame whose body has ``fields`` (no throttle unless given)."""
    fields.setdefault("throttle_time", NO_TIME)
    body = _body(response_class(api_key, version), fill_defaults, fields)
    return response_frame_of(api_key, version, body)


# --- reading verdicts ----------------------------------------------------------------


def assert_untouched(verdict: RequestVerdict, frame: bytes) -> None:
    """The fast path: the very same frame object, nothing to transform, nothing refused."""
    assert verdict.forward is frame
    assert verdict.transform is None and verdict.local_response is None
    assert verdict.denials == [] and verdict.close_connection is None


def forwarded_body(verdict: RequestVerdict) -> Any:
    """The body of the request that would go upstream, decoded."""
    assert verdict.forward is not None and verdict.local_response is None
    return decode_request(verdict.forward)[1]


def local_answer(verdict: RequestVerdict, api_key: int, version: int) -> Any:
    """The gateway's own answer (nothing forwarded), decoded."""
    assert verdict.forward is None and verdict.transform is None
    assert verdict.local_response is not None
    assert response_correlation_id(verdict.local_response) == CORRELATION_ID
    return decode_response(verdict.local_response, api_key, version)


def transformed(verdict: RequestVerdict, api_key: int, version: int, upstream: Any) -> Any:
    """The client's answer: the transform applied to ``upstream`` (a response frame, or a
    kio body framed with ``response_frame_of``), decoded."""
    assert verdict.transform is not None
    if not isinstance(upstream, bytes):
        upstream = response_frame_of(api_key, version, upstream)
    out = verdict.transform(upstream)
    assert response_correlation_id(out) == CORRELATION_ID
    return decode_response(out, api_key, version)
