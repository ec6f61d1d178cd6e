"""Pacing: the rate-limit group's limiter and concurrency gate, per exchange.

Each rate-limit group of one exchange has one :class:`~mdcoord._limiter.SlidingWindowLimiter`
(*when* a request may start) and one adaptive :class:`~mdcoord._concurrency.ConcurrencyGate`
(*how many* may be underway), shared by every call of the process — sync and async calls run
on one loop, so concurrent calls share the group's budget. Both are created on first use and
retuned from each call's options (``rate_limit``, ``rate_margin``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ._budget import FileRing, Reservation, default_budget_dir
from ._concurrency import ConcurrencyGate, LoopLagMonitor
from ._config import Options
from ._groups import Group
from ._limiter import AUTO_MARGIN_START, SlidingWindowLimiter
from ._metrics import METRICS

__all__ = ["Pacing"]

log = logging.getLogger("mdcoord")


class Pacing:
    """The limiters and gates of one exchange (``source`` labels its metrics)."""

    def __init__(
        self,
        source: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._source = source
        self._clock = clock
        self._sleep = sleep
        self._limiters: dict[Group, SlidingWindowLimiter] = {}
        self._gates: dict[Group, ConcurrencyGate] = {}
        self._rings: dict[Group, FileRing] = {}
        #: Seconds spent waiting for the machine's budget (slots taken by other processes).
        self.machine_waited = 0.0
        #: Watches the event loop while requests are underway; a stall shrinks every gate.
        self.lag = LoopLagMonitor(self._on_stall)
        METRICS.watch_lag(source, self.lag)

    def limiter(self, group: Group, options: Options | None = None) -> SlidingWindowLimiter:
        """The limiter of ``group`` (created on first use), tuned to ``options``."""
        lim = self._limiters.get(group)
        if lim is None:
            lim = self._limiters[group] = SlidingWindowLimiter(10, 1.0, 0.05, clock=self._clock, sleep=self._sleep)
        if options is not None:
            lim.max_requests = options.rate_limit
            if options.rate_margin == "auto":
                if not lim.auto_margin:  # switching to auto: start from the safe default
                    lim.auto_margin, lim.margin = True, AUTO_MARGIN_START
            else:
                lim.auto_margin, lim.margin = False, float(options.rate_margin)
        return lim

    def gate(self, group: Group, options: Options | None = None) -> ConcurrencyGate:
        """The adaptive concurrency gate of ``group`` (created on first use), shared by every
        call in the process that uses ``concurrency="auto"``."""
        gate = self._gates.get(group)
        if gate is None:
            gate = self._gates[group] = ConcurrencyGate.adaptive(clock=self._clock)
            METRICS.watch(self._source, group.value, gate)
        if options is not None:
            gate.rate = options.rate_limit
        return gate

    async def reserve(self, group: Group, limiter: SlidingWindowLimiter, options: Options) -> Reservation | None:
        """With ``rate_budget="machine"``, wait for a slot of the machine's window for ``group``
        (after this process's own limiter granted one) and reserve it; None otherwise."""
        if options.rate_budget != "machine":
            return None
        ring = self._rings.get(group)
        if ring is None:
            ring = self._rings[group] = FileRing(default_budget_dir(), self._source, group.value)
        while True:
            wait, res = ring.try_acquire(limiter.allowed, limiter.span)
            if res is not None:
                return res
            self.machine_waited += wait
            await self._sleep(wait)

    def sending(self, group: Group, res: Reservation | None) -> None:
        """The request of ``res`` is on the wire: its reservation becomes a send."""
        if res is not None:
            self._rings[group].mark_sending(res)

    def unsent(self, group: Group, res: Reservation | None) -> None:
        """The request of ``res`` never left: give its reservation back."""
        if res is not None:
            self._rings[group].release(res)

    def existing_gate(self, group: Group) -> ConcurrencyGate | None:
        """The group's gate if a call made one (fixed-concurrency calls never do)."""
        return self._gates.get(group)

    def _on_stall(self, lag: float) -> None:
        """The event loop woke ``lag`` s late: the machine is saturated; ask for less at once."""
        log.debug("event loop stalled for %.3f s; shrinking concurrency", lag)
        for gate in self._gates.values():
            gate.overload(0.75)

    async def close(self) -> None:
        await self.lag.stop()
        for ring in self._rings.values():
            ring.close()
