"""The candle job: plan → fetch → prove coverage → (follow up) → aggregate, per market.

Every market runs its own small loop; all of them share one :class:`~mdcoord._executor.Executor`
(one concurrency bound) and one client (one limiter per rate-limit group), so a multi-market
request is planned and fetched together under one limit.

The still-forming candle: "now" is the exchange's clock (its ``Date`` header). A candle whose
interval has not ended by then is *forming*; it is excluded unless ``include_forming=True``, in
which case it is the last row and ``attrs["mdcoord"]["forming_candle"]`` names its time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._client import CallStats, Client
from ._config import Options, resolve_cache_dir
from ._exceptions import ResponseFormatError
from ._executor import Outcome, gather_or_cancel
from ._frames import CandlePage, candle_pages_to_frame, clean_candles, gap_table, index_candles, sorted_unique, span_mask
from ._job import CacheState, Job, JobResult, cache_call, despite_cancel, failure
from ._progress import Progress
from ._planner import HISTORY_FLOOR, PAGE_MAX, CandleChunk, plan_count_round, plan_range, proven_by
from ._request import CoordinatorRequest
from ._store import CandleStore, source_name
from ._timeframe import Timeframe

__all__ = ["CandleJob", "CandleResult"]

_REQUIRED_FIELDS = ("market", "candle_date_time_utc", "opening_price", "trade_price", "timestamp")
# Safety net on follow-up rounds; each round proves at least one new page, so this is never
# reached by a well-behaved server.
_MAX_ROUNDS = 10_000
# Seconds after its end (on the exchange's clock) before a candle is written to the cache.
SETTLE_S = 2.0


@dataclass
class _MarketState(CacheState):
    market: str
    rows: list[CandlePage] = field(default_factory=list)  # the pages fetched, as columns
    ordinals: list[np.ndarray] = field(default_factory=list)
    failed: list[Outcome[CandleChunk]] = field(default_factory=list)
    forming: list[CandlePage] = field(default_factory=list)
    span: tuple[int, int] = (0, 0)
    rounds: int = 0
    now_slot: int | None = None

    def known_ordinals(self) -> np.ndarray:
        return sorted_unique(np.concatenate(self.ordinals)) if self.ordinals else np.empty(0, np.int64)


@dataclass
class CandleResult:
    """The flat, cleaned frame plus what the coordinator needs for metadata."""

    frame: pd.DataFrame
    spans: dict[str, tuple[pd.Timestamp, pd.Timestamp]]
    failures: list[Outcome[CandleChunk]]
    forming: pd.Timestamp | None
    rounds: int
    requested_size: int
    cache_rows: int = 0


def _ordinals_of(page: CandlePage, tf: Timeframe) -> np.ndarray:
    return tf.ordinal(page.time)


class CandleJob(Job[CandleChunk]):
    """One candles request, run on the runtime loop."""

    group = "candles"

    def __init__(
        self, request: CoordinatorRequest, client: Client, options: Options, stats: CallStats, progress: Progress
    ) -> None:
        super().__init__(request, client, options, stats, progress)
        assert request.timeframe is not None
        self.tf: Timeframe = request.timeframe
        # the slot containing the floor: a 2017 yearly candle starts on 2017-01-01
        self.floor = self.tf.slot_of(HISTORY_FLOOR)
        if self.tf is Timeframe.S1:  # Upbit keeps ~3 months of 1s candles; proofs stop there
            self.floor = max(self.floor, self.tf.slot_of(pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=100)))
        self.store = CandleStore(resolve_cache_dir(options), source_name(client.base_url)) if options.cache else None

    # -- fetching one piece -------------------------------------------------------------------------
    async def fetch(self, chunk: CandleChunk) -> CandlePage:
        """GET one piece: candle rows of the right market, kept as columns. An answer of the
        wrong shape is a :class:`ResponseFormatError`, retried like a garbled body."""
        params: dict[str, Any] = chunk.params() if chunk.to is not None else {"market": chunk.market, "count": chunk.count}
        ctx = {"url": self.client.base_url + self.tf.path, "params": params, "group": "candles"}

        def parse(data: Any) -> CandlePage:
            if not isinstance(data, list):
                raise ResponseFormatError(f"expected a JSON array of candles, got {type(data).__name__}", **ctx)
            if data:
                first = data[0]
                if not isinstance(first, dict) or any(k not in first for k in _REQUIRED_FIELDS):
                    raise ResponseFormatError(f"candle rows lack required fields {_REQUIRED_FIELDS}", **ctx)
            try:
                page = CandlePage.from_rows(data, self.tf)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ResponseFormatError(f"a candle row is malformed ({type(exc).__name__}: {exc})", **ctx) from None
            others = sorted({str(m) for m in set(page.market.tolist()) if str(m).upper() != chunk.market})
            if others:
                raise ResponseFormatError(f"asked for {chunk.market}, got rows of {', '.join(others)}", **ctx)
            page.market = np.full(len(page), chunk.market, dtype=object)  # one spelling: the one asked for
            return page

        return await self.client.get_json(self.tf.path, params, options=self.options, stats=self.stats, parse=parse)

    # -- the job --------------------------------------------------------------------------------------
    async def run(self) -> JobResult:
        states = [_MarketState(m) for m in self.req.symbols]
        await gather_or_cancel([self._run_market(s) for s in states])
        # aggregation in a worker thread: a big frame must not stall the loop (and the limiter's
        # timing) for the other calls running on it
        return await asyncio.to_thread(lambda: self._finish(self._assemble(states)))

    def _finish(self, result: CandleResult) -> JobResult:
        """Gap report, metadata and the output index."""
        failed_windows: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
        failures = []
        for o in result.failures:
            a, b = o.chunk.window()
            failed_windows.setdefault(o.chunk.market, []).append((a, b))
            failures.append(failure(o.chunk.market, f"[{a.isoformat()}, {b.isoformat()})", o.error))  # type: ignore[arg-type]
        gaps = gap_table(result.frame, self.tf, result.spans, failed_windows)
        meta = {
            "gaps_found": len(gaps),
            "missing_candles": int(gaps["missing"].sum()),
            "not_fetched": int(gaps.loc[gaps["reason"] == "not_fetched", "missing"].sum()),
            "spans": {m: [a.isoformat(), b.isoformat()] for m, (a, b) in result.spans.items()},
            "forming_candle": result.forming.isoformat() if result.forming is not None else None,
            "timeframe": self.tf.value,
            "cache": {
                "enabled": self.store is not None,
                "rows_from_cache": result.cache_rows,
                "dir": str(self.store.root) if self.store is not None else None,
                "error": self.cache_error,
            },
        }
        return JobResult(
            frame=index_candles(result.frame, self.req.symbols),
            requested_size=result.requested_size,
            failures=failures,
            rounds=result.rounds,
            meta=meta,
        )

    async def _run_market(self, st: _MarketState) -> None:
        req, tf = self.req, self.tf
        if req.count is None:  # a range: one round proves it all
            assert req.start is not None
            lo = max(self.floor, tf.first_slot_at_or_after(req.start))
            if req.end is not None and self.store is not None:
                hi = tf.first_slot_at_or_after(req.end)
                await self._load(st, lo, hi)
                if not st.coverage.missing(lo, hi):  # wholly cached: closed candles, no question
                    st.span = (lo, max(lo, hi))
                    return
            now_slot = await self._now_slot(st)
            hi = now_slot if req.end is None else min(now_slot, tf.first_slot_at_or_after(req.end))
            st.span = (lo, max(lo, hi))
            await self._load(st, lo, hi)
            await self._round(st, plan_range(st.market, tf, lo, hi, st.coverage))
            return
        now_slot = await self._now_slot(st)
        end = now_slot if req.end is None else min(now_slot, tf.first_slot_at_or_after(req.end))
        st.span = (self.floor, end)
        for _ in range(_MAX_ROUNDS):
            chunks = self._plan_count(st, end)
            while chunks and self.store is not None and (st.loaded is None or min(c.lo for c in chunks) < st.loaded[0]):
                # what the plan reaches for may be cached: look there first, then plan again
                await self._load(st, min(c.lo for c in chunks), end)
                chunks = self._plan_count(st, end)
            if not chunks:
                return
            await self._round(st, chunks)
            if st.failed:  # a hole we could not fill: stop here and report it
                return

    def _plan_count(self, st: _MarketState, end: int) -> list[CandleChunk]:
        assert self.req.count is not None
        known = st.known_ordinals()
        reach = st.coverage.reach_down(end)
        have = int(np.count_nonzero((known >= reach) & (known < end)))
        return plan_count_round(st.market, self.tf, end, self.req.count, have, st.coverage, self.floor)

    # -- the cache -----------------------------------------------------------------------------------
    async def _load(self, st: _MarketState, lo: int, hi: int) -> None:
        """Bring cached candles and coverage of ``[lo, hi)`` (slots) into the state."""
        if self.store is not None:
            tf = self.tf
            await self.load_cached(
                st, lo, hi, lambda a, b, store=self.store: store.load(st.market, tf, a, b), st.ordinals,
                lambda f: tf.ordinal(f["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64)),
            )

    async def _save(self, st: _MarketState) -> None:
        """Write what this round proved (closed candles only) to the cache."""
        if self.store is None or not st.new_proven:
            return
        pages, proven = st.rows[st.saved_pages :], st.new_proven
        st.saved_pages, st.new_proven = len(st.rows), []
        # Only *settled* candles become permanent: a candle that ended less than SETTLE_S before
        # the exchange's Date may still receive late ticks (its `timestamp` can pass its end).
        limit = st.now_slot
        if self.client.server_time_floor is not None:
            settled = self.tf.slot_of(pd.Timestamp(self.client.server_time_floor - SETTLE_S, unit="s", tz="UTC"))
            limit = settled if limit is None else min(limit, settled)
        await cache_call(self, self._write, self.store, st.market, pages, proven, limit)

    def _write(
        self, store: CandleStore, market: str, pages: list[CandlePage], proven: list[tuple[int, int]],
        limit: int | None,
    ) -> None:
        """Build the frame of ``pages`` and merge it into the store (runs in a worker thread)."""
        frame = candle_pages_to_frame(pages, self.tf)
        if limit is not None:
            ords = self.tf.ordinal(frame["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64))
            frame = frame.loc[ords < limit]
            proven = [(a, min(b, limit)) for a, b in proven if a < min(b, limit)]
        store.save(market, self.tf, frame, proven)

    async def _now_slot(self, st: _MarketState) -> int:
        """The forming slot ("now" on the exchange's clock), asking the exchange when needed.

        No question is needed when the range ends at or before the last ``Date`` the exchange
        sent, or when no slot boundary can have passed since that ``Date`` (then the cache may
        answer alone). Otherwise the newest page is fetched without ``to`` (the "head"): its rows
        are used like any piece's and its ``Date`` tells the current slot.
        """
        req, tf = self.req, self.tf
        floor = self.client.server_time_floor
        if floor is not None and not req.include_forming:
            floor_slot = tf.slot_of(pd.Timestamp(floor, unit="s", tz="UTC"))
            if req.end is not None and req.end.timestamp() <= floor:
                # Every slot before the one holding the last Date is closed; the slot that holds
                # `end` may not be (a mid-slot end), so it is cut off there.
                st.now_slot = floor_slot
                return min(tf.first_slot_at_or_after(req.end), floor_slot)
            latest = self.client.server_now_ceiling()
            if latest is not None and tf.slot_of(pd.Timestamp(latest, unit="s", tz="UTC")) == tf.slot_of(
                pd.Timestamp(floor, unit="s", tz="UTC")
            ):
                st.now_slot = tf.slot_of(pd.Timestamp(floor, unit="s", tz="UTC"))
                return st.now_slot
        wanted = PAGE_MAX if req.count is None else min(PAGE_MAX, req.count + 1)
        head = CandleChunk(st.market, tf, None, wanted, 0)  # type: ignore[arg-type]
        outcome = (await self.executor.run([head]))[0]
        if outcome.error is not None:  # without the head there is no "now" to plan against
            raise outcome.error
        now = pd.Timestamp(self.client.server_now_floor(), unit="s", tz="UTC")
        now_slot = st.now_slot = tf.slot_of(now)
        page: CandlePage = outcome.data
        if len(page):
            ords = _ordinals_of(page, tf)
            closed = ords < now_slot
            if req.include_forming and not closed.all():
                st.forming = [page.take(~closed)]
            if closed.any():
                st.rows.append(page.take(closed))
                st.ordinals.append(ords[closed])
            lo = self.floor if len(page) < wanted else int(ords.min())
        else:
            lo = self.floor
        st.coverage.add(lo, now_slot)
        st.new_proven.append((lo, now_slot))
        st.take_unlooked(lo, now_slot)  # the head's answer is complete there: no need to read it back
        await self._save(st)
        return now_slot

    async def _round(self, st: _MarketState, chunks: list[CandleChunk]) -> None:
        """Fetch ``chunks``; each answer joins the state as it lands, and whatever landed is
        written to the cache even when the round ends early (cancelled, Ctrl-C, a 418)."""
        st.rounds += 1
        try:
            await self.executor.run(chunks, lambda outcome: self._absorb(st, outcome))
        finally:
            await despite_cancel(self._save(st))

    def _absorb(self, st: _MarketState, outcome: Outcome[CandleChunk]) -> None:
        if outcome.error is not None:
            st.failed.append(outcome)
            return
        page: CandlePage = outcome.data
        ords = _ordinals_of(page, self.tf)
        lo, hi = proven_by(outcome.chunk, ords, self.floor)
        st.coverage.add(lo, hi)
        st.new_proven.append((lo, hi))
        if len(page):
            st.rows.append(page)
            st.ordinals.append(ords)

    # -- aggregation ------------------------------------------------------------------------------------
    def _assemble(self, states: list[_MarketState]) -> CandleResult:
        tf, req = self.tf, self.req
        fetched = candle_pages_to_frame([page for st in states for page in st.rows], tf)
        cached = [f for st in states for f in st.cached if len(f)]
        # fetched rows go last so that, for a slot held twice, the fresher copy wins
        parts = [*cached, fetched] if len(fetched) else cached
        frame = clean_candles(pd.concat(parts, ignore_index=True) if len(parts) > 1 else (parts[0] if parts else fetched))
        ords = tf.ordinal(frame["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64))
        keep, first = span_mask(frame["market"], ords, {st.market: st.span for st in states}, req.count)
        spans: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {}
        for st in states:
            # a count's span starts at its oldest candle; a range's at the asked start
            lo = first[st.market] if req.count is not None else st.span[0]
            spans[st.market] = (tf.slot_start(lo), tf.slot_start(max(lo, st.span[1])))
        frame = frame.loc[keep].reset_index(drop=True)
        forming_ts = None
        forming_pages = [p for st in states for p in st.forming]
        if forming_pages:
            forming = candle_pages_to_frame(forming_pages, tf)
            forming_ts = forming["time"].max()
            frame = clean_candles(pd.concat([frame, forming], ignore_index=True))
        if req.count is not None:
            size = req.count * len(states)
        else:
            size = sum(max(0, st.span[1] - st.span[0]) for st in states)
        return CandleResult(
            frame=frame,
            spans=spans,
            failures=[o for st in states for o in st.failed],
            forming=forming_ts,
            rounds=max((st.rounds for st in states), default=0),
            requested_size=size,
            cache_rows=sum(st.cache_rows for st in states),
        )
