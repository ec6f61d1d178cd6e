"""Benchmark: mdcoord vs pyupbit vs ccxt for the N most recent 1m candles of KRW-BTC.

Every client talks HTTP to the same embedded exchange (strict 10 requests/s per group, 429 above
it, 418 after five 429s in 10 s) with injected latency 30/150/300 ms (± a tenth); each run of
each client gets a fresh exchange (fresh limiter, empty log, frozen clock). Per client: wall
time, candle requests (from the exchange's log), 429s and 418s, requests per 1000 candles, and
whether the returned series is complete and correct against the exchange's ground truth
(``_common.check_candles``).

The clients, each as a user would write it:

- ``mdcoord``: ``mdcoord.candles("KRW-BTC", "1m", count=N)`` with the default options (since
  1e3610c: ``concurrency="auto"``, ``rate_margin="auto"``; cache off, so every run fetches);
  ``mdcoord-seq`` is the same with ``concurrency=1``, for the speed-up. The adaptive
  concurrency and the margin each run ended with are recorded (``mdcoord_diagnostics``).
- ``pyupbit`` 0.2.34: ``pyupbit.get_ohlcv("KRW-BTC", interval="minute1", count=N)``. pyupbit has
  no base-URL option: in this script only, the ``requests`` module its ``request_api`` calls is
  swapped for a shim that rewrites ``https://api.upbit.com/v1`` to the exchange's URL and then
  calls the real ``requests.get`` (:func:`pyupbit_redirected`). Its pacing — one request at a
  time, ``time.sleep(0.1)`` between pages, a new connection per request — is untouched. Its
  ``count`` includes the still-forming candle (its first page has no usable ``to``), so N rows
  hold N-1 closed candles; on any error (a 429 included) it returns ``None``.
- ``ccxt`` 4.5 (the sync ``ccxt.upbit``, as in most scripts and notebooks), its ``urls['api']``
  pointed at the exchange, ``enableRateLimit`` left at its default (True: 50 ms x cost 2 = at
  least 100 ms between request starts), and the usual ``fetch_ohlcv`` pagination loop
  (:func:`ccxt_loop`): ``since`` = N minutes before the forming minute, ``limit=200``, next
  ``since`` = last timestamp + 1 minute, until the forming minute (the "user" knows the
  exchange's clock) or an empty page. ccxt loads the market list once first (one ``market``
  request, counted apart). No retry: an exception ends the loop and is reported with what
  arrived.

    python benchmarks/bench_compare.py [--runs 3] [--counts 1000 20000] [--latencies 0.03 0.15 0.3]
                                       [--clients mdcoord mdcoord-seq pyupbit ccxt] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mdcoord
from benchmarks._common import (
    FORMING,
    LATENCIES,
    MARKET,
    check_candles,
    cli,
    exchange,
    md_table,
    mdcoord_diagnostics,
    median,
    ms,
    statuses,
)
from mdcoord.sim import Exchange

CLIENTS = ("mdcoord", "mdcoord-seq", "pyupbit", "ccxt")
LABELS = {
    "mdcoord": "mdcoord (defaults, concurrency auto)",
    "mdcoord-seq": "mdcoord, concurrency 1",
    "pyupbit": "pyupbit.get_ohlcv",
    "ccxt": "ccxt fetch_ohlcv loop",
}
UPBIT = "https://api.upbit.com/v1"


# -- the clients ----------------------------------------------------------------------------------------
def mdcoord_client(concurrency: int | None) -> Callable[[Exchange, int], tuple[pd.DataFrame | None, str | None]]:
    def run(ex: Exchange, n: int) -> tuple[pd.DataFrame | None, str | None]:
        opts: dict[str, Any] = {"cache": False, "progress": False}
        if concurrency is not None:
            opts["concurrency"] = concurrency
        try:
            return mdcoord.candles(MARKET, "1m", count=n, base_url=ex.base_url, **opts), None
        except mdcoord.MdcoordError as e:
            return getattr(e, "partial", None), f"{type(e).__name__}: {e}"

    return run


@contextlib.contextmanager
def pyupbit_redirected(base_url: str) -> Iterator[None]:
    """pyupbit's HTTP calls go to ``base_url`` instead of api.upbit.com (this script only).

    ``pyupbit.request_api`` calls ``requests.get(url, ...)`` through its module global
    ``requests``; that global is swapped for a namespace whose ``get`` rewrites the URL and calls
    the real ``requests.get``. Nothing else of pyupbit changes.
    """
    import pyupbit.request_api as api
    import requests

    def get(url: str, **kwargs: Any) -> Any:
        return requests.get(url.replace(UPBIT, base_url, 1), **kwargs)

    saved = api.requests
    api.requests = types.SimpleNamespace(get=get, post=requests.post, delete=requests.delete)  # type: ignore[assignment]
    try:
        yield
    finally:
        api.requests = saved


def pyupbit_client(ex: Exchange, n: int) -> tuple[pd.DataFrame | None, str | None]:
    import pyupbit

    with pyupbit_redirected(ex.base_url):
        df = pyupbit.get_ohlcv(MARKET, interval="minute1", count=n)
    if df is None:  # get_ohlcv swallows every exception and returns None
        return None, "get_ohlcv returned None"
    # pyupbit indexes by the naive KST candle start
    df.index = (pd.DatetimeIndex(df.index) - pd.Timedelta(hours=9)).tz_localize("UTC")
    return df, None


def ccxt_loop(up: Any, symbol: str, since: int, end: int, candles: list[list[float]]) -> None:
    """The pagination loop of ccxt's manual, as a user writes it (into ``candles``)."""
    while since < end:
        batch = up.fetch_ohlcv(symbol, "1m", since=since, limit=200)
        if not batch:
            break
        candles += batch
        since = batch[-1][0] + 60_000


