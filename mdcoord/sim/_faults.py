"""Fault injection: scripted faults for the next matching requests, and random fault rates.

Kinds (what the client sees):

============== ===========================================================================
server_error   HTTP 500/502/503/504 with a JSON or HTML body (``status=``, ``body="json"|"html"``)
drop           the connection closes without any answer
slow           the normal answer, after ``delay`` seconds (default ``SimConfig.slow_delay``)
malformed      200 with a body that is not JSON
truncated      200 with a JSON array cut in the middle
html           200 with an HTML page (``text/html``)
rate_limited   429 with the plain-text body ``Too many API requests.``
ban            418 now, and every request banned for ``seconds`` (default: the escalation)
============== ===========================================================================

Scripted faults win over random ones; both apply only to routed requests that passed the rate
limiter. ``group=None`` matches every group. ``after=N`` lets the next ``N`` matching requests
through first, so a fault can strike in the middle of a job (``inject("ban", after=15)``).
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

KINDS = ("server_error", "drop", "slow", "malformed", "truncated", "html", "rate_limited", "ban")
_RATE_KINDS = ("server_error", "drop", "slow", "malformed", "truncated", "html")


@dataclass(frozen=True)
class Fault:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


class FaultInjector:
    """Holds pending scripted faults and per-group fault rates. Thread-safe."""

    def __init__(self, seed: int = 0) -> None:
        # [group, fault, requests still to let through before it strikes]
        self._queue: deque[list[Any]] = deque()
        self._rates: dict[str | None, dict[str, float]] = {}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def inject(self, kind: str, count: int = 1, group: str | None = None, *, after: int = 0, **params: Any) -> None:
        """Make the next ``count`` matching requests fail with ``kind`` — after letting ``after``
        matching requests through (behind any fault scripted earlier)."""
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {kind!r}")
        if count < 1:
            raise ValueError("count must be >= 1")
        if after < 0:
            raise ValueError("after must be >= 0")
        with self._lock:
            self._queue.extend([group, Fault(kind, dict(params)), after if i == 0 else 0] for i in range(count))

    def set_rates(
        self,
        *,
        server_error: float = 0.0,
        drop: float = 0.0,
        slow: float = 0.0,
        malformed: float = 0.0,
        truncated: float = 0.0,
        html: float = 0.0,
        group: str | None = None,
        seed: int | None = None,
    ) -> None:
        """Fail each matching request at random with these probabilities (their sum <= 1)."""
        rates = {"server_error": server_error, "drop": drop, "slow": slow,
                 "malformed": malformed, "truncated": truncated, "html": html}
        if any(p < 0 for p in rates.values()) or sum(rates.values()) > 1.0:
            raise ValueError("rates must be >= 0 and sum to at most 1")
        with self._lock:
            self._rates[group] = rates
            if seed is not None:
                self._rng.seed(seed)

    def clear(self) -> None:
        """Drop pending scripted faults and all rates."""
        with self._lock:
            self._queue.clear()
            self._rates.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def take(self, group: str) -> Fault | None:
        """The fault for one request of ``group``, or None."""
        with self._lock:
            for i, entry in enumerate(self._queue):
                g, fault, skip = entry
                if g is None or g == group:
                    if skip > 0:  # not yet: this request passes the script (random rates still apply)
                        entry[2] -= 1
                        break
                    del self._queue[i]
                    return fault
            rates = self._rates.get(group) or self._rates.get(None)
            if not rates:
                return None
            x = self._rng.random()
            for kind in _RATE_KINDS:
                x -= rates[kind]
                if x < 0:
                    if kind == "server_error":
                        return Fault(kind, {"status": self._rng.choice((500, 502, 503, 504)),
                                            "body": self._rng.choice(("json", "html"))})
                    return Fault(kind)
            return None
