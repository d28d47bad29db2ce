"""`kafka-gateway run --workers 2`: processes share the ports and both serve clients."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from tests.gateway_harness import running_gateway
from tests.integration.clients import consume_values, produce_values
from tests.integration.conftest import create_topic
from tests.integration.test_protocol_edges import API_VERSIONS
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka


def test_two_workers_share_the_ports(kafka_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    topic = create_topic(kafka_cluster.bootstrap_servers)
    with running_gateway(
        tmp_path, kafka_cluster.bootstrap_servers, cli_args=["--workers", "2"]
    ) as gateway:
        for worker in (0, 1):
            gateway.wait_for_event(
                lambda e, w=worker: e.get("event") == "brokers_discovered" and e.get("worker") == w
            )
        for correlation_id in range(40):  # the kernel spreads connections over the workers
            with RawKafkaConnection(gateway.bootstrap) as conn:
                assert conn.request(API_VERSIONS, correlation_id).error_code == 0
        values = [f"w-{i}" for i in range(100)]
        produce_values(gateway.bootstrap, topic, values)
        assert sorted(consume_values(gateway.bootstrap, topic, 100, f"g-{uuid.uuid4()}")) == sorted(
            values
        )
        served_by = {
            e.get("worker") for e in gateway.events() if e.get("event") == "connection_opened"
        }
        assert served_by == {0, 1}
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=20) == 0
        stopped = [e for e in gateway.events() if e.get("event") == "gateway_stopped"]
        assert {e.get("worker") for e in stopped} == {0, 1}
