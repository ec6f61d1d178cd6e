"""The coordinator's interface types: what is asked (:class:`CoordinatorRequest`), what comes back
(:class:`CoordinatorResponse`) and what is known about how it was done (:class:`CoordinatorMetadata`).

Strings live only at this edge: ``CoordinatorRequest.create`` turns ``"candles"``, ``"1m"``,
``"auto"``, dates and market codes into enums, :class:`~mdcoord._timeframe.Timeframe` and UTC
timestamps once, and rejects a bad value with a message that lists the valid ones.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from ._codes import normalize_symbols
from ._exceptions import InvalidRequestError, MdcoordError
from ._timeframe import Timeframe, to_utc

__all__ = [
    "CoordinatorMetadata",
    "CoordinatorRequest",
    "CoordinatorResponse",
    "DataType",
    "SplitStrategy",
]

MAX_COUNT = 10_000_000  # a sanity bound (about 19 years of 1-minute candles), not an API limit


class DataType(enum.Enum):
    """What kind of data a request asks for."""

    CANDLES = "candles"
    TICKERS = "tickers"
    ORDERBOOKS = "orderbooks"
    TRADES = "trades"
    MARKETS = "markets"


class SplitStrategy(enum.Enum):
    """How a request is cut into API-sized pieces. ``AUTO`` picks the data type's natural one."""

    AUTO = "auto"
    TIME = "time"
    SYMBOL = "symbol"
    COUNT = "count"


# The strategies each data type can run; the first is what AUTO means (trades: TIME for a range,
# COUNT for count=N — the same windows-then-cursor machinery, named by what bounds it).
SUPPORTED_STRATEGIES: dict[DataType, tuple[SplitStrategy, ...]] = {
    DataType.CANDLES: (SplitStrategy.TIME,),
    DataType.TICKERS: (SplitStrategy.SYMBOL,),
    DataType.ORDERBOOKS: (SplitStrategy.SYMBOL,),
    DataType.TRADES: (SplitStrategy.TIME, SplitStrategy.COUNT),
    DataType.MARKETS: (SplitStrategy.SYMBOL,),
}
MAX_DEPTH = 30


def _parse_enum(enum_cls: type[enum.Enum], value: object, name: str) -> Any:
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        try:
            return enum_cls(value.strip().lower())
        except ValueError:
            pass
    valid = ", ".join(repr(m.value) for m in enum_cls)
    raise InvalidRequestError(f"unknown {name} {value!r}; valid values are {valid}")


