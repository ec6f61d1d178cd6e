"""Layer 4: the one-line functions. Thin over :class:`~mdcoord._coordinator.Coordinator`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from ._config import get_options, with_overrides
from ._coordinator import Coordinator
from ._exceptions import InvalidRequestError
from ._frames import gap_table
from ._request import CoordinatorRequest
from ._timeframe import Timeframe, to_utc

__all__ = [
    "acandles", "amarkets", "aorderbooks", "atickers", "atrades", "candles", "gaps", "markets", "orderbooks",
    "tickers", "trades",
]


def _coordinator(fn: Callable[..., Any], base_url: str | None, options: dict[str, Any]) -> Coordinator:
    """The call's coordinator, its options checked first: a typo'd keyword (``cuont=10``) is
    named as such, with the closest of ``fn``'s parameters and the options, before anything else."""
    with_overrides(get_options(), options, parameters=tuple(inspect.signature(fn).parameters))
    return Coordinator(base_url, **options)


def _candle_request(
    markets: str | Iterable[str], timeframe: str | Timeframe, start: Any, end: Any, count: int | None,
    include_forming: bool,
) -> CoordinatorRequest:
    return CoordinatorRequest.create(
        "candles", markets, timeframe, start=start, end=end, count=count, include_forming=include_forming
    )


def candles(
    markets: str | Iterable[str],
    timeframe: str | Timeframe = "1m",
    *,
    count: int | None = None,
    start: Any = None,
    end: Any = None,
    include_forming: bool = False,
    base_url: str | None = None,
    **options: Any,
) -> pd.DataFrame:
    """OHLCV candles of one or more markets as one clean DataFrame.

    Give ``count`` (the ``count`` most recent closed candles, or the newest before ``end``) or
    ``start`` with an optional ``end`` (start inclusive, end exclusive; without ``end``: up to
    now). Times without a zone are UTC, as on the Upbit API. ``timeframe`` is one of ``1s 1m 3m
    5m 10m 15m 30m 1h 4h 1d 1w 1M 1y``.

    Returns a frame indexed by candle start (tz-aware UTC; ``(market, time)`` for several
    markets) with float64 ``open, high, low, close, volume, value`` and ``last_trade_at``. Intervals
    without trades have no candle (as on Upbit); :func:`gaps` lists them. The still-forming
    candle is excluded unless ``include_forming=True``. Metadata (requests, retries, gaps, ...)
    is in ``df.attrs["mdcoord"]``. Extra keyword arguments override :func:`set_options`
    (``concurrency``, ``max_retries``, ``timeout``, ``progress``, ``on_error``...).

    Raises :class:`InvalidRequestError` before any request for bad input,
    :class:`MarketNotFoundError` for an unknown market, :class:`IncompleteDataError` (with the
    partial frame) when pieces still fail after retries, :class:`IPBlockedError` on HTTP 418.

    >>> df = mdcoord.candles("KRW-BTC", "1m", count=1000)
    """
    coord = _coordinator(candles, base_url, options)
    return coord.execute(_candle_request(markets, timeframe, start, end, count, include_forming)).unwrap()


