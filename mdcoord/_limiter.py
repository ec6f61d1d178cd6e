"""A strict per-group rate limiter: at most N requests in ANY window, as the server sees them.

Why not a leaky bucket: ``aiolimiter.AsyncLimiter(10, 1)`` starts full and drips, so about 19
requests pass in the first second — Upbit answers the 11th with 429. What Upbit enforces is a
*sliding window*: no more than 10 arrivals of one group in any 1-second span. This limiter keeps
the send times of its recent requests (a sliding-window log, at most N entries) and lets a new
request start only when fewer than N of them lie within the last ``window + margin`` seconds.

The margin absorbs network jitter: two requests that left 1.00 s apart may arrive 0.97 s apart.
With a margin of ``m`` the server never sees N+1 requests within one window as long as the
one-way delay varies by less than ``m``. That variation is measured, not assumed (``auto_margin``):
the spread of the round trips seen (0.75 × (p95 − p5) of the last 64, which bounds the spread of
one-way delays, server time included), between 30 ms and 250 ms; 50 ms until 16 answers are in.
Every percent of margin is a percent of throughput, so a quiet network runs closer to the limit. The recorded time of a request is moved to the moment
its headers actually left (``mark_sent``), so time spent opening a connection or waiting for a
pooled one never makes two requests look further apart than they were.

Time and sleep are injectable: :meth:`delay` is a pure computation on the clock, so tests
assert delays instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ._exceptions import InvalidRequestError

__all__ = ["AUTO_MARGIN_START", "Permit", "SlidingWindowLimiter"]

AUTO_MARGIN_START = 0.05  # the margin before enough round trips were measured
AUTO_MARGIN_MIN = 0.03  # also absorbs scheduling hiccups of the sending (or an in-process) loop
AUTO_MARGIN_MAX = 0.25
AUTO_MARGIN_MIN_SAMPLES = 16
SHARE_RECOVERY_S = 2.0  # a contended share grows back by one request per span this often


@dataclass
class Permit:
    """One granted request slot; ``sent_at`` moves forward when the request really leaves.

    While ``pending`` (granted, not yet known to have left) it counts as sent *now*, however
    long it waits for a connection: the conservative reading.
    """

    sent_at: float
    pending: bool = True


class SlidingWindowLimiter:
    """At most ``max_requests`` request starts in any ``window + margin`` seconds.

    >>> limiter = SlidingWindowLimiter(10, 1.0)
    >>> # async: permit = await limiter.acquire(); ...; limiter.mark_sent(permit)
    """

    def __init__(
        self,
        max_requests: int = 10,
        window: float = 1.0,
        margin: float = 0.05,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if max_requests < 1 or window <= 0 or margin < 0:
            raise InvalidRequestError("max_requests >= 1, window > 0 and margin >= 0 are required")
        self.max_requests = max_requests
        self.window = window
        self.margin = margin
        self._clock = clock
        self._sleep = sleep
        self._permits: list[Permit] = []
        self._paused_until = float("-inf")
        self._lock: asyncio.Lock | None = None
        #: Seconds callers spent waiting for a slot, summed (for metrics).
        self.waited = 0.0
        #: How often the group was paused (429 or pressure seen in ``Remaining-Req``).
        self.pauses = 0
        #: The server's own per-window limit, as far as we can tell (Upbit documents 10).
        self.server_limit = 10
        #: Margin added after 429s (see :meth:`widen`); kept apart from ``margin``, which callers
        #: set from options.
        self.extra_margin = 0.0
        #: When True, ``margin`` follows the measured spread of round trips (:meth:`observe_rtt`).
        self.auto_margin = False
        self._rtts: deque[float] = deque(maxlen=64)
        self._rtts_seen = 0
        #: Our share of the budget while another user of the IP is seen (None: all of it). Halved
        #: on each sign of contention (``Remaining-Req`` showing the window nearly full with
        #: requests that are not ours, 429s included), at most once a span; +1 per ``SHARE_RECOVERY_S``
        #: without one. Two processes at the default settings thus settle below the limit
        #: together instead of earning a 418 (a pause alone lets both resume at full rate).
        self.share: float | None = None
        self._share_changed = float("-inf")
        self.share_cuts = 0

    @property
    def allowed(self) -> int:
        """Requests allowed per span now: ``max_requests``, or the share while contended."""
        if self.share is None:
            return self.max_requests
        return max(1, min(self.max_requests, int(self.share)))

    def contended(self) -> None:
        """Someone else uses this group's budget too: halve our share, at most once per span."""
        now = self._clock()
        if now - self._share_changed < self.span:
            return
        self.share = max(1.0, (self.share if self.share is not None else self.max_requests) / 2)
        self._share_changed = now
        self.share_cuts += 1

    def _recover_share(self, now: float) -> None:
        if self.share is not None and now - self._share_changed >= SHARE_RECOVERY_S:
            self.share += 1
            self._share_changed = now
            if self.share >= self.max_requests:
                self.share = None

    @property
    def span(self) -> float:
        return self.window + self.margin + self.extra_margin

    def widen(self, step: float = 0.05, cap: float = 0.25) -> None:
        """Add ``step`` to the safety margin (up to ``cap``) for the rest of the process.

        Called on HTTP 429: the server saw more than N requests in a window although we never
        started more, so arrivals jitter more than the margin assumed (a congested network, a
        starved CPU). Widening costs a few percent of throughput; another 429 would cost more.
        """
        self.extra_margin = min(cap, self.extra_margin + step)

    def observe_rtt(self, seconds: float) -> None:
        """A request of this group took ``seconds`` from leaving to its answer (auto margin)."""
        if not self.auto_margin:
            return
        self._rtts.append(seconds)
        self._rtts_seen += 1
        if len(self._rtts) >= AUTO_MARGIN_MIN_SAMPLES and self._rtts_seen % 4 == 0:
            ordered = sorted(self._rtts)
            n = len(ordered) - 1
            spread = ordered[round(0.95 * n)] - ordered[round(0.05 * n)]
            self.margin = min(AUTO_MARGIN_MAX, max(AUTO_MARGIN_MIN, 0.75 * spread))

    def delay(self, now: float | None = None) -> float:
        """Seconds until a new request may start (0 when it may start now)."""
        now = self._clock() if now is None else now
        # Keep two spans of history: observe_remaining() looks back one span from a send that
        # may be a response-latency ago.
        self._permits = [p for p in self._permits if p.pending or p.sent_at > now - 2 * self.span]
        self._recover_share(now)
        wait = self._paused_until - now
        times = sorted(now if p.pending else p.sent_at for p in self._permits if p.pending or p.sent_at > now - self.span)
        allowed = self.allowed
        if len(times) >= allowed:
            # The slot frees when the oldest of the newest N permits leaves the span.
            wait = max(wait, times[-allowed] + self.span - now)
        return max(0.0, wait)

    async def acquire(self) -> Permit:
        """Wait for a slot and take it. FIFO among waiters (one lock, held while sleeping)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while (wait := self.delay()) > 0:
                self.waited += wait
                await self._sleep(wait)
            permit = Permit(self._clock())
            self._permits.append(permit)
            return permit

    def mark_sent(self, permit: Permit) -> None:
        """Record that the request of ``permit`` left just now (never moves time backwards).

        Call it when the request's headers were written, and again (harmlessly) when the
        attempt ends: a permit whose request failed before sending then counts as sent at its
        end, which errs on the safe side.
        """
        if permit.pending:
            permit.sent_at = max(permit.sent_at, self._clock())
            permit.pending = False

    def record_send(self) -> None:
        """Count a request that left without a permit (a transport-level resend)."""
        self._permits.append(Permit(self._clock(), pending=False))

    def pause(self, seconds: float | None = None) -> None:
        """Let no request of this group start for ``seconds`` (default: one full span).

        Called on HTTP 429: the server's window must slide past the burst it counted.
        """
        seconds = self.span if seconds is None else seconds
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self.pauses += 1

    def observe_remaining(self, remaining: int, permit: Permit, sharing: Callable[[float, float], int] | None = None) -> bool:
        """Compare the server's ``Remaining-Req: sec=`` with our own count; pause on pressure.

        The server counted ``max_requests - remaining`` requests in its window, this one
        included. If that is clearly more than we sent in the window before this request,
        someone else shares the IP's budget (another process, another tool): pause the group
        for one span so both stay under the limit. Returns True when it paused. ``sharing(lo, hi)``
        counts the requests that processes sharing our budget (the machine's, or Redis's) sent
        in that window: they are ours too, not a stranger's.
        """
        # Requests we sent up to a margin *after* this one may have overtaken it on the wire
        # (jitter), so they count as ours too; over-counting ours only makes this less eager.
        lo, hi = permit.sent_at - self.span, permit.sent_at + self.margin
        ours = sum(1 for p in self._permits if p.pending or lo < p.sent_at <= hi)
        if sharing is not None:
            ours += sharing(lo, hi)
        # The server counts against *its* limit, which is not our (possibly lowered or raised)
        # max_requests: Upbit's documented 10, or more if it ever reports more left than that.
        self.server_limit = max(self.server_limit, remaining + 1)
        theirs = (self.server_limit - remaining) - ours
        # One request of slack (arrival order at the server can differ from ours); and others
        # within what our own allowance leaves (two processes at rate_limit=5 each) are no
        # pressure: only an over-subscribed window is.
        if theirs > 1 and theirs > self.server_limit - self.allowed:
            if remaining <= 1:  # ...and together we fill the window: take a smaller share
                self.contended()
            self.pause()
            return True
        return False
