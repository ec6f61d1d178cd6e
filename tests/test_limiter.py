"""The limiter's guarantee, proven on a fake clock: computed delays, no real sleeping."""

from __future__ import annotations

import asyncio

import pytest

from mdcoord._limiter import Permit, SlidingWindowLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make(n: int = 10, window: float = 1.0, margin: float = 0.05) -> tuple[SlidingWindowLimiter, FakeTime]:
    t = FakeTime()
    return SlidingWindowLimiter(n, window, margin, clock=t.clock, sleep=t.sleep), t


def send(lim: SlidingWindowLimiter, t: FakeTime, n: int) -> list[float]:
    """Acquire ``n`` permits in a row, each sent at once; their send times on the fake clock."""

    async def go() -> list[float]:
        sent = []
        for _ in range(n):
            p = await lim.acquire()
            lim.mark_sent(p)
            sent.append(t.now)
        return sent

    return asyncio.run(go())


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_first_n_pass_at_once_then_the_next_waits_one_span() -> None:
    lim, t = make()

    sent = send(lim, t, 11)
    assert sent[:10] == [100.0] * 10
    assert sent[10] == pytest.approx(101.05)
    assert t.sleeps == [pytest.approx(1.05)]


def test_never_more_than_n_in_any_window_even_with_jitter() -> None:
    """A leaky bucket (aiolimiter 10/1s) lets ~19 through in the first second; this lets 10."""
    lim, t = make()

    sent = send(lim, t, 200)
    assert max_in_any_window(sent, 1.0) == 10
    # Jitter of up to the margin on the way to the server cannot make 11 arrive within 1 s:
    # shift every even request late and every odd one early by half the margin.
    arrivals = [s + (0.024 if i % 2 == 0 else -0.024) for i, s in enumerate(sent)]
    assert max_in_any_window(arrivals, 1.0) <= 10
    # ...and the rate is still near the bound: 200 requests in about 19 spans.
    assert sent[-1] - sent[0] == pytest.approx(19 * 1.05)


def test_pending_permit_counts_as_sent_now_and_send_time_moves_forward() -> None:
    lim, t = make(n=2, window=1.0, margin=0.0)

    async def go() -> None:
        a = await lim.acquire()
        lim.mark_sent(a)
        b = await lim.acquire()  # granted at t=100 but waits 0.5 s for a connection
        t.now += 0.5
        assert lim.delay() == pytest.approx(0.5)  # a expires at 101.0
        lim.mark_sent(b)  # b really left at 100.5
        t.now = 101.0
        assert lim.delay() == 0.0  # a left the window
        c = await lim.acquire()
        lim.mark_sent(c)
        assert lim.delay() == pytest.approx(0.5)  # b (sent 100.5) leaves at 101.5

    asyncio.run(go())


def test_pause_blocks_the_group_for_a_span() -> None:
    lim, t = make()
    lim.pause()
    assert lim.delay() == pytest.approx(1.05)
    lim.pause(3.0)
    assert lim.delay() == pytest.approx(3.0)
    assert lim.pauses == 2


def test_remaining_req_reveals_other_users_of_the_budget() -> None:
    lim, t = make()

    async def go() -> None:
        p = await lim.acquire()
        lim.mark_sent(p)
        # we sent 1; the server counted 1 → remaining 9: no pressure
        assert lim.observe_remaining(9, p) is False
        assert lim.delay() == 0.0
        # the server counted 6 of ours+theirs after our 1 → someone else sent 5
        assert lim.observe_remaining(4, p) is True
        assert lim.delay() == pytest.approx(1.05)

    asyncio.run(go())


def test_waiters_are_served_in_order() -> None:
    lim, t = make(n=1, window=1.0, margin=0.0)
    order: list[int] = []

    async def worker(i: int) -> None:
        p = await lim.acquire()
        lim.mark_sent(p)
        order.append(i)

    async def go() -> None:
        await asyncio.gather(*(worker(i) for i in range(5)))

    asyncio.run(go())
    assert order == [0, 1, 2, 3, 4]
    assert t.now == pytest.approx(104.0)


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        SlidingWindowLimiter(0, 1.0)


