from collections import Counter

from mdcoord.sim import Exchange

from .conftest import get


def test_rows_fields_and_universe(ex: Exchange) -> None:
    r = get(ex.base_url, "/market/all")
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/json;charset=UTF-8"
    rows = r.json()
    assert all(list(row) == ["market", "korean_name", "english_name"] for row in rows)
    quotes = Counter(row["market"].split("-")[0] for row in rows)
    assert quotes["KRW"] >= 200 and quotes["BTC"] >= 50 and quotes["USDT"] >= 30
    codes = [row["market"] for row in rows]
    assert codes != sorted(codes)  # unsorted, like Upbit
    assert {"KRW-BTC", "KRW-ETH", "KRW-XRP", "BTC-ETH", "USDT-BTC"} <= set(codes)
    assert not set(ex.market.delisted()) & set(codes)
    assert sorted(codes) == ex.market.markets()
    assert any("\uac00" <= ch <= "\ud7a3" for row in rows for ch in row["korean_name"])
    assert r.body.startswith(b'[{"market":')  # compact JSON


def test_details_both_spellings(ex: Exchange) -> None:
    for param in ("is_details=true", "isDetails=true"):
        rows = get(ex.base_url, "/market/all?" + param).json()
        assert list(rows[0]) == ["market", "korean_name", "english_name", "market_event"]
        ev = rows[0]["market_event"]
        assert set(ev) == {"warning", "caution"}
        assert list(ev["caution"]) == ["PRICE_FLUCTUATIONS", "TRADING_VOLUME_SOARING", "DEPOSIT_AMOUNT_SOARING",
                                       "GLOBAL_PRICE_DIFFERENCES", "CONCENTRATION_OF_SMALL_ACCOUNTS"]
    rows = get(ex.base_url, "/market/all?is_details=true").json()
    assert any(r["market_event"]["warning"] for r in rows)
    assert any(any(r["market_event"]["caution"].values()) for r in rows)
    assert get(ex.base_url, "/market/all?is_details=false").json()[0].keys() == {"market", "korean_name", "english_name"}
    assert get(ex.base_url, "/market/all?is_details=maybe").status == 400
