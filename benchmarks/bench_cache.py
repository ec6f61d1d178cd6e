"""Benchmark: the Parquet cache — a large cache hit, a repeated notebook call, and memory.

a. Cache hit: ~1,000,000 one-minute candles of one market already in the cache; time
   ``mdcoord.candles(market, "1m", start=..., end=..., cache=True)`` end to end (target: median
   <= 0.5 s, 0 requests) and, in the same run, the raw read of the same partitions with pyarrow
   (to an Arrow table, then to pandas) so the report shows where the time goes.
   ``--fill synthetic`` (default, ~1 s) writes the partitions with ``CandleStore.save`` — the very
   function the candle job writes with, so files, columns, dtypes and coverage are the ones a
   real fetch leaves — from a seeded random walk with a candle in every minute.
   ``--fill exchange`` fetches them from the embedded exchange instead (~5,000 requests, limits
   lifted; slower, realistic prices and no-trade gaps).
b. Repeated notebook call: 20,000 one-minute candles by range at 100 ms latency under the strict
   10 requests/s limit; the first call (empty cache, network-bound) against the second, identical
   call (cache). Target: ratio >= 50x, 0 requests on the second call.
c. ``--rss``: peak RSS of ``mdcoord.download(...)`` for 1 month vs 6 months of 1m candles, each in
   a fresh subprocess with an empty cache (the child's ``VmHWM``, see ``_child_rss``), with
   ``mdcoord.candles(...)`` of the same ranges for contrast.

Each run of b uses a fresh exchange (fresh limiter) and an empty cache directory. Timings are
medians over ``--runs``; ratios are taken within each run, then their median is reported.
The OS page cache is warm in a (the files were just written or read): this measures mdcoord and
pyarrow, not the disk.

    python benchmarks/bench_cache.py [--runs 5] [--rows 1000000] [--fill synthetic|exchange]
                                     [--count 20000] [--latency 0.1] [--rss] [--profile] [--json]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import mdcoord
from mdcoord._store import CandleStore, source_name
from mdcoord._timeframe import Timeframe
from mdcoord.sim import Exchange, SimConfig

NOW = "2026-11-20T12:34:56Z"
MARKET = "KRW-BTC"
HIT_END = pd.Timestamp("2026-11-01", tz="UTC")  # a month boundary, long closed
NOTEBOOK_END = pd.Timestamp("2026-11-20", tz="UTC")
HIT_TARGET_S = 0.5
RATIO_TARGET = 50.0
# The embedded exchange with its limit out of the way, for filling fast. Not None: with
# rate_limit=None the sim still reports Remaining-Req as if the limit were 10, and a client
# whose own rate_limit is above 10 then takes every answer for another client's pressure and
# pauses a full second (see docs/benchmarks.md).
UNLIMITED = 1_000_000
FAST = {"rate_limit": 1000, "concurrency": 8, "progress": False}


def _median(values: list[float]) -> float:
    return statistics.median(values)


# -- a. cache hit ---------------------------------------------------------------------------------
def synthetic_candles(rows: int, end: pd.Timestamp, seed: int = 7) -> pd.DataFrame:
    """``rows`` one-minute candles ending before ``end``: a seeded random walk, one per minute,
    in the flat layout the candle job saves (``market, time, OHLCV, value, last_trade_at``)."""
    rng = np.random.default_rng(seed)
    times = pd.date_range(end - pd.Timedelta(minutes=rows), periods=rows, freq="min", tz="UTC")
    close = 1.3e8 * np.exp(np.cumsum(rng.normal(0.0, 8e-4, rows)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    wick = np.abs(rng.normal(0.0, 4e-4, rows)) * close
    volume = rng.gamma(2.0, 0.4, rows)
    last_trade = times + pd.to_timedelta(rng.integers(0, 60_000, rows), unit="ms")
    return pd.DataFrame(
        {
            "market": MARKET,
            "time": times.astype("datetime64[ns, UTC]"),
            "open": open_,
            "high": np.maximum(open_, close) + wick,
            "low": np.minimum(open_, close) - wick,
            "close": close,
            "volume": volume,
            "value": volume * close,
            "last_trade_at": last_trade.astype("datetime64[ms, UTC]"),
        }
    )


def fill_cache(ex: Exchange, cache_dir: str, rows: int, how: str) -> tuple[pd.Timestamp, float]:
    """Put ``rows`` minutes ending at HIT_END into the cache; returns (start, seconds taken)."""
    start = HIT_END - pd.Timedelta(minutes=rows)
    t0 = time.perf_counter()
    if how == "synthetic":
        tf = Timeframe.M1
        store = CandleStore(cache_dir, source_name(ex.base_url))
        proven = [(tf.first_slot_at_or_after(start), tf.first_slot_at_or_after(HIT_END))]
        store.save(MARKET, tf, synthetic_candles(rows, HIT_END), proven=proven)
    else:
        mdcoord.download(MARKET, "1m", start=start, end=HIT_END, base_url=ex.base_url, cache_dir=cache_dir, **FAST)
    return start, time.perf_counter() - t0


def partition_files(cache_dir: str, ex: Exchange, start: pd.Timestamp, end: pd.Timestamp) -> list[Path]:
    """The monthly files a 1m request for ``[start, end)`` reads (the cache may hold more: a fetch
    also stores the newest page it reads to learn "now")."""
    months = {str(p) for p in pd.period_range(start.tz_convert(None), (end - pd.Timedelta(minutes=1)).tz_convert(None), freq="M")}
    store = CandleStore(cache_dir, source_name(ex.base_url))
    return [path for m, _tf, period, path in store.files() if m == MARKET and period in months]


def bench_hit(runs: int, rows: int, how: str, profile: bool) -> dict[str, Any]:
    config = SimConfig(seed=7, now=NOW, frozen=True, rate_limit=UNLIMITED)
    with Exchange(config) as ex, tempfile.TemporaryDirectory(prefix="mdcoord-bench-") as tmp:
        start, fill_s = fill_cache(ex, tmp, rows, how)
        files = partition_files(tmp, ex, start, HIT_END)
        on_disk = sum(p.stat().st_size for p in files)
        ex.clear_log()

        def call() -> pd.DataFrame:
            return mdcoord.candles(MARKET, "1m", start=start, end=HIT_END, base_url=ex.base_url, cache=True,
                                   cache_dir=tmp, progress=False)

        t0 = time.perf_counter()
        first = call()  # the process's first call: starts mdcoord's loop thread and its client
        first_s = time.perf_counter() - t0
        e2e, arrow, to_pandas, ratio = [], [], [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            df = call()
            e2e.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            table = pa.concat_tables([pq.read_table(p) for p in files])  # what the store reads
            arrow.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            table.to_pandas()
            to_pandas.append(arrow[-1] + time.perf_counter() - t0)
            ratio.append(e2e[-1] / to_pandas[-1])
        requests = ex.count()
        assert requests == 0, f"a cache hit sent {requests} requests"
        times = table["time"]
        in_range = pc.sum(pc.and_(pc.greater_equal(times, pa.scalar(start)), pc.less(times, pa.scalar(HIT_END)))).as_py()
        assert len(df) == len(first) == in_range, (len(df), len(first), in_range)
        result = {
            "fill": how,
            "fill_s": round(fill_s, 2),
            "rows": len(df),
            "partitions": len(files),
            "bytes_on_disk": on_disk,
            "requests": requests,
            "first_call_in_process_s": round(first_s, 3),
            "median_end_to_end_s": round(_median(e2e), 3),
            "median_pyarrow_read_s": round(_median(arrow), 3),
            "median_pyarrow_read_to_pandas_s": round(_median(to_pandas), 3),
            "median_ratio_end_to_end_to_raw": round(_median(ratio), 2),
            "runs_end_to_end_s": [round(x, 3) for x in e2e],
            "target_s": HIT_TARGET_S,
            "target_met": _median(e2e) <= HIT_TARGET_S,
        }
        if profile:
            result["profile"] = profile_call(call_async=lambda: mdcoord.acandles(
                MARKET, "1m", start=start, end=HIT_END, base_url=ex.base_url, cache=True, cache_dir=tmp, progress=False))
        return result


def profile_call(call_async: Any, top: int = 25) -> str:
    """cProfile of one call, on mdcoord's loop thread (where the work of a sync call runs, out of
    sight of a profiler in the main thread); top ``top`` entries by cumulative time."""
    from mdcoord._runtime import get_runtime

    prof = cProfile.Profile()

    async def profiled() -> Any:
        prof.enable()
        try:
            return await call_async()  # acandles awaits directly when already on the loop thread
        finally:
            prof.disable()

    get_runtime().run(profiled())
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# -- b. repeated notebook call --------------------------------------------------------------------
def bench_notebook(runs: int, count: int, latency: float) -> dict[str, Any]:
    start = NOTEBOOK_END - pd.Timedelta(minutes=count)
    cold, warm, ratio, req_cold, req_warm = [], [], [], [], []
    for _ in range(runs):
        config = SimConfig(seed=7, now=NOW, frozen=True, latency=latency, jitter=latency / 10)
        with Exchange(config) as ex, tempfile.TemporaryDirectory(prefix="mdcoord-bench-") as tmp:
            kwargs = {"start": start, "end": NOTEBOOK_END, "base_url": ex.base_url, "cache": True, "cache_dir": tmp,
                      "progress": False}
            t0 = time.perf_counter()
            first = mdcoord.candles(MARKET, "1m", **kwargs)
            cold.append(time.perf_counter() - t0)
            req_cold.append(ex.count())
            t0 = time.perf_counter()
            again = mdcoord.candles(MARKET, "1m", **kwargs)
            warm.append(time.perf_counter() - t0)
            req_warm.append(ex.count() - req_cold[-1])
            ratio.append(cold[-1] / warm[-1])
            pd.testing.assert_frame_equal(again, first, check_freq=False)
    return {
        "rows": len(first),
        "latency_s": latency,
        "median_first_call_s": round(_median(cold), 3),
        "median_second_call_s": round(_median(warm), 4),
        "median_ratio": round(_median(ratio), 1),
        "requests_first_call": max(req_cold),
        "requests_second_call": max(req_warm),
        "runs_first_s": [round(x, 3) for x in cold],
        "runs_second_s": [round(x, 4) for x in warm],
        "target_ratio": RATIO_TARGET,
        "target_met": _median(ratio) >= RATIO_TARGET and max(req_warm) == 0,
    }


# -- c. peak RSS ------------------------------------------------------------------------------------
_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import pandas as pd
    import mdcoord

    def hwm_kb():
        try:  # this process's own peak; ru_maxrss would include the parent's peak at fork time
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        except OSError:  # not Linux: the best available
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    func, base_url, start, end, cache_dir = sys.argv[1:6]
    baseline = hwm_kb()
    t0 = time.perf_counter()
    out = getattr(mdcoord, func)("KRW-BTC", "1m", start=start, end=end, base_url=base_url, cache_dir=cache_dir,
                                 rate_limit=1000, concurrency=8, progress=False)
    rows = int(out["rows"].sum()) if func == "download" else len(out)
    print(json.dumps({"rows": rows, "wall_s": time.perf_counter() - t0, "baseline_kb": baseline, "peak_kb": hwm_kb()}))
    """
)


