"""Who a connection is: the :class:`Principal` every later policy (ACLs, quotas) keys on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

__all__ = ["ANONYMOUS", "SASL_MECHANISMS", "AuthSource", "Mechanism", "Principal", "SaslMechanism"]

#: SASL mechanisms the gateway implements, in Kafka's spelling.
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
#: How a principal was established: a SASL mechanism, a TLS client certificate, or nothing.
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "MTLS", "ANONYMOUS"]
#: Who checked the credentials: the gateway itself, or (passthrough mode) the upstream broker.
AuthSource = Literal["gateway", "upstream"]

SASL_MECHANISMS: Final[tuple[SaslMechanism, ...]] = (
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    "OAUTHBEARER",
)

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated identity, printed like Kafka's ``KafkaPrincipal``: ``User:alice``.

    ``claims`` holds the verified JWT claims of an OAUTHBEARER principal (empty
    otherwise); it is read-only. ``authenticated_by`` is ``"upstream"`` for a
    passthrough listener, where the broker checked the credentials and the gateway
    only observed the name the client claimed (for OAUTHBEARER: the unverified
    ``sub``); policies must not trust such claims beyond the name.
    """

    name: str
    mechanism: Mechanism
    kind: str = "User"
    claims: Mapping[str, Any] = field(
        default_factory=lambda: _EMPTY, compare=False, hash=False, repr=False
    )
    authenticated_by: AuthSource = "gateway"
    #: The token issuer's ``principal_prefix`` (OAUTHBEARER; ``name`` starts with it).
    #: ``Claim:`` rules compare claim values qualified by it, so one issuer's claims
    #: never match a rule written for another's.
    namespace: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.claims, MappingProxyType):
            object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def is_anonymous(self) -> bool:
        """True for :data:`ANONYMOUS` (no credentials presented)."""
        return self.mechanism == "ANONYMOUS"


#: The principal of an unauthenticated connection, like Kafka's ``User:ANONYMOUS``.
ANONYMOUS: Final = Principal(name="ANONYMOUS", mechanism="ANONYMOUS")
