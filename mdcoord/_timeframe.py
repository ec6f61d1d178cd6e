"""Candle timeframes and the UTC slot grid they live on.

A timeframe turns a user string (``"1m"``, ``"4h"``, ``"1d"``) into the API path and into a
*slot grid*: every candle start is a slot with an integer ordinal, so planning, counting and gap
detection are integer arithmetic on numpy arrays. Boundaries are UTC-aligned as on Upbit:
minutes from 00:00 UTC, days at 00:00 UTC, weeks on Monday, months on the 1st, years on Jan 1.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

import numpy as np
import pandas as pd

from ._exceptions import InvalidRequestError

__all__ = ["Timeframe", "to_utc"]

_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS
_MONDAY_EPOCH_DAYS = 4  # 1970-01-05, the first Monday after the epoch


class Timeframe(enum.Enum):
    """A candle interval. Values are the canonical labels accepted everywhere."""

    S1 = "1s"
    M1 = "1m"
    M3 = "3m"
    M5 = "5m"
    M10 = "10m"
    M15 = "15m"
    M30 = "30m"
    H1 = "1h"
    H4 = "4h"
    D1 = "1d"
    W1 = "1w"
    MO1 = "1M"
    Y1 = "1y"

    # -- parsing -------------------------------------------------------------------------
    @classmethod
    def parse(cls, value: str | Timeframe) -> Timeframe:
        """``"1m"`` → ``Timeframe.M1``; raise :class:`InvalidRequestError` listing valid labels."""
        if isinstance(value, Timeframe):
            return value
        if isinstance(value, str):
            key = value.strip()
            # "1M" (month) and "1m" (minute) differ only in case, as in pandas and ccxt;
            # every other label is case-insensitive.
            tf = cls.MO1 if key == "1M" else _ALIASES.get(key.lower())
            if tf is not None:
                return tf
        valid = ", ".join(repr(t.value) for t in cls)
        raise InvalidRequestError(
            f"unknown timeframe {value!r}; valid timeframes are {valid} "
            f"(minutes are lower-case 'm', months are '1M')"
        )

    # -- the API side --------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """The API path segment: seconds, minutes, days, weeks, months or years."""
        return _KIND[self]

    @property
    def minute_unit(self) -> int | None:
        """The ``{unit}`` of ``/candles/minutes/{unit}``, else None."""
        return _MINUTE_UNIT.get(self)

    @property
    def path(self) -> str:
        """Endpoint path below the base URL, e.g. ``/candles/minutes/1``."""
        unit = self.minute_unit
        return f"/candles/minutes/{unit}" if unit else f"/candles/{self.kind}"

    @property
    def step_ns(self) -> int | None:
        """Fixed slot length in ns, or None for months and years (calendar lengths)."""
        return _STEP_NS.get(self)

    @property
    def pandas_freq(self) -> str:
        """A pandas frequency string for this grid (used for display and resampling)."""
        return _PANDAS_FREQ[self]

    def nests_in(self, coarser: Timeframe) -> bool:
        """True if every slot of this timeframe lies inside one slot of ``coarser`` (so candles
        can be resampled onto it): 1m→15m, 1h→1d, 1d→1w, 1d→1M, 1M→1y; not 1w→1M, 1h→1m."""
        if self is coarser:
            return True
        step, big = self.step_ns, coarser.step_ns
        if step is not None and big is not None:  # fixed grids from the epoch (weeks from a Monday)
            return big > step and big % step == 0 and (coarser is not Timeframe.W1 or _DAY_NS % step == 0)
        if coarser is Timeframe.MO1:
            return step is not None and _DAY_NS % step == 0  # up to days: a month is whole days
        if coarser is Timeframe.Y1:
            return self is Timeframe.MO1 or (step is not None and _DAY_NS % step == 0)
        return False

    # -- the slot grid (vectorized) ------------------------------------------------------
    def ordinal(self, ns: np.ndarray | int) -> np.ndarray:
        """Slot ordinal of each UTC epoch-ns value (the slot that contains it)."""
        a = np.asarray(ns, dtype=np.int64)
        if self is Timeframe.W1:
            days = np.floor_divide(a, _DAY_NS)
            return np.floor_divide(days - _MONDAY_EPOCH_DAYS, 7)
        if self is Timeframe.MO1:
            return a.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64)
        if self is Timeframe.Y1:
            return a.astype("datetime64[ns]").astype("datetime64[Y]").astype(np.int64)
        return np.floor_divide(a, self.step_ns)

    def start_ns(self, ordinal: np.ndarray | int) -> np.ndarray:
        """UTC epoch-ns of the start of each slot ordinal (inverse of :meth:`ordinal`)."""
        o = np.asarray(ordinal, dtype=np.int64)
        if self is Timeframe.W1:
            return (o * 7 + _MONDAY_EPOCH_DAYS) * _DAY_NS
        if self is Timeframe.MO1:
            return o.astype("datetime64[M]").astype("datetime64[ns]").astype(np.int64)
        if self is Timeframe.Y1:
            return o.astype("datetime64[Y]").astype("datetime64[ns]").astype(np.int64)
        return o * self.step_ns

    def slot_of(self, ts: pd.Timestamp) -> int:
        """Ordinal of the slot containing ``ts``."""
        return int(self.ordinal(ts.value))

    def first_slot_at_or_after(self, ts: pd.Timestamp) -> int:
        """Ordinal of the first slot whose start is >= ``ts`` (a range's inclusive start)."""
        o = self.slot_of(ts)
        return o if int(self.start_ns(o)) == ts.value else o + 1

    def slot_start(self, ordinal: int) -> pd.Timestamp:
        return pd.Timestamp(int(self.start_ns(ordinal)), tz="UTC")


_KIND = {
    Timeframe.S1: "seconds",
    Timeframe.D1: "days",
    Timeframe.W1: "weeks",
    Timeframe.MO1: "months",
    Timeframe.Y1: "years",
}
_MINUTE_UNIT = {
    Timeframe.M1: 1,
    Timeframe.M3: 3,
    Timeframe.M5: 5,
    Timeframe.M10: 10,
    Timeframe.M15: 15,
    Timeframe.M30: 30,
    Timeframe.H1: 60,
    Timeframe.H4: 240,
}
for _tf in _MINUTE_UNIT:
    _KIND[_tf] = "minutes"
_STEP_NS = {Timeframe.S1: _NS, Timeframe.D1: _DAY_NS, Timeframe.W1: 7 * _DAY_NS}
_STEP_NS.update({tf: u * 60 * _NS for tf, u in _MINUTE_UNIT.items()})
_PANDAS_FREQ = {
    Timeframe.S1: "1s",
    Timeframe.D1: "1D",
    Timeframe.W1: "W-MON",
    Timeframe.MO1: "MS",
    Timeframe.Y1: "YS",
}
_PANDAS_FREQ.update({tf: f"{u}min" for tf, u in _MINUTE_UNIT.items()})

_ALIASES: dict[str, Timeframe] = {tf.value.lower(): tf for tf in Timeframe if tf is not Timeframe.MO1}
_ALIASES.update(
    {
        "60m": Timeframe.H1,
        "240m": Timeframe.H4,
        "1min": Timeframe.M1,
        "1mo": Timeframe.MO1,
        "1mon": Timeframe.MO1,
        "second": Timeframe.S1,
        "minute": Timeframe.M1,
        "day": Timeframe.D1,
        "week": Timeframe.W1,
        "month": Timeframe.MO1,
        "year": Timeframe.Y1,
    }
)
for _u in (3, 5, 10, 15, 30):
    _ALIASES[f"{_u}min"] = Timeframe(f"{_u}m")


_RELATIVE = {"now", "today", "yesterday", "tomorrow"}


def to_utc(value: object, name: str) -> pd.Timestamp:
    """Turn a user's time into a tz-aware UTC Timestamp.

    Accepts ISO strings, ``datetime``/``date``, ``pd.Timestamp`` and ``np.datetime64``. A value
    without a zone is read as **UTC**, exactly as the Upbit API reads a ``to`` without offset;
    an aware value is converted to UTC. Numbers are rejected (seconds or milliseconds would be a
    guess).
    """
    if isinstance(value, bool) or isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidRequestError(
            f"{name}={value!r}: give a date/time (e.g. '2024-01-01' or '2024-01-01T09:00:00+09:00'), "
            "not a number"
        )
    if not isinstance(value, (str, datetime, date, pd.Timestamp, np.datetime64)):
        raise InvalidRequestError(f"{name} must be a date/time or an ISO string, not {type(value).__name__}")
    if isinstance(value, (str, np.datetime64)) and str(value).strip().lower() in _RELATIVE:
        # pandas would read these on this machine's clock, in its local zone: market time is the
        # exchange's, so mdcoord never guesses it from here
        raise InvalidRequestError(
            f"{name}={value!r}: give a date/time; for 'up to now' leave end out (the exchange's clock decides), "
            "for the most recent data use count="
        )
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequestError(f"cannot read {name}={value!r} as a date/time: {exc}") from None
    if ts is pd.NaT or pd.isna(ts):
        raise InvalidRequestError(f"{name}={value!r} is not a date/time")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.as_unit("ns")
