"""Retry policy: which failures are retried, and how long to wait before the next attempt.

Exponential backoff with "equal jitter": attempt ``a`` waits between half and all of
``min(max_backoff, backoff * 2**a)``. Half is fixed so retries never bunch at zero; half is random
so many chunks failing together (a 5xx burst) do not retry in lockstep. The random source is
injectable, so tests assert the computed delays.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._exceptions import InvalidRequestError, MdcoordError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed request is retried.

    ``max_retries`` counts retries after the first attempt (3 → up to 4 attempts). Only errors
    whose class is retryable (429, 5xx, timeouts, dropped connections, unparseable bodies) are
    retried; 4xx and 418 never are.
    """

    max_retries: int = 3
    backoff: float = 0.25
    max_backoff: float = 8.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise InvalidRequestError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise InvalidRequestError("backoff and max_backoff must be >= 0")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """True if ``error`` after attempt number ``attempt`` (0-based) deserves another try."""
        return isinstance(error, MdcoordError) and error.retryable and attempt < self.max_retries

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        ceiling = min(self.max_backoff, self.backoff * (2**attempt))
        r = (rng or random).random()
        return ceiling / 2 + r * ceiling / 2
