"""Points a test can wait for: what the exchange saw, never how long something took.

A shared 2-core machine may run a process ten times slower than usual, so a test that sleeps
"long enough" for something to happen, or kills a process "at a random moment" and counts where
the kills landed, passes or fails with the machine's load. These helpers wait for events instead:

- :func:`wait_quiet`: every request this process has sent is in the exchange's log;
- :func:`kill_at_request`: SIGKILL a worker while the exchange holds its request of a group
  (a ``slow`` fault: the request is logged, its answer never comes);
- :func:`kill_mid_write`: the kernel kills a worker in the middle of writing a file past a size
  (``RLIMIT_FSIZE`` and ``SIGXFSZ``), the moment a non-atomic cache write would be cut short.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from mdcoord.sim import Exchange, RequestRecord

from .holds import hold_after

# The top of every worker script run here: ``die_past(n)`` makes the kernel kill
# the process (no cleanup, like SIGKILL) when it writes any file past ``n`` bytes. Python ignores
# SIGXFSZ (a write would fail with EFBIG instead), so the default action is restored.
DIE_PAST = """
import resource, signal
def die_past(n):
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets process ``pid`` has open (Linux: /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_quiet(ex: Exchange, timeout: float = 60.0) -> None:
    """Wait until every request this process sent is logged: no handler is running and every
    connection this process has closed (a cancelled request's) has been read to its end."""

    def quiet() -> bool:
        if ex.in_progress:
            return False
        mine = local_ports(os.getpid())
        return all(port in mine for _, port in ex.open_peers())

    ex.wait_for(quiet, timeout, what="the exchange done with this process's requests")


def _worker_env() -> dict[str, str]:
    # the worker imports this checkout's mdcoord, and writes no .pyc (a file of its own)
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}


def kill_at_request(ex: Exchange, script: str, args: list[str], group: str, after: int) -> RequestRecord:
    """Run ``script`` until the exchange holds the request of ``group`` that follows ``after``
    others of it, then SIGKILL it; the held request's record (it tells the kill point)."""
    ex.faults.clear()
    ex.clear_log()
    hold_after(ex, after, group, count=1)
    proc = subprocess.Popen([sys.executable, "-c", DIE_PAST + script, *args], env=_worker_env())
    try:
        held = lambda: [r for r in ex.log if r.fault == "slow"]  # noqa: E731
        ex.wait_for(lambda: bool(held()) or proc.poll() is not None, 120, what="the request to kill at")
        assert proc.poll() is None, f"the worker ended (exit {proc.returncode}) before request {after + 1} of {group}"
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
        ex.faults.clear()
    assert proc.returncode == -signal.SIGKILL
    (record,) = held()
    return record


def kill_mid_write(ex: Exchange, script: str, args: list[str]) -> None:
    """Run ``script`` (which calls ``die_past(n)`` where its kill is to strike) until the kernel
    kills it for writing a file past ``n`` bytes."""
    ex.faults.clear()
    ex.clear_log()
    proc = subprocess.run([sys.executable, "-c", DIE_PAST + script, *args], env=_worker_env(), timeout=300)
    assert proc.returncode == -signal.SIGXFSZ, f"the worker was not killed mid-write (exit {proc.returncode})"
