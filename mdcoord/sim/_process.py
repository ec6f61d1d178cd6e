"""``ExchangeProcess``: the embedded exchange in a process of its own, queried through a pipe.

:class:`~mdcoord.sim.Exchange` serves from a thread of the caller's process. That is right for
most tests (one process, nothing to start), but its clock is the moment its loop handles a
request, and that loop shares the caller's interpreter lock. When the caller is busy too — a
Dask scheduler and client in the same process, with four worker processes on two cores — the
loop handles a queue of requests late and at once, stamps them closer together than they
arrived, and the strict limiter answers 429 to a client that kept its distance. Upbit is never
in your process; this puts the embedded exchange out of it as well, so its log measures the
clients and not the measuring process.

The proxy answers the same questions as ``Exchange`` (``base_url``, ``log``, ``count``,
``max_in_window``, ``addresses``, ``clear_log``, ``reset_rate_limits``, ``wait_for``,
``inject``), each a round trip over the pipe. ``market`` is a model built here from the same
config: the same seed and ``now`` give the same candles and trades, so it reads the truth
without a round trip (with a frozen clock exactly; a running clock starts a moment apart).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ._config import SimConfig
from ._log import RequestRecord
from ._market import SyntheticMarket

__all__ = ["ExchangeProcess"]

_QUERIES = {"log", "count", "max_in_window", "addresses", "clear_log", "reset_rate_limits", "in_progress"}


def _serve(conn: Any, config: SimConfig) -> None:
    """The child: serve, answer the parent's questions, stop when asked or when the parent is gone."""
    from ._exchange import Exchange

    try:  # the exchange's whole process ahead of the clients', where allowed (see _prefer_this_thread)
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except (OSError, AttributeError):
        pass
    try:
        ex = Exchange(config).start()
    except BaseException as e:
        conn.send(("err", f"{type(e).__name__}: {e}"))
        return
    with ex:
        conn.send(("ok", ex.port))
        while True:
            try:
                name, args, kwargs = conn.recv()
            except EOFError:  # the parent died: nobody to serve
                return
            if name == "stop":
                conn.send(("ok", None))
                return
            try:
                if name == "inject":
                    value: Any = ex.faults.inject(*args, **kwargs)
                elif name == "inject_ws":
                    value = ex.ws_faults.inject(*args, **kwargs)
                else:
                    attr = getattr(ex, name)
                    value = attr(*args, **kwargs) if callable(attr) else attr
                conn.send(("ok", value))
            except Exception as e:  # noqa: BLE001 - the parent raises it
                conn.send(("err", f"{type(e).__name__}: {e}"))


class ExchangeProcess:
    """The embedded exchange in a child process (``spawn``), started by ``with`` or ``start()``.

    ::

        with ExchangeProcess(SimConfig(seed=7, now="2026-11-24T12:00:00Z", frozen=True)) as ex:
            ...  # run clients against ex.base_url
            assert ex.max_in_window("candles", address="127.0.0.2") <= 10
    """

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        self.config = replace(config or SimConfig(), **overrides)
        c = self.config
        self.market = SyntheticMarket(c.seed, now=c.now, frozen=c.frozen, seconds_horizon_days=c.seconds_horizon_days,
                                      cache_bytes=c.cache_mb * 2**20)
        self.port: int | None = None
        self._proc: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()  # one question on the pipe at a time

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the exchange is not running; call start() or use `with`")
        return f"http://{self.config.host}:{self.port}/v1"

    def start(self) -> ExchangeProcess:
        if self._proc is not None:
            return self
        ctx = mp.get_context("spawn")  # never fork a process that runs threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.config), name="mdcoord-sim", daemon=True)
        self._proc.start()
        child.close()
        status, value = self._conn.recv()
        if status != "ok":
            self._proc.join()
            self._proc = None
            raise OSError(f"the exchange process could not start: {value}")
        self.port = int(value)
        return self

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            self._ask("stop")
        except (EOFError, OSError):
            pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()
        self._proc = self._conn = None
        self.port = None

    def __enter__(self) -> ExchangeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ask(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self._conn is None:
            raise RuntimeError("the exchange is not running; call start() or use `with`")
        with self._lock:
            self._conn.send((name, args, kwargs))
            status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"the exchange process answered {name}(): {value}")
        return value

    # the questions Exchange answers, asked over the pipe
    @property
    def log(self) -> list[RequestRecord]:
        result: list[RequestRecord] = self._ask("log")
        return result

    @property
    def in_progress(self) -> int:
        return int(self._ask("in_progress"))

    def count(self, group: str | None = None, status: int | None = None, path_prefix: str | None = None,
              address: str | None = None) -> int:
        return int(self._ask("count", group, status, path_prefix, address))

    def max_in_window(self, group: str, window: float = 1.0, statuses: Any = None, address: str | None = None) -> int:
        return int(self._ask("max_in_window", group, window, statuses, address))

    def addresses(self) -> set[str]:
        result: set[str] = self._ask("addresses")
        return result

    def clear_log(self) -> None:
        self._ask("clear_log")

    def reset_rate_limits(self) -> None:
        self._ask("reset_rate_limits")

    def inject(self, kind: str, *args: Any, **kwargs: Any) -> None:
        """``ex.faults.inject(kind, ...)``, in the child."""
        self._ask("inject", kind, *args, **kwargs)

    def inject_ws(self, kind: str, *args: Any, **kwargs: Any) -> None:
        """``ex.ws_faults.inject(kind, ...)``, in the child."""
        self._ask("inject_ws", kind, *args, **kwargs)

    def ws_open(self) -> int:
        return int(self._ask("ws_open"))

    @property
    def ws_url(self) -> str:
        return self.base_url.removesuffix("/v1").replace("http://", "ws://", 1) + "/websocket/v1"

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "the condition") -> None:
        """As :meth:`Exchange.wait_for` (the predicate runs here; it may ask the child)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what} did not hold within {timeout:g} s")
            time.sleep(0.01)