def test_remaining_req_at_steady_full_rate_is_not_mistaken_for_pressure() -> None:
    """At the bound, answers come back after later requests were granted (and older permits
    aged out of the window); our own history must still explain the server's count."""
    lim, t = make()

    async def go() -> None:
        sends: list[float] = []
        in_flight: list[tuple[object, int]] = []
        for _ in range(60):
            p = await lim.acquire()
            lim.mark_sent(p)
            sends.append(p.sent_at)
            in_flight.append((p, sum(1 for s in sends if p.sent_at - 1.0 < s <= p.sent_at)))
            # the earlier requests' answers arrive now, after this grant
            for q, server_count in in_flight[:-1]:
                assert lim.observe_remaining(10 - server_count, q) is False  # type: ignore[arg-type]
            in_flight = in_flight[-1:]

    asyncio.run(go())
    assert lim.pauses == 0


def test_requests_overtaking_each_other_on_the_wire_are_not_pressure() -> None:
    """Five requests leave within 10 ms; jitter delivers the last first. The server's count at the
    first one's arrival includes the other four: still ours, no pause."""
    lim, t = make()

    async def go() -> None:
        permits = []
        for _ in range(5):
            p = await lim.acquire()
            lim.mark_sent(p)
            permits.append(p)
            t.now += 0.002
        t.now += 0.1
        assert lim.observe_remaining(10 - 5, permits[0]) is False

    asyncio.run(go())
    assert lim.pauses == 0


def test_pressure_is_judged_against_the_servers_limit_not_ours() -> None:
    """A process given a share of the budget (rate_limit=4) still sees the server count to 10;
    one allowed more than 10 (an unlimited test server) is not paused by a `sec=` near 0."""
    low, t = make(n=4)

    async def go_low() -> None:
        p = await low.acquire()
        low.mark_sent(p)
        assert low.observe_remaining(9, p) is False  # only ours: 10 - 9 = 1
        assert low.observe_remaining(5, p) is False  # 4 others: within the 6 our share leaves
        assert low.observe_remaining(1, p) is True  # 8 others: the window is over-subscribed

    asyncio.run(go_low())

    high, t2 = make(n=1000)

    async def go_high() -> None:
        for _ in range(30):
            p = await high.acquire()
            high.mark_sent(p)
        assert high.observe_remaining(0, p) is False  # 30 of ours in the window: no one else

    asyncio.run(go_high())
    assert high.pauses == 0


def test_a_429_widens_the_margin_for_good_up_to_a_cap() -> None:
    lim, t = make()
    assert lim.span == pytest.approx(1.05)
    lim.widen()
    assert lim.span == pytest.approx(1.10)
    for _ in range(10):
        lim.widen()
    assert lim.span == pytest.approx(1.30)  # 1 s + 50 ms margin + at most 250 ms more
    lim.margin = 0.05  # options re-applied by the next call leave the learned part alone
    assert lim.span == pytest.approx(1.30)

    sent = send(lim, t, 11)
    assert sent[10] - sent[0] == pytest.approx(1.30)


def test_contention_halves_the_share_once_a_span_and_it_grows_back() -> None:
    lim, clock = make()
    assert lim.allowed == 10
    lim.contended()
    assert lim.allowed == 5 and lim.share_cuts == 1
    lim.contended()  # the same span: one cut is enough
    assert lim.allowed == 5
    clock.now += 1.1
    lim.contended()
    assert lim.allowed == 2  # 2.5 -> 2 requests a span
    for _ in range(3):
        clock.now += 2.0
        lim.delay()
    assert lim.allowed == 5  # +1 per 2 s without contention
    for _ in range(10):
        clock.now += 2.0
        lim.delay()
    assert lim.share is None and lim.allowed == 10


def test_a_full_window_of_someone_elses_requests_cuts_the_share() -> None:
    lim, clock = make()
    permit = Permit(clock.now, pending=False)
    lim._permits.append(permit)
    assert lim.observe_remaining(5, permit) is True  # 4 of theirs, room left: pause only
    assert lim.allowed == 10
    clock.now += 2
    permit = Permit(clock.now, pending=False)
    lim._permits.append(permit)
    assert lim.observe_remaining(0, permit) is True  # the window is full with theirs: share
    assert lim.allowed == 5


def test_others_within_what_our_allowance_leaves_are_no_pressure() -> None:
    lim, clock = make(n=5)  # e.g. one of two processes at rate_limit=5
    for _ in range(3):
        permit = Permit(clock.now, pending=False)
        lim._permits.append(permit)
        clock.now += 0.2
    # the server counted 8: our 3 and the other process's 5, within the 5 our share leaves
    assert lim.observe_remaining(2, permit) is False
    assert lim.allowed == 5 and lim.pauses == 0
