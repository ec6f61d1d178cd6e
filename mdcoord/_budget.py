"""The machine's rate budget: one sliding-window log per (exchange host, group), shared by every
process of this machine through a small file.

Upbit counts requests per IP address, so the budget belongs to the machine (and to every host
behind its address), not to one process. :class:`FileRing` keeps the send times of a group's
recent requests in a fixed-size file (a ring of ``SLOTS`` records) and grants a new request
only when fewer than ``allowed`` of them lie within the last ``span`` seconds — the same rule as
:class:`~mdcoord._limiter.SlidingWindowLimiter`, with the log moved to where every process sees
it.

Why it is safe when processes die (SIGKILL at any point):

* The file is only read and written under ``fcntl.flock``; the kernel drops a dead process's
  lock at once, so a process killed while holding it blocks nobody.
* A grant is written as a *reservation* (``PENDING``, with the owner's pid) before the request
  leaves, and turned into a send time (``SENT``) by :meth:`FileRing.mark_sending` the moment
  aiohttp reports the request's headers written (the client's ``on_sent``; an attempt that ends
  without it is marked then, as sent, the way the in-process limiter counts it). A reservation
  counts as "now" while its owner lives (it may send at any moment); a dead owner's counts for
  nothing (it died before its request was reported on the wire: only the microseconds between
  writing the headers and that report are not covered); a live owner's is dropped after
  ``LEASE_S``, and a send marked later is counted anew. A killed process thus holds a slot for
  at most one window.
* Times are ``CLOCK_MONOTONIC`` nanoseconds: one clock for every process of the host, immune
  to wall-clock steps.

The records are 24 bytes (``<qqii``: time ns, lease end ns, pid, state); the file is created
with its full size, so a reader never sees half a ring.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._exceptions import InvalidRequestError

__all__ = ["SLOTS", "FileRing", "Reservation", "default_budget_dir"]

SLOTS = 64  # records kept per group: enough for any rate_limit up to 64 a span
LEASE_S = 5.0  # a reservation of a live process counts as "now" for at most this long
_RECORD = struct.Struct("<qqii")
_MAGIC = b"MDCB0001"
FREE, PENDING, SENT = 0, 1, 2


def default_budget_dir() -> Path:
    """Where the machine's budget files live: ``MDCOORD_BUDGET_DIR``, else one folder in the
    system's temporary directory shared by every user (the IP's budget is every user's)."""
    env = os.environ.get("MDCOORD_BUDGET_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / "mdcoord-budget"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@dataclass(frozen=True)
class Reservation:
    """A granted slot: its index in the ring and the time written there (to recognise it)."""

    slot: int
    stamp: int


class FileRing:
    """At most ``allowed`` request starts in any ``span`` seconds, for every process that opens
    the same file.

    >>> ring = FileRing(default_budget_dir(), "api.upbit.com", "candles")  # doctest: +SKIP
    >>> wait, res = ring.try_acquire(allowed=10, span=1.05)  # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike[str], host: str, group: str, *,
                 clock: Callable[[], int] = time.monotonic_ns,
                 alive: Callable[[int], bool] = _alive) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{host}__{group}")
        self.path = Path(directory) / f"{safe}.ring"
        self._clock = clock
        self._alive = alive
        self._pid = os.getpid()
        self._fd = -1
        self._fd_pid = -1

    # ------------------------------------------------------------------ the file
    def _open(self) -> int:
        if self._fd >= 0 and self._fd_pid == os.getpid():
            return self._fd
        # (a forked child must not share the parent's descriptor: flock locks belong to the
        # open file description, so parent and child would hold one lock between them)
        self._pid = os.getpid()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.path.parent, 0o1777)  # every user of the machine shares the IP
        except OSError:
            pass
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        with _Locked(fd):
            head = os.pread(fd, len(_MAGIC), 0)
            if head != _MAGIC:  # new (or foreign) file: lay out a full ring at once
                os.pwrite(fd, _MAGIC + bytes(_RECORD.size * SLOTS), 0)
        self._fd, self._fd_pid = fd, self._pid
        return fd

    def close(self) -> None:
        if self._fd >= 0 and self._fd_pid == os.getpid():
            os.close(self._fd)
        self._fd = -1

    def _read(self, fd: int) -> list[tuple[int, int, int, int]]:
        raw = os.pread(fd, _RECORD.size * SLOTS, len(_MAGIC))
        if len(raw) != _RECORD.size * SLOTS:
            raw = raw.ljust(_RECORD.size * SLOTS, b"\0")
        return [_RECORD.unpack_from(raw, i * _RECORD.size) for i in range(SLOTS)]

    def _write(self, fd: int, slot: int, record: tuple[int, int, int, int]) -> None:
        os.pwrite(fd, _RECORD.pack(*record), len(_MAGIC) + slot * _RECORD.size)

    # ------------------------------------------------------------------ the rule
    def _effective(self, rec: tuple[int, int, int, int], now: int) -> int | None:
        """The time a record counts at, or None when it counts for nothing."""
        t, lease_end, pid, state = rec
        if state == SENT:
            return t
        if state == PENDING and now < lease_end and self._alive(pid):
            return now
        return None  # free, or a reservation whose owner died (it never sent) or overstayed

    def try_acquire(self, allowed: int, span: float) -> tuple[float, Reservation | None]:
        """Take a slot if ``allowed`` permits it now: ``(0.0, reservation)``; otherwise
        ``(seconds to wait, None)``."""
        if not 1 <= allowed <= SLOTS or span <= 0:
            raise InvalidRequestError(f"the machine budget needs 1 <= allowed <= {SLOTS} and span > 0")
        fd = self._open()
        span_ns = int(span * 1e9)
        with _Locked(fd):
            now = self._clock()
            records = self._read(fd)
            times = sorted(t for r in records if (t := self._effective(r, now)) is not None and t > now - span_ns)
            if len(times) >= allowed:
                return max(1e-4, (times[-allowed] + span_ns - now) / 1e9), None
            slot = self._spare(records, now)
            self._write(fd, slot, (now, now + int(LEASE_S * 1e9), self._pid, PENDING))
            return 0.0, Reservation(slot, now)

    def mark_sending(self, res: Reservation) -> None:
        """The request of ``res`` leaves now: its record becomes a send at this moment. Call it
        just *before* writing the request, so that a process killed after this call is counted
        and one killed before it never sent."""
        fd = self._open()
        with _Locked(fd):
            t, lease_end, pid, state = self._read_one(fd, res.slot)
            now = self._clock()
            if (t, pid, state) == (res.stamp, self._pid, PENDING):
                self._write(fd, res.slot, (max(now, t), 0, self._pid, SENT))
            else:  # the lease ran out and the slot went to another: count this send anew
                self._record_send(fd, now)

    def release(self, res: Reservation) -> None:
        """Give a reservation back unsent (the call was cancelled before the request left)."""
        fd = self._open()
        with _Locked(fd):
            t, _, pid, state = self._read_one(fd, res.slot)
            if (t, pid, state) == (res.stamp, self._pid, PENDING):
                self._write(fd, res.slot, (0, 0, 0, FREE))

    def record_send(self) -> None:
        """Count a request that left without a reservation (a transport-level resend)."""
        fd = self._open()
        with _Locked(fd):
            self._record_send(fd, self._clock())

    def _record_send(self, fd: int, now: int) -> None:
        self._write(fd, self._spare(self._read(fd), now), (now, 0, self._pid, SENT))

    def _spare(self, records: list[tuple[int, int, int, int]], now: int) -> int:
        """The record to reuse: one that counts for nothing, else the oldest send (with at most
        ``allowed <= SLOTS`` counting in a span, the oldest of ``SLOTS`` is outside it)."""
        def weight(i: int) -> int:
            e = self._effective(records[i], now)
            return -1 if e is None else e
        return min(range(SLOTS), key=weight)

    def _read_one(self, fd: int, slot: int) -> tuple[int, int, int, int]:
        return _RECORD.unpack(os.pread(fd, _RECORD.size, len(_MAGIC) + slot * _RECORD.size))

    def sends(self) -> list[int]:
        """Send times (monotonic ns) in the ring, oldest first: for tests and metrics."""
        fd = self._open()
        with _Locked(fd):
            return sorted(t for t, _, _, s in self._read(fd) if s == SENT)


class _Locked:
    """``flock`` held for a ``with`` block; the kernel drops it if the process dies."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
