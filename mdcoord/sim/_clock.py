"""Time for the sim: an injectable clock and Upbit's wire formats for instants.

All instants inside the sim are integer **milliseconds since the Unix epoch, UTC**; days are
integer epoch days (``ms // MS_PER_DAY``). Conversion to ``datetime`` and strings happens only
here, at the edge.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np

MS_PER_SECOND = 1_000
MS_PER_MINUTE = 60_000
MS_PER_DAY = 86_400_000
KST_OFFSET_MS = 9 * 3_600_000

# ``to`` as Upbit accepts it: date, ``T`` or space, time, optional fraction, optional zone.
# An unencoded ``+09:00`` arrives as `` 09:00`` and must not match (the API answers 400).
_TO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:?\d{2})?$"
)


def to_utc(value: datetime | str) -> datetime:
    """An aware UTC datetime from a datetime (naive = UTC) or an ISO-8601 string."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def dt_to_ms(value: datetime | str) -> int:
    """Epoch milliseconds of a datetime or ISO string (naive = UTC)."""
    dt = to_utc(value)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def ms_to_dt(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(ms))


def parse_to(text: str) -> int:
    """Epoch ms of a candle ``to`` parameter; raises ``ValueError`` for anything Upbit rejects.

    A value without an offset is UTC (as on Upbit). Fractions are kept to the millisecond
    (truncated), which is enough because candle starts are whole seconds.
    """
    m = _TO_RE.match(text)
    if m is None:
        raise ValueError(f"invalid to: {text!r}")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC)
    ms = dt_to_ms(dt) + (int((frac + "00")[:3]) if frac else 0)
    if zone and zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        ms -= sign * (int(digits[:2]) * 60 + int(digits[2:])) * MS_PER_MINUTE
    return ms


def format_naive(ms: np.ndarray) -> list[str]:
    """``yyyy-MM-ddTHH:mm:ss`` (no zone) for an array of epoch ms, vectorized."""
    arr = np.asarray(ms, dtype=np.int64).astype("datetime64[ms]").astype("datetime64[s]")
    return np.datetime_as_string(arr, unit="s").tolist()


def format_date(ms: np.ndarray) -> list[str]:
    """``yyyy-MM-dd`` for an array of epoch ms."""
    arr = np.asarray(ms, dtype=np.int64).astype("datetime64[ms]").astype("datetime64[D]")
    return np.datetime_as_string(arr, unit="D").tolist()


class Clock:
    """The sim's notion of *now*, in epoch ms.

    ``frozen=True`` keeps now at ``start`` forever (deterministic tests). Otherwise now advances
    with ``monotonic`` from ``start`` (default start: the real current time), so a long-running
    server behaves like a live exchange; ``speed`` times as fast (60: an hour of trading in a
    minute, for replaying live streams in tests). ``monotonic`` is injectable for tests of the clock.
    """

    def __init__(
        self,
        start: datetime | str | None = None,
        *,
        frozen: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
        speed: float = 1.0,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.start_ms: int = dt_to_ms(start) if start is not None else int(time.time() * 1000)
        self.frozen = frozen
        self.speed = float(speed)
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now_ms(self) -> int:
        """Current sim time in epoch ms; trades exist only strictly before it."""
        if self.frozen:
            return self.start_ms
        return self.start_ms + int((self._monotonic() - self._t0) * 1000 * self.speed)

    def now(self) -> datetime:
        return ms_to_dt(self.now_ms())
