"""Progress display: requests done / planned, rows, retries and rate-limit waits.

Shown by default only where a person is watching: a Jupyter kernel (an ipywidgets bar via
``tqdm.auto`` when ipywidgets is installed, a text bar otherwise) or a terminal (stderr is a TTY).
``progress=True`` forces it, ``progress=False`` silences it.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress", "in_notebook"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not a plain IPython terminal)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _bar_class(notebook: bool) -> Any:
    if notebook:
        try:
            import ipywidgets  # noqa: F401

            from tqdm.auto import tqdm

            return tqdm
        except ImportError:
            pass
    from tqdm.std import tqdm

    return tqdm


class Progress:
    """A progress bar over API requests whose total may grow (follow-up rounds)."""

    def __init__(self, enabled: bool | None, desc: str, unit: str = "req") -> None:
        self._notebook = in_notebook()
        self.enabled = enabled if enabled is not None else (self._notebook or _stderr_is_tty())
        self._desc = desc
        self._unit = unit
        self._bar: Any = None
        self.rows = 0

    def add_total(self, n: int) -> None:
        if not self.enabled or not n:
            return
        if self._bar is None:  # created on the first planned piece, so it never shows "0 of ?"
            self._bar = _bar_class(self._notebook)(total=n, desc=self._desc, unit=self._unit, dynamic_ncols=True)
        else:
            self._bar.total += n
            self._bar.refresh()

    def advance(self, rows: int, stats: Any) -> None:
        """One request answered, with ``rows`` more: the call's figures in the postfix."""
        self.tick(rows, retries=stats.retries, **{"429s": stats.rate_limited}, waited=f"{stats.limiter_wait_s:.1f}s",
                  **({"others": f"{stats.budget_wait_s:.1f}s"} if stats.budget_wait_s else {}))

    def tick(self, rows: int, **postfix: Any) -> None:
        """One unit done (a request, a backfill's task), with ``rows`` more and ``postfix``."""
        self.rows += rows
        if self._bar is not None:
            self._bar.set_postfix(rows=self.rows, **postfix, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
