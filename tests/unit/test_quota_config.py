"""The ``quotas`` section: defaults, validation, and problems reported at the right line."""

from __future__ import annotations

from textwrap import dedent, indent

import pytest

from policies.config_docs import iter_config_keys
from policies.config_loader import ConfigError, ConfigProblem, parse_config
from policies.quotas.config import QuotasConfig

# A minimal virtual cluster; the quotas section starts on line 10.
CLUSTER = """\
virtual_clusters:
  - name: local
    listener:
      bootstrap: 127.0.0.1:9092
      broker_port_base: 9092
    upstream:
      bootstrap_servers:
        - 127.0.0.1:19092
    quotas:
"""
FIRST_QUOTA_LINE = 10

FULL_EXAMPLE = """\
window: {samples: 11, sample_ms: 1000}
clients:
  - principal: "User:alice"
    client_id: loader
    produce_bytes_per_second: 1048576
    fetch_bytes_per_second: 2097152
    requests_per_second: 100
  - principal: "<default>"
    produce_bytes_per_second: 524288
  - client_id: "<default>"
    requests_per_second: 0.5
topics:
  - topic: "orders."
    pattern_type: prefixed
    produce_bytes_per_second: 5242880
    fetch_bytes_per_second: 10485760
  - topic: "audit-*"
    pattern_type: glob
    fetch_bytes_per_second: 1000
  - topic: payments
    produce_bytes_per_second: 1000
connections:
  max_per_principal: 10
  max_per_ip: 100
  max_creation_rate_per_ip: 20
"""


def quotas(section: str) -> QuotasConfig:
    config = parse_config(CLUSTER + indent(dedent(section), " " * 6), "test.yaml", env={})
    found = config.virtual_clusters[0].quotas
    assert found is not None
    return found


