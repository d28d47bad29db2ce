"""Fixtures for tests that run real clients through the real gateway to real Kafka."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic

from tests.gateway_harness import RunningGateway, running_gateway
from tests.raw_kafka import RawKafkaConnection


@pytest.fixture(scope="session")
def gateway(kafka_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:  # type: ignore[no-untyped-def]
    """One gateway in front of the session's 3-broker cluster."""
    with running_gateway(tmp_path_factory.mktemp("gateway"), kafka_cluster.bootstrap_servers) as gw:
        yield gw


def create_topic(bootstrap: str, partitions: int = 6, replication: int = 3, **config: str) -> str:
    """Create a uniquely named topic directly on Kafka and wait until it exists."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication, config=config)]
    )
    futures[name].result(timeout=30)
    _wait_until_every_broker_knows(bootstrap, name, partitions)
    return name


def _wait_until_every_broker_knows(bootstrap: str, topic: str, partitions: int) -> None:
    """Topic creation returns before all brokers have the new metadata; wait for each."""
    deadline = time.monotonic() + 30
    request = MetadataRequest(
        topics=(MetadataRequestTopic(topic_id=None, name=topic),),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    for broker in bootstrap.split(","):
        with RawKafkaConnection(broker) as conn:
            while True:
                found = conn.request(request).topics[0]
                complete = len(found.partitions) == partitions and all(
                    p.leader_id >= 0 for p in found.partitions
                )
                if found.error_code == ErrorCode.none and complete:
                    break
                assert time.monotonic() < deadline, f"{broker} never saw topic {topic}"
                time.sleep(0.1)


@pytest.fixture
def topic(kafka_cluster) -> str:  # type: ignore[no-untyped-def]
    return create_topic(kafka_cluster.bootstrap_servers)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
