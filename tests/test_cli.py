"""The README's quick-start command, run as a user would (offline, a subprocess)."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_offline_and_prints_head_tail_and_metadata() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mdcoord", "demo", "--count", "300", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for piece in ("head:", "tail:", "metadata (df.attrs['mdcoord'])", '"data_count": 300', "0 answered 429"):
        assert piece in out.stdout


def test_demo_progress_bar_reports_requests() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mdcoord", "demo", "--count", "500"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "3/3" in out.stderr and "req" in out.stderr  # ceil(501 / 200) pieces, on stderr


def test_errors_are_one_line_and_a_nonzero_exit() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mdcoord", "demo", "--timeframe", "7m", "--quiet"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error: unknown timeframe '7m'") and out.stderr.count("\n") == 1
