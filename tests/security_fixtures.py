"""Fixtures for authentication tests: a test PKI and Kafka clusters with secured listeners.

Load them in a test module with ``pytest_plugins = ["tests.security_fixtures"]``.

* ``security_pki`` (session): a CA, a broker certificate for 127.0.0.1/localhost and
  client certificates (``pki.client("alice")`` issues more on demand).
* ``oauth_issuer`` (session): a JWKS server with a signing key and a client-credentials
  token endpoint whose clients are `DEFAULT_USERS` (client id = user, secret = password;
  the token's ``sub`` is the client id). The brokers trust it: do not rotate its keys
  (start your own `JwksServer` for the gateway's JWKS tests).
* ``sasl_kafka_cluster`` (session): 1 broker whose client listener is SASL_PLAINTEXT
  with PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER (JWTs from ``oauth_issuer``)
  for `DEFAULT_USERS` (``gateway`` is the super user), and KIP-368 sessions of
  `SESSION_LIFETIME_MS` (bounded by the token's ``exp`` for OAUTHBEARER).
* ``tls_kafka_cluster`` (session): 1 broker whose client listener is SSL with client
  certificates *requested* (optional), signed by ``security_pki``'s CA.
* ``secure_kafka_cluster`` (per test): ``secure_kafka_cluster("SASL_SSL",
  client_auth="required")`` -> a started cluster, stopped after the test.

`ClientCredentials` turns "who connects how" into the configuration of each client
library (confluent-kafka, kafka-python, the Java tools), for a broker or a gateway:

    creds = credentials(sasl_kafka_cluster, "alice", "SCRAM-SHA-512")
    Producer({"bootstrap.servers": sasl_kafka_cluster.bootstrap_servers, **creds.confluent()})
    creds = credentials(
        sasl_kafka_cluster, "bob", "OAUTHBEARER", token_url=oauth_issuer.token_url
    )

Ports come from 25000-28999 (see `_free_secure_base`), apart from the other fixtures.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localkafka.cluster import CONTROLLER_PORT_OFFSET, INTERNAL_PORT_OFFSET, LocalKafkaCluster
from localkafka.distribution import KafkaDistribution
from localkafka.probes import port_is_free
from localkafka.security import (
    ALL_SASL_MECHANISMS,
    DEFAULT_USERS,
    SASL_MECHANISMS,
    BrokerTls,
    ClientSecurity,
    OAuthBearerValidation,
)
from tests.certs import CertAuthority, make_ca
from tests.jwks_server import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    JwksServer,
    SigningKey,
    jwks_of,
    make_rsa_key,
    mint_token,
    standard_claims,
)
from tests.kafka_tools import java_security_jvm_opts, java_security_props

#: KIP-368 session lifetime of the SASL session cluster: long enough for any test, but
#: present, so SaslAuthenticate v1+ answers carry a real session_lifetime_ms.
SESSION_LIFETIME_MS = 3_600_000
SECURE_PORT_FIRST = 25000
SECURE_PORT_LAST = 28999
_BANK = INTERNAL_PORT_OFFSET + CONTROLLER_PORT_OFFSET  # broker, controller, internal ranges
_STEP = 5  # up to 5 brokers per cluster


# ---------------------------------------------------------------------- PKI


@dataclass
class SecurityPki:
    """The test CA and the certificates issued so far (PEM paths)."""

    ca: CertAuthority
    broker_cert: Path
    broker_key: Path
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    @property
    def ca_path(self) -> Path:
        return self.ca.cert_path

    def client(self, cn: str, ou: str | None = None, o: str | None = None) -> tuple[Path, Path]:
        """``(cert, key)`` for ``CN=<cn>``, issued on first use."""
        key = f"{cn}|{ou}|{o}"
        if key not in self.clients:
            name = "client-" + "-".join(part for part in (cn, ou, o) if part)
            self.clients[key] = self.ca.issue_client(cn, ou=ou, o=o, name=name)
        return self.clients[key]

    def broker_tls(self, client_auth: str = "none") -> BrokerTls:
        """Broker TLS settings; probes present the gateway's client certificate."""
        cert, key = self.client("gateway")
        return BrokerTls(
            self.broker_cert,
            self.broker_key,
            self.ca_path,
            client_auth=client_auth,
            client_cert=cert,
            client_key=key,
        )


