"""A hostile-client flood against a gateway: mutated frames, silent and slow connections.

`run_flood` drives every attacker from one Trio loop in the calling thread, from other
loopback source addresses (127.0.0.2 and up, so per-IP limits hit the attackers and not
well-behaved clients on 127.0.0.1), until a frame target is reached, a time limit
passes, or ``should_stop()`` says so (e.g. the gateway died). It returns what was sent
and how each connection ended, as seen from the client side; the caller matches that
against the gateway's log. The attackers:

* **mutant** connections send bursts of mutated frames (:mod:`tests.flood_frames`), most
  after a SCRAM login (so they reach authorization and the decoders behind it), some
  before any login;
* **silent** connections connect and send nothing;
* **slowloris** connections send one byte of a frame every few hundred milliseconds;
* **never-reader** connections log in and send requests without reading any response;
* **giant-frame** connections declare a 1 GiB frame (size prefix 2^30), then send a few
  kilobytes of it.

Used by tests/integration/test_flood.py; reusable by benchmarks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import random
import secrets
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from codec.sasl import (
    parse_sasl_authenticate_response_frame,
    sasl_authenticate_request_frame,
    sasl_handshake_request_frame,
)
from tests.flood_frames import (
    PRE_LOGIN_KEYS,
    Names,
    Seed,
    ValueMutantPool,
    build_seeds,
    byte_mutant,
    header_length,
    request_frame,
)

GIANT_FRAME_SIZE = 2**30
METADATA = 3


@dataclass(frozen=True)
class ScramLogin:
    user: str
    password: str
    mechanism: str = "SCRAM-SHA-256"


@dataclass(frozen=True)
class FloodPlan:
    """What to send, where from, and when to stop."""

    host: str
    port: int
    login: ScramLogin
    names: Names
    #: Stop once this many mutated frames were sent ...
    frame_target: int = 100_000
    #: ... or after this long (the result then says so).
    time_limit_s: float = 120.0
    silent_connections: int = 5000
    slowloris_connections: int = 2
    slowloris_byte_interval_s: float = 0.3
    never_reader_connections: int = 2
    giant_frame_connections: int = 2
    #: Concurrent mutant connections.
    mutant_workers: int = 32
    #: Share of mutant connections that never log in.
    pre_login_share: float = 0.1
    #: Mutated frames per connection at most; a byte mutant usually ends it sooner.
    frames_per_connection: int = 200
    frames_per_burst: int = 16
    #: How long a mutant connection waits for an answer after each burst.
    answer_wait_s: float = 0.02
    #: A mutant connection whose send blocks this long is given up (see send_mutants).
    stall_s: float = 0.5
    #: Share of frames that are byte mutants (the rest are well-formed value mutants).
    byte_mutant_share: float = 0.04
    value_pool_size: int = 6000
    #: Source addresses: attackers use 127.0.<block>.<n> for n in 1..ips_per_kind.
    ips_per_kind: int = 50
    rng_seed: int = 9


@dataclass
class ConnectionRecord:
    """One attacker connection as the client saw it."""

    kind: str
    local: str  # "ip:port", as the gateway logs the client
    frames_sent: int = 0
    #: True: the gateway closed it (EOF or reset) before the client did.
    closed_by_gateway: bool = False


@dataclass
class FloodResult:
    connections: list[ConnectionRecord] = field(default_factory=list)
    value_frames_sent: int = 0
    byte_frames_sent: int = 0
    giant_frames_sent: int = 0
    logins: int = 0
    login_failures: Counter[str] = field(default_factory=Counter)
    connect_failures: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    stopped_because: str = ""
    api_keys_sent: set[int] = field(default_factory=set)
    stalled_connections: int = 0
    #: Mutated frames the gateway took in (if the caller could tell, see run_flood).
    frames_processed: int = 0

    @property
    def mutated_frames_sent(self) -> int:
        return self.value_frames_sent + self.byte_frames_sent

    def summary(self) -> str:
        kinds = Counter(c.kind for c in self.connections)
        by_gateway = Counter(c.kind for c in self.connections if c.closed_by_gateway)
        lines = [
            f"flood: {self.mutated_frames_sent} mutated frames sent ({self.value_frames_sent} "
            f"value, {self.byte_frames_sent} byte mutants; {self.frames_processed} taken in by "
            f"the gateway) of {len(self.api_keys_sent)} API keys "
            f"in {self.elapsed_s:.1f}s, stopped because {self.stopped_because}",
            f"  logins {self.logins}, stalled mutant connections given up "
            f"{self.stalled_connections}, login failures {dict(self.login_failures)}, "
            f"connect failures {dict(self.connect_failures)}",
        ]
        for kind, count in sorted(kinds.items()):
            lines.append(f"  {kind}: {count} connections, {by_gateway[kind]} closed by gateway")
        return "\n".join(lines)


class _Stop(Exception):
    pass


class _Conn:
    """A client connection with a frame reader; ``drain`` reads (and drops) responses."""

    def __init__(
        self,
        stream: trio.SocketStream,
        record: ConnectionRecord,
        on_close: Callable[[_Conn], None],
    ) -> None:
        self.on_close = on_close
        self.stream = stream
        self.record = record
        self.buffer = bytearray()
        self.got_bytes = trio.Event()
        self.eof = trio.Event()
        self.closing = False

    async def read_frame(self) -> bytes:
        while True:
            if len(self.buffer) >= 4:
                (size,) = struct.unpack_from(">i", self.buffer)
                if len(self.buffer) >= 4 + size:
                    frame = bytes(self.buffer[4 : 4 + size])
                    del self.buffer[: 4 + size]
                    return frame
            data = await self.stream.receive_some(65536)
            if not data:
                self._peer_closed()
                raise _Stop("closed by gateway")
            self.buffer += data

    async def drain(self) -> None:
        """Read until EOF; note that the gateway closed first, unless the client did."""
        try:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    break
                self.got_bytes.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        self._peer_closed()

    def _peer_closed(self) -> None:
        if not self.closing:
            self.record.closed_by_gateway = True
        self.eof.set()

    async def send(self, data: bytes) -> bool:
        """False if the connection is gone."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._peer_closed()
            return False
        return True

    async def close(self) -> None:
        if not self.eof.is_set():
            self.closing = True  # what drain sees from now on is our own close
        self.on_close(self)
        await trio.aclose_forcefully(self.stream)


