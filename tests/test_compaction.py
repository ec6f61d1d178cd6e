"""Compaction of a recording's trade parts: a part per flush would be 17,280 files a day per
market at 5 s flushes; tiered compaction keeps a day to a few dozen files. What must hold, for
every reader at every moment: each recorded trade exactly once, and the coverage never less than
what was written before the read began — across compactions, concurrent readers, and a SIGKILL
at any point of a compaction.

The trades are synthetic and deterministic: trade ``i`` of a day happens at ``day + i`` seconds
with ``sequential_id == i``; part ``k`` holds trades ``10k .. 10k+9`` (and, to exercise the
de-duplication, trade ``10k-1`` again) and proves ``[day + 10k s, day + 10(k+1) s)``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import mdcoord
from mdcoord import InvalidRequestError
from mdcoord._frames import trades_to_frame
from mdcoord._store import BookStore, TradeStore

DAY = pd.Timestamp("2026-11-20", tz="UTC").value // 1_000_000
DAY_INDEX = DAY // 86_400_000
MARKET = "KRW-ONB"


def part(k: int) -> tuple[pd.DataFrame, list[tuple[int, int]]]:
    ids = range(max(0, 10 * k - 1), 10 * k + 10)
    rows = [{"market": MARKET, "timestamp": DAY + 1000 * i, "trade_price": 100.0 + i, "trade_volume": 1.0,
             "ask_bid": "BID", "sequential_id": i, "prev_closing_price": 100.0, "change_price": 0.0} for i in ids]
    return trades_to_frame(rows), [(DAY + 10_000 * k, DAY + 10_000 * (k + 1))]


def parts_on_disk(root: Path) -> list[Path]:
    return sorted((root / "src" / "trades" / f"market={MARKET}").rglob("part*.parquet"))


def check_exact(store: TradeStore, at_least: int = 0) -> int:
    """The day as ``trades()`` reads it: one contiguous covered stretch ``[day, day + 10K s)`` with
    ``K >= at_least`` and exactly trades ``0 .. 10K-1``, in order, each once. Returns K."""
    rows, coverage = store.load(MARKET, DAY, DAY + 86_400_000)
    spans = list(coverage)
    if not spans:
        assert at_least == 0 and rows is None
        return 0
    assert len(spans) == 1 and spans[0][0] == DAY, spans
    k, rest = divmod(spans[0][1] - DAY, 10_000)
    assert rest == 0 and k >= at_least, (spans, at_least)
    assert rows is not None
    inside = rows[rows["time"] < pd.Timestamp(spans[0][1], unit="ms", tz="UTC")]
    assert inside["sequential_id"].tolist() == list(range(10 * k))
    return k


def test_tiered_compaction_keeps_a_day_to_a_few_files_and_every_trade_once(tmp_path: Path) -> None:
    store = TradeStore(tmp_path, "src")
    counts = []
    for k in range(300):
        rows, proven = part(k)
        assert store.append(MARKET, rows, proven) == [DAY_INDEX]
        store.compact(MARKET, DAY_INDEX, fanout=4)
        counts.append(len(parts_on_disk(tmp_path)))
        if k % 37 == 0:
            check_exact(store, at_least=k + 1)
    # 300 parts with fanout 4: levels 0..4, at most 3 parts each
    assert max(counts) <= 5 * 3 and counts[-1] == sum(int(d) for d in _base(300, 4)), counts[-1]
    levels = sorted(p.name.split("-")[2] for p in parts_on_disk(tmp_path) if "-L" in p.name)
    assert levels and all(lv.startswith("L") for lv in levels)
    assert check_exact(store) == 300
    # full: everything into the day's part.parquet (REST's file), the same trades and coverage
    removed = store.compact(MARKET, DAY_INDEX, full=True)
    assert removed == counts[-1] - 1 and [p.name for p in parts_on_disk(tmp_path)] == ["part.parquet"]
    assert check_exact(store) == 300


def _base(n: int, b: int) -> str:
    digits = ""
    while n:
        n, r = divmod(n, b)
        digits = str(r) + digits
    return digits


def test_without_enough_parts_nothing_is_merged(tmp_path: Path) -> None:
    store = TradeStore(tmp_path, "src")
    for k in range(15):
        store.append(MARKET, *part(k))
    assert store.compact(MARKET, DAY_INDEX) == 0 and len(parts_on_disk(tmp_path)) == 15  # default fanout 16
    store.append(MARKET, *part(15))
    assert store.compact(MARKET, DAY_INDEX) == 15 and len(parts_on_disk(tmp_path)) == 1
    assert check_exact(store) == 16
    assert store.compact(MARKET, DAY_INDEX + 1) == 0  # a day without files
    with pytest.raises(InvalidRequestError, match="fanout"):
        store.compact(MARKET, DAY_INDEX, fanout=1)


class Writer(threading.Thread):
    """A recorder-like thread: ``append(k)`` for ``k`` in ``[first, last)``, each followed by
    ``compact()``; ``written`` is how many flushes are on disk, ``done`` set at the end."""

    def __init__(self, append: Callable[[int], object], compact: Callable[[], object], first: int, last: int) -> None:
        super().__init__()
        self.append, self.compact, self.ks = append, compact, range(first, last)
        self.written, self.done = first, threading.Event()
        self.errors: list[BaseException] = []
        self.start()

    def run(self) -> None:
        try:
            for k in self.ks:
                self.append(k)
                self.written = k + 1
                self.compact()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        finally:
            self.done.set()


def test_readers_during_compaction_never_lose_coverage(tmp_path: Path) -> None:
    """A reader lists the day's files, a compaction merges some of them and removes them before
    the reader opens them: the reader must read the new listing, not report less than was
    recorded (which would refetch from REST, or call recorded trades unrecorded)."""
    store = TradeStore(tmp_path, "src")
    writer = Writer(lambda k: store.append(MARKET, *part(k)), lambda: store.compact(MARKET, DAY_INDEX, fanout=3), 0, 400)
    reads = 0
    while not writer.done.is_set():
        check_exact(TradeStore(tmp_path, "src"), at_least=writer.written)
        reads += 1
    writer.join()
    assert not writer.errors, writer.errors
    assert reads > 10 and check_exact(store) == 400


_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from pathlib import Path
    from mdcoord._store import TradeStore
    from test_compaction import DAY_INDEX, MARKET, part
    store = TradeStore(Path(sys.argv[1]), "src")
    k = first = int(sys.argv[3])
    while True:
        store.append(MARKET, *part(k))
        k += 1
        store.compact(MARKET, DAY_INDEX, fanout=3)
        if k == first + 1:
            print("ready", flush=True)  # one part recorded
""")


