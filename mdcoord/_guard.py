"""The 418 guard: after an IP block, nothing more is sent to that exchange until it has passed.

Upbit answers HTTP 418 when an IP keeps going after 429s; the block lasts a while and grows with
repeats. A client must treat it as "stop everything": not retry, not let another group or
another call of the same process send in the meantime. One :class:`BlockGuard` per exchange
(base URL) remembers until when it is blocked; every attempt checks it before taking a limiter
slot and again just before sending.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ._exceptions import IPBlockedError

__all__ = ["DEFAULT_BLOCK_SECONDS", "BlockGuard"]

log = logging.getLogger("mdcoord")

# When a 418 does not say how long the block lasts, send nothing for this long.
DEFAULT_BLOCK_SECONDS = 60.0


class BlockGuard:
    """Until when an exchange is blocked (on the injected monotonic clock)."""

    def __init__(self, source: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._clock = clock
        self._until = float("-inf")
        self._error: IPBlockedError | None = None

    def block(self, err: IPBlockedError) -> None:
        """A 418 arrived: stop for the time it states (``DEFAULT_BLOCK_SECONDS`` if it does not)."""
        seconds = err.retry_after if err.retry_after is not None else DEFAULT_BLOCK_SECONDS
        self._until = max(self._until, self._clock() + seconds)
        self._error = err
        log.error("HTTP 418 from %s: no requests for %.0f s", self._source, seconds)

    def remaining(self) -> float:
        """Seconds the block still lasts (0 when not blocked)."""
        return max(0.0, self._until - self._clock()) if self._error is not None else 0.0

    def check(self) -> None:
        """Raise :class:`IPBlockedError` (nothing sent) while the block lasts."""
        left = self.remaining()
        if left > 0:
            e = self._error
            assert e is not None
            raise IPBlockedError(
                e.status, f"{e.server_message} (still blocked; {left:.0f} s left, nothing sent)",
                retry_after=left, url=e.url, params=e.params, group=e.group,
            )
