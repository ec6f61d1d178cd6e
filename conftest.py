"""The test session never touches the user's real directories (tests/ and the nbval notebooks).

At session start, before any fixture or notebook kernel runs, every directory the library and
the notebook stack would write to is pointed into one temporary sandbox through **environment
variables**, so subprocesses (the CLI tests, the notebooks' kernels) inherit it too;
``set_options(cache_dir=...)`` alone would not reach them. At the end the session fails if the
user's real mdcoord cache directory changed all the same.

It lives at the repository root so that it covers both ``testpaths`` of pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from mdcoord._config import CACHE_DIR_ENV, resolve_cache_dir

SANDBOX_ENV = "MDCOORD_TEST_SANDBOX"  # where the session's directories live (tests/test_isolation.py)

# Each variable names a directory something in the library or the notebook stack writes to.
_SANDBOXED = {
    CACHE_DIR_ENV: "mdcoord-cache",  # mdcoord's cache (mdcoord._config.resolve_cache_dir)
    "MDCOORD_BUDGET_DIR": "mdcoord-budget",  # the machine's rate budget (mdcoord._budget)
    "XDG_CACHE_HOME": "xdg-cache",  # platformdirs' user cache dir: the default when the above is unset
    "IPYTHONDIR": "ipython",  # IPython's profile and history (nbval's kernels)
    "MPLCONFIGDIR": "matplotlib",  # matplotlib's font cache (df.mdc.plot)
    "JUPYTER_RUNTIME_DIR": "jupyter-runtime",  # the kernels' connection files
}

_ORIGINAL = pytest.StashKey[dict[str, str | None]]()
_SNAPSHOT = pytest.StashKey[tuple[Path, dict[str, tuple[int, int]] | None]]()


def _listing(root: Path) -> dict[str, tuple[int, int]] | None:
    """Every entry below ``root`` with its size and mtime; None when ``root`` does not exist."""
    if not root.exists():
        return None
    found: dict[str, tuple[int, int]] = {}
    for path in root.rglob("*"):
        try:
            st = path.lstat()
        except FileNotFoundError:  # removed while we looked: it is simply not there
            continue
        found[str(path.relative_to(root))] = (st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return found


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker inherits the controller's sandbox
        return
    real = resolve_cache_dir()  # what the user's own calls would use, before we redirect it
    config.stash[_SNAPSHOT] = (real, _listing(real))
    sandbox = Path(tempfile.mkdtemp(prefix="mdcoord-tests-")).resolve()
    config.stash[_ORIGINAL] = {name: os.environ.get(name) for name in (*_SANDBOXED, SANDBOX_ENV)}
    os.environ[SANDBOX_ENV] = str(sandbox)
    for name, sub in _SANDBOXED.items():
        (sandbox / sub).mkdir()
        os.environ[name] = str(sandbox / sub)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SNAPSHOT not in session.config.stash:
        return
    real, before = session.config.stash[_SNAPSHOT]
    after = _listing(real)
    if after == before:
        return
    changed = sorted(set(before or {}) ^ set(after or {})) or sorted(
        k for k in (after or {}) if (before or {}).get(k) != (after or {}).get(k)
    )
    message = (
        f"the test session changed the user's real mdcoord cache directory {real} "
        f"(tests must use the sandbox in ${SANDBOX_ENV}): {', '.join(changed[:5]) or real}; if no test of "
        f"this session wrote there, another process did (e.g. a test session on code without this conftest)"
    )
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"ERROR: {message}", red=True, bold=True)
    else:
        print(f"ERROR: {message}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    original = config.stash.get(_ORIGINAL, None)
    if original is None:
        return
    sandbox = os.environ.get(SANDBOX_ENV)
    for name, value in original.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if sandbox:
        shutil.rmtree(sandbox, ignore_errors=True)
