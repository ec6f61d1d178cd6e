"""Run every benchmark of issue 6 and print one markdown report: ``python -m benchmarks``.

Sections (each also runs alone, see its module):

1. ``compare``   — mdcoord vs pyupbit vs ccxt, 1000 and 20,000 1m candles (bench_compare.py);
   also mdcoord with concurrency 1, for the speed-up over sequential on the same job;
2. ``rate``      — rate-limit efficiency of a 600-request candle job (bench_rate.py);
3. ``snapshots`` — 189 tickers, 10 orderbooks, 5000 trades vs their bound (bench_snapshots.py);
4. ``micro``     — aggregating 1,000,000 candles, JSON → frame, the cache load (bench_micro.py);
5. ``simcold``   — the embedded exchange's first answer per endpoint, a fresh process per run
   (bench_sim_cold.py; no latency: it measures the simulator, not a client);
6. ``firstcall`` — the first ``candles(count=1000)`` of a fresh process against a warm one, where
   its time goes, and ``import mdcoord`` (bench_firstcall.py; a fresh process per run, 30 ms);
7. ``requests``  — requests per row: liquid, thin and very thin markets, a month's range and
   counts, mdcoord now and before the backward cursors, pyupbit, ccxt (bench_requests.py);
8. ``live``      — live trade messages decoded into frames per second on one core (DEFAULT and
   JSON_LIST), and the exchange's push → yielded frame latency (bench_live.py; ~1 minute);
9. ``budget``    — the shared budget's building block: FileRing vs pyrate-limiter vs limits
   (bench_budget_stores.py; needs the ``bench`` extra; not in the default run — ``--only budget``);
10. ``processes`` — many mdcoord processes under the machine budget: (a) 8 x 20,000 candles started
   together, (b) 1-16 processes x 3,000 candles, (c) one process, ``rate_budget="process"`` vs
   ``"machine"`` (bench_budget_processes.py; ~17 minutes, so not in the default run —
   ``--only processes``, ``--process-cells a b c`` to pick cells; its cells all get ``--long-runs``);
11. ``backfill`` — ``mdcoord.backfill`` on a local Dask cluster of one worker per client address
   (127.0.0.2, ...): 1, 2, 4, 8 addresses against one address with 8 workers (bench_backfill.py;
   ~3.5 minutes, not in the default run — ``--only backfill``);
12. ``record``   — ``python -m mdcoord record KRW`` for 10 minutes at 10x: the recorder's memory
   (bench_record.py; not in the default run — ``--only record``).

All at injected latency 30, 150 and 300 ms against the embedded exchange on 127.0.0.1.
``--runs`` (default 3) runs of every short cell; the long, rate-limit-bound cells — the
20,000-candle side-by-side (100-101 requests a client, 10-41 s each) and the 600-request job
(~63 s each) — get ``--long-runs`` (default 1) so a full run stays near 10 minutes on a 2-core
machine; with 1 run their "median" is that run. ``--quick`` shrinks everything (1 run; 1000
and 2000 candles, a 60-request job, 20 tickers, 100,000 rows) to check that the scripts work.
Raw results go to ``benchmarks/results/run-<UTC time>.json`` (ignored by git).

    python -m benchmarks [--runs 3] [--long-runs 1] [--quick] [--only compare rate snapshots micro]
                         [--process-cells a b c]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import (
    bench_backfill,
    bench_live,
    bench_record,
    bench_budget_processes,
    bench_budget_stores,
    bench_compare,
    bench_firstcall,
    bench_micro,
    bench_rate,
    bench_requests,
    bench_sim_cold,
    bench_snapshots,
)
from benchmarks._common import LATENCIES, machine_info, ms

SECTIONS = ("compare", "rate", "snapshots", "micro", "simcold", "firstcall", "requests", "live", "budget", "processes",
            "backfill", "record")
# budget needs the optional libraries, processes takes ~17 minutes, backfill ~3.5, record 10: asked for by name
DEFAULT_SECTIONS = SECTIONS[:-4]
RESULTS = Path(__file__).resolve().parent / "results"


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    q = args.quick
    runs, long_runs = (1, 1) if q else (args.runs, args.long_runs)
    counts = [1000, 2000] if q else [1000, 20_000]
    report: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {"runs": runs, "long_runs": long_runs, "quick": q, "latencies_s": list(LATENCIES),
                     "compare_counts": counts},
        "results": {},
    }
    t_all = time.perf_counter()
    for section in args.only:
        t0 = time.perf_counter()
        log(f"== {section}")
        if section == "compare":
            out = bench_compare.bench(runs, counts, list(LATENCIES), list(bench_compare.CLIENTS),
                                      runs_by_count={counts[1]: long_runs}, log=log)
        elif section == "rate":
            out = bench_rate.bench(long_runs, 11_800 if q else bench_rate.COUNT, list(LATENCIES), log=log)
        elif section == "snapshots":
            out = bench_snapshots.bench(runs, list(LATENCIES), 20 if q else 189, log=log)
        elif section == "budget":
            out = bench_budget_stores.bench(300 if q else 3000, 0.6 if q else 3.0, 1.0 if q else 4.0, log=log)
        elif section == "processes":
            out = bench_budget_processes.bench(long_runs, list(LATENCIES), args.process_cells, quick=q, log=log)
        elif section == "firstcall":
            out = bench_firstcall.bench(runs if q else max(runs, 5), bench_firstcall.available_modes(), count=400 if q else 1000,
                                        importtime_runs=1 if q else 5, log=log)
        elif section == "requests":
            out = bench_requests.bench(2 if q else 30, [300] if q else [1000, 10_000], list(bench_requests.CLIENTS),
                                       log=log)
        elif section == "backfill":
            out = bench_backfill.bench([1, 2] if q else [1, 2, 4, 8], 2 if q else 8, 1 if q else 10, 0.0 if q else 0.03,
                                       log=log)
        elif section == "record":
            out = bench_record.bench(20.0 if q else 600.0, 10.0, 2.0 if q else 10.0, log=log)
        elif section == "live":
            out = bench_live.bench(20_000 if q else 200_000, 200, runs if q else max(runs, 5), 5 if q else 20,
                                   2.0 if q else 20.0, log=log)
        elif section == "simcold":
            out = bench_sim_cold.bench(runs, 3, ["market_all", "ticker_1", "trades_500"] if q else None, log=log)
        else:
            out = bench_micro.bench(runs if q else max(runs, 5), 100_000 if q else 1_000_000, cache=True)
        report["results"][section] = out
        report.setdefault("section_wall_s", {})[section] = round(time.perf_counter() - t0, 1)
    report["total_wall_s"] = round(time.perf_counter() - t_all, 1)
    return report


def headline(report: dict[str, Any]) -> list[str]:
    """The ratios the README quotes, from this run."""
    res, lines = report["results"], []
    if "rate" in res:
        effs = ", ".join(f"{r['median_efficiency_vs_10']:.3f} at {ms(r['latency_s'])}" for r in res["rate"].values())
        n429 = sum(r["429s"] for r in res["rate"].values())
        lines.append(f"- rate-limit efficiency (req/s ÷ 10, {next(iter(res['rate'].values()))['requests']:g}-request "
                     f"job): {effs}; {n429} x 429 in all")
    if "compare" in res:
        cells = res["compare"]
        big = max(c["count"] for c in cells.values())
        sp = bench_compare.speedups(cells)
        lines.append("- speed-up over concurrency 1 (" + f"{big:,} candles): " + ", ".join(
            f"{sp[k]:.2f}x at {ms(c['latency_s'])}" for k, c in cells.items() if c["count"] == big and k in sp))
        for other in ("pyupbit", "ccxt"):
            parts = []
            for c in cells.values():
                s = c["clients"].get(other)
                if c["count"] == big and s:
                    parts.append(f"{s['median_ratio_to_mdcoord']:.2f}x at {ms(c['latency_s'])}" if s["complete_and_correct"]
                                 else f"failed at {ms(c['latency_s'])}")
            lines.append(f"- {bench_compare.LABELS[other]} wall ÷ mdcoord's ({big:,} candles): " + ", ".join(parts))
    if "processes" in res:
        lines += bench_budget_processes.headline(res["processes"])
    return lines


def markdown(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    v = m["versions"]
    out = [
        (f"{m['date']}, {m['cpu']} ({m['cpu_count']} cores, load {m['load_avg_at_start']} at start), {m['python']}, "
        f"mdcoord {v['mdcoord']}, pandas {v['pandas']}, numpy {v['numpy']}, pyarrow {v['pyarrow']}, "
        f"aiohttp {v['aiohttp']}, orjson {v['orjson']}, pyupbit {v['pyupbit']} (requests {v['requests']}), "
        f"ccxt {v['ccxt']}. Runs: {s['runs']} (long cells: {s['long_runs']}){' — QUICK' if s['quick'] else ''}. "
        f"Total {report['total_wall_s']:.0f} s. mdcoord from {m['mdcoord_source']}."),
        "",
        *headline(report),
    ]
    res = report["results"]
    if "compare" in res:
        out += ["", "### mdcoord vs pyupbit vs ccxt, 1m candles of KRW-BTC", "", bench_compare.table(res["compare"])]
    if "rate" in res:
        out += ["", "### Rate-limit efficiency, 600-request candle job", "", bench_rate.table(res["rate"])]
    if "snapshots" in res:
        out += ["", "### Tickers, orderbooks, trades", "",
                f"(warm-up, untimed: {res['snapshots']['warm_up_s']} s)", "", bench_snapshots.table(res["snapshots"])]
    if "micro" in res:
        out += ["", "### Micro-benchmarks", "", bench_micro.table(res["micro"])]
    if "requests" in res:
        out += ["", "### Requests per row", "", bench_requests.table(res["requests"])]
    if "simcold" in res:
        out += ["", "### The embedded exchange, cold", "", bench_sim_cold.table(res["simcold"])]
    if "firstcall" in res:
        out += ["", "### The first call of a process", "", bench_firstcall.table(res["firstcall"])]
    if "record" in res:
        out += ["", "### The recorder's memory over a long run", "", bench_record.table(res["record"])]
    if "live" in res:
        out += ["", "### Live: trade messages into frames, and latency", "", bench_live.table(res["live"])]
    if "budget" in res:
        out += ["", "### The shared budget's building block", "", bench_budget_stores.table(res["budget"])]
    if "processes" in res:
        out += ["", "### Many processes, one machine budget", "", bench_budget_processes.table(res["processes"])]
    if "backfill" in res:
        out += ["", "### A backfill over several addresses", "", bench_backfill.table(res["backfill"])]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs of every short cell (default 3)")
    ap.add_argument("--long-runs", type=int, default=1, help="runs of the long, rate-bound cells (default 1)")
    ap.add_argument("--quick", action="store_true", help="1 run of small sizes: checks the scripts, not speed")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(DEFAULT_SECTIONS))
    ap.add_argument("--process-cells", nargs="+", choices=bench_budget_processes.CELLS,
                    default=list(bench_budget_processes.CELLS), help="cells of the processes section (default a b c)")
    ap.add_argument("--out", type=Path, default=None, help="where to write the raw JSON "
                    "(default benchmarks/results/run-<UTC time>.json)")
    args = ap.parse_args()
    report = run(args)
    path = args.out or RESULTS / f"run-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(markdown(report))
    log(f"raw results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
