"""Layer 1: the HTTP client for the Upbit quotation API.

One :class:`Client` per base URL, owned by the runtime loop (``_runtime.py``) and shared by the
sync and async APIs. It wires the parts of one request together and does little itself:

- :class:`~mdcoord._pacing.Pacing`: the group's limiter (when) and concurrency gate (how many);
- :class:`~mdcoord._guard.BlockGuard`: nothing is sent while a 418 block lasts;
- :class:`~mdcoord._transport.Transport`: the aiohttp session; transport errors translated;
- :mod:`~mdcoord._answers`: bodies decoded, error statuses translated into typed errors;
- :class:`~mdcoord._servertime.ServerClock`: the exchange's "now", from its ``Date`` headers;
- :class:`~mdcoord._retry.RetryPolicy`: whether and when a failed attempt is tried again;
- :data:`~mdcoord._metrics.METRICS`: what every attempt did.

Nothing raw escapes :meth:`Client.get_json`: only :class:`MdcoordError` subclasses.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ._answers import decode, error_for, outcome_of, parse_remaining_req
from ._config import Options, source_name
from ._exceptions import IPBlockedError, MdcoordError, RateLimitError, ResponseFormatError
from ._groups import Group, group_for
from ._guard import BlockGuard
from ._budget import Budget, Reservation
from ._limiter import Permit, SlidingWindowLimiter
from ._metrics import METRICS
from ._pacing import Pacing
from ._retry import RetryPolicy
from ._servertime import ServerClock
from ._transport import Transport

__all__ = ["CallStats", "Client"]

log = logging.getLogger("mdcoord")


@dataclass
class CallStats:
    """Counters of one coordinated call (they end up in ``attrs["mdcoord"]``)."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    limiter_wait_s: float = 0.0
    #: of which waiting for the machine's budget (slots other processes hold; rate_budget="machine")
    budget_wait_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def count_error(self, err: BaseException) -> None:
        name = type(err).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


