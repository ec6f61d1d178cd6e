"""Interrupts in the middle of a long download (issue 7, item 2): Ctrl-C (a Jupyter "interrupt
kernel" is the same KeyboardInterrupt in the main thread) and task cancellation.

Each must stop all traffic within a second — measured on the exchange's own request log, whose
arrival times share this process's monotonic clock — leave no task running on mdcoord's loop
and no connection checked out of its session, keep what was completed in the cache, and the same
call afterwards must resume where it stopped and give the uninterrupted result.

Earlier, coarser versions: ``tests/test_client.py::test_ctrl_c_stops_all_traffic_promptly`` and
``test_cancelling_the_async_call_stops_traffic``, ``tests/test_stream.py::test_breaking_out_stops_the_traffic``.
"""

from __future__ import annotations

import _thread
import asyncio
import gc
import math
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import pytest

import mdcoord
from mdcoord._config import source_name
from mdcoord._runtime import get_runtime
from mdcoord._store import CandleStore
from mdcoord._timeframe import Timeframe
from mdcoord.sim import Exchange, SimConfig

from .conftest import NOW, assert_same_candles, truth

MARKETS = ["KRW-BTC", "KRW-ETH"]
START, END = "2026-10-01T00:00:00Z", "2026-10-03T00:00:00Z"  # 2880 slots a market: 15 pieces each
SLOTS = 2880
SEGMENT = 600  # slots: 3 pieces a market, 6 requests a segment
# The bound: after the interrupt, the exchange sees nothing more within a second.
STOP_BOUND_S = 1.0


@pytest.fixture
def slow_ex() -> Iterator[Exchange]:
    """50 ms round trips: requests are on the wire when the interrupt comes."""
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, latency=0.05, jitter=0.01)) as ex:
        mdcoord.candles("KRW-BTC", "1m", count=1, base_url=ex.base_url)  # the clock is known
        ex.clear_log()
        yield ex


def _interrupt_main_at(delay: float, stamp: list[float]) -> threading.Timer:
    def fire() -> None:
        stamp.append(time.monotonic())
        _thread.interrupt_main()

    timer = threading.Timer(delay, fire)
    timer.start()
    return timer


def assert_quiet_after(ex: Exchange, t_stop: float) -> None:
    """Nothing arrives at the exchange later than STOP_BOUND_S after ``t_stop`` — also later on."""
    time.sleep(STOP_BOUND_S + 0.2)
    late = [round(r.arrival - t_stop, 3) for r in ex.log if r.arrival > t_stop + STOP_BOUND_S]
    assert late == [], f"requests arrived {late} s after the interrupt"


def assert_nothing_left_running() -> None:
    """No task of a call is left on mdcoord's loop (the loop-lag monitor, which ends itself after
    5 s without requests, is the only task allowed), and no connection is checked out."""

    async def tasks() -> list[str]:
        me = asyncio.current_task()
        return [t.get_name() for t in asyncio.all_tasks() if t is not me and not t.done()]

    left = asyncio.run_coroutine_threadsafe(tasks(), get_runtime().loop).result(5)
    assert [n for n in left if n != "mdcoord-loop-lag"] == []
    gc.collect()
    sessions = [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed]
    assert all(len(s.connector._acquired) == 0 for s in sessions if s.connector is not None)  # type: ignore[attr-defined]


def cancel_after(ex: Exchange, coro: Coroutine[Any, Any, Any], answers: int,
                 until: Callable[[], bool] = lambda: True) -> float:
    """Run ``coro`` as a task, cancel it once the exchange has answered ``answers`` requests and
    ``until()`` holds; returns the moment of the cancellation."""

    async def main() -> float:
        task = asyncio.create_task(coro)
        while ex.count(status=200) < answers or not until():
            await asyncio.sleep(0.01)
        t_stop = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return t_stop

    return asyncio.run(main())


def _pieces(slots: int) -> int:
    return math.ceil(slots / 200)


