"""A live flood: hostile clients and a well-behaved producer/consumer through one gateway.

A real gateway process (SASL PLAIN and SCRAM, ACLs on) in front of the session's
Kafka cluster takes, at the same time (tests/flood.py):

* >= 100,000 mutated frames of every API key the gateway accepts, on thousands of
  connections from 127.0.2.x/127.0.3.x: most after a SCRAM login as ``mallory`` (so they
  reach authorization and the decoders behind it), some before any login;
* 5,000 silent connections, slowloris clients, clients that never read their responses,
  and 1 GiB frame declarations;
* meanwhile ``alice`` on 127.0.0.1 runs an idempotent acks=all confluent-kafka producer
  and a consumer group member.

The guarantees checked: the gateway process never dies; alice sees no error and loses
nothing (every acknowledged record consumed, in order, per partition); the gateway's RSS
stays under `RSS_BOUND_BYTES`; every attacker connection ends with a logged reason
(``connection_closed`` or ``connection_refused``), never an internal error, and a 1 GiB
frame is refused as a frame error. Every failed guarantee is reported together, with a
summary of what the flood did.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from policies.auth import derive_scram_credential, hash_password
from tests.flood import FloodPlan, FloodResult, GatewayFrameCounter, ScramLogin, run_flood
from tests.flood_frames import Names
from tests.gateway_harness import Event, RunningGateway, running_gateway
from tests.integration.test_authorization import create_topics

pytestmark = pytest.mark.kafka

RUN = uuid.uuid4().hex[:8]
GOOD_TOPIC, GOOD_GROUP = f"good-{RUN}", f"good-{RUN}"
ATTACK_TOPIC, ATTACK_GROUP = f"attack-{RUN}", f"attack-{RUN}"
PASSWORDS = {"alice": "alice-flood-pw-7Hq2", "mallory": "mallory-flood-pw-3Kd9"}
GOOD_PARTITIONS = 3

#: The gateway's resident memory must stay below this. Measured on main (before the
#: fixes): 241-309 MiB at the peak of this flood, with ~4,400 silent connections each
#: holding an upstream connection (a Trio task, a 256 KiB read buffer at most, kernel
#: buffers outside RSS). A fixed gateway holds no upstream connection before login, so
#: it should stay lower. 512 MiB leaves room for allocator noise and is half of what one
#: honoured 1 GiB frame declaration would cost: a gateway that buffered one, or reserved
#: what a mutated count claims, fails this bound.
RSS_BOUND_BYTES = 512 * 1024 * 1024
#: How long the good producer waits between records (about 150 records/s).
PRODUCE_INTERVAL_S = 0.005

ACL_RULES: dict[str, Any] = {
    "default": "deny",
    "rules": [
        {
            "principals": ["User:alice"],
            "resource_type": "topic",
            "pattern_type": "prefixed",
            "resource_name": "good-",
            "operations": ["Read", "Write", "Describe"],
        },
        {
            "principals": ["User:alice"],
            "resource_type": "group",
            "pattern_type": "prefixed",
            "resource_name": "good-",
            "operations": ["Read"],
        },
        # The attacker may use its own topic and groups: some mutants pass authorization
        # and reach the broker. Nothing lets it create, alter or delete anything.
        {
            "principals": ["User:mallory"],
            "resource_type": "topic",
            "pattern_type": "prefixed",
            "resource_name": "attack-",
            "operations": ["Read", "Write", "Describe"],
        },
        {
            "principals": ["User:mallory"],
            "resource_type": "group",
            "pattern_type": "prefixed",
            "resource_name": "attack-",
            "operations": ["Read"],
        },
    ],
}


#: The gateway's connection limits, set here rather than left to defaults so that what
#: the flood meets is explicit. Attackers connect from 127.0.<block>.<n> (at most 50
#: addresses per kind), the good clients from 127.0.0.1 (a handful of connections).
#: Silent connections come from 40 addresses, 25 per address in each wave: 20 are held
#: (the per-IP cap of connections not logged in), 5 refused; the held ones, 800, are
#: well under the total cap of 2,000 (and slowloris and pre-login mutants add a few
#: dozen), so a good client's new connection always finds room. The authentication
#: deadline closes silent and slowloris connections within seconds.
LIMITS: dict[str, int] = {
    "max_connections": 4000,
    "max_connections_per_ip": 200,
    "max_unauthenticated_connections": 2000,
    "max_unauthenticated_connections_per_ip": 20,
    "authentication_timeout_ms": 3000,
    "connections_max_idle_ms": 60000,
}
#: What the gateway logs when it closes a connection at its authentication deadline.
DEADLINE_REASON = "authentication deadline exceeded"
#: ... and when it refuses one for the per-IP cap of connections not logged in yet.
UNAUTHENTICATED_CAP = "limit max_unauthenticated_connections_per_ip="


def flood_listener() -> dict[str, Any]:
    return {
        "limits": LIMITS,
        "authentication": {
            "mechanisms": ["PLAIN", "SCRAM-SHA-256"],
            "users": {"alice": hash_password(PASSWORDS["alice"])},
            "scram_credentials": {
                "mallory": [
                    str(derive_scram_credential(PASSWORDS["mallory"], "SCRAM-SHA-256", 4096))
                ]
            },
            "failed_authentication_delay_ms": 50,
        },
    }


@pytest.fixture(scope="module")
def flood_gateway(
    kafka_cluster,  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway]:
    create_topics(kafka_cluster.bootstrap_servers, [ATTACK_TOPIC], partitions=1)
    create_topics(kafka_cluster.bootstrap_servers, [GOOD_TOPIC], partitions=GOOD_PARTITIONS)
    with running_gateway(
        tmp_path_factory.mktemp("flood-gateway"),
        kafka_cluster.bootstrap_servers,
        listener=flood_listener(),
        cluster={"authorization": ACL_RULES},
        log_level="info",
    ) as gateway:
        yield gateway


# --- the well-behaved pair ----------------------------------------------------------


def alice(gateway: RunningGateway, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": gateway.bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "alice",
        "sasl.password": PASSWORDS["alice"],
        **extra,
    }


@dataclass
class GoodPair:
    """An idempotent acks=all producer and a consumer group member, each in a thread."""

    gateway: RunningGateway
    errors: list[str] = field(default_factory=list)
    acknowledged: dict[int, list[tuple[int, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    consumed: dict[int, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    stop_producing: threading.Event = field(default_factory=threading.Event)
    stop_consuming: threading.Event = field(default_factory=threading.Event)
    sent: int = 0

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._produce, name="good-producer", daemon=True),
            threading.Thread(target=self._consume, name="good-consumer", daemon=True),
        ]
        for thread in threads:
            thread.start()
        return threads

    def _error(self, who: str, error: Any) -> None:
        self.errors.append(f"{who}: {error}")

    def _produce(self) -> None:
        producer = Producer(
            alice(
                self.gateway,
                **{
                    "client.id": "good-producer",
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "error_cb": lambda e: self._error("producer", e),
                },
            )
        )

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                self._error("delivery", err)
            else:
                self.acknowledged[msg.partition()].append((msg.offset(), msg.value().decode()))

        while not self.stop_producing.is_set():
            producer.produce(
                GOOD_TOPIC,
                value=f"good-{self.sent}".encode(),
                key=str(self.sent).encode(),
                on_delivery=on_delivery,
            )
            self.sent += 1
            producer.poll(PRODUCE_INTERVAL_S)
        remaining = producer.flush(30)
        if remaining:
            self._error("producer", f"{remaining} records not delivered within 30s of the end")

    def _consume(self) -> None:
        consumer = Consumer(
            alice(
                self.gateway,
                **{
                    "client.id": "good-consumer",
                    "group.id": GOOD_GROUP,
                    "auto.offset.reset": "earliest",
                    "error_cb": lambda e: self._error("consumer", e),
                },
            )
        )
        consumer.subscribe([GOOD_TOPIC])
        try:
            while not self.stop_consuming.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    self._error("consumer message", msg.error())
                    continue
                self.consumed[msg.partition()].append((msg.offset(), msg.value().decode()))
        finally:
            consumer.close()

    def all_consumed(self) -> bool:
        return all(
            len(self.consumed[p]) >= len(records) for p, records in self.acknowledged.items()
        )

    def problems(self) -> list[str]:
        problems = [f"the good clients saw {len(self.errors)} errors: {self.errors[:5]}"]
        problems = problems if self.errors else []
        total = sum(len(r) for r in self.acknowledged.values())
        if total == 0:
            problems.append("the good producer got no record acknowledged")
        for partition, records in sorted(self.acknowledged.items()):
            wanted = sorted(records)
            got = self.consumed[partition]
            if got != wanted:
                lost = sorted(set(wanted) - set(got))
                problems.append(
                    f"partition {partition}: {len(wanted)} acknowledged, {len(got)} consumed, "
                    f"{len(lost)} lost (first {lost[:3]}), in order: {got == sorted(got)}"
                )
        return problems


# --- the gateway's process ----------------------------------------------------------


class ProcessWatch:
    """Samples the gateway's RSS and notices its death, in a thread."""

    def __init__(self, gateway: RunningGateway, interval_s: float = 0.2) -> None:
        self.gateway = gateway
        self.process = psutil.Process(gateway.process.pid)
        self.interval_s = interval_s
        self.max_rss = 0
        #: The gateway's CPU time (user + system) at the last sample.
        self.cpu_s = 0.0
        self.samples = 0
        self.died: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._check()

    def _check(self) -> None:
        code = self.gateway.process.poll()
        if code is not None and self.died is None:
            self.died = code

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._check()
            if self.died is not None:
                return
            try:
                self.max_rss = max(self.max_rss, self.process.memory_info().rss)
                times = self.process.cpu_times()
                self.cpu_s = times.user + times.system
                self.samples += 1
            except psutil.Error:
                self._check()


