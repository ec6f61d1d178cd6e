"""Benchmark: the first call of a fresh process against a warm one, and ``import mdcoord`` (issue 13.3).

Every run is a **fresh interpreter** (``python -m benchmarks._firstcall_worker``) talking to a
fresh embedded exchange on a thread of this process (strict 10/s per group, latency 30 ms ± a
tenth, frozen clock), warmed first by the same call from this process (the exchange's own first
answer is slow: bench_sim_cold.py) and then cleared (its log and rate limits). The worker times ``import mdcoord``, then
``mdcoord.candles("KRW-BTC", "1m", count=1000, base_url=<sim>)`` twice: the **first** call of
the process, and after ``--pause`` seconds the **warm** one (loop thread, session, connections,
limiter and imports already there). Both calls send **the same requests** — the head and five
pages, six in all; the parent counts them in the exchange's log — because

- the cache is either off (``nocache``: ``cache=False``) or on as by default with an **empty
  cache directory for each call** (``cache``: both calls write the same partitions, neither
  finds anything), and
- the pause (2.5 s by default) lets the exchange's clock pass a minute boundary as far as the
  process can tell (its last ``Date`` + 2 s + the time since), so the warm call asks for the
  head again. Within ~2 s of an answer a warm call would skip the head (5 requests, one round
  trip less): that is a different job, not a warm one.

Per mode and run: the wall time of each call and **first ÷ warm** (taken within the run, then
the median), and the parts of each call (``_firstcall_worker.parts``: from the call to the first
request leaving, the head's round trip, the cache write after the head, cache loads, the page
rounds, the final cache write, the aggregation, the hand-back). ``naive`` times a sequential
``requests`` loop (pages of 200 back from the newest) the same way, as a reference.

``import mdcoord`` is timed in every worker, and ``python -X importtime -c "import mdcoord"``
(``--importtime-runs`` fresh processes) names the top offenders (median cumulative time).

    python benchmarks/bench_firstcall.py [--runs 7] [--modes nocache cache naive] [--latency 0.03]
                                         [--pause 2.5] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mdcoord
from benchmarks._common import cli, exchange, md_table, median, ms
from benchmarks.bench_budget_processes import ROOT, _worker_env

MODES = ("nocache", "cache", "naive")
LABELS = {
    "nocache": "mdcoord.candles, cache=False",
    "cache": "mdcoord.candles, cache on (empty dir per call)",
    "naive": "sequential requests loop",
}
TARGET = 1.2  # first ÷ warm
PARTS = ("loop_start", "session_start", "to_first_send", "head_trip", "head_cache_write", "cache_load",
         "head_to_pages", "pages", "final_cache_write", "assemble", "hand_back")


def available_modes() -> list[str]:
    """Every mode whose client is installed (``naive`` needs ``requests``, from the bench extra)."""
    import importlib.util

    return [m for m in MODES if m != "naive" or importlib.util.find_spec("requests")]


def one_run(mode: str, count: int, latency: float, pause: float) -> dict[str, Any]:
    with exchange(latency) as ex, tempfile.TemporaryDirectory() as tmp:
        env = _worker_env()
        env["MDCOORD_BUDGET_DIR"] = str(Path(tmp, "budget"))  # a fresh machine budget: no one else's sends
        env.pop("MDCOORD_RATE_BUDGET", None)
        spec = {"base_url": ex.base_url, "mode": mode, "count": count, "pause_s": pause, "tmp": tmp}
        # the exchange's own first answers are slow (its model computes and caches the candles):
        # warm it with the same call from this process, so that "first" measures the client only
        mdcoord.candles("KRW-BTC", "1m", count=count, base_url=ex.base_url, cache=False, progress=False)
        ex.clear_log()
        ex.reset_rate_limits()
        done = subprocess.run([sys.executable, "-m", "benchmarks._firstcall_worker", json.dumps(spec)],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        if done.returncode:
            raise RuntimeError(f"worker failed: {done.stderr[-2000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        log = ex.log
        for name in ("first", "warm"):
            call = out[name]
            mine = [r for r in log if call["began"] <= r.arrival <= call["ended"] and r.group == "candles"]
            call["requests"] = len(mine)
            call["429s"] = sum(r.status == 429 for r in mine)
        return out


def importtime(runs: int) -> dict[str, Any]:
    """``python -X importtime -c "import mdcoord"`` in ``runs`` fresh processes: median cumulative
    milliseconds of the top-level packages (and of mdcoord's own modules, summed self time)."""
    cumulative: dict[str, list[float]] = defaultdict(list)
    own: list[float] = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import mdcoord"], capture_output=True,
                              text=True, env=_worker_env(), cwd=ROOT, timeout=120)
        seen: dict[str, float] = {}
        mine = 0.0
        for line in done.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", line)
            if not m:
                continue
            self_us, cum_us, name = int(m.group(1)), int(m.group(2)), m.group(3)
            if name.startswith("mdcoord"):
                mine += self_us / 1000
            top = name.split(".")[0]
            if name == top:  # a package's own line holds its cumulative time (the first import wins)
                seen.setdefault(top, cum_us / 1000)
        own.append(mine)
        for k, v in seen.items():
            cumulative[k].append(v)
    top = sorted(((median(v), k) for k, v in cumulative.items() if len(v) == runs), reverse=True)[:8]
    return {"runs": runs, "top_ms": {k: round(v, 1) for v, k in top}, "mdcoord_own_self_ms": round(median(own), 1)}


