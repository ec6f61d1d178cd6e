"""Market codes and quote currencies: validated once, before they reach a URL or a path.

A market code is ``QUOTE-BASE`` (``KRW-BTC``, ``BTC-ETH``, ``USDT-XRP``), letters and digits
only: it becomes part of URLs and of cache paths, so nothing else may pass. The server reads
codes case-insensitively; mdcoord writes them upper case everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ._exceptions import InvalidRequestError

__all__ = ["is_quote", "normalize_market", "normalize_symbols"]

_MARKET_RE = re.compile(r"^[A-Z0-9]{2,10}-[A-Z0-9]{1,20}$")
_QUOTE_RE = re.compile(r"^[A-Z0-9]{2,10}$")


def normalize_market(code: object) -> str:
    """``"krw-btc"`` → ``"KRW-BTC"``; raise :class:`InvalidRequestError` for anything malformed."""
    if not isinstance(code, str):
        raise InvalidRequestError(f"a market code must be a string like 'KRW-BTC', not {type(code).__name__}")
    norm = code.strip().upper()
    if not _MARKET_RE.match(norm):
        shown = code if len(code) <= 40 else code[:40] + "..."
        raise InvalidRequestError(
            f"malformed market code {shown!r}: expected QUOTE-BASE such as 'KRW-BTC', 'BTC-ETH' or 'USDT-XRP'"
        )
    return norm


def is_quote(value: object) -> bool:
    """True for something shaped like a quote currency (``"KRW"``, ``"usdt"``)."""
    return isinstance(value, str) and bool(_QUOTE_RE.match(value.strip().upper()))


def normalize_symbols(symbols: object, *, quotes_allowed: bool) -> tuple[str, ...]:
    """Market codes (and, where allowed, quote currencies such as ``"KRW"``), upper-cased,
    duplicates collapsed in order of first appearance."""
    if isinstance(symbols, str):
        items: list[object] = [symbols]
    elif isinstance(symbols, Iterable):
        items = list(symbols)
    else:
        raise InvalidRequestError(f"markets must be a code or a list of codes, not {type(symbols).__name__}")
    if not items:
        raise InvalidRequestError("no markets given: pass a code like 'KRW-BTC' or a non-empty list")
    out: list[str] = []
    for item in items:
        code = item.strip().upper() if quotes_allowed and is_quote(item) else normalize_market(item)  # type: ignore[union-attr]
        if code not in out:
            out.append(code)
    return tuple(out)