@dataclass(frozen=True)
class CoordinatorRequest:
    """A normalized, validated request. Build it with :meth:`create`.

    - candles: ``timeframe`` and ``count`` (the most recent *closed* candles, or the newest before
      ``end``) or ``start`` with an optional ``end`` (start inclusive, end exclusive, tz-aware UTC).
    - trades: ``count`` (the most recent trades) or ``start``/``end`` within the last 7 days.
    - tickers: market codes and/or quote currencies (``"KRW"`` = every KRW market).
    - orderbooks: market codes, ``depth`` (levels, 1-30) and ``level`` (KRW price grouping).
    - markets: quote currencies to keep (empty = all) and ``details``.
    """

    data_type: DataType
    symbols: tuple[str, ...]
    timeframe: Timeframe | None = None
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    count: int | None = None
    split_strategy: SplitStrategy = SplitStrategy.AUTO
    include_forming: bool = False
    depth: int | None = None
    level: float | None = None
    details: bool = False

    @classmethod
    def create(
        cls,
        data_type: DataType | str,
        symbols: str | Iterable[str] = (),
        timeframe: Timeframe | str | None = None,
        *,
        start: Any = None,
        end: Any = None,
        count: int | None = None,
        split_strategy: SplitStrategy | str = "auto",
        include_forming: bool = False,
        depth: int | None = None,
        level: float | None = None,
        details: bool = False,
    ) -> CoordinatorRequest:
        dt = _parse_enum(DataType, data_type, "data type")
        strategy = _parse_enum(SplitStrategy, split_strategy, "split_strategy")
        supported = SUPPORTED_STRATEGIES[dt]
        if strategy is not SplitStrategy.AUTO and strategy not in supported:
            raise InvalidRequestError(
                f"split_strategy {strategy.value!r} does not apply to {dt.value}; "
                f"use 'auto' or one of {[s.value for s in supported]}"
            )
        if dt is DataType.MARKETS:
            symbols_n = () if symbols in ((), [], None) else normalize_symbols(symbols, quotes_allowed=True)
            if any("-" in q for q in symbols_n):
                raise InvalidRequestError(f"markets() filters by quote currency such as 'KRW', not by code: {symbols_n}")
        else:
            symbols_n = normalize_symbols(symbols, quotes_allowed=dt is DataType.TICKERS)
        tf = Timeframe.parse(timeframe) if timeframe is not None else None
        if dt is DataType.CANDLES and tf is None:
            raise InvalidRequestError("candles need a timeframe such as '1m', '1h' or '1d'")
        if dt is not DataType.CANDLES and tf is not None:
            raise InvalidRequestError(f"{dt.value} take no timeframe")
        start_ts = to_utc(start, "start") if start is not None else None
        end_ts = to_utc(end, "end") if end is not None else None
        if dt in (DataType.CANDLES, DataType.TRADES):
            _check_window(count, start_ts, end_ts)
        elif count is not None or start_ts is not None or end_ts is not None:
            raise InvalidRequestError(f"{dt.value} are a snapshot: they take no count, start or end")
        if dt is DataType.TRADES and strategy is not SplitStrategy.AUTO:
            wanted = SplitStrategy.COUNT if count is not None else SplitStrategy.TIME
            if strategy is not wanted:
                raise InvalidRequestError(f"trades with {'count' if count else 'start/end'} use split_strategy {wanted.value!r}")
        if not isinstance(include_forming, bool):
            raise InvalidRequestError(f"include_forming must be True or False, got {include_forming!r}")
        if depth is not None:
            if dt is not DataType.ORDERBOOKS:
                raise InvalidRequestError("depth applies to orderbooks only")
            if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
                raise InvalidRequestError(f"depth must be an int from 1 to {MAX_DEPTH} (book levels), got {depth!r}")
        if level is not None:
            if dt is not DataType.ORDERBOOKS:
                raise InvalidRequestError("level applies to orderbooks only")
            if isinstance(level, bool) or not isinstance(level, (int, float)) or level < 0:
                raise InvalidRequestError(f"level must be a price step >= 0 (KRW markets only), got {level!r}")
        if not isinstance(details, bool):
            raise InvalidRequestError(f"details must be True or False, got {details!r}")
        return cls(dt, symbols_n, tf, start_ts, end_ts, count, strategy, include_forming, depth, level, details)

    @property
    def strategy_used(self) -> SplitStrategy:
        """The strategy that will actually run (AUTO resolved)."""
        if self.split_strategy is not SplitStrategy.AUTO:
            return self.split_strategy
        if self.data_type is DataType.TRADES:
            return SplitStrategy.COUNT if self.count is not None else SplitStrategy.TIME
        return SUPPORTED_STRATEGIES[self.data_type][0]

    def describe(self) -> dict[str, Any]:
        """A JSON-safe echo of the request, for metadata (only the fields that apply)."""
        d: dict[str, Any] = {"data_type": self.data_type.value, "markets": list(self.symbols)}
        if self.data_type in (DataType.CANDLES, DataType.TRADES):
            d.update(
                start=self.start.isoformat() if self.start is not None else None,
                end=self.end.isoformat() if self.end is not None else None,
                count=self.count,
            )
        if self.data_type is DataType.CANDLES:
            d.update(timeframe=self.timeframe.value if self.timeframe else None, include_forming=self.include_forming)
        if self.data_type is DataType.ORDERBOOKS:
            d.update(depth=self.depth, level=self.level)
        if self.data_type is DataType.MARKETS:
            d.update(details=self.details)
        d["split_strategy"] = self.split_strategy.value
        return d


