"""Candle intervals: the six kinds, minute units, and UTC-aligned interval starts."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from ._clock import MS_PER_DAY, MS_PER_MINUTE, MS_PER_SECOND

MINUTE_UNITS = (1, 3, 5, 10, 15, 30, 60, 240)


class Kind(str, Enum):
    SECONDS = "seconds"
    MINUTES = "minutes"
    DAYS = "days"
    WEEKS = "weeks"
    MONTHS = "months"
    YEARS = "years"


@dataclass(frozen=True, slots=True)
class Interval:
    """One candle interval; ``unit`` matters only for minutes."""

    kind: Kind
    unit: int = 1

    @classmethod
    def of(cls, kind: Kind | str, unit: int = 1) -> Interval:
        """Validated interval; raises ``ValueError`` naming the valid kinds/units."""
        try:
            k = Kind(kind)
        except ValueError:
            raise ValueError(f"kind must be one of {[x.value for x in Kind]}, got {kind!r}") from None
        if k is Kind.MINUTES and unit not in MINUTE_UNITS:
            raise ValueError(f"minute unit must be one of {MINUTE_UNITS}, got {unit!r}")
        return cls(k, unit if k is Kind.MINUTES else 1)

    @property
    def intraday(self) -> bool:
        return self.kind in (Kind.SECONDS, Kind.MINUTES)

    @property
    def bucket_ms(self) -> int:
        """Length of an intraday interval (seconds and minutes only)."""
        return MS_PER_SECOND if self.kind is Kind.SECONDS else self.unit * MS_PER_MINUTE

    def floor(self, ms: np.ndarray) -> np.ndarray:
        """Start (epoch ms, int64) of the interval containing each instant; UTC-aligned."""
        ms = np.asarray(ms, dtype=np.int64)
        if self.intraday:
            return ms // self.bucket_ms * self.bucket_ms
        day = ms // MS_PER_DAY
        if self.kind is Kind.DAYS:
            return day * MS_PER_DAY
        if self.kind is Kind.WEEKS:  # 1970-01-01 was a Thursday; weeks start on Monday
            return (day - (day + 3) % 7) * MS_PER_DAY
        unit = "M" if self.kind is Kind.MONTHS else "Y"
        start = day.astype("datetime64[D]").astype(f"datetime64[{unit}]").astype("datetime64[D]")
        return start.astype(np.int64) * MS_PER_DAY

    def next_start(self, ms: int) -> int:
        """Start of the interval after the one containing ``ms``."""
        start = int(self.floor(np.array([ms]))[0])
        if self.intraday:
            return start + self.bucket_ms
        step = {Kind.DAYS: 1, Kind.WEEKS: 7, Kind.MONTHS: 31, Kind.YEARS: 366}[self.kind]
        return int(self.floor(np.array([start + step * MS_PER_DAY]))[0])

    @property
    def approx_days(self) -> int:
        return {Kind.DAYS: 1, Kind.WEEKS: 7, Kind.MONTHS: 31, Kind.YEARS: 366}.get(self.kind, 1)
