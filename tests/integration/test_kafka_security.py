"""Real Kafka with secured client listeners, and real clients logging in directly (no gateway).

These prove the authentication fixtures are right before the gateway is put in front of
them: PLAIN and SCRAM users really work and wrong ones are really refused, TLS really
verifies, and the raw protocol behaves the way the gateway has to mirror (requests
before authentication, the legacy v0 token flow, KIP-368 session lifetimes).
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError as KafkaPythonError

from codec import errors, sasl
from codec.framing import encode_frame
from codec.headers import encode_request_header
from localkafka.cluster import LocalKafkaCluster
from localkafka.probes import metadata_broker_ids
from localkafka.sasl_client import (
    SaslLoginError,
    ScramClient,
    ScramError,
    plain_client_token,
    sasl_login,
)
from localkafka.security import DEFAULT_USERS
from tests import kafka_tools
from tests.certs import make_ca, subject_string
from tests.integration.clients import consume_values, produce_values
from tests.jwks_server import (
    JwksServer,
    hs256_with_public_key,
    jwks_of,
    make_rsa_key,
    mint_token,
    standard_claims,
    tamper_payload,
    unsigned_token,
)
from tests.raw_kafka import RawKafkaConnection
from tests.security_fixtures import (
    SESSION_LIFETIME_MS,
    OAuthIssuer,
    SecureClusterFactory,
    SecurityPki,
    credentials,
)

pytestmark = pytest.mark.kafka

#: Password mechanisms (OAUTHBEARER is tested on its own below).
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _create_topic(cluster: LocalKafkaCluster) -> str:
    """A new topic, created over the internal PLAINTEXT listener (set-up needs no login)."""
    name = f"sec-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": cluster.internal_bootstrap_servers})
    rf = cluster.replication_factor
    admin.create_topics([NewTopic(name, 1, rf)])[name].result(timeout=30)
    return name


def _auth_error(config: dict[str, Any], timeout: float = 20.0) -> KafkaError:
    """The first error librdkafka reports for `config` (it retries silently otherwise)."""
    seen: list[KafkaError] = []
    producer = Producer({**config, "error_cb": seen.append, "reconnect.backoff.ms": 200})
    producer.produce("any-topic", b"x")
    deadline = time.monotonic() + timeout
    while not seen and time.monotonic() < deadline:
        producer.poll(0.2)
    producer.purge()
    assert seen, f"no error within {timeout}s"
    return seen[0]


@pytest.fixture
def sasl_topic(sasl_kafka_cluster: LocalKafkaCluster) -> str:
    return _create_topic(sasl_kafka_cluster)


@pytest.fixture
def tls_topic(tls_kafka_cluster: LocalKafkaCluster) -> str:
    return _create_topic(tls_kafka_cluster)


# ------------------------------------------------------------- SASL, clients


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_confluent_produces_and_consumes_with_each_mechanism(
    sasl_kafka_cluster: LocalKafkaCluster, sasl_topic: str, mechanism: str
) -> None:
    config = credentials(sasl_kafka_cluster, "alice", mechanism).confluent()
    values = [f"{mechanism}-{i}" for i in range(20)]
    produce_values(sasl_kafka_cluster.bootstrap_servers, sasl_topic, values, **config)
    received = consume_values(
        sasl_kafka_cluster.bootstrap_servers, sasl_topic, len(values), f"g-{mechanism}", **config
    )
    assert received == values


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("mallory", "x")])
def test_confluent_wrong_password_or_unknown_user_is_refused(
    sasl_kafka_cluster: LocalKafkaCluster, mechanism: str, user: str, password: str
) -> None:
    creds = credentials(sasl_kafka_cluster, user, mechanism, password=password)
    error = _auth_error(
        {"bootstrap.servers": sasl_kafka_cluster.bootstrap_servers, **creds.confluent()}
    )
    assert error.code() == KafkaError._AUTHENTICATION, error
    assert "Authentication failed" in error.str()


def test_metadata_on_the_secured_listener_names_only_client_ports(
    sasl_kafka_cluster: LocalKafkaCluster,
) -> None:
    config = credentials(sasl_kafka_cluster, "gateway", "SCRAM-SHA-256").confluent()
    admin = AdminClient({"bootstrap.servers": sasl_kafka_cluster.bootstrap_servers, **config})
    brokers = admin.list_topics(timeout=15).brokers
    assert {(b.host, b.port) for b in brokers.values()} == {
        ("127.0.0.1", sasl_kafka_cluster.broker_port(i)) for i in sasl_kafka_cluster.node_ids
    }


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_kafka_python_with_each_mechanism(
    sasl_kafka_cluster: LocalKafkaCluster, sasl_topic: str, mechanism: str
) -> None:
    config = credentials(sasl_kafka_cluster, "bob", mechanism).kafka_python()
    bootstrap = sasl_kafka_cluster.bootstrap_servers
    producer = KafkaProducer(bootstrap_servers=bootstrap, **config)
    for i in range(5):
        producer.send(sasl_topic, f"kp-{i}".encode())
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(
        sasl_topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **config
    )
    values: list[str] = []
    deadline = time.monotonic() + 30
    while len(values) < 5 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            values += [record.value.decode() for record in records]
    consumer.close()
    assert values == [f"kp-{i}" for i in range(5)]


def _failed_logins(cluster: LocalKafkaCluster) -> int:
    """How many failed authentications broker 1 has logged."""
    return cluster.log_path(1).read_text(errors="replace").count("Failed authentication with")


def test_kafka_python_wrong_password_is_refused(sasl_kafka_cluster: LocalKafkaCluster) -> None:
    """kafka-python keeps retrying the bootstrap; the broker log says why it fails."""
    creds = credentials(sasl_kafka_cluster, "alice", "SCRAM-SHA-512", password="nope")
    before = _failed_logins(sasl_kafka_cluster)
    with pytest.raises(KafkaPythonError):
        KafkaAdminClient(
            bootstrap_servers=sasl_kafka_cluster.bootstrap_servers,
            bootstrap_timeout_ms=3_000,
            **creds.kafka_python(),
        )
    assert _failed_logins(sasl_kafka_cluster) > before


def test_java_console_clients_and_admin_tool_with_scram(
    sasl_kafka_cluster: LocalKafkaCluster,
) -> None:
    props = credentials(sasl_kafka_cluster, "alice", "SCRAM-SHA-512").java()
    bootstrap = sasl_kafka_cluster.bootstrap_servers
    topic = f"java-{uuid.uuid4().hex[:8]}"
    kafka_tools.create_topic(bootstrap, topic, client_props=props)
    kafka_tools.console_produce(bootstrap, topic, ["one", "two"], extra_props=props)
    assert kafka_tools.console_consume(bootstrap, topic, 2, extra_props=props) == ["one", "two"]


# ------------------------------------------------------- SASL, raw protocol


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_raw_login_carries_the_session_lifetime(
    sasl_kafka_cluster: LocalKafkaCluster, mechanism: str
) -> None:
    response = sasl_login(
        sasl_kafka_cluster.bootstrap_servers, mechanism, "gateway", DEFAULT_USERS["gateway"]
    )
    assert 0 < response.session_lifetime_ms <= SESSION_LIFETIME_MS
    with pytest.raises(SaslLoginError) as refused:
        sasl_login(sasl_kafka_cluster.bootstrap_servers, mechanism, "gateway", "wrong")
    assert refused.value.error_code == errors.SASL_AUTHENTICATION_FAILED


def test_raw_unsupported_mechanism_lists_the_enabled_ones(
    sasl_kafka_cluster: LocalKafkaCluster,
) -> None:
    with pytest.raises(SaslLoginError) as refused:
        sasl_login(sasl_kafka_cluster.bootstrap_servers, "GSSAPI", "alice", "x")
    assert refused.value.error_code == errors.UNSUPPORTED_SASL_MECHANISM
    assert "SCRAM-SHA-512" in str(refused.value)


def _connect(cluster: LocalKafkaCluster) -> socket.socket:
    return socket.create_connection(("127.0.0.1", cluster.broker_port(1)), timeout=10)


def _read_frame(sock: socket.socket) -> bytes | None:
    """One size-prefixed frame, or None if the broker closed the connection."""
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    return data[4:]


def _metadata_v1_request(correlation_id: int) -> bytes:
    header = encode_request_header(3, 1, correlation_id, "raw")
    return encode_frame(header, struct.pack(">i", 0))  # topics: [] (none)


def test_a_request_before_authentication_closes_the_connection(
    sasl_kafka_cluster: LocalKafkaCluster,
) -> None:
    """What the gateway must mirror: Kafka answers nothing and hangs up."""
    with _connect(sasl_kafka_cluster) as sock:
        sock.sendall(_metadata_v1_request(1))
        assert _read_frame(sock) is None


def _raw_connection(cluster: LocalKafkaCluster) -> RawKafkaConnection:
    return RawKafkaConnection(f"127.0.0.1:{cluster.broker_port(1)}")


def _answer_or_close(conn: RawKafkaConnection, token: bytes) -> bytes | None:
    """The broker's bare answer to a legacy token, or None if it hung up instead."""
    try:
        return conn.sasl_token(token).auth_bytes
    except ConnectionError:
        return None


