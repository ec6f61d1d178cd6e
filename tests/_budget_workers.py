"""What the worker processes of tests/test_budget_launchers.py run.

A module of its own, importing only mdcoord: spawn, loky and Dask start fresh interpreters that
import a task's function by name, so it cannot live in a test module (that would import pytest
and the conftest in every worker).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import mdcoord
from mdcoord._budget import default_budget_dir

BARRIER_TIMEOUT_S = 120.0  # only a launcher that does not run the workers side by side waits this long


def arrive_and_wait(directory: str, name: str, parties: int) -> None:
    """A barrier across processes of any launcher: a file per arrival in ``directory``, then
    wait until ``parties`` have arrived, so the workers start fetching together (and a launcher
    that runs them one after another fails instead of passing without contention)."""
    folder = Path(directory)
    (folder / f"{name}.{os.getpid()}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while len(list(folder.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(folder.iterdir()))} of {parties} workers ran side by side")
        time.sleep(0.005)


def fetch(market: str, start: str, end: str, base_url: str, rate_margin: float,
          barrier: str, parties: int, rate_budget: str | None = None) -> dict[str, Any]:
    """Fetch ``market``'s 1m candles of ``[start, end)`` at the default settings (the rate
    budget too, unless ``rate_budget`` is given), after every worker arrived at ``barrier``.

    Before the barrier, the worker fetches the latest candle: what a first call does once per
    process and exchange (imports, the session, learning the exchange's clock) is then behind
    it, so the workers' pages really leave together, however long a launcher takes to start.
    Options are per call: ``set_options`` of the parent does not reach another process. A
    library error is returned, not raised, so that a control run can report what it provoked."""
    options = {"base_url": base_url, "rate_margin": rate_margin, "cache": False, "progress": False,
               **({} if rate_budget is None else {"rate_budget": rate_budget})}
    try:
        try:
            mdcoord.candles(market, "1m", count=1, **options)
        finally:
            arrive_and_wait(barrier, market, parties)  # even after an error: the others wait for us
        df = mdcoord.candles(market, "1m", start=start, end=end, **options)
    except mdcoord.MdcoordError as e:
        return {"market": market, "pid": os.getpid(), "error": f"{type(e).__name__}: {e}"}
    return {"market": market, "pid": os.getpid(), "error": None, "frame": df, "budget_dir": str(default_budget_dir())}
