"""The request log: one frozen record per request, and the queries tests make of it."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the server saw it (after the uplink delay).

    ``arrival`` is the ``time.monotonic()`` moment the simulated network delivered it (its
    receipt plus the uplink delay drawn for it; the limiter judges it at that moment), ``wall``
    the same moment on the UTC clock. ``group`` is the rate-limit group (``origin`` when an
    Origin header was sent; None for unknown paths).
    ``status`` is None when the connection was dropped. ``fault`` names the injected fault, if
    any. ``rows`` is the number of rows of a successful JSON array answer. ``peer`` is the
    client's ``(host, port)``: which connection, and so which client process, sent it.
    """

    arrival: float
    wall: datetime
    method: str
    path: str
    query: dict[str, str]
    group: str | None
    status: int | None
    fault: str | None
    rows: int | None
    peer: tuple[str, int] | None = None


class RequestLog:
    """Thread-safe, append-only list of :class:`RequestRecord`."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def count(self, group: str | None = None, status: int | None = None, path_prefix: str | None = None,
              address: str | None = None) -> int:
        """Records matching every given filter (``path_prefix`` on the path without ``/v1``;
        ``address``: the client's IP)."""
        return sum(1 for r in _filter(self.snapshot(), group, status, path_prefix)
                   if address is None or (r.peer is not None and r.peer[0] == address))

    def max_in_window(self, group: str, window: float = 1.0, statuses: Iterable[int] | None = None,
                      address: str | None = None) -> int:
        """Most arrivals of ``group`` inside any half-open ``window``-second span.

        This is what a strict server limiter sees: a client that respects "at most N per
        second" keeps it ``<= N``. ``statuses`` restricts to answers with those statuses;
        ``address`` to one client IP (the limiter counts each address apart, as Upbit does).
        """
        wanted = None if statuses is None else set(statuses)
        times = sorted(r.arrival for r in self.snapshot()
                       if r.group == group and (wanted is None or r.status in wanted)
                       and (address is None or (r.peer is not None and r.peer[0] == address)))
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


def _filter(records: list[RequestRecord], group: str | None, status: int | None, path_prefix: str | None) -> Any:
    for r in records:
        if group is not None and r.group != group:
            continue
        if status is not None and r.status != status:
            continue
        if path_prefix is not None and not (r.path.startswith(path_prefix) or r.path.removeprefix("/v1").startswith(path_prefix)):
            continue
        yield r
