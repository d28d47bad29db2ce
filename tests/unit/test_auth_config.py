"""Authentication and TLS configuration: defaults, validation, file paths, YAML line numbers."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm
from pydantic import ValidationError

from policies.auth.passwords import hash_password
from policies.auth.scram import derive_scram_credential
from policies.config import (
    AuthenticationConfig,
    GatewayConfig,
    ServerTlsConfig,
    UpstreamSaslConfig,
    load_users_file,
)
from policies.config_loader import ConfigError, ConfigProblem, load_config, parse_config

HASH = hash_password("pw", n=16, r=1, p=1)
SCRAM = str(derive_scram_credential("pw", "SCRAM-SHA-256"))
EXAMPLES = Path(__file__).parents[2] / "deploy" / "examples"


def gateway(
    listener: dict[str, Any] | None = None, upstream: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "virtual_clusters": [
            {
                "name": "local",
                "listener": {"bootstrap": "127.0.0.1:9092", **(listener or {})},
                "upstream": {"bootstrap_servers": ["127.0.0.1:19092"], **(upstream or {})},
            }
        ]
    }


def errors(data: dict[str, Any], base_dir: Path | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        GatewayConfig.model_validate(data, context={"base_dir": base_dir} if base_dir else None)
    out = []
    for error in info.value.errors():
        loc = ".".join(str(p) for p in error["loc"][3:])  # after virtual_clusters.0.<section>
        out.append((loc, error["msg"]))
    return out


def auth_errors(**auth: Any) -> list[tuple[str, str]]:
    return [
        (loc.removeprefix("authentication."), msg)
        for loc, msg in errors(gateway({"authentication": auth}))
    ]


def problems(
    text: str, base_dir: Path | None = None, env: dict[str, str] | None = None
) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        parse_config(dedent(text), "test.yaml", env=env or {}, base_dir=base_dir)
    return info.value.problems


# --------------------------------------------------------------------------------------
# defaults


def test_defaults_are_no_authentication_and_plaintext() -> None:
    config = GatewayConfig.model_validate(gateway())
    vc = config.virtual_clusters[0]
    assert vc.listener.tls is None and vc.upstream.tls is None and vc.upstream.sasl is None
    auth = vc.listener.authentication
    assert auth.mechanisms == [] and not auth.passthrough
    assert (
        auth.failed_authentication_delay_ms,
        auth.max_session_lifetime_ms,
        auth.max_token_bytes,
    ) == (
        100,
        None,
        102400,
    )
    assert auth.oauthbearer.issuers == [] and auth.plain_users() == {}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate_from_any_directory(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the file, not the cwd
    assert load_config(path, env={}).virtual_clusters


def test_example_oauthbearer_paths_are_absolute() -> None:
    config = load_config(EXAMPLES / "auth-oauthbearer.yaml", env={})
    (issuer,) = config.virtual_clusters[0].listener.authentication.oauthbearer.issuers
    assert issuer.jwks_file == str(EXAMPLES.absolute() / "dev-jwks.json")
    assert issuer.audience == ["kafka-gateway"] and issuer.algorithms == ["RS256"]


# --------------------------------------------------------------------------------------
# authentication


def test_valid_authentication() -> None:
    auth = AuthenticationConfig.model_validate(
        {
            "mechanisms": ["PLAIN", "SCRAM-SHA-256"],
            "users": {"alice": HASH},
            "scram_credentials": {"alice": [SCRAM]},
            "max_session_lifetime_ms": 60000,
        }
    )
    assert auth.plain_users() == {"alice": HASH}
    assert set(auth.scram_credentials_for("SCRAM-SHA-256")) == {"alice"}
    assert auth.scram_credentials_for("SCRAM-SHA-512") == {}


def test_plaintext_passwords_are_rejected() -> None:
    assert auth_errors(mechanisms=["PLAIN"], users={"alice": "alice-secret"}) == [
        (
            "users.alice",
            "not a password hash (expected 'scrypt$n=...,r=...,p=...$salt$hash'); "
            "store only hashes: run kafka-gateway hash-password",
        )
    ]


def test_plaintext_password_is_reported_at_its_line() -> None:
    (problem,) = problems(
        """\
        virtual_clusters:
          - name: local
            listener:
              bootstrap: 127.0.0.1:9092
              authentication:
                mechanisms: [PLAIN]
                users:
                  alice: alice-secret
            upstream:
              bootstrap_servers: [127.0.0.1:19092]
        """
    )
    assert (problem.path, problem.line, problem.column) == (
        "virtual_clusters[0].listener.authentication.users.alice",
        8,
        18,
    )
    assert "run kafka-gateway hash-password" in problem.message


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"mechanisms": ["PLAIN"]}, [("mechanisms", "PLAIN needs users or users_file")]),
        (
            {"mechanisms": ["SCRAM-SHA-512"], "scram_credentials": {"alice": [SCRAM]}},
            [
                (
                    "mechanisms",
                    "SCRAM-SHA-512 needs scram_credentials with a SCRAM-SHA-512 credential",
                )
            ],
        ),
        (
            {"mechanisms": ["OAUTHBEARER"]},
            [("mechanisms", "OAUTHBEARER needs oauthbearer.issuers")],
        ),
        (
            {"users": {"alice": HASH}},
            [("users", "users is only used by PLAIN: add PLAIN to mechanisms")],
        ),
        (
            {"scram_credentials": {"alice": [SCRAM]}},
            [
                (
                    "scram_credentials",
                    "scram_credentials are only used by SCRAM-SHA-256/512: add one to mechanisms",
                )
            ],
        ),
        (
            {"mechanisms": ["PLAIN", "PLAIN"], "users": {"a": HASH}},
            [("mechanisms.1", "PLAIN is listed twice")],
        ),
        (
            {"mechanisms": ["SCRAM-SHA-256"], "scram_credentials": {"alice": [SCRAM, SCRAM]}},
            [("scram_credentials.alice.1", "user 'alice' has two SCRAM-SHA-256 credentials")],
        ),
        (
            {"mechanisms": ["SCRAM-SHA-256"], "scram_credentials": {"alice": ["pencil"]}},
            [
                (
                    "scram_credentials.alice.0",
                    "expected 'SCRAM-SHA-256:iterations=...,salt=...,stored_key=...,"
                    "server_key=...' or SCRAM-SHA-512 (run: kafka-gateway scram-credential)",
                ),
                (
                    "mechanisms",
                    "SCRAM-SHA-256 needs scram_credentials with a SCRAM-SHA-256 credential",
                ),
            ],
        ),
        ({"mechanisms": ["GSSAPI"]}, None),
        ({"max_token_bytes": 10}, None),
        ({"failed_authentication_delay_ms": -1}, None),
        ({"max_session_lifetime_ms": 0}, None),
    ],
)
def test_authentication_checks(
    auth: dict[str, Any], expected: list[tuple[str, str]] | None
) -> None:
    found = auth_errors(**auth)
    if expected is None:
        assert found
    else:
        assert found == expected


def test_passthrough_checks() -> None:
    assert auth_errors(passthrough=True) == [
        ("mechanisms", "passthrough needs the mechanisms to relay")
    ]
    found = auth_errors(mechanisms=["PLAIN"], passthrough=True, users={"a": HASH})
    assert found == [
        ("users", "users is not used with passthrough: the broker checks the client's credentials")
    ]
    data = gateway(
        {"authentication": {"mechanisms": ["PLAIN"], "passthrough": True}},
        {"sasl": {"mechanism": "PLAIN", "username": "gw", "password": "pw"}},
    )
    assert [loc for loc, _ in errors(data)] == ["sasl"]
    assert GatewayConfig.model_validate(
        gateway({"authentication": {"mechanisms": ["PLAIN", "SCRAM-SHA-256"], "passthrough": True}})
    )


def test_users_file(tmp_path: Path) -> None:
    (tmp_path / "users.yaml").write_text(f"bob: '{HASH}'\ncarol: '{HASH}'\n")
    (tmp_path / "users.json").write_text(json.dumps({"dave": HASH}))
    auth = {"mechanisms": ["PLAIN"], "users": {"alice": HASH}, "users_file": "users.yaml"}
    config = GatewayConfig.model_validate(
        gateway({"authentication": auth}), context={"base_dir": tmp_path}
    )
    resolved = config.virtual_clusters[0].listener.authentication
    assert resolved.users_file == str(tmp_path / "users.yaml")
    assert set(resolved.plain_users()) == {"alice", "bob", "carol"}
    assert load_users_file(tmp_path / "users.json") == {"dave": HASH}

    (tmp_path / "bad.yaml").write_text("bob: hunter2\n")
    auth = {"mechanisms": ["PLAIN"], "users_file": "bad.yaml"}
    ((loc, message),) = errors(gateway({"authentication": auth}), tmp_path)
    assert loc == "authentication.users_file"
    assert "user 'bob': not a password hash" in message and "hunter2" not in message

    (tmp_path / "dup.yaml").write_text(f"alice: '{HASH}'\n")
    auth = {"mechanisms": ["PLAIN"], "users": {"alice": HASH}, "users_file": "dup.yaml"}
    assert errors(gateway({"authentication": auth}), tmp_path) == [
        ("authentication.users.alice", "user 'alice' is also in users_file")
    ]
    for content, message in (
        ("- a\n", "must be a mapping"),
        ("a: [1]\n", "must be a string"),
        ("a: [b\n", "not valid YAML"),
    ):
        (tmp_path / "x.yaml").write_text(content)
        with pytest.raises(ValueError, match=message):
            load_users_file(tmp_path / "x.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_users_file(tmp_path / "empty.yaml") == {}


def test_missing_file_names_the_resolved_path(tmp_path: Path) -> None:
    (problem,) = problems(
        """\
        virtual_clusters:
          - name: local
            listener:
              bootstrap: 127.0.0.1:9092
              authentication:
                mechanisms: [PLAIN]
                users_file: users.yaml
            upstream:
              bootstrap_servers: [127.0.0.1:19092]
        """,
        base_dir=tmp_path,
    )
    assert (problem.path, problem.line) == (
        "virtual_clusters[0].listener.authentication.users_file",
        7,
    )
    assert problem.message == (
        f"file not found: {tmp_path / 'users.yaml'} (relative paths resolve against the "
        "directory of the configuration file)"
    )


def test_load_config_resolves_against_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "conf"
    directory.mkdir()
    (directory / "users.yaml").write_text(f"bob: '{HASH}'\n")
    (directory / "gateway.yaml").write_text(
        dedent(
            """\
            virtual_clusters:
              - name: local
                listener:
                  bootstrap: 127.0.0.1:9092
                  authentication: {mechanisms: [PLAIN], users_file: users.yaml}
                upstream:
                  bootstrap_servers: [127.0.0.1:19092]
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/gateway.yaml", env={})
    assert config.virtual_clusters[0].listener.authentication.users_file == str(
        directory / "users.yaml"
    )


