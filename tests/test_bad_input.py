"""Bad input, through the public functions (issue 7, item 5): each case gets one clear, typed
error before harm is done — before any request, where the input shows it — or a documented,
well-defined behaviour. The same table, case by case, is in docs/reliability.md (a test below
keeps the two in step).

``tests/test_request.py`` checks the validation of ``CoordinatorRequest.create`` itself; this file
checks what a user meets, and what the exchange sees (``sent``: requests that reach it).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mdcoord
from mdcoord import InvalidRequestError
from mdcoord.sim import Exchange

from .conftest import NOW

NOW_TS = pd.Timestamp(NOW)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


@dataclass(frozen=True)
class Case:
    """``call(base_url, exchange)`` either raises ``raises`` (its message matching ``match``) or
    returns something ``check(result, exchange)`` accepts; ``sent`` requests reach the exchange
    (None: not counted, e.g. another server)."""

    id: str
    call: Callable[[str, Exchange], Any]
    raises: type[BaseException] | None = InvalidRequestError
    match: str = ""
    sent: int | None = 0
    check: Callable[[Any, Exchange], None] | None = None


def C(*a: Any, base_url_: str | None = None, **kw: Any) -> Callable[[str, Exchange], Any]:  # noqa: N802
    """``candles(*a, **kw)`` against the exchange (or against ``base_url_``)."""
    return lambda url, ex: mdcoord.candles(*a, base_url=base_url_ or url, **kw)


def _one_candle_request_then_the_market_list(err: BaseException, ex: Exchange) -> None:
    """The exchange's 404 for candles, then the market list (cached ten minutes, so maybe not
    asked again) for the name and the suggestions every data type gives."""
    assert ex.count(group="candles") == 1 and ex.count(group="market") <= 1
    assert "/market/all" in str(err)


def _empty_and_complete(df: pd.DataFrame, ex: Exchange) -> None:
    assert len(df) == 0 and df.attrs["mdcoord"]["complete"] is True


def _same_as_utc(df: pd.DataFrame, ex: Exchange) -> None:
    want = mdcoord.candles("KRW-BTC", "1h", start="2026-11-01T00:00:00Z", end="2026-11-02T00:00:00Z",
                           base_url=ex.base_url)
    pd.testing.assert_index_equal(df.index, want.index)
    assert len(df) == 24 and str(df.index.tz) == "UTC"


def _one_market(df: pd.DataFrame, ex: Exchange) -> None:
    assert df.attrs["mdcoord"]["markets"] == ["KRW-BTC"] and len(df) == 5 and df.index.name == "time"


def _ends_at_the_last_closed_candle(df: pd.DataFrame, ex: Exchange) -> None:
    assert df.index[-1] == NOW_TS.floor("h") - pd.Timedelta(hours=1) and df.attrs["mdcoord"]["complete"]


def _trades_end_now(df: pd.DataFrame, ex: Exchange) -> None:
    assert df.index[-1] < NOW_TS and len(df) > 0 and df.attrs["mdcoord"]["complete"]


def _failure_names_the_market(err: Any, ex: Exchange) -> None:
    assert err.failures[0]["markets"] == ["BTC-ETH"]


KST = dt.timezone(dt.timedelta(hours=9))
BEFORE_7_DAYS = NOW_TS.floor("D") - pd.Timedelta(days=8)

CASES = [
    # wrong types
    Case("markets-int", C(42, "1m", count=5), match="markets must be a code or a list"),
    Case("markets-none", C(None, "1m", count=5), match="markets must be a code or a list"),
    Case("market-not-a-string", C(["KRW-BTC", 7], "1m", count=5), match="must be a string"),
    Case("timeframe-int", C("KRW-BTC", 1, count=5), match="valid timeframes are"),
    Case("count-string", C("KRW-BTC", "1m", count="10"), match="count must be a positive int"),
    Case("count-float", C("KRW-BTC", "1m", count=2.5), match="count must be a positive int"),
    Case("count-bool", C("KRW-BTC", "1m", count=True), match="count must be a positive int"),
    Case("start-number", C("KRW-BTC", "1m", start=1_700_000_000), match="not a number"),
    Case("start-object", C("KRW-BTC", "1m", start=object()), match="must be a date/time"),
    Case("start-unparseable", C("KRW-BTC", "1m", start="next tuesday"), match="cannot read start"),
    Case("start-empty", C("KRW-BTC", "1m", start=""), match="is not a date/time"),
    Case("include-forming-string", C("KRW-BTC", "1m", count=5, include_forming="yes"), match="True or False"),
    Case("depth-string", lambda url, ex: mdcoord.orderbooks("KRW-BTC", depth="5", base_url=url), match="depth"),
    Case("level-negative", lambda url, ex: mdcoord.orderbooks("KRW-BTC", level=-1, base_url=url), match="level"),
    # unknown timeframes and markets
    Case("timeframe-unknown", C("KRW-BTC", "2m", count=5), match="valid timeframes are"),
    Case("timeframe-90m", C("KRW-BTC", "90m", count=5), match="valid timeframes are"),
    Case("market-unknown-candles", C(["KRW-BTC", "KRW-NOPE"], "1m", count=5), mdcoord.MarketNotFoundError,
         "KRW-NOPE", sent=None),
    Case("market-delisted", lambda url, ex: mdcoord.candles(ex.market.delisted()[0], "1d", count=5, base_url=url),
         mdcoord.MarketNotFoundError, "unknown or delisted market", sent=None,
         check=lambda err, ex: _one_candle_request_then_the_market_list(err, ex)),
    # the same error, with suggestions from the market list, whatever the data type
    Case("market-typo-candles", lambda url, ex: mdcoord.candles("KRW-BTCC", "1m", count=5, base_url=url),
         mdcoord.MarketNotFoundError, "did you mean KRW-BTC", sent=None),
    Case("market-typo-trades", lambda url, ex: mdcoord.trades("KRW-BTCC", count=5, base_url=url),
         mdcoord.MarketNotFoundError, "did you mean KRW-BTC", sent=None),
    Case("market-typo-orderbooks", lambda url, ex: mdcoord.orderbooks("KRW-BTCC", base_url=url),
         mdcoord.MarketNotFoundError, "did you mean KRW-BTC", sent=None),
    Case("market-unknown-tickers", lambda url, ex: mdcoord.tickers(["KRW-ETH", "KRW-BTCC"], base_url=url),
         mdcoord.MarketNotFoundError, "did you mean KRW-BTC", sent=None),
    Case("market-unknown-trades", lambda url, ex: mdcoord.trades("KRW-NOPE", count=5, base_url=url),
         mdcoord.MarketNotFoundError, "KRW-NOPE", sent=None),
    Case("quote-unknown", lambda url, ex: mdcoord.tickers("EUR", base_url=url), match="unknown quote currency",
         sent=None),
    Case("quote-in-orderbooks", lambda url, ex: mdcoord.orderbooks("KRW", base_url=url), match="malformed market code"),
    Case("level-unsupported", lambda url, ex: mdcoord.orderbooks("BTC-ETH", level=10, base_url=url),
         mdcoord.IncompleteDataError, "without data for BTC-ETH", sent=None),
    # naive vs aware
    Case("naive-string-is-utc", C("KRW-BTC", "1h", start="2026-11-01", end="2026-11-02"), None, sent=None,
         check=_same_as_utc),
    Case("naive-datetime-is-utc", C("KRW-BTC", "1h", start=dt.datetime(2026, 11, 1), end=dt.datetime(2026, 11, 2)),
         None, sent=None, check=_same_as_utc),
    Case("aware-kst-converted", C("KRW-BTC", "1h", start=dt.datetime(2026, 11, 1, 9, tzinfo=KST),
                                  end="2026-11-02T09:00:00+09:00"), None, sent=None, check=_same_as_utc),
    # end <= start, huge counts
    Case("end-equals-start", C("KRW-BTC", "1m", start="2026-11-01", end="2026-11-01"), match="must be after start"),
    Case("end-before-start", C("KRW-BTC", "1m", start="2026-11-02", end="2026-11-01"), match="must be after start"),
    Case("count-with-start", C("KRW-BTC", "1m", start="2026-11-01", count=5), match="not count with start"),
    Case("count-zero", C("KRW-BTC", "1m", count=0), match="count must be > 0"),
    Case("count-huge", C("KRW-BTC", "1m", count=10**12), match="larger than the supported"),
    Case("depth-too-deep", lambda url, ex: mdcoord.orderbooks("KRW-BTC", depth=31, base_url=url),
         match="depth must be an int from 1 to 30"),
    # ranges before listing or in the future; trades beyond 7 days
    Case("range-before-listing",
         lambda url, ex: mdcoord.candles(_newest(ex), "1d", start="2018-01-01", end="2018-02-01", base_url=url),
         None, sent=None, check=_empty_and_complete),
    Case("range-in-the-future", C("KRW-BTC", "1h", start="2026-12-01", end="2026-12-02"),
         match="not before the exchange's now", sent=None),
    Case("start-in-the-future", C("KRW-BTC", "1m", start="2026-12-01"), match="not before the exchange's now",
         sent=None),
    Case("start-now-string", C("KRW-BTC", "1m", start="today"), match="give a date/time"),
    Case("end-in-the-future", C("KRW-BTC", "1h", start="2026-11-20", end="2027-01-01"), None, sent=None,
         check=_ends_at_the_last_closed_candle),
    Case("trades-beyond-7-days", lambda url, ex: mdcoord.trades("KRW-BTC", start=BEFORE_7_DAYS, base_url=url),
         match="earliest available time is", sent=None),
    Case("trades-start-in-the-future",
         lambda url, ex: mdcoord.trades("KRW-BTC", start=NOW_TS + pd.Timedelta(hours=1), base_url=url),
         match="not before the exchange's now", sent=None),
    Case("trades-end-in-the-future",
         lambda url, ex: mdcoord.trades("KRW-BTC", start=NOW_TS - pd.Timedelta(minutes=5), end="2027-01-01",
                                        base_url=url), None, sent=None, check=_trades_end_now),
    # empty lists, duplicates
    Case("candles-empty-list", C([], "1m", count=5), match="no markets"),
    Case("tickers-empty-list", lambda url, ex: mdcoord.tickers([], base_url=url), match="no markets"),
    Case("orderbooks-empty-list", lambda url, ex: mdcoord.orderbooks([], base_url=url), match="no markets"),
    Case("trades-empty-list", lambda url, ex: mdcoord.trades([], count=5, base_url=url), match="no markets"),
    Case("duplicate-markets", C(["KRW-BTC", "krw-btc", " KRW-BTC "], "1m", count=5), None, sent=None,
         check=_one_market),
    # malicious market strings
    Case("path-traversal", C("KRW-../../etc", "1m", count=5), match="malformed market code"),
    Case("path-into-another-endpoint", C("KRW-BTC/../../market/all", "1m", count=5), match="malformed market code"),
    Case("query-injection", C("KRW-BTC&count=9999", "1m", count=5), match="malformed market code"),
    Case("header-injection", C("KRW-BTC\r\nX-Evil: 1", "1m", count=5), match="malformed market code"),
    Case("nul-byte", C("KRW-BTC\x00", "1m", count=5), match="malformed market code"),
    Case("homoglyph", C("\u041aRW-BTC", "1m", count=5), match="malformed market code"),  # Cyrillic К
    Case("very-long-code", C("KRW-" + "A" * 100_000, "1m", count=5), match=r"malformed market code 'KRW-A{36}\.\.\.'"),
    # the exchange itself
    Case("base-url-not-http", C("KRW-BTC", "1m", count=5, base_url_="ftp://example.com/v1"), match="http"),
    Case("base-url-garbage", C("KRW-BTC", "1m", count=5, base_url_="not a url"), match="http"),
    Case("base-url-unreachable", C("KRW-BTC", "1m", count=5, base_url_="http://127.0.0.1:9/v1", max_retries=1),
         mdcoord.ConnectionFailedError, "127.0.0.1:9", sent=None),
    # options
    Case("option-unknown", C("KRW-BTC", "1m", count=5, concurency=3), match="unknown option"),
    Case("option-typo-of-a-parameter", C("KRW-BTC", "1m", cuont=10), match=r"\['cuont'\] \(did you mean 'count'\?\)"),
    Case("iter-candles-checks-at-the-call", lambda url, ex: mdcoord.iter_candles(42, "1m", start="2026-11-01",
                                                                                base_url=url),
         match="markets must be a code"),
    Case("aiter-candles-checks-at-the-call", lambda url, ex: mdcoord.aiter_candles("KRW-BTC", "1m", start="2026-11-01",
                                                                                  prefetch=-1, base_url=url),
         match="prefetch must be"),
    Case("option-concurrency-zero", C("KRW-BTC", "1m", count=5, concurrency=0), match="concurrency"),
    Case("option-timeout-zero", C("KRW-BTC", "1m", count=5, timeout=0), match="timeout"),
    Case("option-on-error", C("KRW-BTC", "1m", count=5, on_error="ignore"), match="on_error"),
    Case("option-cache-dir", C("KRW-BTC", "1m", count=5, cache_dir=123), match="cache_dir"),
    Case("segment-size-zero", lambda url, ex: mdcoord.download("KRW-BTC", "1m", start="2026-11-01", segment_size=0,
                                                               base_url=url, cache=True), match="segment_size"),
    Case("download-without-cache", lambda url, ex: mdcoord.download("KRW-BTC", "1m", start="2026-11-01",
                                                                    base_url=url, cache=False), match="cache=False"),
    Case("gaps-of-a-foreign-frame", lambda url, ex: mdcoord.gaps(pd.DataFrame({"close": [1.0]})),
         match="takes what mdcoord.candles.. or mdcoord.download.. returned"),
]


def _newest(ex: Exchange) -> str:
    codes = [c for c in ex.market.markets() if c.startswith("KRW-")]
    return max(codes, key=lambda c: pd.Timestamp(ex.market.listing_time(c)))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(ex: Exchange, case: Case) -> None:
    if case.raises is not None:
        with pytest.raises(case.raises, match=case.match) as info:
            case.call(ex.base_url, ex)
        assert str(info.value)  # a message, not a bare class
        if case.check is not None:
            case.check(info.value, ex)
    else:
        result = case.call(ex.base_url, ex)
        assert case.check is not None
        case.check(result, ex)
    if case.sent is not None:
        assert ex.count() == case.sent, f"{ex.count()} request(s) reached the exchange"
    if case.raises is InvalidRequestError:
        assert issubclass(case.raises, ValueError)  # also a ValueError, as Python users expect


# -- a server that answers HTML ---------------------------------------------------------------------
class _Portal(BaseHTTPRequestHandler):
    """A captive portal / proxy login page: 200 text/html for every path."""

    hits = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).hits += 1
        body = b"<!DOCTYPE html><html><body><h1>Please log in</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def portal() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Portal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("data_type", ["candles", "tickers", "orderbooks", "trades", "markets"])
def test_a_server_that_answers_html(portal: str, data_type: str) -> None:
    """Every data type: ResponseFormatError after the retries, saying what came back."""
    calls = {
        "candles": lambda: mdcoord.candles("KRW-BTC", "1m", count=5, base_url=portal, max_retries=1),
        "tickers": lambda: mdcoord.tickers("KRW-BTC", base_url=portal, max_retries=1),
        "orderbooks": lambda: mdcoord.orderbooks("KRW-BTC", base_url=portal, max_retries=1),
        "trades": lambda: mdcoord.trades("KRW-BTC", count=5, base_url=portal, max_retries=1),
        "markets": lambda: mdcoord.markets(base_url=portal, max_retries=1),
    }
    _Portal.hits = 0
    with pytest.raises(mdcoord.ResponseFormatError, match="HTML page.*is the base URL an Upbit API"):
        calls[data_type]()
    assert _Portal.hits == 2  # the first attempt and its one retry, then a clear error


def test_every_case_is_in_the_docs_table() -> None:
    """docs/reliability.md lists every case of this file by its id (and no other)."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("\n## 5. Bad input\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.M))
    ids = {c.id for c in CASES} | {"server-answers-html"}
    assert documented == ids, (sorted(ids - documented), sorted(documented - ids))
    assert len(ids) >= 25
