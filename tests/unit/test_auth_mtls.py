"""mTLS: Kafka's ssl.principal.mapping.rules, subject DNs like Java prints them, TLS contexts."""

from __future__ import annotations

import contextlib
import datetime
import ssl
from pathlib import Path
from typing import cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from policies.auth.errors import FailureReason
from policies.auth.mtls import (
    InvalidMappingRule,
    NoMatchingRule,
    map_principal,
    parse_mapping_rules,
    subject_dn_from_der,
    subject_dn_from_peercert,
    tls_principal,
)
from policies.auth.tls import client_ssl_context, server_ssl_context
from policies.config import ClientTlsConfig, ServerTlsConfig

# --------------------------------------------------------------------------------------
# rules (the cases of Kafka's SslPrincipalMapperTest)


@pytest.mark.parametrize(
    "rules",
    [
        "DEFAULT",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/U",
        "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L",
        "RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U",
        "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
        "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U",
    ],
)
def test_valid_rules(rules: str) -> None:
    assert len(parse_mapping_rules(rules)) == 1


@pytest.mark.parametrize(
    "rules",
    [
        "default",
        "DEFAUL",
        "DEFAULT/L",
        "DEFAULT/U",
        "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
        "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
    ],
)
def test_invalid_rules(rules: str) -> None:
    with pytest.raises(InvalidMappingRule):
        parse_mapping_rules(rules)


def test_invalid_regex_and_replacement() -> None:
    with pytest.raises(InvalidMappingRule, match="invalid regex"):
        parse_mapping_rules("RULE:^CN=(.*$/$1/")
    with pytest.raises(InvalidMappingRule, match="group number"):
        parse_mapping_rules("RULE:^CN=(.*)$/$x/")
    with pytest.raises(InvalidMappingRule, match="no group named"):
        parse_mapping_rules("RULE:^CN=(.*)$/${name}/")


def test_kafka_mapper_example() -> None:
    rules = ", ".join(
        [
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L",
            "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L",
            "RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U",
            "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U",
            "DEFAULT",
        ]
    )
    parsed = parse_mapping_rules(rules)
    assert map_principal("CN=Duke,OU=ServiceUsers,O=Org,C=US", parsed) == "duke"
    assert map_principal("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US", parsed) == "duke@sme"
    assert map_principal("cn=duke,ou=sme,dc=mycp,dc=com", parsed) == "DUKE@SME"
    assert map_principal("cN=duke,OU=JavaSoft,O=Sun Microsystems", parsed) == "DUKE"
    assert (
        map_principal("OU=JavaSoft,O=Sun Microsystems,C=US", parsed)
        == "OU=JavaSoft,O=Sun Microsystems,C=US"
    )


def test_kafka_documentation_example() -> None:
    # docs/security: "Customizing SSL User Name"
    rules = (
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,\n"
        "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,\n"
        "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L,\n"
        "DEFAULT"
    )
    assert (
        map_principal(
            "CN=serviceuser,OU=ServiceUsers,O=Unknown,L=Unknown,ST=Unknown,C=Unknown", rules
        )
        == "serviceuser"
    )
    assert (
        map_principal("CN=adminUser,OU=Admin,O=Unknown,L=Unknown,ST=Unknown,C=Unknown", rules)
        == "adminuser@admin"
    )


def test_newline_separated_rules() -> None:
    rules = "RULE:^CN=([^,]*),.*$/$1/\nDEFAULT"
    assert [str(r) for r in parse_mapping_rules(rules)] == ["RULE:^CN=([^,]*),.*$/$1", "DEFAULT"]


@pytest.mark.parametrize(
    ("expected", "rules"),
    [
        ("[]", ""),
        ("[DEFAULT]", "DEFAULT"),
        ("[RULE:/]", "RULE://"),
        ("[RULE:/.*]", "RULE:/.*/"),
        ("[RULE:/.*/L]", "RULE:/.*/L"),
        ("[RULE:/, DEFAULT]", "RULE://,DEFAULT"),
        ("[RULE:/, DEFAULT]", "  RULE:// ,  DEFAULT  "),
        ("[RULE:   /     , DEFAULT]", "  RULE:   /     / ,  DEFAULT  "),
        ("[RULE:  /     /U, DEFAULT]", "  RULE:  /     /U   ,DEFAULT  "),
        (
            "[RULE:([A-Z]*)/$1/U, RULE:([a-z]+)/$1, DEFAULT]",
            "  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  ",
        ),
        ("[]", ",   , , ,      , , ,   "),
        ("[RULE:/, DEFAULT]", ",  , RULE://  ,,   , , DEFAULT, ,   "),
        ("[RULE: /   , DEFAULT]", "  ,  , RULE: /   /    ,,   , , DEFAULT, ,   "),
        ("[RULE:   /  /U, DEFAULT]", "  ,  , RULE:   /  /U    ,,  ,DEFAULT, ,"),
        ("[RULE:\\/\\\\\\(\\)\\n\\t/\\/\\/]", "RULE:\\/\\\\\\(\\)\\n\\t/\\/\\//"),
        ("[RULE:\\**\\/+/*/L, RULE:\\/*\\**/**]", "RULE:\\**\\/+/*/L,RULE:\\/*\\**/**/"),
        (
            "[RULE:,RULE:,/,RULE:,\\//U, RULE:,/RULE:,, RULE:,RULE:,/L,RULE:,/L, RULE:, DEFAULT, "
            "/DEFAULT, DEFAULT]",
            "RULE:,RULE:,/,RULE:,\\//U,RULE:,/RULE:,/,RULE:,RULE:,/L,RULE:,/L,RULE:, DEFAULT, "
            "/DEFAULT/,DEFAULT",
        ),
    ],
)
def test_rules_splitting_like_kafka(expected: str, rules: str) -> None:
    # Kafka's SslPrincipalMapperTest.testRulesSplitting, compared through Rule.toString().
    parsed = parse_mapping_rules(rules)
    assert "[" + ", ".join(str(r) for r in parsed) + "]" == expected


