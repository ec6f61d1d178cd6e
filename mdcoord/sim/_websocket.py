"""``/websocket/v1``: Upbit's quotation WebSocket, read from the same model as the REST answers.

A client connects, sends one JSON array (a ticket, type objects, a format), and gets for every
(type, code) a ``SNAPSHOT`` message, then ``REALTIME`` ones as the exchange's clock runs: the
very trades ``/trades/ticks`` serves (same ``sequential_id``, price, volume), and after each
market's trades its ticker, book and forming candles as REST would answer at that moment.

What is pushed, per connection, every ``ws_interval`` seconds of wall clock (the sim's clock may
run ``speed`` times faster): for each subscribed market, every trade with a timestamp in
``[last push, now)``, oldest first; if there were any, one ticker and one book message at now;
each subscribed candle type's forming candle at most once a second of exchange time and only
when it traded — and when a candle closed, its final state first (``candle_date_time_utc``
repeats: the last message wins).

Where Upbit's documentation is silent, the sim chooses (docs/sim.md): an unknown code is
ignored; an error answer leaves the connection open; a new request on a connection replaces its
subscription; more subscription requests than allowed close the connection (1008); the
handshake beyond the connection limit is answered HTTP 429; ``best_*`` fields of a trade are
the book's at the moment of the push; ``PING`` is answered ``{"status":"UP"}`` in the data frame
kind. Faults (``ex.ws_faults``): ``drop`` (the TCP connection is cut without a close frame),
``stall`` (the connection goes silent — no data, no pong — until the client gives up),
``malformed`` (a frame that is not JSON, in place of the data it would have carried).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from ._clock import MS_PER_DAY, MS_PER_SECOND, dt_to_ms, ms_to_dt
from ._config import SimConfig
from ._log import RequestLog, RequestRecord
from ._market import SyntheticMarket

PATH = "/websocket/v1"
CANDLE_TYPES = {
    "candle.1s": ("seconds", 1), "candle.1m": ("minutes", 1), "candle.3m": ("minutes", 3),
    "candle.5m": ("minutes", 5), "candle.10m": ("minutes", 10), "candle.15m": ("minutes", 15),
    "candle.30m": ("minutes", 30), "candle.60m": ("minutes", 60), "candle.240m": ("minutes", 240),
}
TYPES = ("ticker", "trade", "orderbook", *CANDLE_TYPES)
FORMATS = ("DEFAULT", "SIMPLE", "JSON_LIST", "SIMPLE_LIST")
BOOK_DEPTHS = (1, 5, 15, 30)
WS_FAULT_KINDS = ("drop", "stall", "malformed")

# SIMPLE format: Upbit's abbreviated keys (orderbook units have their own)
_TICKER_KEYS = {
    "type": "ty", "code": "cd", "opening_price": "op", "high_price": "hp", "low_price": "lp", "trade_price": "tp",
    "prev_closing_price": "pcp", "change": "c", "change_price": "cp", "signed_change_price": "scp",
    "change_rate": "cr", "signed_change_rate": "scr", "trade_volume": "tv", "acc_trade_volume": "atv",
    "acc_trade_volume_24h": "atv24h", "acc_trade_price": "atp", "acc_trade_price_24h": "atp24h",
    "trade_date": "tdt", "trade_time": "ttm", "trade_timestamp": "ttms", "ask_bid": "ab", "acc_ask_volume": "aav",
    "acc_bid_volume": "abv", "highest_52_week_price": "h52wp", "highest_52_week_date": "h52wdt",
    "lowest_52_week_price": "l52wp", "lowest_52_week_date": "l52wdt", "market_state": "ms",
    "is_trading_suspended": "its", "delisting_date": "dd", "market_warning": "mw", "timestamp": "tms",
    "stream_type": "st",
}
_TRADE_KEYS = {
    "type": "ty", "code": "cd", "timestamp": "tms", "trade_date": "td", "trade_time": "ttm", "trade_timestamp": "ttms",
    "trade_price": "tp", "trade_volume": "tv", "ask_bid": "ab", "prev_closing_price": "pcp", "change": "c",
    "change_price": "cp", "sequential_id": "sid", "best_ask_price": "bap", "best_ask_size": "bas",
    "best_bid_price": "bbp", "best_bid_size": "bbs", "stream_type": "st",
}
_BOOK_KEYS = {
    "type": "ty", "code": "cd", "timestamp": "tms", "total_ask_size": "tas", "total_bid_size": "tbs",
    "orderbook_units": "obu", "level": "lv", "stream_type": "st",
}
_UNIT_KEYS = {"ask_price": "ap", "bid_price": "bp", "ask_size": "as", "bid_size": "bs"}
_CANDLE_KEYS = {
    "type": "ty", "code": "cd", "candle_date_time_utc": "cdttmu", "candle_date_time_kst": "cdttmk",
    "opening_price": "op", "high_price": "hp", "low_price": "lp", "trade_price": "tp",
    "candle_acc_trade_volume": "catv", "candle_acc_trade_price": "catp", "timestamp": "tms", "stream_type": "st",
}


class WsError(Exception):
    """A subscription request Upbit answers with ``{"error": {"name": name, "message": ...}}``."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name, self.message = name, message

    def body(self) -> dict[str, Any]:
        return {"error": {"name": self.name, "message": self.message}}


