"""When the upstream cannot be reached the client gets a clean close, never a hang."""

from __future__ import annotations

from pathlib import Path

import pytest
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode

from tests.gateway_harness import free_port_block, running_gateway
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka

API_VERSIONS = ApiVersionsRequest(client_software_name="raw-test", client_software_version="1")


def test_dead_upstream_closes_the_client_connection(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port_block(1)}"
    with running_gateway(tmp_path, dead, wait_for_brokers=False) as gateway:
        with RawKafkaConnection(gateway.bootstrap) as conn:
            conn.send_request(API_VERSIONS, 1)
            assert conn.is_closed_by_peer(timeout=10)
        event = gateway.wait_for_event(lambda e: e.get("event") == "connection_closed")
        assert event["reason"].startswith("upstream unavailable")
        assert dead in event["reason"]


def test_bootstrap_servers_are_tried_in_turn(kafka_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dead = f"127.0.0.1:{free_port_block(1)}"
    upstream = f"{dead},{kafka_cluster.bootstrap_servers}"
    with running_gateway(tmp_path, upstream) as gateway:
        with RawKafkaConnection(gateway.bootstrap) as conn:
            assert conn.request(API_VERSIONS).error_code == ErrorCode.none
        opened = gateway.wait_for_event(lambda e: e.get("event") == "connection_opened")
        assert opened["upstream"] in kafka_cluster.bootstrap_servers.split(",")
