"""Shared fixtures: one strict embedded exchange for the session, ground truth from its model.

Integration tests speak real HTTP to the embedded exchange on 127.0.0.1; nothing in aiohttp or
in mdcoord is patched.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pandas as pd
import pytest

import mdcoord
from mdcoord._frames import candle_rows_to_frame, clean_candles
from mdcoord._timeframe import Timeframe, to_utc
from mdcoord.sim import Exchange, ExchangeProcess, SimConfig

# A fixed "now" a few seconds into a minute: the minute's candle is still forming.
NOW = "2026-11-20T12:34:56Z"


@pytest.fixture(scope="session")
def exchange() -> Iterator[Exchange]:
    """A strict exchange (10 req/s per group, 429 above, 418 on repeated violations), no latency."""
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True)) as ex:
        yield ex


# The embedded exchange stamps arrivals on a thread of the test process, which shares the GIL
# with the clients' threads and two cores with whatever else runs: on a loaded machine a stamp
# can be late by tens of milliseconds, so two requests that left 1.03 s apart are stamped 0.98 s
# apart — a jittery network, as far as a client can tell, and a 429 from the strict limiter. The
# client's knob for jitter is rate_margin; tests use its widest automatic value, so what they
# assert ("at most N in any second by the exchange's clock", "no 429") holds however busy the
# machine is. (The margin itself is tested on a fake clock: test_limiter.py, test_concurrency.py.)
RIG_JITTER = 0.25


@pytest.fixture(autouse=True)
def _quiet_and_uncached(request: pytest.FixtureRequest) -> Iterator[None]:
    """No progress bars, and no cache unless a test asks for one (in its own tmp dir): request
    counts must not depend on what an earlier test left behind. The rig's own jitter: RIG_JITTER."""
    with mdcoord.set_options(progress=False, cache=False, rate_margin=RIG_JITTER):
        yield


@pytest.fixture
def ex(exchange: Exchange) -> Exchange:
    """The session exchange with an empty log and no faults."""
    exchange.faults.clear()
    exchange.clear_log()
    return exchange


@pytest.fixture
def fresh() -> Iterator[Exchange]:
    """An exchange of its own (a client that has never seen its clock), for exact request counts."""
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True)) as ex:
        yield ex


def truth(ex: Exchange | ExchangeProcess, market: str, timeframe: str, start: str | datetime, end: str | datetime) -> pd.DataFrame:
    """What a perfect client returns for ``[start, end)``: straight from the exchange's model."""
    tf = Timeframe.parse(timeframe)
    a, b = to_utc(start, "start").to_pydatetime(), to_utc(end, "end").to_pydatetime()
    rows = ex.market.candles(market, tf.kind, tf.minute_unit, a, b)
    return clean_candles(candle_rows_to_frame(rows, tf)).drop(columns="market").set_index("time")


def assert_same_candles(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.index) == list(want.index)
    cols = ["open", "high", "low", "close", "volume", "value"]
    pd.testing.assert_frame_equal(got[cols], want[cols], check_freq=False, rtol=1e-12)
    assert list(got["last_trade_at"]) == list(want["last_trade_at"])
