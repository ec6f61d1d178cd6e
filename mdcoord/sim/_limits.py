"""The strict server-side rate limiter and the 418 ban, as Upbit enforces them per IP.

Per group, the limiter remembers arrival times. A request is rejected with 429 when at least
``limit`` requests of its group arrived within the preceding ``window`` seconds; **every**
arrival counts, rejected ones included, so a client that keeps hammering stays rejected. This
is stricter than a token bucket on purpose: it is exactly the "at most N in ANY window" rule a
client must satisfy. ``ban_after`` rejections within ``ban_window`` seconds ban every group for
``ban_seconds``, growing by ``ban_growth`` with each ban.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


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
        self._arrivals: dict[str, deque[float]] = {}
        self._violations: deque[float] = deque()
        self._banned_until = float("-inf")
        self._bans = 0
        self._lock = threading.Lock()

    def admit(self, group: str, now: float) -> Admission:
        """Record an arrival of ``group`` at ``now`` (monotonic seconds) and judge it."""
        limit, window = (self.origin_limit, self.origin_window) if group == "origin" else (self.limit, self.window)
        with self._lock:
            if now < self._banned_until:
                return Admission(418, 0, self._banned_until - now)
            arrivals = self._arrivals.setdefault(group, deque())
            while arrivals and arrivals[0] <= now - window:
                arrivals.popleft()
            before = len(arrivals)
            arrivals.append(now)
            if limit is None:
                return Admission(None, max(0, 10 - len(arrivals)))
            remaining = max(0, limit - len(arrivals))
            if before < limit:
                return Admission(None, remaining)
            self._violations.append(now)
            while self._violations and self._violations[0] <= now - self.ban_window:
                self._violations.popleft()
            if len(self._violations) >= self.ban_after:
                self._ban_locked(now, None)
            return Admission(429, 0)

    def ban(self, now: float, seconds: float | None = None) -> float:
        """Ban every group from ``now``; returns the ban's length (default: the escalation)."""
        with self._lock:
            return self._ban_locked(now, seconds)

    def _ban_locked(self, now: float, seconds: float | None) -> float:
        length = seconds if seconds is not None else self.ban_seconds * self.ban_growth**self._bans
        self._bans += 1
        self._banned_until = now + length
        self._violations.clear()
        return length

    def reset(self) -> None:
        """Forget all arrivals, violations and bans."""
        with self._lock:
            self._arrivals.clear()
            self._violations.clear()
            self._banned_until = float("-inf")
            self._bans = 0
