"""mdcoord.backfill: market x period tasks on a real Dask cluster (worker processes) against the
embedded exchange, into a Parquet dataset (issue 14, items 1, 2 and 4 in part).

What is checked by events: the exchange's log (requests, 429s, at most 10 in any second), the
files in the store, and the dataset read back against the exchange's own candles.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mdcoord
from mdcoord import IncompleteDataError, InvalidRequestError, MarketNotFoundError
from mdcoord._backfill import BackfillTask, plan_backfill
from mdcoord.sim import Exchange, ExchangeProcess, SimConfig

from .conftest import NOW, assert_same_candles, truth

MARKETS = ["KRW-BTC", "KRW-ETH", "KRW-ONB"]  # two liquid, one thin (hours without a trade)
START, END = "2026-09-15", "2026-11-10"  # three months touched: 9 tasks of 1h candles


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """Two worker processes for the module (starting a cluster costs seconds)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        yield client


def _read(store: Path) -> pd.DataFrame:
    return pd.read_parquet(store)


def _market(df: pd.DataFrame, market: str) -> pd.DataFrame:
    """One market's rows of a dataset read back, indexed by time (nanoseconds, as the frames
    mdcoord returns: the files hold microseconds, for DuckDB's and Spark's sake)."""
    got = df[df["market"].astype(str) == market].sort_values("time").set_index("time")
    got.index = got.index.as_unit("ns")
    return got


def _assert_dataset_is_the_exchanges(ex: Exchange, store: Path, markets: list[str], start: str, end: str) -> None:
    df = _read(store)
    assert sorted(df["market"].astype(str).unique()) == sorted(markets)
    for m in markets:
        got = _market(df, m)
        assert not got.index.duplicated().any()
        assert_same_candles(got, truth(ex, m, "1h", start, end))


# -- planning (pure) ---------------------------------------------------------------------------
def test_tasks_are_calendar_periods_clipped_to_the_range() -> None:
    tasks = plan_backfill(["KRW-BTC", "KRW-ETH"], "1m", "2026-09-15T06:00:00Z", "2026-11-10")
    assert [t.period for t in tasks] == ["2026-09", "2026-10", "2026-11"] * 2
    btc = tasks[:3]
    assert btc[0].start == pd.Timestamp("2026-09-15T06:00:00Z") and btc[0].end == pd.Timestamp("2026-10-01", tz="UTC")
    assert btc[1] == BackfillTask("KRW-BTC", "2026-10", pd.Timestamp("2026-10-01", tz="UTC"),
                                  pd.Timestamp("2026-11-01", tz="UTC"))
    assert btc[2].end == pd.Timestamp("2026-11-10", tz="UTC")
    # the tasks tile the range: no slot twice, none left out
    assert all(a.end == b.start for a, b in zip(btc, btc[1:]))
    assert tasks[0].data_path == "market=KRW-BTC/period=2026-09/part.parquet"


def test_the_period_follows_the_timeframe_and_bad_plans_are_refused() -> None:
    assert {t.period for t in plan_backfill(["KRW-BTC"], "1s", "2026-11-01", "2026-11-03")} == {"2026-11-01", "2026-11-02"}
    assert [t.period for t in plan_backfill(["KRW-BTC"], "1d", "2024-06-01", "2026-02-01")] == ["2024", "2025", "2026"]
    assert len(plan_backfill(["KRW-BTC"], "1m", "2026-01-01", "2026-01-03", period="day")) == 2
    with pytest.raises(InvalidRequestError, match="start must be before end"):
        plan_backfill(["KRW-BTC"], "1m", "2026-02-01", "2026-01-01")
    with pytest.raises(InvalidRequestError, match="period must be one of"):
        plan_backfill(["KRW-BTC"], "1m", "2026-01-01", "2026-02-01", period="week")