# --- the gateway's account of each attacker connection ------------------------------


def close_events_by_client(events: list[Event]) -> dict[str, list[Event]]:
    """``connection_closed`` / ``connection_refused`` events, by client ``ip:port``."""
    by_client: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.get("event") in ("connection_closed", "connection_refused") and event.get(
            "client"
        ):
            by_client[event["client"]].append(event)
    return by_client


def reason_class(reason: str) -> str:
    """A reason with its numbers and quoted parts blanked, to count closes by kind."""
    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    return re.sub(r"\d+", "N", reason)[:90]


def match_closes(result: FloodResult, events: list[Event]) -> tuple[list[Any], list[Any]]:
    """Pair each attacker connection with its close event: (pairs, unmatched records).

    Ports are reused over a long flood, so events of one ``ip:port`` are consumed in order.
    """
    by_client = close_events_by_client(events)
    pairs, unmatched = [], []
    for record in result.connections:
        queue = by_client.get(record.local)
        if queue:
            pairs.append((record, queue.pop(0)))
        else:
            unmatched.append(record)
    return pairs, unmatched


def wait_for_closes(gateway: RunningGateway, result: FloodResult, timeout: float = 30) -> Any:
    """The gateway logs a close shortly after it happens: wait until all are there."""
    deadline = time.monotonic() + timeout
    while True:
        pairs, unmatched = match_closes(result, gateway.events())
        if not unmatched or time.monotonic() > deadline or gateway.process.poll() is not None:
            return pairs, unmatched
        time.sleep(0.5)


