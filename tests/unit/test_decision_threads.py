"""Large requests are decided in a worker thread, with the cyclic collector paused.

The stall they would cause inline is measured by ``python -m tests.benchmarks.stall``
(part of ``make bench``); here: what runs where, that the answers are the same
either way, that the event loop keeps running meanwhile, and that a pipelined
Fetch waits for the Fetch responses whose checks share its fetch-session mirror.
"""

from __future__ import annotations

import gc
import struct
import threading
from types import SimpleNamespace

import pytest
import structlog
import trio

import gateway.enforcement as enforcement_module
from codec.framing import FrameDecoder, encode_frame
from codec.headers import encode_request_header, encode_response_header, peek_api
from gateway import decision_threads
from gateway.decision_threads import DECISION_THREADS, run_decision
from gateway.enforcement import (
    THREAD_DECISION_BYTES,
    Enforcement,
    decides_in_thread,
)
from policies.acl.config import AuthorizationConfig
from policies.acl.engine import AclEngine
from policies.auth.principal import Principal
from tests.session_harness import gateway_in_front_of, metadata_v12_body, read_frame
from tests.worst_requests import worst_request

FETCH = 1


async def test_the_collector_is_paused_while_any_decision_runs_and_restored_after() -> None:
    assert gc.isenabled()
    seen: list[bool] = []
    both_running = threading.Barrier(2, timeout=10)

    def decide(value: int) -> int:
        both_running.wait()  # two decisions overlap: the pause is counted, not toggled
        seen.append(gc.isenabled())
        return value * 2

    async with trio.open_nursery() as nursery:
        results: list[int] = []

        async def one(value: int) -> None:
            results.append(await run_decision(decide, value))

        nursery.start_soon(one, 1)
        nursery.start_soon(one, 2)
    assert sorted(results) == [2, 4]
    assert seen == [False, False]
    assert gc.isenabled()


async def test_overlapping_decisions_cannot_keep_cycles_alive_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each decision starts before the previous ends, so the pause never ends by itself.
    monkeypatch.setattr(decision_threads, "MAX_COLLECTOR_PAUSE_S", 0.0)
    collections: list[tuple[int, bool]] = []
    gc.callbacks.append(
        lambda phase, info: collections.append((info["generation"], gc.isenabled()))
    )
    try:
        overlap = threading.Barrier(2, timeout=10)

        def make_cycles() -> None:
            cycle: list[object] = []
            cycle.append(cycle)
            overlap.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_decision, make_cycles)
            nursery.start_soon(run_decision, make_cycles)
    finally:
        gc.callbacks.pop()
    # A full collection ran while the other decision still held the pause (an
    # automatic one cannot: automatic collections only run while the collector is on).
    assert (2, False) in collections
    assert gc.isenabled()


async def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        assert await run_decision(lambda: gc.isenabled()) is False
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_at_most_the_configured_number_of_decisions_run_at_once() -> None:
    running = peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def decide() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(10)
        with lock:
            running -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(DECISION_THREADS + 2):
            nursery.start_soon(run_decision, decide)
        limiter = decision_threads._decision_limiter()
        with trio.fail_after(10):
            # Both threads inside ``decide``, the other two tasks queued behind them.
            while running < DECISION_THREADS or limiter.statistics().tasks_waiting < 2:
                await trio.sleep(0.001)
        release.set()
    assert peak == DECISION_THREADS


def test_what_is_decided_in_a_thread() -> None:
    small = worst_request("Metadata", 10)[1]
    large = worst_request("Metadata", 2_000)[1]
    assert len(small) < THREAD_DECISION_BYTES <= len(large)
    assert not decides_in_thread(3, small)
    assert decides_in_thread(3, large)
    # A Produce starts inline whatever its size (its records are not read).
    assert not decides_in_thread(0, large)


