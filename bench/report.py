"""Turning a results dict into the printed table, the README's markdown and the plot.

Ratios read the same way in every row: "vs django-eventstream" is how many times better
ours is (theirs / ours for costs, ours / theirs for throughput), "vs raw ceiling" is
how far from the ceiling ours is (ours / raw for costs, raw / ours for throughput).
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.run import PEER_VENV, ROOT

Case = dict[str, Any]
# (label, getter, format, higher_is_better)
Metric = tuple[str, Callable[[Case], float | None], str, bool]


def _get(*keys: str) -> Callable[[Case], float | None]:
    def getter(case: Case) -> float | None:
        value: Any = case
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value  # type: ignore[no-any-return]

    return getter


def _percent(*keys: str) -> Callable[[Case], float | None]:
    getter = _get(*keys)

    def percent(case: Case) -> float | None:
        value = getter(case)
        return None if value is None else value * 100

    return percent


def _percent_of(getter: Callable[[Case], float | None]) -> Callable[[Case], float | None]:
    def percent(case: Case) -> float | None:
        value = getter(case)
        return None if value is None else value * 100

    return percent


def _rss(case: Case) -> float | None:
    # A server that answered no stream has no per-stream figure.
    if not case.get("open", {}).get("ready"):
        return None
    return _get("open", "rss_per_stream_kb")(case)


def _ok200(case: Case) -> float | None:
    return case.get("open", {}).get("statuses", {}).get("200", 0)


def _lost(case: Case) -> float | None:
    if "latency" not in case:
        return None
    return case["latency"]["lost"] + case.get("saturation", {}).get("lost", 0)


def _dup(case: Case) -> float | None:
    if "latency" not in case:
        return None
    return case["latency"]["duplicated"] + case.get("saturation", {}).get("duplicated", 0)


LOAD_METRICS: list[Metric] = [
    ("streams answered 200", _ok200, "{:,.0f}", True),
    ("time to open N streams (s)", _get("open", "seconds"), "{:.2f}", False),
    ("latency p50 @ 20 ev/s (ms)", _get("latency", "latency_ms", "p50"), "{:.1f}", False),
    ("latency p99 @ 20 ev/s (ms)", _get("latency", "latency_ms", "p99"), "{:.1f}", False),
    ("latency max @ 20 ev/s (ms)", _get("latency", "latency_ms", "max"), "{:.1f}", False),
    ("saturation deliveries/s", _get("saturation", "deliveries_per_second"), "{:,.0f}", True),
    (
        "server CPU per delivery at saturation (us)",
        _get("saturation", "server_us_per_delivery"),
        "{:.1f}",
        False,
    ),
    ("server CPU per delivery @ 20 ev/s (us)", _get("latency", "server_us_per_delivery"), "{:.1f}", False),
    ("lost deliveries", _lost, "{:,.0f}", False),
    ("duplicated deliveries", _dup, "{:,.0f}", False),
    ("RSS per open stream (KB)", _rss, "{:.1f}", False),
    ("server busy at saturation (% of its core)", _percent("saturation", "server_cpu_busy"), "{:.0f}", True),
    ("load generator busy at saturation (%)", _percent("saturation", "client_busy"), "{:.0f}", False),
]
RSS_METRICS: list[Metric] = [
    ("streams answered 200", _ok200, "{:,.0f}", True),
    ("time to open N streams (s)", _get("open", "seconds"), "{:.2f}", False),
    ("RSS per open stream (KB)", _rss, "{:.1f}", False),
]


def _phase_get(*keys: str) -> Callable[[Case], float | None]:
    """A figure of a stress case's one phase (named as its kind)."""

    def getter(case: Case) -> float | None:
        return _get(case["kind"], *keys)(case)

    return getter


STRESS_TITLES = {
    "overload": "overload N={n:,}, {count:,} at {rate:g}/s",
    "saturation": "saturation N={n:,}, {count:,} in lists of {batch:,}",
    "burst": "burst N={n:,}, {count:,} at once",
}
STRESS_METRICS: list[Metric] = [
    ("streams answered 200", _ok200, "{:,.0f}", True),
    ("time to open N streams (s)", _get("open", "seconds"), "{:.2f}", False),
    ("latency p50 (ms)", _phase_get("latency_ms", "p50"), "{:.1f}", False),
    ("latency p99 (ms)", _phase_get("latency_ms", "p99"), "{:.1f}", False),
    ("latency max (ms)", _phase_get("latency_ms", "max"), "{:.1f}", False),
    ("first publish to last delivery (s)", _phase_get("seconds"), "{:.2f}", False),
    ("deliveries/s", _phase_get("deliveries_per_second"), "{:,.0f}", True),
    ("publisher events/s", _phase_get("publish_rate"), "{:,.0f}", True),
    ("server CPU per delivery (us)", _phase_get("server_us_per_delivery"), "{:.1f}", False),
    ("lost deliveries", _phase_get("lost"), "{:,.0f}", False),
    ("duplicated deliveries", _phase_get("duplicated"), "{:,.0f}", False),
    ("server busy (% of its core)", _percent_of(_phase_get("server_cpu_busy")), "{:.0f}", True),
    ("load generator busy (%)", _percent_of(_phase_get("client_busy")), "{:.0f}", False),
]
NO_RATIO = {
    "publisher events/s",
    "server busy (% of its core)",
    "load generator busy (%)",
    "streams answered 200",
    "lost deliveries",
    "duplicated deliveries",
    "server busy at saturation (% of its core)",
    "load generator busy at saturation (%)",
}