def problems(section: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        quotas(section)
    return info.value.problems


def one_problem(section: str) -> tuple[str, int | None, str]:
    (problem,) = problems(section)
    prefix = "virtual_clusters[0].quotas."
    assert problem.path.startswith(prefix), problem.path
    return problem.path.removeprefix(prefix), problem.line, problem.message


def test_full_example_parses() -> None:
    config = quotas(FULL_EXAMPLE)
    assert (config.window.samples, config.window.sample_ms) == (11, 1000)
    assert config.window.max_throttle_ms == 11_000
    alice, default_principal, default_client = config.clients
    assert alice.entity == ("User:alice", "loader")
    assert alice.limits == {
        "produce_bytes_per_second": 1048576,
        "fetch_bytes_per_second": 2097152,
        "requests_per_second": 100,
    }
    assert default_principal.entity == ("<default>", None)
    assert default_client.entity == (None, "<default>")
    assert default_client.requests_per_second == 0.5
    assert [(t.topic, t.pattern_type) for t in config.topics] == [
        ("orders.", "prefixed"),
        ("audit-*", "glob"),
        ("payments", "literal"),
    ]
    assert config.connections is not None
    assert config.connections.max_per_principal == 10
    assert config.connections.max_per_ip == 100
    assert config.connections.max_creation_rate_per_ip == 20


def test_everything_is_optional() -> None:
    config = quotas("{}\n")
    assert config.clients == [] and config.topics == [] and config.connections is None
    assert (config.window.samples, config.window.sample_ms) == (11, 1000)


def test_absent_section_means_no_quotas() -> None:
    config = parse_config(CLUSTER.removesuffix("    quotas:\n"), env={})
    assert config.virtual_clusters[0].quotas is None


def test_negative_rate_points_at_its_line() -> None:
    section = """\
        clients:
          - principal: "User:alice"
            produce_bytes_per_second: -5
        """
    assert one_problem(section) == (
        "clients[0].produce_bytes_per_second",
        FIRST_QUOTA_LINE + 2,
        "must be > 0, got -5",
    )


def test_zero_rate_is_rejected() -> None:
    section = """\
        topics:
          - topic: orders
            fetch_bytes_per_second: 0
        """
    assert one_problem(section) == (
        "topics[0].fetch_bytes_per_second",
        FIRST_QUOTA_LINE + 2,
        "must be > 0, got 0",
    )


def test_unknown_key_is_reported_with_a_suggestion() -> None:
    section = """\
        clients:
          - client_id: loader
            produce_byte_per_second: 10
        """
    path, line, message = one_problem(section)
    assert (path, line) == ("clients[0].produce_byte_per_second", FIRST_QUOTA_LINE + 2)
    assert message == (
        "unknown key 'produce_byte_per_second' (did you mean 'produce_bytes_per_second'?)"
    )


def test_unknown_key_in_connections() -> None:
    section = """\
        connections:
          max_per_host: 3
        """
    path, line, message = one_problem(section)
    assert (path, line) == ("connections.max_per_host", FIRST_QUOTA_LINE + 1)
    assert message.startswith("unknown key 'max_per_host'")


@pytest.mark.parametrize(
    ("value", "message"),
    [("true", "expected a number, got true"), (".inf", "expected a finite number, got inf")],
)
def test_rate_must_be_a_finite_number(value: str, message: str) -> None:
    section = f"""\
        clients:
          - client_id: loader
            requests_per_second: {value}
        """
    assert one_problem(section) == (
        "clients[0].requests_per_second",
        FIRST_QUOTA_LINE + 2,
        message,
    )


def test_boolean_is_not_a_connection_count() -> None:
    section = """\
        connections:
          max_per_ip: true
          max_per_principal: 0
        """
    found = problems(section)
    assert [(p.line, p.message) for p in found] == [
        (FIRST_QUOTA_LINE + 1, "expected an integer, got true"),
        (FIRST_QUOTA_LINE + 2, "must be >= 1, got 0"),
    ]


def test_window_bounds() -> None:
    section = """\
        window:
          samples: 1
          sample_ms: 5
        """
    found = problems(section)
    assert [(p.path.rsplit(".", 1)[1], p.line, p.message) for p in found] == [
        ("samples", FIRST_QUOTA_LINE + 1, "must be >= 2, got 1"),
        ("sample_ms", FIRST_QUOTA_LINE + 2, "must be >= 10, got 5"),
    ]


def test_client_quota_needs_an_entity() -> None:
    section = """\
        clients:
          - principal: "User:alice"
            requests_per_second: 1
          - requests_per_second: 1
        """
    assert one_problem(section) == (
        "clients[1]",
        FIRST_QUOTA_LINE + 3,
        "a client quota needs principal, client_id or both",
    )


def test_client_quota_needs_a_rate() -> None:
    section = """\
        clients:
          - principal: "User:alice"
        """
    path, line, message = one_problem(section)
    assert (path, line) == ("clients[0]", FIRST_QUOTA_LINE + 1)
    assert message.startswith("set at least one of produce_bytes_per_second")


def test_principal_must_look_like_a_kafka_principal() -> None:
    section = """\
        clients:
          - principal: alice
            requests_per_second: 1
        """
    assert one_problem(section) == (
        "clients[0].principal",
        FIRST_QUOTA_LINE + 1,
        "invalid principal 'alice': expected 'Type:name' (e.g. 'User:alice') or '<default>'",
    )


def test_duplicate_entity_points_at_the_second_entry() -> None:
    section = """\
        clients:
          - principal: "User:alice"
            client_id: loader
            produce_bytes_per_second: 10
          - principal: "<default>"
            produce_bytes_per_second: 10
          - client_id: loader
            principal: "User:alice"
            fetch_bytes_per_second: 10
        """
    assert one_problem(section) == (
        "clients[2]",
        FIRST_QUOTA_LINE + 6,
        "duplicate quota entity principal='User:alice', client_id='loader' (already clients[0])",
    )


def test_same_principal_with_and_without_client_id_are_different_entities() -> None:
    config = quotas(
        """\
        clients:
          - principal: "User:alice"
            produce_bytes_per_second: 10
          - principal: "User:alice"
            client_id: "<default>"
            produce_bytes_per_second: 20
        """
    )
    assert [c.entity for c in config.clients] == [("User:alice", None), ("User:alice", "<default>")]


def test_duplicate_topic_pattern() -> None:
    section = """\
        topics:
          - topic: orders
            pattern_type: prefixed
            produce_bytes_per_second: 10
          - topic: orders
            produce_bytes_per_second: 10
          - topic: orders
            pattern_type: prefixed
            fetch_bytes_per_second: 10
        """
    assert one_problem(section) == (
        "topics[2].topic",
        FIRST_QUOTA_LINE + 6,
        "duplicate prefixed topic quota 'orders' (already topics[0])",
    )


def test_invalid_topic_name_and_pattern_type() -> None:
    section = """\
        topics:
          - topic: "orders/eu"
            produce_bytes_per_second: 10
          - topic: "orders.*"
            pattern_type: regex
            produce_bytes_per_second: 10
        """
    found = problems(section)
    assert [(p.line, p.message) for p in found] == [
        (
            FIRST_QUOTA_LINE + 1,
            "invalid topic name or prefix 'orders/eu': topic names have at most 249 "
            "letters, digits, '.', '_' and '-'",
        ),
        (FIRST_QUOTA_LINE + 4, "expected one of 'literal', 'prefixed' or 'glob', got 'regex'"),
    ]


def test_glob_may_use_wildcards_but_literal_may_not() -> None:
    assert quotas("topics: [{topic: 'a*', pattern_type: glob, fetch_bytes_per_second: 1}]\n")
    path, _, message = one_problem("topics: [{topic: 'a*', fetch_bytes_per_second: 1}]\n")
    assert path == "topics[0].topic"
    assert message.startswith("invalid topic name or prefix 'a*'")


def test_every_key_is_documented() -> None:
    keys = {k.path: k for k in iter_config_keys(QuotasConfig)}
    assert {
        "window.samples",
        "clients[].principal",
        "clients[].produce_bytes_per_second",
        "topics[].pattern_type",
        "connections.max_creation_rate_per_ip",
    } <= set(keys)
    assert keys["window.samples"].default == "`11`"
    assert keys["clients[].requests_per_second"].type == "number (> 0)"
    assert keys["topics[].pattern_type"].default == '`"literal"`'
