"""The embedded exchange's ``/websocket/v1`` (issue 15, item 1): consistent with its REST answers,
in every format, with snapshots, errors, keep-alive, limits and faults. A real aiohttp WebSocket
client against the real server; every wait is for an event (a frame, a close), bounded by a
timeout that only a hang reaches."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from mdcoord.sim import Exchange, SimConfig
from mdcoord.sim._clock import Clock, dt_to_ms, ms_to_dt
from mdcoord.sim._websocket import parse_request

from .conftest import HORIZON, NOW, get

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def roomy() -> Iterator[Exchange]:
    """One exchange for many short connections (its connection limit out of the way)."""
    with Exchange(running(ws_connect_limit=1000)) as ex:
        yield ex


def running(**kw: Any) -> SimConfig:
    """A running clock, 60 x the wall clock: a minute of trading a second."""
    base: dict[str, Any] = dict(seed=7, now=NOW, frozen=False, speed=60.0, seconds_horizon_days=HORIZON)
    base.update(kw)
    return SimConfig(**base)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))  # type: ignore[arg-type]


@asynccontextmanager
async def connect(url: str, **kw: Any) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as s, s.ws_connect(url, **{"autoping": True, **kw}) as ws:
        yield ws


def request(*types: dict[str, Any], fmt: str | None = None, ticket: str = "test") -> str:
    items: list[dict[str, Any]] = [{"ticket": ticket}, *types]
    if fmt is not None:
        items.append({"format": fmt})
    return json.dumps(items)


async def frames(ws: aiohttp.ClientWebSocketResponse, until: Callable[[list[Any]], bool]) -> list[Any]:
    """Decoded data frames until ``until(frames)`` holds."""
    got: list[Any] = []
    while not until(got):
        msg = await ws.receive(timeout=TIMEOUT)
        assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), msg
        got.append(json.loads(msg.data))
    return got


def test_trades_are_the_rest_trades_and_snapshots_come_first() -> None:
    """Every REALTIME trade of a span is a /trades/ticks trade (same sequential_id, price, volume,
    side), none missing between the first and the last, oldest first; each subscription's
    SNAPSHOT comes before its REALTIME messages, and frames are binary."""
    markets = ["KRW-BTC", "KRW-ETH", "KRW-XRP"]

    async def main(ex: Exchange) -> tuple[list[dict[str, Any]], set[aiohttp.WSMsgType]]:
        kinds = set()
        got: list[dict[str, Any]] = []
        async with connect(ex.ws_url) as ws:
            await ws.send_str(request({"type": "trade", "codes": markets}))
            while sum(1 for m in got if m["stream_type"] == "REALTIME") < 600:
                msg = await ws.receive(timeout=TIMEOUT)
                kinds.add(msg.type)
                got.append(json.loads(msg.data))
        return got, kinds

    with Exchange(running()) as ex:
        got, kinds = run(main(ex))
        assert kinds == {aiohttp.WSMsgType.BINARY}
        snaps = [m for m in got if m["stream_type"] == "SNAPSHOT"]
        assert [m["code"] for m in snaps] == markets and got[:3] == snaps
        live = [m for m in got if m["stream_type"] == "REALTIME"]
        for market in markets:
            mine = [m for m in live if m["code"] == market]
            assert mine, market
            assert [m["trade_timestamp"] for m in mine] == sorted(m["trade_timestamp"] for m in mine)
            lo, hi = mine[0]["trade_timestamp"], mine[-1]["trade_timestamp"]
            truth = list(reversed(ex.market.trade_rows(market, ms_to_dt(lo), ms_to_dt(hi + 1))))
            assert [m["sequential_id"] for m in mine] == [t["sequential_id"] for t in truth]
            assert [(m["trade_price"], m["trade_volume"], m["ask_bid"]) for m in mine] == [
                (t["trade_price"], t["trade_volume"], t["ask_bid"]) for t in truth]
            # and the REST endpoint itself serves them (today's, newest first)
            rest = get(ex.base_url, f"/trades/ticks?market={market}&count=500").json()
            ids = {t["sequential_id"] for t in rest}
            assert {m["sequential_id"] for m in mine if m["sequential_id"] >= min(ids)} <= ids


def test_every_type_in_every_format() -> None:
    """DEFAULT and SIMPLE (one object a frame), JSON_LIST and SIMPLE_LIST (arrays); SIMPLE keys
    are Upbit's abbreviations; an orderbook code's depth suffix sets the units; candle messages
    carry the REST candle's fields."""
    subs = [{"type": "ticker", "codes": ["KRW-BTC"]}, {"type": "trade", "codes": ["KRW-BTC"]},
            {"type": "orderbook", "codes": ["KRW-BTC.5"]}, {"type": "candle.1m", "codes": ["KRW-BTC"]}]

    async def main(ex: Exchange, fmt: str) -> list[Any]:
        async with connect(ex.ws_url) as ws:
            await ws.send_str(request(*subs, fmt=fmt))
            return await frames(ws, lambda got: len(got) >= 6)

    with Exchange(running()) as ex:
        default = run(main(ex, "DEFAULT"))
        assert all(isinstance(f, dict) for f in default)
        by_type = {f["type"]: f for f in default}
        assert set(by_type) >= {"ticker", "trade", "orderbook", "candle.1m"}
        assert len(by_type["orderbook"]["orderbook_units"]) == 5
        assert set(by_type["orderbook"]["orderbook_units"][0]) == {"ask_price", "bid_price", "ask_size", "bid_size"}
        assert {"trade_price", "sequential_id", "best_ask_price", "trade_timestamp", "change"} <= set(by_type["trade"])
        assert {"acc_trade_price_24h", "signed_change_rate", "acc_ask_volume", "market_state"} <= set(by_type["ticker"])
        assert {"candle_date_time_utc", "opening_price", "candle_acc_trade_volume"} <= set(by_type["candle.1m"])

        simple = run(main(ex, "SIMPLE"))
        assert all(isinstance(f, dict) and "ty" in f and "cd" in f and "st" in f for f in simple)
        trade = next(f for f in simple if f["ty"] == "trade")
        assert {"tp", "tv", "ab", "sid", "ttms", "tms"} <= set(trade)
        book = next(f for f in simple if f["ty"] == "orderbook")
        assert set(book["obu"][0]) == {"ap", "bp", "as", "bs"}

        for fmt, key in (("JSON_LIST", "type"), ("SIMPLE_LIST", "ty")):
            listed = run(main(ex, fmt))
            assert all(isinstance(f, list) and f and all(key in m for m in f) for f in listed), fmt


