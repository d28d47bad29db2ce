"""ACLs at the gateway: real clients get the errors a real Kafka broker would give them.

Three principals authenticate with SASL PLAIN: ``alice`` writes and reads ``orders.*``
and consumes as group ``billing``; ``bob`` only reads ``orders.*``, with groups
starting with ``bob-``, and an explicit deny rule on group ``billing``; ``carol`` may
describe ``orders.*`` and use groups starting with ``carol-``, but not read the topics. Each client
library must report the denial the way it reports a broker's (a delivery error, an
exception from a future, a consumer error event), keep its connection working, and
the gateway must write one aggregated ``authorization_denied`` audit event per
request with refusals (counts, the refused names, the deciding rules).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from policies.auth import hash_password
from tests.gateway_harness import Event, RunningGateway, running_gateway
from tests.integration.clients import produce_values, values_on_broker
from tests.integration.conftest import _wait_until_every_broker_knows

pytestmark = pytest.mark.kafka

#: Distinct, greppable passwords: the audit log must never contain one.
PASSWORDS = {
    "alice": "alice-pw-Qx81rT",
    "bob": "bob-pw-Zr27kW",
    "carol": "carol-pw-Hn55vB",
    "admin": "admin-pw-Lm04sJ",
}

RUN = uuid.uuid4().hex[:8]
ORDERS = f"orders.{RUN}"
ORDERS_2 = f"orders.{RUN}-b"
PAYMENTS = f"payments-{RUN}"
SEEDED = [f"seed-{i}" for i in range(20)]

# Index of each rule in ACL_RULES: the audit log names the deciding rule by it.
BOB_DENIED_BILLING_RULE = "rules[5]"
ACL_RULES: dict[str, Any] = {
    "default": "deny",
    "super_users": ["User:admin"],
    "principal_groups": {"readers": ["User:bob"]},
    "rules": [
        {
            "principals": ["User:alice"],
            "resource_type": "topic",
            "pattern_type": "prefixed",
            "resource_name": "orders.",
            "operations": ["Write", "Read", "Describe"],
        },
        {
            # Read alone: Kafka's Read implies Describe (FindCoordinator, OffsetFetch).
            "principals": ["User:alice"],
            "resource_type": "group",
            "resource_name": "billing",
            "operations": ["Read"],
        },
        {
            "principals": ["User:alice"],
            "resource_type": "transactional_id",
            "pattern_type": "prefixed",
            "resource_name": "alice-tx-",
            "operations": ["Write", "Describe"],
        },
        {
            "principals": ["Group:readers"],
            "resource_type": "topic",
            "pattern_type": "prefixed",
            "resource_name": "orders.",
            "operations": ["Read", "Describe"],
        },
        {
            "principals": ["User:bob"],
            "resource_type": "group",
            "pattern_type": "prefixed",
            "resource_name": "bob-",
            "operations": ["Read"],
        },
        {
            "principals": ["User:bob"],
            "resource_type": "group",
            "resource_name": "billing",
            "operations": ["All"],
            "effect": "deny",
        },
        {
            # Describe without Read: metadata, group and offsets work, Fetch is refused.
            "principals": ["User:carol"],
            "resource_type": "topic",
            "pattern_type": "prefixed",
            "resource_name": "orders.",
            "operations": ["Describe"],
        },
        {
            "principals": ["User:carol"],
            "resource_type": "group",
            "pattern_type": "prefixed",
            "resource_name": "carol-",
            "operations": ["Read"],
        },
    ],
}


# --- helpers shared with test_quotas.py and test_config_reload.py --------------------


def plain_listener(users: Iterable[str]) -> dict[str, Any]:
    """A SASL PLAIN listener knowing ``users`` (with their PASSWORDS)."""
    return {
        "authentication": {
            "mechanisms": ["PLAIN"],
            "users": {user: hash_password(PASSWORDS[user]) for user in users},
            "failed_authentication_delay_ms": 50,
        }
    }


def confluent_sasl(user: str, client_id: str | None = None) -> dict[str, str]:
    config = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": PASSWORDS[user],
    }
    if client_id is not None:
        config["client.id"] = client_id
    return config


def kafka_python_sasl(user: str) -> dict[str, str]:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": user,
        "sasl_plain_password": PASSWORDS[user],
    }


def create_topics(bootstrap: str, names: list[str], partitions: int = 3) -> None:
    """Create topics directly on Kafka (no ACLs there) and wait until every broker has them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
    )
    for future in futures.values():
        future.result(timeout=30)
    for name in names:
        _wait_until_every_broker_knows(bootstrap, name, partitions)


