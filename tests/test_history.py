"""The history skeleton's rules, once for every history data type (issue 11, items 2 and 3).

- a trades call running across the exchange's 00:00 UTC re-plans the windows whose ``days_ago``
  changed meaning, and completes (``DayChangedError`` is retryable in that sense);
- ``CoordinatorResponse.success`` means every piece arrived, whatever ``on_error`` says;
- answers that prove nothing are not asked for again and again: what is left is reported.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pandas as pd
import pytest

import mdcoord
from mdcoord import Coordinator, CoordinatorRequest
from mdcoord.sim import Exchange, SimConfig

BEFORE_MIDNIGHT = "2026-11-20T23:59:58.500Z"
AFTER_MIDNIGHT = pd.Timestamp("2026-11-21T00:00:04.500Z")


def _newest(ex: Exchange, market: str, end: pd.Timestamp, n: int) -> list[int]:
    rows = ex.market.trade_rows(market, (end - pd.Timedelta(days=1)).to_pydatetime(), end.to_pydatetime())
    return [r["sequential_id"] for r in sorted(rows, key=lambda r: (r["timestamp"], r["sequential_id"]))[-n:]]


def _move_clock_after(ex: Exchange, requests: int, to: pd.Timestamp) -> threading.Thread:
    """Move the exchange's (frozen) clock to ``to`` once ``requests`` trades requests arrived:
    an event, not a sleep, decides when midnight passes."""
    def run() -> None:
        while ex.count(group="crix-trades") < requests:
            threading.Event().wait(0.001)
        ex.clock.start_ms = int(to.value // 1_000_000)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_trades_count_across_midnight_replans_and_completes() -> None:
    with Exchange(SimConfig(seed=7, now=BEFORE_MIDNIGHT, frozen=True)) as ex:
        want = _newest(ex, "KRW-BTC", pd.Timestamp(BEFORE_MIDNIGHT), 6000)
        mover = _move_clock_after(ex, 1, AFTER_MIDNIGHT)  # right after the head: every window sees it
        df = mdcoord.trades("KRW-BTC", count=6000, base_url=ex.base_url, concurrency=2)
        mover.join(5)
        meta = df.attrs["mdcoord"]
        assert meta["complete"] and meta["failures"] == []
        assert df["sequential_id"].tolist() == want  # the newest before the head's now, exactly
        # the day changed under the plan: windows of 2026-11-20 were asked again as days_ago=1
        asked_again = [r for r in ex.log if r.path.endswith("/trades/ticks") and r.query.get("days_ago") == "1"]
        assert asked_again, "no window was re-planned against the new day"


def test_a_trades_range_across_midnight_completes() -> None:
    with Exchange(SimConfig(seed=7, now=BEFORE_MIDNIGHT, frozen=True)) as ex:
        start, end = pd.Timestamp("2026-11-20T22:00:00Z"), pd.Timestamp("2026-11-20T23:59:00Z")
        rows = ex.market.trade_rows("KRW-ETH", start.to_pydatetime(), end.to_pydatetime())
        mover = _move_clock_after(ex, 2, AFTER_MIDNIGHT)
        df = mdcoord.trades("KRW-ETH", start=start, end=end, base_url=ex.base_url, concurrency=2)
        mover.join(5)
        assert df.attrs["mdcoord"]["complete"]
        assert sorted(df["sequential_id"]) == sorted(r["sequential_id"] for r in rows)


def test_success_means_every_piece_arrived_whatever_on_error_says(ex: Exchange) -> None:
    ex.faults.inject("server_error", count=4, group="candles", after=2)  # one piece fails after its retries
    request = CoordinatorRequest.create("candles", "KRW-BTC", "1m", start="2026-11-19T00:00Z", end="2026-11-19T10:00Z")
    resp = Coordinator(ex.base_url, on_error="partial", concurrency=1).execute(request)
    assert resp.success is False and resp.error is None  # partial: no error raised, but not a success
    assert resp.data is not None and resp.data.attrs["mdcoord"]["complete"] is False
    assert len(resp.data.attrs["mdcoord"]["failures"]) == 1
    ex.faults.clear()
    whole = Coordinator(ex.base_url, on_error="partial").execute(request)
    assert whole.success is True and whole.data.attrs["mdcoord"]["complete"] is True


# -- a server whose answers prove nothing -------------------------------------------------------------
class _Stubborn(BaseHTTPRequestHandler):
    """Answers every candle request with the same 200 newest candles, whatever ``to`` says: no
    answer ever proves the window it was asked for."""

    hits = 0
    ROWS = [
        {"market": "KRW-BTC", "candle_date_time_utc": t.strftime("%Y-%m-%dT%H:%M:%S"),
         "candle_date_time_kst": t.strftime("%Y-%m-%dT%H:%M:%S"), "opening_price": 1.0, "high_price": 1.0,
         "low_price": 1.0, "trade_price": 1.0, "timestamp": int(t.value // 1_000_000), "candle_acc_trade_price": 1.0,
         "candle_acc_trade_volume": 1.0, "unit": 1}
        for t in pd.date_range("2026-11-20T08:00Z", periods=200, freq="min")[::-1]
    ]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).hits += 1
        body = orjson.dumps(self.ROWS)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stubborn() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stubborn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Stubborn.hits = 0
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_answers_that_prove_nothing_are_reported_not_asked_forever(stubborn: str) -> None:
    df = mdcoord.candles("KRW-BTC", "1m", start="2026-11-20T00:00Z", end="2026-11-20T05:00Z", base_url=stubborn,
                         on_error="partial", cache=False)
    meta = df.attrs["mdcoord"]
    assert meta["complete"] is False and meta["failures"]
    assert {f["error_type"] for f in meta["failures"]} == {"ResponseFormatError"}
    assert _Stubborn.hits <= 1 + 2  # the head, then one round of the 300 minutes' two pieces
    with pytest.raises(mdcoord.IncompleteDataError, match="did not prove"):
        mdcoord.candles("KRW-BTC", "1m", start="2026-11-20T00:00Z", end="2026-11-20T05:00Z", base_url=stubborn,
                        cache=False)
