"""Byte-level behaviour of the gateway with real Kafka behind it: versions, pipelining,
acks=0, and malformed input."""

from __future__ import annotations

import datetime
import struct
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient
from kafka.record.memory_records import MemoryRecordsBuilder
from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsV0
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode
from kio.schema.find_coordinator.v3.request import FindCoordinatorRequest as FindCoordinatorV3
from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest as FindCoordinatorV4
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.produce.v9.request import (
    PartitionProduceData,
    ProduceRequest,
    TopicProduceData,
)
from kio.static.primitive import Records, i8, i16, i32

from codec.api_versions import gateway_version_ranges
from codec.headers import encode_request_header
from tests.gateway_harness import RunningGateway
from tests.integration.clients import gateway_addresses, produce_values
from tests.raw_kafka import RawKafkaConnection, decode_body

pytestmark = pytest.mark.kafka

API_VERSIONS = ApiVersionsRequest(client_software_name="raw-test", client_software_version="1")


def test_api_versions_is_the_intersection_of_broker_and_gateway(
    gateway: RunningGateway, kafka_cluster
) -> None:
    with RawKafkaConnection(kafka_cluster.bootstrap_servers.split(",")[0]) as direct:
        broker = {
            k.api_key: (k.min_version, k.max_version) for k in direct.request(API_VERSIONS).api_keys
        }
    with RawKafkaConnection(gateway.bootstrap) as conn:
        response = conn.request(API_VERSIONS)
    assert response.error_code == ErrorCode.none
    via = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
    ours = gateway_version_ranges()
    assert set(via) == {key for key in broker if key in ours}
    for key, (low, high) in via.items():
        assert low == max(broker[key][0], ours[key][0])
        assert high == min(broker[key][1], ours[key][1])
    assert via[3][1] <= 13  # Metadata capped at what the codec rewrites


def test_too_new_api_versions_gets_unsupported_version_with_the_gateway_range(
    gateway: RunningGateway,
) -> None:
    with RawKafkaConnection(gateway.bootstrap) as conn:
        conn.send_frame(encode_request_header(18, 99, 7, "future-client") + b"\x00")
        frame = conn.read_frame()
    assert struct.unpack_from(">i", frame)[0] == 7
    response, _ = decode_body(ApiVersionsV0, frame[4:])
    assert response.error_code == ErrorCode.unsupported_version
    low, high = gateway_version_ranges()[18]
    assert [(k.api_key, k.min_version, k.max_version) for k in response.api_keys] == [
        (18, low, high)
    ]


def test_pipelined_requests_are_answered_in_order(gateway: RunningGateway) -> None:
    with RawKafkaConnection(gateway.bootstrap) as conn:
        for correlation_id in range(100, 140):
            conn.send_request(API_VERSIONS, correlation_id)
        got = [conn.read_response(18, 3)[0] for _ in range(40)]
    assert got == list(range(100, 140))


def test_acks_zero_produce_leaves_nothing_in_flight(gateway: RunningGateway, topic: str) -> None:
    produce = ProduceRequest(
        transactional_id=None,
        acks=i16(0),
        timeout=datetime.timedelta(seconds=5),
        topic_data=(
            TopicProduceData(
                name=topic,
                partition_data=(PartitionProduceData(index=i32(0), records=_one_record_batch()),),
            ),
        ),
    )
    # Send to the leader's gateway port: on acks=0 a broker that is not the leader
    # closes the connection instead of answering.
    leader = AdminClient({"bootstrap.servers": gateway.bootstrap}).list_topics(timeout=10)
    broker = leader.brokers[leader.topics[topic].partitions[0].leader]
    with RawKafkaConnection(f"{broker.host}:{broker.port}") as conn:
        conn.send_request(produce, 1)
        conn.send_request(produce, 2)
        # If the gateway waited for Produce responses, this answer would never come.
        assert conn.request(API_VERSIONS, correlation_id=3).error_code == ErrorCode.none


def _one_record_batch() -> Records:
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    builder.append(timestamp=None, key=b"k", value=b"acks-zero", headers=[])
    builder.close()
    return Records(bytes(builder.buffer()))


def test_find_coordinator_answers_gateway_addresses(gateway: RunningGateway, topic: str) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    allowed = gateway_addresses(gateway.bootstrap)
    with RawKafkaConnection(gateway.bootstrap) as conn:
        deadline = time.monotonic() + 30
        while True:  # the offsets topic is created on the first FindCoordinator
            v4 = conn.request(FindCoordinatorV4(key_type=i8(0), coordinator_keys=(group,)))
            if v4.coordinators[0].error_code != ErrorCode.coordinator_not_available:
                break
            assert time.monotonic() < deadline, "no group coordinator within 30 s"
            time.sleep(0.2)
        coordinator = v4.coordinators[0]
        assert coordinator.error_code == ErrorCode.none
        assert f"{coordinator.host}:{coordinator.port}" in allowed
        v3 = conn.request(FindCoordinatorV3(key=group, key_type=i8(0)))
        assert f"{v3.host}:{v3.port}" in allowed
        assert v3.node_id == coordinator.node_id


def test_metadata_v12_topic_lists_gateway_brokers(gateway: RunningGateway, topic: str) -> None:
    request = MetadataRequest(
        topics=(MetadataRequestTopic(topic_id=uuid.UUID(int=0), name=topic),),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    with RawKafkaConnection(gateway.bootstrap) as conn:
        response = conn.request(request)
    allowed = gateway_addresses(gateway.bootstrap)
    assert {f"{b.host}:{b.port}" for b in response.brokers} <= allowed
    assert response.topics[0].name == topic
    assert len(response.topics[0].partitions) == 6


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (struct.pack(">i", -1), "negative frame size"),
        (struct.pack(">i", 2**31 - 1), "exceeds the maximum"),
        (struct.pack(">i", 3) + b"\x00\x12\x00", "malformed request header"),
    ],
)
def test_malformed_frame_closes_only_that_connection(
    gateway: RunningGateway, topic: str, garbage: bytes, reason: str
) -> None:
    mark = gateway.log_mark()  # the gateway is shared by the whole session
    with RawKafkaConnection(gateway.bootstrap) as bystander:
        assert bystander.request(API_VERSIONS).error_code == ErrorCode.none
        with RawKafkaConnection(gateway.bootstrap) as bad:
            bad.send_raw(garbage)
            assert bad.is_closed_by_peer(), "the gateway kept a connection that sent garbage"
        event = gateway.wait_for_event(
            lambda e: e.get("event") == "connection_closed" and reason in str(e.get("reason")),
            after=mark,
        )
        assert event["client"].startswith("127.0.0.1:")
        # The other connection and new clients are unaffected.
        assert bystander.request(API_VERSIONS, correlation_id=2).error_code == ErrorCode.none
    produce_values(gateway.bootstrap, topic, ["still-working"])


def test_truncated_frame_then_close_is_logged(gateway: RunningGateway) -> None:
    mark = gateway.log_mark()
    with RawKafkaConnection(gateway.bootstrap) as conn:
        conn.send_raw(struct.pack(">i", 100) + b"\x00\x12")
    gateway.wait_for_event(
        lambda e: (
            e.get("event") == "connection_closed"
            and e.get("reason") == "client closed the connection"
            and e.get("bytes_from_client") == 6
        ),
        after=mark,
    )
