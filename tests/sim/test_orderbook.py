"""``/orderbook`` and ``/orderbook/instruments`` over real HTTP: shape, count, level, padding, invariants."""

from __future__ import annotations

import math

import pytest

from mdcoord.sim import Exchange, SyntheticMarket

from .conftest import NOW, get

FIELDS = ["market", "timestamp", "total_ask_size", "total_bid_size", "orderbook_units", "level"]
UNIT_KEYS = {"ask_price", "bid_price", "ask_size", "bid_size"}


def on_grid(price: float, step: float) -> bool:
    k = price / step
    return abs(k - round(k)) < 1e-6


def tick_of(ex: Exchange, code: str) -> float:
    return float(get(ex.base_url, f"/orderbook/instruments?markets={code}").json()[0]["tick_size"])


def real(units: list[dict], side: str) -> list[tuple[float, float]]:
    return [(u[f"{side}_price"], u[f"{side}_size"]) for u in units if u[f"{side}_price"] > 0]


def test_fields_and_defaults(ex: Exchange) -> None:
    r = get(ex.base_url, "/orderbook?markets=KRW-BTC")
    assert r.status == 200 and r.headers["Remaining-Req"].startswith("group=orderbook;")
    (row,) = r.json()
    assert list(row) == FIELDS and row["level"] == 0
    assert len(row["orderbook_units"]) == 30
    assert all(set(u) == UNIT_KEYS for u in row["orderbook_units"])
    assert list(row["orderbook_units"][0])[0] == "bid_price"  # bid keys first, as observed live


@pytest.mark.parametrize(("count", "expected"), [("1", 1), ("5", 5), ("30", 30), ("0", 30), ("31", 30), ("-3", 30)])
def test_count(ex: Exchange, count: str, expected: int) -> None:
    row = get(ex.base_url, f"/orderbook?markets=KRW-ETH&count={count}").json()[0]
    assert len(row["orderbook_units"]) == expected
    full = get(ex.base_url, "/orderbook?markets=KRW-ETH").json()[0]
    assert row["orderbook_units"] == full["orderbook_units"][:expected]  # a prefix of the same book


@pytest.mark.parametrize("query", ["count=abc", "count=1.5", "level=abc", "level=nan"])
def test_type_mismatch(ex: Exchange, query: str) -> None:
    r = get(ex.base_url, f"/orderbook?markets=KRW-BTC&{query}")
    assert r.status == 400 and r.json()["error"]["message"] == "Type mismatch error. Check the parameters type!"


def test_multi_market_and_errors(ex: Exchange) -> None:
    rows = get(ex.base_url, "/orderbook?markets=krw-btc&markets=BTC-ETH,USDT-BTC").json()
    assert [r["market"] for r in rows] == ["KRW-BTC", "BTC-ETH", "USDT-BTC"]
    assert get(ex.base_url, "/orderbook?markets=KRW-BTC,KRW-LUNA").status == 404
    assert get(ex.base_url, "/orderbook").status == 400


def test_hundreds_of_markets_in_one_call(ex: Exchange) -> None:
    codes = ex.market.markets()
    assert len(codes) > 300
    rows = get(ex.base_url, "/orderbook?count=1&markets=" + ",".join(codes)).json()
    assert [r["market"] for r in rows] == codes


@pytest.mark.parametrize("code", ["KRW-BTC", "KRW-XRP", "KRW-PEPE", "BTC-ETH", "USDT-SOL", "KRW-EOS"])
def test_book_invariants(ex: Exchange, code: str) -> None:
    row = get(ex.base_url, f"/orderbook?markets={code}").json()[0]
    last = get(ex.base_url, f"/trades/ticks?market={code}").json()[0]
    tick = tick_of(ex, code)
    bids, asks = real(row["orderbook_units"], "bid"), real(row["orderbook_units"], "ask")
    assert bids and asks
    assert bids[0][0] <= last["trade_price"] <= asks[0][0]
    assert asks[0][0] - bids[0][0] >= tick * (1 - 1e-9)
    assert all(a[0] > b[0] for a, b in zip(bids, bids[1:]))  # descending
    assert all(a[0] < b[0] for a, b in zip(asks, asks[1:]))  # ascending
    assert all(on_grid(p, tick) and s > 0 for p, s in bids + asks)
    assert row["total_bid_size"] == pytest.approx(sum(s for _, s in bids), rel=1e-12, abs=1e-8)
    assert row["total_ask_size"] == pytest.approx(sum(s for _, s in asks), rel=1e-12, abs=1e-8)
    assert row["timestamp"] == last["timestamp"]  # the book last changed with the last trade


