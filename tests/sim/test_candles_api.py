"""Candle endpoints over real HTTP: shapes, ordering, parameters, errors."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mdcoord.sim import Exchange

from .conftest import get

COMMON = ["market", "candle_date_time_utc", "candle_date_time_kst", "opening_price", "high_price", "low_price",
          "trade_price", "timestamp", "candle_acc_trade_price", "candle_acc_trade_volume"]


@pytest.mark.parametrize(("path", "extra"), [
    ("/candles/seconds", []),
    ("/candles/minutes/1", ["unit"]),
    ("/candles/minutes/240", ["unit"]),
    ("/candles/days", ["prev_closing_price", "change_price", "change_rate"]),
    ("/candles/weeks", ["first_day_of_period"]),
    ("/candles/months", ["first_day_of_period"]),
    ("/candles/years", ["first_day_of_period"]),
])
def test_fields_in_order_and_newest_first(ex: Exchange, path: str, extra: list[str]) -> None:
    r = get(ex.base_url, f"{path}?market=KRW-BTC&count=5")
    assert r.status == 200 and r.headers["Content-Type"] == "application/json;charset=UTF-8"
    rows = r.json()
    assert len(rows) == 5 or path.endswith("years")
    for row in rows:
        assert list(row) == COMMON + extra
        assert len(row["candle_date_time_utc"]) == 19 and "Z" not in row["candle_date_time_utc"]
        assert row["low_price"] <= min(row["opening_price"], row["trade_price"]) <= row["high_price"]
    starts = [row["candle_date_time_utc"] for row in rows]
    assert starts == sorted(starts, reverse=True) and len(set(starts)) == len(starts)
    if extra == ["unit"]:
        assert rows[0]["unit"] == int(path.rsplit("/", 1)[1])


def test_kst_and_alignment(ex: Exchange) -> None:
    day = get(ex.base_url, "/candles/days?market=KRW-BTC").json()[0]
    assert day["candle_date_time_utc"] == "2026-11-24T00:00:00" and day["candle_date_time_kst"] == "2026-11-24T09:00:00"
    week = get(ex.base_url, "/candles/weeks?market=KRW-BTC").json()[0]
    assert week["candle_date_time_utc"] == "2026-11-23T00:00:00" and week["first_day_of_period"] == "2026-11-23"
    month = get(ex.base_url, "/candles/months?market=KRW-BTC").json()[0]
    assert month["first_day_of_period"] == "2026-11-01"
    year = get(ex.base_url, "/candles/years?market=KRW-BTC").json()[0]
    assert year["first_day_of_period"] == "2026-01-01"
    m240 = get(ex.base_url, "/candles/minutes/240?market=KRW-BTC&count=3").json()
    assert [r["candle_date_time_utc"][11:] for r in m240] == ["08:00:00", "04:00:00", "00:00:00"]


def test_default_count_is_one_and_cap_is_200(ex: Exchange) -> None:
    assert len(get(ex.base_url, "/candles/minutes/1?market=KRW-BTC").json()) == 1
    assert len(get(ex.base_url, "/candles/minutes/1?market=KRW-BTC&count=500").json()) == 200


def test_without_to_the_newest_is_the_forming_candle(ex: Exchange) -> None:
    row = get(ex.base_url, "/candles/seconds?market=KRW-BTC").json()[0]
    assert ex.market.is_forming("seconds", 1, row["candle_date_time_utc"] + "Z")
    minute = get(ex.base_url, "/candles/minutes/1?market=KRW-BTC").json()[0]
    assert minute["candle_date_time_utc"] == "2026-11-24T11:59:00"
    assert minute["timestamp"] < 1795521600000  # only trades strictly before now


@pytest.mark.parametrize("to", [
    "2026-11-24T10:00:00Z", "2026-11-24 10:00:00", "2026-11-24T10:00:00", "2026-11-24T19:00:00%2B09:00",
    "2026-11-24T10:00:00.000Z", "2026-11-24T09:59:59.5Z",
])
def test_to_formats_and_exclusive(ex: Exchange, to: str) -> None:
    rows = get(ex.base_url, f"/candles/minutes/1?market=KRW-BTC&count=2&to={to.replace(' ', '%20')}").json()
    assert [r["candle_date_time_utc"] for r in rows] == ["2026-11-24T09:59:00", "2026-11-24T09:58:00"]


def test_unencoded_plus_is_rejected(ex: Exchange) -> None:
    r = get(ex.base_url, "/candles/minutes/1?market=KRW-BTC&to=2026-11-24T19:00:00+09:00")
    assert r.status == 400 and r.json() == {"error": {"name": 400, "message": "Invalid parameter. Check the given value!"}}


def test_paging_backwards_has_no_overlap_and_no_gap(ex: Exchange, model) -> None:
    first = get(ex.base_url, "/candles/minutes/5?market=KRW-SOL&count=200").json()
    second = get(ex.base_url, f"/candles/minutes/5?market=KRW-SOL&count=200&to={first[-1]['candle_date_time_utc']}Z").json()
    assert second[0]["candle_date_time_utc"] < first[-1]["candle_date_time_utc"]
    truth = ex.market.candles("KRW-SOL", "minutes", 5, second[-1]["candle_date_time_utc"] + "Z")
    assert first + second == truth


def test_api_equals_model(ex: Exchange) -> None:
    for path, kind, unit in [("seconds", "seconds", 1), ("minutes/15", "minutes", 15), ("days", "days", 1),
                             ("weeks", "weeks", 1), ("months", "months", 1)]:
        api = get(ex.base_url, f"/candles/{path}?market=KRW-XRP&count=200&to=2026-11-20T07:31:10Z").json()
        assert api == ex.market.latest_candles("KRW-XRP", kind, unit, "2026-11-20T07:31:10Z", 200)
        assert api == ex.market.candles("KRW-XRP", kind, unit, api[-1]["candle_date_time_utc"] + "Z", "2026-11-20T07:31:10Z")


def test_case_insensitive_market(ex: Exchange) -> None:
    rows = get(ex.base_url, "/candles/days?market=krw-eth").json()
    assert rows[0]["market"] == "KRW-ETH"


@pytest.mark.parametrize(("query", "status", "message"), [
    ("/candles/days", 400, "Missing request parameter error. Check the required parameters!"),
    ("/candles/days?count=3", 400, "Missing request parameter error. Check the required parameters!"),
    ("/candles/days?market=KRW-BTC&count=abc", 400, "Type mismatch error. Check the parameters type!"),
    ("/candles/days?market=KRW-BTC&count=1.5", 400, "Type mismatch error. Check the parameters type!"),
    ("/candles/days?market=KRW-BTC&count=0", 400, "Invalid parameter. Check the given value!"),
    ("/candles/days?market=KRW-BTC&to=yesterday", 400, "Invalid parameter. Check the given value!"),
    ("/candles/days?market=KRW-BTC&to=2026-13-01T00:00:00Z", 400, "Invalid parameter. Check the given value!"),
    ("/candles/minutes/2?market=KRW-BTC", 400, "specified unit is not valid."),
    ("/candles/minutes/abc?market=KRW-BTC", 400, "specified unit is not valid."),
    ("/candles/days?market=KRW-NOPE", 404, "Code not found"),
    ("/candles/days?market=KRW-LUNA", 404, "Code not found"),
    ("/candles/days?market=KRW-BTC,KRW-ETH", 404, "Code not found"),
    ("/candles/days?market=KRW-BTC&converting_price_unit=EUR", 400, "Invalid parameter. Check the given value!"),
])
def test_error_table(ex: Exchange, query: str, status: int, message: str) -> None:
    r = get(ex.base_url, query)
    assert r.status == status
    assert r.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert r.json() == {"error": {"name": status, "message": message}}
    assert r.headers["Remaining-Req"].startswith("group=candles; min=600; sec=")


@pytest.mark.parametrize("path", ["/candles/minutes", "/candles/hours?market=KRW-BTC", "/nothing", "/candles/days/"])
def test_unknown_path(ex: Exchange, path: str) -> None:
    r = get(ex.base_url, path)
    assert r.status == 404
    assert r.json() == {"error": {"name": "not_found", "message": "no Route matched with those values"}}


def test_converting_price_unit(ex: Exchange) -> None:
    plain = get(ex.base_url, "/candles/days?market=KRW-BTC&count=2").json()
    assert "converted_trade_price" not in plain[0]
    krw = get(ex.base_url, "/candles/days?market=KRW-BTC&count=2&converting_price_unit=KRW").json()
    assert list(krw[0])[-1] == "converted_trade_price" and krw[0]["converted_trade_price"] == krw[0]["trade_price"]
    btc = get(ex.base_url, "/candles/days?market=BTC-ETH&count=2&converting_price_unit=KRW").json()
    ref = get(ex.base_url, "/candles/days?market=KRW-BTC&count=2").json()
    assert btc[1]["converted_trade_price"] == pytest.approx(btc[1]["trade_price"] * ref[1]["trade_price"])


def test_days_extras_chain(ex: Exchange) -> None:
    rows = get(ex.base_url, "/candles/days?market=KRW-SOL&count=30").json()
    for newer, older in zip(rows, rows[1:]):
        assert newer["prev_closing_price"] == older["trade_price"]
        assert newer["change_price"] == pytest.approx(newer["trade_price"] - older["trade_price"])
        assert newer["change_rate"] == pytest.approx(newer["change_price"] / older["trade_price"])


def test_listing_bounds(ex: Exchange) -> None:
    listing = ex.market.listing_time("KRW-BTC")
    assert listing.isoformat().startswith("2017-09-25")
    before = (listing - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for path in ("days", "minutes/1", "weeks", "years"):
        assert get(ex.base_url, f"/candles/{path}?market=KRW-BTC&to={before}").json() == []
    first = get(ex.base_url, "/candles/days?market=KRW-BTC&count=3&to=2017-09-27T00:00:00Z").json()
    assert [r["candle_date_time_utc"][:10] for r in first] == ["2017-09-26", "2017-09-25"]
    assert first[-1]["prev_closing_price"] == first[-1]["opening_price"]


def test_recent_listing_has_short_history(ex: Exchange) -> None:
    recent = [c for c in ex.market.markets() if (ex.market.now() - ex.market.listing_time(c)).days < 5]
    assert recent, "some markets are listed within the last days"
    rows = get(ex.base_url, f"/candles/days?market={recent[0]}&count=200").json()
    assert 1 <= len(rows) <= 6


def test_seconds_history_is_limited(ex: Exchange) -> None:
    horizon = ex.market.seconds_horizon_start
    inside = (horizon + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = get(ex.base_url, f"/candles/seconds?market=KRW-BTC&count=200&to={inside}").json()
    assert rows and rows[-1]["candle_date_time_utc"] >= horizon.strftime("%Y-%m-%dT%H:%M:%S")
    older = (horizon - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert get(ex.base_url, f"/candles/seconds?market=KRW-BTC&to={older}").json() == []
    assert get(ex.base_url, f"/candles/minutes/1?market=KRW-BTC&to={older}").json() != []


def test_thin_market_misses_minutes_liquid_does_not(ex: Exchange) -> None:
    def gaps(code: str) -> int:
        rows = get(ex.base_url, f"/candles/minutes/1?market={code}&count=200&to=2026-11-20T00:00:00Z").json()
        assert len(rows) == 200
        first, last = rows[-1]["candle_date_time_utc"], rows[0]["candle_date_time_utc"]
        from datetime import datetime
        span = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds() / 60 + 1
        return int(span) - 200
    thin = min(ex.market.markets("KRW"), key=lambda c: ex.market.info(c).rate_per_min)
    assert gaps(thin) > 2000  # a thin book needs many days for 200 one-minute candles
    assert gaps("KRW-BTC") == 0
    secs = get(ex.base_url, "/candles/seconds?market=KRW-BTC&count=200&to=2026-11-24T10:00:00Z").json()
    assert len(secs) == 200