def test_only_snapshot_only_realtime_and_text_frames() -> None:
    async def snapshot_only(ex: Exchange) -> list[Any]:
        async with connect(ex.ws_url) as ws:
            await ws.send_str(request({"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"], "is_only_snapshot": True}))
            got = await frames(ws, lambda got: len(got) >= 2)
            # then nothing for this type: a PING's answer is the next frame
            await ws.send_str("PING")
            got += await frames(ws, lambda more: len(more) >= 1)
            return got

    async def realtime_only(ex: Exchange) -> tuple[list[Any], set[aiohttp.WSMsgType]]:
        async with connect(ex.ws_url) as ws:
            await ws.send_str(request({"type": "trade", "codes": ["KRW-BTC"], "is_only_realtime": True}))
            msg = await ws.receive(timeout=TIMEOUT)
            return [json.loads(msg.data)], {msg.type}

    with Exchange(running(speed=1.0)) as ex:
        got = run(snapshot_only(ex))
        assert [f.get("stream_type") for f in got[:2]] == ["SNAPSHOT", "SNAPSHOT"] and got[2] == {"status": "UP"}
    with Exchange(running(ws_binary=False)) as ex:
        got, kinds = run(realtime_only(ex))
        assert got[0]["stream_type"] == "REALTIME" and kinds == {aiohttp.WSMsgType.TEXT}


