"""Issue 7, item 1: "a typed error lists the ranges that could not be fetched" — and only those.

A trades range first fetches its newest window alone (the probe) to size the other windows by
the pace it shows. When the probe fails after its retries, the next round plans its range anew
(the coverage never got it) and may fetch it; a failure whose range a later round proved is then
dropped, so the call does not name a range whose trades are all there (a false alarm, and with
``on_error="partial"`` a complete frame marked ``complete: False``).
"""

from __future__ import annotations

import pandas as pd

import mdcoord
from mdcoord.sim import Exchange, SimConfig

from .conftest import NOW

T_START, T_END = "2026-11-18T22:30:00Z", "2026-11-19T01:30:00Z"


def test_a_failed_probe_window_is_reported_only_if_its_trades_are_missing() -> None:
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True)) as ex:
        full = mdcoord.trades("KRW-XRP", start=T_START, end=T_END, base_url=ex.base_url)
        # the head passes; the probe (the range's newest window) fails on all four attempts
        ex.faults.inject("server_error", count=4, group="crix-trades", after=1)
        df = mdcoord.trades("KRW-XRP", start=T_START, end=T_END, base_url=ex.base_url, concurrency=1,
                            on_error="partial")
        meta = df.attrs["mdcoord"]
        for f in meta["failures"]:
            a, b = (pd.Timestamp(x) for x in f["range"].strip("[)").split(", "))
            inside = df[(df.index >= a) & (df.index < b)]
            assert inside.empty, f"{f['range']} is reported as not fetched, yet its {len(inside)} trades are there"
        if meta["complete"]:
            df.attrs, full.attrs = {}, {}
            pd.testing.assert_frame_equal(df, full, check_exact=True)
