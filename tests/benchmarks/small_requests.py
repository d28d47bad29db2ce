"""Small-request load generator: many connections, pipelined ApiVersions and Metadata.

Produce and Fetch move big frames; the gateway's cost per request shows up with small
ones (it decodes and re-encodes both of these). Each generator process drives its share
of the connections with non-blocking sockets and one epoll loop, keeping `depth`
requests in flight per connection (Java clients allow 5), and checks that every answer
carries the correlation id it expects. A load generator written in Python could itself
be the bottleneck, so several run as separate processes and each reports the CPU it
used: the benchmark prints both, next to the gateway's CPU.

Run as a module, one process per call (the benchmark starts several):

    python -m tests.benchmarks.small_requests --target 127.0.0.1:18100 --connections 25 \
        --topic bench --start-at <unix time> --seconds 10

and it prints one JSON object: completed requests, window length, CPU seconds, error.
"""

from __future__ import annotations

import argparse
import io
import json
import selectors
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kio.schema.api_versions.v3 import request as api_versions_v3
from kio.schema.metadata.v12 import request as metadata_v12
from kio.schema.request_header.v2.header import RequestHeader
from kio.schema.types import TopicName
from kio.serial import entity_writer
from kio.static.primitive import i16, i32

REPO_ROOT = Path(__file__).resolve().parents[2]
CORRELATION_ID_OFFSET = 8  # size int32, api_key int16, api_version int16
RECEIVE_BYTES = 256 * 1024
CONNECT_TIMEOUT_S = 10.0
#: After the window ends the generator stops at once; this bounds the hand-shake phase.
SETUP_TIMEOUT_S = 60.0


def _frame(api_key: int, version: int, body: Any) -> bytes:
    """A size-prefixed request with header v2 (both APIs are flexible at these versions)."""
    out = io.BytesIO()
    header = RequestHeader(
        request_api_key=i16(api_key),
        request_api_version=i16(version),
        correlation_id=i32(0),
        client_id="kafka-gateway-bench",
    )
    entity_writer(RequestHeader)(out, header)
    entity_writer(type(body))(out, body)
    payload = out.getvalue()
    return struct.pack(">i", len(payload)) + payload


def api_versions_request() -> bytes:
    """ApiVersions v3, as every modern client sends first on each connection."""
    body = api_versions_v3.ApiVersionsRequest(
        client_software_name="kafka-gateway-bench", client_software_version="1.0"
    )
    return _frame(18, 3, body)


