""""Now" is the exchange's clock, everywhere (issue 11, item 1).

The core scenarios run against an embedded exchange whose clock is set (a) two years before and
(b) one year after this machine's: every answer must be exactly the exchange's own data, and
nothing may depend on the local wall clock. The exchange's "now" is derived from this machine's
date at test time, so the test keeps meaning the same thing whenever it runs (a fixed date would
drift into the past or the future on its own).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson
import pandas as pd
import pytest

import mdcoord
from mdcoord.sim import Exchange, SimConfig

from .conftest import assert_same_candles, truth

# the test reads the local clock only to place the exchange's clock far from it
_LOCAL = pd.Timestamp.now(tz="UTC").floor("s")
SHIFTS = {
    "two-years-past": _LOCAL - pd.DateOffset(years=2) + pd.Timedelta(seconds=37.5),
    "one-year-future": _LOCAL + pd.DateOffset(years=1) + pd.Timedelta(seconds=37.5),
}


@pytest.fixture(scope="module", params=list(SHIFTS), ids=list(SHIFTS))
def shifted(request: pytest.FixtureRequest) -> Iterator[tuple[Exchange, pd.Timestamp]]:
    now = SHIFTS[request.param]
    with Exchange(SimConfig(seed=7, now=now.isoformat(), frozen=True)) as ex:
        yield ex, now


@pytest.mark.parametrize("timeframe", ["1s", "1m", "1d"])
def test_count_candles_end_at_the_exchanges_last_closed_candle(shifted: tuple[Exchange, pd.Timestamp],
                                                                timeframe: str) -> None:
    ex, now = shifted
    count = {"1s": 1000, "1m": 1000, "1d": 300}[timeframe]
    df = mdcoord.candles("KRW-BTC", timeframe, count=count, base_url=ex.base_url)
    meta = df.attrs["mdcoord"]
    forming = pd.Timestamp(ex.market.forming_start(*_kind_unit(timeframe)))
    assert len(df) == count and meta["complete"], (len(df), meta["failures"])
    assert df.index[-1] < forming <= now  # the forming candle, on the exchange's clock, is left out
    want = truth(ex, "KRW-BTC", timeframe, df.index[0], forming)
    assert_same_candles(df, want.iloc[-count:])


@pytest.mark.parametrize("timeframe, back", [("1s", "15min"), ("1m", "2D"), ("1d", "400D")])
def test_range_candles_are_exactly_the_exchanges(shifted: tuple[Exchange, pd.Timestamp], timeframe: str,
                                                 back: str) -> None:
    ex, now = shifted
    start, end = (now - pd.Timedelta(back)).floor("D" if timeframe == "1d" else "min"), now.floor("min")
    if timeframe == "1d":
        end = now.floor("D")
    df = mdcoord.candles("KRW-BTC", timeframe, start=start, end=end, base_url=ex.base_url)
    assert df.attrs["mdcoord"]["complete"] and len(df) > 0
    assert_same_candles(df, truth(ex, "KRW-BTC", timeframe, start, end))


def test_an_open_range_of_seconds_reaches_the_exchanges_now(shifted: tuple[Exchange, pd.Timestamp]) -> None:
    """The 1s history floor is the exchange's now minus ~3 months, not this machine's."""
    ex, now = shifted
    start = now - pd.Timedelta(minutes=3)
    df = mdcoord.candles("KRW-BTC", "1s", start=start, base_url=ex.base_url)
    forming = pd.Timestamp(ex.market.forming_start("seconds", 1))
    assert len(df) > 0 and df.index[-1] < forming
    assert_same_candles(df, truth(ex, "KRW-BTC", "1s", start, forming))


def test_trades_count_is_the_newest_on_the_exchanges_clock(shifted: tuple[Exchange, pd.Timestamp]) -> None:
    ex, now = shifted
    df = mdcoord.trades("KRW-BTC", count=1500, base_url=ex.base_url)
    assert len(df) == 1500 and df.attrs["mdcoord"]["complete"]
    rows = ex.market.trade_rows("KRW-BTC", (now - pd.Timedelta(days=2)).to_pydatetime(), now.to_pydatetime())
    newest = sorted(rows, key=lambda r: (r["timestamp"], r["sequential_id"]))[-1500:]
    assert df["sequential_id"].tolist() == [r["sequential_id"] for r in newest]


def test_the_cache_answers_a_repeat_without_a_request(shifted: tuple[Exchange, pd.Timestamp], tmp_path: Path) -> None:
    """What the cache keeps (settled data only) is judged on the exchange's clock: a range that
    ended a minute before the exchange's now is cached whole and served again with no request."""
    ex, now = shifted
    start, end = now.floor("min") - pd.Timedelta(hours=3), now.floor("min") - pd.Timedelta(minutes=1)
    kw = {"base_url": ex.base_url, "cache": True, "cache_dir": str(tmp_path)}
    first = mdcoord.candles(["KRW-BTC", "KRW-ETH"], "1m", start=start, end=end, **kw)
    ticks = mdcoord.trades("KRW-ETH", start=now - pd.Timedelta(minutes=30), end=now - pd.Timedelta(minutes=1), **kw)
    ex.clear_log()
    again = mdcoord.candles(["KRW-BTC", "KRW-ETH"], "1m", start=start, end=end, **kw)
    ticks_again = mdcoord.trades("KRW-ETH", start=now - pd.Timedelta(minutes=30), end=now - pd.Timedelta(minutes=1),
                                 **kw)
    assert ex.count() == 0
    assert again.attrs["mdcoord"]["requests_sent"] == 0 and ticks_again.attrs["mdcoord"]["requests_sent"] == 0
    pd.testing.assert_frame_equal(again, first)
    assert np.array_equal(ticks_again["sequential_id"].to_numpy(), ticks["sequential_id"].to_numpy())


