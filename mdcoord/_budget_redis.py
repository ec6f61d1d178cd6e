"""A rate budget shared by every host that uses one Redis: ``rate_budget="redis://host:6379/0"``.

Upbit counts requests per IP address, and several machines behind one NAT address share it.
:class:`RedisBudget` keeps the rule of :class:`~mdcoord._budget.FileRing` — at most ``allowed``
request starts of one (exchange, group) in any ``span`` seconds, handed out in the order the
waiting processes came — with the log moved into Redis, where every host sees it.

**One decision, one script.** Every operation (take a slot or a place in the queue, mark a send,
give a slot back, leave the queue, read the shares) is one Lua script (redis-py's ``Script``:
``EVALSHA``, loaded again if the server lost it), so Redis runs it atomically: no other host's
decision comes between reading the window and writing the grant.

**One clock.** Every time in the keys is the Redis server's ``TIME`` (microseconds), read inside
the script. The hosts' own clocks are never compared with each other or with Redis: a host only
ever learns "wait this long", a duration.

**Leases instead of pids.** A grant is written as a reservation that counts as "now" until it is
marked sent (then its send time counts) or given back. Whether a process on another host still
lives cannot be checked, so a reservation has a lease, ``max(span, 1 s)``, which its owner renews
every third of it while the request has not left (a slow connect, a wait for a pooled
connection): a live host's reservation counts until it is sent or given back, however late, and
a dead (or frozen, or cut off) host's for at most one lease after its last renewal. (A request
that leaves after its lease did run out — its owner's loop stalled for a whole lease — is
counted at its send time, anew.)

**In turn.** A process that finds the window full takes a ticket (a number from a counter) and
promises to ask again by the time it was told to wait plus ``GRACE_S``; a free slot goes to the
waiter with the fewest requests in the window, then to the oldest ticket, among the waiters that
keep their promise (the machine budget's order: a newcomer is served at once). A ticket whose
owner is late (dead, frozen, cut off) is passed over until its owner is back, and dropped after
``HORIZON_S``. Processes may ask with different rules (a share halved after a stranger showed,
a margin widened after a 429): each queued owner's ``allowed`` and ``span`` are kept with its
ticket, and a caller is held to the strictest rule among itself and the live waiters ahead of
it (the fewest allowed, the widest span), both for the grant and for the wait it is told, so
one that may have more cannot keep the window too full for a waiter ahead that may have less.

**Nothing grows.** Sends older than ``HORIZON_S`` are pruned by every call, the share table keeps
the ``PROCS`` most recent processes, and every key expires ``TTL_S`` after its last use.

**No Redis, no requests.** When Redis cannot be reached (at start or mid-run) or answers with an
error, :meth:`RedisBudget.acquire` raises :class:`~mdcoord.BudgetUnavailableError`: nothing is
sent, and there is no fallback to a budget of this machine's own, since every other host behind
the address would take a full one as well.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._budget import Reservation, Share, Ticket, TurnBudget, _alive
from ._config import budget_label
from ._exceptions import BudgetUnavailableError, InvalidRequestError

try:  # an optional dependency: pip install "mdcoord[redis]"
    import redis.asyncio as _redis
    from redis.asyncio.retry import Retry as _Retry
    from redis.backoff import NoBackoff as _NoBackoff
    from redis.exceptions import RedisError as _RedisError
except ImportError:  # pragma: no cover - exercised by the message only
    _redis = None

__all__ = ["GRACE_S", "HORIZON_S", "RedisBudget", "budget_keys"]

log = logging.getLogger("mdcoord")

GRACE_S = 0.25  # a ticket is passed over when its owner asks again later than promised + this
HORIZON_S = 10.0  # sends and late tickets older than this are pruned (spans are at most 2 s)
TTL_S = 3600  # every key expires this long after the group was last used
PROCS = 64  # processes whose share is kept (the least recently served make room)
MAX_SPAN_S = HORIZON_S / 2
SHARES_EVERY_S = 1.0  # acquire refreshes the shares snapshot at most this often
CONNECT_TIMEOUT_S = 2.0
OP_TIMEOUT_S = 2.0

# KEYS: 1 sends (zset "id|owner" -> send us), 2 pending (zset "id|owner" -> lease end us), 3 queue
# (zset owner -> ticket number), 4 promised (zset owner -> promised-by us), 5 seq (counter),
# 6 grants (hash proc -> n), 7 waited (hash proc -> us), 8 last (zset proc -> last grant us),
# 9 rules (hash owner -> "allowed:span us" of a queued owner: what it asks the window for).
# An owner is one RedisBudget (host:pid:token): it queues one request at a time.
_PRUNE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local horizon = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - horizon)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local late = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - horizon)
for _, m in ipairs(late) do
  redis.call('ZREM', KEYS[3], m)
  redis.call('ZREM', KEYS[4], m)
  redis.call('HDEL', KEYS[9], m)
end
local function touch(ttl)
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
end
local function owner(m)
  return string.sub(m, (string.find(m, '|', 1, true) or 0) + 1)
end
"""

