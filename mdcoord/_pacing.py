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

from ._budget import Budget, FileRing, MachineBudget, Reservation, default_budget_dir
from ._concurrency import ConcurrencyGate, LoopLagMonitor
from ._config import Options, resolve_rate_budget
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
        self._budgets: dict[tuple[Group, str], Budget] = {}
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

    def budget(self, group: Group, options: Options) -> Budget | None:
        """The shared budget of ``group`` that ``options`` ask for (created on first use), or
        None for ``rate_budget="process"``."""
        spec = resolve_rate_budget(options)
        if spec == "process":
            return None
        budget = self._budgets.get((group, spec))
        if budget is None:
            if spec == "machine":
                clock = self._clock
                ns = time.monotonic_ns if clock is time.monotonic else (lambda: int(clock() * 1e9))
                ring = FileRing(default_budget_dir(), self._source, group.value, clock=ns)
                budget = MachineBudget(ring, self._sleep)
            else:
                from ._budget_redis import RedisBudget  # only a Redis budget needs redis-py

                budget = RedisBudget(spec, self._source, group.value, sleep=self._sleep)
            self._budgets[(group, spec)] = budget
            METRICS.watch_budget(self._source, group.value, budget)
        return budget

    async def reserve(self, budget: Budget | None, limiter: SlidingWindowLimiter) -> tuple[Reservation | None, float]:
        """Wait for a slot of the shared ``budget`` (after this process's own limiter granted
        one) and reserve it: ``(reservation, seconds this request waited for slots others
        held)``; ``(None, 0.0)`` without a shared budget. (The budget queues one request of the
        process at a time, so the waits of a call's requests add up to wall time, not more.)"""
        if budget is None:
            return None, 0.0
        return await budget.acquire(limiter.allowed, limiter.span)

    @staticmethod
    def sending(budget: Budget | None, res: Reservation | None) -> None:
        """The request of ``res`` is on the wire: its reservation becomes a send."""
        if budget is not None and res is not None:
            budget.sending(res)

    @staticmethod
    def unsent(budget: Budget | None, res: Reservation | None) -> None:
        """The request of ``res`` never left: give its reservation back."""
        if budget is not None and res is not None:
            budget.unsent(res)

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
        for (group, _), budget in self._budgets.items():
            METRICS.unwatch_budget(self._source, group.value, budget)
            await budget.aclose()
