"""A backfill into an ``s3://`` store (issue 14.5): a real S3-compatible HTTP server on 127.0.0.1
(moto's server mode, in a thread of this process), reached by the Dask workers through fsspec's
s3fs exactly as they would reach AWS or MinIO. No object in mdcoord or s3fs is patched."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

import mdcoord
from mdcoord.sim import Exchange

from .conftest import assert_same_candles, truth


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """An S3-compatible server and the storage options that reach it (credentials are moto's
    any-will-do test ones)."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}",
                                                                         "region_name": "us-east-1"}}
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="mdcoord-test")
    try:
        yield options
    finally:
        server.stop()


def test_a_backfill_writes_to_s3_and_reruns_from_it(fresh: Exchange, s3: dict[str, Any]) -> None:
    import s3fs

    store = "s3://mdcoord-test/krw-1h"
    summary = mdcoord.backfill(["KRW-BTC", "KRW-ETH"], "1h", "2026-10-20", "2026-11-05", store=store,
                               storage_options=s3, n_workers=1, base_url=fresh.base_url, progress=False)
    assert summary.tasks_done == 4 and fresh.count(status=429) == 0
    fs = s3fs.S3FileSystem(**s3)
    keys = sorted(fs.find("mdcoord-test/krw-1h"))
    assert sum(k.endswith("part.parquet") for k in keys) == 4 and sum(k.endswith(".json") for k in keys) == 5
    assert not [k for k in keys if "/." in k], "a temporary object was left behind"
    df = pd.read_parquet(store, storage_options=s3)
    for m in ("KRW-BTC", "KRW-ETH"):
        got = df[df["market"].astype(str) == m].sort_values("time").set_index("time")
        got.index = got.index.as_unit("ns")
        assert_same_candles(got, truth(fresh, m, "1h", "2026-10-20", "2026-11-05"))
    sent = fresh.count(group="candles")
    again = mdcoord.backfill(["KRW-BTC", "KRW-ETH"], "1h", "2026-10-20", "2026-11-05", store=store,
                             storage_options=s3, n_workers=1, base_url=fresh.base_url, progress=False)
    assert again.tasks_skipped == 4 and fresh.count(group="candles") == sent