def bench(runs: int, modes: list[str], latency: float = 0.03, count: int = 1000, pause: float = 2.5,
          importtime_runs: int = 3, log: Callable[[str], None] = print) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    imports: list[float] = []
    for mode in modes:
        rs = []
        for i in range(runs):
            r = one_run(mode, count, latency, pause)
            rs.append(r)
            imports.append(r["import_s"])
            log(f"  firstcall {mode:<8} run {i + 1}: import {r['import_s']:.3f} s, first {r['first']['wall_s']:.3f} s "
                f"({r['first']['requests']} req), warm {r['warm']['wall_s']:.3f} s ({r['warm']['requests']} req)")
        cell: dict[str, Any] = {
            "latency_s": latency,
            "count": count,
            "first_median_s": round(median(r["first"]["wall_s"] for r in rs), 4),
            "warm_median_s": round(median(r["warm"]["wall_s"] for r in rs), 4),
            "first_over_warm": round(median(r["first"]["wall_s"] / r["warm"]["wall_s"] for r in rs), 3),
            "requests": sorted({(r["first"]["requests"], r["warm"]["requests"]) for r in rs}),
            "429s": sum(r[c]["429s"] for r in rs for c in ("first", "warm")),
            "rows": sorted({r[c]["rows"] for r in rs for c in ("first", "warm")}),
            "runs": rs,
        }
        if mode != "naive":
            cell["parts_median_s"] = {c: {p: round(median(r[c]["parts"].get(p, 0.0) for r in rs), 4) for p in PARTS}
                                      for c in ("first", "warm")}
        cells[mode] = cell
    return {
        "runs": runs,
        "import_median_s": round(median(imports), 3) if imports else None,
        "importtime": importtime(importtime_runs) if importtime_runs else None,
        "cells": cells,
    }


def table(res: dict[str, Any]) -> str:
    rows = []
    for mode, c in res["cells"].items():
        ratio = c["first_over_warm"]
        verdict = "" if mode == "naive" else f" ({'met' if ratio <= TARGET else 'NOT met'})"
        reqs = ", ".join(f"{a} / {b}" for a, b in c["requests"])
        rows.append([LABELS[mode], ms(c["latency_s"]), f"{c['first_median_s']:.3f} s", f"{c['warm_median_s']:.3f} s",
                     f"**{ratio:.2f}**{verdict}", reqs, c["429s"]])
    out = [md_table(["call", "latency", "first, median", "warm, median", f"first ÷ warm <= {TARGET}",
                     "candle requests (first / warm)", "429s"], rows)]
    parted = {m: c for m, c in res["cells"].items() if "parts_median_s" in c}
    if parted:
        header = ["part (median ms)"] + [f"{m} {c}" for m in parted for c in ("first", "warm")]
        prow = [[p] + [f"{parted[m]['parts_median_s'][c][p] * 1000:.1f}" for m in parted for c in ("first", "warm")]
                for p in PARTS]
        out += ["", md_table(header, prow)]
    imp = res.get("importtime")
    line = f"`import mdcoord`: median {res['import_median_s']:.3f} s over {sum(len(c['runs']) for c in res['cells'].values())} fresh processes"
    if imp:
        line += ("; `-X importtime` (median cumulative ms, " + f"{imp['runs']} runs): "
                 + ", ".join(f"{k} {v:.0f}" for k, v in imp["top_ms"].items())
                 + f"; mdcoord's own modules {imp['mdcoord_own_self_ms']:.0f} ms self")
    return "\n".join(out + ["", line])


def main() -> int:
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--runs", type=int, default=7, help="fresh processes per mode (default 7)")
        ap.add_argument("--modes", nargs="+", choices=MODES, default=available_modes())
        ap.add_argument("--latency", type=float, default=0.03)
        ap.add_argument("--count", type=int, default=1000)
        ap.add_argument("--pause", type=float, default=2.5, help="seconds between the first and the warm call")
        ap.add_argument("--importtime-runs", type=int, default=5)

    return cli(__doc__, options, lambda a, log: bench(a.runs, a.modes, a.latency, a.count, a.pause,
                                                      a.importtime_runs, log), table)


if __name__ == "__main__":
    sys.exit(main())