def _check_window(count: int | None, start_ts: pd.Timestamp | None, end_ts: pd.Timestamp | None) -> None:
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int):
            raise InvalidRequestError(f"count must be a positive int, got {count!r}")
        if count <= 0:
            raise InvalidRequestError(f"count must be > 0, got {count}")
        if count > MAX_COUNT:
            raise InvalidRequestError(f"count={count} is larger than the supported {MAX_COUNT}; use start/end")
        if start_ts is not None:
            raise InvalidRequestError(
                "give either start (with an optional end) or count (with an optional end), not count with start"
            )
    elif start_ts is None:
        raise InvalidRequestError("give start (and optionally end) or count")
    if start_ts is not None and end_ts is not None and end_ts <= start_ts:
        raise InvalidRequestError(f"end ({end_ts.isoformat()}) must be after start ({start_ts.isoformat()})")


@dataclass
class CoordinatorMetadata:
    """How a request was answered. ``to_dict()`` is what lands in ``df.attrs["mdcoord"]``.

    - ``original_request_size``: items asked for (candles: ``count`` per market, or the number of
      grid slots in the range per market).
    - ``split_count``: API requests planned (pieces); ``requests_sent`` counts attempts on the wire,
      retries included; ``retries``; ``rate_limited`` (HTTP 429 answers seen).
    - ``parallel_requests``: the most requests in flight at once.
    - ``data_count``: rows in the result; ``gaps_found`` / ``missing_candles``: missing intervals on
      the grid inside the span of each market (see :func:`mdcoord.gaps`), ``not_fetched`` of them
      lie in pieces that failed; ``complete``: every piece was answered.
    - ``cache``: whether the cache was used, its directory and how many rows it supplied.
    - ``unrecorded`` (trades): stretches older than the exchange's 7 days that the cache (a
      recording) does not hold, ``{market, start, end}``: no data exists for them anywhere.
    - ``rate_budget``: whose budget the requests spent; ``local_address``: the local IP they left
      from when one was chosen (``Options.local_address``; None: the system's choice).
    """

    request: dict[str, Any]
    original_request_size: int = 0
    split_count: int = 0
    parallel_requests: int = 0
    processing_time_ms: float = 0.0
    data_count: int = 0
    split_strategy_used: str = ""
    requests_sent: int = 0
    retries: int = 0
    rate_limited: int = 0
    limiter_wait_s: float = 0.0
    budget_wait_s: float = 0.0
    rate_budget: str = "machine"
    local_address: str | None = None
    rounds: int = 0
    gaps_found: int = 0
    missing_candles: int = 0
    not_fetched: int = 0
    complete: bool = True
    failures: list[dict[str, Any]] = field(default_factory=list)
    spans: dict[str, list[str]] = field(default_factory=dict)
    forming_candle: str | None = None
    cache: dict[str, Any] | None = None
    source: str = ""
    fetched_at: str | None = None
    unrecorded: list[dict[str, Any]] = field(default_factory=list)
    timeframe: str | None = None
    markets: list[str] = field(default_factory=list)
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["processing_time_ms"] = round(self.processing_time_ms, 3)
        d["limiter_wait_s"] = round(self.limiter_wait_s, 4)
        d["budget_wait_s"] = round(self.budget_wait_s, 4)
        return d


@dataclass
class CoordinatorResponse:
    """The answer to a :class:`CoordinatorRequest`.

    ``success`` is True when every piece arrived. On failure ``error`` holds the typed error and
    ``data`` whatever did arrive (possibly None). :meth:`unwrap` returns the data or raises.
    """

    success: bool
    data: pd.DataFrame | None
    metadata: CoordinatorMetadata
    error: MdcoordError | None = None

    def unwrap(self) -> pd.DataFrame:
        if self.error is not None:
            raise self.error
        assert self.data is not None
        return self.data
