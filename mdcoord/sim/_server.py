"""The aiohttp application: routing, parameter checks, Upbit's errors, limits, faults, log.

One catch-all handler does the routing itself, so unknown paths answer exactly like Upbit's
gateway and every request — routed or not — is logged. The order of work per request:

1. uplink delay (latency/2 ± jitter): bunches arrivals like a real network can;
2. admission: 418 while banned, 429 over the group's limit (the arrival is logged either way);
3. a fault, if one is scripted or drawn;
4. the answer from :class:`SyntheticMarket` (or a 400/404 for bad parameters);
5. log record, then the downlink delay.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from ._clock import parse_to
from ._config import SimConfig
from ._faults import Fault, FaultInjector
from ._interval import MINUTE_UNITS, Kind
from ._limits import RateLimiter
from ._log import RequestLog, RequestRecord
from ._market import SyntheticMarket
from ._ticks import RETENTION_DAYS, parse_time_of_day
from ._websocket import PATH as WS_PATH
from ._websocket import WebSocketHub

JSON_TYPE = "application/json;charset=UTF-8"
MISSING = "Missing request parameter error. Check the required parameters!"
TYPE_MISMATCH = "Type mismatch error. Check the parameters type!"
INVALID = "Invalid parameter. Check the given value!"
BAD_UNIT = "specified unit is not valid."
NOT_FOUND = "Code not found"
TOO_MANY = "Too many API requests."
NO_ROUTE = b'{"error":{"name":"not_found","message":"no Route matched with those values"}}'

_CANDLE_PATH = re.compile(r"^/v1/candles/(seconds|minutes/([^/]+)|days|weeks|months|years)$")
_INT = re.compile(r"[+-]?\d+")
Query = MultiDictProxy[str]  # repeated keys kept: ``markets=A&markets=B`` is a documented form


_QUOTE_ROUTES = {  # path -> (rate-limit group, handler method)
    "/v1/ticker": ("ticker", "_ticker"),
    "/v1/ticker/all": ("ticker", "_ticker_all"),
    "/v1/orderbook": ("orderbook", "_orderbook"),
    "/v1/orderbook/instruments": ("orderbook", "_instruments"),
    "/v1/trades/ticks": ("crix-trades", "_trades_ticks"),
}


class ApiError(Exception):
    """An Upbit error answer: ``{"error":{"name":status,"message":...}}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True, slots=True)
class Route:
    group: str
    handler: Callable[[Any], list[dict[str, Any]]]


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _error_body(status: int, message: str) -> bytes:
    return _json({"error": {"name": status, "message": message}})


