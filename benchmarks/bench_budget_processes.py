"""Benchmark: many mdcoord processes of one machine under one budget (issue 12, items 1, 2, 8, 9).

Since 0fde494 every mdcoord process of a machine shares one sliding-window budget per
(exchange, group) through a file, handed out in turn (``rate_budget="machine"``, the default).
This measures it against the embedded exchange (strict: 10 requests/s per group, 429 above it,
418 after five 429s in 10 s) on 127.0.0.1, run on a thread of this process; latency 30, 150
and 300 ms (± a tenth) as in the other sections.

Every worker is a fresh interpreter (``python -m benchmarks._budget_worker``) fetching the 1m
candles of its own market with ``mdcoord.candles(market, "1m", count=N)`` at the default
options, cache off. **Barrier**: every worker imports mdcoord and pandas and says ``ready``;
then the parent sends all of them one start moment (``time.monotonic()`` 0.25 s ahead: the
host's one monotonic clock, which the exchange's log uses too) and each sleeps until it. Each
cell gets a fresh exchange and a fresh, private budget folder (``$MDCOORD_BUDGET_DIR``; the
file's place changes nothing of how it works) and drops ``$MDCOORD_RATE_BUDGET``, so the
default is the default.

Cells (``--cells``):

- **a, acceptance**: 8 processes x 20,000 candles (101 requests each on a liquid market, more on a thin one). Reported: 429s and 418s
  (all groups), the most candle requests the exchange saw in any 1 s, whether every frame is
  exact (``_common.check_candles`` against the exchange's model of that market), **wall ÷
  bound** — the last finish after the common start ÷ (candle requests / 10 s) (target <= 1.10)
  — each process's **first answer** after the common start (target <= 2 s), read from the
  exchange's log: the arrival of its market's first request answered 200, plus the nominal
  downlink half of the latency; each one's **finish ÷ the mean finish** (target max <= 1.25);
  and ``budget_wait_s`` from each frame's ``attrs["mdcoord"]`` (seconds it waited for slots
  other processes held).
- **b, scaling**: 1, 2, 4, 8 and 16 processes x 3,000 candles (16 requests each): aggregate
  candle requests/s ÷ 10, the strict figure (server floor ÷ wall: ``(ceil(n/10) - 1) s +
  latency``, the fastest a sliding window allows n requests; req/s ÷ 10 flatters short jobs),
  429s, max per 1 s, fairness (max finish ÷ mean finish), the latest first answer.
- **c, one process before/after (item 8)**: ``bench_rate``'s 600-request job (119,800
  candles) and the 20,000-candle job in this process, with ``rate_budget="process"`` (the old
  per-process limiter) and the default ``"machine"``, one after the other in the same run
  (which goes first alternates by run): req/s ÷ 10 of each and machine ÷ process (target >=
  0.99: the machine budget costs at most 1 %).

Medians over ``--runs`` (default 1: every cell here is long); every ratio is taken within a
run before the median. ``--quick``: 8 x 1,000 candles, 1-16 x 400, the 60-request and
2,000-candle jobs — checks that it works, not speed.

    python benchmarks/bench_budget_processes.py [--runs 1] [--cells a b c] [--latencies 0.03 0.15 0.3]
                                                [--quick] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mdcoord
from benchmarks import bench_rate
from benchmarks._common import LATENCIES, RATE, check_candles, cli, exchange, md_table, median, ms
from benchmarks.bench_compare import start_wanted

#: One market per process (all listed in 2017, so 20,000 minutes back is history everywhere).
MARKETS = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-ADA", "KRW-DOGE", "KRW-AVAX", "KRW-DOT",
           "KRW-TRX", "KRW-LINK", "KRW-BCH", "KRW-ATOM", "KRW-AAVE", "KRW-ALGO", "KRW-APT", "KRW-ARB")
CELLS = ("a", "b", "c")
SIZES = {  # (a) processes, candles; (b) process counts, candles; (c) the two single-process jobs
    "full": {"a": (8, 20_000), "b": ((1, 2, 4, 8, 16), 3_000), "c": (bench_rate.COUNT, 20_000)},
    "quick": {"a": (8, 1_000), "b": ((1, 2, 4, 8, 16), 400), "c": (11_800, 2_000)},
}
TARGETS = {"wall_vs_bound": 1.10, "first_answer_s": 2.0, "finish_vs_mean": 1.25, "machine_vs_process": 0.99}
LEAD_S = 0.25  # the common start, this far after the last worker said ready
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def private_budget() -> Iterator[str]:
    """A fresh budget folder for one cell, and no ``$MDCOORD_RATE_BUDGET`` (restored after)."""
    saved = {k: os.environ.get(k) for k in ("MDCOORD_BUDGET_DIR", "MDCOORD_RATE_BUDGET")}
    with tempfile.TemporaryDirectory(prefix="bench-procs-") as d:
        os.environ["MDCOORD_BUDGET_DIR"] = d
        os.environ.pop("MDCOORD_RATE_BUDGET", None)
        try:
            yield d
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _worker_env() -> dict[str, str]:
    """This environment, with the benchmarks and the very mdcoord measured here importable."""
    env = dict(os.environ)
    lib = str(Path(mdcoord.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(ROOT), lib, *filter(None, [env.get("PYTHONPATH")])]))
    return env


# -- many processes -------------------------------------------------------------------------------------
def _start_workers(specs: list[dict[str, Any]], tmp: str) -> tuple[list[subprocess.Popen[str]], float]:
    """Start every worker, wait until all imported, send the common start; return it."""
    env = _worker_env()
    procs = []
    for i, spec in enumerate(specs):
        err = open(os.path.join(tmp, f"stderr{i}"), "w", encoding="utf-8")  # noqa: SIM115 (the child owns it)
        procs.append(subprocess.Popen([sys.executable, "-m", "benchmarks._budget_worker", json.dumps(spec)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                      env=env, cwd=ROOT))
        err.close()
    for i, p in enumerate(procs):
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        if line != "ready":
            for q in procs:
                q.kill()
            raise RuntimeError(f"worker {i} did not start: {line!r}; "
                               f"{Path(tmp, f'stderr{i}').read_text(encoding='utf-8')[-2000:]}")
    start = time.monotonic() + LEAD_S
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{start!r}\n")
        p.stdin.flush()
    return procs, start


def _collect(procs: list[subprocess.Popen[str]], timeout: float, tmp: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    outs = []
    for i, p in enumerate(procs):
        try:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        lines = [x for x in out.splitlines() if x.startswith("{")]
        if p.returncode != 0 or not lines:
            err = Path(tmp, f"stderr{i}").read_text(encoding="utf-8")[-2000:]
            outs.append({"error": f"worker exited {p.returncode}: {err}", "has_frame": False, "meta": {},
                         "began": math.nan, "ended": math.nan})
        else:
            outs.append(json.loads(lines[-1]))
    return outs


def processes_run(n: int, count: int, latency: float, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``n`` processes start together, each fetching ``count`` 1m candles of its own market."""
    if n > len(MARKETS):
        raise ValueError(f"at most {len(MARKETS)} processes (one market each)")
    markets = MARKETS[:n]
    with exchange(latency) as ex, private_budget(), tempfile.TemporaryDirectory(prefix="bench-procs-out-") as tmp:
        specs = [{"market": m, "count": count, "base_url": ex.base_url, "options": options or {},
                  "frame": os.path.join(tmp, f"frame{i}.pkl")} for i, m in enumerate(markets)]
        procs, start = _start_workers(specs, tmp)
        per_proc_requests = math.ceil(count / 200) + 1
        outs = _collect(procs, 60 + 3 * n * per_proc_requests / RATE, tmp)
        log = [r for r in ex.log if r.group == "candles"]
        arrivals = sorted(r.arrival for r in log)
        workers = []
        for m, spec, out in zip(markets, specs, outs):
            mine = [r for r in log if r.query.get("market") == m]
            answered = [r.arrival for r in mine if r.status == 200]
            frame = pd.read_pickle(spec["frame"]) if out["has_frame"] else None
            check = check_candles(frame, ex, start_wanted(ex, "mdcoord", count, m), count, market=m)
            meta = out["meta"]
            workers.append({
                "market": m,
                "requests": len(mine),
                "requests_sent_attr": meta.get("requests_sent"),
                "first_request_s": min((r.arrival for r in mine), default=math.nan) - start,
                # the answer reaches the client a downlink delay after the exchange admitted it
                "first_answer_s": min(answered, default=math.nan) - start + latency / 2,
                "began_late_s": out["began"] - start,
                "finish_s": out["ended"] - start,
                "budget_wait_s": meta.get("budget_wait_s"),
                "limiter_wait_s": meta.get("limiter_wait_s"),
                "error": out["error"],
                "check": check,
            })
        n_req = len(arrivals)
        finishes = [w["finish_s"] for w in workers]
        wall = max(finishes)
        mean_finish = sum(finishes) / len(finishes)
        floor = (math.ceil(n_req / RATE) - 1) * 1.0 + latency
        return {
            "procs": n,
            "count": count,
            "requests": n_req,
            "429s": ex.count(status=429),
            "418s": ex.count(status=418),
            "max_in_1s": ex.max_in_window("candles", 1.0),
            "wall_s": wall,
            "bound_s": n_req / RATE,
            "wall_vs_bound": wall / (n_req / RATE),
            "efficiency_vs_10": n_req / wall / RATE,
            "server_floor_s": floor,
            "strict_efficiency": floor / wall,
            "first_answer_max_s": max(w["first_answer_s"] for w in workers),
            "finish_vs_mean": [f / mean_finish for f in finishes],
            "fairness": wall / mean_finish,
            "exact": all(w["check"]["ok"] for w in workers),
            "budget_wait_s_sum": sum(w["budget_wait_s"] or 0.0 for w in workers),
            # a busy machine delays sends and the exchange's own clock-in alike: read 429s with it
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "workers": workers,
            # every candle request as the exchange saw it: s after the common start, market, status
            "arrivals": [[round(r.arrival - start, 4), r.query.get("market"), r.status]
                         for r in sorted(log, key=lambda r: r.arrival)],
        }


