"""The ``quotas`` section of a virtual cluster: rate quotas and connection limits.

Shape (every part optional)::

    quotas:
      window: {samples: 11, sample_ms: 1000}
      clients:
        - principal: "User:alice"      # or "<default>"; omitted: not part of the key
          client_id: loader            # or "<default>"; omitted: not part of the key
          produce_bytes_per_second: 1048576
      topics:
        - topic: "orders."
          pattern_type: prefixed
          produce_bytes_per_second: 5242880
      connections:
        max_per_ip: 100

``policies.config`` imports this module, so it cannot import ``policies.config``
back: it follows the same conventions (frozen, ``extra="forbid"``, a ``description``
on every field, problems reported at their precise key) with its own small base.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from policies.config_base import Integer, Loc, Section, raise_problems

__all__ = [
    "DEFAULT_ENTITY",
    "ClientQuotaConfig",
    "ConnectionLimitsConfig",
    "QuotasConfig",
    "TopicPatternType",
    "TopicQuotaConfig",
    "WindowConfig",
    "describe_entity",
]

#: Kafka's spelling of "every principal" / "every client id" in quota entities (KIP-55).
DEFAULT_ENTITY: Final = "<default>"

#: How a topic quota's ``topic`` matches topic names.
TopicPatternType = Literal["literal", "prefixed", "glob"]

_PRINCIPAL_RE: Final = re.compile(r"[^:\s]+:.+", re.DOTALL)
# Kafka topic names: ASCII letters, digits, '.', '_' and '-', at most 249 characters.
_TOPIC_CHARS_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
_GLOB_CHARS_RE: Final = re.compile(r"[A-Za-z0-9._\-*?\[\]!]+")
_MAX_TOPIC_LENGTH: Final = 249


def _reject_bool_number(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", f"expected a number, got {str(value).lower()}")
    if isinstance(value, float) and not math.isfinite(value):
        # YAML's .inf would otherwise get pydantic's own wording; "no limit" is spelt
        # by leaving the key out.
        raise PydanticCustomError("finite_number", f"expected a finite number, got {value}")
    return value


#: A rate limit: a positive, finite number (per second).
Rate = Annotated[float, BeforeValidator(_reject_bool_number), Field(gt=0, allow_inf_nan=False)]


class WindowConfig(Section):
    """The sliding window rates are measured over (Kafka's ``quota.window.*``)."""

    samples: Integer = Field(
        default=11,
        ge=2,
        le=1000,
        description=(
            "Number of samples in the window, like Kafka's `quota.window.num`. The rate is "
            "measured over the last `samples` samples (at least `samples - 1` full ones)."
        ),
    )
    sample_ms: Integer = Field(
        default=1000,
        ge=10,
        le=3_600_000,
        description=(
            "Length of one sample in milliseconds, like Kafka's `quota.window.size.seconds`. "
            "A throttle delay is at most `samples * sample_ms`."
        ),
    )

    @property
    def max_throttle_ms(self) -> int:
        """Longest delay one throttle may impose: the whole window."""
        return self.samples * self.sample_ms


class ClientQuotaConfig(Section):
    """Rate limits of one Kafka quota entity: a principal, a client id, or both (KIP-55)."""

    principal: str | None = Field(
        default=None,
        description=(
            'Principal the quota applies to, e.g. `"User:alice"`, or `"<default>"` for '
            "every principal (each gets its own meter). Omitted: the principal is not "
            "part of the quota entity."
        ),
    )
    client_id: str | None = Field(
        default=None,
        min_length=1,
        description=(
            'Client id the quota applies to, or `"<default>"` for every client id (each '
            "gets its own meter). Omitted: the client id is not part of the quota entity."
        ),
    )
    produce_bytes_per_second: Rate | None = Field(
        default=None,
        description="Produce request bytes per second (Kafka's `producer_byte_rate`).",
    )
    fetch_bytes_per_second: Rate | None = Field(
        default=None,
        description="Fetch response bytes per second (Kafka's `consumer_byte_rate`).",
    )
    requests_per_second: Rate | None = Field(
        default=None,
        description="Requests of any kind per second.",
    )

    @field_validator("principal")
    @classmethod
    def _check_principal(cls, principal: str | None) -> str | None:
        if principal is None or principal == DEFAULT_ENTITY or _PRINCIPAL_RE.fullmatch(principal):
            return principal
        raise PydanticCustomError(
            "principal",
            f"invalid principal {principal!r}: expected 'Type:name' "
            f"(e.g. 'User:alice') or '{DEFAULT_ENTITY}'",
        )

    @model_validator(mode="after")
    def _check_entity_and_rates(self) -> Self:
        problems: list[tuple[Loc, str, str, Any]] = []
        if self.principal is None and self.client_id is None:
            problems.append(
                ((), "entity", "a client quota needs principal, client_id or both", None)
            )
        if not self.limits:
            problems.append(
                (
                    (),
                    "no_rate",
                    "set at least one of produce_bytes_per_second, fetch_bytes_per_second, "
                    "requests_per_second",
                    None,
                )
            )
        raise_problems(type(self).__name__, problems)
        return self

    @property
    def entity(self) -> tuple[str | None, str | None]:
        """``(principal, client_id)`` as configured; ``None`` = not part of the entity."""
        return (self.principal, self.client_id)

    @property
    def limits(self) -> dict[str, float]:
        """The configured rates by field name (only those that are set)."""
        rates = {
            "produce_bytes_per_second": self.produce_bytes_per_second,
            "fetch_bytes_per_second": self.fetch_bytes_per_second,
            "requests_per_second": self.requests_per_second,
        }
        return {name: rate for name, rate in rates.items() if rate is not None}


def describe_entity(principal: str | None, client_id: str | None) -> str:
    """``principal='User:alice', client_id='loader'``: a quota entity as written in the file."""
    parts = []
    if principal is not None:
        parts.append(f"principal={principal!r}")
    if client_id is not None:
        parts.append(f"client_id={client_id!r}")
    return ", ".join(parts)


class TopicQuotaConfig(Section):
    """Byte-rate limits of the topics a pattern matches, shared by all their clients."""

    topic: str = Field(
        min_length=1,
        description=(
            "Topic name, prefix or glob (see `pattern_type`). Each matching topic gets "
            "its own meter with these limits."
        ),
    )
    pattern_type: TopicPatternType = Field(
        default="literal",
        description=(
            "How `topic` matches: `literal` (the exact name), `prefixed` (names starting "
            "with it) or `glob` (`*`, `?`, `[...]`). A topic takes each limit from the "
            "most specific entry that sets it: literal, then the longest prefix, then "
            "the first glob in file order."
        ),
    )
    produce_bytes_per_second: Rate | None = Field(
        default=None,
        description="Bytes per second produced to each matching topic, by all clients together.",
    )
    fetch_bytes_per_second: Rate | None = Field(
        default=None,
        description="Bytes per second fetched from each matching topic, by all clients together.",
    )

    @model_validator(mode="after")
    def _check_topic_and_rates(self) -> Self:
        problems: list[tuple[Loc, str, str, Any]] = []
        allowed = _GLOB_CHARS_RE if self.pattern_type == "glob" else _TOPIC_CHARS_RE
        if allowed.fullmatch(self.topic) is None or len(self.topic) > _MAX_TOPIC_LENGTH:
            what = "glob" if self.pattern_type == "glob" else "topic name or prefix"
            problems.append(
                (
                    ("topic",),
                    "topic_name",
                    f"invalid {what} {self.topic!r}: topic names have at most "
                    f"{_MAX_TOPIC_LENGTH} letters, digits, '.', '_' and '-'",
                    self.topic,
                )
            )
        if self.produce_bytes_per_second is None and self.fetch_bytes_per_second is None:
            problems.append(
                (
                    (),
                    "no_rate",
                    "set produce_bytes_per_second, fetch_bytes_per_second or both",
                    None,
                )
            )
        raise_problems(type(self).__name__, problems)
        return self


class ConnectionLimitsConfig(Section):
    """Limits on client connections, checked when a connection is accepted or authenticated."""

    max_per_principal: Integer | None = Field(
        default=None,
        ge=1,
        description="Open connections per authenticated principal. Unset: no limit.",
    )
    max_per_ip: Integer | None = Field(
        default=None,
        ge=1,
        description=(
            "Open connections per client IP address (like Kafka's `max.connections.per.ip`). "
            "Unset: no limit."
        ),
    )
    max_creation_rate_per_ip: Rate | None = Field(
        default=None,
        description=(
            "New connections per second per client IP address, over a sliding window of "
            "about one second (like Kafka's `connection_creation_rate` IP quota). Refused "
            "connections do not count. Unset: no limit."
        ),
    )


class QuotasConfig(Section):
    """Rate quotas and connection limits of one virtual cluster.

    Byte and request rates are enforced the way Kafka does (KIP-13, KIP-55,
    KIP-219): a request that pushes a rate over its limit is served, and the client
    is then delayed long enough to bring the rate back to the limit.
    """

    window: WindowConfig = Field(
        default_factory=WindowConfig,
        description="The sliding window rates are measured over.",
    )
    clients: list[ClientQuotaConfig] = Field(
        default_factory=list,
        description=(
            "Kafka-style (principal, client id) quotas (KIP-55). For each rate, a "
            "connection gets the first entity that sets it, in Kafka's order: "
            "(principal, client_id), (principal, <default>), (principal), "
            "(<default>, client_id), (<default>, <default>), (<default>), (client_id), "
            "(<default> client_id). Connections of the same entity share one meter."
        ),
    )
    topics: list[TopicQuotaConfig] = Field(
        default_factory=list,
        description="Per-topic byte-rate limits, shared by every client of the topic.",
    )
    connections: ConnectionLimitsConfig | None = Field(
        default=None,
        description="Connection count and creation-rate limits. Absent: none.",
    )

    @model_validator(mode="after")
    def _check_duplicates(self) -> Self:
        problems: list[tuple[Loc, str, str, Any]] = []
        entities: dict[tuple[str | None, str | None], int] = {}
        for i, client in enumerate(self.clients):
            first = entities.setdefault(client.entity, i)
            if first != i:
                problems.append(
                    (
                        ("clients", i),
                        "duplicate_entity",
                        f"duplicate quota entity {describe_entity(*client.entity)} "
                        f"(already clients[{first}])",
                        None,
                    )
                )
        patterns: dict[tuple[str, str], int] = {}
        for i, topic in enumerate(self.topics):
            first = patterns.setdefault((topic.topic, topic.pattern_type), i)
            if first != i:
                problems.append(
                    (
                        ("topics", i, "topic"),
                        "duplicate_topic",
                        f"duplicate {topic.pattern_type} topic quota {topic.topic!r} "
                        f"(already topics[{first}])",
                        topic.topic,
                    )
                )
        raise_problems(type(self).__name__, problems)
        return self
