"""Pure, vectorized DataFrame functions: API rows → columns, clean, index, gaps.

Invariants of a candle frame produced here:
- index: tz-aware UTC ``DatetimeIndex`` named ``time`` (the candle START) for one market, or a
  ``(market, time)`` MultiIndex for several; sorted ascending; unique.
- columns: ``open, high, low, close, volume, value`` (float64; ``volume`` in the base currency,
  ``value`` the quote turnover) and ``last_trade_at`` (UTC time of the candle's last trade),
  plus for daily candles ``prev_close, change_price, change_rate``.
No function here loops over rows in Python.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._timeframe import Timeframe

__all__ = ["CANDLE_COLUMNS", "candle_rows_to_frame", "clean_candles", "gap_table", "index_candles"]

# API field → column, in output order.
_CANDLE_FIELDS = {
    "opening_price": "open",
    "high_price": "high",
    "low_price": "low",
    "trade_price": "close",
    "candle_acc_trade_volume": "volume",
    "candle_acc_trade_price": "value",
}
_DAY_FIELDS = {"prev_closing_price": "prev_close", "change_price": "change_price", "change_rate": "change_rate"}
CANDLE_COLUMNS = [*_CANDLE_FIELDS.values(), "last_trade_at"]
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def candle_rows_to_frame(rows: list[dict[str, Any]], tf: Timeframe) -> pd.DataFrame:
    """API candle rows (any order, any markets) → a flat frame with ``market`` and ``time`` columns."""
    extra = _DAY_FIELDS if tf is Timeframe.D1 else {}
    if not rows:
        cols: dict[str, Any] = {
            "market": pd.Series([], dtype="str"),
            "time": pd.Series([], dtype="datetime64[ns, UTC]"),
        }
        cols.update({c: pd.Series([], dtype="float64") for c in [*_CANDLE_FIELDS.values(), *extra.values()]})
        cols["last_trade_at"] = pd.Series([], dtype="datetime64[ms, UTC]")
        return pd.DataFrame(cols)[["market", "time", *CANDLE_COLUMNS, *extra.values()]]
    raw = pd.DataFrame(rows)
    out = pd.DataFrame(
        {
            "market": raw["market"].astype("str"),
            "time": pd.to_datetime(raw["candle_date_time_utc"], format=_TIME_FORMAT, utc=True).astype(
                "datetime64[ns, UTC]"
            ),
        }
    )
    for src, dst in {**_CANDLE_FIELDS, **{k: v for k, v in extra.items() if k in raw}}.items():
        out[dst] = raw[src].astype("float64")
    out["last_trade_at"] = pd.to_datetime(raw["timestamp"].astype("int64"), unit="ms", utc=True)
    return out[["market", "time", *CANDLE_COLUMNS, *[v for k, v in extra.items() if k in raw]]]


def clean_candles(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by (market, time) and drop duplicate candles (page seams); the last copy wins."""
    if df.empty:
        return df.reset_index(drop=True)
    out = df.drop_duplicates(subset=["market", "time"], keep="last")
    return out.sort_values(["market", "time"], kind="stable").reset_index(drop=True)


def index_candles(df: pd.DataFrame, markets: tuple[str, ...]) -> pd.DataFrame:
    """Set the output index: ``time`` for one market, ``(market, time)`` for several."""
    if len(markets) == 1:
        return df.drop(columns="market").set_index("time")
    out = df.copy()
    out["market"] = pd.Categorical(out["market"], categories=sorted(markets)).astype("str")
    return out.set_index(["market", "time"])


def gap_table(
    df: pd.DataFrame,
    tf: Timeframe,
    spans: dict[str, tuple[pd.Timestamp, pd.Timestamp]],
    failed: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] | None = None,
) -> pd.DataFrame:
    """Missing candles inside each market's span, one row per run of missing slots.

    ``df`` is a flat frame (``market``, ``time`` columns, cleaned). ``spans[m] = (start, end)`` is
    the half-open time span the result is meant to cover for market ``m``; ``failed[m]`` lists the
    windows of pieces that could not be fetched. Returns columns ``market, start, end`` (the first
    missing candle start and the start of the next present one) ``missing`` (number of slots) and
    ``reason``: ``"no_trades"`` (every piece was answered: the exchange has no candle there) or
    ``"not_fetched"`` (the slots lie in a piece that failed).
    """
    failed = failed or {}
    parts = []
    for market, (start, end) in spans.items():
        lo, hi = tf.first_slot_at_or_after(start), tf.first_slot_at_or_after(end)
        if hi <= lo:
            continue
        times = df.loc[df["market"] == market, "time"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
        ords = np.unique(tf.ordinal(times))
        ords = ords[(ords >= lo) & (ords < hi)]
        edges = np.concatenate(([lo - 1], ords, [hi]))
        d = np.diff(edges)
        idx = np.nonzero(d > 1)[0]
        g_lo, g_hi = edges[idx] + 1, edges[idx + 1]
        reasons = np.full(len(g_lo), "no_trades", dtype=object)
        fails = [(tf.first_slot_at_or_after(a), tf.first_slot_at_or_after(b)) for a, b in failed.get(market, [])]
        if fails:  # rare: only when pieces failed; a Python loop over those few runs is fine
            runs = [r for a, b in zip(g_lo.tolist(), g_hi.tolist()) for r in _split_by(a, b, fails)]
            g_lo = np.array([r[0] for r in runs], dtype=np.int64)
            g_hi = np.array([r[1] for r in runs], dtype=np.int64)
            reasons = np.array([r[2] for r in runs], dtype=object)
        if len(g_lo):
            parts.append(
                pd.DataFrame(
                    {
                        "market": market,
                        "start": pd.to_datetime(tf.start_ns(g_lo), utc=True),
                        "end": pd.to_datetime(tf.start_ns(g_hi), utc=True),
                        "missing": g_hi - g_lo,
                        "reason": pd.array(reasons, dtype="str"),
                    }
                )
            )
    if not parts:
        return pd.DataFrame(
            {
                "market": pd.Series([], dtype="str"),
                "start": pd.Series([], dtype="datetime64[ns, UTC]"),
                "end": pd.Series([], dtype="datetime64[ns, UTC]"),
                "missing": pd.Series([], dtype="int64"),
                "reason": pd.Series([], dtype="str"),
            }
        )
    return pd.concat(parts, ignore_index=True).sort_values(["market", "start"], kind="stable").reset_index(drop=True)


def _split_by(a: int, b: int, fails: list[tuple[int, int]]) -> list[tuple[int, int, str]]:
    """Cut the missing run ``[a, b)`` into parts inside failed windows and parts outside."""
    cuts = sorted({a, b, *(x for f in fails for x in f if a < x < b)})
    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        inside = any(f_lo <= lo and hi <= f_hi for f_lo, f_hi in fails)
        reason = "not_fetched" if inside else "no_trades"
        if out and out[-1][2] == reason and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi, reason)
        else:
            out.append((lo, hi, reason))
    return out
