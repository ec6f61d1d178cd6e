"""candles() end to end over real HTTP against the strict embedded exchange."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest

import mdcoord
from mdcoord.sim import Exchange

from .conftest import NOW, assert_same_candles, truth

NOW_TS = pd.Timestamp(NOW)
META_KEYS = {
    "original_request_size",
    "split_count",
    "parallel_requests",
    "processing_time_ms",
    "data_count",
    "split_strategy_used",
    "requests_sent",
    "retries",
    "rate_limited",
    "gaps_found",
    "source",
    "fetched_at",
}


def test_count_returns_the_n_most_recent_closed_candles(fresh: Exchange) -> None:
    ex = fresh
    df = mdcoord.candles("KRW-BTC", "1m", count=1000, base_url=ex.base_url)
    forming = NOW_TS.floor("min")
    assert len(df) == 1000
    assert df.index[-1] == forming - pd.Timedelta(minutes=1)  # the forming minute is excluded
    assert isinstance(df.index, pd.DatetimeIndex) and str(df.index.tz) == "UTC"
    assert df.index.is_monotonic_increasing and df.index.is_unique
    assert_same_candles(df, truth(ex, "KRW-BTC", "1m", df.index[0], forming))
    meta = df.attrs["mdcoord"]
    assert META_KEYS <= set(meta)
    json.dumps(meta)  # JSON-safe
    assert meta["data_count"] == 1000 and meta["original_request_size"] == 1000
    assert meta["split_strategy_used"] == "time" and meta["complete"] is True
    # The head (newest page without `to`; its Date header tells "now") holds the forming candle
    # and 199 closed ones; the other 801 take 5 pieces in parallel: ceil((N + 1) / 200) = 6.
    assert meta["split_count"] == 6 and meta["requests_sent"] == 6 == ex.count(group="candles")
    assert meta["parallel_requests"] >= 2
    assert meta["source"] == ex.base_url


def test_count_is_exact_for_a_thin_market_with_missing_minutes(ex: Exchange) -> None:
    thin = _thin_market(ex)
    df = mdcoord.candles(thin, "1m", count=700, base_url=ex.base_url)
    assert len(df) == 700
    forming = NOW_TS.floor("min")
    want = truth(ex, thin, "1m", df.index[0] - pd.Timedelta(days=30), forming)
    assert_same_candles(df, want.iloc[-700:])
    meta = df.attrs["mdcoord"]
    assert meta["gaps_found"] > 0 and meta["missing_candles"] > 0 and meta["not_fetched"] == 0
    # follow-up rounds are planned from the observed density, not one page at a time
    assert meta["rounds"] <= 4
    assert meta["requests_sent"] <= 12
    g = mdcoord.gaps(df)
    assert set(g["reason"]) == {"no_trades"}
    assert g["missing"].sum() == meta["missing_candles"]
    assert len(df) + meta["missing_candles"] == (forming - df.index[0]) / pd.Timedelta(minutes=1)


def test_range_start_inclusive_end_exclusive(ex: Exchange) -> None:
    df = mdcoord.candles("KRW-BTC", "1h", start="2024-01-01", end="2024-04-01", base_url=ex.base_url)
    assert df.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert df.index[-1] == pd.Timestamp("2024-03-31T23:00", tz="UTC")
    assert_same_candles(df, truth(ex, "KRW-BTC", "1h", "2024-01-01", "2024-04-01"))
    meta = df.attrs["mdcoord"]
    assert meta["original_request_size"] == 91 * 24
    # 2184 hours = 11 windows of 200; a head is sent only if the client has never seen the
    # exchange's clock
    assert meta["split_count"] in (11, 12)


def test_unaligned_range_edges_and_timezones(ex: Exchange) -> None:
    a = mdcoord.candles(
        "KRW-ETH", "5m", start="2026-11-19T09:02:30+09:00", end="2026-11-19T10:00:00+09:00", base_url=ex.base_url
    )
    # 09:02:30 KST = 00:02:30 UTC → the first 5-minute candle starting at or after it is 00:05
    assert a.index[0] == pd.Timestamp("2026-11-19T00:05Z")
    assert a.index[-1] == pd.Timestamp("2026-11-19T00:55Z")
    b = mdcoord.candles("KRW-ETH", "5m", start="2026-11-19 00:02:30", end="2026-11-19 01:00", base_url=ex.base_url)
    pd.testing.assert_frame_equal(a, b.set_axis(b.index, axis=0), check_like=True, obj="naive = UTC")


def test_multi_market_daily_from_a_start(ex: Exchange) -> None:
    df = mdcoord.candles(["KRW-BTC", "KRW-ETH"], "1d", start="2023-01-01", base_url=ex.base_url)
    assert list(df.index.names) == ["market", "time"]
    today = NOW_TS.floor("D")
    for m in ("KRW-BTC", "KRW-ETH"):
        part = df.loc[m]
        assert part.index[0] == pd.Timestamp("2023-01-01", tz="UTC")
        assert part.index[-1] == today - pd.Timedelta(days=1)  # today's candle is forming
        want = truth(ex, m, "1d", "2023-01-01", today)
        assert_same_candles(part, want)
        assert np.allclose(part["prev_close"].iloc[1:], part["close"].iloc[:-1])
    assert df.attrs["mdcoord"]["markets"] == ["KRW-BTC", "KRW-ETH"]


def test_async_twin_gives_the_same_result(fresh: Exchange) -> None:
    ex = fresh
    sync = mdcoord.candles("KRW-XRP", "5m", count=5000, base_url=ex.base_url)
    assert sync.attrs["mdcoord"]["split_count"] == 26  # ceil(5001 / 200): the head holds the forming one

    async def main() -> pd.DataFrame:
        return await mdcoord.acandles("KRW-XRP", "5m", count=5000, base_url=ex.base_url)

    got = asyncio.run(main())
    assert len(got) == 5000
    pd.testing.assert_frame_equal(got, sync)
    # The async call may skip the head: within ~2 s of the last Date no 5-minute boundary can
    # have passed, so "now" is known without asking (25 pieces), else it asks (26).
    assert got.attrs["mdcoord"]["split_count"] in (25, 26)


def test_sync_api_works_inside_a_running_event_loop(ex: Exchange) -> None:
    """As in Jupyter: the caller's loop is running; no nest-asyncio, no patching."""

    async def cell() -> pd.DataFrame:
        return mdcoord.candles("KRW-BTC", "1m", count=10, base_url=ex.base_url)

    df = asyncio.run(cell())
    assert len(df) == 10


