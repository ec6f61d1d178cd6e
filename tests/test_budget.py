"""The machine's rate budget (``_budget.FileRing``): one sliding window per (host, group) that
every process of the machine shares through a file (issue 12, first part).

The rule is checked on a fake clock; the sharing with real processes, where the send times the
ring recorded (under its lock) must never put more than ``allowed`` in any span, whatever the
machine's speed; and SIGKILL at the points that matter: holding the lock, between reserving a
slot and sending, after sending.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading

import pytest

from mdcoord import InvalidRequestError
from mdcoord._budget import LEASE_S, SLOTS, FileRing, _Locked

S = 1_000_000_000  # ns


class Clock:
    def __init__(self) -> None:
        self.t = 1_000 * S

    def __call__(self) -> int:
        return self.t


def test_grants_up_to_allowed_then_says_how_long_to_wait(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    ring = FileRing(tmp_path, "h", "candles", clock=clock)
    for i in range(10):
        wait, res = ring.try_acquire(10, 1.0)
        assert wait == 0 and res is not None
        ring.mark_sending(res)
        clock.t += S // 100  # 10 ms apart
    wait, res = ring.try_acquire(10, 1.0)
    assert res is None and wait == pytest.approx(1.0 - 0.10)  # the first send leaves the span
    clock.t += int(0.9 * S)
    assert ring.try_acquire(10, 1.0)[1] is not None
    assert len(ring.sends()) == 10  # the new one is still a reservation


def test_a_reservation_counts_as_now_while_its_owner_lives_and_not_after(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clock, alive = Clock(), {os.getpid(): True}
    ring = FileRing(tmp_path, "h", "candles", clock=clock, alive=lambda pid: alive.get(pid, False))
    held = [ring.try_acquire(3, 1.0)[1] for _ in range(3)]
    clock.t += 2 * S  # past the span: a live owner's reservations still count (it may send any moment)...
    assert ring.try_acquire(3, 1.0)[1] is None
    clock.t += int(LEASE_S * S)  # ...until their lease ends (LEASE_S after the grant)
    assert ring.try_acquire(3, 1.0)[1] is not None
    other = FileRing(tmp_path, "h", "candles", clock=clock, alive=lambda pid: alive.get(pid, False))
    other._open()
    other._pid = 4242  # another process's reservations
    alive[4242] = True
    for _ in range(2):
        assert other.try_acquire(3, 1.0)[1] is not None
    assert ring.try_acquire(3, 1.0)[1] is None
    alive[4242] = False  # it died before sending: its reservations count for nothing
    assert ring.try_acquire(3, 1.0)[1] is not None
    assert held and all(r is not None for r in held)


def test_release_gives_a_slot_back_and_a_late_send_is_still_counted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    ring = FileRing(tmp_path, "h", "g", clock=clock)
    _, a = ring.try_acquire(2, 1.0)
    _, b = ring.try_acquire(2, 1.0)
    assert a and b and ring.try_acquire(2, 1.0)[1] is None
    ring.release(a)
    _, c = ring.try_acquire(2, 1.0)
    assert c is not None
    clock.t += int((LEASE_S + 1) * S)  # b's lease ran out: its slot may go to someone else
    for _ in range(SLOTS):
        _, r = ring.try_acquire(2, 1.0)
        if r:
            ring.mark_sending(r)
        clock.t += S
    ring.mark_sending(b)  # sent after all: counted at the moment it leaves
    assert ring.sends()[-1] == clock.t


def test_bad_limits_are_typed_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ring = FileRing(tmp_path, "h", "g")
    with pytest.raises(InvalidRequestError):
        ring.try_acquire(0, 1.0)
    with pytest.raises(InvalidRequestError):
        ring.try_acquire(SLOTS + 1, 1.0)


# ---------------------------------------------------------------- real processes
def _worker(directory: str, n: int, allowed: int, span: float, out: "mp.Queue[list[int]]") -> None:
    import time

    ring = FileRing(directory, "127.0.0.1", "candles")
    sent = []
    while len(sent) < n:
        wait, res = ring.try_acquire(allowed, span)
        if res is None:
            time.sleep(wait)
            continue
        ring.mark_sending(res)
        sent.append(ring._read_one(ring._open(), res.slot)[0])  # the time the ring recorded
    out.put(sent)


def _max_in_span(times: list[int], span_ns: int) -> int:
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - span_ns:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.mark.parametrize("processes", [8])
def test_processes_sharing_a_ring_never_exceed_it(tmp_path, processes: int) -> None:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("fork")
    out: mp.Queue[list[int]] = ctx.Queue()
    allowed, span, each = 10, 0.2, 15  # 120 sends at 50 a second: ~2.4 s
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), each, allowed, span, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    every = [t for g in got for t in g]
    assert len(every) == processes * each and len(set(every)) == len(every)
    assert _max_in_span(every, int(span * S)) == allowed  # full use, never more
    assert all(len(g) == each for g in got)


def _hold_lock_forever(path: str, ready: "mp.synchronize.Event") -> None:
    fd = os.open(path, os.O_RDWR)
    with _Locked(fd):
        ready.set()
        threading.Event().wait()


def _reserve_and_wait(directory: str, k: int, send: bool, ready: "mp.synchronize.Event") -> None:
    ring = FileRing(directory, "127.0.0.1", "candles")
    for _ in range(k):
        _, res = ring.try_acquire(10, 1.0)
        assert res is not None
        if send:
            ring.mark_sending(res)
    ready.set()
    threading.Event().wait()


def _killed(target, *args) -> None:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=target, args=(*args, ready))
    p.start()
    assert ready.wait(60), "the child never got to its point"
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL


def test_a_process_killed_holding_the_lock_blocks_nobody(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ring = FileRing(tmp_path, "127.0.0.1", "candles")
    ring.try_acquire(10, 1.0)  # creates the file
    _killed(_hold_lock_forever, str(ring.path))
    done = threading.Event()
    threading.Thread(target=lambda: (ring.try_acquire(10, 1.0), done.set()), daemon=True).start()
    assert done.wait(30), "the dead process's lock was never released"


def test_a_process_killed_between_reserving_and_sending_costs_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _killed(_reserve_and_wait, str(tmp_path), 10, False)
    ring = FileRing(tmp_path, "127.0.0.1", "candles")
    grants = [ring.try_acquire(10, 1.0)[1] for _ in range(10)]
    assert all(grants)  # its ten reservations never sent, so the whole window is ours


def test_a_process_killed_after_sending_is_counted_for_one_window(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _killed(_reserve_and_wait, str(tmp_path), 10, True)
    ring = FileRing(tmp_path, "127.0.0.1", "candles")
    wait, res = ring.try_acquire(10, 1.0)
    assert res is None and 0 < wait <= 1.0  # its sends count, and for no longer than a window


# ---------------------------------------------------------------- through the public API
CHILD = """
import sys, mdcoord
market, start, end, base_url = sys.argv[1:5]
sys.stdin.readline()  # released together with the others
df = mdcoord.candles(market, "1m", start=start, end=end, base_url=base_url, rate_budget="machine",
                     rate_margin=float(sys.argv[5]), cache=False, progress=False)