@dataclass(frozen=True)
class Subscription:
    type: str
    codes: tuple[str, ...]  # as sent (upper case; an orderbook code may carry ".depth")
    snapshot: bool = True
    realtime: bool = True


@dataclass(frozen=True)
class SubscribeRequest:
    ticket: str
    subscriptions: tuple[Subscription, ...]
    format: str = "DEFAULT"


def parse_request(text: str | bytes) -> SubscribeRequest:
    """The client's subscription request, or :class:`WsError` named as Upbit names it."""
    try:
        items = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise WsError("WRONG_FORMAT", "the request is not JSON") from None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise WsError("WRONG_FORMAT", "the request must be a JSON array of objects")
    tickets = [i["ticket"] for i in items if "ticket" in i]
    if not tickets or not isinstance(tickets[0], str) or not tickets[0]:
        raise WsError("NO_TICKET", "a ticket field is required")
    fmt = next((i["format"] for i in items if "format" in i), "DEFAULT")
    if fmt not in FORMATS:
        raise WsError("INVALID_PARAM", f"unknown format {fmt!r}")
    typed = [i for i in items if "type" in i]
    if not typed:
        raise WsError("NO_TYPE", "a type field is required")
    subs = []
    for item in typed:
        kind = item["type"]
        if kind not in TYPES:
            raise WsError("INVALID_PARAM", f"unknown type {kind!r}")
        codes = item.get("codes")
        if not codes:
            raise WsError("NO_CODES", "codes are required")
        if not isinstance(codes, list) or not all(isinstance(c, str) and c and c == c.upper() for c in codes):
            raise WsError("INVALID_PARAM", "codes must be a list of upper-case market codes")
        only_snap, only_real = item.get("is_only_snapshot", False), item.get("is_only_realtime", False)
        if not isinstance(only_snap, bool) or not isinstance(only_real, bool):
            raise WsError("INVALID_PARAM", "is_only_snapshot and is_only_realtime must be booleans")
        subs.append(Subscription(kind, tuple(dict.fromkeys(codes)), snapshot=not only_real, realtime=not only_snap))
    return SubscribeRequest(tickets[0], tuple(subs), fmt)


def simple(message: dict[str, Any]) -> dict[str, Any]:
    """A DEFAULT message in SIMPLE keys."""
    kind = message["type"]
    keys = _TRADE_KEYS if kind == "trade" else _TICKER_KEYS if kind == "ticker" else (
        _BOOK_KEYS if kind == "orderbook" else _CANDLE_KEYS)
    out = {keys.get(k, k): v for k, v in message.items()}
    if kind == "orderbook":
        out["obu"] = [{_UNIT_KEYS[k]: v for k, v in u.items()} for u in message["orderbook_units"]]
    return out


