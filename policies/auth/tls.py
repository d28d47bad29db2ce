"""``ssl.SSLContext`` objects built from the TLS configuration (no sockets involved).

The runtime wraps streams with them (``trio.SSLStream``); to reload certificates
without a restart it builds a fresh context when the files change and uses it
for new connections.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from policies.config import ClientTlsConfig, ServerTlsConfig

__all__ = ["client_ssl_context", "server_ssl_context"]

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
