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
from mdcoord._budget import GRACE_S, LEASE_S, SLOTS, FileRing, Ticket, _Locked

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
        ring.try_acquire(10, 0.0)


def test_a_limit_above_the_ring_is_kept_in_shorter_windows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """1000 a second is 62 in every 1/16 s (16 x 62 = 992: never more than 1000 in a second)."""
    clock = Clock()
    ring = FileRing(tmp_path, "h", "g", clock=clock)
    granted = 0
    for _ in range(3000):
        wait, res = ring.try_acquire(1000, 1.0)
        if res is None:
            clock.t += int(wait * S)
            continue
        ring.mark_sending(res)
        granted += 1
        clock.t += 100_000  # 0.1 ms apart when allowed
    times = ring.sends()
    assert _max_in_span(times, S // 16) == SLOTS - 2 == 62
    assert granted > 900


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


# ---------------------------------------------------------------- in turn (the queue)
class Machine:
    """Several "processes" (rings with their own pid) on one file and one fake clock."""

    def __init__(self, directory) -> None:  # type: ignore[no-untyped-def]
        self.clock, self.alive = Clock(), {os.getpid(): True}
        self.directory = directory

    def process(self, pid: int) -> FileRing:
        ring = FileRing(self.directory, "h", "candles", clock=self.clock, alive=lambda p: self.alive.get(p, False))
        ring._open()
        ring._pid = pid
        self.alive[pid] = True
        return ring

    def fill(self, ring: FileRing, n: int, gap_ms: int = 10) -> None:
        for _ in range(n):
            _, res = ring.try_acquire(10, 1.0)
            assert res is not None
            ring.mark_sending(res)
            self.clock.t += gap_ms * S // 1000


def test_a_full_window_is_handed_out_in_the_order_processes_came(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = Machine(tmp_path)
    a, b, c = m.process(101), m.process(102), m.process(103)
    m.fill(m.process(100), 10)  # sends at 0, 10, ..., 90 ms; now = 100 ms
    tickets = {r: Ticket() for r in (a, b, c)}
    waits = {r: r.try_acquire(10, 1.0, tickets[r])[0] for r in (a, b, c)}  # a, b, c queue in this order
    # each is told when *its* slot frees: a the first send's, b the second's, c the third's
    assert [round(waits[r], 3) for r in (a, b, c)] == [0.9, 0.91, 0.92]
    m.clock.t += int(0.9 * S)  # the first slot frees; c and b look first, but a came first
    assert c.try_acquire(10, 1.0, tickets[c])[1] is None
    assert b.try_acquire(10, 1.0, tickets[b])[1] is None
    assert a.try_acquire(10, 1.0, tickets[a])[1] is not None
    m.clock.t += S // 100  # the second slot: b's
    assert c.try_acquire(10, 1.0, tickets[c])[1] is None
    assert b.try_acquire(10, 1.0, tickets[b])[1] is not None
    m.clock.t += S // 100
    assert c.try_acquire(10, 1.0, tickets[c])[1] is not None
    assert all(t.index == -1 for t in tickets.values())  # served tickets leave the queue


def test_a_newcomer_does_not_jump_the_queue(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = Machine(tmp_path)
    a, late = m.process(101), m.process(102)
    m.fill(m.process(100), 10)
    ta = Ticket()
    assert a.try_acquire(10, 1.0, ta)[1] is None
    m.clock.t += int(0.9 * S)  # a slot frees while a sleeps until that moment
    assert late.try_acquire(10, 1.0, Ticket())[1] is None  # a queued for it
    assert late.try_acquire(10, 1.0)[1] is None  # with or without a ticket
    assert a.try_acquire(10, 1.0, ta)[1] is not None


def test_a_dead_or_overdue_waiter_is_passed_over_and_keeps_its_place(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = Machine(tmp_path)
    dead, slow, b = m.process(101), m.process(102), m.process(103)
    m.fill(m.process(100), 10)
    td, ts, tb = Ticket(), Ticket(), Ticket()
    for ring, t in ((dead, td), (slow, ts), (b, tb)):
        assert ring.try_acquire(10, 1.0, t)[1] is None
    m.alive[101] = False  # killed while queued: its ticket holds nobody up
    m.clock.t += int((0.91 + GRACE_S + 0.01) * S)  # two slots free; slow overslept its promise
    assert b.try_acquire(10, 1.0, tb)[1] is not None
    assert slow.try_acquire(10, 1.0, ts)[1] is not None  # back: still queued, served
    m.clock.t += int((LEASE_S + 1) * S)  # (their reservations, never marked sent, lapse)
    t2 = Ticket()
    m.fill(m.process(100), 10)
    assert b.try_acquire(10, 1.0, t2)[1] is None
    b.leave(t2)  # cancelled while queued: nobody waits for it
    assert t2.index == -1
    m.clock.t += S
    assert slow.try_acquire(10, 1.0, Ticket())[1] is not None


def test_each_process_share_is_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = Machine(tmp_path)
    a, b = m.process(101), m.process(102)
    for _ in range(3):
        assert a.try_acquire(10, 1.0, Ticket())[1] is not None
    assert b.try_acquire(10, 1.0, Ticket())[1] is not None
    m.fill(m.process(100), 6)
    t = Ticket()
    wait, _ = b.try_acquire(10, 1.0, t)
    m.clock.t += int(wait * S)
    assert b.try_acquire(10, 1.0, t)[1] is not None
    shares = {s.pid: s for s in a.shares()}
    assert shares[101].grants == 3 and shares[102].grants == 2
    assert shares[101].waited_s == 0 and shares[102].waited_s == pytest.approx(wait)
    m.alive[101] = False
    assert {s.pid: s.alive for s in a.shares()} == {101: False, 102: True}


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


def _fork_then_hold_lock(directory: str, pids: "mp.Queue[int]", ready: "mp.synchronize.Event") -> None:
    ring = FileRing(directory, "127.0.0.1", "candles")
    ring.try_acquire(10, 1.0)  # the ring's file is open here
    pid = os.fork()
    if pid == 0:  # a child that lives on (a pool's worker), with what it inherited
        signal.pause()
        os._exit(0)
    pids.put(pid)
    with _Locked(ring._fd):
        ready.set()
        threading.Event().wait()


def test_a_process_killed_holding_the_lock_blocks_nobody_though_its_child_lives_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A flock belongs to the open file description, which fork() shares: while a child held
    its copy of the parent's descriptor, the parent's lock outlived the parent. The child's
    copy is closed at fork."""
    ctx = mp.get_context("fork")
    pids: mp.Queue[int] = ctx.Queue()
    ready = ctx.Event()
    p = ctx.Process(target=_fork_then_hold_lock, args=(str(tmp_path), pids, ready))
    p.start()
    child = pids.get(timeout=60)
    try:
        assert ready.wait(60), "the process never got to its point"
        os.kill(p.pid, signal.SIGKILL)
        ring = FileRing(tmp_path, "127.0.0.1", "candles")
        done = threading.Event()
        threading.Thread(target=lambda: (ring.try_acquire(10, 1.0), done.set()), daemon=True).start()
        assert done.wait(30), "the dead process's lock lived on in its child"
    finally:
        os.kill(child, signal.SIGKILL)
        p.join(30)  # (after the child: it holds the end of the pipe that tells join() p is gone)
    assert p.exitcode == -signal.SIGKILL


def test_a_process_killed_between_reserving_and_sending_costs_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _killed(_reserve_and_wait, str(tmp_path), 10, False)
    ring = FileRing(tmp_path, "127.0.0.1", "candles")
    grants = [ring.try_acquire(10, 1.0)[1] for _ in range(10)]
    assert all(grants)  # its ten reservations never sent, so the whole window is ours


def test_a_process_killed_after_sending_is_counted_for_one_window(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _killed(_reserve_and_wait, str(tmp_path), 10, True)
    ring = FileRing(tmp_path, "127.0.0.1", "candles")
    import time

    wait, res = ring.try_acquire(10, 1.0)
    assert res is None and wait > 0  # its sends count...
    time.sleep(wait)
    assert ring.try_acquire(10, 1.0)[1] is not None  # ...and once the wait it was told is over, no longer


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


MARKETS8 = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "KRW-ADA", "KRW-TRX", "KRW-LINK"]
RANGE = ("2026-11-10T00:00:00Z", "2026-11-11T09:20:00Z")  # 2000 minutes: 10 pages a market


def _children(exchange, markets: list[str], budget_dir) -> list:  # type: ignore[no-untyped-def]
    """One process per market, each at default settings (but the rig's jitter), imported and
    waiting on stdin; returns them unreleased."""
    import subprocess
    import sys

    from .conftest import RIG_JITTER

    env = {**os.environ, "MDCOORD_BUDGET_DIR": str(budget_dir)}
    return [subprocess.Popen([sys.executable, "-c", CHILD, m, *RANGE, exchange.base_url, str(RIG_JITTER)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for m in markets]


def _release(kids: list) -> None:  # type: ignore[type-arg]
    """Let every child go at once (communicate() would run them one after the other)."""
    for k in kids:
        k.stdin.write("go\n")
        k.stdin.flush()


def _candle_log(exchange) -> list[str]:  # type: ignore[no-untyped-def]
    """The markets of the candle requests, in the order the exchange received them."""
    return [r.query["market"] for r in sorted(exchange.log, key=lambda r: r.arrival) if r.group == "candles"]


def _check_frames(exchange, markets: list[str], outs: list[str]) -> None:  # type: ignore[no-untyped-def]
    import mdcoord

    from .conftest import assert_same_candles, truth

    for m, out in zip(markets, outs, strict=True):
        want = truth(exchange, m, "1m", *RANGE)
        assert_same_candles(mdcoord.candles(m, "1m", start=RANGE[0], end=RANGE[1], base_url=exchange.base_url), want)
        assert int(out.split()[0]) == len(want)


def test_eight_processes_share_one_window_and_take_turns(tmp_path, exchange) -> None:  # type: ignore[no-untyped-def]
    """Eight processes at default settings, released together: by the exchange's own log, at
    most 10 candle requests in any second, no 429, every frame exact, and the budget handed out
    in turn — each process among the first three rounds, none finishing (its last request's
    place in the log) later than 1.25 x the average."""
    exchange.reset_rate_limits()
    exchange.clear_log()
    kids = _children(exchange, MARKETS8, tmp_path)
    _release(kids)
    outs = [k.communicate(timeout=300) for k in kids]
    assert all(k.returncode == 0 for k in kids), [o[1][-2000:] for o in outs]
    assert exchange.count(status=429) == 0 and exchange.count(status=418) == 0
    assert exchange.max_in_window("candles") <= 10
    order = _candle_log(exchange)
    assert sorted(set(order)) == sorted(MARKETS8) and len(order) >= 8 * 10
    first = {m: order.index(m) for m in MARKETS8}
    last = {m: len(order) - 1 - order[::-1].index(m) for m in MARKETS8}
    assert max(first.values()) < 3 * len(MARKETS8), first
    mean_last = sum(last.values()) / len(last)
    assert max(last.values()) <= 1.25 * mean_last, last
    _check_frames(exchange, MARKETS8, [o for o, _ in outs])
    assert sum(float(o.split()[1]) for o, _ in outs) > 0  # 80 requests at 10 a second among eight: they waited


def test_processes_killed_at_random_points_never_make_the_others_exceed(tmp_path, exchange) -> None:  # type: ignore[no-untyped-def]
    """Six processes share the machine's budget; three are SIGKILLed at random moments of the
    run (holding the file's lock, queued, between reserving and sending, after sending: wherever
    they are). By the exchange's log the survivors never exceed 10 in any second and draw no
    429, and they finish with exact frames."""
    import random
    import time

    exchange.reset_rate_limits()
    exchange.clear_log()
    markets = MARKETS8[:6]
    kids = _children(exchange, markets, tmp_path)
    _release(kids)
    rng = random.Random()
    victims = rng.sample(range(len(kids)), 3)
    exchange.wait_for(lambda: exchange.count(group="candles") >= 6, timeout=120, what="the first requests")
    for v in victims:
        time.sleep(rng.uniform(0.0, 1.5))  # a random point of the run: input, not an assertion
        kids[v].kill()
    survivors = [i for i in range(len(kids)) if i not in victims]
    outs = {i: kids[i].communicate(timeout=300) for i in survivors}
    for v in victims:
        kids[v].wait(30)
    assert all(kids[i].returncode == 0 for i in survivors), [o[1][-2000:] for o in outs.values()]
    assert exchange.count(status=429) == 0 and exchange.count(status=418) == 0
    assert exchange.max_in_window("candles") <= 10
    _check_frames(exchange, [markets[i] for i in survivors], [outs[i][0] for i in survivors])
    from mdcoord._config import source_name

    ring = FileRing(tmp_path, source_name(exchange.base_url), "candles")
    assert ring.path.exists(), "the children used another ring file"
    wait, res = ring.try_acquire(10, 1.0)  # what the dead left behind holds a slot one window at most:
    if res is None:  # once the wait we are told is over, the slot is ours
        time.sleep(wait)
        assert ring.try_acquire(10, 1.0)[1] is not None


def test_metrics_show_the_budget_its_scope_and_each_process_share(ex) -> None:  # type: ignore[no-untyped-def]
    import mdcoord
    from mdcoord._config import source_name

    ex.reset_rate_limits()
    mdcoord.reset_metrics()
    df = mdcoord.candles("KRW-BTC", "1m", start=RANGE[0], end="2026-11-10T10:00:00Z", base_url=ex.base_url)
    assert df.attrs["mdcoord"]["rate_budget"] == "machine"
    source = source_name(ex.base_url)
    row = mdcoord.metrics().loc[(source, "candles")]
    assert row["budget"] == "machine" and row["budget_wait_s"] >= 0
    shares = mdcoord.metrics("budget").loc[(source, "candles")]
    mine = shares[shares["this_process"]]
    assert len(mine) == 1 and mine.index[0] == os.getpid() and bool(mine["alive"].iloc[0])
    assert mine["grants"].iloc[0] >= df.attrs["mdcoord"]["requests_sent"] > 0
    assert shares["share"].sum() == pytest.approx(1.0)
    with mdcoord.set_options(rate_budget="process"):
        m = mdcoord.candles("KRW-ETH", "1m", start=RANGE[0], end="2026-11-10T01:00:00Z", base_url=ex.base_url)
    assert m.attrs["mdcoord"]["rate_budget"] == "process" and m.attrs["mdcoord"]["budget_wait_s"] == 0


def test_the_budget_is_chosen_by_option_then_environment_then_machine(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import mdcoord
    from mdcoord._config import budget_label, resolve_rate_budget

    monkeypatch.delenv("MDCOORD_RATE_BUDGET", raising=False)
    assert resolve_rate_budget() == "machine"
    monkeypatch.setenv("MDCOORD_RATE_BUDGET", "process")
    assert resolve_rate_budget() == "process"
    with mdcoord.set_options(rate_budget="machine"):
        assert resolve_rate_budget() == "machine"
    monkeypatch.setenv("MDCOORD_RATE_BUDGET", "sometimes")
    with pytest.raises(InvalidRequestError, match="MDCOORD_RATE_BUDGET"):
        resolve_rate_budget()
    with pytest.raises(InvalidRequestError, match="rate_budget must be"):
        mdcoord.set_options(rate_budget="proces")
    assert budget_label("redis://:secret@db.lan:6380/2") == "redis://db.lan:6380/2"


def test_requests_of_processes_sharing_the_budget_are_not_taken_for_a_strangers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Remaining-Req counts every request of the address. Seven of the ten it counted were sent
    by another process through the same machine budget: no pressure, no pause, no smaller
    share. Seven sent by a stranger (not in the ring) are."""
    import asyncio

    from mdcoord._budget import MachineBudget
    from mdcoord._limiter import SlidingWindowLimiter

    m = Machine(tmp_path)
    now = lambda: m.clock.t / S  # noqa: E731 - the limiter's clock, in seconds of the ring's
    lim = SlidingWindowLimiter(10, 1.0, 0.05, clock=now)
    ours = MachineBudget(m.process(os.getpid()))
    m.fill(m.process(4242), 7)  # the other process: 7 sends, 10 ms apart

    async def one() -> object:
        p = await lim.acquire()
        res, _ = await ours.acquire(10, lim.span)
        ours.sending(res)
        lim.mark_sent(p)
        return p

    permits = [asyncio.run(one()) for _ in range(3)]
    assert lim.observe_remaining(0, permits[-1], ours.others_between) is False  # type: ignore[arg-type]
    assert lim.pauses == 0 and lim.share is None
    assert lim.observe_remaining(0, permits[-1]) is True  # (without the ring: a stranger's)


def test_a_process_that_had_the_window_gives_way_to_one_that_had_none(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Who had fewer of the machine's recent requests goes first, then who queued first: a
    process that filled the window alone does not keep it once others wait."""
    m = Machine(tmp_path)
    busy, newcomer, other = m.process(101), m.process(102), m.process(103)
    m.fill(busy, 10)  # busy had the whole window
    tb, tn, to = Ticket(), Ticket(), Ticket()
    assert busy.try_acquire(10, 1.0, tb)[1] is None  # busy queues first...
    assert other.try_acquire(10, 1.0, to)[1] is None
    assert newcomer.try_acquire(10, 1.0, tn)[1] is None
    m.clock.t += int(0.91 * S)  # two slots free
    assert busy.try_acquire(10, 1.0, tb)[1] is None  # ...but the two with none go first
    assert other.try_acquire(10, 1.0, to)[1] is not None
    assert newcomer.try_acquire(10, 1.0, tn)[1] is not None
    m.clock.t += S // 100
    assert busy.try_acquire(10, 1.0, tb)[1] is not None


def test_the_wait_for_others_is_wall_time_not_a_sum_over_requests(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Three requests of one process wait together behind another process's full window: each
    is told only its own time in the queue, and together they waited no longer than the time
    that passed."""
    import asyncio

    from mdcoord._budget import MachineBudget

    m = Machine(tmp_path)
    m.fill(m.process(4242), 10, gap_ms=0)  # someone else's full window, all sent at t0

    async def sleep(seconds: float) -> None:
        m.clock.t += int(seconds * S)
        await asyncio.sleep(0)

    ours = MachineBudget(m.process(os.getpid()), sleep)
    t0 = m.clock.t

    async def go() -> list[float]:
        got = await asyncio.gather(*(ours.acquire(3, 1.0) for _ in range(3)))
        return [w for _, w in got]

    waits = asyncio.run(go())
    assert sum(waits) <= (m.clock.t - t0) / S + 1e-9
    assert ours.waited == pytest.approx(sum(waits)) and waits[0] > 0


def test_a_stranger_beside_the_sharing_processes_is_still_seen(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two of the ten requests Remaining-Req counted are another mdcoord process's (in the ring),
    three ours, five nobody's we know: someone else uses the address — pause, as before."""
    import asyncio

    from mdcoord._budget import MachineBudget
    from mdcoord._limiter import SlidingWindowLimiter

    m = Machine(tmp_path)
    lim = SlidingWindowLimiter(10, 1.0, 0.05, clock=lambda: m.clock.t / S)
    ours = MachineBudget(m.process(os.getpid()))
    m.fill(m.process(4242), 2)

    async def one() -> object:
        p = await lim.acquire()
        res, _ = await ours.acquire(10, lim.span)
        ours.sending(res)
        lim.mark_sent(p)
        return p

    permits = [asyncio.run(one()) for _ in range(3)]
    assert lim.observe_remaining(0, permits[-1], ours.others_between) is True  # type: ignore[arg-type]
    assert lim.pauses == 1


def _simulate(m: Machine, rules: dict[FileRing, tuple[int, float]], seconds: float) -> dict[FileRing, int]:
    """Each process asks for slots back to back (one queued request each, as MachineBudget
    does), sleeping exactly what it is told, on the fake clock: grants per process."""
    end = m.clock.t + int(seconds * S)
    due = {r: m.clock.t for r in rules}
    tickets = {r: Ticket() for r in rules}
    grants = dict.fromkeys(rules, 0)
    while True:
        ring = min(due, key=lambda r: due[r])
        if due[ring] >= end:
            return grants
        m.clock.t = max(m.clock.t, due[ring])
        wait, res = ring.try_acquire(*rules[ring], tickets[ring])
        if res is not None:
            ring.mark_sending(res)
            grants[ring] += 1
            tickets[ring] = Ticket()
            due[ring] = m.clock.t + 1_000_000  # the next request 1 ms later
        else:
            due[ring] = m.clock.t + int(wait * S)


@pytest.mark.parametrize("strict", [(5, 1.0), (10, 1.25)], ids=["share-cut-to-5", "margin-250ms"])
def test_a_process_with_a_stricter_rule_is_not_starved_by_laxer_ones(tmp_path, strict) -> None:  # type: ignore[no-untyped-def]
    """Processes judge the window by their own rule (a share cut after a stranger was seen, a
    wider margin after a 429): the strictest rule of those ahead holds for all, so the strict
    one still gets its turns (without it: 2 of 180 grants in 20 s)."""
    m = Machine(tmp_path)
    lax, strict_one = m.process(101), m.process(102)
    grants = _simulate(m, {lax: (10, 1.0), strict_one: strict}, 20.0)
    assert grants[strict_one] >= 0.4 * grants[lax] > 0, grants
    assert _max_in_span(lax.sends(), S) <= 10


def test_a_live_owners_reservation_counts_however_long_its_way_to_the_wire(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A request that takes 30 s to connect still holds its slot, and its send counts when it
    leaves: never one more than allowed in a window (a lease that lapsed would give the slot
    away, and the late send would be the 11th)."""
    m = Machine(tmp_path)
    slow, busy = m.process(101), m.process(102)
    _, held = slow.try_acquire(10, 1.0)
    assert held is not None
    m.clock.t += 30 * S
    m.fill(busy, 9)
    assert busy.try_acquire(10, 1.0)[1] is None  # the reservation still counts
    slow.mark_sending(held)
    assert _max_in_span(slow.sends(), S) == 10


def test_the_budget_file_is_everyones_and_a_foreign_one_is_a_typed_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import stat

    from mdcoord import BudgetUnavailableError

    old = os.umask(0o022)
    try:
        ring = FileRing(tmp_path, "h", "g")
        ring.try_acquire(10, 1.0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(ring.path.stat().st_mode) == 0o666  # other users of the machine write it too
    foreign = FileRing(tmp_path, "h", "other")
    foreign.path.write_bytes(b"MDCB0002" + bytes(100))  # an older layout under this name
    with pytest.raises(BudgetUnavailableError, match="not a rate budget file of this mdcoord version"):
        foreign.try_acquire(10, 1.0)
    (tmp_path / "file").write_text("")
    with pytest.raises(BudgetUnavailableError, match="MDCOORD_BUDGET_DIR"):
        FileRing(tmp_path / "file", "h", "g").try_acquire(10, 1.0)
