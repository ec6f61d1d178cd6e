"""The Parquet cache: cache-first planning, coverage, forming candles, layout, safety."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

import mdcoord
from mdcoord._store import CandleStore, source_name
from mdcoord._timeframe import Timeframe
from mdcoord.sim import Exchange, SimConfig

from .checkpoints import kill_at_request, kill_mid_write
from .conftest import NOW, RIG_JITTER, assert_same_candles, truth

START, END = "2026-11-10T00:00:00Z", "2026-11-12T00:00:00Z"  # 2880 one-minute slots, 15 pieces


def _candles(ex: Exchange, cache_dir: Path, *args: object, **kw: object) -> pd.DataFrame:
    return mdcoord.candles(*args, base_url=ex.base_url, cache=True, cache_dir=str(cache_dir), **kw)  # type: ignore[arg-type]


def test_second_identical_call_sends_zero_requests(ex: Exchange, tmp_path: Path) -> None:
    first = _candles(ex, tmp_path, "KRW-BTC", "1m", start=START, end=END)
    sent = ex.count(group="candles")
    assert sent >= 15
    second = _candles(ex, tmp_path, "KRW-BTC", "1m", start=START, end=END)
    assert ex.count(group="candles") == sent  # not one more request
    pd.testing.assert_frame_equal(first, second)
    assert_same_candles(second, truth(ex, "KRW-BTC", "1m", START, END))
    assert second.attrs["mdcoord"]["cache"]["rows_from_cache"] == len(second) == 2880
    assert second.attrs["mdcoord"]["requests_sent"] == 0


def test_an_overlapping_call_fetches_only_the_new_part(ex: Exchange, tmp_path: Path) -> None:
    _candles(ex, tmp_path, "KRW-ETH", "1m", start=START, end=END)
    ex.clear_log()
    later = "2026-11-12T10:00:00Z"  # 600 new slots = 3 pieces
    df = _candles(ex, tmp_path, "KRW-ETH", "1m", start=START, end=later)
    assert_same_candles(df, truth(ex, "KRW-ETH", "1m", START, later))
    tos = sorted(r.query.get("to", "") for r in ex.log if r.group == "candles")
    assert tos == ["2026-11-12T03:20:00Z", "2026-11-12T06:40:00Z", "2026-11-12T10:00:00Z"]


def test_ranges_without_candles_are_remembered(ex: Exchange, tmp_path: Path) -> None:
    thin = _thin(ex)
    day = ("2026-11-15T00:00:00Z", "2026-11-16T00:00:00Z")
    a = _candles(ex, tmp_path, thin, "1m", start=day[0], end=day[1])
    assert a.attrs["mdcoord"]["missing_candles"] > 0
    sent = ex.count()
    b = _candles(ex, tmp_path, thin, "1m", start=day[0], end=day[1])
    assert ex.count() == sent
    pd.testing.assert_frame_equal(a, b)
    assert b.attrs["mdcoord"]["missing_candles"] == a.attrs["mdcoord"]["missing_candles"]


def test_before_listing_is_remembered_as_empty(ex: Exchange, tmp_path: Path) -> None:
    code = max(ex.market.markets("KRW"), key=lambda c: pd.Timestamp(ex.market.listing_time(c)))
    _candles(ex, tmp_path, code, "1h", start="2025-01-01", end="2025-02-01")
    sent = ex.count()
    df = _candles(ex, tmp_path, code, "1h", start="2025-01-01", end="2025-02-01")
    assert len(df) == 0 and ex.count() == sent


def test_count_is_answered_from_the_cache_while_no_candle_can_have_closed(ex: Exchange, tmp_path: Path) -> None:
    a = _candles(ex, tmp_path, "KRW-XRP", "1d", count=300)
    ex.clear_log()
    b = _candles(ex, tmp_path, "KRW-XRP", "1d", count=300)  # the day cannot have ended since
    assert ex.count(group="candles") == 0
    pd.testing.assert_frame_equal(a, b)


def test_forming_candle_is_never_stored_and_updates_fetch_only_what_is_new(tmp_path: Path) -> None:
    """A live clock: one-second candles close while we watch."""
    # start the clock 0.4 s after a trade that is early in its second, so that second is forming
    from mdcoord.sim import SyntheticMarket

    model = SyntheticMarket(seed=7, now=NOW)
    recent = model.trade_rows("KRW-BTC", pd.Timestamp(NOW) - pd.Timedelta(minutes=5), NOW)
    early = next(r["timestamp"] for r in recent if r["timestamp"] % 1000 < 400)
    start = pd.Timestamp(early + 400, unit="ms", tz="UTC").isoformat()
    with Exchange(SimConfig(seed=7, now=start, frozen=False)) as ex:
        a = _candles(ex, tmp_path, "KRW-BTC", "1s", count=1000, include_forming=True)
        forming = pd.Timestamp(a.attrs["mdcoord"]["forming_candle"])
        store = CandleStore(tmp_path, source_name(ex.base_url))
        slot = Timeframe.S1.slot_of(forming)
        cached, coverage = store.load("KRW-BTC", Timeframe.S1, slot - 1000, slot + 1000)
        assert cached is not None and forming not in set(cached["time"]), a.attrs["mdcoord"]
        assert max(b for _, b in coverage) <= Timeframe.S1.slot_of(forming)
        time.sleep(2.2)  # the subject: the live clock moves on (a slower machine only adds seconds)
        ex.clear_log()
        b = _candles(ex, tmp_path, "KRW-BTC", "1s", count=1000)
        assert len(b) == 1000
        # the once-forming second is now final and served with its final values
        assert forming in b.index
        final = truth(ex, "KRW-BTC", "1s", forming, forming + pd.Timedelta(seconds=1))
        assert_same_candles(b.loc[[forming]], final)
        # one request, the head (the newest page), brings the new seconds; the rest is cached
        assert ex.count(group="candles") == 1
        assert b.attrs["mdcoord"]["cache"]["rows_from_cache"] >= 790


def test_layout_is_plain_hive_parquet(ex: Exchange, tmp_path: Path) -> None:
    _candles(ex, tmp_path, ["KRW-BTC", "KRW-ETH"], "1m", start="2026-10-31T22:00Z", end="2026-11-01T02:00Z")
    root = tmp_path / source_name(ex.base_url) / "candles"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    assert files == [
        "market=KRW-BTC/timeframe=1m/period=2026-10/part.parquet",
        "market=KRW-BTC/timeframe=1m/period=2026-11/part.parquet",
        "market=KRW-ETH/timeframe=1m/period=2026-10/part.parquet",
        "market=KRW-ETH/timeframe=1m/period=2026-11/part.parquet",
    ]
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    df = table.to_pandas()
    assert {"market", "timeframe", "period", "time", "open", "close", "volume"} <= set(df.columns)
    assert len(df) == 2 * 240 and set(df["market"]) == {"KRW-BTC", "KRW-ETH"}


def test_info_and_clear(ex: Exchange, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDCOORD_CACHE_DIR", str(tmp_path))
    assert mdcoord.cache.directory() == tmp_path
    mdcoord.candles("KRW-BTC", "1h", start="2026-01-01", end="2026-03-01", base_url=ex.base_url, cache=True)
    mdcoord.candles("KRW-ETH", "1d", start="2026-01-01", end="2026-03-01", base_url=ex.base_url, cache=True)
    info = mdcoord.cache.info()
    src = source_name(ex.base_url)
    btc = info.loc[(src, "KRW-BTC", "1h")]
    # the range, plus possibly the newest page a first call reads to learn "now"
    assert btc["rows"] in (59 * 24, 59 * 24 + 199) and btc["first"] == pd.Timestamp("2026-01-01", tz="UTC")
    assert info.loc[(src, "KRW-ETH", "1d"), "covered"] >= 59
    assert info["bytes"].gt(0).all()
    assert mdcoord.cache.clear(market="KRW-BTC") == 1
    assert list(mdcoord.cache.info().index.get_level_values("market")) == ["KRW-ETH"]
    assert mdcoord.cache.clear() == 1 and mdcoord.cache.info().empty


def test_an_unreadable_file_is_a_miss_not_an_error(ex: Exchange, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _candles(ex, tmp_path, "KRW-SOL", "1d", start="2026-01-01", end="2026-02-01")
    (path,) = (tmp_path / source_name(ex.base_url)).rglob("part.parquet")
    path.write_bytes(b"PAR1 this is not a parquet file")  # e.g. a copy cut short
    (path.parent / ".part.parquet.123.deadbeef.tmp").write_bytes(b"half a write")  # a killed writer's leftover
    df = _candles(ex, tmp_path, "KRW-SOL", "1d", start="2026-01-01", end="2026-02-01")
    assert_same_candles(df, truth(ex, "KRW-SOL", "1d", "2026-01-01", "2026-02-01"))
    assert "unreadable cache file" in caplog.text
    sent = ex.count()
    _candles(ex, tmp_path, "KRW-SOL", "1d", start="2026-01-01", end="2026-02-01")
    assert ex.count() == sent  # rewritten whole


def test_market_codes_never_become_odd_paths(tmp_path: Path) -> None:
    store = CandleStore(tmp_path, "x")
    for bad in ("../../etc", "KRW-BTC/../x", "KRW-" + "A" * 300, "KRW BTC"):
        with pytest.raises(mdcoord.InvalidRequestError):
            store.directory(bad, Timeframe.M1)
    assert source_name("https://api.upbit.com/v1") == "upbit"
    assert source_name("http://127.0.0.1:8080/v1") == "127.0.0.1_8080"


def _fill(base_url: str, cache_dir: str, start: str, end: str) -> int:
    df = mdcoord.candles(
        "KRW-BTC", "1m", start=start, end=end, base_url=base_url, cache=True, cache_dir=cache_dir,
        rate_limit=4, progress=False,  # two processes share one IP's 10/s budget
        rate_margin=RIG_JITTER,  # (conftest.py; a spawned process does not inherit set_options)
    )
    return len(df)


def test_two_processes_filling_the_same_range_lose_and_duplicate_nothing(ex: Exchange, tmp_path: Path) -> None:
    # The workers' limiters know nothing of this process's last second of traffic (separate
    # processes share the IP's budget blindly): start them on an empty window.
    ex.reset_rate_limits()
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        # overlapping halves of one month partition, written at the same time by both
        halves = [(START, "2026-11-11T02:00:00Z"), ("2026-11-10T22:00:00Z", END)]
        counts = pool.starmap(_fill, [(ex.base_url, str(tmp_path), a, b) for a, b in halves])
    assert counts == [1560, 1560]
    assert ex.count(status=429) == 0
    table = ds.dataset(tmp_path / source_name(ex.base_url) / "candles", format="parquet", partitioning="hive").to_table()
    times = table.column("time").to_pandas()
    assert times.is_unique  # nothing stored twice
    # every candle of the range (each fresh process also cached the newest page it asked for "now")
    assert ((times >= pd.Timestamp(START)) & (times < pd.Timestamp(END))).sum() == 2880
    sent = ex.count()
    df = _candles(ex, tmp_path, "KRW-BTC", "1m", start=START, end=END)
    assert ex.count() == sent
    assert_same_candles(df, truth(ex, "KRW-BTC", "1m", START, END))


def _thin(ex: Exchange) -> str:
    end = pd.Timestamp("2026-11-16T00:00:00Z")
    for code in ex.market.markets("KRW"):
        rows = ex.market.candles(code, "minutes", 1, (end - pd.Timedelta(days=1)).to_pydatetime(), end.to_pydatetime())
        if 10 < len(rows) < 700:
            return code
    raise AssertionError("no thin market")


def _save_many(root: str, worker: int) -> None:
    store = CandleStore(root, "race")
    tf = Timeframe.M1
    base = tf.slot_of(pd.Timestamp("2026-11-01T00:00:00Z"))
    for i in range(25):
        lo = base + (i * 4 + worker) * 10  # disjoint 10-slot ranges, interleaved across workers
        times = pd.to_datetime(tf.start_ns(np.arange(lo, lo + 10)), utc=True)
        frame = pd.DataFrame({"market": "KRW-BTC", "time": times, "open": 1.0, "high": 1.0, "low": 1.0,
                              "close": 1.0, "volume": 1.0, "value": 1.0,
                              "last_trade_at": times.astype("datetime64[ms, UTC]")})
        store.save("KRW-BTC", tf, frame, [(lo, lo + 10)])


def test_concurrent_writers_of_one_partition_lose_nothing(tmp_path: Path) -> None:
    """Four processes merge 100 disjoint ranges into one file at once: all of them survive."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_save_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    tf = Timeframe.M1
    base = tf.slot_of(pd.Timestamp("2026-11-01T00:00:00Z"))
    frame, coverage = CandleStore(tmp_path, "race").load("KRW-BTC", tf, base, base + 1000)
    assert frame is not None and len(frame) == 1000 and frame["time"].is_unique
    assert list(coverage) == [(base, base + 1000)]


