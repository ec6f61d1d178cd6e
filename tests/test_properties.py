"""Property tests (issue 7, item 6), with hypothesis: for random requests the split plans cover
what is asked exactly once within page limits, aggregation does not depend on the order or the
repetition of pages, and ``fill()`` then dropping the filled rows gives the original frame back.

Already property-tested elsewhere, and not repeated here: the range plan of candles
(``tests/test_planner.py::test_range_plan_covers_every_missing_slot_exactly_once_within_page_limits``)
and the page order of candle aggregation (``tests/test_frames.py::test_aggregation_is_independent_of_page_order_and_idempotent``).
"""

from __future__ import annotations

import math
import random
import tempfile

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from mdcoord._frames import clean_candles, clean_trades, fill_candles, gap_table, trades_to_frame
from mdcoord._coverage import Coverage
from mdcoord._snapshots import split_symbols
from mdcoord._store import CandleStore
from mdcoord._stream import plan_segments
from mdcoord._timeframe import Timeframe
from mdcoord._planner import DAY_MS, MIN_WINDOW_MS, TRADE_PAGE, plan_trade_count_round, plan_trade_windows

TF = Timeframe.M1
T0 = pd.Timestamp("2026-11-01T00:00:00Z")
intervals = st.lists(st.tuples(st.integers(0, 3_000), st.integers(1, 400)), max_size=8)


# -- coverage: a set of slots ---------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(adds=intervals, lo=st.integers(0, 3_000), length=st.integers(0, 600))
def test_coverage_is_the_union_of_what_was_added(adds: list[tuple[int, int]], lo: int, length: int) -> None:
    cov, model = Coverage(), set()
    for a, n in adds:
        cov.add(a, a + n)
        model |= set(range(a, a + n))
    ivs = list(cov)
    assert all(a < b for a, b in ivs) and all(b1 < a2 for (_, b1), (a2, _) in zip(ivs, ivs[1:]))  # disjoint, merged
    assert {x for a, b in ivs for x in range(a, b)} == model
    hi = lo + length
    assert {x for a, b in cov.missing(lo, hi) for x in range(a, b)} == set(range(lo, hi)) - model
    reach = cov.reach_down(hi)
    assert set(range(reach, hi)) <= model and (reach == hi or reach - 1 not in model)


# -- candles: count=N against a random thin market, rounds of plans and answers --------------------------
# -- trades windows, symbol chunks, stream segments ---------------------------------------------------------
def _trade_times(rng: np.random.Generator, floor: int, end: int, pattern: str, rate: float) -> np.ndarray:
    """Trade times (ms, sorted, distinct) over [floor, end): uniform at ``rate`` trades/ms, or in
    bursts (a few busy hours, silence between)."""
    span = end - floor
    if pattern == "uniform":
        n = rng.poisson(rate * span)
        times = rng.integers(floor, end, size=n)
    else:
        starts = rng.integers(floor, end, size=rng.integers(1, 12))
        times = np.concatenate([s + rng.integers(0, 3_600_000, size=rng.poisson(rate * span / len(starts)))
                                for s in starts])
        times = times[times < end]
    times = np.sort(times.astype(np.int64))
    return times[np.concatenate(([True], times[1:] != times[:-1]))] if len(times) else times


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    pattern=st.sampled_from(["uniform", "bursty"]),
    rate=st.sampled_from([1e-4, 1e-5, 1e-6, 1e-7]),  # a trade every 10 s ... 1 a day (busier only costs time)
    wanted=st.integers(1, 6_000),
    per_window=st.integers(200, 3_000),
    hour=st.integers(0, 23),
)
def test_trade_count_rounds_find_exactly_the_newest_n(
    seed: int, pattern: str, rate: float, wanted: int, per_window: int, hour: int
) -> None:
    """Head → plan → answer → prove, round after round, as the trades job does: windows never
    overlap each other or what is proven, stay inside one UTC day and within [floor, end), and
    the rounds end with exactly the N newest trades of the 7 days (or all there are)."""
    rng = np.random.default_rng(seed)
    today = 20_000 * DAY_MS
    end = today + hour * 3_600_000 + 1_234_567
    floor = today - 7 * DAY_MS
    trades = _trade_times(rng, floor, end, pattern, rate)
    # the head: today's newest page proves back to its oldest trade (or to midnight if short)
    todays = trades[trades >= today][-TRADE_PAGE:]
    cov = Coverage()
    cov.add(int(todays.min()) if len(todays) == TRADE_PAGE else today, end)
    known = todays
    for rounds in range(100):
        reach = cov.reach_down(end)
        mine = known[(known >= reach) & (known < end)]
        span = sum(b - a for a, b in cov)
        density = len(known) / span if span else 0.0
        windows = plan_trade_count_round("KRW-X", end, wanted, len(mine), cov, floor, today, density, per_window,
                                         int(mine[0]) if len(mine) else None)
        if not windows:
            break
        for w in windows:
            assert floor <= w.lo < w.hi <= end and w.day_start <= w.lo and w.hi <= w.day_start + DAY_MS
            assert cov.missing(w.lo, w.hi) == [(w.lo, w.hi)]  # nothing proven is asked again
            assert w.days_ago == (today - w.day_start) // DAY_MS <= 7
        assert all(a.lo >= b.hi for a, b in zip(windows, windows[1:]))  # no overlap, newest first
        for w in windows:  # each window pages until it is proven whole
            inside = trades[(trades >= w.lo) & (trades < w.hi)]
            cov.add(w.lo, w.hi)
            known = np.union1d(known, inside)
    else:
        raise AssertionError("trade count planning did not finish in 100 rounds")
    reach = cov.reach_down(end)
    got = known[(known >= reach) & (known < end)][-wanted:]
    assert np.array_equal(got, trades[-wanted:])
    # a quiet stretch costs a few rounds, not one per hour of it (7 days are 168 hours). (What a
    # round costs in requests is issue 13's: a window pages through all of its trades today.)
    assert rounds <= 30, rounds


