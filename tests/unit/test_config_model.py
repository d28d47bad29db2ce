"""The configuration model itself: HostPort parsing, defaults, derived values, checks."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from policies.config import GatewayConfig, HostPort, ListenerConfig, LogConfig


def cluster(name: str = "local", **listener: Any) -> dict[str, Any]:
    listener.setdefault("bootstrap", "127.0.0.1:9092")
    return {
        "name": name,
        "listener": listener,
        "upstream": {"bootstrap_servers": ["127.0.0.1:19092"]},
    }


def errors(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        GatewayConfig.model_validate(data)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:9092", "127.0.0.1", 9092),
        ("kafka-1:9092", "kafka-1", 9092),
        ("kafka-1.example.com:1", "kafka-1.example.com", 1),
        ("[::1]:9092", "::1", 9092),
        ("[::]:65535", "::", 65535),
        ("0.0.0.0:9092", "0.0.0.0", 9092),
        (":9092", "", 9092),
        (" localhost:9092 ", "localhost", 9092),
    ],
)
def test_host_port_parses(text: str, host: str, port: int) -> None:
    address = HostPort.parse(text)
    assert (address.host, address.port) == (host, port)
    assert HostPort.parse(str(address)) == address


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kafka:abc", "invalid port 'abc' (expected 1..65535)"),
        ("kafka:0", "invalid port '0' (expected 1..65535)"),
        ("kafka:65536", "invalid port '65536' (expected 1..65535)"),
        ("kafka:", "invalid port '' (expected 1..65535)"),
        ("kafka", "expected 'host:port'"),
        ("::1:9092", "write IPv6 addresses in brackets"),
        ("[::1:9092", "missing ']'"),
        ("[::1]9092", "expected '[address]:port'"),
        ("[kafka]:9092", "invalid IPv6 address 'kafka'"),
        ("ka fka:9092", "invalid host 'ka fka'"),
    ],
)
def test_host_port_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        HostPort.parse(text)


def test_host_port_str_and_hash() -> None:
    assert str(HostPort(host="::1", port=9092)) == "[::1]:9092"
    assert str(HostPort(host="kafka", port=9092)) == "kafka:9092"
    assert len({HostPort("a", 1), HostPort(host="a", port=1)}) == 1
    with pytest.raises(ValueError, match="invalid port"):
        HostPort(host="a", port=0)


def test_defaults() -> None:
    config = GatewayConfig.model_validate({"virtual_clusters": [cluster()]})
    assert config.max_frame_bytes == 104857600
    assert config.log == LogConfig(format="auto", level="info")
    vc = config.virtual_clusters[0]
    assert vc.listener.bootstrap == HostPort("127.0.0.1", 9092)
    assert vc.listener.advertised_host is None
    assert vc.listener.advertised() == "127.0.0.1"
    assert vc.listener.broker_port_base is None
    assert vc.listener.broker_ports == {}
    assert vc.listener.broker_port(1) == 9094  # bootstrap port + 1 + node id
    assert vc.upstream.bootstrap_servers == [HostPort("127.0.0.1", 19092)]
    assert vc.upstream.connect_timeout_ms == 5000
    assert vc.upstream.request_timeout_ms == 30000
    assert vc.upstream.metadata_refresh_interval_ms == 30000
    assert config.cluster("local") is vc


def test_broker_ports() -> None:
    listener = ListenerConfig.model_validate(
        {
            "bootstrap": "0.0.0.0:9092",
            "advertised_host": "gateway.example.com",
            "broker_port_base": 9100,
            "broker_ports": {7: 9200},
        }
    )
    assert listener.advertised() == "gateway.example.com"
    assert listener.broker_port(1) == 9101
    assert listener.broker_port(7) == 9200
    with pytest.raises(ValueError, match=re.escape("outside 1..65535")):
        listener.broker_port(70000)


def test_frozen_and_extra_forbidden() -> None:
    config = GatewayConfig.model_validate({"virtual_clusters": [cluster()]})
    with pytest.raises(ValidationError):
        config.max_frame_bytes = 1  # type: ignore[misc, unused-ignore]
    assert errors({"virtual_clusters": [cluster()], "typo": 1}) == [
        (("typo",), "Extra inputs are not permitted")
    ]


def test_json_round_trip() -> None:
    config = GatewayConfig.model_validate({"virtual_clusters": [cluster(bootstrap="[::1]:9092")]})
    dumped = config.model_dump(mode="json")
    assert dumped["virtual_clusters"][0]["listener"]["bootstrap"] == "[::1]:9092"
    assert GatewayConfig.model_validate(dumped) == config


def test_wildcard_needs_advertised_host() -> None:
    for wildcard in ("0.0.0.0:9092", "[::]:9092", ":9092"):
        assert errors({"virtual_clusters": [cluster(bootstrap=wildcard)]})[0][0] == (
            "virtual_clusters",
            0,
            "listener",
            "advertised_host",
        )
    problems = errors(
        {"virtual_clusters": [cluster(bootstrap="0.0.0.0:9092", advertised_host="0.0.0.0")]}
    )
    assert problems[0][0] == ("virtual_clusters", 0, "listener", "advertised_host")
    assert "cannot be advertised" in problems[0][1]


def test_port_collisions_within_listener() -> None:
    problems = errors({"virtual_clusters": [cluster(broker_ports={1: 9092, 2: 9100, 3: 9100})]})
    assert problems == [
        (
            ("virtual_clusters", 0, "listener", "broker_ports", 1),
            "port 9092 of node 1 is the bootstrap port",
        ),
        (
            ("virtual_clusters", 0, "listener", "broker_ports", 3),
            "port 9100 of node 3 is already used by node 2",
        ),
    ]


def test_collisions_across_clusters() -> None:
    problems = errors(
        {
            "virtual_clusters": [
                cluster("a", bootstrap="127.0.0.1:9092", broker_ports={1: 9200}),
                cluster("b", bootstrap="127.0.0.1:9092"),
                cluster(
                    "c", bootstrap="0.0.0.0:9300", advertised_host="gw", broker_ports={1: 9200}
                ),
                cluster("d", bootstrap="127.0.0.2:9092"),  # other host: fine
            ]
        }
    )
    assert [loc for loc, _ in problems] == [
        ("virtual_clusters", 1, "listener", "bootstrap"),
        ("virtual_clusters", 2, "listener", "broker_ports", 1),
    ]
    assert "virtual_clusters[0].listener.broker_ports[1]" in problems[1][1]


def test_names() -> None:
    problems = errors({"virtual_clusters": [cluster("a"), cluster("a", bootstrap="h:1")]})
    assert problems == [
        (
            ("virtual_clusters", 1, "name"),
            "duplicate virtual cluster name 'a' (already used by virtual_clusters[0])",
        )
    ]
    assert errors({"virtual_clusters": [cluster("Bad Name")]})[0][0] == (
        "virtual_clusters",
        0,
        "name",
    )


def test_upstream_needs_a_host() -> None:
    data = cluster()
    data["upstream"]["bootstrap_servers"] = ["kafka:9092", ":9092"]
    assert errors({"virtual_clusters": [data]})[0][0] == (
        "virtual_clusters",
        0,
        "upstream",
        "bootstrap_servers",
        1,
    )
