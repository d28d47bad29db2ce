"""Virtual node ids (``node_ids: {offset: 100}``) in front of the 3-broker cluster.

Clients must see brokers 101-103 on gateway ports only: in librdkafka's own
statistics, in Metadata, FindCoordinator and DescribeCluster answers, and when
they name a broker (DescribeConfigs of broker 101 is answered by broker 1).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from kafka import KafkaProducer
from kio.schema.describe_cluster.v1.request import DescribeClusterRequest
from kio.schema.find_coordinator.v6.request import FindCoordinatorRequest
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.static.primitive import i8

from tests.gateway_harness import RunningGateway, running_gateway
from tests.integration.clients import consume_values, kafka_python_group_read, produce_values
from tests.kafka_tools import console_consume, console_produce, java_tool
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka

OFFSET = 100
VIRTUAL_IDS = {101, 102, 103}


@pytest.fixture(scope="module")
def gateway(kafka_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:  # type: ignore[no-untyped-def]
    """The gateway with node id offset 100; broker 10N is served on bootstrap port + N."""
    with running_gateway(
        tmp_path_factory.mktemp("node-ids"),
        kafka_cluster.bootstrap_servers,
        cluster={"node_ids": {"offset": OFFSET}},
        listener_for_port=lambda port: {"broker_port_base": port - OFFSET},
    ) as gw:
        yield gw


def _port(gateway: RunningGateway) -> int:
    return int(gateway.bootstrap.rsplit(":", 1)[1])


def _broker_addresses(gateway: RunningGateway) -> dict[int, str]:
    port = _port(gateway)
    return {node: f"127.0.0.1:{port + node - OFFSET}" for node in VIRTUAL_IDS}


class BrokerStats:
    """librdkafka statistics: the node id and address of every broker the client used."""

    def __init__(self) -> None:
        self.brokers: set[tuple[int, str]] = set()

    def __call__(self, raw: str) -> None:
        for broker in json.loads(raw).get("brokers", {}).values():
            if broker.get("source") != "logical" or broker.get("nodeid", -1) >= 0:
                self.brokers.add((broker["nodeid"], broker["nodename"]))


def test_produce_and_consume_with_a_group_see_only_virtual_ids(
    gateway: RunningGateway, topic: str
) -> None:
    stats = BrokerStats()
    values = [f"v-{i}" for i in range(200)]
    config: dict[str, Any] = {"stats_cb": stats, "statistics.interval.ms": 100}
    delivered = produce_values(gateway.bootstrap, topic, values, **config)
    assert len({partition for partition, _ in delivered}) == 6
    group = f"g-{uuid.uuid4().hex[:6]}"
    received = consume_values(gateway.bootstrap, topic, len(values), group=group, **config)
    assert sorted(received) == sorted(values)
    learned = {(node, name) for node, name in stats.brokers if node >= 0}
    bootstrap_only = {name for node, name in stats.brokers if node < 0}
    assert learned == {(n, a) for n, a in _broker_addresses(gateway).items()}, stats.brokers
    assert bootstrap_only <= {gateway.bootstrap}, stats.brokers


def test_metadata_leaders_replicas_and_controller_are_virtual(
    gateway: RunningGateway, topic: str
) -> None:
    metadata = AdminClient({"bootstrap.servers": gateway.bootstrap}).list_topics(timeout=10)
    assert set(metadata.brokers) == VIRTUAL_IDS
    for node, broker in metadata.brokers.items():
        assert f"{broker.host}:{broker.port}" == _broker_addresses(gateway)[node]
    assert metadata.controller_id in VIRTUAL_IDS
    partitions = metadata.topics[topic].partitions.values()
    assert len(partitions) == 6
    for partition in partitions:
        assert partition.leader in VIRTUAL_IDS
        assert set(partition.replicas) == set(partition.isrs) == VIRTUAL_IDS


def test_describe_cluster_shows_virtual_brokers(gateway: RunningGateway) -> None:
    admin = AdminClient({"bootstrap.servers": gateway.bootstrap})
    described = admin.describe_cluster(request_timeout=10).result(timeout=20)
    assert {node.id for node in described.nodes} == VIRTUAL_IDS
    assert {f"{n.host}:{n.port}" for n in described.nodes} == set(
        _broker_addresses(gateway).values()
    )
    assert described.controller.id in VIRTUAL_IDS


@pytest.mark.parametrize(("virtual", "upstream"), [(101, 1), (103, 3)])
def test_describe_configs_of_a_virtual_broker_is_answered_by_its_upstream(
    gateway: RunningGateway, virtual: int, upstream: int
) -> None:
    admin = AdminClient({"bootstrap.servers": gateway.bootstrap})
    resource = ConfigResource(ResourceType.BROKER, str(virtual))
    (future,) = admin.describe_configs([resource], request_timeout=10).values()
    configs = future.result(timeout=20)
    assert configs["node.id"].value == str(upstream)
    assert configs["broker.id"].value == str(upstream)


def test_raw_responses_name_only_virtual_ids(gateway: RunningGateway, topic: str) -> None:
    """The bytes a client receives: no upstream id, no upstream port."""
    with RawKafkaConnection(gateway.bootstrap) as conn:
        metadata = conn.request(
            MetadataRequest(
                topics=(MetadataRequestTopic(topic_id=None, name=topic),),
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=False,
            )
        )
        cluster = conn.request(
            DescribeClusterRequest(include_cluster_authorized_operations=False, endpoint_type=i8(1))
        )
        coordinator = conn.request(
            FindCoordinatorRequest(key_type=i8(0), coordinator_keys=(f"g-{uuid.uuid4()}",))
        )
    addresses = set(_broker_addresses(gateway).values())
    assert {b.node_id for b in metadata.brokers} == VIRTUAL_IDS
    assert {f"{b.host}:{b.port}" for b in metadata.brokers} == addresses
    assert metadata.controller_id in VIRTUAL_IDS
    for partition in metadata.topics[0].partitions:
        assert partition.leader_id in VIRTUAL_IDS
        assert set(partition.replica_nodes) | set(partition.isr_nodes) <= VIRTUAL_IDS
    assert {b.broker_id for b in cluster.brokers} == VIRTUAL_IDS
    assert cluster.controller_id in VIRTUAL_IDS
    (found,) = coordinator.coordinators
    assert found.node_id in VIRTUAL_IDS
    assert f"{found.host}:{found.port}" == _broker_addresses(gateway)[found.node_id]


def test_confluent_transaction_through_virtual_coordinators(
    gateway: RunningGateway, topic: str
) -> None:
    stats = BrokerStats()
    producer = Producer(
        {
            "bootstrap.servers": gateway.bootstrap,
            "transactional.id": f"tx-{uuid.uuid4().hex[:8]}",
            "stats_cb": stats,
            "statistics.interval.ms": 100,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(50):
        producer.produce(topic, f"tx-{i}".encode())
    producer.commit_transaction(30)
    producer.poll(0.3)  # one more statistics callback
    consumer = Consumer(
        {
            "bootstrap.servers": gateway.bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    received: list[str] = []
    try:
        while len(received) < 50:
            message = consumer.poll(20)
            assert message is not None, f"only {len(received)} committed records came back"
            assert message.error() is None, message.error()
            received.append(message.value().decode())
    finally:
        consumer.close()
    assert sorted(received) == sorted(f"tx-{i}" for i in range(50))
    assert {node for node, _ in stats.brokers if node >= 0} == VIRTUAL_IDS


def test_kafka_python_sees_virtual_brokers(gateway: RunningGateway, topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=gateway.bootstrap, acks="all")
    values = [f"kp-{i}" for i in range(60)]
    for future in [producer.send(topic, value=v.encode()) for v in values]:
        future.get(timeout=30)
    producer.close()
    with kafka_python_group_read(gateway.bootstrap, topic, len(values)) as (received, consumer):
        cluster = consumer._client.cluster
        brokers = {b.node_id: f"{b.host}:{b.port}" for b in cluster.brokers()}
        leaders = {cluster.leader_for_partition(tp) for tp in consumer.assignment()}
    assert sorted(received) == sorted(values)
    assert brokers == _broker_addresses(gateway)
    assert leaders <= VIRTUAL_IDS


def test_java_console_clients_and_broker_configs(gateway: RunningGateway, topic: str) -> None:
    mark = gateway.log_mark()
    lines = [f"java-{i}" for i in range(40)]
    console_produce(gateway.bootstrap, topic, lines)
    received = console_consume(
        gateway.bootstrap, topic, len(lines), group=f"j-{uuid.uuid4().hex[:6]}"
    )
    assert sorted(received) == sorted(lines)
    described = java_tool(
        "kafka.admin.ConfigCommand",
        [
            *("--bootstrap-server", gateway.bootstrap),
            *("--entity-type", "brokers", "--entity-name", "102", "--describe", "--all"),
        ],
    ).stdout
    assert "node.id=2" in described and "broker.id=2" in described, described[-2000:]
    brokers = {
        e["broker"]
        for e in gateway.events(mark)
        if e.get("event") == "connection_opened" and e.get("broker") != "bootstrap"
    }
    assert brokers and brokers <= VIRTUAL_IDS, brokers
