"""Layer 3: the coordinator wires request → job (planner + executor) → frame + metadata.

It does little itself: it resolves options, picks the job for the data type, runs it on the
runtime loop and packs the answer into a :class:`CoordinatorResponse` whose frame carries its
metadata in ``df.attrs["mdcoord"]``.

>>> coord = Coordinator()
>>> resp = coord.execute(CoordinatorRequest.create("candles", "KRW-BTC", "1m", count=1000))
>>> resp.data.attrs["mdcoord"]["split_count"]
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from ._candles import CandleJob
from ._job import Job
from ._markets import MarketsJob, catalog_of
from ._snapshots import OrderbookJob, TickerJob
from ._trades import TradeJob
from ._client import CallStats
from ._config import Options, budget_label, get_options, resolve_base_url, resolve_local_address, resolve_rate_budget, with_overrides
from ._exceptions import IncompleteDataError, MdcoordError
from ._executor import Executor
from ._metrics import METRICS
from ._progress import Progress
from ._request import CoordinatorMetadata, CoordinatorRequest, CoordinatorResponse, DataType
from ._runtime import Runtime, get_runtime
from ._version import __version__

__all__ = ["Coordinator"]

_JOBS: dict[DataType, type[Job[Any]]] = {
    DataType.CANDLES: CandleJob,
    DataType.TICKERS: TickerJob,
    DataType.ORDERBOOKS: OrderbookJob,
    DataType.TRADES: TradeJob,
    DataType.MARKETS: MarketsJob,
}


class Coordinator:
    """Answers :class:`CoordinatorRequest` objects against one exchange.

    ``base_url`` defaults to ``$MDCOORD_BASE_URL`` or the real Upbit API; ``options`` overrides
    the process-wide :func:`mdcoord.set_options` defaults (any subset, as keyword arguments).
    """

    def __init__(self, base_url: str | None = None, *, runtime: Runtime | None = None, **options: Any) -> None:
        self.base_url = resolve_base_url(base_url)
        self._runtime = runtime or get_runtime()
        with_overrides(get_options(), options)  # validate now, not at the first request
        self._overrides = options

    @property
    def options(self) -> Options:
        """The options a request runs with now: the overrides given over :func:`set_options`'."""
        return with_overrides(get_options(), self._overrides)

    def execute(self, request: CoordinatorRequest) -> CoordinatorResponse:
        """Answer ``request``, blocking (works inside a running event loop too)."""
        return self._runtime.run(self._execute(request, self.options))

    async def aexecute(self, request: CoordinatorRequest) -> CoordinatorResponse:
        """Answer ``request`` from async code (on any event loop, mdcoord's own included)."""
        return await self._runtime.arun(self._execute(request, self.options))

    async def exchange_time(self) -> pd.Timestamp | None:
        """The exchange's current time as this process knows it (its latest ``Date`` plus the
        time elapsed since), asking for the market list first if it has not heard from the
        exchange yet; None if the exchange sends no ``Date``. Await it from any loop."""
        return await self._runtime.arun(self._exchange_time(self.options))

    async def _exchange_time(self, options: Options) -> pd.Timestamp | None:
        client = self._runtime.client(self.base_url, resolve_local_address(options))
        if client.server_clock.estimate() is None:
            await catalog_of(client).rows(options, CallStats())  # one request; later calls reuse the list
        now = client.server_clock.estimate()
        return pd.Timestamp(now, unit="s", tz="UTC") if now is not None else None

    async def _execute(self, request: CoordinatorRequest, options: Options) -> CoordinatorResponse:
        started = time.perf_counter()
        client = self._runtime.client(self.base_url, resolve_local_address(options))
        stats = CallStats()
        meta = CoordinatorMetadata(
            request=request.describe(),
            split_strategy_used=request.strategy_used.value,
            source=self.base_url,
            timeframe=request.timeframe.value if request.timeframe else None,
            markets=list(request.symbols),
            version=__version__,
            rate_budget=budget_label(resolve_rate_budget(options)),
            local_address=client.local_address,
        )
        progress = Progress(options.progress, f"{request.data_type.value} {','.join(request.symbols)[:40]}".strip())
        job = _JOBS[request.data_type](request, client, options, stats, progress)
        try:
            result = await job.run()
        except MdcoordError as err:
            self._fill_counters(meta, stats, job.executor, started, client.server_clock.estimate())
            self._record(request, meta, None)
            return CoordinatorResponse(False, None, meta, err)
        finally:
            progress.close()

        meta.original_request_size = result.requested_size
        meta.rounds = result.rounds
        meta.failures = result.failures
        meta.complete = not result.failures
        for key, value in result.meta.items():
            assert hasattr(meta, key), f"CoordinatorMetadata has no field {key!r}"  # a job's bug, not the user's
            setattr(meta, key, value)
        meta.data_count = len(result.frame)
        self._fill_counters(meta, stats, job.executor, started, client.server_clock.estimate())
        self._record(request, meta, result.meta.get("cache"))
        frame = result.frame
        frame.attrs["mdcoord"] = meta.to_dict()
        # success means every piece arrived, whatever on_error says; "partial" only decides
        # whether the missing pieces are an error to raise or a fact listed in the metadata
        error = IncompleteDataError(meta.failures, frame) if result.failures and options.on_error == "raise" else None
        return CoordinatorResponse(not result.failures, frame, meta, error)

    @staticmethod
    def _record(request: CoordinatorRequest, meta: CoordinatorMetadata, cache: dict[str, Any] | None) -> None:
        """Feed the process-wide metrics (``mdcoord.metrics("splits")`` / ``("cache")``)."""
        METRICS.call(
            request.data_type.value, meta.split_strategy_used,
            pieces=meta.split_count, requests=meta.requests_sent, rows=meta.data_count, rounds=meta.rounds,
            failed=len(meta.failures), seconds=meta.processing_time_ms / 1000,
            cache_rows=cache["rows_from_cache"] if cache and cache.get("enabled") else None,
        )

    @staticmethod
    def _fill_counters(
        meta: CoordinatorMetadata, stats: CallStats, executor: Executor[Any], started: float, exchange_now: float | None
    ) -> None:
        meta.split_count = executor.pieces
        meta.parallel_requests = executor.max_in_flight
        meta.requests_sent = stats.requests
        meta.retries = stats.retries
        meta.rate_limited = stats.rate_limited
        meta.limiter_wait_s = stats.limiter_wait_s
        meta.budget_wait_s = stats.budget_wait_s
        meta.processing_time_ms = (time.perf_counter() - started) * 1000
        # the exchange's time (its Date header, plus the time elapsed here since), never this
        # machine's wall clock; None when this process has not heard from the exchange yet
        meta.fetched_at = (
            pd.Timestamp(exchange_now, unit="s", tz="UTC").isoformat(timespec="milliseconds")
            if exchange_now is not None else None
        )