# --------------------------------------------------------------------------------------
# OAUTHBEARER


@pytest.fixture(scope="module")
def jwks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("jwks")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = dict(json.loads(RSAAlgorithm.to_jwk(key.public_key())), kid="k1")
    (directory / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (directory / "empty.json").write_text('{"keys": []}')
    return directory


def issuer_errors(jwks_dir: Path, **issuer: Any) -> list[tuple[str, str]]:
    issuer.setdefault("issuer", "https://issuer.example")
    issuer.setdefault("audience", "kafka-gateway")
    auth = {"mechanisms": ["OAUTHBEARER"], "oauthbearer": {"issuers": [issuer]}}
    try:
        GatewayConfig.model_validate(
            gateway({"authentication": auth}), context={"base_dir": jwks_dir}
        )
    except ValidationError:
        return [
            (loc.removeprefix("authentication.oauthbearer.issuers.0."), msg)
            for loc, msg in errors(gateway({"authentication": auth}), jwks_dir)
        ]
    return []


def test_oauthbearer_issuer_checks(jwks_dir: Path) -> None:
    assert issuer_errors(jwks_dir, jwks_file="jwks.json") == []
    assert issuer_errors(jwks_dir, jwks_url="https://idp.example/jwks") == []
    assert issuer_errors(jwks_dir, jwks_url="http://localhost:8080/jwks") == []
    assert issuer_errors(jwks_dir, jwks_url="http://idp.example/jwks") == [
        (
            "jwks_url",
            "invalid jwks_url 'http://idp.example/jwks': expected an https:// URL (http:// only "
            "for localhost)",
        )
    ]
    assert issuer_errors(jwks_dir) == [
        ("jwks_url", "set exactly one of jwks_url and jwks_file for RS256")
    ]
    assert issuer_errors(jwks_dir, jwks_file="jwks.json", jwks_url="https://x/jwks") == [
        ("jwks_url", "set exactly one of jwks_url and jwks_file for RS256")
    ]
    assert issuer_errors(jwks_dir, jwks_file="empty.json") == [
        ("jwks_file", "the JWKS has no usable signature key (the key list is empty)")
    ]
    assert issuer_errors(jwks_dir, jwks_file="jwks.json", algorithms=["ES256"]) == [
        ("jwks_file", "no key in the JWKS can verify ES256")
    ]
    assert issuer_errors(jwks_dir, jwks_file="jwks.json", algorithms=["none"])
    assert issuer_errors(jwks_dir, algorithms=["HS256"]) == [
        ("hmac_secret", "HS256 need hmac_secret")
    ]
    assert issuer_errors(jwks_dir, algorithms=["HS256"], hmac_secret="short") == [
        ("hmac_secret", "the HS256 secret must be at least 32 bytes, got 5")
    ]
    assert issuer_errors(jwks_dir, algorithms=["HS256"], hmac_secret="x" * 32) == []
    assert issuer_errors(
        jwks_dir, algorithms=["HS256"], hmac_secret="x" * 32, jwks_file="jwks.json"
    ) == [("jwks_file", "jwks_file is unused: no asymmetric algorithm is allowed")]
    assert issuer_errors(jwks_dir, jwks_file="jwks.json", hmac_secret="x" * 32) == [
        ("hmac_secret", "hmac_secret is unused: no HS* algorithm is allowed")
    ]
    assert issuer_errors(jwks_dir, jwks_file="jwks.json", audience=[])
    assert issuer_errors(jwks_dir, jwks_file="jwks.json", leeway_s=601)
    assert issuer_errors(jwks_dir, jwks_file="jwks.json", jwks_refresh_min_interval_s=0)


def test_duplicate_issuers(jwks_dir: Path) -> None:
    issuer = {"issuer": "https://i", "audience": "a", "jwks_file": "jwks.json"}
    auth = {"mechanisms": ["OAUTHBEARER"], "oauthbearer": {"issuers": [issuer, issuer]}}
    assert errors(gateway({"authentication": auth}), jwks_dir) == [
        (
            "authentication.oauthbearer.issuers.1.issuer",
            "duplicate issuer 'https://i' (already issuers[0])",
        )
    ]


def test_secrets_stay_out_of_reprs(jwks_dir: Path) -> None:
    issuer = {
        "issuer": "https://i",
        "audience": "a",
        "algorithms": ["HS256"],
        "hmac_secret": "h" * 32 + "SECRET",
    }
    sasl = {"mechanism": "SCRAM-SHA-256", "username": "gw", "password": "${GW_PASSWORD}"}
    text = dedent(
        f"""\
        virtual_clusters:
          - name: local
            listener:
              bootstrap: 127.0.0.1:9092
              authentication:
                mechanisms: [OAUTHBEARER]
                oauthbearer: {{issuers: [{json.dumps(issuer)}]}}
            upstream:
              bootstrap_servers: [127.0.0.1:19092]
              sasl: {json.dumps(sasl)}
        """
    )
    config = parse_config(text, env={"GW_PASSWORD": "pa55-from-env"})
    vc = config.virtual_clusters[0]
    assert vc.upstream.sasl is not None and vc.upstream.sasl.password is not None
    assert vc.upstream.sasl.password.get_secret_value() == "pa55-from-env"
    dumped = repr(config) + str(config) + repr(config.model_dump())
    assert "pa55-from-env" not in dumped and "SECRET" not in dumped


# --------------------------------------------------------------------------------------
# upstream SASL


@pytest.mark.parametrize(
    ("sasl", "expected"),
    [
        ({"mechanism": "PLAIN", "username": "gw", "password": "pw"}, []),
        ({"mechanism": "SCRAM-SHA-512", "username": "gw", "password": "pw"}, []),
        (
            {"mechanism": "PLAIN", "username": "gw"},
            [("sasl.password", "PLAIN needs password")],
        ),
        (
            {"mechanism": "PLAIN", "username": "gw", "password": "pw", "client_id": "x"},
            [("sasl.client_id", "client_id is not used by PLAIN")],
        ),
        (
            {
                "mechanism": "OAUTHBEARER",
                "token_endpoint_url": "https://idp.example/token",
                "client_id": "gw",
                "client_secret": "s",
                "scope": "kafka",
            },
            [],
        ),
        (
            {
                "mechanism": "OAUTHBEARER",
                "token_endpoint_url": "https://idp.example/token",
                "username": "u",
            },
            [
                ("sasl.client_id", "OAUTHBEARER needs client_id"),
                ("sasl.client_secret", "OAUTHBEARER needs client_secret"),
                ("sasl.username", "username is not used by OAUTHBEARER"),
            ],
        ),
        (
            {
                "mechanism": "OAUTHBEARER",
                "token_endpoint_url": "ftp://x",
                "client_id": "c",
                "client_secret": "s",
            },
            [
                (
                    "sasl.token_endpoint_url",
                    "invalid token_endpoint_url 'ftp://x': expected an https:// URL (http:// only "
                    "for localhost)",
                )
            ],
        ),
    ],
)
def test_upstream_sasl(sasl: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    data = gateway(upstream={"sasl": sasl})
    if expected:
        assert errors(data) == expected
    else:
        config = GatewayConfig.model_validate(data)
        assert isinstance(config.virtual_clusters[0].upstream.sasl, UpstreamSaslConfig)


# --------------------------------------------------------------------------------------
# TLS


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "cert.pem").write_bytes(cert.public_bytes(pem))
    (directory / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    other = ec.generate_private_key(ec.SECP256R1())
    (directory / "other-key.pem").write_bytes(
        other.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / "not-pem.txt").write_text("hello")
    return directory


def tls_errors(tls_dir: Path, **tls: Any) -> list[tuple[str, str]]:
    try:
        GatewayConfig.model_validate(gateway({"tls": tls}), context={"base_dir": tls_dir})
    except ValidationError:
        return errors(gateway({"tls": tls}), tls_dir)
    return []


def test_server_tls(tls_dir: Path) -> None:
    assert tls_errors(tls_dir, cert_file="cert.pem", key_file="key.pem") == []
    config = GatewayConfig.model_validate(
        gateway(
            {
                "tls": {
                    "cert_file": "cert.pem",
                    "key_file": "key.pem",
                    "ca_file": "cert.pem",
                    "client_auth": "required",
                    "min_version": "TLSv1.3",
                    "principal_mapping_rules": "RULE:^CN=(.*)$/$1/L,\nDEFAULT",
                }
            }
        ),
        context={"base_dir": tls_dir},
    )
    tls = config.virtual_clusters[0].listener.tls
    assert isinstance(tls, ServerTlsConfig)
    assert tls.cert_file == str(tls_dir / "cert.pem") and tls.client_auth == "required"


def test_server_tls_problems(tls_dir: Path) -> None:
    assert tls_errors(tls_dir, cert_file="missing.pem", key_file="key.pem") == [
        (
            "tls.cert_file",
            f"file not found: {tls_dir / 'missing.pem'} (relative paths resolve against the "
            "directory of the configuration file)",
        )
    ]
    assert tls_errors(tls_dir, cert_file=str(tls_dir), key_file="key.pem") == [
        ("tls.cert_file", f"file is not a file: {tls_dir}")
    ]
    ((loc, message),) = tls_errors(tls_dir, cert_file="cert.pem", key_file="other-key.pem")
    assert loc == "tls.cert_file" and message.startswith(
        "cannot use the TLS files: KEY_VALUES_MISMATCH"
    )
    ((loc, message),) = tls_errors(tls_dir, cert_file="not-pem.txt", key_file="key.pem")
    assert loc == "tls.cert_file" and message.startswith("cannot use the TLS files")
    assert tls_errors(
        tls_dir, cert_file="cert.pem", key_file="key.pem", client_auth="required"
    ) == [
        (
            "tls.ca_file",
            "ca_file is required with client_auth: required (the CA client certificates "
            "must chain to)",
        )
    ]
    assert tls_errors(tls_dir, cert_file="cert.pem", key_file="key.pem", ciphers="NOPE") == [
        ("tls.ciphers", "OpenSSL accepts no cipher from 'NOPE'")
    ]
    ((loc, message),) = tls_errors(
        tls_dir, cert_file="cert.pem", key_file="key.pem", principal_mapping_rules="RULE:x"
    )
    assert loc == "tls.principal_mapping_rules" and "invalid rule 'RULE:x'" in message
    assert tls_errors(tls_dir, cert_file="cert.pem", key_file="key.pem", min_version="TLSv1.1")
    assert tls_errors(tls_dir, cert_file="cert.pem", key_file="key.pem", client_auth="optional")


def test_upstream_tls(tls_dir: Path) -> None:
    def upstream_tls_errors(**tls: Any) -> list[tuple[str, str]]:
        data = gateway(upstream={"tls": tls})
        try:
            GatewayConfig.model_validate(data, context={"base_dir": tls_dir})
        except ValidationError:
            return errors(data, tls_dir)
        return []

    assert upstream_tls_errors() == []
    assert upstream_tls_errors(ca_file="cert.pem", server_hostname="kafka.internal") == []
    assert upstream_tls_errors(ca_file="cert.pem", cert_file="cert.pem", key_file="key.pem") == []
    assert upstream_tls_errors(cert_file="cert.pem") == [
        ("tls.key_file", "cert_file and key_file go together")
    ]
    ((loc, message),) = upstream_tls_errors(ca_file="not-pem.txt")
    assert loc == "tls.ca_file" and message.startswith("cannot use the TLS files")
    ((loc, _),) = upstream_tls_errors(cert_file="cert.pem", key_file="other-key.pem")
    assert loc == "tls.cert_file"


def test_unknown_tls_key_suggests_a_fix(tls_dir: Path) -> None:
    (problem,) = problems(
        """\
        virtual_clusters:
          - name: local
            listener:
              bootstrap: 127.0.0.1:9092
              tls: {cert_file: cert.pem, key_file: key.pem, client_auht: required}
            upstream:
              bootstrap_servers: [127.0.0.1:19092]
        """,
        base_dir=tls_dir,
    )
    assert problem.path == "virtual_clusters[0].listener.tls.client_auht"
    assert problem.message == "unknown key 'client_auht' (did you mean 'client_auth'?)"


# --------------------------------------------------------------------------------------
# principal namespaces of token issuers


def namespace_yaml(issuers: str, extra: str = "") -> str:
    return (
        dedent(
            """\
            virtual_clusters:
              - name: local
                upstream: {bootstrap_servers: ["127.0.0.1:19092"]}
                listener:
                  bootstrap: 127.0.0.1:9092
                  authentication:
                    mechanisms: [PLAIN, OAUTHBEARER]
                    users: {alice: "HASH"}
                    oauthbearer:
                      issuers:
            """
        ).replace("HASH", HASH)
        + issuers
        + extra
    )


def issuer_yaml(name: str, prefix: str | None) -> str:
    line = f"            principal_prefix: {prefix!r}\n" if prefix is not None else ""
    return (
        f"          - issuer: https://{name}.example\n"
        "            audience: kafka-gateway\n"
        "            jwks_file: jwks.json\n" + line
    )


def test_issuers_without_prefixes_share_a_namespace_and_are_refused(jwks_dir: Path) -> None:
    text = namespace_yaml(issuer_yaml("a", "a/") + issuer_yaml("b", None))
    (problem,) = problems(text, jwks_dir)
    path = "virtual_clusters[0].listener.authentication.oauthbearer.issuers[1].principal_prefix"
    assert problem.path == path
    assert problem.line == 15  # the second issuer's entry: its principal_prefix is missing
    assert problem.message.startswith(
        "issuers[0] and issuers[1] share one principal namespace (principal_prefix 'a/' and ''): "
        "either could mint the other's principals"
    )


def test_overlapping_prefixes_are_refused_at_the_prefix(jwks_dir: Path) -> None:
    text = namespace_yaml(issuer_yaml("a", "a/") + issuer_yaml("b", "a/b/"))
    (problem,) = problems(text, jwks_dir)
    assert problem.path.endswith("issuers[1].principal_prefix")
    assert (problem.line, problem.column) == (18, 31)


def test_an_issuer_that_could_mint_a_local_user_is_refused(jwks_dir: Path) -> None:
    (problem,) = problems(namespace_yaml(issuer_yaml("a", None)), jwks_dir)
    assert problem.path.endswith("oauthbearer.issuers[0].principal_prefix")
    assert problem.line == 11
    assert "could mint the principals of local users 'alice'" in problem.message
    text = namespace_yaml(issuer_yaml("a", "al"))
    (problem,) = problems(text, jwks_dir)
    assert problem.path.endswith("issuers[0].principal_prefix") and problem.line == 14


def test_own_prefixes_or_an_explicit_shared_namespace_are_accepted(jwks_dir: Path) -> None:
    own = namespace_yaml(issuer_yaml("a", "a/") + issuer_yaml("b", "b/"))
    config = parse_config(own, "test.yaml", env={}, base_dir=jwks_dir)
    issuers = config.virtual_clusters[0].listener.authentication.oauthbearer.issuers
    assert [i.principal_prefix for i in issuers] == ["a/", "b/"]
    shared = namespace_yaml(
        issuer_yaml("a", None) + issuer_yaml("b", None),
        "          shared_principal_namespace: true\n",
    )
    config = parse_config(shared, "test.yaml", env={}, base_dir=jwks_dir)
    assert config.virtual_clusters[0].listener.authentication.oauthbearer.shared_principal_namespace
