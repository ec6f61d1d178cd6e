"""``/trades/ticks`` over real HTTP: shape, ``to``/``count``/``cursor``/``days_ago``, retention, and
that the trades are exactly the ones the candles aggregate."""

from __future__ import annotations

import numpy as np
import pytest

from mdcoord.sim import Exchange, SyntheticMarket

from .conftest import NOW, get

FIELDS = ["market", "trade_date_utc", "trade_time_utc", "timestamp", "trade_price", "trade_volume",
          "prev_closing_price", "change_price", "ask_bid", "sequential_id"]
NOW_MS = 1795521600000
DAY = 86_400_000
INVALID = "Invalid parameter. Check the given value!"
TYPE = "Type mismatch error. Check the parameters type!"


def ticks(ex: Exchange, query: str) -> list[dict]:
    r = get(ex.base_url, f"/trades/ticks?{query}")
    assert r.status == 200, r.body
    return r.json()


def page_all(ex: Exchange, query: str) -> tuple[list[dict], int]:
    """Every trade of a selection by cursor paging (500 a page); returns rows and pages used."""
    rows: list[dict] = []
    pages = 0
    while True:
        cursor = f"&cursor={rows[-1]['sequential_id']}" if rows else ""
        page = ticks(ex, f"{query}&count=500{cursor}")
        pages += 1
        rows += page
        if len(page) < 500:
            return rows, pages


def test_fields_newest_first(ex: Exchange) -> None:
    r = get(ex.base_url, "/trades/ticks?market=KRW-BTC&count=50")
    assert r.headers["Remaining-Req"].startswith("group=crix-trades;")
    rows = r.json()
    assert len(rows) == 50 and all(list(row) == FIELDS for row in rows)
    keys = [(row["timestamp"], row["sequential_id"]) for row in rows]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == 50
    assert all(row["timestamp"] < NOW_MS and row["trade_date_utc"] == "2026-11-24" for row in rows)
    assert {row["ask_bid"] for row in rows} == {"ASK", "BID"}
    day = get(ex.base_url, "/candles/days?market=KRW-BTC").json()[0]
    for row in rows:
        assert row["prev_closing_price"] == day["prev_closing_price"]
        assert row["change_price"] == pytest.approx(row["trade_price"] - row["prev_closing_price"])
        assert row["sequential_id"] // 10_000 == row["timestamp"]
        hms = row["trade_time_utc"]
        assert len(hms) == 8 and (row["timestamp"] % DAY) // 1000 == int(hms[:2]) * 3600 + int(hms[3:5]) * 60 + int(hms[6:])
    assert len(ticks(ex, "market=KRW-BTC")) == 1  # default count


@pytest.mark.parametrize("to", ["103000", "10:30:00"])
def test_to_is_utc_time_of_day_exclusive(ex: Exchange, to: str) -> None:
    rows = ticks(ex, f"market=KRW-BTC&count=5&to={to}")
    assert len(rows) == 5
    assert rows[0]["timestamp"] < NOW_MS - 90 * 60_000 and rows[0]["trade_time_utc"] <= "10:29:59"
    assert rows[0]["trade_time_utc"] >= "10:29:00"  # a liquid market: just before 10:30
    assert rows == ticks(ex, "market=KRW-BTC&count=5&to=10:30:00")


@pytest.mark.parametrize("query", ["to=1030", "to=25:00:00", "to=10-30-00", "to=10:3000", "to=ab:cd:ef",
                                   "days_ago=0", "days_ago=8", "days_ago=-1", "count=0"])
def test_invalid_values(ex: Exchange, query: str) -> None:
    r = get(ex.base_url, f"/trades/ticks?market=KRW-BTC&{query}")
    assert r.status == 400 and r.json()["error"]["message"] == INVALID


@pytest.mark.parametrize("query", ["count=abc", "days_ago=x", "days_ago=1.5", "cursor=abc"])
def test_type_mismatch(ex: Exchange, query: str) -> None:
    r = get(ex.base_url, f"/trades/ticks?market=KRW-BTC&{query}")
    assert r.status == 400 and r.json()["error"]["message"] == TYPE


def test_missing_market_and_unknown_market(ex: Exchange) -> None:
    assert get(ex.base_url, "/trades/ticks?count=5").status == 400
    assert get(ex.base_url, "/trades/ticks?market=KRW-LUNA").status == 404
    assert ticks(ex, "market=krw-btc")[0]["market"] == "KRW-BTC"


def test_count_is_capped_at_500(ex: Exchange) -> None:
    assert len(ticks(ex, "market=KRW-BTC&count=501")) == 500
    assert len(ticks(ex, "market=KRW-BTC&count=100000")) == 500