def make_pki(directory: Path) -> SecurityPki:
    ca = make_ca(directory, "kafka-test-ca")
    cert, key = ca.issue_server(name="broker")
    return SecurityPki(ca, cert, key)


@pytest.fixture(scope="session")
def security_pki(tmp_path_factory: pytest.TempPathFactory) -> SecurityPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# ---------------------------------------------------------------- OAuth issuer


@dataclass
class OAuthIssuer:
    """A running JWKS + token endpoint and the key it signs with."""

    server: JwksServer
    key: SigningKey
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE

    @property
    def jwks_url(self) -> str:
        return self.server.jwks_url

    @property
    def token_url(self) -> str:
        return self.server.token_url

    def token(self, sub: str = "alice", lifetime: float = 300.0, **claims: Any) -> str:
        """A JWT the brokers accept (override claims to make one they refuse)."""
        claims = {"iss": self.issuer, "aud": self.audience, **claims}
        return mint_token(self.key, standard_claims(sub, lifetime=lifetime, **claims))

    def validation(self) -> OAuthBearerValidation:
        """What brokers need to check this issuer's tokens."""
        return OAuthBearerValidation(self.jwks_url, self.issuer, self.audience)


@pytest.fixture(scope="session")
def oauth_issuer() -> Iterator[OAuthIssuer]:
    key = make_rsa_key("broker-issuer-key")
    with JwksServer(jwks_of(key)) as server:
        server.enable_token_endpoint(key, DEFAULT_USERS)
        yield OAuthIssuer(server, key)


class ClientCredentialsTokens:
    """kafka-python's `sasl_oauth_token_provider`: fetches a client-credentials JWT."""

    def __init__(self, token_url: str, client_id: str, client_secret: str) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret

    def token(self) -> str:
        form = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
            }
        ).encode()
        with urllib.request.urlopen(self.token_url, form, timeout=10) as answer:
            return str(json.load(answer)["access_token"])

    def extensions(self) -> dict[str, str]:
        return {}


# -------------------------------------------------------------- credentials


