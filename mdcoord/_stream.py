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

from ._config import get_options, with_overrides
from ._api import gaps, gaps_frame
from ._coordinator import Coordinator
from ._exceptions import InvalidRequestError
from ._frames import merge_gap_runs
from ._request import CoordinatorRequest
from ._runtime import get_runtime
from ._timeframe import Timeframe

__all__ = ["aiter_candles", "download", "iter_candles", "plan_segments"]

DEFAULT_SEGMENT = 20_000
_PARAMETERS = ("markets", "timeframe", "start", "end", "segment_size", "prefetch", "base_url")  # candles per market per segment: 100 requests, ~3 MB of frame


def plan_segments(
    tf: Timeframe, start: pd.Timestamp, end: pd.Timestamp | None, size: int, now: pd.Timestamp | None
) -> list[tuple[pd.Timestamp, pd.Timestamp | None]]:
    """Consecutive ``[a, b)`` of ``size`` slots from ``start``; the last one ends at ``end`` (or is
    open, ``None``, when ``end`` is None: "up to now" on the exchange's clock, which ``now`` — the
    exchange's time as last heard, None if unknown — only helps to cut into segments)."""
    _check_segment_size(size)
    lo = tf.first_slot_at_or_after(start)
    if end is None and now is None:
        return [(start, None)]
    hi = tf.first_slot_at_or_after(end) if end is not None else tf.slot_of(now) + 1  # type: ignore[arg-type]
    out: list[tuple[pd.Timestamp, pd.Timestamp | None]] = []
    while lo < hi:
        nxt = min(lo + size, hi)
        out.append((tf.slot_start(lo), tf.slot_start(nxt)))
        lo = nxt
    if end is None:
        out = out[:-1] + [((out[-1][0] if out else start), None)]
    return out


def _check_segment_size(size: object) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidRequestError(f"segment_size must be a positive int, got {size!r}")


def _check_prefetch(prefetch: object) -> None:
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch <= 64:
        raise InvalidRequestError(f"prefetch must be an int in [0, 64] (segments fetched ahead), got {prefetch!r}")


async def _stream(
    coord: Coordinator, first: CoordinatorRequest, segment_size: int, prefetch: int
) -> AsyncIterator[pd.DataFrame]:
    """Run on the runtime loop: yield each segment's frame in order, ``prefetch`` ahead."""
    assert first.start is not None and first.timeframe is not None
    # "now" only cuts the open end into segments (each segment's job asks the exchange itself)
    now = await coord.exchange_time() if first.end is None else None
    segments = plan_segments(first.timeframe, first.start, first.end, segment_size, now)
    todo = iter(CoordinatorRequest.create("candles", first.symbols, first.timeframe, start=a, end=b) for a, b in segments)
    pending: deque[asyncio.Future[Any]] = deque()

    def launch() -> None:
        req = next(todo, None)
        if req is not None:
            pending.append(asyncio.ensure_future(coord.aexecute(req)))

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
    """The segment stream living on the runtime loop, advanced one segment per call. Built (and
    its arguments validated) when the iterator is made, not at its first step."""

    def __init__(self, markets: Any, timeframe: Any, start: Any, end: Any, segment_size: int, prefetch: int,
                 base_url: str | None, options: dict[str, Any]) -> None:
        with_overrides(get_options(), options, parameters=_PARAMETERS)  # a typo'd keyword first
        coord = Coordinator(base_url, **{"progress": False, **options})
        _check_prefetch(prefetch)
        _check_segment_size(segment_size)
        first = CoordinatorRequest.create("candles", markets, timeframe, start=start, end=end)  # validates the rest
        self.runtime = get_runtime()
        self._agen = _stream(coord, first, segment_size, prefetch)

    async def step(self) -> pd.DataFrame:
        return await self._agen.__anext__()

    async def close(self) -> None:
        await self._agen.aclose()


def aiter_candles(
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
    """Async twin of :func:`iter_candles` (arguments are checked when it is called).

    >>> async for seg in mdcoord.aiter_candles("KRW-BTC", "1m", start="2026-08-01"): ...
    """
    return _aiterate(_Stepper(markets, timeframe, start, end, segment_size, prefetch, base_url, options))


async def _aiterate(stepper: _Stepper) -> AsyncIterator[pd.DataFrame]:
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

    Arguments are checked when it is called (an :class:`InvalidRequestError` then, not at the
    first ``next()``).

    >>> for seg in mdcoord.iter_candles("KRW-BTC", "1m", start="2026-08-01", end="2026-11-01"):
    ...     strategy.feed(seg)
    """
    return _iterate(_Stepper(markets, timeframe, start, end, segment_size, prefetch, base_url, options))


def _iterate(stepper: _Stepper) -> Iterator[pd.DataFrame]:
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
    (``rows, first, last``; totals of requests, retries, 429s and missing candles in ``attrs``;
    :func:`mdcoord.gaps` of the summary lists the missing candles of the whole download).

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
    totals: dict[str, Any] = {"segments": 0, "requests_sent": 0, "retries": 0, "rate_limited": 0, "missing_candles": 0}
    gap_tables = []
    for seg in iter_candles(markets, timeframe, start=start, end=end, segment_size=segment_size,
                            base_url=base_url, **options):
        meta = seg.attrs["mdcoord"]
        totals["segments"] += 1
        for key in ("requests_sent", "retries", "rate_limited", "missing_candles"):
            totals[key] += meta[key]
        gap_tables.append(gaps(seg))
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
    runs = merge_gap_runs(pd.concat(gap_tables, ignore_index=True)) if gap_tables else gaps_frame([])
    totals.update(
        kind="download", timeframe=Timeframe.parse(timeframe).value, markets=list(codes),
        gaps=[{**r, "start": r["start"].isoformat(), "end": r["end"].isoformat()} for r in runs.to_dict("records")],
    )
    frame.attrs["mdcoord"] = totals
    return frame
