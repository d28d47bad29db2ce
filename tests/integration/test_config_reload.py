"""Reloading ACLs: new rules apply to open connections from their next request; an
invalid file is rejected with line-precise problems and the running rules stay.
Reloaded credentials apply to the next login; a changed key that only a restart can
apply is named in ``config_reload_needs_restart``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from tests.gateway_harness import REPO_ROOT, Event, RunningGateway, running_gateway
from tests.integration.clients import values_on_broker
from tests.integration.test_authorization import (
    confluent_sasl,
    create_topics,
    deliver,
    log_has_no_password,
    plain_listener,
)
from tests.integration.test_quotas import METADATA, authenticate
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka

RUN = uuid.uuid4().hex[:8]
ORDERS = f"orders.{RUN}"
PAYMENTS = f"payments-{RUN}"

READ_ONLY = ["Read", "Describe"]
READ_WRITE = ["Read", "Describe", "Write"]


def authorization(bob_topic_operations: list[str]) -> dict[str, Any]:
    return {
        "default": "deny",
        "super_users": ["User:admin"],
        "rules": [
            {
                "principals": ["User:bob"],
                "resource_type": "topic",
                "pattern_type": "prefixed",
                "resource_name": "orders.",
                "operations": bob_topic_operations,
            }
        ],
    }


@pytest.fixture(scope="module")
def reload_gateway(
    kafka_cluster,  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway]:
    create_topics(kafka_cluster.bootstrap_servers, [ORDERS, PAYMENTS], partitions=1)
    with running_gateway(
        tmp_path_factory.mktemp("reload-gateway"),
        kafka_cluster.bootstrap_servers,
        listener=plain_listener(["bob"]),
        cluster={"authorization": authorization(READ_ONLY)},
    ) as gateway:
        yield gateway


def write_config(gateway: RunningGateway, config: dict[str, Any]) -> str:
    """Replace the gateway's config file atomically; returns the text written."""
    text = json.dumps(config, indent=2)
    staging = gateway.config_path.with_suffix(".new")
    staging.write_text(text)
    os.replace(staging, gateway.config_path)
    return text


def with_bob_operations(gateway: RunningGateway, operations: list[str]) -> dict[str, Any]:
    config = json.loads(gateway.config_path.read_text())
    config["virtual_clusters"][0]["authorization"]["rules"][0]["operations"] = operations
    return config


def events_named(gateway: RunningGateway, name: str) -> list[Event]:
    return [e for e in gateway.events() if e.get("event") == name]


def wait_for_new_event(
    gateway: RunningGateway, names: set[str], seen: int, timeout: float = 15
) -> Event:
    """The first event named one of ``names`` after the ``seen`` ones already logged."""
    deadline = time.monotonic() + timeout
    while True:
        matching = [e for e in gateway.events() if e.get("event") in names]
        if len(matching) > seen:
            return matching[seen]
        assert time.monotonic() < deadline, f"no new {names} event; log:\n{gateway.tail()}"
        time.sleep(0.05)


RELOAD_EVENTS = {"config_reloaded", "config_reload_rejected"}


def reload_by_signal(gateway: RunningGateway) -> Event:
    seen = len([e for e in gateway.events() if e.get("event") in RELOAD_EVENTS])
    gateway.reload()
    return wait_for_new_event(gateway, RELOAD_EVENTS, seen)


