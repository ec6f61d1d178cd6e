"""Benchmark: the recorder's memory over a long run (issue 15, item 5).

``python -m mdcoord record KRW`` (trades and order book snapshots of every KRW market) runs for
``--duration`` seconds against the embedded exchange in a process of its own, whose clock runs
``--speed`` times the wall clock (10 by default: 100 minutes of the market in 10). Every ``--every`` seconds
the recorder process's resident memory (``VmRSS``) is read from ``/proc``. Reported: RSS at the
first sample after the warm-up (the first minute), at the middle and at the end; the slope of a
least-squares line through the samples after the warm-up (MB per minute); what was recorded (the
summary line the command prints) and the bytes on disk. Flat means the slope is a small fraction
of the RSS per minute while the data written grows.

    python benchmarks/bench_record.py [--duration 600] [--speed 10] [--every 10] [--json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._common import cli, md_table
from mdcoord.sim import ExchangeProcess, SimConfig

WARMUP_S = 60.0


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.parquet"))


def bench(duration: float, speed: float, every: float, log: Any = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, \
            ExchangeProcess(SimConfig(seed=7, now="2026-11-20T00:00:00Z", frozen=False, speed=speed, rate_limit=10)) as ex:
        env = {**os.environ, "MDCOORD_CACHE_DIR": tmp}
        cmd = [sys.executable, "-m", "mdcoord", "record", "KRW", "--base-url", ex.base_url, "--duration", str(duration)]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        samples: list[tuple[float, float, int]] = []
        while proc.poll() is None:
            time.sleep(every)
            rss = _rss_mb(proc.pid)
            if rss is not None:
                samples.append((time.monotonic() - t0, rss, _bytes(Path(tmp))))
                log(f"  t={samples[-1][0]:6.0f} s  RSS {rss:7.1f} MB  on disk {samples[-1][2] / 2**20:7.1f} MB")
        out, err = proc.communicate()
        on_disk = _bytes(Path(tmp))
        days = [d for d in Path(tmp).glob("*/trades/market=*/date=*") if d.is_dir()]
        per_day = [len(list(d.glob("part*.parquet"))) for d in days]
        book_files = len(list(Path(tmp).glob("*/orderbooks/date=*/part*.parquet")))
    steady = [(t, r) for t, r, _ in samples if t >= WARMUP_S] or [(t, r) for t, r, _ in samples]
    ts, rs = np.array([t for t, _ in steady]), np.array([r for _, r in steady])
    slope = float(np.polyfit(ts / 60, rs, 1)[0]) if len(ts) > 1 else 0.0
    return {
        "duration_s": duration, "speed": speed, "exchange_hours": round(duration * speed / 3600, 2),
        "exit_code": proc.returncode, "summary": out.strip().splitlines()[-1] if out.strip() else err.strip()[-500:],
        "rss_mb_after_warmup": round(float(rs[0]), 1) if len(rs) else None,
        "rss_mb_middle": round(float(rs[len(rs) // 2]), 1) if len(rs) else None,
        "rss_mb_end": round(float(rs[-1]), 1) if len(rs) else None,
        "rss_mb_max": round(max(r for _, r, _ in samples), 1) if samples else None,
        "rss_slope_mb_per_min": round(slope, 2),
        "on_disk_mb": round(on_disk / 2**20, 1),
        # a part per flush, merged 16 to 1 as they accumulate: files a recorded market-day holds at the end
        "trade_files": sum(per_day), "trade_days": len(per_day), "trade_files_max_per_day": max(per_day, default=0),
        "book_files": book_files,
        "samples": [(round(t, 1), round(r, 1), b) for t, r, b in samples],
    }


def table(res: dict[str, Any]) -> str:
    rows = [[f"{res['duration_s']:.0f} s at x{res['speed']:g} ({res['exchange_hours']} h of the market)",
             res["rss_mb_after_warmup"], res["rss_mb_middle"], res["rss_mb_end"], res["rss_mb_max"],
             res["rss_slope_mb_per_min"], res["on_disk_mb"],
             f"{res['trade_files']} ({res['trade_days']} market-days, at most {res['trade_files_max_per_day']} in one)",
             res["book_files"]]]
    return md_table(["run", "RSS after 1 min (MB)", "RSS middle", "RSS end", "RSS max", "slope (MB/min)",
                     "written (MB)", "trade files at the end", "book files"], rows) + f"\n\n{res['summary']}"


def main() -> int:
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--duration", type=float, default=600.0)
        ap.add_argument("--speed", type=float, default=10.0)
        ap.add_argument("--every", type=float, default=10.0)

    return cli(__doc__, options, lambda a, log: bench(a.duration, a.speed, a.every, log), table)


if __name__ == "__main__":
    sys.exit(main())
