"""YAML loading: every problem is reported with its key path, line and column."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from policies.config import HostPort
from policies.config_loader import (
    ConfigError,
    ConfigProblem,
    load_config,
    parse_config,
    run_validate,
)

EXAMPLES = sorted((Path(__file__).parents[2] / "deploy" / "examples").glob("*.yaml"))

VALID = """\
virtual_clusters:
  - name: local
    listener:
      bootstrap: 127.0.0.1:9092
      broker_port_base: 9092
    upstream:
      bootstrap_servers:
        - 127.0.0.1:19092
        - kafka-2:19092
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        parse_config(dedent(text), "test.yaml", env=env or {})
    assert info.value.problems, "ConfigError without problems"
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return info.value.problems


def where(problem: ConfigProblem) -> tuple[str, int | None]:
    return problem.path, problem.line


def test_valid_config_and_defaults() -> None:
    config = parse_config(VALID, env={})
    assert config.max_frame_bytes == 100 * 1024 * 1024
    assert (config.log.format, config.log.level) == ("auto", "info")
    (vc,) = config.virtual_clusters
    assert vc.name == "local"
    assert vc.listener.bootstrap == HostPort("127.0.0.1", 9092)
    assert [vc.listener.broker_port(n) for n in (1, 2, 3)] == [9093, 9094, 9095]
    assert vc.listener.advertised() == "127.0.0.1"
    assert [str(s) for s in vc.upstream.bootstrap_servers] == ["127.0.0.1:19092", "kafka-2:19092"]
    assert vc.upstream.connect_timeout_ms == 5000
    assert vc.upstream.metadata_refresh_interval_ms == 30000


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    assert load_config(path, env={}).virtual_clusters


def test_minimal_example_matches_docs() -> None:
    config = load_config(Path(__file__).parents[2] / "deploy/examples/minimal.yaml", env={})
    (vc,) = config.virtual_clusters
    assert vc.name == "local"
    assert str(vc.listener.bootstrap) == "127.0.0.1:9092"
    assert [vc.listener.broker_port(n) for n in (1, 2, 3)] == [9093, 9094, 9095]
    assert vc.upstream.bootstrap_servers == [HostPort("127.0.0.1", 19092)]
    assert config.log.format == "auto"


def test_bad_port() -> None:
    (problem,) = problems(VALID.replace("kafka-2:19092", "kafka-2:abc"))
    assert where(problem) == ("virtual_clusters[0].upstream.bootstrap_servers[1]", 9)
    assert problem.column == 11
    assert problem.message == "invalid port 'abc' (expected 1..65535)"
    assert str(problem) == (
        "test.yaml:9:11: virtual_clusters[0].upstream.bootstrap_servers[1]: "
        "invalid port 'abc' (expected 1..65535)"
    )


def test_port_out_of_range() -> None:
    (problem,) = problems(VALID.replace("broker_port_base: 9092", "broker_port_base: 70000"))
    assert where(problem) == ("virtual_clusters[0].listener.broker_port_base", 5)
    assert problem.message == "must be <= 65535, got 70000"


def test_missing_upstream_points_at_the_cluster() -> None:
    (problem,) = problems(
        """\
        virtual_clusters:
          - name: local
            listener:
              bootstrap: 127.0.0.1:9092
        """
    )
    assert where(problem) == ("virtual_clusters[0].upstream", 2)
    assert problem.column == 5
    assert problem.message == "missing required key 'upstream'"


def test_missing_key_in_nested_mapping_points_at_its_key() -> None:
    (problem,) = problems(VALID.replace("      bootstrap: 127.0.0.1:9092\n", ""))
    assert where(problem) == ("virtual_clusters[0].listener.bootstrap", 3)
    assert problem.message == "missing required key 'bootstrap'"


def test_typo_reports_unknown_and_missing_with_suggestion() -> None:
    found = problems(VALID.replace("bootstrap_servers:", "bootstrap_server:"))
    assert [where(p) for p in found] == [
        ("virtual_clusters[0].upstream.bootstrap_servers", 6),
        ("virtual_clusters[0].upstream.bootstrap_server", 7),
    ]
    assert found[1].column == 7
    assert found[1].message == "unknown key 'bootstrap_server' (did you mean 'bootstrap_servers'?)"


def test_unknown_top_level_key() -> None:
    (problem,) = problems(VALID + "lgo:\n  level: debug\n")
    assert where(problem) == ("lgo", 10)
    assert problem.column == 1
    assert problem.message == "unknown key 'lgo' (did you mean 'log'?)"


