"""The gateway's typed configuration model (the root is :class:`GatewayConfig`).

The YAML file is validated against these pydantic models by
:mod:`policies.config_loader`, which maps every validation error back to a file,
line and column. Conventions, so later sections (authentication, TLS, ACLs,
quotas, routing, failover) slot in without a rewrite:

* every model derives from :class:`~policies.config_base.Section`: frozen, and
  ``extra="forbid"`` so a misspelt key is an error rather than silently ignored;
* every field has a ``description=``; the configuration reference (docs/) is
  generated from them by :mod:`policies.config_docs`;
* a feature gets its own small model, hung off the section it belongs to (e.g. a
  future ``ListenerConfig.authentication``), with a default that keeps today's
  behaviour, so existing files stay valid;
* checks that involve several fields or sections live in ``model_validator``\\ s and
  report each problem at the precise key (:func:`~policies.config_base.raise_problems`),
  so the loader can point at the right line.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from policies.acl.config import AuthorizationConfig
from policies.auth.jwks import InvalidJwks, parse_jwks
from policies.auth.passwords import InvalidPasswordHash, PasswordHash
from policies.auth.scram import InvalidScramCredential, ScramCredential
from policies.auth.tls import ClientTlsConfig, ServerTlsConfig
from policies.config_base import FilePath, Integer, Loc, Section, raise_problems
from policies.node_ids import MAX_NODE_ID, NodeIdMap, explicit_map_problem
from policies.quotas.config import QuotasConfig

__all__ = [
    "WILDCARD_HOSTS",
    "AuthenticationConfig",
    "ClientTlsConfig",
    "FilePath",
    "GatewayConfig",
    "HostPort",
    "Integer",
    "JwtAlgorithm",
    "ListenerConfig",
    "ListenerLimitsConfig",
    "LogConfig",
    "NodeId",
    "OAuthBearerConfig",
    "OAuthIssuerConfig",
    "Port",
    "SaslMechanismName",
    "ServerTlsConfig",
    "UpstreamConfig",
    "UpstreamSaslConfig",
    "VirtualClusterConfig",
    "load_users_file",
]

#: Listen addresses that mean "every interface"; they cannot be advertised to clients.
WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})

MIN_PORT: Final = 1
MAX_PORT: Final = 65535


#: A TCP port number.
Port = Annotated[Integer, Field(ge=MIN_PORT, le=MAX_PORT)]
#: A Kafka broker node id.
NodeId = Annotated[Integer, Field(ge=0)]
#: A Kafka broker node id that fits Kafka's INT32.
NodeIdInt32 = Annotated[Integer, Field(ge=0, le=MAX_NODE_ID)]

_HOSTNAME_RE: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
_CLUSTER_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]*")


def _is_hostname(host: str) -> bool:
    return _HOSTNAME_RE.fullmatch(host) is not None


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------
# host:port


@dataclass(frozen=True, slots=True)
class HostPort:
    """A TCP address: host name or IP address and a port.

    In the YAML file it is written ``"host:port"``: ``127.0.0.1:9092``,
    ``kafka-1:9092`` or, with brackets, ``"[::1]:9092"`` (quote IPv6 addresses: an
    unquoted ``[`` starts a YAML list). An empty host (``":9092"``) means every
    interface, like ``0.0.0.0`` or ``[::]``.
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        if not MIN_PORT <= self.port <= MAX_PORT:
            raise ValueError(f"invalid port {self.port} (expected {MIN_PORT}..{MAX_PORT})")

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """Parse ``"host:port"`` / ``"[v6-address]:port"``; ``ValueError`` says what is wrong."""
        text = text.strip()
        if text.startswith("["):
            close = text.find("]")
            if close < 0:
                raise ValueError(f"invalid address {text!r}: missing ']' after the IPv6 address")
            host, rest = text[1:close], text[close + 1 :]
            if not rest.startswith(":"):
                raise ValueError(f"invalid address {text!r}: expected '[address]:port'")
            port_text = rest[1:]
            if not _is_ipv6(host):
                raise ValueError(f"invalid IPv6 address {host!r} in {text!r}")
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                raise ValueError(f"invalid address {text!r}: expected 'host:port'")
            if ":" in host:
                raise ValueError(
                    f"invalid address {text!r}: write IPv6 addresses in brackets, e.g. '[::1]:9092'"
                )
            if host and not _is_hostname(host):
                raise ValueError(f"invalid host {host!r} in {text!r}")
        if not port_text.isdigit() or not MIN_PORT <= int(port_text) <= MAX_PORT:
            raise ValueError(f"invalid port {port_text!r} (expected {MIN_PORT}..{MAX_PORT})")
        return cls(host=host, port=int(port_text))

    @property
    def is_wildcard(self) -> bool:
        """True for ``0.0.0.0``, ``::`` and the empty host: listen on every interface."""
        return self.host in WILDCARD_HOSTS

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    # --- pydantic integration: validated from / serialised to the "host:port" string ----

    @classmethod
    def _validate(cls, value: Any) -> HostPort:
        if isinstance(value, HostPort):
            return value
        if isinstance(value, str):
            try:
                return cls.parse(value)
            except ValueError as exc:
                raise PydanticCustomError("host_port", str(exc)) from None
        hint = ' (quote IPv6 addresses: "[::1]:9092")' if isinstance(value, list) else ""
        got = "a list" if isinstance(value, list) else repr(value)
        message = f"expected a 'host:port' string, got {got}{hint}"
        raise PydanticCustomError("host_port_type", message)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.to_string_ser_schema(),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "host:port", "examples": ["127.0.0.1:9092"]}


