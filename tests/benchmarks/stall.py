"""Event-loop stall of the worst checked requests (part of ``make bench``).

Each request of :mod:`tests.worst_requests` (100,000 refused topics for
Metadata, 20,000 entries for the others; every entry refused) goes through the
gateway's own ``Enforcement.authorize`` (ACL checks, local answer, audit event)
and, for a forwarded request, its response transform on an empty upstream
answer, inside a Trio task, while a probe task wakes every millisecond: the
longest gap the probe saw is the stall every other connection of the process
would see. Printed as ms of stall per MiB of request (target: under 100).
In process, without sockets: framing and I/O are not part of the figure.

Run alone: ``python -m tests.benchmarks.stall [--entries N]``.
"""

from __future__ import annotations

import argparse
import logging
import time
from types import SimpleNamespace
from typing import Any

import structlog
import trio

from codec.headers import parse_request_header
from gateway.decision_threads import freeze_start_up_objects
from gateway.enforcement import Enforcement
from policies.acl.config import AuthorizationConfig
from policies.acl.engine import AclEngine
from policies.auth.principal import Principal
from tests.worst_requests import WORST_REQUESTS, worst_request

__all__ = ["measure_stalls"]

ACL = AuthorizationConfig.model_validate({"default": "deny", "rules": []})
METADATA_TOPICS = 100_000


def _enforcement() -> Enforcement:
    cluster = SimpleNamespace(
        name="bench",
        policies=SimpleNamespace(acl=AclEngine(ACL)),
        topic_name=lambda _: None,
        known_topic_name=lambda _: None,
    )
    auth = SimpleNamespace(
        principal=Principal(name="mallory", mechanism="PLAIN"), client_address="127.0.0.1:1"
    )
    return Enforcement(cluster, auth, structlog.get_logger("bench"))  # type: ignore[arg-type]


async def _stall_ms(frame: bytes, api_key: int) -> tuple[float, float]:
    """``(longest probe gap, CPU time of the check)`` in ms."""
    version = parse_request_header(frame).api_version
    longest = 0.0
    done = False

    async def probe() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await trio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await trio.sleep(0.01)
        await trio.lowlevel.checkpoint()
        cpu = time.process_time()
        verdict = await _enforcement().authorize(api_key, version, frame, "bench")
        cpu = time.process_time() - cpu
        assert verdict.forward is not None or verdict.local_response is not None
        await trio.sleep(0.01)
        done = True
    return longest * 1000, cpu * 1000


def measure_stalls(entries: int = 20_000) -> dict[str, dict[str, Any]]:
    """``{api: {"entries", "request_mib", "stall_ms", "ms_per_mib", "cpu_ms_per_mib"}}``."""
    # The audit events go to a null sink: the figure is the gateway's work, not the
    # terminal's; one event per request either way.
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    logging.disable(logging.CRITICAL)
    results: dict[str, dict[str, Any]] = {}
    for name in WORST_REQUESTS:
        count = METADATA_TOPICS if name == "Metadata" else entries
        api_key, frame = worst_request(name, count)
        trio.run(_stall_ms, *worst_request(name, 8)[::-1])  # warm the caches
        freeze_start_up_objects()  # as the gateway does once its decoders are loaded
        stall, cpu = trio.run(_stall_ms, frame, api_key)
        mib = len(frame) / 2**20
        results[name] = {
            "entries": count,
            "request_mib": round(mib, 2),
            "stall_ms": round(stall, 1),
            "ms_per_mib": round(stall / mib, 1),
            # Less sensitive to other processes on a busy machine than the stall.
            "cpu_ms_per_mib": round(cpu / mib, 1),
        }
    structlog.reset_defaults()
    logging.disable(logging.NOTSET)
    return results


def format_stalls(results: dict[str, dict[str, Any]]) -> str:
    lines = ["event-loop stall of the worst checked requests (all entries refused):"]
    for name, r in results.items():
        lines.append(
            f"  {name:<20} {r['entries']:>7,} entries {r['request_mib']:6.2f} MiB "
            f"stall {r['stall_ms']:8.1f} ms = {r['ms_per_mib']:7.1f} ms/MiB "
            f"(CPU {r['cpu_ms_per_mib']:7.1f} ms/MiB)"
        )
    worst = max(r["ms_per_mib"] for r in results.values())
    lines.append(f"  worst {worst:.1f} ms of stall per MiB (target: under 100)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    args = parser.parse_args()
    print(format_stalls(measure_stalls(args.entries)))


if __name__ == "__main__":
    main()