def kill_repeatedly(script: str, root: Path, rng: random.Random, check: Callable[[int], int], times: int = 6) -> int:
    """Start ``script`` (it appends parts from flush ``k`` on and merges; says "ready" after its
    first), SIGKILL it at a random moment, ``check`` the store (returns the flushes held), and
    again from there. Returns the flushes held at the end."""
    k = 0
    for _ in range(times):
        child = subprocess.Popen([sys.executable, "-c", script, str(root), str(Path(__file__).parent), str(k)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.3, 1.2))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        k = check(k)
    return k


def test_sigkill_at_any_point_of_a_compaction_loses_nothing(tmp_path: Path) -> None:
    """A recorder-like child appends a part and compacts, over and over; it is killed with SIGKILL
    at random moments (inside a merge, between a merged file's rename and its inputs' removal,
    mid-append). After each kill every file is readable and the day is exact; the next child
    carries on from the recorded coverage."""
    store = TradeStore(tmp_path, "src")

    def check(k: int) -> int:
        for path in parts_on_disk(tmp_path):
            pq.read_table(path)  # whole: every file is renamed into place complete
        return check_exact(store, at_least=k + 1)  # the next child goes on from what is proven

    k = kill_repeatedly(_CHILD, tmp_path, random.Random(7), check)
    assert k > 20
    store.compact(MARKET, DAY_INDEX, full=True)
    assert check_exact(store) == k and len(parts_on_disk(tmp_path)) == 1