class Server:
    """Builds the aiohttp app for one exchange; holds no thread or loop of its own."""

    def __init__(self, config: SimConfig, market: SyntheticMarket, limiter: RateLimiter,
                 faults: FaultInjector, log: RequestLog) -> None:
        self.config, self.market, self.limiter, self.faults, self.log = config, market, limiter, faults, log
        self._net = random.Random(config.net_seed if config.net_seed is not None else config.seed + 1_000_003)
        self._pool: ThreadPoolExecutor | None = None
        #: Requests being handled now: received, not yet answered, dropped or abandoned by the
        #: client (a held ``slow`` answer counts until it is sent or its connection closes).
        self.in_progress = 0
        self.ws = WebSocketHub(config, market, log, self._run_model)

    async def _run_model(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def app(self) -> web.Application:
        # The model runs off the loop: a cold request (generating years of history) must not
        # delay the arrival timestamps of other requests, or the limiter would see false bursts.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mdcoord-sim-model")
        app = web.Application()
        app.router.add_get(WS_PATH, self.ws.handle)  # the WebSocket, before the catch-all REST router
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    # ----------------------------------------------------------------- network
    def _delay(self) -> float:
        c = self.config
        if c.latency == 0 and c.jitter == 0:
            return 0.0
        return max(0.0, c.latency / 2 + self._net.uniform(-c.jitter, c.jitter))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_progress += 1  # only this loop's thread writes it
        try:
            return await self._handle(request)
        finally:
            self.in_progress -= 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # The arrival is when the simulated network delivers the request: its receipt plus the
        # uplink delay drawn for it, not whenever this loop wakes from that sleep. A busy machine
        # wakes it late, and those lags (tens to hundreds of ms) would bunch arrivals the client
        # never bunched. Timers fire in deadline order, so requests are still admitted in the
        # order of their arrival stamps.
        arrival = time.monotonic() + self._delay()
        if arrival > time.monotonic():
            await asyncio.sleep(arrival - time.monotonic())
        wall = datetime.now(UTC) - timedelta(seconds=time.monotonic() - arrival)
        params = request.query
        query = {k: ",".join(params.getall(k)) for k in params}  # for the log: repeats joined
        route = self._route(request.method, request.path)

        peername = request.transport.get_extra_info("peername") if request.transport is not None else None
        peer = (str(peername[0]), int(peername[1])) if peername else None

        def record(group: str | None, status: int | None, fault: str | None, rows: int | None) -> None:
            self.log.append(RequestRecord(arrival, wall, request.method, request.path, query, group, status, fault,
                                          rows, peer))

        if route is None:
            record(None, 404, None, None)
            return await self._send(web.Response(status=404, body=NO_ROUTE, content_type="application/json", charset="utf-8"))
        group = "origin" if "Origin" in request.headers else route.group
        verdict = self.limiter.admit(group, arrival, peer[0] if peer else "")  # per IP, as Upbit counts
        headers = {"Remaining-Req": f"group={group}; min=600; sec={verdict.remaining}", "limit-by-ip": "Yes"}
        if verdict.status == 418:
            record(group, 418, None, None)
            return await self._send(self._banned(verdict.ban_seconds or 0.0, headers))
        if verdict.status == 429:
            record(group, 429, None, None)
            return await self._send(self._too_many(headers))
        fault = self.faults.take(route.group)
        if fault is not None:
            return await self._faulty(request, fault, route, params, headers, record, group, peer[0] if peer else "")
        response, rows = await self._answer(route, params, headers)
        record(group, response.status, None, rows)
        return await self._send(response)

    async def _send(self, response: web.StreamResponse) -> web.StreamResponse:
        # The Date header tells the exchange's own (injected) time, as a real server's does;
        # clients read "now" from it (aiohttp only fills Date in when it is absent).
        response.headers["Date"] = format_datetime(self.market.now(), usegmt=True)
        down = self._delay()
        if down:
            await asyncio.sleep(down)
        return response

    # ----------------------------------------------------------------- answers
    async def _answer(self, route: Route, query: Query, headers: dict[str, str]) -> tuple[web.Response, int | None]:
        try:
            rows = await asyncio.get_running_loop().run_in_executor(self._pool, route.handler, query)
        except ApiError as e:
            h = headers if self.config.remaining_req_on_errors else {}
            return web.Response(status=e.status, body=_error_body(e.status, e.message),
                                headers={**h, "Content-Type": JSON_TYPE}), None
        return web.Response(status=200, body=_json(rows), headers={**headers, "Content-Type": JSON_TYPE}), len(rows)

    def _too_many(self, headers: dict[str, str]) -> web.Response:
        h = headers if self.config.remaining_req_on_errors else {}
        if self.config.plain_text_429:
            return web.Response(status=429, text=TOO_MANY, headers=h)
        return web.Response(status=429, body=_error_body(429, TOO_MANY), headers={**h, "Content-Type": JSON_TYPE})

    def _banned(self, seconds: float, headers: dict[str, str]) -> web.Response:
        whole = max(1, int(seconds + 0.999))
        h = headers if self.config.remaining_req_on_errors else {}
        message = f"Too many requests. Your IP is blocked for {whole} seconds."
        return web.Response(status=418, body=_error_body(418, message),
                            headers={**h, "Retry-After": str(whole), "Content-Type": JSON_TYPE})

    async def _faulty(self, request: web.Request, fault: Fault, route: Route, query: Query,
                      headers: dict[str, str], record: Callable[..., None], group: str,
                      address: str = "") -> web.StreamResponse:
        kind, p = fault.kind, fault.params
        if kind == "drop":
            record(group, None, kind, None)
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError  # nothing to send; aiohttp ends the handler quietly
        if kind == "slow":
            response, rows = await self._answer(route, query, headers)
            record(group, response.status, kind, rows)  # logged now: the client may give up
            await asyncio.sleep(float(p.get("delay", self.config.slow_delay)))
            return await self._send(response)
        if kind == "server_error":
            status = int(p.get("status", 500))
            if p.get("body", "json") == "html":
                body = f"<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>"
                response = web.Response(status=status, text=body, content_type="text/html")
            else:
                response = web.Response(status=status, body=_error_body(status, "Internal server error"),
                                        headers={"Content-Type": JSON_TYPE})
        elif kind == "malformed":
            response = web.Response(status=200, body=b"\x00{garbage]]: not json <<", headers={**headers, "Content-Type": JSON_TYPE})
        elif kind == "truncated":
            ok, _ = await self._answer(route, query, headers)
            body = ok.body if isinstance(ok.body, bytes) and len(ok.body) > 2 else b'[{"market":"KRW-BTC","candle'
            response = web.Response(status=200, body=body[: max(1, len(body) // 2)], headers={**headers, "Content-Type": JSON_TYPE})
        elif kind == "html":
            response = web.Response(status=200, text="<!DOCTYPE html><html><body>Upbit maintenance</body></html>",
                                    content_type="text/html", headers=headers)
        elif kind == "rate_limited":
            response = web.Response(status=429, text=TOO_MANY, headers=headers)
        else:  # ban
            seconds = self.limiter.ban(time.monotonic(), p.get("seconds"), address)
            response = self._banned(seconds, headers)
        record(group, response.status, kind, None)
        return await self._send(response)

    # ----------------------------------------------------------------- routing
    def _route(self, method: str, path: str) -> Route | None:
        if method != "GET":
            return None
        if path == "/v1/market/all":
            return Route("market", self._market_all)
        quotes = _QUOTE_ROUTES.get(path)
        if quotes is not None:
            group, name = quotes
            return Route(group, getattr(self, name))
        m = _CANDLE_PATH.match(path)
        if m is None:
            return None
        kind = m.group(1).split("/")[0]
        unit = m.group(2)
        return Route("candles", lambda q: self._candles(q, Kind(kind), unit))

    def _market_all(self, q: Query) -> list[dict[str, Any]]:
        raw = q.get("is_details", q.get("isDetails", "false")).strip().lower()
        if raw not in ("true", "false", ""):
            raise ApiError(400, TYPE_MISMATCH)
        return self.market.market_rows(details=raw == "true")

    def _candles(self, q: Query, kind: Kind, unit_text: str | None) -> list[dict[str, Any]]:
        market = q.get("market")
        if market is None:
            raise ApiError(400, MISSING)
        raw_count = q.get("count", "").strip()
        if raw_count and not re.fullmatch(r"[+-]?\d+", raw_count):
            raise ApiError(400, TYPE_MISMATCH)
        unit = 1
        if kind is Kind.MINUTES:
            if unit_text is None or not unit_text.isdigit() or int(unit_text) not in MINUTE_UNITS:
                raise ApiError(400, BAD_UNIT)
            unit = int(unit_text)
        to_ms = None
        raw_to = q.get("to", "")
        if raw_to:
            try:
                to_ms = parse_to(raw_to)
            except ValueError:
                raise ApiError(400, INVALID) from None
        count = int(raw_count) if raw_count else 1
        if count <= 0:
            raise ApiError(400, INVALID)
        convert = None
        if kind is Kind.DAYS and "converting_price_unit" in q:
            convert = q["converting_price_unit"].strip().upper()
            if convert != "KRW":
                raise ApiError(400, INVALID)
        code = self.market.resolve(market)
        if code is None:
            raise ApiError(404, NOT_FOUND)
        return self.market.latest_candles(code, kind, unit, to_ms, min(count, 200), converting_price_unit=convert)

    # ------------------------------------------------------------- quotations
    def _markets(self, q: Query, name: str = "markets") -> list[str]:
        """Canonical codes of a multi-value parameter (comma-joined and/or repeated), deduplicated."""
        raw = [part.strip() for value in q.getall(name, []) for part in value.split(",")]
        raw = [r for r in raw if r]
        if not raw:
            raise ApiError(400, MISSING)
        return list(dict.fromkeys(self._code(r) for r in raw))

    def _code(self, text: str) -> str:
        code = self.market.resolve(text)
        if code is None:
            raise ApiError(404, NOT_FOUND)
        return code

    def _ticker(self, q: Query) -> list[dict[str, Any]]:
        return self.market.tickers(self._markets(q))

    def _ticker_all(self, q: Query) -> list[dict[str, Any]]:
        quotes = [part.strip().upper() for value in q.getall("quote_currencies", []) for part in value.split(",")]
        quotes = list(dict.fromkeys(x for x in quotes if x))
        if not quotes:
            raise ApiError(400, MISSING)
        codes: list[str] = []
        for quote in quotes:  # quote by quote as asked; within one, /market/all's order
            served = [row["market"] for row in self.market.market_rows() if row["market"].startswith(quote + "-")]
            if not served:
                raise ApiError(404, NOT_FOUND)  # unconfirmed: what Upbit does for an unknown quote
            codes += served
        return self.market.tickers(codes)

    def _orderbook(self, q: Query) -> list[dict[str, Any]]:
        if not any(v.strip() for v in q.getall("markets", [])):
            raise ApiError(400, MISSING)
        count = _int(q, "count")
        level = 0.0
        raw_level = q.get("level", "").strip()
        if raw_level:
            try:
                level = float(raw_level)
            except ValueError:
                raise ApiError(400, TYPE_MISMATCH) from None
            if not math.isfinite(level):
                raise ApiError(400, TYPE_MISMATCH)
        codes = self._markets(q)
        rows = [self.market.orderbook(code, 30 if count is None else count, level) for code in codes]
        if any(row is None for row in rows):
            return []  # a level one of the markets does not support: nothing at all
        return rows  # type: ignore[return-value]

    def _instruments(self, q: Query) -> list[dict[str, Any]]:
        return [self.market.orderbook_instrument(code) for code in self._markets(q)]

    def _trades_ticks(self, q: Query) -> list[dict[str, Any]]:
        market = q.get("market", "").strip()
        if not market:
            raise ApiError(400, MISSING)
        count, cursor, days_ago = _int(q, "count"), _int(q, "cursor"), _int(q, "days_ago")
        to = q.get("to", "").strip() or None
        if to is not None:
            try:
                parse_time_of_day(to)
            except ValueError:
                raise ApiError(400, INVALID) from None
        if (days_ago is not None and not 1 <= days_ago <= RETENTION_DAYS) or (count is not None and count < 1):
            raise ApiError(400, INVALID)
        return self.market.ticks(self._code(market), to=to, count=1 if count is None else count,
                                 cursor=cursor, days_ago=days_ago)


def _int(q: Query, name: str) -> int | None:
    """An optional integer parameter (empty = absent); 400 type mismatch if not an integer."""
    raw = q.get(name, "").strip()
    if not raw:
        return None
    if not _INT.fullmatch(raw):
        raise ApiError(400, TYPE_MISMATCH)
    return int(raw)
