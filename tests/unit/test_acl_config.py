"""The ``authorization`` section: parsing, defaults, and line-precise validation errors."""

from __future__ import annotations

from textwrap import dedent, indent
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.acl.config import (
    AnyPrincipal,
    AnyUser,
    AuthorizationConfig,
    ClaimMatch,
    GroupReference,
    InvalidPrincipalPattern,
    OperationName,
    ResourceTypeName,
    UserPrincipal,
    parse_principal_pattern,
    supported_operations,
)
from policies.acl.model import CLUSTER_NAME, Operation, ResourceType
from policies.config_loader import ConfigError, ConfigProblem, parse_config

CLUSTER = """\
virtual_clusters:
  - name: local
    listener:
      bootstrap: 127.0.0.1:9092
    upstream:
      bootstrap_servers: [127.0.0.1:19092]
"""
#: The 1-based line of the first line of an authorization section appended to CLUSTER.
FIRST = CLUSTER.count("\n") + 1


def with_authorization(section: str) -> str:
    """CLUSTER with ``authorization:`` followed by ``section`` (written at column 0)."""
    return CLUSTER + "    authorization:\n" + indent(dedent(section), " " * 6)


def authorization(section: str) -> AuthorizationConfig:
    config = parse_config(with_authorization(section), "acl.yaml", env={})
    result = config.virtual_clusters[0].authorization
    assert result is not None
    return result


def problems(section: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        parse_config(with_authorization(section), "acl.yaml", env={})
    return info.value.problems


def only_problem(section: str) -> tuple[str, int | None, str]:
    """``(path below authorization, line within the section, message)`` of the one problem."""
    (problem,) = problems(section)
    prefix = "virtual_clusters[0].authorization."
    assert problem.path.startswith(prefix), problem
    line = None if problem.line is None else problem.line - FIRST
    return problem.path.removeprefix(prefix), line, problem.message


# --------------------------------------------------------------------------------------
# valid sections


def test_absent_section_means_no_authorization() -> None:
    assert parse_config(CLUSTER, env={}).virtual_clusters[0].authorization is None


def test_empty_section_defaults_to_deny_without_rules() -> None:
    config = parse_config(CLUSTER + "    authorization: {}\n", env={})
    section = config.virtual_clusters[0].authorization
    assert section == AuthorizationConfig()
    assert (section.default, section.super_users, section.rules) == ("deny", [], [])
    assert section.principal_groups == {}


def test_full_section() -> None:
    section = authorization(
        """\
        default: allow
        super_users: ["User:admin"]
        principal_groups:
          readers: ["User:bob", "User:carol"]
        rules:
          - principals: ["User:alice", "Group:readers", "Claim:realm_access.roles=ops"]
            resource_type: topic
            pattern_type: prefixed
            resource_name: "orders."
            operations: [write, DESCRIBE, describe_configs]
            effect: deny
          - principals: ["*"]
            resource_type: cluster
            operations: [idempotent_write]
        """
    )
    assert section.default == "allow"
    assert section.super_users == ["User:admin"]
    assert section.principal_groups == {"readers": ["User:bob", "User:carol"]}
    first, second = section.rules
    assert first.operations == ["Write", "Describe", "DescribeConfigs"]
    assert first.operation_set == {Operation.WRITE, Operation.DESCRIBE, Operation.DESCRIBE_CONFIGS}
    assert (first.resource, first.pattern_type, first.name_pattern, first.effect) == (
        ResourceType.TOPIC,
        "prefixed",
        "orders.",
        "deny",
    )
    # Defaults: literal pattern, allow, and the cluster's fixed name.
    assert (second.pattern_type, second.effect, second.resource_name) == ("literal", "allow", None)
    assert second.name_pattern == CLUSTER_NAME
    assert second.operation_set == {Operation.IDEMPOTENT_WRITE}


@pytest.mark.parametrize("name", [CLUSTER_NAME, "*"])
def test_cluster_rule_names(name: str) -> None:
    section = authorization(
        f"""\
        rules:
          - principals: ["User:a"]
            resource_type: cluster
            resource_name: "{name}"
            operations: [Alter]
        """
    )
    assert section.rules[0].name_pattern == name


def test_vocabulary_matches_the_model_enums() -> None:
    assert set(get_args(OperationName)) == {op.value for op in Operation}
    assert set(get_args(ResourceTypeName)) == {rt.value for rt in ResourceType}


def test_supported_operations_follow_kafka() -> None:
    assert supported_operations(ResourceType.GROUP) == {
        Operation.READ,
        Operation.DESCRIBE,
        Operation.DELETE,
        Operation.DESCRIBE_CONFIGS,  # group configs, KIP-848
        Operation.ALTER_CONFIGS,
    }
    assert supported_operations(ResourceType.TRANSACTIONAL_ID) == {
        Operation.DESCRIBE,
        Operation.WRITE,
    }
    assert Operation.IDEMPOTENT_WRITE in supported_operations(ResourceType.CLUSTER)
    assert Operation.IDEMPOTENT_WRITE not in supported_operations(ResourceType.TOPIC)
    assert all(Operation.ALL not in supported_operations(rt) for rt in ResourceType)


# --------------------------------------------------------------------------------------
# principal patterns


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("*", AnyPrincipal()),
        ("User:*", AnyUser()),
        ("User:alice", UserPrincipal("alice")),
        ("User:CN=alice,OU=eng", UserPrincipal("CN=alice,OU=eng")),
        ("User:ANONYMOUS", UserPrincipal("ANONYMOUS")),
        ("Group:team-a.readers_1", GroupReference("team-a.readers_1")),
        ("Claim:sub=alice", ClaimMatch(("sub",), "alice")),
        ("Claim:realm_access.roles=admin", ClaimMatch(("realm_access", "roles"), "admin")),
        # The value is everything after the first '=', the claim name may hold ':'.
        ("Claim:https://x.io/roles=a=b", ClaimMatch(("https://x", "io/roles"), "a=b")),
    ],
)
def test_principal_patterns(text: str, pattern: object) -> None:
    assert parse_principal_pattern(text) == pattern


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice", "invalid principal 'alice': expected 'User:<name>', 'User:*', '*', "),
        ("user:bob", "invalid principal 'user:bob': write 'User' with this capitalisation"),
        ("GROUP:x", "write 'Group' with this capitalisation"),
        ("Role:admin", "invalid principal type 'Role' in 'Role:admin'"),
        ("User:", "the user name is empty"),
        ("User: bob", "white space around the name"),
        (" User:bob", "unexpected white space around ' User:bob'"),
        ("User:ali*", "only 'User:*' is a wildcard"),
        ("Group:", "invalid group reference 'Group:'"),
        ("Group:a b", "invalid group reference 'Group:a b'"),
        ("Claim:roles", "expected 'Claim:<claim>=<value>'"),
        ("Claim:=admin", "the claim path must be non-empty names"),
        ("Claim:a..b=admin", "the claim path must be non-empty names"),
        ("Claim:roles=", "the value is empty"),
    ],
)
def test_invalid_principal_patterns(text: str, message: str) -> None:
    with pytest.raises(InvalidPrincipalPattern) as info:
        parse_principal_pattern(text)
    assert message in str(info.value)


