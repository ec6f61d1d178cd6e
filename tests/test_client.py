"""Layer 1 over real HTTP: the limiter under a strict server, retries, typed errors, 418, interrupts."""

from __future__ import annotations

import asyncio
import threading

import pandas as pd
import pytest

import mdcoord
from mdcoord._answers import parse_remaining_req
from mdcoord._groups import group_for
from mdcoord.sim import Exchange, SimConfig

from .conftest import NOW, assert_same_candles, truth
from .holds import HOLD_S, Interrupter, assert_stopped, cancel_when_held, hold_after, wait_held

# A closed, liquid range: 1200 candles = 6 pieces, no head needed once the clock is known.
START, END = "2026-11-18T00:00:00Z", "2026-11-18T20:00:00Z"


def _warm(ex: Exchange) -> None:
    """One tiny call so the client knows the exchange's clock (later ranges need no head)."""
    mdcoord.candles("KRW-BTC", "1m", count=1, base_url=ex.base_url)
    ex.clear_log()


def test_remaining_req_parsing_and_groups() -> None:
    assert parse_remaining_req("group=candles; min=600; sec=9") == ("candles", 9)
    assert parse_remaining_req("group=crix-trades; min=600; sec=0") == ("crix-trades", 0)
    assert parse_remaining_req("garbage") is None and parse_remaining_req(None) is None
    assert group_for("/candles/minutes/1") == "candles"
    assert group_for("/trades/ticks") == "crix-trades"
    assert group_for("/market/all") == "market"


def test_never_more_than_10_in_any_second_under_jitter() -> None:
    """The strict server answers 429 to the 11th request within any 1 s; jitter bunches arrivals."""
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, latency=0.04, jitter=0.02)) as ex:
        df = mdcoord.candles(
            ["KRW-BTC", "KRW-ETH", "KRW-XRP"], "1m", count=4000, base_url=ex.base_url, concurrency=10
        )
        assert len(df) == 12_000
        meta = df.attrs["mdcoord"]
        assert ex.count(status=429) == 0 and meta["rate_limited"] == 0
        assert ex.max_in_window("candles", 1.0) <= 10  # by the exchange's own arrival stamps
        assert meta["requests_sent"] == ex.count(group="candles") == 3 * 21  # ceil(4001 / 200) each
        # the limiter, not the machine's speed, held the requests back: 10 in flight want far more
        # than 10 a second (how long it waited depends on the machine; that it waited does not)
        assert meta["limiter_wait_s"] > 0


@pytest.mark.parametrize(
    "kind, kw",
    [
        ("server_error", {}),
        ("drop", {}),
        ("malformed", {}),
        ("truncated", {}),
        ("html", {}),
        ("rate_limited", {}),
        ("slow", {"delay": HOLD_S}),  # never answered: only the client's timeout ends it
    ],
)
def test_retries_recover_from_each_fault_exactly(ex: Exchange, kind: str, kw: dict) -> None:
    want = truth(ex, "KRW-BTC", "1m", START, END)  # also warms the exchange's model: answers take ms
    _warm(ex)
    ex.faults.inject(kind, count=2, group="candles", **kw)
    # Nothing but the injected faults may be retried, on a machine however loaded: a timeout
    # only for the held answers (2 s; the others take milliseconds), and half the rate limit, so
    # that arrivals the machine's scheduling bunches can never add up to a 429.
    timeout = {"timeout": 2.0} if kind == "slow" else {}
    df = mdcoord.candles("KRW-BTC", "1m", start=START, end=END, base_url=ex.base_url, rate_limit=5, **timeout)
    assert_same_candles(df, want)
    ex.wait_for(lambda: ex.in_progress == 0, what="the held answers given up by the client")
    meta = df.attrs["mdcoord"]
    seen = [(r.status, r.fault) for r in ex.log]
    assert meta["retries"] == 2 and meta["complete"] is True, (meta["rate_limited"], seen)
    assert meta["requests_sent"] == 6 + 2 == ex.count(group="candles"), seen
    if kind == "rate_limited":
        assert meta["rate_limited"] == 2


def test_a_piece_failing_after_its_retries_is_reported_never_dropped(ex: Exchange) -> None:
    _warm(ex)
    # concurrency 1 makes the first piece (the newest window) absorb all four faults
    ex.faults.inject("server_error", count=4, group="candles")
    with pytest.raises(mdcoord.IncompleteDataError) as info:
        mdcoord.candles("KRW-BTC", "1m", start=START, end=END, base_url=ex.base_url, concurrency=1, max_retries=3)
    err = info.value
    assert len(err.failures) == 1 and err.failures[0]["market"] == "KRW-BTC"
    assert err.failures[0]["range"] == "[2026-11-18T16:40:00+00:00, 2026-11-18T20:00:00+00:00)"
    assert err.failures[0]["error_type"] == "ServerError" and "HTTP 5" in err.failures[0]["error"]
    partial = err.partial
    assert partial is not None and len(partial) == 1000  # the 5 pieces that arrived
    g = mdcoord.gaps(partial)
    assert g.loc[g["reason"] == "not_fetched", "missing"].sum() == 200

    ex.faults.inject("server_error", count=4, group="candles")
    df = mdcoord.candles(
        "KRW-BTC", "1m", start=START, end=END, base_url=ex.base_url, concurrency=1, on_error="partial"
    )
    meta = df.attrs["mdcoord"]
    assert meta["complete"] is False and meta["not_fetched"] == 200 and len(meta["failures"]) == 1