def _child_rss(func: str, base_url: str, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, Any]:
    """Run ``mdcoord.<func>`` in a fresh interpreter with an empty cache; its peak RSS, in kB.

    Measured by the child from ``VmHWM`` (Linux): on Linux ``ru_maxrss`` of a child — whether
    read by the child (RUSAGE_SELF) or by the parent (RUSAGE_CHILDREN, wait4) — starts at the
    parent's own peak at fork and survives exec, so a parent holding an exchange would report
    its own size for every child.
    """
    with tempfile.TemporaryDirectory(prefix="mdcoord-bench-") as tmp:
        args = [sys.executable, "-c", _CHILD, func, base_url, start.isoformat(), end.isoformat(), tmp]
        done = subprocess.run(args, stdout=subprocess.PIPE, check=True)
        return json.loads(done.stdout)


def bench_rss(runs: int) -> dict[str, Any]:
    if not hasattr(mdcoord, "download"):
        return {"available": False}
    end = HIT_END
    out: dict[str, Any] = {"available": True, "results": {}}
    config = SimConfig(seed=7, now=NOW, frozen=True, rate_limit=UNLIMITED)
    with Exchange(config) as ex:
        for func in ("download", "candles"):
            for months in (1, 6):
                start = end - pd.DateOffset(months=months)
                got = [_child_rss(func, ex.base_url, start, end) for _ in range(runs)]
                out["results"][f"{func} {months} month(s)"] = {
                    "rows": got[0]["rows"],
                    "median_peak_rss_mb": round(_median([g["peak_kb"] for g in got]) / 1024, 1),
                    "median_after_import_mb": round(_median([g["baseline_kb"] for g in got]) / 1024, 1),
                    "median_wall_s": round(_median([g["wall_s"] for g in got]), 2),
                }
    r = out["results"]
    for func in ("download", "candles"):
        one, six = r[f"{func} 1 month(s)"], r[f"{func} 6 month(s)"]
        grow = lambda x: x["median_peak_rss_mb"] - x["median_after_import_mb"]
        out[f"{func}_growth_6_vs_1"] = round(grow(six) / grow(one), 2) if grow(one) > 0 else None
    return out


