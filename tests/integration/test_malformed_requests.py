"""A malformed request costs its own connection, never the gateway process.

A real gateway with an ``authorization`` section (so every checked request is decoded
with kio) in front of real Kafka. Each crafted frame (a tiny request claiming a huge
array or string, or a null where Kafka allows none) goes on its own raw connection:
that connection is closed with the reason logged at warning level (no traceback
event), the gateway process stays alive, and a confluent-kafka producer and consumer
on other connections go on working. On the unfixed gateway the first huge claim made
kio's native reader abort the whole process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.fuzz.crafted import CRAFTED, frame_with_null
from tests.gateway_harness import Event, RunningGateway, running_gateway
from tests.integration.clients import consume_values, produce_values
from tests.integration.conftest import create_topic
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka

#: ``(name, frame, text the logged reason must contain)``
MALFORMED = [(name, frame, "field ") for name, frame in CRAFTED.items()] + [
    (
        f"null-{key}-v{version}-{field}",
        frame_with_null(key, version, field),
        f"field {field} is null but not nullable",
    )
    for key, version, field in [
        (3, 0, "topics"),
        (1, 12, "topics"),
        (11, 6, "protocols"),
        (8, 8, "topics"),
    ]
]


@pytest.fixture(scope="module")
def checked_gateway(
    kafka_cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:  # type: ignore[no-untyped-def]
    # No authentication: the anonymous principal; default allow, yet every request is decoded.
    with running_gateway(
        tmp_path_factory.mktemp("malformed"),
        kafka_cluster.bootstrap_servers,
        cluster={"authorization": {"default": "allow"}},
    ) as gateway:
        yield gateway


def _not_authorizable(gateway: RunningGateway, fragment: str, after: int) -> Event:
    return gateway.wait_for_event(
        lambda e: e.get("event") == "request_not_authorizable" and fragment in str(e.get("error")),
        after=after,
        timeout=30,
    )


@pytest.mark.parametrize(("name", "frame", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_request_closes_only_its_connection(
    checked_gateway: RunningGateway, name: str, frame: bytes, reason: str
) -> None:
    mark = checked_gateway.log_mark()
    with RawKafkaConnection(checked_gateway.bootstrap) as conn:
        conn.send_frame(frame)
        assert conn.is_closed_by_peer(timeout=30), f"{name}: the connection stayed open"
    event = _not_authorizable(checked_gateway, reason, after=mark)
    assert event.get("level") == "warning", event
    assert str(event["error"]).startswith("cannot authorize "), event
    assert checked_gateway.process.poll() is None, "the gateway process died"
    failures = [e for e in checked_gateway.events() if e.get("event") == "session_failed"]
    assert not failures, failures


def test_real_clients_keep_working_beside_malformed_requests(
    checked_gateway: RunningGateway,
    kafka_cluster,  # type: ignore[no-untyped-def]
) -> None:
    topic = create_topic(kafka_cluster.bootstrap_servers, partitions=1, replication=1)
    values = [f"v-{uuid.uuid4().hex[:6]}-{i}" for i in range(20)]
    for _, frame, _ in MALFORMED:  # interleaved with the good traffic
        with RawKafkaConnection(checked_gateway.bootstrap) as conn:
            conn.send_frame(frame)
            assert conn.is_closed_by_peer(timeout=30)
    produce_values(checked_gateway.bootstrap, topic, values[:10])
    with RawKafkaConnection(checked_gateway.bootstrap) as conn:
        conn.send_frame(CRAFTED["metadata-v12-huge-topics"])
        assert conn.is_closed_by_peer(timeout=30)
    produce_values(checked_gateway.bootstrap, topic, values[10:])
    assert sorted(
        consume_values(checked_gateway.bootstrap, topic, len(values), group=f"g-{topic}")
    ) == sorted(values)
    assert checked_gateway.process.poll() is None
