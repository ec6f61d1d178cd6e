"""Soak run: minutes of random downloads against the strict embedded exchange under faults.

    python -m tools.soak --minutes 5            # the figures of docs/reliability.md
    python -m tools.soak --minutes 1 --json soak.json

Not part of the test suite (it runs for minutes). Three worker threads draw random jobs —
candle ranges and counts (thin and liquid markets, five timeframes), trade ranges, tickers and
order books — through one mdcoord process with a cache, while the exchange (10 requests a second
per group, 429 above, 418 after five 429s in ten seconds, 20 ms ± 10 ms round trips) answers
10% of requests with a 5xx and drops, stalls past the timeout, truncates, garbles or HTML-wraps
another 10%, and a burst of three 429s strikes a random group every 25 jobs. Every 10th job is
cancelled mid-way and run again.

Every result is compared with the exchange's ground truth (candles and trades: every row and
value; tickers and order books: the frame built from the model's own rows). A call that reports
failed pieces (``IncompleteDataError``) is checked too — what it returned must be true — and
run again until complete. A *loss* is a result that differs from the truth without an error
saying so; the run exits non-zero on any loss, any 418, or any 429 the client provoked itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import mdcoord
from mdcoord._config import source_name
from mdcoord._frames import candle_rows_to_frame, clean_candles, orderbooks_to_frame, tickers_to_frame
from mdcoord._store import read_partition
from mdcoord._timeframe import Timeframe
from mdcoord.sim import Exchange, SimConfig

NOW = pd.Timestamp("2026-11-20T12:34:56Z")
LIQUID = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE"]
TIMEFRAMES = ["1m", "5m", "15m", "1h", "1d"]
CANCEL_EVERY = 10
BURST_EVERY = 25


class Soak:
    def __init__(self, seed: int, fault_rate: float) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.figures: Counter[str] = Counter()
        self.losses: list[str] = []
        self.fault_rate = fault_rate
        self.jobs = 0
        self.cache = tempfile.TemporaryDirectory(prefix="mdcoord-soak-")
        self.ex = Exchange(SimConfig(seed=7, now=NOW.isoformat(), frozen=True, latency=0.02, jitter=0.01,
                                     slow_delay=5.0))

    # -- the run ----------------------------------------------------------------------------------
    def run(self, minutes: float, threads: int) -> dict[str, Any]:
        with self.ex:
            ex = self.ex
            mdcoord.set_options(base_url=ex.base_url, progress=False, cache=True, cache_dir=self.cache.name,
                                timeout=1.0)
            self.markets = ex.market.markets("KRW")[:40]
            self.thin = [m for m in self.markets if m not in LIQUID][:15]
            mdcoord.tickers(self.markets, timeout=300)  # the model builds 52 weeks of days per market once
            ex.clear_log()
            mdcoord.reset_metrics()
            r = self.fault_rate
            ex.faults.set_rates(server_error=r, drop=r / 5, slow=r / 10, truncated=r / 5, malformed=r / 5,
                                html=r / 5, seed=self.rng.randrange(2**31))
            started = time.monotonic()
            deadline = started + minutes * 60
            workers = [threading.Thread(target=self._worker, args=(deadline, i), daemon=True) for i in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            elapsed = time.monotonic() - started
            ex.faults.clear()
            self._check_cache()
            return self._report(elapsed)

    def _worker(self, deadline: float, index: int) -> None:
        rng = random.Random(self.rng.randrange(2**31) + index)
        while time.monotonic() < deadline:
            with self.lock:
                self.jobs += 1
                n = self.jobs
            if n % BURST_EVERY == 0:
                group = rng.choice(["candles", "ticker", "orderbook", "crix-trades"])
                self.ex.faults.inject("rate_limited", count=3, group=group)
                self._count("429_bursts")
            kind, call, check = self._draw(rng)
            try:
                if n % CANCEL_EVERY == 0:
                    self._cancel_midway(call, rng)
                self._until_complete(kind, call, check)
            except Exception as exc:  # noqa: BLE001 - anything else is a finding
                self._lose(f"{kind}: {type(exc).__name__}: {exc}")

    def _until_complete(self, kind: str, call: Any, check: Any) -> None:
        for attempt in range(5):
            try:
                df = call()
            except mdcoord.IncompleteDataError as err:
                self._count("incomplete_reported")
                if err.partial is not None:
                    check(err.partial, partial=True)
                continue
            check(df, partial=False)
            self._count(f"jobs_{kind}")
            self._count("rows", len(df))
            self._count("recovered_on_rerun", attempt > 0)
            return
        self._lose(f"{kind}: still incomplete after 5 calls")

    def _cancel_midway(self, call: Any, rng: random.Random) -> None:
        """Start the call's async twin and cancel it after a random moment (what Ctrl-C in a
        notebook or a cancelled task does); the caller then runs the call to completion."""
        asyncio.run(self._cancel_async(call, rng))
        self._count("cancelled_midway")

    async def _cancel_async(self, call: Any, rng: random.Random) -> None:
        task = asyncio.create_task(call.asynchronous())
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, mdcoord.MdcoordError):
            pass

    # -- jobs -------------------------------------------------------------------------------------
    def _draw(self, rng: random.Random) -> tuple[str, Any, Any]:
        kind = rng.choices(["candles", "candles_count", "trades", "tickers", "orderbooks"], [4, 2, 2, 1, 1])[0]
        if kind == "candles":
            return kind, *self._candles_range(rng)
        if kind == "candles_count":
            return kind, *self._candles_count(rng)
        if kind == "trades":
            return kind, *self._trades(rng)
        if kind == "tickers":
            return kind, *self._tickers(rng)
        return kind, *self._orderbooks(rng)

    def _truth_candles(self, market: str, tf: Timeframe, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        rows = self.ex.market.candles(market, tf.kind, tf.minute_unit or 1, start.to_pydatetime(), end.to_pydatetime())
        return clean_candles(candle_rows_to_frame(rows, tf)).drop(columns="market").set_index("time")

    def _candles_range(self, rng: random.Random) -> tuple[Any, Any]:
        market = rng.choice(LIQUID + self.thin)
        tf = Timeframe.parse(rng.choice(TIMEFRAMES))
        now_slot = tf.slot_of(NOW)
        length = rng.randint(50, 3000)
        lo = now_slot - rng.randint(length, length + (60_000 if tf.minute_unit == 1 else 3000))
        start, end = tf.slot_start(lo), tf.slot_start(lo + length)
        call = _Call(mdcoord.candles, mdcoord.acandles, market, tf.value, start=start, end=end)

        def check(df: pd.DataFrame, partial: bool) -> None:
            self._compare_candles(df, self._truth_candles(market, tf, start, min(end, tf.slot_start(now_slot))),
                                  partial, f"candles {market} {tf.value} [{start}, {end})")

        return call, check

    def _candles_count(self, rng: random.Random) -> tuple[Any, Any]:
        market = rng.choice(LIQUID + self.thin)
        tf = Timeframe.parse(rng.choice(TIMEFRAMES[:3]))
        n = rng.randint(1, 2500)
        forming = tf.slot_start(tf.slot_of(NOW))
        call = _Call(mdcoord.candles, mdcoord.acandles, market, tf.value, count=n)

        def check(df: pd.DataFrame, partial: bool) -> None:
            span = n
            oldest = df.index[0] if len(df) else forming
            while True:  # look back far enough for n candles of a thin market (or its whole history)
                start = tf.slot_start(tf.slot_of(forming) - span)
                want = self._truth_candles(market, tf, start, forming)
                if (len(want) >= n and start <= oldest) or start < pd.Timestamp("2017-09-01", tz="UTC"):
                    break
                span *= 4
            # complete: exactly the n newest; partial: true candles (a failed newer piece leaves its
            # place to older ones, so a partial count may reach further back)
            self._compare_candles(df, want if partial else want.iloc[-n:], partial,
                                  f"candles {market} {tf.value} count={n}")

        return call, check

    def _compare_candles(self, got: pd.DataFrame, want: pd.DataFrame, partial: bool, what: str) -> None:
        cols = ["open", "high", "low", "close", "volume", "value", "last_trade_at"]
        if partial:  # what arrived must be true, and nothing may be invented
            want = want.loc[want.index.isin(got.index)]
            if len(want) != len(got):
                return self._lose(f"{what}: {len(got) - len(want)} rows that are not the exchange's")
        if not got.index.equals(want.index) or not got[cols].equals(want[cols]):
            return self._lose(f"{what}: {len(got)} rows differ from the exchange's {len(want)}")
        self._count("rows_verified", len(got))

    def _trades(self, rng: random.Random) -> tuple[Any, Any]:
        market = rng.choice(LIQUID[:3] + self.thin[:4])
        start = (NOW.floor("D") - pd.Timedelta(days=rng.randint(0, 6))) + pd.Timedelta(minutes=rng.randint(0, 1380))
        end = min(start + pd.Timedelta(minutes=rng.randint(5, 90)), NOW - pd.Timedelta(seconds=5))
        if end <= start:
            start = end - pd.Timedelta(minutes=10)
        call = _Call(mdcoord.trades, mdcoord.atrades, market, start=start, end=end)

        def check(df: pd.DataFrame, partial: bool) -> None:
            rows = self.ex.market.trade_rows(market, start.to_pydatetime(), end.to_pydatetime())
            want = sorted((r["timestamp"], r["sequential_id"], r["trade_price"], r["trade_volume"]) for r in rows)
            ms = df.index.as_unit("ns").asi8 // 1_000_000
            got = sorted(zip(ms.tolist(), df["sequential_id"].tolist(), df["price"].tolist(), df["volume"].tolist()))
            if partial:
                wanted = set(want)
                if not set(got) <= wanted or len(set(got)) != len(got):
                    self._lose(f"trades {market} [{start}, {end}): partial rows that are not the exchange's")
                return
            if got != want:
                self._lose(f"trades {market} [{start}, {end}): {len(got)} trades, the exchange has {len(want)}")
            else:
                self._count("rows_verified", len(got))

        return call, check

    def _tickers(self, rng: random.Random) -> tuple[Any, Any]:
        codes = rng.sample(self.markets, rng.randint(1, 30))
        call = _Call(mdcoord.tickers, mdcoord.atickers, codes)

        def check(df: pd.DataFrame, partial: bool) -> None:
            want = tickers_to_frame(self.ex.market.tickers(codes))
            self._compare_frames(df, want.loc[want.index.isin(df.index)] if partial else want, f"tickers {len(codes)}")

        return call, check

    def _orderbooks(self, rng: random.Random) -> tuple[Any, Any]:
        codes = rng.sample(self.markets, rng.randint(1, 15))
        depth = rng.randint(1, 30)
        call = _Call(mdcoord.orderbooks, mdcoord.aorderbooks, codes, depth=depth)

        def check(df: pd.DataFrame, partial: bool) -> None:
            want = orderbooks_to_frame([self.ex.market.orderbook(c, count=depth) for c in codes])
            got_markets = df.index.get_level_values("market")
            if partial:
                want = want[want.index.get_level_values("market").isin(got_markets)]
            self._compare_frames(df, want, f"orderbooks {len(codes)} depth={depth}")

        return call, check

    def _compare_frames(self, got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
        if got.empty and want.empty:  # an empty partial: its columns' time units may differ (nothing to lose)
            return
        a, b = got.sort_index(), want.sort_index()
        a.attrs, b.attrs = {}, {}
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True, check_index_type=False)
        except AssertionError as exc:
            return self._lose(f"{what}: {str(exc)[:200]}")
        self._count("rows_verified", len(got))

    # -- bookkeeping ----------------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.figures[key] += int(n)

    def _lose(self, what: str) -> None:
        with self.lock:
            self.losses.append(what)
        print("LOSS:", what, file=sys.stderr, flush=True)

    def _check_cache(self) -> None:
        """Every cache file loads and holds nothing twice."""
        root = Path(self.cache.name) / source_name(self.ex.base_url)
        for path in root.rglob("part.parquet"):
            got = read_partition(path)
            if got is None:
                self._lose(f"cache file {path} does not load")
                continue
            table, _ = got
            key = "sequential_id" if "sequential_id" in table.column_names else "time"
            if not table.column(key).to_pandas().is_unique:
                self._lose(f"cache file {path} holds rows twice")
            self._count("cache_files_checked")

    def _report(self, elapsed: float) -> dict[str, Any]:
        ex = self.ex
        log = ex.log
        faults = Counter(r.fault for r in log if r.fault)
        m = mdcoord.metrics()
        m = m.xs(source_name(ex.base_url), level="source") if len(m) else m
        jobs = {k.removeprefix("jobs_"): v for k, v in sorted(self.figures.items()) if k.startswith("jobs_")}
        out = {
            "minutes": round(elapsed / 60, 2),
            "jobs_completed": sum(jobs.values()),
            "jobs_by_type": jobs,
            "requests": len(log),
            "requests_per_second": round(len(log) / elapsed, 1),
            "faults_injected": sum(faults.values()),
            "faults_by_kind": dict(sorted(faults.items())),
            "429_bursts": self.figures["429_bursts"],
            "retries": int(m["retries"].sum()) if len(m) else 0,
            "incomplete_reported": self.figures["incomplete_reported"],
            "recovered_on_rerun": self.figures["recovered_on_rerun"],
            "cancelled_midway": self.figures["cancelled_midway"],
            "rows": self.figures["rows"],
            "rows_verified": self.figures["rows_verified"],
            "cache_files_checked": self.figures["cache_files_checked"],
            "own_429s": sum(1 for r in log if r.status == 429 and r.fault is None),
            "418s": sum(1 for r in log if r.status == 418),
            "max_in_any_second": {g: ex.max_in_window(g) for g in ("candles", "ticker", "orderbook", "crix-trades",
                                                                    "market")},
            "losses": len(self.losses),
        }
        return out


class _Call:
    """A sync call and its async twin with the same arguments."""

    def __init__(self, sync: Any, asynchronous: Any, *args: Any, **kwargs: Any) -> None:
        self._sync, self._async, self.args, self.kwargs = sync, asynchronous, args, kwargs

    def __call__(self) -> pd.DataFrame:
        return self._sync(*self.args, **self.kwargs)

    def asynchronous(self) -> Any:
        return self._async(*self.args, **self.kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to run (default 5)")
    parser.add_argument("--threads", type=int, default=3, help="worker threads (default 3)")
    parser.add_argument("--fault-rate", type=float, default=0.10, help="share of 5xx answers (default 0.10; "
                        "drops, truncated, malformed and HTML bodies add 0.8 x that, slow answers 0.1 x)")
    parser.add_argument("--seed", type=int, default=20261120)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    soak = Soak(args.seed, args.fault_rate)
    figures = soak.run(args.minutes, args.threads)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    for what in soak.losses[:20]:
        print("LOSS:", what, file=sys.stderr)
    bad = figures["losses"] or figures["own_429s"] or figures["418s"]
    return 1 if bad else 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
