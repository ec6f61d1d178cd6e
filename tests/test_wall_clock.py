"""Library code never reads this machine's wall clock for market time (issue 11, item 1).

Market time — now, the forming candle, history floors, settling margins, retention windows, even
the ``fetched_at`` of the metadata — comes from the exchange's ``Date`` header
(``mdcoord._servertime.ServerClock``). Durations and timeouts use a monotonic clock
(``time.monotonic``/``perf_counter``), which tells how long, never what time it is. This test
reads every module of the library (not the embedded exchange, whose clock *is* the exchange's,
nor the tests) and fails on any call that reads the wall clock.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "mdcoord"

# (object, attribute) calls that read the wall clock. ``Timestamp("now")`` and friends are
# checked separately (a string argument).
_WALL_CLOCK = {
    ("time", "time"), ("time", "time_ns"), ("time", "localtime"), ("time", "gmtime"), ("time", "ctime"),
    ("time", "asctime"), ("time", "strftime"),
    ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
    ("Timestamp", "now"), ("Timestamp", "utcnow"), ("Timestamp", "today"),
}
_NOW_WORDS = {"now", "today", "yesterday", "tomorrow"}
_NOW_FACTORIES = {"Timestamp", "to_datetime", "datetime64", "DatetimeIndex"}


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def wall_clock_reads(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` of every wall-clock read in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and (_name(node.value), node.attr) in _WALL_CLOCK:
            found.append((node.lineno, f"{_name(node.value)}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            for alias in node.names:  # `from time import time` would hide the read below
                if (node.module, alias.name) in _WALL_CLOCK:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
        elif isinstance(node, ast.Call) and _name(node.func) in _NOW_FACTORIES:
            for arg in node.args[:1]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.strip().lower() in _NOW_WORDS:
                    found.append((node.lineno, f"{_name(node.func)}({arg.value!r})"))
    return found


def _library_files() -> list[Path]:
    return sorted(p for p in LIBRARY.rglob("*.py") if "sim" not in p.relative_to(LIBRARY).parts)


def test_no_library_module_reads_the_wall_clock() -> None:
    offenders = [
        f"{path.relative_to(LIBRARY.parent)}:{line}: {what}"
        for path in _library_files()
        for line, what in wall_clock_reads(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "library code reads this machine's wall clock:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "source",
    [
        "import time\nt = time.time()",
        "import pandas as pd\nnow = pd.Timestamp.now(tz='UTC')",
        "from datetime import datetime, timezone\nx = datetime.now(timezone.utc)",
        "import datetime as dt\nd = dt.date.today()",
        "import pandas as pd\nx = pd.Timestamp('now')",
        "import numpy as np\nx = np.datetime64('today')",
        "from time import time\n",
    ],
)
def test_the_check_finds_each_kind_of_read(source: str) -> None:
    """The check can fail: each way of reading the wall clock is found."""
    assert wall_clock_reads(source)


def test_monotonic_clocks_and_constants_pass() -> None:
    assert not wall_clock_reads(
        "import time\nimport pandas as pd\nt = time.monotonic()\np = time.perf_counter()\n"
        "x = pd.Timestamp('2017-09-01', tz='UTC')\n"
    )
