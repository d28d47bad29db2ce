"""The ACL and quota state of one virtual cluster, swapped as a whole on config reload.

Sessions read :attr:`VirtualCluster.policies` at every request, so a reload takes
effect on each open connection's next request. Meters and connection counts are
carried over from the previous state: a reload must not hand every client a fresh
quota, nor forget the connections that are open.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.acl.engine import AclEngine
from policies.config import VirtualClusterConfig
from policies.quotas.connections import ConnectionLimiter
from policies.quotas.manager import QuotaManager
from policies.quotas.store import InProcessQuotaStore, QuotaStore


@dataclass(frozen=True, slots=True)
class ClusterPolicies:
    #: None: no ``authorization`` section, every request is forwarded unchecked.
    acl: AclEngine | None
    #: None: no rate quotas configured.
    quotas: QuotaManager | None
    connections: ConnectionLimiter
    #: Where quota meters live; kept across reloads (and shareable across replicas).
    quota_store: QuotaStore
    #: Whether any ACL or rate quota applies (if not, requests are not even parsed).
    active: bool


def build_policies(
    config: VirtualClusterConfig, previous: ClusterPolicies | None = None
) -> ClusterPolicies:
    store = previous.quota_store if previous is not None else InProcessQuotaStore()
    quotas = QuotaManager(config.quotas, store) if config.quotas is not None else None
    limits = config.quotas.connections if config.quotas is not None else None
    connections = (
        previous.connections.with_config(limits)
        if previous is not None
        else ConnectionLimiter(limits)
    )
    acl = AclEngine.from_config(config.authorization)
    quotas = quotas if quotas is not None and quotas.enabled else None
    return ClusterPolicies(
        acl=acl,
        quotas=quotas,
        connections=connections,
        quota_store=store,
        active=acl is not None or quotas is not None,
    )
