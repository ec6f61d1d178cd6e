"""The local Parquet cache: where it is, what it holds, and clearing it.

>>> mdcoord.cache.directory()          # $MDCOORD_CACHE_DIR or the OS user cache dir
>>> mdcoord.cache.info()               # one row per market and timeframe
>>> mdcoord.cache.clear(market="KRW-BTC", timeframe="1m")
>>> mdcoord.cache.compact()            # a recording's trade parts: one file per market and day

Layout (Hive-style; read it with pyarrow, pandas, DuckDB, Polars, Dask...)::

    <dir>/<source>/candles/market=KRW-BTC/timeframe=1m/period=2024-01/part.parquet

``source`` is ``upbit`` for the real API, ``<host>_<port>`` for another exchange. Each file's
Parquet metadata (key ``mdcoord``) holds the slot ranges proven complete (see docs/cache.md).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from ._config import get_options, resolve_cache_dir
from ._codes import normalize_market
from ._store import BookStore, TradeStore
from ._timeframe import Timeframe

__all__ = ["clear", "compact", "directory", "info"]


def directory(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory in force (argument, ``set_options(cache_dir=)``, ``$MDCOORD_CACHE_DIR``,
    or the OS user cache directory)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return resolve_cache_dir(get_options())


def _files(root: Path) -> list[tuple[str, str, str, str, Path]]:
    """``(source, market, timeframe, period, path)`` of every partition; trades show as the
    timeframe ``"trades"`` with their UTC date as the period."""
    out = []
    for path in sorted(root.glob("*/candles/market=*/timeframe=*/period=*/part.parquet")):
        period, tf, market = (p.name.split("=", 1)[1] for p in (path.parent, path.parent.parent, path.parents[2]))
        out.append((path.parents[4].name, market, tf, period, path))
    for path in sorted(root.glob("*/trades/market=*/date=*/part*.parquet")):  # a recording adds parts
        date, market = (p.name.split("=", 1)[1] for p in (path.parent, path.parent.parent))
        out.append((path.parents[3].name, market, "trades", date, path))
    return out


def info(cache_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """What the cache holds: one row per (source, market, timeframe) with ``files``, ``rows``,
    ``bytes``, the first and last cached row, and ``covered`` (candle slots proven complete,
    including slots without trades; for ``timeframe == "trades"``, milliseconds proven)."""
    root = directory(cache_dir)
    rows = []
    for source, market, tf, _period, path in _files(root):
        try:
            meta = pq.read_metadata(path)
            cov = json.loads((meta.metadata or {}).get(b"mdcoord", b"{}")).get("coverage", [])
            table = pq.read_table(path, columns=["time"])
            times = table.column("time").to_pandas()
        except Exception:  # noqa: BLE001 - an unreadable file shows as such
            rows.append((source, market, tf, 1, 0, path.stat().st_size, pd.NaT, pd.NaT, 0))
            continue
        rows.append(
            (source, market, tf, 1, meta.num_rows, path.stat().st_size,
             times.min() if len(times) else pd.NaT, times.max() if len(times) else pd.NaT,
             sum(b - a for a, b in cov))
        )
    cols = ["source", "market", "timeframe", "files", "rows", "bytes", "first", "last", "covered"]
    df = pd.DataFrame(rows, columns=cols)
    if df.empty:
        return df.set_index(["source", "market", "timeframe"])
    agg = df.groupby(["source", "market", "timeframe"], sort=True).agg(
        files=("files", "sum"), rows=("rows", "sum"), bytes=("bytes", "sum"), first=("first", "min"),
        last=("last", "max"), covered=("covered", "sum"),
    )
    agg.attrs["mdcoord_cache_dir"] = str(root)
    return agg


def clear(
    market: str | None = None,
    timeframe: str | None = None,
    *,
    source: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> int:
    """Delete cached data (all, or of one market / timeframe / source; ``timeframe="trades"`` for
    trades); returns the number of partition files removed."""
    root = directory(cache_dir)
    code = normalize_market(market) if market is not None else None
    tf = None if timeframe is None else "trades" if timeframe == "trades" else Timeframe.parse(timeframe).value
    removed = 0
    for src, m, t, _period, path in _files(root):
        if (code and m != code) or (tf and t != tf) or (source and src != source):
            continue
        shutil.rmtree(path.parent, ignore_errors=True)  # the partition: file, lock, stray temp files
        removed += 1
    return removed


def compact(
    market: str | None = None,
    *,
    source: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> int:
    """Merge the parts a recording wrote (``mdcoord.record``): trades into one file per market
    and UTC day, the day's ``part.parquet``; order book snapshots (when no ``market`` is given: a
    book part holds every market) as far as the tiered merge goes. Returns how many files fewer
    the cache holds.

    A running recorder keeps each day to a few dozen parts by itself (tiered compaction after
    each flush); this merges the rest, for instance before copying a finished recording
    elsewhere. Safe beside a running recorder and readers: each merged trade file is complete
    before its inputs are removed, and readers take each trade once; a day of books changes by
    swapping its folder in one step."""
    root = directory(cache_dir)
    code = normalize_market(market) if market is not None else None
    fewer = 0
    if code is None:
        for books in sorted(p for p in root.glob("*/orderbooks") if p.is_dir()):
            if source and books.parent.name != source:
                continue
            store = BookStore(root, books.parent.name)
            fewer += sum(store.compact(date) for date in store.dates())
    for folder in sorted(root.glob("*/trades/market=*/date=*")):
        src, m = folder.parents[2].name, folder.parent.name.split("=", 1)[1]
        if (code and m != code) or (source and src != source) or not folder.is_dir():
            continue
        day = pd.Timestamp(folder.name.split("=", 1)[1]).value // 86_400_000_000_000
        fewer += TradeStore(root, src).compact(m, day, full=True)
    return fewer
