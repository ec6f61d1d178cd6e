"""Run pieces concurrently under a bound on requests in flight.

The rate limit is enforced by the client's per-group limiter; the executor only bounds
concurrency (a :class:`~mdcoord._concurrency.ConcurrencyGate`: adaptive and shared by the
group, or fixed for this call) and decides what a failure means: a retryable error that survived its
retries marks *that piece* as failed (it is reported, never dropped); any other error (4xx, 418,
bad input) is fatal and cancels every sibling at once, so no further request is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._client import CallStats
from ._concurrency import ConcurrencyGate
from ._exceptions import MdcoordError
from ._progress import Progress

__all__ = ["Executor", "Outcome", "gather_or_cancel"]

C = TypeVar("C")
T = TypeVar("T")


@dataclass
class Outcome(Generic[C]):
    """What became of one piece: its decoded answer, or the error it failed with."""

    chunk: C
    data: Any = None
    error: MdcoordError | None = None


async def gather_or_cancel(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Like ``asyncio.gather``, but the first exception cancels (and awaits) all the others.

    (Plain ``gather`` lets siblings keep running — and keep sending requests — after a failure.)
    """
    if not coros:  # asyncio.wait() refuses an empty set; no work is simply no results
        return []
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        return [t.result() for t in tasks]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Executor(Generic[C]):
    """Fetch pieces with as many in flight as ``gate`` allows; shared by all markets of a call."""

    def __init__(
        self,
        fetch: Callable[[C], Awaitable[Any]],
        gate: ConcurrencyGate,
        progress: Progress,
        stats: CallStats,
        size_of: Callable[[Any], int] = len,
    ) -> None:
        self._fetch = fetch
        self.gate = gate
        self._progress = progress
        self._stats = stats
        self._size_of = size_of
        self.in_flight = 0
        self.max_in_flight = 0
        self.pieces = 0

    async def run(
        self, chunks: Sequence[C], on_outcome: Callable[[Outcome[C]], Iterable[C] | None] | None = None
    ) -> list[Outcome[C]]:
        """Fetch every chunk; results in the order started (the chunks given, then follow-ups).

        ``on_outcome`` sees each outcome the moment it is known, so what arrived is kept even if
        the run is then cancelled or fails; the chunks it returns (a cursor's next page) are
        started at once, in this same run. The first fatal error cancels every other piece.
        """
        tasks: list[asyncio.Task[Outcome[C]]] = []
        pending: set[asyncio.Task[Outcome[C]]] = set()

        def start(new: Iterable[C]) -> None:
            new = list(new)
            self.pieces += len(new)
            self._progress.add_total(len(new))
            for c in new:
                task = asyncio.ensure_future(self._reported(c, on_outcome, start))
                tasks.append(task)
                pending.add(task)

        start(chunks)
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending.difference_update(done)
                errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
                if errors:  # every error of this batch is retrieved; the first is raised
                    raise errors[0]  # type: ignore[misc]
            return [t.result() for t in tasks]
        finally:
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _reported(
        self,
        chunk: C,
        on_outcome: Callable[[Outcome[C]], Iterable[C] | None] | None,
        start: Callable[[Iterable[C]], None],
    ) -> Outcome[C]:
        outcome = await self._one(chunk)
        if on_outcome is not None:
            more = on_outcome(outcome)
            if more:
                start(more)
        return outcome

    async def _one(self, chunk: C) -> Outcome[C]:
        await self.gate.acquire()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            data = await self._fetch(chunk)
        except MdcoordError as err:
            if not err.retryable:
                raise
            self._progress.advance(0, self._stats)
            return Outcome(chunk, error=err)
        finally:
            self.in_flight -= 1
            self.gate.release()
        self._progress.advance(self._size_of(data), self._stats)
        return Outcome(chunk, data=data)
