"""Benchmark: the embedded exchange's cold answers, endpoint by endpoint (issue 11.5).

Every run of every endpoint starts ``python -m mdcoord.sim`` afresh in its own process (so no
module-level cache survives; the honest cold start a notebook or another client sees), seed 7,
frozen at NOW, no rate limit, no latency. It times

- **start-up**: from launching the process to its printed URL;
- **first**: the first request of the endpoint (urllib, wall clock, body read);
- **then**: the median of ``--repeat`` more of the same request (warm).

and reports per endpoint the median, p99 (linear interpolation over the runs; with a handful of
runs it is close to the max) and max of *first* over ``--runs`` runs.

    python benchmarks/bench_sim_cold.py [--runs 5] [--repeat 3] [--only ticker_all_krw ...] [--json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import NOW, cli, md_table
from mdcoord.sim import SyntheticMarket

BUSY = "KRW-BTC"


def endpoints() -> dict[str, str]:
    """Name → request path (relative to the base URL), one per endpoint and candle unit."""
    model = SyntheticMarket(seed=7, now=NOW)
    krw = model.markets("KRW")
    five = ",".join(krw[:4] + [BUSY])
    out = {"market_all": "/market/all?isDetails=true", "candles_seconds": f"/candles/seconds?market={BUSY}&count=200"}
    for unit in (1, 3, 5, 10, 15, 30, 60, 240):
        out[f"candles_minutes_{unit}"] = f"/candles/minutes/{unit}?market={BUSY}&count=200"
    out |= {
        "candles_minutes_1_old": f"/candles/minutes/1?market={BUSY}&count=200&to=2025-12-01T00:00:00",
        "candles_days": f"/candles/days?market={BUSY}&count=200",
        "candles_weeks": f"/candles/weeks?market={BUSY}&count=200",
        "candles_months": f"/candles/months?market={BUSY}&count=200",
        "candles_years": f"/candles/years?market={BUSY}&count=200",
        "ticker_1": f"/ticker?markets={BUSY}",
        "ticker_5": f"/ticker?markets={five}",
        "ticker_krw": "/ticker?markets=" + ",".join(krw),
        "ticker_all_krw": "/ticker/all?quote_currencies=KRW",
        "ticker_all": "/ticker/all?quote_currencies=KRW,BTC,USDT",
        "orderbook_5": f"/orderbook?markets={five}",
        "orderbook_level": f"/orderbook?markets={BUSY}&level=10000",
        "instruments_5": f"/orderbook/instruments?markets={five}",
        "trades_500": f"/trades/ticks?market={BUSY}&count=500",
        "trades_days_ago_7": f"/trades/ticks?market={BUSY}&count=500&days_ago=7",
    }
    return out


def get(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: HTTP {r.status}")
    return time.perf_counter() - t0


def one_run(path: str, repeat: int) -> dict[str, Any]:
    """A fresh ``python -m mdcoord.sim``: its start-up, the first request of ``path``, then ``repeat`` more."""
    cmd = [sys.executable, "-m", "mdcoord.sim", "--port", "0", "--seed", "7", "--now", NOW, "--frozen",
           "--rate-limit", "0"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        startup = time.perf_counter() - t0
        if not base.startswith("http"):
            raise RuntimeError(f"the sim printed {base!r}")
        first = get(base + path)
        then = [get(base + path) for _ in range(repeat)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"startup_s": startup, "first_s": first, "then_s": float(np.median(then)) if then else None}


def bench(runs: int, repeat: int, only: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    paths = endpoints()
    names = only or list(paths)
    cells: dict[str, Any] = {}
    for name in names:
        rs = []
        for i in range(runs):
            rs.append(one_run(paths[name], repeat))
            log(f"{name} run {i + 1}/{runs}: first {rs[-1]['first_s']:.3f} s")
        first = np.array([r["first_s"] for r in rs])
        then = [r["then_s"] for r in rs if r["then_s"] is not None]
        cells[name] = {
            "path": paths[name] if len(paths[name]) < 120 else paths[name][:117] + "...",
            "first_median_s": round(float(np.median(first)), 4),
            "first_p99_s": round(float(np.percentile(first, 99)), 4),
            "first_max_s": round(float(first.max()), 4),
            "then_median_s": round(float(np.median(then)), 4) if then else None,
            "startup_median_s": round(float(np.median([r["startup_s"] for r in rs])), 3),
            "runs": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rs],
        }
    return {"runs": runs, "repeat": repeat, "cells": cells}


def table(res: dict[str, Any]) -> str:
    rows = [[name, f"{c['first_median_s'] * 1000:.0f}", f"{c['first_p99_s'] * 1000:.0f}", f"{c['first_max_s'] * 1000:.0f}",
             "" if c["then_median_s"] is None else f"{c['then_median_s'] * 1000:.1f}", f"{c['startup_median_s']:.2f}"]
            for name, c in res["cells"].items()]
    return md_table(["endpoint", "first median ms", "first p99 ms", "first max ms", "warm median ms", "start-up s"], rows)


def main() -> int:
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--runs", type=int, default=5, help="fresh processes per endpoint (default 5)")
        ap.add_argument("--repeat", type=int, default=3, help="warm requests after the first (default 3)")
        ap.add_argument("--only", nargs="+", choices=list(endpoints()), default=None)

    return cli(__doc__, options, lambda a, log: bench(a.runs, a.repeat, a.only, log), table)


if __name__ == "__main__":
    sys.exit(main())
