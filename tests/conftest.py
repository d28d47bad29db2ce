"""Shared fixtures: real Apache Kafka clusters started from the Maven-cached jars.

`kafka_cluster` is one 3-broker cluster for the whole session (base port 29092, so it
does not clash with a `make run` cluster on 19092). Tests that kill or restart brokers
take their own from the `fresh_kafka_cluster` factory. When a test using either fails,
its report gets each broker's log path and tail, and the logs are kept on disk.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localkafka.cluster import CONTROLLER_PORT_OFFSET, LocalKafkaCluster, tail_file
from localkafka.distribution import KafkaDistribution, ensure_distribution
from localkafka.probes import port_is_free

#: Secured Kafka clusters, test PKI and an OAuth issuer (tests/security_fixtures.py).
pytest_plugins = ["tests.security_fixtures"]

SESSION_BASE_PORT = 29092
FRESH_BASE_PORT = 24092  # below the ephemeral range (32768+), so client sockets never take it
LOG_TAIL_LINES = 25

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_fresh_bases = itertools.count(FRESH_BASE_PORT, 5)


def _ports_free(base: int, brokers: int) -> bool:
    """Broker ports base.., controller ports base+100.. (at most 3 controllers)."""
    ports = [base + i for i in range(brokers)]
    ports += [base + CONTROLLER_PORT_OFFSET + i for i in range(min(brokers, 3))]
    return all(port_is_free(port) for port in ports)


def _free_base_port(preferred: int, brokers: int) -> int:
    """`preferred` if its ports are free, else the next free block above it.

    Other engineers' test runs share this machine; a busy port should not fail a run.
    """
    for base in range(preferred, preferred + 900, 5):
        if _ports_free(base, brokers):
            return base
    raise RuntimeError(f"no free ports for {brokers} brokers from {preferred}")


def _next_fresh_base(brokers: int) -> int:
    """A different block per call (a killed cluster's ports may linger), skipping busy ones.

    Blocks cycle through 24092..24187 so controller ports (+100) never meet broker ports.
    """
    global _fresh_bases
    for _ in range(100):
        base = next(_fresh_bases)
        if base + brokers > FRESH_BASE_PORT + CONTROLLER_PORT_OFFSET - 5:
            _fresh_bases = itertools.count(FRESH_BASE_PORT, 5)
            continue
        if _ports_free(base, brokers):
            return base
    raise RuntimeError(f"no free ports for {brokers} brokers from {FRESH_BASE_PORT}")


def _report_kept_logs(cluster: LocalKafkaCluster) -> None:
    print(f"\n{cluster!r}: broker logs kept in {cluster.data_dir}")


@pytest.fixture(scope="session")
def kafka_distribution() -> KafkaDistribution:
    """Kafka's jars, downloaded with Maven on first use (clear error if mvn/java missing)."""
    return ensure_distribution()


@pytest.fixture(scope="session")
def kafka_cluster(
    kafka_distribution: KafkaDistribution, request: pytest.FixtureRequest
) -> Iterator[LocalKafkaCluster]:
    """A 3-broker KRaft cluster shared by the session: do not kill its brokers."""
    base = _free_base_port(SESSION_BASE_PORT, 3)
    cluster = LocalKafkaCluster(3, base_port=base, dist=kafka_distribution)
    cluster.start()
    yield cluster
    failed = request.session.testsfailed > 0
    cluster.stop(remove_data=not failed, graceful=False)
    if failed:
        _report_kept_logs(cluster)


class KafkaClusterFactory:
    """Starts private clusters on free ports; the fixture stops them after the test."""

    def __init__(self, dist: KafkaDistribution) -> None:
        self.dist = dist
        self.clusters: list[LocalKafkaCluster] = []

    def __call__(self, brokers: int = 3, **kwargs: Any) -> LocalKafkaCluster:
        cluster = LocalKafkaCluster(
            brokers, base_port=_next_fresh_base(brokers), dist=self.dist, **kwargs
        )
        self.clusters.append(cluster)
        return cluster.start()

    def stop_all(self, keep_logs: bool) -> None:
        for cluster in self.clusters:
            cluster.stop(remove_data=not keep_logs, graceful=False)
            if keep_logs:
                _report_kept_logs(cluster)


@pytest.fixture
def fresh_kafka_cluster(
    kafka_distribution: KafkaDistribution, request: pytest.FixtureRequest
) -> Iterator[KafkaClusterFactory]:
    """`fresh_kafka_cluster(brokers=3)` -> a started cluster of its own, stopped afterwards.

    For tests that kill, stop or restart brokers.
    """
    factory = KafkaClusterFactory(kafka_distribution)
    yield factory
    reports = request.node.stash.get(_REPORTS, {})
    factory.stop_all(keep_logs=any(r.failed for r in reports.values()))


def _clusters_of(item: pytest.Item) -> list[LocalKafkaCluster]:
    """Every cluster a test used, directly or through another fixture."""
    clusters: list[LocalKafkaCluster] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, LocalKafkaCluster):
            clusters.append(value)
        elif isinstance(value, KafkaClusterFactory):
            clusters.extend(value.clusters)
    return clusters


def _log_sections(cluster: LocalKafkaCluster) -> list[tuple[str, str]]:
    sections = []
    for node_id in cluster.node_ids:
        path: Path = cluster.log_path(node_id)
        title = f"kafka broker {node_id} ({cluster.bootstrap_servers}) log {path}"
        sections.append((title, tail_file(path, LOG_TAIL_LINES)))
    return sections


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, append broker log paths and tails to the report; remember outcomes."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    if report.failed and report.when in ("setup", "call"):
        for cluster in _clusters_of(item):
            for title, text in _log_sections(cluster):
                report.sections.append((title, text))