def test_cache_compact_merges_every_recorded_day(tmp_path: Path) -> None:
    store = TradeStore(tmp_path, "src")
    for k in range(40):
        store.append(MARKET, *part(k))
        store.append("KRW-BTC", part(k)[0].assign(market="KRW-BTC"), part(k)[1])
    before = mdcoord.cache.info(tmp_path)
    assert before.loc[("src", MARKET, "trades"), "files"] == 40
    assert mdcoord.cache.compact(market="KRW-ONB", cache_dir=tmp_path) == 39
    assert mdcoord.cache.compact(cache_dir=tmp_path) == 39  # the other market
    after = mdcoord.cache.info(tmp_path)
    # each part repeated the trade before it (11 rows a part): merged, each trade is there once
    assert before["rows"].tolist() == [40 * 11 - 1] * 2
    assert after["files"].tolist() == [1, 1] and after["rows"].tolist() == [400, 400]
    assert check_exact(store) == 40
    with pytest.raises(InvalidRequestError):
        mdcoord.cache.compact(market="not a market", cache_dir=tmp_path)


def test_parts_with_coverage_and_no_trade_merge_with_the_trade_schema(tmp_path: Path) -> None:
    """A quiet market's flushes hold coverage and no row; merged, they keep the trade columns, so
    the merged part concatenates with parts that hold trades."""
    store = TradeStore(tmp_path, "src")
    empty = trades_to_frame([])
    for k in range(4):
        store.append(MARKET, empty, [(DAY + 10_000 * k, DAY + 10_000 * (k + 1))])
    assert store.compact(MARKET, DAY_INDEX, fanout=4) == 3
    (merged,) = parts_on_disk(tmp_path)
    assert {"time", "sequential_id", "price"} <= set(pq.read_schema(merged).names)
    rows, coverage = store.load(MARKET, DAY, DAY + 86_400_000)
    assert rows is None and list(coverage) == [(DAY, DAY + 40_000)]
    for k in range(4, 8):
        store.append(MARKET, *part(k))
    assert store.compact(MARKET, DAY_INDEX, fanout=4) == 3
    rows, coverage = store.load(MARKET, DAY, DAY + 86_400_000)
    assert list(coverage) == [(DAY, DAY + 80_000)] and rows is not None
    assert rows["sequential_id"].tolist() == list(range(39, 80))


# -- order book snapshots: read directly by pandas/pyarrow, so a merge swaps the day's folder ---------
BOOK_MARKETS = ["KRW-BTC", "KRW-ETH"]


def book_part(k: int) -> pd.DataFrame:
    """Flush ``k``: a snapshot of two markets, three levels each, taken at ``day + k`` seconds."""
    at = pd.Timestamp(DAY + 1000 * k, unit="ms", tz="UTC")
    return pd.DataFrame([{"market": m, "level": lv, "ask_price": 100.0 + k + lv, "bid_price": 99.0 + k - lv,
                          "ask_size": 1.0, "bid_size": 2.0, "snapshot_at": at}
                         for m in BOOK_MARKETS for lv in range(3)])


def read_books(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / "src" / "orderbooks")


