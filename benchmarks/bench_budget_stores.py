"""The shared budget's building block (issue 12.7): mdcoord's ``FileRing`` vs pyrate-limiter's
``SQLiteBucket`` (file lock) and ``MultiprocessBucket``, and ``limits``' moving window on its
``MemoryStorage`` (its only non-server storage: per process, so not shared).

Limit 10 per 0.2 s (not 1 s, to keep runs short) for every store but ``limits``, whose
granularity is whole seconds: 10 per 1 s there. Needs the optional extra
``pip install -e .[bench]``.

1. **Overhead**: one process, no contention, a limit so high that nothing waits (FileRing 64 per
   10 µs, pyrate 10^9 per 1 ms, limits 10^9 per 1 s): µs per acquire (+ ``mark_sending`` for
   FileRing), median of ``--calls``.
2. **Strictness**: 8 and 32 forked processes take permits as fast as the store lets them for
   ``--seconds`` and log ``time.monotonic_ns()`` at each grant. Max permits in any window of the
   limit's length (strict: ≤ 10), throughput ÷ the bound (10 per window), min/max per-process share.
3. **Crash**: 8 processes take permits as in 2 while the parent SIGKILLs one at a random moment
   every 0-20 ms and forks a replacement, for ``--crash-seconds`` (blocking acquires: pyrate's
   non-blocking path calls ``FileLock.acquire(False)``, a TypeError with filelock 4.x). Then a fresh process must get 5 permits within 3 s
   (else the store is stuck); SQLite gets ``PRAGMA integrity_check``; max per window over every
   logged grant (killed processes included).

    python benchmarks/bench_budget_stores.py [--seconds 3] [--crash-seconds 4] [--json]
"""

from __future__ import annotations

import argparse
import bisect
import math
import multiprocessing as mp
import os
import random
import signal
import sqlite3
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import cli, md_table, median
from mdcoord._budget import FileRing

ALLOWED, SPAN = 10, 0.2
STORES = ("filering", "pyrate-sqlite", "pyrate-mp", "limits-memory")
SHARED = ("filering", "pyrate-sqlite", "pyrate-mp")
CTX = mp.get_context("fork")
_TMP = tempfile.TemporaryDirectory(prefix="bench-budget-")  # lives for the run: pyrate's leak
# thread and late children may still touch their files after a case ends


def workdir() -> str:
    return tempfile.mkdtemp(dir=_TMP.name)


def span_of(store: str) -> float:
    return 1.0 if store == "limits-memory" else SPAN


class Store:
    """One store, created in the parent before forking; ``taker()`` in each process gives a
    ``take(blocking)`` that returns True once a permit is granted (False: non-blocking refusal)."""

    def __init__(self, store: str, directory: str, allowed: int, span: float) -> None:
        self.store, self.dir, self.allowed, self.span = store, directory, allowed, span
        self.shared: Any = None
        if store == "pyrate-mp":
            from pyrate_limiter import MultiprocessBucket, Rate
            self.shared = MultiprocessBucket.init([Rate(allowed, max(1, int(span * 1000)))])
        elif store == "filering":
            self.shared = FileRing(directory, "bench", "g")

    @property
    def db(self) -> str:
        return os.path.join(self.dir, "pyrate.sqlite")

    def taker(self) -> Any:
        allowed, span = self.allowed, self.span
        if self.store == "filering":
            ring = self.shared

            def take(blocking: bool = True) -> bool:
                while True:
                    wait, res = ring.try_acquire(allowed, span)
                    if res is not None:
                        ring.mark_sending(res)
                        return True
                    if not blocking:
                        return False
                    time.sleep(wait)
            return take
        if self.store.startswith("pyrate"):
            from pyrate_limiter import Limiter, Rate, SQLiteBucket
            if self.store == "pyrate-sqlite":
                bucket = SQLiteBucket.init_from_file([Rate(allowed, max(1, int(span * 1000)))], table="b",
                                                     db_path=self.db, use_file_lock=True)
            else:
                bucket = self.shared
            limiter = Limiter(bucket, buffer_ms=5)  # default 50 ms is meant for 1 s windows

            def take(blocking: bool = True) -> bool:
                return bool(limiter.try_acquire("b", blocking=blocking))
            return take
        from limits import RateLimitItemPerSecond
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter
        lim = MovingWindowRateLimiter(MemoryStorage())
        item = RateLimitItemPerSecond(allowed, int(span))

        def take(blocking: bool = True) -> bool:
            while not lim.hit(item, "b"):
                if not blocking:
                    return False
                time.sleep(max(1e-4, lim.get_window_stats(item, "b").reset_time - time.time()))
            return True
        return take


def _worker(st: Store, start_ns: int, end_ns: int, log_path: str, blocking: bool) -> None:
    take = st.taker()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    while time.monotonic_ns() < start_ns:
        time.sleep(0.0005)
    while time.monotonic_ns() < end_ns:
        if take(blocking):
            os.write(fd, struct.pack("<q", time.monotonic_ns()))
    os.close(fd)
    os._exit(0)


def _read_log(path: str) -> list[int]:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    n = len(raw) // 8
    return list(struct.unpack(f"<{n}q", raw[: n * 8]))


def max_in_window(times: list[int], span_ns: int) -> int:
    ts = sorted(times)
    return max((bisect.bisect_left(ts, t + span_ns) - i for i, t in enumerate(ts)), default=0)


def overhead(store: str, calls: int) -> float:
    d = workdir()
    if store == "filering":
        st = Store(store, d, 64, 1e-5)
    elif store.startswith("pyrate"):
        st = Store(store, d, 10**9, 0.001)
    else:
        st = Store(store, d, 10**9, 1.0)
    take = st.taker()
    for _ in range(50):
        take()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        take()
        samples.append(time.perf_counter_ns() - t0)
    return median(samples) / 1000


