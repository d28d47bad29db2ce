"""A hostile-client flood against a gateway: mutated frames, silent and slow connections.

`run_flood` drives every attacker from one Trio loop in the calling thread, from other
loopback source addresses (127.0.2.x and up, so per-IP limits hit the attackers and not
well-behaved clients on 127.0.0.1), until a frame target is reached, a time limit
passes, or ``should_stop()`` says so (e.g. the gateway died). It returns what was sent
and how each connection ended, as seen from the client side; the caller matches that
against the gateway's log. The attackers:

* **mutant** connections log in with SCRAM (so their frames reach authorization and the
  decoders behind it), then pipeline well-formed value mutants (:mod:`tests.flood_frames`)
  in bursts, a window of unanswered frames at most, and end with one byte mutant (a
  malformed frame normally costs its connection: sending it last loses no frame behind
  it); **mutant-pre-login** connections send SASL-phase mutants without logging in;
* **silent** connections connect and send nothing, in waves that exceed the gateway's
  per-IP cap of unauthenticated connections: each is refused or held until the
  gateway's authentication deadline closes it;
* **slowloris** connections send one byte of a frame every few hundred milliseconds,
  one after another until the flood ends; the gateway's deadline closes each;
* **never-reader** connections log in and send requests without reading any response,
  until the gateway stops reading them (backpressure);
* **giant-frame** connections declare a 1 GiB frame (size prefix 2^30), then send a few
  kilobytes of it.

Silent and slowloris connections are never closed by the flood: once the frame target is
reached it waits (``gateway_closes_within_s``) for the gateway to close them.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from codec.headers import encode_request_header
from codec.sasl import (
    parse_sasl_authenticate_response_frame,
    sasl_authenticate_request_frame,
    sasl_handshake_request_frame,
)
from tests.flood_frames import (
    PRE_LOGIN_KEYS,
    SASL_AUTHENTICATE,
    SASL_HANDSHAKE,
    Names,
    Seed,
    ValueMutantPool,
    build_seeds,
    byte_mutant,
    header_length,
    request_frame,
    with_correlation_id,
)

GIANT_FRAME_SIZE = 2**30
METADATA = 3
#: Frames of a SCRAM login: SaslHandshake, then two SaslAuthenticate.
LOGIN_FRAMES = 3
SASL_KEYS = frozenset({SASL_HANDSHAKE, SASL_AUTHENTICATE})


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
    #: Stop once this many mutated frames were taken in by the gateway (or sent) ...
    frame_target: int = 100_000
    #: ... or after this long (the result then says so).
    time_limit_s: float = 120.0
    #: Then wait at most this long for the gateway to close silent and slowloris
    #: connections (its authentication deadline, plus a margin).
    gateway_closes_within_s: float = 15.0
    #: Silent connections: ``silent_waves`` waves of ``silent_connections / silent_waves``
    #: connections at most ``silent_wave_interval_s`` apart, from ``silent_ips`` addresses.
    silent_connections: int = 5000
    silent_waves: int = 5
    silent_wave_interval_s: float = 8.0
    silent_ips: int = 40
    slowloris_connections: int = 2
    slowloris_byte_interval_s: float = 0.3
    never_reader_connections: int = 2
    giant_frame_connections: int = 2
    #: Concurrent mutant connections.
    mutant_workers: int = 24
    #: Share of mutant connections that never log in.
    pre_login_share: float = 0.1
    #: Value mutants per logged-in connection (drawn uniformly), before its byte mutant.
    value_frames_per_connection: tuple[int, int] = (20, 100)
    frames_per_burst: int = 24
    #: Unanswered frames a mutant connection may have before its next burst: keeps each
    #: of the gateway's reads to a few dozen frames, as a busy real client would.
    answer_window: int = 48
    #: A mutant connection whose answers (or sends) stall this long is given up: a
    #: request the broker holds (a JoinGroup, a long Fetch wait) delays every answer
    #: behind it.
    stall_s: float = 1.0
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
    #: A send blocked (the gateway stopped reading: backpressure).
    send_blocked: bool = False


@dataclass
class FloodResult:
    connections: list[ConnectionRecord] = field(default_factory=list)
    value_frames_sent: int = 0
    byte_frames_sent: int = 0
    giant_frames_sent: int = 0
    logins: int = 0
    #: Frames of login attempts on mutant connections (not mutants: the frame counter
    #: subtracts them).
    login_frames_sent: int = 0
    login_failures: Counter[str] = field(default_factory=Counter)
    connect_failures: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    #: When the frame target (or time limit) was reached; then the gateway's closes
    #: of silent and slowloris connections are awaited.
    flood_s: float = 0.0
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
            f"the gateway) of {len(self.api_keys_sent)} API keys in {self.flood_s:.1f}s "
            f"({self.elapsed_s:.1f}s with the closes awaited), stopped because "
            f"{self.stopped_because}",
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
    """A client connection with a frame reader; ``drain`` reads (and counts) responses."""

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
        #: Response frames read by ``drain``; ``answered`` is set at each new one.
        self.answers = 0
        self.answered = trio.Event()
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
        """Read until EOF, counting response frames; note that the gateway closed first,
        unless the client did."""
        try:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    break
                self._count_frames(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        self._peer_closed()

    def _count_frames(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        at, frames = 0, 0
        while len(buffer) - at >= 4:
            (size,) = struct.unpack_from(">i", buffer, at)
            if len(buffer) - at < 4 + size:
                break
            at += 4 + size
            frames += 1
        del buffer[:at]
        if frames:
            self.answers += frames
            self.answered.set()
            self.answered = trio.Event()

    def _peer_closed(self) -> None:
        if not self.closing:
            self.record.closed_by_gateway = True
        self.eof.set()
        self.answered.set()  # wakes a sender waiting for answers

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
        self.frames_done_means = "sent" if frames_processed is None else "taken in by the gateway"
        self.result = FloodResult()
        self.done = trio.Event()
        seeds = build_seeds(plan.names)
        self.pre_login_seeds = [s for s in seeds if s.api_key in PRE_LOGIN_KEYS]
        self.seed_frames = [
            (s, request_frame(s.api_key, s.api_version, 0, s.request)) for s in seeds
        ]
        # After login a SASL request (re-authentication) that fails costs the connection,
        # like a byte mutant: those come last on a connection (see send_mutants).
        self.pool = ValueMutantPool(
            [s for s in seeds if s.api_key not in SASL_KEYS],
            plan.names,
            plan.value_pool_size,
            plan.rng_seed,
        )
        self.pre_login_pool = ValueMutantPool(
            self.pre_login_seeds, plan.names, plan.value_pool_size // 10, plan.rng_seed + 1
        )
        self.pre_login_seed_frames = [
            (s, frame) for s, frame in self.seed_frames if s.api_key in PRE_LOGIN_KEYS
        ]
        self._salted: dict[bytes, bytes] = {}
        self._ip_counters: dict[int, itertools.count[int]] = {}
        self.open_conns: set[_Conn] = set()
        #: Connections only the gateway may close (silent, slowloris).
        self.awaiting_gateway_close: set[_Conn] = set()
        self.started = time.monotonic()

    # --- plumbing ---------------------------------------------------------------------

    def source_ip(self, block: int, ips: int | None = None) -> str:
        """The next source address of a kind's block of 127.0.<block>.1 .. .<ips>."""
        counter = self._ip_counters.setdefault(block, itertools.count())
        return f"127.0.{block}.{next(counter) % (ips or self.plan.ips_per_kind) + 1}"

    async def connect(self, kind: str, block: int, ips: int | None = None) -> _Conn | None:
        ip = self.source_ip(block, ips)
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
            self.result.flood_s = time.monotonic() - self.started
            self.done.set()
        return self.done.is_set()

    def progress(self) -> str:
        result = self.result
        return (
            f"{time.monotonic() - self.started:.0f}s: {result.frames_processed} mutated "
            f"frames taken in, {result.mutated_frames_sent} sent, {result.logins} logins, "
            f"{result.stalled_connections} stalls, {len(self.open_conns)} open connections"
        )

    def frames_done(self) -> int:
        if self.frames_processed is None:
            return self.result.mutated_frames_sent
        return self.result.frames_processed

    async def watchdog(self, everything: trio.CancelScope) -> None:
        next_report = self.started + 10
        while not self.over():
            if self.frames_processed is not None:
                self.result.frames_processed = self.frames_processed(self.result)
            if time.monotonic() >= next_report:  # progress, for CI logs (pytest -s)
                next_report += 10
                print(f"flood progress: {self.progress()}", flush=True)
            await trio.sleep(0.5)
        # Silent and slowloris connections are the gateway's to close (its deadline).
        with trio.move_on_after(self.plan.gateway_closes_within_s):
            while self.awaiting_gateway_close:
                await next(iter(self.awaiting_gateway_close)).eof.wait()
        # Other attackers notice the end at their next step; none may keep the flood
        # going (a login or a connect the gateway never answers).
        with trio.move_on_after(2):
            while any(c.record.kind.startswith("mutant") for c in self.open_conns):
                await trio.sleep(0.1)
        everything.cancel()

    async def hold_until_gateway_closes(self, conn: _Conn) -> None:
        """Keep ``conn`` open until the gateway closes it (or the watchdog gives up)."""
        self.awaiting_gateway_close.add(conn)
        try:
            await conn.drain()
        finally:
            self.awaiting_gateway_close.discard(conn)
            await conn.close()

    # --- SCRAM login (cheap for the client: the salted password is cached) -------------

    async def login(self, conn: _Conn) -> bool:
        with trio.move_on_after(10):
            return await self._login(conn)
        self.result.login_failures["no answer within 10s"] += 1
        return False

    async def _send_login_frame(self, conn: _Conn, frame: bytes) -> None:
        if conn.record.kind.startswith("mutant"):
            self.result.login_frames_sent += 1
        if not await conn.send(frame):
            raise _Stop("closed")

    async def _login(self, conn: _Conn) -> bool:
        login = self.plan.login
        digest = "sha512" if login.mechanism.endswith("512") else "sha256"
        nonce = secrets.token_urlsafe(18)
        bare = f"n={login.user},r={nonce}"
        try:
            await self._send_login_frame(
                conn, sasl_handshake_request_frame(1, "flood", login.mechanism)
            )
            await conn.read_frame()
            await self._send_login_frame(
                conn, sasl_authenticate_request_frame(2, "flood", f"n,,{bare}".encode())
            )
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
            await self._send_login_frame(conn, sasl_authenticate_request_frame(3, "flood", final))
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
                if pre_login:
                    await self.with_drain(conn, self.send_pre_login_mutants(conn, rng))
                elif await self.login(conn):
                    await self.with_drain(conn, self.send_mutants(conn, rng))
            finally:
                await conn.close()

    async def with_drain(self, conn: _Conn, sending: Awaitable[None]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.drain)
            await sending
            await conn.close()
            nursery.cancel_scope.cancel()

    async def send_mutants(self, conn: _Conn, rng: random.Random) -> None:
        """Value mutants in bursts within the answer window, then one that usually costs
        the connection: a byte mutant, or a SASL request after login."""
        plan = self.plan
        low, high = plan.value_frames_per_connection
        value_frames = rng.randint(low, high)
        correlation_ids = itertools.count(100)
        while conn.record.frames_sent < value_frames and not self.over():
            if not await self.wait_for_answers(conn, plan.answer_window - plan.frames_per_burst):
                return
            count = min(plan.frames_per_burst, value_frames - conn.record.frames_sent)
            burst = [self.pool.pick(rng, next(correlation_ids)) for _ in range(count)]
            if not await self.send_burst(conn, burst, byte_mutants=0):
                return
        if self.over() or not await self.wait_for_answers(conn, 0):
            return
        if rng.random() < 0.2:  # a SASL request after login: re-authentication mutants
            last, byte_mutants = self.pre_login_pool.pick(rng, next(correlation_ids)), 0
        else:
            seed, frame = rng.choice(self.seed_frames)
            last = byte_mutant(frame, header_length(seed.api_key, seed.api_version), rng)
            byte_mutants = 1
        if await self.send_burst(conn, [last], byte_mutants):
            # Usually closed by the gateway; else its answer (a mutant that still parses).
            with trio.move_on_after(plan.stall_s):
                while not conn.eof.is_set() and conn.answers < conn.record.frames_sent:
                    await conn.answered.wait()

    async def wait_for_answers(self, conn: _Conn, unanswered: int) -> bool:
        """Wait until at most ``unanswered`` frames lack an answer; False if the
        connection ended or stalled (counted)."""
        with trio.move_on_after(self.plan.stall_s):
            while conn.record.frames_sent - conn.answers > unanswered:
                if conn.eof.is_set():
                    return False
                await conn.answered.wait()
            return not conn.eof.is_set()
        self.result.stalled_connections += 1
        return False

    async def send_burst(self, conn: _Conn, burst: list[bytes], byte_mutants: int) -> bool:
        if conn.eof.is_set():
            return False
        with trio.move_on_after(self.plan.stall_s) as stalled:
            sent = await conn.send(b"".join(burst))
        if stalled.cancelled_caught:
            self.result.stalled_connections += 1
            return False
        if sent:
            conn.record.frames_sent += len(burst)
            self.result.byte_frames_sent += byte_mutants
            self.result.value_frames_sent += len(burst) - byte_mutants
            # (a truncated byte mutant may have no API key left)
            self.result.api_keys_sent |= {
                struct.unpack_from(">h", f, 4)[0] for f in burst if len(f) >= 6
            }
        return sent

    async def send_pre_login_mutants(self, conn: _Conn, rng: random.Random) -> None:
        """SASL-phase frames, half of them byte mutants, two at a time."""
        correlation_ids = itertools.count(100)
        while conn.record.frames_sent < 20 and not self.over():
            burst, byte_mutants = [], 0
            for _ in range(2):
                if rng.random() < 0.5:
                    seed, frame = rng.choice(self.pre_login_seed_frames)
                    header = header_length(seed.api_key, seed.api_version)
                    burst.append(byte_mutant(frame, header, rng))
                    byte_mutants += 1
                else:
                    burst.append(self.pre_login_pool.pick(rng, next(correlation_ids)))
            if not await self.send_burst(conn, burst, byte_mutants):
                return
            if not await self.wait_for_answers(conn, 0):
                return

    async def silent(self) -> None:
        plan = self.plan
        per_wave = plan.silent_connections // plan.silent_waves
        limiter = trio.Semaphore(100)  # connects in progress
        async with trio.open_nursery() as nursery:
            for wave in range(plan.silent_waves):
                if wave:
                    with trio.move_on_after(plan.silent_wave_interval_s):
                        await self.done.wait()
                if self.done.is_set():
                    break
                for _ in range(per_wave):
                    await limiter.acquire()
                    nursery.start_soon(self.silent_one, limiter)

    async def silent_one(self, limiter: trio.Semaphore) -> None:
        try:
            conn = await self.connect("silent", 4, self.plan.silent_ips)
        finally:
            limiter.release()
        if conn is not None:
            await self.hold_until_gateway_closes(conn)

    async def slowloris(self) -> None:
        """One slow connection after another, until the flood ends."""
        while not self.over():
            conn = await self.connect("slowloris", 5)
            if conn is None:
                await trio.sleep(0.5)
                continue
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.trickle, conn)
                await self.hold_until_gateway_closes(conn)
                nursery.cancel_scope.cancel()

    async def trickle(self, conn: _Conn) -> None:
        # An ApiVersions v3 request, one byte at a time; declared bigger than it is, so
        # the frame never completes however long the client is allowed to go on.
        seed = next(s for s in self.pre_login_seeds if s.api_key == 18 and s.api_version == 3)
        frame = request_frame(seed.api_key, seed.api_version, 1, seed.request)
        trickle = struct.pack(">i", 4096) + frame[4:] + b"\x00" * 4096
        for byte in trickle:
            if conn.eof.is_set() or not await conn.send(bytes([byte])):
                return
            conn.record.frames_sent = 1
            await trio.sleep(self.plan.slowloris_byte_interval_s)

    async def logged_in(self, kind: str, block: int) -> _Conn | None:
        """A logged-in connection; tries again (as an attacker would) while logins fail,
        e.g. early in the flood, when the gateway is busiest."""
        while not self.over():
            conn = await self.connect(kind, block)
            if conn is not None and await self.login(conn):
                return conn
            if conn is not None:
                await conn.close()
            await trio.sleep(0.5)
        return None

    async def never_reader(self) -> None:
        conn = await self.logged_in("never-reader", 6)
        if conn is None:
            return
        seed = next(s for s in self.pool_seeds(METADATA) if s.api_version == 12)
        request = type(seed.request)(
            topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=True
        )
        # A long client id makes each request ~4 KiB, so that the socket buffers between
        # us and a gateway that stopped reading fill within seconds, not minutes.
        body = request_frame(METADATA, 12, 0, request)[4 + header_length(METADATA, 12) :]
        payload = encode_request_header(METADATA, 12, 0, "n" * 4000) + body
        frame = struct.pack(">i", len(payload)) + payload
        correlation_ids = itertools.count(10)
        # Never read: once the gateway's writes block, its reads should stop too
        # (backpressure), and our sends block in turn; then just hold the connection.
        while not self.over() and not conn.eof.is_set():
            burst = b"".join(with_correlation_id(frame, next(correlation_ids)) for _ in range(16))
            with trio.move_on_after(1.0) as blocked:
                if not await conn.send(burst):
                    break
                conn.record.frames_sent += 16
            if blocked.cancelled_caught:
                conn.record.send_blocked = True
                break
            await trio.sleep(0.01)
        await _first(self.done.wait, conn.eof.wait)
        await conn.close()

    def pool_seeds(self, api_key: int) -> list[Seed]:
        return [s for s, _frame in self.seed_frames if s.api_key == api_key]

    async def giant_frame(self, after_login: bool) -> None:
        if after_login:
            conn = await self.logged_in("giant-frame", 7)
        else:
            conn = await self.connect("giant-frame", 7)
        if conn is None:
            return
        # The size prefix of a 1 GiB frame, then the start of a valid request and junk.
        data = struct.pack(">i", GIANT_FRAME_SIZE) + struct.pack(">hhi", 3, 12, 1)
        data += random.Random(self.plan.rng_seed).randbytes(16 * 1024)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.drain)
            if await conn.send(data):
                self.result.giant_frames_sent += 1
                conn.record.frames_sent = 1
            await _first(self.done.wait, conn.eof.wait)
            await conn.close()
            nursery.cancel_scope.cancel()

    async def run(self) -> FloodResult:
        plan = self.plan
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watchdog, nursery.cancel_scope)
            nursery.start_soon(self.silent)
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


class GatewayFrameCounter:
    """Counts the mutated frames the gateway took in, from its JSON log.

    The gateway logs ``requests`` in each ``connection_closed`` event; mutant connections
    come from 127.0.2.x (before login) and 127.0.3.x (after a login, whose frames are
    not mutants and are subtracted: all the login frames the flood sent, so the count
    errs low). Requests of connections still open are not counted yet.
    """

    def __init__(self, log_path: Path, blocks: tuple[str, ...] = ("127.0.2.", "127.0.3.")) -> None:
        self.log_path = log_path
        self.blocks = tuple(block.encode() for block in blocks)
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
            if b'"connection_closed"' not in line or not any(b in line for b in self.blocks):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "connection_closed" and str(event.get("client")).startswith(
                tuple(block.decode() for block in self.blocks)
            ):
                self.requests += int(event.get("requests") or 0)
        return self.requests

    def __call__(self, result: FloodResult) -> int:
        """Mutated frames the gateway took in: requests minus the flood's login frames."""
        return max(0, self.poll() - result.login_frames_sent)
