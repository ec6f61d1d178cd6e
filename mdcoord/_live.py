"""Live data: Upbit's WebSocket into small DataFrames, with no hole and no duplicate in the trades.

``astream(markets, types)`` subscribes every (type, market) on one connection (the fewest the
limits allow: Upbit sets no limit on codes per connection, and new connections cost 1/5 of a
second's allowance), and yields one DataFrame per type per received batch — the frames that
arrived together, so a busy stream yields few large frames and a quiet one small frames at
once. Each frame has the columns and dtypes of the REST frame of its type (``trades``,
``tickers``, ``orderbooks``, ``candles``), plus ``stream_type`` (``SNAPSHOT``/``REALTIME``) and
``received_at`` (when it arrived, on the exchange's clock as the REST answers' ``Date`` tell it);
``df.attrs["mdcoord"]["type"]`` names the type.

When a connection ends (dropped, stalled, closed by the exchange, a frame that is not JSON), the
stream reconnects with backoff, within the connection limit. Trades are the one type whose
history matters: the WebSocket replays nothing, so for each market the first trade after the
reconnect marks the end of a hole that began at the last trade before it, and the hole is
fetched from REST (``trades(start=, end=)``: ``/trades/ticks`` through the same rate budget as
every request) and merged in order; trades seen twice (snapshot and realtime, a resend, the
fill's edges) are dropped by ``sequential_id``. A hole REST could not fill is reported (``gaps``
in the metadata of the next trade frame), never papered over.
"""

from __future__ import annotations

import asyncio
import contextlib
import concurrent.futures
import queue as _queue
import random
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._config import get_options, resolve_base_url, with_overrides
from ._exceptions import ConnectionFailedError, InvalidRequestError, MdcoordError
from ._frames import candle_rows_to_frame, clean_candles, index_candles, orderbooks_to_frame, tickers_to_frame
from ._runtime import get_runtime
from ._timeframe import Timeframe
from ._ws import BOOK_DEPTHS, TYPES, Subscription, WsChannel, ws_url_for

__all__ = ["astream", "stream"]

# sequential_ids remembered per market for de-duplication: those of the last minutes of trades
# (repeats come at the edge: a snapshot of the last trade, a resend, the ends of a hole's fill)
_SEEN_WINDOW_MS = 10 * 60_000
_BACKOFF_START, _BACKOFF_MAX = 0.25, 30.0


def _types(types: str | Iterable[str]) -> tuple[str, ...]:
    given = (types,) if isinstance(types, str) else tuple(types)
    if not given:
        raise InvalidRequestError("stream needs at least one type, e.g. types=('trade', 'ticker')")
    for t in given:
        if t not in TYPES:
            raise InvalidRequestError(f"unknown stream type {t!r}; choose from {list(TYPES)}")
    return tuple(dict.fromkeys(given))


def _timeframe(candle_type: str) -> Timeframe:
    unit = candle_type.removeprefix("candle.")
    return Timeframe.parse("1h" if unit == "60m" else "4h" if unit == "240m" else unit)


@dataclass
class _Market:
    """One market's trade state: what was last yielded, what was seen, a hole being filled."""

    last: tuple[int, int] | None = None  # (ms, sequential_id) of the newest trade yielded
    seen: OrderedDict[int, int] = field(default_factory=OrderedDict)  # sequential_id -> ms, oldest first
    hole: bool = False  # the connection ended since ``last``: the next trade closes a hole
    filling: asyncio.Task[None] | None = None
    held: list[dict[str, Any]] = field(default_factory=list)  # trades waiting for the fill

    def fresh(self, sid: int, ms: int) -> bool:
        """True the first time ``sid`` is seen (within the window); remembers it."""
        if sid in self.seen:
            return False
        self.seen[sid] = ms
        horizon = ms - _SEEN_WINDOW_MS
        while self.seen:  # forget what is older than the window: memory follows the trade rate
            oldest = next(iter(self.seen.values()))
            if oldest >= horizon:
                break
            self.seen.popitem(last=False)
        return True


