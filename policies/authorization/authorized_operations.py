"""The ``*_authorized_operations`` bit fields, recomputed for the client's principal.

A broker computes them on request (Metadata v8+, DescribeCluster) for the login
that asks, which is the gateway's upstream login; the gateway replaces them with
the client's bits (:func:`topic_authorized_operations`,
:func:`cluster_authorized_operations`). Bit ``n`` is set when the principal is
allowed the operation whose ``AclOperation`` code is ``n``; the checks are probes
(nothing refused, nothing audited).
"""

from __future__ import annotations

from typing import Final

from policies.acl.model import CLUSTER_NAME, Operation, ResourceType
from policies.authorization.splitting import Decisions
from policies.authorization.topics import TOPIC

__all__ = [
    "AUTHORIZED_OPERATIONS_OMITTED",
    "CLUSTER_RESOURCE_OPERATIONS",
    "TOPIC_OPERATIONS",
    "cluster_authorized_operations",
    "topic_authorized_operations",
]

#: Kafka's ``*_authorized_operations`` value when it was not asked for (or not computed).
AUTHORIZED_OPERATIONS_OMITTED: Final = -(2**31)

#: Operations reported in a topic's bit field (Kafka 4's
#: ``AclEntry.supportedOperations(TOPIC)``), with their ``AclOperation`` codes (the bits).
TOPIC_OPERATIONS: Final[tuple[tuple[Operation, int], ...]] = (
    (Operation.READ, 3),
    (Operation.WRITE, 4),
    (Operation.CREATE, 5),
    (Operation.DELETE, 6),
    (Operation.ALTER, 7),
    (Operation.DESCRIBE, 8),
    (Operation.DESCRIBE_CONFIGS, 10),
    (Operation.ALTER_CONFIGS, 11),
)

#: Operations reported in the cluster's bit field (``AclEntry.supportedOperations(CLUSTER)``).
CLUSTER_RESOURCE_OPERATIONS: Final[tuple[tuple[Operation, int], ...]] = (
    (Operation.CREATE, 5),
    (Operation.ALTER, 7),
    (Operation.DESCRIBE, 8),
    (Operation.CLUSTER_ACTION, 9),
    (Operation.DESCRIBE_CONFIGS, 10),
    (Operation.ALTER_CONFIGS, 11),
    (Operation.IDEMPOTENT_WRITE, 12),
)


def _operation_bits(
    checks: Decisions,
    resource_type: ResourceType,
    name: str,
    operations: tuple[tuple[Operation, int], ...],
) -> int:
    # Probes, as Kafka's ``authorizedOperations`` (no denial logged): a missing bit
    # refuses nothing.
    bits = 0
    for operation, code in operations:
        if checks.allows(operation, resource_type, name, audit=False):
            bits |= 1 << code
    return bits


def topic_authorized_operations(checks: Decisions, name: str) -> int:
    """A topic's ``topic_authorized_operations`` bit field for the client's principal."""
    return _operation_bits(checks, TOPIC, name, TOPIC_OPERATIONS)


def cluster_authorized_operations(checks: Decisions) -> int:
    """The ``cluster_authorized_operations`` bit field for the client's principal.

    As Kafka (Metadata v8-10, DescribeCluster): 0 without Describe on the cluster.
    """
    cluster = ResourceType.CLUSTER
    if not checks.allows(Operation.DESCRIBE, cluster, CLUSTER_NAME, audit=False):
        return 0
    return _operation_bits(checks, cluster, CLUSTER_NAME, CLUSTER_RESOURCE_OPERATIONS)
