"""Process-wide figures, always on: :func:`mdcoord.metrics` reads them as DataFrames.

Four tables:

- ``"requests"``, one row per (source, rate-limit group): attempts on the wire, answers by kind
  (ok, 429, 418, 5xx, other 4xx, timeouts, connection failures, bad bodies), retries, seconds
  spent waiting for the limiter, latency percentiles (of the last 4096 answers), the adaptive
  concurrency limit now, its largest in-flight count, how often it shrank, and the worst
  event-loop lag seen.
- ``"cache"``, one row per data type: calls, calls answered without a request, rows from the
  cache vs rows fetched, and the share of rows the cache supplied.
- ``"splits"``, one row per (data type, split strategy): calls, pieces, requests, rows, rows per
  request, follow-up rounds, failed pieces, seconds.
- ``"budget"``, one row per (source, group, process) sharing a rate budget with this one (the
  machine's file or Redis): grants, share, seconds waited for slots the others held.

Updates are a few integer additions under a lock (the loop thread writes, any thread reads), so
the figures cost nothing worth measuring. ``mdcoord.reset_metrics()`` starts them afresh.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["METRICS", "Metrics", "metrics", "reset_metrics"]

_SECTIONS = ("requests", "cache", "splits", "budget")


@dataclass
class _Group:
    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    blocked: int = 0
    server_errors: int = 0
    client_errors: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    bad_bodies: int = 0
    retries: int = 0
    limiter_wait_s: float = 0.0
    budget_wait_s: float = 0.0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=4096))


@dataclass
class _Cache:
    calls: int = 0
    calls_without_request: int = 0
    rows_from_cache: int = 0
    rows_fetched: int = 0


@dataclass
class _Split:
    calls: int = 0
    pieces: int = 0
    requests: int = 0
    rows: int = 0
    rounds: int = 0
    failed_pieces: int = 0
    seconds: float = 0.0


class Metrics:
    """The registry. One per process (:data:`METRICS`); the client and coordinator feed it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()
        # live gauges: (source, group) -> the client's gate; source -> its loop-lag monitor
        self._gates: dict[tuple[str, str], Any] = {}
        self._lag: dict[str, Any] = {}
        self._budgets: dict[tuple[str, str], Any] = {}  # (source, group) -> its shared budget

    def reset(self) -> None:
        with self._lock:
            self._groups: dict[tuple[str, str], _Group] = {}
            self._cache: dict[str, _Cache] = {}
            self._splits: dict[tuple[str, str], _Split] = {}

    # -- feeding ----------------------------------------------------------------------------------
    def group(self, source: str, group: str) -> _Group:
        key = (source, group)
        g = self._groups.get(key)
        if g is None:
            with self._lock:
                g = self._groups.setdefault(key, _Group())
        return g

    def attempt(self, source: str, group: str, outcome: str | None, latency: float | None, limiter_wait: float) -> None:
        """One attempt on the wire ended as ``outcome`` (a :class:`_Group` counter name; None when
        it was cancelled)."""
        g = self.group(source, group)
        with self._lock:
            g.requests += 1
            if outcome is not None:
                setattr(g, outcome, getattr(g, outcome) + 1)
            g.limiter_wait_s += limiter_wait
            if latency is not None:
                g.latencies.append(latency)

    def budget_wait(self, source: str, group: str, seconds: float) -> None:
        """A request waited ``seconds`` for the shared budget (slots other processes held)."""
        g = self.group(source, group)
        with self._lock:
            g.budget_wait_s += seconds

    def watch_budget(self, source: str, group: str, budget: Any) -> None:
        self._budgets[(source, group)] = budget

    def unwatch_budget(self, source: str, group: str, budget: Any) -> None:
        """The client of ``budget`` closed: stop listing it (unless another took its place)."""
        if self._budgets.get((source, group)) is budget:
            del self._budgets[(source, group)]

    def retry(self, source: str, group: str) -> None:
        g = self.group(source, group)
        with self._lock:
            g.retries += 1

    def watch(self, source: str, group: str, gate: Any) -> None:
        self._gates[(source, group)] = gate

    def watch_lag(self, source: str, monitor: Any) -> None:
        self._lag[source] = monitor

    def call(
        self, data_type: str, strategy: str, *, pieces: int, requests: int, rows: int, rounds: int,
        failed: int, seconds: float, cache_rows: int | None,
    ) -> None:
        """One coordinated call finished (``cache_rows`` None: the data type has no cache)."""
        with self._lock:
            s = self._splits.setdefault((data_type, strategy), _Split())
            s.calls += 1
            s.pieces += pieces
            s.requests += requests
            s.rows += rows
            s.rounds += rounds
            s.failed_pieces += failed
            s.seconds += seconds
            if cache_rows is not None:
                c = self._cache.setdefault(data_type, _Cache())
                c.calls += 1
                c.calls_without_request += requests == 0
                c.rows_from_cache += cache_rows
                c.rows_fetched += max(0, rows - cache_rows)

    # -- reading -----------------------------------------------------------------------------------
    def frame(self, section: str = "requests") -> pd.DataFrame:
        if section not in _SECTIONS:
            from ._exceptions import InvalidRequestError

            raise InvalidRequestError(f"unknown metrics section {section!r}; valid: {', '.join(map(repr, _SECTIONS))}")
        with self._lock:
            if section == "requests":
                return self._requests_frame()
            if section == "cache":
                return self._cache_frame()
            if section == "budget":
                budgets = dict(self._budgets)
        if section == "budget":  # (reads the shared files or Redis: outside the lock)
            return _budget_frame(budgets)
        with self._lock:
            if section == "cache":
                return self._cache_frame()
            return self._splits_frame()

    def _requests_frame(self) -> pd.DataFrame:
        rows = []
        for (source, group), g in sorted(self._groups.items()):
            lat = np.fromiter(g.latencies, float) * 1000
            p50, p90, p99 = np.percentile(lat, [50, 90, 99]) if len(lat) else (np.nan,) * 3
            gate = self._gates.get((source, group))
            lag = self._lag.get(source)
            rows.append({
                "source": source, "group": group, "requests": g.requests, "ok": g.ok,
                "429": g.rate_limited, "418": g.blocked, "5xx": g.server_errors, "4xx": g.client_errors,
                "timeouts": g.timeouts, "connection_errors": g.connection_errors, "bad_bodies": g.bad_bodies,
                "retries": g.retries, "limiter_wait_s": round(g.limiter_wait_s, 3),
                "budget": getattr(self._budgets.get((source, group)), "scope", "process"),
                "budget_wait_s": round(g.budget_wait_s, 3),
                "latency_p50_ms": p50, "latency_p90_ms": p90, "latency_p99_ms": p99,
                "latency_max_ms": lat.max() if len(lat) else np.nan,
                "concurrency_limit": gate.limit if gate is not None else pd.NA,
                "max_in_flight": gate.max_in_flight if gate is not None else pd.NA,
                "concurrency_shrinks": gate.shrinks if gate is not None else pd.NA,
                "loop_lag_max_ms": lag.max_lag * 1000 if lag is not None else np.nan,
            })
        cols = ["source", "group", "requests", "ok", "429", "418", "5xx", "4xx", "timeouts", "connection_errors",
                "bad_bodies", "retries", "limiter_wait_s", "budget", "budget_wait_s", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
                "latency_max_ms", "concurrency_limit", "max_in_flight", "concurrency_shrinks", "loop_lag_max_ms"]
        return pd.DataFrame(rows, columns=cols).set_index(["source", "group"])

    def _cache_frame(self) -> pd.DataFrame:
        rows = [{"data_type": k, **vars(c)} for k, c in sorted(self._cache.items())]
        df = pd.DataFrame(rows, columns=["data_type", *vars(_Cache())]).set_index("data_type")
        total = df["rows_from_cache"] + df["rows_fetched"]
        df["cache_share"] = (df["rows_from_cache"] / total.where(total > 0)).astype(float)
        return df

    def _splits_frame(self) -> pd.DataFrame:
        rows = [{"data_type": k[0], "strategy": k[1], **vars(s)} for k, s in sorted(self._splits.items())]
        df = pd.DataFrame(rows, columns=["data_type", "strategy", *vars(_Split())]).set_index(["data_type", "strategy"])
        df["rows_per_request"] = (df["rows"] / df["requests"].where(df["requests"] > 0)).astype(float)
        df["seconds"] = df["seconds"].round(3)
        return df