# --------------------------------------------------------------------------------------
# sections


class LogConfig(Section):
    """Logging of the gateway process."""

    format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description=(
            "Log output format: `json` (one JSON object per line, for log pipelines), "
            "`console` (human-readable) or `auto` (console on a terminal, JSON otherwise)."
        ),
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Minimum level of the events that are logged."
    )


# --------------------------------------------------------------------------------------
# files referenced by the configuration


def load_users_file(path: str | Path) -> dict[str, str]:
    """Read a PLAIN ``users_file``: a YAML (or JSON) mapping of user name to password hash.

    Raises ``ValueError`` with a message naming the file and the problem; every
    hash is checked (the runtime can call this again to reload the file).
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read users_file {path}: {exc}") from None
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise ValueError(f"users_file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"users_file {path} must be a mapping of user name to password hash")
    users: dict[str, str] = {}
    for user, stored in data.items():
        if not isinstance(user, str) or not user:
            raise ValueError(f"users_file {path}: user names must be non-empty strings")
        if not isinstance(stored, str):
            raise ValueError(f"users_file {path}: the hash of user {user!r} must be a string")
        try:
            PasswordHash.parse(stored)
        except InvalidPasswordHash as exc:
            raise ValueError(f"users_file {path}: user {user!r}: {exc}") from None
        users[user] = stored
    return users


def _check_http_url(url: str, what: str) -> str:
    """``https://`` URLs, or ``http://`` to a loopback address (local development)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and host in {"localhost", "127.0.0.1", "::1"}:
        return url
    raise PydanticCustomError(
        "url",
        f"invalid {what} {url!r}: expected an https:// URL (http:// only for localhost)",
    )


# --------------------------------------------------------------------------------------
# authentication

SaslMechanismName = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
JwtAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512",
]  # fmt: skip

_HMAC_MIN_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}


def _default_algorithms() -> list[JwtAlgorithm]:
    return ["RS256"]


