"""The ACL engine: Kafka's matching and precedence rules, claims, and its caches."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.acl.config import AuthorizationConfig, supported_operations
from policies.acl.engine import AclEngine, claim_matches
from policies.acl.model import CLUSTER_NAME, AclDecision, Authorizer, Operation, ResourceType
from policies.auth.principal import ANONYMOUS, AuthSource, Principal

READ, WRITE, DESCRIBE = Operation.READ, Operation.WRITE, Operation.DESCRIBE
TOPIC, GROUP, CLUSTER = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER

ALICE = Principal("alice", "PLAIN")
BOB = Principal("bob", "SCRAM-SHA-256")


def rule(
    *principals: str,
    operations: tuple[str, ...] = ("Read",),
    resource_type: str = "topic",
    name: str | None = "orders",
    pattern_type: str = "literal",
    effect: str = "allow",
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "principals": list(principals),
        "resource_type": resource_type,
        "pattern_type": pattern_type,
        "operations": list(operations),
        "effect": effect,
    }
    if name is not None:
        out["resource_name"] = name
    return out


def config(*rules: dict[str, Any], **section: Any) -> AuthorizationConfig:
    return AuthorizationConfig.model_validate({"rules": list(rules), **section})


def engine(*rules: dict[str, Any], **section: Any) -> AclEngine:
    return AclEngine(config(*rules, **section))


def oauth(name: str, claims: Mapping[str, Any], *, by: AuthSource = "gateway") -> Principal:
    return Principal(name, "OAUTHBEARER", claims=claims, authenticated_by=by)


def allowed(
    acl: AclEngine, principal: Principal, op: Operation, rt: ResourceType, name: str
) -> bool:
    return acl.authorize(principal, op, rt, name).allowed


# --------------------------------------------------------------------------------------
# construction


def test_from_config() -> None:
    assert AclEngine.from_config(None) is None
    acl = AclEngine.from_config(AuthorizationConfig())
    assert isinstance(acl, AclEngine)
    # Present but empty: authorization is on, and the default (deny) decides everything.
    assert acl.authorize(ALICE, READ, TOPIC, "t") == AclDecision(False, "default")
    authorizer: Authorizer = acl  # the protocol is satisfied
    assert authorizer.authorize(ALICE, READ, TOPIC, "t").rule == "default"


@pytest.mark.parametrize("default", ["allow", "deny"])
def test_default_decides_when_no_rule_matches(default: str) -> None:
    acl = engine(rule("User:alice"), default=default)
    assert acl.authorize(ALICE, READ, TOPIC, "orders") == AclDecision(True, "rules[0]")
    expected = AclDecision(default == "allow", "default")
    assert acl.authorize(ALICE, WRITE, TOPIC, "orders") == expected  # other operation
    assert acl.authorize(ALICE, READ, TOPIC, "payments") == expected  # other name
    assert acl.authorize(ALICE, READ, GROUP, "orders") == expected  # other resource type
    assert acl.authorize(BOB, READ, TOPIC, "orders") == expected  # other principal


# --------------------------------------------------------------------------------------
# resource name patterns


@pytest.mark.parametrize(
    ("pattern_type", "pattern", "matching", "other"),
    [
        ("literal", "orders", ["orders"], ["orders2", "Orders", "order", ""]),
        ("literal", "*", ["orders", "*", "x.y"], []),
        ("prefixed", "orders.", ["orders.", "orders.eu"], ["orders", "Orders.eu", "x.orders."]),
        ("glob", "orders.*", ["orders.", "orders.eu.1"], ["orders", "ORDERS.eu"]),
        ("glob", "*.v?", ["a.v1", ".v2"], ["a.v10", "a.v"]),
        ("glob", "a[1]*", ["a[1]", "a[1]x"], ["a1", "a1x"]),  # brackets are literal
        ("glob", "a.b", ["a.b"], ["axb"]),  # '.' is literal too
        ("glob", "**", ["", "anything"], []),
    ],
)
def test_name_patterns(
    pattern_type: str, pattern: str, matching: list[str], other: list[str]
) -> None:
    acl = engine(rule("User:alice", name=pattern, pattern_type=pattern_type))
    for name in matching:
        assert allowed(acl, ALICE, READ, TOPIC, name), name
    for name in other:
        assert not allowed(acl, ALICE, READ, TOPIC, name), name


def test_cluster_rules() -> None:
    acl = engine(
        rule("User:alice", resource_type="cluster", name=None, operations=("IdempotentWrite",)),
        rule("User:bob", resource_type="cluster", name="*", operations=("Alter",)),
    )
    assert (
        acl.authorize(ALICE, Operation.IDEMPOTENT_WRITE, CLUSTER, CLUSTER_NAME).rule == "rules[0]"
    )
    assert acl.authorize(BOB, Operation.ALTER, CLUSTER, CLUSTER_NAME).rule == "rules[1]"
    assert not allowed(acl, ALICE, Operation.IDEMPOTENT_WRITE, TOPIC, CLUSTER_NAME)


def test_resource_types_are_separate() -> None:
    acl = engine(rule("User:alice", resource_type="group", name="*"))
    assert allowed(acl, ALICE, READ, GROUP, "orders")
    assert not allowed(acl, ALICE, READ, TOPIC, "orders")
    assert not allowed(acl, ALICE, READ, ResourceType.TRANSACTIONAL_ID, "orders")


# --------------------------------------------------------------------------------------
# principals


def test_exact_user_is_case_sensitive() -> None:
    acl = engine(rule("User:alice"))
    assert allowed(acl, ALICE, READ, TOPIC, "orders")
    assert not allowed(acl, Principal("Alice", "PLAIN"), READ, TOPIC, "orders")
    # The mechanism does not matter, only the principal name.
    assert allowed(acl, Principal("alice", "MTLS"), READ, TOPIC, "orders")


def test_any_user_excludes_anonymous_but_star_does_not() -> None:
    users = engine(rule("User:*"))
    everyone = engine(rule("*"))
    for principal in (ALICE, BOB, Principal("CN=x,O=y", "MTLS")):
        assert allowed(users, principal, READ, TOPIC, "orders")
        assert allowed(everyone, principal, READ, TOPIC, "orders")
    assert not allowed(users, ANONYMOUS, READ, TOPIC, "orders")
    assert allowed(everyone, ANONYMOUS, READ, TOPIC, "orders")
    assert allowed(engine(rule("User:ANONYMOUS")), ANONYMOUS, READ, TOPIC, "orders")


def test_groups() -> None:
    acl = engine(
        rule("Group:readers"),
        rule("User:carol", "Group:writers", operations=("Write",)),
        principal_groups={"readers": ["User:alice", "User:bob"], "writers": ["User:bob"]},
    )
    assert acl.authorize(ALICE, READ, TOPIC, "orders") == AclDecision(True, "rules[0]")
    assert acl.authorize(BOB, WRITE, TOPIC, "orders") == AclDecision(True, "rules[1]")
    assert not allowed(acl, ALICE, WRITE, TOPIC, "orders")
    assert not allowed(acl, Principal("dave", "PLAIN"), READ, TOPIC, "orders")


@pytest.mark.parametrize(
    ("claims", "pattern", "expected"),
    [
        ({"team": "a"}, "Claim:team=a", True),
        ({"team": "ab"}, "Claim:team=a", False),
        ({"team": "A"}, "Claim:team=a", False),
        ({"roles": ["x", "a"]}, "Claim:roles=a", True),
        ({"roles": []}, "Claim:roles=a", False),
        ({"roles": [["a"]]}, "Claim:roles=a", False),  # nested lists are not searched
        ({"realm_access": {"roles": ["admin"]}}, "Claim:realm_access.roles=admin", True),
        ({"realm_access": {"roles": ["user"]}}, "Claim:realm_access.roles=admin", False),
        ({"realm_access": ["admin"]}, "Claim:realm_access.roles=admin", False),
        ({"a": {"b": {"c": "d"}}}, "Claim:a.b.c=d", True),
        ({"a": {"b": {"c": "d"}}}, "Claim:a.b=d", False),
        ({"https://x.io/roles": ["admin"]}, "Claim:https://x.io/roles=admin", True),
        # The longest existing name wins ("a.b", then "c"); shorter ones only if it has no "c".
        ({"a.b": {"c": 1}, "a": {"b.c": 2}}, "Claim:a.b.c=1", True),
        ({"a.b": {"c": 1}, "a": {"b.c": 2}}, "Claim:a.b.c=2", False),
        ({"a.b": {"x": 1}, "a": {"b.c": 2}}, "Claim:a.b.c=2", True),
        ({"level": 3}, "Claim:level=3", True),
        ({"verified": True}, "Claim:verified=true", True),
        ({"verified": False}, "Claim:verified=true", False),
        ({"ratio": 1.0}, "Claim:ratio=1", False),
        ({}, "Claim:team=a", False),
    ],
)
def test_claims(claims: dict[str, Any], pattern: str, expected: bool) -> None:
    acl = engine(rule(pattern))
    assert allowed(acl, oauth("u", claims), READ, TOPIC, "orders") is expected
    path, value = pattern.removeprefix("Claim:").split("=", 1)
    assert claim_matches(claims, path.split("."), value) is expected


def test_claims_of_passthrough_principals_are_not_trusted() -> None:
    acl = engine(rule("Claim:roles=admin"), super_users=["Claim:roles=root"])
    claims = {"roles": ["admin", "root"]}
    assert acl.authorize(oauth("eve", claims), READ, TOPIC, "x").rule == "super_users"
    untrusted = oauth("eve", claims, by="upstream")
    assert acl.authorize(untrusted, READ, TOPIC, "orders") == AclDecision(False, "default")
    # ... while its name still counts.
    assert allowed(engine(rule("User:eve")), untrusted, READ, TOPIC, "orders")


def test_claims_of_a_namespaced_issuer_are_qualified_by_its_prefix() -> None:
    """Issuer B minting ``groups: [admins]`` does not match a rule written for issuer A."""
    acl = engine(
        rule("Claim:groups=idp-a/admins"),
        super_users=["User:idp-a/root", "Claim:level=idp-a/9"],
    )
    claims = {"groups": ["admins"], "level": 9}
    from_a = Principal("idp-a/alice", "OAUTHBEARER", claims=claims, namespace="idp-a/")
    from_b = Principal("idp-b/alice", "OAUTHBEARER", claims=claims, namespace="idp-b/")
    assert allowed(acl, from_a, READ, TOPIC, "orders")
    assert not allowed(acl, from_b, READ, TOPIC, "orders")
    assert acl.authorize(from_a, DESCRIBE, TOPIC, "x").rule == "super_users"
    assert acl.authorize(from_b, DESCRIBE, TOPIC, "x").rule == "default"
    root_b = Principal("idp-b/root", "OAUTHBEARER", claims={}, namespace="idp-b/")
    assert not allowed(acl, root_b, DESCRIBE, TOPIC, "x")
    # an un-namespaced principal compares the claim value as written
    assert not allowed(acl, oauth("alice", claims), READ, TOPIC, "orders")
    assert allowed(acl, oauth("alice", {"groups": ["idp-a/admins"]}), READ, TOPIC, "orders")


# --------------------------------------------------------------------------------------
# operations and precedence


@pytest.mark.parametrize(
    ("granted", "implied"),
    [
        ("Read", Operation.DESCRIBE),
        ("Write", Operation.DESCRIBE),
        ("Delete", Operation.DESCRIBE),
        ("Alter", Operation.DESCRIBE),
        ("AlterConfigs", Operation.DESCRIBE_CONFIGS),
    ],
)
def test_allow_implications(granted: str, implied: Operation) -> None:
    acl = engine(rule("User:alice", operations=(granted,)))
    assert acl.authorize(ALICE, implied, TOPIC, "orders") == AclDecision(True, "rules[0]")


@pytest.mark.parametrize(
    ("granted", "asked"),
    [
        ("Create", Operation.DESCRIBE),
        ("DescribeConfigs", Operation.DESCRIBE),
        ("Describe", Operation.READ),
        ("Write", Operation.READ),
        ("DescribeConfigs", Operation.ALTER_CONFIGS),
        ("Alter", Operation.ALTER_CONFIGS),
        ("AlterConfigs", Operation.ALTER),
    ],
)
def test_no_other_implications(granted: str, asked: Operation) -> None:
    assert not allowed(
        engine(rule("User:alice", operations=(granted,))), ALICE, asked, TOPIC, "orders"
    )


def test_all_covers_every_operation() -> None:
    acl = engine(rule("User:alice", operations=("All",)))
    for operation in supported_operations(TOPIC):
        assert allowed(acl, ALICE, operation, TOPIC, "orders"), operation


def test_deny_wins_regardless_of_order() -> None:
    deny = rule("User:alice", name="orders.", pattern_type="prefixed", effect="deny")
    allow = rule("User:*", name="*", operations=("All",))
    for rules, deny_index in (((deny, allow), 0), ((allow, deny), 1)):
        acl = engine(*rules)
        assert acl.authorize(ALICE, READ, TOPIC, "orders.eu") == AclDecision(
            False, f"rules[{deny_index}]"
        )
        assert allowed(acl, ALICE, WRITE, TOPIC, "orders.eu")
        assert allowed(acl, BOB, READ, TOPIC, "orders.eu")


def test_deny_does_not_imply() -> None:
    acl = engine(
        rule("User:alice", operations=("All",)),
        rule("User:alice", operations=("Read", "AlterConfigs"), effect="deny"),
    )
    assert not allowed(acl, ALICE, READ, TOPIC, "orders")
    assert allowed(acl, ALICE, DESCRIBE, TOPIC, "orders")
    assert allowed(acl, ALICE, Operation.DESCRIBE_CONFIGS, TOPIC, "orders")


def test_deny_all_denies_describe() -> None:
    acl = engine(
        rule("User:alice", operations=("Write",)), rule("*", operations=("All",), effect="deny")
    )
    assert acl.authorize(ALICE, DESCRIBE, TOPIC, "orders") == AclDecision(False, "rules[1]")


def test_deny_wins_over_default_allow() -> None:
    acl = engine(rule("User:alice", effect="deny"), default="allow")
    assert acl.authorize(ALICE, READ, TOPIC, "orders") == AclDecision(False, "rules[0]")
    assert acl.authorize(ALICE, READ, TOPIC, "other") == AclDecision(True, "default")


def test_first_matching_allow_is_reported() -> None:
    acl = engine(rule("User:bob"), rule("User:alice", name="*"), rule("User:alice"))
    assert acl.authorize(ALICE, READ, TOPIC, "orders").rule == "rules[1]"


def test_super_users_bypass_denies() -> None:
    acl = engine(
        rule("*", name="*", operations=("All",), effect="deny"),
        super_users=["User:admin", "Group:ops"],
        principal_groups={"ops": ["User:olga"]},
    )
    for name in ("admin", "olga"):
        decision = acl.authorize(Principal(name, "PLAIN"), Operation.DELETE, TOPIC, "x")
        assert decision == AclDecision(True, "super_users")
    assert acl.authorize(ALICE, READ, TOPIC, "x") == AclDecision(False, "rules[0]")


# --------------------------------------------------------------------------------------
# authorize_any (Kafka's authorizeByResourceType)


@pytest.mark.parametrize(
    ("rules", "default", "expected"),
    [
        ([], "deny", AclDecision(False, "default")),
        ([], "allow", AclDecision(True, "default")),
        ([rule("User:alice", operations=("Write",))], "deny", AclDecision(True, "rules[0]")),
        ([rule("User:bob", operations=("Write",))], "deny", AclDecision(False, "default")),
        # an allow entirely covered by denies: literal, shorter prefix, every name
        (
            [
                rule("User:alice", operations=("Write",)),
                rule("*", operations=("All",), effect="deny"),
            ],
            "deny",
            AclDecision(False, "rules[1]"),
        ),
        (
            [
                rule(
                    "User:alice", name="orders.eu", pattern_type="prefixed", operations=("Write",)
                ),
                rule(
                    "*",
                    name="orders.",
                    pattern_type="prefixed",
                    operations=("Write",),
                    effect="deny",
                ),
            ],
            "deny",
            AclDecision(False, "rules[1]"),
        ),
        (
            [
                rule("User:alice", name="orders.*", pattern_type="glob", operations=("Write",)),
                rule(
                    "*",
                    name="orders",
                    pattern_type="prefixed",
                    operations=("Write",),
                    effect="deny",
                ),
            ],
            "deny",
            AclDecision(False, "rules[1]"),
        ),
        (
            [
                rule("User:alice", name="a", operations=("Write",)),
                rule(
                    "User:alice", name="*", pattern_type="glob", operations=("All",), effect="deny"
                ),
            ],
            "allow",
            AclDecision(False, "rules[1]"),
        ),
        # partly covered: some topic is still writable
        (
            [
                rule("User:alice", name="orders.", pattern_type="prefixed", operations=("Write",)),
                rule(
                    "*",
                    name="orders.eu",
                    pattern_type="prefixed",
                    operations=("Write",),
                    effect="deny",
                ),
            ],
            "deny",
            AclDecision(True, "rules[0]"),
        ),
        (
            [
                rule("User:alice", name="*", operations=("Write",)),
                rule("*", name="?", pattern_type="glob", operations=("Write",), effect="deny"),
            ],
            "deny",
            AclDecision(True, "rules[0]"),
        ),
        # a covered allow with default allow: names no rule matches stay allowed
        (
            [
                rule("User:alice", operations=("Write",)),
                rule("User:alice", operations=("Write",), effect="deny"),
            ],
            "allow",
            AclDecision(True, "default"),
        ),
        # a deny of another operation changes nothing
        (
            [rule("User:alice", operations=("Write",)), rule("*", name="*", effect="deny")],
            "deny",
            AclDecision(True, "rules[0]"),
        ),
    ],
)
def test_authorize_any(rules: list[dict[str, Any]], default: str, expected: AclDecision) -> None:
    acl = engine(*rules, default=default)
    assert acl.authorize_any(ALICE, WRITE, TOPIC) == expected


def test_authorize_any_super_user() -> None:
    acl = engine(
        rule("*", name="*", operations=("All",), effect="deny"), super_users=["User:alice"]
    )
    assert acl.authorize_any(ALICE, WRITE, TOPIC) == AclDecision(True, "super_users")


# --------------------------------------------------------------------------------------
# caching


def test_principals_differing_only_in_claims_do_not_share_decisions() -> None:
    acl = engine(rule("Claim:roles=reader"))
    reader = oauth("svc", {"roles": ["reader"]})
    stranger = oauth("svc", {"roles": ["guest"]})
    assert reader == stranger  # Principal equality ignores claims: the cache must not.
    for _ in range(3):
        assert allowed(acl, reader, READ, TOPIC, "orders")
        assert not allowed(acl, stranger, READ, TOPIC, "orders")
        # Equal claims in a new object (a new connection) give the same answer.
        assert allowed(acl, oauth("svc", {"roles": ["reader"]}), READ, TOPIC, "orders")


def test_passthrough_and_verified_principal_of_the_same_name() -> None:
    acl = engine(rule("Claim:roles=reader"))
    claims = {"roles": ["reader"]}
    for _ in range(2):
        assert allowed(acl, oauth("svc", claims), READ, TOPIC, "orders")
        assert not allowed(acl, oauth("svc", claims, by="upstream"), READ, TOPIC, "orders")


def test_caches_stay_bounded_and_correct() -> None:
    acl = AclEngine(
        config(rule("User:*", name="t1", pattern_type="prefixed")),
        max_cached_principals=3,
        max_cached_decisions=5,
    )
    for round_ in range(3):
        for i in range(20):
            principal = Principal(f"user{i}", "PLAIN")
            assert allowed(acl, principal, READ, TOPIC, f"t{i}") is str(i).startswith("1"), round_
    assert len(acl._views) <= 3
    assert len(acl._decisions) <= 5


def test_a_view_outlives_a_cache_reset_between_its_lookup_and_its_use() -> None:
    # A decision thread (gateway.decision_threads) may look a principal up just
    # before the event loop resets the caches for another principal: the view it
    # holds must still decide, from its own rules.
    acl = engine(rule("User:alice", name="orders"), rule("User:alice", name="x", effect="deny"))
    lookup = acl._view

    def lookup_then_reset(principal: Principal) -> Any:
        view = lookup(principal)
        acl._clear_caches()
        return view

    acl._view = lookup_then_reset  # type: ignore[method-assign]
    assert allowed(acl, ALICE, READ, TOPIC, "orders")
    assert not allowed(acl, ALICE, READ, TOPIC, "x")
    assert acl.name_decider(ALICE, READ, TOPIC)("orders").allowed
    assert acl.authorize_any(ALICE, READ, TOPIC).allowed


# --------------------------------------------------------------------------------------
# properties against a reference implementation (no caching, Kafka's rules spelt out)

USERS = ["alice", "bob", "carol"]
PRINCIPAL_TEXTS = [
    "*",
    "User:*",
    "User:alice",
    "User:bob",
    "User:ANONYMOUS",
    "Group:g1",
    "Group:g2",
    "Claim:roles=admin",
    "Claim:org.team=x",
]
GROUP_MEMBERS = ["User:alice", "User:carol", "User:*", "Claim:roles=admin"]
NAME_CHARS = "ab."
GLOB_CHARS = "ab.*?"

IMPLIES_DESCRIBE = {"Read", "Write", "Delete", "Alter"}


def reference_matches_principal(
    text: str, principal: Principal, groups: Mapping[str, list[str]]
) -> bool:
    if text == "*":
        return True
    kind, _, rest = text.partition(":")
    if kind == "Group":
        return any(reference_matches_principal(m, principal, groups) for m in groups[rest])
    if kind == "Claim":
        if principal.authenticated_by != "gateway":
            return False
        path, _, value = rest.partition("=")
        node: Any = principal.claims
        for key in path.split("."):
            if not isinstance(node, Mapping) or key not in node:
                return False
            node = node[key]
        return node == value or (isinstance(node, list) and value in node)
    if rest == "*":
        return not principal.is_anonymous
    return principal.name == rest


def reference_matches_name(pattern_type: str, pattern: str, name: str) -> bool:
    if pattern_type == "prefixed":
        return name.startswith(pattern)
    if pattern_type == "glob":
        return fnmatch.fnmatchcase(name, pattern)  # no '[' in the generated globs
    return pattern in (name, "*")


def reference_covers(effect: str, operations: list[str], operation: Operation) -> bool:
    if "All" in operations or operation.value in operations:
        return True
    if effect == "deny":
        return False
    if operation is Operation.DESCRIBE:
        return bool(IMPLIES_DESCRIBE & set(operations))
    return operation is Operation.DESCRIBE_CONFIGS and "AlterConfigs" in operations


def reference(
    section: AuthorizationConfig,
    principal: Principal,
    operation: Operation,
    resource_type: ResourceType,
    name: str,
) -> AclDecision:
    groups = section.principal_groups
    if any(reference_matches_principal(t, principal, groups) for t in section.super_users):
        return AclDecision(True, "super_users")
    matching = [
        (i, r)
        for i, r in enumerate(section.rules)
        if r.resource_type == resource_type.value
        and any(reference_matches_principal(t, principal, groups) for t in r.principals)
        and reference_matches_name(r.pattern_type, r.name_pattern, name)
        and reference_covers(r.effect, list(r.operations), operation)
    ]
    for effect in ("deny", "allow"):
        for i, r in matching:
            if r.effect == effect:
                return AclDecision(effect == "allow", f"rules[{i}]")
    return AclDecision(section.default == "allow", "default")


@st.composite
def rules_strategy(draw: st.DrawFn) -> dict[str, Any]:
    resource_type = draw(st.sampled_from(list(ResourceType)))
    supported = sorted(op.value for op in supported_operations(resource_type))
    operations = draw(st.lists(st.sampled_from([*supported, "All"]), min_size=1, max_size=3))
    out: dict[str, Any] = {
        "principals": draw(st.lists(st.sampled_from(PRINCIPAL_TEXTS), min_size=1, max_size=2)),
        "resource_type": resource_type.value,
        "operations": operations,
        "effect": draw(st.sampled_from(["allow", "deny"])),
    }
    if resource_type is not ResourceType.CLUSTER:
        pattern_type = draw(st.sampled_from(["literal", "prefixed", "glob"]))
        if pattern_type == "literal":
            name = draw(st.one_of(st.just("*"), st.text(NAME_CHARS, min_size=1, max_size=3)))
        elif pattern_type == "prefixed":
            name = draw(st.text(NAME_CHARS, min_size=1, max_size=2))
        else:
            name = draw(st.text(GLOB_CHARS, min_size=1, max_size=3))
        out |= {"pattern_type": pattern_type, "resource_name": name}
    return out


sections = st.builds(
    lambda rules, default, super_users, g1, g2: AuthorizationConfig.model_validate(
        {
            "rules": rules,
            "default": default,
            "super_users": super_users,
            "principal_groups": {"g1": g1, "g2": g2},
        }
    ),
    st.lists(rules_strategy(), max_size=6),
    st.sampled_from(["allow", "deny"]),
    st.lists(st.sampled_from(["User:carol", "Claim:org.team=root", "Group:g2"]), max_size=1),
    st.lists(st.sampled_from(GROUP_MEMBERS), max_size=2),
    st.lists(st.sampled_from(GROUP_MEMBERS), max_size=2),
)

claims_strategy = st.fixed_dictionaries(
    {},
    optional={
        "roles": st.one_of(
            st.just("admin"), st.lists(st.sampled_from(["admin", "dev"]), max_size=2)
        ),
        "org": st.fixed_dictionaries({"team": st.sampled_from(["x", "y", "root"])}),
    },
)

principals = st.one_of(
    st.just(ANONYMOUS),
    st.builds(Principal, st.sampled_from(USERS), st.just("PLAIN")),
    st.builds(
        lambda name, claims, by: oauth(name, claims, by=by),
        st.sampled_from(USERS),
        claims_strategy,
        st.sampled_from(["gateway", "upstream"]),
    ),
)


@st.composite
def questions(draw: st.DrawFn) -> tuple[Principal, Operation, ResourceType, str]:
    resource_type = draw(st.sampled_from(list(ResourceType)))
    operation = draw(st.sampled_from(sorted(supported_operations(resource_type), key=str)))
    if resource_type is ResourceType.CLUSTER:
        name = CLUSTER_NAME
    else:
        name = draw(st.text(NAME_CHARS, max_size=3))
    return draw(principals), operation, resource_type, name


@settings(max_examples=300, deadline=None)
@given(
    sections,
    st.lists(questions(), min_size=1, max_size=12),
    st.sampled_from([1, 2, 10_000]),
)
def test_engine_equals_reference(
    section: AuthorizationConfig,
    asked: list[tuple[Principal, Operation, ResourceType, str]],
    cache_size: int,
) -> None:
    acl = AclEngine(section, max_cached_principals=cache_size, max_cached_decisions=cache_size)
    # Each question twice, so that the second answer comes from the caches.
    for question in asked + asked:
        assert acl.authorize(*question) == reference(section, *question), question


@settings(max_examples=200, deadline=None)
@given(sections, rules_strategy(), questions())
def test_adding_a_deny_never_allows_more(
    section: AuthorizationConfig,
    extra: dict[str, Any],
    question: tuple[Principal, Operation, ResourceType, str],
) -> None:
    extra["effect"] = "deny"
    before = AclEngine(section).authorize(*question)
    data = section.model_dump()
    bigger = AuthorizationConfig.model_validate({**data, "rules": [*data["rules"], extra]})
    after = AclEngine(bigger).authorize(*question)
    assert after.allowed <= before.allowed
    if (
        before.rule != "super_users"
        and reference(bigger, *question).rule == f"rules[{len(section.rules)}]"
    ):
        # The new deny matches this question: it decides, whatever allowed before.
        assert not after.allowed


@settings(max_examples=200, deadline=None)
@given(sections, rules_strategy(), questions())
def test_adding_an_allow_never_denies_more(
    section: AuthorizationConfig,
    extra: dict[str, Any],
    question: tuple[Principal, Operation, ResourceType, str],
) -> None:
    extra["effect"] = "allow"
    before = AclEngine(section).authorize(*question)
    data = section.model_dump()
    bigger = AuthorizationConfig.model_validate({**data, "rules": [*data["rules"], extra]})
    assert AclEngine(bigger).authorize(*question).allowed >= before.allowed


@settings(max_examples=100, deadline=None)
@given(sections, principals, st.sampled_from(list(ResourceType)), st.data())
def test_authorize_any_agrees_with_some_name(
    section: AuthorizationConfig,
    principal: Principal,
    resource_type: ResourceType,
    data: st.DataObject,
) -> None:
    operation = data.draw(st.sampled_from(sorted(supported_operations(resource_type), key=str)))
    acl = AclEngine(section)
    # If some concrete name is allowed, "any" must be allowed too (it may allow more:
    # like Kafka, it does not prove the glob/prefix arithmetic exactly).
    names = (
        [CLUSTER_NAME] if resource_type is ResourceType.CLUSTER else ["", "a", "a.", "ab", "b.a"]
    )
    if any(acl.authorize(principal, operation, resource_type, n).allowed for n in names):
        assert acl.authorize_any(principal, operation, resource_type).allowed