# -- trades ---------------------------------------------------------------------------------------
T_START, T_END = "2026-11-19T10:00:00Z", "2026-11-19T13:00:00Z"


def _trades(ex: Exchange, cache_dir: Path, *args: object, **kw: object) -> pd.DataFrame:
    return mdcoord.trades(*args, base_url=ex.base_url, cache=True, cache_dir=str(cache_dir), **kw)  # type: ignore[arg-type]


def test_trades_range_twice_sends_zero_requests_the_second_time(ex: Exchange, tmp_path: Path) -> None:
    a = _trades(ex, tmp_path, "KRW-BTC", start=T_START, end=T_END)
    sent = ex.count(group="crix-trades")
    b = _trades(ex, tmp_path, "KRW-BTC", start=T_START, end=T_END)
    assert ex.count(group="crix-trades") == sent
    pd.testing.assert_frame_equal(a, b)
    assert b.attrs["mdcoord"]["cache"]["rows_from_cache"] == len(b) > 500
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert f"{source_name(ex.base_url)}/trades/market=KRW-BTC/date=2026-11-19/part.parquet" in files
    info = mdcoord.cache.info(tmp_path)
    row = info.loc[(source_name(ex.base_url), "KRW-BTC", "trades")]
    assert row["rows"] >= len(b) and row["covered"] >= 3 * 3_600_000
    assert mdcoord.cache.clear("KRW-BTC", "trades", cache_dir=tmp_path) >= 1
    assert mdcoord.cache.info(tmp_path).empty


