"""The machine's rate budget: one sliding-window log per (exchange host, group), shared by every
process of this machine through a small file, and handed out in turn.

Upbit counts requests per IP address, so the budget belongs to the machine (and to every host
behind its address), not to one process. :class:`FileRing` keeps the send times of a group's
recent requests in a fixed-size file (a ring of ``SLOTS`` records) and grants a new request
only when fewer than ``allowed`` of them lie within the last ``span`` seconds — the same rule as
:class:`~mdcoord._limiter.SlidingWindowLimiter`, with the log moved to where every process sees
it.

**In turn.** A process that finds the window full takes a *ticket* (a numbered record in the
file's queue, with the time by which it promises to look again) and sleeps until the slot its
place in the queue will get frees up. A free slot goes first to the waiting process with the
fewest requests among the ring's records (the machine's last 64), then to the oldest ticket: a
newcomer is served at once, and a process that had the window to itself gives way until the
others catch up. Each process queues one request of a group at a time (:class:`MachineBudget`
does that), which makes the turns round-robin: with eight processes contending, each gets
every eighth slot, whatever its concurrency. A ticket
whose owner died, or did not look again by its promised time (a frozen process, a stalled
loop), is passed over until its owner is back.

Why it is safe when processes die (SIGKILL at any point):

* The file is only read and written under ``fcntl.flock``; the kernel drops a dead process's
  lock at once, so a process killed while holding it blocks nobody. (A flock belongs to the
  open file description, which ``fork()`` shares: a forked child closes its copies of the
  rings' descriptors at once, or a parent's lock would live on in a child that outlives it.)
* A grant is written as a *reservation* (``PENDING``, with the owner's pid) before the request
  leaves, and turned into a send time (``SENT``) by :meth:`FileRing.mark_sending` the moment
  aiohttp reports the request's headers written (the client's ``on_sent``; an attempt that ends
  without it is marked then, as sent, the way the in-process limiter counts it). A reservation
  counts as "now" while its owner lives (it may send at any moment); a dead owner's counts for
  nothing (it died before its request was reported on the wire: only the microseconds between
  writing the headers and that report are not covered). A live owner's counts until it is sent
  or given back, however long the way to the wire takes (a slow connect, TLS, a pool wait),
  bounded only by ``LEASE_S`` (300 s) against a leaked reservation or a reused pid. A killed
  process thus holds a slot for at most one window, and its ticket for none.
* Processes see each other's liveness through their pids: they must share one pid namespace
  (containers sharing the folder but not the pids would take each other's reservations for a
  dead process's).
* Times are ``CLOCK_MONOTONIC`` nanoseconds: one clock for every process of the host, immune
  to wall-clock steps.

The file is created with its full size (a header, the ring, the queue and a table of what each
process got), so a reader never sees half of it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import struct
import tempfile
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ._exceptions import BudgetUnavailableError, InvalidRequestError

__all__ = ["SLOTS", "Budget", "FileRing", "MachineBudget", "Reservation", "Ticket", "TurnBudget", "default_budget_dir"]

SLOTS = 64  # records kept per group: a rate_limit above this is kept in shorter windows
WAITERS = 64  # tickets in the queue (one per waiting process and group; more wait untracked)
PROCS = 64  # processes whose share is kept (the oldest gone one makes room)
LEASE_S = 300.0  # a live process's reservation counts as "now" until sent, given back, or this long
# (far beyond any request's way to the wire: connect_timeout bounds it, 5 s by default; only a
# reservation leaked by a bug, or a dead owner's pid taken by another process, ever reaches it)
GRACE_S = 0.05  # a ticket is passed over when its owner looks again later than promised + this
_VERSION = 3
_MAGIC = b"MDCB%04d" % _VERSION
_HEAD = struct.Struct("<8sq")  # magic, the next ticket number
_SEND = struct.Struct("<qqii")  # time ns, lease end ns, pid, state
_WAIT = struct.Struct("<qqiiq")  # ticket, promised-by ns, pid, its allowed, its span ns
_PROC = struct.Struct("<iiqqq")  # pid, 0, grants, ns waited behind others, last grant ns
_SENDS_AT = _HEAD.size
_WAITS_AT = _SENDS_AT + SLOTS * _SEND.size
_PROCS_AT = _WAITS_AT + WAITERS * _WAIT.size
_SIZE = _PROCS_AT + PROCS * _PROC.size
FREE, PENDING, SENT = 0, 1, 2


def default_budget_dir() -> Path:
    """Where the machine's budget files live: ``MDCOORD_BUDGET_DIR``, else ``/tmp/mdcoord-budget``,
    one folder shared by every user of the machine (the IP's budget is every user's) — not
    ``$TMPDIR``, which is per user on macOS and per job on many batch systems. (A container or
    a service with a private /tmp shares it only if that folder is mounted in:
    set ``MDCOORD_BUDGET_DIR``.)"""
    env = os.environ.get("MDCOORD_BUDGET_DIR")
    if env:
        return Path(env)
    root = Path("/tmp")
    return (root if os.name == "posix" and root.is_dir() else Path(tempfile.gettempdir())) / "mdcoord-budget"


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


@dataclass
class Ticket:
    """A place in the queue: the number drawn and the queue record holding it (None: not queued)."""

    number: int = 0
    index: int = -1
    waited_ns: int = 0  # asked to wait so far (what the process's share table records)


@dataclass(frozen=True)
class Share:
    """What one process got of a group's budget: grants, seconds it waited for others' slots
    (``host``: its host name, for a budget shared by several hosts; empty for the machine's)."""

    pid: int
    grants: int
    waited_s: float
    last_ns: int
    alive: bool
    host: str = ""


class FileRing:
    """At most ``allowed`` request starts in any ``span`` seconds, for every process that opens
    the same file, handed out in turn: first to the waiting process with the fewest of the
    machine's recent requests, then to the one that queued first.

    >>> ring = FileRing(default_budget_dir(), "api.upbit.com", "candles")  # doctest: +SKIP
    >>> wait, res = ring.try_acquire(allowed=10, span=1.05)  # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike[str], host: str, group: str, *,
                 clock: Callable[[], int] = time.monotonic_ns,
                 alive: Callable[[int], bool] = _alive) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{host}__{group}")
        self.path = Path(directory) / f"{safe}.v{_VERSION}.ring"  # (another layout, another file)
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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.chmod(self.path.parent, 0o1777)  # every user of the machine shares the IP
            except OSError:  # not ours: its owner made it
                pass
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:  # another user's file we may not write, a read-only folder...
            raise BudgetUnavailableError(
                f"the machine's rate budget file {self.path} cannot be opened ({exc.strerror}); every "
                f"user of the machine must be able to write it: fix its permissions, or point "
                f"MDCOORD_BUDGET_DIR at a folder all of them can write", address=str(self.path)) from None
        try:
            os.fchmod(fd, 0o666)  # (the umask took write access from the other users)
        except OSError:  # not ours: its owner made it
            pass
        with _Locked(fd):
            head = os.pread(fd, len(_MAGIC), 0)
            if head.strip(b"\0") == b"":  # new: lay out a whole one at once
                os.pwrite(fd, _HEAD.pack(_MAGIC, 1) + bytes(_SIZE - _HEAD.size), 0)
        if head.strip(b"\0") != b"" and head != _MAGIC:
            os.close(fd)
            raise BudgetUnavailableError(
                f"{self.path} is not a rate budget file of this mdcoord version (it starts with "
                f"{head!r}); remove it when no mdcoord process runs", address=str(self.path))
        self._fd, self._fd_pid = fd, self._pid
        _OPEN.add(self)
        return fd

    def close(self) -> None:
        if self._fd >= 0 and self._fd_pid == os.getpid():
            os.close(self._fd)
        self._fd = -1

    def _forget_inherited(self) -> None:
        """In a forked child: close the copy of the parent's descriptor (see the module doc)."""
        if self._fd >= 0 and self._fd_pid != os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1

    def _read(self, fd: int) -> _State:
        raw = os.pread(fd, _SIZE, 0)
        if len(raw) != _SIZE:
            raw = raw.ljust(_SIZE, b"\0")
        return _State(
            next_ticket=_HEAD.unpack_from(raw, 0)[1],
            sends=[_SEND.unpack_from(raw, _SENDS_AT + i * _SEND.size) for i in range(SLOTS)],
            waits=[_WAIT.unpack_from(raw, _WAITS_AT + i * _WAIT.size) for i in range(WAITERS)],
            procs=[_PROC.unpack_from(raw, _PROCS_AT + i * _PROC.size) for i in range(PROCS)],
        )

    def _write(self, fd: int, slot: int, record: tuple[int, int, int, int]) -> None:
        os.pwrite(fd, _SEND.pack(*record), _SENDS_AT + slot * _SEND.size)

    def _write_wait(self, fd: int, index: int, record: tuple[int, int, int, int, int]) -> None:
        os.pwrite(fd, _WAIT.pack(*record), _WAITS_AT + index * _WAIT.size)

    # ------------------------------------------------------------------ the rule
    def _effective(self, rec: tuple[int, int, int, int], now: int) -> int | None:
        """The time a record counts at, or None when it counts for nothing."""
        t, lease_end, pid, state = rec
        if state == SENT:
            return t
        if state == PENDING and now < lease_end and self._alive(pid):
            return now  # it may leave at any moment, however long it takes to get there
        return None  # free, or a reservation whose owner died (it never sent)

    def _live_wait(self, rec: tuple[int, int, int, int, int], now: int) -> bool:
        number, promised, pid, _, _ = rec
        return number > 0 and now <= promised and self._alive(pid)

    def try_acquire(self, allowed: int, span: float, ticket: Ticket | None = None) -> tuple[float, Reservation | None]:
        """Take a slot if ``allowed`` permits it now and no process queued before us waits for
        it: ``(0.0, reservation)``; otherwise ``(seconds to wait, None)``.

        With a ``ticket``, a caller that has to wait joins the queue (or keeps its place) and
        is served in turn; it must call again after the wait, or :meth:`leave`. Without one it
        only ever takes a slot nobody queued for."""
        if allowed < 1 or span <= 0:
            raise InvalidRequestError(f"the machine budget needs allowed >= 1 and span > 0, got {allowed}, {span}")
        if allowed > SLOTS:  # more than the ring holds: the same pace in k shorter windows, which
            k = -(-allowed // SLOTS)  # is stricter (any span is k of them, each holding allowed // k)
            allowed, span = allowed // k, span / k
        fd = self._open()
        span_ns = int(span * 1e9)
        with _Locked(fd):
            now = self._clock()
            state = self._read(fd)
            mine = self._my_number(state, ticket)
            if mine is None and ticket is not None:
                ticket.index = -1  # passed over long enough that our record went to another
            # who goes first: the process with the fewest requests in the ring (the last 64 of
            # the machine's), then the one that queued first — so a newcomer is served at once
            # and a process that had the window to itself gives way until the others catch up
            recent: dict[int, int] = {}
            for r in state.sends:
                if self._effective(r, now) is not None:
                    recent[r[2]] = recent.get(r[2], 0) + 1
            my_key = (recent.get(self._pid, 0), mine if mine is not None else state.next_ticket)
            ahead = [w for i, w in enumerate(state.waits)
                     if self._live_wait(w, now) and not (mine is not None and i == ticket.index)
                     and (recent.get(w[2], 0), w[0]) < my_key]
            # the strictest rule of those ahead holds for us too (a process whose share was cut,
            # or whose margin is wider, would otherwise wait for ever behind a laxer one)
            rule_allowed = min([allowed, *(w[3] for w in ahead if w[3] > 0)])
            rule_span = max([span_ns, *(w[4] for w in ahead)])
            times = sorted(t for r in state.sends if (t := self._effective(r, now)) is not None and t > now - rule_span)
            free = rule_allowed - len(times)
            if free > len(ahead):
                slot = self._spare(state.sends, now)
                self._write(fd, slot, (now, now + int(LEASE_S * 1e9), self._pid, PENDING))
                if ticket is not None:
                    if mine is not None:
                        self._write_wait(fd, ticket.index, (0, 0, 0, 0, 0))
                    self._count_grant(fd, state, now, ticket.waited_ns)
                    ticket.number, ticket.index, ticket.waited_ns = 0, -1, 0
                return 0.0, Reservation(slot, now)
            # our turn comes when the (allowed - ahead)-th newest send leaves the span
            need = rule_allowed - len(ahead)
            wait_ns = (times[-need] + rule_span - now) if 1 <= need <= len(times) else rule_span // rule_allowed
            wait_ns = max(100_000, wait_ns)  # at least 0.1 ms
            if ticket is not None:
                promised = now + wait_ns + int(GRACE_S * 1e9)
                if mine is None:
                    index = self._free_wait(state, now)
                    if index is not None:
                        number = state.next_ticket
                        os.pwrite(fd, _HEAD.pack(_MAGIC, number + 1), 0)
                        ticket.number, ticket.index = number, index
                        self._write_wait(fd, index, (number, promised, self._pid, allowed, span_ns))
                else:
                    self._write_wait(fd, ticket.index, (mine, promised, self._pid, allowed, span_ns))
                ticket.waited_ns += wait_ns
            return wait_ns / 1e9, None

    def leave(self, ticket: Ticket) -> None:
        """Give up a place in the queue (the waiting call was cancelled)."""
        if ticket.index < 0:
            return
        fd = self._open()
        with _Locked(fd):
            if self._my_number(self._read(fd), ticket) is not None:
                self._write_wait(fd, ticket.index, (0, 0, 0, 0, 0))
        ticket.number, ticket.index = 0, -1

    def _my_number(self, state: _State, ticket: Ticket | None) -> int | None:
        """The ticket's number while its queue record is still ours; None when not queued (or
        the record was given to another after we were passed over for long: we queue anew)."""
        if ticket is None or ticket.index < 0:
            return None
        number, _, pid, _, _ = state.waits[ticket.index]
        return number if (number, pid) == (ticket.number, self._pid) else None

    def _free_wait(self, state: _State, now: int) -> int | None:
        for i, w in enumerate(state.waits):
            if w[0] == 0 or not self._alive(w[2]):
                return i
        # every record taken by a live process: reuse one whose owner overstayed the longest
        late = [(w[1], i) for i, w in enumerate(state.waits) if w[1] < now - int(10 * 1e9)]
        return min(late)[1] if late else None

    def _count_grant(self, fd: int, state: _State, now: int, waited_ns: int) -> None:
        """Add a grant (and the wait behind others before it) to this process's share."""
        index = next((i for i, p in enumerate(state.procs) if p[0] == self._pid), None)
        grants, waited = 0, 0
        if index is None:  # a new process: take an empty record, else the longest-idle one
            index = min(range(PROCS), key=lambda i: (state.procs[i][0] != 0, state.procs[i][4]))
        else:
            grants, waited = state.procs[index][2], state.procs[index][3]
        os.pwrite(fd, _PROC.pack(self._pid, 0, grants + 1, waited + waited_ns, now), _PROCS_AT + index * _PROC.size)

    def mark_sending(self, res: Reservation) -> None:
        """The request of ``res`` is on the wire now (the client calls it when aiohttp reports
        its headers written): its record becomes a send at this moment. Until then it counted
        as "now"; a process killed before this call is taken for one that never sent (only the
        microseconds between writing the headers and this call are not covered)."""
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
        self._write(fd, self._spare(self._read(fd).sends, now), (now, 0, self._pid, SENT))

    def _spare(self, records: list[tuple[int, int, int, int]], now: int) -> int:
        """The record to reuse: one that counts for nothing, else the oldest send (with at most
        ``allowed <= SLOTS`` counting in a span, the oldest of ``SLOTS`` is outside it)."""
        def weight(i: int) -> int:
            e = self._effective(records[i], now)
            return -1 if e is None else e
        return min(range(SLOTS), key=weight)

    def _read_one(self, fd: int, slot: int) -> tuple[int, int, int, int]:
        return _SEND.unpack(os.pread(fd, _SEND.size, _SENDS_AT + slot * _SEND.size))

    def others_between(self, lo: int, hi: int) -> int:
        """Requests of *other* processes that count in ``(lo, hi]`` (ns): sent then, or
        reserved and not yet sent — what ``Remaining-Req`` shows besides our own."""
        fd = self._open()
        with _Locked(fd):
            now = self._clock()
            sends = self._read(fd).sends
        return sum(1 for r in sends if r[2] != self._pid and (t := self._effective(r, now)) is not None
                   and (r[3] == PENDING or lo < t <= hi))

    def sends(self) -> list[int]:
        """Send times (monotonic ns) in the ring, oldest first: for tests and metrics."""
        fd = self._open()
        with _Locked(fd):
            return sorted(t for t, _, _, s in self._read(fd).sends if s == SENT)

    def shares(self) -> list[Share]:
        """What each process that waited its turn got (grants through the queue), newest first."""
        # (its own descriptor: a flock is shared by the threads using one, and metrics are read
        # from the user's thread while the loop thread uses the ring)
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:  # (its folder was removed: nothing to show)
            return []
        try:
            with _Locked(fd):
                procs = self._read(fd).procs
        finally:
            os.close(fd)
        return sorted((Share(p[0], p[2], p[3] / 1e9, p[4], self._alive(p[0])) for p in procs if p[0]),
                      key=lambda s: -s.last_ns)


_OPEN: weakref.WeakSet[FileRing] = weakref.WeakSet()  # rings with a descriptor open


def _forget_inherited() -> None:
    for ring in list(_OPEN):
        ring._forget_inherited()


os.register_at_fork(after_in_child=_forget_inherited)


@dataclass
class _State:
    next_ticket: int
    sends: list[tuple[int, int, int, int]]
    waits: list[tuple[int, int, int, int, int]]
    procs: list[tuple[int, int, int, int, int]]


class _Locked:
    """``flock`` held for a ``with`` block; the kernel drops it if the process dies."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


# ---------------------------------------------------------------------- the client's side
class Budget(Protocol):
    """A rate budget shared beyond this process (``rate_budget`` "machine" or a Redis URL).

    The client asks it for a slot after its own limiter granted one (:meth:`acquire`), tells it
    when the request is on the wire (:meth:`sending`) or never left (:meth:`unsent`), and asks
    how many of the requests ``Remaining-Req`` counted were the sharing processes'
    (:meth:`others_between`, on the limiter's clock) before taking them for a stranger's."""

    scope: str  # "machine" or "redis"
    waited: float  # seconds this process waited for slots that others held

    async def acquire(self, allowed: int, span: float) -> tuple[Reservation, float]: ...
    def others_between(self, lo: float, hi: float) -> int: ...
    def sending(self, res: Reservation) -> None: ...
    def unsent(self, res: Reservation) -> None: ...
    def shares(self) -> list[Share]: ...
    async def aclose(self) -> None: ...


class TurnBudget(ABC):
    """The client's side of a shared budget, whatever holds it: one request of this process
    queued at a time (an ``asyncio.Lock``: processes take turns, not coroutines), asking again
    after each wait it is told, and leaving the queue when the wait is cancelled. Subclasses say
    how to ask (:meth:`_try`) and how to leave (:meth:`_leave`)."""

    scope = ""

    def __init__(self, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self._sleep = sleep
        self._turn: asyncio.Lock | None = None
        #: Seconds this process's requests waited for slots others held.
        self.waited = 0.0

    async def acquire(self, allowed: int, span: float) -> tuple[Reservation, float]:
        """A slot: ``(reservation, seconds waited for slots others held)`` — the waits of one
        request in the queue; the time it spent behind this process's own queued request is
        counted by that one's."""
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            ticket = Ticket()
            waited = 0.0
            try:
                while True:
                    wait, res = await self._try(allowed, span, ticket, waited)
                    if res is not None:
                        return res, waited
                    waited += wait
                    self.waited += wait
                    await self._sleep(wait)
            finally:
                if ticket.index >= 0:  # cancelled (or failed) while queued: give the place up
                    self._leave(ticket)

    @abstractmethod
    async def _try(self, allowed: int, span: float, ticket: Ticket, waited: float) -> tuple[float, Reservation | None]:
        """One attempt: ``(seconds to wait, None)`` while others hold the slots, else
        ``(0, reservation)``; the store (a file ring, Redis) says how."""

    @abstractmethod
    def _leave(self, ticket: Ticket) -> None:
        """Give up ``ticket``'s place in the queue (cancelled or failed while queued)."""


class MachineBudget(TurnBudget):
    """The machine's budget of one (exchange, group) for this process: a :class:`FileRing`."""

    scope = "machine"

    def __init__(self, ring: FileRing, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        super().__init__(sleep)
        self.ring = ring

    async def _try(self, allowed: int, span: float, ticket: Ticket, waited: float) -> tuple[float, Reservation | None]:
        return self.ring.try_acquire(allowed, span, ticket)

    def _leave(self, ticket: Ticket) -> None:
        self.ring.leave(ticket)

    def others_between(self, lo: float, hi: float) -> int:
        """Other processes' requests in ``(lo, hi]``, seconds of the ring's clock."""
        return self.ring.others_between(int(lo * 1e9), int(hi * 1e9))

    def sending(self, res: Reservation) -> None:
        self.ring.mark_sending(res)

    def unsent(self, res: Reservation) -> None:
        self.ring.release(res)

    def shares(self) -> list[Share]:
        return self.ring.shares()

    async def aclose(self) -> None:
        self.ring.close()