# ARGV: 1 horizon, 2 ttl, 3 allowed, 4 span, 5 lease, 6 grace, 7 owner, 8 proc, 9 waited us,
# 10 procs kept. Returns {wait us (0: granted), reservation id, now us, others' requests counted}.
_ACQUIRE = _PRUNE + """
local allowed, span, lease = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local grace, member, proc = tonumber(ARGV[6]), ARGV[7], ARGV[8]
local pending = redis.call('ZRANGE', KEYS[2], 0, -1)
-- the starts that count in the last s us (a reservation counts as now), and each owner's number
local function window(s)
  local times = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - s), '+inf', 'WITHSCORES')
  local counted, recent = {}, {}
  local function count(m, t)
    counted[#counted + 1] = t
    local o = owner(m)
    recent[o] = (recent[o] or 0) + 1
  end
  for i = 1, #times, 2 do count(times[i], tonumber(times[i + 1])) end
  for _, m in ipairs(pending) do count(m, now) end
  return counted, recent
end
local counted, recent = window(span)
local others = #counted - (recent[member] or 0)
-- who goes first: the waiter with the fewest requests in the window, then the one that queued
-- first (as the machine's budget does): a newcomer is served at once, and an owner that had
-- the window to itself gives way until the others catch up
local mine = redis.call('ZSCORE', KEYS[3], member)
local my_n = recent[member] or 0
local my_t = tonumber(mine or (tonumber(redis.call('GET', KEYS[5]) or 0) + 1))
local ahead = 0
-- the rule is the strictest of ours and of the waiters ahead of us (the fewest allowed, the
-- widest span): a caller that may have more would otherwise keep the window too full for a
-- waiter ahead that may have less (its share halved, its margin widened), and starve it
local rule_allowed, rule_span = allowed, span
local queue = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
for i = 1, #queue, 2 do
  local m, t = queue[i], tonumber(queue[i + 1])
  local promised = redis.call('ZSCORE', KEYS[4], m)
  local n = recent[m] or 0
  if m ~= member and promised and tonumber(promised) >= now and (n < my_n or (n == my_n and t < my_t)) then
    ahead = ahead + 1
    local rule = redis.call('HGET', KEYS[9], m)
    local sep = rule and string.find(rule, ':', 1, true)
    if sep then
      local a, s = tonumber(string.sub(rule, 1, sep - 1)), tonumber(string.sub(rule, sep + 1))
      if a and a < rule_allowed then rule_allowed = a end
      if s and s > rule_span then rule_span = s end
    end
  end
end
if rule_span ~= span then counted = window(rule_span) end
if rule_allowed - #counted > ahead then
  local id = redis.call('INCR', KEYS[5])
  redis.call('ZADD', KEYS[2], now + lease, id .. '|' .. member)
  redis.call('ZREM', KEYS[3], member)
  redis.call('ZREM', KEYS[4], member)
  redis.call('HDEL', KEYS[9], member)
  redis.call('HINCRBY', KEYS[6], proc, 1)
  redis.call('HINCRBY', KEYS[7], proc, tonumber(ARGV[9]))
  redis.call('ZADD', KEYS[8], now, proc)
  local keep = tonumber(ARGV[10])
  if redis.call('ZCARD', KEYS[8]) > keep then
    for _, p in ipairs(redis.call('ZRANGE', KEYS[8], 0, -keep - 1)) do
      redis.call('ZREM', KEYS[8], p)
      redis.call('HDEL', KEYS[6], p)
      redis.call('HDEL', KEYS[7], p)
    end
  end
  touch(tonumber(ARGV[2]))
  return {0, id, now, others}
end
-- our turn comes when the (allowed - ahead)-th newest counted start leaves the span
local need = rule_allowed - ahead
local wait
if need >= 1 and need <= #counted then
  wait = counted[#counted - need + 1] + rule_span - now
else
  wait = math.floor(rule_span / rule_allowed)
end
if wait < 100 then wait = 100 end
if not mine then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[5]), member)
end
redis.call('ZADD', KEYS[4], now + wait + grace, member)
redis.call('HSET', KEYS[9], member, allowed .. ':' .. span)
touch(tonumber(ARGV[2]))
return {wait, 0, now, others}
"""

