"""Lifecycle, the log, determinism across servers, async use, the command line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import aiohttp
import pytest

from mdcoord.sim import Exchange, ExchangeProcess, RequestRecord, SimConfig

from .conftest import config, get


def test_public_names() -> None:
    import mdcoord.sim as sim
    assert sorted(sim.__all__) == ["Exchange", "ExchangeProcess", "RequestRecord", "SimConfig", "SyntheticMarket"]


def test_start_stop_leaves_no_thread() -> None:
    before = threading.active_count()
    ex = Exchange(config()).start()
    assert ex.base_url.startswith("http://127.0.0.1:") and ex.base_url.endswith("/v1")
    assert get(ex.base_url, "/market/all").status == 200
    ex.stop()
    ex.stop()  # idempotent
    assert threading.active_count() == before


def test_the_exchange_in_its_own_process_answers_and_is_asked_the_same() -> None:
    """ExchangeProcess: the same answers as an Exchange of the same config, the same questions
    (log, counts, windows, addresses, faults) over its pipe, and a stop that ends the process."""
    paths = ["/candles/minutes/1?market=KRW-BTC&count=30", "/trades/ticks?market=KRW-ETH&count=5"]
    with Exchange(config()) as here, ExchangeProcess(config()) as there:
        assert there.base_url != here.base_url
        for p in paths:
            assert get(there.base_url, p).body == get(here.base_url, p).body
        assert there.count() == 2 and there.count(group="candles") == 1 and there.addresses() == {"127.0.0.1"}
        assert [r.path for r in there.log] == ["/v1/candles/minutes/1", "/v1/trades/ticks"]
        assert there.max_in_window("candles") == 1
        there.inject("server_error", group="candles", status=503)
        assert get(there.base_url, paths[0]).status == 503 and get(there.base_url, paths[0]).status == 200
        assert there.log[-2].fault == "server_error"
        there.clear_log()
        assert there.count() == 0 and there.in_progress == 0
        # its model reads the truth here, without a round trip
        assert there.market.latest_candles("KRW-BTC", "minutes", 1, count=3) == here.market.latest_candles(
            "KRW-BTC", "minutes", 1, count=3)
        proc = there._proc
    assert not proc.is_alive() and there.port is None
    with pytest.raises(RuntimeError, match="not running"):
        there.count()


def test_the_exchange_process_reports_a_port_it_cannot_bind() -> None:
    with Exchange(config()) as here:
        with pytest.raises(OSError, match="could not start"):
            ExchangeProcess(config(port=here.port)).start()


def test_two_servers_same_seed_answer_identically() -> None:
    paths = ["/market/all?is_details=true", "/candles/seconds?market=KRW-BTC&count=50",
             "/candles/minutes/3?market=KRW-TOTI&count=100", "/candles/weeks?market=KRW-ETH&count=20"]
    with Exchange(config()) as a, Exchange(config()) as b:
        assert a.port != b.port
        for p in paths:
            assert get(a.base_url, p).body == get(b.base_url, p).body


def test_log_records_and_window(ex: Exchange) -> None:
    ex.clear_log()
    for _ in range(4):
        get(ex.base_url, "/candles/days?market=KRW-BTC&count=7")
    get(ex.base_url, "/nope?x=1")
    log = ex.log
    assert all(isinstance(r, RequestRecord) for r in log)
    assert ex.count() == 5 and ex.count(group="candles") == 4 and ex.count(status=404) == 1
    assert ex.count(path_prefix="/candles/days") == 4
    first = log[0]
    assert (first.method, first.path, first.query, first.status, first.rows, first.fault) == (
        "GET", "/v1/candles/days", {"market": "KRW-BTC", "count": "7"}, 200, 7, None)
    assert log[-1].group is None and log[-1].query == {"x": "1"}
    assert ex.max_in_window("candles") == 4 and ex.max_in_window("candles", window=1e-9) == 1


def test_async_context_manager_and_concurrency() -> None:
    async def main() -> list[int]:
        async with Exchange(config(rate_limit=None)) as ex:
            async with aiohttp.ClientSession() as s:
                async def one(code: str) -> int:
                    async with s.get(ex.base_url + "/candles/days", params={"market": code, "count": "200"}) as r:
                        return len(await r.json())
                return await asyncio.gather(*(one(c) for c in ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL")))
    assert asyncio.run(main()) == [200, 200, 200, 200]


def test_bad_port_raises() -> None:
    with Exchange(config()) as a:
        try:
            Exchange(config(port=a.port)).start()
        except OSError:
            pass
        else:
            raise AssertionError("binding a used port must fail")


def test_config_validation() -> None:
    import pytest
    with pytest.raises(ValueError):
        SimConfig(latency=-1)
    with pytest.raises(ValueError):
        SimConfig(rate_limit=0)


def test_command_line_help() -> None:
    out = subprocess.run([sys.executable, "-m", "mdcoord.sim", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--latency" in out.stdout and "--seed" in out.stdout


def test_command_line_serves() -> None:
    args = [sys.executable, "-m", "mdcoord.sim", "--port", "0", "--now", "2026-11-24T12:00:00Z",
            "--frozen", "--seconds-horizon-days", "2"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
            assert get(url, "/candles/days?market=KRW-BTC").status == 200
        finally:
            proc.terminate()
            proc.wait(timeout=10)
