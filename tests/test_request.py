"""Bad input gets a clear, typed error before any request is sent."""

from __future__ import annotations

import pandas as pd
import pytest

import mdcoord
from mdcoord import CoordinatorRequest, DataType, InvalidRequestError, SplitStrategy, Timeframe


def test_create_normalizes_strings_once() -> None:
    r = CoordinatorRequest.create("candles", ["krw-btc", "KRW-ETH", "KRW-BTC"], "1h", start="2024-01-01", end="2024-01-02")
    assert r.data_type is DataType.CANDLES
    assert r.symbols == ("KRW-BTC", "KRW-ETH")  # upper-cased, duplicates collapsed, order kept
    assert r.timeframe is Timeframe.H1
    assert r.start == pd.Timestamp("2024-01-01", tz="UTC")
    assert r.split_strategy is SplitStrategy.AUTO and r.strategy_used is SplitStrategy.TIME
    assert r.describe()["markets"] == ["KRW-BTC", "KRW-ETH"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(symbols="KRW-BTC", timeframe="2m", count=10), "valid timeframes"),
        (dict(symbols="KRWBTC", timeframe="1m", count=10), "malformed market code"),
        (dict(symbols="KRW-../../etc", timeframe="1m", count=10), "malformed market code"),
        (dict(symbols="KRW-" + "A" * 500, timeframe="1m", count=10), "malformed market code"),
        (dict(symbols=[], timeframe="1m", count=10), "no markets"),
        (dict(symbols=42, timeframe="1m", count=10), "markets must be"),
        (dict(symbols=["KRW-BTC", None], timeframe="1m", count=10), "must be a string"),
        (dict(symbols="KRW-BTC", timeframe="1m", count=0), "count must be > 0"),
        (dict(symbols="KRW-BTC", timeframe="1m", count=-5), "count must be > 0"),
        (dict(symbols="KRW-BTC", timeframe="1m", count=2.5), "count must be a positive int"),
        (dict(symbols="KRW-BTC", timeframe="1m", count=10**12), "larger than the supported"),
        (dict(symbols="KRW-BTC", timeframe="1m"), "give start"),
        (dict(symbols="KRW-BTC", timeframe="1m", start="2024-02-01", end="2024-01-01"), "must be after start"),
        (dict(symbols="KRW-BTC", timeframe="1m", start="2024-01-01", end="2024-01-01"), "must be after start"),
        (dict(symbols="KRW-BTC", timeframe="1m", start="not a date"), "cannot read start"),
        (dict(symbols="KRW-BTC", timeframe="1m", start="2024-01-01", count=5), "not count with start"),
        (dict(symbols="KRW-BTC", timeframe="1m", count=5, split_strategy="symbol"), "does not apply to candles"),
        (dict(symbols="KRW-BTC", timeframe="1m", count=5, split_strategy="fastest"), "valid values are"),
        (dict(symbols="KRW-BTC", timeframe=None, count=5), "need a timeframe"),
    ],
)
def test_bad_input_is_rejected_with_a_message(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        CoordinatorRequest.create("candles", **kwargs)


def test_invalid_request_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        CoordinatorRequest.create("candles", "KRW-BTC", "1m", count=0)


def test_unknown_data_type() -> None:
    with pytest.raises(InvalidRequestError, match="valid values are 'candles'"):
        CoordinatorRequest.create("klines", "KRW-BTC", "1m", count=5)


def test_options_are_validated_and_scoped() -> None:
    before = mdcoord.get_options()
    with mdcoord.set_options(concurrency=9, progress=False) as opts:
        assert opts.concurrency == 9 and mdcoord.get_options().progress is False
    assert mdcoord.get_options() == before
    with pytest.raises(InvalidRequestError, match="unknown option"):
        mdcoord.set_options(concurency=3)
    with pytest.raises(InvalidRequestError, match="concurrency"):
        mdcoord.set_options(concurrency=0)
    with pytest.raises(InvalidRequestError, match="base_url"):
        mdcoord.Coordinator("ftp://example.com")
    with pytest.raises(InvalidRequestError, match="on_error"):
        mdcoord.Coordinator(on_error="ignore")


def test_base_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    from mdcoord._config import DEFAULT_BASE_URL, resolve_base_url

    monkeypatch.delenv("MDCOORD_BASE_URL", raising=False)
    assert resolve_base_url() == DEFAULT_BASE_URL
    monkeypatch.setenv("MDCOORD_BASE_URL", "http://127.0.0.1:9/v1/")
    assert resolve_base_url() == "http://127.0.0.1:9/v1"
    with mdcoord.set_options(base_url="http://127.0.0.1:8/v1"):
        assert resolve_base_url() == "http://127.0.0.1:8/v1"
        assert resolve_base_url("http://127.0.0.1:7/v1") == "http://127.0.0.1:7/v1"


def test_unknown_option_of_a_call_is_a_typed_error(ex) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequestError, match=r"unknown option\(s\) \['bogus'\]; valid options are"):
        mdcoord.candles("KRW-BTC", "1m", count=5, base_url=ex.base_url, bogus=1)
    assert ex.count() == 0


def test_gaps_of_a_foreign_frame_is_a_typed_error() -> None:
    with pytest.raises(InvalidRequestError, match=r"takes what mdcoord.candles\(\) or mdcoord.download\(\) returned"):
        mdcoord.gaps(pd.DataFrame({"x": [1]}))


def test_backoff_options_reach_the_retry_policy(ex) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequestError, match="backoff must be seconds"):
        mdcoord.set_options(backoff=-1)
    ex.faults.inject("server_error", count=2, group="candles")
    with mdcoord.set_options(backoff=0.0, max_backoff=0.0):
        df = mdcoord.candles("KRW-BTC", "1m", count=5, base_url=ex.base_url)
    assert df.attrs["mdcoord"]["retries"] == 2
