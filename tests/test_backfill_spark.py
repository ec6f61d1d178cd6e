"""A backfill's dataset read by Apache Spark (issue 14.5), as docs/scaling.md tells a user to:
``spark.read.parquet("<store>")`` with the session's time zone at UTC. A real Spark session (a
local JVM: `.ci/run` installs a Java runtime when the machine has none; pyspark comes with the
test extra), not a mock; nothing from mdcoord reads the files.

Checked: Spark finds exactly the data files (``_mdcoord/`` and hidden temporaries are skipped by
their names), discovers ``market`` and ``period`` as partition columns, types ``time`` and
``last_trade_at`` as timestamps and prices as doubles, and returns the same rows and values as
pandas reads.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mdcoord
from mdcoord.sim import Exchange

from .conftest import truth

pytestmark = [
    pytest.mark.timeout(300),  # a JVM's first start on a busy 2-core machine
    # pyspark warns at import that its pandas conversions predate pandas 3; nothing here uses them
    # (rows are collected as Python values), and that is what a user reading the files does too
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    assert shutil.which("java"), "Spark needs a Java runtime: .ci/run installs one (openjdk-17-jre-headless)"
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("mdcoord-test")
               .config("spark.sql.session.timeZone", "UTC")  # instants shown as stored
               .config("spark.ui.enabled", "false")
               .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
               # period values such as 2026-10 stay text, as every other reader gives them
               .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
               .getOrCreate())
    try:
        yield session
    finally:
        session.stop()


def test_spark_reads_the_dataset_with_the_same_rows_types_and_values(fresh: Exchange, spark: Any,
                                                                    tmp_path: Path) -> None:
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, StringType, TimestampType

    store = tmp_path / "spark"
    markets = ["KRW-BTC", "KRW-ONB"]  # a liquid market and a thin one (hours without a candle)
    summary = mdcoord.backfill(markets, "1h", "2026-10-15", "2026-11-10", store=str(store), n_workers=1,
                               base_url=fresh.base_url, progress=False)
    assert summary.tasks_done == summary.tasks == 4  # two markets x two months

    sdf = spark.read.parquet(str(store))
    types = {f.name: type(f.dataType) for f in sdf.schema.fields}
    assert types == {
        "time": TimestampType, "open": DoubleType, "high": DoubleType, "low": DoubleType, "close": DoubleType,
        "volume": DoubleType, "value": DoubleType, "last_trade_at": TimestampType,
        "market": StringType, "period": StringType,
    }
    assert {Path(f).name for f in sdf.inputFiles()} == {"part.parquet"}
    assert len(sdf.inputFiles()) == 4

    cols = ["market", "period", "time", "open", "high", "low", "close", "volume", "value", "last_trade_at"]
    rows = sdf.select("market", "period", F.unix_micros("time").alias("time"), "open", "high", "low", "close", "volume",
                      "value", F.unix_micros("last_trade_at").alias("last_trade_at")).collect()
    got = pd.DataFrame([r.asDict() for r in rows], columns=cols).sort_values(["market", "time"]).reset_index(drop=True)

    want = pd.read_parquet(store)
    want = want.astype({"market": str, "period": str})
    for c in ("time", "last_trade_at"):  # the instants as Spark's unix_micros gives them
        want[c] = want[c].dt.tz_convert("UTC").astype("int64") // (1000 if want[c].dtype.unit == "ns" else 1)
    want = want[cols].sort_values(["market", "time"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert len(got) == sum(len(truth(fresh, m, "1h", "2026-10-15", "2026-11-10")) for m in markets)
    assert got.groupby("market")["time"].apply(lambda s: s.is_unique).all()