def test_duplicate_virtual_cluster_names() -> None:
    text = VALID + (
        "  - name: local\n"
        "    listener: {bootstrap: 127.0.0.1:9192}\n"
        "    upstream: {bootstrap_servers: [127.0.0.1:29092]}\n"
    )
    (problem,) = problems(text)
    assert where(problem) == ("virtual_clusters[1].name", 10)
    assert problem.message == (
        "duplicate virtual cluster name 'local' (already used by virtual_clusters[0])"
    )


def test_colliding_ports_across_clusters() -> None:
    text = dedent(
        """\
        virtual_clusters:
          - name: a
            listener:
              bootstrap: 127.0.0.1:9092
              broker_ports: {1: 9500}
            upstream:
              bootstrap_servers: [127.0.0.1:19092]
          - name: b
            listener:
              bootstrap: 0.0.0.0:9500
              advertised_host: gateway.example.com
            upstream:
              bootstrap_servers: [127.0.0.1:29092]
        """
    )
    (problem,) = problems(text)
    assert where(problem) == ("virtual_clusters[1].listener.bootstrap", 10)
    assert "collides with 127.0.0.1:9500 of virtual_clusters[0].listener.broker_ports[1]" in (
        problem.message
    )


def test_colliding_ports_within_listener() -> None:
    found = problems(
        """\
        virtual_clusters:
          - name: a
            listener:
              bootstrap: 127.0.0.1:9092
              broker_ports:
                1: 9092
                2: 9200
                3: 9200
            upstream:
              bootstrap_servers: [127.0.0.1:19092]
        """
    )
    assert [where(p) for p in found] == [
        ("virtual_clusters[0].listener.broker_ports.1", 6),
        ("virtual_clusters[0].listener.broker_ports.3", 8),
    ]
    assert found[0].message == "port 9092 of node 1 is the bootstrap port"
    assert found[1].message == "port 9200 of node 3 is already used by node 2"


def test_wildcard_bootstrap_without_advertised_host() -> None:
    (problem,) = problems(VALID.replace("127.0.0.1:9092", "0.0.0.0:9092"))
    assert where(problem) == ("virtual_clusters[0].listener.advertised_host", 3)
    assert "advertised_host is required" in problem.message
    # Fixed by naming the host clients should use.
    fixed = VALID.replace(
        "bootstrap: 127.0.0.1:9092", "bootstrap: 0.0.0.0:9092\n      advertised_host: gw"
    )
    assert parse_config(fixed, env={}).virtual_clusters[0].listener.advertised() == "gw"


def test_yaml_syntax_error() -> None:
    (problem,) = problems(
        """\
        virtual_clusters:
          - name: local
            listener: {bootstrap: 127.0.0.1:9092
            upstream:
        """
    )
    assert problem.path == ""
    assert problem.line == 4
    assert problem.message.startswith("invalid YAML:")
    assert str(problem).startswith("test.yaml:4:")


def test_duplicate_key() -> None:
    text = VALID.replace("      broker_port_base: 9092\n", "") + "log: {}\nlog: {}\n"
    (problem,) = problems(text)
    assert problem.line == 10
    assert problem.column == 1
    assert problem.message.startswith('invalid YAML: found duplicate key "log"')


def test_multiple_problems_are_all_reported_in_file_order() -> None:
    found = problems(
        """\
        virtual_clusters:
          - name: Local
            listener:
              bootstrap: 127.0.0.1:99999
              brokr_port_base: 9092
            upstream:
              bootstrap_servers: []
              connect_timeout_ms: 0
          - name: second
            listener:
              bootstrap: 127.0.0.1:9192
        max_frame_bytes: 10
        log:
          format: xml
        """
    )
    assert [where(p) for p in found] == [
        ("virtual_clusters[0].name", 2),
        ("virtual_clusters[0].listener.bootstrap", 4),
        ("virtual_clusters[0].listener.brokr_port_base", 5),
        ("virtual_clusters[0].upstream.bootstrap_servers", 7),
        ("virtual_clusters[0].upstream.connect_timeout_ms", 8),
        ("virtual_clusters[1].upstream", 9),
        ("max_frame_bytes", 12),
        ("log.format", 14),
    ]
    assert found[3].message.startswith("must not be empty")
    assert found[6].message == "must be >= 1024, got 10"
    assert found[7].message == "expected one of 'auto', 'json' or 'console', got 'xml'"


