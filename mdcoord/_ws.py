"""Layer 1's second channel: Upbit's quotation WebSocket (``wss://api.upbit.com/websocket/v1``).

One :class:`WsChannel` is one connection: it opens under the connection limit (5 new connections
a second per IP: a strict sliding window per (host, local address) shared by every stream of the
process), sends one subscription request, and hands out the decoded messages of each frame. It
keeps the connection alive with PING frames (``heartbeat``), and a connection that stops
answering them (stalled, half-open) is closed by aiohttp after half a heartbeat more.

Everything that can end a connection ends it with :class:`~mdcoord.ConnectionFailedError` (the reason says which:
the server closed it, the network dropped it, a frame that is not JSON arrived — its data lost —,
the heartbeat went unanswered); the caller decides whether to reconnect. An error answer of the
exchange (``{"error": {"name": "NO_CODES", ...}}``) is a :class:`~mdcoord.StreamError`: the
request itself was wrong and sending it again would not help.

Frames are binary (UTF-8 JSON, as Upbit is reported to send) or text; a frame holds one message
(DEFAULT, SIMPLE) or a list of them (JSON_LIST, SIMPLE_LIST); SIMPLE's abbreviated keys are
expanded here, so everything above sees the DEFAULT names.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from ._exceptions import ConnectionFailedError, InvalidRequestError, ResponseFormatError, StreamError
from ._limiter import SlidingWindowLimiter
from ._version import __version__

__all__ = ["CONNECT_LIMIT", "closed", "Subscription", "WsChannel", "decode", "ws_url_for"]

CONNECT_LIMIT = 5  # new connections per second per IP (unauthenticated)
CANDLE_TYPES = ("candle.1s", "candle.1m", "candle.3m", "candle.5m", "candle.10m", "candle.15m", "candle.30m",
                "candle.60m", "candle.240m")
TYPES = ("trade", "ticker", "orderbook", *CANDLE_TYPES)
BOOK_DEPTHS = (1, 5, 15, 30)

# SIMPLE → DEFAULT (the abbreviations are distinct across types; orderbook units have their own)
_LONG = {
    "ty": "type", "cd": "code", "st": "stream_type", "tms": "timestamp",
    "tp": "trade_price", "tv": "trade_volume", "ab": "ask_bid", "pcp": "prev_closing_price", "c": "change",
    "cp": "change_price", "td": "trade_date", "ttm": "trade_time", "ttms": "trade_timestamp", "sid": "sequential_id",
    "bap": "best_ask_price", "bas": "best_ask_size", "bbp": "best_bid_price", "bbs": "best_bid_size",
    "op": "opening_price", "hp": "high_price", "lp": "low_price", "scp": "signed_change_price", "cr": "change_rate",
    "scr": "signed_change_rate", "atv": "acc_trade_volume", "atv24h": "acc_trade_volume_24h", "atp": "acc_trade_price",
    "atp24h": "acc_trade_price_24h", "tdt": "trade_date", "aav": "acc_ask_volume", "abv": "acc_bid_volume",
    "h52wp": "highest_52_week_price", "h52wdt": "highest_52_week_date", "l52wp": "lowest_52_week_price",
    "l52wdt": "lowest_52_week_date", "ms": "market_state", "its": "is_trading_suspended", "dd": "delisting_date",
    "mw": "market_warning", "tas": "total_ask_size", "tbs": "total_bid_size", "obu": "orderbook_units", "lv": "level",
    "cdttmu": "candle_date_time_utc", "cdttmk": "candle_date_time_kst", "catv": "candle_acc_trade_volume",
    "catp": "candle_acc_trade_price",
}
_UNIT_LONG = {"ap": "ask_price", "bp": "bid_price", "as": "ask_size", "bs": "bid_size"}


def closed(reason: str) -> ConnectionFailedError:
    """The connection ended (the message says how): a :class:`ConnectionFailedError`, which the
    stream answers by reconnecting."""
    return ConnectionFailedError(reason)


def ws_url_for(base_url: str) -> str:
    """The WebSocket URL beside a REST base URL: ``https://api.upbit.com/v1`` →
    ``wss://api.upbit.com/websocket/v1`` (``http`` → ``ws``)."""
    parts = urlsplit(base_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme)
    if scheme is None:
        raise InvalidRequestError(f"cannot derive a WebSocket URL from base_url {base_url!r}; give ws_url=")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1") + "/websocket/v1"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def _expand(message: dict[str, Any]) -> dict[str, Any]:
    if "ty" not in message:
        return message
    out = {_LONG.get(k, k): v for k, v in message.items()}
    units = out.get("orderbook_units")
    if units:
        out["orderbook_units"] = [{_UNIT_LONG.get(k, k): v for k, v in u.items()} for u in units]
    return out


def decode(data: str | bytes) -> list[dict[str, Any]]:
    """The messages of one frame, in DEFAULT names. ``ValueError`` (not JSON) or
    :class:`ResponseFormatError` (JSON of another shape) otherwise."""
    payload = json.loads(data)
    items = payload if isinstance(payload, list) else [payload]
    if not all(isinstance(m, dict) for m in items):
        raise ResponseFormatError("a frame holds a JSON object or a list of objects")
    return [_expand(m) for m in items]


@dataclass(frozen=True)
class Subscription:
    """One type object of a request: ``type`` and its ``codes`` (orderbook codes may carry ``.depth``)."""

    type: str
    codes: tuple[str, ...]
    snapshot: bool = True
    realtime: bool = True

    def as_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {"type": self.type, "codes": list(self.codes)}
        if not self.snapshot:
            item["is_only_realtime"] = True
        if not self.realtime:
            item["is_only_snapshot"] = True
        return item


