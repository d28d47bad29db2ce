"""The policy sets `bench.py --policies` can put on the gateway side, and client settings.

`none`: a plain listener, no policies. `typical`: the listener requires SASL
SCRAM-SHA-512 (user `alice`), as deploy/examples/auth-scram.yaml does; every client of
the gateway side authenticates first. The direct side is always unauthenticated
plaintext Kafka: it is the baseline, so the cost of the policies shows as the difference
between a `--policies none` and a `--policies typical` run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Final

from policies.auth import derive_scram_credential

POLICY_SETS = ("none", "typical")
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
    #: For the Java perf tools (`--producer-props`, `--consumer.config`).
    java_props: dict[str, str] = field(default_factory=dict)
    #: For librdkafka (the latency probe).
    librdkafka: dict[str, str] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return bool(self.listener and self.listener.get("authentication"))

    def describe(self) -> str:
        if self.authenticated:
            return f"gateway listener requires SASL {MECHANISM} for user {USER}"
        return "no policies"


@functools.cache
def policy_set(name: str) -> PolicySet:
    if name == "none":
        return PolicySet(name)
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
    return PolicySet(name, listener, java, librdkafka)