def deliver(producer: Producer, topic: str, value: bytes, timeout: float = 30) -> KafkaError | None:
    """Produce one message and wait for its delivery report: None, or the client's error."""
    reports: list[KafkaError | None] = []
    producer.produce(topic, value, on_delivery=lambda err, _msg: reports.append(err))
    remaining = producer.flush(timeout)
    assert remaining == 0 and len(reports) == 1, f"no delivery report within {timeout}s"
    return reports[0]


def wait_for_denial(
    gateway: RunningGateway,
    after: int,
    principal: str,
    resource: str,
    operations: set[str],
    resource_type: str = "topic",
    client_id: str | None = None,
    timeout: float = 15,
) -> Event:
    """The aggregated ``authorization_denied`` audit event naming ``resource``, written
    after the log mark ``after`` (so not one of an earlier test); checks its fields (one
    event per request: counts, the refused names, the deciding rules)."""
    event = gateway.wait_for_event(
        lambda e: (
            e.get("event") == "authorization_denied"
            and e.get("principal") == principal
            and resource in e.get("resources", ())
            and resource_type in e.get("resource_types", ())
            and bool(operations & set(e.get("operations", ())))
            and (client_id is None or e.get("client_id") == client_id)
        ),
        after=after,
        timeout=timeout,
    )
    assert event.get("logger") in (None, "gateway.audit"), event
    assert event["denied"] >= len(event["resources"]) >= 1, event
    assert event["resources_omitted"] == event["denied"] - len(event["resources"]), event
    assert isinstance(event.get("allowed"), int), event
    assert event.get("rules") and all(isinstance(r, str) and r for r in event["rules"]), event
    assert isinstance(event.get("api"), str) and event["api"], event
    return event


def log_has_no_password(gateway: RunningGateway) -> None:
    text = gateway.log_path.read_text(errors="replace")
    leaked = [user for user, password in PASSWORDS.items() if password in text]
    assert not leaked, f"passwords of {leaked} appear in the gateway log"


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_topics(kafka_cluster) -> None:  # type: ignore[no-untyped-def]
    """orders.<run> (seeded), orders.<run>-b and payments-<run>, made directly on Kafka."""
    create_topics(kafka_cluster.bootstrap_servers, [ORDERS, ORDERS_2, PAYMENTS])
    produce_values(kafka_cluster.bootstrap_servers, ORDERS, SEEDED)


@pytest.fixture(scope="module")
def acl_gateway(
    kafka_cluster,  # type: ignore[no-untyped-def]
    acl_topics: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway]:
    with running_gateway(
        tmp_path_factory.mktemp("acl-gateway"),
        kafka_cluster.bootstrap_servers,
        listener=plain_listener(["alice", "bob", "admin", "carol"]),
        cluster={"authorization": ACL_RULES},
    ) as gateway:
        yield gateway


def client_config(gateway: RunningGateway, user: str, client_id: str) -> dict[str, Any]:
    return {"bootstrap.servers": gateway.bootstrap, **confluent_sasl(user, client_id)}


def consume_until(consumer: Consumer, wanted: set[str], timeout: float = 30) -> list[str]:
    """Poll until every value in ``wanted`` was seen (or the timeout); all values seen."""
    values: list[str] = []
    deadline = time.monotonic() + timeout
    while not wanted <= set(values) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            raise AssertionError(f"consumer error: {msg.error()}")
        values.append(msg.value().decode())
    return values


# --- confluent-kafka (librdkafka) ---------------------------------------------------


def test_confluent_producer_denied_topic_then_allowed_on_the_same_producer(
    acl_gateway: RunningGateway,
    kafka_cluster,  # type: ignore[no-untyped-def]
) -> None:
    mark = acl_gateway.log_mark()
    producer = Producer(
        {**client_config(acl_gateway, "alice", "acl-alice-producer"), "linger.ms": 0}
    )
    assert deliver(producer, ORDERS, b"alice-1") is None
    denied = deliver(producer, PAYMENTS, b"alice-to-payments")
    assert denied is not None, "alice's produce to payments was delivered"
    assert denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied
    # The same producer (same connections) goes on working for what is allowed.
    assert deliver(producer, ORDERS, b"alice-2") is None
    event = wait_for_denial(
        acl_gateway, mark, "User:alice", PAYMENTS, {"Describe"}, client_id="acl-alice-producer"
    )
    assert event["api"] == "metadata"  # librdkafka asks for the topic's metadata first
    assert event["rules"] == ["default"]
    # On Kafka itself: the allowed records are there, the denied one nowhere.
    assert {b"alice-1", b"alice-2"} <= set(
        values_on_broker(kafka_cluster.bootstrap_servers, ORDERS)
    )
    assert b"alice-to-payments" not in values_on_broker(kafka_cluster.bootstrap_servers, PAYMENTS)


