"""The benchmark's smoke mode: `python -m bench --smoke` runs our product at a tiny
size (a private Redis, daphne, the load generator and a publisher, each its own
process), a burst of events published at once, then each publishing path with a few
events, and must finish with every stream answered 200 and every event delivered exactly
once. Only completion and delivery counts are asserted, never a timing: the figures
belong to `make bench`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import SMOKE_PLAN

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_bench_smoke_delivers_every_event_exactly_once(tmp_path):
    out = tmp_path / "smoke.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    results = json.loads(out.read_text())
    (case,) = results["cases"]
    assert case["system"] == "ours"
    assert case["open"]["statuses"] == {"200": case["n"]}
    assert case["open"]["ready"] == case["n"]
    for phase in ("latency", "saturation"):
        assert case[phase]["lost"] == 0, case[phase]
        assert case[phase]["duplicated"] == 0, case[phase]
        assert case[phase]["deliveries"] == case[phase]["expected"] > 0, case[phase]
    # The burst case (bench/stress.py): a whole list of events published at once, each
    # delivered once to every stream.
    (burst,) = results["stress"]
    assert (burst["system"], burst["kind"]) == ("ours", "burst")
    assert burst["open"]["ready"] == burst["n"]
    phase = burst["burst"]
    assert (phase["lost"], phase["duplicated"]) == (0, 0), phase
    assert phase["deliveries"] == phase["expected"] == burst["n"] * SMOKE_PLAN.burst_events, phase
    # The publishing section: every event each publishing path stored reached the
    # channel layer exactly once, and every HTTP publish was answered 201.
    rows = results["publishing"]
    labels = [row["label"] for row in rows]
    paths = (
        "send_event (",
        "asend_event, 10 coroutines",
        "send_events, lists of 100",
        "POST /events/<channel>/",
        "POST /events/, lists of 100",
    )
    for path in paths:
        assert any(label.startswith(path) for label in labels), labels
    for row in rows:
        if "statuses" in row:
            assert row["statuses"] == {"201": row["requests"]} and row["requests"] > 0, row
            continue
        assert row["count"] > 0, row
        assert (row["received"], row["lost"], row["duplicated"]) == (row["count"], 0, 0), row
