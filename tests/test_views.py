"""Live notebook views (issue 15, item 4): a ticker table, an order book, live candles — kept
current on mdcoord's loop while the caller's thread stays free, each with a Stop that closes its
connection. Checked by events: the frames the views hold, the exchange's own data and its count
of open connections; the widgets themselves (ipywidgets, from the test extra) are driven too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import ipywidgets  # noqa: F401 - loaded before any view starts, as in a notebook (IPython is there already)
import pandas as pd
import pytest

import mdcoord
from mdcoord import InvalidRequestError
from mdcoord.sim import Exchange, SimConfig

from .conftest import NOW


@pytest.fixture
def fast() -> Iterator[Exchange]:
    """A minute of trading a second."""
    with Exchange(SimConfig(seed=7, now=NOW, frozen=False, speed=60.0)) as ex:
        yield ex


def test_the_ticker_table_covers_the_quote_sorted_and_updates_in_place(fast: Exchange) -> None:
    krw = set(mdcoord.markets("KRW", base_url=fast.base_url).index)
    view = mdcoord.live_tickers("KRW", sort_by="signed_change_rate", base_url=fast.base_url)
    try:
        assert view.wait_until(lambda v: set(v.frame.index) == krw, timeout=60)
        first = view.updates
        assert view.wait_until(lambda v: v.updates > first + 3, timeout=60)  # it keeps updating
        frame = view.frame
        assert frame.index.is_unique and frame["signed_change_rate"].is_monotonic_decreasing
        top = mdcoord.live_tickers("KRW", sort_by="acc_trade_price_24h", top=5, base_url=fast.base_url)
        assert top.wait_until(lambda v: len(v.frame) == 5, timeout=60)
        assert top.frame["acc_trade_price_24h"].is_monotonic_decreasing
        top.stop()
    finally:
        view.stop()
    fast.wait_for(lambda: fast.ws_open() == 0, timeout=5, what="the views' connections closed")


def test_the_order_book_view_shows_the_books_depth(fast: Exchange) -> None:
    view = mdcoord.live_orderbook("KRW-BTC", depth=5, base_url=fast.base_url)
    try:
        assert view.wait_until(lambda v: len(v.frame) == 5, timeout=60)
        book = view.frame
        assert list(book.index) == [1, 2, 3, 4, 5]
        assert (book["bid_price"].diff().dropna() < 0).all() and (book["ask_price"].diff().dropna() > 0).all()
        assert book["bid_price"].iloc[0] < book["ask_price"].iloc[0]
    finally:
        view.stop()


def test_live_candles_closed_ones_equal_rest_candles(fast: Exchange) -> None:
    """The closed candles the view built equal candles() for the same minutes; the forming one
    is last; the view does not block the caller (it returns at once)."""
    t0 = time.monotonic()
    view = mdcoord.live_candles("KRW-BTC", "1m", count=20, base_url=fast.base_url)
    assert time.monotonic() - t0 < 1.0
    try:
        assert view.wait_until(lambda v: v.reconciled >= 4, timeout=60)
        closed = view.closed()
        frame = view.frame
        assert not bool(frame["closed"].iloc[-1]) and frame.index.is_monotonic_increasing
        rest = mdcoord.candles("KRW-BTC", "1m", start=closed.index[0], end=closed.index[-1] + pd.Timedelta(minutes=1),
                               base_url=fast.base_url)
        assert len(rest) >= 10
        pd.testing.assert_frame_equal(closed.loc[rest.index, rest.columns], rest, check_freq=False)
    finally:
        view.stop()
    assert not view.running


def test_the_widget_updates_in_place_and_its_stop_button_stops_it(fast: Exchange) -> None:
    view = mdcoord.live_candles("KRW-BTC", "1m", count=10, base_url=fast.base_url, refresh=20)
    box = view.widget()
    status, table, chart, button = box.children
    assert view.wait_until(lambda v: v.updates >= 3, timeout=60)
    assert view.wait_until(lambda v: "live" in status.value and "<table" in table.value and len(chart.value) > 0, timeout=30)
    before = table.value
    assert view.wait_until(lambda v: table.value != before, timeout=30)  # redrawn in place
    t0 = time.monotonic()
    button.click()
    fast.wait_for(lambda: fast.ws_open() == 0, timeout=5, what="the view's connection closed")
    assert time.monotonic() - t0 < 1.5 and not view.running and "stopped" in status.value


def test_bad_view_arguments_are_named() -> None:
    with pytest.raises(InvalidRequestError, match="sort_by"):
        mdcoord.live_tickers("KRW", sort_by="nope")
    with pytest.raises(InvalidRequestError, match="one market"):
        mdcoord.live_orderbook(["KRW-BTC", "KRW-ETH"])  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="depth must be"):
        mdcoord.live_orderbook("KRW-BTC", depth=10)
    with pytest.raises(InvalidRequestError, match="live candles come in"):
        mdcoord.live_candles("KRW-BTC", "1d")
    with pytest.raises(InvalidRequestError, match="refresh"):
        mdcoord.live_tickers("KRW", refresh=0)
