"""Draw the benchmark's plot: python -m bench.plot RESULTS.json OUT.png

Run in the benchmark's virtualenv (it has matplotlib; the project's does not).
Left: delivery latency at 20 events/s against N (p99 solid, p50 dashed). Right:
deliveries per second at saturation against N. Log scales on both axes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "ours": ("ours (daphne)", "tab:blue"),
    "eventstream": ("django-eventstream 5.3 (daphne)", "tab:red"),
    "raw": ("raw ASGI ceiling (uvicorn)", "tab:gray"),
}


def _draw(axis: Any, cases: list[dict[str, Any]], phase: str, color: str, label: str) -> None:
    """One system's line; a point where deliveries were lost says how many, and a
    saturation point where the server was not busy says it was the publisher's limit."""
    points = []
    for case in cases:
        data = case[phase]
        value = data["latency_ms"]["p99"] if phase == "latency" else data["deliveries_per_second"]
        if value and value == value:  # no point for 0 or NaN on a log scale
            points.append((case["n"], value, data))
    if not points:
        return
    ns = [n for n, _, _ in points]
    axis.plot(
        ns, [v for _, v, _ in points], "o-", color=color, label=label + (" p99" if phase == "latency" else "")
    )
    if phase == "latency":
        p50 = [data["latency_ms"]["p50"] for _, _, data in points]
        axis.plot(ns, p50, "o--", color=color, alpha=0.5, label=f"{label} p50")
    for n, value, data in points:
        notes = []
        if data["lost"]:
            notes.append(f"{100 * data['lost'] / data['expected']:.0f}% lost")
        if phase == "saturation" and data["server_cpu_busy"] < 0.8:
            notes.append("publisher-bound")
        if notes:
            axis.annotate(
                ", ".join(notes),
                (n, value),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
                color=color,
            )


def main(source: str, out: str) -> None:
    results = json.loads(Path(source).read_text())
    cases = [c for c in results["cases"] if not c["rss_only"] and "latency" in c]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for system, (label, color) in STYLE.items():
        mine = sorted((c for c in cases if c["system"] == system), key=lambda c: c["n"])
        if not mine:
            continue
        _draw(left, mine, "latency", color, label)
        _draw(right, mine, "saturation", color, label)
    rate = results["plan"]["rate"]
    left.set(
        xscale="log",
        yscale="log",
        xlabel="open streams N",
        ylabel="publish-to-arrival latency (ms)",
        title=f"Latency at {rate:g} events/s",
    )
    right.set(
        xscale="log",
        yscale="log",
        xlabel="open streams N",
        ylabel="deliveries per second",
        title="Deliveries/s at saturation",
    )
    for axis, value, label in ((left, 50, "target p99 50 ms"), (right, 50_000, "target 50,000/s")):
        axis.axhline(value, color="tab:green", linestyle=":", linewidth=1)
        axis.annotate(
            f"{label} (N=1,000)",
            (0.02, value),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            color="tab:green",
            va="bottom",
        )
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    machine = results["machine"]
    fig.suptitle(
        f"One server process on one core ({machine['cpu']}); client and publisher on the other", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