def _one_or_more(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class OAuthIssuerConfig(Section):
    """One identity provider whose JWTs the listener accepts (OAUTHBEARER)."""

    issuer: str = Field(
        min_length=1,
        description="The `iss` claim of the issuer's tokens, compared exactly (e.g. `https://issuer.example`).",
    )
    audience: Annotated[list[str], BeforeValidator(_one_or_more)] = Field(
        min_length=1,
        description=("Accepted `aud` values (a string or a list); a token must name at least one."),
    )
    algorithms: list[JwtAlgorithm] = Field(
        default_factory=_default_algorithms,
        min_length=1,
        description=(
            "Signature algorithms accepted from this issuer. `none` is never accepted; "
            "`HS256`/`HS384`/`HS512` only with `hmac_secret`, and JWKS keys only verify "
            "the asymmetric algorithms of their own key type."
        ),
    )
    jwks_url: str | None = Field(
        default=None,
        description=(
            "HTTPS URL of the issuer's JWKS (`http://` only for localhost). Fetched at start, "
            "every `jwks_refresh_interval_s`, and when a token names an unknown `kid`."
        ),
    )
    jwks_file: FilePath | None = Field(
        default=None,
        description=(
            "JWKS file instead of `jwks_url` (relative paths resolve against the "
            "configuration file's directory)."
        ),
    )
    hmac_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Shared secret for `HS*` algorithms (at least 32/48/64 bytes for "
            "HS256/384/512; use `${ENV}`). Only set it if the issuer really signs with a "
            "shared secret."
        ),
    )
    principal_claim: str = Field(
        default="sub", min_length=1, description="The claim that names the principal."
    )
    principal_prefix: str = Field(
        default="",
        pattern=r"^[^\s*]*$",
        description=(
            "Qualifies every name this issuer asserts: its principals are "
            "`User:<principal_prefix><claim>` (e.g. `idp-a/` makes `sub: admin` "
            "`User:idp-a/admin`), and `Claim:` ACL rules compare this issuer's claim "
            "values with the prefix in front (`Claim:groups=idp-a/admins`). A listener "
            "refuses issuers (and local PLAIN/SCRAM users) whose names could collide, "
            "unless `oauthbearer.shared_principal_namespace` is true."
        ),
    )
    required_claims: list[str] = Field(
        default_factory=list,
        description="Claims every token must carry (in addition to `exp` and `aud`).",
    )
    leeway_s: Integer = Field(
        default=30,
        ge=0,
        le=600,
        description="Clock skew allowed when checking `exp`, `nbf` and `iat`, in seconds.",
    )
    jwks_refresh_min_interval_s: Integer = Field(
        default=30,
        ge=1,
        description=(
            "Least time between two JWKS fetches, so tokens with made-up `kid`s cannot "
            "make the gateway hammer the issuer."
        ),
    )
    jwks_refresh_interval_s: Integer = Field(
        default=3600,
        ge=60,
        description="How often the JWKS is fetched again (drops revoked keys).",
    )

    @field_validator("jwks_url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        return None if url is None else _check_http_url(url, "jwks_url")

    @model_validator(mode="after")
    def _check_keys(self) -> Self:
        problems: list[tuple[Loc, str, str, Any]] = []
        asymmetric = [a for a in self.algorithms if not a.startswith("HS")]
        hmac_algs = [a for a in self.algorithms if a.startswith("HS")]
        if asymmetric and (self.jwks_url is None) == (self.jwks_file is None):
            problems.append(
                (
                    ("jwks_url",),
                    "jwks",
                    f"set exactly one of jwks_url and jwks_file for {', '.join(asymmetric)}",
                    self.jwks_url,
                )
            )
        if not asymmetric and (self.jwks_url or self.jwks_file):
            key = "jwks_url" if self.jwks_url else "jwks_file"
            problems.append(
                ((key,), "jwks", f"{key} is unused: no asymmetric algorithm is allowed", None)
            )
        if hmac_algs and self.hmac_secret is None:
            problems.append(
                (("hmac_secret",), "missing", f"{', '.join(hmac_algs)} need hmac_secret", None)
            )
        if self.hmac_secret is not None:
            size = len(self.hmac_secret.get_secret_value().encode())
            if not hmac_algs:
                problems.append(
                    (
                        ("hmac_secret",),
                        "hmac_secret",
                        "hmac_secret is unused: no HS* algorithm is allowed",
                        None,
                    )
                )
            for alg in hmac_algs:
                if size < _HMAC_MIN_BYTES[alg]:
                    problems.append(
                        (
                            ("hmac_secret",),
                            "hmac_secret",
                            f"the {alg} secret must be at least {_HMAC_MIN_BYTES[alg]} bytes, "
                            f"got {size}",
                            None,
                        )
                    )
        if asymmetric and self.jwks_file is not None:
            try:
                keys, _ = parse_jwks(Path(self.jwks_file).read_bytes())
            except (InvalidJwks, OSError) as exc:
                problems.append((("jwks_file",), "jwks", str(exc), self.jwks_file))
            else:
                if not any(key.supports(alg) for key in keys for alg in asymmetric):
                    problems.append(
                        (
                            ("jwks_file",),
                            "jwks",
                            f"no key in the JWKS can verify {', '.join(asymmetric)}",
                            self.jwks_file,
                        )
                    )
        raise_problems(type(self).__name__, problems)
        return self


class OAuthBearerConfig(Section):
    """OAUTHBEARER (JWT) validation on a listener."""

    issuers: list[OAuthIssuerConfig] = Field(
        default_factory=list,
        description="Trusted token issuers; a token's `iss` selects one. Required for OAUTHBEARER.",
    )
    shared_principal_namespace: bool = Field(
        default=False,
        description=(
            "Allow issuers, and issuers and the listener's PLAIN/SCRAM users, to assert the "
            "same principal names (one issuer's `sub: admin` is then everyone's "
            "`User:admin`). Off by default: give each issuer its own `principal_prefix`."
        ),
    )

    @model_validator(mode="after")
    def _check_namespaces(self) -> Self:
        """Two issuers whose prefixes overlap could each mint the other's principals."""
        if self.shared_principal_namespace:
            return self
        problems: list[tuple[Loc, str, str, Any]] = []
        for j, later in enumerate(self.issuers):
            for i, earlier in enumerate(self.issuers[:j]):
                if earlier.issuer == later.issuer:
                    continue  # reported as a duplicate issuer
                a, b = earlier.principal_prefix, later.principal_prefix
                if a.startswith(b) or b.startswith(a):
                    problems.append(
                        (
                            ("issuers", j, "principal_prefix"),
                            "principal_namespace",
                            f"issuers[{i}] and issuers[{j}] share one principal namespace "
                            f"(principal_prefix {a!r} and {b!r}): either could mint the "
                            "other's principals; give each issuer its own principal_prefix "
                            "(neither a prefix of the other), or set "
                            "shared_principal_namespace: true",
                            b,
                        )
                    )
                    break
        raise_problems(type(self).__name__, problems)
        return self

    @model_validator(mode="after")
    def _check_unique(self) -> Self:
        seen: dict[str, int] = {}
        problems: list[tuple[Loc, str, str, Any]] = []
        for i, issuer in enumerate(self.issuers):
            if issuer.issuer in seen:
                problems.append(
                    (
                        ("issuers", i, "issuer"),
                        "duplicate_issuer",
                        f"duplicate issuer {issuer.issuer!r} "
                        f"(already issuers[{seen[issuer.issuer]}])",
                        issuer.issuer,
                    )
                )
            seen.setdefault(issuer.issuer, i)
        raise_problems(type(self).__name__, problems)
        return self


class AuthenticationConfig(Section):
    """How clients authenticate on a listener. The default (no mechanisms) is anonymous."""

    mechanisms: list[SaslMechanismName] = Field(
        default_factory=list,
        description=(
            "SASL mechanisms clients must use, offered in SaslHandshake: `PLAIN`, "
            "`SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER`. Empty: no SASL; the principal "
            "is `User:ANONYMOUS`, or comes from the client certificate with `tls.client_auth`."
        ),
    )
    users: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "PLAIN users: `name: password hash`. Only salted hashes are stored; create one "
            "with `kafka-gateway hash-password`."
        ),
    )
    users_file: FilePath | None = Field(
        default=None,
        description=(
            "YAML or JSON file with more PLAIN users (`name: password hash`), e.g. kept "
            "out of the main file. Relative to the configuration file's directory."
        ),
    )
    scram_credentials: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "SCRAM users: `name: [credential, ...]`, at most one per mechanism, each "
            "`SCRAM-SHA-256:iterations=4096,salt=...,stored_key=...,server_key=...` as "
            "printed by `kafka-gateway scram-credential` (never the password)."
        ),
    )
    oauthbearer: OAuthBearerConfig = Field(
        default_factory=OAuthBearerConfig, description="JWT validation for OAUTHBEARER."
    )
    failed_authentication_delay_ms: Integer = Field(
        default=100,
        ge=0,
        le=60000,
        description=(
            "How long a connection stays open after its failed authentication was answered, "
            "before it is closed (like Kafka's `connection.failed.authentication.delay.ms`)."
        ),
    )
    max_session_lifetime_ms: Integer | None = Field(
        default=None,
        gt=0,
        description=(
            "Longest a SASL authentication stays valid (KIP-368, like Kafka's "
            "`connections.max.reauth.ms`); clients re-authenticate before it ends. "
            "OAUTHBEARER sessions also end when the token expires. Default: no limit "
            "(except the token's expiry)."
        ),
    )
    max_token_bytes: Integer = Field(
        default=100 * 1024,
        ge=256,
        le=16 * 1024 * 1024,
        description="Largest SASL token accepted; a larger one closes the connection.",
    )
    passthrough: bool = Field(
        default=False,
        description=(
            "Relay the client's SASL exchange to the broker unchanged: the broker checks "
            "the credentials, the gateway only learns the principal name. `mechanisms` "
            "lists what is relayed; no gateway-side credentials and no `upstream.sasl`."
        ),
    )

    _file_users: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_credentials(self) -> Self:
        problems: list[tuple[Loc, str, str, Any]] = []
        seen_mechanisms: set[str] = set()
        for i, mechanism in enumerate(self.mechanisms):
            if mechanism in seen_mechanisms:
                problems.append(
                    (("mechanisms", i), "duplicate", f"{mechanism} is listed twice", mechanism)
                )
            seen_mechanisms.add(mechanism)

        for user, stored in self.users.items():
            if not user:
                problems.append((("users",), "user", "user names must not be empty", user))
            try:
                PasswordHash.parse(stored)
            except InvalidPasswordHash as exc:
                problems.append((("users", user), "password_hash", str(exc), None))
        if self.users_file is not None:
            try:
                file_users = load_users_file(self.users_file)
            except ValueError as exc:
                problems.append((("users_file",), "users_file", str(exc), self.users_file))
            else:
                for user in file_users.keys() & self.users.keys():
                    problems.append(
                        (
                            ("users", user),
                            "duplicate_user",
                            f"user {user!r} is also in users_file",
                            None,
                        )
                    )
                self._file_users = file_users

        scram_mechanisms: set[str] = set()
        for user, texts in self.scram_credentials.items():
            mine: set[str] = set()
            for i, text in enumerate(texts):
                try:
                    credential = ScramCredential.parse(text)
                except InvalidScramCredential as exc:
                    problems.append(
                        (("scram_credentials", user, i), "scram_credential", str(exc), None)
                    )
                    continue
                if credential.mechanism in mine:
                    problems.append(
                        (
                            ("scram_credentials", user, i),
                            "duplicate",
                            f"user {user!r} has two {credential.mechanism} credentials",
                            None,
                        )
                    )
                mine.add(credential.mechanism)
                scram_mechanisms.add(credential.mechanism)

        if self.passthrough:
            if not self.mechanisms:
                problems.append(
                    (
                        ("mechanisms",),
                        "passthrough",
                        "passthrough needs the mechanisms to relay",
                        [],
                    )
                )
            for key, present in (
                ("users", bool(self.users)),
                ("users_file", self.users_file is not None),
                ("scram_credentials", bool(self.scram_credentials)),
                ("oauthbearer", bool(self.oauthbearer.issuers)),
            ):
                if present:
                    problems.append(
                        (
                            (key,),
                            "passthrough",
                            f"{key} is not used with passthrough: the broker checks the "
                            "client's credentials",
                            None,
                        )
                    )
        else:
            enabled = set(self.mechanisms)
            if "PLAIN" in enabled and not (self.users or self.users_file):
                problems.append(
                    (("mechanisms",), "credentials", "PLAIN needs users or users_file", None)
                )
            if "PLAIN" not in enabled and (self.users or self.users_file):
                key = "users" if self.users else "users_file"
                problems.append(
                    (
                        (key,),
                        "credentials",
                        f"{key} is only used by PLAIN: add PLAIN to mechanisms",
                        None,
                    )
                )
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                if mechanism in enabled and mechanism not in scram_mechanisms:
                    problems.append(
                        (
                            ("mechanisms",),
                            "credentials",
                            f"{mechanism} needs scram_credentials with a {mechanism} credential",
                            None,
                        )
                    )
            if self.scram_credentials and not enabled & {"SCRAM-SHA-256", "SCRAM-SHA-512"}:
                problems.append(
                    (
                        ("scram_credentials",),
                        "credentials",
                        "scram_credentials are only used by SCRAM-SHA-256/512: add one to "
                        "mechanisms",
                        None,
                    )
                )
            if "OAUTHBEARER" in enabled and not self.oauthbearer.issuers:
                problems.append(
                    (("mechanisms",), "credentials", "OAUTHBEARER needs oauthbearer.issuers", None)
                )
            if "OAUTHBEARER" not in enabled and self.oauthbearer.issuers:
                problems.append(
                    (
                        ("oauthbearer",),
                        "credentials",
                        "oauthbearer is only used by OAUTHBEARER: add it to mechanisms",
                        None,
                    )
                )
        raise_problems(type(self).__name__, problems)
        return self

    def plain_users(self) -> dict[str, str]:
        """Every PLAIN user and password hash: ``users`` plus those of ``users_file``."""
        return {**self._file_users, **self.users}

    def scram_credentials_for(self, mechanism: str) -> dict[str, ScramCredential]:
        """The parsed SCRAM credentials of ``mechanism``, by user."""
        found: dict[str, ScramCredential] = {}
        for user, texts in self.scram_credentials.items():
            for text in texts:
                credential = ScramCredential.parse(text)
                if credential.mechanism == mechanism:
                    found[user] = credential
        return found

    @model_validator(mode="after")
    def _check_issuer_namespaces(self) -> Self:
        """An issuer must not be able to mint the principal of a local PLAIN/SCRAM user."""
        if "OAUTHBEARER" not in self.mechanisms or self.oauthbearer.shared_principal_namespace:
            return self
        local = sorted({*self.users, *self._file_users, *self.scram_credentials})
        problems: list[tuple[Loc, str, str, Any]] = []
        for i, issuer in enumerate(self.oauthbearer.issuers):
            prefix = issuer.principal_prefix
            clashes = [user for user in local if user.startswith(prefix)]
            if clashes:
                shown = ", ".join(repr(u) for u in clashes[:3]) + (", ..." if clashes[3:] else "")
                problems.append(
                    (
                        ("oauthbearer", "issuers", i, "principal_prefix"),
                        "principal_namespace",
                        f"issuer {issuer.issuer!r} (principal_prefix {prefix!r}) could mint "
                        f"the principals of local users {shown}; give the issuer a "
                        "principal_prefix no local user name starts with, or set "
                        "oauthbearer.shared_principal_namespace: true",
                        prefix,
                    )
                )
        raise_problems(type(self).__name__, problems)
        return self


