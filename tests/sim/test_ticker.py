"""``/ticker`` and ``/ticker/all`` over real HTTP: shape, multi-value parsing, errors, consistency."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from mdcoord.sim import Exchange, SyntheticMarket

from .conftest import NOW, get

FIELDS = ["market", "trade_date", "trade_time", "trade_date_kst", "trade_time_kst", "trade_timestamp",
          "opening_price", "high_price", "low_price", "trade_price", "prev_closing_price", "change",
          "change_price", "change_rate", "signed_change_price", "signed_change_rate", "trade_volume",
          "acc_trade_price", "acc_trade_price_24h", "acc_trade_volume", "acc_trade_volume_24h",
          "highest_52_week_price", "highest_52_week_date", "lowest_52_week_price", "lowest_52_week_date",
          "timestamp"]
NOW_MS = 1795521600000
MISSING = {"error": {"name": 400, "message": "Missing request parameter error. Check the required parameters!"}}
NOT_FOUND = {"error": {"name": 404, "message": "Code not found"}}


def test_fields_in_order(ex: Exchange) -> None:
    r = get(ex.base_url, "/ticker?markets=KRW-BTC")
    assert r.status == 200 and r.headers["Content-Type"] == "application/json;charset=UTF-8"
    (row,) = r.json()
    assert list(row) == FIELDS
    assert row["timestamp"] == NOW_MS and row["trade_timestamp"] < NOW_MS
    assert len(row["trade_date"]) == 8 and len(row["trade_time"]) == 6 and row["trade_date"] == "20261124"
    assert row["trade_time_kst"][:2] == f"{(int(row['trade_time'][:2]) + 9) % 24:02d}"
    assert r.headers["Remaining-Req"].startswith("group=ticker;")


def test_comma_joined_repeated_and_case_insensitive(ex: Exchange) -> None:
    comma = get(ex.base_url, "/ticker?markets=KRW-BTC,krw-eth,%20BTC-ETH").json()
    repeated = get(ex.base_url, "/ticker?markets=KRW-BTC&markets=krw-eth&markets=BTC-ETH").json()
    mixed = get(ex.base_url, "/ticker?markets=KRW-BTC,krw-eth&markets=BTC-ETH&markets=KRW-BTC").json()
    assert [r["market"] for r in comma] == ["KRW-BTC", "KRW-ETH", "BTC-ETH"]
    assert comma == repeated == mixed  # duplicates answered once, in the order first asked


@pytest.mark.parametrize("query", ["markets=KRW-BTC,KRW-NOPE", "markets=KRW-LUNA", "markets=KRW-BTC&markets=XXX"])
def test_one_unknown_or_delisted_market_fails_the_call(ex: Exchange, query: str) -> None:
    r = get(ex.base_url, f"/ticker?{query}")
    assert r.status == 404 and r.json() == NOT_FOUND


@pytest.mark.parametrize("path", ["/ticker", "/ticker?markets=", "/ticker?market=KRW-BTC", "/ticker/all"])
def test_missing_parameter(ex: Exchange, path: str) -> None:
    r = get(ex.base_url, path)
    assert r.status == 400 and r.json() == MISSING


@pytest.mark.parametrize("code", ["KRW-BTC", "KRW-SOL", "BTC-ETH"])
def test_agrees_with_last_trade_and_todays_daily_candle(ex: Exchange, code: str) -> None:
    row = get(ex.base_url, f"/ticker?markets={code}").json()[0]
    last = get(ex.base_url, f"/trades/ticks?market={code}").json()[0]
    assert (row["trade_price"], row["trade_volume"], row["trade_timestamp"]) == (
        last["trade_price"], last["trade_volume"], last["timestamp"])
    days = get(ex.base_url, f"/candles/days?market={code}&count=2").json()
    today = days[0]
    assert today["candle_date_time_utc"] == "2026-11-24T00:00:00"
    assert row["opening_price"] == today["opening_price"]
    assert row["high_price"] == today["high_price"] and row["low_price"] == today["low_price"]
    assert row["trade_price"] == today["trade_price"]
    assert row["acc_trade_price"] == today["candle_acc_trade_price"]
    assert row["acc_trade_volume"] == today["candle_acc_trade_volume"]
    assert row["prev_closing_price"] == today["prev_closing_price"] == days[1]["trade_price"]
    diff = row["trade_price"] - row["prev_closing_price"]
    assert row["change"] == ("RISE" if diff > 0 else "FALL" if diff < 0 else "EVEN")
    assert row["change_price"] == pytest.approx(abs(diff)) and row["signed_change_price"] == pytest.approx(diff)
    assert row["change_rate"] == pytest.approx(abs(diff) / row["prev_closing_price"], abs=1e-9)
    assert row["signed_change_rate"] == pytest.approx(diff / row["prev_closing_price"], abs=1e-9)
    assert row["change_price"] >= 0 and row["change_rate"] >= 0


def test_24h_sums_are_the_trades_of_the_last_24_hours(model: SyntheticMarket) -> None:
    code = "KRW-SOL"
    row = model.ticker(code)
    trades = model.trade_rows(code, "2026-11-23T12:00:00Z", NOW)
    assert row["acc_trade_volume_24h"] == pytest.approx(sum(t["trade_volume"] for t in trades), rel=1e-12)
    assert row["acc_trade_price_24h"] == pytest.approx(sum(t["trade_price"] * t["trade_volume"] for t in trades), rel=1e-12)
    assert row["acc_trade_volume_24h"] > row["acc_trade_volume"]  # noon: half of it is yesterday's


def test_52_week_extremes_come_from_daily_candles(model: SyntheticMarket) -> None:
    for code in ("KRW-ETH", model.markets("BTC")[-1]):
        row = model.ticker(code)
        start = datetime.fromisoformat("2026-11-24T00:00:00+00:00") - timedelta(days=363)
        days = model.candles(code, "days", 1, start)
        assert len(days) >= 30
        oldest_first = days[::-1]  # ties: the earliest day wins
        hi = oldest_first[max(range(len(days)), key=lambda i: (oldest_first[i]["high_price"], -i))]
        lo = oldest_first[min(range(len(days)), key=lambda i: (oldest_first[i]["low_price"], i))]
        assert row["highest_52_week_price"] == hi["high_price"]
        assert row["lowest_52_week_price"] == lo["low_price"]
        assert row["highest_52_week_date"] == hi["candle_date_time_utc"][:10]
        assert row["lowest_52_week_date"] == lo["candle_date_time_utc"][:10]


def test_ticker_all_serves_every_market_of_the_quotes(ex: Exchange) -> None:
    rows = get(ex.base_url, "/ticker/all?quote_currencies=USDT").json()
    assert sorted(r["market"] for r in rows) == ex.market.markets("USDT")
    assert all(list(r) == FIELDS for r in rows)
    one = get(ex.base_url, "/ticker?markets=USDT-BTC").json()[0]
    assert next(r for r in rows if r["market"] == "USDT-BTC") == one


def test_ticker_all_unknown_quote_is_404(ex: Exchange) -> None:
    r = get(ex.base_url, "/ticker/all?quote_currencies=EUR")
    assert r.status == 404 and r.json() == NOT_FOUND
    assert get(ex.base_url, "/ticker/all?quote_currencies=usdt,EUR").status == 404


def test_deterministic(model: SyntheticMarket) -> None:
    again = SyntheticMarket(seed=7, now=NOW, seconds_horizon_days=10)
    other = SyntheticMarket(seed=8, now=NOW, seconds_horizon_days=10)
    assert again.ticker("KRW-XRP") == model.ticker("KRW-XRP")
    assert other.ticker("KRW-XRP")["trade_price"] != model.ticker("KRW-XRP")["trade_price"]
