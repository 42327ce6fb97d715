"""python -m bench [--smoke] [--sizes 100,1000,5000] [--systems ours,eventstream,raw]
[--sections fanout,publishing]"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import report
from bench.publishing import PublishPlan
from bench.run import RESULTS, Plan, run, smoke_plan


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
        default="fanout,publishing",
        help="fanout (streams, latency, saturation, RSS) and/or publishing (send_event and the rest)",
    )
    parser.add_argument("--rss-size", type=int, default=10_000, help="N for the RSS-only case (0: none)")
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
        sections = set(args.sections.split(","))
        plan = Plan(
            sizes=[int(n) for n in args.sizes.split(",") if n] if "fanout" in sections else [],
            systems=args.systems.split(","),
            rss_size=args.rss_size if "fanout" in sections else 0,
            profile=[s for s in args.profile.split(",") if s],
            publishing=PublishPlan() if "publishing" in sections else None,
        )
        out = Path(args.out) if args.out else RESULTS / "latest.json"
    results = run(plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(report.text(results))
    print(f"results: {out}")
    if not plan.smoke:
        report.write_markdown(results, out.with_suffix(".md"))
        if results["cases"]:
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