async def acandles(
    markets: str | Iterable[str],
    timeframe: str | Timeframe = "1m",
    *,
    count: int | None = None,
    start: Any = None,
    end: Any = None,
    include_forming: bool = False,
    base_url: str | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Async twin of :func:`candles` (same arguments, same result, same session and limiter).

    >>> df = await mdcoord.acandles("KRW-BTC", "5m", count=5000)
    """
    coord = _coordinator(acandles, base_url, options)
    return (await coord.aexecute(_candle_request(markets, timeframe, start, end, count, include_forming))).unwrap()


def gaps(df: pd.DataFrame) -> pd.DataFrame:
    """The missing candles of a frame returned by :func:`candles` (or of a whole
    :func:`download`, from its summary), one row per run.

    Columns: ``market, start, end, missing, reason`` where ``end`` is the start of the next
    present candle and ``reason`` is ``"no_trades"`` (the exchange answered: no candle exists) or
    ``"not_fetched"`` (the piece failed after retries). Uses ``df.attrs["mdcoord"]``; raises
    :class:`InvalidRequestError` for a frame that is neither.
    """
    meta = df.attrs.get("mdcoord") if isinstance(df, pd.DataFrame) else None
    if meta and meta.get("kind") == "download":
        return gaps_frame(meta.get("gaps", []))
    if not meta or not meta.get("timeframe") or "spans" not in meta:
        what = "a frame without mdcoord metadata" if not meta else "a frame that is not mdcoord candles"
        raise InvalidRequestError(
            f"gaps() takes what mdcoord.candles() or mdcoord.download() returned, got {what} "
            "(for any candle frame, df.mdc.gaps() infers the gaps between its candles)"
        )
    tf = Timeframe.parse(meta["timeframe"])
    flat = df.reset_index()
    if "market" not in flat.columns:
        flat["market"] = meta["markets"][0]
    spans = {m: (to_utc(a, "span"), to_utc(b, "span")) for m, (a, b) in meta.get("spans", {}).items()}
    failed: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
    for f in meta.get("failures", []):
        a, b = f["range"].strip("[)").split(", ")
        failed.setdefault(f["market"], []).append((to_utc(a, "range"), to_utc(b, "range")))
    return gap_table(flat, tf, spans, failed)


def gaps_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Gap records (ISO times, as kept in metadata) as a gap table with its dtypes."""
    frame = pd.DataFrame(records, columns=["market", "start", "end", "missing", "reason"])
    return frame.astype({"market": "str", "missing": "int64", "reason": "str"}).assign(
        start=pd.to_datetime(frame["start"], utc=True).astype("datetime64[ns, UTC]"),
        end=pd.to_datetime(frame["end"], utc=True).astype("datetime64[ns, UTC]"),
    )


def _run(fn: Callable[..., Any], make: Callable[[], CoordinatorRequest], base_url: str | None,
         options: dict[str, Any]) -> pd.DataFrame:
    coord = _coordinator(fn, base_url, options)
    return coord.execute(make()).unwrap()


async def _arun(fn: Callable[..., Any], make: Callable[[], CoordinatorRequest], base_url: str | None,
                options: dict[str, Any]) -> pd.DataFrame:
    coord = _coordinator(fn, base_url, options)
    return (await coord.aexecute(make())).unwrap()


def markets(quote: str | Iterable[str] | None = None, *, details: bool = False, base_url: str | None = None,
            **options: Any) -> pd.DataFrame:
    """The exchange's trading pairs, indexed by ``market`` (``KRW-BTC``), with ``quote``, ``base``,
    ``korean_name``, ``english_name``; ``details=True`` adds bool ``warning``, ``caution`` and one
    column per caution flag. ``quote="KRW"`` (or a list) keeps those quote currencies. Always
    fetched fresh (one request); it also refreshes the list other calls validate codes against.

    >>> mdcoord.markets("KRW", details=True)
    """
    return _run(markets, lambda: CoordinatorRequest.create("markets", () if quote is None else quote, details=details),
                base_url, options)


async def amarkets(quote: str | Iterable[str] | None = None, *, details: bool = False, base_url: str | None = None,
                   **options: Any) -> pd.DataFrame:
    """Async twin of :func:`markets`."""
    return await _arun(
        amarkets, lambda: CoordinatorRequest.create("markets", () if quote is None else quote, details=details),
        base_url, options,
    )


def tickers(markets: str | Iterable[str] = "KRW", *, base_url: str | None = None, **options: Any) -> pd.DataFrame:
    """Current tickers, one row per market, indexed by ``market``.

    ``markets`` takes codes and/or quote currencies: ``"KRW"`` is every KRW market. Codes are
    checked against the market list first (an unknown one raises :class:`MarketNotFoundError`
    naming it); the markets are fetched ``tickers_per_request`` (10) per request, concurrently.
    Numbers are float64; ``trade_timestamp`` and ``timestamp`` are tz-aware UTC.

    >>> mdcoord.tickers("KRW").sort_values("acc_trade_price_24h", ascending=False).head(10)
    """
    return _run(tickers, lambda: CoordinatorRequest.create("tickers", markets), base_url, options)


async def atickers(markets: str | Iterable[str] = "KRW", *, base_url: str | None = None, **options: Any) -> pd.DataFrame:
    """Async twin of :func:`tickers`."""
    return await _arun(atickers, lambda: CoordinatorRequest.create("tickers", markets), base_url, options)


def orderbooks(markets: str | Iterable[str], *, depth: int | None = None, level: float | None = None,
               base_url: str | None = None, **options: Any) -> pd.DataFrame:
    """Order books as one long frame indexed by ``(market, level)`` (level 1 = best).

    Columns ``bid_price, bid_size, ask_price, ask_size`` and the book's ``timestamp`` (UTC).
    ``depth`` = levels per side (1-30; the exchange's default is 30); ``level`` = price grouping
    step (KRW markets only). Padding is not liquidity: a side the book does not have is NaN and
    levels with neither side are dropped. Fetched ``orderbooks_per_request`` (5) markets a request.

    >>> mdcoord.orderbooks(["KRW-BTC", "KRW-ETH"], depth=15)
    """
    return _run(orderbooks, lambda: CoordinatorRequest.create("orderbooks", markets, depth=depth, level=level),
                base_url, options)


async def aorderbooks(markets: str | Iterable[str], *, depth: int | None = None, level: float | None = None,
                      base_url: str | None = None, **options: Any) -> pd.DataFrame:
    """Async twin of :func:`orderbooks`."""
    return await _arun(
        aorderbooks, lambda: CoordinatorRequest.create("orderbooks", markets, depth=depth, level=level), base_url, options
    )


def trades(markets: str | Iterable[str], *, count: int | None = None, start: Any = None, end: Any = None,
           base_url: str | None = None, **options: Any) -> pd.DataFrame:
    """Trades (ticks) of the last 7 days, indexed by ``time`` (UTC, ms precision; ``(market, time)``
    for several markets), sorted by time then ``sequential_id``, without duplicates.

    ``count=N``: exactly the N most recent trades (fewer only if the 7 days hold fewer).
    ``start``/``end``: every trade with ``start <= time < end``; a start before the first
    available UTC day raises :class:`InvalidRequestError` naming the earliest time. Columns:
    ``price, volume, side`` (the taker's: ``"bid"`` = buy) ``, sequential_id, prev_closing_price,
    change_price``.

    >>> mdcoord.trades("KRW-BTC", count=5000)
    """
    return _run(trades, lambda: CoordinatorRequest.create("trades", markets, start=start, end=end, count=count),
                base_url, options)


async def atrades(markets: str | Iterable[str], *, count: int | None = None, start: Any = None, end: Any = None,
                  base_url: str | None = None, **options: Any) -> pd.DataFrame:
    """Async twin of :func:`trades`."""
    return await _arun(
        atrades, lambda: CoordinatorRequest.create("trades", markets, start=start, end=end, count=count), base_url, options
    )
