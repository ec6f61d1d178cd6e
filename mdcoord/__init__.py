"""mdcoord: Upbit market data into pandas, split, fetched under the rate limit, aggregated.

>>> import mdcoord
>>> df = mdcoord.candles("KRW-BTC", "1m", count=1000)
>>> df.attrs["mdcoord"]["split_count"]

Offline: ``python -m mdcoord demo`` runs the same pipeline against the embedded exchange
(:mod:`mdcoord.sim`).
"""

from . import _accessor, cache  # noqa: F401 - _accessor registers df.mdc
from ._backfill import BackfillSummary, backfill
from ._api import (
    acandles,
    amarkets,
    aorderbooks,
    atickers,
    atrades,
    candles,
    gaps,
    markets,
    orderbooks,
    tickers,
    trades,
)
from ._config import Options, get_options, set_options
from ._coordinator import Coordinator
from ._stream import aiter_candles, download, iter_candles
from ._live import astream, stream
from ._record import RecordSummary, arecord, record
from ._views import LiveView, live_candles, live_orderbook, live_tickers
from ._exceptions import (
    APIError,
    BadRequestError,
    BudgetUnavailableError,
    ClosedError,
    ConnectionFailedError,
    DayChangedError,
    IncompleteDataError,
    InvalidRequestError,
    IPBlockedError,
    MarketNotFoundError,
    MdcoordError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    ServerError,
    StreamError,
    TransportError,
)
from ._metrics import metrics, reset_metrics
from ._request import CoordinatorMetadata, CoordinatorRequest, CoordinatorResponse, DataType, SplitStrategy
from ._retry import RetryPolicy
from ._timeframe import Timeframe
from ._version import __version__

__all__ = [
    "APIError",
    "BadRequestError",
    "BudgetUnavailableError",
    "ClosedError",
    "ConnectionFailedError",
    "Coordinator",
    "CoordinatorMetadata",
    "CoordinatorRequest",
    "CoordinatorResponse",
    "DataType",
    "DayChangedError",
    "IPBlockedError",
    "IncompleteDataError",
    "InvalidRequestError",
    "MarketNotFoundError",
    "MdcoordError",
    "NotFoundError",
    "Options",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseFormatError",
    "RetryPolicy",
    "ServerError",
    "SplitStrategy",
    "StreamError",
    "Timeframe",
    "TransportError",
    "__version__",
    "acandles",
    "aiter_candles",
    "cache",
    "amarkets",
    "aorderbooks",
    "atickers",
    "atrades",
    "backfill",
    "BackfillSummary",
    "candles",
    "download",
    "gaps",
    "iter_candles",
    "markets",
    "metrics",
    "orderbooks",
    "tickers",
    "trades",
    "stream",
    "astream",
    "record",
    "arecord",
    "RecordSummary",
    "live_tickers",
    "live_orderbook",
    "live_candles",
    "LiveView",
    "get_options",
    "set_options",
    "reset_metrics",
]
