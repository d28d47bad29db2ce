"""The ACL engine: answers (principal, operation, resource) questions from the config rules.

Semantics are Kafka's (``StandardAuthorizer``/``AclAuthorizer``):

* super users are always allowed;
* a matching ``deny`` rule wins over every ``allow``;
* an ``allow`` of ``Read``, ``Write``, ``Delete`` or ``Alter`` also allows
  ``Describe``, and ``AlterConfigs`` allows ``DescribeConfigs`` (denies imply nothing);
  ``All`` covers every operation;
* when no rule matches, the section's ``default`` decides.

The gateway asks once per resource per request (a Produce with 50 topics asks 50
times), so answers are cached in two steps. First the principal is reduced to a
*view*: whether it is a super user and which rules name it (their index tuple is
interned to a small integer, so principals that the rules cannot tell apart share
it). Then decisions are cached per ``(rules id, operation, resource type, name)``.
A repeated question costs two dict look-ups.

Claim rules make the view depend on the principal's JWT claims, which ``Principal``
leaves out of its equality. Views of such principals are keyed by the principal
plus the identity of its claims mapping; the view holds that mapping, so the
``id()`` cannot be reused by another object while the entry exists.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any, Final, Literal

from policies.acl.config import (
    WILDCARD_NAME,
    AclRuleConfig,
    AnyPrincipal,
    AnyUser,
    AuthorizationConfig,
    ClaimMatch,
    GroupReference,
    PrincipalPattern,
    UserPrincipal,
    parse_principal_pattern,
)
from policies.acl.model import AclDecision, Operation, ResourceType
from policies.auth.principal import Principal

__all__ = ["AclEngine", "claim_matches"]

#: The ``rule`` of a decision taken by ``super_users`` / by the section's ``default``.
SUPER_USERS_RULE: Final = "super_users"
DEFAULT_RULE: Final = "default"

_SUPER_USER_ALLOWED: Final = AclDecision(allowed=True, rule=SUPER_USERS_RULE)

#: Operations an ``allow`` of the key also allows (Kafka's ``IMPLIES_DESCRIBE`` etc.).
_IMPLIED_BY_ALLOW: Final[Mapping[Operation, frozenset[Operation]]] = {
    Operation.READ: frozenset({Operation.DESCRIBE}),
    Operation.WRITE: frozenset({Operation.DESCRIBE}),
    Operation.DELETE: frozenset({Operation.DESCRIBE}),
    Operation.ALTER: frozenset({Operation.DESCRIBE}),
    Operation.ALTER_CONFIGS: frozenset({Operation.DESCRIBE_CONFIGS}),
}
_EVERY_OPERATION: Final = frozenset(Operation)

_MISSING: Final = object()

DEFAULT_MAX_CACHED_PRINCIPALS: Final = 10_000
DEFAULT_MAX_CACHED_DECISIONS: Final = 100_000

PatternType = Literal["literal", "prefixed", "glob"]


# --------------------------------------------------------------------------------------
# compiled rules


@dataclass(frozen=True, slots=True)
class _Rule:
    """One config rule, prepared for fast matching."""

    decision: AclDecision
    deny: bool
    principals: tuple[PrincipalPattern, ...]  # groups already replaced by their members
    resource_type: ResourceType
    #: Operations the rule decides: its own plus, for ``allow``, the implied ones.
    operations: frozenset[Operation]
    pattern_type: PatternType
    name_pattern: str
    matches_name: Callable[[str], bool]
    #: Every name starting with this is matched (``""``: every name); None if not prefix-like.
    covered_prefix: str | None


def _compile_rule(index: int, rule: AclRuleConfig, groups: Mapping[str, list[str]]) -> _Rule:
    deny = rule.effect == "deny"
    return _Rule(
        decision=AclDecision(allowed=not deny, rule=f"rules[{index}]"),
        deny=deny,
        principals=_expand_principals(rule.principals, groups),
        resource_type=rule.resource,
        operations=_covered_operations(rule.operation_set, deny=deny),
        pattern_type=rule.pattern_type,
        name_pattern=rule.name_pattern,
        matches_name=_name_matcher(rule.pattern_type, rule.name_pattern),
        covered_prefix=_covered_prefix(rule.pattern_type, rule.name_pattern),
    )


def _expand_principals(
    texts: Sequence[str], groups: Mapping[str, list[str]]
) -> tuple[PrincipalPattern, ...]:
    patterns: list[PrincipalPattern] = []
    for text in texts:
        pattern = parse_principal_pattern(text)
        if isinstance(pattern, GroupReference):
            # Validation guarantees the group exists and holds no group references.
            patterns += (parse_principal_pattern(member) for member in groups[pattern.group])
        else:
            patterns.append(pattern)
    return tuple(patterns)


def _covered_operations(operations: frozenset[Operation], *, deny: bool) -> frozenset[Operation]:
    if Operation.ALL in operations:
        return _EVERY_OPERATION
    if deny:
        return operations
    implied = (_IMPLIED_BY_ALLOW.get(op, frozenset()) for op in operations)
    return operations.union(*implied)


def _name_matcher(pattern_type: PatternType, pattern: str) -> Callable[[str], bool]:
    if _matches_every_name(pattern_type, pattern):
        return lambda name: True
    if pattern_type == "prefixed":
        return lambda name: name.startswith(pattern)
    if pattern_type == "glob":
        regex = re.compile(_glob_regex(pattern), re.DOTALL)
        return lambda name: regex.fullmatch(name) is not None
    return pattern.__eq__


def _glob_regex(pattern: str) -> str:
    """``*`` is any run of characters, ``?`` one character; everything else is literal.

    (Unlike ``fnmatch``, ``[...]`` is not a character class: resource names may contain
    brackets, and a rule should not change meaning because of them.)
    """
    parts = {"*": ".*", "?": "."}
    return "".join(parts.get(char) or re.escape(char) for char in pattern)


def _matches_every_name(pattern_type: PatternType, pattern: str) -> bool:
    if pattern_type == "glob":
        return pattern != "" and set(pattern) == {"*"}
    return pattern_type == "literal" and pattern == WILDCARD_NAME


def _covered_prefix(pattern_type: PatternType, pattern: str) -> str | None:
    if _matches_every_name(pattern_type, pattern):
        return ""
    if pattern_type == "prefixed":
        return pattern
    if pattern_type == "glob" and pattern.endswith("*"):
        stem = pattern.rstrip("*")
        if "*" not in stem and "?" not in stem:
            return stem
    return None


# --------------------------------------------------------------------------------------
# principal matching


def claim_matches(claims: Mapping[str, Any], path: Sequence[str], expected: str) -> bool:
    """True if the claim at ``path`` equals ``expected``, or is a list that contains it.

    Strings compare exactly, integers by their decimal text, booleans as
    ``true``/``false``. At each level the longest dotted name that exists is tried
    first, so a claim named ``https://example.com/roles`` is found although its
    name contains dots.
    """
    value = _resolve_claim(claims, tuple(path))
    if isinstance(value, list | tuple):
        return any(_scalar_equals(item, expected) for item in value)
    return _scalar_equals(value, expected)


def _resolve_claim(node: Any, path: tuple[str, ...]) -> Any:
    if not path:
        return node
    if not isinstance(node, Mapping):
        return _MISSING
    for split in range(len(path), 0, -1):
        key = ".".join(path[:split])
        if key in node:
            found = _resolve_claim(node[key], path[split:])
            if found is not _MISSING:
                return found
    return _MISSING


def _scalar_equals(value: Any, expected: str) -> bool:
    if isinstance(value, str):
        return value == expected
    if isinstance(value, bool):
        return ("true" if value else "false") == expected
    if isinstance(value, int):
        return str(value) == expected
    return False


def _principal_matches(pattern: PrincipalPattern, principal: Principal) -> bool:
    if isinstance(pattern, AnyPrincipal):
        return True
    if isinstance(pattern, AnyUser):
        return principal.kind == "User" and not principal.is_anonymous
    if isinstance(pattern, UserPrincipal):
        return principal.kind == "User" and principal.name == pattern.name
    if isinstance(pattern, ClaimMatch):
        # Only claims the gateway verified itself: in passthrough mode they are the
        # client's own unverified assertions.
        trusted = principal.authenticated_by == "gateway"
        # A namespaced issuer's claim values are qualified like its principal names.
        namespace = principal.namespace
        return (
            trusted
            and pattern.value.startswith(namespace)
            and claim_matches(principal.claims, pattern.path, pattern.value[len(namespace) :])
        )
    raise AssertionError(f"unexpanded principal pattern {pattern!r}")


# --------------------------------------------------------------------------------------
# the engine


@dataclass(frozen=True, slots=True)
class _View:
    """What the rules make of one principal."""

    #: Held so that the ``id()`` in the cache key stays unique while cached.
    claims: Mapping[str, Any]
    super_user: bool
    rules_id: int
    #: The rules naming this principal, by resource type. Held by the view, not only
    #: looked up by ``rules_id``: a decision in a worker thread (large requests, see
    #: ``gateway.enforcement``) keeps working while another clears the caches.
    rules: Mapping[ResourceType, tuple[_Rule, ...]]


class AclEngine:
    """Kafka-style ACL checks for one virtual cluster; implements ``Authorizer``.

    Pure apart from its bounded memo caches (no I/O, no clock), and cheap to call
    repeatedly with the same question. Safe to call from a worker thread while the
    event loop calls it too: caches are only read, added to, or replaced whole.
    """

    def __init__(
        self,
        config: AuthorizationConfig,
        *,
        max_cached_principals: int = DEFAULT_MAX_CACHED_PRINCIPALS,
        max_cached_decisions: int = DEFAULT_MAX_CACHED_DECISIONS,
    ) -> None:
        self.config = config
        groups = config.principal_groups
        self._rules = tuple(_compile_rule(i, r, groups) for i, r in enumerate(config.rules))
        self._super_users = _expand_principals(config.super_users, groups)
        self._default = AclDecision(allowed=config.default == "allow", rule=DEFAULT_RULE)
        self._uses_claims = any(
            isinstance(p, ClaimMatch)
            for patterns in (self._super_users, *(r.principals for r in self._rules))
            for p in patterns
        )
        self._max_views = max_cached_principals
        self._max_decisions = max_cached_decisions
        self._views: dict[object, _View] = {}
        self._decisions: dict[tuple[int, Operation, ResourceType, str], AclDecision] = {}
        # Rule subsets (indices into self._rules) <-> their ids; ids are never reused.
        self._rules_ids: dict[tuple[int, ...], int] = {}
        self._rules_by_id: dict[int, dict[ResourceType, tuple[_Rule, ...]]] = {}
        self._next_id = count()

    @classmethod
    def from_config(cls, config: AuthorizationConfig | None) -> AclEngine | None:
        """The engine for a virtual cluster's ``authorization`` section; None if absent.

        Authorization is on whenever the section is present, even without rules
        (then ``default`` decides everything).
        """
        return None if config is None else cls(config)

    # --- the Authorizer protocol --------------------------------------------------------

    def authorize(
        self,
        principal: Principal,
        operation: Operation,
        resource_type: ResourceType,
        name: str,
    ) -> AclDecision:
        """May ``principal`` perform ``operation`` on the resource ``name`` of ``resource_type``?"""
        view = self._view(principal)
        if view.super_user:
            return _SUPER_USER_ALLOWED
        key = (view.rules_id, operation, resource_type, name)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(view.rules, operation, resource_type, name)
            if len(self._decisions) >= self._max_decisions:
                self._decisions = {}
            self._decisions[key] = decision
        return decision

    def name_decider(
        self, principal: Principal, operation: Operation, resource_type: ResourceType
    ) -> Callable[[str], AclDecision]:
        """``decide(name)``: :meth:`authorize` for many names of one question, cheaply.

        The principal's view and the rules that can match (this resource type, this
        operation) are looked up once; each name then costs one pass over those
        rules (none at all when no rule applies), no cache entry and no hashing of
        the question. For a request naming thousands of resources: its names do not
        flush the decision cache that serves the other connections.
        """
        view = self._view(principal)
        if view.super_user:
            return ConstantDecider(_SUPER_USER_ALLOWED)
        rules = tuple(
            rule for rule in view.rules.get(resource_type, ()) if operation in rule.operations
        )
        default = self._default
        if not rules:
            return ConstantDecider(default)

        def decide(name: str) -> AclDecision:
            allowed_by: AclDecision | None = None
            for rule in rules:  # as _decide: a matching deny wins, else the first allow
                if rule.matches_name(name):
                    if rule.deny:
                        return rule.decision
                    allowed_by = allowed_by or rule.decision
            return allowed_by or default

        return decide

    def authorize_any(
        self, principal: Principal, operation: Operation, resource_type: ResourceType
    ) -> AclDecision:
        """May ``principal`` perform ``operation`` on at least one resource of the type?

        Kafka's ``authorizeByResourceType`` (used e.g. for an idempotent producer's
        InitProducerId: Write on any topic). Allowed when some allow rule is not
        entirely covered by deny rules; a deny matching every name denies. Operations
        imply as in :meth:`authorize` (Kafka only counts the operation itself and
        ``All`` here). Not cached: callers ask once per request, not per resource.
        """
        view = self._view(principal)
        if view.super_user:
            return _SUPER_USER_ALLOWED
        rules = [rule for rule in view.rules.get(resource_type, ()) if operation in rule.operations]
        denies = [rule for rule in rules if rule.deny]
        for deny in denies:
            if deny.covered_prefix == "":
                return deny.decision
        first_dominating: AclDecision | None = None
        for allow in (rule for rule in rules if not rule.deny):
            dominating = next((d for d in denies if _covers(d, allow)), None)
            if dominating is None:
                return allow.decision
            first_dominating = first_dominating or dominating.decision
        if first_dominating is not None and not self._default.allowed:
            return first_dominating
        return self._default

    # --- internals ----------------------------------------------------------------------

    def _view(self, principal: Principal) -> _View:
        key: object = principal
        if self._uses_claims and principal.authenticated_by == "gateway":
            key = (principal, id(principal.claims))
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= self._max_views:
                self._clear_caches()  # before the new view: it interns its rule subset
            view = self._new_view(principal)
            self._views[key] = view
        return view

    def _new_view(self, principal: Principal) -> _View:
        super_user = any(_principal_matches(p, principal) for p in self._super_users)
        indices = tuple(
            i
            for i, rule in enumerate(self._rules)
            if any(_principal_matches(p, principal) for p in rule.principals)
        )
        rules_id = self._rules_ids.get(indices)
        rules = None if rules_id is None else self._rules_by_id.get(rules_id)
        if rules_id is None or rules is None:
            rules_id, rules = next(self._next_id), self._group_by_type(indices)
            self._rules_ids[indices] = rules_id
            self._rules_by_id[rules_id] = rules
        return _View(principal.claims, super_user, rules_id, rules)

    def _group_by_type(self, indices: tuple[int, ...]) -> dict[ResourceType, tuple[_Rule, ...]]:
        by_type: dict[ResourceType, list[_Rule]] = {}
        for i in indices:
            rule = self._rules[i]
            by_type.setdefault(rule.resource_type, []).append(rule)
        return {resource_type: tuple(rules) for resource_type, rules in by_type.items()}

    def _clear_caches(self) -> None:
        # Subsets are only reachable through views and decisions; dropping all three
        # together keeps them bounded and consistent. Replaced, not cleared: a thread
        # holding a view or reading the old dicts is unaffected.
        self._views = {}
        self._decisions = {}
        self._rules_ids = {}
        self._rules_by_id = {}

    def _decide(
        self,
        rules: Mapping[ResourceType, tuple[_Rule, ...]],
        operation: Operation,
        resource_type: ResourceType,
        name: str,
    ) -> AclDecision:
        allowed_by: AclDecision | None = None
        for rule in rules.get(resource_type, ()):
            if operation in rule.operations and rule.matches_name(name):
                if rule.deny:
                    return rule.decision
                allowed_by = allowed_by or rule.decision
        return allowed_by or self._default


def _covers(deny: _Rule, allow: _Rule) -> bool:
    """True if every name ``allow`` matches is certainly matched by ``deny`` too.

    Exact for literal and prefix-like patterns (as Kafka's ``authorizeByResourceType``);
    for other globs only a deny of every name, or of the same glob, counts.
    """
    if allow.covered_prefix is not None:
        prefix = deny.covered_prefix
        return prefix is not None and allow.covered_prefix.startswith(prefix)
    if allow.pattern_type == "literal":
        return deny.matches_name(allow.name_pattern)
    return deny.covered_prefix == "" or (
        deny.pattern_type == allow.pattern_type and deny.name_pattern == allow.name_pattern
    )


class ConstantDecider:
    """A :meth:`AclEngine.name_decider` whose answer does not depend on the name
    (no rule applies, or a super user): callers may skip asking per name."""

    __slots__ = ("decision",)

    def __init__(self, decision: AclDecision) -> None:
        self.decision = decision

    def __call__(self, name: str) -> AclDecision:
        return self.decision
