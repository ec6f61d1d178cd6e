"""Split plans, asserted as computed data (no network)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from mdcoord._coverage import Coverage
from mdcoord._planner import CandleChunk, plan_count_round, plan_range, proven_by
from mdcoord._timeframe import Timeframe

TF = Timeframe.M1


def test_range_is_cut_into_windows_of_200_newest_first() -> None:
    chunks = plan_range("KRW-BTC", TF, 1000, 1450, Coverage())
    assert [(c.lo, c.to, c.count) for c in chunks] == [(1250, 1450, 200), (1050, 1250, 200), (1000, 1050, 50)]


def test_chunk_params_use_a_literal_z_and_the_exclusive_end() -> None:
    start = TF.slot_of(pd.Timestamp("2024-01-01T00:00:00Z"))
    (chunk,) = plan_range("KRW-BTC", TF, start, start + 200, Coverage())
    assert chunk.params() == {"market": "KRW-BTC", "to": "2024-01-01T03:20:00Z", "count": 200}
    assert chunk.window() == (pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-01T03:20", tz="UTC"))


def test_covered_parts_are_not_planned_again() -> None:
    cov = Coverage()
    cov.add(1100, 1300)
    chunks = plan_range("KRW-BTC", TF, 1000, 1450, cov)
    assert [(c.lo, c.to) for c in chunks] == [(1300, 1450), (1000, 1100)]


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


def test_count_first_round_assumes_no_gaps_then_follows_up_by_density() -> None:
    cov = Coverage()
    first = plan_count_round("KRW-X", TF, 10_000, 1000, 0, cov, floor=0)
    assert [(c.lo, c.to, c.count) for c in first] == [(9800 - 200 * i, 10_000 - 200 * i, 200) for i in range(5)]
    # The market turned out to have a candle every 2nd slot: 1000 slots proved, 500 rows found.
    cov.add(9000, 10_000)
    second = plan_count_round("KRW-X", TF, 10_000, 1000, 500, cov, floor=0)
    # 500 rows missing → 3 full pages, each spanning 400 slots at the observed density.
    assert [(c.lo, c.to, c.count) for c in second] == [(8600, 9000, 200), (8200, 8600, 200), (7800, 8200, 200)]
    assert plan_count_round("KRW-X", TF, 10_000, 1000, 1000, cov, floor=0) == []


def test_count_stops_at_the_history_floor() -> None:
    cov = Coverage()
    cov.add(0, 10_000)
    assert plan_count_round("KRW-X", TF, 10_000, 50_000, 10_000, cov, floor=0) == []


@settings(max_examples=200, deadline=None)
@given(
    lo=st.integers(0, 100_000),
    length=st.integers(1, 5_000),
    holes=st.lists(st.tuples(st.integers(0, 5_000), st.integers(1, 600)), max_size=5),
)
def test_range_plan_covers_every_missing_slot_exactly_once_within_page_limits(
    lo: int, length: int, holes: list[tuple[int, int]]
) -> None:
    hi = lo + length
    cov = Coverage()
    for off, n in holes:
        cov.add(lo + off, lo + off + n)
    chunks = plan_range("KRW-X", TF, lo, hi, cov)
    hits = np.zeros(length, dtype=int)
    for c in chunks:
        assert 1 <= c.count <= 200 and c.to - c.lo == c.count
        hits[c.lo - lo : c.to - lo] += 1
    covered = np.zeros(length, dtype=bool)
    for a, b in cov:
        covered[max(a, lo) - lo : max(min(b, hi), lo) - lo] = True
    assert np.array_equal(hits, (~covered).astype(int))
