"""Requests are the cost (issue 13): the candle planner's backward cursors, driven against a
model of Upbit's candle endpoint over random gap patterns, give the exact rows and stay within
the request bounds (docs/design.md):

- a range:  requests <= 1.2 x ceil(rows / 200) + RANGE_WIDTH  (the head included);
- a count:  requests <= 1.1 x ceil(N / 200) + 1               (the head included).

The model answers ``to=t, count=c`` with the ``c`` newest existing slots before ``t``, as the API
does (minutes without trades have no candle). Answers land in a random order (any interleaving
the executor may produce: follow-ups are asked for the moment an answer lands). Patterns go
from every minute traded to 1 in 100, uniform, bursty (runs of trading and of silence), and
"regime" (liquid lately, thin before: the case that punishes a planner trusting the newest
density).
"""

from __future__ import annotations

import math
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mdcoord._coverage import Coverage
from mdcoord._planner import RANGE_WIDTH, CandleChunk, CandleCursors, proven_by
from mdcoord._timeframe import Timeframe

FLOOR = 0
NOW = 120_000  # slots: the exchange's now; the market's history is [FLOOR, NOW)


def _pattern(kind: str, share: float, seed: int) -> np.ndarray:
    """Sorted slots that hold a candle: ``share`` of the minutes, uniform or in bursts."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return np.flatnonzero(rng.random(NOW) < share).astype(np.int64)
    if kind == "regime":  # liquid lately (every minute of the newest 200-5,000), thin before
        recent = int(rng.integers(200, 5_000))
        thin = np.flatnonzero(rng.random(NOW - recent) < share)
        return np.concatenate([thin, np.arange(NOW - recent, NOW)]).astype(np.int64)
    # bursty: runs of trading (mean 30 minutes, dense inside) between runs of silence sized so
    # that about ``share`` of the minutes trade
    on_mean = 30.0
    off_mean = on_mean * (1 - share) / share if share < 1 else 0.0
    slots, t = [], 0
    while t < NOW:
        on = int(rng.geometric(1 / on_mean))
        slots.append(np.arange(t, min(NOW, t + on)))
        t += on + (int(rng.geometric(1 / off_mean)) if off_mean > 0 else 0)
    return np.concatenate(slots).astype(np.int64)


class _Exchange:
    def __init__(self, pattern: np.ndarray) -> None:
        self.pattern = pattern
        self.requests = 0

    def answer(self, to: int, count: int) -> np.ndarray:
        self.requests += 1
        i = int(np.searchsorted(self.pattern, to, side="left"))
        return self.pattern[max(0, i - count):i]


def _drive(ex: _Exchange, cov: Coverage, cur: CandleCursors, chunks: list[CandleChunk], rng: random.Random,
           known: list[np.ndarray], have=None) -> None:  # type: ignore[no-untyped-def]
    queue = list(chunks)
    while queue:
        chunk = queue.pop(rng.randrange(len(queue)))  # any answer may land first
        rows = ex.answer(chunk.to, chunk.count)
        cov.add(*proven_by(chunk, rows, FLOOR))
        known.append(rows)
        queue += cur.follow(chunk, rows, cov, have() if have else None)


def _head(ex: _Exchange, cov: Coverage, cur: CandleCursors, count: int, known: list[np.ndarray]) -> None:
    cur.spent += 1
    rows = ex.answer(NOW, count)
    cov.add(FLOOR if len(rows) < count else int(rows.min()), NOW)
    known.append(rows)


def run_range(pattern: np.ndarray, lo: int, hi: int, head: bool, seed: int,
              cov: Coverage | None = None) -> tuple[np.ndarray, int, Coverage]:
    ex, cur, known = _Exchange(pattern), CandleCursors("KRW-X", Timeframe.M1), []
    cov = Coverage() if cov is None else cov
    rng = random.Random(seed)
    if head:
        _head(ex, cov, cur, 200, known)
    for _ in range(10_000):
        chunks = cur.plan_range(lo, hi, cov)
        if not chunks:
            break
        _drive(ex, cov, cur, chunks, rng, known)
    got = np.unique(np.concatenate(known)) if known else np.empty(0, np.int64)
    return got[(got >= lo) & (got < hi)], ex.requests, cov


def run_count(pattern: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, int]:
    ex, cov, cur, known = _Exchange(pattern), Coverage(), CandleCursors("KRW-X", Timeframe.M1), []
    rng = random.Random(seed)
    _head(ex, cov, cur, min(200, n + 1), known)

    def have() -> int:
        got = np.unique(np.concatenate(known))
        return int(np.count_nonzero(got >= cov.reach_down(NOW)))

    for _ in range(10_000):
        chunks = cur.plan_count(NOW, n, have(), cov, FLOOR)
        if not chunks:
            break
        _drive(ex, cov, cur, chunks, rng, known, have)
    got = np.unique(np.concatenate(known))
    got = got[got >= cov.reach_down(NOW)]
    return got[-n:], ex.requests


shares = st.sampled_from([1.0, 0.9, 0.5, 0.2, 0.07, 0.03, 0.01])
kinds = st.sampled_from(["uniform", "bursty", "regime"])


@settings(max_examples=150, deadline=None)
@given(kind=kinds, share=shares, seed=st.integers(0, 10_000), length=st.integers(1, 60_000),
       top=st.integers(0, 40_000), head=st.booleans())
def test_a_range_is_exact_and_costs_what_its_rows_do(kind: str, share: float, seed: int, length: int,
                                                     top: int, head: bool) -> None:
    pattern = _pattern(kind, share, seed)
    hi = NOW - top if not head else NOW  # a range ending now has its head
    lo = max(FLOOR, hi - length)
    got, requests, cov = run_range(pattern, lo, hi, head, seed)
    want = pattern[(pattern >= lo) & (pattern < hi)]
    np.testing.assert_array_equal(got, want)
    assert not cov.missing(lo, hi)
    bound = 1.2 * math.ceil(len(want) / 200) + RANGE_WIDTH
    assert requests <= bound, (requests, bound, len(want))


@settings(max_examples=150, deadline=None)
@given(kind=kinds, share=shares, seed=st.integers(0, 10_000), n=st.integers(1, 30_000))
def test_a_count_is_exact_and_costs_what_its_rows_do(kind: str, share: float, seed: int, n: int) -> None:
    pattern = _pattern(kind, share, seed)
    got, requests = run_count(pattern, n, seed)
    np.testing.assert_array_equal(got, pattern[-n:])
    bound = 1.1 * math.ceil(n / 200) + 1
    assert requests <= bound, (requests, bound)


def test_a_thin_month_costs_its_pages_not_its_minutes() -> None:
    """The issue's case: a month of a market trading in ~7% of its minutes (about 3,000 rows):
    time windows cost 216 requests; the cursors about its pages plus the width."""
    pattern = _pattern("uniform", 0.07, 3)
    lo, hi = NOW - 43_200, NOW
    got, requests, _ = run_range(pattern, lo, hi, True, 3)
    rows = len(pattern[(pattern >= lo) & (pattern < hi)])
    assert len(got) == rows
    assert requests <= math.ceil(rows / 200) + RANGE_WIDTH, (requests, rows)


def test_a_liquid_range_costs_exactly_its_pages() -> None:
    """Every minute traded: page-aligned cursors end where the next begins; not one request more
    than the windows would take."""
    pattern = _pattern("uniform", 1.0, 0)
    got, requests, _ = run_range(pattern, NOW - 20_000, NOW - 1_000, False, 0)
    assert len(got) == 19_000 and requests == math.ceil(19_000 / 200)


@settings(max_examples=100, deadline=None)
@given(kind=kinds, share=shares, seed=st.integers(0, 10_000), length=st.integers(1, 20_000),
       cached=st.lists(st.tuples(st.integers(0, 20_000), st.integers(1, 3_000)), max_size=12))
def test_a_range_with_parts_cached_asks_only_for_the_holes(kind: str, share: float, seed: int, length: int,
                                                            cached: list[tuple[int, int]]) -> None:
    """Parts already proven (the cache) are never asked again: the rows are exact, and the cost
    is that of the holes' rows, plus a cursor for each hole (each needs one request at least)."""
    pattern = _pattern(kind, share, seed)
    hi = NOW - 1_000
    lo = hi - length
    cov = Coverage()
    for off, n in cached:
        cov.add(lo + off, min(hi, lo + off + n))
    holes = cov.missing(lo, hi)
    in_holes = sum(int(np.count_nonzero((pattern >= a) & (pattern < b))) for a, b in holes)
    got, requests, cov = run_range(pattern, lo, hi, False, seed, cov)
    assert not cov.missing(lo, hi)
    known = got  # rows fetched inside the range: exactly the holes' rows (and maybe cached ones)
    for a, b in holes:
        np.testing.assert_array_equal(known[(known >= a) & (known < b)], pattern[(pattern >= a) & (pattern < b)])
    assert requests <= 1.2 * math.ceil(in_holes / 200) + RANGE_WIDTH + len(holes), (requests, in_holes, len(holes))
