from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from mdcoord import InvalidRequestError, Timeframe
from mdcoord._timeframe import to_utc


@pytest.mark.parametrize(
    "label, tf, path",
    [
        ("1s", Timeframe.S1, "/candles/seconds"),
        ("1m", Timeframe.M1, "/candles/minutes/1"),
        ("15m", Timeframe.M15, "/candles/minutes/15"),
        ("1h", Timeframe.H1, "/candles/minutes/60"),
        ("60m", Timeframe.H1, "/candles/minutes/60"),
        ("4h", Timeframe.H4, "/candles/minutes/240"),
        ("1d", Timeframe.D1, "/candles/days"),
        ("1D", Timeframe.D1, "/candles/days"),
        ("1w", Timeframe.W1, "/candles/weeks"),
        ("1M", Timeframe.MO1, "/candles/months"),
        ("1mo", Timeframe.MO1, "/candles/months"),
        ("1y", Timeframe.Y1, "/candles/years"),
    ],
)
def test_parse_and_path(label: str, tf: Timeframe, path: str) -> None:
    assert Timeframe.parse(label) is tf
    assert tf.path == path


@pytest.mark.parametrize("bad", ["2m", "", "1x", "minutes", 5, None])
def test_unknown_timeframe_lists_the_valid_ones(bad: object) -> None:
    with pytest.raises(InvalidRequestError, match="valid timeframes are .*'1m'.*'1M'"):
        Timeframe.parse(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tf, ts, start",
    [
        (Timeframe.M5, "2024-03-14T13:37:12Z", "2024-03-14T13:35:00Z"),
        (Timeframe.H4, "2024-03-14T13:37:12Z", "2024-03-14T12:00:00Z"),
        (Timeframe.D1, "2024-03-14T23:59:59Z", "2024-03-14T00:00:00Z"),
        (Timeframe.W1, "2024-03-17T23:00:00Z", "2024-03-11T00:00:00Z"),  # Sunday → Monday
        (Timeframe.W1, "2024-03-18T00:00:00Z", "2024-03-18T00:00:00Z"),
        (Timeframe.MO1, "2024-02-29T12:00:00Z", "2024-02-01T00:00:00Z"),
        (Timeframe.Y1, "2024-12-31T23:59:59Z", "2024-01-01T00:00:00Z"),
        (Timeframe.M1, "1969-12-31T23:59:30Z", "1969-12-31T23:59:00Z"),
    ],
)
def test_slots_are_utc_aligned(tf: Timeframe, ts: str, start: str) -> None:
    t = pd.Timestamp(ts)
    o = tf.slot_of(t)
    assert tf.slot_start(o) == pd.Timestamp(start)
    assert tf.slot_start(o + 1) > t


@pytest.mark.parametrize("tf", list(Timeframe))
def test_ordinal_roundtrip_is_vectorized(tf: Timeframe) -> None:
    # datetime64[ns] spans 1677..2262: keep years inside it
    ords = np.arange(-50, 250 if tf is Timeframe.Y1 else 600, 7)
    starts = tf.start_ns(ords)
    assert np.array_equal(tf.ordinal(starts), ords)
    assert np.array_equal(tf.ordinal(starts + 1), ords)
    assert np.all(np.diff(starts) > 0)


def test_first_slot_at_or_after() -> None:
    tf = Timeframe.M1
    assert tf.first_slot_at_or_after(pd.Timestamp("2024-01-01T00:00:00Z")) == tf.slot_of(pd.Timestamp("2024-01-01T00:00:00Z"))
    assert tf.slot_start(tf.first_slot_at_or_after(pd.Timestamp("2024-01-01T00:00:01Z"))) == pd.Timestamp(
        "2024-01-01T00:01:00Z"
    )


def test_to_utc_reads_naive_as_utc_and_converts_aware() -> None:
    assert to_utc("2024-01-01 09:00", "x") == pd.Timestamp("2024-01-01T09:00Z")
    assert to_utc("2024-01-01T09:00:00+09:00", "x") == pd.Timestamp("2024-01-01T00:00Z")
    kst = timezone(timedelta(hours=9))
    assert to_utc(datetime(2024, 1, 1, 9, tzinfo=kst), "x") == pd.Timestamp("2024-01-01T00:00Z")
    assert to_utc(datetime(2024, 1, 1, 9), "x") == pd.Timestamp("2024-01-01T09:00Z")
    assert str(to_utc("2024-01-01", "x").tz) == "UTC"


@pytest.mark.parametrize("bad", ["yesterday-ish", "2024-13-01", 1700000000, 1.5, True, [2024], "NaT"])
def test_to_utc_rejects_garbage(bad: object) -> None:
    with pytest.raises(InvalidRequestError, match="x"):
        to_utc(bad, "x")
