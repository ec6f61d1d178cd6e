"""Crashes (issue 7, item 3): a process downloading candles and trades into the cache is killed
— no cleanup, no ``finally`` — six times over, at points the test chooses: while the exchange
holds a request of either phase (SIGKILL), and in the middle of writing a partition file of
either phase (the kernel's SIGXFSZ, see ``tests/checkpoints.py``). After every kill the cache
loads, every file in it is whole and holds nothing twice; the next call completes it with a
result identical to an uninterrupted run, and the killed runs' work is kept.

``tests/test_cache.py::test_sigkill_mid_download_leaves_a_correct_cache`` does this for a candle
download alone; this one kills a process that writes candle *and* trade partitions (trades: one
file per market and UTC day, written after every round).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import mdcoord
from mdcoord._config import source_name
from mdcoord.sim import Exchange, SimConfig

from .checkpoints import kill_at_request, kill_mid_write
from .conftest import NOW, assert_same_candles, truth
from .test_concurrent_use import assert_cache_whole

C_MARKETS = ["KRW-BTC", "KRW-ETH"]
C_START, C_END = "2026-09-20T00:00:00Z", "2026-10-20T00:00:00Z"  # 30 days: 43200 slots a market
T_MARKETS = ["KRW-XRP", "KRW-SOL"]
_DAY = pd.Timestamp(NOW).floor("D")
T_START, T_END = _DAY - pd.Timedelta(days=2, hours=2), _DAY - pd.Timedelta(days=2, hours=-1)  # 3 h over 00:00

# Trades hour by hour, then candles by segments of 3000 slots (as download() does): a round's
# pieces are written when it ends — or, cancelled, in a finally — and a SIGKILL runs no finally,
# so a single long call killed again and again would redo its one round each time. ``die_past``
# (argv[3] bytes, before the phase argv[4] names) is how a kill strikes mid-write.
WORKER = """
import sys, pandas as pd, mdcoord
url, cache, limit, phase = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
mdcoord.set_options(base_url=url, cache=True, cache_dir=cache, progress=False, rate_limit=1000)
if phase == "trades" and limit:
    die_past(limit)
for a in pd.date_range(%r, %r, freq="1h", inclusive="left"):
    mdcoord.trades(%r, start=a, end=a + pd.Timedelta(hours=1))
if phase == "candles" and limit:
    die_past(limit)
mdcoord.download(%r, "1m", start=%r, end=%r, segment_size=3000)
""" % (T_START.isoformat(), T_END.isoformat(), T_MARKETS, C_MARKETS, C_START, C_END)
# (an uninterrupted run: 23 trades requests, 432 of candles; its largest trade file is ~80 kB,
# grown hour by hour, its largest candle files ~0.7 and ~1.2 MB, grown by ~140 kB a segment)


def test_sigkill_at_chosen_points_of_both_phases(tmp_path: Path) -> None:
    # no server-side limit: the worker is to be killed mid-work, not mid-wait
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, rate_limit=None)) as ex:
        root = tmp_path / source_name(ex.base_url)
        args = [ex.base_url, str(tmp_path)]
        tmps = lambda: set(root.rglob(".part.parquet.*.tmp"))  # noqa: E731 - what a cut write leaves
        kills = [("held", "crix-trades", 0), ("mid-write", "trades", 50_000), ("held", "crix-trades", 3),
                 ("held", "candles", 0), ("mid-write", "candles", 400_000), ("held", "candles", 70)]
        for how, phase, n in kills:
            if how == "held":  # killed while the exchange holds a request: the phase's first, or one further
                held = kill_at_request(ex, WORKER, [*args, "0", "-"], phase, after=n)
                assert held.group == phase
                if phase != "candles":  # (candles come second: none yet; a held candle request is the
                    assert ex.count(group="candles") == 0  # candles phase, and answers still being
                    # logged beside it make any count of the ones before it a race)
                if root.exists():
                    assert_cache_whole(root)  # loads, whole, nothing twice — after every kill
            else:  # killed while writing a partition file of the phase past n bytes
                before = tmps() if root.exists() else set()
                kill_mid_write(ex, WORKER, [*args, str(n), phase])
                assert (ex.count(group="candles") > 0) == (phase == "candles")  # it died in that phase
                assert_cache_whole(root)  # every partition still loads whole ...
                assert any(phase in p.parts for p in tmps() - before)  # ... though a write was cut short

        kw = dict(base_url=ex.base_url, cache=True, cache_dir=str(tmp_path), rate_limit=1000)
        ex.clear_log()
        got_t = mdcoord.trades(T_MARKETS, start=T_START, end=T_END, **kw)
        got_c = mdcoord.candles(C_MARKETS, "1m", start=C_START, end=C_END, **kw)
        assert got_t.attrs["mdcoord"]["cache"]["rows_from_cache"] > 0  # the killed runs' work was kept
        assert got_c.attrs["mdcoord"]["cache"]["rows_from_cache"] > 0
        assert ex.count(group="candles") < 432  # not all of it asked again
        for m in C_MARKETS:
            assert_same_candles(got_c.xs(m), truth(ex, m, "1m", C_START, C_END))
        uninterrupted = mdcoord.trades(T_MARKETS, start=T_START, end=T_END, base_url=ex.base_url, cache=False)
        got_t.attrs, uninterrupted.attrs = {}, {}
        pd.testing.assert_frame_equal(got_t, uninterrupted, check_exact=True)
        assert_cache_whole(root)