def _legacy_exchange(conn: RawKafkaConnection, mechanism: str, user: str, password: str) -> bool:
    """SaslHandshake v0, then bare tokens; True if the broker completed the exchange."""
    handshake = conn.sasl_handshake(mechanism, version=0)
    assert handshake.error_code == errors.NONE
    assert sasl.flow_after_handshake(0) is sasl.SaslFlow.LEGACY
    if mechanism == sasl.PLAIN:
        answer = _answer_or_close(conn, plain_client_token(user, password))
        return answer == b""  # the empty success token
    client = ScramClient(mechanism, user, password)
    server_first = conn.sasl_token(client.first_message()).auth_bytes
    server_final = _answer_or_close(conn, client.final_message(server_first))
    if server_final is None:
        return False
    client.verify_server_final(sasl.decode_legacy_token(server_final))
    return True


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_legacy_v0_handshake_with_bare_tokens(
    sasl_kafka_cluster: LocalKafkaCluster, mechanism: str
) -> None:
    with _raw_connection(sasl_kafka_cluster) as conn:
        assert _legacy_exchange(conn, mechanism, "alice", DEFAULT_USERS["alice"])
        conn.send_raw(_metadata_v1_request(2))  # authenticated: ordinary requests work
        frame = conn.read_frame()
        assert struct.unpack(">i", frame[:4])[0] == 2


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_legacy_v0_failure_just_closes_the_connection(
    sasl_kafka_cluster: LocalKafkaCluster, mechanism: str
) -> None:
    with _raw_connection(sasl_kafka_cluster) as conn:
        assert not _legacy_exchange(conn, mechanism, "alice", "wrong-password")
        assert conn.is_closed_by_peer()


