"""Security material of a local cluster's client listener: TLS files, SASL users, JAAS.

What a secured `LocalKafkaCluster` writes into server.properties for its CLIENT listener
(SASL_PLAINTEXT, SSL or SASL_SSL) and what the brokers need besides: the PEM keystore,
the JAAS lines that list PLAIN users, the OAUTHBEARER validator settings and the JVM
property that lets Kafka fetch the JWKS URL. SCRAM users are created after start-up
through the Admin API (see `localkafka.sasl_client`). Pure data and text: no processes.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from codec import sasl

#: A server.properties value (booleans are written lower-case).
ConfigValue = str | int | bool

SECURITY_PROTOCOLS: tuple[str, ...] = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")
SASL_MECHANISMS: tuple[str, ...] = (sasl.PLAIN, sasl.SCRAM_SHA_256, sasl.SCRAM_SHA_512)
#: OAUTHBEARER also needs `ClientSecurity.oauthbearer` (where the brokers get keys).
ALL_SASL_MECHANISMS: tuple[str, ...] = (*SASL_MECHANISMS, sasl.OAUTHBEARER)
CLIENT_LISTENER = "CLIENT"
INTERNAL_LISTENER = "INTERNAL"
#: Users of secured test clusters (PLAIN and SCRAM alike); `gateway` is the super user.
DEFAULT_USERS: Mapping[str, str] = {
    "gateway": "gateway-secret",
    "alice": "alice-secret",
    "bob": "bob-secret",
}
_LOGIN_MODULES = {
    sasl.PLAIN: "org.apache.kafka.common.security.plain.PlainLoginModule",
    sasl.SCRAM_SHA_256: "org.apache.kafka.common.security.scram.ScramLoginModule",
    sasl.SCRAM_SHA_512: "org.apache.kafka.common.security.scram.ScramLoginModule",
    sasl.OAUTHBEARER: "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule",
}
_OAUTH_VALIDATOR = (
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
)
_BROKER_JWT_VALIDATOR = "org.apache.kafka.common.security.oauthbearer.BrokerJwtValidator"
#: Kafka 4 fetches OAuth URLs only if this JVM system property lists them.
_OAUTH_ALLOWED_URLS = "org.apache.kafka.sasl.oauthbearer.allowed.urls"
_CLIENT_AUTH = ("none", "requested", "required")
SCRAM_HASHES: Mapping[str, str] = {sasl.SCRAM_SHA_256: "sha256", sasl.SCRAM_SHA_512: "sha512"}
#: Kafka's ids of the mechanisms in AlterUserScramCredentials.
SCRAM_MECHANISM_IDS: Mapping[str, int] = {sasl.SCRAM_SHA_256: 1, sasl.SCRAM_SHA_512: 2}
#: Kafka refuses fewer iterations (ScramMechanism.minIterations).
SCRAM_MIN_ITERATIONS = 4096


@dataclass(frozen=True)
class BrokerTls:
    """PEM files for the client listener's TLS (Kafka 4 reads PEM: no keytool, no JKS).

    `ca` is the brokers' trust store for client certificates (mTLS) and, by default,
    what the readiness probe trusts; `client_cert`/`client_key` are what the probe
    presents when `client_auth` is "required" (e.g. the gateway's certificate).
    """

    cert: Path
    key: Path
    ca: Path
    client_auth: str = "none"
    client_cert: Path | None = None
    client_key: Path | None = None

    def __post_init__(self) -> None:
        if self.client_auth not in _CLIENT_AUTH:
            raise ValueError(f"client_auth must be one of {_CLIENT_AUTH}, got {self.client_auth!r}")

    def probe_context(self) -> ssl.SSLContext:
        """A client context for our own probes: trusts `ca`, checks 127.0.0.1 in the cert."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if self.client_cert is not None and self.client_key is not None:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


@dataclass(frozen=True)
class OAuthBearerValidation:
    """Broker-side OAUTHBEARER (KIP-768): JWTs verified with keys from a JWKS URL.

    The principal is the `sub_claim`; `iss` and `aud` are checked when given. Kafka
    bounds the KIP-368 session lifetime by the token's `exp`.
    """

    jwks_url: str
    issuer: str | None = None
    audience: str | None = None
    sub_claim: str = "sub"

    def broker_properties(self) -> dict[str, ConfigValue]:
        props: dict[str, ConfigValue] = {
            # Kafka 4.1's default (DefaultJwtValidator built without a key resolver)
            # falls back to ClientJwtValidator, which checks claims but NOT signatures:
            # any well-formed JWT would pass. BrokerJwtValidator verifies with the JWKS.
            "sasl.oauthbearer.jwt.validator.class": _BROKER_JWT_VALIDATOR,
            "sasl.oauthbearer.jwks.endpoint.url": self.jwks_url,
            "sasl.oauthbearer.sub.claim.name": self.sub_claim,
        }
        if self.issuer is not None:
            props["sasl.oauthbearer.expected.issuer"] = self.issuer
        if self.audience is not None:
            props["sasl.oauthbearer.expected.audience"] = self.audience
        return props


@dataclass(frozen=True)
class ClientSecurity:
    """How the client-facing listener is secured; see the module docstring for the layout.

    PLAIN users are listed in the listener's JAAS config; SCRAM users are created after
    start-up through the Admin API (AlterUserScramCredentials), for every enabled SCRAM
    mechanism, and `start()` returns only once every broker accepts them. `super_users`
    is set for when an authorizer is enabled (none is, by default). OAUTHBEARER may be
    added to `mechanisms` together with `oauthbearer`.
    """

    protocol: str = "SASL_PLAINTEXT"
    mechanisms: tuple[str, ...] = SASL_MECHANISMS
    plain_users: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    scram_users: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    super_users: tuple[str, ...] = ("User:gateway",)
    tls: BrokerTls | None = None
    scram_iterations: int = SCRAM_MIN_ITERATIONS
    oauthbearer: OAuthBearerValidation | None = None

    def __post_init__(self) -> None:
        if self.protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"protocol must be one of {SECURITY_PROTOCOLS}, got {self.protocol!r}")
        if self.uses_tls and self.tls is None:
            raise ValueError(f"{self.protocol} needs tls=BrokerTls(...)")
        unknown = set(self.mechanisms) - set(ALL_SASL_MECHANISMS)
        if self.uses_sasl and (unknown or not self.mechanisms):
            raise ValueError(f"mechanisms must be a non-empty subset of {ALL_SASL_MECHANISMS}")
        if (sasl.OAUTHBEARER in self.mechanisms) != (self.oauthbearer is not None):
            raise ValueError("OAUTHBEARER in mechanisms and oauthbearer=... go together")
        for name, password in {**self.plain_users, **self.scram_users}.items():
            if not name or any(c in name + password for c in '"\\\n'):
                raise ValueError(f"user {name!r}: names and passwords must not contain quotes")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @property
    def scram_mechanisms(self) -> tuple[str, ...]:
        return tuple(m for m in self.mechanisms if m in SCRAM_HASHES) if self.uses_sasl else ()

    def password(self, user: str, mechanism: str = sasl.PLAIN) -> str:
        """The configured password of `user` for `mechanism` (KeyError if none).

        SCRAM users' for any other mechanism: test OAuth clients reuse them as secrets.
        """
        users = self.plain_users if mechanism == sasl.PLAIN else self.scram_users
        return users[user]


