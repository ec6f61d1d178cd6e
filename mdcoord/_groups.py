"""The rate-limit groups of the quotation API: the one place their names are written.

Upbit counts requests per IP **per group**; each group allows 10 requests a second and groups
are independent. The names are the ones the server sends in ``Remaining-Req`` (the
documentation says ``candle`` and ``trade``; the header says ``candles`` and ``crix-trades``).
Every other module names a group through :class:`Group`, and an endpoint's group through
:func:`group_for`, so a renamed or added group is one edit here.
"""

from __future__ import annotations

import enum

from ._exceptions import InvalidRequestError

__all__ = ["Group", "group_for"]


class Group(str, enum.Enum):
    """A rate-limit group; its value is the name in ``Remaining-Req: group=<name>``."""

    MARKET = "market"
    CANDLES = "candles"
    TICKER = "ticker"
    ORDERBOOK = "orderbook"
    TRADES = "crix-trades"

    def __str__(self) -> str:  # metrics labels, log lines and error messages show the wire name
        return self.value


# Path prefix (below the base URL) → group. Longest prefixes need not come first: no prefix here
# is a prefix of another.
_BY_PREFIX = (
    ("/candles", Group.CANDLES),
    ("/market", Group.MARKET),
    ("/ticker", Group.TICKER),
    ("/orderbook", Group.ORDERBOOK),
    ("/trades", Group.TRADES),
)


def group_for(path: str) -> Group:
    """The rate-limit group of an endpoint path (``/candles/minutes/1`` → ``Group.CANDLES``)."""
    for prefix, group in _BY_PREFIX:
        if path.startswith(prefix):
            return group
    raise InvalidRequestError(f"no known rate-limit group for path {path!r}")
