"""The ``authorization`` section of a virtual cluster: ACL rules in Kafka's vocabulary.

The models follow the conventions of :mod:`policies.config` (frozen, unknown keys
are errors, every field documented, problems reported at the precise key). They
cannot import that module (it imports this one), so the small helpers they need
are repeated here.

Principals in rules and groups are written as text and parsed by
:func:`parse_principal_pattern` into the pattern classes below, which the engine
(:mod:`policies.acl.engine`) matches against a :class:`~policies.auth.principal.Principal`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Self, get_args

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from policies.acl.model import CLUSTER_NAME, Operation, ResourceType
from policies.config_base import Loc, Section, raise_problems

__all__ = [
    "AclRuleConfig",
    "AnyPrincipal",
    "AnyUser",
    "AuthorizationConfig",
    "ClaimMatch",
    "GroupReference",
    "InvalidPrincipalPattern",
    "OperationName",
    "PrincipalPattern",
    "ResourceTypeName",
    "UserPrincipal",
    "parse_principal_pattern",
    "supported_operations",
]

#: Resource types in the YAML spelling (the values of :class:`ResourceType`).
ResourceTypeName = Literal["topic", "group", "transactional_id", "cluster"]
#: Operations in Kafka's spelling (the values of :class:`Operation`).
OperationName = Literal[
    "Read",
    "Write",
    "Create",
    "Delete",
    "Alter",
    "Describe",
    "DescribeConfigs",
    "AlterConfigs",
    "IdempotentWrite",
    "ClusterAction",
    "All",
]
_OPERATION_NAMES: Final[tuple[str, ...]] = get_args(OperationName)
_OPERATIONS_BY_LOWER_NAME: Final = {name.lower(): name for name in _OPERATION_NAMES}

#: Operations that make sense per resource type, as Kafka's ``kafka-acls`` tool checks
#: them (``AclEntry.supportedOperations``); ``All`` is accepted everywhere.
_SUPPORTED_OPERATIONS: Final[dict[ResourceType, frozenset[Operation]]] = {
    ResourceType.TOPIC: frozenset(
        {
            Operation.READ,
            Operation.WRITE,
            Operation.CREATE,
            Operation.DESCRIBE,
            Operation.DELETE,
            Operation.ALTER,
            Operation.DESCRIBE_CONFIGS,
            Operation.ALTER_CONFIGS,
        }
    ),
    # DescribeConfigs/AlterConfigs: group configs (KIP-848).
    ResourceType.GROUP: frozenset(
        {
            Operation.READ,
            Operation.DESCRIBE,
            Operation.DELETE,
            Operation.DESCRIBE_CONFIGS,
            Operation.ALTER_CONFIGS,
        }
    ),
    ResourceType.TRANSACTIONAL_ID: frozenset({Operation.DESCRIBE, Operation.WRITE}),
    ResourceType.CLUSTER: frozenset(
        {
            Operation.CREATE,
            Operation.CLUSTER_ACTION,
            Operation.DESCRIBE_CONFIGS,
            Operation.ALTER_CONFIGS,
            Operation.IDEMPOTENT_WRITE,
            Operation.ALTER,
            Operation.DESCRIBE,
        }
    ),
}

#: Literal resource name that matches every name, as in Kafka.
WILDCARD_NAME: Final = "*"

_GROUP_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_GROUP_NAME_HINT: Final = (
    "group names are letters, digits, '.', '_' and '-', starting with a letter or digit"
)


def supported_operations(resource_type: ResourceType) -> frozenset[Operation]:
    """Operations a rule on ``resource_type`` may name (besides ``All``)."""
    return _SUPPORTED_OPERATIONS[resource_type]


# --------------------------------------------------------------------------------------
# principal patterns


class InvalidPrincipalPattern(ValueError):
    """A principal entry that is not one of the accepted forms; the message says why."""


@dataclass(frozen=True, slots=True)
class AnyPrincipal:
    """``*``: every principal, the anonymous one included."""


@dataclass(frozen=True, slots=True)
class AnyUser:
    """``User:*``: every authenticated user (not the anonymous principal)."""


@dataclass(frozen=True, slots=True)
class UserPrincipal:
    """``User:<name>``: one principal, compared exactly (case-sensitive)."""

    name: str


@dataclass(frozen=True, slots=True)
class GroupReference:
    """``Group:<name>``: the members of a ``principal_groups`` entry."""

    group: str


@dataclass(frozen=True, slots=True)
class ClaimMatch:
    """``Claim:<path>=<value>``: a verified JWT claim equal to, or a list holding, ``value``.

    ``path`` is the dotted claim path split at the dots; a claim whose own name
    contains dots (``https://example.com/roles``) is still found, see the engine.
    """

    path: tuple[str, ...]
    value: str


PrincipalPattern = AnyPrincipal | AnyUser | UserPrincipal | GroupReference | ClaimMatch

_PRINCIPAL_FORMS: Final = (
    "expected 'User:<name>', 'User:*', '*', 'Group:<name>' or 'Claim:<claim>=<value>'"
)


def parse_principal_pattern(text: str) -> PrincipalPattern:
    """Parse one principal entry of a rule, group or ``super_users``.

    Raises :class:`InvalidPrincipalPattern` with a message that says what is wrong.
    """
    if text == "*":
        return AnyPrincipal()
    if text != text.strip():
        raise InvalidPrincipalPattern(f"unexpected white space around {text!r}")
    kind, colon, rest = text.partition(":")
    if not colon:
        raise InvalidPrincipalPattern(f"invalid principal {text!r}: {_PRINCIPAL_FORMS}")
    if kind == "User":
        return _parse_user(text, rest)
    if kind == "Group":
        if _GROUP_NAME_RE.fullmatch(rest) is None:
            raise InvalidPrincipalPattern(f"invalid group reference {text!r}: {_GROUP_NAME_HINT}")
        return GroupReference(rest)
    if kind == "Claim":
        return _parse_claim(text, rest)
    for known in ("User", "Group", "Claim"):
        if kind.lower() == known.lower():
            raise InvalidPrincipalPattern(
                f"invalid principal {text!r}: write {known!r} with this capitalisation"
            )
    raise InvalidPrincipalPattern(
        f"invalid principal type {kind!r} in {text!r}: {_PRINCIPAL_FORMS}"
    )


def _parse_user(text: str, name: str) -> UserPrincipal | AnyUser:
    if name == "*":
        return AnyUser()
    if not name:
        raise InvalidPrincipalPattern(f"invalid principal {text!r}: the user name is empty")
    if name != name.strip():
        raise InvalidPrincipalPattern(f"invalid principal {text!r}: white space around the name")
    if "*" in name:
        # Kafka has no partial principal wildcards; saying so beats a rule that never matches.
        raise InvalidPrincipalPattern(
            f"invalid principal {text!r}: only 'User:*' is a wildcard "
            "(use a principal group or a claim for sets of users)"
        )
    return UserPrincipal(name)


def _parse_claim(text: str, body: str) -> ClaimMatch:
    path, equals, value = body.partition("=")
    if not equals:
        raise InvalidPrincipalPattern(
            f"invalid claim match {text!r}: expected 'Claim:<claim>=<value>'"
        )
    segments = tuple(path.split("."))
    if not path or any(not segment for segment in segments):
        raise InvalidPrincipalPattern(
            f"invalid claim match {text!r}: the claim path must be non-empty names "
            "separated by single dots"
        )
    if not value:
        raise InvalidPrincipalPattern(f"invalid claim match {text!r}: the value is empty")
    return ClaimMatch(segments, value)


def _check_principal(text: str) -> str:
    try:
        parse_principal_pattern(text)
    except InvalidPrincipalPattern as exc:
        raise PydanticCustomError("principal", str(exc)) from None
    return text


def _check_group_name(name: str) -> str:
    if _GROUP_NAME_RE.fullmatch(name) is None:
        raise PydanticCustomError("group_name", f"invalid group name {name!r}: {_GROUP_NAME_HINT}")
    return name


#: A principal entry as written in the file; validated by :func:`parse_principal_pattern`.
PrincipalText = Annotated[str, AfterValidator(_check_principal)]
#: The name of a ``principal_groups`` entry.
GroupName = Annotated[str, AfterValidator(_check_group_name)]


# --------------------------------------------------------------------------------------
# operations


def _canonical_operation(value: Any) -> Any:
    """Accept operation names in any case (``read``, ``READ``); suggest on typos."""
    if not isinstance(value, str):
        return value  # the Literal check reports the wrong type
    canonical = _OPERATIONS_BY_LOWER_NAME.get(value.lower().replace("_", ""))
    if canonical is not None:
        return canonical
    message = f"unknown operation {value!r}"
    close = difflib.get_close_matches(value.lower(), _OPERATIONS_BY_LOWER_NAME, n=1)
    if close:
        message += f" (did you mean {_OPERATIONS_BY_LOWER_NAME[close[0]]!r}?)"
    message += "; expected one of " + ", ".join(_OPERATION_NAMES)
    raise PydanticCustomError("operation", message)


#: An operation name, case-insensitive on input (``_`` ignored: ``describe_configs``).
OperationText = Annotated[OperationName, BeforeValidator(_canonical_operation)]


# --------------------------------------------------------------------------------------
# sections


class AclRuleConfig(Section):
    """One ACL rule: who may (or may not) do what to which resources."""

    principals: list[PrincipalText] = Field(
        min_length=1,
        description=(
            "Who the rule applies to: `User:<name>` (exact), `User:*` (every authenticated "
            "user), `*` (everyone, anonymous included), `Group:<name>` (a `principal_groups` "
            "entry) or `Claim:<claim>=<value>` (an OAUTHBEARER principal whose verified JWT "
            "claim equals the value or is a list containing it; `realm_access.roles=admin` "
            "descends into nested objects). Claims of passthrough principals are never trusted."
        ),
    )
    resource_type: ResourceTypeName = Field(description="The kind of resource the rule protects.")
    pattern_type: Literal["literal", "prefixed", "glob"] = Field(
        default="literal",
        description=(
            "How `resource_name` matches: `literal` (the exact name; `*` matches every "
            "name), `prefixed` (names starting with it) or `glob` (`*` and `?` wildcards, "
            "case-sensitive)."
        ),
    )
    resource_name: str | None = Field(
        default=None,
        description=(
            "The name, prefix or glob to match. Required except for `cluster` rules, where "
            f"it can only be `{CLUSTER_NAME}` (the default) or `*`."
        ),
    )
    operations: list[OperationText] = Field(
        min_length=1,
        description=(
            "Kafka operations the rule covers (case-insensitive). As in Kafka, allowing "
            "`Read`, `Write`, `Delete` or `Alter` also allows `Describe`, and `AlterConfigs` "
            "allows `DescribeConfigs`; `All` covers every operation. Each must apply to the "
            "resource type, as Kafka's `kafka-acls` checks: topic: `Read`, `Write`, `Create`, "
            "`Delete`, `Alter`, `Describe`, `DescribeConfigs`, `AlterConfigs`; group: `Read`, "
            "`Describe`, `Delete`; transactional_id: `Describe`, `Write`; cluster: `Create`, "
            "`ClusterAction`, `DescribeConfigs`, `AlterConfigs`, `IdempotentWrite`, `Alter`, "
            "`Describe`."
        ),
    )
    effect: Literal["allow", "deny"] = Field(
        default="allow",
        description="`allow` or `deny`; a matching `deny` wins over every `allow`.",
    )

    @property
    def resource(self) -> ResourceType:
        """``resource_type`` as the engine's enum."""
        return ResourceType(self.resource_type)

    @property
    def name_pattern(self) -> str:
        """``resource_name``, with the cluster's fixed name filled in for cluster rules."""
        return CLUSTER_NAME if self.resource_name is None else self.resource_name

    @property
    def operation_set(self) -> frozenset[Operation]:
        """``operations`` as the engine's enum."""
        return frozenset(Operation(name) for name in self.operations)

    @model_validator(mode="after")
    def _check_resource(self) -> Self:
        problems = [*self._resource_name_problems(), *self._operation_problems()]
        raise_problems(type(self).__name__, problems)
        return self

    def _resource_name_problems(self) -> list[tuple[Loc, str, str, Any]]:
        name = self.resource_name
        if self.resource_type == "cluster":
            if name is not None and name not in {CLUSTER_NAME, WILDCARD_NAME}:
                message = f"a cluster rule's resource_name is {CLUSTER_NAME!r} (or omitted)"
                return [(("resource_name",), "resource_name", message, name)]
            if self.pattern_type != "literal":
                message = "cluster rules match the one cluster: use pattern_type 'literal'"
                return [(("pattern_type",), "pattern_type", message, self.pattern_type)]
            return []
        if name is None:
            message = (
                f"resource_name is required for {self.resource_type} rules (use '*' for every name)"
            )
            return [(("resource_name",), "resource_name", message, None)]
        if not name:
            return [(("resource_name",), "resource_name", "resource_name is empty", name)]
        if self.pattern_type == "prefixed" and name == WILDCARD_NAME:
            # Kafka reads a prefixed '*' as the literal character; nobody means that.
            message = "a prefixed '*' matches names starting with '*'; use pattern_type 'literal'"
            return [(("resource_name",), "resource_name", message, name)]
        return []

    def _operation_problems(self) -> list[tuple[Loc, str, str, Any]]:
        supported = supported_operations(self.resource)
        problems: list[tuple[Loc, str, str, Any]] = []
        for i, name in enumerate(self.operations):
            operation = Operation(name)
            if operation is not Operation.ALL and operation not in supported:
                choices = ", ".join(op.value for op in Operation if op in supported)
                message = (
                    f"{name} does not apply to {self.resource_type} resources "
                    f"(expected {choices} or All)"
                )
                problems.append((("operations", i), "operation", message, name))
        return problems


class AuthorizationConfig(Section):
    """ACL rules of one virtual cluster, checked with Kafka's semantics."""

    default: Literal["allow", "deny"] = Field(
        default="deny",
        description="What happens to a request that no rule matches: `allow` or `deny`.",
    )
    super_users: list[PrincipalText] = Field(
        default_factory=list,
        description=(
            "Principals that are always allowed, like Kafka's `super.users` (same forms as "
            "a rule's `principals`)."
        ),
    )
    principal_groups: dict[GroupName, list[PrincipalText]] = Field(
        default_factory=dict,
        description=(
            "Named sets of principals, used in rules as `Group:<name>`. Members use the "
            "forms of a rule's `principals`, except `Group:` (groups do not nest)."
        ),
    )
    rules: list[AclRuleConfig] = Field(
        default_factory=list,
        description="The ACL rules; their order does not matter (a matching `deny` wins).",
    )

    @model_validator(mode="after")
    def _check_group_references(self) -> Self:
        problems: list[tuple[Loc, str, str, Any]] = []
        for group, members in self.principal_groups.items():
            for j, member in enumerate(members):
                if isinstance(parse_principal_pattern(member), GroupReference):
                    message = f"groups cannot contain groups: {member!r}"
                    problems.append((("principal_groups", group, j), "principal", message, member))
        problems += self._unknown_groups(("super_users",), self.super_users)
        for i, rule in enumerate(self.rules):
            problems += self._unknown_groups(("rules", i, "principals"), rule.principals)
        raise_problems(type(self).__name__, problems)
        return self

    def _unknown_groups(self, where: Loc, principals: list[str]) -> list[tuple[Loc, str, str, Any]]:
        problems: list[tuple[Loc, str, str, Any]] = []
        for j, text in enumerate(principals):
            pattern = parse_principal_pattern(text)
            if isinstance(pattern, GroupReference) and pattern.group not in self.principal_groups:
                message = f"unknown group {pattern.group!r} (not in principal_groups)"
                close = difflib.get_close_matches(pattern.group, self.principal_groups, n=1)
                if close:
                    message += f" (did you mean 'Group:{close[0]}'?)"
                problems.append(((*where, j), "unknown_group", message, text))
        return problems
