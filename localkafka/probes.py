"""Blocking, raw-protocol probes of a local broker: is a port free, who is in Metadata.

No client library: the readiness checks must not depend on one (nor on its start-up
noise), and run from plain pytest fixtures as well as the CLI.
"""

from __future__ import annotations

import socket
import ssl
import struct

HOST = "127.0.0.1"


def accepts_connections(port: int, host: str = HOST) -> bool:
    """True if something accepts TCP connections on host:port now."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if we could listen on host:port (with SO_REUSEADDR, as the JVM does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def metadata_broker_ids(host: str, port: int, timeout: float = 2.0) -> set[int]:
    """Ask one broker for Metadata (v1, no topics) and return the broker ids it lists.

    A raw request keeps this free of client-library quirks and start-up noise.
    """
    client_id = b"local-kafka-probe"
    body = struct.pack(">hhih", 3, 1, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", recv_exact(sock, 4))[0]
        payload = recv_exact(sock, size)
    return _parse_metadata_v1_brokers(payload)


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _parse_metadata_v1_brokers(payload: bytes) -> set[int]:
    """correlation_id, then [node_id int32, host string, port int32, rack nullable string]."""
    offset = 4
    (count,) = struct.unpack_from(">i", payload, offset)
    offset += 4
    ids: set[int] = set()
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", payload, offset)
        offset += 6 + host_len + 4
        (rack_len,) = struct.unpack_from(">h", payload, offset)
        offset += 2 + max(rack_len, 0)
        ids.add(node_id)
    return ids


class RawConnection:
    """One blocking request/response connection, optionally over TLS."""

    def __init__(self, address: str, context: ssl.SSLContext | None, timeout: float) -> None:
        host, port = address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock = context.wrap_socket(sock, server_hostname=host) if context else sock
        self._correlation_id = 0

    def next_correlation_id(self) -> int:
        self._correlation_id += 1
        return self._correlation_id

    def round_trip(self, frame: bytes) -> bytes:
        self.sock.sendall(frame)
        size = struct.unpack(">i", recv_exact(self.sock, 4))[0]
        return recv_exact(self.sock, size)

    def close(self) -> None:
        self.sock.close()
