"""The recorder: keeps what REST forgets (trades after 7 days) by writing the live stream into the
Parquet cache as it happens.

``record(markets, types=("trade", "orderbook"))`` runs a :func:`~mdcoord.astream` until stopped
(Ctrl-C, ``duration``, or cancelling ``arecord``) and every ``flush_interval`` seconds writes:

- **trades** into the trade cache (``<cache>/<source>/trades/market=M/date=D/``, the folders
  ``trades()`` reads), as an append-only part per flush beside what REST put there (readers take
  each ``sequential_id`` once), with the
  **coverage** the recording proves: for each market, from its first streamed trade to its
  newest one, split wherever the stream reported a hole REST could not fill. ``trades(start=...)``
  older than the exchange's 7 days is then answered from the recording, and the stretches it does
  not hold come back as ``unrecorded`` in the metadata.
- **order book snapshots**, the newest book of each market every ``book_interval`` seconds, as
  append-only parts, one per flush and UTC day
  (``<cache>/<source>/orderbooks/date=D/part-<first>-<id>.parquet``: ``market``, ``level``, the
  columns of ``orderbooks()`` and ``snapshot_at``).

After each flush the parts are merged as they accumulate (16 of a level into one of the next:
``TradeStore.compact``, ``BookStore.compact``), so a recorded day is tens of files, not one per
flush. Crash safety: every file is written to a hidden temporary name and renamed into place
(a merge: before its inputs go, or by swapping the whole day's folder), so a SIGKILL loses at most
what arrived since the last flush and never leaves a half-written file where a reader looks.
Memory is what arrives in one flush interval, whatever the duration.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ._codes import normalize_market
from ._coverage import Coverage
from ._config import get_options, resolve_base_url, resolve_cache_dir, source_name, with_overrides
from ._exceptions import InvalidRequestError
from ._live import astream
from ._runtime import get_runtime
from ._frames import trades_to_frame
from ._store import BookStore, TradeStore

log = logging.getLogger("mdcoord")

__all__ = ["RecordSummary", "arecord", "record"]

_DAY_MS = 86_400_000
_RECORDABLE = ("trade", "orderbook")


@dataclass
class RecordSummary:
    """What a recording wrote: rows per type, flushes, the covered spans, the holes it reported."""

    markets: list[str]
    trades: int = 0
    book_snapshots: int = 0
    flushes: int = 0
    connections: int = 0
    covered: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    holes: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    directory: str = ""

    def __str__(self) -> str:
        spans = sum(len(v) for v in self.covered.values())
        return (f"recorded {self.trades:,} trades and {self.book_snapshots:,} book snapshots of {len(self.markets)} "
                f"markets in {self.wall_s:.1f} s ({self.flushes} flushes, {self.connections} connections, "
                f"{spans} covered spans, {len(self.holes)} unfilled holes) into {self.directory}")


@dataclass
class _Span:
    lo: int  # ms, inclusive
    hi: int  # ms, exclusive: trades at ``hi`` may still arrive


class _Recorder:
    """What the recording holds between flushes. Frames are kept as they arrive and handled in
    batches (a flush, a snapshot): per-frame pandas work would not keep up with a whole quote
    currency, and a consumer that falls behind grows the stream's queue."""

    def __init__(self, markets: tuple[str, ...], root: Path, source: str, book_interval: float) -> None:
        self.root, self.source, self.book_interval = root, source, book_interval
        self.trades = TradeStore(root, source)
        self.book_store = BookStore(root, source)
        self.incoming: list[pd.DataFrame] = []  # trade frames whose spans are not counted yet
        self.settled: list[pd.DataFrame] = []  # trade rows to write with the next flush
        self.spans: dict[str, _Span] = {}
        self.proven: dict[str, list[tuple[int, int]]] = defaultdict(list)  # to write with the next flush
        self.book_frames: list[pd.DataFrame] = []  # books since the last snapshot
        self.current_books: pd.DataFrame | None = None  # the newest book of every market seen
        self.books: list[pd.DataFrame] = []  # snapshots to write with the next flush
        self.last_snapshot = float("-inf")
        self.summary = RecordSummary(list(markets), directory=str(root / source))
        self.covered: dict[str, Coverage] = {}
        self.known_holes = 0

    # -- what arrives ---------------------------------------------------------------------------------
    def take(self, df: pd.DataFrame) -> None:
        meta = df.attrs.get("mdcoord", {})
        kind = meta.get("type")
        self.summary.connections = max(self.summary.connections, int(meta.get("connections", 0)))
        if kind == "trade":
            holes = meta.get("gaps", [])[self.known_holes:]
            if holes:
                self._settle()  # the trades before a hole belong to the span it ends
                for hole in holes:
                    self._break(str(hole["market"]), int(hole["start"].value // 1_000_000))
                    self.summary.holes.append(hole)
                self.known_holes += len(holes)
            flat = df.reset_index()
            if "market" not in flat.columns:
                flat.insert(0, "market", self.summary.markets[0])
            self.incoming.append(flat)
            self.summary.trades += len(flat)
        elif kind == "orderbook":
            self.book_frames.append(df)
            now = time.monotonic()
            if now - self.last_snapshot >= self.book_interval:
                self.last_snapshot = now
                self._snapshot(df["received_at"].max())

    def _settle(self) -> None:
        """Count the spans of the trades that arrived: coverage starts at a market's first trade
        that happened while subscribed (not the snapshot, which may be older than the
        subscription) and reaches its newest one, exclusive (later trades of that millisecond
        may still come)."""
        if not self.incoming:
            return
        flat = pd.concat(self.incoming, ignore_index=True)
        self.incoming = []
        keys = pd.DataFrame({
            "market": flat["market"].astype(str),
            "ms": flat["time"].to_numpy(dtype="datetime64[ns]").astype("int64") // 1_000_000,
            "live": (flat["stream_type"] != "SNAPSHOT").to_numpy(),
        })
        for market, sub in keys.groupby("market", sort=False):  # a loop over markets, not rows
            span = self.spans.get(str(market))
            rows = sub if span is not None else sub[sub["live"]]
            if rows.empty:
                continue
            lo, hi = int(rows["ms"].min()), int(rows["ms"].max())
            if span is None:
                self.spans[str(market)] = _Span(lo, hi)
            else:
                span.hi = max(span.hi, hi)
        self.settled.append(flat.drop(columns=["stream_type", "received_at"]))

    def _break(self, market: str, at: int) -> None:
        """A hole REST could not fill starts at ``at``: what came before it is proven up to it;
        the span starts again with the next trade."""
        span = self.spans.pop(market, None)
        if span is not None and at > span.lo:
            self.proven[market].append((span.lo, at))

    def _snapshot(self, at: pd.Timestamp) -> None:
        """Every market's newest book, stamped ``at``."""
        flat = pd.concat([f.reset_index().assign(_seq=i) for i, f in enumerate(self.book_frames)], ignore_index=True)
        self.book_frames = []
        newest = flat[flat["_seq"] == flat.groupby("market")["_seq"].transform("max")].drop(columns="_seq")
        if self.current_books is not None:
            older = self.current_books[~self.current_books["market"].isin(newest["market"])]
            newest = pd.concat([older, newest], ignore_index=True)
        self.current_books = newest.drop(columns=[c for c in ("stream_type", "received_at") if c in newest.columns])
        self.books.append(self.current_books.assign(snapshot_at=at))

    # -- writing ---------------------------------------------------------------------------------------
    def flush(self) -> None:
        self._settle()
        for market, span in self.spans.items():
            if span.hi > span.lo:
                self.proven[market].append((span.lo, span.hi))
        rows = pd.concat(self.settled, ignore_index=True) if self.settled else None
        self.settled = []
        by_market = dict(iter(rows.groupby("market", sort=False))) if rows is not None and len(rows) else {}
        empty = trades_to_frame([])  # a market whose span grew without a trade: coverage, no rows
        for market in set(by_market) | set(self.proven):
            proven = self.proven.pop(market, [])
            for day in self.trades.append(str(market), by_market.get(market, empty), proven):
                self._compact(self.trades.compact, str(market), day)  # a part a flush: 17,280 files a day
            cov = self.covered.setdefault(str(market), Coverage())
            for a, b in proven:
                cov.add(a, b)
            self.summary.covered[str(market)] = [(_iso(a), _iso(b)) for a, b in cov]
        if self.books:
            self._write_books(pd.concat(self.books, ignore_index=True))
            self.books = []
        self.summary.flushes += 1

    def _write_books(self, books: pd.DataFrame) -> None:
        """One append-only part per flush and UTC day, every market in it (a part per market would
        be hundreds of files a flush for a quote currency), merged as they accumulate."""
        books = books.assign(market=books["market"].map(normalize_market))
        for date in self.book_store.append(books):
            self._compact(self.book_store.compact, date)
        self.summary.book_snapshots += int(books.groupby("market")["snapshot_at"].nunique().sum())

    @staticmethod
    def _compact(compact: Any, *args: Any) -> None:
        """Merging parts is housekeeping: a failure (a full disk, say) is logged, the recording goes
        on, and every part stays readable as it is."""
        try:
            compact(*args)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("could not merge recorded parts %s: %s", args, exc)


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


def _check(types: str | Iterable[str], duration: float | None, flush_interval: float, book_interval: float) -> tuple[str, ...]:
    kinds = (types,) if isinstance(types, str) else tuple(types)
    if not kinds or any(k not in _RECORDABLE for k in kinds):
        raise InvalidRequestError(f"record keeps {list(_RECORDABLE)}, got types={types!r}")
    if duration is not None and not duration > 0:
        raise InvalidRequestError(f"duration must be > 0 seconds or None (until stopped), got {duration!r}")
    if not flush_interval > 0 or not book_interval > 0:
        raise InvalidRequestError("flush_interval and book_interval must be > 0 seconds")
    return tuple(dict.fromkeys(kinds))


async def arecord(markets: str | Iterable[str], types: str | Iterable[str] = _RECORDABLE, *, duration: float | None = None,
                  flush_interval: float = 5.0, book_interval: float = 1.0, book_depth: int = 30,
                  base_url: str | None = None, ws_url: str | None = None, heartbeat: float = 10.0,
                  **options: Any) -> RecordSummary:
    """Async twin of :func:`record`: cancel the task to stop (what arrived is flushed first)."""
    return await _record(markets, types, duration, flush_interval, book_interval, book_depth, base_url, ws_url,
                         heartbeat, None, options)


async def _record(markets: str | Iterable[str], types: str | Iterable[str], duration: float | None, flush_interval: float,
                  book_interval: float, book_depth: int, base_url: str | None, ws_url: str | None, heartbeat: float,
                  _stop: threading.Event | None, options: dict[str, Any]) -> RecordSummary:
    kinds = _check(types, duration, flush_interval, book_interval)
    opts = with_overrides(get_options(), options)
    rest = resolve_base_url(base_url)
    recorder = _Recorder((), resolve_cache_dir(opts), source_name(rest), book_interval)
    started = time.monotonic()
    deadline = None if duration is None else started + duration
    last_flush = started
    frames: asyncio.Queue[pd.DataFrame | None] = asyncio.Queue()

    async def pump() -> None:  # the stream in a task of its own: waiting for a flush never cancels it
        try:
            async for df in astream(markets, kinds, base_url=rest, ws_url=ws_url, book_depth=book_depth,
                                    heartbeat=heartbeat, **options):
                frames.put_nowait(df)
        finally:
            frames.put_nowait(None)

    pumping = asyncio.get_running_loop().create_task(pump())
    try:
        while (deadline is None or time.monotonic() < deadline) and not (_stop is not None and _stop.is_set()):
            wait = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            try:
                df = await asyncio.wait_for(frames.get(), timeout=max(wait, 0.0))
            except asyncio.TimeoutError:
                df = None
            if df is None and pumping.done():
                pumping.result()  # the stream's error, if it ended with one
                break
            if df is not None:
                if not recorder.summary.markets:
                    recorder.summary.markets = list(df.attrs["mdcoord"]["markets"])
                recorder.take(df)
            if time.monotonic() - last_flush >= flush_interval:
                await asyncio.to_thread(recorder.flush)
                last_flush = time.monotonic()
    finally:
        pumping.cancel()
        await asyncio.gather(pumping, return_exceptions=True)
        while not frames.empty():  # what arrived before the stop is kept too
            df = frames.get_nowait()
            if df is not None:
                recorder.take(df)
        await asyncio.shield(asyncio.to_thread(recorder.flush))  # however it stopped
    recorder.summary.wall_s = round(time.monotonic() - started, 3)
    return recorder.summary


def record(markets: str | Iterable[str], types: str | Iterable[str] = _RECORDABLE, *, duration: float | None = None,
           flush_interval: float = 5.0, book_interval: float = 1.0, book_depth: int = 30,
           base_url: str | None = None, ws_url: str | None = None, heartbeat: float = 10.0,
           **options: Any) -> RecordSummary:
    """Record live trades and order book snapshots of ``markets`` into the cache until stopped
    (Ctrl-C) or for ``duration`` seconds; returns what was written. See the module docstring.

    >>> mdcoord.record("KRW", duration=3600)          # an hour of every KRW market's trades and books
    """
    runtime = get_runtime()
    stop = threading.Event()
    work = asyncio.run_coroutine_threadsafe(
        _record(markets, types, duration, flush_interval, book_interval, book_depth, base_url, ws_url, heartbeat, stop,
                options),
        runtime.loop)
    try:
        while True:
            try:
                return work.result(timeout=0.1)  # short waits: Ctrl-C is delivered between them
            except concurrent.futures.TimeoutError:
                continue
    except KeyboardInterrupt:
        stop.set()  # stop, flush what arrived, and say what was recorded
        return work.result(timeout=60)
