"""``/ticker``: the snapshot row, assembled from facts the model computes elsewhere.

Every number comes from the same tape and day aggregates as the candles: the last trade, the
current UTC day's daily candle so far (open/high/low/acc_*), the previous day's close, sums over
the last 24 h and the extremes of the last 52 weeks of daily candles. This module only turns
those into Upbit's row; :meth:`SyntheticMarket.ticker` gathers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._clock import KST_OFFSET_MS, format_date, format_naive

WEEKS_52_DAYS = 364  # the 52-week window: the 364 UTC days ending with today (today included)


@dataclass(frozen=True, slots=True)
class LastTrade:
    ts: int
    price: float
    volume: float
    taker_bought: bool


@dataclass(frozen=True, slots=True)
class Extremes:
    """Highest and lowest daily-candle prices of a window, with the (earliest) day of each."""

    high: float
    high_ms: int
    low: float
    low_ms: int

    @classmethod
    def of(cls, start: np.ndarray, high: np.ndarray, low: np.ndarray) -> Extremes | None:
        if start.shape[0] == 0:
            return None
        h, l = int(np.argmax(high)), int(np.argmin(low))
        return cls(float(high[h]), int(start[h]), float(low[l]), int(start[l]))

    def merge(self, other: Extremes | None) -> Extremes:
        """Combine with a later window (ties keep the earlier day)."""
        if other is None:
            return self
        hi = (self.high, self.high_ms) if self.high >= other.high else (other.high, other.high_ms)
        lo = (self.low, self.low_ms) if self.low <= other.low else (other.low, other.low_ms)
        return Extremes(hi[0], hi[1], lo[0], lo[1])


def _compact(ms: int) -> tuple[str, str]:
    stamp = format_naive(np.array([ms]))[0]
    return stamp[:10].replace("-", ""), stamp[11:].replace(":", "")


def ticker_row(code: str, now: int, last: LastTrade, day: tuple[float, float, float, float, float] | None,
               prev_close: float, acc24: tuple[float, float], weeks52: Extremes) -> dict[str, Any]:
    """One ``/ticker`` row. ``day`` = today's (open, high, low, value, volume) or None (no trade yet)."""
    date, time = _compact(last.ts)
    date_kst, time_kst = _compact(last.ts + KST_OFFSET_MS)
    if day is None:  # nothing traded today yet: the day "is" its previous close, untouched
        opening = high = low = last.price
        value = volume = 0.0
    else:
        opening, high, low, value, volume = day
    diff = last.price - prev_close
    change = "RISE" if diff > 0 else "FALL" if diff < 0 else "EVEN"
    change_price = round(abs(diff), 10)
    rate = round(abs(diff) / prev_close, 10) if prev_close else 0.0
    sign = -1.0 if diff < 0 else 1.0
    return {
        "market": code,
        "trade_date": date,
        "trade_time": time,
        "trade_date_kst": date_kst,
        "trade_time_kst": time_kst,
        "trade_timestamp": last.ts,
        "opening_price": opening,
        "high_price": high,
        "low_price": low,
        "trade_price": last.price,
        "prev_closing_price": prev_close,
        "change": change,
        "change_price": change_price,
        "change_rate": rate,
        "signed_change_price": sign * change_price,
        "signed_change_rate": sign * rate,
        "trade_volume": last.volume,
        "acc_trade_price": value,
        "acc_trade_price_24h": acc24[0],
        "acc_trade_volume": volume,
        "acc_trade_volume_24h": acc24[1],
        "highest_52_week_price": weeks52.high,
        "highest_52_week_date": format_date(np.array([weeks52.high_ms]))[0],
        "lowest_52_week_price": weeks52.low,
        "lowest_52_week_date": format_date(np.array([weeks52.low_ms]))[0],
        "timestamp": now,
    }