def test_metadata_times_are_the_exchanges(shifted: tuple[Exchange, pd.Timestamp]) -> None:
    ex, now = shifted
    df = mdcoord.candles("KRW-ETH", "1m", count=5, base_url=ex.base_url)
    fetched = pd.Timestamp(df.attrs["mdcoord"]["fetched_at"])
    assert abs(fetched - now) < pd.Timedelta(minutes=5)  # frozen exchange; far from the local clock


def _kind_unit(timeframe: str) -> tuple[str, int]:
    return {"1s": ("seconds", 1), "1m": ("minutes", 1), "1d": ("days", 1)}[timeframe]


# -- an exchange that sends no Date header ----------------------------------------------------------
class _NoDate(BaseHTTPRequestHandler):
    """Minute candles, one every minute up to NEWEST (still forming), and no ``Date`` header."""

    NEWEST = pd.Timestamp("2026-11-20T12:34:00Z")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        query = parse_qs(urlsplit(self.path).query)
        count = int(query.get("count", ["1"])[0])
        top = pd.Timestamp(query["to"][0]) - pd.Timedelta(minutes=1) if "to" in query else self.NEWEST
        top = min(top, self.NEWEST)
        rows = [
            {"market": "KRW-BTC", "candle_date_time_utc": t.strftime("%Y-%m-%dT%H:%M:%S"),
             "candle_date_time_kst": t.strftime("%Y-%m-%dT%H:%M:%S"), "opening_price": 1.0, "high_price": 2.0,
             "low_price": 0.5, "trade_price": 1.5, "candle_acc_trade_price": 3.0, "candle_acc_trade_volume": 2.0,
             # the last trade may lie a little past the candle's end, as on Upbit
             "timestamp": int((t + pd.Timedelta(seconds=60.03)).value // 1_000_000), "unit": 1}
            for t in pd.date_range(end=top, periods=count, freq="min")[::-1]
        ]
        body = orjson.dumps(rows)
        self.send_response_only(200)  # no Date, no Server
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_without_a_date_header_the_newest_candle_counts_as_forming(tmp_path: Path) -> None:
    """No local clock as a fallback: "now" is the newest candle's start, so that candle is left
    out (its last trade lies past its end and cannot tell "closed"), and nothing from it on is
    cached."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoDate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        df = mdcoord.candles("KRW-BTC", "1m", count=50, base_url=url, cache=True, cache_dir=str(tmp_path))
        assert len(df) == 50 and df.index[-1] == _NoDate.NEWEST - pd.Timedelta(minutes=1)
        assert df.attrs["mdcoord"]["fetched_at"] is None  # the exchange's time was never told
        cached = mdcoord.cache.info(tmp_path)
        assert cached["last"].max() < _NoDate.NEWEST
    finally:
        server.shutdown()
        server.server_close()