def test_ctrl_c_mid_download_stops_within_a_second_keeps_segments_and_resumes(slow_ex: Exchange, tmp_path: Path) -> None:
    ex = slow_ex
    stamp: list[float] = []
    timer = _interrupt_main_at(1.0, stamp)
    with pytest.raises(KeyboardInterrupt):
        mdcoord.download(MARKETS, "1m", start=START, end=END, segment_size=SEGMENT, base_url=ex.base_url,
                         cache=True, cache_dir=str(tmp_path))  # ~3 s of work
    timer.join()
    assert_quiet_after(ex, stamp[0])
    assert_nothing_left_running()
    first_ok = ex.count(status=200)
    assert 5 <= first_ok < 2 * _pieces(SLOTS)  # interrupted in the middle

    # what was completed is in the cache, whole and correct
    info = mdcoord.cache.info(tmp_path)
    assert len(info) and info["rows"].min() >= SEGMENT
    store = CandleStore(tmp_path, source_name(ex.base_url))
    tf = Timeframe.M1
    lo, hi = tf.slot_of(pd.Timestamp(START)), tf.slot_of(pd.Timestamp(END))
    have = 0
    for m in MARKETS:
        frame, coverage = store.load(m, tf, lo, hi)
        if frame is None:
            continue
        have += len(frame)
        part = frame.drop(columns="market").set_index("time")
        assert part.index.is_unique
        assert_same_candles(part, truth(ex, m, "1m", START, END).loc[part.index])
        assert sum(b - a for a, b in coverage) == len(part)  # 1m BTC/ETH: a candle in every proven slot
    assert have >= SEGMENT * len(MARKETS)

    # the same call again resumes: it asks only for what is not cached
    ex.clear_log()
    summary = mdcoord.download(MARKETS, "1m", start=START, end=END, segment_size=SEGMENT, base_url=ex.base_url,
                               cache=True, cache_dir=str(tmp_path))
    assert summary["rows"].tolist() == [SLOTS, SLOTS]
    needed = 2 * _pieces(SLOTS)
    assert summary.attrs["mdcoord"]["requests_sent"] <= needed - (have // 200) + 2 * len(MARKETS)
    sent = ex.count()
    df = mdcoord.candles(MARKETS, "1m", start=START, end=END, base_url=ex.base_url, cache=True, cache_dir=str(tmp_path))
    assert ex.count() == sent  # all of it from the cache now
    for m in MARKETS:
        assert_same_candles(df.xs(m), truth(ex, m, "1m", START, END))


def test_cancelling_an_async_stream_keeps_segments_and_resumes(slow_ex: Exchange, tmp_path: Path) -> None:
    """A task consuming ``aiter_candles`` (the async download) is cancelled mid-way."""
    ex = slow_ex
    got: list[pd.DataFrame] = []

    async def consume() -> None:
        async for seg in mdcoord.aiter_candles(MARKETS, "1m", start=START, end=END, segment_size=SEGMENT,
                                               base_url=ex.base_url, cache=True, cache_dir=str(tmp_path)):
            got.append(seg)

    t_stop = cancel_after(ex, consume(), 12, until=lambda: len(got) >= 1)  # one segment in hand, more on the wire
    assert_quiet_after(ex, t_stop)
    assert_nothing_left_running()
    assert 1 <= len(got) < math.ceil(SLOTS / SEGMENT)
    seen = pd.concat(got)
    ex.clear_log()
    whole = pd.concat(list(mdcoord.iter_candles(MARKETS, "1m", start=START, end=END, segment_size=SEGMENT,
                                                base_url=ex.base_url, cache=True, cache_dir=str(tmp_path))))
    # the segments yielded before the cancellation are not asked for again
    asked = {(r.query["market"], r.query["to"]) for r in ex.log if r.group == "candles"}
    for m in MARKETS:
        t = seen.xs(m).index
        assert not any(mk == m and t[0] < pd.Timestamp(to) <= t[-1] for mk, to in asked)
        assert_same_candles(whole.xs(m).sort_index(), truth(ex, m, "1m", START, END))


@pytest.mark.parametrize("data_type", ["candles", "trades"])
def test_cancelling_a_call_stops_within_a_second_and_the_call_then_completes(
    slow_ex: Exchange, tmp_path: Path, data_type: str
) -> None:
    """``acandles`` / ``atrades`` cancelled while its pieces are in flight; the same call afterwards
    gives the uninterrupted result."""
    ex = slow_ex
    if data_type == "candles":
        def make():  # type: ignore[no-untyped-def]
            return mdcoord.acandles(MARKETS, "1m", start=START, end=END, base_url=ex.base_url, cache=True,
                                    cache_dir=str(tmp_path))
    else:
        start = pd.Timestamp(NOW).floor("D") - pd.Timedelta(days=2)
        end = start + pd.Timedelta(hours=2)

        def make():  # type: ignore[no-untyped-def]
            return mdcoord.atrades(MARKETS, start=start, end=end, base_url=ex.base_url, cache=True,
                                   cache_dir=str(tmp_path))

    t_stop = cancel_after(ex, make(), 6)  # well into it
    assert_quiet_after(ex, t_stop)
    assert_nothing_left_running()

    async def again() -> pd.DataFrame:
        return await make()

    df = asyncio.run(again())
    assert df.attrs["mdcoord"]["complete"] is True
    if data_type == "candles":
        for m in MARKETS:
            assert_same_candles(df.xs(m), truth(ex, m, "1m", START, END))
    else:
        want = mdcoord.trades(MARKETS, start=start, end=end, base_url=ex.base_url, cache=False)
        df.attrs, want.attrs = {}, {}
        pd.testing.assert_frame_equal(df, want, check_exact=True)


def test_ctrl_c_in_a_sync_trades_call(slow_ex: Exchange) -> None:
    ex = slow_ex
    stamp: list[float] = []
    start = pd.Timestamp(NOW).floor("D") - pd.Timedelta(days=3)
    timer = _interrupt_main_at(1.0, stamp)
    with pytest.raises(KeyboardInterrupt):
        mdcoord.trades(["KRW-BTC", "KRW-ETH", "KRW-XRP"], start=start, end=start + pd.Timedelta(days=2),
                       base_url=ex.base_url)  # hundreds of pages
    timer.join()
    assert_quiet_after(ex, stamp[0])
    assert_nothing_left_running()
    assert ex.count(status=200) >= 3
