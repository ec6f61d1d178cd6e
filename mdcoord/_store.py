"""Layer 2: the local Parquet cache, which knows which ranges it holds.

Layout (Hive-style, readable by pyarrow, pandas, DuckDB, Polars, Dask, Spark)::

    <cache_dir>/<source>/candles/market=KRW-BTC/timeframe=1m/period=2024-01/part.parquet

- ``source`` keeps exchanges apart: ``upbit`` for the real API, ``<host>_<port>`` otherwise (an
  embedded exchange on another port is another source).
- ``period`` bounds a file's size: a UTC day for 1s, a month for minute candles below 1h, a year
  for 1h and 4h, ``all`` for 1d and longer.
- Each file holds its candles (columns as in the frames mdcoord returns, minus ``market``) and,
  in the Parquet key-value metadata under ``mdcoord``, the **coverage**: the slot ranges of its
  period that were proven complete by the exchange — including ranges that legitimately have no
  candle (no trades). Data and coverage live in one file, so they are replaced together.
- Only closed candles are stored: coverage never reaches the still-forming slot.

Safety: a write goes to a temporary file in the same directory and is moved over the old one
with ``os.replace`` (atomic on POSIX and Windows), under a per-partition file lock; the writer
re-reads the partition inside the lock and merges, so two processes filling the same market and
range lose nothing and duplicate nothing. A process killed mid-write leaves at most a stray
temporary file, which readers ignore. A file that cannot be read is treated as absent (it is
refetched and rewritten). Market codes are validated (``QUOTE-BASE``, letters and digits)
before they become paths.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from ._config import source_name
from ._exceptions import InvalidRequestError
from ._frames import canonical_candles, trades_to_frame
from ._coverage import Coverage
from ._codes import normalize_market
from ._timeframe import Timeframe

__all__ = ["BookStore", "CandleStore", "TradeStore", "merge_write", "read_partition", "source_name"]

log = logging.getLogger("mdcoord")

_META_KEY = b"mdcoord"
_FORMAT_VERSION = 1
_FILE = "part.parquet"
_ALL = (-(2**62), 2**62)


@dataclass(frozen=True)
class _Partition:
    key: str
    lo: int  # slot ordinals of the period, [lo, hi)
    hi: int


def _period_unit(tf: Timeframe) -> str | None:
    if tf is Timeframe.S1:
        return "D"
    if tf.minute_unit is not None and tf.minute_unit < 60:
        return "M"
    if tf in (Timeframe.H1, Timeframe.H4):
        return "Y"
    return None  # one file


def _partitions(tf: Timeframe, lo: int, hi: int) -> list[_Partition]:
    """The periods overlapping the slot range ``[lo, hi)``."""
    unit = _period_unit(tf)
    if unit is None:
        return [_Partition("all", *_ALL)]
    if hi <= lo:
        return []
    first = pd.Timestamp(int(tf.start_ns(lo)), tz="UTC").tz_localize(None).to_period(unit)
    last = pd.Timestamp(int(tf.start_ns(hi - 1)), tz="UTC").tz_localize(None).to_period(unit)
    out = []
    for p in pd.period_range(first, last, freq=unit):
        a = tf.first_slot_at_or_after(p.start_time.tz_localize("UTC"))
        b = tf.first_slot_at_or_after((p + 1).start_time.tz_localize("UTC"))
        out.append(_Partition(str(p), a, b))
    return out


def read_partition(path: Path) -> tuple[pa.Table, list[tuple[int, int]]] | None:
    """A partition's rows and coverage; None when absent or unreadable (a miss, never an error)."""
    if not path.exists():
        return None
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
        coverage = [(int(a), int(b)) for a, b in meta["coverage"]] if meta.get("version") == _FORMAT_VERSION else None
    except FileNotFoundError:  # gone since it was listed: a compaction merged it into another
        return None
    except Exception as exc:  # noqa: BLE001 - a bad file is a cache miss, never an error
        log.warning("ignoring unreadable cache file %s (%s); it will be refetched", path, exc)
        return None
    if coverage is None:
        log.warning("ignoring cache file %s of an unknown format; it will be refetched", path)
        return None
    return table.replace_schema_metadata(None), coverage