# ------------------------------------------------------------- OAUTHBEARER


def test_confluent_oidc_login_with_client_credentials(
    sasl_kafka_cluster: LocalKafkaCluster, sasl_topic: str, oauth_issuer: OAuthIssuer
) -> None:
    """librdkafka fetches a token from the test token endpoint; the broker verifies it."""
    before = oauth_issuer.server.request_count("/token")
    creds = credentials(
        sasl_kafka_cluster, "alice", "OAUTHBEARER", token_url=oauth_issuer.token_url
    )
    bootstrap = sasl_kafka_cluster.bootstrap_servers
    produce_values(bootstrap, sasl_topic, ["jwt-1", "jwt-2"], **creds.confluent())
    assert consume_values(bootstrap, sasl_topic, 2, "g-oidc", **creds.confluent()) == [
        "jwt-1",
        "jwt-2",
    ]
    assert oauth_issuer.server.request_count("/token") > before
    wrong = creds.with_password("not-the-secret").confluent()
    error = _auth_error({"bootstrap.servers": bootstrap, **wrong})
    assert error.code() in (KafkaError._AUTHENTICATION, KafkaError._ALL_BROKERS_DOWN), error


def test_kafka_python_and_java_with_oauthbearer(
    sasl_kafka_cluster: LocalKafkaCluster, sasl_topic: str, oauth_issuer: OAuthIssuer
) -> None:
    creds = credentials(sasl_kafka_cluster, "bob", "OAUTHBEARER", token_url=oauth_issuer.token_url)
    bootstrap = sasl_kafka_cluster.bootstrap_servers
    producer = KafkaProducer(bootstrap_servers=bootstrap, **creds.kafka_python())
    producer.send(sasl_topic, b"from-kafka-python").get(timeout=30)
    producer.close()
    values = kafka_tools.console_consume(
        bootstrap, sasl_topic, 1, extra_props=creds.java(), jvm_opts=creds.java_jvm_opts()
    )
    assert values == ["from-kafka-python"]


