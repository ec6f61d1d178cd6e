"""The coordinator's interface types: what is asked (:class:`CoordinatorRequest`), what comes back
(:class:`CoordinatorResponse`) and what is known about how it was done (:class:`CoordinatorMetadata`).

Strings live only at this edge: ``CoordinatorRequest.create`` turns ``"candles"``, ``"1m"``,
``"auto"``, dates and market codes into enums, :class:`~mdcoord._timeframe.Timeframe` and UTC
timestamps once, and rejects a bad value with a message that lists the valid ones.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from ._exceptions import InvalidRequestError, MdcoordError
from ._timeframe import Timeframe, to_utc

__all__ = [
    "CoordinatorMetadata",
    "CoordinatorRequest",
    "CoordinatorResponse",
    "DataType",
    "SplitStrategy",
    "normalize_market",
]

# QUOTE-BASE, e.g. KRW-BTC, BTC-ETH, USDT-XRP. Letters and digits only: a market code becomes part
# of URLs and (later) cache paths, so nothing else may pass.
_MARKET_RE = re.compile(r"^[A-Z0-9]{2,10}-[A-Z0-9]{1,20}$")
MAX_COUNT = 10_000_000  # a sanity bound (about 19 years of 1-minute candles), not an API limit


class DataType(enum.Enum):
    """What kind of data a request asks for."""

    CANDLES = "candles"


class SplitStrategy(enum.Enum):
    """How a request is cut into API-sized pieces. ``AUTO`` picks the data type's natural one."""

    AUTO = "auto"
    TIME = "time"
    SYMBOL = "symbol"
    COUNT = "count"


# The strategies each data type can run; the first is what AUTO means.
SUPPORTED_STRATEGIES: dict[DataType, tuple[SplitStrategy, ...]] = {
    DataType.CANDLES: (SplitStrategy.TIME,),
}


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


def _normalize_markets(symbols: object) -> tuple[str, ...]:
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
        code = normalize_market(item)
        if code not in out:  # duplicates collapse; order of first appearance is kept
            out.append(code)
    return tuple(out)


@dataclass(frozen=True)
class CoordinatorRequest:
    """A normalized, validated request. Build it with :meth:`create`.

    Range semantics: ``start`` inclusive, ``end`` exclusive, both tz-aware UTC. ``count`` alone
    means the ``count`` most recent *closed* candles; ``count`` with ``end`` the ``count`` newest
    candles starting before ``end``; ``count`` with ``start`` is rejected (ambiguous).
    """

    data_type: DataType
    symbols: tuple[str, ...]
    timeframe: Timeframe | None = None
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    count: int | None = None
    split_strategy: SplitStrategy = SplitStrategy.AUTO
    include_forming: bool = False

    @classmethod
    def create(
        cls,
        data_type: DataType | str,
        symbols: str | Iterable[str],
        timeframe: Timeframe | str | None = None,
        *,
        start: Any = None,
        end: Any = None,
        count: int | None = None,
        split_strategy: SplitStrategy | str = "auto",
        include_forming: bool = False,
    ) -> CoordinatorRequest:
        dt = _parse_enum(DataType, data_type, "data type")
        strategy = _parse_enum(SplitStrategy, split_strategy, "split_strategy")
        supported = SUPPORTED_STRATEGIES[dt]
        if strategy is not SplitStrategy.AUTO and strategy not in supported:
            raise InvalidRequestError(
                f"split_strategy {strategy.value!r} does not apply to {dt.value}; "
                f"use 'auto' or one of {[s.value for s in supported]}"
            )
        markets = _normalize_markets(symbols)
        tf = Timeframe.parse(timeframe) if timeframe is not None else None
        if dt is DataType.CANDLES and tf is None:
            raise InvalidRequestError("candles need a timeframe such as '1m', '1h' or '1d'")
        start_ts = to_utc(start, "start") if start is not None else None
        end_ts = to_utc(end, "end") if end is not None else None
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
        if not isinstance(include_forming, bool):
            raise InvalidRequestError(f"include_forming must be True or False, got {include_forming!r}")
        return cls(dt, markets, tf, start_ts, end_ts, count, strategy, include_forming)

    @property
    def strategy_used(self) -> SplitStrategy:
        """The strategy that will actually run (AUTO resolved)."""
        if self.split_strategy is SplitStrategy.AUTO:
            return SUPPORTED_STRATEGIES[self.data_type][0]
        return self.split_strategy

    def describe(self) -> dict[str, Any]:
        """A JSON-safe echo of the request, for metadata."""
        return {
            "data_type": self.data_type.value,
            "markets": list(self.symbols),
            "timeframe": self.timeframe.value if self.timeframe else None,
            "start": self.start.isoformat() if self.start is not None else None,
            "end": self.end.isoformat() if self.end is not None else None,
            "count": self.count,
            "split_strategy": self.split_strategy.value,
            "include_forming": self.include_forming,
        }


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
    rounds: int = 0
    gaps_found: int = 0
    missing_candles: int = 0
    not_fetched: int = 0
    complete: bool = True
    failures: list[dict[str, Any]] = field(default_factory=list)
    spans: dict[str, list[str]] = field(default_factory=dict)
    forming_candle: str | None = None
    source: str = ""
    fetched_at: str = ""
    timeframe: str | None = None
    markets: list[str] = field(default_factory=list)
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["processing_time_ms"] = round(self.processing_time_ms, 3)
        d["limiter_wait_s"] = round(self.limiter_wait_s, 4)
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
