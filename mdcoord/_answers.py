"""Reading the exchange's answers: a body into JSON, an error status into a typed error.

Pure functions of an :class:`~mdcoord._transport.Answer`'s parts. Upbit's quotation errors are
``{"error": {"name": ..., "message": ...}}`` with real HTTP statuses; a 429 is reported to come
as plain text (``Too many API requests.``) and a 418's block length in an unknown format, so
both readings are handled. ``Remaining-Req: group=X; min=N; sec=N`` tells how many requests of
the group the server still allows in the current second.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from ._exceptions import (
    APIError,
    BadRequestError,
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

__all__ = ["decode", "error_for", "outcome_of", "parse_remaining_req"]

_REMAINING_RE = re.compile(r"group=([\w-]+);\s*min=(\d+);\s*sec=(\d+)")
_SECONDS_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:s\b|sec|second|초)", re.IGNORECASE)


def parse_remaining_req(value: str | None) -> tuple[str, int] | None:
    """``"group=candles; min=600; sec=9"`` → ``("candles", 9)``; None if absent or malformed."""
    if not value:
        return None
    m = _REMAINING_RE.search(value)
    return (m.group(1), int(m.group(3))) if m else None


def decode(body: bytes, content_type: str, **ctx: Any) -> Any:
    """The JSON of a 200 answer (an array or an object), or :class:`ResponseFormatError`."""
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


def error_for(status: int, body: bytes, headers: Mapping[str, str], **ctx: Any) -> MdcoordError:
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


def _block_seconds(headers: Mapping[str, str], text: str) -> float | None:
    """The block length a 418 states: ``Retry-After`` seconds, else a number of seconds in the body."""
    retry_after = headers.get("Retry-After")
    if retry_after:
        try:
            return float(retry_after)
        except ValueError:
            pass
    m = _SECONDS_RE.search(text)
    return float(m.group(1)) if m else None


# What an attempt's error counts as in the metrics (first matching class wins).
_OUTCOMES: tuple[tuple[type[MdcoordError], str], ...] = (
    (RateLimitError, "rate_limited"),
    (IPBlockedError, "blocked"),
    (ServerError, "server_errors"),
    (RequestTimeoutError, "timeouts"),
    (ResponseFormatError, "bad_bodies"),
    (TransportError, "connection_errors"),
    (APIError, "client_errors"),
)


def outcome_of(err: MdcoordError) -> str:
    """The metrics counter an attempt that failed with ``err`` adds to."""
    return next((name for cls, name in _OUTCOMES if isinstance(err, cls)), "client_errors")