@pytest.mark.parametrize(("payload", "name"), [
    ("not json", "WRONG_FORMAT"), ('{"ticket": "x"}', "WRONG_FORMAT"), ("[1, 2]", "WRONG_FORMAT"),
    ('[{"type": "trade", "codes": ["KRW-BTC"]}]', "NO_TICKET"),
    ('[{"ticket": "x"}, {"format": "DEFAULT"}]', "NO_TYPE"),
    ('[{"ticket": "x"}, {"type": "trade"}]', "NO_CODES"), ('[{"ticket": "x"}, {"type": "trade", "codes": []}]', "NO_CODES"),
    ('[{"ticket": "x"}, {"type": "trade", "codes": ["krw-btc"]}]', "INVALID_PARAM"),
    ('[{"ticket": "x"}, {"type": "candle.2m", "codes": ["KRW-BTC"]}]', "INVALID_PARAM"),
    ('[{"ticket": "x"}, {"type": "trade", "codes": ["KRW-BTC"]}, {"format": "XML"}]', "INVALID_PARAM"),
])
def test_bad_requests_get_upbits_errors_and_the_connection_stays(roomy: Exchange, payload: str, name: str) -> None:
    async def main() -> tuple[Any, Any]:
        async with connect(roomy.ws_url) as ws:
            await ws.send_str(payload)
            error = (await frames(ws, lambda got: len(got) >= 1))[0]
            await ws.send_str("PING")
            return error, (await frames(ws, lambda got: len(got) >= 1))[0]

    error, pong = run(main())
    assert error["error"]["name"] == name and error["error"]["message"]
    assert pong == {"status": "UP"}
    with pytest.raises(Exception):
        parse_request(payload)


def test_keepalive_idle_close_and_ping_frames() -> None:
    """An idle connection (no frame from the client) is closed after ws_idle_timeout; one that
    sends PING frames stays open, and each PING frame is answered with a PONG."""
    async def idle(ex: Exchange) -> aiohttp.WSMessage:
        async with connect(ex.ws_url) as ws:
            return await ws.receive(timeout=TIMEOUT)

    async def pinging(ex: Exchange) -> tuple[int, bool]:
        async with connect(ex.ws_url, autoping=False) as ws:
            pongs = 0
            for _ in range(6):  # 6 x 0.2 s: past the 0.5 s idle timeout
                await ws.ping(b"hi")
                msg = await ws.receive(timeout=TIMEOUT)
                pongs += msg.type == aiohttp.WSMsgType.PONG
                await asyncio.sleep(0.2)
            return pongs, ws.closed

    with Exchange(running(ws_idle_timeout=0.5)) as ex:
        closed = run(idle(ex))
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and closed.data == 1000
        assert run(pinging(ex)) == (6, False)


def test_the_connection_limit_counts_per_client_address() -> None:
    """Five new connections a second per address: the sixth is refused with HTTP 429 at the
    handshake, while another address still connects; the log records each attempt."""
    async def burst(ex: Exchange) -> tuple[list[int], int]:
        statuses = []
        async with aiohttp.ClientSession() as s:
            opened = []
            for _ in range(6):
                try:
                    opened.append(await s.ws_connect(ex.ws_url))
                    statuses.append(101)
                except aiohttp.WSServerHandshakeError as e:
                    statuses.append(e.status)
            other = 0
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as s2:
                async with s2.ws_connect(ex.ws_url) as ws:
                    other = 101 if not ws.closed else 0
            for ws in opened:
                await ws.close()
        return statuses, other

    with Exchange(running(ws_connect_window=60.0)) as ex:  # a long window: the burst cannot spread out
        statuses, other = run(burst(ex))
        assert statuses == [101] * 5 + [429] and other == 101
        assert ex.count(group="websocket", status=101) == 6 and ex.count(group="websocket", status=429) == 1
        ex.wait_for(lambda: ex.ws_open() == 0, what="every connection closed")


