"""Streaming: iter_candles / aiter_candles / download."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest

import mdcoord
from mdcoord._stream import plan_segments
from mdcoord._timeframe import Timeframe
from mdcoord.sim import Exchange

from .checkpoints import wait_quiet
from .conftest import assert_same_candles, truth

START, END = "2026-11-01T00:00:00Z", "2026-11-04T00:00:00Z"  # 4320 one-minute slots


def test_segments_tile_the_range() -> None:
    tf = Timeframe.M1
    segs = plan_segments(tf, pd.Timestamp(START), pd.Timestamp(END), 1000, pd.Timestamp("2026-11-20", tz="UTC"))
    assert len(segs) == 5 and segs[0][0] == pd.Timestamp(START) and segs[-1][1] == pd.Timestamp(END)
    assert all(a[1] == b[0] for a, b in zip(segs, segs[1:]))
    open_ended = plan_segments(tf, pd.Timestamp(START), None, 1000, pd.Timestamp("2026-11-01T05:00Z"))
    assert open_ended[-1][1] is None and len(open_ended) == 1  # 301 slots up to now: one open segment
    with pytest.raises(mdcoord.InvalidRequestError, match="segment_size"):
        plan_segments(tf, pd.Timestamp(START), None, 0, pd.Timestamp(END))


def test_iter_yields_time_ordered_segments_that_add_up_to_the_whole(ex: Exchange, tmp_path: Path) -> None:
    segs = list(mdcoord.iter_candles("KRW-BTC", "1m", start=START, end=END, segment_size=1000,
                                     base_url=ex.base_url, cache=True, cache_dir=str(tmp_path)))
    assert [len(s) for s in segs] == [1000, 1000, 1000, 1000, 320]
    whole = pd.concat(segs)
    assert whole.index.is_monotonic_increasing and whole.index.is_unique
    assert_same_candles(whole, truth(ex, "KRW-BTC", "1m", START, END))
    # each segment went to the cache on arrival: the whole range is now served with no request
    sent = ex.count()
    again = mdcoord.candles("KRW-BTC", "1m", start=START, end=END, base_url=ex.base_url, cache=True,
                            cache_dir=str(tmp_path))
    assert ex.count() == sent and len(again) == 4320


def test_async_iteration_matches(ex: Exchange) -> None:
    async def main() -> list[pd.DataFrame]:
        return [s async for s in mdcoord.aiter_candles(["KRW-BTC", "KRW-ETH"], "1h", start="2026-01-01",
                                                          end="2026-03-01", segment_size=500, base_url=ex.base_url)]

    segs = asyncio.run(main())
    whole = pd.concat(segs)
    assert list(whole.index.names) == ["market", "time"]
    assert len(whole) == 2 * 59 * 24
    for m in ("KRW-BTC", "KRW-ETH"):
        assert_same_candles(whole.xs(m).sort_index(), truth(ex, m, "1h", "2026-01-01", "2026-03-01"))


def test_breaking_out_stops_the_traffic(ex: Exchange) -> None:
    it = mdcoord.iter_candles("KRW-BTC", "1m", start="2026-08-01", end="2026-11-01", segment_size=2000,
                              base_url=ex.base_url)
    first = next(it)
    assert len(first) == 2000
    it.close()  # a `break` does this
    wait_quiet(ex)  # what was on the wire when it closed is in the log
    sent = ex.count()
    # nothing more comes: a prefetch left running would send within a second (10 a second)
    with pytest.raises(TimeoutError):  # nothing more reaches the exchange
        ex.wait_for(lambda: ex.count() > sent, timeout=1.0, what=f"a request after the break: {ex.log[sent:]}")
    assert sent <= 3 * 10 + 2  # at most the current and the prefetched segment were asked for


def test_download_fills_the_cache_and_summarizes(ex: Exchange, tmp_path: Path) -> None:
    summary = mdcoord.download(["KRW-BTC", "KRW-ETH"], "1m", start=START, end=END, segment_size=1500,
                               base_url=ex.base_url, cache_dir=str(tmp_path), cache=True)
    assert list(summary.index) == ["KRW-BTC", "KRW-ETH"]
    assert summary["rows"].tolist() == [4320, 4320]
    assert summary.attrs["mdcoord"]["segments"] == 3 and summary.attrs["mdcoord"]["requests_sent"] >= 44
    info = mdcoord.cache.info(tmp_path)
    assert info["rows"].sum() == 2 * 4320
    with pytest.raises(mdcoord.InvalidRequestError, match="cache=False"):
        mdcoord.download("KRW-BTC", "1m", start=START, end=END, base_url=ex.base_url, cache=False)


@pytest.mark.parametrize("prefetch", [-1, 1.5, True, 65])
def test_bad_prefetch_is_refused(ex: Exchange, prefetch: object) -> None:
    with pytest.raises(mdcoord.InvalidRequestError, match="prefetch must be an int"):
        next(iter(mdcoord.iter_candles("KRW-BTC", "1m", start="2026-11-20", prefetch=prefetch, base_url=ex.base_url)))
    assert ex.count() == 0


def test_gaps_of_a_download_are_the_gaps_of_the_whole_range(ex: Exchange, tmp_path: Path) -> None:
    """gaps(download(...)) works: the runs of every segment, joined where a run crosses a seam."""
    thin = next(c for c in ex.market.markets("KRW")
                if 100 < len(ex.market.candles(c, "minutes", 1, START, "2026-11-01T06:00:00Z")) < 300)
    kw = {"base_url": ex.base_url, "cache": True, "cache_dir": str(tmp_path)}
    summary = mdcoord.download([thin, "KRW-BTC"], "1m", start=START, end=END, segment_size=700, **kw)
    got = mdcoord.gaps(summary)
    whole = mdcoord.candles([thin, "KRW-BTC"], "1m", start=START, end=END, **kw)  # from the cache
    want = mdcoord.gaps(whole)
    assert len(want) > 50  # a thin market: many runs, some across the 700-slot seams
    pd.testing.assert_frame_equal(got, want)
    assert int(got["missing"].sum()) == summary.attrs["mdcoord"]["missing_candles"]
