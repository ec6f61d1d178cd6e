"""One fresh process of ``bench_firstcall``: ``python -m benchmarks._firstcall_worker SPEC``.

SPEC is JSON: ``base_url``, ``mode`` (``nocache``: ``cache=False``; ``cache``: the default
``cache=True``, each call into its own empty ``cache_dir`` under ``tmp``; ``naive``: a sequential
``requests`` loop instead of mdcoord), ``count``, ``pause_s`` (between the two calls) and ``tmp``.

It times ``import mdcoord`` (nothing but the standard library is imported before it), then two
identical calls in this process — the *first* and the *warm* one — and prints one JSON line:
the import time, each call's wall time and its ``time.monotonic()`` start and end (one clock for
every process of the host; the exchange's log uses it too, so the parent counts each call's
requests there), and the parts of each call.

**The parts** come from timestamps taken around a few of mdcoord's own methods, wrapped here, in
this benchmark process only (never in the library): the runtime's loop start, the session's
creation, every GET (``Transport.get``), the candle job's head, cache loads and writes, and the
aggregation. A method that moved is skipped: the parts are extras, the wall times are the
benchmark.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EVENTS: list[tuple[float, str]] = []


def _mark(label: str) -> None:
    EVENTS.append((time.perf_counter(), label))


def _wrap(owner: Any, name: str, label: str) -> None:
    """Record ``label>`` and ``label<`` around ``owner.name`` (sync or async)."""
    import inspect

    fn = getattr(owner, name, None)
    if fn is None:
        return
    if inspect.iscoroutinefunction(fn):
        async def wrapped_async(*a: Any, **k: Any) -> Any:
            _mark(label + ">")
            try:
                return await fn(*a, **k)
            finally:
                _mark(label + "<")

        setattr(owner, name, wrapped_async)
    else:
        def wrapped(*a: Any, **k: Any) -> Any:
            _mark(label + ">")
            try:
                return fn(*a, **k)
            finally:
                _mark(label + "<")

        setattr(owner, name, wrapped)


def instrument() -> None:
    from mdcoord import _candles, _runtime, _transport

    loop_prop = _runtime.Runtime.loop

    def loop(self: Any) -> Any:
        if self._loop is None:  # starting the thread: time it
            _mark("loop>")
            out = loop_prop.fget(self)
            _mark("loop<")
            return out
        return loop_prop.fget(self)

    _runtime.Runtime.loop = property(loop)  # type: ignore[method-assign,assignment]
    get_session = _transport.Transport._get_session

    def session(self: Any) -> Any:
        if self._session is None:
            _mark("session>")
            out = get_session(self)
            _mark("session<")
            return out
        return get_session(self)

    _transport.Transport._get_session = session  # type: ignore[method-assign]
    _wrap(_transport.Transport, "get", "get")
    for name, label in (("head", "head"), ("load", "load"), ("write", "write"), ("assemble", "assemble")):
        _wrap(_candles.CandleJob, name, label)


def _spans(events: list[tuple[float, str]], label: str) -> list[tuple[float, float]]:
    opened: list[float] = []
    out = []
    for t, e in events:
        if e == label + ">":
            opened.append(t)
        elif e == label + "<" and opened:
            out.append((opened.pop(0), t))
    return out


def parts(events: list[tuple[float, str]], t0: float, t1: float) -> dict[str, float]:
    """Seconds of one call by part, from its events (``t0``/``t1``: the call's start and end)."""
    gets, heads = _spans(events, "get"), _spans(events, "head")
    writes, loads, asm = _spans(events, "write"), _spans(events, "load"), _spans(events, "assemble")
    out: dict[str, float] = {"wall": t1 - t0}
    for name in ("loop", "session"):
        s = _spans(events, name)
        out[name + "_start"] = sum(b - a for a, b in s)
    if gets:
        out["to_first_send"] = gets[0][0] - t0  # option checks, loop thread, client, limiter, budget
    # the head's GET, if it sent one (it does not when the exchange's clock already tells "now")
    head_end = heads[0][1] if heads else t0
    head_get = next((g for g in gets if heads and heads[0][0] <= g[0] <= head_end), None)
    out["head_trip"] = head_get[1] - head_get[0] if head_get else 0.0
    out["head_cache_write"] = sum(b - a for a, b in writes if a < head_end)
    out["cache_load"] = sum(b - a for a, b in loads)
    page_gets = [g for g in gets if g[0] >= head_end]
    if page_gets:
        out["head_to_pages"] = page_gets[0][0] - (head_get[1] if head_get else head_end)
        out["pages"] = max(b for _, b in page_gets) - page_gets[0][0]
    last = max((b for _, b in gets), default=t0)
    out["final_cache_write"] = sum(b - a for a, b in writes if a >= last)
    out["assemble"] = sum(b - a for a, b in asm)
    out["hand_back"] = t1 - (asm[-1][1] if asm else last)
    return {k: round(v, 5) for k, v in out.items()}


def naive(base_url: str, count: int) -> Callable[[], int]:
    """A sequential ``requests`` loop as a user writes it: pages of 200 back from the newest."""
    import requests

    session = requests.Session()

    def run() -> int:
        rows: list[dict[str, Any]] = []
        params: dict[str, Any] = {"market": "KRW-BTC", "count": 200}
        while len(rows) < count:
            page = session.get(f"{base_url}/candles/minutes/1", params=params, timeout=30).json()
            if not page:
                break
            rows += page
            params["to"] = page[-1]["candle_date_time_utc"]
        return len(rows)

    return run


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    t = time.perf_counter()
    import mdcoord

    import_s = time.perf_counter() - t
    mode, count = spec["mode"], spec["count"]
    if mode == "naive":
        call = naive(spec["base_url"], count)
    else:
        instrument()
        calls = iter(("first", "warm"))

        def call() -> int:
            opts: dict[str, Any] = {"cache": False} if mode == "nocache" else {
                "cache_dir": str(Path(spec["tmp"], next(calls)))}  # each call an empty cache
            return len(mdcoord.candles("KRW-BTC", "1m", count=count, base_url=spec["base_url"], progress=False,
                                       **opts))

    out: dict[str, Any] = {"import_s": import_s, "mdcoord": mdcoord.__file__, "threads_after_import":
                           threading.active_count()}
    for name in ("first", "warm"):
        EVENTS.clear()
        if name == "warm":
            time.sleep(spec["pause_s"])
        m0, t0 = time.monotonic(), time.perf_counter()
        rows = call()
        t1, m1 = time.perf_counter(), time.monotonic()
        out[name] = {"wall_s": t1 - t0, "began": m0, "ended": m1, "rows": rows,
                     "parts": parts(list(EVENTS), t0, t1) if mode != "naive" else {}}
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
