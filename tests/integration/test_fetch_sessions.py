"""A revoked Read ACL reaches a running consumer that uses incremental fetch sessions (KIP-227).

The Java consumer sets up a fetch session and then sends Fetch requests that name
no topics; the broker answers for the whole session. Here the Java console consumer
reads through the gateway, Read is revoked by a reload, more records are produced:
the consumer must receive none of them and must see an authorization error. The
same with a confluent-kafka (librdkafka) consumer, which sends full Fetch requests.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import IO

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from localkafka.distribution import die_with_parent_preexec
from tests.gateway_harness import RunningGateway, running_gateway
from tests.integration.test_authorization import (
    PASSWORDS,
    confluent_sasl,
    create_topics,
    plain_listener,
)
from tests.integration.test_config_reload import (
    authorization,
    reload_by_signal,
    with_bob_operations,
    write_config,
)
from tests.kafka_tools import CONSOLE_CONSUMER, TOOL_JVM_OPTS, distribution, java_security_props

pytestmark = pytest.mark.kafka

TOPIC = f"orders.sessions.{uuid.uuid4().hex[:8]}"
LIBRDKAFKA_TOPIC = f"{TOPIC}-librdkafka"


@pytest.fixture(scope="module")
def session_gateway(
    kafka_cluster,  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway]:
    create_topics(kafka_cluster.bootstrap_servers, [TOPIC, LIBRDKAFKA_TOPIC], partitions=1)
    with running_gateway(
        tmp_path_factory.mktemp("fetch-sessions-gateway"),
        kafka_cluster.bootstrap_servers,
        listener=plain_listener(["bob"]),
        cluster={"authorization": authorization(["Read", "Describe"])},
    ) as gateway:
        yield gateway


class Lines:
    """Collects a process stream's lines on a thread, so the test can wait on them."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def produce(bootstrap: str, values: list[str], topic: str = TOPIC) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for value in values:
        producer.produce(topic, value.encode())
    assert producer.flush(30) == 0


def test_revoked_read_reaches_a_consumer_with_a_fetch_session(
    session_gateway: RunningGateway,
    kafka_cluster,  # type: ignore[no-untyped-def]
) -> None:
    gateway = session_gateway
    props = java_security_props(
        "SASL_PLAINTEXT", mechanism="PLAIN", username="bob", password=PASSWORDS["bob"]
    )
    args = ["--bootstrap-server", gateway.bootstrap, "--topic", TOPIC]
    args += ["--partition", "0", "--offset", "earliest"]  # assign(): no group ACL needed
    for key, value in props.items():
        args += ["--consumer-property", f"{key}={value}"]
    consumer = subprocess.Popen(
        distribution().java_command(CONSOLE_CONSUMER, args, jvm_opts=TOOL_JVM_OPTS),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent_preexec(),
    )
    try:
        out, err = Lines(consumer.stdout), Lines(consumer.stderr)  # type: ignore[arg-type]
        before = [f"before-{i}" for i in range(5)]
        produce(kafka_cluster.bootstrap_servers, before)
        wait_until(lambda: set(before) <= set(out.lines), 90, f"records before; {err.text()}")
        # The consumer now fetches incrementally: its requests name no topic.
        write_config(gateway, with_bob_operations(gateway, ["Describe"]))
        assert reload_by_signal(gateway)["event"] == "config_reloaded"
        after = [f"after-{i}" for i in range(5)]
        produce(kafka_cluster.bootstrap_servers, after)

        def refused_or_leaked() -> bool:
            leaked = any(line.startswith("after-") for line in out.lines)
            return leaked or consumer.poll() is not None

        wait_until(refused_or_leaked, 60, "the consumer to see the revocation")
        assert not [line for line in out.lines if line.startswith("after-")], out.text()
        consumer.wait(timeout=30)
        assert "TopicAuthorizationException" in err.text() or "Not authorized" in err.text()
        denied = [
            e
            for e in gateway.events()
            if e.get("event") == "authorization_denied"  # one aggregated event per request
            and TOPIC in e.get("resources", [])
            and "Read" in e.get("operations", [])
        ]
        assert denied, gateway.tail()
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()


def test_revoked_read_reaches_a_running_confluent_consumer(
    session_gateway: RunningGateway,
    kafka_cluster,  # type: ignore[no-untyped-def]
) -> None:
    gateway = session_gateway
    write_config(gateway, with_bob_operations(gateway, ["Read", "Describe"]))
    assert reload_by_signal(gateway)["event"] == "config_reloaded"
    consumer = Consumer(
        {
            "bootstrap.servers": gateway.bootstrap,
            **confluent_sasl("bob", "sessions-librdkafka"),
            # librdkafka looks the group up even for assign(); bob has no group ACL, so
            # that lookup fails (GROUP_AUTHORIZATION_FAILED) without affecting fetches.
            "group.id": "bob-unused",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    try:
        consumer.assign([TopicPartition(LIBRDKAFKA_TOPIC, 0, 0)])
        before = [f"before-{i}" for i in range(5)]
        produce(kafka_cluster.bootstrap_servers, before, LIBRDKAFKA_TOPIC)
        received: list[str] = []
        errors: list[KafkaError] = []

        def poll_once() -> None:
            msg = consumer.poll(0.2)
            if msg is None:
                return
            if msg.error() is None:
                received.append(msg.value().decode())
            else:
                errors.append(msg.error())

        wait_until(lambda: poll_once() or set(before) <= set(received), 60, "records before")
        topic_errors = [e for e in errors if e.code() != KafkaError.GROUP_AUTHORIZATION_FAILED]
        assert not topic_errors, topic_errors
        errors.clear()

        # The consumer is fetching (long polls in flight) when Read is revoked.
        write_config(gateway, with_bob_operations(gateway, ["Describe"]))
        assert reload_by_signal(gateway)["event"] == "config_reloaded"
        after = [f"after-{i}" for i in range(5)]
        produce(kafka_cluster.bootstrap_servers, after, LIBRDKAFKA_TOPIC)

        def refused() -> bool:
            poll_once()
            return any(e.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED for e in errors)

        wait_until(refused, 60, f"TOPIC_AUTHORIZATION_FAILED; got {errors}")
        for _ in range(10):  # and records do not follow the error either
            poll_once()
        assert not [v for v in received if v.startswith("after-")], received
    finally:
        consumer.close()
    assert any(
        e.get("event") == "authorization_denied"
        and LIBRDKAFKA_TOPIC in e.get("resources", [])
        and "Read" in e.get("operations", [])
        and e.get("client_id") == "sessions-librdkafka"
        for e in gateway.events()
    ), gateway.tail()
