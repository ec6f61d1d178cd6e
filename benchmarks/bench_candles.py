"""Benchmark: 20,000 one-minute candles (100 requests) at 10 req/s with 100 ms latency.

The rate-limit bound for 100 requests at 10 requests/second is 10 s. mdcoord should finish
within 1.15x of it with zero 429s. The sequential figure (concurrency 1) is measured in the same
run. Each run uses a fresh embedded exchange (fresh limiter, empty log).

    python benchmarks/bench_candles.py [--runs 5] [--latency 0.1] [--count 20000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import mdcoord
from mdcoord.sim import Exchange, SimConfig

NOW = "2026-11-20T12:34:56Z"


def one_run(count: int, latency: float, concurrency: int) -> dict:
    config = SimConfig(seed=7, now=NOW, frozen=True, latency=latency, jitter=latency / 10)
    with Exchange(config) as ex:
        t0 = time.perf_counter()
        df = mdcoord.candles("KRW-BTC", "1m", count=count, base_url=ex.base_url, concurrency=concurrency, progress=False)
        wall = time.perf_counter() - t0
        return {
            "wall_s": wall,
            "rows": len(df),
            "requests": ex.count(group="candles"),
            "429s": ex.count(status=429),
            "max_in_1s": ex.max_in_window("candles", 1.0),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = ap.parse_args()

    results = {}
    for label, conc in (("mdcoord (default concurrency 5)", mdcoord.get_options().concurrency), ("sequential (concurrency 1)", 1)):
        runs = [one_run(args.count, args.latency, conc) for _ in range(args.runs)]
        requests = runs[0]["requests"]
        bound = requests / 10.0  # seconds: the rate limit alone
        med = statistics.median(r["wall_s"] for r in runs)
        results[label] = {
            "median_wall_s": round(med, 3),
            "runs_s": [round(r["wall_s"], 3) for r in runs],
            "requests": requests,
            "rows": runs[0]["rows"],
            "bound_s": bound,
            "ratio_to_bound": round(med / bound, 3),
            "429s": sum(r["429s"] for r in runs),
            "max_requests_in_any_1s": max(r["max_in_1s"] for r in runs),
        }
    labels = list(results)
    speedup = results[labels[1]]["median_wall_s"] / results[labels[0]]["median_wall_s"]
    report = {
        "benchmark": f"{args.count} x 1m candles of KRW-BTC, latency {args.latency * 1000:.0f} ms, {args.runs} runs",
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "results": results,
        "speedup_vs_sequential": round(speedup, 2),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(report["benchmark"], "|", report["machine"])
    print(f"{'':34} {'median s':>9} {'bound s':>8} {'ratio':>6} {'req':>5} {'429s':>5} {'max/1s':>7}")
    for label, r in results.items():
        print(
            f"{label:34} {r['median_wall_s']:9.3f} {r['bound_s']:8.1f} {r['ratio_to_bound']:6.3f} "
            f"{r['requests']:5d} {r['429s']:5d} {r['max_requests_in_any_1s']:7d}"
        )
    print(f"speed-up over sequential: {speedup:.2f}x")
    ok = results[labels[0]]["ratio_to_bound"] <= 1.15 and results[labels[0]]["429s"] == 0
    print("target (<= 1.15x bound, zero 429s):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