@settings(max_examples=200, deadline=None)
@given(
    lo=st.integers(0, 7 * DAY_MS),
    length=st.integers(1, 3 * DAY_MS),
    density=st.one_of(st.just(0.0), st.floats(1e-7, 0.05)),
    per_window=st.integers(1, 5_000),
)
def test_trade_windows_tile_the_range_inside_utc_days(lo: int, length: int, density: float, per_window: int) -> None:
    base = 20_000 * DAY_MS  # some UTC midnight
    lo, hi = base + lo, base + lo + length
    today = (hi - 1) // DAY_MS * DAY_MS + DAY_MS * (lo % 3)  # "now" is on that day or later
    windows = plan_trade_windows("KRW-X", lo, hi, today, density, per_window)
    assert windows[0].hi == hi and windows[-1].lo == lo
    assert all(a.lo == b.hi for a, b in zip(windows, windows[1:]))  # contiguous, newest first: once each
    for w in windows:
        assert w.lo < w.hi and w.day_start <= w.lo and w.hi <= w.day_start + DAY_MS  # inside one UTC day
        assert w.days_ago == (today - w.day_start) // DAY_MS >= 0
        cut = w.lo == lo or w.lo == w.day_start  # only the range's or the day's edge may shorten a window
        if density > 0 and not cut:
            assert w.hi - w.lo == max(MIN_WINDOW_MS, math.ceil(per_window / density))


@given(n=st.integers(1, 400), size=st.integers(1, 50))
def test_symbol_chunks_keep_every_market_once_in_order(n: int, size: int) -> None:
    codes = tuple(f"KRW-C{i}" for i in range(n))
    chunks = split_symbols(codes, size)
    assert [m for c in chunks for m in c.markets] == list(codes)
    assert all(1 <= len(c.markets) <= size for c in chunks) and len(chunks) == math.ceil(n / size)


@settings(max_examples=50, deadline=None)
@given(offset=st.integers(0, 500_000), length=st.integers(1, 50_000), size=st.integers(1, 20_000),
       tf=st.sampled_from([Timeframe.S1, Timeframe.M1, Timeframe.M15, Timeframe.H4, Timeframe.D1]))
def test_stream_segments_tile_the_range(offset: int, length: int, size: int, tf: Timeframe) -> None:
    lo = tf.slot_of(pd.Timestamp("2024-01-01", tz="UTC")) + offset % 2_000
    start, end = tf.slot_start(lo), tf.slot_start(lo + length)
    segs = plan_segments(tf, start, end, size, end)
    assert segs[0][0] == start and segs[-1][1] == end
    assert all(a[1] == b[0] for a, b in zip(segs, segs[1:]))
    assert all(0 < tf.slot_of(b) - tf.slot_of(a) <= size for a, b in segs)  # type: ignore[arg-type]