def test_escaped_slash_and_literal_dollar() -> None:
    assert map_principal("CN=a/b,O=x", "RULE:^CN=(.*)\\/(.*),O=x$/$2\\/$1/") == "b/a"
    assert map_principal("CN=alice", "RULE:^CN=(.*)$/\\$$1/") == "$alice"
    # A back-reference beyond the groups is literal text (Kafka escapes it).
    assert map_principal("CN=alice", "RULE:^CN=(.*)$/$1-$2/") == "alice-$2"
    # $12 with one group is $1 followed by "2".
    assert map_principal("CN=alice", "RULE:^CN=(.*)$/$12/") == "alice2"
    # $0 is the whole match; named groups work with Java's syntax.
    assert map_principal("CN=alice", "RULE:^CN=(?<user>.*)$/${user}:$0/") == "alice:CN=alice"


def test_no_matching_rule() -> None:
    with pytest.raises(NoMatchingRule) as info:
        map_principal("CN=alice,O=Other", "RULE:^CN=(.*?),O=Example$/$1/")
    assert info.value.reason is FailureReason.NO_MATCHING_RULE
    assert info.value.subject_dn == "CN=alice,O=Other"
    with pytest.raises(NoMatchingRule):
        map_principal("CN=alice", "")


def test_rule_must_match_the_whole_dn() -> None:
    rules = "RULE:CN=([a-z]+)/$1/,DEFAULT"
    assert map_principal("CN=alice,O=x", rules) == "CN=alice,O=x"
    assert map_principal("CN=alice", rules) == "alice"


def test_tls_principal() -> None:
    principal = tls_principal("CN=Alice,OU=eng", "RULE:^CN=([^,]*),.*$/$1/L")
    assert str(principal) == "User:alice" and principal.mechanism == "MTLS"


dn_values = st.text(st.characters(min_codepoint=0x30, max_codepoint=0x7A), min_size=1, max_size=12)


@given(cn=dn_values, ou=dn_values)
def test_cn_rule_extracts_the_common_name(cn: str, ou: str) -> None:
    dn = f"CN={cn},OU={ou}"
    rules = "RULE:^CN=([^,]*),OU=.*$/$1/, DEFAULT"
    assert map_principal(dn, rules) == cn
    assert map_principal(dn, "RULE:^CN=([^,]*),OU=.*$/$1/U") == cn.upper()
    assert map_principal(dn, "DEFAULT") == dn


@given(st.text(max_size=40))
def test_parsing_never_crashes(rules: str) -> None:
    with contextlib.suppress(InvalidMappingRule):
        parse_mapping_rules(rules)


# --------------------------------------------------------------------------------------
# subject DNs


def name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def make_cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    san: str | None = None,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def peercert_subject(
    cert: x509.Certificate, tmp_path: Path
) -> tuple[tuple[tuple[str, str], ...], ...]:
    """What ssl.SSLSocket.getpeercert()["subject"] returns for ``cert``."""
    path = tmp_path / "cert.pem"
    path.write_bytes(pem(cert))
    decoded = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    return decoded["subject"]  # type: ignore[no-any-return]


