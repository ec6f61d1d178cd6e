"""Interrupting a call in the middle, deterministically: the exchange holds it there.

``hold_after(ex, k, group)`` makes the exchange answer the next ``k`` requests of ``group`` and
then hold every later one on the wire (the ``slow`` fault, with an hour's delay). A call with a
fixed concurrency ``c`` then comes to rest with exactly ``k`` answers and ``c`` requests in
flight, however fast or loaded the machine is: it can send nothing more until an answer comes,
and none comes. Once :func:`wait_held` sees that state in the exchange's log, an interrupt lands
in the middle of the call, with requests on the wire, every time — and "nothing was sent after
the interrupt" is an exact count, not a time window:

- the ``c`` held requests end at the exchange only when the client closes their connections
  (``ex.in_progress`` drops to 0): the interrupted call abandoned them;
- the log still holds exactly ``k + c`` requests: not one was sent after the interrupt;
- nothing of the call is left on mdcoord's loop, and no aiohttp connection is checked out
  (:func:`assert_stopped` checks all three).
"""

from __future__ import annotations

import _thread
import asyncio
import gc
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import pytest

import mdcoord
from mdcoord._runtime import get_runtime
from mdcoord.sim import Exchange

HOLD_S = 3600.0  # longer than any test: a held request is answered only if something is broken


def hold_after(ex: Exchange, answers: int, group: str, count: int = 10_000) -> None:
    """Answer the next ``answers`` requests of ``group``, then hold the ``count`` after them
    (every later one, by default)."""
    ex.faults.inject("slow", count=count, group=group, after=answers, delay=HOLD_S)


def answered(ex: Exchange) -> int:
    """Requests the exchange answered normally (200, no fault)."""
    return sum(1 for r in ex.log if r.status == 200 and r.fault is None)


def held(ex: Exchange) -> int:
    """Requests the exchange is holding (or held until the client gave them up)."""
    return sum(1 for r in ex.log if r.fault == "slow")


def wait_held(ex: Exchange, answers: int, in_flight: int, until: Callable[[], bool] = lambda: True) -> None:
    """Return once the call rests with ``answers`` answers and ``in_flight`` held requests (and
    ``until()`` holds); :class:`TimeoutError` if it never gets there."""
    ex.wait_for(lambda: answered(ex) == answers and held(ex) == in_flight and until(),
                what=f"{answers} answers and {in_flight} held requests")


class Interrupter(threading.Thread):
    """Ctrl-C the main thread (as Jupyter's "interrupt kernel" does) once the call is held::

        with Interrupter(ex, answers=8, in_flight=2), pytest.raises(KeyboardInterrupt):
            mdcoord.download(..., concurrency=2)

    If it is never held, the main thread is interrupted all the same (a call left running would
    hang the test) and leaving the block raises the reason; once the block is left it fires no
    more.

    Inside the block, Ctrl-C raises ``KeyboardInterrupt`` as in a terminal or a kernel, even when
    the test process was started with SIGINT ignored (a background job ``cmd &`` of a
    non-interactive shell, some CI runners): ``interrupt_main`` does nothing then, and the test
    would hang. The process's own handling is put back when the block is left.
    """

    def __init__(self, ex: Exchange, answers: int, in_flight: int) -> None:
        super().__init__(name="test-interrupter", daemon=True)
        self.ex, self.answers, self.in_flight = ex, answers, in_flight
        self.error: TimeoutError | None = None
        self._lock = threading.Lock()
        self._armed = True

    def run(self) -> None:
        try:
            wait_held(self.ex, self.answers, self.in_flight)
        except TimeoutError as exc:
            self.error = exc
        with self._lock:
            if self._armed:
                _thread.interrupt_main()

    def __enter__(self) -> Interrupter:
        self._sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._armed = False
        self.join()
        signal.signal(signal.SIGINT, self._sigint)
        if self.error is not None:
            raise self.error


def cancel_when_held(ex: Exchange, coro: Coroutine[Any, Any, Any], answers: int, in_flight: int,
                     until: Callable[[], bool] = lambda: True) -> None:
    """Run ``coro`` as a task on a loop of its own; cancel it once the call is held (and
    ``until()`` holds); check the cancellation reaches the awaiting caller."""

    async def main() -> None:
        task = asyncio.create_task(coro)
        waiter = asyncio.create_task(asyncio.to_thread(wait_held, ex, answers, in_flight, until))
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiter.cancel()  # the thread runs on to its timeout; nothing waits for it
            task.result()
            pytest.fail("the call ended although the exchange held its requests")
        try:
            await waiter
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())


def assert_stopped(ex: Exchange, answers: int, in_flight: int) -> None:
    """The interrupted call abandoned its held requests, sent nothing more, and left nothing
    running. The wait is well within the client's own request timeout, which would give the held
    requests up by itself: so it was the interrupt that did."""
    ex.wait_for(lambda: ex.in_progress == 0, timeout=mdcoord.get_options().timeout / 2,
                what="the exchange no longer holding a request (the client closed them)")
    assert (answered(ex), held(ex)) == (answers, in_flight)
    assert ex.count() == answers + in_flight, [(r.path, r.status, r.fault) for r in ex.log]
    assert_nothing_left_running()


def assert_nothing_left_running() -> None:
    """No task of a call is left on mdcoord's loop (the loop-lag monitor, which ends itself after
    5 s without requests, is the only task allowed), and no aiohttp connection is checked out.

    aiohttp makes a :class:`aiohttp.connector.Connection` when it checks a connection out of its
    pool and drops its ``protocol`` when the connection is released or closed (public API), so
    a live one with a protocol is a connection still checked out.
    """

    async def tasks() -> list[str]:
        me = asyncio.current_task()
        return [t.get_name() for t in asyncio.all_tasks() if t is not me and not t.done()]

    left = asyncio.run_coroutine_threadsafe(tasks(), get_runtime().loop).result(30)
    assert [n for n in left if n != "mdcoord-loop-lag"] == []
    out = [c for c in gc.get_objects() if isinstance(c, aiohttp.connector.Connection) and c.protocol is not None]
    assert out == [], f"connections still checked out: {out}"
