"""Split planning: turn a request into API-sized pieces. Pure functions, no I/O.

Candles live on an integer slot grid (see ``_timeframe.py``). A piece asks
``to=<slot start>, count=c`` and the API answers the ``c`` newest candles starting before ``to``
(intervals without trades have no candle, and are skipped). Such an answer *proves*
completeness of ``[oldest returned slot, to)`` — or of everything before ``to`` when fewer than
``c`` rows came back (the market's history ended). :class:`Coverage` keeps those proven
intervals.

Requests are the cost (every one is a tenth of a second of the whole IP's budget), so pieces
follow the data, not the clock: :class:`CandleCursors` plans them as **backward cursors**.
A cursor asks ``to=t, count=200``; the answer proves ``[oldest, t)``, and the cursor goes on
from ``oldest`` (a *follow-up*, sent the moment the answer lands) until it meets the part of the
range another cursor owns. Each cursor's pages are full pages of new rows except its last, so

- a **range** costs at most ``rows / 200 + cursors`` requests. It starts ``RANGE_WIDTH``
  cursors spread over the range at page-aligned points (a dense market's pages then end exactly
  where the next cursor starts, as time windows would), and starts more (splitting the longest
  region left) only while ``cursors <= RANGE_WIDTH + RANGE_SPLIT_SHARE x full pages received``:
  requests <= 1.2 x ceil(rows / 200) + RANGE_WIDTH, on liquid, thin and very thin markets alike;
- a **count** (the ``N`` newest) pages back from the newest known row. While every slot seen so
  far held a candle (a liquid market) it asks the next time windows of exactly the missing length
  (``count`` = window length: exact when the market stays dense) with at most
  ``2 + ceil(N / 200) // 10`` in flight; the first answer that shows a missing slot ends that,
  and one cursor pages on. The windows in flight when the density dropped are the only waste:
  requests <= 1.1 x ceil(N / 200) + 1.

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
    "RANGE_SPLIT_SHARE",
    "RANGE_WIDTH",
    "CandleChunk",
    "CandleCursors",
    "TradeWindow",
    "lowest_key",
    "plan_trade_count_round",
    "plan_trade_range_round",
    "plan_trade_windows",
    "proven_by",
]

PAGE_MAX = 200
# Upbit opened in 2017-10 (KRW-BTC's first candle: 2017-09-25); nothing is planned before this.
HISTORY_FLOOR = pd.Timestamp("2017-09-01", tz="UTC")


# How many cursors a range starts with (the planner's parallel width), and how many more it may
# start per full page received (splitting the longest region left when a cursor is done early).
RANGE_WIDTH = 8
RANGE_SPLIT_SHARE = 0.2
# A count's time windows in flight while the market is dense: 2 + pages // COUNT_SPECULATION.
COUNT_SPECULATION = 10


@dataclass(frozen=True)
class CandleChunk:
    """One API request: the ``count`` newest candles of ``market`` starting before slot ``to``.

    ``lo`` is the nominal window ``[lo, to)`` the piece is responsible for (a failure reports
    it); the answer may reach further back (thin markets). ``stop`` is where the piece's cursor
    ends (its region is ``[stop, to)``); None: the piece is a window of its own.
    """

    market: str
    timeframe: Timeframe
    to: int
    count: int
    lo: int
    stop: int | None = None

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


class CandleCursors:
    """The backward cursors of one market's candle request (see the module docstring): which
    pieces to send first (:meth:`plan_range`, :meth:`plan_count`, once per round) and which
    follow-up each answer calls for (:meth:`follow`, the moment it lands). Pure: no I/O; the
    caller proves what each answer shows in ``coverage`` before asking for its follow-up."""

    def __init__(self, market: str, tf: Timeframe, page: int = PAGE_MAX) -> None:
        self.market, self.tf, self.page = market, tf, page
        self.starts: list[int] = []  # every cursor's first ``to``: below it, another cursor owns
        self.rows = 0  # rows received inside the cursors' own regions
        self.spent = 0  # requests outside any cursor (the head) that count against the width
        self.dense = False  # a count's dense windows are in flight
        self.dense_lo = 0  # ... down to here
        self.dense_next = 0  # the next window's top
        self.count_cursor = False  # a count's single cursor is paging
        self.wanted = 0
        self.end = 0

    # -- ranges ---------------------------------------------------------------------------------
    def range_budget(self) -> int:
        """How many more cursors a range may start now (see the module docstring)."""
        full = self.rows // self.page
        return RANGE_WIDTH + int(RANGE_SPLIT_SHARE * full) - len(self.starts) - self.spent

    def plan_range(self, lo: int, hi: int, coverage: Coverage) -> list[CandleChunk]:
        """The first pieces for what ``coverage`` lacks of ``[lo, hi)``, newest first: a cursor at
        the top of every missing part (each needs one), and more over the longest parts while
        the budget allows, at page-aligned points below their tops."""
        missing = coverage.missing(lo, hi)
        if not missing:
            return []
        budget = max(1, self.range_budget())
        parts = list(reversed(missing))[:budget]  # newest first; the rest in a later round
        cursors = [1] * len(parts)
        units = [math.ceil((b - a) / self.page) for a, b in parts]
        for _ in range(budget - len(parts)):  # more cursors where a cursor has the most to do
            j = max(range(len(parts)), key=lambda k: units[k] / cursors[k])
            if units[j] <= cursors[j]:
                break
            cursors[j] += 1
        chunks: list[CandleChunk] = []
        for (a, b), n, u in zip(parts, cursors, units, strict=True):
            tops = [b - (k * u // n) * self.page for k in range(n)]  # n <= u: distinct, above a
            for k, top in enumerate(tops):
                stop = tops[k + 1] if k + 1 < len(tops) else a
                chunks.append(self._cursor(top, stop))
        return chunks

    def _cursor(self, top: int, stop: int) -> CandleChunk:
        self.starts.append(top)
        return self._page(top, stop)

    def _page(self, top: int, stop: int) -> CandleChunk:
        # at most ``top - stop`` candles fit in the region: asking that many proves it all the
        # same (a full answer spans at least as many slots), and brings no rows from below it
        return CandleChunk(self.market, self.tf, top, min(self.page, top - stop), max(stop, top - self.page), stop)

    # -- counts ---------------------------------------------------------------------------------
    def plan_count(self, end: int, wanted: int, have: int, coverage: Coverage, floor: int) -> list[CandleChunk]:
        """The next pieces for "the ``wanted`` newest candles before slot ``end``" (``have`` of
        them known, in ``[coverage.reach_down(end), end)``); [] when done or nothing is older."""
        reach = coverage.reach_down(end)
        self.wanted, self.end = wanted, end
        if have >= wanted or reach <= floor:
            return []
        missing = wanted - have
        if have == end - reach:  # every slot seen so far held a candle: windows, as if it stays so
            self.dense, self.dense_lo, self.dense_next = True, max(floor, reach - missing), reach
            cap = 2 + math.ceil(wanted / self.page) // COUNT_SPECULATION
            return [c for c in (self._next_window() for _ in range(cap)) if c is not None]
        self.dense, self.count_cursor = False, True
        return [self._page(reach, floor)]

    def _next_window(self) -> CandleChunk | None:
        top = self.dense_next
        if top <= self.dense_lo:
            return None
        lo = max(self.dense_lo, top - self.page)
        self.dense_next = lo
        return CandleChunk(self.market, self.tf, top, top - lo, lo)

    # -- follow-ups ------------------------------------------------------------------------------
    def follow(self, chunk: CandleChunk, ordinals: np.ndarray, coverage: Coverage, have: int | None = None) -> list[CandleChunk]:
        """The piece that goes on from ``chunk``'s answer (``ordinals``: the slots it brought,
        already proven in ``coverage``), or [] when its cursor is done. ``have``: for a count's
        cursor, the candles known in ``[coverage.reach_down(end), end)``."""
        if chunk.stop is None:  # a count's dense window
            if not self.dense:
                return []
            exact = len(ordinals) == chunk.count and (len(ordinals) == 0 or int(ordinals.min()) == chunk.lo)
            if not exact:  # a missing slot: no more windows; the next round pages with one cursor
                self.dense = False
                return []
            nxt = self._next_window()
            return [nxt] if nxt is not None else []
        self.rows += int(np.count_nonzero(ordinals >= chunk.stop))
        if len(ordinals) < chunk.count:  # the history ended: everything below is proven
            return []
        if self.count_cursor:
            if have is None or have >= self.wanted:
                return []
            reach = coverage.reach_down(self.end)
            return [] if reach <= chunk.stop else [self._page(reach, chunk.stop)]
        missing = coverage.missing(chunk.stop, chunk.to)
        if not missing:
            return []
        top = missing[-1][1]
        # another cursor started at or below ``top`` owns what is below its start
        stop = max([chunk.stop, *(s for s in self.starts if s <= top)])
        if stop >= top:
            return []
        return [self._page(top, stop)]


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