CLIENT_CLOSED = "client closed the connection"


def close_problems(pairs: list[Any], unmatched: list[Any]) -> list[str]:
    problems = []
    if unmatched:
        kinds = Counter(r.kind for r in unmatched)
        problems.append(
            f"{len(unmatched)} attacker connections have no connection_closed/refused event "
            f"({dict(kinds)}), e.g. {[r.local for r in unmatched[:3]]}"
        )
    no_reason = [(r, e) for r, e in pairs if not e.get("reason") or e["reason"] == "unknown"]
    if no_reason:
        problems.append(f"{len(no_reason)} closes without a reason, e.g. {no_reason[0][1]}")
    internal = [(r, e) for r, e in pairs if str(e.get("reason", "")).startswith("internal error")]
    if internal:
        reasons = Counter(reason_class(e["reason"]) for _r, e in internal)
        problems.append(
            f"{len(internal)} connections closed as internal errors (not typed input errors): "
            f"{reasons.most_common(5)}"
        )
    # The gateway closed these itself: the reason must say why, not blame the client.
    wrong = [(r, e) for r, e in pairs if r.closed_by_gateway and e.get("reason") == CLIENT_CLOSED]
    if wrong:
        problems.append(f"{len(wrong)} gateway-side closes are logged as {CLIENT_CLOSED!r}")
    # Silent and slowloris connections never log in: the gateway refuses them (per-IP cap)
    # or closes them at its authentication deadline; the flood never closes them.
    for kind in ("silent", "slowloris"):
        ours = [(r, e) for r, e in pairs if r.kind == kind]
        if not ours:
            problems.append(f"no {kind} connection was made")
        not_by_gateway = [r for r, _e in ours if not r.closed_by_gateway]
        if not_by_gateway:
            problems.append(f"{len(not_by_gateway)} {kind} connections not closed by the gateway")
        other = Counter(
            reason_class(str(e.get("reason")))
            for _r, e in ours
            if not _deadline_or_cap(e, allow_refusal=kind == "silent")
        )
        if other:
            problems.append(f"{kind} connections closed for other reasons: {other.most_common(5)}")
    silent = Counter(
        e.get("event") for r, e in pairs if r.kind == "silent" and _deadline_or_cap(e, True)
    )
    if not silent["connection_closed"] or not silent["connection_refused"]:
        problems.append(
            f"silent connections: {dict(silent)}; the test expects some held until the "
            f"deadline and some refused by the per-IP cap (see LIMITS)"
        )
    giant = [(r, e) for r, e in pairs if r.kind == "giant-frame" and r.frames_sent]
    if len(giant) < 2:
        problems.append(
            f"{len(giant)} 1 GiB frames were sent, expected one before, one after login"
        )
    for record, event in pairs:
        if record.kind == "giant-frame" and record.frames_sent:
            reason = str(event.get("reason", ""))
            if not record.closed_by_gateway or "frame" not in reason:
                problems.append(
                    f"a 1 GiB frame declaration was not refused as a frame error: closed by "
                    f"gateway {record.closed_by_gateway}, reason {reason!r}"
                )
    return problems