@dataclass(frozen=True)
class ClientCredentials:
    """How a client connects: security protocol, SASL login, TLS files.

    Works for a secured broker and for a gateway listener alike; each method returns
    that client library's configuration (without the bootstrap servers).
    """

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    #: OAUTHBEARER: the client-credentials token endpoint (username/password are the
    #: client id and secret).
    token_url: str | None = None

    @property
    def oauth(self) -> bool:
        return self.mechanism == "OAUTHBEARER"

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    def with_password(self, password: str) -> ClientCredentials:
        return dataclasses.replace(self, password=password)

    def confluent(self) -> dict[str, Any]:
        """librdkafka properties."""
        config: dict[str, Any] = {"security.protocol": self.protocol.lower()}
        if self.sasl and self.oauth:
            config |= {
                "sasl.mechanism": "OAUTHBEARER",
                "sasl.oauthbearer.method": "oidc",
                "sasl.oauthbearer.client.id": self.username,
                "sasl.oauthbearer.client.secret": self.password,
                "sasl.oauthbearer.token.endpoint.url": self.token_url,
            }
        elif self.sasl:
            config |= {
                "sasl.mechanism": self.mechanism,
                "sasl.username": self.username,
                "sasl.password": self.password,
            }
        if self.tls:
            config |= _optional(
                {
                    "ssl.ca.location": self.ca,
                    "ssl.certificate.location": self.cert,
                    "ssl.key.location": self.key,
                }
            )
        return config

    def kafka_python(self) -> dict[str, Any]:
        """kafka-python (and aiokafka, except for TLS files: it wants an ssl_context)."""
        config: dict[str, Any] = {"security_protocol": self.protocol}
        if self.sasl and self.oauth:
            config |= {
                "sasl_mechanism": "OAUTHBEARER",
                "sasl_oauth_token_provider": _kafka_python_token_provider(
                    self.token_url or "", self.username or "", self.password or ""
                ),
            }
        elif self.sasl:
            config |= {
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        if self.tls:
            config |= _optional(
                {"ssl_cafile": self.ca, "ssl_certfile": self.cert, "ssl_keyfile": self.key}
            )
            config["ssl_check_hostname"] = True
        return config

    def java(self) -> dict[str, str]:
        """Java client properties (for `tests.kafka_tools` `extra_props`/`client_props`)."""
        return java_security_props(
            self.protocol,
            mechanism=self.mechanism,
            username=self.username,
            password=self.password,
            ca=self.ca,
            cert=self.cert,
            key=self.key,
            token_url=self.token_url,
        )

    def java_jvm_opts(self) -> tuple[str, ...]:
        """JVM options the Java tools need too (Kafka 4 lists allowed OAuth URLs)."""
        return java_security_jvm_opts(self.token_url)


def _kafka_python_token_provider(token_url: str, client_id: str, secret: str) -> Any:
    """A subclass of kafka-python's AbstractTokenProvider (it checks isinstance)."""
    try:
        from kafka.net.sasl.oauth import AbstractTokenProvider
    except ImportError:  # kafka-python < 3
        from kafka.sasl.oauth import AbstractTokenProvider

    class Provider(ClientCredentialsTokens, AbstractTokenProvider):  # type: ignore[misc]
        pass

    return Provider(token_url, client_id, secret)


def _optional(values: dict[str, Path | None]) -> dict[str, str]:
    return {name: str(path) for name, path in values.items() if path is not None}


def credentials(
    cluster: LocalKafkaCluster,
    username: str | None = None,
    mechanism: str | None = "PLAIN",
    *,
    password: str | None = None,
    client_cert: tuple[Path, Path] | None = None,
    token_url: str | None = None,
) -> ClientCredentials:
    """Credentials for `cluster`'s client listener: the configured password by default.

    For OAUTHBEARER, `token_url` is the token endpoint (``oauth_issuer.token_url``) and
    the user's password is its client secret.
    """
    security = cluster.security
    if security is None:
        return ClientCredentials()
    tls = security.tls if security.uses_tls else None
    if security.uses_sasl:
        if username is None or mechanism is None:
            raise ValueError(f"{security.protocol} needs a user name and a mechanism")
        if password is None:
            password = security.password(username, mechanism)
    else:
        username = mechanism = None
    cert, key = client_cert or (None, None)
    if mechanism == "OAUTHBEARER" and token_url is None:
        raise ValueError("OAUTHBEARER needs token_url (e.g. oauth_issuer.token_url)")
    return ClientCredentials(
        security.protocol,
        mechanism,
        username,
        password,
        tls.ca if tls else None,
        cert,
        key,
        token_url if mechanism == "OAUTHBEARER" else None,
    )


# ----------------------------------------------------------------- clusters


def _ports(base: int, brokers: int) -> list[int]:
    ports = [base + i for i in range(brokers)]
    ports += [base + CONTROLLER_PORT_OFFSET + i for i in range(min(brokers, 3))]
    return ports + [base + INTERNAL_PORT_OFFSET + i for i in range(brokers)]


_used_bases: set[int] = set()


def _free_secure_base(brokers: int) -> int:
    """A base port whose broker, controller (+100) and internal (+200) ports are free.

    The range is split into banks of 300 ports; a bank's first 100 hold client
    listeners in blocks of 5, so the +100 and +200 ranges never meet another block's.
    A base is not reused within a run (a killed broker's ports may linger).
    """
    if brokers > _STEP:
        raise ValueError(f"secured test clusters have at most {_STEP} brokers")
    for bank in range(SECURE_PORT_FIRST, SECURE_PORT_LAST - _BANK + 2, _BANK):
        for base in range(bank, bank + CONTROLLER_PORT_OFFSET - _STEP + 1, _STEP):
            if base in _used_bases:
                continue
            if all(port_is_free(port) for port in _ports(base, brokers)):
                _used_bases.add(base)
                return base
    raise RuntimeError(f"no free ports for {brokers} secured brokers in 25000-28999")


def start_secure_cluster(
    dist: KafkaDistribution,
    security: ClientSecurity,
    brokers: int = 1,
    **kwargs: Any,
) -> LocalKafkaCluster:
    cluster = LocalKafkaCluster(
        brokers, base_port=_free_secure_base(brokers), dist=dist, security=security, **kwargs
    )
    return cluster.start()


def _stop(cluster: LocalKafkaCluster, keep_logs: bool) -> None:
    cluster.stop(remove_data=not keep_logs, graceful=False)
    if keep_logs:
        print(f"\n{cluster!r}: broker logs kept in {cluster.data_dir}")


@pytest.fixture(scope="session")
def sasl_kafka_cluster(
    kafka_distribution: KafkaDistribution,
    oauth_issuer: OAuthIssuer,
    request: pytest.FixtureRequest,
) -> Iterator[LocalKafkaCluster]:
    """SASL_PLAINTEXT client listener: PLAIN, SCRAM-SHA-256/512 and OAUTHBEARER."""
    security = ClientSecurity(
        "SASL_PLAINTEXT", mechanisms=ALL_SASL_MECHANISMS, oauthbearer=oauth_issuer.validation()
    )
    cluster = start_secure_cluster(
        kafka_distribution,
        security,
        broker_config={"connections.max.reauth.ms": SESSION_LIFETIME_MS},
    )
    yield cluster
    _stop(cluster, keep_logs=request.session.testsfailed > 0)


@pytest.fixture(scope="session")
def tls_kafka_cluster(
    kafka_distribution: KafkaDistribution,
    security_pki: SecurityPki,
    request: pytest.FixtureRequest,
) -> Iterator[LocalKafkaCluster]:
    """SSL client listener with the test CA; client certificates requested, not required."""
    security = ClientSecurity("SSL", tls=security_pki.broker_tls(client_auth="requested"))
    cluster = start_secure_cluster(kafka_distribution, security)
    yield cluster
    _stop(cluster, keep_logs=request.session.testsfailed > 0)


class SecureClusterFactory:
    """``factory(protocol, client_auth=..., brokers=..., mechanisms=..., **cluster_kwargs)``.

    For OAUTHBEARER pass ``mechanisms`` including it and
    ``oauthbearer=oauth_issuer.validation()``.
    """

    def __init__(self, dist: KafkaDistribution, pki: SecurityPki) -> None:
        self.dist = dist
        self.pki = pki
        self.clusters: list[LocalKafkaCluster] = []

    def __call__(
        self,
        protocol: str = "SASL_PLAINTEXT",
        *,
        client_auth: str = "none",
        brokers: int = 1,
        mechanisms: tuple[str, ...] | None = None,
        users: dict[str, str] | None = None,
        oauthbearer: OAuthBearerValidation | None = None,
        **kwargs: Any,
    ) -> LocalKafkaCluster:
        users = dict(users or DEFAULT_USERS)
        tls = self.pki.broker_tls(client_auth) if protocol.endswith("SSL") else None
        security = ClientSecurity(
            protocol,
            mechanisms=mechanisms or SASL_MECHANISMS,
            plain_users=users,
            scram_users=users,
            tls=tls,
            oauthbearer=oauthbearer,
        )
        cluster = LocalKafkaCluster(
            brokers,
            base_port=_free_secure_base(brokers),
            dist=self.dist,
            security=security,
            **kwargs,
        )
        self.clusters.append(cluster)
        return cluster.start()


@pytest.fixture
def secure_kafka_cluster(
    kafka_distribution: KafkaDistribution,
    security_pki: SecurityPki,
    request: pytest.FixtureRequest,
) -> Iterator[SecureClusterFactory]:
    """A factory of secured clusters private to one test."""
    factory = SecureClusterFactory(kafka_distribution, security_pki)
    yield factory
    failed = request.session.testsfailed > 0
    for cluster in factory.clusters:
        _stop(cluster, keep_logs=failed)