def test_confluent_read_only_principal_cannot_produce(
    acl_gateway: RunningGateway,
    kafka_cluster,  # type: ignore[no-untyped-def]
) -> None:
    mark = acl_gateway.log_mark()
    producer = Producer({**client_config(acl_gateway, "bob", "acl-bob-producer"), "linger.ms": 0})
    denied = deliver(producer, ORDERS, b"bob-was-here")
    assert denied is not None, "bob's produce to orders was delivered"
    assert denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied
    event = wait_for_denial(acl_gateway, mark, "User:bob", ORDERS, {"Write"})
    assert event["api"] == "produce"
    assert event["rules"] == ["default"]
    # The Produce itself reached the gateway (bob may describe orders) and must have
    # stopped there: nothing of it is on the broker.
    on_broker = values_on_broker(kafka_cluster.bootstrap_servers, ORDERS)
    assert set(SEEDED) <= set(v.decode() for v in on_broker), "the broker check reads nothing"
    assert b"bob-was-here" not in on_broker, "a denied Produce was written to Kafka"


def test_confluent_consumers_in_allowed_groups_read(acl_gateway: RunningGateway) -> None:
    for user, group in (("bob", "bob-1"), ("alice", "billing")):
        consumer = Consumer(
            {
                **client_config(acl_gateway, user, f"acl-{user}-consumer"),
                "group.id": group,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            consumer.subscribe([ORDERS])
            values = consume_until(consumer, set(SEEDED))
            consumer.commit(asynchronous=False)  # OffsetCommit: Read on the group and topic
        finally:
            consumer.close()
        assert set(SEEDED) <= set(values), f"{user} as {group} got {values}"


def test_confluent_consumer_in_a_denied_group_gets_group_authorization_failed(
    acl_gateway: RunningGateway,
) -> None:
    mark = acl_gateway.log_mark()
    client_errors: list[KafkaError] = []
    consumer = Consumer(
        {
            **client_config(acl_gateway, "bob", "acl-bob-billing"),
            "group.id": "billing",
            "auto.offset.reset": "earliest",
            "error_cb": client_errors.append,
        }
    )
    consumer_errors: list[KafkaError] = []
    try:
        consumer.subscribe([ORDERS])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is not None, "bob consumed a message as group billing"
            consumer_errors.append(msg.error())
            if msg.error().code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                break
    finally:
        consumer.close()
    codes = [e.code() for e in consumer_errors]
    assert KafkaError.GROUP_AUTHORIZATION_FAILED in codes, (consumer_errors, client_errors)
    event = wait_for_denial(
        acl_gateway, mark, "User:bob", "billing", {"Describe", "Read"}, resource_type="group"
    )
    assert event["rules"] == [BOB_DENIED_BILLING_RULE]  # the explicit deny rule decided


def test_confluent_consumer_without_read_gets_topic_authorization_failed_and_no_record(
    acl_gateway: RunningGateway,
) -> None:
    """carol may describe ``orders.*`` and join her group, but not Read: the Fetch is
    refused with TOPIC_AUTHORIZATION_FAILED and not one seeded record reaches her."""
    mark = acl_gateway.log_mark()
    client_errors: list[KafkaError] = []
    consumer = Consumer(
        {
            **client_config(acl_gateway, "carol", "acl-carol-consumer"),
            "group.id": f"carol-{RUN}",
            "auto.offset.reset": "earliest",
            "error_cb": client_errors.append,
        }
    )
    consumer_errors: list[KafkaError] = []
    records: list[bytes] = []
    try:
        consumer.subscribe([ORDERS])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is None:
                records.append(msg.value())
                continue
            consumer_errors.append(msg.error())
            if msg.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                break
        # A few more polls: a refused Fetch must not be followed by records either.
        for _ in range(4):
            msg = consumer.poll(0.25)
            if msg is not None and msg.error() is None:
                records.append(msg.value())
    finally:
        consumer.close()
    assert not records, f"carol read {len(records)} records without Read on {ORDERS}"
    codes = [e.code() for e in consumer_errors]
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in codes, (consumer_errors, client_errors)
    event = wait_for_denial(
        acl_gateway, mark, "User:carol", ORDERS, {"Read"}, client_id="acl-carol-consumer"
    )
    assert event["api"] == "fetch", event
    assert event["rules"] == ["default"]


def test_metadata_lists_only_the_topics_a_principal_may_describe(
    acl_gateway: RunningGateway,
) -> None:
    mark = acl_gateway.log_mark()
    bob = AdminClient(client_config(acl_gateway, "bob", "acl-bob-admin"))
    listed = bob.list_topics(timeout=15)
    assert {ORDERS, ORDERS_2} <= set(listed.topics)
    assert PAYMENTS not in listed.topics
    hidden = [name for name in listed.topics if not name.startswith("orders.")]
    assert not hidden, f"bob may not describe {hidden}"  # e.g. __consumer_offsets

    named = bob.list_topics(topic=PAYMENTS, timeout=15)
    assert PAYMENTS in named.topics
    error = named.topics[PAYMENTS].error
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    assert not named.topics[PAYMENTS].partitions
    wait_for_denial(acl_gateway, mark, "User:bob", PAYMENTS, {"Describe"})

    # The filter is per principal: the super user sees everything.
    admin = AdminClient(client_config(acl_gateway, "admin", "acl-admin"))
    assert {ORDERS, ORDERS_2, PAYMENTS} <= set(admin.list_topics(timeout=15).topics)


def test_transactional_ids_are_authorized(acl_gateway: RunningGateway) -> None:
    mark = acl_gateway.log_mark()
    allowed = Producer(
        {
            **client_config(acl_gateway, "alice", "acl-alice-tx"),
            "transactional.id": f"alice-tx-{RUN}",
        }
    )
    reports: list[KafkaError | None] = []
    allowed.init_transactions(30)
    allowed.begin_transaction()
    allowed.produce(ORDERS, b"in-a-transaction", on_delivery=lambda err, _m: reports.append(err))
    allowed.commit_transaction(30)
    assert reports == [None]

    denied_id = f"mallory-tx-{RUN}"
    denied = Producer(
        {
            **client_config(acl_gateway, "alice", "acl-alice-tx-denied"),
            "transactional.id": denied_id,
        }
    )
    with pytest.raises(KafkaException) as failure:
        denied.init_transactions(20)
    error = failure.value.args[0]
    assert error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, error
    wait_for_denial(
        acl_gateway,
        mark,
        "User:alice",
        denied_id,
        {"Describe", "Write"},
        resource_type="transactional_id",
    )


def test_admin_operations_are_denied_per_topic(acl_gateway: RunningGateway, kafka_cluster) -> None:  # type: ignore[no-untyped-def]
    mark = acl_gateway.log_mark()
    bob = AdminClient(client_config(acl_gateway, "bob", "acl-bob-admin-ops"))
    new_topic = f"orders.{RUN}-new"
    created = bob.create_topics(
        [NewTopic(new_topic, num_partitions=1, replication_factor=1)], request_timeout=15
    )
    with pytest.raises(KafkaException) as create_failure:
        created[new_topic].result(timeout=30)
    create_error = create_failure.value.args[0]
    assert create_error.code() in {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }, create_error

    deleted = bob.delete_topics([ORDERS_2], request_timeout=15)
    with pytest.raises(KafkaException) as delete_failure:
        deleted[ORDERS_2].result(timeout=30)
    delete_error = delete_failure.value.args[0]
    assert delete_error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, delete_error

    direct = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    topics = direct.list_topics(timeout=15).topics
    assert new_topic not in topics and ORDERS_2 in topics, "a denied admin request reached Kafka"
    create_event = wait_for_denial(acl_gateway, mark, "User:bob", new_topic, {"Create"})
    assert create_event["api"] == "create_topics"
    delete_event = wait_for_denial(acl_gateway, mark, "User:bob", ORDERS_2, {"Delete"})
    assert delete_event["api"] == "delete_topics"


# --- kafka-python -------------------------------------------------------------------


def test_kafka_python_producers_get_topic_authorization_failed(
    acl_gateway: RunningGateway,
    kafka_cluster,  # type: ignore[no-untyped-def]
) -> None:
    mark = acl_gateway.log_mark()
    alice = KafkaProducer(
        bootstrap_servers=acl_gateway.bootstrap,
        client_id="acl-alice-kafka-python",
        max_block_ms=15000,
        **kafka_python_sasl("alice"),
    )
    try:
        assert alice.send(ORDERS, b"kp-alice-1").get(timeout=30).offset >= 0
        with pytest.raises(TopicAuthorizationFailedError):
            alice.send(PAYMENTS, b"kp-alice-denied").get(timeout=30)
        assert alice.send(ORDERS, b"kp-alice-2").get(timeout=30).offset >= 0
    finally:
        alice.close(timeout=10)
    wait_for_denial(
        acl_gateway, mark, "User:alice", PAYMENTS, {"Describe"}, client_id="acl-alice-kafka-python"
    )

    # Bob may describe orders (metadata works); the Produce itself is denied. Without
    # idempotence: an idempotent producer needs Write on some topic (KIP-679), and bob
    # has none, so it would fail earlier, at InitProducerId.
    bob = KafkaProducer(
        bootstrap_servers=acl_gateway.bootstrap,
        client_id="acl-bob-kafka-python",
        enable_idempotence=False,
        max_block_ms=15000,
        **kafka_python_sasl("bob"),
    )
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            bob.send(ORDERS, b"kp-bob-denied").get(timeout=30)
    finally:
        bob.close(timeout=10)
    event = wait_for_denial(
        acl_gateway, mark, "User:bob", ORDERS, {"Write"}, client_id="acl-bob-kafka-python"
    )
    assert event["api"] == "produce"
    on_broker = set(values_on_broker(kafka_cluster.bootstrap_servers, ORDERS))
    assert {b"kp-alice-1", b"kp-alice-2"} <= on_broker
    assert b"kp-bob-denied" not in on_broker, "a denied Produce was written to Kafka"
    assert b"kp-alice-denied" not in values_on_broker(kafka_cluster.bootstrap_servers, PAYMENTS)


def test_kafka_python_consumers(acl_gateway: RunningGateway) -> None:
    mark = acl_gateway.log_mark()
    allowed = KafkaConsumer(
        ORDERS,
        bootstrap_servers=acl_gateway.bootstrap,
        group_id="bob-2",
        client_id="acl-bob-kp-consumer",
        auto_offset_reset="earliest",
        **kafka_python_sasl("bob"),
    )
    values: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not set(SEEDED) <= set(values) and time.monotonic() < deadline:
            for records in allowed.poll(timeout_ms=500).values():
                values += [r.value.decode() for r in records]
        allowed.commit()
    finally:
        allowed.close()
    assert set(SEEDED) <= set(values)

    denied = KafkaConsumer(
        ORDERS,
        bootstrap_servers=acl_gateway.bootstrap,
        group_id="billing",
        client_id="acl-bob-kp-billing",
        auto_offset_reset="earliest",
        **kafka_python_sasl("bob"),
    )
    try:
        # kafka-python raises the group error from poll (FindCoordinator's answer).
        with pytest.raises(GroupAuthorizationFailedError):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                assert not denied.poll(timeout_ms=500), "bob consumed as group billing"
    finally:
        denied.close()
    event = wait_for_denial(
        acl_gateway,
        mark,
        "User:bob",
        "billing",
        {"Describe", "Read"},
        resource_type="group",
        client_id="acl-bob-kp-billing",
    )
    assert event["rules"] == [BOB_DENIED_BILLING_RULE]


# --- audit --------------------------------------------------------------------------


def test_audit_events_name_the_decision_and_carry_no_password(
    acl_gateway: RunningGateway,
) -> None:
    mark = acl_gateway.log_mark()
    # One more denial, so this test stands on its own when run alone.
    bob = AdminClient(client_config(acl_gateway, "bob", "acl-audit"))
    bob.list_topics(topic=PAYMENTS, timeout=15)
    wait_for_denial(acl_gateway, mark, "User:bob", PAYMENTS, {"Describe"})
    denials = [e for e in acl_gateway.events() if e.get("event") == "authorization_denied"]
    for event in denials:
        for field in ("principal", "operations", "resource_types", "resources", "rules", "api"):
            assert event.get(field), f"{field} missing in {event}"
        assert not any("password" in key.lower() for key in event), event
    assert {e["principal"] for e in denials} <= {"User:alice", "User:bob", "User:carol"}
    log_has_no_password(acl_gateway)