def test_thin_books_are_zero_padded(ex: Exchange) -> None:
    thin = ex.market.markets("KRW")[-40:]
    rows = get(ex.base_url, "/orderbook?markets=" + ",".join(thin)).json()
    padded = 0
    for row in rows:
        units = row["orderbook_units"]
        assert len(units) == 30
        for side in ("bid", "ask"):
            prices = [u[f"{side}_price"] for u in units]
            n = sum(p > 0 for p in prices)
            assert all(p > 0 for p in prices[:n]) and prices[n:] == [0] * (30 - n)  # padding only at the end
            assert all(u[f"{side}_size"] == 0 for u in units[n:])
            padded += n < 30
    assert padded >= len(rows)  # every thin book is short on at least one side


def test_level_groups_krw_books(ex: Exchange) -> None:
    inst = get(ex.base_url, "/orderbook/instruments?markets=KRW-BTC").json()[0]
    assert list(inst) == ["market", "quote_currency", "tick_size", "supported_levels"]
    tick = float(inst["tick_size"])
    levels = [float(v) for v in inst["supported_levels"]]
    assert levels == [0.0, tick, 10 * tick, 100 * tick, 1000 * tick]
    raw = get(ex.base_url, "/orderbook?markets=KRW-BTC").json()[0]["orderbook_units"]
    for level in levels[2:]:
        row = get(ex.base_url, f"/orderbook?markets=KRW-BTC&level={level:.0f}").json()[0]
        assert row["level"] == level
        bids, asks = real(row["orderbook_units"], "bid"), real(row["orderbook_units"], "ask")
        assert all(on_grid(p, level) for p, _ in bids + asks)
        assert bids[0][0] == math.floor(raw[0]["bid_price"] / level) * level
        assert asks[0][0] == math.ceil(raw[0]["ask_price"] / level) * level
        # The first group holds at least the raw levels it covers.
        covered = sum(u["bid_size"] for u in raw if u["bid_price"] >= bids[0][0])
        assert bids[0][1] >= covered - 1e-8
    same = get(ex.base_url, f"/orderbook?markets=KRW-BTC&level={tick:.0f}").json()[0]
    assert same["orderbook_units"] == raw


@pytest.mark.parametrize("query", ["markets=KRW-BTC&level=12345", "markets=BTC-ETH&level=1",
                                   "markets=KRW-BTC,BTC-ETH&level=10000", "markets=KRW-BTC&level=-1000"])
def test_unsupported_level_is_empty(ex: Exchange, query: str) -> None:
    r = get(ex.base_url, f"/orderbook?{query}")
    assert r.status == 200 and r.json() == []


def test_level_zero_is_accepted_everywhere(ex: Exchange) -> None:
    rows = get(ex.base_url, "/orderbook?markets=BTC-ETH,USDT-BTC&level=0").json()
    assert len(rows) == 2 and all(r["level"] == 0 for r in rows)


def test_deterministic(model: SyntheticMarket) -> None:
    again = SyntheticMarket(seed=7, now=NOW, seconds_horizon_days=10)
    other = SyntheticMarket(seed=8, now=NOW, seconds_horizon_days=10)
    assert again.orderbook("KRW-SOL") == model.orderbook("KRW-SOL")
    assert other.orderbook("KRW-SOL") != model.orderbook("KRW-SOL")
    assert model.orderbook("KRW-SOL", count=3, level=12345) is None
