"""A frame's dtypes do not depend on how many rows it has (``IncompleteDataError.partial`` of a
call where every piece failed is empty; ``pd.concat`` with a later result, or
``assert_frame_equal``, must not trip on it). Found by ``python -m tools.soak``."""

from __future__ import annotations

from mdcoord._frames import candle_rows_to_frame, orderbooks_to_frame, tickers_to_frame, trades_to_frame
from mdcoord._timeframe import Timeframe
from mdcoord.sim import SyntheticMarket

from .conftest import NOW

MARKET = SyntheticMarket(seed=7, now=NOW)


def test_an_empty_tickers_frame_has_the_dtypes_of_a_full_one() -> None:
    full, empty = tickers_to_frame(MARKET.tickers(["KRW-BTC"])), tickers_to_frame([])
    assert empty.dtypes.to_dict() == full.dtypes.to_dict()


def test_empty_candle_orderbook_and_trade_frames_have_the_dtypes_of_full_ones() -> None:
    for tf, kind, kw in ((Timeframe.M1, "minutes", {"unit": 1}), (Timeframe.D1, "days", {})):
        rows = MARKET.latest_candles("KRW-BTC", kind, count=5, **kw)
        assert candle_rows_to_frame([], tf).dtypes.to_dict() == candle_rows_to_frame(rows, tf).dtypes.to_dict()
    book = orderbooks_to_frame([MARKET.orderbook("KRW-BTC", count=5)])
    assert orderbooks_to_frame([]).dtypes.to_dict() == book.dtypes.to_dict()
    trades = trades_to_frame(MARKET.ticks("KRW-BTC", count=5, days_ago=1))
    assert trades_to_frame([]).dtypes.to_dict() == trades.dtypes.to_dict()
