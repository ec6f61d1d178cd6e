"""The trades job: trades on the history skeleton (``_history.py``), keyed by epoch ms.

``/trades/ticks`` addresses one UTC day at a time (``days_ago`` 1-7, omitted = today), a time of
day ``to`` (trades before it) and a ``cursor`` (the trades just before a given trade), at most 500
a page, newest first. The planner (``_planner.py``) cuts the wanted time into **windows** that
never cross a UTC day; windows are fetched concurrently, and each window continues by ``cursor``
until its page reaches a trade older than the window's start (or a short page shows the day is
exhausted) — then the window provably holds every trade in it.

- ``count=N``: the N most recent trades — exactly N, fewer only if the 7 days hold fewer. The
  head (today's newest page) tells the exchange's "now", its day and the density; rounds plan
  windows back in time until N trades are proven.
- ``start``/``end``: every trade with ``start <= time < end``. A range reaching before the first
  available day (the exchange's UTC midnight minus 7 days) and not held by the cache is an
  :class:`InvalidRequestError` naming the earliest time available; ``end`` beyond now is
  clipped to now.

``days_ago`` counts from the exchange's current UTC day. If that day changes during a call (a
call running across 00:00 UTC), the same ``days_ago`` names another day: a window whose answer
shows it is failed with :class:`DayChangedError` and planned again against the new day.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._config import resolve_cache_dir
from ._coverage import Coverage
from ._exceptions import DayChangedError, InvalidRequestError, ResponseFormatError
from ._executor import Outcome
from ._frames import TradePage, clean_trades, span_mask, trade_pages_to_frame
from ._groups import Group
from ._history import HistoryJob, MarketState
from ._job import JobResult
from ._planner import DAY_MS, TRADE_PAGE, TradeWindow, plan_trade_count_round, plan_trade_range_round
from ._store import TradeStore, source_name

__all__ = ["HISTORY_DAYS", "TradeJob"]

HISTORY_DAYS = 7
# Trades this close to the exchange's "now" are returned but not cached as complete: they may
# still be arriving at the API.
SETTLE_MS = 2_000
_REQUIRED = ("market", "timestamp", "trade_price", "trade_volume", "sequential_id")
_PATH = "/trades/ticks"

State = MarketState[TradeWindow, TradePage]


class _Head(TradeWindow):
    """Today's newest page (no ``to``, no ``days_ago``)."""


