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
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._timeframe import Timeframe

__all__ = ["CandleChunk", "Coverage", "HISTORY_FLOOR", "PAGE_MAX", "plan_count_round", "plan_range", "proven_by"]

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

    def window(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        tf = self.timeframe
        return tf.slot_start(self.lo), tf.slot_start(self.to)


class Coverage:
    """Disjoint, sorted half-open intervals ``[lo, hi)`` of slot ordinals proven complete."""

    def __init__(self) -> None:
        self._iv: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._iv)

    def __repr__(self) -> str:
        return f"Coverage({self._iv})"

    def add(self, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        merged: list[tuple[int, int]] = []
        for a, b in self._iv:
            if b < lo or a > hi:
                merged.append((a, b))
            else:
                lo, hi = min(lo, a), max(hi, b)
        merged.append((lo, hi))
        self._iv = sorted(merged)

    def missing(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of ``[lo, hi)`` not covered, in ascending order."""
        out: list[tuple[int, int]] = []
        cur = lo
        for a, b in self._iv:
            if b <= cur:
                continue
            if a >= hi:
                break
            if a > cur:
                out.append((cur, min(a, hi)))
            cur = max(cur, b)
            if cur >= hi:
                break
        if cur < hi:
            out.append((cur, hi))
        return out

    def reach_down(self, hi: int) -> int:
        """The lowest ``lo`` with ``[lo, hi)`` covered without a hole (``hi`` if ``hi-1`` isn't)."""
        for a, b in self._iv:
            if a < hi <= b:
                return a
        return hi


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
