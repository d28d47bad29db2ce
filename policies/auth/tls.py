"""The TLS configuration models and the ``ssl.SSLContext`` objects built from them
(no sockets involved).

The runtime wraps streams with the contexts (``trio.SSLStream``); to reload
certificates without a restart it builds a fresh context when the files change and
uses it for new connections. Validating a model builds its context once, so unusable
files are reported with the YAML line, before the gateway starts.
"""

from __future__ import annotations

import ssl
from typing import Final, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from policies.auth.mtls import InvalidMappingRule, parse_mapping_rules
from policies.config_base import FilePath, Section, raise_problems

__all__ = [
    "ClientTlsConfig",
    "ServerTlsConfig",
    "TlsVersion",
    "client_ssl_context",
    "server_ssl_context",
]

TlsVersion = Literal["TLSv1.2", "TLSv1.3"]

_VERSIONS: Final = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH: Final = {
    "none": ssl.CERT_NONE,
    "requested": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def server_ssl_context(config: ServerTlsConfig) -> ssl.SSLContext:
    """The listener's TLS context: certificate chain, client-certificate policy, versions.

    Raises ``ssl.SSLError`` / ``OSError`` for unreadable or mismatching files
    (configuration validation already reports those with the YAML line).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[config.min_version]
    if config.ciphers:
        context.set_ciphers(config.ciphers)
    password = config.key_password.get_secret_value() if config.key_password else None
    context.load_cert_chain(config.cert_file, config.key_file, password=password)
    if config.ca_file:
        context.load_verify_locations(cafile=config.ca_file)
    context.verify_mode = _CLIENT_AUTH[config.client_auth]
    return context


def client_ssl_context(config: ClientTlsConfig) -> ssl.SSLContext:
    """The context for connections to the upstream brokers.

    The broker's certificate chain is always verified (against ``ca_file``, or the
    system trust store); ``verify_hostname: false`` only skips the name check.
    Pass ``config.server_hostname`` (or the broker's host) as ``server_hostname``.
    """
    context = ssl.create_default_context(cafile=config.ca_file)
    context.minimum_version = _VERSIONS[config.min_version]
    context.check_hostname = config.verify_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if config.cert_file and config.key_file:
        password = config.key_password.get_secret_value() if config.key_password else None
        context.load_cert_chain(config.cert_file, config.key_file, password=password)
    return context


class ServerTlsConfig(Section):
    """TLS termination on a listener, optionally with client certificates (mTLS)."""

    cert_file: FilePath = Field(
        description=(
            "PEM file with the certificate chain the gateway presents (its own certificate "
            "first). Relative paths resolve against the configuration file's directory."
        ),
    )
    key_file: FilePath = Field(description="PEM file with the private key of `cert_file`.")
    key_password: SecretStr | None = Field(
        default=None, description="Password of `key_file` if it is encrypted (use `${ENV}`)."
    )
    ca_file: FilePath | None = Field(
        default=None,
        description=(
            "PEM file with the CA certificates client certificates must chain to; "
            "required when `client_auth` is `requested` or `required`."
        ),
    )
    client_auth: Literal["none", "requested", "required"] = Field(
        default="none",
        description=(
            "Client certificates (mTLS): `none` (not asked for), `requested` (verified if "
            "sent) or `required` (connections without a valid one are refused). Without "
            "SASL mechanisms, a client certificate gives the principal (see "
            "`principal_mapping_rules`)."
        ),
    )
    min_version: TlsVersion = Field(
        default="TLSv1.2", description="Oldest TLS version accepted: `TLSv1.2` or `TLSv1.3`."
    )
    ciphers: str | None = Field(
        default=None,
        description=(
            "OpenSSL cipher list for TLS 1.2 (e.g. `ECDHE+AESGCM:ECDHE+CHACHA20`); "
            "default: Python's secure defaults. TLS 1.3 suites are not affected."
        ),
    )
    principal_mapping_rules: str = Field(
        default="DEFAULT",
        description=(
            "How a client certificate's subject becomes the principal name, like Kafka's "
            "`ssl.principal.mapping.rules`: comma- or newline-separated rules, first match "
            "wins. `DEFAULT` is the full RFC 2253 DN (`CN=alice,OU=eng,O=Example,C=US`); "
            "`RULE:^CN=(.*?),OU=.*$/$1/L` maps with a regex, `$1` a group, `/L` or `/U` "
            "lower- or upper-cases."
        ),
    )

    @field_validator("principal_mapping_rules")
    @classmethod
    def _check_rules(cls, rules: str) -> str:
        try:
            parse_mapping_rules(rules)
        except InvalidMappingRule as exc:
            raise PydanticCustomError("mapping_rule", str(exc)) from None
        return rules

    @field_validator("ciphers")
    @classmethod
    def _check_ciphers(cls, ciphers: str | None) -> str | None:
        if ciphers is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
            except ssl.SSLError:
                raise PydanticCustomError(
                    "ciphers", f"OpenSSL accepts no cipher from {ciphers!r}"
                ) from None
        return ciphers

    @model_validator(mode="after")
    def _check_files(self) -> Self:
        if self.client_auth != "none" and self.ca_file is None:
            raise_problems(
                type(self).__name__,
                [
                    (
                        ("ca_file",),
                        "missing",
                        f"ca_file is required with client_auth: {self.client_auth} (the CA "
                        "client certificates must chain to)",
                        None,
                    )
                ],
            )
        try:
            server_ssl_context(self)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise_problems(
                type(self).__name__,
                [
                    (
                        ("cert_file",),
                        "tls_files",
                        f"cannot use the TLS files: {_ssl_reason(exc)}",
                        self.cert_file,
                    )
                ],
            )
        return self


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.reason} (certificate/key mismatch, wrong password or not PEM?)"
    return str(exc) or type(exc).__name__


class ClientTlsConfig(Section):
    """TLS from the gateway to the upstream brokers."""

    ca_file: FilePath | None = Field(
        default=None,
        description=(
            "PEM file with the CA certificates the brokers' certificates must chain to; "
            "default: the system trust store."
        ),
    )
    verify_hostname: bool = Field(
        default=True,
        description=(
            "Check that the broker certificate names the host connected to (or "
            "`server_hostname`). The certificate chain is verified either way."
        ),
    )
    server_hostname: str | None = Field(
        default=None,
        description=(
            "Name to send as SNI and to verify instead of each broker's host, e.g. when "
            "brokers are reached by IP address."
        ),
    )
    cert_file: FilePath | None = Field(
        default=None,
        description="PEM client certificate chain for brokers that require mTLS (with `key_file`).",
    )
    key_file: FilePath | None = Field(default=None, description="PEM private key of `cert_file`.")
    key_password: SecretStr | None = Field(
        default=None, description="Password of `key_file` if it is encrypted (use `${ENV}`)."
    )
    min_version: TlsVersion = Field(
        default="TLSv1.2", description="Oldest TLS version used: `TLSv1.2` or `TLSv1.3`."
    )

    @model_validator(mode="after")
    def _check_files(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise_problems(
                type(self).__name__,
                [((missing,), "missing", "cert_file and key_file go together", None)],
            )
        try:
            client_ssl_context(self)
        except (ssl.SSLError, OSError, ValueError) as exc:
            key = "cert_file" if self.cert_file else "ca_file"
            raise_problems(
                type(self).__name__,
                [((key,), "tls_files", f"cannot use the TLS files: {_ssl_reason(exc)}", None)],
            )
        return self
