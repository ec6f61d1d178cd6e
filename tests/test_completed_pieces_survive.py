"""Issue 7, items 1 and 2: "keeps every completed chunk in the cache, and the same call afterwards
resumes where it stopped"; "the partial data that did arrive is in the cache, not lost".

A range is one round; each answer joins the job's state as it lands and the round writes what
landed to the cache in a ``finally`` — also when it ends early: the task is cancelled (Ctrl-C,
kernel interrupt, ``task.cancel()``) or a 418 / 404 cancels the siblings. (Before, the round's
pieces were written only after the whole round, so a plain ``candles()`` lost them all.)
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mdcoord
from mdcoord.sim import Exchange, SimConfig

from .checkpoints import wait_quiet
from .conftest import NOW, assert_same_candles, truth

MARKETS = ["KRW-BTC", "KRW-ETH"]
START, END = "2026-10-01T00:00:00Z", "2026-10-04T00:00:00Z"  # 4320 slots a market: 22 pieces each
PIECES = 2 * math.ceil(4320 / 200)
CONCURRENCY = 4  # fixed: at most this many pieces can be on the wire when the call is stopped


def _asked(ex: Exchange, group: str) -> int:
    """Distinct requests of ``group`` in the log: a retry (a 429, a dropped connection) asks for
    no new piece."""
    return len({tuple(sorted(r.query.items())) for r in ex.log if r.group == group})


def _cancel_after(ex: Exchange, answered: int, call: Callable[[], Coroutine[Any, Any, Any]]) -> int:
    """Start ``call()`` as a task, cancel it once the exchange has answered ``answered`` requests,
    check the cancellation reaches the caller; the number of answers sent by then. Returns when
    the exchange has seen the last of the cancelled call's requests."""

    async def main() -> int:
        task = asyncio.create_task(call())
        await asyncio.to_thread(ex.wait_for, lambda: ex.count(status=200) >= answered or task.done(), 60.0,
                                f"{answered} answers")
        assert not task.done(), "the call ended before it could be cancelled"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ex.count(status=200)

    done = asyncio.run(main())
    wait_quiet(ex)  # the requests cut off on the wire are in the log (or were never handled)
    return done


@pytest.fixture
def slow_ex() -> Iterator[Exchange]:
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, latency=0.05)) as ex:
        mdcoord.candles("KRW-BTC", "1m", count=1, base_url=ex.base_url)  # the clock is known: no head
        ex.clear_log()
        yield ex


def test_a_cancelled_candles_range_keeps_its_completed_pieces(slow_ex: Exchange, tmp_path: Path) -> None:
    ex = slow_ex
    kw = dict(start=START, end=END, base_url=ex.base_url, cache=True, cache_dir=str(tmp_path), concurrency=CONCURRENCY)

    done = _cancel_after(ex, 15, lambda: mdcoord.acandles(MARKETS, "1m", **kw))
    ex.clear_log()
    df = mdcoord.candles(MARKETS, "1m", **kw)
    for m in MARKETS:
        assert_same_candles(df.xs(m), truth(ex, m, "1m", START, END))
    # resumed: the pieces answered before the cancellation are not asked for again
    assert _asked(ex, "candles") <= PIECES - done + CONCURRENCY, (_asked(ex, "candles"), ex.count(status=429), done)


def test_a_ban_mid_range_keeps_the_pieces_that_arrived(tmp_path: Path) -> None:
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True)) as ex:
        mdcoord.candles("KRW-BTC", "1m", count=1, base_url=ex.base_url)
        ex.clear_log()
        kw = dict(start=START, end=END, base_url=ex.base_url, cache=True, cache_dir=str(tmp_path), concurrency=CONCURRENCY)
        ex.faults.inject("ban", group="candles", after=20, seconds=1)
        with pytest.raises(mdcoord.IPBlockedError):
            mdcoord.candles(MARKETS, "1m", **kw)
        done = ex.count(status=200)
        wait_quiet(ex)
        time.sleep(1.2)  # the subject, not a sync: the 1 s block ends (the client keeps it too)
        ex.clear_log()
        df = mdcoord.candles(MARKETS, "1m", **kw)
        for m in MARKETS:
            assert_same_candles(df.xs(m), truth(ex, m, "1m", START, END))
        assert _asked(ex, "candles") <= PIECES - done + CONCURRENCY, (_asked(ex, "candles"), ex.count(status=429), done)


def test_a_cancelled_trades_range_keeps_its_completed_windows(slow_ex: Exchange, tmp_path: Path) -> None:
    ex = slow_ex
    start = pd.Timestamp(NOW).floor("D") - pd.Timedelta(days=2)
    kw = dict(start=start, end=start + pd.Timedelta(hours=8), base_url=ex.base_url, cache=True,
              cache_dir=str(tmp_path), concurrency=CONCURRENCY)
    ex.clear_log()
    full = mdcoord.trades(MARKETS, **{**kw, "cache": False})
    full_pages = _asked(ex, "crix-trades")  # what an uninterrupted call asks for
    ex.clear_log()

    done = _cancel_after(ex, 30, lambda: mdcoord.atrades(MARKETS, **kw))
    ex.clear_log()
    df = mdcoord.trades(MARKETS, **kw)
    df.attrs, full.attrs = {}, {}
    pd.testing.assert_frame_equal(df, full, check_exact=True)
    # a window is ~3 pages (trades_per_window=1350); the CONCURRENCY windows on the wire may be
    # lost, every page of a completed window must not be asked again (+1: the head tells "now")
    asked = _asked(ex, "crix-trades")
    assert asked <= full_pages - done + CONCURRENCY * 3 + 1, (asked, full_pages, done)
