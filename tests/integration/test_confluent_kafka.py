"""librdkafka (confluent-kafka) through the gateway: it must not be able to tell."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from tests.gateway_harness import RunningGateway
from tests.integration.clients import (
    StatsRecorder,
    consume_values,
    gateway_addresses,
    produce_values,
)

pytestmark = pytest.mark.kafka


def test_produce_and_consume_with_a_group_only_through_gateway_addresses(
    gateway: RunningGateway, topic: str
) -> None:
    stats = StatsRecorder()
    values = [f"value-{i}" for i in range(300)]
    delivered = produce_values(
        gateway.bootstrap, topic, values, stats_cb=stats, **{"statistics.interval.ms": 100}
    )
    assert len({partition for partition, _ in delivered}) == 6
    received = consume_values(
        gateway.bootstrap,
        topic,
        len(values),
        group=f"g-{uuid.uuid4().hex[:6]}",
        stats_cb=stats,
        **{"statistics.interval.ms": 100},
    )
    assert sorted(received) == sorted(values)
    assert stats.broker_addresses, "librdkafka reported no brokers"
    assert stats.broker_addresses <= gateway_addresses(gateway.bootstrap), stats.broker_addresses


def test_metadata_shows_gateway_brokers_with_upstream_node_ids(
    gateway: RunningGateway, kafka_cluster, topic: str
) -> None:
    direct = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers}).list_topics(
        timeout=10
    )
    via = AdminClient({"bootstrap.servers": gateway.bootstrap}).list_topics(timeout=10)
    assert set(via.brokers) == set(direct.brokers) == {1, 2, 3}
    gateway_port = int(gateway.bootstrap.rsplit(":", 1)[1])
    for node_id, broker in via.brokers.items():
        assert (broker.host, broker.port) == ("127.0.0.1", gateway_port + node_id)
    assert via.topics[topic].partitions.keys() == direct.topics[topic].partitions.keys()
    leaders = {p.leader for p in via.topics[topic].partitions.values()}
    assert len(leaders) > 1, "partitions should be led by different brokers"


def test_idempotent_producer(gateway: RunningGateway, topic: str) -> None:
    values = [f"idem-{i}" for i in range(200)]
    produce_values(gateway.bootstrap, topic, values, **{"enable.idempotence": True, "acks": "all"})
    received = consume_values(gateway.bootstrap, topic, len(values), group=f"g-{uuid.uuid4()}")
    assert sorted(received) == sorted(values)


def test_committed_and_aborted_transactions(gateway: RunningGateway, topic: str) -> None:
    """A read_committed consumer reads every partition to its end and sees no aborted record.

    The log ends with an aborted transaction, so a consumer that stopped once it had
    the committed records would not reach the records most likely to leak.
    """
    producer = Producer(
        {"bootstrap.servers": gateway.bootstrap, "transactional.id": f"tx-{uuid.uuid4()}"}
    )
    producer.init_transactions(30)
    committed = [f"committed-{i}" for i in range(10)] + ["committed-last"]
    aborted = [f"aborted-{i}" for i in range(10)] + [f"aborted-late-{i}" for i in range(10)]
    transactions = [(committed[:10], True), (aborted[:10], False), (committed[10:], True)]
    transactions.append((aborted[10:], False))  # last in the log
    for values, commit in transactions:
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value=value.encode())
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    received = consume_to_end(gateway.bootstrap, topic, **{"isolation.level": "read_committed"})
    assert not set(received) & set(aborted), "aborted records reached a read_committed consumer"
    assert sorted(received) == sorted(committed)
    # The records are there: a read_uncommitted consumer sees the aborted ones too.
    everything = consume_to_end(gateway.bootstrap, topic, **{"isolation.level": "read_uncommitted"})
    assert sorted(everything) == sorted(committed + aborted)


def consume_to_end(bootstrap: str, topic: str, timeout: float = 60, **config: str) -> list[str]:
    """Every value in ``topic``, reading each partition until it reports its end offset.

    The end offsets are asked for first (with the consumer's isolation level: for
    read_committed, the last stable offset); a partition is done once the consumer
    reports reaching an offset at or past it.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4()}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            **config,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        assert sum(ends.values()) > 0, ends
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        values: list[str] = []
        reached: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        while any(reached.get(p, -1) < end for p, end in ends.items()):
            assert time.monotonic() < deadline, f"ends {ends} not reached: {reached}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                reached[msg.partition()] = msg.offset()
            elif error is not None:
                raise AssertionError(f"consumer error: {error}")
            else:
                values.append(msg.value().decode())
                reached[msg.partition()] = msg.offset() + 1
        return values
    finally:
        consumer.close()


def test_admin_create_describe_delete_topics(gateway: RunningGateway) -> None:
    admin = AdminClient({"bootstrap.servers": gateway.bootstrap})
    name = f"admin-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=2)])[name].result(30)
    description = _described_once_known(admin, name)
    assert len(description.partitions) == 3
    cluster = admin.describe_cluster().result(30)
    assert {f"{n.host}:{n.port}" for n in cluster.nodes} <= gateway_addresses(gateway.bootstrap)
    assert cluster.controller is not None
    admin.delete_topics([name])[name].result(30)
    assert name not in admin.list_topics(timeout=10).topics or _eventually_deleted(admin, name)


def _described_once_known(admin: AdminClient, name: str) -> Any:
    """CreateTopics answers once the controller has the topic; the broker that answers
    the describe may learn of it a moment later (UNKNOWN_TOPIC_OR_PART until then)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return admin.describe_topics(TopicCollection([name]))[name].result(30)
        except KafkaException as exc:
            unknown = exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if not unknown or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _eventually_deleted(admin: AdminClient, name: str) -> bool:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if name not in admin.list_topics(timeout=10).topics:
            return True
        time.sleep(0.2)
    return False


def test_consumer_group_protocol_kip_848(gateway: RunningGateway, topic: str) -> None:
    values = [f"848-{i}" for i in range(60)]
    produce_values(gateway.bootstrap, topic, values)
    consumer = Consumer(
        {
            "bootstrap.servers": gateway.bootstrap,
            "group.id": f"g848-{uuid.uuid4().hex[:6]}",
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    received: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while len(received) < len(values) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                received.append(msg.value().decode())
        assignment = consumer.assignment()
    finally:
        consumer.close()
    assert sorted(received) == sorted(values)
    assert len(assignment) == 6