# -- end to end on a cluster -----------------------------------------------------------------------
def test_a_backfill_writes_the_exchanges_candles_once_and_a_rerun_sends_nothing(fresh: Exchange, dask_client,  # type: ignore[no-untyped-def]
                                                                                tmp_path: Path) -> None:
    store = tmp_path / "krw-1h"
    summary = mdcoord.backfill(MARKETS, "1h", START, END, store=str(store), client=dask_client,
                               base_url=fresh.base_url, progress=False)
    assert summary.tasks == 9 and summary.tasks_done == 9 and summary.tasks_failed == 0
    # the exchange's log: every request counted, none refused, the host's budget held by both workers
    assert summary.requests == fresh.count(group="candles")
    assert fresh.count(status=429) == 0 and fresh.max_in_window("candles", 1.0) <= 10
    _assert_dataset_is_the_exchanges(fresh, store, MARKETS, START, END)
    df = _read(store)
    assert summary.rows == len(df) and str(df["time"].dtype) == "datetime64[us, UTC]"
    assert summary.missing_candles > 0  # the thin market's hours without a trade: gaps, reported
    # every task's record, and what the dataset is
    records = [json.loads(p.read_text()) for p in sorted((store / "_mdcoord" / "tasks").rglob("*.json"))]
    assert len(records) == 9 and sum(r["rows"] for r in records) == len(df)
    assert sum(r["requests"] for r in records) == summary.requests
    job = json.loads((store / "_mdcoord" / "backfill.json").read_text())
    assert job["timeframe"] == "1h" and job["markets"] == sorted(MARKETS) and job["partitioning"] == ["market", "period"]
    assert not [p for p in store.rglob(".*")], "a temporary file was left behind"
    assert len(summary.hosts) == 1 and sum(h["requests"] for h in summary.hosts.values()) == summary.requests
    assert "9/9 tasks" in str(summary)

    # interrupted or not, the same backfill again: finished tasks send 0 requests
    before = fresh.count()
    again = mdcoord.backfill(MARKETS, "1h", START, END, store=str(store), client=dask_client,
                             base_url=fresh.base_url, progress=False)
    assert again.tasks_skipped == 9 and again.requests == 0 and again.rows == summary.rows
    assert fresh.count(group="candles") == summary.requests and fresh.count() == before + 1  # the market list only


def test_a_failed_task_is_reported_and_the_rerun_does_only_the_missing(fresh: Exchange, dask_client,  # type: ignore[no-untyped-def]
                                                                       tmp_path: Path) -> None:
    store = tmp_path / "krw-1h"
    fresh.faults.inject("ban", group="candles", after=8, seconds=60)  # the IP is blocked mid-job
    with pytest.raises(IncompleteDataError) as caught:
        mdcoord.backfill(MARKETS, "1h", START, END, store=str(store), client=dask_client,
                         base_url=fresh.base_url, progress=False)
    first = caught.value.summary  # type: ignore[attr-defined]
    assert first.tasks_failed >= 1 and first.tasks_done + first.tasks_failed == 9
    assert all("IPBlockedError" in f["error"] for f in caught.value.failures)
    done = {p.stem for p in (store / "_mdcoord" / "tasks").rglob("*.json")}
    assert len(done) == first.tasks_done  # a failed task leaves no record (and no data file)
    assert len(list(store.rglob("part.parquet"))) == first.tasks_done

    fresh.reset_rate_limits()  # the block is over
    dask_client.restart()  # ...and the workers' processes, which remember it, are new
    sent = fresh.count(group="candles")
    second = mdcoord.backfill(MARKETS, "1h", START, END, store=str(store), client=dask_client,
                              base_url=fresh.base_url, progress=False)
    assert second.tasks_skipped == first.tasks_done and second.tasks_done == first.tasks_failed
    assert fresh.count(group="candles") - sent == second.requests > 0
    _assert_dataset_is_the_exchanges(fresh, store, MARKETS, START, END)


def test_markets_are_checked_before_any_task_and_a_quote_expands(exchange: Exchange, tmp_path: Path) -> None:
    with pytest.raises(MarketNotFoundError, match="KRW-BTX"):
        mdcoord.backfill(["KRW-BTC", "KRW-BTX"], "1h", START, END, store=str(tmp_path / "s"), base_url=exchange.base_url)
    assert not (tmp_path / "s").exists()  # nothing planned, nothing written
    from mdcoord._backfill import _resolve_markets

    krw = _resolve_markets("KRW", exchange.base_url, {})
    listing = mdcoord.markets("KRW", base_url=exchange.base_url)
    assert krw == sorted(listing.index) and len(krw) > 100


def test_a_store_keeps_one_timeframe_and_bad_arguments_are_named(exchange: Exchange, tmp_path: Path) -> None:
    store = tmp_path / "s"
    (store / "_mdcoord").mkdir(parents=True)
    (store / "_mdcoord" / "backfill.json").write_text(json.dumps({"timeframe": "1d", "start": "", "end": ""}))
    with pytest.raises(InvalidRequestError, match="holds a backfill of 1d candles, not 1h"):
        mdcoord.backfill(["KRW-BTC"], "1h", START, END, store=str(store), base_url=exchange.base_url)
    with pytest.raises(InvalidRequestError, match="needs start and end"):
        mdcoord.backfill(["KRW-BTC"], "1h", store=str(store))
    with pytest.raises(InvalidRequestError, match="n_workers"):
        mdcoord.backfill(["KRW-BTC"], "1h", START, END, store=str(store), n_workers=0)
    with pytest.raises(InvalidRequestError, match="not to the cache"):
        mdcoord.backfill(["KRW-BTC"], "1h", START, END, store=str(store), cache=True)
    with pytest.raises(InvalidRequestError, match="rate_budget"):
        mdcoord.backfill(["KRW-BTC"], "1h", START, END, store=str(store), rate_budget="bogus")