def test_http_418_stops_everything_at_once() -> None:
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, latency=0.01)) as ex:
        _warm(ex)
        ex.faults.inject("ban", count=1, group="candles", seconds=30)
        with pytest.raises(mdcoord.IPBlockedError, match="418") as info:
            mdcoord.candles("KRW-BTC", "1m", start="2026-11-01", end="2026-11-10", base_url=ex.base_url,
                            concurrency=4)  # 65 pieces, 4 in flight
        assert info.value.retry_after == pytest.approx(30, abs=1)
        # Requests already in flight when the ban began are answered 418 too (they cannot be
        # recalled); none is sent once the client learned of it, and nothing is retried: the
        # exchange saw no more requests than were in flight at once, every one answered 418.
        ex.wait_for(lambda: ex.in_progress == 0, what="the requests in flight answered or given up")
        assert 1 <= ex.count() <= 4 and {r.status for r in ex.log} == {418}
        # new calls send nothing while it lasts: refused before sending ("still blocked", not the
        # exchange's 418)
        sent = ex.count()
        with pytest.raises(mdcoord.IPBlockedError, match="still blocked"):
            mdcoord.candles("KRW-BTC", "1m", count=10, base_url=ex.base_url)
        assert ex.count() == sent and ex.in_progress == 0


def test_server_that_answers_html_or_is_unreachable() -> None:
    with pytest.raises(mdcoord.ConnectionFailedError, match="127.0.0.1:9"):
        mdcoord.candles("KRW-BTC", "1m", count=5, base_url="http://127.0.0.1:9/v1", max_retries=1)


def test_ctrl_c_stops_all_traffic_promptly() -> None:
    """Ctrl-C while 4 requests are on the wire (the exchange holds them: ``tests/holds.py``): the
    call gives them up and sends nothing more. (Waiting for them instead would take an hour.)"""
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, latency=0.05)) as ex:
        hold_after(ex, 6, "candles")
        with Interrupter(ex, answers=6, in_flight=4), pytest.raises(KeyboardInterrupt):
            mdcoord.candles("KRW-BTC", "1m", count=200_000, base_url=ex.base_url, concurrency=4)  # 1000 pieces
        assert_stopped(ex, answers=6, in_flight=4)  # nothing left running behind the caller's back


def test_cancelling_the_async_call_stops_traffic() -> None:
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, latency=0.05)) as ex:
        hold_after(ex, 6, "candles")
        cancel_when_held(ex, mdcoord.acandles("KRW-BTC", "1m", count=200_000, base_url=ex.base_url, concurrency=4),
                         answers=6, in_flight=4)
        assert_stopped(ex, answers=6, in_flight=4)


def test_sync_and_async_share_one_limiter(ex: Exchange) -> None:
    """A sync call and an async call at the same time still stay under 10/s together."""
    results: dict[str, pd.DataFrame] = {}

    def sync_call() -> None:
        results["sync"] = mdcoord.candles("KRW-BTC", "1m", count=3000, base_url=ex.base_url, concurrency=8)

    async def async_call() -> None:
        results["async"] = await mdcoord.acandles("KRW-ETH", "1m", count=3000, base_url=ex.base_url, concurrency=8)

    t = threading.Thread(target=sync_call)
    t.start()
    asyncio.run(async_call())
    t.join()
    assert len(results["sync"]) == len(results["async"]) == 3000
    assert ex.count(status=429) == 0 and ex.max_in_window("candles", 1.0) <= 10


def test_an_answer_of_the_wrong_shape_is_retried_like_a_garbled_body(ex: Exchange) -> None:
    """``parse`` failing with ResponseFormatError makes that attempt fail and be retried."""
    from mdcoord._client import CallStats
    from mdcoord._config import get_options
    from mdcoord._runtime import get_runtime

    calls = []

    def parse(data: object) -> object:
        calls.append(data)
        if len(calls) == 1:
            raise mdcoord.ResponseFormatError("a candle row is malformed (KeyError: 'high_price')")
        return data

    client = get_runtime().client(ex.base_url)
    stats = CallStats()
    coro = client.get_json("/candles/minutes/1", {"market": "KRW-BTC", "count": 3}, options=get_options(), stats=stats, parse=parse)
    rows = get_runtime().run(coro)
    assert len(calls) == 2 and stats.retries == 1 and stats.requests == 2
    assert len(rows) == 3 and ex.count(group="candles") == 2
    assert stats.errors == {"ResponseFormatError": 1}


def test_a_cancelled_async_call_has_unwound_when_the_cancellation_returns() -> None:
    """No task of the call is left on mdcoord's loop once ``await task`` has raised."""
    from mdcoord._runtime import get_runtime

    async def _tasks_on_runtime_loop() -> list[str]:
        me = asyncio.current_task()
        return [t.get_name() for t in asyncio.all_tasks() if t is not me and t.get_name() != "mdcoord-loop-lag"]

    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, latency=0.05)) as ex:
        hold_after(ex, 2, "candles")

        async def main() -> list[str]:
            task = asyncio.create_task(mdcoord.acandles("KRW-BTC", "1m", count=100_000, base_url=ex.base_url,
                                                        concurrency=4))
            await asyncio.to_thread(wait_held, ex, 2, 4)  # requests on the wire, held there
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            loop = get_runtime().loop
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_tasks_on_runtime_loop(), loop))

        assert asyncio.run(main()) == []
