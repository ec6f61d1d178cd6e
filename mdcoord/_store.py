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

import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

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

__all__ = ["CandleStore", "TradeStore", "merge_write", "read_partition", "source_name"]

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
    except FileNotFoundError:  # gone since it was listed: a compaction merged it into another
        return None
    except Exception as exc:  # noqa: BLE001 - a bad file is a cache miss, never an error
        log.warning("ignoring unreadable cache file %s (%s); it will be refetched", path, exc)
        return None
    try:
        meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
        coverage = [(int(a), int(b)) for a, b in meta["coverage"]] if meta.get("version") == _FORMAT_VERSION else None
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
        table = table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
        tmp = path.with_name(f".{_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


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
            if all(p.exists() for p in files):
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
        table = table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, folder / name)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _parts(self, market: str, day: int) -> dict[int, list[tuple[int, Path]]]:
        """The append-only parts of a day by level: ``{level: [(first ms, path), ...]}``."""
        folder = self._dir(market, day)
        out: dict[int, list[tuple[int, Path]]] = {}
        if folder.is_dir():
            for path in folder.iterdir():
                m = _PART_NAME.match(path.name)
                if m:
                    out.setdefault(int(m["level"] or 0), []).append((int(m["first"]), path))
        return out

    def compact(self, market: str, day: int, *, fanout: int = COMPACT_FANOUT, full: bool = False) -> int:
        """Merge a day's append-only parts; returns how many files fewer the day has.

        Tiered: while ``fanout`` or more parts share a level, they become one part of the next
        level (all of that level, oldest first). ``full=True`` merges every part into the day's
        ``part.parquet`` (under the lock REST's writes take). Each merged file is written to a
        hidden temporary name and renamed into place *before* its inputs are removed, so a kill
        at any point loses nothing: at worst some trades are in two files until the next
        compaction, and readers take each ``sequential_id`` once and the union of the coverage.
        One compaction per day folder at a time (a lock file); readers need no lock."""
        if fanout < 2:
            raise InvalidRequestError(f"fanout must be >= 2, got {fanout!r}")
        folder = self._dir(market, day)
        if not folder.is_dir():
            return 0
        bounds = (day * _DAY_MS, (day + 1) * _DAY_MS)
        fewer = 0
        with FileLock(str(folder / _COMPACT_LOCK)):
            if full:
                inputs = [p for parts in self._parts(market, day).values() for _, p in parts]
                frame, coverage, read = self._merge(inputs, bounds)
                if read:
                    existed = self._path(market, day).exists()
                    merge_write(self._path(market, day), frame, list(coverage), ["sequential_id"], ["time", "sequential_id"])
                    fewer += self._remove(read) - (0 if existed else 1)
                return fewer
            while True:
                parts = self._parts(market, day)
                level = min((lv for lv, ps in parts.items() if len(ps) >= fanout), default=None)
                if level is None:
                    return fewer
                inputs = sorted(parts[level])
                frame, coverage, read = self._merge([p for _, p in inputs], bounds)
                if len(read) < 2:  # unreadable parts stay where they are; nothing to merge
                    return fewer
                name = f"part-{inputs[0][0]}-L{level + 1}-{uuid.uuid4().hex[:8]}.parquet"
                self._write_part(folder, name, frame, list(coverage))
                fewer += self._remove(read) - 1

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
