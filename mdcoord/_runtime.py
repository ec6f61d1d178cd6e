"""The library-owned event loop that runs mdcoord's async core.

The sync API (``mdcoord.candles``) must work in a plain script *and* inside a running event loop
(Jupyter) without patching that loop (nest-asyncio is archived and breaks on Python 3.12+). So the
async core always runs here, on one daemon thread with its own loop; sync callers block on a
future, async callers await a wrapped future. Both therefore share one aiohttp session and one
set of rate limiters per base URL.

Fork: a forked child starts a runtime of its own on first use. The parent's stays in the child,
untouched and never finalized: its sockets are the parent's connections, and its loop's epoll
instance is the parent's too (a forked epoll descriptor names the same kernel object), so a
child that closed that session would take the parent's sockets out of the parent's epoll and
leave the parent's next request on a pooled connection waiting for an answer it never hears.
The child's copy of that descriptor is pointed at an epoll of its own, should anything try.

Interrupts: a ``KeyboardInterrupt`` (Ctrl-C, Jupyter's "interrupt kernel") while a sync call
waits cancels the work on the loop and waits (briefly) until it has unwound, so no further
request is sent once the call has returned.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import select
import selectors
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._client import Client
from ._exceptions import InvalidRequestError

__all__ = ["Runtime", "get_runtime"]

T = TypeVar("T")
# How long an interrupted call waits for the cancelled work to unwind before returning.
_CANCEL_GRACE_S = 2.0


class Runtime:
    """A daemon thread running an event loop, plus the clients (sessions) that live on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._clients: dict[tuple[str, str | None], Client] = {}  # (base URL, local address)

    # -- the loop ---------------------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                ready = threading.Event()
                # a selector of our own, so that a forked child can disown it (see _disown)
                self._selector = selectors.DefaultSelector()
                loop = asyncio.SelectorEventLoop(self._selector)

                def _main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=_main, name="mdcoord-loop", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def _on_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def client(self, base_url: str, local_address: str | None = None) -> Client:
        """The shared client for ``base_url`` whose connections leave from ``local_address``
        (each address has its own budget). Call only from the runtime loop."""
        client = self._clients.get((base_url, local_address))
        if client is None:
            client = self._clients[(base_url, local_address)] = Client(base_url, local_address=local_address)
        return client

    # -- running coroutines -----------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the runtime loop and block until it is done (the sync facade)."""
        if self._on_loop_thread():
            coro.close()
            raise InvalidRequestError(
                "a sync mdcoord function (candles, trades, ...) was called from mdcoord's own event loop, where it "
                "would wait for itself; await its async twin (acandles, atrades, ...) instead"
            )
        finished = threading.Event()
        future = asyncio.run_coroutine_threadsafe(_signal_when_done(coro, finished), self.loop)
        try:
            while True:
                try:
                    # A short timeout keeps the main thread responsive to signals (Ctrl-C).
                    return future.result(timeout=0.1)
                except concurrent.futures.TimeoutError:
                    continue
        except BaseException:  # KeyboardInterrupt, SystemExit, or an error raised by coro
            if not future.done():
                future.cancel()
                finished.wait(_CANCEL_GRACE_S)
            raise

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the runtime loop from any event loop (the async facade).

        Cancelling the awaiting task cancels the work and waits (briefly) until it has unwound
        on the runtime loop, so no request is sent after the cancellation has been delivered.
        """
        if self._on_loop_thread():
            return await coro
        caller = asyncio.get_running_loop()
        unwound: asyncio.Future[None] = caller.create_future()

        def _signal() -> None:  # runs on the runtime loop when the work has ended, however
            def _set() -> None:
                if not unwound.done():
                    unwound.set_result(None)

            try:
                caller.call_soon_threadsafe(_set)
            except RuntimeError:  # the caller's loop is gone: nobody waits any more
                pass

        future = asyncio.run_coroutine_threadsafe(_call_when_done(coro, _signal), self.loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(unwound), _CANCEL_GRACE_S)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
            raise

    # -- shutdown -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Close every session and stop the loop (also run at interpreter exit)."""
        with self._lock:
            loop, thread, clients = self._loop, self._thread, list(self._clients.values())
            self._loop, self._thread, self._clients, self._selector = None, None, {}, None
        if loop is None or loop.is_closed():
            return
        if not self._on_loop_thread_of(thread):
            async def _close_all() -> None:
                await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

            try:
                asyncio.run_coroutine_threadsafe(_close_all(), loop).result(timeout=5)
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=5)
            if not loop.is_running():
                loop.close()

    def _disown(self) -> None:
        """In a forked child: the loop thread is gone and the loop's epoll is the parent's.
        Point this process's descriptor of it at an epoll of its own, so that nothing done to
        this runtime here (a socket unregistered) reaches the parent's loop."""
        selector = self._selector
        if hasattr(select, "epoll") and isinstance(selector, selectors.EpollSelector):
            try:
                private = select.epoll()
                os.dup2(private.fileno(), selector.fileno(), inheritable=False)
                private.close()
            except (OSError, ValueError):  # already closed: nothing of the parent's left here
                pass

    @staticmethod
    def _on_loop_thread_of(thread: threading.Thread | None) -> bool:
        return thread is not None and threading.current_thread() is thread


async def _signal_when_done(coro: Coroutine[Any, Any, T], finished: threading.Event) -> T:
    return await _call_when_done(coro, finished.set)


async def _call_when_done(coro: Coroutine[Any, Any, T], done: Callable[[], None]) -> T:
    try:
        return await coro
    finally:
        done()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()
_parents: list[Runtime] = []  # in a forked child: the parent's runtime, kept so it is never finalized


def get_runtime() -> Runtime:
    """The process-wide runtime, created on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime


def _reset_after_fork() -> None:
    # The loop thread does not survive fork(); a child starts a fresh runtime on first use, and
    # leaves the parent's alone (the module docstring says why).
    global _runtime, _runtime_lock
    if _runtime is not None:
        _runtime._disown()
        _parents.append(_runtime)
    _runtime = None
    _runtime_lock = threading.Lock()


def _close_at_exit() -> None:
    if _runtime is not None:
        _runtime.close()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_close_at_exit)
