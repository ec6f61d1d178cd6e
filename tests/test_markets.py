"""markets(): the pair list, its flags, and its use to validate codes."""

from __future__ import annotations

import pytest

import mdcoord
from mdcoord._frames import markets_to_frame
from mdcoord.sim import Exchange


def test_all_markets_with_quote_and_base(ex: Exchange) -> None:
    df = mdcoord.markets(base_url=ex.base_url)
    served = ex.market.markets()
    assert sorted(df.index) == sorted(served) and df.index.is_monotonic_increasing
    assert (df["quote"] + "-" + df["base"] == df.index).all()
    assert set(df["quote"]) == {"KRW", "BTC", "USDT"}
    assert df.attrs["mdcoord"]["requests_sent"] == 1 == ex.count(group="market")


def test_details_flags_match_the_exchange(ex: Exchange) -> None:
    df = mdcoord.markets("KRW", details=True, base_url=ex.base_url)
    assert (df["quote"] == "KRW").all() and len(df) == len(ex.market.markets("KRW"))
    rows = {r["market"]: r["market_event"] for r in ex.market.market_rows(details=True)}
    for code, row in df.iterrows():
        event = rows[code]
        assert row["warning"] == event["warning"]
        assert row["price_fluctuations"] == event["caution"]["PRICE_FLUCTUATIONS"]
        assert row["caution"] == any(event["caution"].values())
    assert df["caution"].any()  # the exchange flags a few markets


def test_both_readings_of_the_warning() -> None:
    legacy = [{"market": "KRW-OLD", "korean_name": "x", "english_name": "Old", "market_warning": "CAUTION"},
              {"market": "KRW-NEW", "korean_name": "y", "english_name": "New", "market_warning": "NONE"}]
    df = markets_to_frame(legacy, details=True)
    assert df.loc["KRW-OLD", "warning"] and not df.loc["KRW-NEW", "warning"]


def test_unknown_quote_is_a_clear_error(ex: Exchange) -> None:
    with pytest.raises(mdcoord.InvalidRequestError, match=r"unknown quote currency \['EUR'\].*KRW"):
        mdcoord.markets("EUR", base_url=ex.base_url)
    with pytest.raises(mdcoord.InvalidRequestError, match="quote currency"):
        mdcoord.markets("KRW-BTC", base_url=ex.base_url)
