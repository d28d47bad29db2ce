"""ACL rules: the config model, and the engine that answers allow/deny questions.

``model`` is the shared vocabulary (operations, resource types, decisions, the
``Authorizer`` protocol); ``config`` the ``authorization`` section of a virtual
cluster; ``engine`` the :class:`AclEngine` that implements ``Authorizer`` from it.
"""

from policies.acl.config import AclRuleConfig, AuthorizationConfig
from policies.acl.engine import AclEngine
from policies.acl.model import CLUSTER_NAME, AclDecision, Authorizer, Operation, ResourceType

__all__ = [
    "CLUSTER_NAME",
    "AclDecision",
    "AclEngine",
    "AclRuleConfig",
    "AuthorizationConfig",
    "Authorizer",
    "Operation",
    "ResourceType",
]