class _Flood:
    def __init__(
        self,
        plan: FloodPlan,
        should_stop: Callable[[], bool],
        frames_processed: Callable[[FloodResult], int] | None,
    ) -> None:
        self.plan = plan
        self.should_stop = should_stop
        self.frames_processed = frames_processed
        self.frames_done_means = "sent" if frames_processed is None else "processed by the gateway"
        self.result = FloodResult()
        self.done = trio.Event()
        seeds = build_seeds(plan.names)
        self.pre_login_seeds = [s for s in seeds if s.api_key in PRE_LOGIN_KEYS]
        self.seed_frames = [
            (s, request_frame(s.api_key, s.api_version, 0, s.request)) for s in seeds
        ]
        self.pool = ValueMutantPool(seeds, plan.names, plan.value_pool_size, plan.rng_seed)
        self.pre_login_pool = ValueMutantPool(
            self.pre_login_seeds, plan.names, plan.value_pool_size // 10, plan.rng_seed + 1
        )
        self.pre_login_seed_frames = [
            (s, frame) for s, frame in self.seed_frames if s.api_key in PRE_LOGIN_KEYS
        ]
        self._salted: dict[bytes, bytes] = {}
        self._ip_counters: dict[int, itertools.count[int]] = {}
        self.open_conns: set[_Conn] = set()
        self.started = time.monotonic()

    # --- plumbing ---------------------------------------------------------------------

    def source_ip(self, block: int) -> str:
        """The next source address of a kind's block of 127.0.<block>.1 .. .<ips_per_kind>."""
        counter = self._ip_counters.setdefault(block, itertools.count())
        return f"127.0.{block}.{next(counter) % self.plan.ips_per_kind + 1}"

    async def connect(self, kind: str, block: int) -> _Conn | None:
        ip = self.source_ip(block)
        sock = trio.socket.socket()
        try:
            with trio.fail_after(10):
                await sock.bind((ip, 0))
                await sock.connect((self.plan.host, self.plan.port))
        except (OSError, trio.TooSlowError) as exc:
            sock.close()
            self.result.connect_failures[f"{kind}: {type(exc).__name__}"] += 1
            return None
        local_ip, local_port = sock.getsockname()[:2]
        record = ConnectionRecord(kind, f"{local_ip}:{local_port}")
        self.result.connections.append(record)
        conn = _Conn(trio.SocketStream(sock), record, self.open_conns.discard)
        self.open_conns.add(conn)
        return conn

    def over(self) -> bool:
        if self.done.is_set():
            return True
        reason = None
        if self.frames_done() >= self.plan.frame_target:
            reason = f"{self.plan.frame_target} frames were {self.frames_done_means}"
        elif time.monotonic() - self.started > self.plan.time_limit_s:
            reason = f"the time limit of {self.plan.time_limit_s}s passed"
        elif self.should_stop():
            reason = "should_stop() said so"
        if reason is not None:
            self.result.stopped_because = reason
            self.done.set()
        return self.done.is_set()

    def frames_done(self) -> int:
        if self.frames_processed is None:
            return self.result.mutated_frames_sent
        return self.result.frames_processed

    async def watchdog(self, everything: trio.CancelScope) -> None:
        while not self.over():
            if self.frames_processed is not None:
                self.result.frames_processed = self.frames_processed(self.result)
            await trio.sleep(0.5)
        # Attackers notice the end at their next step; none may keep the flood going
        # (a login or a connect the gateway never answers).
        await trio.sleep(2)
        everything.cancel()

    async def hold(self, conn: _Conn) -> None:
        """Keep ``conn`` open until the flood ends or the gateway closes it."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.drain)
            with trio.move_on_after(self.plan.time_limit_s + 5):
                await _first(self.done.wait, conn.eof.wait)
            await conn.close()
            nursery.cancel_scope.cancel()

    # --- SCRAM login (cheap for the client: the salted password is cached) -------------

    async def login(self, conn: _Conn) -> bool:
        with trio.move_on_after(10):
            return await self._login(conn)
        self.result.login_failures["no answer within 10s"] += 1
        return False

    async def _login(self, conn: _Conn) -> bool:
        login = self.plan.login
        digest = "sha512" if login.mechanism.endswith("512") else "sha256"
        nonce = secrets.token_urlsafe(18)
        bare = f"n={login.user},r={nonce}"
        try:
            if not await conn.send(sasl_handshake_request_frame(1, "flood", login.mechanism)):
                raise _Stop("closed")
            await conn.read_frame()
            await conn.send(sasl_authenticate_request_frame(2, "flood", f"n,,{bare}".encode()))
            _cid, first = parse_sasl_authenticate_response_frame(await conn.read_frame(), 2)
            if first.error_code != 0:
                self.result.login_failures[f"server-first error {first.error_code}"] += 1
                return False
            server_first = first.auth_bytes.decode()
            attrs = dict(part.split("=", 1) for part in server_first.split(","))
            salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
            key = salt + iterations.to_bytes(4, "big")
            if key not in self._salted:
                self._salted[key] = hashlib.pbkdf2_hmac(
                    digest, login.password.encode(), salt, iterations
                )
            salted = self._salted[key]
            client_key = hmac.digest(salted, b"Client Key", digest)
            stored_key = hashlib.new(digest, client_key).digest()
            without_proof = f"c=biws,r={attrs['r']}"
            auth_message = f"{bare},{server_first},{without_proof}".encode()
            signature = hmac.digest(stored_key, auth_message, digest)
            proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
            final = f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
            await conn.send(sasl_authenticate_request_frame(3, "flood", final))
            _cid, last = parse_sasl_authenticate_response_frame(await conn.read_frame(), 2)
        except (_Stop, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.result.login_failures[f"connection closed: {type(exc).__name__}"] += 1
            return False
        except (ValueError, KeyError) as exc:
            self.result.login_failures[f"bad server answer: {type(exc).__name__}"] += 1
            return False
        if last.error_code != 0:
            self.result.login_failures[f"error {last.error_code}"] += 1
            return False
        self.result.logins += 1
        return True

    # --- attackers --------------------------------------------------------------------

    async def mutants(self, worker: int) -> None:
        rng = random.Random(self.plan.rng_seed * 1000 + worker)
        while not self.over():
            pre_login = rng.random() < self.plan.pre_login_share
            kind = "mutant-pre-login" if pre_login else "mutant"
            conn = await self.connect(kind, 2 if pre_login else 3)
            if conn is None:
                await trio.sleep(0.1)
                continue
            try:
                if pre_login or await self.login(conn):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(conn.drain)
                        await self.send_mutants(conn, rng, pre_login)
                        await conn.close()
                        nursery.cancel_scope.cancel()
            finally:
                await conn.close()

    async def send_mutants(self, conn: _Conn, rng: random.Random, pre_login: bool) -> None:
        pool = self.pre_login_pool if pre_login else self.pool
        seed_frames = self.pre_login_seed_frames if pre_login else self.seed_frames
        burst_size = 2 if pre_login else self.plan.frames_per_burst
        correlation_id = 100
        while conn.record.frames_sent < self.plan.frames_per_connection and not self.over():
            burst, byte_mutants, keys = [], 0, set()
            for _ in range(burst_size):
                correlation_id += 1
                if rng.random() < self.plan.byte_mutant_share or (pre_login and rng.random() < 0.5):
                    seed, frame = rng.choice(seed_frames)
                    burst.append(
                        byte_mutant(frame, header_length(seed.api_key, seed.api_version), rng)
                    )
                    byte_mutants += 1
                    keys.add(seed.api_key)
                else:
                    frame = pool.pick(rng, correlation_id)
                    burst.append(frame)
                    keys.add(struct.unpack_from(">h", frame, 4)[0])
            conn.got_bytes = trio.Event()
            if conn.eof.is_set():
                return
            with trio.move_on_after(self.plan.stall_s) as stalled:
                sent = await conn.send(b"".join(burst))
            if stalled.cancelled_caught:
                self.result.stalled_connections += 1
                return
            if not sent:
                return
            conn.record.frames_sent += len(burst)
            self.result.byte_frames_sent += byte_mutants
            self.result.value_frames_sent += len(burst) - byte_mutants
            self.result.api_keys_sent |= keys
            # Pace by the gateway: give it a moment to answer (or close) before the next
            # burst. A mutant the broker holds (a long Fetch wait, a JoinGroup) delays
            # every answer behind it, so no answer is no reason to stop; a send that
            # blocks is (the gateway stopped reading): start over on a new connection.
            with trio.move_on_after(self.plan.answer_wait_s):
                await _first(conn.got_bytes.wait, conn.eof.wait)
            if conn.eof.is_set():
                return

    async def silent(self, count: int) -> None:
        limiter = trio.Semaphore(100)  # connects in progress
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                if self.over():
                    break
                await limiter.acquire()
                nursery.start_soon(self.silent_one, limiter)

    async def silent_one(self, limiter: trio.Semaphore) -> None:
        try:
            conn = await self.connect("silent", 4)
        finally:
            limiter.release()
        if conn is not None:
            await self.hold(conn)

    async def slowloris(self) -> None:
        conn = await self.connect("slowloris", 5)
        if conn is None:
            return
        # An ApiVersions v3 request, one byte at a time; declared bigger than it is, so
        # the frame never completes however long the client is allowed to go on.
        seed = next(s for s in self.pre_login_seeds if s.api_key == 18 and s.api_version == 3)
        frame = request_frame(seed.api_key, seed.api_version, 1, seed.request)
        trickle = struct.pack(">i", 4096) + frame[4:] + b"\x00" * 4096
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.drain)
            for byte in trickle:
                if self.over() or conn.eof.is_set() or not await conn.send(bytes([byte])):
                    break
                conn.record.frames_sent = 1
                with trio.move_on_after(self.plan.slowloris_byte_interval_s):
                    await _first(self.done.wait, conn.eof.wait)
            await conn.close()
            nursery.cancel_scope.cancel()

    async def never_reader(self) -> None:
        conn = await self.connect("never-reader", 6)
        if conn is None:
            return
        if not await self.login(conn):
            await conn.close()
            return
        seed = next(s for s in self.pool_seeds(METADATA) if s.api_version == 12)
        request = type(seed.request)(
            topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=True
        )
        correlation_ids = itertools.count(10)
        # Never read: once the gateway's writes block, its reads should stop too
        # (backpressure), and our sends block in turn; then just hold the connection.
        while not self.over() and not conn.eof.is_set():
            burst = b"".join(
                request_frame(METADATA, 12, next(correlation_ids), request) for _ in range(16)
            )
            with trio.move_on_after(1.0) as blocked:
                if not await conn.send(burst):
                    break
                conn.record.frames_sent += 16
            if blocked.cancelled_caught:
                break
            await trio.sleep(0.01)
        with trio.move_on_after(self.plan.time_limit_s + 5):
            await _first(self.done.wait, conn.eof.wait)
        await conn.close()

    def pool_seeds(self, api_key: int) -> list[Seed]:
        return [s for s, _frame in self.seed_frames if s.api_key == api_key]

    async def giant_frame(self, after_login: bool) -> None:
        conn = await self.connect("giant-frame", 7)
        if conn is None:
            return
        if after_login and not await self.login(conn):
            await conn.close()
            return
        # The size prefix of a 1 GiB frame, then the start of a valid request and junk.
        data = struct.pack(">i", GIANT_FRAME_SIZE) + struct.pack(">hhi", 3, 12, 1)
        data += random.Random(self.plan.rng_seed).randbytes(16 * 1024)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.drain)
            if await conn.send(data):
                self.result.giant_frames_sent += 1
                conn.record.frames_sent = 1
            with trio.move_on_after(self.plan.time_limit_s + 5):
                await _first(self.done.wait, conn.eof.wait)
            await conn.close()
            nursery.cancel_scope.cancel()

    async def run(self) -> FloodResult:
        plan = self.plan
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watchdog, nursery.cancel_scope)
            nursery.start_soon(self.silent, plan.silent_connections)
            for _ in range(plan.slowloris_connections):
                nursery.start_soon(self.slowloris)
            for _ in range(plan.never_reader_connections):
                nursery.start_soon(self.never_reader)
            for i in range(plan.giant_frame_connections):
                nursery.start_soon(self.giant_frame, i % 2 == 1)
            for worker in range(plan.mutant_workers):
                nursery.start_soon(self.mutants, worker)
        for conn in self.open_conns:  # those whose task was cancelled: the client closes
            conn.closing = conn.closing or not conn.eof.is_set()
            conn.stream.socket.close()
        self.result.elapsed_s = time.monotonic() - self.started
        return self.result


async def _first(*waits: Callable[[], object]) -> None:
    """Return as soon as any of ``waits`` (e.g. ``event.wait``) returns."""
    async with trio.open_nursery() as nursery:

        async def one(wait: Callable[[], object]) -> None:
            await wait()  # type: ignore[misc]
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(one, wait)


def run_flood(
    plan: FloodPlan,
    should_stop: Callable[[], bool] = lambda: False,
    frames_processed: Callable[[FloodResult], int] | None = None,
) -> FloodResult:
    """Run the whole flood in this thread (its own Trio loop); returns once it is over.

    ``frames_processed``: how many mutated frames the gateway has taken in so far (e.g.
    a `GatewayFrameCounter`); the frame target then applies to it rather than to the
    frames sent, some of which a gateway never reads (those behind a frame it closed
    the connection for, or still in socket buffers when a stalled connection is dropped).
    """
    return trio.run(_Flood(plan, should_stop, frames_processed).run)


#: Frames of a SCRAM login (SaslHandshake, two SaslAuthenticate), counted by the gateway.
LOGIN_FRAMES = 3


class GatewayFrameCounter:
    """Counts the requests the gateway took in on mutant connections, from its JSON log.

    The gateway logs ``requests`` in each ``connection_closed`` event; mutant connections
    come from 127.0.2.x (before login) and 127.0.3.x (after a login, whose frames are
    not mutants and are subtracted: pass the flood's login count).
    """

    def __init__(self, log_path: Path, blocks: tuple[str, ...] = ("127.0.2.", "127.0.3.")) -> None:
        self.log_path = log_path
        self.blocks = blocks
        self.requests = 0
        self._offset = 0
        self._partial = b""

    def poll(self) -> int:
        """Requests on mutant connections closed so far (reads what was logged since)."""
        with self.log_path.open("rb") as log:
            log.seek(self._offset)
            data = self._partial + log.read()
            self._offset = log.tell()
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            if b"connection_closed" not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "connection_closed" and str(event.get("client")).startswith(
                self.blocks
            ):
                self.requests += int(event.get("requests") or 0)
        return self.requests

    def __call__(self, result: FloodResult) -> int:
        """Mutated frames the gateway took in: requests minus the flood's login frames."""
        return max(0, self.poll() - LOGIN_FRAMES * result.logins)