def read_range(paths: list[Path], lo: int, hi: int, read: list[Path] | None = None) -> tuple[pa.Table | None, Coverage]:
    """The rows of several partitions (None if none has any) and their coverage clipped to [lo, hi);
    the paths that could be read are appended to ``read`` when given."""
    frames, coverage = [], Coverage()
    for path in paths:
        got = read_partition(path)
        if got is None:
            continue
        if read is not None:
            read.append(path)
        table, cov = got
        for a, b in cov:
            coverage.add(max(a, lo), min(b, hi))
        if table.num_rows:
            frames.append(table)
    return (pa.concat_tables(frames) if frames else None), coverage


def merge_write(
    path: Path, new: pd.DataFrame, proven: list[tuple[int, int]], unique: list[str], order: list[str]
) -> None:
    """Merge ``new`` rows (unique by ``unique``, the newer copy wins) and ``proven`` ranges into the
    partition at ``path``: under its lock, re-read, merge, write a temp file, ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # dot-prefixed, like the temp files: readers such as pyarrow.dataset and Dask skip them
    with FileLock(str(path.with_name(f".{_FILE}.lock"))):
        old = read_partition(path)
        coverage = Coverage()
        for a, b in proven:
            coverage.add(a, b)
        frame = new
        if old is not None:
            table, cov = old
            for a, b in cov:
                coverage.add(a, b)
            if table.num_rows:
                frame = pd.concat([table.to_pandas(), new], ignore_index=True) if len(new) else table.to_pandas()
        frame = frame.drop_duplicates(subset=unique, keep="last").sort_values(order, kind="stable")
        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        meta = {"version": _FORMAT_VERSION, "coverage": [[a, b] for a, b in coverage]}
        _write_whole(table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()}), path)


class CandleStore:
    """Candles of one exchange (``source``) under ``root``."""

    def __init__(self, root: str | os.PathLike[str], source: str) -> None:
        self.root = Path(root)
        self.source = source

    # -- paths ------------------------------------------------------------------------------------
    def directory(self, market: str, tf: Timeframe) -> Path:
        code = normalize_market(market)  # validated before it becomes a path
        return self.root / self.source / "candles" / f"market={code}" / f"timeframe={tf.value}"

    def _path(self, market: str, tf: Timeframe, part: _Partition) -> Path:
        return self.directory(market, tf) / f"period={part.key}" / _FILE

    # -- reading ----------------------------------------------------------------------------------
    def load(self, market: str, tf: Timeframe, lo: int, hi: int) -> tuple[pd.DataFrame | None, Coverage]:
        """Cached candles with slot in ``[lo, hi)`` (flat frame with ``market`` and ``time``) and
        the coverage proven there."""
        table, coverage = read_range([self._path(market, tf, part) for part in _partitions(tf, lo, hi)], lo, hi)
        if table is None:
            return None, coverage
        df = canonical_candles(table.to_pandas())
        ords = tf.ordinal(df["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64))
        df = df.loc[(ords >= lo) & (ords < hi)]
        df.insert(0, "market", market)
        return df.reset_index(drop=True), coverage

    # -- writing ----------------------------------------------------------------------------------
    def save(self, market: str, tf: Timeframe, frame: pd.DataFrame, proven: list[tuple[int, int]]) -> None:
        """Merge ``frame`` (flat, this market's closed candles) and the ``proven`` slot ranges into
        the partitions they touch. Atomic per partition; safe across processes."""
        if not proven and frame.empty:
            return
        ords = tf.ordinal(frame["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64))
        lo = min([a for a, _ in proven] + ([int(ords.min())] if len(ords) else []))
        hi = max([b for _, b in proven] + ([int(ords.max()) + 1] if len(ords) else []))
        for part in _partitions(tf, lo, hi):
            mine = (ords >= part.lo) & (ords < part.hi)
            pieces = [(max(a, part.lo), min(b, part.hi)) for a, b in proven if a < part.hi and b > part.lo]
            if mine.any() or pieces:
                merge_write(self._path(market, tf, part), frame.loc[mine].drop(columns="market"), pieces, ["time"], ["time"])

    # -- inventory --------------------------------------------------------------------------------
    def files(self) -> Iterator[tuple[str, str, str, Path]]:
        """``(market, timeframe, period, path)`` of every partition file of this source."""
        base = self.root / self.source / "candles"
        for path in sorted(base.glob(f"market=*/timeframe=*/period=*/{_FILE}")):
            period, tf, market = (p.name.split("=", 1)[1] for p in (path.parent, path.parent.parent, path.parents[2]))
            yield market, tf, period, path


def check_cache_dir(value: object) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise InvalidRequestError(f"cache_dir must be a path, got {value!r}")
    return Path(value).expanduser()


_DAY_MS = 86_400_000
#: A recording's append-only trade parts: ``part-<first ms>-<id>`` (level 0, one flush) and
#: ``part-<first ms>-L<level>-<id>`` (``COMPACT_FANOUT`` parts of the level below, merged).
_PART_NAME = re.compile(r"^part-(?P<first>\d+)-(?:L(?P<level>\d+)-)?[0-9a-f]{8}\.parquet$")
COMPACT_FANOUT = 16
_COMPACT_LOCK = ".compact.lock"


class TradeStore:
    """Trades of one exchange under ``root``: per market and UTC day, ``part.parquet`` (what REST
    calls merge into) and any number of append-only ``part-<first ms>-<id>.parquet`` (what a
    recording adds each flush, so a flush costs what it writes, not the day so far), in
    ``<root>/<source>/trades/market=KRW-BTC/date=2026-11-19/``; each file carries its coverage in
    epoch ms. Reading takes the union of the coverage and each ``sequential_id`` once.

    Parts are compacted as they accumulate (:meth:`compact`, called by the recorder after each
    flush): ``fanout`` parts of one level become one part of the next (``part-<first ms>-L<level>-
    <id>.parquet``), so a day holds at most ``levels x (fanout - 1)`` parts (~50 at 5 s flushes)
    instead of one per flush, and each trade is rewritten once per level (3 times a day)."""

    def __init__(self, root: str | os.PathLike[str], source: str) -> None:
        self.root = Path(root)
        self.source = source

    def _dir(self, market: str, day: int) -> Path:
        code = normalize_market(market)
        date = pd.Timestamp(day * _DAY_MS, unit="ms").strftime("%Y-%m-%d")
        return self.root / self.source / "trades" / f"market={code}" / f"date={date}"

    def _path(self, market: str, day: int) -> Path:
        return self._dir(market, day) / _FILE

    def _files(self, market: str, day: int) -> list[Path]:
        folder = self._dir(market, day)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("part*.parquet") if not p.name.startswith("."))

    def load(self, market: str, lo: int, hi: int) -> tuple[pd.DataFrame | None, Coverage]:
        """Cached trades with ``lo <= time < hi`` (ms; flat frame with ``market``) and coverage."""
        days = range(lo // _DAY_MS, (hi - 1) // _DAY_MS + 1) if hi > lo else range(0)
        for _ in range(3):
            files = [p for day in days for p in self._files(market, day)]
            table, coverage = read_range(files, lo, hi)
            if files == [p for day in days for p in self._files(market, day)]:
                break
            # a compaction merged some of them while they were read: read the new listing
        else:  # compactions keep overtaking this reader: read while none runs
            with ExitStack() as held:
                for day in days:  # in order; a compaction holds one day's lock at a time
                    folder = self._dir(market, day)
                    if folder.is_dir():
                        held.enter_context(FileLock(str(folder / _COMPACT_LOCK)))
                files = [p for day in days for p in self._files(market, day)]
                table, coverage = read_range(files, lo, hi)
        if table is None:
            return None, coverage
        df = table.to_pandas()
        df["time"] = df["time"].astype("datetime64[ns, UTC]")
        ms = df["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64) // 1_000_000
        df = df.loc[(ms >= lo) & (ms < hi)]
        df = df.drop_duplicates(subset=["sequential_id"], keep="last").sort_values(["time", "sequential_id"], kind="stable")
        df.insert(0, "market", market)
        return df.reset_index(drop=True), coverage

    def _by_day(self, frame: pd.DataFrame, proven: list[tuple[int, int]]) -> Iterator[tuple[int, pd.DataFrame, list[tuple[int, int]]]]:
        ms = frame["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64) // 1_000_000
        lo = min([a for a, _ in proven] + ([int(ms.min())] if len(ms) else []))
        hi = max([b for _, b in proven] + ([int(ms.max()) + 1] if len(ms) else []))
        for day in range(lo // _DAY_MS, (hi - 1) // _DAY_MS + 1):
            a, b = day * _DAY_MS, (day + 1) * _DAY_MS
            mine = (ms >= a) & (ms < b)
            pieces = [(max(x, a), min(y, b)) for x, y in proven if x < b and y > a]
            if mine.any() or pieces:
                yield day, frame.loc[mine].drop(columns="market"), pieces

    def save(self, market: str, frame: pd.DataFrame, proven: list[tuple[int, int]]) -> None:
        """Merge trades (flat frame of one market) and proven ms ranges into their day partitions."""
        if not proven and frame.empty:
            return
        for day, rows, pieces in self._by_day(frame, proven):
            merge_write(self._path(market, day), rows, pieces, ["sequential_id"], ["time", "sequential_id"])

    def append(self, market: str, frame: pd.DataFrame, proven: list[tuple[int, int]]) -> list[int]:
        """Add trades and proven ranges as new parts (one per day), each written to a hidden
        temporary name and renamed into place: nothing existing is read or rewritten. Returns
        the days written."""
        if not proven and frame.empty:
            return []
        days = []
        for day, rows, pieces in self._by_day(frame, proven):
            first = min([a for a, _ in pieces] or [day * _DAY_MS])
            self._write_part(self._dir(market, day), f"part-{first}-{uuid.uuid4().hex[:8]}.parquet", rows, pieces)
            days.append(day)
        return days

    @staticmethod
    def _write_part(folder: Path, name: str, rows: pd.DataFrame, coverage: list[tuple[int, int]]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        clean = rows.sort_values(["time", "sequential_id"], kind="stable").reset_index(drop=True)
        clean.attrs = {}  # a stream's metadata is not the file's
        table = pa.Table.from_pandas(clean, preserve_index=False)
        meta = {"version": _FORMAT_VERSION, "coverage": [[a, b] for a, b in coverage]}
        _write_whole(table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()}), folder / name)

    def compact(self, market: str, day: int, *, fanout: int = COMPACT_FANOUT, full: bool = False) -> int:
        """Merge a day's append-only parts; returns how many files fewer the day has.

        Tiered: while ``fanout`` or more parts share a level, the oldest ``fanout`` of them become
        one part of the next level. ``full=True`` merges every part into the day's
        ``part.parquet`` (under the lock REST's writes take). Each merged file is written to a
        hidden temporary name and renamed into place *before* its inputs are removed, so a kill
        at any point loses nothing: at worst some trades are in two files until the next
        compaction, and readers take each ``sequential_id`` once and the union of the coverage.
        One compaction per day folder at a time (a lock file); readers need no lock."""
        if fanout < 2:
            raise InvalidRequestError(f"fanout must be >= 2, got {fanout!r}")
        folder = self._dir(market, day)
        if not full and _next_merge(folder, fanout) is None:  # the usual flush: no lock, one listing
            return 0
        if not folder.is_dir():
            return 0
        bounds = (day * _DAY_MS, (day + 1) * _DAY_MS)
        fewer = 0
        with FileLock(str(folder / _COMPACT_LOCK)):
            if full:
                inputs = [p for parts in _parts_by_level(folder).values() for _, p in parts]
                frame, coverage, read = self._merge(inputs, bounds)
                if read:
                    existed = self._path(market, day).exists()
                    merge_write(self._path(market, day), frame, list(coverage), ["sequential_id"], ["time", "sequential_id"])
                    fewer += self._remove(read) - (0 if existed else 1)
                return fewer
            while (step := _next_merge(folder, fanout)) is not None:
                level, inputs = step
                frame, coverage, read = self._merge([p for _, p in inputs], bounds)
                if len(read) < 2:  # unreadable parts stay where they are; nothing to merge
                    return fewer
                name = f"part-{inputs[0][0]}-L{level + 1}-{uuid.uuid4().hex[:8]}.parquet"
                self._write_part(folder, name, frame, list(coverage))
                fewer += self._remove(read) - 1
            return fewer

    @staticmethod
    def _merge(paths: list[Path], bounds: tuple[int, int]) -> tuple[pd.DataFrame, Coverage, list[Path]]:
        """The rows (each ``sequential_id`` once) and coverage of ``paths``, and which were read."""
        read: list[Path] = []
        table, coverage = read_range(paths, *bounds, read=read)
        if table is None:  # coverage only: keep the trade schema
            return trades_to_frame([]).drop(columns="market"), coverage, read
        return table.to_pandas().drop_duplicates(subset=["sequential_id"], keep="last"), coverage, read

    @staticmethod
    def _remove(paths: list[Path]) -> int:
        removed = 0
        for path in paths:
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed


# -- order book snapshots of a recording ---------------------------------------------------------------
#: A merge stops growing files past this size: a day of 1-second books of every KRW market is
#: gigabytes, so a day ends as files of up to ~this size, not one file.
BOOK_PART_MAX_BYTES = 256 * 2**20
#: How long a swapped-out folder of book parts stays (hidden) for readers still listing it.
READER_GRACE_S = 60.0
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


@functools.cache
def _renameat2() -> Any:
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform.startswith("linux") else None


def _exchange_dirs(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``): a reader sees the
    one set of files or the other, never a mix. False where the system or file system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):  # unsupported: say nothing
        log.warning("could not swap %s with %s (%s); its parts stay as they are", a, b, os.strerror(err))
    return False


class BookStore:
    """Order book snapshots a recording keeps, for readers such as pandas and pyarrow that read
    the files directly: ``<root>/<source>/orderbooks/date=D/part-<first ms>-[L<n>-]<id>.parquet``,
    every market in each part.

    A flush adds a part (hidden temporary name, renamed into place). :meth:`compact` merges
    ``fanout`` parts of a level into one of the next (streamed, batch by batch; not past
    ``BOOK_PART_MAX_BYTES``) in a new hidden folder holding the merged part and links to every
    other part, then swaps that folder with the day's in one step: a reader sees the old set of
    files or the new one, never a snapshot twice or none. (A reader that listed the old set and
    opens a file after the swap gets ``FileNotFoundError``: loud, and reading again works.) The
    swapped-out folder stays, hidden, for ``READER_GRACE_S`` (a reader may still be listing it),
    then a later compaction sweeps it, with whatever a killed merge left. Writes and compactions of
    a day take its lock file. Where directories cannot be swapped atomically (not Linux, or a
    file system without ``RENAME_EXCHANGE``), nothing is merged."""

    def __init__(self, root: str | os.PathLike[str], source: str) -> None:
        self.base = Path(root) / source / "orderbooks"

    def _dir(self, date: str) -> Path:
        return self.base / f"date={date}"

    def _lock(self, date: str) -> FileLock:
        self.base.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.base / f".date={date}.lock"))

    def append(self, books: pd.DataFrame) -> list[str]:
        """Write snapshots (``snapshot_at`` and the book columns, every market) as one new part per
        UTC day; returns the dates written."""
        dates = []
        for day, part in books.groupby(books["snapshot_at"].dt.floor("D"), sort=True):
            date = pd.Timestamp(day).strftime("%Y-%m-%d")
            first = int(part["snapshot_at"].min().value // 1_000_000)
            name = f"part-{first}-{uuid.uuid4().hex[:8]}.parquet"
            table = pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False)
            with self._lock(date):
                self._dir(date).mkdir(parents=True, exist_ok=True)
                _write_whole(table, self._dir(date) / name)
            dates.append(date)
        return dates

    def dates(self) -> list[str]:
        return sorted(p.name.split("=", 1)[1] for p in self.base.glob("date=*") if p.is_dir())

    def sweep(self, grace: float = READER_GRACE_S) -> None:
        """Remove the hidden folders that merges swapped out (the old sets of files, and what a
        killed merge left) once ``grace`` seconds old. Not at once: a reader that began listing a
        day's folder just before a swap is still listing the old one, and must find every name
        (the names a swap moved then fail to open: loud); emptying it under the reader would hand
        it a listing with files silently missing."""
        swapped = list(self.base.glob(".date=*.swap"))
        if not swapped:
            return
        clock = self.base / ".sweep"  # ages in the file system's own clock (a network share's too)
        clock.touch()
        now = clock.stat().st_mtime
        for old in swapped:
            try:
                if now - old.stat().st_mtime >= grace:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:  # another process swept it
                pass

    def compact(self, date: str, *, fanout: int = COMPACT_FANOUT, max_bytes: int = BOOK_PART_MAX_BYTES,
                grace: float = READER_GRACE_S) -> int:
        """Merge a day's parts (tiered, as above); returns how many files fewer the day has."""
        if fanout < 2:
            raise InvalidRequestError(f"fanout must be >= 2, got {fanout!r}")
        self.sweep(grace)
        folder = self._dir(date)
        if _next_merge(folder, fanout, max_bytes) is None:  # the usual flush: no lock, one listing
            return 0
        fewer = 0
        with self._lock(date):
            while (step := _next_merge(folder, fanout, max_bytes)) is not None:
                level, inputs = step
                swap = self.base / f".date={date}.{uuid.uuid4().hex[:8]}.swap"
                swap.mkdir()
                swapped = False
                try:
                    merged = {p for _, p in inputs}
                    for path in folder.iterdir():
                        if path.is_file() and not path.name.startswith(".") and path not in merged:
                            os.link(path, swap / path.name)
                    _concat_parquet([p for _, p in inputs], swap / f"part-{inputs[0][0]}-L{level + 1}-{uuid.uuid4().hex[:8]}.parquet")
                    swapped = _exchange_dirs(swap, folder)
                finally:
                    if not swapped:  # never seen by a reader: gone at once
                        shutil.rmtree(swap, ignore_errors=True)
                if not swapped:
                    return fewer
                os.utime(swap)  # now the old set: swept after the grace period
                fewer += len(inputs) - 1
            return fewer


def _write_whole(table: pa.Table, path: Path) -> None:
    """``table`` at ``path``, complete or not at all: a hidden temporary name, then a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _parts_by_level(folder: Path) -> dict[int, list[tuple[int, Path]]]:
    """A folder's append-only parts by level: ``{level: [(first ms, path), ...]}``."""
    out: dict[int, list[tuple[int, Path]]] = {}
    if folder.is_dir():
        for path in folder.iterdir():
            m = _PART_NAME.match(path.name)
            if m:
                out.setdefault(int(m["level"] or 0), []).append((int(m["first"]), path))
    return out


def _next_merge(folder: Path, fanout: int, max_bytes: int | None = None) -> tuple[int, list[tuple[int, Path]]] | None:
    """The tiered rule, for trades and books alike: the lowest level with ``fanout`` parts (whose
    oldest ``fanout`` weigh at most ``max_bytes``), and those parts, oldest first; None if none."""
    for level, parts in sorted(_parts_by_level(folder).items()):
        oldest = sorted(parts)[:fanout]
        if len(oldest) == fanout and (max_bytes is None or sum(p.stat().st_size for _, p in oldest) <= max_bytes):
            return level, oldest
    return None


def _concat_parquet(paths: list[Path], out: Path) -> None:
    """``paths`` one after the other into ``out``, a batch at a time (memory: one batch)."""
    writer: pq.ParquetWriter | None = None
    try:
        for path in paths:
            with pq.ParquetFile(path) as source:
                for batch in source.iter_batches():
                    if writer is None:
                        writer = pq.ParquetWriter(out, source.schema_arrow)
                    writer.write_batch(batch)
    finally:
        if writer is not None:
            writer.close()