def check_books(df: pd.DataFrame, at_least: int = 0) -> int:
    """Exactly the snapshots of flushes ``0 .. K-1`` for some ``K >= at_least``, each once. Returns K."""
    assert len(df.columns), "a read found no file of snapshots"
    keys = df[["market", "level", "snapshot_at"]]
    assert not keys.duplicated().any(), "a snapshot twice"
    k = len(df) // 6
    assert len(df) == 6 * k and k >= at_least, (len(df), at_least)
    want = pd.concat([book_part(i) for i in range(k)], ignore_index=True) if k else book_part(0).iloc[:0]
    got = df.drop(columns="date").sort_values(["snapshot_at", "market", "level"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want.sort_values(["snapshot_at", "market", "level"]).reset_index(drop=True),
                                  check_dtype=False, check_categorical=False)
    return k


def book_files(root: Path) -> list[Path]:
    return sorted((root / "src" / "orderbooks").glob("date=*/part*.parquet"))  # what readers see


def test_book_parts_merge_by_swapping_the_days_folder(tmp_path: Path) -> None:
    store = BookStore(tmp_path, "src")
    counts = []
    for k in range(100):
        assert store.append(book_part(k)) == ["2026-11-20"]
        store.compact("2026-11-20", fanout=4)
        counts.append(len(book_files(tmp_path)))
    assert counts[-1] == sum(int(d) for d in _base(100, 4)) and max(counts) <= 4 * 3
    assert check_books(read_books(tmp_path)) == 100
    # beside the day only hidden names, which readers skip: the lock, and the swapped-out sets kept
    # for readers that were listing them (a minute), then swept
    books = tmp_path / "src" / "orderbooks"
    assert [p.name for p in books.iterdir() if not p.name.startswith(".")] == ["date=2026-11-20"]
    assert list(books.glob(".*.swap"))
    store.sweep()
    assert list(books.glob(".*.swap"))  # younger than a minute
    store.sweep(grace=0)
    assert not list(books.glob(".*.swap"))
    # a size cap stops the merging: nothing grows past it
    assert store.compact("2026-11-20", fanout=2, max_bytes=1) == 0
    with pytest.raises(InvalidRequestError, match="fanout"):
        store.compact("2026-11-20", fanout=0)


def test_a_reader_during_book_merges_sees_one_set_of_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pandas reading the folder while a recorder-like thread appends and merges: every read that
    succeeds holds each snapshot once and no hole (the flushes 0..K-1); a read that listed files
    a swap then moved fails loudly (FileNotFoundError), never silently. The disk is made slow to
    remove files (2 ms each), so that a merge that wrote its result beside its inputs and then
    removed them would be caught showing both."""
    real_unlink = os.unlink

    def slow_unlink(*args: object, **kwargs: object) -> None:
        time.sleep(0.002)
        real_unlink(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", slow_unlink)
    store = BookStore(tmp_path, "src")
    store.append(book_part(0))
    writer = Writer(lambda k: store.append(book_part(k)), lambda: store.compact("2026-11-20", fanout=3), 1, 300)
    good = loud = 0
    while not writer.done.is_set():
        before = writer.written
        try:
            df = read_books(tmp_path)
        except (FileNotFoundError, OSError):
            loud += 1
            continue
        check_books(df, at_least=before)
        good += 1
    writer.join()
    assert not writer.errors, writer.errors
    assert good >= 5, (good, loud)
    assert check_books(read_books(tmp_path)) == 300


_BOOK_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from pathlib import Path
    from mdcoord._store import BookStore
    from test_compaction import book_part
    store = BookStore(Path(sys.argv[1]), "src")
    k = first = int(sys.argv[3])
    while True:
        store.append(book_part(k))
        k += 1
        store.compact("2026-11-20", fanout=3)
        if k == first + 1:
            print("ready", flush=True)  # one flush written
""")


def test_sigkill_during_book_merges_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    k = kill_repeatedly(_BOOK_CHILD, tmp_path, random.Random(11), lambda k: check_books(read_books(tmp_path), at_least=k + 1))
    assert k > 20
    store = BookStore(tmp_path, "src")
    store.compact("2026-11-20", fanout=3)
    store.sweep(grace=0)  # what killed merges left, and the swapped-out sets
    assert not list((tmp_path / "src" / "orderbooks").glob(".*.swap"))
    assert check_books(read_books(tmp_path)) == k


def test_cache_compact_merges_recorded_books_too(tmp_path: Path) -> None:
    store = BookStore(tmp_path, "src")
    for k in range(40):
        store.append(book_part(k))
    assert mdcoord.cache.compact(cache_dir=tmp_path) == 40 - len(book_files(tmp_path))
    assert len(book_files(tmp_path)) == sum(int(d) for d in _base(40, 16))
    assert check_books(read_books(tmp_path)) == 40