def deliver_once_accepted(
    producer: Producer, topic: str, value: bytes, timeout: float = 15
) -> KafkaError | None:
    """`deliver`, once librdkafka accepts the message again.

    After a permanent error (a denied Produce) librdkafka marks the topic as failed
    and refuses new messages for it locally until its next metadata refresh (about a
    second later); nothing reaches the gateway meanwhile.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return deliver(producer, topic, value)
        except KafkaException as refused:
            error = refused.args[0]
            if error.code() != KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise
            assert time.monotonic() < deadline, f"librdkafka kept refusing: {error}"
            producer.poll(0.1)


def bob_logins(gateway: RunningGateway) -> int:
    return len(
        [
            e
            for e in events_named(gateway, "authentication")
            if e.get("principal") == "User:bob" and e.get("outcome") == "success"
        ]
    )


def test_reload_applies_to_open_connections_and_rejects_invalid_files(
    reload_gateway: RunningGateway,
    kafka_cluster,  # type: ignore[no-untyped-def]
) -> None:
    gateway = reload_gateway
    producer = Producer(
        {
            "bootstrap.servers": gateway.bootstrap,
            **confluent_sasl("bob", "reload-bob"),
            "linger.ms": 0,
            "message.timeout.ms": 20000,
        }
    )
    denied = deliver(producer, ORDERS, b"before-reload")
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied
    logins = bob_logins(gateway)

    # 1. Allow Write: bob's open connections get the new rules on their next request.
    write_config(gateway, with_bob_operations(gateway, READ_WRITE))
    assert reload_by_signal(gateway)["event"] == "config_reloaded"
    assert deliver_once_accepted(producer, ORDERS, b"after-reload") is None
    assert bob_logins(gateway) == logins, "the producer reconnected: not an open connection"

    # 2. An invalid file is rejected, each problem with its file and line.
    text = write_config(gateway, with_bob_operations(gateway, [*READ_ONLY, "Wirte"]))
    bad_line = 1 + next(i for i, line in enumerate(text.splitlines()) if '"Wirte"' in line)
    rejected = reload_by_signal(gateway)
    assert rejected["event"] == "config_reload_rejected", rejected
    problems = rejected["problems"]
    assert any(
        f"{gateway.config_path}:{bad_line}:" in problem and "operations[2]" in problem
        for problem in problems
    ), problems
    # ... and the rules in force (Write allowed, payments denied) keep working.
    assert deliver(producer, ORDERS, b"after-rejected-reload") is None
    still_denied = deliver(producer, PAYMENTS, b"never")
    assert still_denied is not None
    assert still_denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, still_denied

    # 3. `kafka-gateway reload --pid`: validates the file, then signals the gateway.
    write_config(gateway, with_bob_operations(gateway, READ_ONLY))
    seen = len([e for e in gateway.events() if e.get("event") in RELOAD_EVENTS])
    cli = gateway.reload_with_cli()
    assert cli.returncode == 0, cli.stderr
    assert wait_for_new_event(gateway, RELOAD_EVENTS, seen)["event"] == "config_reloaded"
    revoked = deliver(producer, ORDERS, b"after-revocation")
    assert revoked is not None and revoked.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert bob_logins(gateway) == logins, "the producer reconnected: not an open connection"
    log_has_no_password(gateway)
    # On Kafka itself: what was allowed is there, nothing of a denied Produce is.
    orders = values_on_broker(kafka_cluster.bootstrap_servers, ORDERS)
    assert {b"after-reload", b"after-rejected-reload"} <= set(orders), orders
    assert b"before-reload" not in orders and b"after-revocation" not in orders, orders
    assert b"never" not in values_on_broker(kafka_cluster.bootstrap_servers, PAYMENTS)


def test_cli_reload_refuses_an_invalid_file_without_signalling(
    reload_gateway: RunningGateway,
) -> None:
    text = json.dumps(with_bob_operations(reload_gateway, ["Wirte"]), indent=2)
    candidate = reload_gateway.config_path.with_name("candidate.yaml")
    candidate.write_text(text)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "reload",
            "--pid",
            str(reload_gateway.process.pid),
            "--config",
            str(candidate),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cli.returncode == 1
    assert "not reloading" in cli.stderr
    assert f"{candidate}:" in cli.stderr + cli.stdout  # the problem, with its file and line
    assert reload_gateway.process.poll() is None


def login_error(gateway: RunningGateway, user: str) -> int:
    """The SaslAuthenticate error code of a fresh PLAIN login as ``user`` (0: logged in)."""
    with RawKafkaConnection(gateway.bootstrap) as conn:
        return authenticate(conn, user)


def advertised_hosts(gateway: RunningGateway, user: str) -> set[str]:
    """The broker hosts a Metadata response through the gateway tells ``user`` about."""
    with RawKafkaConnection(gateway.bootstrap) as conn:
        assert authenticate(conn, user) == 0
        return {broker.host for broker in conn.request(METADATA).brokers}


SASL_AUTHENTICATION_FAILED = 58


def test_reload_replaces_credentials_and_names_what_needs_a_restart(
    kafka_cluster,  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with running_gateway(
        tmp_path_factory.mktemp("credentials-reload"),
        kafka_cluster.bootstrap_servers,
        listener=plain_listener(["bob"]),
    ) as gateway:
        assert login_error(gateway, "bob") == 0
        assert login_error(gateway, "carol") == SASL_AUTHENTICATION_FAILED
        assert advertised_hosts(gateway, "bob") == {"127.0.0.1"}

        # carol replaces bob; the advertised host changes too (only a restart applies it).
        config = json.loads(gateway.config_path.read_text())
        listener = config["virtual_clusters"][0]["listener"]
        listener["authentication"] = plain_listener(["carol"])["authentication"]
        listener["advertised_host"] = "localhost"
        write_config(gateway, config)
        seen_restart = len(events_named(gateway, "config_reload_needs_restart"))
        assert reload_by_signal(gateway)["event"] == "config_reloaded"

        assert login_error(gateway, "carol") == 0, "a user added by a reload cannot log in"
        assert login_error(gateway, "bob") == SASL_AUTHENTICATION_FAILED, (
            "a user removed by a reload can still log in"
        )
        restart = wait_for_new_event(gateway, {"config_reload_needs_restart"}, seen_restart)
        assert "test: listener.advertised_host" in restart["changes"], restart
        assert not any("authentication" in change for change in restart["changes"]), restart
        # ... and it is not in force: clients are still sent to the old host.
        assert advertised_hosts(gateway, "carol") == {"127.0.0.1"}
        log_has_no_password(gateway)