def test_raw_oauthbearer_session_lifetime_is_bounded_by_the_token(
    sasl_kafka_cluster: LocalKafkaCluster, oauth_issuer: OAuthIssuer
) -> None:
    token = oauth_issuer.token("alice", lifetime=60)
    response = sasl_login(sasl_kafka_cluster.bootstrap_servers, "OAUTHBEARER", "", token)
    assert 50_000 < response.session_lifetime_ms <= 60_000


def _bad_tokens(issuer: OAuthIssuer) -> dict[str, str]:
    good = issuer.token("alice")
    return {
        "wrong audience": issuer.token(aud="someone-else"),
        "wrong issuer": mint_token(issuer.key, standard_claims(iss="https://evil.example")),
        "expired": issuer.token(lifetime=-120),
        "not yet valid": issuer.token(not_before=600, lifetime=900),
        "alg none": unsigned_token(standard_claims()),
        "HS256 with the public key": hs256_with_public_key(issuer.key, standard_claims()),
        "tampered payload": tamper_payload(good, sub="admin"),
        "unknown kid": mint_token(make_rsa_key("stranger"), standard_claims()),
    }


BAD_TOKEN_CASES = [
    "wrong audience",
    "wrong issuer",
    "expired",
    "not yet valid",
    "alg none",
    "HS256 with the public key",
    "tampered payload",
    "unknown kid",
]


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
def test_brokers_really_verify_tokens(
    sasl_kafka_cluster: LocalKafkaCluster, oauth_issuer: OAuthIssuer, case: str
) -> None:
    """Guards the fixture: Kafka 4.1's default validator skips signatures (localkafka.security)."""
    token = _bad_tokens(oauth_issuer)[case]
    with pytest.raises(SaslLoginError) as refused:
        sasl_login(sasl_kafka_cluster.bootstrap_servers, "OAUTHBEARER", "", token)
    assert refused.value.error_code == errors.SASL_AUTHENTICATION_FAILED
    assert "invalid_token" in str(refused.value)


# ------------------------------------------------------------------- TLS


def test_confluent_over_tls_with_and_without_a_client_certificate(
    tls_kafka_cluster: LocalKafkaCluster, tls_topic: str, security_pki: SecurityPki
) -> None:
    bootstrap = tls_kafka_cluster.bootstrap_servers
    plain_tls = credentials(tls_kafka_cluster).confluent()
    produce_values(bootstrap, tls_topic, ["a", "b"], **plain_tls)
    mtls = credentials(tls_kafka_cluster, client_cert=security_pki.client("alice")).confluent()
    produce_values(bootstrap, tls_topic, ["c"], **mtls)
    assert consume_values(bootstrap, tls_topic, 3, "g-tls", **mtls) == ["a", "b", "c"]


def test_tls_with_an_untrusted_ca_is_refused(
    tls_kafka_cluster: LocalKafkaCluster, tmp_path: Path
) -> None:
    other_ca = make_ca(tmp_path, "other-ca")
    config = credentials(tls_kafka_cluster).confluent() | {
        "ssl.ca.location": str(other_ca.cert_path)
    }
    error = _auth_error({"bootstrap.servers": tls_kafka_cluster.bootstrap_servers, **config})
    assert error.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)
    context = ssl.create_default_context(cafile=str(other_ca.cert_path))
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", tls_kafka_cluster.broker_port(1))) as sock,
    ):
        context.wrap_socket(sock, server_hostname="127.0.0.1")


def test_kafka_python_over_tls(tls_kafka_cluster: LocalKafkaCluster, tls_topic: str) -> None:
    config = credentials(tls_kafka_cluster).kafka_python()
    producer = KafkaProducer(bootstrap_servers=tls_kafka_cluster.bootstrap_servers, **config)
    producer.send(tls_topic, b"over-tls").get(timeout=30)
    producer.close()