def test_the_command_line_runs_a_local_cluster_and_prints_the_summary(fresh: Exchange, tmp_path: Path) -> None:
    store = tmp_path / "cli"
    out = subprocess.run(
        [sys.executable, "-m", "mdcoord", "backfill", "KRW-BTC", "KRW-ETH", "1h", "--start", "2026-10-20",
         "--end", "2026-11-05", "--store", str(store), "--workers", "1", "--base-url", fresh.base_url, "--no-progress"],
        capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "4/4 tasks" in out.stdout and f"{fresh.count(group='candles')} requests" in out.stdout
    _assert_dataset_is_the_exchanges(fresh, store, ["KRW-BTC", "KRW-ETH"], "2026-10-20", "2026-11-05")


def test_one_worker_per_address_each_within_its_own_limit(tmp_path: Path) -> None:
    """Item 3 on one machine: workers bound to 127.0.0.2 and 127.0.0.3 (the exchange counts per
    client address, as Upbit counts per IP). By the exchange's log: every address sent requests,
    none over 10 in any second and no 429, while together they went past one address's 10 — two
    budgets spent at once; the dataset is the exchange's candles. (The throughput ratio over 1,
    2, 4 and 8 addresses is a timing: benchmarks/bench_backfill.py.)

    The exchange runs in a process of its own, as Upbit runs outside yours. Two addresses, not
    four: with four or more worker processes on two cores the exchange's own process stamps some
    requests up to ~40 ms later than the modeled network delay after the client wrote them (the
    clients' writes were measured 1 s + margin apart when it answered 429) — an instrument error,
    measured and open in issue 14, that this test must not turn into a flake."""
    addresses = ["127.0.0.2", "127.0.0.3"]
    markets = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL"]
    store = tmp_path / "four"
    with ExchangeProcess(SimConfig(seed=7, now=NOW, frozen=True)) as ex:
        summary = mdcoord.backfill(markets, "1m", "2026-11-01", "2026-11-05", period="day", store=str(store),
                                   addresses=addresses, base_url=ex.base_url, progress=False)
        assert summary.tasks_done == 16 and ex.count(status=429) == 0 and ex.count(status=418) == 0
        assert ex.addresses() == {*addresses, "127.0.0.1"}  # the driver asked for the market list
        assert ex.count(group="candles", address="127.0.0.1") == 0  # every candle from a bound worker
        for a in addresses:
            assert ex.count(group="candles", address=a) > 0
            assert ex.max_in_window("candles", 1.0, address=a) <= 10
        assert ex.max_in_window("candles", 1.0) > 10
    assert sorted(summary.hosts) == sorted(f"{h}@{a}" for h in {r.split("@")[0] for r in summary.hosts} for a in addresses)
    df = _read(store)
    for m in markets:
        got = _market(df, m)
        assert_same_candles(got, truth(ex, m, "1m", "2026-11-01", "2026-11-05"))


def test_addresses_are_checked(tmp_path: Path) -> None:
    for bad, match in ((["localhost"], "must be an IP address"), ("127.0.0.2", "a list of local IP addresses"),
                       ([], "a list of local IP addresses")):
        with pytest.raises(InvalidRequestError, match=match):
            mdcoord.backfill(["KRW-BTC"], "1h", START, END, store=str(tmp_path), addresses=bad)
    with pytest.raises(InvalidRequestError, match="not both"):
        mdcoord.backfill(["KRW-BTC"], "1h", START, END, store=str(tmp_path), addresses=["127.0.0.2"],
                         local_address="127.0.0.3")


def test_a_worker_killed_mid_task_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    """Item 4: SIGKILL the worker process that is running a task, in the middle of the job. Dask
    runs its task again elsewhere (the nanny starts a new worker); the task's file is renamed into
    place whole, then its record, so the rerun writes the same file again: by the store, every
    task once, no temporary file left, and the dataset is the exchange's candles exactly."""
    import os
    import signal
    import threading

    from distributed import Client, LocalCluster

    from mdcoord.sim import SimConfig

    from .conftest import NOW

    markets = ["KRW-BTC", "KRW-ETH", "KRW-XRP"]
    store = tmp_path / "killed"
    # 0.2 s a round trip: a task (a day of 1m, ~8 requests) takes about a second, long enough to
    # be caught in the middle. The exchange in a process of its own: in this one it shares the CPU
    # with the Dask client while the nanny restarts a worker, and stamps arrivals late (one 429 in
    # a clean-clone CI run; issue 14's finding, docs/scaling.md)
    with ExchangeProcess(SimConfig(seed=7, now=NOW, frozen=True, latency=0.2)) as ex, \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["summary"] = mdcoord.backfill(markets, "1m", "2026-11-01", "2026-11-07", period="day",
                                                     store=str(store), client=client, base_url=ex.base_url,
                                                     progress=False)
            except BaseException as err:  # noqa: BLE001 - reported below
                result["error"] = err

        job = threading.Thread(target=run)
        job.start()
        # the middle: some tasks recorded, and a worker busy with one now
        ex.wait_for(lambda: len(list(store.rglob("period=*.json"))) >= 3, timeout=120, what="three tasks recorded")
        busy: list[str] = []

        def someone_busy() -> bool:
            busy[:] = [w for w, keys in client.processing().items() if keys]
            return bool(busy)

        ex.wait_for(someone_busy, timeout=60, what="a worker running a task")
        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        sent_before_kill = ex.count(group="candles")
        os.kill(pid, signal.SIGKILL)
        job.join(timeout=300)
        assert not job.is_alive() and "error" not in result, result.get("error")
        summary = result["summary"]
        # a task killed after its record (before it could answer) is found done when it reruns
        assert summary.tasks == 18 and summary.tasks_done + summary.tasks_skipped == 18 and summary.tasks_failed == 0
        assert ex.count(group="candles") > sent_before_kill  # the job went on after the kill
        assert ex.count(status=429) == 0 and ex.max_in_window("candles", 1.0) <= 10
    records = sorted(store.rglob("period=*.json"))
    assert len(records) == 18 and len(list(store.rglob("part.parquet"))) == 18
    assert not [p for p in store.rglob(".*")], "a temporary file was left behind"
    df = _read(store)
    for m in markets:
        got = _market(df, m)
        assert not got.index.duplicated().any()
        assert_same_candles(got, truth(ex, m, "1m", "2026-11-01", "2026-11-07"))


def test_the_dataset_reads_the_same_in_pandas_dask_duckdb_and_polars(fresh: Exchange, dask_client,  # type: ignore[no-untyped-def]
                                                                     tmp_path: Path) -> None:
    """Item 5: the tools people use read the dataset without mdcoord — the same rows, the same
    values, and the same types: time and last_trade_at as UTC instants (microseconds: DuckDB
    drops the time zone of nanosecond timestamps), prices float64, market and period as text."""
    import dask.dataframe as dd
    import duckdb
    import polars as pl

    store = tmp_path / "read"
    mdcoord.backfill(["KRW-BTC", "KRW-ONB"], "1h", "2026-10-15", "2026-11-10", store=str(store), client=dask_client,
                     base_url=fresh.base_url, progress=False)
    glob = f"{store}/**/*.parquet"
    frames = {
        "pandas": pd.read_parquet(store),
        "dask": dd.read_parquet(str(store)).compute(),
        "duckdb": duckdb.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").df(),
        "polars": pl.scan_parquet(glob, hive_partitioning=True).collect().to_pandas(),
    }
    cols = ["market", "period", "time", "open", "high", "low", "close", "volume", "value", "last_trade_at"]
    norm = {}
    for name, df in frames.items():
        assert sorted(df.columns) == sorted(cols), name
        for c in ("time", "last_trade_at"):
            assert isinstance(df[c].dtype, pd.DatetimeTZDtype) and str(df[c].dt.tz) in ("UTC", "Etc/UTC"), (name, c, df[c].dtype)
            assert df[c].dtype.unit == "us", (name, c)
        for c in ("open", "high", "low", "close", "volume", "value"):
            assert str(df[c].dtype) == "float64", (name, c)
        out = df[cols].astype({"market": str, "period": str})
        out["time"] = out["time"].dt.tz_convert("UTC")
        out["last_trade_at"] = out["last_trade_at"].dt.tz_convert("UTC")
        norm[name] = out.sort_values(["market", "time"]).reset_index(drop=True)
    for name in ("dask", "duckdb", "polars"):
        pd.testing.assert_frame_equal(norm[name], norm["pandas"], check_dtype=True, obj=name)
    assert len(norm["pandas"]) == sum(len(truth(fresh, m, "1h", "2026-10-15", "2026-11-10")) for m in ("KRW-BTC", "KRW-ONB"))
