"""The concurrency gate (adaptive and fixed), the loop-lag monitor, the auto margin, and metrics()."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pandas as pd
import pytest

import mdcoord
from mdcoord import InvalidRequestError
from mdcoord._concurrency import INITIAL, ConcurrencyGate, LoopLagMonitor
from mdcoord._groups import Group
from mdcoord._limiter import AUTO_MARGIN_MIN, AUTO_MARGIN_START, SlidingWindowLimiter
from mdcoord._runtime import get_runtime
from mdcoord.sim import Exchange, SimConfig

from .conftest import NOW


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- the gate ---------------------------------------------------------------------------------------
def test_fixed_gate_bounds_holders_and_is_fifo() -> None:
    async def main() -> tuple[int, list[int]]:
        gate = ConcurrencyGate.fixed(3)
        peak, order = 0, []

        async def worker(i: int) -> None:
            nonlocal peak
            await gate.acquire()
            try:
                order.append(i)
                peak = max(peak, gate.in_flight)
                await asyncio.sleep(0.01)
            finally:
                gate.release()

        await asyncio.gather(*(worker(i) for i in range(20)))
        return peak, order

    peak, order = asyncio.run(main())
    assert peak == 3
    assert order == list(range(20))


def test_a_waiter_cancelled_after_its_grant_gives_the_place_back() -> None:
    async def main() -> int:
        gate = ConcurrencyGate.fixed(1)
        await gate.acquire()
        waiter = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        gate.release()  # grants the place to `waiter`...
        waiter.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # the place must be free again: this would hang otherwise
        await asyncio.wait_for(gate.acquire(), 1)
        return gate.in_flight

    assert asyncio.run(main()) == 1


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    async def main() -> None:
        gate = ConcurrencyGate.fixed(1)
        await gate.acquire()
        waiter = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.release()
        assert gate.in_flight == 0 and not gate._waiters

    asyncio.run(main())


@pytest.mark.parametrize(("latency", "expected"), [(0.02, 2), (0.15, 4), (0.2, 4), (0.21, 10), (0.3, 10),
                                                    (0.5, 10), (0.8, 13), (5.0, 32)])
def test_adaptive_limit_follows_rate_times_latency(latency: float, expected: int) -> None:
    gate = ConcurrencyGate.adaptive(rate=10, window=1.0, clock=FakeClock())
    for _ in range(64):
        gate.observe(latency)
    # ceil(10/s * latency * 1.5) + 1, within [1, 32]; once that is over the initial 4, at
    # least the limiter's burst of 10
    assert gate.limit == expected


def test_adaptive_limit_jumps_to_the_burst_grows_one_per_answer_and_shrinks_at_once() -> None:
    gate = ConcurrencyGate.adaptive(rate=10, window=1.0, clock=FakeClock())
    assert gate.limit == 4
    gate.observe(1.0)
    assert gate.limit == 10  # the first answer asks for more than 4: the burst at once
    gate.observe(1.0)
    assert gate.limit == 11  # above the burst: one step, not a jump
    for _ in range(40):
        gate.observe(1.0)
    assert gate.limit == 16
    for _ in range(40):  # latency drops: the p90 of the last 32 follows, the limit with it
        gate.observe(0.02)
    assert gate.limit == 2


def test_overload_shrinks_and_holds_growth() -> None:
    clock = FakeClock()
    gate = ConcurrencyGate.adaptive(rate=10, window=1.0, clock=clock)
    for _ in range(40):
        gate.observe(0.5)
    assert gate.limit == 10
    gate.overload(0.5)  # a 429
    assert gate.limit == 5 and gate.shrinks == 1
    gate.observe(0.5)
    assert gate.limit == 5  # held
    clock.t += gate.hold + 0.01
    gate.observe(0.5)
    assert gate.limit == 6  # growing back, one step at a time once it was cut
    for _ in range(10):
        gate.overload(0.5)
    assert gate.limit == 1  # never below the floor


def test_fixed_gate_never_adapts() -> None:
    gate = ConcurrencyGate.fixed(1)
    for _ in range(50):
        gate.observe(2.0)
    gate.overload(0.5)
    assert gate.limit == 1 and gate.shrinks == 0


def test_growth_wakes_waiters() -> None:
    async def main() -> int:
        gate = ConcurrencyGate.adaptive(rate=10, window=1.0, clock=FakeClock())
        for _ in range(gate.limit):
            await gate.acquire()
        waiter = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        assert not waiter.done()
        gate.observe(1.0)  # the target is higher: one more place, granted to the waiter at once
        await asyncio.wait_for(waiter, 1)
        return gate.in_flight

    assert asyncio.run(main()) == 5


# -- the loop-lag monitor --------------------------------------------------------------------------
# The monitor reads the loop's clock, so on a loop of virtual time it sees exactly the lag a test
# makes: none while the loop is quiet, however busy the machine is, and the full length of the
# work a test says it does on the loop.
T = TypeVar("T")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: waiting for a timer takes no real time (the clock jumps to
    it), and :meth:`work` stands for CPU-bound work that holds the loop for ``seconds``."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now

    def work(self, seconds: float) -> None:
        self.now += seconds


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:  # the loop would sleep until its next timer
            self._loop.now += timeout
            timeout = 0
        return super().select(timeout)


def run_virtual(main: Callable[[VirtualTimeLoop], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, VirtualTimeLoop)
        return runner.run(main(loop))


def test_a_blocked_loop_counts_as_a_stall() -> None:
    stalls: list[float] = []

    async def main(loop: VirtualTimeLoop) -> LoopLagMonitor:
        mon = LoopLagMonitor(stalls.append, tick=0.01, stall=0.1, idle=1.0)
        mon.touch()
        await asyncio.sleep(0.05)
        loop.work(0.3)  # CPU-bound work on the loop
        await asyncio.sleep(0.05)
        await mon.stop()
        return mon

    mon = run_virtual(main)
    # one stall, as long as the work less at most the tick the monitor had slept of it
    assert mon.stalls == 1 and len(stalls) == 1
    assert 0.3 - 0.01 - 1e-9 <= stalls[0] <= 0.3 + 1e-9 and mon.max_lag == stalls[0]


def test_a_quiet_loop_has_no_stall_and_the_monitor_ends_when_idle() -> None:
    async def main(loop: VirtualTimeLoop) -> LoopLagMonitor:
        mon = LoopLagMonitor(lambda lag: None, tick=0.01, stall=0.1, idle=1.0)
        mon.touch()
        await asyncio.sleep(5.0)  # virtual: no time at all
        return mon

    mon = run_virtual(main)
    assert mon.stalls == 0 and mon.max_lag < 1e-9
    assert 99 <= len(mon.lags) <= 101  # it ticked every 10 ms for its idle second, then ended


# -- the auto margin ---------------------------------------------------------------------------------
def test_auto_margin_follows_the_spread_of_round_trips() -> None:
    lim = SlidingWindowLimiter(10, 1.0, AUTO_MARGIN_START)
    lim.auto_margin = True
    for i in range(64):  # 300 ms ± 5 ms: a quiet network
        lim.observe_rtt(0.295 + (i % 11) / 1000)
    assert lim.margin == AUTO_MARGIN_MIN
    for i in range(64):  # 300 ms, spread over 120 ms
        lim.observe_rtt(0.24 + (i % 13) * 0.01)
    assert 0.07 <= lim.margin <= 0.1


def test_a_fixed_margin_is_not_touched() -> None:
    lim = SlidingWindowLimiter(10, 1.0, 0.05)
    for _ in range(64):
        lim.observe_rtt(0.3)
    assert lim.margin == 0.05


# -- end to end -----------------------------------------------------------------------------------------
def test_auto_concurrency_rises_with_latency_and_one_stays_sequential() -> None:
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, latency=0.5, jitter=0.003)) as ex:
        # a range of 15 pages (KRW-BTC trades every minute): eight cursors at once, so the gate,
        # not the planner, is what limits the requests in flight
        end = pd.Timestamp(NOW).floor("min") - pd.Timedelta(days=1)
        meta = mdcoord.candles("KRW-BTC", "1m", start=end - pd.Timedelta(minutes=15 * 200), end=end,
                               base_url=ex.base_url).attrs["mdcoord"]
        assert ex.count(status=429) == 0 and ex.max_in_window("candles", 1.0) <= 10
        gate = get_runtime().client(ex.base_url).gate(Group.CANDLES)
    # Every answer took at least the exchange's 0.5 s (a busy machine only adds to it), so the
    # gate asks for ceil(10/s x 0.5 s x 1.5) + 1 = 9 in flight: 10/s at 0.5 s needs ~5.
    assert gate.target() is not None and gate.target() >= 9  # type: ignore[operator]
    # It grew towards that by one per answer, so more than its initial 4 went at once — unless
    # the machine stalled mdcoord's loop meanwhile: a stall shrinks the gate and holds its growth
    # by design (a saturated machine must not be asked for more).
    assert meta["parallel_requests"] >= INITIAL + 2 or gate.shrinks > 0
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, latency=0.05, jitter=0.003)) as ex:
        meta = mdcoord.candles("KRW-BTC", "1m", count=5 * 200 - 1, base_url=ex.base_url, concurrency=1).attrs["mdcoord"]
        assert ex.count(status=429) == 0 and meta["parallel_requests"] == 1


def test_concurrency_option_is_checked() -> None:
    assert mdcoord.Options(concurrency="auto").concurrency == "auto"
    for bad in ("fast", 0, 1.5, True):
        with pytest.raises(InvalidRequestError, match="concurrency must be 'auto' or an int"):
            mdcoord.Options(concurrency=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="rate_margin"):
        mdcoord.Options(rate_margin="wide")


# -- metrics() ----------------------------------------------------------------------------------------
def test_metrics_count_what_the_exchange_saw(fresh: Exchange, tmp_path) -> None:
    mdcoord.reset_metrics()
    fresh.faults.inject("server_error", count=1, group="candles")
    df = mdcoord.candles("KRW-BTC", "1m", count=999, base_url=fresh.base_url, cache=True, cache_dir=tmp_path)
    mdcoord.candles("KRW-BTC", "1m", start=df.index[0], end=df.index[-1], base_url=fresh.base_url, cache=True,
                    cache_dir=tmp_path)

    req = mdcoord.metrics()
    row = req.loc[(fresh.base_url.split("//")[1].split("/")[0].replace(":", "_"), "candles")]
    assert row["requests"] == fresh.count(group="candles")
    assert row["5xx"] == 1 and row["retries"] == 1 and row["ok"] == row["requests"] - 1
    assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"] <= row["latency_max_ms"]
    assert 1 <= row["concurrency_limit"] <= 32

    splits = mdcoord.metrics("splits").loc[("candles", "time")]
    assert splits["calls"] == 2 and splits["rows"] == len(df) + len(df) - 1
    assert splits["requests"] == fresh.count(group="candles")

    cache = mdcoord.metrics("cache").loc["candles"]
    assert cache["calls"] == 2 and cache["calls_without_request"] == 1  # the second: all from the cache
    assert cache["rows_from_cache"] == len(df) - 1

    with pytest.raises(InvalidRequestError, match="unknown metrics section"):
        mdcoord.metrics("everything")
    mdcoord.reset_metrics()
    assert mdcoord.metrics().empty and mdcoord.metrics("splits").empty