@given(st.text(max_size=30))
def test_principal_parsing_fails_only_with_its_own_error(text: str) -> None:
    try:
        pattern = parse_principal_pattern(text)
    except InvalidPrincipalPattern as exc:
        assert str(exc)
    else:
        assert text == "*" or text.split(":", 1)[0] in {"User", "Group", "Claim"}
        assert pattern is not None


@given(
    st.text(st.characters(blacklist_characters="*", blacklist_categories=["Z", "C"]), min_size=1)
)
def test_user_names_round_trip(name: str) -> None:
    assert parse_principal_pattern(f"User:{name}") == UserPrincipal(name)


# --------------------------------------------------------------------------------------
# line-precise errors through the YAML loader

RULE = """\
rules:
  - principals: ["User:alice"]
    resource_type: topic
    resource_name: orders
    operations: [Read]
"""


def test_valid_rule_template() -> None:
    assert authorization(RULE).rules[0].operations == ["Read"]


def test_unknown_operation_with_suggestion() -> None:
    path, line, message = only_problem(RULE.replace("[Read]", "[Read, Wirte]"))
    assert (path, line) == ("rules[0].operations[1]", 5)
    assert message.startswith("unknown operation 'Wirte' (did you mean 'Write'?); expected one of ")
    assert "IdempotentWrite, ClusterAction, All" in message


def test_operation_of_wrong_type() -> None:
    assert only_problem(RULE.replace("[Read]", "[Read, 7]"))[:2] == ("rules[0].operations[1]", 5)


def test_operation_not_applicable_to_the_resource_type() -> None:
    text = RULE.replace("resource_type: topic", "resource_type: group")
    path, line, message = only_problem(text.replace("[Read]", "[Read, Write]"))
    assert (path, line) == ("rules[0].operations[1]", 5)
    assert (
        message == "Write does not apply to group resources "
        "(expected Read, Delete, Describe, DescribeConfigs, AlterConfigs or All)"
    )


def test_empty_operations() -> None:
    path, line, message = only_problem(RULE.replace("[Read]", "[]"))
    assert (path, line) == ("rules[0].operations", 5)
    assert message.startswith("must not be empty")


@pytest.mark.parametrize(
    ("principal", "message"),
    [
        ("alice", "invalid principal 'alice': expected"),
        ("Claim:roles", "invalid claim match 'Claim:roles': expected 'Claim:<claim>=<value>'"),
        ("User:ali*", "only 'User:*' is a wildcard"),
    ],
)
def test_bad_principal_points_at_the_entry(principal: str, message: str) -> None:
    text = RULE.replace('["User:alice"]', f'["User:bob", "{principal}"]')
    path, line, got = only_problem(text)
    assert (path, line) == ("rules[0].principals[1]", 2)
    assert message in got


