"""The suite never touches the user's real directories (the root conftest.py's sandbox)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mdcoord
from mdcoord._config import resolve_cache_dir

ROOT = Path(__file__).resolve().parents[1]


def _sandbox() -> Path:
    value = os.environ.get("MDCOORD_TEST_SANDBOX")
    assert value, "the root conftest.py did not set up the session's sandbox"
    return Path(value)


def test_the_library_caches_inside_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = _sandbox()
    assert resolve_cache_dir().is_relative_to(sandbox)
    assert mdcoord.cache.directory().is_relative_to(sandbox)
    monkeypatch.delenv("MDCOORD_CACHE_DIR")  # the OS default (platformdirs) is sandboxed too
    assert resolve_cache_dir().is_relative_to(sandbox)
    for name in ("IPYTHONDIR", "MPLCONFIGDIR", "JUPYTER_RUNTIME_DIR"):
        assert Path(os.environ[name]).is_relative_to(sandbox)


def test_a_subprocess_sees_the_same_cache_directory() -> None:
    out = subprocess.run([sys.executable, "-m", "mdcoord", "cache", "info"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert f"cache directory: {resolve_cache_dir()}" in out.stdout.splitlines()


def test_a_session_that_writes_to_the_real_cache_fails(tmp_path: Path) -> None:
    """An inner session whose "real" cache is ``tmp_path/real`` and whose test writes there fails,
    naming the directory (that a session which leaves it alone passes, this very suite shows)."""
    real = tmp_path / "real"
    inner = tmp_path / "inner"
    inner.mkdir()
    shutil.copy(ROOT / "conftest.py", inner / "conftest.py")
    (inner / "test_writes.py").write_text(
        "import os, pathlib\n"
        "def test_writes():\n"
        "    (pathlib.Path(os.environ['REAL_DIR']) / 'KRW-BTC').mkdir(parents=True)\n"
    )
    env = {**os.environ, "MDCOORD_CACHE_DIR": str(real), "REAL_DIR": str(real), "PYTHONPATH": str(ROOT)}
    bad = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:nbval", str(inner)],
                         capture_output=True, text=True, timeout=60, cwd=inner, env=env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "changed the user's real mdcoord cache directory" in bad.stdout and str(real) in bad.stdout
