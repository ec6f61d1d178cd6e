"""The strict server-side rate limiter and the 418 ban, as Upbit enforces them per IP.

Every client address has its own budget and its own ban, as Upbit counts per IP: two clients
bound to 127.0.0.2 and 127.0.0.3 each get the full limit, while every process of one address
shares one. Per address and group, the limiter remembers arrival times. A request is rejected with 429 when at least
``limit`` requests of its group arrived within the preceding ``window`` seconds; **every**
arrival counts, rejected ones included, so a client that keeps hammering stays rejected. This
is stricter than a token bucket on purpose: it is exactly the "at most N in ANY window" rule a
client must satisfy. ``ban_after`` rejections within ``ban_window`` seconds ban every group for
``ban_seconds``, growing by ``ban_growth`` with each ban.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Admission:
    """The limiter's verdict: ``status`` None = admitted, else 429 or 418."""

    status: int | None
    remaining: int  # requests left in the group's current window (the ``sec=`` of Remaining-Req)
    ban_seconds: float | None = None  # for 418: how long the ban still lasts


class RateLimiter:
    """Sliding-window limits per group plus the escalating ban. Time is passed in (testable)."""

    def __init__(
        self,
        limit: int | None = 10,
        window: float = 1.0,
        *,
        origin_limit: int = 1,
        origin_window: float = 10.0,
        ban_after: int = 5,
        ban_window: float = 10.0,
        ban_seconds: float = 30.0,
        ban_growth: float = 2.0,
    ) -> None:
        self.limit, self.window = limit, window
        self.origin_limit, self.origin_window = origin_limit, origin_window
        self.ban_after, self.ban_window = ban_after, ban_window
        self.ban_seconds, self.ban_growth = ban_seconds, ban_growth
        self._addresses: dict[str, _Address] = {}
        self._lock = threading.Lock()

    def admit(self, group: str, now: float, address: str = "") -> Admission:
        """Record an arrival of ``group`` from ``address`` at ``now`` (monotonic seconds) and
        judge it against that address's budget."""
        limit, window = (self.origin_limit, self.origin_window) if group == "origin" else (self.limit, self.window)
        with self._lock:
            state = self._state(address)
            if now < state.banned_until:
                return Admission(418, 0, state.banned_until - now)
            arrivals = state.arrivals.setdefault(group, deque())
            while arrivals and arrivals[0] <= now - window:
                arrivals.popleft()
            before = len(arrivals)
            arrivals.append(now)
            if limit is None:
                return Admission(None, max(0, 10 - len(arrivals)))
            remaining = max(0, limit - len(arrivals))
            if before < limit:
                return Admission(None, remaining)
            state.violations.append(now)
            while state.violations and state.violations[0] <= now - self.ban_window:
                state.violations.popleft()
            if len(state.violations) >= self.ban_after:
                self._ban_locked(state, now, None)
            return Admission(429, 0)

    def ban(self, now: float, seconds: float | None = None, address: str = "") -> float:
        """Ban every group of ``address`` from ``now``; returns the ban's length (default: the
        escalation)."""
        with self._lock:
            return self._ban_locked(self._state(address), now, seconds)

    def banned(self, now: float) -> dict[str, float]:
        """The addresses banned at ``now``, with the seconds each ban still lasts."""
        with self._lock:
            return {a: s.banned_until - now for a, s in self._addresses.items() if s.banned_until > now}

    def _state(self, address: str) -> _Address:
        state = self._addresses.get(address)
        if state is None:
            state = self._addresses[address] = _Address()
        return state

    def _ban_locked(self, state: _Address, now: float, seconds: float | None) -> float:
        length = seconds if seconds is not None else self.ban_seconds * self.ban_growth**state.bans
        state.bans += 1
        state.banned_until = now + length
        state.violations.clear()
        return length

    def reset(self) -> None:
        """Forget all arrivals, violations and bans, of every address."""
        with self._lock:
            self._addresses.clear()


@dataclass(slots=True)
class _Address:
    """One client address's budget: arrivals per group, recent 429s, its ban."""

    arrivals: dict[str, deque[float]] = field(default_factory=dict)
    violations: deque[float] = field(default_factory=deque)
    banned_until: float = float("-inf")
    bans: int = 0
