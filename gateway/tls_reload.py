"""A listener's TLS context that follows its certificate files as they are replaced.

Certificates are rotated by writing new files (cert-manager, ACME clients); the gateway
notices on the next connection, by the files' modification times, and builds a new
context. A half-written or mismatched set of files keeps the previous context and logs
why, so rotation never takes a listener down.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import structlog

from policies.auth.tls import server_ssl_context
from policies.config import ServerTlsConfig

log = structlog.get_logger("gateway.tls")

FileStamp = tuple[tuple[str, int, int], ...]


class ReloadingServerContext:
    """``current()`` returns an SSL context built from the files as they are now."""

    def __init__(self, config: ServerTlsConfig) -> None:
        self._config = config
        self._files = [
            str(path)
            for path in (config.cert_file, config.key_file, config.ca_file)
            if path is not None
        ]
        self._stamp = self._read_stamp()
        self._context = server_ssl_context(config)

    def _read_stamp(self) -> FileStamp:
        stamps = []
        for name in self._files:
            try:
                info = os.stat(name)
            except OSError:
                stamps.append((name, -1, -1))
                continue
            stamps.append((name, info.st_mtime_ns, info.st_size))
        return tuple(stamps)

    def current(self) -> ssl.SSLContext:
        stamp = self._read_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._context = server_ssl_context(self._config)
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.error(
                    "tls_reload_failed",
                    files=[Path(name).name for name in self._files],
                    error=str(exc),
                )
            else:
                log.info("tls_reloaded", files=[Path(name).name for name in self._files])
        return self._context
