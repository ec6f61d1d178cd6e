"""What every benchmark of issue 6 shares: the exchange's setup, medians, machine facts, truth.

Every timed run starts a fresh :class:`~mdcoord.sim.Exchange` (a fresh rate limiter and an
empty request log) with a frozen clock, so request counts come from the exchange's own log and
the market is the same in every run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mdcoord.sim import Exchange, SimConfig

NOW = "2026-11-20T12:34:56Z"
NOW_TS = pd.Timestamp(NOW)
#: The start of the forming minute at NOW: every 1m candle before it is closed.
FORMING = NOW_TS.floor("min")
MARKET = "KRW-BTC"
LATENCIES = (0.03, 0.15, 0.3)
RATE = 10  # requests per second per group, the exchange's strict limit
OHLCV = ["open", "high", "low", "close", "volume"]


def exchange(latency: float, jitter: float | None = None, **overrides: Any) -> Exchange:
    """A fresh strict exchange (10/s per group, 429 then 418) with ``latency``, each half of it
    varying by ± ``jitter`` (default latency/10)."""
    jitter = latency / 10 if jitter is None else jitter
    return Exchange(SimConfig(seed=7, now=NOW, frozen=True, latency=latency, jitter=jitter, **overrides))


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def ms(latency: float) -> str:
    return f"{latency * 1000:.0f} ms"


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def statuses(ex: Exchange, group: str | None = None) -> dict[str, int]:
    """Requests, 429s and 418s from the exchange's log (optionally of one group)."""
    return {
        "requests": ex.count(group=group),
        "429s": ex.count(group=group, status=429),
        "418s": ex.count(group=group, status=418),
    }


