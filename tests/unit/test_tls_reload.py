"""Listener certificates are picked up from disk when rotated, without a restart."""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
from pathlib import Path

from gateway.tls_reload import ReloadingServerContext
from policies.config import ServerTlsConfig
from tests.certs import make_ca


def served_serial(context: ssl.SSLContext, ca_file: Path) -> str:
    """Handshake in memory; the serial number of the certificate the server presented."""
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(client_in, client_out, server_hostname="localhost")
    server = context.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    return str(client.getpeercert()["serialNumber"])


def test_rotated_files_are_served_and_broken_ones_keep_the_old(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "rotation-ca")
    first_cert, first_key = ca.issue_server(name="first")
    second_cert, second_key = ca.issue_server(name="second")
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live-key.pem"
    shutil.copy(first_cert, live_cert)
    shutil.copy(first_key, live_key)
    reloading = ReloadingServerContext(
        ServerTlsConfig(cert_file=str(live_cert), key_file=str(live_key))  # type: ignore[call-arg]
    )
    before = reloading.current()
    first_serial = served_serial(before, ca.cert_path)

    shutil.copy(second_cert, live_cert)
    shutil.copy(second_key, live_key)
    os.utime(live_cert, ns=(1, 10**18))  # a distinct mtime even within one clock tick
    rotated = reloading.current()
    assert rotated is not before
    assert served_serial(rotated, ca.cert_path) != first_serial

    live_key.write_text("not a key")  # a half-finished rotation
    assert reloading.current() is rotated
