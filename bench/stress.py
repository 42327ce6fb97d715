"""The overload cases: what one server process does once demand passes what it delivers.

Each case is an ordinary fan-out case (bench/run.py's `run_case`: a fresh server on its
own core, N streams opened at once, every delivery recorded) with one phase of its own:

- overload: N streams (5,000), events at a fixed rate (40/s) for a fixed time (10 s),
  one `send_event` per event: more deliveries per second than one core writes event by
  event. p50/p99 publish-to-arrival, lost, deliveries/s; ours, django-eventstream and
  the raw ceiling.
- saturation: N streams (1,000), events published in lists (10 per call) through each
  system's bulk path (ours `send_events`, the raw ceiling a Redis pipeline), so that the
  publisher is never the bound: deliveries/s and server CPU per delivery. Ours and the
  raw ceiling (django-eventstream has no bulk path).
- burst: N streams (1,000), 1,000 events published at once (one `send_events` call, one
  pipeline for the raw ceiling): the time from the call until the last stream has the
  last event. Ours and the raw ceiling.

RSS per stream at 10,000 streams is the fan-out's RSS-only case (`--case rss`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.run import Phase, Plan, System, run_case

# The cases with a peer worth running: django-eventstream publishes one event per call.
PEERLESS = {"saturation", "burst"}


def phases(plan: Plan, kind: str) -> tuple[int, list[Phase]]:
    """N and the one phase of a case."""
    if kind == "overload":
        count = round(plan.overload_rate * plan.overload_seconds)
        return plan.overload_size, [Phase("overload", count, plan.overload_rate, slack=60, per_second=10_000)]
    if kind == "saturation":
        phase = Phase("saturation", plan.bulk_events, 0.0, batch=plan.bulk_batch, slack=60, per_second=10_000)
        return plan.bulk_size, [phase]
    if kind == "burst":
        phase = Phase("burst", plan.burst_events, 0.0, batch=plan.burst_events, slack=60, per_second=10_000)
        return plan.burst_size, [phase]
    raise ValueError(f"unknown case {kind!r}")


def run_stress(plan: Plan, chosen: list[System], redis_url: str, tmp: Path) -> list[dict[str, Any]]:
    """Each case in turn, and within a case each system in turn (ours, the peer, raw)."""
    results = []
    for kind in plan.stress:
        n, case_phases = phases(plan, kind)
        for system in chosen:
            if system.name == "eventstream" and kind in PEERLESS:
                continue
            results.append(run_case(system, n, plan, redis_url, tmp, phases=case_phases, kind=kind))
    return results
