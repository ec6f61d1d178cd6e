"""The network: one aiohttp session per exchange, and one HTTP exchange at a time.

:class:`Transport` owns the session (created on first use, on the runtime loop) and turns one
GET into an :class:`Answer` — status, headers, body — or a :class:`TransportError`. This is the
one place aiohttp, asyncio and OS errors are caught and translated; nothing raw escapes.

Two details matter for the rate limit:

- ``on_sent`` is called when the request's headers have actually been written (an aiohttp
  trace hook), so the limiter records the moment the request left, not the moment it was
  allowed to (waiting for a pooled connection or a TCP handshake in between would otherwise
  make two requests look further apart than they were).
- aiohttp silently resends an idempotent request once when a reused keep-alive connection
  drops. That resend would bypass the limiter, so it is switched off; should a future aiohttp
  resend anyway, ``on_sent`` is called a second time for the same request and the limiter
  counts it (see :meth:`Client._attempt`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp

from ._exceptions import ClosedError, ConnectionFailedError, InvalidRequestError, RequestTimeoutError, TransportError
from ._version import __version__

__all__ = ["Answer", "Transport"]


@dataclass(frozen=True)
class Answer:
    """A complete HTTP answer, read to its last byte."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    content_type: str


class Transport:
    """GETs over one aiohttp session (must be used from one event loop: the runtime's)."""

    def __init__(self, local_address: str | None = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        #: connections leave from this IP (port chosen by the system); None: the system's choice
        self.local_address = local_address

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClosedError("the mdcoord client was closed")
        if self._session is None or self._session.closed:
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_on_headers_sent)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=100, ttl_dns_cache=300,
                    local_addr=(self.local_address, 0) if self.local_address is not None else None,
                ),
                headers={"Accept": "application/json", "User-Agent": f"mdcoord/{__version__}"},
                trace_configs=[trace],
                # Never send Origin: Upbit moves such requests to a 1-per-10-s group.
                skip_auto_headers=("Origin",),
            )
            # No public switch exists for aiohttp's resend of idempotent requests (see above).
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    async def get(
        self,
        url: str,
        params: dict[str, Any],
        *,
        timeout: float,
        connect_timeout: float,
        on_sent: Callable[[], None],
        group: str | None = None,
    ) -> Answer:
        """Send one GET and read the whole answer; raise a :class:`TransportError` subclass (or
        :class:`InvalidRequestError` for a malformed URL, :class:`ClosedError` after close)."""
        ctx = {"url": url, "params": params, "group": group}
        client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        try:
            session = self._get_session()
            async with session.get(
                url, params=params, timeout=client_timeout, trace_request_ctx={"on_sent": on_sent}
            ) as resp:
                body = await resp.read()
                return Answer(resp.status, resp.headers, body, resp.content_type)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise RequestTimeoutError(f"no answer within {timeout:g} s ({type(exc).__name__})", **ctx) from None
        except aiohttp.InvalidURL as exc:
            raise InvalidRequestError(f"invalid URL {url!r}: {exc}") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise ConnectionFailedError(f"connection failed: {type(exc).__name__}: {exc}", **ctx) from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"HTTP client error: {type(exc).__name__}: {exc}", **ctx) from None
        except OSError as exc:  # e.g. too many open files
            raise ConnectionFailedError(f"OS error: {exc}", **ctx) from None

    async def close(self) -> None:
        self._closed = True
        if self._session is not None and not self._session.closed:
            await self._session.close()


async def _on_headers_sent(session: Any, ctx: SimpleNamespace, params: Any) -> None:
    req_ctx = ctx.trace_request_ctx
    if req_ctx is not None:
        req_ctx["on_sent"]()
