"""Remaining-Req, the strict 429 limit, the 418 ban — over real HTTP and on the limiter alone."""

from __future__ import annotations

import time

from mdcoord.sim import Exchange
from mdcoord.sim._limits import RateLimiter

from .conftest import config, get


def test_remaining_req_counts_down_per_group(limited: Exchange) -> None:
    secs = [get(limited.base_url, "/candles/days?market=KRW-BTC").headers["Remaining-Req"] for _ in range(3)]
    assert secs == ["group=candles; min=600; sec=9", "group=candles; min=600; sec=8", "group=candles; min=600; sec=7"]
    r = get(limited.base_url, "/market/all")
    assert r.headers["Remaining-Req"] == "group=market; min=600; sec=9"  # groups are independent
    assert r.headers["limit-by-ip"] == "Yes"


def test_eleventh_request_in_a_second_is_429_then_418(limited: Exchange) -> None:
    replies = [get(limited.base_url, "/candles/minutes/1?market=KRW-BTC") for _ in range(11)]
    assert [r.status for r in replies[:10]] == [200] * 10
    assert replies[10].status == 429 and replies[10].body == b"Too many API requests."
    assert limited.max_in_window("candles", statuses=[200]) == 10
    assert get(limited.base_url, "/market/all").status == 200  # other groups unaffected
    # Hammering on: ban_after=3 violations -> 418 for every group, with its duration.
    statuses = [get(limited.base_url, "/candles/days?market=KRW-BTC").status for _ in range(3)]
    assert statuses[:2] == [429, 429] and statuses[2] == 418
    banned = get(limited.base_url, "/market/all")
    assert banned.status == 418
    assert banned.headers["Retry-After"] == "2"
    assert "2 seconds" in banned.json()["error"]["message"]
    assert limited.count(status=418) == 2 and limited.count(group="candles", status=429) == 3
    limited.reset_rate_limits()
    assert get(limited.base_url, "/market/all").status == 200


def test_json_429_and_no_header_on_errors() -> None:
    with Exchange(config(plain_text_429=False, remaining_req_on_errors=False)) as ex:
        replies = [get(ex.base_url, "/market/all") for _ in range(11)]
        assert replies[10].status == 429
        assert replies[10].json() == {"error": {"name": 429, "message": "Too many API requests."}}
        assert "Remaining-Req" not in replies[10].headers
        assert "Remaining-Req" in replies[0].headers


def test_origin_header_goes_to_the_origin_group(limited: Exchange) -> None:
    first = get(limited.base_url, "/market/all", headers={"Origin": "https://example.com"})
    assert first.status == 200 and first.headers["Remaining-Req"].startswith("group=origin;")
    assert get(limited.base_url, "/market/all", headers={"Origin": "https://example.com"}).status == 429


def test_sliding_window_counts_all_arrivals() -> None:
    lim = RateLimiter(10, 1.0, ban_after=100)
    assert all(lim.admit("candles", 0.05 * i).status is None for i in range(10))  # 0.00 .. 0.45
    assert [lim.admit("candles", t).status for t in (0.9, 0.95, 0.99)] == [429, 429, 429]
    # (0.2, 1.2] holds 0.25..0.45 and the three rejected arrivals: 8, so two more fit.
    assert lim.admit("candles", 1.2).status is None
    assert lim.admit("candles", 1.21).status is None
    assert lim.admit("candles", 1.22).status == 429  # would pass if rejections did not count
    assert lim.admit("candles", 2.6).status is None
    assert lim.admit("ticker", 1.22).status is None


def test_ban_grows_and_expires() -> None:
    lim = RateLimiter(1, 1.0, ban_after=2, ban_seconds=5.0, ban_growth=2.0)
    lim.admit("candles", 0.0)
    assert lim.admit("candles", 0.1).status == 429
    v = lim.admit("candles", 0.2)
    assert v.status == 429
    banned = lim.admit("market", 0.3)
    assert banned.status == 418 and abs(banned.ban_seconds - 4.9) < 1e-9
    assert lim.admit("market", 5.3).status is None
    lim.admit("candles", 10.0)
    lim.admit("candles", 10.1)
    lim.admit("candles", 10.2)
    assert lim.admit("candles", 19.9).status == 418  # second ban lasts 10 s
    assert lim.admit("candles", 20.3).status is None


def test_disabled_limit(ex: Exchange) -> None:
    statuses = {get(ex.base_url, "/market/all").status for _ in range(15)}
    assert statuses == {200}


def test_latency_is_applied() -> None:
    with Exchange(config(latency=0.2, jitter=0.02, rate_limit=None)) as ex:
        get(ex.base_url, "/market/all")
        t = time.perf_counter()
        get(ex.base_url, "/market/all")
        # at least the latency less twice the jitter; no upper bound: a loaded machine adds to it
        assert time.perf_counter() - t >= 0.2 - 2 * 0.02


def test_quotation_groups_are_independent(limited: Exchange) -> None:
    paths = {"ticker": "/ticker?markets=KRW-BTC", "orderbook": "/orderbook?markets=KRW-BTC&count=1",
             "crix-trades": "/trades/ticks?market=KRW-BTC"}
    for group, path in paths.items():
        assert get(limited.base_url, path).headers["Remaining-Req"] == f"group={group}; min=600; sec=9"
    assert get(limited.base_url, "/ticker/all?quote_currencies=USDT").headers["Remaining-Req"].startswith("group=ticker;")
    assert get(limited.base_url, "/orderbook/instruments?markets=KRW-BTC").headers["Remaining-Req"].startswith(
        "group=orderbook;")
    limited.reset_rate_limits()  # the cold ticker/all may have taken longer than a second
    limited.clear_log()  # (the log would still hold the crix-trades request above)
    replies = [get(limited.base_url, paths["crix-trades"]) for _ in range(11)]
    assert [r.status for r in replies] == [200] * 10 + [429]
    assert get(limited.base_url, paths["ticker"]).status == 200  # other groups unaffected
    assert limited.max_in_window("crix-trades", statuses=[200]) == 10
