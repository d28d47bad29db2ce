"""Sockets: listening (with optional SO_REUSEPORT) and connecting upstream with a deadline."""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

import trio

from policies.config import HostPort


class ListenError(OSError):
    """A gateway port could not be bound; the message names the address and why."""


async def open_listeners(
    host: str, port: int, *, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """Bind ``host:port`` (every address it resolves to).

    Unlike :func:`trio.open_tcp_listeners` this can set ``SO_REUSEPORT``, so several
    gateway processes can share a port and the kernel spreads connections across them.
    """
    bind_host = host or None
    infos = await trio.socket.getaddrinfo(
        bind_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, sockaddr in infos:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(sockaddr)
                sock.listen(1024)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE and len(infos) > 1 and family == socket.AF_INET6:
                    continue
                raise ListenError(
                    exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}"
                ) from exc
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            await listener.aclose()
        raise
    return listeners


class UpstreamUnavailable(ConnectionError):
    """No upstream address accepted a connection; says which were tried and why."""


async def connect_first(
    addresses: Sequence[HostPort], timeout_s: float
) -> tuple[trio.SocketStream, HostPort]:
    """Connect to the first address in ``addresses`` that answers within ``timeout_s``."""
    failures: list[str] = []
    for address in addresses:
        with trio.move_on_after(timeout_s) as scope:
            try:
                stream = await trio.open_tcp_stream(address.host, address.port)
            except OSError as exc:
                failures.append(f"{address}: {exc.strerror or exc}")
                continue
            return stream, address
        if scope.cancelled_caught:
            failures.append(f"{address}: no answer within {timeout_s:g}s")
    raise UpstreamUnavailable("; ".join(failures) or "no upstream address configured")
