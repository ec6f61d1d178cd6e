"""mdcoord.stream / astream against the embedded exchange's WebSocket (issue 15, items 2 and 3).

Everything is checked by events: the frames yielded, the exchange's own trades (its model, the
same tape REST serves), its log of connections, its count of open connections. The exchange's
clock runs ``speed`` times the wall clock, so minutes of trading pass in seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

import mdcoord
from mdcoord import InvalidRequestError, MarketNotFoundError, StreamError
from mdcoord.sim import Exchange, SimConfig
from mdcoord.sim._clock import ms_to_dt

from .conftest import NOW

FIVE = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE"]


def live(**kw: Any) -> SimConfig:
    base: dict[str, Any] = dict(seed=7, now=NOW, frozen=False, speed=20.0)
    base.update(kw)
    return SimConfig(**base)


@pytest.fixture
def running() -> Iterator[Exchange]:
    with Exchange(live()) as ex:
        yield ex


def _truth(ex: Exchange, market: str, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
    rows = ex.market.trade_rows(market, lo.to_pydatetime(), hi.to_pydatetime())
    return pd.DataFrame({"sequential_id": [r["sequential_id"] for r in rows][::-1],
                         "price": [r["trade_price"] for r in rows][::-1],
                         "volume": [r["trade_volume"] for r in rows][::-1]})


def test_trades_of_five_markets_through_three_disconnects_are_the_exchanges_exactly() -> None:
    """Item 3: five markets, two minutes of exchange time, three injected disconnects (a dropped
    connection, a frame that is not JSON, a stalled connection found by the heartbeat): the
    trades yielded for the span equal the exchange's own, in order, none twice; the holes were
    filled from REST (/trades/ticks requests in the log), and four connections were made."""
    with Exchange(live()) as ex:
        ex.ws_faults.inject("drop", after=40)
        ex.ws_faults.inject("malformed", after=40)
        ex.ws_faults.inject("stall", after=40)
        frames = []
        start: pd.Timestamp | None = None
        newest: dict[str, pd.Timestamp] = {}
        for df in mdcoord.stream(FIVE, "trade", base_url=ex.base_url, heartbeat=0.5, progress=False):
            frames.append(df)
            flat = df.reset_index()
            realtime = flat[flat["stream_type"] != "SNAPSHOT"]
            if start is None and len(realtime):
                start = realtime["time"].min()
            for m, t in flat.groupby("market")["time"].max().items():
                newest[m] = max(newest.get(m, t), t)
            if start is not None and len(newest) == 5 and min(newest.values()) >= start + pd.Timedelta(minutes=2) \
                    and ex.ws_faults.pending() == 0:
                break
        assert start is not None
        end = start + pd.Timedelta(minutes=2)
        got = pd.concat([f.reset_index() for f in frames])
        assert ex.count(group="websocket", status=101) == 4  # the first connection and three reconnects
        assert ex.count(path_prefix="/v1/trades/ticks") >= 3  # the holes, from REST
        for m in FIVE:
            mine = got[(got["market"] == m) & (got["time"] >= start) & (got["time"] < end)]
            want = _truth(ex, m, start, end)
            assert len(want) > 20, m
            assert not mine["sequential_id"].duplicated().any(), m
            assert mine["sequential_id"].tolist() == want["sequential_id"].tolist(), m
            assert mine["price"].tolist() == want["price"].tolist() and mine["volume"].tolist() == want["volume"].tolist()
        assert all("gaps" not in f.attrs["mdcoord"] for f in frames)


def test_a_busy_stream_still_pings_and_is_not_closed_as_idle() -> None:
    """The exchange closes a connection whose client sent nothing for ws_idle_timeout (Upbit:
    ~120 s). Data arriving all the time must not stop the client's PINGs (aiohttp's own
    heartbeat only pings after a quiet heartbeat): one connection through 3 idle timeouts."""
    with Exchange(live(ws_idle_timeout=1.0)) as ex:
        t_end = time.monotonic() + 3.5
        for df in mdcoord.stream(FIVE, ["trade", "orderbook"], base_url=ex.base_url, heartbeat=0.3, progress=False):
            if time.monotonic() > t_end:
                break
        assert ex.count(group="websocket", status=101) == 1


def test_each_type_has_the_columns_and_dtypes_of_its_rest_frame(running: Exchange) -> None:
    """Item 2: trade, ticker, orderbook and candle frames look like trades(), tickers(),
    orderbooks() and candles() of the same markets, plus stream_type and received_at."""
    ex = running
    markets = ["KRW-BTC", "KRW-ETH"]
    types = ["trade", "ticker", "orderbook", "candle.1m"]
    seen: dict[str, pd.DataFrame] = {}
    for df in mdcoord.stream(markets, types, base_url=ex.base_url, progress=False):
        seen.setdefault(df.attrs["mdcoord"]["type"], df)
        if len(seen) == len(types):
            break
    rest = {
        "trade": mdcoord.trades(markets, count=5, base_url=ex.base_url, progress=False, cache=False),
        "ticker": mdcoord.tickers(markets, base_url=ex.base_url, progress=False),
        "orderbook": mdcoord.orderbooks(markets, base_url=ex.base_url, progress=False),
        "candle.1m": mdcoord.candles(markets, "1m", count=3, base_url=ex.base_url, progress=False, cache=False),
    }
    for kind, want in rest.items():
        got = seen[kind]
        assert list(got.columns) == [*want.columns, "stream_type", "received_at"], kind
        assert got.index.names == want.index.names, kind
        for c in want.columns:
            assert got[c].dtype == want[c].dtype, (kind, c, got[c].dtype, want[c].dtype)
        assert list(got.index.dtypes if hasattr(got.index, "dtypes") else [got.index.dtype]) == list(
            want.index.dtypes if hasattr(want.index, "dtypes") else [want.index.dtype]), kind
        assert set(got["stream_type"]) <= {"SNAPSHOT", "REALTIME"}
        assert str(got["received_at"].dtype) == "datetime64[ns, UTC]"
        # received on the exchange's clock: no earlier than the data it carries
        assert got["received_at"].notna().all()
    one = next(iter(mdcoord.stream("KRW-BTC", "trade", base_url=ex.base_url, progress=False)))
    assert one.index.name == "time" and "market" not in one.columns  # one market: indexed by time, as trades()


def test_leaving_the_loop_closes_the_connection_within_a_second(running: Exchange) -> None:
    ex = running
    gen = mdcoord.stream(FIVE, ["trade", "orderbook"], base_url=ex.base_url, progress=False)
    next(gen)
    assert ex.ws_open() == 1
    t0 = time.monotonic()
    gen.close()
    ex.wait_for(lambda: ex.ws_open() == 0, timeout=5, what="the stream's connection closed")
    assert time.monotonic() - t0 < 1.0
    sent = ex.ws_frames_sent()
    time.sleep(0.3)
    assert ex.ws_frames_sent() == sent  # no traffic after the stop


def test_ctrl_c_stops_the_stream_within_a_second(running: Exchange) -> None:
    """Ctrl-C (here: the main thread interrupted, as Jupyter's "interrupt kernel" does) while the
    loop waits for the next frame raises KeyboardInterrupt and closes the connection."""
    import _thread
    import signal
    import threading

    ex = running
    old = signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    try:
        frames = 0
        with pytest.raises(KeyboardInterrupt):
            for _ in mdcoord.stream(FIVE, "trade", base_url=ex.base_url, progress=False):
                frames += 1
                if frames == 3:
                    threading.Timer(0.05, _thread.interrupt_main).start()
        t0 = time.monotonic()
        ex.wait_for(lambda: ex.ws_open() == 0, timeout=5, what="the stream's connection closed")
        assert time.monotonic() - t0 < 1.0
    finally:
        signal.signal(signal.SIGINT, old)


def test_the_async_twin_and_cancelling_its_task(running: Exchange) -> None:
    ex = running

    async def consume(got: list[pd.DataFrame]) -> None:
        async for df in mdcoord.astream(["KRW-BTC"], ["ticker", "trade"], base_url=ex.base_url, progress=False):
            got.append(df)

    async def main() -> tuple[list[pd.DataFrame], float]:
        got: list[pd.DataFrame] = []
        task = asyncio.create_task(consume(got))
        while len(got) < 3:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return got, time.monotonic() - t0

    got, took = asyncio.run(main())
    assert {f.attrs["mdcoord"]["type"] for f in got} <= {"ticker", "trade"} and took < 1.0
    ex.wait_for(lambda: ex.ws_open() == 0, timeout=5, what="the stream's connection closed")


def test_a_quote_currency_subscribes_its_markets_on_one_connection(running: Exchange) -> None:
    ex = running
    krw = sorted(mdcoord.markets("KRW", base_url=ex.base_url, progress=False).index)
    seen: set[str] = set()
    for df in mdcoord.stream("KRW", "ticker", base_url=ex.base_url, progress=False):
        seen |= set(df.index)
        if seen == set(krw):
            break
    assert ex.count(group="websocket", status=101) == 1


def test_bad_input_is_named_before_anything_is_sent(running: Exchange) -> None:
    ex = running
    with pytest.raises(InvalidRequestError, match="unknown stream type 'trades'"):
        next(mdcoord.stream("KRW-BTC", "trades", base_url=ex.base_url))
    with pytest.raises(InvalidRequestError, match="book_depth"):
        next(mdcoord.stream("KRW-BTC", "orderbook", base_url=ex.base_url, book_depth=7))
    with pytest.raises(MarketNotFoundError, match="KRW-BTX"):
        next(mdcoord.stream("KRW-BTX", "trade", base_url=ex.base_url, progress=False))
    with pytest.raises(InvalidRequestError, match="cuont"):
        next(mdcoord.stream("KRW-BTC", "trade", base_url=ex.base_url, cuont=3))
    assert ex.count(group="websocket") == 0


def test_no_websocket_at_the_url_is_a_stream_error(running: Exchange) -> None:
    ex = running
    wrong = ex.base_url.replace("http://", "ws://") + "/nothing-here"
    with pytest.raises(StreamError, match="HTTP 404"):
        next(mdcoord.stream("KRW-BTC", "trade", base_url=ex.base_url, ws_url=wrong, progress=False))


def test_ws_url_follows_the_base_url() -> None:
    from mdcoord._ws import ws_url_for

    assert ws_url_for("https://api.upbit.com/v1") == "wss://api.upbit.com/websocket/v1"
    assert ws_url_for("http://127.0.0.1:8080/v1/") == "ws://127.0.0.1:8080/websocket/v1"
    assert ms_to_dt(0).year == 1970