def _deadline_or_cap(event: Event, allow_refusal: bool) -> bool:
    reason = str(event.get("reason", ""))
    if event.get("event") == "connection_refused":
        return allow_refusal and UNAUTHENTICATED_CAP in reason
    return reason.startswith(DEADLINE_REASON)


def good_client_refusals(events: list[Event]) -> list[str]:
    """Refusals of the good clients' connections (127.0.0.1): there must be none."""
    return [
        f"{e.get('client')}: {e.get('reason')}"
        for e in events
        if e.get("event") == "connection_refused"
        and str(e.get("client", "")).startswith("127.0.0.1:")
    ]


def never_reader_problems(result: FloodResult) -> list[str]:
    """A client that never reads must end up blocked (the gateway stops reading it), not
    buffered without bound; the RSS bound checks the memory side."""
    records = [r for r in result.connections if r.kind == "never-reader" and r.frames_sent]
    blocked = [r for r in records if r.send_blocked or r.closed_by_gateway]
    if records and len(blocked) < len(records):
        return [
            f"{len(records) - len(blocked)} of {len(records)} never-reading clients could send "
            f"until the end ({[r.frames_sent for r in records]} frames): no backpressure"
        ]
    return [] if records else ["no never-reading client connected"]


# --- the test -----------------------------------------------------------------------