@pytest.mark.parametrize("timeframe, n", [("1s", 300), ("3m", 50), ("4h", 250), ("1w", 30), ("1M", 20), ("1y", 3)])
def test_every_timeframe_matches_the_exchange(ex: Exchange, timeframe: str, n: int) -> None:
    df = mdcoord.candles("KRW-BTC", timeframe, count=n, base_url=ex.base_url)
    assert len(df) == n
    tf = mdcoord.Timeframe.parse(timeframe)
    forming_start = tf.slot_start(tf.slot_of(NOW_TS))
    assert df.index[-1] < forming_start
    assert_same_candles(df, truth(ex, "KRW-BTC", timeframe, df.index[0], forming_start))


def test_forming_candle_on_request(ex: Exchange) -> None:
    df = mdcoord.candles("KRW-BTC", "1m", count=5, include_forming=True, base_url=ex.base_url)
    forming = NOW_TS.floor("min")
    assert len(df) == 6 and df.index[-1] == forming
    assert df.attrs["mdcoord"]["forming_candle"] == forming.isoformat()


def test_history_shorter_than_count_returns_all_there_is(ex: Exchange) -> None:
    code = _newest_market(ex)
    df = mdcoord.candles(code, "1h", count=5000, base_url=ex.base_url)
    listing = pd.Timestamp(ex.market.listing_time(code))
    listing = listing.tz_localize("UTC") if listing.tzinfo is None else listing.tz_convert("UTC")
    assert 0 < len(df) < 5000
    assert df.index[0] >= listing.floor("h")
    assert_same_candles(df, truth(ex, code, "1h", listing.floor("h"), NOW_TS.floor("h")))


def test_range_before_listing_is_empty_not_an_error(ex: Exchange) -> None:
    code = _newest_market(ex)
    df = mdcoord.candles(code, "1d", start="2018-01-01", end="2018-02-01", base_url=ex.base_url)
    assert len(df) == 0 and list(df.columns)[:6] == ["open", "high", "low", "close", "volume", "value"]
    assert df.attrs["mdcoord"]["complete"] is True


def test_unknown_market_names_the_market(ex: Exchange) -> None:
    with pytest.raises(mdcoord.MarketNotFoundError, match="KRW-NOPE") as info:
        mdcoord.candles(["KRW-BTC", "KRW-NOPE"], "1m", count=10, base_url=ex.base_url)
    assert info.value.markets == ["KRW-NOPE"] and info.value.status == 404


def test_bad_input_sends_nothing(ex: Exchange) -> None:
    for kwargs in (dict(count=0), dict(count=10, timeframe="7m"), dict(start="2024-02-01", end="2024-01-01")):
        args = {"timeframe": "1m", **kwargs}
        tf = args.pop("timeframe")
        with pytest.raises(mdcoord.InvalidRequestError):
            mdcoord.candles("KRW-BTC", tf, base_url=ex.base_url, **args)
    assert ex.count() == 0


def _thin_market(ex: Exchange) -> str:
    """A market with many 1-minute gaps near NOW (found through the model, not hard-coded)."""
    end = NOW_TS.floor("min")
    for code in ex.market.markets():
        if not code.startswith("KRW-"):
            continue
        rows = ex.market.candles(code, "minutes", 1, (end - pd.Timedelta(hours=6)).to_pydatetime(), end.to_pydatetime())
        if 10 < len(rows) < 200:  # a candle in fewer than 200 of 360 minutes
            return code
    raise AssertionError("the exchange has no thin market")


def _newest_market(ex: Exchange) -> str:
    codes = [c for c in ex.market.markets() if c.startswith("KRW-")]
    return max(codes, key=lambda c: pd.Timestamp(ex.market.listing_time(c)))