class Client:
    """Rate-limited, retrying GET client for one base URL.

    Must be used from one event loop (the runtime's). ``rng``, ``clock`` (monotonic seconds) and
    ``sleep`` are injectable for tests; every part of the client uses the same clock.
    """

    def __init__(
        self,
        base_url: str,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        local_address: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.local_address = local_address
        # The budget is the address's (Upbit counts per IP): the machine's budget, the metrics
        # and the 418 guard of a bound client are its address's, apart from the default route's.
        self.source = source_name(self.base_url) + (f"@{local_address}" if local_address else "")
        self.clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.pacing = Pacing(self.source, clock=clock, sleep=sleep)
        self.guard = BlockGuard(self.base_url, clock)
        self.server_clock = ServerClock(clock)
        self.transport = Transport(local_address)

    # -- what callers tune and read ---------------------------------------------------------------
    def limiter(self, group: Group, options: Options | None = None) -> SlidingWindowLimiter:
        return self.pacing.limiter(group, options)

    def gate(self, group: Group, options: Options | None = None) -> Any:
        return self.pacing.gate(group, options)

    async def close(self) -> None:
        await self.pacing.close()
        await self.transport.close()

    # -- the one entry point -------------------------------------------------------------------
    async def get_json(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        options: Options,
        stats: CallStats | None = None,
        parse: Callable[[Any], Any] | None = None,
    ) -> Any:
        """GET ``base_url + path`` and return the decoded JSON, retrying what is retryable.

        ``parse`` (optional) turns the decoded JSON into what the caller keeps, raising
        :class:`ResponseFormatError` for an answer of the wrong shape: that attempt then counts
        as failed and is retried like a garbled body (the one rule for bad shapes, whatever the
        data type). The error gets the request's URL, parameters and group if it has none.

        Raises only :class:`MdcoordError` subclasses: the last error after the retries, at once
        for non-retryable ones (4xx, 418).
        """
        stats = stats if stats is not None else CallStats()
        group = group_for(path)
        limiter = self.pacing.limiter(group, options)
        policy = RetryPolicy(options.max_retries, options.backoff, options.max_backoff)
        attempt = 0
        while True:
            try:
                return await self._attempt(path, params or {}, group, limiter, options, stats, parse)
            except MdcoordError as err:
                stats.count_error(err)
                if not policy.should_retry(err, attempt):
                    raise
                delay = policy.delay(attempt, self._rng)
                METRICS.retry(self.source, group.value)
                log.debug("retry %d of %s %s in %.2fs after %s", attempt + 1, path, params, delay, err)
                stats.retries += 1
                attempt += 1
                await self._sleep(delay)

    async def _attempt(
        self,
        path: str,
        params: dict[str, Any],
        group: Group,
        limiter: SlidingWindowLimiter,
        options: Options,
        stats: CallStats,
        parse: Callable[[Any], Any] | None,
    ) -> Any:
        self.guard.check()
        waited_before = limiter.waited
        permit = await limiter.acquire()
        try:
            budget = self.pacing.budget(group, options)
            reservation, waited_machine = await self.pacing.reserve(budget, limiter)
            stats.limiter_wait_s += waited_machine
            stats.budget_wait_s += waited_machine
            if waited_machine:
                METRICS.budget_wait(self.source, group.value, waited_machine)
        except BaseException:
            limiter.mark_sent(permit)
            raise
        stats.limiter_wait_s += limiter.waited - waited_before
        try:
            self.guard.check()  # a 418 may have arrived while we waited
        except IPBlockedError:
            limiter.mark_sent(permit)  # settle the permit: a pending one would hold its slot forever
            self.pacing.unsent(budget, reservation)
            raise
        stats.requests += 1
        self.pacing.lag.touch()
        started = self.clock()
        outcome: str | None = None  # None: cancelled, or a bug; counted as an attempt only
        latency: float | None = None
        try:
            data = await self._exchange(path, params, group, limiter, permit, (budget, reservation), options, stats)
            if parse is not None:
                data = _parsed(parse, data, url=self.base_url + path, params=params, group=group.value)
            outcome = "ok"
            return data
        except MdcoordError as err:
            outcome = outcome_of(err)
            raise
        finally:
            if outcome is not None and outcome != "timeouts":
                latency = self.clock() - started
            METRICS.attempt(self.source, group.value, outcome, latency, limiter.waited - waited_before)
            self._feedback(group, limiter, outcome, latency)

    def _feedback(self, group: Group, limiter: SlidingWindowLimiter, outcome: str | None, latency: float | None) -> None:
        """What an attempt's outcome teaches the group's gate and the limiter's margin."""
        gate = self.pacing.existing_gate(group)
        if gate is not None:
            if outcome == "rate_limited":
                gate.overload(0.5)
            elif outcome == "timeouts":
                gate.overload(0.75)
            elif latency is not None and outcome in ("ok", "server_errors", "client_errors"):
                gate.observe(latency)
        if latency is not None and outcome in ("ok", "server_errors", "client_errors", "rate_limited"):
            limiter.observe_rtt(latency)

    async def _exchange(
        self,
        path: str,
        params: dict[str, Any],
        group: Group,
        limiter: SlidingWindowLimiter,
        permit: Permit,
        shared: tuple[Budget | None, Reservation | None],
        options: Options,
        stats: CallStats,
    ) -> Any:
        """One HTTP exchange: send, read, translate the answer (rows, or a typed error)."""
        url = self.base_url + path
        ctx = {"url": url, "params": params, "group": group.value}

        def on_sent() -> None:
            # (the machine's budget counts a resend anew: its reservation is already a send)
            self.pacing.sending(*shared)
            if permit.pending:
                limiter.mark_sent(permit)
            else:  # a resend by aiohttp itself: count it against the budget too
                limiter.record_send()
                stats.requests += 1

        try:
            answer = await self.transport.get(
                url, params, timeout=options.timeout, connect_timeout=options.connect_timeout, on_sent=on_sent,
                group=group.value,
            )
        finally:
            if permit.pending:  # not known to have left (no connection, cancelled): counted as
                self.pacing.sending(*shared)  # sent now, as the limiter counts it
            limiter.mark_sent(permit)

        self.server_clock.observe(answer.headers.get("Date"))
        remaining = parse_remaining_req(answer.headers.get("Remaining-Req"))
        sharing = shared[0].others_between if shared[0] is not None else None
        if remaining is not None and limiter.observe_remaining(remaining[1], permit, sharing):
            log.debug("group %s: server reports more usage than ours; pausing", group)
        if answer.status == 200:
            return decode(answer.body, answer.content_type, **ctx)
        err = error_for(answer.status, answer.body, answer.headers, **ctx)
        if isinstance(err, RateLimitError):
            stats.rate_limited += 1
            # arrivals jitter more than the margin assumed: be more careful from now on (whether
            # someone else spends this IP's budget too, Remaining-Req told observe_remaining above)
            limiter.widen()
            limiter.pause()
        elif isinstance(err, IPBlockedError):
            self.guard.block(err)
        raise err


def _parsed(parse: Callable[[Any], Any], data: Any, **ctx: Any) -> Any:
    """``parse(data)``, where any sign of a wrong shape is a :class:`ResponseFormatError` with
    this request's context: a missing key, a wrong type, a value that does not convert."""
    try:
        return parse(data)
    except ResponseFormatError as err:
        if not err.url:
            err._set_context(**ctx)
            err.args = (f"{err.args[0]}{err._where()}",)
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ResponseFormatError(f"an answer of the wrong shape ({type(exc).__name__}: {exc})", **ctx) from None
