"""The exchange's market list: the ``markets()`` data type, and the catalog every other data type
uses to validate codes and expand quote currencies (``"KRW"`` → every KRW market).

The catalog is fetched once per client (``/market/all?is_details=true``, its own rate-limit
group) and reused for ten minutes; a code that is not in it triggers one refresh before it is
reported, so a market listed a minute ago is not rejected.
"""

from __future__ import annotations

import asyncio
import difflib
import weakref
from typing import Any

import pandas as pd

from ._client import CallStats, Client
from ._config import Options
from ._exceptions import InvalidRequestError, MarketNotFoundError, ResponseFormatError
from ._frames import markets_to_frame
from ._groups import Group
from ._job import Job, JobResult

__all__ = ["MarketCatalog", "MarketsJob", "catalog_of"]

CATALOG_TTL_S = 600.0


def market_not_found(candidates: dict[str, list[str]], base_url: str) -> MarketNotFoundError:
    """The error for codes the exchange's list lacks: each with up to three close matches among
    its ``candidates`` (codes, or quote currencies for a quote)."""
    hints = {c: difflib.get_close_matches(c, known, n=3) for c, known in candidates.items()}
    shown = "; ".join(f"{c} (did you mean {', '.join(h)}?)" if h else c for c, h in hints.items())
    return MarketNotFoundError(404, f"not in the exchange's market list (/market/all): {shown}",
                               markets=list(candidates), url=base_url + "/market/all", group=Group.MARKET.value)


class MarketCatalog:
    """The market list of one exchange, cached."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._rows: list[dict[str, Any]] | None = None
        self._fetched_at = float("-inf")
        self._lock: asyncio.Lock | None = None

    async def rows(self, options: Options, stats: CallStats, *, refresh: bool = False) -> list[dict[str, Any]]:
        """``/market/all?is_details=true`` rows (cached for ten minutes unless ``refresh``)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one fetch even when many jobs ask at once
            stale = self._client.clock() - self._fetched_at > CATALOG_TTL_S
            if refresh or stale or self._rows is None:
                self._rows = await self._client.get_json(
                    "/market/all", {"is_details": "true"}, options=options, stats=stats, parse=_parse_markets
                )
                self._fetched_at = self._client.clock()
            return self._rows

    async def codes(self, options: Options, stats: CallStats, *, refresh: bool = False) -> list[str]:
        return sorted(str(r["market"]).upper() for r in await self.rows(options, stats, refresh=refresh))

    async def resolve(
        self, symbols: tuple[str, ...], options: Options, stats: CallStats, *, quotes_allowed: bool
    ) -> tuple[str, ...]:
        """Expand quote currencies and check every code; unknown codes raise, naming them."""
        codes = await self.codes(options, stats)
        out = self._expand(symbols, codes, quotes_allowed)
        unknown = [c for c in out if c not in set(codes)]
        if unknown:  # maybe listed since we looked: look once more before failing
            codes = await self.codes(options, stats, refresh=True)
            out = self._expand(symbols, codes, quotes_allowed)
            unknown = [c for c in out if c not in set(codes)]
        if unknown:
            raise market_not_found({c: codes for c in unknown}, self._client.base_url)
        return out

    @staticmethod
    def _expand(symbols: tuple[str, ...], codes: list[str], quotes_allowed: bool) -> tuple[str, ...]:
        quotes = sorted({c.split("-")[0] for c in codes})
        out: list[str] = []
        for s in symbols:
            if "-" in s:
                members = [s]
            elif quotes_allowed and s in quotes:
                members = [c for c in codes if c.startswith(s + "-")]
            else:
                raise InvalidRequestError(f"unknown quote currency {s!r}; the exchange quotes in {quotes}")
            out.extend(m for m in members if m not in out)
        return tuple(out)


def expand_codes(given: list[str], listing: pd.DataFrame, base_url: str | None) -> list[str]:
    """``given`` codes and quote currencies (``"KRW"``: its markets) checked against a
    :func:`mdcoord.markets` frame; unknown ones raise :class:`MarketNotFoundError` with suggestions."""
    known = set(listing.index)
    quotes = sorted(set(listing["quote"]))
    out: list[str] = []
    unknown: dict[str, list[str]] = {}  # code -> where to look for close matches
    for m in given:
        code = m.upper()
        if "-" not in code:
            found = sorted(listing.index[listing["quote"] == code])
            if not found:
                unknown[code] = quotes
            out.extend(found)
        elif code not in known:
            unknown[code] = sorted(known)
        else:
            out.append(code)
    if unknown:
        raise market_not_found(unknown, base_url)
    return list(dict.fromkeys(out))


_catalogs: weakref.WeakKeyDictionary[Client, MarketCatalog] = weakref.WeakKeyDictionary()


def catalog_of(client: Client) -> MarketCatalog:
    """The catalog of ``client``'s exchange (created on first use, lives as long as the client)."""
    catalog = _catalogs.get(client)
    if catalog is None:
        catalog = _catalogs[client] = MarketCatalog(client)
    return catalog


class MarketsJob(Job[None]):
    """``markets(quote=..., details=...)``: one request, always fresh (it also refreshes the catalog)."""

    group = Group.MARKET

    async def fetch(self, chunk: None) -> list[dict[str, Any]]:
        return await catalog_of(self.client).rows(self.options, self.stats, refresh=True)

    async def run(self) -> JobResult:
        (outcome,) = await self.executor.run([None])
        if outcome.error is not None:
            raise outcome.error
        rows = outcome.data
        frame = markets_to_frame(rows, details=self.req.details)
        if self.req.symbols:
            quotes = sorted(set(frame["quote"]))
            unknown = [q for q in self.req.symbols if q not in quotes]
            if unknown:
                raise InvalidRequestError(f"unknown quote currency {unknown}; the exchange quotes in {quotes}")
            frame = frame[frame["quote"].isin(self.req.symbols)]
        return JobResult(frame=frame, requested_size=len(frame))


def _parse_markets(data: Any) -> list[dict[str, Any]]:
    """``/market/all`` rows; a wrong shape is retried like a garbled body."""
    if not isinstance(data, list) or any(not isinstance(r, dict) or "market" not in r for r in data):
        raise ResponseFormatError("expected a JSON array of markets")
    return data
