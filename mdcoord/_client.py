"""Layer 1: the HTTP client for the Upbit quotation API.

One :class:`Client` per base URL, owned by the runtime loop (``_runtime.py``) and shared by the
sync and async APIs. It sends GETs through the rate-limit group's
:class:`~mdcoord._limiter.SlidingWindowLimiter`, retries what is retryable, and is the single
place where aiohttp, asyncio and JSON errors become mdcoord errors: nothing raw escapes
:meth:`Client.get_json`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson

from ._version import __version__
from ._concurrency import ConcurrencyGate, LoopLagMonitor
from ._config import Options, source_name
from ._exceptions import (
    APIError,
    BadRequestError,
    ClosedError,
    ConnectionFailedError,
    InvalidRequestError,
    IPBlockedError,
    MarketNotFoundError,
    MdcoordError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    ServerError,
    TransportError,
)
from ._limiter import AUTO_MARGIN_START, SlidingWindowLimiter
from ._metrics import METRICS
from ._retry import RetryPolicy

__all__ = ["CallStats", "Client", "group_for", "parse_remaining_req"]

log = logging.getLogger("mdcoord")

# Rate-limit groups as the server names them in Remaining-Req (see UPBIT_API.md).
_GROUP_BY_PREFIX = (
    ("/candles", "candles"),
    ("/market", "market"),
    ("/ticker", "ticker"),
    ("/orderbook", "orderbook"),
    ("/trades", "crix-trades"),
)
_REMAINING_RE = re.compile(r"group=([\w-]+);\s*min=(\d+);\s*sec=(\d+)")
_SECONDS_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:s\b|sec|second|초)", re.IGNORECASE)
# When a 418 does not say how long the block lasts, send nothing for this long.
DEFAULT_BLOCK_SECONDS = 60.0


def group_for(path: str) -> str:
    """The rate-limit group of an endpoint path (``/candles/minutes/1`` → ``candles``)."""
    for prefix, group in _GROUP_BY_PREFIX:
        if path.startswith(prefix):
            return group
    raise InvalidRequestError(f"no known rate-limit group for path {path!r}")


def parse_remaining_req(value: str | None) -> tuple[str, int] | None:
    """``"group=candles; min=600; sec=9"`` → ``("candles", 9)``; None if absent or malformed."""
    if not value:
        return None
    m = _REMAINING_RE.search(value)
    return (m.group(1), int(m.group(3))) if m else None


@dataclass
class CallStats:
    """Counters of one coordinated call (they end up in ``attrs["mdcoord"]``)."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    limiter_wait_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def count_error(self, err: BaseException) -> None:
        name = type(err).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


