"""The README's quick-start command, run as a user would (offline, a subprocess)."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_offline_and_prints_head_tail_and_metadata() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mdcoord", "demo", "--count", "300", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for piece in ("head:", "tail:", "metadata (df.attrs['mdcoord'])", '"data_count": 300', "0 answered 429"):
        assert piece in out.stdout


def test_demo_progress_bar_reports_requests() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mdcoord", "demo", "--count", "500"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "3/3" in out.stderr and "req" in out.stderr  # ceil(501 / 200) pieces, on stderr


def test_errors_are_one_line_and_a_nonzero_exit() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mdcoord", "demo", "--timeframe", "7m", "--quiet"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error: unknown timeframe '7m'") and out.stderr.count("\n") == 1


def _run(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "mdcoord", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_dataset_commands_write_parquet_and_csv(tmp_path, exchange) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    env = {"MDCOORD_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "btc.parquet"
    r = _run("candles", "KRW-BTC", "1h", "--start", "2026-11-01", "--end", "2026-11-03", "--out", str(out),
             "--base-url", exchange.base_url, env_extra=env)
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(out)
    assert len(df) == 48 and str(df.index.tz) == "UTC"
    r = _run("tickers", "KRW-BTC", "KRW-ETH", "--out", str(tmp_path / "t.csv"), "--base-url", exchange.base_url,
             env_extra=env)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "t.csv")) == 2
    r = _run("trades", "KRW-BTC", "--count", "700", "--out", str(tmp_path / "tr.parquet"), "--base-url",
             exchange.base_url, env_extra=env)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_parquet(tmp_path / "tr.parquet")) == 700
    r = _run("orderbooks", "KRW-BTC", "--depth", "5", "--base-url", exchange.base_url, env_extra=env)
    assert r.returncode == 0 and "bid_price" in r.stdout
    r = _run("cache", "info", env_extra=env)
    assert r.returncode == 0 and "KRW-BTC" in r.stdout
    r = _run("cache", "clear", env_extra=env)
    assert r.returncode == 0 and "removed" in r.stdout


def test_cli_errors_are_one_line(exchange) -> None:  # type: ignore[no-untyped-def]
    r = _run("candles", "KRW-NOPE", "1m", "--count", "5", "--base-url", exchange.base_url, "--no-cache")
    assert r.returncode == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    r = _run("candles", "KRW-BTC", "1m", "--count", "5", "--out", "x.txt", "--base-url", exchange.base_url,
             "--no-cache")
    assert r.returncode == 1 and "use a .parquet or .csv" in r.stderr


def test_sim_subcommand_is_the_exchanges_cli() -> None:
    r = _run("sim", "--help")
    assert r.returncode == 0 and "--latency" in r.stdout and "--port" in r.stdout
