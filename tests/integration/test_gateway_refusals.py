"""What the gateway refuses before a request reaches Kafka, through a real gateway.

- A request at a version of an address-carrying API outside the gateway's range
  (Metadata above the newest version its codec rewrites) closes the connection with
  the reason: forwarded, the broker's answer would carry real broker addresses.
- An API the gateway has no handler for (DescribeDelegationToken) is refused with
  CLUSTER_AUTHORIZATION_FAILED unless a cluster rule allows it (fail closed); allowed,
  it is forwarded and the broker's own answer comes back.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from kio.schema.describe_delegation_token.v3.request import DescribeDelegationTokenRequest

from gateway.session import GATEWAY_VERSION_RANGES
from tests.gateway_harness import RunningGateway, running_gateway
from tests.integration.test_authorization import plain_listener, wait_for_denial
from tests.integration.test_quotas import authenticate
from tests.raw_kafka import RawKafkaConnection

pytestmark = pytest.mark.kafka

METADATA = 3
CLUSTER_AUTHORIZATION_FAILED = 31


def metadata_request_frame(version: int, correlation_id: int) -> bytes:
    """Metadata for all topics, flexible encoding (v9+), at any version number.

    Hand-built: kio (like the gateway) knows no version above Kafka's newest. The
    body is v13's, which is what a newer client would most likely send.
    """
    client_id = b"decodable-test"
    header = struct.pack(">hhih", METADATA, version, correlation_id, len(client_id))
    header += client_id + b"\x00"  # request header v2: no tagged fields
    body = b"\x00" + b"\x00\x00" + b"\x00"  # topics null, two booleans, no tagged fields
    return header + body


def received_until_closed(conn: RawKafkaConnection, timeout: float = 15) -> bytes:
    """Everything the peer sends until it closes (fails if it stays open)."""
    conn.sock.settimeout(timeout)
    received = b""
    while True:
        try:
            chunk = conn.sock.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            raise AssertionError(f"connection still open after {timeout}s") from None
        if not chunk:
            return received
        received += chunk


def test_a_metadata_version_the_gateway_cannot_rewrite_closes_the_connection(
    gateway: RunningGateway,
    kafka_cluster,  # type: ignore[no-untyped-def]
) -> None:
    newest = GATEWAY_VERSION_RANGES[METADATA][1]
    with RawKafkaConnection(gateway.bootstrap) as conn:
        conn.send_frame(metadata_request_frame(newest + 1, 7))
        received = received_until_closed(conn)
    for broker in kafka_cluster.bootstrap_servers.split(","):
        port = int(broker.rsplit(":", 1)[1])
        assert str(port).encode() not in received and struct.pack(">i", port) not in received, (
            f"a broker address ({broker}) reached the client: {received!r}"
        )
    closed = gateway.wait_for_event(
        lambda e: (
            e.get("event") == "connection_closed"
            and f"metadata v{newest + 1}" in str(e.get("reason", "")).lower()
        )
    )
    assert "outside the gateway's range" in closed["reason"], closed
    assert closed["upstream"] is None, "the request went to a broker"


@pytest.fixture(scope="module")
def cluster_rule_gateway(
    kafka_cluster,  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway]:
    """alice has ``All`` on the cluster; bob has no rule at all (default deny)."""
    with running_gateway(
        tmp_path_factory.mktemp("unlisted-api-gateway"),
        kafka_cluster.bootstrap_servers,
        listener=plain_listener(["alice", "bob"]),
        cluster={
            "authorization": {
                "default": "deny",
                "rules": [
                    {
                        "principals": ["User:alice"],
                        "resource_type": "cluster",
                        "resource_name": "kafka-cluster",
                        "operations": ["All"],
                    }
                ],
            }
        },
    ) as gateway:
        yield gateway


def describe_delegation_tokens(gateway: RunningGateway, user: str) -> int:
    """DescribeDelegationToken v3 as ``user`` on a raw connection: the answer's error code."""
    with RawKafkaConnection(gateway.bootstrap) as conn:
        assert authenticate(conn, user) == 0
        response = conn.request(DescribeDelegationTokenRequest(owners=None), correlation_id=5)
        return int(response.error_code)


def test_an_api_without_a_handler_is_refused_unless_a_cluster_rule_allows_it(
    cluster_rule_gateway: RunningGateway,
) -> None:
    mark = cluster_rule_gateway.log_mark()
    assert describe_delegation_tokens(cluster_rule_gateway, "bob") == (CLUSTER_AUTHORIZATION_FAILED)
    event = wait_for_denial(
        cluster_rule_gateway, mark, "User:bob", "kafka-cluster", {"All"}, resource_type="cluster"
    )
    assert event["rules"] == ["default"], event

    # Allowed: the broker answers (delegation tokens are not enabled on this plaintext
    # cluster, so with its own delegation-token error, never the gateway's refusal).
    allowed = describe_delegation_tokens(cluster_rule_gateway, "alice")
    assert allowed != CLUSTER_AUTHORIZATION_FAILED
    assert allowed in {61, 64}, f"unexpected broker answer {allowed}"  # AUTH_DISABLED, NOT_ALLOWED
