"""What tests synchronise on instead of sleeping: ``in_progress``, ``wait_for``, and arrival
stamps that do not depend on how promptly the exchange's own loop wakes up."""

from __future__ import annotations

import socket
import time

import pytest

from mdcoord.sim import Exchange

from .conftest import config

DAYS = "/v1/candles/days?market=KRW-BTC&count=3"


def _send(ex: Exchange, path: str = DAYS) -> socket.socket:
    sock = socket.create_connection((ex.config.host, ex.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def test_a_held_request_is_in_progress_until_its_client_gives_up() -> None:
    with Exchange(config()) as ex:
        ex.faults.inject("slow", delay=3600)
        sock = _send(ex)
        ex.wait_for(lambda: ex.in_progress == 1 and ex.count() == 1, what="the request held")
        assert ex.log[0].fault == "slow"
        sock.close()  # the client gives up: the exchange stops holding it
        ex.wait_for(lambda: ex.in_progress == 0, what="the held request abandoned")


def test_wait_for_names_what_did_not_happen() -> None:
    with Exchange(config()) as ex, pytest.raises(TimeoutError, match="a miracle did not hold within 0.05 s"):
        ex.wait_for(lambda: False, timeout=0.05, what="a miracle")


def test_the_arrival_is_receipt_plus_uplink_even_when_the_loop_wakes_late() -> None:
    """A request's arrival (what the rate limit judges) is its receipt plus the uplink delay drawn
    for it, not the moment the exchange's loop got round to it: a busy machine must not bunch
    arrivals that the client spread."""
    with Exchange(config(latency=1.0, jitter=0.0)) as ex:  # 0.5 s uplink
        sock = _send(ex)
        ex.wait_for(lambda: ex.in_progress == 1, what="the request received")
        received_by = time.monotonic()
        assert ex._loop is not None
        # CPU-bound work holds the exchange's loop past the request's arrival (when it starts in
        # time; if it starts late, it proves nothing, but cannot fail the test either)
        ex._loop.call_soon_threadsafe(time.sleep, 0.8)
        ex.wait_for(lambda: ex.count() == 1, what="the request logged")
        sock.close()
        assert ex.log[0].arrival <= received_by + 0.5
