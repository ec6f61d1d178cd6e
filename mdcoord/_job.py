"""What every data type's job shares: the executor it fetches through and the result it returns.

A job is one request's plan → fetch → aggregate, run on the runtime loop. The coordinator picks
the job class for the request's data type and turns its :class:`JobResult` into a response.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pandas as pd

from ._client import CallStats, Client
from ._concurrency import ConcurrencyGate
from ._config import Options
from ._groups import Group
from ._executor import Executor
from ._progress import Progress
from ._request import CoordinatorRequest

__all__ = ["Job", "JobResult", "cache_call", "despite_cancel", "failure"]

log = logging.getLogger("mdcoord")

C = TypeVar("C")


@dataclass
class JobResult:
    """A job's answer: the final frame, plus what the metadata needs.

    ``failures`` lists pieces that failed after their retries (``market``, ``range`` or
    ``markets``, ``error``, ``error_type``); ``meta`` holds data-type specific metadata fields
    (e.g. gap counts for candles) that are copied onto :class:`CoordinatorMetadata`.
    """

    frame: pd.DataFrame
    requested_size: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    rounds: int = 1
    meta: dict[str, Any] = field(default_factory=dict)


class Job(ABC, Generic[C]):
    """Base of the per-data-type jobs: holds the request, client, options and executor."""

    store: Any = None  # the job's cache store (None: no cache)
    group: Group  # the rate-limit group its requests go to (the adaptive gate is per group)

    def __init__(
        self, request: CoordinatorRequest, client: Client, options: Options, stats: CallStats, progress: Progress
    ) -> None:
        self.req = request
        self.client = client
        self.options = options
        self.stats = stats
        self.progress = progress
        gate = (
            client.gate(self.group, options)
            if options.concurrency == "auto"
            else ConcurrencyGate.fixed(int(options.concurrency))
        )
        self.executor: Executor[C] = Executor(self.fetch, gate, progress, stats)
        self.cache_error: str | None = None

    @abstractmethod
    async def fetch(self, chunk: C) -> Any:
        """Fetch one piece (the executor calls this, under the concurrency bound)."""

    @abstractmethod
    async def run(self) -> JobResult:
        """Plan, fetch and aggregate the whole request."""


async def cache_call(job: Any, fn: Any, *args: Any, default: Any = None) -> Any:
    """Run a store operation in a worker thread (disk I/O and Parquet encoding never hold up the
    event loop, whose timing the limiter relies on); if the disk fails (full, read-only, not a
    directory...), log it, go on without the cache for the rest of the job (the data is still
    returned) and note why in the metadata. The cache is an optimisation: it never costs the
    caller their data."""
    try:
        return await asyncio.to_thread(fn, *args)
    except Exception as exc:  # noqa: BLE001 - OSError, pyarrow errors...: all mean "no cache"
        log.warning("the cache is unusable (%s: %s); continuing without it", type(exc).__name__, exc)
        job.store = None
        job.cache_error = f"{type(exc).__name__}: {exc}"
        return default


async def despite_cancel(coro: Any) -> None:
    """Run ``coro`` to its end even if the caller is cancelled meanwhile, then re-raise the
    cancellation: the cache write of data that arrived must not be lost to a cancellation (a
    sibling's 418, Ctrl-C) that lands while it is being written — a queued worker-thread job
    that is cancelled never runs."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():  # the write itself was cancelled: nothing more to wait for
                break
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def failure(market: str | None, where: str, error: BaseException, **extra: Any) -> dict[str, Any]:
    """A JSON-safe record of a piece that failed after its retries."""
    return {"market": market, "range": where, "error": str(error), "error_type": type(error).__name__, **extra}