def test_dn_like_java(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = name(
        (NameOID.COUNTRY_NAME, "US"),
        (NameOID.ORGANIZATION_NAME, "Example"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "eng"),
        (NameOID.COMMON_NAME, "alice"),
    )
    cert = make_cert(subject, key)
    expected = "CN=alice,OU=eng,O=Example,C=US"
    assert subject_dn_from_der(cert.public_bytes(serialization.Encoding.DER)) == expected
    assert subject_dn_from_peercert(peercert_subject(cert, tmp_path)) == expected


def test_dn_escaping_and_non_keyword_attributes(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = name(
        (NameOID.COUNTRY_NAME, "US"),
        (NameOID.ORGANIZATION_NAME, "Example, Inc."),
        (NameOID.LOCALITY_NAME, " Springfield"),
        (NameOID.STATE_OR_PROVINCE_NAME, "#1"),
        (NameOID.DOMAIN_COMPONENT, "com"),
        (NameOID.EMAIL_ADDRESS, "a@b.c"),
        (NameOID.COMMON_NAME, 'al+ice "x" <y>;'),
    )
    cert = make_cert(subject, key)
    # Java: X500Principal.getName() prints emailAddress as OID=#<DER hex> (IA5String).
    email = "1.2.840.113549.1.9.1=#1605" + b"a@b.c".hex()
    expected = (
        f'CN=al\\+ice \\"x\\" \\<y\\>\\;,{email},DC=com,ST=\\#1,L=\\ Springfield,'
        "O=Example\\, Inc.,C=US"
    )
    assert subject_dn_from_der(cert.public_bytes(serialization.Encoding.DER)) == expected
    assert subject_dn_from_peercert(peercert_subject(cert, tmp_path)) == expected


def test_peercert_multi_valued_rdn_and_unknown_attribute() -> None:
    # getpeercert() order: most significant RDN first; the DN reverses it.
    subject = ((("countryName", "US"),), (("commonName", "a"), ("userId", "u1")))
    assert subject_dn_from_peercert(subject) == "CN=a+UID=u1,C=US"
    with pytest.raises(ValueError, match="unknown"):
        subject_dn_from_peercert(((("favouriteColour", "blue"),),))


# --------------------------------------------------------------------------------------
# TLS contexts and an in-memory mTLS handshake


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name((NameOID.COMMON_NAME, "Test CA"))
    ca = make_cert(ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = make_cert(
        name((NameOID.COMMON_NAME, "gateway")), server_key, (ca_name, ca_key), san="gateway.test"
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = make_cert(
        name((NameOID.ORGANIZATION_NAME, "Example"), (NameOID.COMMON_NAME, "Alice")),
        client_key,
        (ca_name, ca_key),
    )
    files = {
        "ca": pem(ca),
        "server": pem(server),
        "server_key": key_pem(server_key),
        "server_key_encrypted": key_pem(server_key, b"pw"),
        "client": pem(client),
        "client_key": key_pem(client_key),
        "other_key": key_pem(ec.generate_private_key(ec.SECP256R1())),
    }
    paths = {}
    for label, data in files.items():
        paths[label] = directory / f"{label}.pem"
        paths[label].write_bytes(data)
    return paths


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a TLS handshake between two SSLObjects over memory BIOs (no sockets)."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server_obj = server.wrap_bio(s_in, s_out, server_side=True)
    client_obj = client.wrap_bio(c_in, c_out, server_hostname="gateway.test")
    done = {"server": False, "client": False}
    for _ in range(20):
        for label, obj in (("client", client_obj), ("server", server_obj)):
            if not done[label]:
                try:
                    obj.do_handshake()
                    done[label] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return server_obj, client_obj
    raise AssertionError("handshake did not finish")


def test_mtls_handshake_gives_the_mapped_principal(pki: dict[str, Path]) -> None:
    server_config = ServerTlsConfig(
        cert_file=str(pki["server"]),
        key_file=str(pki["server_key_encrypted"]),
        key_password="pw",  # type: ignore[arg-type]
        ca_file=str(pki["ca"]),
        client_auth="required",
        min_version="TLSv1.3",
        principal_mapping_rules="RULE:^CN=([^,]*),O=Example$/$1/L",
    )
    client_config = ClientTlsConfig(
        ca_file=str(pki["ca"]), cert_file=str(pki["client"]), key_file=str(pki["client_key"])
    )
    server_obj, client_obj = handshake(
        server_ssl_context(server_config), client_ssl_context(client_config)
    )
    assert server_obj.version() == "TLSv1.3"
    der = server_obj.getpeercert(binary_form=True)
    assert der is not None
    dn = subject_dn_from_der(der)
    assert dn == "CN=Alice,O=Example"
    peer = server_obj.getpeercert()
    assert peer is not None
    subject = cast(tuple[tuple[tuple[str, str], ...], ...], peer["subject"])
    assert subject_dn_from_peercert(subject) == dn
    assert str(tls_principal(dn, server_config.principal_mapping_rules)) == "User:alice"
    assert client_obj.getpeercert() is not None


def test_required_client_certificate(pki: dict[str, Path]) -> None:
    server_config = ServerTlsConfig(
        cert_file=str(pki["server"]),
        key_file=str(pki["server_key"]),
        ca_file=str(pki["ca"]),
        client_auth="required",
    )
    no_cert = ClientTlsConfig(ca_file=str(pki["ca"]))
    with pytest.raises(ssl.SSLError):
        handshake(server_ssl_context(server_config), client_ssl_context(no_cert))


def test_client_verifies_the_broker(pki: dict[str, Path]) -> None:
    server_config = ServerTlsConfig(cert_file=str(pki["server"]), key_file=str(pki["server_key"]))
    untrusted = ClientTlsConfig()  # system trust store: the test CA is not in it
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server_ssl_context(server_config), client_ssl_context(untrusted))
    context = client_ssl_context(ClientTlsConfig(ca_file=str(pki["ca"]), verify_hostname=False))
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_server_context_settings(pki: dict[str, Path]) -> None:
    config = ServerTlsConfig(
        cert_file=str(pki["server"]),
        key_file=str(pki["server_key"]),
        ciphers="ECDHE+AESGCM",
    )
    context = server_ssl_context(config)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