# -- aggregation: order and repetition of pages do not matter --------------------------------------------------
def _trade(market: str, i: int) -> dict:
    return {"market": market, "timestamp": 1_763_600_000_000 + i * 137 // 3, "trade_price": 100.0 + i % 7,
            "trade_volume": 0.5 + i % 3, "ask_bid": "BID" if i % 2 else "ASK", "sequential_id": 10_000 + i,
            "prev_closing_price": 99.0, "change_price": 1.0 + i % 7}


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.integers(0, 2_000), min_size=1, max_size=120), rnd=st.randoms(), page=st.integers(1, 40))
def test_trade_aggregation_ignores_page_order_and_repeats(ids: list[int], rnd: random.Random, page: int) -> None:
    rows = [_trade("KRW-ETH" if i % 4 else "KRW-BTC", i) for i in ids]
    pages = [rows[k:k + page] for k in range(0, len(rows), page)]
    a = clean_trades(trades_to_frame(rows))
    rnd.shuffle(pages)
    again = [r for p in pages + pages[: len(pages) // 2 + 1] for r in p]  # out of order, some twice
    b = clean_trades(trades_to_frame(again))
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(clean_trades(a), a)  # idempotent
    assert a["sequential_id"].is_unique and len(a) == len(set(ids))


def _candle_frame(market: str, slots: np.ndarray) -> pd.DataFrame:
    times = pd.to_datetime(TF.start_ns(slots), utc=True).astype("datetime64[ns, UTC]")
    price = 100.0 + (slots % 17)
    return pd.DataFrame({
        "market": market, "time": times, "open": price, "high": price + 2, "low": price - 1, "close": price + 1,
        "volume": 1.0 + slots % 5, "value": (1.0 + slots % 5) * price,
        "last_trade_at": (times + pd.Timedelta(seconds=59)).astype("datetime64[ms, UTC]"),
    })


@settings(max_examples=25, deadline=None)
@given(slots=st.lists(st.integers(0, 20_000), min_size=1, max_size=300, unique=True),
       cuts=st.lists(st.integers(0, 20_000), max_size=6), rnd=st.randoms())
def test_the_cache_merge_ignores_the_order_and_repetition_of_saves(slots: list[int], cuts: list[int],
                                                                     rnd: random.Random) -> None:
    """Saving the same proven pages to the cache in any order, some twice, stores the same."""
    base = TF.slot_of(T0)
    arr = np.array(sorted(slots)) + base
    bounds = sorted({base, base + 20_001, *(base + c for c in cuts)})
    pages = [(a, b, arr[(arr >= a) & (arr < b)]) for a, b in zip(bounds, bounds[1:])]
    results = []
    for order in (pages, rnd.sample(pages, len(pages)) + rnd.sample(pages, len(pages) // 2)):
        with tempfile.TemporaryDirectory() as root:
            store = CandleStore(root, "prop")
            for a, b, s in order:
                store.save("KRW-X", TF, _candle_frame("KRW-X", s), [(a, b)])
            results.append(store.load("KRW-X", TF, base, base + 20_001))
    (f1, c1), (f2, c2) = results
    assert list(c1) == list(c2) == [(base, base + 20_001)]
    pd.testing.assert_frame_equal(f1, f2)
    assert f1 is not None and f1["time"].is_unique and len(f1) == len(slots)


# -- fill() ------------------------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(per_market=st.lists(st.lists(st.integers(0, 3_000), min_size=1, max_size=200, unique=True),
                           min_size=1, max_size=3))
def test_fill_then_drop_filled_gives_back_the_original(per_market: list[list[int]]) -> None:
    markets = [f"KRW-M{i}" for i in range(len(per_market))]
    flat = clean_candles(pd.concat([_candle_frame(m, np.array(s) + TF.slot_of(T0)) for m, s in zip(markets, per_market)],
                                   ignore_index=True))
    df = flat.drop(columns="market").set_index("time") if len(markets) == 1 else flat.set_index(["market", "time"])
    df.attrs["mdcoord"] = {"timeframe": "1m", "markets": markets}
    full = df.mdc.fill()
    # every slot from each market's first to its last candle, once
    sizes = full.groupby(level="market").size() if len(markets) > 1 else pd.Series([len(full)])
    assert sizes.tolist() == [max(s) - min(s) + 1 for s in per_market]
    kept = full[~full["filled"]].drop(columns="filled")
    kept.attrs = df.attrs
    pd.testing.assert_frame_equal(kept, df, check_freq=False)
    filled = full[full["filled"]]
    assert (filled["volume"] == 0).all() and (filled["open"] == filled["close"]).all()
    assert (filled["high"] == filled["low"]).all() and (filled["open"] == filled["high"]).all()
    # and filling is idempotent: a filled frame has nothing left to fill
    again = fill_candles(full.drop(columns="filled"), TF)
    assert not again["filled"].any()


@settings(max_examples=100, deadline=None)
@given(slots=st.lists(st.integers(0, 2_000), max_size=300, unique=True), before=st.integers(0, 50),
       after=st.integers(1, 50))
def test_gaps_and_candles_add_up_to_the_span(slots: list[int], before: int, after: int) -> None:
    base = TF.slot_of(T0)
    frame = clean_candles(_candle_frame("KRW-X", np.array(sorted(slots), dtype=np.int64) + base))
    lo, hi = base - before, base + 2_001 + after
    g = gap_table(frame, TF, {"KRW-X": (TF.slot_start(lo), TF.slot_start(hi))})
    assert int(g["missing"].sum()) + len(frame) == hi - lo
    assert (g["end"] > g["start"]).all() and set(g["reason"]) <= {"no_trades"}
    present = set(frame["time"])
    assert not any(g["start"].isin(present)) and (g["start"].iloc[1:].to_numpy() >= g["end"].iloc[:-1].to_numpy()).all()