def _budget_frame(budgets: dict[tuple[str, str], Any]) -> pd.DataFrame:
    """One row per (source, group, process) of the shared budgets this process uses: what each
    process got (grants since it first took a slot, its share of them among the processes
    listed), the seconds it waited for slots the others held, and whether it is this process."""
    import os
    import socket

    rows = []
    me = socket.gethostname()
    for (source, group), budget in sorted(budgets.items()):
        shares = budget.shares()
        total = sum(s.grants for s in shares)
        for s in shares:
            rows.append({  # (a budget shared by hosts names a process "host:pid")
                "source": source, "group": group, "scope": budget.scope,
                "process": f"{s.host}:{s.pid}" if s.host else s.pid,
                "this_process": s.pid == os.getpid() and s.host in ("", me), "alive": s.alive, "grants": s.grants,
                "share": s.grants / total if total else np.nan, "waited_for_others_s": round(s.waited_s, 3),
            })
    cols = ["source", "group", "scope", "process", "this_process", "alive", "grants", "share", "waited_for_others_s"]
    return pd.DataFrame(rows, columns=cols).set_index(["source", "group", "process"])


#: The process-wide registry.
METRICS = Metrics()


def _new_lock_after_fork() -> None:
    # Another thread of the parent (its loop thread) may have held the lock at the moment of
    # fork; in the child that thread is gone and the lock would stay held for ever.
    METRICS._lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


def metrics(section: str = "requests") -> pd.DataFrame:
    """Process-wide figures since import (or the last :func:`reset_metrics`), as a DataFrame.

    ``section``: ``"requests"`` (per source and rate-limit group: attempts, answers by kind,
    retries, limiter waits, latency percentiles in ms, the adaptive concurrency limit, loop lag),
    ``"cache"`` (per data type: rows from the cache vs fetched) or ``"splits"`` (per data type and
    split strategy: calls, pieces, requests, rows per request, rounds, failures) or ``"budget"``
    (per source, group and process sharing this process's rate budget — the machine's or
    Redis's: grants, share, seconds waited for slots the others held).

    >>> mdcoord.metrics()[["requests", "429", "latency_p50_ms", "concurrency_limit"]]
    """
    return METRICS.frame(section)


def reset_metrics() -> None:
    """Zero every counter of :func:`metrics` (live gauges such as the concurrency limit stay)."""
    METRICS.reset()
