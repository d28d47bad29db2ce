"""A broker dies behind the gateway: clients recover and no acknowledged record is lost."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.gateway_harness import running_gateway
from tests.integration.clients import consume_values, produce_values
from tests.integration.conftest import create_topic

pytestmark = pytest.mark.kafka


def test_clients_recover_when_a_broker_is_killed(fresh_kafka_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = fresh_kafka_cluster(brokers=3)
    topic = create_topic(cluster.bootstrap_servers, **{"min.insync.replicas": "2"})
    with running_gateway(tmp_path, cluster.bootstrap_servers) as gateway:
        producer_config = {"acks": "all", "enable.idempotence": True, "message.timeout.ms": 90000}
        before = [f"before-{i}" for i in range(300)]
        produce_values(gateway.bootstrap, topic, before, **producer_config)

        metadata = AdminClient({"bootstrap.servers": gateway.bootstrap}).list_topics(timeout=10)
        victim = metadata.topics[topic].partitions[0].leader
        cluster.kill_broker(victim)

        after = [f"after-{i}" for i in range(300)]
        # Delivery through the gateway must succeed once clients follow the new leaders.
        produce_values(gateway.bootstrap, topic, after, **producer_config)

        received = consume_values(
            gateway.bootstrap, topic, len(before) + len(after), group=f"g-{uuid.uuid4().hex[:6]}"
        )
        assert sorted(received) == sorted(before + after)

        metadata = AdminClient({"bootstrap.servers": gateway.bootstrap}).list_topics(timeout=10)
        assert victim not in {p.leader for p in metadata.topics[topic].partitions.values()}
        gateway.wait_for_event(
            lambda e: (
                e.get("event") == "connection_closed"
                and e.get("broker") == victim
                and "upstream" in str(e.get("reason"))
            )
        )
