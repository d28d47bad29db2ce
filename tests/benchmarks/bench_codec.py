"""Micro-benchmarks of the hand-written codec hot paths (not a test).

Run from the project root:  .venv/bin/python -m tests.benchmarks.bench_codec

Targets (see /work/shared/field-notes.md): Metadata rewrite of 100 topics x 6
partitions x 3 brokers <= 50 us (kio decode+encode takes ~4 ms); Produce scan of
a 480 KiB request in the order of 15 us.
"""

from __future__ import annotations

import datetime
import io
import timeit
import uuid
from collections.abc import Callable
from typing import Any

from kio.schema.api_versions.v3 import response as api_versions_v3
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v16 import response as fetch_v16
from kio.schema.metadata.v12 import response as metadata_v12
from kio.schema.produce.v9 import request as produce_v9
from kio.schema.types import BrokerId, TopicName
from kio.serial import entity_writer
from kio.static.primitive import Records, i16, i32, i64

from codec.api_versions import encode_api_versions_response, parse_api_versions_response
from codec.metadata import metadata_topic_ids
from codec.produce import produce_acks, produce_topics
from codec.rewrite import rewrite_response

ZERO = datetime.timedelta(0)


def _encode(obj: Any) -> bytes:
    out = io.BytesIO()
    entity_writer(type(obj))(out, obj)
    return out.getvalue()


def _mapper(node_id: int, host: str, port: int) -> tuple[str, int]:
    return f"broker-{node_id}.gateway.example.com", 9092


def metadata_body(topics: int = 100, partitions: int = 6, brokers: int = 3) -> bytes:
    m = metadata_v12
    return _encode(
        m.MetadataResponse(
            throttle_time=ZERO,
            brokers=tuple(
                m.MetadataResponseBroker(
                    node_id=BrokerId(n),
                    host=f"kafka-{n}.internal.example.com",
                    port=i32(9092),
                    rack=f"rack-{n}",
                )
                for n in range(brokers)
            ),
            cluster_id="cluster-abcdefghijklmnop",
            controller_id=BrokerId(0),
            topics=tuple(
                m.MetadataResponseTopic(
                    error_code=ErrorCode.none,
                    name=TopicName(f"topic-{t:04d}-events"),
                    topic_id=uuid.uuid4(),
                    partitions=tuple(
                        m.MetadataResponsePartition(
                            error_code=ErrorCode.none,
                            partition_index=i32(p),
                            leader_id=BrokerId(p % brokers),
                            leader_epoch=i32(7),
                            replica_nodes=tuple(BrokerId(b) for b in range(brokers)),
                            isr_nodes=tuple(BrokerId(b) for b in range(brokers)),
                        )
                        for p in range(partitions)
                    ),
                )
                for t in range(topics)
            ),
        )
    )


def fetch_body(partitions: int = 100, record_bytes: int = 1024) -> bytes:
    m = fetch_v16
    return _encode(
        m.FetchResponse(
            throttle_time=ZERO,
            error_code=ErrorCode.none,
            session_id=i32(1),
            responses=(
                m.FetchableTopicResponse(
                    topic_id=uuid.uuid4(),
                    partitions=tuple(
                        m.PartitionData(
                            partition_index=i32(p),
                            error_code=ErrorCode.none,
                            high_watermark=i64(1000),
                            last_stable_offset=i64(1000),
                            log_start_offset=i64(0),
                            aborted_transactions=None,
                            preferred_read_replica=BrokerId(-1),
                            records=Records(b"r" * record_bytes),
                        )
                        for p in range(partitions)
                    ),
                ),
            ),
            node_endpoints=(
                m.NodeEndpoint(node_id=BrokerId(1), host="kafka-1.internal", port=i32(9092)),
            ),
        )
    )


def produce_frame(topics: int = 10, partitions: int = 6, batch: int = 8192) -> bytes:
    m = produce_v9
    return _encode(
        m.ProduceRequest(
            acks=i16(-1),
            timeout=datetime.timedelta(seconds=30),
            topic_data=tuple(
                m.TopicProduceData(
                    name=TopicName(f"topic-{t}"),
                    partition_data=tuple(
                        m.PartitionProduceData(index=i32(p), records=Records(b"x" * batch))
                        for p in range(partitions)
                    ),
                )
                for t in range(topics)
            ),
        )
    )


def api_versions_body() -> bytes:
    m = api_versions_v3
    return _encode(
        m.ApiVersionsResponse(
            error_code=ErrorCode.none,
            api_keys=tuple(
                m.ApiVersion(api_key=i16(k), min_version=i16(0), max_version=i16(5))
                for k in range(70)
            ),
            throttle_time=ZERO,
            supported_features=(
                m.SupportedFeatureKey(
                    name="metadata.version", min_version=i16(1), max_version=i16(27)
                ),
            ),
        )
    )


def _time(label: str, fn: Callable[[], object], size: int) -> float:
    number = 2000
    best = min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6
    print(f"{label:<58} {best:8.1f} us   ({size / 1024:.0f} KiB)")
    return best


def main() -> None:
    metadata = metadata_body()
    fetch = fetch_body()
    produce = produce_frame()
    api_versions = api_versions_body()
    cases: list[tuple[str, Callable[[], object], int]] = [
        (
            "Metadata v12 rewrite, 100 topics x 6 partitions, 3 brokers",
            lambda: rewrite_response(3, 12, metadata, _mapper),
            len(metadata),
        ),
        (
            "Metadata v12 topic-id map (full walk)",
            lambda: metadata_topic_ids(metadata, 12),
            len(metadata),
        ),
        (
            "Fetch v16 node_endpoints rewrite, 100 partitions x 1 KiB",
            lambda: rewrite_response(1, 16, fetch, _mapper),
            len(fetch),
        ),
        (
            "Produce v9 topics scan, 10 topics x 6 partitions x 8 KiB",
            lambda: produce_topics(produce, 0, 9),
            len(produce),
        ),
        ("Produce v9 acks", lambda: produce_acks(produce, 0, 9), len(produce)),
        (
            "ApiVersions v3 parse + encode, 70 keys",
            lambda: encode_api_versions_response(parse_api_versions_response(api_versions, 3), 3),
            len(api_versions),
        ),
    ]
    for label, fn, size in cases:
        _time(label, fn, size)


if __name__ == "__main__":
    main()
