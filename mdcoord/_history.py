"""The skeleton every history job plugs into: candles and trades (and what comes next).

A history job answers "every row of ``[start, end)``" or "the ``count`` newest rows before
``end``" per market, along one integer **key** axis (candle slot ordinals, trade milliseconds).
The skeleton does, per market and concurrently for all markets of a call:

1. **cache** — load what the store holds for the range (rows plus *coverage*: the key ranges the
   exchange proved complete); a range the cache proves wholly is answered without a request;
2. **now** — learn the exchange's "now" (its ``Date`` header, or the newest data when it sends
   none), usually from the *head* (the newest page), whose rows count like any page's;
3. **rounds** — plan the uncovered keys (pure planner functions), fetch the pieces through the
   executor, and let each answer **prove** a key range and, at once, call for the pieces that go
   on from it (a cursor's next page: :meth:`HistoryJob.follow`); plan again until the range is
   proven or ``count`` rows are known. Whatever landed is saved to the cache after every round — settled
   data only — even when the round ends early (cancel, Ctrl-C, a 418);
4. **aggregate** — the data type's own frame, off the event loop.

What a data type supplies is small: how a time becomes a key, its floor (the oldest key the
exchange serves), its head, how to plan a round, what an answer proves, and its frame. The
rules that must hold for every data type live here once:

- a failure is never dropped: a piece that failed after its retries is reported, and a range
  that ends with keys neither proven nor failed reports them too;
- a range keeps going around a failed piece (the rest is fetched), a count stops at it (the N
  newest cannot be told across a hole);
- a failure the job can cure by planning again (the exchange's day changed under a trades call)
  is re-planned, a bounded number of times;
- a market code the exchange does not know raises the same :class:`MarketNotFoundError`, with
  suggestions from the market list, as every other data type.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd

from ._coverage import Coverage
from ._exceptions import InvalidRequestError, MarketNotFoundError, MdcoordError, ResponseFormatError
from ._executor import Outcome, gather_or_cancel
from ._frames import sorted_unique
from ._job import Job, JobResult, cache_call, despite_cancel, failure
from ._markets import catalog_of
from ._planner import lowest_key

__all__ = ["HistoryJob", "MarketState"]

C = TypeVar("C")  # a piece: CandleChunk, TradeWindow
P = TypeVar("P")  # a kept page: CandlePage, TradePage

# Safety net: each round proves at least one new piece, so this is never reached by a
# well-behaved server.
MAX_ROUNDS = 10_000
# How many rounds of one call may re-plan failures that planning again can cure.
MAX_REPLANS = 3


@dataclass
class MarketState(Generic[C, P]):
    """What a job knows of one market: proven keys, the rows fetched and cached, failures."""

    market: str
    coverage: Coverage = field(default_factory=Coverage)
    pages: list[P] = field(default_factory=list)  # fetched rows, as the data type keeps them
    keys: list[np.ndarray] = field(default_factory=list)  # keys of fetched and cached rows
    cached: list[pd.DataFrame] = field(default_factory=list)  # frames loaded from the store
    cache_rows: int = 0
    loaded: tuple[int, int] | None = None  # the key range already looked up in the store
    new_proven: list[tuple[int, int]] = field(default_factory=list)  # proven since the last save
    saved_pages: int = 0
    failed: list[Outcome[C]] = field(default_factory=list)
    given_up: Coverage = field(default_factory=Coverage)  # failed ranges a range plan skips
    span: tuple[int, int] = (0, 0)  # the keys the answer covers (what aggregation keeps)
    floor: int = -(2**62)  # the oldest key the exchange serves
    now: int | None = None  # the exchange's now, as a key: nothing at or after it is closed
    rounds: int = 0

    def known_keys(self) -> np.ndarray:
        return sorted_unique(np.concatenate(self.keys)) if self.keys else np.empty(0, np.int64)

    def have(self, lo: int, hi: int) -> int:
        """Rows known with ``lo <= key < hi``."""
        known = self.known_keys()
        return int(np.count_nonzero((known >= lo) & (known < hi)))

    def density(self, lo: int | None = None, hi: int | None = None) -> float:
        """Rows per key over what is proven so far, within ``[lo, hi)`` if given (0 if nothing is)."""
        lo = -(2**62) if lo is None else lo
        hi = 2**62 if hi is None else hi
        span = sum(max(0, min(b, hi) - max(a, lo)) for a, b in self.coverage)
        return self.have(lo, hi) / span if span > 0 else 0.0

    def take_unlooked(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of ``[lo, hi)`` not looked up yet; from now on they count as looked up."""
        if self.loaded is None:
            parts = [(lo, hi)]
            self.loaded = (lo, hi)
        else:
            parts = [(lo, min(hi, self.loaded[0])), (max(lo, self.loaded[1]), hi)]
            self.loaded = (min(lo, self.loaded[0]), max(hi, self.loaded[1]))
        return [(a, b) for a, b in parts if a < b]

    def plannable(self) -> Coverage:
        """What a range plan must not ask for again: the proven keys and the failed pieces."""
        cov = Coverage()
        for a, b in [*self.coverage, *self.given_up]:
            cov.add(a, b)
        return cov

    def prove(self, lo: int, hi: int, page: P | None = None, keys: np.ndarray | None = None) -> None:
        """An answer proved ``[lo, hi)`` complete and brought ``page`` (rows with ``keys``)."""
        self.coverage.add(lo, hi)
        self.new_proven.append((lo, hi))
        if page is not None and keys is not None and len(keys):
            self.pages.append(page)
            self.keys.append(keys)