def _summary(raw: list[dict[str, Any]], latency: float) -> dict[str, Any]:
    r0 = raw[0]
    return {
        "latency_s": latency,
        "procs": r0["procs"],
        "count": r0["count"],
        "runs": raw,
        "requests": median(r["requests"] for r in raw),
        "429s": sum(r["429s"] for r in raw),
        "418s": sum(r["418s"] for r in raw),
        "max_in_1s": max(r["max_in_1s"] for r in raw),
        "exact": all(r["exact"] for r in raw),
        "median_wall_s": round(median(r["wall_s"] for r in raw), 3),
        "median_wall_vs_bound": round(median(r["wall_vs_bound"] for r in raw), 3),
        "median_efficiency_vs_10": round(median(r["efficiency_vs_10"] for r in raw), 3),
        "median_strict_efficiency": round(median(r["strict_efficiency"] for r in raw), 3),
        "median_fairness": round(median(r["fairness"] for r in raw), 3),
        "max_first_answer_s": round(max(r["first_answer_max_s"] for r in raw), 3),
        "first_answers_s": [[round(w["first_answer_s"], 3) for w in r["workers"]] for r in raw],
        "finish_vs_mean": [[round(f, 3) for f in r["finish_vs_mean"]] for r in raw],
        "budget_wait_s": [[w["budget_wait_s"] for w in r["workers"]] for r in raw],
        "errors": sorted({w["error"] for r in raw for w in r["workers"] if w["error"]}),
        "load_avg_after": [r["load_avg_after"] for r in raw],
    }


