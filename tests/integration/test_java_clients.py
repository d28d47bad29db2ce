"""Kafka's own Java console producer and consumer (from the fetched jars) through the gateway."""

from __future__ import annotations

import uuid

import pytest

from tests.gateway_harness import RunningGateway
from tests.kafka_tools import console_consume, console_produce

pytestmark = pytest.mark.kafka


def test_java_console_producer_and_consumer(gateway: RunningGateway, topic: str) -> None:
    lines = [f"java-{i}" for i in range(100)]
    console_produce(gateway.bootstrap, topic, lines)
    received = console_consume(
        gateway.bootstrap, topic, len(lines), group=f"java-{uuid.uuid4().hex[:6]}"
    )
    assert sorted(received) == sorted(lines)
    # The Java client reached the brokers only through gateway ports.
    broker_sessions = [
        e
        for e in gateway.events()
        if e.get("event") == "connection_opened" and isinstance(e.get("broker"), int)
    ]
    assert broker_sessions, "the Java clients never used a gateway broker port"
