"""Concurrent use (issue 7, item 4): several threads, async tasks and processes fetching
overlapping ranges of the same markets at once, through one cache directory.

Results equal a single fetch, the cache holds nothing twice and every file in it is whole, and
the rate limit holds: within a process every thread and task shares one limiter per group;
separate processes share the IP's budget without knowing of each other, so each is given a share
(``rate_limit=3`` for three processes: 9 of the 10 a second) — docs/reliability.md explains it.

Earlier tests of the same kind: ``tests/test_cache.py`` (two processes filling one candle range,
four processes writing one partition), ``tests/test_client.py::test_sync_and_async_share_one_limiter``.
"""

from __future__ import annotations

import asyncio
import os
import multiprocessing as mp
import threading
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

import mdcoord
from mdcoord._config import source_name
from mdcoord._store import read_partition
from mdcoord.sim import Exchange

from .checkpoints import local_ports
from .conftest import NOW, RIG_JITTER, assert_same_candles, truth

MARKETS = ["KRW-BTC", "KRW-ETH"]
# overlapping 1-minute ranges of one day: [00, 12), [06, 18), [03, 09), and [00, 12) again
CANDLE_RANGES = [("00:00", "12:00"), ("06:00", "18:00"), ("03:00", "09:00"), ("00:00", "12:00")]
DAY = "2026-11-12"
TRADE_DAY = (pd.Timestamp(NOW).floor("D") - pd.Timedelta(days=2)).strftime("%Y-%m-%d")
TRADE_RANGES = [("10:00", "10:40"), ("10:20", "11:00"), ("10:00", "11:00")]


def _span(day: str, a: str, b: str) -> tuple[str, str]:
    return f"{day}T{a}:00Z", f"{day}T{b}:00Z"


def trades_truth(ex: Exchange, market: str, start: str, end: str) -> pd.DataFrame:
    rows = ex.market.trade_rows(market, start, end)
    return pd.DataFrame({
        "time": pd.to_datetime([r["timestamp"] for r in rows], unit="ms", utc=True).astype("datetime64[ns, UTC]"),
        "sequential_id": [r["sequential_id"] for r in rows],
        "price": [float(r["trade_price"]) for r in rows],
    }).sort_values(["time", "sequential_id"]).set_index("time")


def assert_same_trades(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.index) == list(want.index)
    assert got["sequential_id"].tolist() == want["sequential_id"].tolist()
    assert got["price"].tolist() == want["price"].tolist()


def assert_cache_whole(root: Path) -> None:
    """Every partition file loads with its coverage, and nothing in it is stored twice."""
    files = sorted(root.rglob("part.parquet"))
    assert files
    for path in files:
        got = read_partition(path)
        assert got is not None, f"{path} does not load"
        table, coverage = got
        key = "sequential_id" if "sequential_id" in table.column_names else "time"
        assert table.column(key).to_pandas().is_unique, f"{path} holds rows twice"
        assert coverage and all(a < b for a, b in coverage)
    for kind in ("candles", "trades"):
        if (root / kind).exists():
            keys = ds.dataset(root / kind, format="parquet", partitioning="hive").to_table().to_pandas()
            key = ["market", "sequential_id"] if kind == "trades" else ["market", "timeframe", "time"]
            assert not keys.duplicated(key).any()


def test_threads_and_tasks_fetching_overlapping_ranges(ex: Exchange, tmp_path: Path) -> None:
    """Four threads of overlapping candle ranges of two markets, three threads of overlapping
    trade ranges, and three async tasks on one loop, all at once through one cache directory."""
    results: dict[str, pd.DataFrame] = {}
    errors: list[BaseException] = []
    kw = dict(base_url=ex.base_url, cache=True, cache_dir=str(tmp_path))

    def run(key: str, fn) -> None:  # type: ignore[no-untyped-def]
        try:
            results[key] = fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    jobs = {}
    for i, (a, b) in enumerate(CANDLE_RANGES):
        s, e = _span(DAY, a, b)
        jobs[f"candles{i}"] = lambda s=s, e=e: mdcoord.candles(MARKETS, "1m", start=s, end=e, **kw)
    for i, (a, b) in enumerate(TRADE_RANGES):
        s, e = _span(TRADE_DAY, a, b)
        jobs[f"trades{i}"] = lambda s=s, e=e: mdcoord.trades("KRW-BTC", start=s, end=e, **kw)

    async def tasks() -> list[pd.DataFrame]:
        return await asyncio.gather(*(mdcoord.acandles(MARKETS, "1m", start=s, end=e, **kw)
                                      for s, e in (_span(DAY, *r) for r in CANDLE_RANGES[:3])))

    jobs["tasks"] = lambda: asyncio.run(tasks())
    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors

    for i, (a, b) in enumerate(CANDLE_RANGES):
        s, e = _span(DAY, a, b)
        for m in MARKETS:
            assert_same_candles(results[f"candles{i}"].xs(m), truth(ex, m, "1m", s, e))
            if i < 3:
                assert_same_candles(results["tasks"][i].xs(m), truth(ex, m, "1m", s, e))
    for i, (a, b) in enumerate(TRADE_RANGES):
        assert_same_trades(results[f"trades{i}"], trades_truth(ex, "KRW-BTC", *_span(TRADE_DAY, a, b)))
    assert_cache_whole(tmp_path / source_name(ex.base_url))
    # one limiter per group for the whole process: never more than 10 in any second, no 429
    assert ex.max_in_window("candles") <= 10 and ex.max_in_window("crix-trades") <= 10
    assert ex.count(status=429) == 0 and ex.count(status=418) == 0


