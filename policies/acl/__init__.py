"""ACL rules: the config model, and the engine that answers allow/deny questions."""

from policies.acl.model import CLUSTER_NAME, AclDecision, Authorizer, Operation, ResourceType

__all__ = ["CLUSTER_NAME", "AclDecision", "Authorizer", "Operation", "ResourceType"]