def _cell(runs: int, n: int, count: int, latency: float, label: str, log: Callable[[str], None]) -> dict[str, Any]:
    raw = []
    for i in range(runs):
        r = processes_run(n, count, latency)
        raw.append(r)
        log(f"  processes ({label}) {ms(latency)} {n:>2} x {count:,} run {i + 1}: {r['wall_s']:.2f} s, "
            f"{r['requests']} req, wall/bound {r['wall_vs_bound']:.3f}, strict {r['strict_efficiency']:.3f}, "
            f"first answer <= {r['first_answer_max_s']:.2f} s, fairness {r['fairness']:.3f}, {r['429s']} x 429, "
            f"max {r['max_in_1s']} in 1 s, exact {'yes' if r['exact'] else 'NO'}")
    return _summary(raw, latency)


def acceptance(runs: int, procs: int, count: int, latencies: list[float],
               log: Callable[[str], None] = print) -> dict[str, Any]:
    return {str(latency): _cell(runs, procs, count, latency, "a", log) for latency in latencies}


def scaling(runs: int, procs: tuple[int, ...], count: int, latencies: list[float],
            log: Callable[[str], None] = print) -> dict[str, Any]:
    return {f"{latency}|{n}": _cell(runs, n, count, latency, "b", log) for latency in latencies for n in procs}


