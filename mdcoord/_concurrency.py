"""How many requests may be in flight: a gate whose size follows the rate limit and the latency.

The limiter (``_limiter.py``) decides *when* a request may start; this gate decides *how many*
may be underway at once. To run at the rate-limit bound, a group needs about
``rate × latency`` requests in flight (10/s × 0.3 s = 3 at 300 ms; at 20 ms one is enough).
More than that only queues at the limiter; fewer leaves the budget unused. So the adaptive gate
keeps ``limit ≈ rate × p90(latency) × headroom + 1`` (bounded), measured from the answers:

- where the latency needs more than ``INITIAL`` (about 200 ms and up at 10/s), it keeps at least
  the limiter's burst (``rate``, the requests a window lets start at once): every window of a
  sliding-window limiter repeats the shape of the first (request i+N leaves one span after
  request i), so a gate narrower than the burst splits the first window into waves a round trip
  apart, and the last wave's lag is paid again at the end of the job (0.3 s of every job at
  300 ms). Below that, the gate stays narrower than the burst on purpose: a window some other
  program on the address has filled then costs fewer 429s than a 418 needs (Upbit's threshold
  is unconfirmed; the embedded exchange blocks after 5) — with 5 or more in flight that
  protection is gone anyway, so the burst adds no risk there;
- it **grows** by one per answer while the target is above the limit (at once up to the burst
  when the target holds it and it was never cut), never above ``ceiling``, and shrinks to the target at once when
  latency falls;
- it **halves** on a 429 and drops by a quarter on a timeout or a stalled event loop (a
  saturated machine: more requests in flight would only add work), and does not grow again
  for ``hold`` seconds after that.

A fixed gate (``concurrency=N``) never adapts. Gates are FIFO and cancellation-safe (a waiter
cancelled after it was granted a place gives it back).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from ._exceptions import InvalidRequestError

__all__ = ["ConcurrencyGate", "LoopLagMonitor"]

# Rate × latency is the average need; bursts of the sliding-window limiter and latency spread
# need more. 1.5× and one spare measured best at 30-300 ms (see benchmarks/).
HEADROOM = 1.5
SPARE = 1
DEFAULT_CEILING = 32
INITIAL = 4


class ConcurrencyGate:
    """At most ``limit`` holders at once; adaptive (default) or fixed.

    >>> gate = ConcurrencyGate.adaptive(rate=10, window=1.0)
    >>> # async: await gate.acquire(); try: ...; gate.observe(seconds) finally: gate.release()
    """

    def __init__(
        self,
        limit: int,
        *,
        adaptive: bool,
        rate: float = 10.0,
        window: float = 1.0,
        floor: int = 1,
        ceiling: int = DEFAULT_CEILING,
        hold: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or floor < 1 or ceiling < floor:
            raise InvalidRequestError("limit >= 1 and 1 <= floor <= ceiling are required")
        self.adaptive = adaptive
        self.limit = min(max(limit, floor), ceiling)
        self.rate = rate
        self.window = window
        self.floor = floor
        self.ceiling = ceiling
        self.hold = hold
        self._clock = clock
        self._hold_until = float("-inf")
        self._samples: deque[float] = deque(maxlen=32)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.in_flight = 0
        #: The largest number in flight ever, and counts of the adaptations (for metrics).
        self.max_in_flight = 0
        self.shrinks = 0
        self.grows = 0

    @classmethod
    def fixed(cls, limit: int) -> ConcurrencyGate:
        return cls(limit, adaptive=False, ceiling=max(limit, 1))

    @classmethod
    def adaptive(cls, rate: float = 10.0, window: float = 1.0, **kw: object) -> ConcurrencyGate:
        return cls(INITIAL, adaptive=True, rate=rate, window=window, **kw)  # type: ignore[arg-type]

    # -- the gate ---------------------------------------------------------------------------------
    async def acquire(self) -> None:
        """Wait for a place (FIFO) and take it."""
        if self.in_flight < self.limit and not self._waiters:
            self._take()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, then cancelled: give it back
                self.release()
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _take(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self._take()
                fut.set_result(None)

    # -- adaptation -------------------------------------------------------------------------------
    def target(self) -> int | None:
        """The limit the latency seen so far asks for (None before any answer)."""
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        need = math.ceil(self.rate / self.window * p90 * HEADROOM) + SPARE
        if need > INITIAL:  # see the module's docstring: the burst, once it adds no risk
            need = max(need, math.ceil(self.rate))
        return min(self.ceiling, max(self.floor, need))

    def observe(self, seconds: float) -> None:
        """An answer took ``seconds`` (from its start to its last byte)."""
        if not self.adaptive:
            return
        self._samples.append(seconds)
        target = self.target()
        assert target is not None
        if target > self.limit and self._clock() >= self._hold_until:
            # up to the burst at once (the first window's shape), unless the gate was cut since
            jump = math.ceil(self.rate) if target >= math.ceil(self.rate) and not self.shrinks else 0
            self.limit = max(self.limit + 1, jump)
            self.grows += 1
            self._wake()
        elif target < self.limit:
            self.limit = target

    def overload(self, factor: float) -> None:
        """Shrink to ``limit × factor`` and hold growth for a while (429: 0.5; timeout: 0.75)."""
        if not self.adaptive:
            return
        self.limit = max(self.floor, math.floor(self.limit * factor))
        self._hold_until = self._clock() + self.hold
        self.shrinks += 1


class LoopLagMonitor:
    """Measures how late the event loop wakes up; a stalled loop shrinks the adaptive gates.

    Runs only while requests are underway (``touch()`` on each one starts it; it stops after
    ``idle`` seconds without one). A wake-up later than ``stall`` seconds means the machine is
    saturated (CPU-bound work on the loop, or a starved process): then ``on_stall`` is called.
    """

    def __init__(self, on_stall: Callable[[float], None], *, tick: float = 0.05, stall: float = 0.25, idle: float = 5.0) -> None:
        self._on_stall = on_stall
        self.tick = tick
        self.stall = stall
        self.idle = idle
        self._task: asyncio.Task[None] | None = None
        self._last_touch = 0.0
        #: The worst lag seen, the number of stalls, and the recent lags (seconds, for metrics).
        self.max_lag = 0.0
        self.stalls = 0
        self.lags: deque[float] = deque(maxlen=2048)

    def touch(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_touch = loop.time()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="mdcoord-loop-lag")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() - self._last_touch < self.idle:
            t0 = loop.time()
            await asyncio.sleep(self.tick)
            lag = max(0.0, loop.time() - t0 - self.tick)
            self.lags.append(lag)
            self.max_lag = max(self.max_lag, lag)
            if lag > self.stall:
                self.stalls += 1
                self._on_stall(lag)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
