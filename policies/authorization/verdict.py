"""What the per-API checks tell the session to do with one request.

A request is either forwarded untouched (the common case, no copy), forwarded in
a reduced form with the upstream answer transformed (a partly authorized request:
denied partitions are answered locally and merged back in the client's order), or
answered entirely by the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol
from uuid import UUID

from policies.acl.model import Authorizer, Operation, ResourceType
from policies.auth.principal import Principal

__all__ = ["AuthorizationContext", "Denial", "RequestVerdict", "ResponseTransform"]

#: Applied to the upstream response frame (header + body, no size prefix); returns
#: the frame the client receives.
ResponseTransform = Callable[[bytes], bytes]


class Denial(NamedTuple):
    """One refused (operation, resource) pair, for the audit log.

    A named tuple, not a dataclass: a request may refuse 100,000 names, and
    :class:`~policies.authorization.splitting.Decisions` records them in bulk
    (``tuple.__new__`` over zipped columns, no Python code per denial).
    """

    operation: Operation
    resource_type: ResourceType
    name: str
    #: The rule that decided, e.g. ``"rules[2]"`` or ``"default"``.
    rule: str


@dataclass(slots=True)
class RequestVerdict:
    """The session's instructions for one request.

    Exactly one of these shapes:

    * ``forward`` is the original frame and ``transform`` is None: forward as is;
    * ``forward`` is a (possibly rewritten) frame and ``transform`` is set: forward
      it, and pass the upstream response through ``transform``;
    * ``forward`` is None and ``local_response`` is set: answer locally, send nothing
      upstream (the response frame has the request's correlation id).

    ``close_connection`` asks the session to close after any answers already queued;
    with ``forward`` and ``local_response`` both None nothing is sent for the request
    itself (a denied ``acks=0`` Produce, which has no response to carry the error, as
    Kafka does; or a refused API for which no valid error response can be built).
    """

    forward: bytes | None
    local_response: bytes | None = None
    transform: ResponseTransform | None = None
    denials: list[Denial] = field(default_factory=list)
    close_connection: str | None = None


class AuthorizationContext(Protocol):
    """What the per-API checks may consult about the connection and the cluster."""

    @property
    def principal(self) -> Principal: ...

    @property
    def authorizer(self) -> Authorizer: ...

    def topic_name(self, topic_id: UUID) -> str | None:
        """The name of a topic id (from Metadata seen by the gateway), or None if unknown."""
        ...
