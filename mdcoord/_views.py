"""Live notebook views: a ticker table, an order book, live candles — updated in place, never
blocking the kernel, each with a visible Stop.

Each view runs its stream (:func:`~mdcoord.astream`) on mdcoord's own event-loop thread, so the
notebook's cells stay free while it updates; ``view.frame`` is the current DataFrame at any time
(also outside notebooks), ``view.stop()`` (or the Stop button) closes the connection within a
second. In a notebook the view displays as a widget (ipywidgets: ``pip install
"mdcoord[notebook]"``) redrawn at most ``refresh`` times a second; without ipywidgets it shows the
frame as it was when displayed.

``live_candles`` keeps every closed candle equal to what ``candles()`` returns for it: the
WebSocket pushes the forming candle about once a second, and whether its last push before the
close carries every trade of the interval is not documented, so each candle that closes is
fetched once from REST (one request, through the rate budget) and replaces the streamed one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from abc import ABC, abstractmethod
import contextlib
import threading
import time
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ._exceptions import InvalidRequestError
from ._live import astream
from ._runtime import get_runtime
from ._timeframe import Timeframe

__all__ = ["LiveView", "live_candles", "live_orderbook", "live_tickers"]

_TICKER_COLUMNS = ["trade_price", "signed_change_rate", "signed_change_price", "acc_trade_price_24h",
                   "high_price", "low_price", "trade_timestamp"]
_WS_CANDLE_UNITS = {"1s": "candle.1s", "1m": "candle.1m", "3m": "candle.3m", "5m": "candle.5m", "10m": "candle.10m",
                    "15m": "candle.15m", "30m": "candle.30m", "1h": "candle.60m", "4h": "candle.240m"}


class LiveView(ABC):
    """A frame kept current by a live stream. ``frame``: a copy of its current state;
    ``stop()``: end it; ``running``; ``updates``: frames taken so far; ``error``: what ended it."""

    title = "live"

    def __init__(self, markets: Any, types: tuple[str, ...], *, refresh: float, options: dict[str, Any]) -> None:
        if not refresh > 0:
            raise InvalidRequestError(f"refresh must be > 0 (redraws a second), got {refresh!r}")
        self._markets, self._types, self._options = markets, types, options
        self._interval = 1.0 / refresh
        self._frame = self._empty()
        self.updates = 0
        self.error: BaseException | None = None
        self._stopped = False
        self._widget: Any = None
        self._drawing = threading.RLock()
        self._drawn = 0.0
        self._future: concurrent.futures.Future[None] = asyncio.run_coroutine_threadsafe(self._run(), get_runtime().loop)

    # -- the stream, on mdcoord's loop ---------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._prepare()
            async for df in astream(self._markets, self._types, **self._options):
                await self._take(df)
                self.updates += 1
                self._maybe_draw()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - shown in the view and kept in .error
            self.error = e
        finally:
            await self._cleanup()
            self._stopped = True
            self._draw()

    async def _cleanup(self) -> None:
        """Cancel work of the view's own (live candles: REST fetches of closed candles)."""

    async def _prepare(self) -> None:
        """Anything to fetch before the stream starts (live candles: the recent closed candles)."""

    @abstractmethod
    async def _take(self, df: pd.DataFrame) -> None:
        """Fold one streamed frame into ``self._frame`` (each view its own way)."""

    def _empty(self) -> pd.DataFrame:
        return pd.DataFrame()

    def _shown(self) -> pd.DataFrame:
        """The frame as the view shows it (sorted, trimmed)."""
        return self._frame

    # -- the caller's side ---------------------------------------------------------------------------
    @property
    def frame(self) -> pd.DataFrame:
        return self._shown().copy()

    @property
    def running(self) -> bool:
        return not self._future.done()

    def stop(self, timeout: float = 2.0) -> None:
        """End the stream: its connection is closed when this returns (within ``timeout``)."""
        self._future.cancel()
        with contextlib.suppress(concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
            self._future.result(timeout=timeout)
        deadline = time.monotonic() + timeout
        while not self._stopped and time.monotonic() < deadline:
            time.sleep(0.01)
        self._draw()

    def wait_until(self, predicate: Any, timeout: float = 60.0) -> bool:
        """Block until ``predicate(view)`` holds (for scripts and tests): True, or False when
        ``timeout`` seconds passed first; the error that ended the view is raised."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    # -- display -------------------------------------------------------------------------------------
    def _status(self) -> str:
        state = "stopped" if not self.running else "live"
        if self.error is not None:
            state = f"stopped: {type(self.error).__name__}: {self.error}"
        return f"<b>{self.title}</b> · {state} · {self.updates:,} updates"

    def _html(self) -> str:
        return self._shown().to_html(max_rows=60, float_format=lambda x: f"{x:,.6g}")

    def _maybe_draw(self) -> None:
        now = time.monotonic()
        if now - self._drawn >= self._interval:
            self._drawn = now
            self._draw()

    def _draw(self) -> None:
        w = self._widget
        if w is None:
            return
        with self._drawing:  # the stream's thread and the caller's (stop, first display) both draw
            self._paint(w)

    def _paint(self, w: Any) -> None:
        status, body, _ = w.children
        status.value = self._status()
        body.value = self._html()

    def _build(self) -> Any:
        import ipywidgets as widgets

        button = widgets.Button(description="Stop", button_style="danger", icon="stop")
        button.on_click(lambda _: self.stop())
        return widgets.VBox([widgets.HTML(self._status()), widgets.HTML(self._html()), button])

    def widget(self) -> Any:
        """The ipywidgets box (status, table, Stop), created on first use."""
        with self._drawing:
            if self._widget is None:
                self._widget = self._build()  # published whole: the stream's thread draws it from now on
            return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        try:
            display(self.widget())
        except ImportError:  # no ipywidgets: the frame as it is now
            display(HTML(self._status() + self._html()))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'running' if self.running else 'stopped'}, {self.updates} updates>\n{self._shown()!r}"

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._future.cancel()


class _Tickers(LiveView):
    title = "tickers"

    def __init__(self, markets: Any, sort_by: str, ascending: bool, top: int | None, refresh: float,
                 options: dict[str, Any]) -> None:
        if sort_by not in _TICKER_COLUMNS:
            raise InvalidRequestError(f"sort_by must be one of {_TICKER_COLUMNS}, got {sort_by!r}")
        self._sort, self._ascending, self._top = sort_by, ascending, top
        super().__init__(markets, ("ticker",), refresh=refresh, options=options)

    def _empty(self) -> pd.DataFrame:
        return pd.DataFrame(columns=_TICKER_COLUMNS)

    async def _take(self, df: pd.DataFrame) -> None:
        new = df[_TICKER_COLUMNS]
        frame = self._frame
        frame = new if frame.empty else pd.concat([frame[~frame.index.isin(new.index)], new])
        self._frame = frame

    def _shown(self) -> pd.DataFrame:
        out = self._frame.sort_values(self._sort, ascending=self._ascending, kind="stable")
        return out.head(self._top) if self._top else out


class _Orderbook(LiveView):
    title = "order book"

    async def _take(self, df: pd.DataFrame) -> None:
        self._frame = df.droplevel("market")[["bid_size", "bid_price", "ask_price", "ask_size", "timestamp"]]


class _Candles(LiveView):
    title = "candles"

    def __init__(self, market: str, timeframe: str, count: int, chart: bool, refresh: float,
                 options: dict[str, Any]) -> None:
        tf = Timeframe.parse(timeframe)
        kind = _WS_CANDLE_UNITS.get(tf.value)
        if kind is None:
            raise InvalidRequestError(f"live candles come in {list(_WS_CANDLE_UNITS)}, not {timeframe!r}")
        if not isinstance(market, str) or "-" not in market:
            raise InvalidRequestError(f"live_candles shows one market, such as 'KRW-BTC', got {market!r}")
        if count < 1:
            raise InvalidRequestError(f"count must be >= 1, got {count!r}")
        self._market, self._tf, self._count, self._chart = market.upper(), tf, count, chart
        self.reconciled = 0
        self._pending: set[asyncio.Task[None]] = set()
        super().__init__(market, (kind,), refresh=refresh, options=options)
        self.title = f"{self._market} {tf.value} candles"

    async def _prepare(self) -> None:
        from ._api import acandles

        rest = await acandles(self._market, self._tf, count=self._count, include_forming=True, **self._rest_options())
        rest["closed"] = True
        if len(rest):
            rest.loc[rest.index[-1], "closed"] = False  # the forming one
        self._frame = rest

    async def _take(self, df: pd.DataFrame) -> None:
        rows = df[[c for c in df.columns if c not in ("stream_type", "received_at")]].copy()
        rows["closed"] = False
        frame = self._frame
        newest = rows.index.max()
        closing = [t for t in frame.index[~frame["closed"].astype(bool)] if t < newest]
        frame = pd.concat([frame[~frame.index.isin(rows.index)], rows]).sort_index()
        for t in closing:  # a newer candle started: these closed; REST has their final state
            frame.loc[t, "closed"] = True
            task = asyncio.get_running_loop().create_task(self._reconcile(t))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        self._frame = frame.iloc[-self._count:] if len(frame) > self._count else frame

    async def _reconcile(self, start: pd.Timestamp) -> None:
        """Replace the closed candle at ``start`` by REST's: the newest closed candles by count
        (a count asks the exchange for its now; a start/end range would be judged against the
        last ``Date`` this process saw, which a candle that just closed may be newer than)."""
        from ._api import acandles

        final = None
        for wait in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0):  # REST calls a candle closed once the exchange's
            await asyncio.sleep(wait)  # clock is past it by a settling margin: ask again until it is
            final = await acandles(self._market, self._tf, count=3, **self._rest_options())
            if start in final.index or (len(final) and final.index[-1] > start):
                break
        assert final is not None
        frame = self._frame
        cols = [c for c in final.columns if c in frame.columns]
        for t in final.index.intersection(frame.index):
            if bool(frame.loc[t, "closed"]):
                frame.loc[t, cols] = final.loc[t, cols].to_numpy()
        if start in final.index or (len(final) and final.index[-1] > start):
            self.reconciled += 1  # (no candle at start in REST either: no trade in it)
        self._maybe_draw()

    def _rest_options(self) -> dict[str, Any]:
        stream_only = ("ws_url", "heartbeat", "book_depth", "fill_gaps")
        return {**{k: v for k, v in self._options.items() if k not in stream_only}, "progress": False}

    def closed(self) -> pd.DataFrame:
        """The closed candles (each equal to what ``candles()`` returns for it once reconciled)."""
        f = self._frame
        return f[f["closed"].astype(bool)].drop(columns="closed")

    async def _cleanup(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _build(self) -> Any:
        box = super()._build()
        if not self._chart:
            return box
        import ipywidgets as widgets
        import matplotlib

        matplotlib.use("Agg")  # the chart is drawn off the notebook's thread, as a PNG
        import matplotlib.pyplot  # noqa: F401 - imported here, once, not first from the stream's thread

        self._image = widgets.Image(format="png", value=self._png() if len(self._frame) else b"")
        return widgets.VBox([*box.children[:2], self._image, box.children[2]])

    def _paint(self, w: Any) -> None:
        w.children[0].value = self._status()
        w.children[1].value = self._shown().tail(10).to_html(float_format=lambda x: f"{x:,.6g}")
        image = getattr(self, "_image", None)
        if image is not None and len(self._frame):
            image.value = self._png()

    def _png(self) -> bytes:
        import io

        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3))
        f = self._frame
        ax.plot(f.index, f["close"], lw=1.2)
        ax.set_title(self.title)
        fig.autofmt_xdate()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()


def live_tickers(markets: str | Iterable[str] = "KRW", *, sort_by: str = "signed_change_rate", ascending: bool = False,
                 top: int | None = None, refresh: float = 2.0, **options: Any) -> LiveView:
    """A ticker table of ``markets`` (codes or quote currencies), updated in place, sorted by
    ``sort_by`` (``signed_change_rate``, ``acc_trade_price_24h``, ``trade_price``...), optionally
    the ``top`` rows only. Display it in a notebook; ``.frame`` and ``.stop()`` anywhere."""
    return _Tickers(markets, sort_by, ascending, top, refresh, options)


def live_orderbook(market: str, *, depth: int = 15, refresh: float = 2.0, **options: Any) -> LiveView:
    """The order book of one market (``depth`` 1, 5, 15 or 30 levels), updated in place."""
    if not isinstance(market, str) or "-" not in market:
        raise InvalidRequestError(f"live_orderbook shows one market, such as 'KRW-BTC', got {market!r}")
    if depth not in (1, 5, 15, 30):
        raise InvalidRequestError(f"depth must be 1, 5, 15 or 30 levels (what Upbit's WebSocket sends), got {depth!r}")
    return _Orderbook(market, ("orderbook",), refresh=refresh, options={**options, "book_depth": depth})


def live_candles(market: str, timeframe: str = "1m", *, count: int = 60, chart: bool = True, refresh: float = 1.0,
                 **options: Any) -> Any:
    """Live candles of one market: the ``count`` most recent, the forming one updated as it trades
    and each closed one fetched once from REST (so it equals ``candles()``), with a chart."""
    return _Candles(market, timeframe, count, chart, refresh, options)