def test_unknown_group_with_suggestion() -> None:
    path, line, message = only_problem(
        'principal_groups:\n  readers: ["User:bob"]\n'
        + RULE.replace('["User:alice"]', '["User:alice", "Group:reader"]')
    )
    assert (path, line) == ("rules[0].principals[1]", 4)
    assert (
        message
        == "unknown group 'reader' (not in principal_groups) (did you mean 'Group:readers'?)"
    )


def test_unknown_group_in_super_users() -> None:
    path, line, message = only_problem('super_users: ["User:root", "Group:admins"]\n')
    assert (path, line) == ("super_users[1]", 1)
    assert message == "unknown group 'admins' (not in principal_groups)"


def test_groups_do_not_nest() -> None:
    path, line, message = only_problem(
        """\
        principal_groups:
          a: ["User:x"]
          b: ["User:y", "Group:a"]
        """
    )
    assert (path, line) == ("principal_groups.b[1]", 3)
    assert message == "groups cannot contain groups: 'Group:a'"


def test_bad_group_name_points_at_the_key() -> None:
    path, line, message = only_problem('principal_groups:\n  "team a": ["User:x"]\n')
    assert (path, line) == ("principal_groups.team a", 2)
    assert message.startswith("invalid key 'team a': invalid group name 'team a'")


def test_bad_group_member() -> None:
    path, line, message = only_problem('principal_groups:\n  team: ["User:x", "bob"]\n')
    assert (path, line) == ("principal_groups.team[1]", 2)
    assert message.startswith("invalid principal 'bob'")


def test_missing_resource_name_points_at_the_rule() -> None:
    path, line, message = only_problem(RULE.replace("    resource_name: orders\n", ""))
    assert (path, line) == ("rules[0].resource_name", 2)
    assert message == "resource_name is required for topic rules (use '*' for every name)"


def test_empty_resource_name() -> None:
    path, line, message = only_problem(RULE.replace("resource_name: orders", 'resource_name: ""'))
    assert (path, line, message) == ("rules[0].resource_name", 4, "resource_name is empty")


def test_prefixed_star_is_rejected() -> None:
    text = RULE.replace("resource_name: orders", 'resource_name: "*"\n    pattern_type: prefixed')
    path, line, message = only_problem(text)
    assert (path, line) == ("rules[0].resource_name", 4)
    assert "use pattern_type 'literal'" in message


def test_cluster_rule_with_another_name() -> None:
    text = RULE.replace("topic", "cluster").replace("[Read]", "[Alter]")
    path, line, message = only_problem(text)
    assert (path, line) == ("rules[0].resource_name", 4)
    assert message == "a cluster rule's resource_name is 'kafka-cluster' (or omitted)"


def test_cluster_rule_must_be_literal() -> None:
    text = RULE.replace("resource_type: topic", "resource_type: cluster\n    pattern_type: glob")
    text = text.replace("    resource_name: orders\n", "").replace("[Read]", "[Alter]")
    path, line, message = only_problem(text)
    assert (path, line) == ("rules[0].pattern_type", 4)
    assert message == "cluster rules match the one cluster: use pattern_type 'literal'"


def test_bad_resource_type_and_effect() -> None:
    text = RULE.replace("topic", "topics") + "    effect: block\n"
    found = problems(text)
    assert [(p.path.rsplit(".", 1)[-1], p.line and p.line - FIRST) for p in found] == [
        ("resource_type", 3),
        ("effect", 6),
    ]
    assert found[0].message == (
        "expected one of 'topic', 'group', 'transactional_id' or 'cluster', got 'topics'"
    )
    assert found[1].message == "expected one of 'allow' or 'deny', got 'block'"


def test_misspelt_rule_key_suggests_the_right_one() -> None:
    found = problems(RULE.replace("operations:", "operation:"))
    messages = {p.path.rsplit(".", 1)[-1]: (p.line and p.line - FIRST, p.message) for p in found}
    assert messages["operation"] == (5, "unknown key 'operation' (did you mean 'operations'?)")
    assert messages["operations"][1] == "missing required key 'operations'"


def test_bad_default() -> None:
    path, line, message = only_problem("default: allowed\n")
    assert (path, line) == ("default", 1)
    assert message == "expected one of 'allow' or 'deny', got 'allowed'"


def test_several_problems_are_all_reported_in_file_order() -> None:
    found = problems(
        """\
        principal_groups:
          g: ["User:x"]
        rules:
          - principals: ["Group:nope"]
            resource_type: topic
            resource_name: a
            operations: [Read]
          - principals: ["User:y", "Group:missing"]
            resource_type: topic
            resource_name: b
            operations: [Write]
        """
    )
    assert [(p.path, p.line and p.line - FIRST) for p in found] == [
        ("virtual_clusters[0].authorization.rules[0].principals[0]", 4),
        ("virtual_clusters[0].authorization.rules[1].principals[1]", 8),
    ]