def metadata_request(topic: str) -> bytes:
    """Metadata v12 for one topic, as a producer sends to refresh its partition leaders."""
    m = metadata_v12
    body = m.MetadataRequest(
        topics=(m.MetadataRequestTopic(topic_id=uuid.UUID(int=0), name=TopicName(topic)),),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    return _frame(3, 12, body)


@dataclass
class GeneratorResult:
    """What one generator process did inside the measurement window."""

    completed: int
    window_s: float
    cpu_s: float
    connections: int
    error: str | None = None


class _Connection:
    """One pipelined client connection: output buffer, input buffer, expected ids."""

    __slots__ = ("expected", "inbuf", "next_id", "outbuf", "sock", "templates", "writing")

    def __init__(self, sock: socket.socket, templates: tuple[bytes, ...]) -> None:
        self.sock = sock
        self.templates = templates
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.expected: deque[int] = deque()
        self.next_id = 1
        self.writing = False

    def queue_requests(self, count: int) -> None:
        """Append `count` requests, alternating the templates, each with a fresh id."""
        for _ in range(count):
            correlation_id = self.next_id
            self.next_id += 1
            start = len(self.outbuf)
            self.outbuf += self.templates[correlation_id % len(self.templates)]
            struct.pack_into(">i", self.outbuf, start + CORRELATION_ID_OFFSET, correlation_id)
            self.expected.append(correlation_id)

    def flush(self) -> None:
        if self.outbuf:
            try:
                sent = self.sock.send(self.outbuf)
            except BlockingIOError:
                return
            del self.outbuf[:sent]

    def take_responses(self) -> int:
        """Consume every complete response in the input buffer; check their ids."""
        done = 0
        buf = self.inbuf
        offset = 0
        while len(buf) - offset >= 8:
            size, correlation_id = struct.unpack_from(">ii", buf, offset)
            if len(buf) - offset < 4 + size:
                break
            expected = self.expected.popleft() if self.expected else None
            if correlation_id != expected:
                raise RuntimeError(f"got correlation id {correlation_id}, expected {expected}")
            offset += 4 + size
            done += 1
        if offset:
            del buf[:offset]
        return done


def _handshake(host: str, port: int, hello: bytes) -> socket.socket:
    """Connect and do one blocking ApiVersions round trip, as a real client would."""
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(hello)
    received = b""
    while len(received) < 4 or len(received) < 4 + struct.unpack_from(">i", received)[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed during the ApiVersions hand-shake")
        received += chunk
    sock.setblocking(False)
    return sock


def _wait_until(unix_time: float) -> None:
    delay = unix_time - time.time()
    if delay > SETUP_TIMEOUT_S:
        raise ValueError(f"start time is {delay:.0f}s away")
    if delay > 0:
        time.sleep(delay)


def _update_interest(sel: selectors.BaseSelector, conn: _Connection) -> None:
    wants_write = bool(conn.outbuf)
    if wants_write != conn.writing:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wants_write else 0)
        sel.modify(conn.sock, events, conn)
        conn.writing = wants_write


def _pump(sel: selectors.BaseSelector, end: float, max_requests: int) -> int:
    """The request loop: bounded by the window's end and by `max_requests` answers."""
    completed = 0
    while completed < max_requests:
        remaining = end - time.perf_counter()
        if remaining <= 0:
            break
        for key, mask in sel.select(timeout=min(remaining, 0.1)):
            conn: _Connection = key.data
            if mask & selectors.EVENT_READ:
                data = conn.sock.recv(RECEIVE_BYTES)
                if not data:
                    raise ConnectionError("the server closed a connection")
                conn.inbuf += data
                done = conn.take_responses()
                completed += done
                conn.queue_requests(done)
            conn.flush()
            _update_interest(sel, conn)
    return completed


def run_generator(
    host: str,
    port: int,
    *,
    connections: int,
    depth: int,
    topic: str,
    start_at: float,
    seconds: float,
    max_requests: int,
) -> GeneratorResult:
    """Open `connections`, then from `start_at` keep `depth` requests in flight on each."""
    templates = (api_versions_request(), metadata_request(topic))
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        for _ in range(connections):
            socks.append(_handshake(host, port, templates[0]))
        conns = [_Connection(sock, templates) for sock in socks]
        for conn in conns:
            sel.register(conn.sock, selectors.EVENT_READ, conn)
        _wait_until(start_at)
        cpu_before, started = time.process_time(), time.perf_counter()
        for conn in conns:
            conn.queue_requests(depth)
            conn.flush()
            _update_interest(sel, conn)
        completed = _pump(sel, started + seconds, max_requests)
        window = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        return GeneratorResult(completed, window, cpu, connections)
    finally:
        sel.close()
        for sock in socks:
            sock.close()


@dataclass(frozen=True)
class LoadResult:
    """All generator processes of one run, added up."""

    requests_per_s: float
    completed: int
    window_s: float
    generator_cpu_s: float
    processes: int
    connections: int

    @property
    def generator_cores(self) -> float:
        return self.generator_cpu_s / self.window_s if self.window_s > 0 else 0.0


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(
    target: str,
    topic: str,
    *,
    connections: int,
    processes: int,
    depth: int,
    seconds: float,
    window: Callable[[], AbstractContextManager[object]],
    setup_s: float = 4.0,
) -> LoadResult:
    """Start `processes` generators, measure `window()` around their common window.

    Every generator is started with the same wall-clock start time, so the caller's
    measurement (e.g. the gateway's CPU) covers the same seconds as the requests.
    Generators are killed if anything goes wrong, including Ctrl-C.
    """
    start_at = time.time() + setup_s
    procs: list[subprocess.Popen[str]] = []
    try:
        for share in _split(connections, processes):
            cmd = [sys.executable, "-m", "tests.benchmarks.small_requests", "--target", target]
            cmd += ["--connections", str(share), "--depth", str(depth), "--topic", topic]
            cmd += ["--start-at", repr(start_at), "--seconds", str(seconds)]
            procs.append(
                subprocess.Popen(
                    cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
                )
            )
        time.sleep(max(0.0, start_at - time.time()))
        with window():
            time.sleep(seconds)
        results = [_collect(proc, timeout_s=seconds + SETUP_TIMEOUT_S) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return LoadResult(
        requests_per_s=sum(r.completed / r.window_s for r in results),
        completed=sum(r.completed for r in results),
        window_s=max(r.window_s for r in results),
        generator_cpu_s=sum(r.cpu_s for r in results),
        processes=processes,
        connections=connections,
    )


def _collect(proc: subprocess.Popen[str], timeout_s: float) -> GeneratorResult:
    stdout, _ = proc.communicate(timeout=timeout_s)
    try:
        result = GeneratorResult(**json.loads(stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError, TypeError) as exc:
        raise RuntimeError(f"load generator printed no result ({exc}): {stdout!r}") from exc
    if result.error is not None or result.window_s <= 0:
        raise RuntimeError(f"load generator failed: {result.error}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--connections", type=int, default=25)
    parser.add_argument("--depth", type=int, default=4, help="requests in flight per connection")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--start-at", type=float, required=True, help="unix time")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=50_000_000)
    args = parser.parse_args(argv)
    host, port = args.target.rsplit(":", 1)
    try:
        result = run_generator(
            host,
            int(port),
            connections=args.connections,
            depth=args.depth,
            topic=args.topic,
            start_at=args.start_at,
            seconds=args.seconds,
            max_requests=args.max_requests,
        )
    except KeyboardInterrupt:
        return 130
    except (OSError, RuntimeError, ValueError) as exc:
        result = GeneratorResult(0, 0.0, 0.0, args.connections, error=repr(exc))
    print(json.dumps(asdict(result)), flush=True)
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
