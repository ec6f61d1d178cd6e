"""The one exception tree of mdcoord.

Every error mdcoord raises is an :class:`MdcoordError`; errors from aiohttp, asyncio and the
JSON parser are translated at one boundary (``_client.py``) and never escape raw.

::

    MdcoordError
    ├── InvalidRequestError            bad user input, raised before any request (also a ValueError)
    ├── APIError                       the exchange answered with an error status
    │   ├── BadRequestError            400: the exchange rejected a parameter
    │   ├── NotFoundError              404
    │   │   └── MarketNotFoundError    404 "Code not found": names the market(s)
    │   ├── RateLimitError    (R)      429: too many requests in the group's second
    │   ├── IPBlockedError             418: the IP is blocked for a while; stop everything
    │   └── ServerError       (R)      5xx
    ├── TransportError        (R)      no usable HTTP answer
    │   ├── RequestTimeoutError (R)    no answer within the timeout
    │   ├── ConnectionFailedError (R)  refused, reset, dropped
    │   ├── ResponseFormatError (R)    a 2xx body that is not the JSON the API promises
    │   └── DayChangedError (R)        the exchange's UTC day changed mid-call (trades days_ago)
    ├── IncompleteDataError            some pieces still failed after their retries; lists them and
    │                                  carries the partial result (nothing that arrived is lost)
    ├── BudgetUnavailableError         the shared rate budget (Redis) cannot be reached: nothing is sent
    ├── StreamError                    the WebSocket refused a subscription or cannot be reached at all
    └── ClosedError                    the runtime or client was closed

(R) = retryable: ``err.retryable`` is True. Retryability belongs to the class, so the retry
policy never inspects messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "APIError",
    "BadRequestError",
    "BudgetUnavailableError",
    "ClosedError",
    "ConnectionFailedError",
    "DayChangedError",
    "IPBlockedError",
    "IncompleteDataError",
    "InvalidRequestError",
    "MarketNotFoundError",
    "MdcoordError",
    "NotFoundError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseFormatError",
    "ServerError",
    "StreamError",
    "TransportError",
]


class MdcoordError(Exception):
    """Base of every error mdcoord raises."""

    retryable: bool = False


class InvalidRequestError(MdcoordError, ValueError):
    """The request is malformed; raised before anything is sent."""


class StreamError(MdcoordError):
    """A live stream cannot go on: the exchange refused the subscription (its error names why), or
    its WebSocket cannot be reached (no WebSocket at that URL). Dropped connections are not errors:
    a stream reconnects and fills the hole from REST."""


class ClosedError(MdcoordError):
    """The client or runtime was closed while a request needed it."""


class BudgetUnavailableError(MdcoordError):
    """The shared rate budget (``rate_budget="redis://..."``) could not be reached or answered
    with an error, so no request was sent: ``address`` names it (never its password).

    Not retryable, and never answered with a budget of this machine's own: the other hosts
    behind the address would each take a full budget as well, and the address would be blocked.
    Start (or reach) the Redis server, or use ``rate_budget="machine"`` if this machine is the
    only one on its address."""

    def __init__(self, message: str, *, address: str = "") -> None:
        super().__init__(message)
        self.address = address


class _RequestContext:
    """Where an error happened: the endpoint, its parameters and the rate-limit group."""

    def _set_context(self, *, url: str | None, params: dict[str, Any] | None, group: str | None) -> None:
        self.url = url
        self.params = dict(params) if params else {}
        self.group = group

    def _where(self) -> str:
        if not self.url:
            return ""
        query = "&".join(f"{k}={v}" for k, v in self.params.items())
        return f" [GET {self.url}{'?' + query if query else ''}]"


class APIError(_RequestContext, MdcoordError):
    """The exchange answered with an error status.

    Attributes: ``status`` (HTTP status), ``server_message`` (the exchange's own text),
    ``url``, ``params``, ``group``.
    """

    def __init__(
        self,
        status: int,
        server_message: str,
        *,
        url: str | None = None,
        params: dict[str, Any] | None = None,
        group: str | None = None,
    ) -> None:
        self.status = status
        self.server_message = server_message
        self._set_context(url=url, params=params, group=group)
        super().__init__(f"HTTP {status}: {server_message}{self._where()}")


class BadRequestError(APIError):
    """HTTP 400: the exchange rejected a parameter (its message says which kind)."""


class NotFoundError(APIError):
    """HTTP 404: unknown path or unknown code."""


class MarketNotFoundError(NotFoundError):
    """HTTP 404 ``Code not found``: the market is unknown or delisted.

    ``markets`` lists the market code(s) of the failing request.
    """

    def __init__(self, status: int, server_message: str, *, markets: list[str], **kw: Any) -> None:
        self.markets = list(markets)
        super().__init__(status, server_message, **kw)
        self.args = (f"unknown or delisted market {', '.join(self.markets)}: {self.args[0]}",)


class RateLimitError(APIError):
    """HTTP 429: more requests than the group allows in one second. Retryable."""

    retryable = True


class IPBlockedError(APIError):
    """HTTP 418: the exchange blocked this IP for a while. Never retried; all traffic stops.

    ``retry_after`` is the block length in seconds when the answer states it, else None.
    """

    def __init__(self, status: int, server_message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(status, server_message, **kw)
        hint = f"; blocked for about {retry_after:g} s" if retry_after is not None else ""
        self.args = (f"the exchange blocked this IP (HTTP 418){hint}; all requests stopped: {self.args[0]}",)


class ServerError(APIError):
    """HTTP 5xx. Retryable."""

    retryable = True


class TransportError(_RequestContext, MdcoordError):
    """No usable HTTP answer (timeout, refused or dropped connection). Retryable."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        params: dict[str, Any] | None = None,
        group: str | None = None,
    ) -> None:
        self._set_context(url=url, params=params, group=group)
        super().__init__(f"{message}{self._where()}")


class RequestTimeoutError(TransportError):
    """No complete answer within the configured timeout."""


class ConnectionFailedError(TransportError):
    """The connection was refused, reset or dropped before a complete answer."""


class ResponseFormatError(TransportError):
    """A 2xx answer whose body is not the JSON the API promises (truncated, HTML, garbage).

    Retryable: such bodies come from proxies and broken connections, not from the request.
    """


class DayChangedError(TransportError):
    """The exchange's UTC day changed while a trades call ran, so ``days_ago`` shifted meaning.

    Retryable: the job plans the affected window again against the new day (at most three
    re-plans a call) instead of resending it; nothing from the failed page is cached. It reaches
    ``IncompleteDataError.failures`` only when the day kept changing through every re-plan."""


class IncompleteDataError(MdcoordError):
    """Some pieces could not be fetched even after their retries.

    Nothing is dropped silently: ``failures`` lists each piece that failed (market, range,
    the last error), and ``partial`` holds the DataFrame of everything that did arrive
    (its ``attrs["mdcoord"]`` lists the same failures).
    """

    def __init__(self, failures: list[dict[str, Any]], partial: pd.DataFrame | None = None) -> None:
        self.failures = failures
        self.partial = partial
        lines = [f"{len(failures)} piece(s) could not be fetched after retries:"]
        for f in failures[:10]:
            what = f.get("market") or ", ".join(f.get("markets") or []) or "?"
            where = f" {f['range']}" if f.get("range") else ""
            lines.append(f"  - {what}{where}: {f.get('error')}")
        if len(failures) > 10:
            lines.append(f"  ... and {len(failures) - 10} more (see .failures)")
        if partial is not None:
            lines.append(f"The {len(partial)} rows that did arrive are in .partial.")
        super().__init__("\n".join(lines))
