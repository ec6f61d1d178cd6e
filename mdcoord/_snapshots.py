"""Tickers and orderbooks: snapshots split by symbol.

Both ask one endpoint for many markets at once (``markets=A,B,...``). The job resolves the
symbols through the market catalog (so an unknown code is named before anything else is sent
and ``"KRW"`` expands to every KRW market), cuts the list into chunks of
``options.tickers_per_request`` (10) or ``options.orderbooks_per_request`` (5), fetches the
chunks concurrently under the group's limiter, and aggregates them into one frame.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ._exceptions import ResponseFormatError
from ._frames import orderbooks_to_frame, tickers_to_frame
from ._groups import Group
from ._job import Job, JobResult, failure
from ._markets import catalog_of

__all__ = ["OrderbookJob", "SymbolChunk", "TickerJob", "split_symbols"]


class MissingDataNotice(Exception):
    """The exchange answered, but without rows for some requested markets."""

    def __init__(self, path: str, markets: list[str]) -> None:
        super().__init__(f"the exchange answered {path} without data for {', '.join(markets)}")


@dataclass(frozen=True)
class SymbolChunk:
    """One request for several markets."""

    markets: tuple[str, ...]


def split_symbols(markets: tuple[str, ...], size: int) -> list[SymbolChunk]:
    """``markets`` in chunks of at most ``size``, order kept (189 markets, size 10 → 19 chunks)."""
    return [SymbolChunk(markets[i : i + size]) for i in range(0, len(markets), size)]


class _SymbolJob(Job[SymbolChunk]):
    path = ""
    quotes_allowed = False
    required: tuple[str, ...] = ("market",)

    @abstractmethod
    def chunk_size(self) -> int:
        """Markets per request (from the options)."""

    def params(self, chunk: SymbolChunk) -> dict[str, Any]:
        return {"markets": ",".join(chunk.markets)}

    @abstractmethod
    def to_frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """The answers' rows as the data type's frame."""

    async def fetch(self, chunk: SymbolChunk) -> list[dict[str, Any]]:
        params = self.params(chunk)

        def parse(data: Any) -> list[dict[str, Any]]:  # a wrong shape is retried like a garbled body
            if not isinstance(data, list) or any(
                not isinstance(r, dict) or any(k not in r for k in self.required) for r in data
            ):
                raise ResponseFormatError(f"expected a JSON array of objects with {self.required}")
            return data

        return await self.client.get_json(self.path, params, options=self.options, stats=self.stats, parse=parse)

    async def run(self) -> JobResult:
        catalog = catalog_of(self.client)
        markets = await catalog.resolve(self.req.symbols, self.options, self.stats, quotes_allowed=self.quotes_allowed)
        chunks = split_symbols(markets, self.chunk_size())
        outcomes = await self.executor.run(chunks)
        rows = [r for o in outcomes if o.error is None for r in o.data]
        failures = [
            failure(None, "", o.error, markets=list(o.chunk.markets)) for o in outcomes if o.error is not None
        ]
        answered = {str(r["market"]).upper() for r in rows}
        asked = [m for o in outcomes if o.error is None for m in o.chunk.markets]
        silent = [m for m in asked if m not in answered]
        if silent:  # e.g. an orderbook `level` the market does not support answers []
            failures.append(failure(None, "", MissingDataNotice(self.path, silent), markets=silent))
        return JobResult(frame=self.to_frame(rows), requested_size=len(markets), failures=failures,
                         meta={"markets": list(markets)})


class TickerJob(_SymbolJob):
    path = "/ticker"
    group = Group.TICKER
    quotes_allowed = True
    required = ("market", "trade_price", "timestamp")

    def chunk_size(self) -> int:
        return self.options.tickers_per_request

    def to_frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        return tickers_to_frame(rows)


class OrderbookJob(_SymbolJob):
    path = "/orderbook"
    group = Group.ORDERBOOK
    required = ("market", "timestamp", "orderbook_units")

    def chunk_size(self) -> int:
        return self.options.orderbooks_per_request

    def params(self, chunk: SymbolChunk) -> dict[str, Any]:
        params = super().params(chunk)
        if self.req.depth is not None:
            params["count"] = self.req.depth
        if self.req.level is not None:
            params["level"] = f"{self.req.level:g}"
        return params

    def to_frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        frame = orderbooks_to_frame(rows)
        if self.req.depth is not None:  # a server that ignores count must not hand back more
            frame = frame[frame.index.get_level_values("level") <= self.req.depth]
        return frame