def ccxt_client(ex: Exchange, n: int) -> tuple[pd.DataFrame | None, str | None]:
    import ccxt

    up = ccxt.upbit()  # enableRateLimit: True by default
    host = ex.base_url.rsplit("/v1", 1)[0]  # ccxt appends '/' + version ('v1') + '/' + path
    up.urls["api"] = {"public": host, "private": host}
    end = int(FORMING.value // 10**6)
    candles: list[list[float]] = []
    error = None
    try:
        ccxt_loop(up, "BTC/KRW", end - n * 60_000, end, candles)
    except ccxt.BaseError as e:  # what arrived before the exception is still checked
        error = f"{type(e).__name__}: {str(e)[:120]}"
    if not candles:
        return None, error
    df = pd.DataFrame(candles, columns=["ts", "open", "high", "low", "close", "volume"])
    df.index = pd.to_datetime(df.pop("ts"), unit="ms", utc=True).rename("time")
    return df, error


CLIENT_FUNCS: dict[str, Callable[[Exchange, int], tuple[pd.DataFrame | None, str | None]]] = {
    "mdcoord": mdcoord_client(None),
    "mdcoord-seq": mdcoord_client(1),
    "pyupbit": pyupbit_client,
    "ccxt": ccxt_client,
}


def closed_wanted(client: str, n: int) -> int:
    """Closed candles a complete answer holds: pyupbit's ``count`` includes the forming one."""
    return n - 1 if client == "pyupbit" else n


def start_wanted(ex: Exchange, client: str, n: int, market: str = MARKET) -> pd.Timestamp:
    """The first candle start a complete answer (of ``market``) reaches back to."""
    if client == "ccxt":  # time-based: `since` = N minutes before the forming minute
        return FORMING - pd.Timedelta(minutes=n)
    want = closed_wanted(client, n)  # count-based: the want-th newest closed candle
    rows = ex.market.candles(market, "minutes", 1, (FORMING - pd.Timedelta(minutes=3 * want + 10)).to_pydatetime(),
                             FORMING.to_pydatetime())
    return pd.Timestamp(rows[want - 1]["candle_date_time_utc"], tz="UTC") if len(rows) >= want else FORMING


def one_run(client: str, n: int, latency: float) -> dict[str, Any]:
    with exchange(latency) as ex:
        mdcoord.reset_metrics()
        t0 = time.perf_counter()
        got, error = CLIENT_FUNCS[client](ex, n)
        wall = time.perf_counter() - t0
        diag = mdcoord_diagnostics(ex.base_url, "candles") if client.startswith("mdcoord") else {}
        candles = statuses(ex, "candles")
        check = check_candles(got, ex, start_wanted(ex, client, n), closed_wanted(client, n))
        return {
            "wall_s": wall,
            **candles,
            "other_requests": ex.count() - candles["requests"],
            "all_429s": ex.count(status=429),
            "all_418s": ex.count(status=418),
            "max_in_1s": ex.max_in_window("candles", 1.0),
            "error": error,
            "check": check,
            "mdcoord": diag,
        }


def summarize(runs: list[dict[str, Any]], base: list[dict[str, Any]] | None, n: int) -> dict[str, Any]:
    walls = [r["wall_s"] for r in runs]
    rows = max(r["check"]["rows"] for r in runs)
    requests = median(r["requests"] for r in runs)
    out = {
        "median_wall_s": round(median(walls), 3),
        "runs_s": [round(w, 3) for w in walls],
        "requests": requests,
        "other_requests": median(r["other_requests"] for r in runs),
        "429s": sum(r["all_429s"] for r in runs),
        "418s": sum(r["all_418s"] for r in runs),
        "max_in_1s": max(r["max_in_1s"] for r in runs),
        "rows": rows,
        "requests_per_1000_candles": round(1000 * requests / rows, 2) if rows else None,
        "complete_and_correct": all(r["check"]["ok"] for r in runs),
        "verdicts": sorted({r["check"]["verdict"] for r in runs}),
        "errors": sorted({r["error"] for r in runs if r["error"]}),
        "checks": [r["check"] for r in runs],
        "mdcoord_diagnostics": [r["mdcoord"] for r in runs],
    }
    if base is not None:  # wall / mdcoord's wall, taken within each run, then the median
        out["median_ratio_to_mdcoord"] = round(median(r["wall_s"] / b["wall_s"] for r, b in zip(runs, base)), 2)
    return out


def warm_up(clients: list[str]) -> None:
    """One untimed call of each client (imports, mdcoord's loop thread, ccxt's class setup), so
    that no timed run pays a once-per-process cost."""
    with exchange(0.0) as ex:
        for c in clients:
            CLIENT_FUNCS[c](ex, 400)


def bench(runs: int, counts: list[int], latencies: list[float], clients: list[str], *,
          runs_by_count: dict[int, int] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``runs`` runs (``runs_by_count[n]`` for count n if given) of every client at every latency
    and count; within a run the clients go one after another, so a ratio compares neighbours."""
    results: dict[str, Any] = {}
    warm_up(clients)
    for latency in latencies:
        for n in counts:
            raw: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
            for i in range((runs_by_count or {}).get(n, runs)):
                for c in clients:
                    r = one_run(c, n, latency)
                    raw[c].append(r)
                    log(f"  compare {ms(latency)} {n:>6} {c:<12} run {i + 1}: {r['wall_s']:7.2f} s, "
                        f"{r['requests']} req, {r['all_429s']} x 429, {r['check']['verdict']}")
            base = raw.get("mdcoord")
            results[f"{latency}|{n}"] = {
                "latency_s": latency,
                "count": n,
                "clients": {c: summarize(raw[c], base, n) for c in clients},
            }
    return results


def speedups(results: dict[str, Any]) -> dict[str, float]:
    """Sequential wall / mdcoord wall (same job, same run), median over runs, by latency|count."""
    out = {}
    for key, r in results.items():
        c = r["clients"]
        if "mdcoord" in c and "mdcoord-seq" in c:
            out[key] = c["mdcoord-seq"]["median_ratio_to_mdcoord"]
    return out


def table(results: dict[str, Any]) -> str:
    rows = []
    for r in results.values():
        for c, s in r["clients"].items():
            verdict = "; ".join(s["verdicts"])
            if s["errors"]:  # the exception's type; the message (with its URL) is in the JSON
                verdict += " — " + "; ".join(sorted({e.split(":", 1)[0] for e in s["errors"]}))
            wall = f"{s['median_wall_s']:.2f} s"
            ratio = f"{s['median_ratio_to_mdcoord']:.2f}x" if "median_ratio_to_mdcoord" in s else ""
            if not s["complete_and_correct"]:  # a time to failure is no speed
                wall, ratio = f"failed ({wall})", "—"
            rows.append([
                ms(r["latency_s"]), f"{r['count']:,}", LABELS[c], wall, ratio,
                f"{s['requests']:g}" + (f" (+{s['other_requests']:g})" if s["other_requests"] else ""),
                s["requests_per_1000_candles"], s["429s"], s["418s"], s["max_in_1s"], verdict,
            ])
    return md_table(["latency", "candles", "client", "median wall", "wall / mdcoord", "candle requests",
                     "req / 1000 candles", "429s", "418s", "max req in 1 s", "complete & correct"], rows)


def main() -> int:
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--runs", type=int, default=3)
        ap.add_argument("--counts", type=int, nargs="+", default=[1000, 20_000])
        ap.add_argument("--latencies", type=float, nargs="+", default=list(LATENCIES))
        ap.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))

    return cli(__doc__, options, lambda a, log: bench(a.runs, a.counts, a.latencies, a.clients, log=log), table)

if __name__ == "__main__":
    sys.exit(main())