class UpstreamSaslConfig(Section):
    """The gateway's own SASL credentials towards the brokers."""

    mechanism: SaslMechanismName = Field(
        description="`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`."
    )
    username: str | None = Field(default=None, description="User name (PLAIN, SCRAM).")
    password: SecretStr | None = Field(
        default=None,
        description="Password (PLAIN, SCRAM); use `${ENV}` to keep it out of the file.",
    )
    token_endpoint_url: str | None = Field(
        default=None,
        description=(
            "OAUTHBEARER: the OAuth 2.0 token endpoint the gateway gets its tokens from "
            "(client-credentials grant), renewed before they expire."
        ),
    )
    client_id: str | None = Field(default=None, description="OAUTHBEARER: the OAuth client id.")
    client_secret: SecretStr | None = Field(
        default=None, description="OAUTHBEARER: the OAuth client secret (use `${ENV}`)."
    )
    scope: str | None = Field(
        default=None, description="OAUTHBEARER: the scope to request, if the endpoint needs one."
    )

    @field_validator("token_endpoint_url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        return None if url is None else _check_http_url(url, "token_endpoint_url")

    @model_validator(mode="after")
    def _check_fields(self) -> Self:
        problems: list[tuple[Loc, str, str, Any]] = []
        oauth = ("token_endpoint_url", "client_id", "client_secret", "scope")
        password = ("username", "password")
        required: tuple[str, ...] = password
        forbidden: tuple[str, ...] = oauth
        if self.mechanism == "OAUTHBEARER":
            required, forbidden = oauth[:3], password
        for key in required:
            if getattr(self, key) is None:
                problems.append(((key,), "missing", f"{self.mechanism} needs {key}", None))
        for key in forbidden:
            if getattr(self, key) is not None:
                problems.append(((key,), "unused", f"{key} is not used by {self.mechanism}", None))
        raise_problems(type(self).__name__, problems)
        return self


class ListenerLimitsConfig(Section):
    """Limits that keep unauthenticated and idle connections cheap for the gateway.

    A connection is *unauthenticated* until its SASL login completes (on a listener
    without SASL: until its first request arrives). Until then it holds no upstream
    connection and is counted against the unauthenticated caps as well as the totals.
    Counts are per virtual cluster and per gateway process (each `--workers` process
    counts its own). Refusals log `connection_refused`, timeouts `connection_closed`
    with the reason.
    """

    max_connections: Integer = Field(
        default=5000,
        ge=1,
        description=(
            "Open client connections on this listener (bootstrap and broker ports "
            "together); the next one is refused. Each logged-in connection also holds an "
            "upstream connection, so this bounds the gateway's open files at about twice it."
        ),
    )
    max_connections_per_ip: Integer = Field(
        default=1000,
        ge=1,
        description=(
            "Open client connections per client IP address (like Kafka's "
            "`max.connections.per.ip`, which Kafka leaves unlimited). A NAT or load balancer "
            "in front of many clients may need more."
        ),
    )
    max_unauthenticated_connections: Integer = Field(
        default=1000,
        ge=1,
        description=(
            "Connections that have not logged in yet, in total: a flood of silent "
            "connections cannot crowd out clients that log in."
        ),
    )
    max_unauthenticated_connections_per_ip: Integer = Field(
        default=100,
        ge=1,
        description="Connections that have not logged in yet, per client IP address.",
    )
    authentication_timeout_ms: Integer = Field(
        default=10000,
        ge=100,
        le=600000,
        description=(
            "Time from accepting a connection to its completed SASL login (the broker's "
            "final answer in passthrough mode), or to its first request on a listener "
            "without SASL; then the connection is closed. Real logins take milliseconds; "
            "the default leaves room for a TLS handshake, a slow JWKS fetch and a queue of "
            "password hashing under load, while a silent connection costs little for long."
        ),
    )
    connections_max_idle_ms: Integer = Field(
        default=600000,
        ge=100,
        description=(
            "A logged-in connection with no bytes in either direction and no request in "
            "flight for this long is closed (like Kafka's `connections.max.idle.ms`)."
        ),
    )
    max_concurrent_logins_per_ip: Integer = Field(
        default=2,
        ge=1,
        description=(
            "PLAIN and SCRAM logins from one client IP address hashing passwords at the same "
            "time; further ones wait (until their authentication deadline). All logins of "
            "the process share one hashing slot per CPU, taken in arrival order."
        ),
    )


class ListenerConfig(Section):
    """Where the gateway accepts client connections for one virtual cluster.

    Clients connect to ``bootstrap`` first. The metadata the gateway returns
    rewrites every upstream broker to ``advertised():broker_port(node_id)``, and the
    gateway listens on those ports too, so every broker connection goes through it.
    """

    bootstrap: HostPort = Field(
        description=(
            "Address (`host:port`) the gateway listens on for clients' first connection, "
            'e.g. `127.0.0.1:9092`. Use `0.0.0.0:9092` (or `"[::]:9092"`) to listen on '
            "every interface; broker ports are bound on the same host."
        ),
    )
    advertised_host: str | None = Field(
        default=None,
        description=(
            "Host name or IP address clients are told to connect to for broker ports. "
            "Defaults to the bootstrap host; required when that is a wildcard "
            "(`0.0.0.0`, `::` or empty)."
        ),
    )
    broker_port_base: Port | None = Field(
        default=None,
        description=(
            "Broker node N (the id clients see, after `node_ids`) is served on port "
            "`broker_port_base + N`. Defaults to the bootstrap port + 1."
        ),
    )
    broker_ports: dict[NodeId, Port] = Field(
        default_factory=dict,
        description=(
            "Explicit `node id: port` overrides of the computed broker ports (virtual "
            "node ids, as clients see them). Ports must be distinct and differ from the "
            "bootstrap port."
        ),
    )
    tls: ServerTlsConfig | None = Field(
        default=None,
        description="TLS on the bootstrap and broker ports. Default: plaintext.",
    )
    authentication: AuthenticationConfig = Field(
        default_factory=AuthenticationConfig,
        description="How clients authenticate. Default: no authentication (`User:ANONYMOUS`).",
    )
    limits: ListenerLimitsConfig = Field(
        default_factory=ListenerLimitsConfig,
        description=(
            "Connection caps, the authentication deadline and idle timeouts. On by default."
        ),
    )

    @field_validator("advertised_host")
    @classmethod
    def _check_advertised_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value in WILDCARD_HOSTS:
            raise PydanticCustomError(
                "advertised_host",
                f"{value!r} cannot be advertised: clients need an address they can connect to",
            )
        if not (_is_hostname(value) or _is_ipv6(value)):
            raise PydanticCustomError("advertised_host", f"invalid host name {value!r}")
        return value

    @model_validator(mode="after")
    def _check_ports(self) -> Self:
        problems: list[tuple[Loc, str, str, Any]] = []
        if self.advertised_host is None and self.bootstrap.is_wildcard:
            problems.append(
                (
                    ("advertised_host",),
                    "advertised_host_required",
                    f"advertised_host is required when the bootstrap host is a wildcard "
                    f"({str(self.bootstrap)!r}): clients must be told an address they can "
                    f"connect to",
                    None,
                )
            )
        seen: dict[int, int] = {}
        for node_id, port in self.broker_ports.items():
            if port == self.bootstrap.port:
                problems.append(
                    (
                        ("broker_ports", node_id),
                        "port_collision",
                        f"port {port} of node {node_id} is the bootstrap port",
                        port,
                    )
                )
            elif port in seen:
                problems.append(
                    (
                        ("broker_ports", node_id),
                        "port_collision",
                        f"port {port} of node {node_id} is already used by node {seen[port]}",
                        port,
                    )
                )
            else:
                seen[port] = node_id
        raise_problems(type(self).__name__, problems)
        return self

    def advertised(self) -> str:
        """The host clients are told to connect to for broker ports."""
        return self.advertised_host if self.advertised_host is not None else self.bootstrap.host

    @property
    def effective_broker_port_base(self) -> int:
        """``broker_port_base``, or the bootstrap port + 1 when unset."""
        if self.broker_port_base is not None:
            return self.broker_port_base
        return self.bootstrap.port + 1

    def broker_port(self, node_id: int) -> int:
        """The gateway port that serves broker ``node_id`` (a virtual id, as clients see it).

        Raises ``ValueError`` if the computed port falls outside 1..65535 (a node id
        too large for ``broker_port_base``); add an explicit ``broker_ports`` entry.
        """
        explicit = self.broker_ports.get(node_id)
        if explicit is not None:
            return explicit
        port = self.effective_broker_port_base + node_id
        if not MIN_PORT <= port <= MAX_PORT:
            raise ValueError(
                f"broker node {node_id} maps to port {port}, outside {MIN_PORT}..{MAX_PORT}; "
                f"set listener.broker_ports[{node_id}]"
            )
        return port

    def bound_addresses(self) -> list[tuple[Loc, HostPort]]:
        """Addresses known from the configuration alone (bootstrap and explicit broker ports)."""
        host = self.bootstrap.host
        addresses: list[tuple[Loc, HostPort]] = [(("bootstrap",), self.bootstrap)]
        for node_id, port in self.broker_ports.items():
            addresses.append((("broker_ports", node_id), HostPort(host=host, port=port)))
        return addresses


class UpstreamConfig(Section):
    """The real Kafka cluster behind a virtual cluster."""

    bootstrap_servers: list[HostPort] = Field(
        min_length=1,
        description=(
            "Addresses (`host:port`) of upstream Kafka brokers used to discover the "
            "cluster; tried in turn until one answers."
        ),
    )
    connect_timeout_ms: Integer = Field(
        default=5000, gt=0, description="Timeout for opening a TCP connection to a broker."
    )
    request_timeout_ms: Integer = Field(
        default=30000,
        gt=0,
        description="How long the gateway waits for answers to its own (metadata) requests.",
    )
    metadata_refresh_interval_ms: Integer = Field(
        default=30000,
        gt=0,
        description="How often the gateway refreshes its view of the upstream brokers.",
    )
    tls: ClientTlsConfig | None = Field(
        default=None, description="TLS to the brokers. Default: plaintext."
    )
    sasl: UpstreamSaslConfig | None = Field(
        default=None,
        description=(
            "The gateway's own SASL credentials towards the brokers; clients' credentials "
            "are never forwarded. Default: none (or the client's, with "
            "`listener.authentication.passthrough`)."
        ),
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_hosts(cls, servers: list[HostPort]) -> list[HostPort]:
        raise_problems(
            cls.__name__,
            [
                ((i,), "host_port", f"{str(server)!r} needs a host to connect to", str(server))
                for i, server in enumerate(servers)
                if server.is_wildcard
            ],
        )
        return servers


class NodeIdsConfig(Section):
    """The broker node ids clients see (virtual node ids), computed from this file alone.

    Upstream node ``u`` is shown as ``map[u]`` if listed, else as ``u + offset``;
    broker ports follow the virtual id (``broker_port_base + virtual id``). Every
    ``map`` value must be below ``offset``, so a broker added later (``u + offset``)
    can never take an id of the map. ``node_ids: identity`` (the default) shows the
    upstream ids unchanged and costs nothing.
    """

    offset: NodeIdInt32 = Field(
        default=0,
        description=(
            "Added to every upstream node id not in `map`: with 100, brokers 1, 2, 3 are "
            "shown as 101, 102, 103, and a broker 4 added later as 104."
        ),
    )
    map: dict[NodeIdInt32, NodeIdInt32] = Field(
        default_factory=dict,
        description=(
            "Explicit `upstream id: virtual id` pairs; virtual ids must be distinct and "
            "below `offset` (set `offset` above them: unlisted brokers get id + offset)."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_identity(cls, value: Any) -> Any:
        if value == "identity":
            return {}
        return value

    @model_validator(mode="after")
    def _check_map(self) -> Self:
        problem = explicit_map_problem(self.offset, self.map)
        if problem is not None:
            raise_problems(type(self).__name__, [(("map",), "node_id_map", problem, None)])
        return self

    def node_id_map(self) -> NodeIdMap:
        """The forward/back mapping this section describes."""
        return NodeIdMap(self.offset, self.map)


class VirtualClusterConfig(Section):
    """One Kafka cluster as clients see it: a listener in front of an upstream cluster."""

    name: str = Field(
        description=(
            "Unique name of the virtual cluster, used in logs and metrics: lowercase "
            "letters, digits, `.`, `_` and `-`, starting with a letter or digit."
        ),
    )
    listener: ListenerConfig = Field(description="Where clients connect.")
    upstream: UpstreamConfig = Field(description="The Kafka cluster the gateway forwards to.")
    authorization: AuthorizationConfig | None = Field(
        default=None,
        description=(
            "ACL rules checked on every request, with Kafka's semantics and error codes. "
            "Absent: every authenticated principal may do anything the upstream allows."
        ),
    )
    quotas: QuotasConfig | None = Field(
        default=None,
        description=(
            "Byte-rate and request-rate quotas (throttled the way Kafka does, KIP-219) "
            "and connection limits. Absent: no quotas."
        ),
    )
    node_ids: NodeIdsConfig = Field(
        default_factory=NodeIdsConfig,
        description=(
            "Node ids clients see: `identity` (default), or `{offset: N}` and/or an "
            "explicit `map`; see docs/node-ids.md."
        ),
    )

    @model_validator(mode="after")
    def _check_passthrough(self) -> Self:
        if self.listener.authentication.passthrough and self.upstream.sasl is not None:
            raise_problems(
                type(self).__name__,
                [
                    (
                        ("upstream", "sasl"),
                        "passthrough",
                        "upstream.sasl cannot be used with listener.authentication.passthrough: "
                        "the client's own SASL exchange is relayed to the broker",
                        None,
                    )
                ],
            )
        return self

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if _CLUSTER_NAME_RE.fullmatch(name) is None:
            raise PydanticCustomError(
                "cluster_name",
                f"invalid virtual cluster name {name!r}: use lowercase letters, digits, '.', "
                "'_' and '-', starting with a letter or digit",
            )
        return name


def _hosts_overlap(a: str, b: str) -> bool:
    return a == b or a in WILDCARD_HOSTS or b in WILDCARD_HOSTS


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) and part is not True and part is not False:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class GatewayConfig(Section):
    """The root of the configuration file."""

    virtual_clusters: list[VirtualClusterConfig] = Field(
        min_length=1,
        description=(
            "The virtual clusters the gateway serves; at least one. Names must be unique, "
            "and no two clusters may listen on the same address."
        ),
    )
    max_frame_bytes: Integer = Field(
        default=100 * 1024 * 1024,
        ge=1024,
        le=2**31 - 1,
        description=(
            "Largest request or response frame accepted, in bytes (like Kafka's "
            "`socket.request.max.bytes`); larger frames close the connection."
        ),
    )
    log: LogConfig = Field(default_factory=LogConfig, description="Logging.")

    @model_validator(mode="after")
    def _check_clusters(self) -> Self:
        problems: list[tuple[Loc, str, str, Any]] = []
        names: dict[str, int] = {}
        for i, cluster in enumerate(self.virtual_clusters):
            if cluster.name in names:
                problems.append(
                    (
                        ("virtual_clusters", i, "name"),
                        "duplicate_name",
                        f"duplicate virtual cluster name {cluster.name!r} "
                        f"(already used by virtual_clusters[{names[cluster.name]}])",
                        cluster.name,
                    )
                )
            else:
                names[cluster.name] = i

        # Addresses of earlier clusters, by port: (address, path of its key).
        bound: dict[int, list[tuple[HostPort, Loc]]] = {}
        for i, cluster in enumerate(self.virtual_clusters):
            mine: list[tuple[HostPort, Loc]] = []
            for sub_loc, address in cluster.listener.bound_addresses():
                loc: Loc = ("virtual_clusters", i, "listener", *sub_loc)
                for other, other_loc in bound.get(address.port, []):
                    if _hosts_overlap(address.host, other.host):
                        problems.append(
                            (
                                loc,
                                "address_collision",
                                f"address {address} collides with {other} of {_path(other_loc)}",
                                str(address),
                            )
                        )
                        break
                mine.append((address, loc))
            for address, loc in mine:
                bound.setdefault(address.port, []).append((address, loc))

        raise_problems(type(self).__name__, problems)
        return self

    def cluster(self, name: str) -> VirtualClusterConfig:
        """The virtual cluster called ``name`` (``KeyError`` if there is none)."""
        for cluster in self.virtual_clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)
