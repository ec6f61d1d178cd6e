"""The benchmark scripts still run (tiny sizes, no latency). Nothing here times anything or
asserts on a timing: benchmarks are run by hand (``python -m benchmarks``), never by pytest."""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks import __main__ as run_all
from benchmarks import bench_compare, bench_micro, bench_rate, bench_sim_cold, bench_snapshots


def quiet(_: str) -> None:
    pass


def test_benchmark_sections_run_and_render() -> None:
    clients = ["mdcoord", "mdcoord-seq"] + [c for c in ("pyupbit", "ccxt") if importlib.util.find_spec(c)]
    report = {
        "machine": run_all.machine_info(),
        "settings": {"runs": 1, "long_runs": 1, "quick": True},
        "total_wall_s": 0.0,
        "results": {
            "compare": bench_compare.bench(1, [400, 600], [0.0], clients, log=quiet),
            "rate": bench_rate.bench(1, 1800, [0.0], log=quiet),  # 10 requests
            "snapshots": bench_snapshots.bench(1, [0.0], 3, log=quiet),
            "micro": {"aggregation": bench_micro.bench_aggregation(1, 10_000),
                      "json_to_frame": bench_micro.bench_json(1)},
            "simcold": bench_sim_cold.bench(1, 1, ["market_all", "instruments_5"], log=quiet),
        },
    }
    for cell in report["results"]["compare"].values():
        for name in ("mdcoord", "mdcoord-seq"):
            assert cell["clients"][name]["complete_and_correct"], cell["clients"][name]["verdicts"]
    assert next(iter(report["results"]["rate"].values()))["requests"] == 10
    assert all(c["verdicts"] == ["yes"] for c in report["results"]["snapshots"]["cells"].values())
    text = run_all.markdown(report)
    for heading in ("mdcoord vs pyupbit vs ccxt", "Rate-limit efficiency", "Tickers, orderbooks", "Micro-benchmarks",
                    "The embedded exchange, cold"):
        assert heading in text


@pytest.mark.parametrize("module", [bench_compare, bench_rate, bench_snapshots, bench_micro, bench_sim_cold, run_all])
def test_scripts_have_a_main(module: object) -> None:
    assert callable(module.main)
