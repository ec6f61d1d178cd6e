"""Pure frame functions: rows → columns, dedupe at seams, index shape, gap table."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from mdcoord._frames import CANDLE_COLUMNS, candle_rows_to_frame, clean_candles, gap_table, index_candles
from mdcoord._timeframe import Timeframe

TF = Timeframe.M1
T0 = pd.Timestamp("2024-01-01T00:00:00Z")


def row(market: str, minute: int, price: float = 100.0) -> dict:
    t = T0 + pd.Timedelta(minutes=minute)
    return {
        "market": market,
        "candle_date_time_utc": t.strftime("%Y-%m-%dT%H:%M:%S"),
        "candle_date_time_kst": (t + pd.Timedelta(hours=9)).strftime("%Y-%m-%dT%H:%M:%S"),
        "opening_price": price,
        "high_price": price + 2,
        "low_price": price - 1,
        "trade_price": price + 1,
        "timestamp": int(t.value // 1_000_000) + 59_000,
        "candle_acc_trade_price": 1234.5,
        "candle_acc_trade_volume": 12,
        "unit": 1,
    }


def test_rows_become_typed_columns() -> None:
    df = candle_rows_to_frame([row("KRW-BTC", 1), row("KRW-BTC", 0)], TF)
    assert list(df.columns) == ["market", "time", *CANDLE_COLUMNS]
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert all(df[c].dtype == np.float64 for c in ["open", "high", "low", "close", "volume", "value"])
    assert df["last_trade_at"].iloc[0] == T0 + pd.Timedelta(minutes=1, seconds=59)
    empty = candle_rows_to_frame([], TF)
    assert list(empty.columns) == list(df.columns) and len(empty) == 0


def test_clean_sorts_and_drops_seam_duplicates() -> None:
    pages = [[row("KRW-BTC", m) for m in range(5, 0, -1)], [row("KRW-BTC", m) for m in range(3, -1, -1)]]
    df = clean_candles(candle_rows_to_frame([r for p in pages for r in p], TF))
    assert df["time"].is_monotonic_increasing and df["time"].is_unique and len(df) == 6


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=80), st.randoms())
def test_aggregation_is_independent_of_page_order_and_idempotent(minutes: list[int], rnd: random.Random) -> None:
    rows = [row("KRW-ETH" if m % 3 else "KRW-BTC", m) for m in minutes]
    a = clean_candles(candle_rows_to_frame(rows, TF))
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    b = clean_candles(candle_rows_to_frame(shuffled + shuffled[: len(shuffled) // 2], TF))
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(clean_candles(a), a)


def test_index_shape_one_market_vs_several() -> None:
    df = clean_candles(candle_rows_to_frame([row("KRW-BTC", 0), row("KRW-ETH", 0)], TF))
    one = index_candles(df[df["market"] == "KRW-BTC"], ("KRW-BTC",))
    assert isinstance(one.index, pd.DatetimeIndex) and str(one.index.tz) == "UTC" and one.index.name == "time"
    two = index_candles(df, ("KRW-ETH", "KRW-BTC"))
    assert list(two.index.names) == ["market", "time"]
    assert list(two.index.get_level_values("market")) == ["KRW-BTC", "KRW-ETH"]


def test_gap_table_tells_no_trades_from_not_fetched() -> None:
    present = [0, 1, 2, 5, 6, 9]
    df = clean_candles(candle_rows_to_frame([row("KRW-X", m) for m in present], TF))
    spans = {"KRW-X": (T0, T0 + pd.Timedelta(minutes=12))}
    g = gap_table(df, TF, spans)
    assert g[["missing"]].to_numpy().ravel().tolist() == [2, 2, 2]
    assert list(g["start"]) == [T0 + pd.Timedelta(minutes=m) for m in (3, 7, 10)]
    assert list(g["end"]) == [T0 + pd.Timedelta(minutes=m) for m in (5, 9, 12)]
    assert set(g["reason"]) == {"no_trades"}
    failed = {"KRW-X": [(T0 + pd.Timedelta(minutes=8), T0 + pd.Timedelta(minutes=11))]}
    g2 = gap_table(df, TF, spans, failed)
    assert list(zip(g2["missing"], g2["reason"])) == [
        (2, "no_trades"),
        (1, "no_trades"),
        (1, "not_fetched"),
        (1, "not_fetched"),
        (1, "no_trades"),
    ]
    assert g2["missing"].sum() == g["missing"].sum()


def test_gap_table_empty() -> None:
    df = clean_candles(candle_rows_to_frame([row("KRW-X", m) for m in range(10)], TF))
    g = gap_table(df, TF, {"KRW-X": (T0, T0 + pd.Timedelta(minutes=10))})
    assert len(g) == 0 and list(g.columns) == ["market", "start", "end", "missing", "reason"]
