"""The candle job: candles on the history skeleton (``_history.py``), keyed by slot ordinal.

Every market runs its own small loop; all of them share one executor (one concurrency bound)
and one client (one limiter per rate-limit group), so a multi-market request is planned and
fetched together under one limit.

The still-forming candle: "now" is the exchange's clock (its ``Date`` header). A candle whose
interval has not ended by then is *forming*; it is excluded unless ``include_forming=True``, in
which case it is the last row and ``attrs["mdcoord"]["forming_candle"]`` names its time.
One-second candles are kept by Upbit for about three months *of the exchange's time*: nothing
older is planned (the floor follows the exchange's clock, never this machine's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._config import resolve_cache_dir
from ._coverage import Coverage
from ._exceptions import ResponseFormatError
from ._frames import CandlePage, candle_pages_to_frame, clean_candles, gap_table, index_candles, span_mask
from ._groups import Group
from ._history import HistoryJob, MarketState
from ._job import JobResult
from ._planner import HISTORY_FLOOR, PAGE_MAX, CandleChunk, CandleCursors, proven_by
from ._store import CandleStore, source_name
from ._timeframe import Timeframe

__all__ = ["CandleJob", "SECONDS_HISTORY"]

_REQUIRED_FIELDS = ("market", "candle_date_time_utc", "opening_price", "trade_price", "timestamp")
# Seconds after its end (on the exchange's clock) before a candle is written to the cache.
SETTLE_S = 2.0
# How far back Upbit serves one-second candles (about three months; a little more is asked for,
# an empty answer there costs one request and proves the rest).
SECONDS_HISTORY = pd.Timedelta(days=100)

State = MarketState[CandleChunk, CandlePage]


@dataclass
class _Assembled:
    frame: pd.DataFrame
    spans: dict[str, tuple[pd.Timestamp, pd.Timestamp]]
    forming: pd.Timestamp | None


class CandleJob(HistoryJob[CandleChunk, CandlePage]):
    """One candles request, run on the runtime loop."""

    group = Group.CANDLES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert self.req.timeframe is not None
        self.tf: Timeframe = self.req.timeframe
        self.store = (
            CandleStore(resolve_cache_dir(self.options), source_name(self.client.base_url)) if self.options.cache else None
        )
        self._forming: list[CandlePage] = []
        self._cursors: dict[str, CandleCursors] = {}

    def cursors(self, st: State) -> CandleCursors:
        """The market's backward cursors (``_planner.py``): what to ask next follows the data."""
        if st.market not in self._cursors:
            self._cursors[st.market] = CandleCursors(st.market, self.tf)
        return self._cursors[st.market]

    # -- fetching one piece -------------------------------------------------------------------------
    async def fetch(self, chunk: CandleChunk) -> CandlePage:
        """GET one piece: candle rows of the right market, kept as columns. An answer of the
        wrong shape is a :class:`ResponseFormatError`, retried like a garbled body."""
        params: dict[str, Any] = chunk.params() if chunk.to is not None else {"market": chunk.market, "count": chunk.count}
        return await self.client.get_json(
            self.tf.path, params, options=self.options, stats=self.stats, parse=lambda d: self._parse(chunk, d)
        )

    def _parse(self, chunk: CandleChunk, data: Any) -> CandlePage:
        if not isinstance(data, list):
            raise ResponseFormatError(f"expected a JSON array of candles, got {type(data).__name__}")
        if data and (not isinstance(data[0], dict) or any(k not in data[0] for k in _REQUIRED_FIELDS)):
            raise ResponseFormatError(f"candle rows lack required fields {_REQUIRED_FIELDS}")
        page = CandlePage.from_rows(data, self.tf)
        others = sorted({str(m) for m in set(page.market.tolist()) if str(m).upper() != chunk.market})
        if others:
            raise ResponseFormatError(f"asked for {chunk.market}, got rows of {', '.join(others)}")
        page.market = np.full(len(page), chunk.market, dtype=object)  # one spelling: the one asked for
        return page

    # -- keys, floor, now ------------------------------------------------------------------------------
    def key_at(self, ts: pd.Timestamp) -> int:
        return self.tf.first_slot_at_or_after(ts)

    def static_floor(self) -> int:
        # the slot containing the floor: a 2017 yearly candle starts on 2017-01-01
        return self.tf.slot_of(HISTORY_FLOOR)

    def _floor_at(self, now: pd.Timestamp | None) -> int:
        floor = self.static_floor()
        if self.tf is Timeframe.S1 and now is not None:  # proofs stop where the exchange's 1s history does
            floor = max(floor, self.tf.slot_of(now - SECONDS_HISTORY))
        return floor

    async def head(self, st: State) -> None:
        """The forming slot ("now" on the exchange's clock), asking the exchange when needed.

        No question is needed when the range ends at or before the last ``Date`` the exchange
        sent, or when no slot boundary can have passed since that ``Date`` (then the cache may
        answer alone). Otherwise the newest page is fetched without ``to`` (the "head"): its rows
        are used like any piece's and its ``Date`` tells the current slot. An exchange that
        sends no ``Date`` is timed by the newest candle it returns (which then counts as forming,
        and nothing after its start is cached).
        """
        req, tf, clock = self.req, self.tf, self.client.server_clock
        floor = clock.floor()
        if floor is not None and not req.include_forming:
            floor_ts = pd.Timestamp(floor, unit="s", tz="UTC")
            ceiling = clock.ceiling()
            assert ceiling is not None
            ended = req.end is not None and req.end.timestamp() <= floor
            if ended or tf.slot_of(pd.Timestamp(ceiling, unit="s", tz="UTC")) == tf.slot_of(floor_ts):
                # Every slot before the one holding the last Date is closed (a range's mid-slot
                # end is cut off at that slot by the caller).
                st.now, st.floor = tf.slot_of(floor_ts), self._floor_at(floor_ts)
                return
        wanted = PAGE_MAX if req.count is None else min(PAGE_MAX, req.count + 1)
        self.cursors(st).spent += 1  # the head is one of the requests the planner's width allows
        page: CandlePage = await self.fetch_head(CandleChunk(st.market, tf, None, wanted, 0))  # type: ignore[arg-type]
        ords = tf.ordinal(page.time)
        floor = clock.floor()
        if floor is not None:
            now: pd.Timestamp | None = pd.Timestamp(floor, unit="s", tz="UTC")
            st.floor = self._floor_at(now)
            st.now = tf.slot_of(now)
        else:  # no Date header: the newest candle may still be forming, so it counts as forming
            st.now = int(ords.max()) if len(page) else None
            st.floor = self._floor_at(tf.slot_start(st.now) if st.now is not None else None)
            st.now = st.floor if st.now is None else st.now
        closed = ords < st.now
        if req.include_forming and not closed.all():
            self._forming.append(page.take(~closed))
        lo = st.floor if len(page) < wanted else int(ords.min())
        st.prove(lo, st.now, page.take(closed), ords[closed])
        await self.head_proved(st, lo, st.now)

    # -- planning and proving -------------------------------------------------------------------------
    def plan_range(self, st: State, lo: int, hi: int) -> list[CandleChunk]:
        return self.cursors(st).plan_range(lo, hi, st.plannable())

    def plan_count(self, st: State, end: int) -> list[CandleChunk]:
        assert self.req.count is not None
        reach = st.coverage.reach_down(end)
        return self.cursors(st).plan_count(end, self.req.count, st.have(reach, end), st.coverage, st.floor)

    def absorb(self, st: State, chunk: CandleChunk, data: CandlePage) -> None:
        ords = self.tf.ordinal(data.time)
        st.prove(*proven_by(chunk, ords, st.floor), data, ords)

    def follow(self, st: State, chunk: CandleChunk, data: CandlePage) -> list[CandleChunk]:
        cursors = self.cursors(st)
        have = None
        if cursors.count_cursor:
            end = cursors.end
            have = st.have(st.coverage.reach_down(end), end)
        coverage = st.coverage if self.req.count is not None else st.plannable()
        nxt = cursors.follow(chunk, self.tf.ordinal(data.time), coverage, have)
        if self.req.count is None:  # a range: nothing below its start
            nxt = [c for c in nxt if c.to > st.span[0]]
        return nxt

    def unproven_chunk(self, st: State, lo: int, hi: int) -> CandleChunk:
        return CandleChunk(st.market, self.tf, hi, hi - lo, lo)

    # -- the cache -----------------------------------------------------------------------------------
    def settled(self, st: State) -> int | None:
        # Only *settled* candles become permanent: a candle that ended less than SETTLE_S before
        # the exchange's Date may still receive late ticks (its `timestamp` can pass its end).
        limit = st.now
        floor = self.client.server_clock.floor()
        if floor is not None:
            settled = self.tf.slot_of(pd.Timestamp(floor - SETTLE_S, unit="s", tz="UTC"))
            limit = settled if limit is None else min(limit, settled)
        return limit

    def load(self, market: str, lo: int, hi: int) -> tuple[pd.DataFrame | None, Coverage]:
        assert self.store is not None
        return self.store.load(market, self.tf, lo, hi)

    def frame_keys(self, frame: pd.DataFrame) -> np.ndarray:
        return self.tf.ordinal(frame["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64))

    def write(self, market: str, pages: list[CandlePage], proven: list[tuple[int, int]], limit: int | None) -> None:
        assert self.store is not None
        frame = candle_pages_to_frame(pages, self.tf)
        if limit is not None:
            frame = frame.loc[self.frame_keys(frame) < limit]
        self.store.save(market, self.tf, frame, proven)

    # -- aggregation ------------------------------------------------------------------------------------
    def assemble(self, states: list[State]) -> JobResult:
        """The frame, gap report and metadata (in a worker thread)."""
        out = self._frame(states)
        failed_windows: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
        for st in states:
            for o in st.failed:
                failed_windows.setdefault(st.market, []).append(o.chunk.window())
        gaps = gap_table(out.frame, self.tf, out.spans, failed_windows)
        req = self.req
        size = req.count * len(states) if req.count is not None else sum(max(0, b - a) for a, b in (s.span for s in states))
        return JobResult(
            frame=index_candles(out.frame, req.symbols),
            requested_size=size,
            failures=self.failures(states),
            rounds=max((st.rounds for st in states), default=0),
            meta={
                "gaps_found": len(gaps),
                "missing_candles": int(gaps["missing"].sum()),
                "not_fetched": int(gaps.loc[gaps["reason"] == "not_fetched", "missing"].sum()),
                "spans": {m: [a.isoformat(), b.isoformat()] for m, (a, b) in out.spans.items()},
                "forming_candle": out.forming.isoformat() if out.forming is not None else None,
                "timeframe": self.tf.value,
                "cache": self.cache_meta(states),
            },
        )

    def _frame(self, states: list[State]) -> _Assembled:
        tf, req = self.tf, self.req
        fetched = candle_pages_to_frame([page for st in states for page in st.pages], tf)
        cached = [f for st in states for f in st.cached if len(f)]
        # fetched rows go last so that, for a slot held twice, the fresher copy wins
        parts = [*cached, fetched] if len(fetched) else cached
        frame = clean_candles(pd.concat(parts, ignore_index=True) if len(parts) > 1 else (parts[0] if parts else fetched))
        keep, first = span_mask(frame["market"], self.frame_keys(frame), {st.market: st.span for st in states}, req.count)
        spans: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {}
        for st in states:
            # a count's span starts at its oldest candle; a range's at the asked start
            lo = first[st.market] if req.count is not None else st.span[0]
            spans[st.market] = (tf.slot_start(lo), tf.slot_start(max(lo, st.span[1])))
        frame = frame.loc[keep].reset_index(drop=True)
        forming_ts = None
        if self._forming:
            forming = candle_pages_to_frame(self._forming, tf)
            forming_ts = forming["time"].max()
            frame = clean_candles(pd.concat([frame, forming], ignore_index=True))
        return _Assembled(frame, spans, forming_ts)

