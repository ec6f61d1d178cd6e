"""Columnar OHLCV bars and the one aggregation every candle unit goes through.

A :class:`Bars` holds only non-empty intervals (an interval without trades has no bar), sorted by
start. Every candle the sim serves is ``coarsen``-ed from finer bars or built by
``from_trades`` from the tape, so all units are exact aggregations of the same trades: open =
first, close = last, high = max, low = min, volume and value = sums, last = last trade's ms.
Sums of floats may differ in the last bits between routes (summation order); nothing else may.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True, slots=True)
class Bars:
    """Non-empty bars in ascending ``start`` order; all columns have the same length."""

    start: np.ndarray  # int64 epoch ms of the interval start
    open: np.ndarray  # float64
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray  # base units
    value: np.ndarray  # quote units: sum of price * volume
    last: np.ndarray  # int64 epoch ms of the last trade

    def __len__(self) -> int:
        return int(self.start.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self))

    @classmethod
    def empty(cls) -> Bars:
        i, f = np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(i, f, f, f, f, f, f, i)

    def take(self, index: np.ndarray | slice) -> Bars:
        """Rows selected by a boolean mask, an index array or a slice."""
        return Bars(*(getattr(self, f.name)[index] for f in fields(self)))

    @classmethod
    def concat(cls, parts: list[Bars]) -> Bars:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def coarsen(self, keys: np.ndarray) -> Bars:
        """Merge consecutive rows with equal ``keys`` (the coarser interval's start, ascending)."""
        if len(self) == 0:
            return self
        first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        last = np.r_[first[1:] - 1, len(self) - 1]
        return Bars(
            start=keys[first],
            open=self.open[first],
            high=np.maximum.reduceat(self.high, first),
            low=np.minimum.reduceat(self.low, first),
            close=self.close[last],
            volume=np.add.reduceat(self.volume, first),
            value=np.add.reduceat(self.value, first),
            last=self.last[last],
        )

    def clip(self, lo_ms: int, hi_ms: int) -> Bars:
        """Rows with ``lo_ms <= start < hi_ms``."""
        a, b = np.searchsorted(self.start, [lo_ms, hi_ms], side="left")
        return self.take(slice(int(a), int(b)))


def from_trades(ts: np.ndarray, price: np.ndarray, volume: np.ndarray, bucket_ms: int) -> Bars:
    """Bars of ``bucket_ms`` (epoch-aligned) from a time-ordered tape."""
    if ts.shape[0] == 0:
        return Bars.empty()
    single = Bars(ts, price, price, price, price, volume, price * volume, ts)
    return single.coarsen(ts // bucket_ms * bucket_ms)