def _fmt(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def _ratio(ours: float | None, other: float | None, higher_is_better: bool, vs_ceiling: bool) -> str:
    if ours is None or other is None or not ours or not other:
        return "-"
    if any(isinstance(v, float) and math.isnan(v) for v in (ours, other)):
        return "-"
    if vs_ceiling:
        value = other / ours if higher_is_better else ours / other
    else:
        value = ours / other if higher_is_better else other / ours
    return f"{value:.1f}x" if value >= 1 else f"{value:.2f}x"


def rows(results: dict[str, Any]) -> list[list[str]]:
    cases = results["cases"]
    header = [
        "N",
        "metric",
        "ours",
        "django-eventstream",
        "vs django-eventstream",
        "raw ceiling",
        "vs raw ceiling",
    ]
    out = [header]
    groups: list[tuple[int, bool]] = []
    for case in cases:
        key = (case["n"], case["rss_only"])
        if key not in groups:
            groups.append(key)
    for n, rss_only in groups:
        by_system = {c["system"]: c for c in cases if c["n"] == n and c["rss_only"] == rss_only}
        for metric in RSS_METRICS if rss_only else LOAD_METRICS:
            out.append(_compared(f"{n:,}", metric, by_system))
    return out


def stress_rows(results: dict[str, Any]) -> list[list[str]]:
    """The overload cases (bench/stress.py), in the fan-out table's columns: the first
    column names the case."""
    cases: list[Case] = results.get("stress") or []
    out = [["case", *rows({"cases": []})[0][1:]]]
    kinds: list[str] = []
    for case in cases:
        if case["kind"] not in kinds:
            kinds.append(case["kind"])
    for kind in kinds:
        by_system = {c["system"]: c for c in cases if c["kind"] == kind}
        some = next(iter(by_system.values()))
        phase = next((c[kind] for c in by_system.values() if kind in c), {})
        title = STRESS_TITLES[kind].format(
            n=some["n"],
            rate=phase.get("rate", 0),
            count=phase.get("expected", 0) // max(some.get("open", {}).get("ready", 1), 1),
            batch=phase.get("batch", 1),
        )
        for metric in STRESS_METRICS:
            out.append(_compared(title, metric, by_system))
    return out


SYSTEMS = ("ours", "eventstream", "raw")


def _compared(first: str, metric: Any, by_system: dict[str, Any]) -> list[str]:
    """One table row: a metric for each system, with ours' ratios to the peer and to raw."""
    label, getter, fmt, higher = metric
    ours, peer, raw = (getter(by_system[s]) if s in by_system else None for s in SYSTEMS)
    compare = label not in NO_RATIO
    return [
        first,
        label,
        _fmt(ours, fmt),
        _fmt(peer, fmt),
        _ratio(ours, peer, higher, False) if compare else "",
        _fmt(raw, fmt),
        _ratio(ours, raw, higher, True) if compare else "",
    ]


PUBLISH_HEADER = [
    "publisher",
    "events/s",
    "call p50 (ms)",
    "call p99 (ms)",
    "to Redis p50 (ms)",
    "vs django-eventstream stored (same DB)",
    "vs django-eventstream no storage",
]


def _peer_rate(rows: list[Case], system: str, db: str | None) -> float | None:
    for row in rows:
        if row.get("system") == system and (db is None or row.get("db") == db):
            return float(row["events_per_second"])
    return None


def publish_rows(results: dict[str, Any]) -> list[list[str]]:
    """The publishing section: events per second (higher is better) and the ratio of
    ours to django-eventstream's send_event in the same run."""
    published: list[Case] = results.get("publishing") or []
    out = [PUBLISH_HEADER]
    for row in published:
        # Ratios for the Python calls: django-eventstream has no HTTP publishing endpoint.
        ours = row.get("system") == "ours" and "statuses" not in row
        rate = float(row["events_per_second"])
        stored = _peer_rate(published, "eventstream", row.get("db"))
        bare = _peer_rate(published, "eventstream-nostore", None)
        arrival = row.get("arrival_ms", {}).get("p50")
        out.append(
            [
                row["label"],
                _fmt(rate, "{:,.0f}"),
                _fmt(row["call_ms"]["p50"], "{:.2f}"),
                _fmt(row["call_ms"]["p99"], "{:.2f}"),
                _fmt(arrival, "{:.2f}"),
                _ratio(rate, stored, True, False) if ours else "",
                _ratio(rate, bare, True, False) if ours else "",
            ]
        )
    return out


def _aligned(table: list[list[str]], left: int) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return [
        "  ".join(cell.ljust(widths[i]) if i < left else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in table
    ]


def _grouped(table: list[list[str]]) -> list[str]:
    """A table whose first column groups its rows, a rule between groups."""
    lines = []
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    previous = None
    for row in table:
        if previous is not None and row[0] != previous:
            lines.append("-" * (sum(widths) + 2 * len(widths)))
        previous = row[0]
        lines.append(
            "  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        )
    return lines


def text(results: dict[str, Any]) -> str:
    lines = []
    if results.get("publishing"):
        lines += ["Publishing (one process, one channel):", *_aligned(publish_rows(results), 1), ""]
    if results["cases"]:
        lines += _grouped(rows(results))
    if results.get("stress"):
        lines += ["", "Overload cases (bench/stress.py):", *_grouped(stress_rows(results))]
    machine = results["machine"]
    lines.append(
        f"({machine['cores']} cores, {machine['cpu']}; Python {machine['python']}; "
        f"server and Redis pinned to CPU {machine['server_cpu']}, load generator and publisher "
        f"to CPU {machine['client_cpu']}: {machine['pinned']}; {results['seconds']:.0f} s)"
    )
    return "\n".join(lines)


def publish_markdown(results: dict[str, Any]) -> str:
    table = publish_rows(results)
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "|".join(["---"] + ["---:"] * 6) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    return "\n".join(lines) + "\n"


def _grouped_markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 5) + "|"]
    previous = None
    for row in table[1:]:
        cells = list(row)
        if cells[0] == previous:
            cells[0] = ""
        else:
            previous = cells[0]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(results: dict[str, Any]) -> str:
    parts = []
    if results.get("publishing"):
        parts.append(publish_markdown(results))
    if results["cases"]:
        parts.append(_grouped_markdown(rows(results)))
    if results.get("stress"):
        parts.append(_grouped_markdown(stress_rows(results)))
    return "\n".join(parts)


def write_markdown(results: dict[str, Any], path: Path) -> None:
    path.write_text(markdown(results))


def plot(results: dict[str, Any], path: Path) -> None:
    """Drawn by bench/plot.py in the benchmark's virtualenv, which has matplotlib."""
    python = PEER_VENV / "bin" / "python"
    source = path.with_suffix(".json")
    subprocess.run([str(python), "-m", "bench.plot", str(source), str(path)], cwd=ROOT, check=True)


def totals(results: dict[str, Any]) -> dict[str, int]:
    ours = [c for c in results["cases"] if c["system"] == "ours"]
    lost = sum(int(_lost(c) or 0) for c in ours)
    duplicated = sum(int(_dup(c) or 0) for c in ours)
    non_200 = sum(c["n"] - int(_ok200(c) or 0) for c in ours)
    for case in results.get("stress") or []:
        if case["system"] == "ours":
            lost += int(case.get(case["kind"], {}).get("lost", 0))
            duplicated += int(case.get(case["kind"], {}).get("duplicated", 0))
            non_200 += case["n"] - int(_ok200(case) or 0)
    for row in results.get("publishing") or []:
        lost += int(row.get("lost", 0))
        duplicated += int(row.get("duplicated", 0))
        non_200 += sum(count for status, count in row.get("statuses", {}).items() if status != "201")
    return {"lost": lost, "duplicated": duplicated, "non_200": non_200}


def check(results: dict[str, Any]) -> tuple[bool, list[str]]:
    """Our product's delivery guarantees in this run: all streams 200, 0 lost, 0 dup."""
    problems = []
    for case in results["cases"]:
        if case["system"] != "ours":
            continue
        n = case["n"]
        if case.get("open", {}).get("ready", 0) != n:
            problems.append(
                f"N={n}: {case.get('open', {}).get('ready', 0)} of {n} streams subscribed "
                f"(statuses {case.get('open', {}).get('statuses')})"
            )
        if case["rss_only"]:
            continue
        for phase in ("latency", "saturation"):
            if phase not in case:
                problems.append(f"N={n}: no {phase} phase")
                continue
            data = case[phase]
            if data["lost"] or data["duplicated"]:
                problems.append(f"N={n} {phase}: {data['lost']} lost, {data['duplicated']} duplicated")
    for case in results.get("stress") or []:
        if case["system"] != "ours":
            continue
        n, kind = case["n"], case["kind"]
        if case.get("open", {}).get("ready", 0) != n:
            problems.append(f"{kind} N={n}: {case.get('open', {}).get('ready', 0)} of {n} streams subscribed")
        elif kind not in case:
            problems.append(f"{kind} N={n}: no phase")
        elif case[kind]["lost"] or case[kind]["duplicated"]:
            problems.append(f"{kind} N={n}: {case[kind]['lost']} lost, {case[kind]['duplicated']} duplicated")
    for row in results.get("publishing") or []:
        if row.get("system") != "ours":
            continue
        if row.get("lost") or row.get("duplicated"):
            problems.append(f"{row['label']}: {row['lost']} lost, {row['duplicated']} duplicated at Redis")
        bad = {status: count for status, count in row.get("statuses", {}).items() if status != "201"}
        if bad:
            problems.append(f"{row['label']}: answers other than 201: {bad}")
    return not problems, problems
