"""tickers(): symbol split, one row per market, validated codes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mdcoord
from mdcoord.sim import Exchange
from mdcoord._snapshots import split_symbols


def test_split_plan() -> None:
    codes = tuple(f"KRW-C{i}" for i in range(189))
    chunks = split_symbols(codes, 10)
    assert len(chunks) == 19 and all(len(c.markets) == 10 for c in chunks[:-1]) and len(chunks[-1].markets) == 9
    assert [m for c in chunks for m in c.markets] == list(codes)


def test_189_tickers_in_19_requests_with_zero_429s(ex: Exchange) -> None:
    codes = ex.market.markets("KRW")[:189]
    df = mdcoord.tickers(codes, base_url=ex.base_url)
    assert len(df) == 189 and sorted(df.index) == sorted(codes)
    assert ex.count(group="ticker") == 19 and ex.count(status=429) == 0
    assert ex.max_in_window("ticker", 1.0) <= 10
    meta = df.attrs["mdcoord"]
    assert meta["split_count"] == 19 and meta["split_strategy_used"] == "symbol" and meta["complete"]


def test_all_krw_tickers_typed_and_true_to_the_exchange(ex: Exchange) -> None:
    df = mdcoord.tickers("KRW", base_url=ex.base_url)
    krw = ex.market.markets("KRW")
    assert sorted(df.index) == krw and df.index.name == "market"
    assert df.attrs["mdcoord"]["markets"] == sorted(krw) or sorted(df.attrs["mdcoord"]["markets"]) == krw
    for col in ("trade_price", "acc_trade_price_24h", "signed_change_rate", "highest_52_week_price"):
        assert df[col].dtype == np.float64
    assert str(df["trade_timestamp"].dtype).startswith("datetime64") and str(df["trade_timestamp"].dt.tz) == "UTC"
    assert str(df["timestamp"].dt.tz) == "UTC" and str(df["highest_52_week_date"].dt.tz) == "UTC"
    for code in ("KRW-BTC", "KRW-ETH"):
        want = ex.market.ticker(code)
        assert df.loc[code, "trade_price"] == want["trade_price"]
        assert df.loc[code, "trade_timestamp"] == pd.Timestamp(want["trade_timestamp"], unit="ms", tz="UTC")
        assert df.loc[code, "acc_trade_volume_24h"] == pytest.approx(want["acc_trade_volume_24h"], rel=1e-12)


def test_duplicates_are_fetched_once(ex: Exchange) -> None:
    df = mdcoord.tickers(["KRW-BTC", "krw-btc", "KRW-ETH", "KRW-BTC"], base_url=ex.base_url)
    assert list(df.index) == ["KRW-BTC", "KRW-ETH"]
    (req,) = [r for r in ex.log if r.group == "ticker"]
    assert sorted(req.query["markets"].split(",")) == ["KRW-BTC", "KRW-ETH"]


def test_chunk_size_is_configurable(ex: Exchange) -> None:
    df = mdcoord.tickers("KRW", base_url=ex.base_url, tickers_per_request=50)
    assert len(df) == len(ex.market.markets("KRW"))
    assert ex.count(group="ticker") == -(-len(df) // 50)


def test_unknown_market_is_named_before_any_ticker_request(ex: Exchange) -> None:
    with pytest.raises(mdcoord.MarketNotFoundError, match="KRW-BTCC.*did you mean KRW-BTC") as info:
        mdcoord.tickers(["KRW-ETH", "KRW-BTCC"], base_url=ex.base_url)
    assert info.value.markets == ["KRW-BTCC"]
    assert ex.count(group="ticker") == 0


@pytest.mark.parametrize("bad, match", [("EUR", "unknown quote currency"), ([], "no markets")])
def test_bad_input(ex: Exchange, bad: object, match: str) -> None:
    with pytest.raises(mdcoord.InvalidRequestError, match=match):
        mdcoord.tickers(bad, base_url=ex.base_url)  # type: ignore[arg-type]
    assert ex.count(group="ticker") == 0