def test_wrong_types() -> None:
    found = problems(
        """\
        virtual_clusters:
          - name: local
            listener:
              bootstrap: [::1]
            upstream: kafka:9092
        log: debug
        """
    )
    assert [where(p) for p in found] == [
        ("virtual_clusters[0].listener.bootstrap", 4),
        ("virtual_clusters[0].upstream", 5),
        ("log", 6),
    ]
    assert "quote IPv6 addresses" in found[0].message
    assert found[1].message == "expected a mapping, got 'kafka:9092'"


def test_empty_and_non_mapping_documents() -> None:
    assert problems("")[0].message.startswith("the configuration is empty")
    assert problems("- a\n- b\n")[0].message == "expected a mapping at the top level, got a list"
    (problem,) = problems("virtual_clusters: []\n")
    assert where(problem) == ("virtual_clusters", 1)


def test_env_substitution() -> None:
    text = """\
    virtual_clusters:
      - name: ${NAME}
        listener:
          bootstrap: "${HOST:-127.0.0.1}:${PORT}"
          broker_port_base: ${BASE:-9092}
        upstream:
          bootstrap_servers: ["${KAFKA}"]
    log:
      level: ${LEVEL:-info}
      format: "$${NOT_A_VAR}"
    """
    env = {"NAME": "prod", "PORT": "9300", "KAFKA": "kafka:9092", "LEVEL": ""}
    with pytest.raises(ConfigError) as info:  # format is literally "${NOT_A_VAR}"
        parse_config(dedent(text), env=env)
    (problem,) = info.value.problems
    assert where(problem) == ("log.format", 10)
    assert problem.message == "expected one of 'auto', 'json' or 'console', got '${NOT_A_VAR}'"

    config = parse_config(dedent(text).replace("$${NOT_A_VAR}", "json"), env=env)
    vc = config.virtual_clusters[0]
    assert vc.name == "prod"
    assert vc.listener.bootstrap == HostPort("127.0.0.1", 9300)
    assert vc.listener.broker_port_base == 9092
    assert vc.upstream.bootstrap_servers == [HostPort("kafka", 9092)]
    assert config.log.level == "info"  # empty LEVEL falls back to the default


def test_env_substitution_uses_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TEST_UPSTREAM", "kafka-9:9092")
    text = VALID.replace("kafka-2:19092", "${GW_TEST_UPSTREAM}")
    config = parse_config(text)
    assert config.virtual_clusters[0].upstream.bootstrap_servers[1] == HostPort("kafka-9", 9092)


def test_unset_env_var() -> None:
    found = problems(
        VALID.replace("kafka-2:19092", "${KAFKA_2}").replace("name: local", "name: ${NAME"),
    )
    assert [where(p) for p in found] == [
        ("virtual_clusters[0].name", 2),  # "${NAME" is not a reference: an invalid name
        ("virtual_clusters[0].upstream.bootstrap_servers[1]", 9),
    ]
    assert found[1].column == 11
    assert "environment variable 'KAFKA_2' is not set" in found[1].message


def test_invalid_variable_reference() -> None:
    (problem,) = problems(VALID.replace("kafka-2:19092", "${2BAD}"))
    assert where(problem) == ("virtual_clusters[0].upstream.bootstrap_servers[1]", 9)
    assert "invalid variable reference '${2BAD}'" in problem.message


def test_unsupported_tag() -> None:
    (problem,) = problems(VALID.replace("kafka-2:19092", "!secret kafka"))
    assert where(problem) == ("virtual_clusters[0].upstream.bootstrap_servers[1]", 9)
    assert "unsupported YAML tag" in problem.message


def test_invalid_broker_ports_key() -> None:
    (problem,) = problems(
        VALID.replace("broker_port_base: 9092", "broker_ports: {one: 9093}"),
    )
    assert where(problem) == ("virtual_clusters[0].listener.broker_ports.one", 5)
    assert problem.message == "invalid key 'one': expected an integer, got 'one'"


def test_anchors_and_merge_keys() -> None:
    text = """\
    virtual_clusters:
      - &base
        name: a
        listener: {bootstrap: 127.0.0.1:9092}
        upstream: {bootstrap_servers: [127.0.0.1:19092], connect_timeout_ms: 1000}
      - <<: *base
        name: b
        listener: {bootstrap: 127.0.0.1:9192, bogus: 1}
    """
    (problem,) = problems(text)
    assert where(problem) == ("virtual_clusters[1].listener.bogus", 8)
    config = parse_config(dedent(text).replace(", bogus: 1", ""), env={})
    assert config.virtual_clusters[1].upstream.connect_timeout_ms == 1000


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    (problem,) = info.value.problems
    assert problem.source == str(missing)
    assert problem.line is None
    assert "cannot read file" in problem.message
    assert str(problem).startswith(f"{missing}: cannot read file")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"virtual_clusters: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_run_validate_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(VALID)
    assert run_validate(str(path)) == 0
    out, err = capsys.readouterr()
    assert out == f"OK: {path} (1 virtual cluster)\n"
    assert err == ""


