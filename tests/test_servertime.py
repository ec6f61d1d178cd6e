"""The exchange's clock (``ServerClock``), on an injected monotonic clock: no sleeping."""

from __future__ import annotations

import pandas as pd

from mdcoord._client import Client
from mdcoord._servertime import ServerClock


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_floor_ceiling_and_estimate_follow_the_latest_date() -> None:
    mono = FakeMonotonic()
    clock = ServerClock(mono)
    assert clock.floor() is None and clock.ceiling() is None and clock.estimate() is None
    clock.observe("Fri, 20 Nov 2026 12:34:56 GMT")
    date = pd.Timestamp("2026-11-20T12:34:56Z").timestamp()
    assert clock.floor() == date and clock.ceiling() == date + 2.0 and clock.estimate() == date
    mono.t += 7.5  # time passes here; the server's time can have moved as much
    assert clock.floor() == date and clock.ceiling() == date + 9.5 and clock.estimate() == date + 7.5


def test_the_server_time_never_runs_backwards_and_garbage_is_ignored() -> None:
    clock = ServerClock(FakeMonotonic())
    clock.observe("Fri, 20 Nov 2026 12:34:56 GMT")
    clock.observe("Fri, 20 Nov 2026 12:34:50 GMT")  # an answer that was slower on its way
    clock.observe("not a date")
    clock.observe(None)
    assert clock.floor() == pd.Timestamp("2026-11-20T12:34:56Z").timestamp()


def test_the_client_gives_its_injected_clock_to_every_part() -> None:
    mono = FakeMonotonic()
    client = Client("http://127.0.0.1:9/v1", clock=mono)
    client.server_clock.observe("Fri, 20 Nov 2026 12:34:56 GMT")
    mono.t += 3
    assert client.server_clock.estimate() == pd.Timestamp("2026-11-20T12:34:59Z").timestamp()
    from mdcoord._groups import Group

    assert client.pacing.limiter(Group.CANDLES)._clock is mono and client.pacing.gate(Group.CANDLES)._clock is mono
    assert client.guard._clock is mono
