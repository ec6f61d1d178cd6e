"""``Exchange``: the embedded Upbit-compatible server on its own thread and event loop.

Running the server on a private loop in a daemon thread makes it usable from sync code, from
pytest, and from notebooks whose loop is already running; it also keeps the model's CPU work
off the caller's loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from ._clock import Clock
from ._config import SimConfig
from ._faults import FaultInjector
from ._limits import RateLimiter
from ._log import RequestLog, RequestRecord
from ._market import SyntheticMarket
from ._server import Server
from ._websocket import WsFaults


class Exchange:
    """A synthetic Upbit quotation API on ``127.0.0.1`` (ephemeral port by default).

    ::

        with Exchange(SimConfig(seed=7, now="2026-11-24T12:00:00Z", frozen=True)) as ex:
            url = ex.base_url + "/candles/minutes/1?market=KRW-BTC&count=200"
            ...
            assert ex.max_in_window("candles") <= 10

    ``market`` is the ground-truth model, ``faults`` the fault injector, ``log`` a snapshot of
    the request log. Keyword overrides are applied to ``config``.
    """

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        self.config = replace(config or SimConfig(), **overrides)
        c = self.config
        self.clock = Clock(c.now, frozen=c.frozen, speed=c.speed)
        self.market = SyntheticMarket(c.seed, clock=self.clock, seconds_horizon_days=c.seconds_horizon_days,
                                      cache_bytes=c.cache_mb * 2**20)
        self.faults = FaultInjector(seed=c.seed)
        self._log = RequestLog()
        self._limiter = RateLimiter(
            c.rate_limit, c.rate_window, origin_limit=c.origin_limit, origin_window=c.origin_window,
            ban_after=c.ban_after, ban_window=c.ban_window, ban_seconds=c.ban_seconds, ban_growth=c.ban_growth,
        )
        self._server = Server(c, self.market, self._limiter, self.faults, self._log)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port: int | None = None

    # --------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` (only while running)."""
        if self.port is None:
            raise RuntimeError("the exchange is not running; call start() or use `with`")
        return f"http://{self.config.host}:{self.port}/v1"

    def start(self) -> Exchange:
        """Start serving; returns when the port is bound. Raises if binding failed."""
        if self._thread is not None:
            return self
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="mdcoord-sim", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent). Open connections are closed."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = self._loop = None
        self.port = None

    def _run(self) -> None:
        _prefer_this_thread()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._bind())
        except BaseException as e:  # reported to start()'s caller
            self._error = e
            loop.close()
            self._ready.set()
            return
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            assert self._runner is not None
            loop.run_until_complete(self._runner.cleanup())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            self._server.close()

    async def _bind(self) -> None:
        # handler_cancellation: a client that gives up (timeout) ends its slow fault at once.
        self._runner = web.AppRunner(self._server.app(), access_log=None, handler_cancellation=True,
                                     shutdown_timeout=0.25)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = site._server  # the bound asyncio server: the only way to learn port 0's port
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def __enter__(self) -> Exchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Exchange:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # ---------------------------------------------------------------- the log
    @property
    def log(self) -> list[RequestRecord]:
        """A snapshot of every request so far, oldest first."""
        return self._log.snapshot()

    def count(self, group: str | None = None, status: int | None = None, path_prefix: str | None = None,
              address: str | None = None) -> int:
        """Number of logged requests matching all given filters (``address``: a client IP)."""
        return self._log.count(group, status, path_prefix, address)

    def max_in_window(self, group: str, window: float = 1.0, statuses: Any = None, address: str | None = None) -> int:
        """Most arrivals of ``group`` within any ``window`` seconds (what the limiter sees;
        ``address``: of one client IP, whose budget it is — every address has its own)."""
        return self._log.max_in_window(group, window, statuses, address)

    def addresses(self) -> set[str]:
        """The client IPs the exchange has logged requests from."""
        return {r.peer[0] for r in self._log.snapshot() if r.peer is not None}

    @property
    def in_progress(self) -> int:
        """Requests being handled now: received and not yet answered, dropped, or abandoned by
        the client (a held ``slow`` fault ends early when the client closes its connection)."""
        return self._server.in_progress

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "the condition") -> None:
        """Block until ``predicate()`` holds (polled every few ms); :class:`TimeoutError` naming
        ``what`` if it does not within ``timeout`` seconds.

        For tests that wait for something to happen at the exchange instead of sleeping for a
        guessed time; the timeout is generous, so only a hung test reaches it. ::

            ex.wait_for(lambda: ex.count(status=200) >= 6, what="six answers")
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what} did not hold within {timeout:g} s")
            time.sleep(0.005)

    def clear_log(self) -> None:
        self._log.clear()

    # ---------------------------------------------------------- the WebSocket
    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:PORT/websocket/v1`` (only while running)."""
        if self.port is None:
            raise RuntimeError("the exchange is not running; call start() or use `with`")
        return f"ws://{self.config.host}:{self.port}/websocket/v1"

    @property
    def ws_faults(self) -> WsFaults:
        """WebSocket faults: ``ex.ws_faults.inject("drop" | "stall" | "malformed", after=frames)``."""
        return self._server.ws.faults

    def ws_open(self) -> int:
        """WebSocket connections open now (a client that stopped has none left)."""
        return len(self._server.ws.open)

    def ws_frames_sent(self) -> int:
        """Data frames sent over every WebSocket connection so far."""
        return self._server.ws.frames_sent

    # ------------------------------------------------------ events, for tests
    def open_peers(self) -> set[tuple[str, int]]:
        """The clients' ``(host, port)`` of every connection the server still holds open. A
        connection a client has closed stays here until the server has read all it was sent."""
        loop, runner = self._loop, self._runner
        if loop is None or runner is None or runner.server is None:
            return set()
        handlers = runner.server

        async def peers() -> set[tuple[str, int]]:
            found = set()
            for handler in handlers.connections:
                peer = handler.transport.get_extra_info("peername") if handler.transport is not None else None
                if peer:
                    found.add((str(peer[0]), int(peer[1])))
            return found

        return asyncio.run_coroutine_threadsafe(peers(), loop).result(timeout=30)

    def reset_rate_limits(self) -> None:
        """Forget arrivals and lift any ban, of every client address."""
        self._limiter.reset()


def _prefer_this_thread() -> None:
    """Schedule the exchange's thread ahead of the processes around it, where allowed.

    The exchange's clock is the moment its loop handles a request. When every CPU is busy (the
    test suite beside another copy of itself, on two cores), a starved loop handles a queue of
    requests at once and stamps them closer together than they arrived: the exchange's log then
    shows 11 in a second that left 1 s + the limiter's margin apart (seen once in six suite
    runs). Linux lets root (or CAP_SYS_NICE) give one thread a higher priority; elsewhere, or
    when not allowed, nothing changes. Threads this one starts inherit it.
    """
    if not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)
    except OSError:
        pass
