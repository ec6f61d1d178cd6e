"""mdcoord.record (issue 15, item 5): the live stream into the Parquet cache, so that trades older
than the exchange's 7 days are answered from the recording, and what it missed is reported.

The exchange's clock runs fast (``speed``) while recording; then a second exchange with the same
seed on the same port (the cache's source is host and port) stands where the first one will be
eight days later, so the recorded minutes are older than anything its REST serves. (The truth is
the recording exchange's own trades: a synthetic market is a function of its seed and its "now".)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

import mdcoord
from mdcoord import InvalidRequestError
from mdcoord.sim import Exchange, SimConfig

from .conftest import NOW

MARKETS = ["KRW-BTC", "KRW-ETH", "KRW-XRP"]
LATER = (pd.Timestamp(NOW) + pd.Timedelta(days=8)).isoformat()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _truth(ex: Exchange, market: str, lo: pd.Timestamp, hi: pd.Timestamp) -> list[int]:
    return [r["sequential_id"] for r in reversed(ex.market.trade_rows(market, lo.to_pydatetime(), hi.to_pydatetime()))]


def _covered(summary: Any, market: str) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    return [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in summary.covered[market]]


def test_a_recording_answers_trades_older_than_seven_days(tmp_path: Path) -> None:
    port = _port()
    with Exchange(SimConfig(seed=7, now=NOW, frozen=False, speed=30.0, port=port)) as ex:
        ex.ws_faults.inject("drop", after=30)  # a dropped connection, its hole filled from REST
        summary = mdcoord.record(MARKETS, duration=5.0, flush_interval=1.0, base_url=ex.base_url, cache_dir=tmp_path,
                                 progress=False)
    assert summary.connections == 2 and not summary.holes and summary.trades > 0 and summary.book_snapshots > 0
    assert summary.flushes >= 4
    spans = {m: _covered(summary, m) for m in MARKETS}
    assert all(len(s) == 1 for s in spans.values()), spans  # one unbroken span each
    with Exchange(SimConfig(seed=7, now=LATER, frozen=True, port=port)) as later:
        for m in MARKETS:
            lo, hi = spans[m][0]
            got = mdcoord.trades(m, start=lo, end=hi, base_url=later.base_url, cache_dir=tmp_path, cache=True, progress=False)
            assert got["sequential_id"].tolist() == _truth(ex, m, lo, hi), m
            assert got.attrs["mdcoord"]["unrecorded"] == [] and len(got) > 10
        assert later.count(path_prefix="/v1/trades") == 0  # wholly from the recording
        # a range reaching before the recording: answered, the unrecorded stretch reported
        m = MARKETS[0]
        lo, hi = spans[m][0]
        got = mdcoord.trades(m, start=lo - pd.Timedelta(minutes=5), end=hi, base_url=later.base_url, cache_dir=tmp_path,
                             cache=True, progress=False)
        assert got[got.index >= lo]["sequential_id"].tolist() == _truth(ex, m, lo, hi)
        assert got.attrs["mdcoord"]["unrecorded"] == [{"market": m, "start": (lo - pd.Timedelta(minutes=5)).isoformat(),
                                                       "end": lo.isoformat()}]
        # nothing recorded at all there: the error names the earliest time available
        with pytest.raises(InvalidRequestError, match="last 7 UTC days"):
            mdcoord.trades(m, start=lo - pd.Timedelta(days=1), end=lo - pd.Timedelta(hours=12), base_url=later.base_url,
                           cache_dir=tmp_path, cache=True, progress=False)
    books = pd.read_parquet(tmp_path / f"127.0.0.1_{port}" / "orderbooks", filters=[("market", "==", "KRW-BTC")])
    assert {"market", "level", "bid_price", "ask_price", "timestamp", "snapshot_at"} <= set(books.columns)
    assert books.groupby("snapshot_at")["level"].max().eq(30).all() and books["snapshot_at"].nunique() >= 3
    assert summary.book_snapshots >= 3 * len(MARKETS)


def test_a_hole_rest_cannot_fill_is_reported_not_covered(tmp_path: Path) -> None:
    """The connection drops and REST fails while the stream tries to fill the hole: the recording's
    coverage stops at the hole and starts again after it; later, the stretch is `unrecorded`."""
    port = _port()
    with Exchange(SimConfig(seed=7, now=NOW, frozen=False, speed=30.0, port=port)) as ex:
        ex.ws_faults.inject("drop", after=30)
        ex.faults.inject("server_error", count=10_000, group="crix-trades")  # no REST trades at all
        summary = mdcoord.record(["KRW-BTC"], ["trade"], duration=4.0, flush_interval=1.0, base_url=ex.base_url,
                                 cache_dir=tmp_path, max_retries=0, progress=False)
        ex.faults.clear()
    assert len(summary.holes) == 1 and summary.connections == 2
    spans = _covered(summary, "KRW-BTC")
    assert len(spans) == 2, spans
    with Exchange(SimConfig(seed=7, now=LATER, frozen=True, port=port)) as later:
        lo, hi = spans[0][0], spans[1][1]
        got = mdcoord.trades("KRW-BTC", start=lo, end=hi, base_url=later.base_url, cache_dir=tmp_path, cache=True, progress=False)
        gap = got.attrs["mdcoord"]["unrecorded"]
        assert gap == [{"market": "KRW-BTC", "start": spans[0][1].isoformat(), "end": spans[1][0].isoformat()}]
        want = _truth(ex, "KRW-BTC", spans[0][0], spans[0][1]) + _truth(ex, "KRW-BTC", spans[1][0], spans[1][1])
        inside = got[(got.index < spans[0][1]) | (got.index >= spans[1][0])]
        assert inside["sequential_id"].tolist() == want


def test_sigkill_loses_at_most_the_last_flush_and_corrupts_nothing(tmp_path: Path) -> None:
    """`python -m mdcoord record` killed with SIGKILL mid-run: every file readable (a part per flush,
    none rewritten), every recorded
    span exactly the exchange's trades, and the recording reaches within a flush interval (plus
    the time to write one) of the moment of the kill."""
    port = _port()
    speed, flush = 30.0, 1.0
    with Exchange(SimConfig(seed=7, now=NOW, frozen=False, speed=speed, port=port)) as ex:
        env = {**os.environ, "MDCOORD_CACHE_DIR": str(tmp_path)}
        proc = subprocess.Popen([sys.executable, "-m", "mdcoord", "record", *MARKETS, "--base-url", ex.base_url,
                                 "--flush-interval", str(flush)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        trades_dir = tmp_path / f"127.0.0.1_{port}" / "trades"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len({p.parents[1] for p in trades_dir.rglob("part*.parquet")}) < len(MARKETS):
            time.sleep(0.05)
        time.sleep(2.5)  # a few more flushes
        proc.send_signal(signal.SIGKILL)
        killed_at = pd.Timestamp(ex.market.now())
        proc.wait(timeout=30)
        for path in tmp_path.rglob("*.parquet"):
            pq.read_table(path)  # readable, whole
        from mdcoord._store import TradeStore

        store = TradeStore(tmp_path, f"127.0.0.1_{port}")
        for m in MARKETS:
            day = pd.Timestamp(NOW).floor("D").value // 1_000_000
            rows, coverage = store.load(m, day, day + 86_400_000)  # every part of the day, as trades() reads them
            assert rows is not None and len(list(coverage)) == 1
            a, b = (pd.Timestamp(x, unit="ms", tz="UTC") for x in list(coverage)[0])
            inside = rows[(rows["time"] >= a) & (rows["time"] < b)]
            assert inside["sequential_id"].tolist() == _truth(ex, m, a, b), m
            lost = (killed_at - b).total_seconds() / speed  # wall seconds of trading not on disk
            assert lost < flush + 1.5, (m, lost)


def test_a_flush_without_trades_still_records_its_coverage(tmp_path: Path) -> None:
    """A market that traded earlier but not in this flush interval: its span grew (the stream
    proved no trade happened), so the part holds coverage and no rows; reading the day takes
    the parts' union and each trade once (REST's part.parquet beside a recording's parts)."""
    from mdcoord._frames import trades_to_frame
    from mdcoord._store import TradeStore

    store = TradeStore(tmp_path, "src")
    day = pd.Timestamp("2026-11-20", tz="UTC").value // 1_000_000
    rows = trades_to_frame([{"market": "KRW-ONB", "timestamp": day + 1_000, "trade_price": 9.5, "trade_volume": 1.0,
                             "ask_bid": "BID", "sequential_id": (day + 1_000) * 10_000, "prev_closing_price": 9.4,
                             "change_price": 0.1}])
    store.save("KRW-ONB", rows, [(day, day + 2_000)])  # as REST writes part.parquet
    store.append("KRW-ONB", rows, [(day + 1_000, day + 5_000)])  # the same trade again, in a part
    store.append("KRW-ONB", trades_to_frame([]), [(day + 5_000, day + 9_000)])  # no trade, coverage only
    got, coverage = store.load("KRW-ONB", day, day + 86_400_000)
    assert got is not None and got["sequential_id"].tolist() == [(day + 1_000) * 10_000]
    assert list(coverage) == [(day, day + 9_000)]
    assert len(list((tmp_path / "src" / "trades" / "market=KRW-ONB").rglob("part*.parquet"))) == 3


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="record keeps"):
        mdcoord.record("KRW-BTC", "ticker", duration=1)
    with pytest.raises(InvalidRequestError, match="duration"):
        mdcoord.record("KRW-BTC", duration=0)
    with pytest.raises(InvalidRequestError, match="flush_interval"):
        mdcoord.record("KRW-BTC", duration=1, flush_interval=0)