def _enforcement() -> Enforcement:
    acl = AclEngine(AuthorizationConfig.model_validate({"default": "deny", "rules": []}))
    cluster = SimpleNamespace(
        name="unit",
        policies=SimpleNamespace(acl=acl),
        topic_name=lambda _: None,
        known_topic_name=lambda _: None,
    )
    auth = SimpleNamespace(
        principal=Principal(name="mallory", mechanism="PLAIN"), client_address="127.0.0.1:1"
    )
    return Enforcement(cluster, auth, structlog.get_logger("unit"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "version", "threshold"),
    [
        ("OffsetFetch", 8, "THREAD_DECISION_BYTES"),
        ("Produce", 11, "THREAD_DECISION_PRODUCE_ENTRIES"),
    ],
)
async def test_a_large_request_gets_the_same_answer_while_the_loop_keeps_running(
    monkeypatch: pytest.MonkeyPatch, name: str, version: int, threshold: str
) -> None:
    api_key, frame = worst_request(name, 3_000)
    ticks = 0
    deciding = True

    async def other_connection() -> None:
        nonlocal ticks
        while deciding:
            ticks += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_connection)
        threaded = await _enforcement().authorize(api_key, version, frame, "unit")
        deciding = False
    assert ticks > 1  # the loop ran other tasks while the decision was being made

    monkeypatch.setattr(enforcement_module, threshold, len(frame) + 1)
    ticks = 0
    deciding = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_connection)
        inline = await _enforcement().authorize(api_key, version, frame, "unit")
        deciding = False
    assert ticks <= 1  # inline: nothing else ran meanwhile
    assert threaded.local_response is not None
    assert threaded.local_response == inline.local_response
    assert len(threaded.denials) == len(inline.denials) == 3_000


# --- a pipelined Fetch waits for the responses whose checks share its mirror ----------


def _fetch_v4(correlation_id: int, topics: int) -> bytes:
    """Fetch v4 naming ``topics`` topics of one partition each (large ones are
    decided in a thread)."""
    body = struct.pack(">iiiibi", -1, 0, 0, 1 << 20, 0, topics)
    for i in range(topics):
        name = f"topic-with-a-long-enough-name-{i:05}".encode()
        body += struct.pack(">h", len(name)) + name + struct.pack(">iiqi", 1, 0, 0, 1024)
    return encode_frame(encode_request_header(FETCH, 4, correlation_id, "unit-client"), body)


def _empty_fetch_v4_answer(correlation_id: int) -> bytes:
    return encode_frame(encode_response_header(correlation_id, FETCH, 4), struct.pack(">ii", 0, 0))


class HeldFetchBroker:
    """Records each Fetch as it arrives; answers only when the test releases it."""

    def __init__(self) -> None:
        self.arrived: list[int] = []
        self.arrival = trio.Event()
        self.stream: trio.SocketStream | None = None

    async def serve(self, stream: trio.SocketStream) -> None:
        decoder = FrameDecoder()
        while data := await stream.receive_some(65536):
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                api_key, version, cid = peek_api(frame)
                if api_key == 3:  # the gateway's own broker discovery
                    port = stream.socket.getsockname()[1]
                    header = encode_response_header(cid, 3, version)
                    await stream.send_all(encode_frame(header, metadata_v12_body(port)))
                    continue
                self.stream = stream
                self.arrived.append(cid)
                self.arrival.set()

    async def wait_for(self, count: int) -> None:
        while len(self.arrived) < count:
            self.arrival = trio.Event()
            await self.arrival.wait()

    async def answer(self, cid: int) -> None:
        assert self.stream is not None
        await self.stream.send_all(_empty_fetch_v4_answer(cid))


ALLOW_READS = """
    authorization:
      rules:
        - principals: ["User:ANONYMOUS"]
          resource_type: topic
          resource_name: "*"
          operations: [Read]
"""


async def test_a_large_fetch_behind_another_waits_for_its_answer_before_being_decided() -> None:
    broker = HeldFetchBroker()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    upstream = listeners[0].socket.getsockname()[1]
    large, larger = _fetch_v4(2, 600), _fetch_v4(3, 700)
    assert decides_in_thread(FETCH, large) and decides_in_thread(FETCH, larger)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, broker.serve, listeners)
        async with gateway_in_front_of(upstream, ALLOW_READS) as (port, _):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            # Pipelined in one write: the second waits for the first's answer, and
            # the third (queued behind it, not sent) must not hold the second up.
            await client.send_all(_fetch_v4(1, 1) + large + larger)
            with trio.fail_after(10):
                await broker.wait_for(1)
            # A window for the second to overtake the first's answer if nothing held
            # it: it never does when the gateway waits, whatever the machine's load.
            await trio.sleep(0.3)
            assert broker.arrived == [1]
            decoder = FrameDecoder()
            answers = []
            with trio.fail_after(10):
                for cid in (1, 2, 3):
                    await broker.wait_for(cid)
                    await broker.answer(cid)
                    answer = await read_frame(client, decoder)
                    assert answer is not None
                    answers.append(struct.unpack_from(">i", answer)[0])
            assert answers == [1, 2, 3]
            await client.aclose()
        nursery.cancel_scope.cancel()
