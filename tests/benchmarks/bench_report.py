"""Collect benchmark samples and present them: a table for people, JSON for machines.

Every metric is sampled once per repetition and side (direct, gateway, gateway with N
workers). Ratios and differences are taken per repetition - direct and gateway runs of
one repetition are neighbours in time, so pairing them cancels slow drifts of the
machine - and then summarised like the values: median and min-max.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DIRECT = "direct"
GATEWAY = "gateway"


def workers_side(workers: int) -> str:
    return f"gateway_{workers}_workers"


@dataclass(frozen=True)
class Stat:
    """Median and range of one metric over the repetitions."""

    median: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), tuple(values))

    def as_json(self) -> dict[str, Any]:
        return {
            "median": _round(self.median),
            "min": _round(self.low),
            "max": _round(self.high),
            "values": [_round(v) for v in self.values],
        }


def _round(value: float) -> float:
    return round(value, 4) if abs(value) < 100 else round(value, 1)


class Samples:
    """metric -> side -> one value per repetition (in repetition order)."""

    def __init__(self) -> None:
        self._values: defaultdict[str, defaultdict[str, list[float]]] = defaultdict(
            lambda: defaultdict(list)
        )

    def add(self, metric: str, side: str, value: float) -> None:
        self._values[metric][side].append(value)

    def get(self, metric: str, side: str) -> list[float]:
        return list(self._values.get(metric, {}).get(side, []))

    def checkpoint(self) -> dict[tuple[str, str], int]:
        """How many values each (metric, side) has now, for `rollback`."""
        return {
            (metric, side): len(values)
            for metric, sides in self._values.items()
            for side, values in sides.items()
        }

    def rollback(self, checkpoint: dict[tuple[str, str], int]) -> None:
        """Forget every value added since `checkpoint` (a measurement that is redone)."""
        for metric, sides in self._values.items():
            for side, values in sides.items():
                del values[checkpoint.get((metric, side), 0) :]

    def stat(self, metric: str, side: str) -> Stat | None:
        return Stat.of(self.get(metric, side))

    def paired(self, metric: str, side: str, op: str) -> Stat | None:
        """Per-repetition `side` / direct (op "ratio") or `side` - direct (op "diff")."""
        pairs = zip(self.get(metric, side), self.get(metric, DIRECT), strict=False)
        if op == "ratio":
            return Stat.of([s / d for s, d in pairs if d])
        return Stat.of([s - d for s, d in pairs])

    def as_json(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for metric, sides in self._values.items():
            stats = {side: Stat.of(values) for side, values in sides.items()}
            out[metric] = {side: stat.as_json() for side, stat in stats.items() if stat}
        return out


@dataclass(frozen=True)
class Row:
    """One table line: `metric` on both sides, compared as `op` ("ratio", "diff", "")."""

    label: str
    metric: str
    op: str = "ratio"
    side: str = GATEWAY
    direct: bool = True


def table_rows(workers: int) -> list[Row]:
    """The table, top to bottom; rows without samples are left out when printing."""
    rows = [
        Row("produce MB/s (1 KiB, acks=all)", "produce_mb_s"),
        Row("produce records/s", "produce_records_s"),
        Row("  gateway CPU s", "produce_gateway_cpu_s", "", direct=False),
        Row("  gateway millicores per MB/s", "produce_millicores_per_mb_s", "", direct=False),
        Row("  broker CPU cores", "produce_broker_cores", ""),
        Row("  machine busy cores", "produce_machine_cores", ""),
        Row("consume MB/s (fetch phase)", "consume_mb_s"),
        Row("consume MB/s (incl. group join)", "consume_total_mb_s"),
        Row("  gateway CPU s", "consume_gateway_cpu_s", "", direct=False),
        Row("  gateway millicores per MB/s", "consume_millicores_per_mb_s", "", direct=False),
        Row("  machine busy cores", "consume_machine_cores", ""),
        Row("latency p50 ms, steady state", "latency_p50_ms", "diff"),
        Row("latency p99 ms, steady state", "latency_p99_ms", "diff"),
        Row("latency p99.9 ms, steady state", "latency_p999_ms", "diff"),
        Row("  achieved records/s", "latency_records_s"),
        Row("  gateway CPU cores", "latency_gateway_cores", "", direct=False),
        Row("producer-perf p50 ms (incl. JVM start)", "perf_latency_p50_ms", "diff"),
        Row("producer-perf p99 ms (incl. JVM start)", "perf_latency_p99_ms", "diff"),
        Row("producer-perf p99.9 ms (incl. JVM start)", "perf_latency_p999_ms", "diff"),
        Row("  achieved records/s", "perf_latency_records_s"),
        Row("small requests/s (ApiVersions+Metadata)", "small_requests_s"),
        Row("  gateway CPU cores", "small_gateway_cores", "", direct=False),
        Row("  gateway CPU us per request", "small_gateway_us_per_request", "", direct=False),
        Row("  load generator CPU cores", "small_generator_cores", ""),
        Row("  broker CPU cores", "small_broker_cores", ""),
        Row("  machine busy cores", "small_machine_cores", ""),
        Row("gateway peak RSS MiB (whole run)", "gateway_peak_rss_mib", "", direct=False),
        Row("other processes' CPU cores (noise)", "other_processes_cores", ""),
    ]
    if workers > 1:
        side = workers_side(workers)
        rows += [
            Row(f"produce MB/s, {workers} gateway workers", "produce_mb_s", side=side),
            Row("  gateway CPU s (all workers)", "produce_gateway_cpu_s", "", side, False),
            Row("  gateway CPU cores (all workers)", "produce_gateway_cores", "", side, False),
            Row("  machine busy cores", "produce_machine_cores", "", side, False),
            Row("  gateway peak RSS MiB (all processes)", "gateway_peak_rss_mib", "", side, False),
        ]
    return rows


def fmt(stat: Stat | None, signed: bool = False) -> str:
    if stat is None:
        return "-"
    spec = "+.2f" if signed else ".2f" if abs(stat.median) < 100 else ".0f"
    text = format(stat.median, spec)
    if len(stat.values) > 1:
        text += f" [{format(stat.low, spec)}..{format(stat.high, spec)}]"
    return text


def format_table(samples: Samples, workers: int) -> str:
    """Median [min..max] per side, and gateway/direct (or gateway - direct)."""
    header = ("metric", "direct", "via gateway", "gateway/direct")
    lines = [header]
    for row in table_rows(workers):
        gateway = samples.stat(row.metric, row.side)
        if gateway is None:
            continue
        direct = samples.stat(row.metric, DIRECT) if row.direct else None
        compared = samples.paired(row.metric, row.side, row.op) if row.op and row.direct else None
        compared_text = fmt(compared, signed=row.op == "diff")
        if row.op == "diff" and compared is not None:
            compared_text += " ms (gw-direct)"
        lines.append((row.label, fmt(direct), fmt(gateway), compared_text))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def join(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [join(header), join(["-" * width for width in widths])]
    out += [join(line) for line in lines[1:]]
    return "\n".join(out)


def machine_info() -> dict[str, Any]:
    """Enough to tell whether two result files are comparable."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "java": _java_version(),
        "git": _git_revision(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _java_version() -> str:
    try:
        result = subprocess.run(
            ["java", "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = result.stderr.strip().splitlines()
    return lines[0] if lines else "unknown"


def _git_revision() -> str:
    """The checkout's commit, with "+dirty" when files differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            cwd=REPO_ROOT,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            cwd=REPO_ROOT,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if status.strip() else "")


def headline(samples: Samples, workers: int) -> dict[str, float | None]:
    """The keys a CI job or a reviewer looks at first (medians over repetitions)."""

    def median(stat: Stat | None) -> float | None:
        return None if stat is None else _round(stat.median)

    out = {
        "produce_ratio": median(samples.paired("produce_mb_s", GATEWAY, "ratio")),
        "consume_ratio": median(samples.paired("consume_mb_s", GATEWAY, "ratio")),
        "added_p99_ms": median(samples.paired("latency_p99_ms", GATEWAY, "diff")),
        "added_p99_ms_producer_perf": median(
            samples.paired("perf_latency_p99_ms", GATEWAY, "diff")
        ),
        "small_requests_per_s": median(samples.stat("small_requests_s", GATEWAY)),
        "small_requests_per_s_direct": median(samples.stat("small_requests_s", DIRECT)),
        "small_requests_ratio": median(samples.paired("small_requests_s", GATEWAY, "ratio")),
        "produce_millicores_per_mb_s": median(samples.stat("produce_millicores_per_mb_s", GATEWAY)),
        "consume_millicores_per_mb_s": median(samples.stat("consume_millicores_per_mb_s", GATEWAY)),
    }
    if workers > 1:
        side = workers_side(workers)
        out[f"produce_ratio_{workers}_workers"] = median(
            samples.paired("produce_mb_s", side, "ratio")
        )
    return out
