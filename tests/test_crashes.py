"""Crashes (issue 7, item 3): a process downloading candles and trades into the cache is killed
with SIGKILL — no cleanup, no ``finally`` — at random points, many times over. After every kill
the cache loads, every file in it is whole and holds nothing twice; the next call completes it
with a result identical to an uninterrupted run, and the killed runs' work is kept.

``tests/test_cache.py::test_sigkill_mid_download_leaves_a_correct_cache`` does this for a candle
download alone; this one kills a process that writes candle *and* trade partitions (trades: one
file per market and UTC day, written after every round), six times.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import mdcoord
from mdcoord._config import source_name
from mdcoord.sim import Exchange, SimConfig

from .conftest import NOW, assert_same_candles, truth
from .test_concurrent_use import assert_cache_whole

C_MARKETS = ["KRW-BTC", "KRW-ETH"]
C_START, C_END = "2026-09-20T00:00:00Z", "2026-10-20T00:00:00Z"  # 30 days: 43200 slots a market
T_MARKETS = ["KRW-XRP", "KRW-SOL"]
_DAY = pd.Timestamp(NOW).floor("D")
T_START, T_END = _DAY - pd.Timedelta(days=2, hours=2), _DAY - pd.Timedelta(days=2, hours=-1)  # 3 h over 00:00

# Trades hour by hour, then candles by segments of 3000 slots (as download() does): a round's
# pieces are written when it ends — or, cancelled, in a finally — and a SIGKILL runs no finally,
# so a single long call killed again and again would redo its one round each time.
WORKER = """
import sys, pandas as pd, mdcoord
url, cache = sys.argv[1], sys.argv[2]
mdcoord.set_options(base_url=url, cache=True, cache_dir=cache, progress=False, rate_limit=1000)
for a in pd.date_range(%r, %r, freq="1h", inclusive="left"):
    mdcoord.trades(%r, start=a, end=a + pd.Timedelta(hours=1))
mdcoord.download(%r, "1m", start=%r, end=%r, segment_size=3000)
""" % (T_START.isoformat(), T_END.isoformat(), T_MARKETS, C_MARKETS, C_START, C_END)


def test_sigkill_at_random_points_many_times(tmp_path: Path) -> None:
    rng = random.Random(20261120)
    # no server-side limit: the worker is to be killed mid-work, not mid-wait
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, rate_limit=None)) as ex:
        root = tmp_path / source_name(ex.base_url)
        kills = 0
        for _ in range(6):
            proc = subprocess.Popen([sys.executable, "-c", WORKER, ex.base_url, str(tmp_path)])
            time.sleep(rng.uniform(0.8, 2.5))  # the interpreter and imports take ~0.6 s of it
            if proc.poll() is None:
                proc.kill()
                kills += 1
            proc.wait()
            if root.exists():
                assert_cache_whole(root)  # loads, whole, nothing twice — after every kill
        assert kills >= 5  # (a run that finished before its kill proves less; most must not)
        assert_cache_whole(root)

        kw = dict(base_url=ex.base_url, cache=True, cache_dir=str(tmp_path), rate_limit=1000)
        got_t = mdcoord.trades(T_MARKETS, start=T_START, end=T_END, **kw)
        got_c = mdcoord.candles(C_MARKETS, "1m", start=C_START, end=C_END, **kw)
        assert got_t.attrs["mdcoord"]["cache"]["rows_from_cache"] > 0  # the killed runs' work was kept
        assert got_c.attrs["mdcoord"]["cache"]["rows_from_cache"] > 0
        for m in C_MARKETS:
            assert_same_candles(got_c.xs(m), truth(ex, m, "1m", C_START, C_END))
        uninterrupted = mdcoord.trades(T_MARKETS, start=T_START, end=T_END, base_url=ex.base_url, cache=False)
        got_t.attrs, uninterrupted.attrs = {}, {}
        pd.testing.assert_frame_equal(got_t, uninterrupted, check_exact=True)
        assert_cache_whole(root)
