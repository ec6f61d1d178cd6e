"""Streaming: long candle ranges consumed segment by segment, at constant memory.

A backtest dataset (months of 1-minute candles, several markets) is cut into consecutive
time **segments** of ``segment_size`` candle slots per market. Each segment is an ordinary
cache-first candles request (so it is written to the cache when it arrives, and a rerun skips
what is there); segments are yielded in time order while the next ``prefetch`` segments are
already being fetched, so the rate limit stays busy while the consumer works. Memory holds a
few segments, whatever the range.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pandas as pd

from ._config import get_options
from ._coordinator import Coordinator
from ._exceptions import InvalidRequestError
from ._request import CoordinatorRequest
from ._runtime import get_runtime
from ._timeframe import Timeframe

__all__ = ["aiter_candles", "download", "iter_candles", "plan_segments"]

DEFAULT_SEGMENT = 20_000  # candles per market per segment: 100 requests, ~3 MB of frame


def plan_segments(
    tf: Timeframe, start: pd.Timestamp, end: pd.Timestamp | None, size: int, now: pd.Timestamp
) -> list[tuple[pd.Timestamp, pd.Timestamp | None]]:
    """Consecutive ``[a, b)`` of ``size`` slots from ``start``; the last one ends at ``end`` (or is
    open, ``None``, when ``end`` is None: "up to now" on the exchange's clock)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidRequestError(f"segment_size must be a positive int, got {size!r}")
    lo = tf.first_slot_at_or_after(start)
    hi = tf.first_slot_at_or_after(end) if end is not None else tf.slot_of(now) + 1
    out: list[tuple[pd.Timestamp, pd.Timestamp | None]] = []
    while lo < hi:
        nxt = min(lo + size, hi)
        out.append((tf.slot_start(lo), tf.slot_start(nxt)))
        lo = nxt
    if end is None:
        out = out[:-1] + [((out[-1][0] if out else start), None)]
    return out


def _requests(
    markets: str | Iterable[str], timeframe: str | Timeframe, start: Any, end: Any, segment_size: int, base_url: str | None,
    options: dict[str, Any],
) -> tuple[Coordinator, list[CoordinatorRequest]]:
    first = CoordinatorRequest.create("candles", markets, timeframe, start=start, end=end)  # validates everything
    coord = Coordinator(base_url, **options)
    assert first.start is not None and first.timeframe is not None
    # "now" only places the last, open-ended segment; a wrong local clock changes its size only
    now = pd.Timestamp.now(tz="UTC")
    segments = plan_segments(first.timeframe, first.start, first.end, segment_size, now)
    reqs = [
        CoordinatorRequest.create("candles", first.symbols, first.timeframe, start=a, end=b) for a, b in segments
    ]
    return coord, reqs


async def _stream(coord: Coordinator, reqs: list[CoordinatorRequest], prefetch: int) -> AsyncIterator[pd.DataFrame]:
    """Run on the runtime loop: yield each segment's frame in order, ``prefetch`` ahead."""
    options = coord._options()
    pending: deque[asyncio.Future[Any]] = deque()
    todo = iter(reqs)

    def launch() -> None:
        req = next(todo, None)
        if req is not None:
            pending.append(asyncio.ensure_future(coord._execute(req, options)))

    for _ in range(1 + prefetch):
        launch()
    try:
        while pending:
            response = await pending.popleft()
            launch()
            frame = response.unwrap()
            if len(frame):
                yield frame
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class _Stepper:
    """The segment stream living on the runtime loop, advanced one segment per call."""

    def __init__(self, markets: Any, timeframe: Any, start: Any, end: Any, segment_size: int, prefetch: int,
                 base_url: str | None, options: dict[str, Any]) -> None:
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch <= 64:
            raise InvalidRequestError(f"prefetch must be an int in [0, 64] (segments fetched ahead), got {prefetch!r}")
        coord, reqs = _requests(markets, timeframe, start, end, segment_size, base_url, {"progress": False, **options})
        self.runtime = get_runtime()
        self._agen = _stream(coord, reqs, prefetch)

    async def step(self) -> pd.DataFrame:
        return await self._agen.__anext__()

    async def close(self) -> None:
        await self._agen.aclose()


async def aiter_candles(
    markets: str | Iterable[str],
    timeframe: str | Timeframe = "1m",
    *,
    start: Any,
    end: Any = None,
    segment_size: int = DEFAULT_SEGMENT,
    prefetch: int = 1,
    base_url: str | None = None,
    **options: Any,
) -> AsyncIterator[pd.DataFrame]:
    """Async twin of :func:`iter_candles`.

    >>> async for seg in mdcoord.aiter_candles("KRW-BTC", "1m", start="2026-08-01"): ...
    """
    stepper = _Stepper(markets, timeframe, start, end, segment_size, prefetch, base_url, options)
    try:
        while True:
            try:
                yield await stepper.runtime.arun(stepper.step())
            except StopAsyncIteration:
                return
    finally:
        await stepper.runtime.arun(stepper.close())


def iter_candles(
    markets: str | Iterable[str],
    timeframe: str | Timeframe = "1m",
    *,
    start: Any,
    end: Any = None,
    segment_size: int = DEFAULT_SEGMENT,
    prefetch: int = 1,
    base_url: str | None = None,
    **options: Any,
) -> Iterator[pd.DataFrame]:
    """Candles of ``[start, end)`` as consecutive, time-ordered frames of ``segment_size`` slots.

    Each segment is fetched cache-first and written to the cache as it arrives; the next
    ``prefetch`` segments are fetched while you process the current one. Memory stays flat as
    the range grows. Frames look like :func:`candles`' (one per segment; empty segments are
    skipped). Interrupting the loop (``break``, Ctrl-C) stops all traffic.

    >>> for seg in mdcoord.iter_candles("KRW-BTC", "1m", start="2026-08-01", end="2026-11-01"):
    ...     strategy.feed(seg)
    """
    stepper = _Stepper(markets, timeframe, start, end, segment_size, prefetch, base_url, options)
    try:
        while True:
            try:
                yield stepper.runtime.run(stepper.step())
            except StopAsyncIteration:
                return
    finally:
        stepper.runtime.run(stepper.close())


def download(
    markets: str | Iterable[str],
    timeframe: str | Timeframe = "1m",
    *,
    start: Any,
    end: Any = None,
    segment_size: int = DEFAULT_SEGMENT,
    base_url: str | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Fill the cache with ``[start, end)`` at constant memory; returns a per-market summary
    (``rows, first, last``; totals of requests, retries, 429s and missing candles in ``attrs``).

    Nothing is assembled in memory beyond one segment at a time; read the data afterwards with
    :func:`candles` (from the cache) or any Parquet reader. Raises :class:`InvalidRequestError`
    with ``cache=False`` (there would be nothing to download into).

    >>> mdcoord.download(["KRW-BTC", "KRW-ETH"], "1m", start="2026-08-01", end="2026-11-01")
    """
    if options.get("cache", get_options().cache) is False:
        raise InvalidRequestError("download() fills the cache; it cannot run with cache=False")
    rows: dict[str, int] = {}
    first: dict[str, pd.Timestamp] = {}
    last: dict[str, pd.Timestamp] = {}
    totals = {"segments": 0, "requests_sent": 0, "retries": 0, "rate_limited": 0, "missing_candles": 0}
    for seg in iter_candles(markets, timeframe, start=start, end=end, segment_size=segment_size,
                            base_url=base_url, **options):
        meta = seg.attrs["mdcoord"]
        totals["segments"] += 1
        for key in ("requests_sent", "retries", "rate_limited", "missing_candles"):
            totals[key] += meta[key]
        times = seg.index.get_level_values("time")
        codes = seg.index.get_level_values("market") if seg.index.nlevels > 1 else [meta["markets"][0]] * len(seg)
        per = pd.DataFrame({"market": codes, "time": times}).groupby("market")["time"].agg(["size", "min", "max"])
        for market, (n, lo, hi) in per.iterrows():
            rows[market] = rows.get(market, 0) + int(n)
            first[market] = min(first.get(market, lo), lo)
            last[market] = max(last.get(market, hi), hi)
    codes = CoordinatorRequest.create("candles", markets, timeframe, start=start, end=end).symbols
    frame = pd.DataFrame(
        {"rows": [rows.get(m, 0) for m in codes], "first": [first.get(m, pd.NaT) for m in codes],
         "last": [last.get(m, pd.NaT) for m in codes]},
        index=pd.Index(codes, name="market"),
    )
    frame.attrs["mdcoord"] = totals
    return frame
