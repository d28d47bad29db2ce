"""Open thousands of client connections that each say hello once and then sit idle.

Most connections to a Kafka endpoint are idle most of the time (every client keeps one
per broker), so what an idle connection costs the gateway - memory, and on the broker
side the upstream connection it opens for each - bounds how many clients one gateway
process can serve. Connections are opened with non-blocking sockets, a bounded number
at a time so the gateway's listen backlog never overflows, each sends one ApiVersions
request and waits for its answer, and then all are held open together.
"""

from __future__ import annotations

import errno
import resource
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field

#: Connections being set up at once (connect + ApiVersions round trip).
DEFAULT_CONCURRENCY = 200


@dataclass
class IdleConnections:
    """The open, idle sockets plus how setting them up went."""

    sockets: list[socket.socket] = field(default_factory=list)
    failures: int = 0
    first_error: str | None = None
    seconds: float = 0.0

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def raise_open_files_limit(needed: int) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE (soft and hard) to at least `needed`; children inherit it.

    Root may raise the hard limit (up to fs.nr_open); others get at most the hard limit.
    Returns the new (soft, hard).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed and hard >= needed:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), max(hard, needed)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class _Pending:
    """A connection being set up: connecting, then waiting for its ApiVersions answer."""

    __slots__ = ("received", "sent", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = False
        self.received = b""

    def answered(self) -> bool:
        data = self.received
        return len(data) >= 4 and len(data) >= 4 + struct.unpack_from(">i", data)[0]


def _start_connect(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    code = sock.connect_ex((host, port))
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(code, f"connect to {host}:{port}: {errno.errorcode.get(code, code)}")
    return sock


def _advance(conn: _Pending, mask: int, hello: bytes) -> bool:
    """Move one connection on; True once its answer is complete. Raises OSError on failure."""
    if not conn.sent and mask & selectors.EVENT_WRITE:
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, errno.errorcode.get(code, str(code)))
        if conn.sock.send(hello) != len(hello):
            raise OSError("short send of a 60-byte request")
        conn.sent = True
        return False
    if conn.sent and mask & selectors.EVENT_READ:
        chunk = conn.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before answering ApiVersions")
        conn.received += chunk
    return conn.answered()


def open_idle_connections(
    host: str,
    port: int,
    count: int,
    hello: bytes,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = 300.0,
) -> IdleConnections:
    """Open `count` connections, send `hello` on each and wait for one response frame.

    Bounded by `timeout_s`; connections that fail are counted, not retried. The caller
    owns the returned sockets and must `close()` them.
    """
    result = IdleConnections()
    sel = selectors.DefaultSelector()
    started = time.monotonic()
    deadline = started + timeout_s
    launched = 0
    try:
        while (launched < count or sel.get_map()) and time.monotonic() < deadline:
            while launched < count and len(sel.get_map()) < concurrency:
                launched += 1
                try:
                    sock = _start_connect(host, port)
                except OSError as exc:
                    _record_failure(result, exc)
                    continue
                sel.register(sock, selectors.EVENT_WRITE, _Pending(sock))
            for key, mask in sel.select(timeout=0.5):
                conn: _Pending = key.data
                try:
                    done = _advance(conn, mask, hello)
                except OSError as exc:
                    sel.unregister(conn.sock)
                    conn.sock.close()
                    _record_failure(result, exc)
                    continue
                if done:
                    sel.unregister(conn.sock)
                    result.sockets.append(conn.sock)
                elif conn.sent:
                    sel.modify(conn.sock, selectors.EVENT_READ, conn)
        for key in list(sel.get_map().values()):  # timed out
            _record_failure(result, TimeoutError("no answer before the deadline"))
            key.fileobj.close()  # type: ignore[union-attr]
        result.failures += count - launched
    except BaseException:
        result.close()
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        raise
    finally:
        sel.close()
    result.seconds = time.monotonic() - started
    return result


def _record_failure(result: IdleConnections, exc: BaseException) -> None:
    result.failures += 1
    if result.first_error is None:
        result.first_error = repr(exc)
