"""Benchmark: 189 tickers, 10 orderbooks, 5000 trades at 30/150/300 ms latency, vs their bound.

- ``mdcoord.tickers(<189 KRW markets>)`` (the first 189 of the exchange's 210 KRW markets,
  sorted), ``mdcoord.orderbooks(<the first 10 of them>)``, ``mdcoord.trades("KRW-BTC",
  count=5000)``; default options, a fresh exchange per call and run (so each call also asks
  for the market list once: the ``market`` group, reported apart).
- Requests per group from the exchange's log; **bound** = the data's own requests ÷ 10/s (the
  issue's definition; below ~1 s a sliding window lets them all go at once, so latency rules).
- Correctness against the exchange's model: tickers' ``trade_price`` per market, orderbooks'
  best bid and ask per market, and the 5000 trades' ``sequential_id`` set equal to the 5000
  newest of the tape.
- **Warm-up**: the exchange finds 52-week extremes of daily candles per market for its first
  ``/ticker`` in a process (~10 s of CPU for 189 markets, cached process-wide, see docs/sim.md). That
  is the simulator's cost, not a client's: one untimed ``tickers`` call on a throwaway exchange
  runs first, and its time is reported as ``warm_up_s``.

    python benchmarks/bench_snapshots.py [--runs 3] [--latencies 0.03 0.15 0.3] [--markets 189] [--json]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mdcoord
from benchmarks._common import (
    LATENCIES,
    MARKET,
    NOW_TS,
    RATE,
    cli,
    exchange,
    md_table,
    median,
    ms,
)
from mdcoord.sim import Exchange

GROUPS = {"tickers": "ticker", "orderbooks": "orderbook", "trades": "crix-trades"}
TRADES = 5000
ORDERBOOKS = 10


def krw_markets(n: int) -> list[str]:
    with exchange(0.0) as ex:
        codes = sorted(mdcoord.markets("KRW", base_url=ex.base_url).index)
    if len(codes) < n:
        raise SystemExit(f"the exchange lists {len(codes)} KRW markets, fewer than {n}")
    return codes[:n]


def check_tickers(df: pd.DataFrame, ex: Exchange, codes: list[str]) -> str:
    truth = {r["market"]: r["trade_price"] for r in ex.market.tickers(codes)}
    if sorted(df.index) != sorted(codes):
        return f"NO: {len(set(codes) - set(df.index))} markets missing"
    bad = sum(df.loc[c, "trade_price"] != p for c, p in truth.items())
    return "yes" if not bad else f"NO: {bad} wrong prices"


def check_orderbooks(df: pd.DataFrame, ex: Exchange, codes: list[str]) -> str:
    got = set(df.index.get_level_values("market"))
    if got != set(codes):
        return f"NO: {len(set(codes) - got)} markets missing"
    bad = 0
    for c in codes:
        unit = ex.market.orderbook(c)["orderbook_units"][0]
        best = df.loc[(c, 1)]
        bad += (best["bid_price"], best["ask_price"]) != (unit["bid_price"], unit["ask_price"])
    return "yes" if not bad else f"NO: {bad} wrong best levels"


def check_trades(df: pd.DataFrame, ex: Exchange) -> str:
    if len(df) != TRADES:
        return f"NO: {len(df)} trades"
    start = df.index.min().floor("s")
    rows = ex.market.trade_rows(MARKET, start.to_pydatetime(), NOW_TS.to_pydatetime())
    want = np.sort(np.array([r["sequential_id"] for r in rows[:TRADES]], dtype=np.int64))
    got = np.sort(df["sequential_id"].to_numpy(dtype=np.int64))
    return "yes" if np.array_equal(got, want) else f"NO: {int((~np.isin(want, got)).sum())} trades missing"


def calls(codes: list[str]) -> dict[str, Callable[[Exchange], str]]:
    """Each benchmarked call: runs it against ``ex`` and returns its correctness verdict."""
    opts = {"progress": False}

    def tickers(ex: Exchange) -> tuple[pd.DataFrame, Callable[[], str]]:
        df = mdcoord.tickers(codes, base_url=ex.base_url, **opts)
        return df, lambda: check_tickers(df, ex, codes)

    def orderbooks(ex: Exchange) -> tuple[pd.DataFrame, Callable[[], str]]:
        df = mdcoord.orderbooks(codes[:ORDERBOOKS], base_url=ex.base_url, **opts)
        return df, lambda: check_orderbooks(df, ex, codes[:ORDERBOOKS])

    def trades(ex: Exchange) -> tuple[pd.DataFrame, Callable[[], str]]:
        df = mdcoord.trades(MARKET, count=TRADES, base_url=ex.base_url, cache=False, **opts)
        return df, lambda: check_trades(df, ex)

    return {"tickers": tickers, "orderbooks": orderbooks, "trades": trades}  # type: ignore[dict-item]


def one_run(name: str, call: Any, latency: float) -> dict[str, Any]:
    with exchange(latency) as ex:
        t0 = time.perf_counter()
        df, check = call(ex)
        wall = time.perf_counter() - t0
        group = GROUPS[name]
        n = ex.count(group=group)
        return {
            "wall_s": wall,
            "requests": n,
            "other_requests": ex.count() - n,
            "429s": ex.count(status=429),
            "418s": ex.count(status=418),
            "rows": len(df),
            "bound_s": n / RATE,
            "verdict": check(),
        }


def bench(runs: int, latencies: list[float], n_markets: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    codes = krw_markets(n_markets)
    with exchange(0.0) as ex:  # the simulator's one-off 52-week build, untimed
        t0 = time.perf_counter()
        mdcoord.tickers(codes, base_url=ex.base_url, progress=False)
        warm = time.perf_counter() - t0
    log(f"  snapshots: warm-up (the exchange's 52-week aggregates for {n_markets} markets) {warm:.1f} s")
    results: dict[str, Any] = {"warm_up_s": round(warm, 2), "markets": n_markets, "cells": {}}
    for latency in latencies:
        for name, call in calls(codes).items():
            raw = []
            for i in range(runs):
                r = one_run(name, call, latency)
                raw.append(r)
                log(f"  snapshots {ms(latency)} {name:<10} run {i + 1}: {r['wall_s']:.2f} s, {r['requests']} req, "
                    f"{r['verdict']}")
            requests = median(r["requests"] for r in raw)
            wall = median(r["wall_s"] for r in raw)
            results["cells"][f"{latency}|{name}"] = {
                "latency_s": latency,
                "call": name,
                "rows": raw[0]["rows"],
                "requests": requests,
                "other_requests": median(r["other_requests"] for r in raw),
                "bound_s": requests / RATE,
                "median_wall_s": round(wall, 3),
                "median_wall_over_bound": round(median(r["wall_s"] / r["bound_s"] for r in raw), 2),
                "429s": sum(r["429s"] for r in raw),
                "418s": sum(r["418s"] for r in raw),
                "verdicts": sorted({r["verdict"] for r in raw}),
                "runs_s": [round(r["wall_s"], 3) for r in raw],
            }
    return results


def describe(name: str, n_markets: int) -> str:
    return {"tickers": f"{n_markets} tickers", "orderbooks": f"{ORDERBOOKS} orderbooks",
            "trades": f"{TRADES} trades"}[name]


def table(results: dict[str, Any]) -> str:
    rows = []
    for c in results["cells"].values():
        rows.append([
            ms(c["latency_s"]), describe(c["call"], results["markets"]), c["rows"],
            f"{c['requests']:g}" + (f" (+{c['other_requests']:g} market)" if c["other_requests"] else ""),
            f"{c['bound_s']:.1f} s", f"{c['median_wall_s']:.2f} s", f"{c['median_wall_over_bound']:.2f}",
            c["429s"], c["418s"], "; ".join(c["verdicts"]),
        ])
    return md_table(["latency", "call", "rows", "requests", "bound (req ÷ 10/s)", "median wall", "wall / bound",
                     "429s", "418s", "correct"], rows)


def main() -> int:
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--runs", type=int, default=3)
        ap.add_argument("--latencies", type=float, nargs="+", default=list(LATENCIES))
        ap.add_argument("--markets", type=int, default=189)

    return cli(__doc__, options, lambda a, log: bench(a.runs, a.latencies, a.markets, log=log), table)

if __name__ == "__main__":
    sys.exit(main())