# -- report -------------------------------------------------------------------------------------------
def machine() -> str:
    return (f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} cores, pandas {pd.__version__}, pyarrow {pa.__version__}, numpy {np.__version__}")


def print_report(report: dict[str, Any]) -> None:
    print(report["machine"], "|", report["runs"], "runs")
    a = report["cache_hit"]
    print(f"\na. cache hit: {a['rows']:,} x 1m candles, {a['partitions']} partitions, "
          f"{a['bytes_on_disk'] / 1e6:.1f} MB on disk (fill: {a['fill']}, {a['fill_s']} s)")
    print(f"   {'median s':>9}  step")
    print(f"   {a['median_pyarrow_read_s']:9.3f}  pyarrow read_table of the partitions")
    print(f"   {a['median_pyarrow_read_to_pandas_s']:9.3f}  pyarrow read + to_pandas")
    print(f"   {a['median_end_to_end_s']:9.3f}  mdcoord.candles(..., cache=True) end to end "
          f"({a['median_ratio_end_to_end_to_raw']}x the raw read; {a['requests']} requests)")
    print(f"   {a['first_call_in_process_s']:9.3f}  (the process's first call, once)")
    print(f"   target (median <= {a['target_s']} s, 0 requests):", "met" if a["target_met"] else "NOT met")
    if "profile" in a:
        print("\n" + a["profile"])
    b = report["notebook"]
    print(f"\nb. repeated call: {b['rows']:,} x 1m candles by range, latency {b['latency_s'] * 1000:.0f} ms")
    print(f"   {'median s':>9}  {'requests':>8}  call")
    print(f"   {b['median_first_call_s']:9.3f}  {b['requests_first_call']:8d}  first (empty cache)")
    print(f"   {b['median_second_call_s']:9.4f}  {b['requests_second_call']:8d}  second, identical (cache)")
    print(f"   ratio {b['median_ratio']}x; target (>= {b['target_ratio']:.0f}x, 0 requests):",
          "met" if b["target_met"] else "NOT met")
    c = report.get("rss")
    if c is None:
        return
    if not c["available"]:
        print("\nc. peak RSS of mdcoord.download: not available yet")
        return
    print("\nc. peak RSS, one subprocess per call (1m candles of KRW-BTC, limits lifted)")
    print(f"   {'rows':>8} {'after import MB':>16} {'peak MB':>8} {'wall s':>7}  call")
    for label, r in c["results"].items():
        print(f"   {r['rows']:8,d} {r['median_after_import_mb']:16.1f} {r['median_peak_rss_mb']:8.1f} "
              f"{r['median_wall_s']:7.2f}  {label}")
    print(f"   growth above import, 6 months / 1 month: download {c['download_growth_6_vs_1']}x, "
          f"candles {c['candles_growth_6_vs_1']}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rows", type=int, default=1_000_000, help="a: candles in the cache")
    ap.add_argument("--fill", choices=("synthetic", "exchange"), default="synthetic", help="a: how to fill the cache")
    ap.add_argument("--count", type=int, default=20_000, help="b: candles per call")
    ap.add_argument("--latency", type=float, default=0.1, help="b: the exchange's latency, seconds")
    ap.add_argument("--rss", action="store_true", help="c: also measure peak RSS of download() in subprocesses")
    ap.add_argument("--profile", action="store_true", help="a: cProfile one cache-hit call (top 25 cumulative)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = ap.parse_args()

    report: dict[str, Any] = {"machine": machine(), "runs": args.runs}
    report["cache_hit"] = bench_hit(args.runs, args.rows, args.fill, args.profile)
    report["notebook"] = bench_notebook(args.runs, args.count, args.latency)
    if args.rss:
        report["rss"] = bench_rss(args.runs)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
