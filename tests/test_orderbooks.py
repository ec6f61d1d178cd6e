"""orderbooks(): symbol split by 5, a long (market, level) frame, padding is not liquidity."""

from __future__ import annotations

import numpy as np
import pytest

import mdcoord
from mdcoord._frames import orderbooks_to_frame
from mdcoord.sim import Exchange

TOP10 = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "KRW-ADA", "KRW-SUI", "KRW-TRX", "KRW-LINK", "KRW-AVAX"]


def test_ten_books_in_two_requests(ex: Exchange) -> None:
    df = mdcoord.orderbooks(TOP10, depth=15, base_url=ex.base_url)
    assert list(df.index.names) == ["market", "level"]
    assert sorted(set(df.index.get_level_values("market"))) == sorted(TOP10)
    assert ex.count(group="orderbook") == 2 and df.attrs["mdcoord"]["split_count"] == 2
    assert df.index.get_level_values("level").max() <= 15
    for code in TOP10:
        book = df.loc[code]
        assert book["bid_price"].is_monotonic_decreasing and book["ask_price"].is_monotonic_increasing
        assert book["bid_price"].iloc[0] < book["ask_price"].iloc[0]
        assert str(book["timestamp"].dt.tz) == "UTC"
        want = ex.market.orderbook(code, count=15)
        units = want["orderbook_units"]
        assert np.allclose(book["bid_price"].to_numpy()[: len(units)], [u["bid_price"] for u in units][: len(book)])


def test_padding_levels_do_not_pose_as_liquidity() -> None:
    rows = [{
        "market": "KRW-THIN", "timestamp": 1_700_000_000_000, "total_ask_size": 3.0, "total_bid_size": 1.0,
        "orderbook_units": [
            {"bid_price": 99.0, "bid_size": 1.0, "ask_price": 101.0, "ask_size": 2.0},
            {"bid_price": 0.0, "bid_size": 0.0, "ask_price": 102.0, "ask_size": 1.0},
            {"bid_price": 0.0, "bid_size": 0.0, "ask_price": 0.0, "ask_size": 0.0},
        ],
        "level": 0,
    }]
    df = orderbooks_to_frame(rows)
    assert list(df.index.get_level_values("level")) == [1, 2]
    assert np.isnan(df.loc[("KRW-THIN", 2), "bid_price"]) and df.loc[("KRW-THIN", 2), "ask_price"] == 102.0


def test_thin_markets_have_padding_removed(ex: Exchange) -> None:
    df = mdcoord.orderbooks(ex.market.markets("KRW"), base_url=ex.base_url)
    assert ex.count(group="orderbook") == -(-len(ex.market.markets("KRW")) // 5)
    assert not ((df["bid_price"] == 0) | (df["ask_price"] == 0)).any()
    per_market = df.groupby(level="market").size()
    assert per_market.max() == 30 and per_market.min() < 30  # some books are thinner than 30 levels


@pytest.mark.parametrize("depth", [0, 31, -1, 2.5, True])
def test_depth_out_of_range(ex: Exchange, depth: object) -> None:
    with pytest.raises(mdcoord.InvalidRequestError, match="depth must be an int from 1 to 30"):
        mdcoord.orderbooks(["KRW-BTC"], depth=depth, base_url=ex.base_url)  # type: ignore[arg-type]
    assert ex.count() == 0


def test_no_book_for_any_market_is_an_incomplete_data_error(ex: Exchange) -> None:
    with pytest.raises(mdcoord.IncompleteDataError) as info:
        mdcoord.orderbooks("KRW-BTC", level=12345, base_url=ex.base_url)
    assert info.value.failures[0]["markets"] == ["KRW-BTC"]
    assert info.value.partial is not None and info.value.partial.empty
