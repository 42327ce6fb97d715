"""python -m bench [--smoke] [--sizes 100,1000,5000] [--systems ours,eventstream,raw]
[--sections fanout,rss,publishing,overload,saturation,burst] [--case overload]"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import report
from bench.publishing import PublishPlan
from bench.run import RESULTS, Plan, run, smoke_plan

STRESS = ("overload", "saturation", "burst")
SECTIONS = ("publishing", "fanout", *STRESS, "rss")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, our product only; exit 1 unless 0 lost and 0 duplicated",
    )
    parser.add_argument("--sizes", default="100,1000,5000", help="stream counts N, comma-separated")
    parser.add_argument("--systems", default="ours,eventstream,raw")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="fanout (streams, latency, saturation), rss (RSS only, --rss-size streams), publishing "
        "(send_event and the rest), and the overload cases (bench/stress.py): overload, saturation "
        "(bulk publishing), burst",
    )
    parser.add_argument("--case", default="", help="these sections alone (comma-separated), e.g. overload")
    parser.add_argument("--rss-size", type=int, default=10_000, help="N for the RSS-only case (0: none)")
    parser.add_argument("--overload-size", type=int, default=5000, help="N of the overload case")
    parser.add_argument("--overload-rate", type=float, default=40.0, help="its events per second")
    parser.add_argument("--overload-seconds", type=float, default=10.0, help="for how long")
    parser.add_argument("--saturation-size", type=int, default=1000, help="N of the bulk saturation case")
    parser.add_argument("--saturation-events", type=int, default=600, help="its events")
    parser.add_argument("--saturation-batch", type=int, default=10, help="its events per publishing call")
    parser.add_argument("--burst-size", type=int, default=1000, help="N of the burst case")
    parser.add_argument("--burst-events", type=int, default=1000, help="events published at once")
    parser.add_argument("--profile", default="", help="systems to sample with py-spy (e.g. ours)")
    parser.add_argument(
        "--out",
        default=None,
        help="results file (default: bench/results/latest.json; smoke: bench/results/tmp/smoke.json)",
    )
    args = parser.parse_args(argv)

    if args.smoke:
        plan = smoke_plan()
        out = Path(args.out) if args.out else RESULTS / "tmp" / "smoke.json"
    else:
        sections = set((args.case or args.sections).split(","))
        unknown = sections - set(SECTIONS)
        if unknown:
            parser.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
        plan = Plan(
            sizes=[int(n) for n in args.sizes.split(",") if n] if "fanout" in sections else [],
            systems=args.systems.split(","),
            rss_size=args.rss_size if "rss" in sections else 0,
            profile=[s for s in args.profile.split(",") if s],
            publishing=PublishPlan() if "publishing" in sections else None,
            stress=[kind for kind in STRESS if kind in sections],
            overload_size=args.overload_size,
            overload_rate=args.overload_rate,
            overload_seconds=args.overload_seconds,
            bulk_size=args.saturation_size,
            bulk_events=args.saturation_events,
            bulk_batch=args.saturation_batch,
            burst_size=args.burst_size,
            burst_events=args.burst_events,
        )
        out = Path(args.out) if args.out else RESULTS / "latest.json"
    results = run(plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(report.text(results))
    print(f"results: {out}")
    if not plan.smoke:
        report.write_markdown(results, out.with_suffix(".md"))
        if any(not case["rss_only"] for case in results["cases"]):
            report.plot(results, out.with_suffix(".png"))
            print(f"plot: {out.with_suffix('.png')}")
    ok, problems = report.check(results)
    for problem in problems:
        print(f"FAIL: {problem}")
    summary = report.totals(results)
    print(
        f"{'SMOKE' if plan.smoke else 'BENCH'} {'OK' if ok else 'FAILED'}: "
        f"lost={summary['lost']} duplicated={summary['duplicated']} non_200={summary['non_200']}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
