"""Split plans, asserted as computed data (no network)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from mdcoord._coverage import Coverage
from mdcoord._planner import RANGE_WIDTH, CandleChunk, CandleCursors, proven_by
from mdcoord._timeframe import Timeframe

TF = Timeframe.M1


def _cursors() -> CandleCursors:
    return CandleCursors("KRW-BTC", TF)


def test_a_range_starts_page_aligned_cursors_newest_first() -> None:
    chunks = _cursors().plan_range(1000, 1450, Coverage())
    # (nominal window, to, count, where the cursor stops): a part under 200 slots asks only that many
    assert [(c.lo, c.to, c.count, c.stop) for c in chunks] == [
        (1250, 1450, 200, 1250), (1050, 1250, 200, 1050), (1000, 1050, 50, 1000)]


def test_a_long_range_gets_the_planners_width_of_cursors() -> None:
    chunks = _cursors().plan_range(0, 100 * 200, Coverage())
    assert len(chunks) == RANGE_WIDTH
    assert all(c.to % 200 == 0 and c.count == 200 for c in chunks)  # page-aligned: a dense market's pages meet
    assert [c.stop for c in chunks] == [c.to for c in chunks[1:]] + [0]


def test_chunk_params_use_a_literal_z_and_the_exclusive_end() -> None:
    start = TF.slot_of(pd.Timestamp("2024-01-01T00:00:00Z"))
    (chunk,) = _cursors().plan_range(start, start + 200, Coverage())
    assert chunk.params() == {"market": "KRW-BTC", "to": "2024-01-01T03:20:00Z", "count": 200}
    assert chunk.window() == (pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-01T03:20", tz="UTC"))


def test_covered_parts_are_not_planned_again() -> None:
    cov = Coverage()
    cov.add(1100, 1300)
    chunks = _cursors().plan_range(1000, 1450, cov)
    assert [(c.lo, c.to, c.count, c.stop) for c in chunks] == [(1300, 1450, 150, 1300), (1000, 1100, 100, 1000)]


def test_a_cursor_pages_on_from_its_oldest_row_until_the_next_cursors_start() -> None:
    cur = _cursors()
    top, below = cur.plan_range(0, 4000, Coverage())[:2]  # 20 pages over eight cursors
    assert (top.to, top.stop, below.to) == (4000, 3600, 3600)
    cov = Coverage()
    dense = np.arange(3800, 4000)  # 200 rows, one every slot
    cov.add(*proven_by(top, dense, floor=0))
    (nxt,) = cur.follow(top, dense, cov)
    assert (nxt.to, nxt.stop, nxt.count) == (3800, 3600, 200)
    sparse = np.arange(3800 - 1000, 3800, 5)  # 200 rows reaching below the next cursor's start
    cov.add(*proven_by(nxt, sparse, floor=0))
    assert cur.follow(nxt, sparse, cov) == []  # done: below 3600 is the next cursor's


def test_a_short_answer_ends_the_cursor() -> None:
    cur = _cursors()
    chunk = cur.plan_range(0, 150, Coverage())[0]
    cov = Coverage()
    rows = np.arange(100, 150)  # fewer than asked: the history ended
    cov.add(*proven_by(chunk, rows, floor=0))
    assert cur.follow(chunk, rows, cov) == [] and cov.missing(0, 150) == []
def test_coverage_merges_and_reaches_down() -> None:
    cov = Coverage()
    cov.add(10, 20)
    cov.add(30, 40)
    cov.add(20, 30)
    assert list(cov) == [(10, 40)]
    assert cov.reach_down(40) == 10
    assert cov.reach_down(50) == 50
    assert cov.missing(0, 50) == [(0, 10), (40, 50)]


def test_an_answer_proves_its_window_and_beyond_when_the_market_is_thin() -> None:
    chunk = CandleChunk("KRW-X", TF, 1200, 200, 1000)
    full = np.arange(1000, 1200)
    assert proven_by(chunk, full, floor=0) == (1000, 1200)
    thin = np.arange(200, 1200, 5)  # 200 rows, one every 5 slots → reaches back to 200
    assert proven_by(chunk, thin, floor=0) == (200, 1200)
    short = np.arange(1150, 1200)  # history ends: fewer rows than asked
    assert proven_by(chunk, short, floor=0) == (0, 1200)


def test_a_dense_count_asks_windows_of_exactly_the_missing_length_a_few_at_a_time() -> None:
    cur, cov = _cursors(), Coverage()
    cov.add(9800, 10_000)  # the head: 200 candles, one every slot
    first = cur.plan_count(10_000, 1000, 200, cov, floor=0)
    # 800 missing, five pages: 2 + 5 // 10 = 2 windows in flight
    assert [(c.lo, c.to, c.count, c.stop) for c in first] == [(9600, 9800, 200, None), (9400, 9600, 200, None)]
    rows = np.arange(9600, 9800)
    cov.add(*proven_by(first[0], rows, floor=0))
    (nxt,) = cur.follow(first[0], rows, cov)  # still dense: the next window, as this one landed
    assert (nxt.lo, nxt.to, nxt.count) == (9200, 9400, 200)
    thin = np.arange(9400 - 400, 9600, 2)[-200:]  # a missing slot: the windows end
    cov.add(*proven_by(first[1], thin, floor=0))
    assert cur.follow(first[1], thin, cov) == []


def test_a_thin_count_pages_with_one_cursor() -> None:
    cur, cov = _cursors(), Coverage()
    cov.add(9000, 10_000)  # the head: 200 candles over 1000 slots
    (c,) = cur.plan_count(10_000, 1000, 200, cov, floor=0)
    assert (c.to, c.count, c.stop) == (9000, 200, 0)
    rows = np.arange(8000, 9000, 5)
    cov.add(*proven_by(c, rows, floor=0))
    (nxt,) = cur.follow(c, rows, cov, have=400)
    assert (nxt.to, nxt.count) == (8000, 200)
    assert cur.follow(nxt, rows, cov, have=1000) == []  # N known: done
    assert cur.plan_count(10_000, 1000, 1000, cov, floor=0) == []


def test_count_stops_at_the_history_floor() -> None:
    cov = Coverage()
    cov.add(0, 10_000)
    assert _cursors().plan_count(10_000, 50_000, 10_000, cov, floor=0) == []


@settings(max_examples=200, deadline=None)
@given(
    lo=st.integers(0, 100_000),
    length=st.integers(1, 5_000),
    holes=st.lists(st.tuples(st.integers(0, 5_000), st.integers(1, 600)), max_size=5),
)
def test_range_cursors_own_every_missing_slot_exactly_once_within_page_limits(
    lo: int, length: int, holes: list[tuple[int, int]]
) -> None:
    """The first cursors of a range: their parts ``[stop, to)`` tile what is missing, each
    starts at the top of its part, and a page never asks for more than 200 or than its part."""
    hi = lo + length
    cov = Coverage()
    for off, n in holes:
        cov.add(lo + off, lo + off + n)
    chunks = _cursors().plan_range(lo, hi, cov)
    hits = np.zeros(length, dtype=int)
    for c in chunks:
        assert c.stop is not None and 1 <= c.count <= 200 and c.count <= c.to - c.stop
        hits[c.stop - lo : c.to - lo] += 1
    covered = np.zeros(length, dtype=bool)
    for a, b in cov:
        covered[max(a, lo) - lo : max(min(b, hi), lo) - lo] = True
    if len(cov.missing(lo, hi)) <= RANGE_WIDTH:  # more parts than cursors: the rest next round
        assert np.array_equal(hits, (~covered).astype(int))
    else:
        assert hits.max() <= 1 and len(chunks) == RANGE_WIDTH