def _jaas(mechanism: str, users: Mapping[str, str]) -> str:
    """A listener's JAAS line; PLAIN's lists its users as user_<name>="<password>"."""
    entries = ""
    if mechanism == sasl.PLAIN:
        entries = "".join(f' user_{name}="{password}"' for name, password in users.items())
    return f"{_LOGIN_MODULES[mechanism]} required{entries};"


def client_listener_properties(
    security: ClientSecurity,
    host: str,
    port: int,
    internal_port: int | None,
    controller_port: int | None,
    keystore_path: Path,
) -> dict[str, ConfigValue]:
    """Listener layout of a secured broker: CLIENT secured on `port`, INTERNAL plaintext
    on `internal_port` for brokers and probes, CONTROLLER plaintext when it is one."""
    client = f"{CLIENT_LISTENER}://{host}:{port}"
    internal = f"{INTERNAL_LISTENER}://{host}:{internal_port}"
    controller = f",CONTROLLER://{host}:{controller_port}" if controller_port is not None else ""
    props: dict[str, ConfigValue] = {
        "listeners": f"{client},{internal}{controller}",
        "advertised.listeners": f"{client},{internal}",
        "listener.security.protocol.map": (
            f"{CLIENT_LISTENER}:{security.protocol},{INTERNAL_LISTENER}:PLAINTEXT,"
            "CONTROLLER:PLAINTEXT"
        ),
        "inter.broker.listener.name": INTERNAL_LISTENER,
        "super.users": ";".join(security.super_users),
    }
    if security.uses_sasl:
        props.update(_sasl_properties(security))
    if security.tls is not None and security.uses_tls:
        props.update(_tls_properties(security.tls, keystore_path))
    return props


def _sasl_properties(security: ClientSecurity) -> dict[str, ConfigValue]:
    prefix = f"listener.name.{CLIENT_LISTENER.lower()}"
    props: dict[str, ConfigValue] = {
        f"{prefix}.sasl.enabled.mechanisms": ",".join(security.mechanisms),
    }
    for mechanism in security.mechanisms:
        props[f"{prefix}.{mechanism.lower()}.sasl.jaas.config"] = _jaas(
            mechanism, security.plain_users
        )
    if security.oauthbearer is not None:
        handler = f"{prefix}.oauthbearer.sasl.server.callback.handler.class"
        props[handler] = _OAUTH_VALIDATOR
        props.update(security.oauthbearer.broker_properties())
    return props


def _tls_properties(tls: BrokerTls, keystore_path: Path) -> dict[str, ConfigValue]:
    prefix = f"listener.name.{CLIENT_LISTENER.lower()}"
    return {
        f"{prefix}.ssl.keystore.type": "PEM",
        f"{prefix}.ssl.keystore.location": str(keystore_path),
        f"{prefix}.ssl.truststore.type": "PEM",
        f"{prefix}.ssl.truststore.location": str(tls.ca),
        f"{prefix}.ssl.client.auth": tls.client_auth,
    }


def security_jvm_opts(security: ClientSecurity | None) -> tuple[str, ...]:
    """JVM options the brokers need: Kafka 4 fetches only OAuth URLs a property allows."""
    if security is None or security.oauthbearer is None:
        return ()
    return (f"-D{_OAUTH_ALLOWED_URLS}={security.oauthbearer.jwks_url}",)


def write_keystore(security: ClientSecurity | None, path: Path) -> None:
    """Private key + certificate chain in one PEM file, as ssl.keystore.location wants
    (only when the client listener uses TLS); readable by the owner alone."""
    if security is None or security.tls is None or not security.uses_tls:
        return
    tls = security.tls
    path.write_bytes(tls.key.read_bytes() + b"\n" + tls.cert.read_bytes())
    path.chmod(0o600)


def client_ssl_context(security: ClientSecurity | None) -> ssl.SSLContext | None:
    """An `ssl` client context for the client listener (None unless it uses TLS)."""
    if security is None or security.tls is None or not security.uses_tls:
        return None
    return security.tls.probe_context()