# -- one process, before and after ----------------------------------------------------------------------
BUDGETS = ("process", "machine")


def single(runs: int, counts: tuple[int, ...], latencies: list[float],
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """bench_rate's job with ``rate_budget="process"`` and the default (``"machine"``), in turn."""
    for b in BUDGETS:  # untimed: mdcoord's loop thread and first budget file are no run's cost
        with private_budget():
            bench_rate.one_run(400, 0.0, check=False, options={"rate_budget": b})
    out = {}
    for latency in latencies:
        for count in counts:
            raw: dict[str, list[dict[str, Any]]] = {b: [] for b in BUDGETS}
            for i in range(runs):
                for b in BUDGETS[::1 if i % 2 == 0 else -1]:
                    with private_budget():
                        r = bench_rate.one_run(count, latency, options={"rate_budget": "process"} if b == "process"
                                               else None)
                    raw[b].append(r)
                    log(f"  processes (c) {ms(latency)} {count:>7,} {b:<7} run {i + 1}: {r['wall_s']:.2f} s, "
                        f"{r['requests']} req, req/s÷10 {r['efficiency_vs_10']:.3f}, {r['429s']} x 429, "
                        f"{r['check']['verdict']}")
            cell: dict[str, Any] = {"latency_s": latency, "count": count}
            for b in BUDGETS:
                rs = raw[b]
                cell[b] = {
                    "runs": rs,
                    "requests": median(r["requests"] for r in rs),
                    "median_wall_s": round(median(r["wall_s"] for r in rs), 3),
                    "median_efficiency_vs_10": round(median(r["efficiency_vs_10"] for r in rs), 3),
                    "median_strict_efficiency": round(median(r["strict_efficiency"] for r in rs), 3),
                    "429s": sum(r["429s"] for r in rs),
                    "418s": sum(r["418s"] for r in rs),
                    "max_in_1s": max(r["max_in_1s"] for r in rs),
                    "exact": all(r["check"]["ok"] for r in rs),
                    "budget_wait_s": [r["budget_wait_s"] for r in rs],
                }
            # efficiency ratio = process wall / machine wall (same requests), within each run
            cell["median_machine_vs_process"] = round(median(
                m["efficiency_vs_10"] / p["efficiency_vs_10"] for m, p in zip(raw["machine"], raw["process"])), 4)
            out[f"{latency}|{count}"] = cell
    return out


def bench(runs: int, latencies: list[float], cells: list[str] | tuple[str, ...] = CELLS, quick: bool = False,
          log: Callable[[str], None] = print, sizes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cells asked for; ``sizes`` overrides ``SIZES["quick" if quick else "full"]`` (tests)."""
    size = sizes or SIZES["quick" if quick else "full"]
    out: dict[str, Any] = {"sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in size.items()},
                           "targets": TARGETS}
    if "a" in cells:
        out["acceptance"] = acceptance(runs, *size["a"], latencies, log=log)
    if "b" in cells:
        out["scaling"] = scaling(runs, *size["b"], latencies, log=log)
    if "c" in cells:
        out["single"] = single(runs, tuple(size["c"]), latencies, log=log)
    return out


# -- rendering -----------------------------------------------------------------------------------------
def _ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


def table(results: dict[str, Any]) -> str:
    parts = []
    if "acceptance" in results:
        rows = []
        for r in results["acceptance"].values():
            first = max(max(x) for x in r["first_answers_s"])
            worst = max(max(x) for x in r["finish_vs_mean"])
            waits = [w for run in r["budget_wait_s"] for w in run if w is not None]
            rows.append([
                ms(r["latency_s"]), f"{r['procs']} x {r['count']:,}", f"{r['requests']:g}", r["429s"], r["418s"],
                r["max_in_1s"], "yes" if r["exact"] else "NO", f"{r['median_wall_s']:.2f} s",
                f"**{r['median_wall_vs_bound']:.3f}** ({_ok(r['median_wall_vs_bound'] <= TARGETS['wall_vs_bound'])})",
                f"{first:.2f} s ({_ok(first <= TARGETS['first_answer_s'])})",
                f"{worst:.3f} ({_ok(worst <= TARGETS['finish_vs_mean'])})",
                f"{min(waits):.1f}-{max(waits):.1f} s" if waits else "?",
            ])
        parts += ["(a) acceptance: processes started together, default options, each its own market", "",
                  md_table(["latency", "processes x candles", "candle requests", "429s", "418s", "max req in 1 s",
                            "every frame exact", "wall (last finish)", "wall ÷ (requests / 10 s) <= 1.10",
                            "latest first answer <= 2 s", "max finish ÷ mean <= 1.25",
                            "budget_wait_s (min-max of the processes)"],
                           rows)]
    if "scaling" in results:
        rows = [[ms(r["latency_s"]), r["procs"], f"{r['count']:,}", f"{r['requests']:g}", f"{r['median_wall_s']:.2f} s",
                 f"**{r['median_efficiency_vs_10']:.3f}**", f"{r['median_strict_efficiency']:.3f}", r["429s"],
                 r["418s"], r["max_in_1s"], f"{r['median_fairness']:.3f}", f"{r['max_first_answer_s']:.2f} s",
                 "yes" if r["exact"] else "NO"] for r in results["scaling"].values()]
        parts += ["", "(b) aggregate efficiency by number of processes", "",
                  md_table(["latency", "processes", "candles each", "candle requests", "median wall",
                            "req/s ÷ 10", "strict (floor ÷ wall)", "429s", "418s", "max req in 1 s",
                            "max finish ÷ mean", "latest first answer", "exact"], rows)]
    if "single" in results:
        rows = []
        for c in results["single"].values():
            p, m = c["process"], c["machine"]
            ratio = c["median_machine_vs_process"]
            rows.append([ms(c["latency_s"]), f"{c['count']:,}", f"{p['requests']:g}",
                         f"{p['median_wall_s']:.2f} s / {m['median_wall_s']:.2f} s",
                         f"{p['median_efficiency_vs_10']:.3f}", f"{m['median_efficiency_vs_10']:.3f}",
                         f"**{ratio:.3f}** ({_ok(ratio >= TARGETS['machine_vs_process'])})",
                         f"{p['429s']} / {m['429s']}", f"{p['max_in_1s']} / {m['max_in_1s']}",
                         "yes" if p["exact"] and m["exact"] else "NO"])
        parts += ["", '(c) one process: rate_budget="process" vs the default "machine", same run', "",
                  md_table(["latency", "candles", "requests", "median wall (process / machine)",
                            "req/s ÷ 10, process", "req/s ÷ 10, machine", "machine ÷ process >= 0.99",
                            "429s (p / m)", "max req in 1 s (p / m)", "exact"], rows)]
    return "\n".join(parts).lstrip("\n")


def headline(results: dict[str, Any]) -> list[str]:
    """The figures issue 12 asks for, from this run (for ``python -m benchmarks``)."""
    lines = []
    if "acceptance" in results:
        cells = results["acceptance"].values()
        first = next(iter(cells))
        lines.append(f"- {first['procs']} processes x {first['count']:,} candles, machine budget: wall ÷ bound "
                     + ", ".join(f"{r['median_wall_vs_bound']:.3f} at {ms(r['latency_s'])}" for r in cells)
                     + f"; {sum(r['429s'] for r in cells)} x 429")
    if "single" in results:
        lines.append("- one process, machine ÷ process budget efficiency: " + ", ".join(
            f"{c['median_machine_vs_process']:.3f} ({c['count']:,} candles, {ms(c['latency_s'])})"
            for c in results["single"].values()))
    return lines


def main() -> int:
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--runs", type=int, default=1)
        ap.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
        ap.add_argument("--latencies", type=float, nargs="+", default=list(LATENCIES))
        ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not speed")

    return cli(__doc__, options, lambda a, log: bench(a.runs, a.latencies, a.cells, a.quick, log=log), table)


if __name__ == "__main__":
    sys.exit(main())
