"""The local Kafka harness itself: a real 3-broker KRaft cluster that the Java tools can use.

Every other integration test trusts these fixtures, so this checks what they promise:
all brokers serve, replicas and leaders spread over brokers, the reference Java clients
round-trip records, share groups are on, and losing a broker moves its leaders.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaConnectionError

from localkafka.cluster import LocalKafkaCluster
from localkafka.probes import metadata_broker_ids
from tests import kafka_tools

pytestmark = pytest.mark.kafka


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def admin_for() -> Iterator[Callable[[str], KafkaAdminClient]]:
    """kafka-python admin clients, closed after the test."""
    clients: list[KafkaAdminClient] = []

    def make(bootstrap: str) -> KafkaAdminClient:
        client = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _partitions(admin: KafkaAdminClient, topic: str) -> list[dict[str, Any]]:
    """Partition metadata; empty while the topic has not reached the answering broker."""
    (described,) = admin.describe_topics([topic])
    if described["error_code"] != 0:
        return []
    return sorted(described["partitions"], key=lambda p: p["partition_index"])


def _leaders(admin: KafkaAdminClient, topic: str) -> list[int]:
    return [p["leader_id"] for p in _partitions(admin, topic)]


def _leaders_once_answered(admin: KafkaAdminClient, topic: str) -> list[int]:
    """Leaders, or [] when the question went to a killed broker: the admin client asks
    any node it knows and learns of the death only from the refused connection."""
    try:
        return _leaders(admin, topic)
    except KafkaConnectionError:
        return []


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


def _create_spread_topic(admin: KafkaAdminClient, topic: str) -> list[dict[str, Any]]:
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=3)])

    def all_led() -> bool:
        leaders = _leaders(admin, topic)
        return len(leaders) == 6 and min(leaders) >= 0

    _wait_for(all_led, 30, f"leaders of {topic}")
    return _partitions(admin, topic)


def test_layout_keeps_controller_ports_apart() -> None:
    three = LocalKafkaCluster(3, base_port=29092)
    assert three.controller_ids == [1, 2, 3]
    assert three.all_ports() == [29092, 29093, 29094, 29192, 29193, 29194]
    five = LocalKafkaCluster(5, base_port=29092)
    assert five.controller_ids == [1, 2, 3]
    assert five.controller_port(4) is None
    assert LocalKafkaCluster(2, base_port=29092).controller_ids == [1]
    with pytest.raises(ValueError, match="gateway's range"):
        LocalKafkaCluster(3, base_port=8995)
    with pytest.raises(ValueError, match="brokers"):
        LocalKafkaCluster(0)


def test_every_broker_sees_all_brokers(kafka_cluster: LocalKafkaCluster) -> None:
    assert kafka_cluster.bootstrap_servers == ",".join(
        f"127.0.0.1:{kafka_cluster.base_port + i}" for i in range(3)
    )
    for node_id in kafka_cluster.node_ids:
        port = kafka_cluster.broker_port(node_id)
        assert metadata_broker_ids("127.0.0.1", port) == {1, 2, 3}
        assert kafka_cluster.log_path(node_id).exists()


def test_topic_replicas_and_leaders_spread_over_brokers(
    kafka_cluster: LocalKafkaCluster, admin_for: Callable[[str], KafkaAdminClient]
) -> None:
    partitions = _create_spread_topic(admin_for(kafka_cluster.bootstrap_servers), _unique("t"))
    assert len(partitions) == 6
    assert all(sorted(p["replica_nodes"]) == [1, 2, 3] for p in partitions)
    assert {p["leader_id"] for p in partitions} == {1, 2, 3}


def test_java_console_tools_round_trip(kafka_cluster: LocalKafkaCluster) -> None:
    topic = _unique("console")
    bootstrap = kafka_cluster.bootstrap_servers
    kafka_tools.create_topic(bootstrap, topic, partitions=3, replication_factor=3)
    records = [f"k{i}:value-{i}" for i in range(10)]
    kafka_tools.console_produce(bootstrap, topic, records, key_separator=":")
    consumed = kafka_tools.console_consume(
        bootstrap, topic, max_messages=10, group=_unique("g"), print_key=True
    )
    assert sorted(consumed) == sorted(r.replace(":", "\t", 1) for r in records)


def test_share_groups_and_consumer_protocol_enabled(
    kafka_cluster: LocalKafkaCluster, admin_for: Callable[[str], KafkaAdminClient]
) -> None:
    features = admin_for(kafka_cluster.bootstrap_servers).describe_features()
    assert features["share.version"]["finalized"][0] >= 1
    log = kafka_cluster.log_path(1).read_text(errors="replace")
    assert "group.coordinator.rebalance.protocols = [classic, consumer, share]" in log


def test_killed_broker_loses_leadership_and_cluster_keeps_serving(
    fresh_kafka_cluster: Callable[..., LocalKafkaCluster],
    admin_for: Callable[[str], KafkaAdminClient],
) -> None:
    cluster = fresh_kafka_cluster(brokers=3)
    topic = _unique("failover")
    admin = admin_for(cluster.bootstrap_servers)
    partitions = _create_spread_topic(admin, topic)
    victim = partitions[0]["leader_id"]
    cluster.kill_broker(victim)
    assert cluster.pid(victim) is None
    survivors = cluster.running_bootstrap_servers
    assert cluster.broker_address(victim) not in survivors
    _wait_for(
        lambda: len(leaders := _leaders_once_answered(admin, topic)) == 6 and victim not in leaders,
        30,
        f"partitions led by broker {victim} to move",
    )

    kafka_tools.console_produce(survivors, topic, [f"after-kill-{i}" for i in range(6)])
    consumed = kafka_tools.console_consume(
        survivors,
        topic,
        max_messages=6,
        group=_unique("g"),
        extra_props={"group.protocol": "consumer"},
    )
    assert sorted(consumed) == [f"after-kill-{i}" for i in range(6)]
    result = kafka_tools.producer_perf(
        survivors, _unique("tx"), 200, record_size=50, extra_props={"transactional.id": "tx-1"}
    )
    assert result.records == 200

    cluster.start_broker(victim)
    assert metadata_broker_ids("127.0.0.1", cluster.broker_port(victim)) == {1, 2, 3}
