"""The exchange's clock, as its answers tell it: the only "now" mdcoord plans against.

Every HTTP answer carries a ``Date`` header (RFC 9110: the origin server's clock, 1-second
resolution). Market time in mdcoord — which candle is still forming, how far back one-second
candles and trades reach, which data is settled enough to cache — is read from it, never from
this machine's wall clock: a laptop's clock may be off by minutes, a test exchange may run in
2025 or 2028, and Upbit's own day boundary is what ``days_ago`` counts from.

:class:`ServerClock` keeps the latest ``Date`` seen and when (on the injected monotonic clock)
it was seen, which bounds the server's current time from both sides:

- ``floor()``: the latest ``Date``. Server time never runs backwards, so "now" is at least this.
- ``ceiling()``: ``floor() + 2 s`` (1 s for the header's resolution, 1 s for the answer's way
  back) plus the time elapsed here since it was seen.
- ``estimate()``: ``floor()`` plus the time elapsed since: a best guess, for display only.

An exchange that sends no ``Date`` leaves all three None; callers then derive "now" from the
data itself (the newest row's time), never from the local clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

__all__ = ["ServerClock"]

# The header has whole seconds; the answer took up to about a second to come back.
_CEILING_SLACK_S = 2.0


class ServerClock:
    """The latest ``Date`` of one exchange, and bounds of its "now" derived from it.

    >>> clock = ServerClock()
    >>> clock.observe("Fri, 20 Nov 2026 12:34:56 GMT")
    >>> clock.floor()
    1795178096.0
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._floor: float | None = None
        self._seen_at = 0.0

    def observe(self, value: str | None) -> None:
        """Take the ``Date`` header of an answer (ignored when absent or unreadable)."""
        if not value:
            return
        try:
            seconds = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        if self._floor is None or seconds >= self._floor:
            self._floor = seconds
            self._seen_at = self._monotonic()

    def floor(self) -> float | None:
        """A lower bound of the server's current time (epoch s), or None before any ``Date``."""
        return self._floor

    def ceiling(self) -> float | None:
        """An upper bound of the server's current time (epoch s), or None before any ``Date``."""
        if self._floor is None:
            return None
        return self._floor + _CEILING_SLACK_S + (self._monotonic() - self._seen_at)

    def estimate(self) -> float | None:
        """The server's current time as best known (epoch s): for display, never for proofs."""
        if self._floor is None:
            return None
        return self._floor + (self._monotonic() - self._seen_at)
