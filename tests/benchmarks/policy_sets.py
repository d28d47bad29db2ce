"""The policy sets `bench.py --policies` can put on the gateway side, and client settings.

`none`: a plain listener, no policies. `acl`: the typical ACL rules and quotas (below)
on a plain listener, for the unauthenticated principal `User:ANONYMOUS`: the cost of
authorization and quotas alone, small requests included. `typical`: the listener requires SASL
SCRAM-SHA-512 (user `alice`), as deploy/examples/auth-scram.yaml does, so every client of
the gateway side authenticates first; and a typical rule set is on: ACLs (prefixed topic
and group rules for alice among a dozen rules for other principals, a deny rule, a
super user) and quotas high enough never to throttle (so meters are updated on every
request but the measured rates are the gateway's, not the quota's) plus connection
limits. The direct side is always unauthenticated
plaintext Kafka: it is the baseline, so the cost of the policies shows as the difference
between a `--policies none` and a `--policies typical` run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Final

from policies.auth import derive_scram_credential

POLICY_SETS = ("none", "typical", "acl")
USER = "alice"
PASSWORD = "alice-secret"  # a benchmark-only credential for a throw-away local gateway
MECHANISM: Final = "SCRAM-SHA-512"
#: Kafka's default for SCRAM credentials (kafka-configs); what a client pays per login.
SCRAM_ITERATIONS = 4096


@dataclass(frozen=True)
class PolicySet:
    """The gateway's listener keys and what each kind of client needs to connect."""

    name: str
    listener: dict[str, Any] | None = None
    #: Virtual cluster keys next to the listener (`authorization`, `quotas`).
    cluster: dict[str, Any] | None = None
    #: For the Java perf tools (`--producer-props`, `--consumer.config`).
    java_props: dict[str, str] = field(default_factory=dict)
    #: For librdkafka (the latency probe).
    librdkafka: dict[str, str] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return bool(self.listener and self.listener.get("authentication"))

    def describe(self) -> str:
        if not self.authenticated and self.cluster:
            rules = len(self.cluster["authorization"]["rules"])
            return (
                f"plain listener (User:ANONYMOUS); {rules} ACL rules; produce, fetch and "
                "request quotas; connection limits"
            )
        if self.authenticated:
            rules = len(self.cluster["authorization"]["rules"]) if self.cluster else 0
            return (
                f"gateway listener requires SASL {MECHANISM} for user {USER}; "
                f"{rules} ACL rules; produce, fetch and request quotas; connection limits"
            )
        return "no policies"


@functools.cache
def policy_set(name: str) -> PolicySet:
    if name == "none":
        return PolicySet(name)
    if name == "acl":
        return PolicySet(name, cluster=typical_rules("User:ANONYMOUS"))
    if name != "typical":
        raise ValueError(f"unknown policy set {name!r}; choose from {POLICY_SETS}")
    credential = derive_scram_credential(PASSWORD, MECHANISM, iterations=SCRAM_ITERATIONS)
    listener = {
        "authentication": {
            "mechanisms": [MECHANISM],
            "scram_credentials": {USER: [str(credential)]},
        }
    }
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{USER}" password="{PASSWORD}";'
    )
    java = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": MECHANISM,
        "sasl.jaas.config": jaas,
    }
    librdkafka = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": MECHANISM,
        "sasl.username": USER,
        "sasl.password": PASSWORD,
    }
    return PolicySet(name, listener, typical_rules(f"User:{USER}"), java, librdkafka)


def _rule(principal: str, kind: str, pattern: str, name: str, *ops: str) -> dict[str, Any]:
    return {
        "principals": [principal],
        "resource_type": kind,
        "pattern_type": pattern,
        "resource_name": name,
        "operations": list(ops),
    }


def typical_rules(principal: str) -> dict[str, Any]:
    """What a small production cluster might carry: the benchmark's principal among others."""
    return {
        "authorization": {
            "default": "deny",
            "super_users": ["User:admin"],
            "principal_groups": {"analysts": ["User:carol", "User:dave"]},
            "rules": [
                _rule(principal, "topic", "prefixed", "bench-", "Write", "Read", "Describe"),
                _rule(principal, "group", "prefixed", "bench-", "Read", "Describe"),
                _rule(principal, "topic", "prefixed", "bench-", "Create"),
                _rule("Group:analysts", "topic", "prefixed", "orders.", "Read", "Describe"),
                _rule("Group:analysts", "group", "prefixed", "analysts-", "Read"),
                _rule("User:bob", "topic", "prefixed", "orders.", "Read", "Describe"),
                _rule("User:bob", "group", "prefixed", "bob-", "Read"),
                _rule("User:billing", "topic", "literal", "payments", "Write", "Describe"),
                _rule("User:billing", "transactional_id", "prefixed", "billing-", "Write"),
                _rule("User:etl", "topic", "glob", "raw.*.events", "Read", "Describe"),
                _rule("User:etl", "group", "literal", "etl", "Read"),
                {**_rule("User:*", "topic", "literal", "secrets", "All"), "effect": "deny"},
            ],
        },
        "quotas": {
            "clients": [
                {
                    "principal": "<default>",
                    "produce_bytes_per_second": 10 * 1024**3,
                    "fetch_bytes_per_second": 10 * 1024**3,
                    "requests_per_second": 1_000_000,
                }
            ],
            "connections": {"max_per_principal": 20_000, "max_per_ip": 20_000},
        },
    }
