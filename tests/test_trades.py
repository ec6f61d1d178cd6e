"""trades(): windows in time, continued by cursor; exact counts; the completeness proof."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mdcoord
from mdcoord._planner import DAY_MS, plan_trade_windows
from mdcoord.sim import Exchange

from .conftest import NOW

NOW_TS = pd.Timestamp(NOW)
NOW_MS = NOW_TS.value // 1_000_000
TODAY_MS = NOW_MS // DAY_MS * DAY_MS


def truth(ex: Exchange, market: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    rows = ex.market.trade_rows(market, start.to_pydatetime(), end.to_pydatetime())
    df = pd.DataFrame(rows)
    return pd.DataFrame(
        {
            "time": pd.to_datetime(df["timestamp"], unit="ms", utc=True).astype("datetime64[ns, UTC]"),
            "price": df["trade_price"].astype(float),
            "volume": df["trade_volume"].astype(float),
            "sequential_id": df["sequential_id"].astype("int64"),
        }
    ).sort_values(["time", "sequential_id"]).set_index("time")


def test_windows_never_cross_a_utc_day_and_adapt_to_density() -> None:
    lo, hi = TODAY_MS - 3_600_000, TODAY_MS + 7_200_000  # 23:00 yesterday → 02:00 today
    busy = plan_trade_windows("KRW-BTC", lo, hi, TODAY_MS, density=1 / 1_000, per_window=1000)  # 1 trade/s
    assert all(w.day_start <= w.lo < w.hi <= w.day_start + DAY_MS for w in busy)
    assert [w.hi - w.lo for w in busy[:2]] == [1_000_000, 1_000_000]  # ~1000 trades each
    assert busy[0].hi == hi and busy[-1].lo == lo
    assert all(a.lo == b.hi for a, b in zip(busy, busy[1:]))  # contiguous, newest first
    assert {w.days_ago for w in busy} == {0, 1}
    thin = plan_trade_windows("KRW-X", lo, hi, TODAY_MS, density=1 / 600_000, per_window=1000)
    assert len(thin) == 2  # one window per day touched
    assert thin[1].first_params() == {"market": "KRW-X", "count": 500, "days_ago": 1}


def test_count_returns_exactly_the_most_recent_trades(ex: Exchange) -> None:
    df = mdcoord.trades("KRW-BTC", count=5000, base_url=ex.base_url)
    assert len(df) == 5000
    assert str(df.index.tz) == "UTC" and df.index.is_monotonic_increasing
    assert df["sequential_id"].is_unique
    want = truth(ex, "KRW-BTC", df.index[0] - pd.Timedelta(hours=6), NOW_TS).iloc[-5000:]
    assert list(df["sequential_id"]) == list(want["sequential_id"])
    assert np.array_equal(df["price"].to_numpy(), want["price"].to_numpy())
    meta = df.attrs["mdcoord"]
    assert meta["split_strategy_used"] == "count" and meta["complete"] and meta["data_count"] == 5000
    # 5000 trades = 10 full pages at the least; windows add at most a page each
    assert 10 <= ex.count(group="crix-trades") <= 20 and ex.count(status=429) == 0


def test_range_returns_every_trade_in_it(ex: Exchange) -> None:
    start, end = NOW_TS - pd.Timedelta(days=1, hours=2), NOW_TS - pd.Timedelta(days=1)
    df = mdcoord.trades("KRW-ETH", start=start, end=end, base_url=ex.base_url)
    want = truth(ex, "KRW-ETH", start, end)
    assert len(df) == len(want) > 500
    assert list(df["sequential_id"]) == list(want["sequential_id"])
    assert df.index[0] >= start and df.index[-1] < end
    assert df.attrs["mdcoord"]["split_strategy_used"] == "time"


def test_one_minute_ohlcv_from_trades_equals_the_candles(ex: Exchange) -> None:
    """The completeness proof: not one trade of the hour is missing or doubled."""
    start = (NOW_TS - pd.Timedelta(hours=30)).floor("h")
    end = start + pd.Timedelta(hours=1)
    t = mdcoord.trades("KRW-BTC", start=start, end=end, base_url=ex.base_url)
    c = mdcoord.candles("KRW-BTC", "1m", start=start, end=end, base_url=ex.base_url)
    t = t.assign(value=t["price"] * t["volume"])
    g = t.groupby(t.index.floor("min"))
    ohlcv = pd.DataFrame(
        {
            "open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(), "close": g["price"].last(),
            "volume": g["volume"].sum(), "value": g["value"].sum(),
        }
    )
    assert list(ohlcv.index) == list(c.index) and len(c) == 60
    for col in ("open", "high", "low", "close"):
        assert np.array_equal(ohlcv[col].to_numpy(), c[col].to_numpy()), col
    # sums of the same trades in the same order: equal to the last bit
    assert np.array_equal(ohlcv["volume"].to_numpy(), c["volume"].to_numpy())
    assert np.array_equal(ohlcv["value"].to_numpy(), c["value"].to_numpy())
    assert list(g.apply(lambda x: x.index.max())) == list(c["last_trade_at"].dt.as_unit("ns"))


def test_range_beyond_seven_days_is_a_clear_error(ex: Exchange) -> None:
    with pytest.raises(mdcoord.InvalidRequestError, match="last 7 UTC days.*earliest available time is"):
        mdcoord.trades("KRW-BTC", start=NOW_TS - pd.Timedelta(days=9), base_url=ex.base_url)


def test_range_in_the_future_is_a_clear_error(ex: Exchange) -> None:
    with pytest.raises(mdcoord.InvalidRequestError, match="not before the exchange's now"):
        mdcoord.trades("KRW-BTC", start=NOW_TS + pd.Timedelta(hours=1), base_url=ex.base_url)


def test_thin_market_count_beyond_what_exists(ex: Exchange) -> None:
    thin = min(ex.market.markets("KRW"), key=lambda c: len(ex.market.trade_rows(
        c, (NOW_TS - pd.Timedelta(hours=2)).to_pydatetime(), NOW_TS.to_pydatetime())))
    week = truth(ex, thin, pd.Timestamp(TODAY_MS - 7 * DAY_MS, unit="ms", tz="UTC"), NOW_TS)
    df = mdcoord.trades(thin, count=len(week) + 1000, base_url=ex.base_url)
    assert list(df["sequential_id"]) == list(week["sequential_id"])


def test_multi_market_and_candles_at_the_same_time(ex: Exchange) -> None:
    import threading

    out: dict[str, pd.DataFrame] = {}
    th = threading.Thread(target=lambda: out.setdefault("c", mdcoord.candles("KRW-BTC", "1m", count=6000, base_url=ex.base_url)))
    th.start()
    df = mdcoord.trades(["KRW-BTC", "KRW-XRP"], count=3000, base_url=ex.base_url)
    th.join()
    assert list(df.index.names) == ["market", "time"]
    assert df.groupby(level="market").size().to_dict() == {"KRW-BTC": 3000, "KRW-XRP": 3000}
    assert len(out["c"]) == 6000
    # each group at its own 10/s, never over
    assert ex.max_in_window("candles", 1.0) <= 10 and ex.max_in_window("crix-trades", 1.0) <= 10
    assert ex.count(status=429) == 0