@pytest.mark.parametrize("days_ago", [1, 4])
def test_cursor_paging_covers_a_day_exactly_once(ex: Exchange, model: SyntheticMarket, days_ago: int) -> None:
    code = "KRW-EOS"  # a few thousand trades a day: several pages
    rows, pages = page_all(ex, f"market={code}&days_ago={days_ago}")
    assert pages >= 3
    ids = [r["sequential_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    day = NOW_MS // DAY - days_ago
    assert {r["timestamp"] // DAY for r in rows} == {day}
    truth = model.trade_rows(code, np.datetime64(day, "D").item().isoformat() + "T00:00:00Z",
                             np.datetime64(day + 1, "D").item().isoformat() + "T00:00:00Z")
    assert rows == truth  # every trade of the day, once, newest first


def test_cursor_respects_to_and_paging_a_busy_morning(ex: Exchange, model: SyntheticMarket) -> None:
    rows, pages = page_all(ex, "market=KRW-BTC&days_ago=2&to=00:40:00")
    assert pages >= 3
    assert rows == model.trade_rows("KRW-BTC", "2026-11-22T00:00:00Z", "2026-11-22T00:40:00Z")
    mid = rows[700]
    after = ticks(ex, f"market=KRW-BTC&days_ago=2&count=3&cursor={mid['sequential_id']}")
    assert after == rows[701:704]


def test_today_is_the_default_day(ex: Exchange) -> None:
    rows, _ = page_all(ex, "market=KRW-EOS")
    assert rows and {r["trade_date_utc"] for r in rows} == {"2026-11-24"}
    assert rows[-1]["trade_time_utc"] < "00:10:00"


def test_seven_whole_days_back_and_no_more(ex: Exchange, model: SyntheticMarket) -> None:
    oldest, _ = page_all(ex, "market=KRW-EOS&days_ago=7")
    day = NOW_MS // DAY - 7
    assert oldest[-1]["trade_date_utc"] == "2026-11-17" and oldest[-1]["trade_time_utc"] < "00:30:00"
    assert oldest == model.trade_rows("KRW-EOS", "2026-11-17T00:00:00Z", "2026-11-18T00:00:00Z")
    assert {r["timestamp"] // DAY for r in oldest} == {day}
    assert get(ex.base_url, "/trades/ticks?market=KRW-EOS&days_ago=8").status == 400


def test_no_trades_before_listing(ex: Exchange) -> None:
    m = ex.market
    young = min((c for c in m.markets()), key=lambda c: -m.listing_time(c).timestamp())
    listed = int(m.listing_time(young).timestamp() * 1000)
    assert listed > NOW_MS - 5 * DAY
    assert ticks(ex, f"market={young}&days_ago=7&count=500") == []
    days_back = (NOW_MS // DAY) - listed // DAY
    rows = ticks(ex, f"market={young}&days_ago={days_back}&count=500") if days_back else ticks(ex, f"market={young}&count=500")
    assert all(r["timestamp"] >= listed for r in rows)


def test_one_minute_ohlcv_from_trades_equals_the_candles(ex: Exchange) -> None:
    code = "KRW-BTC"
    rows, _ = page_all(ex, f"market={code}&days_ago=3&to=15:00:00")
    hour = [r for r in rows if r["trade_time_utc"] >= "14:00:00"][::-1]  # oldest first
    candles = get(ex.base_url, f"/candles/minutes/1?market={code}&count=60&to=2026-11-21T15:00:00Z").json()[::-1]
    ts = np.array([r["timestamp"] for r in hour])
    price = np.array([r["trade_price"] for r in hour])
    volume = np.array([r["trade_volume"] for r in hour])
    minute = ts // 60_000 * 60_000
    first = np.flatnonzero(np.r_[True, minute[1:] != minute[:-1]])
    last = np.r_[first[1:] - 1, len(hour) - 1]
    assert len(candles) == len(first) == 60
    got = list(zip(price[first], np.maximum.reduceat(price, first), np.minimum.reduceat(price, first), price[last],
                   ts[last], np.add.reduceat(price * volume, first), np.add.reduceat(volume, first)))
    want = [(c["opening_price"], c["high_price"], c["low_price"], c["trade_price"], c["timestamp"],
             c["candle_acc_trade_price"], c["candle_acc_trade_volume"]) for c in candles]
    assert [tuple(float(x) for x in g) for g in got] == [tuple(float(x) for x in w) for w in want]  # exact


def test_deterministic(model: SyntheticMarket) -> None:
    again = SyntheticMarket(seed=7, now=NOW, seconds_horizon_days=10)
    other = SyntheticMarket(seed=8, now=NOW, seconds_horizon_days=10)
    assert again.ticks("KRW-SOL", count=200, days_ago=2) == model.ticks("KRW-SOL", count=200, days_ago=2)
    assert other.ticks("KRW-SOL", count=200, days_ago=2) != model.ticks("KRW-SOL", count=200, days_ago=2)
    with pytest.raises(ValueError):
        model.ticks("KRW-SOL", days_ago=8)