class TradeJob(HistoryJob[TradeWindow, TradePage]):
    """One trades request, run on the runtime loop."""

    group = Group.TRADES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.today: int | None = None  # the exchange's UTC day (ms) that days_ago counts from
        #: per market, stretches older than the exchange's 7 days that a recording does not hold
        self.unrecorded: dict[str, list[tuple[int, int]]] = {}
        self.store = (
            TradeStore(resolve_cache_dir(self.options), source_name(self.client.base_url)) if self.options.cache else None
        )

    # -- fetching one window -----------------------------------------------------------------------
    async def _page(self, params: dict[str, Any]) -> TradePage:
        return await self.client.get_json(_PATH, params, options=self.options, stats=self.stats, parse=_parse)

    async def fetch(self, window: TradeWindow) -> tuple[TradePage, int]:
        """Every trade of ``window``, paging by cursor; returns the trades and the proven low end."""
        if isinstance(window, _Head):
            return await self._page({"market": window.market, "count": TRADE_PAGE}), 0
        params = window.first_params()
        pages: list[TradePage] = []
        while True:
            page = await self._page(params)
            self._check_day(window, page)
            pages.append(page)
            if len(page) < TRADE_PAGE:  # the day is exhausted: nothing older in it
                return TradePage.concat(pages), window.day_start
            if int(page.time.min()) < window.lo:
                return TradePage.concat(pages), window.lo
            params = {k: v for k, v in params.items() if k != "to"}
            params["cursor"] = int(page.sequential_id[-1])

    def _day_now(self) -> int | None:
        floor = self.client.server_clock.floor()
        return int(floor * 1000) // DAY_MS * DAY_MS if floor is not None else None

    def _check_day(self, window: TradeWindow, page: TradePage) -> None:
        """A page of another day than the window's (``days_ago`` shifted under us: the
        exchange's day changed since the plan) proves nothing about the window: fail it, to be
        planned again against the new day (nothing about it is cached meanwhile)."""
        day_now = self._day_now()
        stray = bool(np.any((page.time < window.day_start) | (page.time >= window.day_start + DAY_MS)))
        if stray or (day_now is not None and self.today is not None and day_now != self.today):
            raise DayChangedError(
                f"the exchange's UTC day changed during the call (days_ago={window.days_ago} no longer names "
                f"{pd.Timestamp(window.day_start, unit='ms', tz='UTC').date()})",
                url=self.client.base_url + _PATH, params=window.first_params(), group=Group.TRADES.value,
            )

    # -- keys, floor, now ----------------------------------------------------------------------------
    def key_at(self, ts: pd.Timestamp) -> int:
        return int(ts.value // 1_000_000)

    def static_floor(self) -> int:
        return -(2**62)  # before the exchange's day is known, the cache may hold anything

    async def head(self, st: State) -> None:
        """Today's newest page: it tells the exchange's "now" and day (``Date``) and the pace.

        "Now" is a lower bound of the moment the exchange answered (its ``Date``, or the newest
        trade it returned): every trade before it that the page could hold is in it.
        """
        page: TradePage = (await self.fetch_head(_Head(st.market, 0, 0, 0, 0)))[0]
        floor = self.client.server_clock.floor()
        newest = int(page.time.max()) + 1 if len(page) else None
        if floor is None and newest is None:
            raise ResponseFormatError(
                "the exchange sent no Date header and no trade today: its current UTC day, which days_ago "
                "counts from, cannot be told", url=self.client.base_url + _PATH, group=Group.TRADES.value,
            )
        date_ms = int(floor * 1000) if floor is not None else newest
        assert date_ms is not None
        now = max(date_ms, newest or 0)
        today = date_ms // DAY_MS * DAY_MS
        self.today = today if self.today is None else self.today
        st.now, st.floor = now, self.today - HISTORY_DAYS * DAY_MS
        proven_lo = today if len(page) < TRADE_PAGE else int(page.time.min())
        st.prove(proven_lo, now, page, page.time)
        await self.head_proved(st, proven_lo, now)

    def range_start(self, st: State, lo: int) -> int:
        return lo  # the cache may hold trades older than the exchange serves: check_range decides

    def check_range(self, st: State, lo: int, hi: int) -> None:
        """Older than the exchange's 7 days only the cache can answer. Where it holds some of that
        part (a recording: ``mdcoord.record``), the call is answered and the stretches it does
        not hold are reported (``unrecorded`` in the metadata), never fetched or hidden; where it
        holds none of it, the start is an error that names the earliest time available."""
        missing = st.coverage.missing(lo, hi)
        old = [(a, min(b, st.floor)) for a, b in missing if a < st.floor]
        if old and st.coverage.missing(lo, st.floor) != [(lo, st.floor)]:
            for a, b in old:
                st.given_up.add(a, b)
            self.unrecorded[st.market] = old
            return
        if missing and missing[0][0] < st.floor:
            assert self.req.start is not None
            iso = lambda ms: pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()  # noqa: E731
            raise InvalidRequestError(
                f"trades exist only for the last {HISTORY_DAYS} UTC days: the earliest available time is "
                f"{iso(st.floor)}, start={self.req.start.isoformat()} is before it and the cache does not hold "
                f"[{iso(missing[0][0])}, {iso(min(missing[0][1], st.floor))})"
            )

    # -- planning and proving -------------------------------------------------------------------------
    def plan_range(self, st: State, lo: int, hi: int) -> list[TradeWindow]:
        assert self.today is not None
        own = st.density(lo, hi)
        return plan_trade_range_round(
            st.market, max(lo, st.floor), hi, st.plannable(), self.today, own or st.density(),
            self.options.trades_per_window, probe=own == 0 and st.rounds == 0,
        )

    def plan_count(self, st: State, end: int) -> list[TradeWindow]:
        assert self.req.count is not None and self.today is not None
        reach = st.coverage.reach_down(end)
        known = st.known_keys()
        mine = known[(known >= reach) & (known < end)]
        return plan_trade_count_round(
            st.market, end, self.req.count, len(mine), st.coverage, st.floor, self.today, st.density(),
            self.options.trades_per_window, int(mine[0]) if len(mine) else None,
        )

    def absorb(self, st: State, chunk: TradeWindow, data: tuple[TradePage, int]) -> None:
        page, proven_lo = data
        inside = (page.time >= proven_lo) & (page.time < chunk.hi)
        st.prove(proven_lo, chunk.hi, page.take(inside), page.time[inside])

    def replannable(self, st: State, outcome: Outcome[TradeWindow]) -> bool:
        """A window failed because the exchange's day changed: plan it again from the new day."""
        day_now = self._day_now()
        if not isinstance(outcome.error, DayChangedError) or day_now is None:
            return False
        if self.today is None or day_now > self.today:
            self.today = day_now
        st.floor = max(st.floor, self.today - HISTORY_DAYS * DAY_MS)  # the oldest day is gone now
        return True

    def unproven_chunk(self, st: State, lo: int, hi: int) -> TradeWindow:
        return TradeWindow(st.market, lo // DAY_MS * DAY_MS, lo, hi, 0)

    # -- the cache -----------------------------------------------------------------------------------
    def settled(self, st: State) -> int | None:
        return None if st.now is None else st.now - SETTLE_MS

    def load(self, market: str, lo: int, hi: int) -> tuple[pd.DataFrame | None, Coverage]:
        assert self.store is not None
        return self.store.load(market, lo, hi)

    def frame_keys(self, frame: pd.DataFrame) -> np.ndarray:
        return frame["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64) // 1_000_000

    def write(self, market: str, pages: list[TradePage], proven: list[tuple[int, int]], limit: int | None) -> None:
        assert self.store is not None
        frame = trade_pages_to_frame(pages)
        if limit is not None:
            frame = frame.loc[self.frame_keys(frame) < limit]
        self.store.save(market, frame, proven)

    # -- aggregation ------------------------------------------------------------------------------------
    def assemble(self, states: list[State]) -> JobResult:
        req = self.req
        fetched = trade_pages_to_frame([p for st in states for p in st.pages])
        cached = [f for st in states for f in st.cached if len(f)]
        frame = clean_trades(pd.concat([*cached, fetched], ignore_index=True) if cached else fetched)
        keep, _ = span_mask(frame["market"], self.frame_keys(frame), {st.market: st.span for st in states}, req.count)
        frame = frame.loc[keep].reset_index(drop=True)
        if len(states) == 1:
            frame = frame.drop(columns="market").set_index("time")
        else:
            frame = frame.set_index(["market", "time"])
        size = (req.count or 0) * len(states) if req.count is not None else len(frame)
        return JobResult(
            frame=frame,
            requested_size=size,
            failures=self.failures(states),
            rounds=max((st.rounds for st in states), default=0),
            meta={"markets": [st.market for st in states], "cache": self.cache_meta(states),
                  "unrecorded": [{"market": m, "start": _iso(a), "end": _iso(b)}
                                 for m, spans in self.unrecorded.items() for a, b in spans]},
        )


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


def _parse(data: Any) -> TradePage:
    """A trades answer as columns; a wrong shape is retried like a garbled body."""
    if not isinstance(data, list) or any(not isinstance(r, dict) or any(k not in r for k in _REQUIRED) for r in data[:1]):
        raise ResponseFormatError(f"expected a JSON array of trades with {_REQUIRED}")
    return TradePage.from_rows(data)