def test_trades_count_again_asks_only_for_the_newest_page(ex: Exchange, tmp_path: Path) -> None:
    a = _trades(ex, tmp_path, "KRW-ETH", count=3000)
    ex.clear_log()
    b = _trades(ex, tmp_path, "KRW-ETH", count=3000)
    assert ex.count(group="crix-trades") == 1  # the head tells "now"; the rest is cached
    pd.testing.assert_frame_equal(a, b)


def test_cached_trades_outlive_the_seven_days(ex: Exchange, tmp_path: Path) -> None:
    """Trades vanish from the API after 7 days; the cache keeps them. A range reaching before
    what the cache holds is answered with what it holds, the rest reported as `unrecorded`
    (issue 15.5: a recording's holes); a range of which it holds nothing is refused."""
    kept = _trades(ex, tmp_path, "KRW-BTC", start=T_START, end=T_END)
    later_now = (pd.Timestamp(NOW) + pd.Timedelta(days=9)).isoformat()
    with Exchange(SimConfig(seed=7, now=later_now, frozen=True, seconds_horizon_days=20)) as later:
        # the same exchange, nine days on: carry the cache over to its address
        import shutil

        shutil.copytree(tmp_path / source_name(ex.base_url), tmp_path / source_name(later.base_url))
        got = _trades(later, tmp_path, "KRW-BTC", start=T_START, end=T_END)
        assert later.count() == 0
        pd.testing.assert_frame_equal(got, kept)
        wider = _trades(later, tmp_path, "KRW-BTC", start="2026-11-18T00:00:00Z", end=T_END)
        pd.testing.assert_frame_equal(wider[wider.index >= T_START], kept, check_like=True)
        assert wider.attrs["mdcoord"]["unrecorded"] == [
            {"market": "KRW-BTC", "start": "2026-11-18T00:00:00+00:00", "end": pd.Timestamp(T_START).isoformat()}]
        assert later.count() == 1  # the newest page, which tells the exchange's day; nothing for the old stretch
        with pytest.raises(mdcoord.InvalidRequestError, match="cache does not hold"):
            _trades(later, tmp_path, "KRW-BTC", start="2026-11-17T00:00:00Z", end="2026-11-18T00:00:00Z")