class HistoryJob(Job[C], Generic[C, P]):
    """The skeleton (see the module docstring). Subclasses fill in the data type's hooks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._replans = 0
        self._replanned = False

    # -- the data type's hooks ------------------------------------------------------------------
    @abstractmethod
    def key_at(self, ts: pd.Timestamp) -> int:
        """The first key at or after ``ts`` (a range's inclusive start, or its exclusive end)."""

    @abstractmethod
    def static_floor(self) -> int:
        """The oldest key worth asking for before the exchange's now is known."""

    @abstractmethod
    async def head(self, st: MarketState[C, P]) -> None:
        """Set ``st.now`` and ``st.floor`` (the exchange's now and the oldest key it serves),
        fetching the newest page if needed; prove what that page shows (:meth:`MarketState.prove`)."""

    @abstractmethod
    def plan_range(self, st: MarketState[C, P], lo: int, hi: int) -> list[C]:
        """The next round's pieces for "every row of ``[lo, hi)``" ([] when nothing is left)."""

    @abstractmethod
    def plan_count(self, st: MarketState[C, P], end: int) -> list[C]:
        """The next round's pieces for "the ``count`` newest rows before ``end``" ([] when done)."""

    @abstractmethod
    def absorb(self, st: MarketState[C, P], chunk: C, data: Any) -> None:
        """An answer to ``chunk`` arrived: prove what it shows (:meth:`MarketState.prove`)."""

    @abstractmethod
    def settled(self, st: MarketState[C, P]) -> int | None:
        """Keys below this are final on the exchange and may be cached (None: everything)."""

    @abstractmethod
    def load(self, market: str, lo: int, hi: int) -> tuple[pd.DataFrame | None, Coverage]:
        """Cached rows of ``[lo, hi)`` and their coverage (runs in a worker thread)."""

    @abstractmethod
    def frame_keys(self, frame: pd.DataFrame) -> np.ndarray:
        """The keys of a cached frame's rows."""

    @abstractmethod
    def write(self, market: str, pages: list[P], proven: list[tuple[int, int]], limit: int | None) -> None:
        """Merge ``pages`` (rows with keys below ``limit``) and ``proven`` into the store
        (runs in a worker thread)."""

    @abstractmethod
    def assemble(self, states: list[MarketState[C, P]]) -> JobResult:
        """The final frame and metadata (runs in a worker thread)."""

    def check_start(self) -> None:
        """Refuse a range that starts after the exchange's current time (its ``Date`` plus the
        slack of :meth:`ServerClock.ceiling`): nothing can exist there yet."""
        ceiling = self.client.server_clock.ceiling()
        if self.req.start is not None and ceiling is not None and self.req.start.timestamp() > ceiling:
            now = pd.Timestamp(self.client.server_clock.floor(), unit="s", tz="UTC")
            raise InvalidRequestError(
                f"start={self.req.start.isoformat()} is not before the exchange's now ({now.isoformat()}, from "
                "its Date header): no data can exist there yet"
            )

    def range_start(self, st: MarketState[C, P], lo: int) -> int:
        """Where a range starts once the exchange's floor is known: not below what it serves."""
        return max(lo, st.floor)

    def check_range(self, st: MarketState[C, P], lo: int, hi: int) -> None:
        """Refuse a range the exchange cannot serve, once the cache was looked up (default: none)."""

    def replannable(self, st: MarketState[C, P], outcome: Outcome[C]) -> bool:
        """True if planning ``outcome``'s piece again can cure its failure."""
        return False

    # -- the skeleton ------------------------------------------------------------------------------
    async def run(self) -> JobResult:
        states: list[MarketState[C, P]] = [MarketState(m) for m in self.req.symbols]
        try:
            await gather_or_cancel([self._run_market(s) for s in states])
        except MarketNotFoundError as err:
            raise await self._explain_unknown(err) from None
        for st in states:
            self._report_unproven(st)
        # aggregation off the loop: a big frame must not stall the limiter's timing for others
        return await asyncio.to_thread(self.assemble, states)

    async def _run_market(self, st: MarketState[C, P]) -> None:
        req = self.req
        st.floor = self.static_floor()
        if req.count is None:
            assert req.start is not None
            lo = max(st.floor, self.key_at(req.start))
            if req.end is not None and self.store is not None:
                hi = self.key_at(req.end)
                await self._load(st, lo, hi)
                if not st.coverage.missing(lo, hi):  # wholly cached: settled rows, no question
                    st.span = (lo, max(lo, hi))
                    return
            await self.head(st)
            assert st.now is not None
            self.check_start()
            hi = st.now if req.end is None else min(st.now, self.key_at(req.end))
            lo = self.range_start(st, self.key_at(req.start))
            st.span = (lo, max(lo, hi))
            await self._load(st, lo, hi)
            self.check_range(st, lo, hi)
            await self._rounds(st, lambda: self.plan_range(st, lo, hi), stop_at_failure=False)
            return
        await self.head(st)
        assert st.now is not None
        end = st.now if req.end is None else min(st.now, self.key_at(req.end))
        st.span = (st.floor, end)
        await self._rounds(st, lambda: self.plan_count(st, end), stop_at_failure=True)

    async def _rounds(self, st: MarketState[C, P], plan: Any, *, stop_at_failure: bool) -> None:
        """Plan → fetch → prove until the plan is empty; look in the cache first wherever a plan
        reaches below what was looked up."""
        for _ in range(MAX_ROUNDS):
            if stop_at_failure and st.failed:  # a hole we could not fill: stop, report it
                return
            chunks = plan()
            while chunks and self.store is not None and (st.loaded is None or lowest_key(chunks) < st.loaded[0]):
                await self._load(st, lowest_key(chunks), st.span[1])
                chunks = plan()
            if not chunks:
                return
            settled = st.plannable().total()
            await self._round(st, chunks)
            if st.plannable().total() == settled and not self._replanned:
                return  # answers that prove nothing new: stop asking (what is left is reported)

    async def _round(self, st: MarketState[C, P], chunks: list[C]) -> None:
        """Fetch ``chunks``; each answer joins the state as it lands, and whatever landed is
        written to the cache even when the round ends early (cancelled, Ctrl-C, a 418)."""
        st.rounds += 1
        try:
            await self.executor.run(chunks, lambda outcome: self._absorb(st, outcome))
        finally:
            await despite_cancel(self._save(st))
        # proven since (a later round fetched it): no failure any more
        st.failed = [o for o in st.failed if st.coverage.missing(o.chunk.lo, o.chunk.hi)]  # type: ignore[attr-defined]
        cured = [o for o in st.failed if self.replannable(st, o)] if self._replans < MAX_REPLANS else []
        self._replanned = bool(cured)
        if cured:  # the next plan asks for them again, planned afresh
            self._replans += 1
            st.failed = [o for o in st.failed if o not in cured]
        for o in st.failed:
            st.given_up.add(o.chunk.lo, o.chunk.hi)  # type: ignore[attr-defined]

    def _absorb(self, st: MarketState[C, P], outcome: Outcome[C]) -> list[C]:
        if outcome.error is not None:
            st.failed.append(outcome)
            return []
        self.absorb(st, outcome.chunk, outcome.data)
        return self.follow(st, outcome.chunk, outcome.data)

    def follow(self, st: MarketState[C, P], chunk: C, data: Any) -> list[C]:
        """The pieces an answer calls for at once, in the same round (a cursor's next page),
        after :meth:`absorb` proved what it shows (default: none)."""
        return []

    async def fetch_head(self, chunk: C) -> Any:
        """Fetch the head piece through the executor; without it there is no "now": raise."""
        outcome = (await self.executor.run([chunk]))[0]
        if outcome.error is not None:
            raise outcome.error
        return outcome.data

    async def head_proved(self, st: MarketState[C, P], lo: int, hi: int) -> None:
        """The head's answer is complete in ``[lo, hi)``: no need to read that back from the
        cache; save it now."""
        st.take_unlooked(lo, hi)
        await self._save(st)

    def _report_unproven(self, st: MarketState[C, P]) -> None:
        """A range whose keys are neither proven nor failed (the round limit, or a server that
        proves nothing) is reported, never returned as complete."""
        if self.req.count is not None:
            return
        lo, hi = st.span
        for a, b in st.plannable().missing(lo, hi):
            chunk = self.unproven_chunk(st, a, b)
            # answers that never prove their window break the API's promise: a format fault
            error = ResponseFormatError(f"the exchange's answers did not prove {chunk.describe()} complete")  # type: ignore[attr-defined]
            st.failed.append(Outcome(chunk, error=error))

    @abstractmethod
    def unproven_chunk(self, st: MarketState[C, P], lo: int, hi: int) -> C:
        """A piece standing for the unproven keys ``[lo, hi)`` (for the failure report)."""

    # -- the cache -------------------------------------------------------------------------------
    async def _load(self, st: MarketState[C, P], lo: int, hi: int) -> None:
        """Bring cached rows and coverage of ``[lo, hi)`` into ``st``, each part only once."""
        if self.store is None or hi <= lo:
            return
        for a, b in st.take_unlooked(lo, hi):
            frame, coverage = await cache_call(self, self.load, st.market, a, b, default=(None, Coverage()))
            if self.store is None:  # the disk failed: go on without the cache
                return
            for c_lo, c_hi in coverage:
                st.coverage.add(c_lo, c_hi)
            if frame is not None and len(frame):
                st.cached.append(frame)
                st.keys.append(self.frame_keys(frame))
                st.cache_rows += len(frame)

    async def _save(self, st: MarketState[C, P]) -> None:
        """Write what was proven since the last save (settled keys only) to the cache."""
        if self.store is None or not st.new_proven:
            return
        limit = self.settled(st)
        pages, proven = st.pages[st.saved_pages :], st.new_proven
        st.saved_pages, st.new_proven = len(st.pages), []
        if limit is not None:
            proven = [(a, min(b, limit)) for a, b in proven if a < min(b, limit)]
        await cache_call(self, self.write, st.market, pages, proven, limit)

    def cache_meta(self, states: list[MarketState[C, P]]) -> dict[str, Any]:
        return {
            "enabled": self.store is not None,
            "rows_from_cache": sum(st.cache_rows for st in states),
            "dir": str(self.store.root) if self.store is not None else None,
            "error": self.cache_error,
        }

    @staticmethod
    def failures(states: list[MarketState[C, P]]) -> list[dict[str, Any]]:
        return [failure(o.chunk.market, o.chunk.describe(), o.error) for st in states for o in st.failed]  # type: ignore[attr-defined,arg-type]

    # -- unknown markets -------------------------------------------------------------------------
    async def _explain_unknown(self, err: MarketNotFoundError) -> MdcoordError:
        """The exchange said "Code not found": name the market the way every data type does,
        with close matches from the market list (one ``/market/all``, cached ten minutes)."""
        try:
            await catalog_of(self.client).resolve(tuple(err.markets), self.options, self.stats, quotes_allowed=False)
        except MarketNotFoundError as named:
            return named
        except MdcoordError:  # the list itself could not be had: the exchange's answer stands
            return err
        return err  # the list has it (delisted a moment ago?): the exchange's own answer stands