m = df.attrs["mdcoord"]
assert m["rate_budget"] == "machine" and 0 <= m["budget_wait_s"] <= m["limiter_wait_s"], m
print(len(df), m["budget_wait_s"], flush=True)
"""


def test_processes_on_the_machine_budget_share_one_window(tmp_path, exchange) -> None:  # type: ignore[no-untyped-def]
    """Four processes at the default rate_limit=10, started together: by the exchange's own log,
    at most 10 candle requests in any second and no 429, and every frame exact."""
    import subprocess
    import sys

    from .conftest import RIG_JITTER, assert_same_candles, truth

    exchange.reset_rate_limits()
    exchange.clear_log()
    markets = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL"]
    start, end = "2026-11-10T00:00:00Z", "2026-11-11T09:20:00Z"  # 2000 minutes: 10 pages each
    env = {**os.environ, "MDCOORD_BUDGET_DIR": str(tmp_path)}
    kids = [subprocess.Popen([sys.executable, "-c", CHILD, m, start, end, exchange.base_url, str(RIG_JITTER)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for m in markets]
    outs = [k.communicate("go\n", timeout=300) for k in kids]
    assert all(k.returncode == 0 for k in kids), [o[1][-2000:] for o in outs]
    assert exchange.count(status=429) == 0 and exchange.count(status=418) == 0
    assert exchange.max_in_window("candles") <= 10
    assert exchange.count(group="candles") >= 4 * 10
    for m, (out, _) in zip(markets, outs, strict=True):
        import mdcoord

        df = mdcoord.candles(m, "1m", start=start, end=end, base_url=exchange.base_url)
        assert_same_candles(df, truth(exchange, m, "1m", start, end))
        assert int(out.split()[0]) == len(df)
    waited = [float(out.split()[1]) for out, _ in outs]
    assert sum(waited) > 0  # 40 requests at 10 a second among four: someone waited for the others
