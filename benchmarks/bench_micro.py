"""Micro-benchmarks: aggregating 1,000,000 candles, JSON → frame per row, and the cache load.

a. **Aggregation**: what the candle job does with its pages once they have arrived
   (``CandleJob._assemble`` and ``_finish``): ``clean_candles`` (sort by market and time, drop
   page-seam duplicates), ``span_mask`` (keep the asked span / last N), ``gap_table`` (runs of
   missing minutes) and ``index_candles`` (the output index). Input: 1,000,000 one-minute
   candles in the flat layout ``candle_rows_to_frame`` produces, laid out as pages would
   arrive: 200-row pages, newest first within a page, the pages in random order (concurrent
   completion), and 1% duplicate rows (each page repeats the two newest rows of the page below,
   as overlapping pages would). A second input shuffles every row (the worst case for the
   sort). Target: < 0.3 s for the whole aggregation.
b. **JSON → frame per row**: one real 200-row ``/candles/minutes/1`` body from the embedded
   exchange; ``orjson.loads`` vs ``json.loads``, then ``candle_rows_to_frame`` of the rows (per
   page, and for 100 pages at once as the job does), in microseconds per row.
c. **Cache load**: ``bench_cache.bench_hit`` (1,000,000 cached candles read back through
   ``mdcoord.candles(..., cache=True)``), reused as is — see bench_cache.py for its method.

    python benchmarks/bench_micro.py [--runs 5] [--rows 1000000] [--no-cache] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import MARKET, cli, exchange, md_table, median
from benchmarks.bench_cache import bench_hit, synthetic_candles
from mdcoord._frames import (
    CandlePage,
    candle_pages_to_frame,
    candle_rows_to_frame,
    clean_candles,
    gap_table,
    index_candles,
    span_mask,
)
from mdcoord._timeframe import Timeframe

END = pd.Timestamp("2026-11-01", tz="UTC")
PAGE = 200
AGG_TARGET_S = 0.3


# -- a. aggregation ---------------------------------------------------------------------------------
def paged_input(rows: int, shuffle_rows: bool, seed: int = 7) -> pd.DataFrame:
    """``rows`` candles as the job's pages would hold them (see the module docstring)."""
    frame = synthetic_candles(rows, END, seed=seed)
    rng = np.random.default_rng(seed)
    n_pages = -(-rows // PAGE)
    pages = [np.arange(i * PAGE, min(rows, (i + 1) * PAGE))[::-1] for i in range(n_pages)]
    # each page also holds the two newest rows of the page below it: 1% overlap at 200 a page
    pages = [np.concatenate([p, pages[i - 1][:2]]) if i else p for i, p in enumerate(pages)]
    order = np.concatenate([pages[i] for i in rng.permutation(n_pages)])
    if shuffle_rows:
        order = rng.permutation(order)
    return frame.iloc[order].reset_index(drop=True)


def aggregate(flat: pd.DataFrame, count: int) -> dict[str, float]:
    """The job's aggregation of ``flat``, step by step; seconds per step."""
    tf = Timeframe.M1
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    frame = clean_candles(flat)
    t["clean_candles"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ords = tf.ordinal(frame["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64))
    end_slot = tf.first_slot_at_or_after(END)
    keep, first = span_mask(frame["market"], ords, {MARKET: (0, end_slot)}, count)
    frame = frame.loc[keep].reset_index(drop=True)
    t["span_mask"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gaps = gap_table(frame, tf, {MARKET: (tf.slot_start(first[MARKET]), END)})
    t["gap_table"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = index_candles(frame, (MARKET,))
    t["index_candles"] = time.perf_counter() - t0
    t["total"] = sum(t.values())
    assert len(out) == count and len(gaps) == 0 and out.index.is_monotonic_increasing and out.index.is_unique
    return t


def bench_aggregation(runs: int, rows: int) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": rows, "target_s": AGG_TARGET_S}
    for label, shuffle in (("pages shuffled", False), ("rows shuffled", True)):
        flat = paged_input(rows, shuffle)
        times = [aggregate(flat, rows) for _ in range(runs)]
        med = {k: round(median(t[k] for t in times), 4) for k in times[0]}
        met = med["total"] < AGG_TARGET_S if rows == 1_000_000 else None  # the target is for 1,000,000
        out[label] = {"input_rows": len(flat), "median_s": med, "target_met": met,
                      "runs_total_s": [round(t["total"], 4) for t in times]}
    return out


# -- b. JSON -> frame -------------------------------------------------------------------------------
def page_body() -> bytes:
    """One 200-row 1m candle page of KRW-BTC, as the exchange sends it."""
    import urllib.request

    query = "/candles/minutes/1?market=KRW-BTC&count=200&to=2026-11-20T00:00:00Z"
    with exchange(0.0) as ex, urllib.request.urlopen(ex.base_url + query) as r:
        return r.read()


def per_row_us(fn: Callable[[], Any], rows: int, repeat: int) -> float:
    """Best-of-``repeat`` microseconds per row (best: a micro-timing's noise only adds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(best / rows * 1e6, 3)


def bench_json(repeat: int) -> dict[str, Any]:
    body = page_body()
    rows = orjson.loads(body)
    assert len(rows) == PAGE and rows == json.loads(body)
    many = rows * 100  # 100 pages' rows: the job frames all its pages at once
    pages = [CandlePage.from_rows(rows, Timeframe.M1)] * 100
    tf = Timeframe.M1
    return {
        "page_bytes": len(body),
        "us_per_row": {
            "orjson.loads": per_row_us(lambda: orjson.loads(body), PAGE, 50 * repeat),
            "json.loads": per_row_us(lambda: json.loads(body), PAGE, 50 * repeat),
            "candle_rows_to_frame, one page": per_row_us(lambda: candle_rows_to_frame(rows, tf), PAGE, 10 * repeat),
            "candle_rows_to_frame, 100 pages": per_row_us(lambda: candle_rows_to_frame(many, tf), len(many), repeat),
            # what the candle job does as each page lands, then once at the end
            "CandlePage.from_rows, one page": per_row_us(lambda: CandlePage.from_rows(rows, tf), PAGE, 10 * repeat),
            "candle_pages_to_frame, 100 pages": per_row_us(lambda: candle_pages_to_frame(pages, tf), len(many), repeat),
        },
    }


# -- report ----------------------------------------------------------------------------------------
def bench(runs: int, rows: int, cache: bool, cache_rows: int | None = None) -> dict[str, Any]:
    out = {"aggregation": bench_aggregation(runs, rows), "json_to_frame": bench_json(runs)}
    if cache:
        out["cache_hit"] = bench_hit(runs, cache_rows or rows, "synthetic", profile=False)
    return out


def table(results: dict[str, Any]) -> str:
    agg = results["aggregation"]
    rows = []
    for label in ("pages shuffled", "rows shuffled"):
        m = agg[label]["median_s"]
        rows.append([f"aggregate {agg['rows']:,} candles ({label}, +1% duplicates)", f"**{m['total']:.3f} s**",
                     (f"clean {m['clean_candles']:.3f} / span {m['span_mask']:.3f} / gaps {m['gap_table']:.3f} / "
                      f"index {m['index_candles']:.3f}"),
                     {True: f"< {AGG_TARGET_S} s: met", False: f"< {AGG_TARGET_S} s: NOT met", None: "n/a"}[
                         agg[label]["target_met"]]])
    j = results["json_to_frame"]["us_per_row"]
    rows.append(["JSON → rows, 200-row page", f"{j['orjson.loads']:.2f} µs/row (orjson)",
                 f"json.loads {j['json.loads']:.2f} µs/row ({j['json.loads'] / j['orjson.loads']:.1f}x orjson)", ""])
    rows.append(["rows → frame (`candle_rows_to_frame`)", f"{j['candle_rows_to_frame, 100 pages']:.2f} µs/row",
                 f"one page alone: {j['candle_rows_to_frame, one page']:.2f} µs/row", ""])
    if "CandlePage.from_rows, one page" in j:
        rows.append(["page → columns as it lands (`CandlePage.from_rows`), then columns → frame",
                     f"{j['CandlePage.from_rows, one page']:.2f} µs/row",
                     f"columns of 100 pages → one frame (`candle_pages_to_frame`): "
                     f"{j['candle_pages_to_frame, 100 pages']:.2f} µs/row", ""])
    if "cache_hit" in results:
        c = results["cache_hit"]
        rows.append([f"cache hit, {c['rows']:,} 1m candles (`candles(..., cache=True)`)",
                     f"**{c['median_end_to_end_s']:.3f} s**",
                     f"pyarrow read + to_pandas {c['median_pyarrow_read_to_pandas_s']:.3f} s; {c['requests']} requests",
                     ("<= 0.5 s: met" if c["target_met"] else "<= 0.5 s: NOT met") if c["rows"] >= 1_000_000 else "n/a"])
    return md_table(["micro-benchmark", "median", "detail", "target"], rows)


def main() -> int:
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--runs", type=int, default=5)
        ap.add_argument("--rows", type=int, default=1_000_000)
        ap.add_argument("--no-cache", action="store_true", help="skip c (the cache load)")

    return cli(__doc__, options, lambda a, log: bench(a.runs, a.rows, not a.no_cache), table)

if __name__ == "__main__":
    sys.exit(main())