def test_run_validate_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        VALID.replace("127.0.0.1:9092", "127.0.0.1:x")
        .replace("base: 9092", "base: x")
        .replace("kafka-2:19092", "kafka-2:abc")
    )
    assert run_validate(str(path)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:4:18: virtual_clusters[0].listener.bootstrap: "
        "invalid port 'x' (expected 1..65535)",
        f"{path}:5:25: virtual_clusters[0].listener.broker_port_base: expected an integer, got 'x'",
        f"{path}:9:11: virtual_clusters[0].upstream.bootstrap_servers[1]: "
        "invalid port 'abc' (expected 1..65535)",
    ]


def test_booleans_are_not_numbers() -> None:
    (problem,) = problems(VALID.replace("broker_port_base: 9092", "broker_port_base: true"))
    assert where(problem) == ("virtual_clusters[0].listener.broker_port_base", 5)
    assert problem.message == "expected an integer, got true"


def test_unknown_key_with_unset_variable_reports_both() -> None:
    found = problems(VALID + "extra: ${NOPE}\n")
    assert [(where(p), p.column) for p in found] == [(("extra", 10), 1), (("extra", 10), 8)]
    assert found[0].message == "unknown key 'extra'"
    assert "'NOPE' is not set" in found[1].message


# --------------------------------------------------------------------------------------
# hostile files: every failure is a ConfigError with a line, never another exception


def test_deep_flow_nesting_is_reported_at_its_line() -> None:
    text = VALID + "extra: " + "[" * 5000 + "]" * 5000 + "\n"
    (problem,) = problems(text)
    assert (problem.line, problem.column) == (10, 8 + 64)
    assert "nested too deeply (at most 64 levels" in problem.message


def test_deep_block_nesting_is_reported_at_its_line() -> None:
    text = VALID + "".join(" " * depth + "k:\n" for depth in range(3000))
    (problem,) = problems(text)
    assert problem.line == 10 + 64
    assert "nested too deeply" in problem.message


def test_deep_nesting_through_aliases_is_reported() -> None:
    chain = "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 80))
    found = problems(VALID + "a0: &a0 [1]\n" + chain)
    assert any("nested too deeply" in p.message for p in found)


def test_alias_expansion_is_bounded() -> None:
    """A "billion laughs" file: 10 levels of 10 aliases would expand to 10^10 values."""
    text = "a0: &a0 [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
    )
    (problem,) = problems(text)
    assert "more than 1000000 values once aliases are expanded" in problem.message


@pytest.mark.parametrize("digits", [4300, 4301, 10_000])
def test_huge_integer_is_reported_at_its_line(digits: int) -> None:
    """Python refuses int() of more than 4300 digits; the loader reports it instead."""
    (problem,) = problems(
        VALID.replace("broker_port_base: 9092", f"broker_port_base: {'9' * digits}")
    )
    assert (problem.line, problem.column) == (5, 25)
    assert problem.message == "number too long (more than 100 digits)"


def test_huge_hex_integer_is_shown_by_size() -> None:
    (problem,) = problems(
        VALID.replace("broker_port_base: 9092", f"broker_port_base: 0x{'f' * 5000}")
    )
    assert where(problem) == ("virtual_clusters[0].listener.broker_port_base", 5)
    assert problem.message == "must be <= 65535, got an integer of 20000 bits"


def test_long_digit_runs_in_strings_are_fine() -> None:
    config = parse_config(VALID.replace("name: local", f"name: 'c{'1' * 200}'"))
    assert config.virtual_clusters[0].name == "c" + "1" * 200


def test_validate_rejects_hostile_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, text in {
        "deep.yaml": "a: " + "{a: " * 3000 + "}" * 3000,
        "long.yaml": VALID.replace("9092\n", f"{'9' * 5000}\n", 1),
    }.items():
        path = tmp_path / name
        path.write_text(text)
        assert run_validate(str(path)) == 1
        assert capsys.readouterr().err.startswith(
            f"{path}:1:" if name == "deep.yaml" else f"{path}:4:"
        )
