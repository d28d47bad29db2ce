"""kafka-python and aiokafka through the gateway."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaProducer

from tests.gateway_harness import RunningGateway
from tests.integration.clients import kafka_python_group_read

pytestmark = pytest.mark.kafka


def test_kafka_python_produce_and_group_consume(gateway: RunningGateway, topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=gateway.bootstrap, acks="all")
    values = [f"kp-{i}" for i in range(150)]
    futures = [producer.send(topic, value=v.encode(), key=v.encode()) for v in values]
    partitions = {f.get(timeout=30).partition for f in futures}
    producer.close()
    assert len(partitions) > 1

    with kafka_python_group_read(gateway.bootstrap, topic, len(values)) as (received, consumer):
        hosts = {f"{b.host}:{b.port}" for b in consumer._client.cluster.brokers()}
    assert sorted(received) == sorted(values)
    gateway_port = int(gateway.bootstrap.rsplit(":", 1)[1])
    assert hosts == {f"127.0.0.1:{gateway_port + n}" for n in (1, 2, 3)}


def test_aiokafka_produce_and_group_consume(gateway: RunningGateway, topic: str) -> None:
    values = [f"aio-{i}" for i in range(150)]

    async def scenario() -> list[str]:
        producer = AIOKafkaProducer(bootstrap_servers=gateway.bootstrap, acks="all")
        await producer.start()
        try:
            for v in values:
                await producer.send(topic, v.encode(), key=v.encode())
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=gateway.bootstrap,
            group_id=f"aio-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        received: list[str] = []
        try:
            async with asyncio.timeout(60):
                async for message in consumer:
                    received.append(message.value.decode())
                    if len(received) == len(values):
                        break
            await consumer.commit()
        finally:
            await consumer.stop()
        return received

    assert sorted(asyncio.run(scenario())) == sorted(values)
