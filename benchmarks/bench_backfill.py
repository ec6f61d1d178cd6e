"""Benchmark: a backfill's throughput over 1, 2, 4 and 8 client addresses (issue 14, item 3).

The embedded exchange counts its limits per client address, as Upbit counts per IP; a local
Dask cluster of one worker process per address (127.0.0.2, 127.0.0.3, ...: Linux routes all of
127.0.0.0/8 to loopback), each bound to its address (``backfill(addresses=...)``), backfills the
same job: ``--markets`` liquid KRW markets x ``--days`` days of 1m candles, one task per market
and day (8 requests a task). The baseline is one address with as many workers as the largest
cell (they share that address's budget: the limit, not the workers, is the bound). Per cell, a
fresh exchange and a fresh store; reported: requests, wall (the backfill call, cluster start
excluded), requests/s, the ratio to the one-address baseline measured in the same run, per
address the most requests in any 1 s and 429s by the exchange's log, and whether the dataset is
the exchange's own candles (every row, no duplicate). The exchange runs in a process of its own
(``ExchangeProcess``), so its clock is not this busy process's.

    python benchmarks/bench_backfill.py [--addresses 1 2 4 8] [--markets 8] [--days 10] [--latency 0.03] [--json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

import mdcoord
from benchmarks._common import NOW, cli, md_table
from mdcoord._frames import candle_rows_to_frame, clean_candles
from mdcoord._timeframe import Timeframe
from mdcoord.sim import ExchangeProcess, SimConfig

MARKETS = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "KRW-ADA", "KRW-TRX", "KRW-LINK"]
END = "2026-11-19"


def _exact(ex: Any, store: Path, markets: list[str], start: str, end: str) -> bool:
    df = pd.read_parquet(store)
    tf = Timeframe.parse("1m")
    for m in markets:
        got = df[df["market"].astype(str) == m].sort_values("time").set_index("time")
        rows = ex.market.candles(m, tf.kind, tf.minute_unit, pd.Timestamp(start, tz="UTC").to_pydatetime(),
                                 pd.Timestamp(end, tz="UTC").to_pydatetime())
        want = clean_candles(candle_rows_to_frame(rows, tf)).drop(columns="market").set_index("time")
        cols = ["open", "high", "low", "close", "volume", "value"]
        if got.index.duplicated().any() or list(got.index) != list(want.index):
            return False
        if not (got[cols].to_numpy() == want[cols].to_numpy()).all():
            return False
    return True


def one_cell(n_addresses: int, workers_per_address: int, markets: list[str], days: int, latency: float) -> dict[str, Any]:
    addresses = [f"127.0.0.{2 + i}" for i in range(n_addresses)] * workers_per_address
    start = (pd.Timestamp(END) - pd.Timedelta(days=days)).strftime("%Y-%m-%d")
    from distributed import Client

    from mdcoord._backfill import _address_cluster

    # the exchange in a process of its own, as Upbit is outside yours: in a thread of this process
    # (which runs the Dask scheduler and client too) its arrival stamps wait for this process's
    # interpreter lock, bunch, and draw 429s the clients did not cause (issue 14's note)
    with ExchangeProcess(SimConfig(seed=7, now=NOW, frozen=True, latency=latency, jitter=latency / 10)) as ex, \
            tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        cluster = _address_cluster(addresses, 1)  # started before the clock runs
        with cluster, Client(cluster) as client:
            client.wait_for_workers(len(addresses))
            ex.clear_log()
            t0 = time.perf_counter()
            s = mdcoord.backfill(markets, "1m", start, END, period="day", store=str(store), client=client,
                                 base_url=ex.base_url, progress=False)
            wall = time.perf_counter() - t0
        used = sorted({a for a in addresses})
        return {
            "addresses": n_addresses, "workers": len(addresses), "tasks": s.tasks, "rows": s.rows,
            "requests": ex.count(group="candles"), "wall_s": round(wall, 3),
            "requests_per_s": round(ex.count(group="candles") / wall, 2),
            "max_in_1s_per_address": max(ex.max_in_window("candles", 1.0, address=a) for a in used),
            "max_in_1s_all": ex.max_in_window("candles", 1.0),
            "429s": ex.count(status=429), "418s": ex.count(status=418),
            "exact": _exact(ex, store, markets, start, END),
        }


def bench(cells: list[int], markets: int, days: int, latency: float, log: Any = print) -> dict[str, Any]:
    chosen = MARKETS[:markets]
    widest = max(cells)
    out: dict[str, Any] = {"markets": chosen, "days": days, "latency_s": latency, "cells": []}
    # the baseline: one address, as many workers as the widest cell
    base = one_cell(1, widest, chosen, days, latency)
    base["label"] = f"1 address, {widest} workers (baseline)"
    out["cells"].append(base)
    log(f"  baseline: {base['wall_s']:.1f} s, {base['requests_per_s']:.2f} req/s")
    for n in cells:
        r = one_cell(n, 1, chosen, days, latency)
        r["label"] = f"{n} address{'es' if n > 1 else ''}, {n} worker{'s' if n > 1 else ''}"
        r["ratio_to_baseline"] = round(r["requests_per_s"] / base["requests_per_s"], 2)
        out["cells"].append(r)
        log(f"  {r['label']}: {r['wall_s']:.1f} s, {r['requests_per_s']:.2f} req/s, x{r['ratio_to_baseline']}")
    return out


def table(res: dict[str, Any]) -> str:
    rows = [[c["label"], c["tasks"], f"{c['rows']:,}", c["requests"], f"{c['wall_s']:.2f} s", f"{c['requests_per_s']:.2f}",
             f"{c['ratio_to_baseline']:.2f}" if "ratio_to_baseline" in c else "1 (baseline)",
             c["max_in_1s_per_address"], c["max_in_1s_all"], c["429s"], c["418s"], "yes" if c["exact"] else "NO"]
            for c in res["cells"]]
    return md_table(["cell", "tasks", "rows", "requests", "wall", "requests/s", "÷ one address",
                     "max in 1 s, per address", "max in 1 s, all", "429s", "418s", "dataset exact"], rows)


def main() -> int:
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--addresses", type=int, nargs="+", default=[1, 2, 4, 8])
        ap.add_argument("--markets", type=int, default=8)
        ap.add_argument("--days", type=int, default=10)
        ap.add_argument("--latency", type=float, default=0.03)

    return cli(__doc__, options, lambda a, log: bench(a.addresses, a.markets, a.days, a.latency, log), table)


if __name__ == "__main__":
    sys.exit(main())