class WsFaults:
    """Scripted WebSocket faults: each strikes in place of a data frame, after ``after`` frames
    (of any connection) went out. Thread-safe."""

    def __init__(self) -> None:
        self._queue: deque[list[Any]] = deque()
        self._lock = threading.Lock()

    def inject(self, kind: str, count: int = 1, *, after: int = 0) -> None:
        if kind not in WS_FAULT_KINDS:
            raise ValueError(f"WebSocket fault kind must be one of {WS_FAULT_KINDS}, got {kind!r}")
        if count < 1 or after < 0:
            raise ValueError("count must be >= 1 and after >= 0")
        with self._lock:
            for _ in range(count):
                self._queue.append([kind, after])

    def take(self) -> str | None:
        """The fault for the frame about to go out, if one is due."""
        with self._lock:
            if not self._queue:
                return None
            head = self._queue[0]
            if head[1] > 0:
                head[1] -= 1
                return None
            self._queue.popleft()
            return str(head[0])

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()


@dataclass
class _Feed:
    """What one connection has been sent: per market, trades up to ``mark`` (exclusive)."""

    request: SubscribeRequest
    mark: dict[str, int] = field(default_factory=dict)
    candle_push: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)  # (type, code) -> (ms, start)


class WebSocketHub:
    """Serves ``/websocket/v1`` for one exchange (runs on the exchange's loop)."""

    def __init__(self, config: SimConfig, market: SyntheticMarket, log: RequestLog,
                 run_model: Callable[..., Any]) -> None:
        self.config, self.market, self.log = config, market, log
        self.faults = WsFaults()
        self._run_model = run_model  # runs a model call off the loop
        self._arrivals: dict[str, deque[float]] = {}
        self.open: set[web.WebSocketResponse] = set()
        self.frames_sent = 0

    # ------------------------------------------------------------ the handshake
    async def handle(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        peername = request.transport.get_extra_info("peername") if request.transport is not None else None
        peer = (str(peername[0]), int(peername[1])) if peername else None
        address = peer[0] if peer else ""
        window = self._arrivals.setdefault(address, deque())
        while window and window[0] <= now - self.config.ws_connect_window:
            window.popleft()
        window.append(now)
        status = 429 if len(window) > self.config.ws_connect_limit else 101
        self.log.append(RequestRecord(now, datetime.now(UTC), request.method, request.path, {}, "websocket", status,
                                      None, None, peer))
        if status == 429:
            return web.Response(status=429, text="Too many API requests.")
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        self.open.add(ws)
        try:
            await self._session(ws, request)
        finally:
            self.open.discard(ws)
        return ws

    # ------------------------------------------------------------ a connection
    async def _session(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        c = self.config
        publisher: asyncio.Task[None] | None = None
        stalled = asyncio.Event()
        recent: deque[float] = deque()
        try:
            while True:
                try:
                    msg = await ws.receive(timeout=c.ws_idle_timeout)
                except TimeoutError:
                    if not stalled.is_set():
                        await ws.close(code=1000, message=b"idle")
                    return
                if stalled.is_set():  # a stalled connection reads nothing more, answers nothing
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                        return
                    continue
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                    continue
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    return
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                data = msg.data
                if (data.strip() if isinstance(data, str) else data.strip().decode(errors="replace")) == "PING":
                    await self._send(ws, json.dumps({"status": "UP"}))
                    continue
                t = time.monotonic()
                recent.append(t)
                while recent and recent[0] <= t - 60:
                    recent.popleft()
                if sum(1 for x in recent if x > t - 1) > c.ws_subscribe_limit or len(recent) > c.ws_subscribe_limit_minute:
                    await ws.close(code=1008, message=b"too many subscription requests")
                    return
                try:
                    req = parse_request(data)
                except WsError as e:
                    await self._send(ws, json.dumps(e.body()))
                    continue
                if publisher is not None:
                    publisher.cancel()
                publisher = asyncio.create_task(self._publish(ws, request, req, stalled))
        finally:
            if publisher is not None:
                publisher.cancel()
                await asyncio.gather(publisher, return_exceptions=True)

    async def _send(self, ws: web.WebSocketResponse, text: str) -> None:
        if self.config.ws_binary:
            await ws.send_bytes(text.encode())
        else:
            await ws.send_str(text)

    async def _frame(self, ws: web.WebSocketResponse, request: web.Request, payload: Any,
                     stalled: asyncio.Event) -> bool:
        """Send one data frame, unless a fault strikes instead; False when the connection is gone."""
        fault = self.faults.take()
        if fault == "drop":
            if request.transport is not None:
                request.transport.abort()
            return False
        if fault == "stall":
            stalled.set()
            return False
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        if fault == "malformed":
            text = text[: max(1, len(text) // 2)]  # cut in the middle: not JSON
        await self._send(ws, text)
        self.frames_sent += 1
        return True

    async def _publish(self, ws: web.WebSocketResponse, request: web.Request, req: SubscribeRequest,
                       stalled: asyncio.Event) -> None:
        feed = _Feed(req)
        listed = req.format.endswith("_LIST")
        short = req.format.startswith("SIMPLE")
        try:
            messages = await self._run_model(self._snapshots, feed)
            while not ws.closed:
                if messages:
                    out = [simple(m) if short else m for m in messages]
                    frames = [out] if listed else out
                    for frame in frames:
                        if not await self._frame(ws, request, frame, stalled):
                            return
                await asyncio.sleep(self.config.ws_interval)
                messages = await self._run_model(self._realtime, feed)
        except (ConnectionResetError, RuntimeError):  # the client went away mid-send
            return

    # ------------------------------------------------------------ the messages (model thread)
    def _markets(self, codes: tuple[str, ...]) -> list[tuple[str, int]]:
        """(market, book depth) of the codes the exchange knows, in request order."""
        out = []
        for code in codes:
            base, _, depth = code.partition(".")
            market = self.market.resolve(base)  # None for unknown and delisted codes
            if market is None:
                continue
            d = int(depth) if depth.isdigit() and int(depth) in BOOK_DEPTHS else 30
            out.append((market, d))
        return out

    def _snapshots(self, feed: _Feed) -> list[dict[str, Any]]:
        now = self.market.now_ms()
        out: list[dict[str, Any]] = []
        for sub in feed.request.subscriptions:
            for market, depth in self._markets(sub.codes):
                feed.mark.setdefault(market, now)
                if not sub.snapshot:
                    continue
                if sub.type == "trade":
                    last = self.market.last_trade(market)
                    if last is not None:
                        rows = self.market.trade_rows(market, ms_to_dt(last.ts),
                                                      ms_to_dt(last.ts + 1))
                        if rows:
                            out.append(self._trade(rows[0], now, "SNAPSHOT", self._best(market)))
                elif sub.type == "ticker":
                    out.append(self._ticker(market, now, "SNAPSHOT"))
                elif sub.type == "orderbook":
                    out.append(self._book(market, depth, now, "SNAPSHOT"))
                elif self._has_candle(sub.type, market):
                    msg = self._candle(sub.type, market, now, "SNAPSHOT")
                    feed.candle_push[(sub.type, market)] = (now, msg["candle_date_time_utc"])
                    out.append(msg)
        return out

    def _best(self, market: str) -> dict[str, Any] | None:
        book = self.market.orderbook(market, count=1)
        return book["orderbook_units"][0] if book else None

    def _has_candle(self, kind: str, market: str) -> bool:
        unit_kind, unit = CANDLE_TYPES[kind]
        return bool(self.market.latest_candles(market, unit_kind, unit, count=1))

    def _realtime(self, feed: _Feed) -> list[dict[str, Any]]:
        now = self.market.now_ms()
        out: list[dict[str, Any]] = []
        wanted: dict[str, dict[str, int]] = {}  # market -> {type: depth}
        for sub in feed.request.subscriptions:
            if sub.realtime:
                for market, depth in self._markets(sub.codes):
                    wanted.setdefault(market, {})[sub.type] = depth
        for market, types in wanted.items():
            lo = feed.mark.get(market, now)
            if now <= lo:
                continue
            rows = self.market.trade_rows(market, ms_to_dt(lo),
                                          ms_to_dt(now))
            feed.mark[market] = now
            if not rows:
                continue
            if "trade" in types:
                best = self._best(market)
                out.extend(self._trade(r, now, "REALTIME", best) for r in reversed(rows))
            if "ticker" in types:
                out.append(self._ticker(market, now, "REALTIME"))
            if "orderbook" in types:
                out.append(self._book(market, types["orderbook"], now, "REALTIME"))
            for kind in (t for t in types if t in CANDLE_TYPES):
                out.extend(self._candle_updates(feed, kind, market, now))
        return out

    def _candle_updates(self, feed: _Feed, kind: str, market: str, now: int) -> list[dict[str, Any]]:
        """The forming candle, at most once a second of exchange time; a closed one's final state first."""
        pushed_ms, pushed_start = feed.candle_push.get((kind, market), (0, ""))
        current = self._candle(kind, market, now, "REALTIME")
        out = []
        if pushed_start and current["candle_date_time_utc"] != pushed_start:
            unit_kind, unit = CANDLE_TYPES[kind]
            closed = self.market.latest_candles(market, unit_kind, unit, to=dt_to_ms(pushed_start) + 1, count=1)
            if closed and closed[0]["candle_date_time_utc"] == pushed_start:
                out.append(self._candle_message(kind, closed[0], now, "REALTIME"))
        elif now - pushed_ms < MS_PER_SECOND:
            return out
        out.append(current)
        feed.candle_push[(kind, market)] = (now, current["candle_date_time_utc"])
        return out

    # ------------------------------------------------------------ one message of each type
    @staticmethod
    def _trade(row: dict[str, Any], now: int, stream: str, best: dict[str, Any] | None = None) -> dict[str, Any]:
        change = row["change_price"]
        return {
            "type": "trade", "code": row["market"], "timestamp": now, "trade_date": row["trade_date_utc"],
            "trade_time": row["trade_time_utc"], "trade_timestamp": row["timestamp"], "trade_price": row["trade_price"],
            "trade_volume": row["trade_volume"], "ask_bid": row["ask_bid"], "prev_closing_price": row["prev_closing_price"],
            "change": "RISE" if change > 0 else "FALL" if change < 0 else "EVEN", "change_price": abs(change),
            "sequential_id": row["sequential_id"],
            "best_ask_price": best["ask_price"] if best else None, "best_ask_size": best["ask_size"] if best else None,
            "best_bid_price": best["bid_price"] if best else None, "best_bid_size": best["bid_size"] if best else None,
            "stream_type": stream,
        }

    def _ticker(self, market: str, now: int, stream: str) -> dict[str, Any]:
        row = self.market.ticker(market)
        last = self.market.last_trade(market)
        day = now // MS_PER_DAY * MS_PER_DAY
        tape = self.market.trades(market, ms_to_dt(day), ms_to_dt(now))
        bid = tape.bid.astype(bool)
        msg = {"type": "ticker", "code": market}
        msg.update({k: v for k, v in row.items() if k not in ("market", "trade_date_kst", "trade_time_kst", "timestamp")})
        msg.update({
            "ask_bid": "BID" if last is not None and last.taker_bought else "ASK",
            "acc_ask_volume": round(float(tape.volume[~bid].sum()), 8), "acc_bid_volume": round(float(tape.volume[bid].sum()), 8),
            "market_state": "ACTIVE", "is_trading_suspended": False, "delisting_date": None, "market_warning": "NONE",
            "timestamp": now, "stream_type": stream,
        })
        return msg

    def _book(self, market: str, depth: int, now: int, stream: str) -> dict[str, Any]:
        row = self.market.orderbook(market, count=depth)
        assert row is not None  # level 0 is always supported
        return {
            "type": "orderbook", "code": market, "timestamp": row["timestamp"], "total_ask_size": row["total_ask_size"],
            "total_bid_size": row["total_bid_size"],
            "orderbook_units": [{k: u[k] for k in ("ask_price", "bid_price", "ask_size", "bid_size")}
                                for u in row["orderbook_units"]],
            "level": row["level"], "stream_type": stream,
        }

    def _candle(self, kind: str, market: str, now: int, stream: str) -> dict[str, Any]:
        unit_kind, unit = CANDLE_TYPES[kind]
        row = self.market.latest_candles(market, unit_kind, unit, count=1)[0]
        return self._candle_message(kind, row, now, stream)

    @staticmethod
    def _candle_message(kind: str, row: dict[str, Any], now: int, stream: str) -> dict[str, Any]:
        return {
            "type": kind, "code": row["market"], "candle_date_time_utc": row["candle_date_time_utc"],
            "candle_date_time_kst": row["candle_date_time_kst"], "opening_price": row["opening_price"],
            "high_price": row["high_price"], "low_price": row["low_price"], "trade_price": row["trade_price"],
            "candle_acc_trade_volume": row["candle_acc_trade_volume"],
            "candle_acc_trade_price": row["candle_acc_trade_price"], "timestamp": now, "stream_type": stream,
        }