class _Stream:
    """The producer: runs on mdcoord's loop, puts frames into ``out`` (a thread-safe queue)."""

    def __init__(self, markets: tuple[str, ...], types: tuple[str, ...], *, base_url: str, ws_url: str,
                 book_depth: int, heartbeat: float, fill: bool, options: dict[str, Any]) -> None:
        self.markets, self.types, self.base_url, self.ws_url = markets, types, base_url, ws_url
        self.book_depth, self.heartbeat, self.fill, self.options = book_depth, heartbeat, fill, options
        self.out: _queue.Queue[Any] = _queue.Queue()
        self.state: dict[str, _Market] = defaultdict(_Market)
        self.connections = 0
        self.disconnects: list[str] = []
        self.gaps: list[dict[str, Any]] = []
        self.filled = 0
        self._fills: set[asyncio.Task[None]] = set()
        self._client: Any = None
        self.notify: Callable[[], Any] | None = None  # called (on the producer's loop) after each frame

    def subscriptions(self) -> list[Subscription]:
        subs = []
        for t in self.types:
            codes = tuple(f"{m}.{self.book_depth}" for m in self.markets) if t == "orderbook" and self.book_depth != 30 \
                else self.markets
            subs.append(Subscription(t, codes))
        return subs

    def now_ms(self) -> int | None:
        est = self._client.server_clock.estimate() if self._client is not None else None
        return None if est is None else int(est * 1000)

    async def run(self) -> None:
        try:
            opts = with_overrides(get_options(), self.options)
            self._client = get_runtime().client(self.base_url, opts.local_address)
            backoff = _BACKOFF_START
            while True:
                channel = WsChannel(self.ws_url, self.subscriptions(), heartbeat=self.heartbeat,
                                    local_address=opts.local_address)
                try:
                    await channel.open()
                    self.connections += 1
                    async for messages in channel.batches():
                        backoff = _BACKOFF_START
                        self._take(messages)
                except ConnectionFailedError as e:  # dropped, stalled, garbled: reconnect
                    self.disconnects.append(str(e))
                    for st in self.state.values():
                        if st.last is not None:
                            st.hole = True
                finally:
                    await channel.close()
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, _BACKOFF_MAX)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - the consumer raises it
            self.out.put(e)
            if self.notify is not None:
                self.notify()
        finally:
            for task in list(self._fills):
                task.cancel()
            if self._fills:
                await asyncio.gather(*self._fills, return_exceptions=True)

    # -- one batch of messages ----------------------------------------------------------------------
    def _take(self, messages: list[dict[str, Any]]) -> None:
        received = self.now_ms()
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in messages:
            by_type[str(m.get("type"))].append(m)
        for kind, rows in by_type.items():
            if kind == "trade":
                rows = self._trades(rows)
                if rows:
                    self._put("trade", rows, received)
            elif kind in TYPES:
                self._put(kind, rows, received)

    def _trades(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The trades to yield now: new ones, in order; a market closing a hole holds its trades."""
        out = []
        for r in rows:
            market = str(r["code"])
            st = self.state[market]
            if st.filling is not None:
                st.held.append(r)
                continue
            if st.hole and st.last is not None and self.fill:
                st.hole = False
                st.held = [r]
                st.filling = asyncio.get_running_loop().create_task(self._fill(market, st, st.last, r))
                self._fills.add(st.filling)
                st.filling.add_done_callback(self._fills.discard)
                continue
            st.hole = False
            if st.fresh(int(r["sequential_id"]), int(r["trade_timestamp"])):
                out.append(r)
                st.last = (int(r["trade_timestamp"]), int(r["sequential_id"]))
        return out

    async def _fill(self, market: str, st: _Market, last: tuple[int, int], first: dict[str, Any]) -> None:
        """Fetch the trades between the last one yielded and the first after the reconnect."""
        from ._api import atrades

        lo, hi = last[0], int(first["trade_timestamp"]) + 1
        rows: list[dict[str, Any]] = []
        try:
            df = await atrades(market, start=pd.Timestamp(lo, unit="ms", tz="UTC"), end=pd.Timestamp(hi, unit="ms", tz="UTC"),
                               base_url=self.base_url, **{**self.options, "progress": False})
            rows = [
                {"code": market, "trade_timestamp": int(t.value // 1_000_000), "trade_price": p, "trade_volume": v,
                 "ask_bid": s.upper(), "sequential_id": int(q), "prev_closing_price": pc, "change_price": cp,
                 "change": "FALL" if cp < 0 else "RISE" if cp > 0 else "EVEN", "stream_type": "REST"}
                for t, p, v, s, q, pc, cp in zip(df.index, df["price"], df["volume"], df["side"], df["sequential_id"],
                                                   df["prev_closing_price"], df["change_price"])
            ]
        except asyncio.CancelledError:
            raise
        except MdcoordError as e:
            self.gaps.append({"market": market, "start": pd.Timestamp(lo, unit="ms", tz="UTC"),
                              "end": pd.Timestamp(hi, unit="ms", tz="UTC"), "error": f"{type(e).__name__}: {e}"})
        held, st.held, st.filling = st.held, [], None
        merged = sorted(rows + held, key=lambda r: (int(r["trade_timestamp"]), int(r["sequential_id"])))
        out = []
        for r in merged:
            if st.fresh(int(r["sequential_id"]), int(r["trade_timestamp"])):
                out.append(r)
                st.last = (int(r["trade_timestamp"]), int(r["sequential_id"]))
        self.filled += sum(1 for r in out if r.get("stream_type") == "REST")
        if out:
            self._put("trade", out, self.now_ms())

    # -- frames -------------------------------------------------------------------------------------
    def _put(self, kind: str, rows: list[dict[str, Any]], received: int | None) -> None:
        df = frame(kind, rows, received, self.markets)
        meta = {"type": kind, "markets": list(self.markets), "source": self.ws_url, "connections": self.connections}
        if kind == "trade" and self.gaps:
            meta["gaps"] = list(self.gaps)
        df.attrs["mdcoord"] = meta
        self.out.put(df)
        if self.notify is not None:
            self.notify()


def frame(kind: str, rows: list[dict[str, Any]], received: int | None, markets: tuple[str, ...]) -> pd.DataFrame:
    """Messages of one type → the REST frame of that type, plus ``stream_type`` and ``received_at``."""
    at = pd.Timestamp(received, unit="ms", tz="UTC") if received is not None else pd.NaT
    if kind == "trade":
        return _trade_frame(rows, at, markets)
    renamed = [{**r, "market": r["code"]} for r in rows]
    if kind == "ticker":
        df = tickers_to_frame(renamed)
    elif kind == "orderbook":
        df = orderbooks_to_frame(renamed)
    else:
        tf = _timeframe(kind)
        df = index_candles(clean_candles(candle_rows_to_frame(renamed, tf)), markets)
    last_type = {str(r["code"]): str(r.get("stream_type", "")) for r in rows}
    keys = df.index.get_level_values("market") if "market" in (df.index.names or []) else [markets[0]] * len(df)
    df["stream_type"] = pd.array([last_type.get(str(k), "") for k in keys], dtype="str")
    df["received_at"] = pd.Series([at] * len(df), index=df.index, dtype="datetime64[ns, UTC]")
    return df


def _trade_frame(rows: list[dict[str, Any]], at: pd.Timestamp, markets: tuple[str, ...]) -> pd.DataFrame:
    n = len(rows)
    change = np.array([r.get("change") for r in rows], dtype=object)
    cp = np.array([r.get("change_price", np.nan) for r in rows], dtype=np.float64)
    df = pd.DataFrame({
        "market": pd.array([str(r["code"]) for r in rows], dtype="str"),
        "time": pd.to_datetime(np.array([r["trade_timestamp"] for r in rows], dtype=np.int64), unit="ms",
                               utc=True).astype("datetime64[ns, UTC]"),
        "price": np.array([r["trade_price"] for r in rows], dtype=np.float64),
        "volume": np.array([r["trade_volume"] for r in rows], dtype=np.float64),
        "side": pd.array([str(r["ask_bid"]).lower() for r in rows], dtype="str"),
        "sequential_id": np.array([r["sequential_id"] for r in rows], dtype=np.int64),
        "prev_closing_price": np.array([r.get("prev_closing_price", np.nan) for r in rows], dtype=np.float64),
        "change_price": np.where(change == "FALL", -np.abs(cp), np.abs(cp)),  # signed, as REST's trades
        "stream_type": pd.array([str(r.get("stream_type", "")) for r in rows], dtype="str"),
        "received_at": pd.Series([at] * n, dtype="datetime64[ns, UTC]"),
    })
    if len(markets) == 1:
        return df.drop(columns="market").set_index("time")
    return df.set_index(["market", "time"])


async def _resolve(markets: str | Iterable[str], base_url: str, options: dict[str, Any]) -> tuple[str, ...]:
    from ._api import amarkets
    from ._markets import expand_codes

    given = [markets] if isinstance(markets, str) else list(markets)
    if not given or not all(isinstance(m, str) and m for m in given):
        raise InvalidRequestError(f"markets must be codes such as 'KRW-BTC' or a quote currency such as 'KRW', got {markets!r}")
    listing = await amarkets(base_url=base_url, **{**options, "progress": False})
    return tuple(expand_codes(given, listing, base_url))


def _prepare(types: str | Iterable[str], book_depth: int, heartbeat: float, base_url: str | None,
             ws_url: str | None, options: dict[str, Any]) -> tuple[tuple[str, ...], str, str]:
    kinds = _types(types)
    if book_depth not in BOOK_DEPTHS:
        raise InvalidRequestError(f"book_depth must be one of {list(BOOK_DEPTHS)}, got {book_depth!r}")
    if not heartbeat > 0:
        raise InvalidRequestError(f"heartbeat must be > 0 seconds, got {heartbeat!r}")
    with_overrides(get_options(), options)  # a typo'd option is named before anything starts
    rest = resolve_base_url(base_url)
    return kinds, rest, ws_url or ws_url_for(rest)


async def astream(markets: str | Iterable[str], types: str | Iterable[str] = "trade", *, base_url: str | None = None,
                  ws_url: str | None = None, book_depth: int = 30, heartbeat: float = 10.0, fill_gaps: bool = True,
                  **options: Any) -> AsyncIterator[pd.DataFrame]:
    """Live frames of ``types`` (``"trade"``, ``"ticker"``, ``"orderbook"``, ``"candle.1m"``...)
    for ``markets`` (codes, or a quote currency: ``"KRW"``), one DataFrame per type per batch
    received, until the loop is left or the task cancelled (the connection is closed within a
    second). ``df.attrs["mdcoord"]["type"]`` names the type.

    >>> async for df in mdcoord.astream(["KRW-BTC", "KRW-ETH"], ["trade", "ticker"]):
    ...     print(df.attrs["mdcoord"]["type"], len(df))
    """
    kinds, rest, url = _prepare(types, book_depth, heartbeat, base_url, ws_url, options)
    runtime = get_runtime()
    codes = await runtime.arun(_resolve(markets, rest, options))
    producer = _Stream(codes, kinds, base_url=rest, ws_url=url, book_depth=book_depth, heartbeat=heartbeat,
                       fill=fill_gaps, options=options)
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the consumer's loop is gone: nobody waits
            loop.call_soon_threadsafe(ready.set)

    producer.notify = wake
    task = asyncio.run_coroutine_threadsafe(producer.run(), runtime.loop)
    try:
        while True:
            try:
                item = producer.out.get_nowait()
            except _queue.Empty:
                if task.done():
                    task.result()
                    return
                ready.clear()
                if producer.out.empty() and not task.done():
                    await ready.wait()
                continue
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        producer.notify = None
        task.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(_unwound(task)), 2.0)


def _unwound(task: concurrent.futures.Future[Any]) -> concurrent.futures.Future[None]:
    """A future that completes when the producer has unwound (its connection closed), however it ended."""
    done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def _set(_: Any) -> None:
        if not done.done():
            done.set_result(None)

    task.add_done_callback(_set)
    return done


def stream(markets: str | Iterable[str], types: str | Iterable[str] = "trade", *, base_url: str | None = None,
           ws_url: str | None = None, book_depth: int = 30, heartbeat: float = 10.0, fill_gaps: bool = True,
           **options: Any) -> Iterator[pd.DataFrame]:
    """Sync twin of :func:`astream` for scripts: a generator of frames; Ctrl-C or leaving the loop
    stops it (the connection is closed within a second).

    >>> for df in mdcoord.stream("KRW-BTC", "trade"):
    ...     print(df.tail(1))
    """
    kinds, rest, url = _prepare(types, book_depth, heartbeat, base_url, ws_url, options)
    runtime = get_runtime()
    codes = runtime.run(_resolve(markets, rest, options))
    producer = _Stream(codes, kinds, base_url=rest, ws_url=url, book_depth=book_depth, heartbeat=heartbeat,
                       fill=fill_gaps, options=options)
    task = asyncio.run_coroutine_threadsafe(producer.run(), runtime.loop)
    try:
        while True:
            try:
                item = producer.out.get(timeout=0.1)  # short: Ctrl-C is delivered between waits
            except _queue.Empty:
                if task.done():
                    task.result()
                    return
                continue
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(concurrent.futures.TimeoutError):
            _unwound(task).result(timeout=2.0)
