"""Trades: a time/count hybrid split over the last 7 days.

``/trades/ticks`` addresses one UTC day at a time (``days_ago`` 1-7, omitted = today), a time of
day ``to`` (trades before it) and a ``cursor`` (the trades just before a given trade), at most 500
a page, newest first. So the job cuts the wanted time into **windows** that never cross a UTC
day; windows are fetched concurrently, and each window continues by ``cursor`` until its page
reaches a trade older than the window's start (or a short page shows the day is exhausted) — then
the window provably holds every trade in it. The window length adapts to how busy the market is:
it aims at ``options.trades_per_window`` trades, from the density seen so far.

- ``count=N``: the N most recent trades — exactly N, fewer only if the 7 days hold fewer. The
  first page (the *head*, newest trades of today) also tells the exchange's "now" and the
  density; further rounds plan windows back in time until N trades are proven.
- ``start``/``end``: every trade with ``start <= time < end``. A range reaching before the first
  available day (today's UTC midnight minus 7 days) is an :class:`InvalidRequestError` naming
  the earliest time available; ``end`` beyond now is clipped to now.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._client import CallStats, Client
from ._config import Options, resolve_cache_dir
from ._exceptions import DayChangedError, InvalidRequestError, ResponseFormatError
from ._executor import Outcome, gather_or_cancel
from ._frames import clean_trades, sorted_unique, span_mask, trades_to_frame
from ._job import CacheState, Job, JobResult, cache_call, despite_cancel, failure
from ._markets import catalog_of
from ._progress import Progress
from ._request import CoordinatorRequest
from ._store import TradeStore, source_name

__all__ = ["TradeJob", "TradeWindow", "plan_trade_windows"]

PAGE = 500
DAY_MS = 86_400_000
HISTORY_DAYS = 7
MIN_WINDOW_MS = 60_000
# Window length while the density is still unknown (nothing proven yet): an hour.
PROBE_WINDOW_MS = 3_600_000
# Trades this close to the exchange's "now" are returned but not cached as complete: they may
# still be arriving at the API.
SETTLE_MS = 2_000
_REQUIRED = ("market", "timestamp", "trade_price", "trade_volume", "sequential_id")


@dataclass(frozen=True)
class TradeWindow:
    """Every trade of ``market`` with ``lo <= timestamp < hi`` (ms), inside UTC day ``day_start``."""

    market: str
    day_start: int
    lo: int
    hi: int
    days_ago: int

    def first_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"market": self.market, "count": PAGE}
        if self.days_ago:
            params["days_ago"] = self.days_ago
        seconds = -(-(self.hi - self.day_start) // 1000)  # ceil: trades before hi, filtered below
        if seconds < 86_400:
            params["to"] = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        return params

    def describe(self) -> str:
        a = pd.Timestamp(self.lo, unit="ms", tz="UTC").isoformat()
        b = pd.Timestamp(self.hi, unit="ms", tz="UTC").isoformat()
        return f"[{a}, {b})"


def plan_trade_windows(
    market: str, lo: int, hi: int, today_start: int, density: float, per_window: int
) -> list[TradeWindow]:
    """Windows over ``[lo, hi)`` (ms), newest first: cut at UTC midnights, each aiming at
    ``per_window`` trades at ``density`` trades/ms (at least a minute, at most the day)."""
    length = PROBE_WINDOW_MS if density <= 0 else max(MIN_WINDOW_MS, math.ceil(per_window / density))
    windows = []
    top = hi
    while top > lo:
        day_start = (top - 1) // DAY_MS * DAY_MS
        bottom = max(lo, day_start, top - length)
        windows.append(TradeWindow(market, day_start, bottom, top, (today_start - day_start) // DAY_MS))
        top = bottom
    return windows


@dataclass
class _MarketState(CacheState):
    market: str
    pages: list[list[dict[str, Any]]] = field(default_factory=list)
    ts: list[np.ndarray] = field(default_factory=list)
    failed: list[Outcome[TradeWindow]] = field(default_factory=list)
    rounds: int = 0
    span: tuple[int, int] = (0, 0)
    now: int = 2**62

    def timestamps(self) -> np.ndarray:
        return sorted_unique(np.concatenate(self.ts)) if self.ts else np.empty(0, np.int64)

    def density(self, lo: int | None = None, hi: int | None = None) -> float:
        """Trades per ms over what is proven so far, within ``[lo, hi)`` if given (0 if nothing is)."""
        lo = -(2**62) if lo is None else lo
        hi = 2**62 if hi is None else hi
        span = sum(max(0, min(b, hi) - max(a, lo)) for a, b in self.coverage)
        ts = self.timestamps()
        n = int(np.count_nonzero((ts >= lo) & (ts < hi))) if len(ts) else 0
        return n / span if span > 0 else 0.0


class TradeJob(Job[TradeWindow]):
    """One trades request, run on the runtime loop."""

    group = "crix-trades"

    def __init__(self, request: CoordinatorRequest, client: Client, options: Options, stats: CallStats,
                 progress: Progress) -> None:
        super().__init__(request, client, options, stats, progress)
        self.today: int | None = None  # the exchange's UTC day when the plan was made (ms)
        self.store = TradeStore(resolve_cache_dir(options), source_name(client.base_url)) if options.cache else None

    async def _page(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        page = await self.client.get_json("/trades/ticks", params, options=self.options, stats=self.stats)
        if not isinstance(page, list) or any(not isinstance(r, dict) or any(k not in r for k in _REQUIRED) for r in page[:1]):
            raise ResponseFormatError(
                f"expected a JSON array of trades with {_REQUIRED}", url=self.client.base_url + "/trades/ticks",
                params=params, group="crix-trades",
            )
        return page

    async def fetch(self, window: TradeWindow | _Head) -> tuple[list[dict[str, Any]], int]:
        """Every trade of ``window``, paging by cursor; returns the rows and the proven low end."""
        if isinstance(window, _Head):
            return await self._page({"market": window.market, "count": PAGE}), 0
        params = window.first_params()
        rows: list[dict[str, Any]] = []
        while True:
            page = await self._page(params)
            self._check_day(window, page)
            rows.extend(page)
            if len(page) < PAGE:  # the day is exhausted: nothing older in it
                return rows, window.day_start
            if min(int(r["timestamp"]) for r in page) < window.lo:
                return rows, window.lo
            params = {k: v for k, v in params.items() if k != "to"}
            params["cursor"] = page[-1]["sequential_id"]

    def _check_day(self, window: TradeWindow, page: list[dict[str, Any]]) -> None:
        """``days_ago`` counts from the exchange's current UTC day. If that day changed since the
        plan (a call running across 00:00 UTC), the same ``days_ago`` names another day and the
        page proves nothing about this window: fail the window (it is retried by the next call,
        and nothing about it is cached) rather than record a wrong day as complete."""
        floor = self.client.server_time_floor
        day_now = int(floor * 1000) // DAY_MS * DAY_MS if floor is not None else None
        stray = any(not window.day_start <= int(r["timestamp"]) < window.day_start + DAY_MS for r in page)
        if stray or (day_now is not None and self.today is not None and day_now != self.today):
            raise DayChangedError(
                f"the exchange's UTC day changed during the call (days_ago={window.days_ago} no longer names "
                f"{pd.Timestamp(window.day_start, unit='ms', tz='UTC').date()}); run the call again",
                url=self.client.base_url + "/trades/ticks", group="crix-trades",
            )

    async def run(self) -> JobResult:
        states = [_MarketState(m) for m in self.req.symbols]
        await gather_or_cancel([self._run_market(s) for s in states])
        return await asyncio.to_thread(self._assemble, states)  # off the loop, as for candles

    async def _run_market(self, st: _MarketState) -> None:
        req = self.req
        if req.count is None:
            assert req.start is not None
            lo = _ms(req.start)
            if req.end is not None and self.store is not None:
                await self._load(st, lo, _ms(req.end))
                if not st.coverage.missing(lo, _ms(req.end)):  # wholly cached, even beyond 7 days
                    st.span = (lo, _ms(req.end))
                    return
        # the network is needed: check the code against the market list first (names it if unknown)
        await catalog_of(self.client).resolve((st.market,), self.options, self.stats, quotes_allowed=False)
        now, today = await self._head(st)
        earliest = today - HISTORY_DAYS * DAY_MS
        st.span = (earliest, now)
        if req.count is None:
            hi = min(now, _ms(req.end)) if req.end is not None else now
            if lo >= now:
                raise InvalidRequestError(
                    f"start={req.start.isoformat()} is not before the exchange's now "
                    f"({pd.Timestamp(now, unit='ms', tz='UTC').isoformat()}): no trades can exist there yet"
                )
            await self._load(st, lo, hi)
            missing = st.coverage.missing(lo, hi)
            if missing and missing[0][0] < earliest:
                raise InvalidRequestError(
                    f"trades exist only for the last {HISTORY_DAYS} UTC days: the earliest available time is "
                    f"{pd.Timestamp(earliest, unit='ms', tz='UTC').isoformat()}, start="
                    f"{req.start.isoformat()} is before it and the cache does not hold "
                    f"[{pd.Timestamp(missing[0][0], unit='ms', tz='UTC').isoformat()}, "
                    f"{pd.Timestamp(min(missing[0][1], earliest), unit='ms', tz='UTC').isoformat()})"
                )
            st.span = (lo, max(lo, hi))
            if missing and st.density(lo, hi) == 0:
                # The pace of today's newest trades says little about another hour of another day:
                # fetch the range's newest window first and size the rest by what it shows.
                a, b = missing[-1]
                first = plan_trade_windows(st.market, a, b, today, st.density(), self.options.trades_per_window)[0]
                await self._round(st, [first])
                missing = st.coverage.missing(lo, hi)
            density = st.density(lo, hi) or st.density()
            windows = [
                w for a, b in reversed(missing)
                for w in plan_trade_windows(st.market, a, b, today, density, self.options.trades_per_window)
            ]
            await self._round(st, windows)
            return
        hi = min(now, _ms(req.end)) if req.end is not None else now
        while True:
            reach = st.coverage.reach_down(hi)
            ts = st.timestamps()
            have = int(np.count_nonzero((ts >= reach) & (ts < hi)))
            if have >= req.count or reach <= earliest or st.failed:
                return
            density = st.density()
            need_ms = (req.count - have) / density * 1.25 if density > 0 else PROBE_WINDOW_MS
            lo = max(earliest, reach - max(MIN_WINDOW_MS, math.ceil(need_ms)))
            if self.store is not None and (st.loaded is None or lo < st.loaded[0]):
                await self._load(st, lo, hi)  # what the plan reaches for may be cached: look first
                continue
            windows = [
                w for a, b in reversed(st.coverage.missing(lo, reach))
                for w in plan_trade_windows(st.market, a, b, today, density, self.options.trades_per_window)
            ]
            await self._round(st, windows)

    # -- the cache -----------------------------------------------------------------------------------
    async def _load(self, st: _MarketState, lo: int, hi: int) -> None:
        """Bring cached trades and coverage of ``[lo, hi)`` (ms) into the state."""
        if self.store is not None and hi > lo:
            await self.load_cached(
                st, lo, hi, lambda a, b, store=self.store: store.load(st.market, a, b), st.ts,
                lambda f: f["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64) // 1_000_000,
            )

    async def _save(self, st: _MarketState, now: int) -> None:
        """Write what was proven since the last save (trades before ``now`` only)."""
        if self.store is None or not st.new_proven:
            return
        pages, proven = st.pages[st.saved_pages :], [(a, min(b, now)) for a, b in st.new_proven if a < min(b, now)]
        st.saved_pages, st.new_proven = len(st.pages), []
        await cache_call(self, self._write, self.store, st.market, pages, proven)

    def _write(
        self, store: TradeStore, market: str, pages: list[list[dict[str, Any]]], proven: list[tuple[int, int]]
    ) -> None:
        """Build the frame of ``pages`` and merge it into the store (runs in a worker thread)."""
        store.save(market, trades_to_frame([r for page in pages for r in page]), proven)

    async def _head(self, st: _MarketState) -> tuple[int, int]:
        """Today's newest page: it tells the exchange's "now" and day (``Date``) and the density.

        Returns ``(now, today)`` in ms. "Now" is a lower bound of the moment the exchange
        answered (its ``Date``, or the newest trade it returned): every trade before it that
        the page could hold is in it.
        """
        outcome = (await self.executor.run([_Head(st.market)]))[0]  # type: ignore[list-item]
        if outcome.error is not None:
            raise outcome.error
        date_ms = int(self.client.server_now_floor() * 1000)
        rows, _ = outcome.data
        ts = np.array([int(r["timestamp"]) for r in rows], dtype=np.int64)
        now = max(date_ms, int(ts.max()) + 1 if len(ts) else 0)
        today = date_ms // DAY_MS * DAY_MS  # the exchange's UTC day: what days_ago counts from
        self.today = today if self.today is None else self.today
        proven_lo = today if len(rows) < PAGE else int(ts.min())
        st.coverage.add(proven_lo, now)
        st.new_proven.append((proven_lo, now))
        st.take_unlooked(proven_lo, now)  # the head's answer is complete there: no need to read it back
        if rows:
            st.pages.append(rows)
            st.ts.append(ts)
        st.now = now
        await self._save(st, now - SETTLE_MS)
        return now, today

    async def _round(self, st: _MarketState, windows: list[TradeWindow]) -> None:
        """Fetch ``windows``; each answer joins the state as it lands, and whatever landed is
        written to the cache even when the round ends early (cancelled, Ctrl-C, a 418)."""
        st.rounds += 1
        try:
            await self.executor.run(windows, lambda outcome: self._absorb(st, outcome))
        finally:
            await despite_cancel(self._save(st, st.now - SETTLE_MS))
        # a window that failed in an earlier round but was proven since is no failure any more
        st.failed = [o for o in st.failed if st.coverage.missing(o.chunk.lo, o.chunk.hi)]

    def _absorb(self, st: _MarketState, outcome: Outcome[TradeWindow]) -> None:
        if outcome.error is not None:
            st.failed.append(outcome)
            return
        rows, proven_lo = outcome.data
        w = outcome.chunk
        st.coverage.add(proven_lo, w.hi)
        st.new_proven.append((proven_lo, w.hi))
        ts = np.array([int(r["timestamp"]) for r in rows], dtype=np.int64)
        inside = (ts >= proven_lo) & (ts < w.hi)
        if inside.any():
            st.pages.append([r for r, keep in zip(rows, inside) if keep])
            st.ts.append(ts[inside])

    def _assemble(self, states: list[_MarketState]) -> JobResult:
        req = self.req
        fetched = trades_to_frame([r for st in states for p in st.pages for r in p])
        cached = [f for st in states for f in st.cached if len(f)]
        frame = clean_trades(pd.concat([*cached, fetched], ignore_index=True) if cached else fetched)
        t = frame["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64) // 1_000_000
        keep, _ = span_mask(frame["market"], t, {st.market: st.span for st in states}, req.count)
        frame = frame.loc[keep].reset_index(drop=True)
        if len(states) == 1:
            frame = frame.drop(columns="market").set_index("time")
        else:
            frame = frame.set_index(["market", "time"])
        failures = [failure(o.chunk.market, o.chunk.describe(), o.error) for st in states for o in st.failed]  # type: ignore[arg-type]
        size = (req.count or 0) * len(states) if req.count is not None else len(frame)
        return JobResult(
            frame=frame,
            requested_size=size,
            failures=failures,
            rounds=max((st.rounds for st in states), default=0),
            meta={
                "markets": [st.market for st in states],
                "cache": {
                    "enabled": self.store is not None,
                    "rows_from_cache": sum(st.cache_rows for st in states),
                    "dir": str(self.store.root) if self.store is not None else None,
                    "error": self.cache_error,
                },
            },
        )


@dataclass(frozen=True)
class _Head:
    """Today's newest page (no ``to``, no ``days_ago``)."""

    market: str


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)
