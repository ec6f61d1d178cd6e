"""Split planning: turn a request into API-sized pieces. Pure functions, no I/O.

Candles live on an integer slot grid (see ``_timeframe.py``). A piece asks
``to=<slot start>, count=c`` and the API answers the ``c`` newest candles starting before ``to``.
Because intervals without trades have no candle, such an answer *proves* completeness of
``[oldest returned slot, to)`` — or of everything before ``to`` when fewer than ``c`` rows came
back (the market's history ended). :class:`Coverage` keeps those proven intervals, so:

- a **range** ``[start, end)`` is cut into windows of ``page`` slots asking ``count`` = window
  length; every window is proven complete by its own answer, so one round always suffices;
- a **count** (``N`` most recent) first plans ``[end - N, end)`` as if no candle were missing; if
  a thin market answered fewer rows, the next round plans, concurrently, as many pieces as the
  missing rows need, spaced by the density observed so far — never one page at a time.

Trades live on epoch milliseconds. ``/trades/ticks`` addresses one UTC day at a time
(``days_ago``), a time of day ``to`` and a ``cursor``, 500 trades a page, newest first. A
:class:`TradeWindow` is a time range inside one UTC day that is fetched by paging until a page
reaches past its start (or a short page ends the day): then it is proven complete. Windows are
sized from the density seen so far to hold about ``per_window`` trades; a ``count`` plans rounds
back in time exactly like candles, sized by the trades still missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._coverage import Coverage
from ._timeframe import Timeframe

__all__ = [
    "DAY_MS",
    "HISTORY_FLOOR",
    "MIN_WINDOW_MS",
    "PAGE_MAX",
    "PROBE_WINDOW_MS",
    "TRADE_PAGE",
    "CandleChunk",
    "TradeWindow",
    "lowest_key",
    "plan_count_round",
    "plan_range",
    "plan_trade_count_round",
    "plan_trade_range_round",
    "plan_trade_windows",
    "proven_by",
]

PAGE_MAX = 200
# Upbit opened in 2017-10 (KRW-BTC's first candle: 2017-09-25); nothing is planned before this.
HISTORY_FLOOR = pd.Timestamp("2017-09-01", tz="UTC")


@dataclass(frozen=True)
class CandleChunk:
    """One API request: the ``count`` newest candles of ``market`` starting before slot ``to``.

    ``lo`` is the nominal window ``[lo, to)`` the piece is responsible for; the answer may reach
    further back (thin markets), which is useful but never relied upon.
    """

    market: str
    timeframe: Timeframe
    to: int
    count: int
    lo: int

    def params(self) -> dict[str, str | int]:
        to = pd.Timestamp(int(self.timeframe.start_ns(self.to)), tz="UTC")
        # Formatted by hand with a literal Z: no '+' to be mangled by URL encoding.
        return {"market": self.market, "to": to.strftime("%Y-%m-%dT%H:%M:%SZ"), "count": self.count}

    @property
    def hi(self) -> int:
        """The exclusive top of the window (``to``), in slots."""
        return self.to

    def window(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        tf = self.timeframe
        return tf.slot_start(self.lo), tf.slot_start(self.to)

    def describe(self) -> str:
        a, b = self.window()
        return f"[{a.isoformat()}, {b.isoformat()})"


def proven_by(chunk: CandleChunk, ordinals: np.ndarray, floor: int) -> tuple[int, int]:
    """The interval an answer proves complete (see the module docstring)."""
    if len(ordinals) < chunk.count:
        return floor, chunk.to  # history ended: nothing older exists
    return int(ordinals.min()), chunk.to


def _split(market: str, tf: Timeframe, lo: int, hi: int, span: int, page: int) -> list[CandleChunk]:
    """Cut ``[lo, hi)`` from the top into pieces of ``span`` slots, newest first."""
    chunks = []
    to = hi
    while to > lo:
        piece_lo = max(lo, to - span)
        # A dense piece asks exactly its length; a sparse one (span > page) asks a full page.
        count = page if span > page else to - piece_lo
        chunks.append(CandleChunk(market, tf, to, count, piece_lo))
        to = piece_lo
    return chunks


def plan_range(
    market: str, tf: Timeframe, lo: int, hi: int, coverage: Coverage, page: int = PAGE_MAX
) -> list[CandleChunk]:
    """Pieces for the uncovered parts of the slot range ``[lo, hi)``, newest first."""
    chunks: list[CandleChunk] = []
    for a, b in reversed(coverage.missing(lo, hi)):
        chunks.extend(_split(market, tf, a, b, page, page))
    return chunks


def plan_count_round(
    market: str,
    tf: Timeframe,
    end: int,
    wanted: int,
    have: int,
    coverage: Coverage,
    floor: int,
    page: int = PAGE_MAX,
) -> list[CandleChunk]:
    """Pieces for the next round of "the ``wanted`` newest candles before slot ``end``".

    ``have`` is the number of candles already known in ``[coverage.reach_down(end), end)``.
    Returns ``[]`` when nothing more is needed or possible.
    """
    reach = coverage.reach_down(end)
    if have >= wanted or reach <= floor:
        return []
    missing = wanted - have
    if reach == end:  # first round: assume no candle is missing
        lo = max(floor, end - missing)
        return plan_range(market, tf, lo, end, coverage, page)
    # Later rounds: the market is thinner than one candle per slot. Space pieces by the observed
    # density so each full page lands roughly where the previous one ends.
    density = max(have / (end - reach), 1e-9)
    span = max(page, math.ceil(page / density))
    n_pieces = math.ceil(missing / page)
    lo = max(floor, reach - n_pieces * span)
    chunks: list[CandleChunk] = []
    for a, b in reversed(coverage.missing(lo, reach)):
        chunks.extend(_split(market, tf, a, b, span, page))
    return chunks


# -- trades ---------------------------------------------------------------------------------------
TRADE_PAGE = 500
DAY_MS = 86_400_000
MIN_WINDOW_MS = 60_000
# Window length while the density is still unknown (nothing proven yet): an hour.
PROBE_WINDOW_MS = 3_600_000
# A count round asks for this much more time than the density says the missing trades need:
# one round usually suffices, and a slightly longer window costs at most one more page.
COUNT_SLACK = 1.25


@dataclass(frozen=True)
class TradeWindow:
    """Every trade of ``market`` with ``lo <= timestamp < hi`` (ms), inside UTC day ``day_start``;
    ``days_ago`` names that day relative to the exchange's current UTC day."""

    market: str
    day_start: int
    lo: int
    hi: int
    days_ago: int

    def first_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"market": self.market, "count": TRADE_PAGE}
        if self.days_ago:
            params["days_ago"] = self.days_ago
        seconds = -(-(self.hi - self.day_start) // 1000)  # ceil: trades before hi, filtered later
        if seconds < 86_400:
            params["to"] = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        return params

    def describe(self) -> str:
        a = pd.Timestamp(self.lo, unit="ms", tz="UTC").isoformat()
        b = pd.Timestamp(self.hi, unit="ms", tz="UTC").isoformat()
        return f"[{a}, {b})"


def plan_trade_windows(
    market: str, lo: int, hi: int, today_start: int, density: float, per_window: int, length: int | None = None
) -> list[TradeWindow]:
    """Windows over ``[lo, hi)`` (ms), newest first: cut at UTC midnights, each aiming at
    ``per_window`` trades at ``density`` trades/ms (at least a minute, at most the day; an hour
    while the density is unknown, or ``length`` if given)."""
    if length is None:
        length = PROBE_WINDOW_MS if density <= 0 else max(MIN_WINDOW_MS, math.ceil(per_window / density))
    windows = []
    top = hi
    while top > lo:
        day_start = (top - 1) // DAY_MS * DAY_MS
        bottom = max(lo, day_start, top - length)
        windows.append(TradeWindow(market, day_start, bottom, top, (today_start - day_start) // DAY_MS))
        top = bottom
    return windows


def _windows_over(
    market: str, missing: list[tuple[int, int]], today_start: int, density: float, per_window: int,
    length: int | None = None,
) -> list[TradeWindow]:
    """Windows over several missing ranges (ascending), newest first."""
    return [
        w for a, b in reversed(missing)
        for w in plan_trade_windows(market, a, b, today_start, density, per_window, length)
    ]


def plan_trade_range_round(
    market: str,
    lo: int,
    hi: int,
    coverage: Coverage,
    today_start: int,
    density: float,
    per_window: int,
    *,
    probe: bool = False,
) -> list[TradeWindow]:
    """The next round of "every trade in ``[lo, hi)``": windows over what ``coverage`` lacks,
    sized for ``per_window`` trades at ``density`` (trades/ms; 0: unknown, hour-long windows).

    ``probe``: plan only the newest missing window. The first round of a range whose own pace is
    unknown does so: the pace of today's newest trades says little about another hour of another
    day, so the other windows are sized by what the probe shows.
    """
    missing = coverage.missing(lo, hi)
    if not missing:
        return []
    if probe:
        a, b = missing[-1]
        return plan_trade_windows(market, a, b, today_start, density, per_window)[:1]
    return _windows_over(market, missing, today_start, density, per_window)


def plan_trade_count_round(
    market: str,
    end: int,
    wanted: int,
    have: int,
    coverage: Coverage,
    floor: int,
    today_start: int,
    density: float,
    per_window: int,
    oldest: int | None = None,
) -> list[TradeWindow]:
    """The next round of "the ``wanted`` newest trades before ``end`` (ms)".

    ``have`` is the number of trades known in ``[coverage.reach_down(end), end)`` and ``oldest``
    the time of the oldest of them (None if none); ``floor`` the
    oldest time the exchange serves (its day 7 days ago); ``density`` the pace seen so far
    (trades/ms; 0 if none yet). Plans windows over the uncovered time just below what is proven,
    long enough to hold the missing trades at that pace, and at least as long as the quiet time
    already searched below the oldest trade (an hour while nothing was seen), so a quiet
    stretch is searched in a few rounds, not an hour a round. Returns ``[]`` when nothing more
    is needed or possible.
    """
    reach = coverage.reach_down(end)
    if have >= wanted or reach <= floor:
        return []
    # The silence already searched: from the oldest trade known (or from ``end``) down to what is
    # proven. Searching at least as far again makes a quiet stretch cost a few rounds, not one
    # round per window's worth of a pace that no longer holds.
    silence = (end if oldest is None else oldest) - reach
    if density > 0:
        need_ms = max((wanted - have) / density * COUNT_SLACK, silence)
    else:  # nothing seen yet: as far again as already searched (an hour at first)
        need_ms = max(PROBE_WINDOW_MS, silence)
    lo = max(floor, reach - max(MIN_WINDOW_MS, math.ceil(need_ms)))
    # without a pace, a window per day of the stretch: an empty window costs one request whatever
    # its length, so quiet time is cheapest searched in long windows
    length = None if density > 0 else reach - lo
    return _windows_over(market, coverage.missing(lo, reach), today_start, density, per_window, length)


def lowest_key(chunks: list[Any]) -> int:
    """The lowest key any of ``chunks`` (candle pieces or trade windows) is responsible for."""
    return min(c.lo for c in chunks)