def test_broker_certificate_verifies_for_ip_and_name(
    tls_kafka_cluster: LocalKafkaCluster, security_pki: SecurityPki
) -> None:
    context = ssl.create_default_context(cafile=str(security_pki.ca_path))
    for name in ("127.0.0.1", "localhost"):
        with (
            socket.create_connection(("127.0.0.1", tls_kafka_cluster.broker_port(1))) as sock,
            context.wrap_socket(sock, server_hostname=name) as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_sasl_ssl_with_required_client_certificates(
    secure_kafka_cluster: SecureClusterFactory, security_pki: SecurityPki
) -> None:
    cluster = secure_kafka_cluster("SASL_SSL", client_auth="required")
    topic = _create_topic(cluster)
    cert = security_pki.client("gateway")
    creds = credentials(cluster, "gateway", "SCRAM-SHA-256", client_cert=cert)
    produce_values(cluster.bootstrap_servers, topic, ["mtls+scram"], **creds.confluent())
    java = kafka_tools.console_consume(
        cluster.bootstrap_servers, topic, 1, extra_props=creds.java()
    )
    assert java == ["mtls+scram"]
    no_cert = credentials(cluster, "gateway", "SCRAM-SHA-256").confluent()
    error = _auth_error({"bootstrap.servers": cluster.bootstrap_servers, **no_cert})
    assert error.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)


def test_three_brokers_accept_scram_users_on_every_broker(
    secure_kafka_cluster: SecureClusterFactory,
) -> None:
    started = time.monotonic()
    cluster = secure_kafka_cluster("SASL_PLAINTEXT", brokers=3, mechanisms=("SCRAM-SHA-512",))
    elapsed = time.monotonic() - started
    for node_id in cluster.node_ids:
        address = cluster.broker_address(node_id)
        sasl_login(address, "SCRAM-SHA-512", "bob", DEFAULT_USERS["bob"])
        with pytest.raises(SaslLoginError):
            sasl_login(address, "PLAIN", "bob", DEFAULT_USERS["bob"])  # not enabled
        assert metadata_broker_ids("127.0.0.1", cluster.probe_port(node_id)) == {1, 2, 3}
    print(f"3-broker SASL_PLAINTEXT cluster with SCRAM users started in {elapsed:.1f}s")


# ------------------------------------------------------ test helpers themselves


RFC7677_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)


def test_probe_scram_client_matches_rfc7677() -> None:
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert client.first_message() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert client.final_message(RFC7677_SERVER_FIRST) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    client.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(ScramError):
        client.verify_server_final(b"v=AAAA")
    with pytest.raises(ScramError):
        ScramClient("SCRAM-SHA-256", "u", "p", nonce="abc").final_message(b"r=zzz,s=AA==,i=4096")


def test_pki_subjects(security_pki: SecurityPki) -> None:
    cert, _key = security_pki.client("carol", ou="dev", o="Example")
    assert subject_string(cert) == "CN=carol,OU=dev,O=Example"


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_jwks_server_rotates_keys_and_counts_fetches(jwks_server: JwksServer) -> None:
    old, new = make_rsa_key("old"), make_rsa_key("new")
    jwks_server.set_keys(old)
    assert [k["kid"] for k in _get_json(jwks_server.jwks_url)["keys"]] == ["old"]
    jwks_server.set_keys(old, new)
    assert [k["kid"] for k in _get_json(jwks_server.jwks_url)["keys"]] == ["old", "new"]
    assert jwks_server.request_count() == 2
    import jwt

    token = mint_token(new, standard_claims("alice"))
    jwk = jwt.PyJWKSet.from_dict(_get_json(jwks_server.jwks_url))["new"]
    claims = jwt.decode(token, jwk.key, algorithms=["RS256"], audience="kafka-gateway")
    assert claims["sub"] == "alice"
    for bad in (unsigned_token(standard_claims()), hs256_with_public_key(new, standard_claims())):
        with pytest.raises(jwt.InvalidAlgorithmError):
            jwt.decode(bad, jwk.key, algorithms=["RS256"], audience="kafka-gateway")


def test_token_endpoint_issues_client_credentials_tokens(jwks_server: JwksServer) -> None:
    key = make_rsa_key("issuer-key")
    jwks_server.set_jwks(jwks_of(key))
    jwks_server.enable_token_endpoint(key, {"gateway": "gw-secret"}, lifetime=60)
    form = b"grant_type=client_credentials&client_id=gateway&client_secret=gw-secret"
    with urllib.request.urlopen(urllib.request.Request(jwks_server.token_url, form)) as answer:
        body = json.load(answer)
    assert body["token_type"] == "Bearer" and body["expires_in"] == 60
    assert jwks_server.request_count("/token") == 1
    bad = form.replace(b"gw-secret", b"guess")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(jwks_server.token_url, bad))
    assert refused.value.code == 401
