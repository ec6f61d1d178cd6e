"""One budget per address: ``local_address`` binds mdcoord's connections, and the embedded
exchange counts its limits per client IP, as Upbit does (issue 14, item 3's groundwork).

Linux routes all of 127.0.0.0/8 to the loopback device, so a client bound to 127.0.0.2 reaches
the exchange on 127.0.0.1 from another address — a second "IP" on one machine.
"""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

import mdcoord
from mdcoord import IPBlockedError, InvalidRequestError
from mdcoord.sim import Exchange, SimConfig
from mdcoord.sim._limits import RateLimiter

from .conftest import NOW, assert_same_candles, truth

A, B = "127.0.0.2", "127.0.0.3"


# -- the exchange: a budget and a ban per address ------------------------------------------------
def test_the_exchange_counts_each_address_apart() -> None:
    lim = RateLimiter(10, 1.0, ban_after=5)
    assert [lim.admit("candles", 0.0, A).status for _ in range(10)] == [None] * 10
    assert lim.admit("candles", 0.5, A).status == 429  # A's eleventh in the second
    # B has a window of its own, and its Remaining-Req tells its own count
    first_b = lim.admit("candles", 0.5, B)
    assert first_b.status is None and first_b.remaining == 9
    for _ in range(4):
        lim.admit("candles", 0.6, A)  # five 429s: A is blocked...
    assert lim.admit("candles", 0.7, A).status == 418
    assert set(lim.banned(0.7)) == {A}
    assert lim.admit("candles", 1.7, B).status is None  # ...B is not
    lim.reset()
    assert lim.banned(0.7) == {} and lim.admit("candles", 0.8, A).status is None


# -- the option -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["localhost", "127.0.0.2:80", "256.0.0.1", "", 127])
def test_local_address_must_be_an_ip_address(bad: object) -> None:
    with pytest.raises(InvalidRequestError, match="local_address must be an IP address"):
        mdcoord.Options(local_address=bad)  # type: ignore[arg-type]


def test_a_bad_local_address_in_the_environment_is_named(monkeypatch, exchange: Exchange) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MDCOORD_LOCAL_ADDRESS", "not-an-address")
    with pytest.raises(InvalidRequestError, match=r"\$MDCOORD_LOCAL_ADDRESS must be an IP address"):
        mdcoord.candles("KRW-BTC", "1m", count=5, base_url=exchange.base_url, cache=False)
    assert exchange.count(address="not-an-address") == 0


def test_requests_leave_from_the_address_asked_for(fresh: Exchange, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    df = mdcoord.candles("KRW-BTC", "1m", count=600, base_url=fresh.base_url, cache=False, local_address=A)
    assert df.attrs["mdcoord"]["local_address"] == A
    assert fresh.addresses() == {A} and fresh.count(group="candles", address=A) == df.attrs["mdcoord"]["requests_sent"]
    monkeypatch.setenv("MDCOORD_LOCAL_ADDRESS", B)  # the environment's choice, when no option says
    mdcoord.candles("KRW-ETH", "1m", count=5, base_url=fresh.base_url, cache=False)
    assert fresh.addresses() == {A, B}


# -- two addresses, two budgets ---------------------------------------------------------------------
def test_two_addresses_each_run_at_their_own_limit_together() -> None:
    """Two calls at once from two addresses, each 2,000 candles of a market: by the exchange's
    log each address stays within 10 in any second with no 429 (its own limiter and machine
    budget), while together they exceed 10 in a second — two budgets, as two IPs have."""
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, latency=0.02)) as ex:
        # 4,000 candles each: 21 requests an address, more than two windows of ten
        async def both() -> list:  # type: ignore[type-arg]
            return await asyncio.gather(
                mdcoord.acandles("KRW-BTC", "1m", count=4000, base_url=ex.base_url, cache=False, local_address=A),
                mdcoord.acandles("KRW-ETH", "1m", count=4000, base_url=ex.base_url, cache=False, local_address=B),
            )

        btc, eth = asyncio.run(both())
        assert ex.count(status=429) == 0 and ex.count(status=418) == 0
        for address in (A, B):
            assert ex.count(group="candles", address=address) >= 21
            assert ex.max_in_window("candles", 1.0, address=address) <= 10
        assert ex.max_in_window("candles", 1.0) > 10  # the two budgets were spent at once
        for market, df in (("KRW-BTC", btc), ("KRW-ETH", eth)):
            want = truth(ex, market, "1m", df.index[0], df.index[-1] + pd.Timedelta(minutes=1))
            assert len(df) == 4000
            assert_same_candles(df, want)


def test_a_block_of_one_address_leaves_the_other_working(fresh: Exchange) -> None:
    fresh.faults.inject("ban", group="candles", seconds=30)
    with pytest.raises(IPBlockedError):
        mdcoord.candles("KRW-BTC", "1m", count=5, base_url=fresh.base_url, cache=False, local_address=A)
    df = mdcoord.candles("KRW-BTC", "1m", count=5, base_url=fresh.base_url, cache=False, local_address=B)
    assert len(df) == 5  # B's budget, B's guard: untouched by A's block
    with pytest.raises(IPBlockedError, match="nothing sent"):  # A's own guard still holds
        mdcoord.candles("KRW-BTC", "1m", count=5, base_url=fresh.base_url, cache=False, local_address=A)
    assert fresh.count(address=A) == 1
