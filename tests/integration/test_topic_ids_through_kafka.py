"""Fetch by topic id through a gateway with ACLs, while many clients refresh metadata.

Fetch v13+ names topics by id; the gateway's ACLs are on names, so it maps ids to
names from the Metadata responses it forwards. With many clients each refreshing
their own topic, an id seen once must still resolve later (the map once kept only
the last 8 unread responses), and an id the gateway never saw (the client's
Metadata went through another gateway process) must be looked up upstream rather
than refused.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v16.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.static.primitive import i32, i64

from policies.auth import hash_password
from tests.gateway_harness import RunningGateway, running_gateway
from tests.integration.clients import produce_values
from tests.integration.conftest import _wait_until_every_broker_knows
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka

PASSWORD = "ids-pw-Tk40qZ"
RUN = uuid.uuid4().hex[:8]
PREFIX = f"ids-{RUN}-"
TOPICS = [f"{PREFIX}{n:02d}" for n in range(30)]
FIRST_RECORDS = [f"first-{i}" for i in range(5)]
ACL_RULES: dict[str, Any] = {
    "default": "deny",
    "rules": [
        {
            "principals": ["User:alice"],
            "resource_type": "topic",
            "pattern_type": "prefixed",
            "resource_name": PREFIX,
            "operations": ["Read", "Write", "Describe"],
        }
    ],
}


def create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # alive until the futures are done
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=1, replication_factor=1) for name in names]
    )
    for future in futures.values():
        future.result(timeout=30)
    for name in names:
        _wait_until_every_broker_knows(bootstrap, name, 1)


@pytest.fixture(scope="module")
def ids_gateway(
    kafka_cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:  # type: ignore[no-untyped-def]
    create_topics(kafka_cluster.bootstrap_servers, TOPICS)
    produce_values(kafka_cluster.bootstrap_servers, TOPICS[0], FIRST_RECORDS)
    with running_gateway(
        tmp_path_factory.mktemp("topic-ids-gateway"),
        kafka_cluster.bootstrap_servers,
        listener={
            "authentication": {
                "mechanisms": ["PLAIN"],
                "users": {"alice": hash_password(PASSWORD)},
            }
        },
        cluster={"authorization": ACL_RULES},
        log_level="info",
    ) as gateway:
        yield gateway


def alice(address: str) -> RawKafkaConnection:
    """A raw connection logged in as alice (SASL PLAIN)."""
    conn = RawKafkaConnection(address)
    answer = conn.plain_login("alice", PASSWORD)
    assert answer.error_code == ErrorCode.none, answer
    return conn


def metadata(conn: RawKafkaConnection, topics: list[str] | None) -> Any:
    return conn.request(
        MetadataRequest(
            topics=None
            if topics is None
            else tuple(MetadataRequestTopic(topic_id=None, name=t) for t in topics),
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        )
    )


def leader_address(response: Any, topic: Any) -> str:
    leader = topic.partitions[0].leader_id
    broker = next(b for b in response.brokers if b.node_id == leader)
    return f"{broker.host}:{broker.port}"


def fetch_by_id(address: str, topic_id: uuid.UUID) -> Any:
    """Fetch v16 (topics named by id) of partition 0 from offset 0, as alice."""
    request = FetchRequest(
        max_wait=datetime.timedelta(milliseconds=100),
        min_bytes=i32(1),
        topics=(
            FetchTopic(
                topic_id=topic_id,
                partitions=(
                    FetchPartition(
                        partition=i32(0), fetch_offset=i64(0), partition_max_bytes=i32(1 << 20)
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
    )
    with alice(address) as conn:
        response = conn.request(request, correlation_id=7)
    (topic,) = response.responses
    assert topic.topic_id == topic_id
    (partition,) = topic.partitions
    return partition


def refresh_metadata_of(gateway: RunningGateway, topic: str) -> None:
    """One client refreshing its own topic's metadata (librdkafka, Metadata v12+)."""
    producer = Producer(
        {
            "bootstrap.servers": gateway.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "alice",
            "sasl.password": PASSWORD,
        }
    )
    found = producer.list_topics(topic=topic, timeout=20).topics[topic]
    assert found.error is None, found.error


def test_an_id_seen_once_resolves_after_many_clients_refreshed(ids_gateway: RunningGateway) -> None:
    with alice(ids_gateway.bootstrap) as conn:
        response = metadata(conn, [TOPICS[0]])
    (first,) = response.topics
    assert first.error_code == ErrorCode.none
    # A client per topic refreshes metadata: 29 responses (plus each client's own
    # bootstrap Metadata) arrive after the one naming the first topic.
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda t: refresh_metadata_of(ids_gateway, t), TOPICS[1:]))

    partition = fetch_by_id(leader_address(response, first), first.topic_id)
    assert partition.error_code == ErrorCode.none, partition.error_code
    assert partition.high_watermark == len(FIRST_RECORDS)
    assert partition.records is not None and len(partition.records) > 0


def test_an_id_never_seen_is_looked_up_upstream(kafka_cluster, ids_gateway: RunningGateway) -> None:  # type: ignore[no-untyped-def]
    mark = ids_gateway.log_mark()
    unseen = f"{PREFIX}unseen"
    create_topics(kafka_cluster.bootstrap_servers, [unseen])
    produce_values(kafka_cluster.bootstrap_servers, unseen, ["u-0", "u-1"])
    # Its id straight from Kafka: no Metadata response through the gateway named it.
    with RawKafkaConnection(kafka_cluster.bootstrap_servers.split(",")[0]) as direct:
        (topic,) = metadata(direct, [unseen]).topics
    with alice(ids_gateway.bootstrap) as conn:
        brokers = metadata(conn, [])  # broker addresses only
    partition = fetch_by_id(leader_address(brokers, topic), topic.topic_id)
    assert partition.error_code == ErrorCode.none, partition.error_code
    assert partition.high_watermark == 2
    event = ids_gateway.wait_for_event(
        lambda e: e.get("event") == "topic_ids_looked_up", after=mark
    )
    assert event["found"] >= 1


def test_an_id_unknown_upstream_is_refused(ids_gateway: RunningGateway) -> None:
    with alice(ids_gateway.bootstrap) as conn:
        response = metadata(conn, [TOPICS[0]])
    partition = fetch_by_id(leader_address(response, response.topics[0]), uuid.uuid4())
    assert partition.error_code == ErrorCode.unknown_topic_id


def test_fetches_go_through_gateway_broker_ports(ids_gateway: RunningGateway) -> None:
    """The Fetch above goes to a gateway broker port, never straight to Kafka."""
    with alice(ids_gateway.bootstrap) as conn:
        response = metadata(conn, [TOPICS[0]])
    gateway_host, gateway_port = ids_gateway.bootstrap.rsplit(":", 1)
    host, port = leader_address(response, response.topics[0]).rsplit(":", 1)
    assert host == gateway_host
    assert int(port) != int(gateway_port)