# ARGV: 1 horizon, 2 ttl, 3 reservation id, 4 owner. The reservation becomes a send now; if its
# lease ran out (or it was marked already: a resend), the send is counted anew.
_SENDING = _PRUNE + """
local m = ARGV[3] .. '|' .. ARGV[4]
if redis.call('ZREM', KEYS[2], m) == 0 then
  m = 's' .. redis.call('INCR', KEYS[5]) .. '|' .. ARGV[4]
end
redis.call('ZADD', KEYS[1], now, m)
touch(tonumber(ARGV[2]))
return now
"""

# ARGV: 1 horizon, 2 ttl, 3 reservation id, 4 owner (a request that never left gives its slot back)
_UNSENT = _PRUNE + """
redis.call('ZREM', KEYS[2], ARGV[3] .. '|' .. ARGV[4])
return now
"""

# ARGV: 1 horizon, 2 ttl, 3 ticket member (a cancelled waiter leaves the queue)
_LEAVE = _PRUNE + """
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('HDEL', KEYS[9], ARGV[3])
return now
"""

# ARGV: 1 horizon, 2 ttl, 3 reservation id, 4 owner, 5 lease us. A live owner's reservation that
# is not sent yet keeps counting: its lease is moved to now + lease, if it is still there.
# Returns 1 when renewed, 0 when it is gone (sent, given back, or its lease had run out).
_RENEW = _PRUNE + """
local m = ARGV[3] .. '|' .. ARGV[4]
if not redis.call('ZSCORE', KEYS[2], m) then return 0 end
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[5]), m)
return 1
"""

# Returns {now, proc, grants, waited us, last us, proc, ...}, most recently served first.
_SHARES = """
local t = redis.call('TIME')
local out = {tonumber(t[1]) * 1000000 + tonumber(t[2])}
local procs = redis.call('ZREVRANGE', KEYS[8], 0, -1, 'WITHSCORES')
for i = 1, #procs, 2 do
  local p = procs[i]
  out[#out + 1] = p
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[6], p) or 0)
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[7], p) or 0)
  out[#out + 1] = tonumber(procs[i + 1])
end
return out
"""

_SCRIPTS = {"acquire": _ACQUIRE, "sending": _SENDING, "unsent": _UNSENT, "leave": _LEAVE, "renew": _RENEW,
            "shares": _SHARES}


def budget_keys(source: str, group: str) -> list[str]:
    """The Redis keys of one (exchange, group), in the scripts' ``KEYS`` order."""
    prefix = f"mdcoord:budget:{source}:{group}"
    return [f"{prefix}:{k}" for k in ("sends", "pending", "queue", "promised", "seq", "grants", "waited", "last", "rules")]