#: Mutated frames the gateway must take in: the issue's 100,000. Measured 2026-12-03 on
#: the 2-core machine with a CI run beside it: 100,000 taken in after 94 s of flood (120 s
#: for the whole test) beside the good pair and 5,000 silent connections. Before the
#: gateway preloaded its request decoders the same flood managed 100-200 frames/s.
#: FLOOD_FRAMES=... (or `make flood FLOOD_FRAMES=...`) chooses another size.
FRAME_TARGET = int(os.environ.get("FLOOD_FRAMES", "100000"))
#: The flood gives up (and fails) after this long: five times the rate measured above.
TIME_LIMIT_S = max(200.0, FRAME_TARGET / 200)


@pytest.mark.timeout(TIME_LIMIT_S + 240)  # the flood, then the good pair's drain and closes
def test_flood_leaves_the_gateway_and_good_clients_unharmed(
    flood_gateway: RunningGateway,
) -> None:
    gateway = flood_gateway
    host, port = gateway.bootstrap.rsplit(":", 1)
    plan = FloodPlan(
        host=host,
        port=int(port),
        login=ScramLogin("mallory", PASSWORDS["mallory"]),
        names=Names(topic=ATTACK_TOPIC, group=ATTACK_GROUP, other_topic=GOOD_TOPIC),
        frame_target=FRAME_TARGET,
        time_limit_s=TIME_LIMIT_S,
        gateway_closes_within_s=LIMITS["authentication_timeout_ms"] / 1000 + 10,
        **json.loads(os.environ.get("FLOOD_PLAN", "{}")),  # for experiments
    )
    pair = GoodPair(gateway)
    with ProcessWatch(gateway) as watch:
        threads = pair.start()
        # The good pair is running (a record went through) before the flood starts.
        deadline = time.monotonic() + 30
        while not pair.consumed and not pair.errors and time.monotonic() < deadline:
            time.sleep(0.1)
        counter = GatewayFrameCounter(gateway.log_path)
        test_cpu_s = -sum(psutil.Process().cpu_times()[:2])
        result = run_flood(plan, lambda: watch.died is not None, counter)
        test_cpu_s += sum(psutil.Process().cpu_times()[:2])
        pair.stop_producing.set()
        threads[0].join(timeout=60)
        deadline = time.monotonic() + 30
        while not pair.all_consumed() and watch.died is None and time.monotonic() < deadline:
            time.sleep(0.2)
        pair.stop_consuming.set()
        threads[1].join(timeout=30)
        pairs, unmatched = wait_for_closes(gateway, result)
        result.frames_processed = counter(result)
        events = gateway.events()

    closes = Counter(reason_class(str(e.get("reason"))) for _r, e in pairs)
    print(result.summary())
    print(f"  gateway closes by reason ({len(pairs)} matched, {len(unmatched)} unmatched):")
    for reason, count in closes.most_common(15):
        print(f"    {count:6d}  {reason}")
    print(
        f"  gateway max RSS {watch.max_rss / 2**20:.0f} MiB over {watch.samples} samples "
        f"(bound {RSS_BOUND_BYTES / 2**20:.0f} MiB); gateway CPU {watch.cpu_s:.0f}s, "
        f"test process CPU {test_cpu_s:.0f}s; good pair: {pair.sent} produced, "
        f"{sum(len(r) for r in pair.acknowledged.values())} acknowledged, "
        f"{sum(len(r) for r in pair.consumed.values())} consumed"
    )

    problems = []
    if watch.died is not None:
        problems.append(
            f"the gateway process died (exit code {watch.died}); log tail:\n{gateway.tail(15)}"
        )
    if result.frames_processed < plan.frame_target:
        problems.append(
            f"the gateway took in only {result.frames_processed} of {plan.frame_target} "
            f"mutated frames: the flood stopped because {result.stopped_because}"
        )
    if watch.max_rss >= RSS_BOUND_BYTES:
        problems.append(
            f"gateway RSS reached {watch.max_rss / 2**20:.0f} MiB, "
            f"above the bound of {RSS_BOUND_BYTES / 2**20:.0f} MiB"
        )
    problems += pair.problems()
    problems += close_problems(pairs, unmatched)
    problems += [f"a good client was refused: {r}" for r in good_client_refusals(events)]
    problems += never_reader_problems(result)
    assert not problems, "\n".join(["the flood broke guarantees:", *problems])
