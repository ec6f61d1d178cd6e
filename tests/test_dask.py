"""The cache read larger-than-memory: Dask sees the Hive layout and agrees with pandas.

Needs the optional ``dask`` extra (``pip install -e ".[dask]"``); skipped, with that reason,
when it is absent. The reading recipe is the one docs/cache.md gives ("Larger than memory").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import mdcoord
from mdcoord.sim import Exchange, SimConfig

from .conftest import NOW

dd = pytest.importorskip("dask.dataframe", reason="the optional 'dask' extra is not installed")
# Dask's own use of a pandas API that pandas 3.1 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index")

MARKETS = ["KRW-BTC", "KRW-ETH"]
# Two days across a month's end: two `period` partitions per market for 1m (2 x 2880 candles).
START, END = pd.Timestamp("2026-10-31", tz="UTC"), pd.Timestamp("2026-11-02", tz="UTC")
# Partition values are strings. Without this schema Dask reads `period=2026` (1h, 4h) as an
# integer in one place and a string in another (KeyError: 2026), and takes the columns of
# whichever file comes first (1d files have three more).
PARTITIONS = pa.schema([("market", pa.string()), ("timeframe", pa.string()), ("period", pa.string())])


def read_cache(root: Path, **kw: Any) -> Any:
    return dd.read_parquet(str(root), dataset={"partitioning": {"flavor": "hive", "schema": PARTITIONS}}, **kw)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, pd.DataFrame]]:
    """A cache holding two markets in 1m (and 1h, 1d: other periods and columns, to filter out),
    and the 1m frame ``mdcoord.candles`` returned (~35 requests at 10/s)."""
    cache_dir = tmp_path_factory.mktemp("cache")
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True)) as ex:
        kw = {"start": START, "end": END, "base_url": ex.base_url, "cache": True, "cache_dir": str(cache_dir)}
        minutes = mdcoord.candles(MARKETS, "1m", **kw)
        mdcoord.candles(MARKETS, "1h", **kw)
        mdcoord.candles(MARKETS, "1d", **kw)
    (source,) = set(mdcoord.cache.info(cache_dir).index.get_level_values("source"))
    yield cache_dir / source / "candles", minutes


def _per_market(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows and mean close per market, as pandas computes them."""
    return _by_code(frame.groupby("market", observed=True)["close"].agg(["count", "mean"]))


def _by_code(agg: pd.DataFrame) -> pd.DataFrame:
    # Dask's `market` is a partition column (categorical or string): compare by plain codes
    agg = agg.copy()
    agg.index = agg.index.astype(str)
    return agg.sort_index()


def test_the_path_keys_become_columns(filled: tuple[Path, pd.DataFrame]) -> None:
    root, _ = filled
    whole = read_cache(root).compute()
    assert {"market", "timeframe", "period", "time", "close", "last_trade_at"} <= set(whole.columns)
    parts = whole.groupby(["timeframe", "period"], observed=True).size()
    assert sorted(parts.index) == [("1d", "all"), ("1h", "2026"), ("1m", "2026-10"), ("1m", "2026-11")]
    assert sorted(whole["market"].unique()) == MARKETS
    assert str(whole["time"].dtype) == "datetime64[ns, UTC]"
    assert whole.loc[whole["timeframe"] == "1m", "prev_close"].isna().all()  # a 1d-only column


def test_per_market_counts_and_means_equal_pandas(filled: tuple[Path, pd.DataFrame]) -> None:
    root, minutes = filled
    # the cache holds more than was asked (the newest page, read to learn "now"): select the range
    ddf = read_cache(root, filters=[("timeframe", "==", "1m")], columns=["market", "time", "close"])
    ddf = ddf[(ddf["time"] >= START) & (ddf["time"] < END)]
    got = _by_code(ddf.groupby("market", observed=True)["close"].agg(["count", "mean"]).compute())
    want = _per_market(minutes.reset_index())
    assert list(got.index) == list(want.index) == MARKETS
    assert list(got["count"]) == list(want["count"]) == [2880, 2880]
    pd.testing.assert_series_equal(got["mean"], want["mean"], rtol=1e-12)


def test_a_filter_on_market_reads_that_market_only(filled: tuple[Path, pd.DataFrame]) -> None:
    root, minutes = filled
    eth = read_cache(root, filters=[("market", "==", "KRW-ETH"), ("timeframe", "==", "1m")]).compute()
    assert set(eth["market"]) == {"KRW-ETH"}
    eth = eth.loc[(eth["time"] >= START) & (eth["time"] < END)].sort_values("time")
    want = minutes.xs("KRW-ETH", level="market")
    assert list(eth["time"]) == list(want.index)
    assert list(eth["close"]) == list(want["close"])


def test_dot_files_in_partitions_are_not_read(filled: tuple[Path, pd.DataFrame]) -> None:
    """Lock files and the temp file of an interrupted write are dot-files: readers skip them."""
    root, minutes = filled
    part = next(root.glob("market=KRW-BTC/timeframe=1m/period=*/part.parquet")).parent
    assert any(p.name.startswith(".") for p in part.iterdir())  # the writer's lock file is there
    stray = part / ".part.parquet.4242.deadbeef.tmp"
    stray.write_bytes(b"PAR1 half a parquet file")  # what a killed writer can leave behind
    try:
        frame = read_cache(root, filters=[("timeframe", "==", "1m")]).compute()
    finally:
        stray.unlink()
    frame = frame.loc[(frame["time"] >= START) & (frame["time"] < END)]
    assert list(_per_market(frame)["count"]) == list(_per_market(minutes.reset_index())["count"])