def _child(base_url: str, cache_dir: str, out: str, shift: int, report: Connection, release: Event) -> None:
    """One process: overlapping candle and trade ranges (rotated by ``shift``), at a third of the
    budget; writes what it got for the parent to check, and reports its own figures and the local
    ports of its connections (after every call: a connection that idles long is closed) on ``report``."""
    mdcoord.set_options(progress=False, cache=True, cache_dir=cache_dir, base_url=base_url, rate_limit=3,
                        rate_budget="process",  # the opt-out, made safe by shares that add up to <= 10
                        rate_margin=RIG_JITTER)  # (conftest.py: a child does not inherit set_options)
    got, ports = {}, set()
    order = CANDLE_RANGES[shift:] + CANDLE_RANGES[:shift]
    for a, b in order[:2]:
        s, e = _span(DAY, a, b)
        got[f"candles {a} {b}"] = mdcoord.candles(MARKETS, "1m", start=s, end=e).reset_index()
        ports |= local_ports(os.getpid())
    a, b = TRADE_RANGES[shift % len(TRADE_RANGES)]
    got[f"trades {a} {b}"] = mdcoord.trades("KRW-ETH", start=_span(TRADE_DAY, a, b)[0],
                                            end=_span(TRADE_DAY, a, b)[1]).reset_index()
    ports |= local_ports(os.getpid())
    for key, frame in got.items():
        frame.to_parquet(Path(out) / f"{key.replace(' ', '_').replace(':', '')}.parquet")
    m = mdcoord.metrics()
    report.send({"429": int(m["429"].sum()), "418": int(m["418"].sum()), "ports": ports})
    release.wait(300)  # keep the connections open until the parent has seen which ones are ours


def _report(conn: Connection, proc: mp.process.BaseProcess) -> dict:  # type: ignore[type-arg]
    """What a child sent when it finished its work (however long that took)."""
    try:
        return conn.recv()  # type: ignore[no-any-return]
    except EOFError:
        proc.join(5)
        raise AssertionError(f"a child died without reporting (exit code {proc.exitcode})") from None


def most_in_any_second(arrivals: list[float]) -> int:
    times, best, lo = sorted(arrivals), 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_three_processes_sharing_one_ip_budget(ex: Exchange, tmp_path: Path) -> None:
    """Three processes, each with a budget of its own (``rate_budget="process"``, the opt-out) and
    a share of it (``rate_limit=3``), fetch overlapping candle and trade ranges of the
    same markets into one cache at once: every result is exact, the cache holds nothing twice,
    the exchange — which sees one IP — never counts more than 10 in a second of a group, and,
    telling the processes apart by their connections, never more than 3 of any one process —
    all by the exchange's own timestamps. Nothing asks the processes to reach a rate: on a loaded
    machine they may be slower, never faster."""
    ex.reset_rate_limits()  # the children's limiters know nothing of this process's last second
    ex.clear_log()
    cache = tmp_path / "cache"
    outs = [tmp_path / f"out{i}" for i in range(3)]
    ctx = mp.get_context("spawn")
    release = ctx.Event()
    procs, reports = [], []
    for i, out in enumerate(outs):
        out.mkdir()
        mine, theirs = ctx.Pipe(duplex=False)
        procs.append(ctx.Process(target=_child, args=(ex.base_url, str(cache), str(out), i, theirs, release)))
        procs[-1].start()
        theirs.close()  # (so a child that dies is an EOFError here, not a wait)
        reports.append(mine)
    figures = [_report(r, p) for r, p in zip(reports, procs)]  # waits for each child's end of work
    # which connection belongs to which process: each child's requests as the exchange saw them
    ports = [f["ports"] | local_ports(p.pid) for f, p in zip(figures, procs)]  # type: ignore[arg-type]
    release.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    log = ex.log
    assert most_in_any_second([r.arrival for r in log if r.group == "candles"]) == ex.max_in_window("candles")
    assert all(r.peer is not None and any(r.peer[1] in mine for mine in ports) for r in log)  # all attributed
    for mine in ports:
        for group in ("candles", "crix-trades"):
            arrivals = [r.arrival for r in log if r.group == group and r.peer is not None and r.peer[1] in mine]
            assert arrivals and most_in_any_second(arrivals) <= 3  # each process kept to its rate_limit=3
    for out, mine in zip(outs, figures):
        assert (mine["429"], mine["418"]) == (0, 0)  # each process saw no 429 and no 418
        for path in sorted(out.glob("*.parquet")):
            kind, a, b = path.stem.split("_")
            a, b = f"{a[:2]}:{a[2:]}", f"{b[:2]}:{b[2:]}"
            frame = pd.read_parquet(path)
            if kind == "candles":
                frame = frame.set_index(["market", "time"])
                for m in MARKETS:
                    assert_same_candles(frame.xs(m), truth(ex, m, "1m", *_span(DAY, a, b)))
            else:
                assert_same_trades(frame.set_index("time"), trades_truth(ex, "KRW-ETH", *_span(TRADE_DAY, a, b)))
    assert_cache_whole(cache / source_name(ex.base_url))
    for group in ("candles", "crix-trades", "market"):
        assert ex.max_in_window(group) <= 10
    assert ex.count(status=429) == 0 and ex.count(status=418) == 0
    # and the cache they filled answers the union of their ranges without a request
    mdcoord.candles("KRW-BTC", "1m", count=1, base_url=ex.base_url)  # (this process knows the clock)
    sent = ex.count()
    df = mdcoord.candles(MARKETS, "1m", start=f"{DAY}T00:00:00Z", end=f"{DAY}T18:00:00Z", base_url=ex.base_url,
                         cache=True, cache_dir=str(cache))
    assert ex.count() == sent
    for m in MARKETS:
        assert_same_candles(df.xs(m), truth(ex, m, "1m", f"{DAY}T00:00:00Z", f"{DAY}T18:00:00Z"))