_KILLED_WORKER = """
import sys, mdcoord
if len(sys.argv) > 3:
    die_past(int(sys.argv[3]))
mdcoord.download("KRW-BTC", "1m", start="2026-10-01", end="2026-11-01", segment_size=2000,
                 base_url=sys.argv[1], cache=True, cache_dir=sys.argv[2], progress=False, concurrency=8,
                 rate_limit=1000)  # the test exchange has no limit: be killed mid-work, not mid-wait
"""


def test_sigkill_mid_download_leaves_a_correct_cache(tmp_path: Path) -> None:
    """Kill a downloading process (no cleanup at all) while the exchange holds its 1st, then its
    41st request, and while it writes the month's file past 1 MB (of ~2 MB; ~125 kB a segment);
    after each kill the cache loads and holds no duplicate, and the next call completes it exactly."""
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, rate_limit=None)) as ex:
        root = tmp_path / source_name(ex.base_url) / "candles"
        args = [ex.base_url, str(tmp_path)]
        for kill in (0, 40, "mid-write"):
            if kill == "mid-write":
                kill_mid_write(ex, _KILLED_WORKER, [*args, str(1_000_000)])
            else:
                assert kill_at_request(ex, _KILLED_WORKER, args, "candles", after=kill).group == "candles"
            if root.exists():  # every file present is a whole, readable partition
                times = ds.dataset(root, format="parquet", partitioning="hive").to_table().column("time").to_pandas()
                assert times.is_unique
        assert list(root.rglob(".part.parquet.*.tmp"))  # (what the write killed midway left)
        ex.clear_log()
        df = _candles(ex, tmp_path, "KRW-BTC", "1m", start="2026-10-01", end="2026-11-01", rate_limit=1000)
        assert_same_candles(df, truth(ex, "KRW-BTC", "1m", "2026-10-01", "2026-11-01"))
        assert df.attrs["mdcoord"]["cache"]["rows_from_cache"] > 0  # the killed runs' work was kept
        assert ex.count(group="candles") < 226  # (an uninterrupted download asks 226 times)


