"""Each fault kind as a client sees it, and faults in the log."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error

import pytest

from mdcoord.sim import Exchange

from .conftest import config, get

DAYS = "/candles/days?market=KRW-BTC&count=3"


@pytest.fixture
def fx() -> Exchange:
    with Exchange(config(rate_limit=None, slow_delay=1.0)) as e:
        yield e


def test_server_error_json_and_html(fx: Exchange) -> None:
    fx.faults.inject("server_error", status=503)
    fx.faults.inject("server_error", status=502, body="html")
    r1, r2, r3 = get(fx.base_url, DAYS), get(fx.base_url, DAYS), get(fx.base_url, DAYS)
    assert r1.status == 503 and r1.json()["error"]["name"] == 503
    assert r2.status == 502 and r2.headers["Content-Type"].startswith("text/html")
    assert r3.status == 200
    assert [r.fault for r in fx.log] == ["server_error", "server_error", None]


def test_drop_closes_without_answer(fx: Exchange) -> None:
    fx.faults.inject("drop")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        get(fx.base_url, DAYS)
    assert fx.log[-1].status is None and fx.log[-1].fault == "drop"
    assert get(fx.base_url, DAYS).status == 200


def test_slow_trips_a_timeout(fx: Exchange) -> None:
    fx.faults.inject("slow", delay=5.0)
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        get(fx.base_url, DAYS, timeout=0.3)
    fx.faults.inject("slow", delay=0.2)
    assert get(fx.base_url, DAYS).status == 200
    assert fx.count(path_prefix="/candles") == 2 and [r.fault for r in fx.log] == ["slow", "slow"]


def test_malformed_truncated_html(fx: Exchange) -> None:
    fx.faults.inject("malformed")
    fx.faults.inject("truncated")
    fx.faults.inject("html")
    bad, cut, page = get(fx.base_url, DAYS), get(fx.base_url, DAYS), get(fx.base_url, DAYS)
    for r in (bad, cut):
        assert r.status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.body)
    assert cut.body.startswith(b'[{"market":"KRW-BTC"')
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")


def test_rate_limited_and_ban_faults(fx: Exchange) -> None:
    fx.faults.inject("rate_limited")
    r = get(fx.base_url, DAYS)
    assert r.status == 429 and r.body == b"Too many API requests."
    fx.faults.inject("ban", seconds=1)
    assert get(fx.base_url, DAYS).status == 418
    banned = get(fx.base_url, "/market/all")
    assert banned.status == 418 and banned.headers["Retry-After"] == "1"
    fx.reset_rate_limits()
    assert get(fx.base_url, DAYS).status == 200


def test_group_filter_and_rates(fx: Exchange) -> None:
    fx.faults.inject("server_error", group="market")
    assert get(fx.base_url, DAYS).status == 200
    assert get(fx.base_url, "/market/all").status == 500
    fx.faults.set_rates(server_error=0.5, seed=1)
    statuses = [get(fx.base_url, DAYS).status for _ in range(40)]
    assert 8 <= sum(s >= 500 for s in statuses) <= 32 and 200 in statuses
    fx.faults.clear()
    assert all(get(fx.base_url, DAYS).status == 200 for _ in range(5))
    assert fx.count(status=200) == sum(1 for r in fx.log if r.status == 200)
    with pytest.raises(ValueError):
        fx.faults.inject("meteor")


def test_faults_and_log_on_quotation_endpoints(fx: Exchange) -> None:
    fx.faults.inject("server_error", group="orderbook")
    assert get(fx.base_url, "/ticker?markets=KRW-BTC&markets=KRW-ETH").status == 200
    assert get(fx.base_url, "/orderbook?markets=KRW-BTC").status == 500
    assert get(fx.base_url, "/orderbook?markets=KRW-BTC").status == 200
    log = fx.log
    assert [(r.group, r.status, r.fault) for r in log] == [
        ("ticker", 200, None), ("orderbook", 500, "server_error"), ("orderbook", 200, None)]
    assert log[0].query == {"markets": "KRW-BTC,KRW-ETH"} and log[0].rows == 2  # repeated keys joined
    assert log[2].rows == 1 and fx.count(group="orderbook") == 2
