"""Benchmark: requests per row — what a candle download costs the IP's budget, by market density.

Every request is a tenth of a second of the whole address's budget, so the cost of a download is
its requests, not its wall time. Three markets of the embedded exchange (seed 7, frozen at
``NOW``): liquid (``KRW-BTC``, a candle every minute), thin (a KRW market whose trades arrive at
about 0.07 a minute: ~7% of its minutes have a candle) and very thin (~0.015 a minute: ~1.5%),
chosen from the exchange's own catalogue by their trade rate. Two shapes of request:

- **range**: every 1m candle of the last ``--days`` days (default 30: a month) before the forming
  minute;
- **count**: the ``--count`` newest closed 1m candles (default 1000 and 10,000).

The clients, each as a user writes it (30 ms latency, strict 10 requests/s; one run a cell:
request counts do not vary from run to run):

- ``mdcoord``: ``mdcoord.candles(market, "1m", start=..., end=...)`` / ``count=N``, cache off;
- ``mdcoord-before``: the same call with the mdcoord of ``--before`` (a git revision: default the
  commit before the backward cursors), in a subprocess whose ``PYTHONPATH`` points at a checkout
  of that revision (``git worktree``, made in a temporary directory and removed after);
- ``pyupbit`` 0.2.34: ``get_ohlcv_from(market, "minute1", fromDatetime=start, to=end)`` for the
  range (it pages backwards, 200 candles a request, ``time.sleep(0.1)`` between), ``get_ohlcv(...,
  count=N)`` for the count; redirected to the exchange as in ``bench_compare.py``;
- ``ccxt`` 4.5: the manual's ``fetch_ohlcv`` loop (``since``, ``limit=200``) over the range; for a
  count, the same loop from ``N`` minutes back (what a ccxt user asks for "the last N").

Per cell: candle requests (the exchange's log), rows returned in the asked span, requests per
1000 rows, the bound of issue 13 (range: 1.2 x ceil(rows/200) + 8; count: 1.1 x ceil(N/200) + 1)
and whether the answer is exact against the exchange's own candles.

    python benchmarks/bench_requests.py [--days 30] [--counts 1000 10000] [--before REV]
                                        [--clients mdcoord mdcoord-before pyupbit ccxt] [--json]

``--speed``: what the count bound costs in wall time on the liquid market, now against
``--before`` (issue 13.2's "no slower than today on liquid markets"). Each run is a fresh
interpreter per build (the mdcoord of this checkout, or of ``--before`` in a ``git worktree``)
against a fresh exchange at each ``--latencies`` (±5% on each half), alternating which build goes
first: ``candles("KRW-BTC", "1m", count=N)`` twice in the same process, the **first** call (it
asks the exchange's clock: the head) and 1.2 s later a **warm** one (the first call's window of requests is over, the clock
is still known: no head). Medians of ``--runs``; now ÷ before taken within each run.

    python benchmarks/bench_requests.py --speed [--speed-counts 1000 20000]
                                        [--latencies 0.03 0.15 0.3] [--runs 3] [--before REV]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mdcoord
from benchmarks._common import FORMING, MARKET, cli, exchange, md_table, median, ms, truth_candles
from mdcoord.sim import Exchange

ROOT = Path(__file__).resolve().parent.parent
LATENCY = 0.03
#: The commit before the backward cursors (issue 13): time windows of 200 slots.
BEFORE = "780b413"
CLIENTS = ["mdcoord", "mdcoord-before", "pyupbit", "ccxt"]
TARGET_RATES = {"thin": 0.07, "very thin": 0.015}  # trades a minute


def pick_markets() -> dict[str, str]:
    """Liquid, thin and very thin KRW markets of the exchange, by their mean trade rate."""
    from mdcoord.sim._catalog import build_catalog

    catalog = build_catalog(7, int(pd.Timestamp(FORMING).value // 10**6))
    krw = [m for m in catalog.values() if m.quote == "KRW" and m.served
           and m.listing_ms < (FORMING - pd.Timedelta(days=400)).value // 10**6]
    out = {"liquid": MARKET}
    for label, rate in TARGET_RATES.items():
        out[label] = min(krw, key=lambda m: abs(math.log(m.rate_per_min / rate))).code
    return out


# -- the clients: (exchange, market, start, end, count) -> frame indexed by UTC time ------------------
def run_mdcoord(ex: Exchange, market: str, start: pd.Timestamp | None, end: pd.Timestamp | None,
                count: int | None) -> pd.DataFrame:
    kw: dict[str, Any] = {"count": count} if count is not None else {"start": start, "end": end}
    df = mdcoord.candles(market, "1m", base_url=ex.base_url, cache=False, progress=False, **kw)
    return df[["close"]]


_BEFORE_SCRIPT = """
import json, sys
import pandas as pd
import mdcoord
a = json.loads(sys.argv[1])
kw = {"count": a["count"]} if a["count"] is not None else {"start": a["start"], "end": a["end"]}
df = mdcoord.candles(a["market"], "1m", base_url=a["base_url"], cache=False, progress=False, **kw)
df[["close"]].to_parquet(a["out"])
print(mdcoord.__file__)
"""


def before_client(checkout: Path) -> Callable[..., pd.DataFrame]:
    def run(ex: Exchange, market: str, start: pd.Timestamp | None, end: pd.Timestamp | None,
            count: int | None) -> pd.DataFrame:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "frame.parquet"
            args = {"market": market, "base_url": ex.base_url, "count": count, "out": str(out),
                    "start": None if start is None else start.isoformat(), "end": None if end is None else end.isoformat()}
            stdout = run_with(checkout, _BEFORE_SCRIPT, args, tmp)
            assert stdout.strip().startswith(str(checkout)), stdout  # the old mdcoord ran
            return pd.read_parquet(out)

    return run


def run_pyupbit(ex: Exchange, market: str, start: pd.Timestamp | None, end: pd.Timestamp | None,
                count: int | None) -> pd.DataFrame:
    import pyupbit

    from benchmarks.bench_compare import pyupbit_redirected

    with pyupbit_redirected(ex.base_url):
        if count is not None:
            df = pyupbit.get_ohlcv(market, interval="minute1", count=count + 1)  # its count includes the forming one
        else:  # its times are naive KST
            assert start is not None and end is not None
            kst = pd.Timedelta(hours=9)
            df = pyupbit.get_ohlcv_from(market, "minute1", fromDatetime=(start + kst).tz_localize(None),
                                        to=(end + kst).tz_localize(None))
    if df is None:
        raise RuntimeError("pyupbit returned None")
    df.index = (pd.DatetimeIndex(df.index) - pd.Timedelta(hours=9)).tz_localize("UTC")
    return df[["close"]]


def run_ccxt(ex: Exchange, market: str, start: pd.Timestamp | None, end: pd.Timestamp | None,
             count: int | None) -> pd.DataFrame:
    import ccxt

    from benchmarks.bench_compare import ccxt_loop

    up = ccxt.upbit()
    host = ex.base_url.rsplit("/v1", 1)[0]
    up.urls["api"] = {"public": host, "private": host}
    quote, base = market.split("-", 1)
    end_ms = int(FORMING.value // 10**6)
    since = end_ms - count * 60_000 if count is not None else int(start.value // 10**6)  # type: ignore[union-attr]
    candles: list[list[float]] = []
    ccxt_loop(up, f"{base}/{quote}", since, end_ms, candles)
    df = pd.DataFrame(candles, columns=["ts", "open", "high", "low", "close", "volume"])
    df.index = pd.to_datetime(df.pop("ts"), unit="ms", utc=True).rename("time")
    return df[["close"]]


# -- one cell ------------------------------------------------------------------------------------------
def one_cell(client: str, run: Callable[..., pd.DataFrame], market: str, shape: str, n: int) -> dict[str, Any]:
    with exchange(LATENCY) as ex:
        if shape == "range":
            start, end, count = FORMING - pd.Timedelta(days=n), FORMING, None
        else:
            start, end, count = None, None, n
        t0 = time.perf_counter()
        error = None
        try:
            got: pd.DataFrame | None = run(ex, market, start, end, count)
        except Exception as exc:  # noqa: BLE001 - a client's failure is a result of the cell
            got, error = None, f"{type(exc).__name__}: {str(exc)[:200]}"
        wall = time.perf_counter() - t0
        requests = ex.count(group="candles")
        if shape == "range":
            truth = truth_candles(ex, start, end, market)  # type: ignore[arg-type]
        else:  # the N newest closed candles
            back = FORMING - pd.Timedelta(days=400)
            truth = truth_candles(ex, back, FORMING, market).iloc[-n:]
        exact = False
        rows = 0
        if got is not None:
            got = got[~got.index.duplicated()].sort_index()
            got = got.loc[(got.index >= truth.index.min()) & (got.index < FORMING)] if len(truth) else got.iloc[:0]
            rows = len(got)
            exact = rows == len(truth) and bool((got.index == truth.index).all()) and bool(
                (got["close"].to_numpy() == truth["close"].to_numpy()).all())
        want = len(truth)
        bound = (1.2 * math.ceil(want / 200) + 8) if shape == "range" else (1.1 * math.ceil(n / 200) + 1)
        return {"requests": requests, "rows": want, "rows_returned": rows, "exact": exact, "wall_s": wall,
                "per_1000_rows": 1000 * requests / max(1, want), "pages": math.ceil(want / 200),
                "bound": bound, "within_bound": requests <= bound, "429s": ex.count(status=429), "error": error}


@contextlib.contextmanager
def checkout_of(rev: str | None) -> Iterator[Path | None]:
    """A ``git worktree`` of ``rev`` in a temporary directory, removed after (None: no checkout)."""
    if rev is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="mdcoord-before-") as tmp:
        path = Path(tmp) / "src"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True, capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)


def run_with(checkout: Path, script: str, args: dict[str, Any], cwd: str) -> str:
    """``python -c script json(args)`` with ``checkout``'s mdcoord first on the path; its stdout."""
    done = subprocess.run([sys.executable, "-c", script, json.dumps(args)], env={**os.environ, "PYTHONPATH": str(checkout)},
                          cwd=cwd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return done.stdout


def bench(days: int, counts: list[int], clients: list[str], before: str = BEFORE, *,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    markets = pick_markets()
    shapes = [("range", days)] + [("count", c) for c in counts]
    funcs: dict[str, Callable[..., pd.DataFrame]] = {"mdcoord": run_mdcoord, "pyupbit": run_pyupbit, "ccxt": run_ccxt}
    with checkout_of(before if "mdcoord-before" in clients else None) as path:
        if path is not None:
            funcs["mdcoord-before"] = before_client(path)
        cells: dict[str, Any] = {}
        for label, market in markets.items():
            for shape, n in shapes:
                key = f"{label} {market} {shape} {n}"
                cells[key] = {"density": label, "market": market, "shape": shape, "n": n, "clients": {}}
                for client in clients:
                    res = one_cell(client, funcs[client], market, shape, n)
                    cells[key]["clients"][client] = res
                    log(f"  {key:40s} {client:15s} {res['requests']:5d} requests  {res['rows']:6d} rows  "
                        f"exact={res['exact']}  {res['wall_s']:.2f} s {res['error'] or ''}")
        return {"markets": markets, "latency_s": LATENCY, "before": before, "cells": cells}


def table(results: dict[str, Any]) -> str:
    clients = list(next(iter(results["cells"].values()))["clients"])
    header = ["market", "request", "rows", "pages", "bound"] + [f"{c}: requests (per 1000 rows)" for c in clients]
    rows = []
    for cell in results["cells"].values():
        first = next(iter(cell["clients"].values()))
        what = f"last {cell['n']} days" if cell["shape"] == "range" else f"count={cell['n']}"
        row = [f"{cell['density']} ({cell['market']})", what, first["rows"], first["pages"], f"{first['bound']:.1f}"]
        for c in clients:
            r = cell["clients"][c]
            mark = "" if r["exact"] else " ✗"
            row.append(f"{r['requests']} ({r['per_1000_rows']:.1f}){mark}")
        rows.append(row)
    note = ("✗: the answer was not exact (rows missing, extra or different; pyupbit and ccxt as users call them). "
            f"30 ms latency, strict 10 requests/s; before = {results['before']}.")
    return md_table(header, rows) + "\n\n" + note


# -- --speed: the wall time the count bound costs on a liquid market ---------------------------------
_SPEED_SCRIPT = """
import json, sys, time
import mdcoord
a = json.loads(sys.argv[1])
out = {"file": mdcoord.__file__}
for call in ("first", "warm"):
    if call == "warm":  # the window of the first call's requests over, the exchange's minute still known
        time.sleep(a["pause"])
    t0 = time.perf_counter()
    df = mdcoord.candles(a["market"], "1m", count=a["count"], base_url=a["base_url"], cache=False, progress=False)
    out[call] = time.perf_counter() - t0
    out[call + "_rows"] = len(df)
print(json.dumps(out))
"""


#: Between the first and the warm call: the first call's window of requests is over (1 s + margin),
#: and the exchange's minute is still known (its last ``Date`` + 2 s), so the warm call sends no head.
PAUSE = 1.2


def _speed_once(checkout: Path, latency: float, count: int) -> dict[str, Any]:
    with exchange(latency, latency * 0.05) as ex:
        args = {"market": MARKET, "base_url": ex.base_url, "count": count, "pause": PAUSE}
        out = json.loads(run_with(checkout, _SPEED_SCRIPT, args, tempfile.gettempdir()).strip().splitlines()[-1])
        assert out.pop("file").startswith(str(checkout)), "the wrong mdcoord ran"
        assert out["first_rows"] == out["warm_rows"] == count, out
        return {**out, "requests": ex.count(group="candles"), "429s": ex.count(status=429)}


def speed(latencies: list[float], counts: list[int], runs: int, builds: list[str], before: str = BEFORE, *,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Liquid ``count=N`` wall times of the first and a warm call, per build (``now``, ``before``)."""
    paths = {"now": ROOT}
    with checkout_of(before if "before" in builds else None) as path:
        if path is not None:
            paths["before"] = path
        cells = []
        for latency in latencies:
            for count in counts:
                cell: dict[str, Any] = {"latency_s": latency, "count": count, "runs": []}
                for i in range(runs):
                    order = builds if i % 2 == 0 else builds[::-1]
                    run = {b: _speed_once(paths[b], latency, count) for b in order}
                    cell["runs"].append(run)
                    log(f"  {ms(latency):>6s} count={count:<6d} " + "  ".join(
                        f"{b}: first {r['first']:.3f} s warm {r['warm']:.3f} s ({r['requests']} req, "
                        f"{r['429s']} x 429)" for b, r in run.items()))
                for b in builds:
                    for call in ("first", "warm"):
                        cell[f"{b}_{call}_s"] = median(r[b][call] for r in cell["runs"])
                    cell[f"{b}_requests"] = sorted({r[b]["requests"] for r in cell["runs"]})
                    cell[f"{b}_429s"] = sum(r[b]["429s"] for r in cell["runs"])
                if "before" in builds:
                    for call in ("first", "warm"):
                        cell[f"ratio_{call}"] = median(r["now"][call] / r["before"][call] for r in cell["runs"])
                cells.append(cell)
        return {"speed": True, "before": before, "builds": builds, "runs": runs, "market": MARKET, "cells": cells}


def speed_table(results: dict[str, Any]) -> str:
    builds = results["builds"]
    header = ["latency", "count"]
    for call in ("first", "warm"):
        header += [f"{call}: {b}" for b in builds] + (["now ÷ before"] if "before" in builds else [])
    header += [f"requests (2 calls): {b}" for b in builds] + ["429s"]
    rows = []
    for c in results["cells"]:
        row: list[Any] = [ms(c["latency_s"]), f"{c['count']:,}"]
        for call in ("first", "warm"):
            row += [f"{c[f'{b}_{call}_s']:.3f} s" for b in builds]
            if "before" in builds:
                row.append(f"**{c[f'ratio_{call}']:.2f}**")
        row += ["/".join(map(str, c[f"{b}_requests"])) for b in builds]
        row.append(sum(c[f"{b}_429s"] for b in builds))
        rows.append(row)
    return (md_table(header, rows) + f"\n\nLiquid {results['market']}, cache off, medians of {results['runs']} runs "
            f"(a fresh process per build and run); before = {results['before']}.")


def main() -> int:
    def options(ap: Any) -> None:
        ap.add_argument("--days", type=int, default=30)
        ap.add_argument("--counts", type=int, nargs="+", default=[1000, 10_000])
        ap.add_argument("--clients", nargs="+", default=CLIENTS, choices=CLIENTS)
        ap.add_argument("--before", default=BEFORE)
        ap.add_argument("--speed", action="store_true", help="liquid count=N wall time, now vs --before")
        ap.add_argument("--speed-counts", type=int, nargs="+", default=[1000, 20_000])
        ap.add_argument("--latencies", type=float, nargs="+", default=[0.03, 0.15, 0.3])
        ap.add_argument("--runs", type=int, default=3)

    def run(a: Any, log: Callable[[str], None]) -> dict[str, Any]:
        if a.speed:
            return speed(a.latencies, a.speed_counts, a.runs, ["now", "before"], a.before, log=log)
        return bench(a.days, a.counts, a.clients, a.before, log=log)

    return cli(__doc__, options, run, lambda r: speed_table(r) if r.get("speed") else table(r))


if __name__ == "__main__":
    raise SystemExit(main())
