"""The vocabulary of authorization, shared by the rule engine and the per-API checks.

Names and semantics follow Kafka's ``AclOperation``/``ResourceType`` so that rules
read like Kafka ACLs and clients see the errors a broker would give them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from policies.auth.principal import Principal

__all__ = ["AclDecision", "Authorizer", "Operation", "ResourceType"]


class Operation(enum.Enum):
    """What a request does to a resource (Kafka's ``AclOperation``)."""

    READ = "Read"
    WRITE = "Write"
    CREATE = "Create"
    DELETE = "Delete"
    ALTER = "Alter"
    DESCRIBE = "Describe"
    DESCRIBE_CONFIGS = "DescribeConfigs"
    ALTER_CONFIGS = "AlterConfigs"
    IDEMPOTENT_WRITE = "IdempotentWrite"
    CLUSTER_ACTION = "ClusterAction"
    ALL = "All"

    # Enum's own __hash__ is Python code (hash of the name); members are singletons, so
    # the identity hash is equivalent and C-fast. Decision caches hash these per check.
    __hash__ = object.__hash__


class ResourceType(enum.Enum):
    """The kind of thing a rule protects (Kafka's ``ResourceType``)."""

    TOPIC = "topic"
    GROUP = "group"
    TRANSACTIONAL_ID = "transactional_id"
    CLUSTER = "cluster"

    __hash__ = object.__hash__  # see Operation


#: The name of the one cluster resource, as in Kafka (``kafka-cluster``).
CLUSTER_NAME = "kafka-cluster"


@dataclass(frozen=True, slots=True)
class AclDecision:
    """The outcome of one check, with what decided it (for the audit log)."""

    allowed: bool
    #: Which rule decided, e.g. ``"rules[3]"``, or ``"default"`` when none matched.
    rule: str


class Authorizer(Protocol):
    """Decides one (principal, operation, resource) question; pure and cheap to call."""

    def authorize(
        self,
        principal: Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: str,
    ) -> AclDecision: ...

    def authorize_any(
        self, principal: Principal, operation: Operation, resource_type: ResourceType
    ) -> AclDecision:
        """Whether ``operation`` is allowed on some resource of the type (Kafka's
        ``authorizeByResourceType``, e.g. InitProducerId needs Write on any topic)."""
        ...