def strictness(store: str, procs: int, seconds: float) -> dict[str, Any]:
    span = span_of(store)
    d = workdir()
    st = Store(store, d, ALLOWED, span)
    start = time.monotonic_ns() + int((0.3 + 0.02 * procs) * 1e9)
    end = start + int(seconds * 1e9)
    ps = [CTX.Process(target=_worker, args=(st, start, end, f"{d}/log{i}", True)) for i in range(procs)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(seconds + 30)
        if p.is_alive():  # stuck: counted as what it logged
            os.kill(p.pid, signal.SIGKILL)
            p.join()
    logs = [[t for t in _read_log(f"{d}/log{i}") if t < end] for i in range(procs)]
    times = [t for lg in logs for t in lg]
    counts = [len(lg) for lg in logs]
    bound = ALLOWED * math.ceil(seconds / span - 1e-9)  # the most a sliding window allows in `seconds`
    return {"store": store, "procs": procs, "span_s": span, "permits": len(times),
            "max_in_window": max_in_window(times, int(span * 1e9)),
            "max_in_window_less_2ms": max_in_window(times, int(span * 1e9) - 2_000_000),
            "throughput_vs_bound": round(len(times) / bound, 3),
            "share_min": min(counts), "share_max": max(counts)}


def crash(store: str, seconds: float, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    span = span_of(store)
    d = workdir()
    st = Store(store, d, ALLOWED, span)
    far = time.monotonic_ns() + int(3600e9)
    n, kills = 0, 0

    def spawn() -> Any:
        nonlocal n
        p = CTX.Process(target=_worker, args=(st, 0, far, f"{d}/log{n}", True))
        n += 1
        p.start()
        return p
    live = [spawn() for _ in range(8)]
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        time.sleep(rng.uniform(0, 0.02))
        victim = live.pop(rng.randrange(len(live)))
        os.kill(victim.pid, signal.SIGKILL)
        victim.join()
        kills += 1
        live.append(spawn())
    for p in live:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
    # a fresh process must still get 5 permits (blocking) within 3 s
    probe_end = time.monotonic_ns() + int(3e9)
    probe_log = f"{d}/probe"

    def probe() -> None:
        take = st.taker()
        fd = os.open(probe_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for _ in range(5):
            take(True)
            os.write(fd, struct.pack("<q", time.monotonic_ns()))
        os._exit(0)
    p = CTX.Process(target=probe)
    p.start()
    p.join(max(0.0, (probe_end - time.monotonic_ns()) / 1e9))
    usable = p.exitcode == 0
    if p.is_alive():
        os.kill(p.pid, signal.SIGKILL)
        p.join()
    integrity = None
    if store == "pyrate-sqlite":
        try:
            con = sqlite3.connect(st.db, timeout=2)
            integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
            con.close()
        except sqlite3.Error as e:
            integrity = f"error: {e}"
    probe_times = _read_log(probe_log)
    times = [t for i in range(n) for t in _read_log(f"{d}/log{i}")] + probe_times
    return {"store": store, "kills": kills, "permits": len(times), "usable_after": usable,
            "probe_permits": len(probe_times), "sqlite_integrity": integrity,
            "max_in_window": max_in_window(times, int(span * 1e9))}


def bench(calls: int, seconds: float, crash_seconds: float, log: Any = print) -> dict[str, Any]:
    out: dict[str, Any] = {"allowed": ALLOWED, "span_s": SPAN, "overhead_us": {}, "strictness": [], "crash": []}
    for s in STORES:
        out["overhead_us"][s] = round(overhead(s, calls), 1)
        log(f"overhead {s}: {out['overhead_us'][s]} µs")
    for procs in (8, 32):
        for s in STORES:
            r = strictness(s, procs, seconds)
            out["strictness"].append(r)
            log(f"strict {s} x{procs}: {r}")
    for s in SHARED:
        r = crash(s, crash_seconds)
        out["crash"].append(r)
        log(f"crash {s}: {r}")
    fr = out["overhead_us"]["filering"]
    out["overhead_ratio_to_filering"] = {s: round(v / fr, 2) for s, v in out["overhead_us"].items()}
    return out


def table(r: dict[str, Any]) -> str:
    rows = []
    for s in STORES:
        cells = [s, f"{r['overhead_us'][s]:.1f} ({r['overhead_ratio_to_filering'][s]:.2f}x)"]
        for procs in (8, 32):
            x = next(v for v in r["strictness"] if v["store"] == s and v["procs"] == procs)
            cells.append(f"{x['max_in_window']} / {x['throughput_vs_bound']:.2f} / {x['share_min']}-{x['share_max']}")
        c = next((v for v in r["crash"] if v["store"] == s), None)
        cells.append("n/a (not shared)" if c is None else
                     f"{c['kills']} kills: {'usable' if c['usable_after'] else 'STUCK'}, max {c['max_in_window']}"
                     + (f", integrity {c['sqlite_integrity']}" if c["sqlite_integrity"] else ""))
        rows.append(cells)
    return md_table(["store", "µs/acquire (÷ FileRing)", "8 procs: max/window, thr÷bound, shares",
                     "32 procs: same", "crash (SIGKILL)"], rows)


def main() -> int:
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--calls", type=int, default=3000)
        ap.add_argument("--seconds", type=float, default=3.0)
        ap.add_argument("--crash-seconds", type=float, default=4.0)

    return cli(__doc__, options, lambda a, log: bench(a.calls, a.seconds, a.crash_seconds, log), table)


if __name__ == "__main__":
    sys.exit(main())
