"""Fixtures for tests that run real clients through the real gateway to real Kafka."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.gateway_harness import RunningGateway, running_gateway


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
    return name


@pytest.fixture
def topic(kafka_cluster) -> str:  # type: ignore[no-untyped-def]
    return create_topic(kafka_cluster.bootstrap_servers)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
