"""The benchmark scripts still run (tiny sizes, no latency). Nothing here times anything or
asserts on a timing: benchmarks are run by hand (``python -m benchmarks``), never by pytest."""

from __future__ import annotations

import importlib.util
import re

import pytest

from benchmarks import __main__ as run_all
from benchmarks import bench_backfill, bench_budget_processes, bench_compare, bench_firstcall, bench_live, bench_micro, bench_rate
from benchmarks import bench_record, bench_requests, bench_sim_cold, bench_snapshots


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
            # a fresh process per mode: its first and warm call send the same requests (the head again)
            "firstcall": bench_firstcall.bench(1, bench_firstcall.available_modes(), latency=0.0, count=400,
                                               importtime_runs=1, log=quiet),
            # a day's range and 300 candles of three markets; mdcoord only (the "before" client
            # needs the repository's history, which a shallow checkout may lack)
            "requests": bench_requests.bench(1, [300], ["mdcoord"], log=quiet),
            # worker processes start together: 3 x 400 candles (3 requests each), then 1 and 2; one
            # process, 10 requests. No cell sends more than 10, so a 429 is a bug, never load.
            "processes": bench_budget_processes.bench(1, [0.0], log=quiet,
                                                      sizes={"a": (3, 400), "b": ((1, 2), 400), "c": (1800, 400)}),
            # a day of 1m candles of two markets from one address (2 workers) and from 2: every
            # address within its limit, the dataset exact
            "backfill": bench_backfill.bench([2], 2, 1, 0.0, log=quiet),
            # 2,000 messages through decode and framing (each becomes one row), a second of live tickers
            "live": bench_live.bench(2000, 50, 1, 2, 1.0, log=quiet),
            # the recorder's command for 4 s of all KRW markets, its memory read every second
            "record": bench_record.bench(4.0, 60.0, 1.0, log=quiet),
        },
    }
    for cell in report["results"]["compare"].values():
        for name in ("mdcoord", "mdcoord-seq"):
            assert cell["clients"][name]["complete_and_correct"], cell["clients"][name]["verdicts"]
    assert next(iter(report["results"]["rate"].values()))["requests"] == 10
    assert all(c["verdicts"] == ["yes"] for c in report["results"]["snapshots"]["cells"].values())
    for mode, cell in report["results"]["firstcall"]["cells"].items():
        assert cell["rows"] == [400] and cell["429s"] == 0, (mode, cell)
        first, warm = cell["requests"][0]
        assert len(cell["requests"]) == 1 and first == warm, (mode, cell["requests"])
    procs = report["results"]["processes"]
    cells = [*procs["acceptance"].values(), *procs["scaling"].values()]
    assert [c["procs"] for c in cells] == [3, 1, 2]
    for c in cells:  # every process's frame exact, nobody over the limit
        assert c["exact"] and c["429s"] == 0 and c["418s"] == 0, c
        assert all(w["requests"] == 3 and not w["error"] for r in c["runs"] for w in r["workers"])
    for c in procs["single"].values():
        for budget in ("process", "machine"):
            assert c[budget]["exact"] and c[budget]["429s"] == 0, c[budget]
    assert next(iter(procs["single"].values()))["process"]["requests"] == 10
    for cell in report["results"]["requests"]["cells"].values():
        r = cell["clients"]["mdcoord"]
        assert r["exact"] and r["within_bound"] and r["429s"] == 0, (cell["market"], cell["shape"], r)
    for c in report["results"]["backfill"]["cells"]:
        assert c["exact"] and c["429s"] == 0 and c["max_in_1s_per_address"] <= 10 and c["tasks"] == 2, c
    assert [c["addresses"] for c in report["results"]["backfill"]["cells"]] == [1, 2]
    assert all(v["median_per_s"] > 0 for v in report["results"]["live"]["parse"].values())
    assert report["results"]["live"]["latency"]["rows"] > 0
    rec = report["results"]["record"]
    assert rec["exit_code"] == 0 and rec["samples"] and "recorded" in rec["summary"], rec
    recorded = int(re.search(r"recorded ([\d,]+) trades", rec["summary"])[1].replace(",", ""))  # type: ignore[index]
    # files are counted per recorded market-day (how many trades arrive in 4 s depends on the machine)
    assert (rec["trade_days"] > 0) == (recorded > 0) and rec["trade_files"] >= rec["trade_days"], rec
    text = run_all.markdown(report)
    for heading in ("mdcoord vs pyupbit vs ccxt", "Rate-limit efficiency", "Tickers, orderbooks", "Micro-benchmarks",
                    "The embedded exchange, cold", "The first call of a process", "Many processes, one machine budget",
                    "Requests per row", "A backfill over several addresses", "Live: trade messages"):
        assert heading in text


def test_liquid_speed_mode_runs_and_renders() -> None:
    # issue 13.2's wall-time check: this checkout only (the "before" build needs the repository's history)
    out = bench_requests.speed([0.0], [400], 1, ["now"], log=quiet)
    (cell,) = out["cells"]
    run = cell["runs"][0]["now"]
    assert run["first_rows"] == run["warm_rows"] == 400 and cell["now_429s"] == 0, cell
    assert "| 0 ms | 400 |" in bench_requests.speed_table(out)


@pytest.mark.parametrize("module", [bench_compare, bench_rate, bench_snapshots, bench_micro, bench_sim_cold, bench_requests,
                                    bench_firstcall, bench_budget_processes, bench_backfill, bench_live, bench_record, run_all])
def test_scripts_have_a_main(module: object) -> None:
    assert callable(module.main)