def request_body(subscriptions: Iterable[Subscription], fmt: str = "DEFAULT") -> str:
    items: list[dict[str, Any]] = [{"ticket": f"mdcoord-{uuid.uuid4().hex[:16]}"}]
    items += [s.as_json() for s in subscriptions]
    items.append({"format": fmt})
    return json.dumps(items, separators=(",", ":"))


_connect_limiters: dict[tuple[str, str | None], SlidingWindowLimiter] = {}


def _connect_limiter(url: str, local_address: str | None) -> SlidingWindowLimiter:
    key = (urlsplit(url).netloc, local_address)
    limiter = _connect_limiters.get(key)
    if limiter is None:
        limiter = _connect_limiters[key] = SlidingWindowLimiter(CONNECT_LIMIT, 1.0)
    return limiter


class WsChannel:
    """One WebSocket connection with one subscription. Use on one event loop::

        channel = WsChannel(url, subscriptions)
        await channel.open()
        async for messages in channel:   # the messages of one frame
            ...
        await channel.close()
    """

    def __init__(self, url: str, subscriptions: Iterable[Subscription], *, fmt: str = "DEFAULT",
                 heartbeat: float = 10.0, connect_timeout: float = 10.0, local_address: str | None = None) -> None:
        self.url, self.subscriptions, self.fmt = url, tuple(subscriptions), fmt
        self.heartbeat, self.connect_timeout, self.local_address = heartbeat, connect_timeout, local_address
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.frames = 0

    async def open(self) -> None:
        """Connect (under the connection limit) and subscribe. :class:`~mdcoord.ConnectionFailedError` when the
        connection cannot be made (refused, 429 at the handshake: retry later); :class:`StreamError`
        for an answer that retrying will not change (404: no WebSocket at this URL)."""
        limiter = _connect_limiter(self.url, self.local_address)
        permit = await limiter.acquire()
        limiter.mark_sent(permit)
        connector = aiohttp.TCPConnector(local_addr=(self.local_address, 0) if self.local_address else None)
        self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": f"mdcoord/{__version__}"},
                                              skip_auto_headers=("Origin",))
        try:
            self._ws = await self._session.ws_connect(
                self.url, heartbeat=self.heartbeat, autoping=True, max_msg_size=16 << 20,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=0.5),
                compress=0,
            )
        except aiohttp.WSServerHandshakeError as e:
            await self.close()
            if e.status in (404, 400, 403):
                raise StreamError(f"the WebSocket at {self.url} answered HTTP {e.status} at the handshake") from None
            raise closed(f"handshake refused: HTTP {e.status}") from None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            await self.close()
            raise closed(f"cannot connect: {type(e).__name__}: {e}") from None
        try:
            await self._ws.send_str(request_body(self.subscriptions, self.fmt))
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as e:
            await self.close()
            raise closed(f"the connection ended while subscribing: {e}") from None
        self._keepalive = asyncio.get_running_loop().create_task(self._ping(self._ws))

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """A PING frame every heartbeat, whatever arrives: aiohttp's own heartbeat pings only
        after a quiet heartbeat, so a busy stream would send nothing, and Upbit (like the
        embedded exchange) closes a connection its client has been silent on for ~120 s."""
        while not ws.closed:
            await asyncio.sleep(self.heartbeat)
            try:
                await ws.ping()
            except (aiohttp.ClientError, ConnectionError, RuntimeError):
                return

    def __aiter__(self) -> WsChannel:
        return self

    async def __anext__(self) -> list[dict[str, Any]]:
        ws = self._ws
        if ws is None:
            raise closed("not connected")
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                try:
                    messages = decode(msg.data)
                except (ValueError, UnicodeDecodeError, ResponseFormatError):
                    raise closed("a frame that is not JSON arrived (its data is lost)") from None
                self.frames += 1
                if len(messages) == 1 and "error" in messages[0]:
                    err = messages[0]["error"] or {}
                    raise StreamError(f"the exchange refused the subscription: {err.get('name')}: {err.get('message')}")
                if len(messages) == 1 and "status" in messages[0] and "type" not in messages[0]:
                    continue  # {"status": "UP"}: an answer to a text PING
                return messages
            if msg.type == aiohttp.WSMsgType.CLOSE:
                raise closed(f"the exchange closed the connection (code {msg.data}: {msg.extra or ''})")
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                reason = "no answer to PING: the connection stalled" if ws.close_code == 1006 and ws.exception() is None \
                    else "the connection dropped"
                raise closed(reason)
            if msg.type == aiohttp.WSMsgType.ERROR:
                raise closed(f"the connection failed: {ws.exception()}")

    async def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The messages of every frame that arrived together, as one list: a reader task drains
        all the frames already received before it yields control, so a busy connection gives
        few large batches and a quiet one each frame at once. Ends as iteration does."""
        pending: list[dict[str, Any]] = []
        wake = asyncio.Event()
        failure: list[BaseException] = []

        async def read() -> None:
            try:
                async for messages in self:
                    pending.extend(messages)
                    wake.set()
            except BaseException as e:  # noqa: BLE001 - handed to the consumer below
                failure.append(e)
                wake.set()

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while True:
                await wake.wait()
                wake.clear()
                if pending:
                    batch = pending[:]
                    pending.clear()
                    yield batch
                if failure and not pending:
                    raise failure[0]
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def close(self) -> None:
        """Close (at most about half a second even if the exchange does not answer the close)."""
        ws, session, keepalive = self._ws, self._session, self._keepalive
        self._ws = self._session = self._keepalive = None
        if keepalive is not None:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
        if ws is not None and not ws.closed:
            try:
                await asyncio.wait_for(ws.close(), 1.0)
            except (asyncio.TimeoutError, aiohttp.ClientError, ConnectionError, RuntimeError):
                pass
        if session is not None:
            await session.close()
