"""The public surface is deliberate: pinned here so a change to it is a visible decision."""

from __future__ import annotations

import inspect

import mdcoord

PUBLIC = {
    "APIError", "BadRequestError", "BudgetUnavailableError", "ClosedError", "ConnectionFailedError", "Coordinator",
    "CoordinatorMetadata", "CoordinatorRequest", "CoordinatorResponse", "DataType", "DayChangedError", "IPBlockedError",
    "IncompleteDataError", "InvalidRequestError", "MarketNotFoundError", "MdcoordError", "NotFoundError",
    "Options", "RateLimitError", "RequestTimeoutError", "ResponseFormatError", "RetryPolicy", "ServerError",
    "SplitStrategy", "Timeframe", "TransportError", "__version__", "acandles", "candles", "gaps",
    "get_options", "set_options", "metrics", "reset_metrics", "markets", "amarkets", "tickers", "atickers", "orderbooks", "aorderbooks",
    "trades", "atrades", "cache", "iter_candles", "aiter_candles", "download", "backfill", "BackfillSummary",
    "stream", "astream", "StreamError", "record", "arecord", "RecordSummary",
    "live_tickers", "live_orderbook", "live_candles", "LiveView",
}


def test_all_is_pinned() -> None:
    assert set(mdcoord.__all__) == PUBLIC
    for name in mdcoord.__all__:
        assert hasattr(mdcoord, name), name


def test_every_error_is_an_mdcoord_error() -> None:
    errors = [getattr(mdcoord, n) for n in mdcoord.__all__ if n.endswith("Error")]
    assert len(errors) == 18
    for cls in errors:
        assert issubclass(cls, mdcoord.MdcoordError), cls
    retryable = {c.__name__ for c in errors if c.retryable}
    assert retryable == {
        "RateLimitError", "ServerError", "TransportError", "RequestTimeoutError", "ConnectionFailedError",
        "ResponseFormatError", "DayChangedError",
    }


def test_async_twins_take_the_same_arguments() -> None:
    for name in ("candles", "markets", "tickers", "orderbooks", "trades"):
        sync, twin = getattr(mdcoord, name), getattr(mdcoord, "a" + name)
        assert inspect.signature(sync).parameters.keys() == inspect.signature(twin).parameters.keys()
        assert inspect.iscoroutinefunction(twin) and not inspect.iscoroutinefunction(sync)


def test_typed_package() -> None:
    import importlib.resources

    assert importlib.resources.files("mdcoord").joinpath("py.typed").is_file()