def mdcoord_diagnostics(base_url: str, group: str) -> dict[str, Any]:
    """What mdcoord's own metrics say about its last calls to ``base_url`` (call
    ``mdcoord.reset_metrics()`` first): the adaptive concurrency and, read from its limiter
    (private, read only), the safety margin it ended with."""
    import mdcoord
    from mdcoord._runtime import get_runtime

    out: dict[str, Any] = {}
    m = mdcoord.metrics().reset_index()  # index (source, group); source "127.0.0.1_PORT"
    source = base_url.split("//", 1)[1].split("/", 1)[0].replace(":", "_")
    row = m[(m["source"] == source) & (m["group"] == group)]
    for key in ("concurrency_limit", "max_in_flight", "concurrency_shrinks", "latency_p50_ms", "loop_lag_max_ms"):
        value = row[key].iloc[0] if len(row) and key in row else None
        if value is not None and not pd.isna(value):  # NA: no request of that kind measured
            out[key] = round(float(value), 1)
    try:
        from mdcoord._groups import Group

        limiter = get_runtime()._clients[(base_url, None)].pacing.limiter(Group(group))
        out["margin_s"] = round(limiter.margin, 3)
        out["extra_margin_s"] = round(limiter.extra_margin, 3)
    except (AttributeError, KeyError):  # internals moved: the figures are extras, not the benchmark
        pass
    return out


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def mdcoord_source() -> str:
    """Which mdcoord was measured: its checkout, commit, and whether its files differ from it."""
    import mdcoord

    root = Path(mdcoord.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "mdcoord"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(root)
    return f"{root} at {head}" + (" with uncommitted changes to mdcoord/" if dirty else " (clean)")


def machine_info() -> dict[str, Any]:
    """Where and with what a run was measured."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": load,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "mdcoord_source": mdcoord_source(),
        "versions": {d: _version(d) for d in ("mdcoord", "pandas", "numpy", "pyarrow", "aiohttp", "orjson",
                                                 "pyupbit", "requests", "ccxt")},
    }


# -- ground truth ------------------------------------------------------------------------------------
def truth_candles(ex: Exchange, start: pd.Timestamp, end: pd.Timestamp, market: str = MARKET) -> pd.DataFrame:
    """The exchange model's 1m candles of ``market`` with ``start <= time < end`` (``end`` may reach
    past NOW: the forming candle is then the last row), indexed by tz-aware UTC ``time``."""
    rows = ex.market.candles(market, "minutes", 1, start.to_pydatetime(), end.to_pydatetime())
    raw = pd.DataFrame(rows)
    out = pd.DataFrame(
        {
            "time": pd.to_datetime(raw["candle_date_time_utc"], format="%Y-%m-%dT%H:%M:%S", utc=True),
            "open": raw["opening_price"].astype("float64"),
            "high": raw["high_price"].astype("float64"),
            "low": raw["low_price"].astype("float64"),
            "close": raw["trade_price"].astype("float64"),
            "volume": raw["candle_acc_trade_volume"].astype("float64"),
            "value": raw["candle_acc_trade_price"].astype("float64"),
        }
    )
    return out.set_index("time").sort_index()


def check_candles(got: pd.DataFrame | None, ex: Exchange, start: pd.Timestamp, closed_wanted: int,
                  market: str = MARKET) -> dict[str, Any]:
    """Compare what a client returned with the exchange's truth (of ``market``).

    ``got``: indexed by tz-aware UTC candle start, with (some of) ``open high low close volume
    value``. ``start``: the first candle start the client was asked for (so a short answer
    shows as missing rows); ``closed_wanted``: how many closed candles that request covers.
    The forming candle (start = FORMING), if returned, is compared too but counted apart.
    A series is *complete and correct* when no minute of the truth in ``[start, FORMING)`` is
    missing, none is duplicated, nothing outside it (but the forming candle) is returned, and
    every value equals the truth (rtol 1e-12: the JSON floats are the model's floats).
    """
    if got is None:
        return {"ok": False, "verdict": "no data", "rows": 0}
    idx = got.index
    forming = int((idx == FORMING).sum())
    dup = int(idx.duplicated().sum())
    want = truth_candles(ex, start, FORMING + pd.Timedelta(minutes=1), market)
    closed_truth = want.index[want.index < FORMING]
    present = idx[~idx.duplicated()]
    missing = int((~closed_truth.isin(present)).sum())
    extra = int((~present.isin(want.index)).sum())
    common = present[present.isin(want.index)]
    cols = [c for c in ("open", "high", "low", "close", "volume", "value") if c in got.columns]
    g = got.loc[~idx.duplicated()].loc[common, cols].to_numpy(dtype="float64")
    w = want.loc[common, cols].to_numpy(dtype="float64")
    bad_values = int((~np.isclose(g, w, rtol=1e-12, atol=0.0)).any(axis=1).sum())
    closed = int((present < FORMING).sum())
    ok = missing == 0 and dup == 0 and extra == 0 and bad_values == 0 and closed >= closed_wanted
    problems = [f"{n} {what}" for n, what in ((missing, "missing"), (dup, "duplicated"), (extra, "not in truth"),
                                              (bad_values, "wrong values")) if n]
    if closed < closed_wanted and not missing:
        problems.append(f"{closed_wanted - closed} short")
    verdict = "yes" if ok else "NO: " + ", ".join(problems)
    if forming:
        verdict += " (+ forming candle)"
    return {
        "ok": ok,
        "verdict": verdict,
        "rows": len(got),
        "closed_rows": closed,
        "forming_rows": forming,
        "missing": missing,
        "duplicated": dup,
        "not_in_truth": extra,
        "wrong_values": bad_values,
        "columns_compared": cols,
    }


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def cli(doc: str | None, options: Callable[[argparse.ArgumentParser], None],
        run: Callable[[argparse.Namespace, Callable[[str], None]], dict[str, Any]],
        table: Callable[[dict[str, Any]], str]) -> int:
    """A benchmark script's ``main``: its ``options``, ``--json``, progress lines, the table."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    options(ap)
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = ap.parse_args()
    results = run(args, (lambda s: None) if args.json else print)
    print(json.dumps(results, indent=2, default=str) if args.json else table(results))
    return 0
