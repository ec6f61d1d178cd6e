"""``/trades/ticks``: pages of the very trades the candles aggregate, newest first.

Rows are read straight from the per-day :class:`~mdcoord.sim._tape.Tape` (seconds era), so the
1-minute OHLCV of any hour computed from them equals the 1m candles bit for bit. A page is
chosen with index arithmetic on the time-ordered tape (no sorting, no scan): the window's ends
by ``searchsorted``, the cursor's position from its ``sequential_id`` (``ts * 10**4 + n``, n
counting trades within the millisecond), then the last ``count`` trades before that.

Day selection (what ``days_ago``, ``to`` and the 7-day retention mean) is :func:`tick_window`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ._clock import MS_PER_DAY, MS_PER_SECOND, format_date, format_naive
from ._tape import Tape

RETENTION_DAYS = 7  # today and the 7 UTC days before it are served (days_ago 1-7)
MAX_COUNT = 500
_TO_RE = re.compile(r"^(\d{2}):?(\d{2}):?(\d{2})$")


def parse_time_of_day(text: str) -> int:
    """Milliseconds since UTC midnight of ``HHmmss`` or ``HH:mm:ss``; ``ValueError`` otherwise.

    Hours run 00-23 (``240000`` is rejected, as a time-of-day parser would).
    """
    m = _TO_RE.match(text.strip())
    if m is None or (":" in text and text.count(":") != 2):
        raise ValueError(f"invalid to: {text!r}")
    h, mi, s = (int(x) for x in m.groups())
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(f"invalid to: {text!r}")
    return ((h * 60 + mi) * 60 + s) * MS_PER_SECOND


def tick_window(now: int, days_ago: int | None, to_ms: int | None, first_ms: int) -> tuple[int, int]:
    """``[lo, hi)`` epoch ms of the trades one request may see.

    The day is now's UTC day (``days_ago`` None) or ``days_ago`` (1-7) days before it, whole;
    trades are served at or after ``first_ms`` (listing / start of the tape), strictly before
    now and, with ``to``, strictly before that time of the day.
    """
    day = now // MS_PER_DAY - (days_ago or 0)
    lo = max(day * MS_PER_DAY, first_ms)
    hi = min((day + 1) * MS_PER_DAY, now)
    if to_ms is not None:
        hi = min(hi, day * MS_PER_DAY + to_ms)
    return lo, max(lo, hi)


def page_bounds(tape: Tape, lo: int, hi: int, count: int | None, cursor: int | None) -> tuple[int, int]:
    """Index range ``[a, b)`` of the tape: the ``count`` newest trades in ``[lo, hi)`` before ``cursor``."""
    a, b = (int(x) for x in np.searchsorted(tape.ts, [lo, hi], side="left"))
    if cursor is not None:
        c_ts, c_n = divmod(int(cursor), 10_000)
        left, right = (int(x) for x in np.searchsorted(tape.ts, [c_ts, c_ts + 1], side="left"))
        b = min(b, min(left + c_n, right))  # trades ordered before the cursor's trade
    if count is not None:
        a = max(a, b - count)
    return a, max(a, b)


def sequential_ids(tape: Tape, a: int, b: int) -> np.ndarray:
    """``sequential_id`` of trades ``a..b-1`` (the same numbers :meth:`Tape.sequential_ids` gives)."""
    ts = tape.ts[a:b]
    first = np.searchsorted(tape.ts, ts, side="left")
    return ts * 10_000 + (np.arange(a, b) - first)


def rows(code: str, tape: Tape, a: int, b: int, prev_close: float) -> list[dict[str, Any]]:
    """API rows of trades ``a..b-1`` of ``tape``, newest first, fields in Upbit's order."""
    if b <= a:
        return []
    ts = tape.ts[a:b][::-1]
    price = tape.price[a:b][::-1]
    seq = sequential_ids(tape, a, b)[::-1].tolist()
    stamp = format_naive(ts)
    dates = format_date(ts)
    change = np.round(price - prev_close, 10).tolist()
    side = np.where(tape.bid[a:b][::-1], "BID", "ASK").tolist()
    return [
        {
            "market": code, "trade_date_utc": d, "trade_time_utc": s[11:], "timestamp": t,
            "trade_price": p, "trade_volume": v, "prev_closing_price": prev_close,
            "change_price": c, "ask_bid": k, "sequential_id": q,
        }
        for d, s, t, p, v, c, k, q in zip(dates, stamp, ts.tolist(), price.tolist(),
                                          tape.volume[a:b][::-1].tolist(), change, side, seq)
    ]