class Client:
    """Rate-limited, retrying GET client for one base URL.

    Must be used from one event loop (the runtime's). ``rng``, ``clock`` and ``sleep`` are
    injectable for tests.
    """

    def __init__(
        self,
        base_url: str,
        *,
        rng: random.Random | None = None,
        clock: Any = time.monotonic,
        sleep: Any = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.source = source_name(self.base_url)
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self._limiters: dict[str, SlidingWindowLimiter] = {}
        self._gates: dict[str, ConcurrencyGate] = {}
        self.lag = LoopLagMonitor(self._on_stall)
        METRICS.watch_lag(self.source, self.lag)
        self._blocked_until = float("-inf")
        self._block_error: IPBlockedError | None = None
        self._closed = False
        #: The latest server time seen in a ``Date`` header (UTC epoch seconds); server time never
        #: runs backwards, so this is a safe lower bound of the server's "now".
        self.server_time_floor: float | None = None
        self._floor_seen_at = 0.0

    # -- resources ----------------------------------------------------------------------------
    def limiter(self, group: str, options: Options | None = None) -> SlidingWindowLimiter:
        """The limiter of ``group`` (created on first use), tuned to ``options``."""
        lim = self._limiters.get(group)
        if lim is None:
            lim = self._limiters[group] = SlidingWindowLimiter(10, 1.0, 0.05, clock=self._clock, sleep=self._sleep)
        if options is not None:
            lim.max_requests = options.rate_limit
            if options.rate_margin == "auto":
                if not lim.auto_margin:  # switching to auto: start from the safe default
                    lim.auto_margin, lim.margin = True, AUTO_MARGIN_START
            else:
                lim.auto_margin, lim.margin = False, float(options.rate_margin)
        return lim

    def gate(self, group: str, options: Options | None = None) -> ConcurrencyGate:
        """The adaptive concurrency gate of ``group`` (created on first use), shared by every
        call in the process that uses ``concurrency="auto"``."""
        gate = self._gates.get(group)
        if gate is None:
            gate = self._gates[group] = ConcurrencyGate.adaptive(clock=self._clock)
            METRICS.watch(self.source, group, gate)
        if options is not None:
            gate.rate = options.rate_limit
        return gate

    def _on_stall(self, lag: float) -> None:
        """The event loop woke ``lag`` s late: the machine is saturated; ask for less at once."""
        log.debug("event loop stalled for %.3f s; shrinking concurrency", lag)
        for gate in self._gates.values():
            gate.overload(0.75)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClosedError("the mdcoord client was closed")
        if self._session is None or self._session.closed:
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(self._on_headers_sent)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
                headers={"Accept": "application/json", "User-Agent": f"mdcoord/{__version__}"},
                trace_configs=[trace],
                # Never send Origin: Upbit moves such requests to a 1-per-10-s group.
                skip_auto_headers=("Origin",),
            )
            # aiohttp silently resends an idempotent request once when a reused keep-alive
            # connection drops. That resend bypasses the rate limiter, and retrying is our
            # policy's job, so switch it off (no public switch exists; the hook below still
            # accounts for any resend should a future aiohttp ignore this).
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    @staticmethod
    async def _on_headers_sent(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        req_ctx = ctx.trace_request_ctx
        if req_ctx is None:
            return
        limiter, permit = req_ctx["limiter"], req_ctx["permit"]
        if permit.pending:
            limiter.mark_sent(permit)
        else:  # a resend by aiohttp itself: count it against the budget too
            limiter.record_send()
            req_ctx["stats"].requests += 1

    async def close(self) -> None:
        self._closed = True
        await self.lag.stop()
        if self._session is not None and not self._session.closed:
            await self._session.close()

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
        as failed and is retried like a garbled body.

        Raises only :class:`MdcoordError` subclasses: the last error after the retries, at once
        for non-retryable ones (4xx, 418).
        """
        stats = stats if stats is not None else CallStats()
        group = group_for(path)
        limiter = self.limiter(group, options)
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
                METRICS.retry(self.source, group)
                log.debug("retry %d of %s %s in %.2fs after %s", attempt + 1, path, params, delay, err)
                stats.retries += 1
                attempt += 1
                await self._sleep(delay)

    async def _attempt(
        self,
        path: str,
        params: dict[str, Any],
        group: str,
        limiter: SlidingWindowLimiter,
        options: Options,
        stats: CallStats,
        parse: Callable[[Any], Any] | None = None,
    ) -> Any:
        self._check_block()
        waited_before = limiter.waited
        permit = await limiter.acquire()
        stats.limiter_wait_s += limiter.waited - waited_before
        try:
            self._check_block()  # a 418 may have arrived while we waited
        except IPBlockedError:
            limiter.mark_sent(permit)  # settle the permit: a pending one would hold its slot forever
            raise
        url = self.base_url + path
        stats.requests += 1
        self.lag.touch()
        started = self._clock()
        outcome: str | None = None  # None: cancelled, or a bug; counted as an attempt only
        latency: float | None = None
        try:
            data = await self._exchange(url, path, params, group, limiter, permit, options, stats)
            if parse is not None:
                data = parse(data)
            outcome = "ok"
            return data
        except MdcoordError as err:
            outcome = next((name for cls, name in _OUTCOMES.items() if isinstance(err, cls)), "client_errors")
            raise
        finally:
            if outcome is not None and outcome != "timeouts":
                latency = self._clock() - started
            METRICS.attempt(self.source, group, outcome, latency, limiter.waited - waited_before)
            gate = self._gates.get(group)
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
        url: str,
        path: str,
        params: dict[str, Any],
        group: str,
        limiter: SlidingWindowLimiter,
        permit: Any,
        options: Options,
        stats: CallStats,
    ) -> Any:
        """One HTTP exchange: send, read, translate the answer (rows, or a typed error)."""
        timeout = aiohttp.ClientTimeout(total=options.timeout, sock_connect=options.connect_timeout)
        try:
            session = self._get_session()
            async with session.get(
                url,
                params=params,
                timeout=timeout,
                trace_request_ctx={"limiter": limiter, "permit": permit, "stats": stats},
            ) as resp:
                body = await resp.read()
                status, headers, content_type = resp.status, resp.headers, resp.content_type
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise RequestTimeoutError(
                f"no answer within {options.timeout:g} s ({type(exc).__name__})", url=url, params=params, group=group
            ) from None
        except aiohttp.InvalidURL as exc:
            raise InvalidRequestError(f"invalid URL {url!r}: {exc}") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise ConnectionFailedError(
                f"connection failed: {type(exc).__name__}: {exc}", url=url, params=params, group=group
            ) from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"HTTP client error: {type(exc).__name__}: {exc}", url=url, params=params, group=group) from None
        except OSError as exc:  # e.g. too many open files
            raise ConnectionFailedError(f"OS error: {exc}", url=url, params=params, group=group) from None
        finally:
            limiter.mark_sent(permit)

        self._observe_date(headers.get("Date"))
        remaining = parse_remaining_req(headers.get("Remaining-Req"))
        if remaining is not None and limiter.observe_remaining(remaining[1], permit):
            log.debug("group %s: server reports more usage than ours; pausing", group)
        if status == 200:
            return _decode(body, content_type, url=url, params=params, group=group)
        err = _error_for(status, body, headers, url=url, params=params, group=group)
        if isinstance(err, RateLimitError):
            stats.rate_limited += 1
            # arrivals jitter more than the margin assumed: be more careful from now on (whether
            # someone else spends this IP's budget too, Remaining-Req told observe_remaining above)
            limiter.widen()
            limiter.pause()
        elif isinstance(err, IPBlockedError):
            self._block(err)
        raise err

    def _observe_date(self, value: str | None) -> None:
        if not value:
            return
        try:
            seconds = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        if self.server_time_floor is None or seconds >= self.server_time_floor:
            self.server_time_floor = seconds
            self._floor_seen_at = time.monotonic()

    def server_now_floor(self) -> float:
        """A lower bound of the server's current time (epoch s): its last ``Date``, else our clock.

        Without any ``Date`` seen (an implementation that sends none) the local clock is used.
        """
        return self.server_time_floor if self.server_time_floor is not None else time.time()

    def server_now_ceiling(self) -> float | None:
        """An upper bound of the server's current time: its last ``Date`` + 2 s (1 s for the
        header's resolution, 1 s for the answer's way back) + the time elapsed here since.
        None before any ``Date`` was seen."""
        if self.server_time_floor is None:
            return None
        return self.server_time_floor + 2.0 + (time.monotonic() - self._floor_seen_at)

    # -- 418: stop everything --------------------------------------------------------------------
    def _block(self, err: IPBlockedError) -> None:
        seconds = err.retry_after if err.retry_after is not None else DEFAULT_BLOCK_SECONDS
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)
        self._block_error = err
        log.error("HTTP 418 from %s: no requests for %.0f s", self.base_url, seconds)

    def _check_block(self) -> None:
        if self._block_error is not None and self._clock() < self._blocked_until:
            e = self._block_error
            left = self._blocked_until - self._clock()
            raise IPBlockedError(
                e.status, f"{e.server_message} (still blocked; {left:.0f} s left, nothing sent)",
                retry_after=left, url=e.url, params=e.params, group=e.group,
            )


# What an attempt's error counts as in the metrics (first matching class wins).
_OUTCOMES: dict[type[MdcoordError], str] = {
    RateLimitError: "rate_limited",
    IPBlockedError: "blocked",
    ServerError: "server_errors",
    RequestTimeoutError: "timeouts",
    ResponseFormatError: "bad_bodies",
    TransportError: "connection_errors",
    APIError: "client_errors",
}


def _decode(body: bytes, content_type: str, **ctx: Any) -> Any:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        snippet = body[:120].decode("utf-8", "replace")
        what = "an HTML page" if "html" in content_type or snippet.lstrip().startswith("<") else "a body that is not JSON"
        raise ResponseFormatError(
            f"the server answered 200 with {what} ({len(body)} bytes: {snippet!r}); is the base URL an Upbit API?",
            **ctx,
        ) from None
    if not isinstance(data, (list, dict)):
        raise ResponseFormatError(f"expected a JSON array, got {type(data).__name__}", **ctx)
    return data


def _error_for(status: int, body: bytes, headers: Any, **ctx: Any) -> MdcoordError:
    """Translate an error answer (JSON or plain text, both occur) into a typed error."""
    text = body.decode("utf-8", "replace").strip()
    message = text[:300] or f"HTTP {status} with an empty body"
    try:
        payload = orjson.loads(body)
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            message = str(payload["error"].get("message", message))
    except orjson.JSONDecodeError:
        pass
    if status == 400:
        return BadRequestError(status, message, **ctx)
    if status == 404:
        if "code not found" in message.lower():
            params = ctx.get("params") or {}
            codes = str(params.get("market") or params.get("markets") or "?").split(",")
            return MarketNotFoundError(status, message, markets=codes, **ctx)
        return NotFoundError(status, message, **ctx)
    if status == 429:
        return RateLimitError(status, message, **ctx)
    if status == 418:
        return IPBlockedError(status, message, retry_after=_block_seconds(headers, text), **ctx)
    if status >= 500:
        return ServerError(status, message, **ctx)
    return APIError(status, message, **ctx)


def _block_seconds(headers: Any, text: str) -> float | None:
    """The block length a 418 states: ``Retry-After`` seconds, else a number of seconds in the body."""
    retry_after = headers.get("Retry-After")
    if retry_after:
        try:
            return float(retry_after)
        except ValueError:
            pass
    m = _SECONDS_RE.search(text)
    return float(m.group(1)) if m else None