class RedisBudget(TurnBudget):
    """The budget of one (exchange, group) shared through the Redis at ``spec``, for this
    process: queued for one request at a time, so that processes take turns, not coroutines
    (:class:`~mdcoord._budget.TurnBudget`'s loop; this class says how Redis is asked).

    >>> budget = RedisBudget("redis://127.0.0.1:6379/0", "upbit", "candles")  # doctest: +SKIP
    >>> res, waited = await budget.acquire(allowed=10, span=1.05)  # doctest: +SKIP
    >>> budget.sending(res)  # doctest: +SKIP

    A caller is held to the strictest rule among itself and the live waiters ahead of it (the
    fewest ``allowed``, the widest ``span``), so processes whose limits differ (a share halved,
    a margin widened) still take turns. A reservation of this (live) process counts until it is
    sent (:meth:`sending`) or given back (:meth:`unsent`): a task renews its lease every third
    of it meanwhile, so a request that reaches the wire late (a slow connect, a pool wait) is
    still the one its slot was kept for. A dead host's reservation counts for at most one lease
    (``max(span, 1 s)``) after its last renewal.

    Raises :class:`~mdcoord.InvalidRequestError` when redis-py is missing or ``spec`` is not a
    Redis URL, and (from :meth:`acquire`) :class:`~mdcoord.BudgetUnavailableError` when Redis
    cannot be reached or answers with an error.
    """

    scope = "redis"

    def __init__(self, spec: str, source: str, group: str, *,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        if _redis is None:
            raise InvalidRequestError(
                f"rate_budget={budget_label(spec)!r} needs redis-py: pip install \"mdcoord[redis]\"")
        super().__init__(sleep)
        self.address = budget_label(spec)
        try:
            self._client = _redis.Redis.from_url(
                spec, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=OP_TIMEOUT_S,
                retry=_Retry(_NoBackoff(), 1), retry_on_timeout=False, health_check_interval=0,
            )
        except (ValueError, _RedisError) as exc:
            raise InvalidRequestError(f"rate_budget must be a Redis URL like 'redis://host:6379/0', "
                                      f"got {self.address!r} ({exc})") from None
        self._keys = budget_keys(source, group)
        self._scripts = {name: self._client.register_script(code) for name, code in _SCRIPTS.items()}
        self._host = socket.gethostname()
        self._proc = f"{self._host}:{os.getpid()}"
        self._member = f"{self._proc}:{secrets.token_hex(4)}"  # this budget's place in the queue
        self._tasks: set[asyncio.Task[Any]] = set()  # marks underway (sending, unsent, leave)
        self._renewals: dict[int, tuple[asyncio.Event, asyncio.Task[None]]] = {}  # unsent reservations
        self._shares_task: asyncio.Task[None] | None = None
        self._shares: list[Share] = []
        self._shares_at = float("-inf")
        self._others = 0  # other owners' requests in the window at the latest acquire

    # ------------------------------------------------------------------ the client's side
    async def acquire(self, allowed: int, span: float) -> tuple[Reservation, float]:
        """Wait for a slot of the shared window, in turn, and reserve it: ``(reservation, seconds
        this request waited for slots others held)``."""
        if isinstance(allowed, bool) or not isinstance(allowed, int) or not 1 <= allowed <= 10_000 \
                or not 0 < span <= MAX_SPAN_S:
            raise InvalidRequestError(f"the Redis budget needs 1 <= allowed <= 10000 and 0 < span <= {MAX_SPAN_S}")
        return await super().acquire(allowed, span)

    async def _try(self, allowed: int, span: float, ticket: Ticket, waited: float) -> tuple[float, Reservation | None]:
        lease_us = round(max(span, 1.0) * 1e6)
        wait_us, rid, now, self._others = await self._run(
            "acquire", allowed, round(span * 1e6), lease_us, round(GRACE_S * 1e6), self._member, self._proc,
            round(waited * 1e6), PROCS)
        if wait_us:
            ticket.index = 0  # queued (Redis keeps our place under self._member)
            return int(wait_us) / 1e6, None
        ticket.index = -1
        res = Reservation(int(rid), int(now))
        self._renew(res, lease_us)
        self._refresh_later()
        return 0.0, res

    def _leave(self, ticket: Ticket) -> None:
        ticket.index = -1
        self._later("leave", self._member)

    def others_between(self, lo: float, hi: float) -> int:
        """Requests of the other processes sharing this budget that ``Remaining-Req`` may have
        counted besides ours: those in the window as of this process's latest grant or wait.

        (An estimate, and on purpose not on this host's clock: ``lo``/``hi`` are ignored, since
        Redis's times are never compared with a host's. It only tells the limiter not to take
        them for a stranger's; the rule itself is kept by Redis.)"""
        return int(self._others)

    def sending(self, res: Reservation) -> None:
        """The request of ``res`` is on the wire: its reservation becomes a send (in a task:
        aiohttp's ``on_sent`` is synchronous), and its lease is no longer renewed."""
        self._stop_renewing(res)
        self._later("sending", res.slot, self._member)

    def unsent(self, res: Reservation) -> None:
        """The request of ``res`` never left: give the slot back."""
        self._stop_renewing(res)
        self._later("unsent", res.slot, self._member)

    def shares(self) -> list[Share]:
        """What each process that took slots got, most recently served first: a snapshot that
        a grant refreshes (in the background) at most once a second (metrics are read from
        another thread)."""
        return list(self._shares)

    async def aclose(self) -> None:
        """Stop renewing, wait for the updates still underway, then close the connections."""
        while self._renewals or self._tasks or (self._shares_task is not None and not self._shares_task.done()):
            for stop, _ in list(self._renewals.values()):
                stop.set()
            pending = [t for _, t in self._renewals.values()] + list(self._tasks)
            if self._shares_task is not None:
                pending.append(self._shares_task)
            await asyncio.gather(*pending, return_exceptions=True)
        close = getattr(self._client, "aclose", None) or self._client.close  # (redis-py < 5.0.1)
        await close()

    # ------------------------------------------------------------------ leases
    def _renew(self, res: Reservation, lease_us: int) -> None:
        """Keep ``res`` counted while it is unsent: renew its lease every third of it."""
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._renewing(res, lease_us, stop))
        self._renewals[res.slot] = (stop, task)
        task.add_done_callback(lambda _: self._renewals.pop(res.slot, None))
        task.add_done_callback(self._settled)

    def _stop_renewing(self, res: Reservation) -> None:
        # (stopped, not cancelled: a renewal underway ends normally; it cannot bring back a
        # reservation the mark removes, since it only moves a lease that is still there)
        entry = self._renewals.get(res.slot)
        if entry is not None:
            entry[0].set()

    async def _renewing(self, res: Reservation, lease_us: int, stop: asyncio.Event) -> None:
        warned = False
        while True:
            try:
                await asyncio.wait_for(stop.wait(), lease_us / 3e6)
                return  # sent, given back, or the budget closes
            except asyncio.TimeoutError:
                pass
            try:
                if not await self._run("renew", res.slot, self._member, lease_us):
                    return  # gone: its lease ran out before we renewed it (a send is counted anew)
            except BudgetUnavailableError as exc:  # the lease runs out unless Redis is back in time
                if not warned:
                    log.warning("mdcoord: %s", exc)
                    warned = True

    # ------------------------------------------------------------------ Redis
    async def _run(self, name: str, *args: object) -> Any:
        try:
            return await self._scripts[name](keys=self._keys, args=[round(HORIZON_S * 1e6), TTL_S, *args])
        except (_RedisError, OSError, asyncio.TimeoutError) as exc:
            raise BudgetUnavailableError(
                f"the shared rate budget at {self.address} is unavailable ({type(exc).__name__}: {exc}); "
                f"nothing was sent. Start (or reach) that Redis server, or use rate_budget='machine' "
                f"if this machine is the only one on its IP address.", address=self.address) from None

    def _later(self, name: str, *args: object) -> None:
        """Run a script from synchronous code, as a task the budget keeps until it is done."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a caller outside mdcoord's): nothing can be sent anyway
            log.warning("mdcoord: Redis budget %s: %s called outside an event loop; not recorded", self.address, name)
            return
        task = loop.create_task(self._run(name, *args))
        self._tasks.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # (the next acquire will raise if Redis stays away; a lost mark only shortens how
            # long this send counts to the rest of its reservation's lease)
            log.warning("mdcoord: %s", task.exception())

    def _refresh_later(self) -> None:
        """Refresh the shares snapshot in a task (after a grant: nothing may come between the
        grant and the send), at most once a second."""
        if (self._shares_task is None or self._shares_task.done()) \
                and time.monotonic() - self._shares_at >= SHARES_EVERY_S:
            self._shares_task = asyncio.get_running_loop().create_task(self._refresh_shares())
            self._shares_task.add_done_callback(self._settled)

    async def _refresh_shares(self) -> None:
        if time.monotonic() - self._shares_at < SHARES_EVERY_S:
            return
        self._shares_at = time.monotonic()
        try:
            raw = await self._run("shares")
        except BudgetUnavailableError:  # only figures: the next grant tries again
            return
        now, rows = int(raw[0]), raw[1:]
        shares = []
        for i in range(0, len(rows), 4):
            proc = rows[i].decode() if isinstance(rows[i], bytes) else str(rows[i])
            host, _, pid = proc.rpartition(":")
            last = int(rows[i + 3])
            alive = _alive(int(pid)) if host == self._host else now - last <= HORIZON_S * 6e6
            shares.append(Share(int(pid), int(rows[i + 1]), int(rows[i + 2]) / 1e6, last * 1000, alive, host))
        self._shares = shares