def test_an_unusable_cache_directory_costs_no_data(ex: Exchange, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    df = mdcoord.candles("KRW-BTC", "1m", count=10, base_url=ex.base_url, cache=True, cache_dir=str(blocker / "sub"))
    assert len(df) == 10 and "NotADirectoryError" in df.attrs["mdcoord"]["cache"]["error"]
    tr = mdcoord.trades("KRW-BTC", count=10, base_url=ex.base_url, cache=True, cache_dir=str(blocker / "sub"))
    assert len(tr) == 10 and tr.attrs["mdcoord"]["cache"]["error"]
    assert "the cache is unusable" in caplog.text


def test_open_ranges_the_newest_page_already_covers(fresh: Exchange) -> None:
    """A range from a recent start: the head answers it all, there is nothing left to plan."""
    df = mdcoord.candles("KRW-BTC", "1d", start="2026-06-01", base_url=fresh.base_url)
    assert df.index[0] == pd.Timestamp("2026-06-01", tz="UTC") and df.index[-1] == pd.Timestamp("2026-11-19", tz="UTC")
    assert df.attrs["mdcoord"]["requests_sent"] == 1


def test_a_mid_slot_end_never_returns_or_stores_the_forming_candle(ex: Exchange, tmp_path: Path) -> None:
    mdcoord.candles("KRW-BTC", "1m", count=1, base_url=ex.base_url)  # the client now knows the Date
    df = _candles(ex, tmp_path, "KRW-BTC", "1d", end="2026-11-20T06:00:00Z", count=5)
    assert df.index[-1] == pd.Timestamp("2026-11-19", tz="UTC")  # 11-20 is still forming at 12:34
    m = _candles(ex, tmp_path, "KRW-BTC", "1m", start="2026-11-20T12:00:00Z", end="2026-11-20T12:34:30Z")
    assert m.index[-1] == pd.Timestamp("2026-11-20T12:33:00Z")
    store = CandleStore(tmp_path, source_name(ex.base_url))
    _, cov = store.load("KRW-BTC", Timeframe.D1, 0, 10**6)
    assert max(b for _, b in cov) <= Timeframe.D1.slot_of(pd.Timestamp("2026-11-20", tz="UTC"))