def test_too_many_subscription_requests_close_the_connection() -> None:
    async def main(ex: Exchange) -> aiohttp.WSMessage:
        async with connect(ex.ws_url) as ws:
            for i in range(6):
                await ws.send_str(request({"type": "ticker", "codes": ["KRW-BTC"], "is_only_snapshot": True}, ticket=str(i)))
            while True:
                msg = await ws.receive(timeout=TIMEOUT)
                if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    return msg

    with Exchange(running()) as ex:
        msg = run(main(ex))
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and msg.data == 1008


@pytest.mark.parametrize("kind", ["drop", "stall", "malformed"])
def test_faults(kind: str) -> None:
    """drop: the connection ends without a close frame; stall: frames and pongs stop while the
    connection stays open; malformed: a frame that is not JSON."""
    async def main(ex: Exchange) -> Any:
        async with connect(ex.ws_url, autoping=False) as ws:
            ex.ws_faults.inject(kind, after=5)  # five frames go out, then the fault strikes
            await ws.send_str(request({"type": "trade", "codes": ["KRW-BTC", "KRW-ETH"]}))
            seen = []
            while True:
                try:
                    msg = await ws.receive(timeout=2.0)
                except TimeoutError:
                    await ws.ping(b"?")
                    try:
                        answer = await ws.receive(timeout=1.0)
                    except TimeoutError:
                        return "silent", seen, ws.closed
                    return "answered", seen, answer.type
                if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    try:
                        seen.append(json.loads(msg.data))
                    except ValueError:
                        return "malformed", seen, msg.data
                else:
                    return "ended", seen, msg.type

    with Exchange(running()) as ex:
        outcome, seen, detail = run(main(ex))
        assert len(seen) == 5
        if kind == "drop":
            assert outcome == "ended" and detail in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        elif kind == "stall":
            assert outcome == "silent" and detail is False
        else:
            assert outcome == "malformed"
        assert ex.ws_faults.pending() == 0
        ex.wait_for(lambda: ex.ws_open() == 0 or kind == "stall", what="the connection closed")


def test_closed_candles_carry_the_rest_candle() -> None:
    """When a minute closes, its last candle.1m message equals the REST candle of that minute."""
    async def main(ex: Exchange) -> list[dict[str, Any]]:
        async with connect(ex.ws_url) as ws:
            await ws.send_str(request({"type": "candle.1m", "codes": ["KRW-BTC"]}))
            got = await frames(ws, lambda got: len({m["candle_date_time_utc"] for m in got}) >= 4)
            return got

    with Exchange(running()) as ex:
        got = run(main(ex))
        last: dict[str, dict[str, Any]] = {}
        for m in got:
            last[m["candle_date_time_utc"]] = m  # the last one wins
        starts = sorted(last)[:-1]  # the newest may still be forming
        assert len(starts) >= 3
        for start in starts[1:]:  # the snapshot's minute may have closed before the first push
            # `to` is exclusive: the candle that starts at `start` is the newest before the next minute
            rest = get(ex.base_url, "/candles/minutes/1?market=KRW-BTC&count=1&to="
                       + ms_to_dt(dt_to_ms(start) + 60_000).strftime("%Y-%m-%dT%H:%M:%SZ")).json()[0]
            assert rest["candle_date_time_utc"] == start
            m = last[start]
            assert (m["opening_price"], m["high_price"], m["low_price"], m["trade_price"]) == (
                rest["opening_price"], rest["high_price"], rest["low_price"], rest["trade_price"]), start
            assert m["candle_acc_trade_volume"] == pytest.approx(rest["candle_acc_trade_volume"], rel=1e-12)


def test_the_clock_runs_at_its_speed() -> None:
    ticks = iter([100.0, 100.0, 101.5])
    clock = Clock("2026-11-24T12:00:00Z", speed=60.0, monotonic=lambda: next(ticks))
    assert clock.now_ms() == clock.start_ms
    assert clock.now_ms() - clock.start_ms == 90_000  # 1.5 s of wall clock, 90 s of exchange time
    with pytest.raises(ValueError, match="speed"):
        Clock(None, speed=0)
