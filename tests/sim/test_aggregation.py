"""Every unit is an exact aggregation of the same trades (sums up to float rounding order)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pytest

from mdcoord.sim import SyntheticMarket

Rows = list[dict[str, Any]]


def aggregate(rows: Rows, key) -> dict[str, dict[str, Any]]:
    """Fine rows (newest first) grouped by ``key(start)`` into the coarse candle they make up."""
    out: dict[str, dict[str, Any]] = {}
    for r in reversed(rows):  # oldest first
        k = key(r["candle_date_time_utc"])
        a = out.get(k)
        if a is None:
            out[k] = {"opening_price": r["opening_price"], "high_price": r["high_price"], "low_price": r["low_price"],
                      "trade_price": r["trade_price"], "timestamp": r["timestamp"],
                      "candle_acc_trade_price": r["candle_acc_trade_price"],
                      "candle_acc_trade_volume": r["candle_acc_trade_volume"]}
            continue
        a["high_price"] = max(a["high_price"], r["high_price"])
        a["low_price"] = min(a["low_price"], r["low_price"])
        a["trade_price"], a["timestamp"] = r["trade_price"], r["timestamp"]
        a["candle_acc_trade_price"] += r["candle_acc_trade_price"]
        a["candle_acc_trade_volume"] += r["candle_acc_trade_volume"]
    return out


def assert_same(coarse: Rows, fine: Rows, key) -> None:
    agg = aggregate(fine, key)
    assert [r["candle_date_time_utc"] for r in coarse] == sorted(agg, reverse=True)
    for r in coarse:
        a = agg[r["candle_date_time_utc"]]
        for f in ("opening_price", "high_price", "low_price", "trade_price", "timestamp"):
            assert r[f] == a[f], (r["candle_date_time_utc"], f)
        for f in ("candle_acc_trade_price", "candle_acc_trade_volume"):
            assert r[f] == pytest.approx(a[f], rel=1e-9), (r["candle_date_time_utc"], f)


def minute_key(unit: int):
    def key(s: str) -> str:
        t = datetime.fromisoformat(s)
        m = (t.hour * 60 + t.minute) // unit * unit
        return t.replace(hour=m // 60, minute=m % 60, second=0).isoformat()
    return key


def day_key(s: str) -> str:
    return s[:10] + "T00:00:00"


def week_key(s: str) -> str:
    d = np.datetime64(s[:10])
    monday = d - ((d.astype(int) + 3) % 7)
    return str(monday) + "T00:00:00"


def test_seconds_make_minutes(model: SyntheticMarket) -> None:
    for code in ("KRW-BTC", "KRW-ARB"):
        lo, hi = "2026-11-24T09:00:00Z", "2026-11-24T12:00:00Z"
        assert_same(model.candles(code, "minutes", 1, lo, hi), model.candles(code, "seconds", 1, lo, hi), minute_key(1))


def test_seconds_are_the_tape(model: SyntheticMarket) -> None:
    tape = model.trades("KRW-BTC", "2026-11-24T11:00:00Z", "2026-11-24T11:01:00Z")
    secs = model.candles("KRW-BTC", "seconds", 1, "2026-11-24T11:00:00Z", "2026-11-24T11:01:00Z")
    assert sum(r["candle_acc_trade_volume"] for r in secs) == pytest.approx(tape.volume.sum(), rel=1e-12)
    assert secs[0]["timestamp"] == int(tape.ts[-1]) and secs[-1]["opening_price"] == tape.price[0]
    assert len(secs) > 40  # a liquid market trades in almost every second
    ids = tape.sequential_ids()
    assert len(np.unique(ids)) == len(ids)


@pytest.mark.parametrize("unit", [3, 5, 10, 15, 30, 60, 240])
@pytest.mark.parametrize(("lo", "hi"), [
    ("2026-11-23T00:00:00Z", "2026-11-24T12:00:00Z"),   # seconds era, incl. the forming candle
    ("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z"),   # minute era
])
def test_minute_units_make_each_other(model: SyntheticMarket, unit: int, lo: str, hi: str) -> None:
    for code in ("KRW-ETH", "KRW-TOTI"):
        assert_same(model.candles(code, "minutes", unit, lo, hi), model.candles(code, "minutes", 1, lo, hi), minute_key(unit))


@pytest.mark.parametrize(("lo", "hi"), [
    ("2026-11-20T00:00:00Z", "2026-11-24T12:00:00Z"),   # seconds era up to now (forming day)
    ("2026-11-12T00:00:00Z", "2026-11-17T00:00:00Z"),   # across the era boundary (horizon = 10 days)
    ("2019-02-26T00:00:00Z", "2019-03-03T00:00:00Z"),   # deep minute era
])
def test_days_are_minutes(model: SyntheticMarket, lo: str, hi: str) -> None:
    for code in ("KRW-BTC", "KRW-XRP", "USDT-BTC"):
        days = model.candles(code, "days", 1, lo, hi)
        minutes = model.candles(code, "minutes", 1, lo, hi)
        common = [{k: v for k, v in r.items() if k not in ("prev_closing_price", "change_price", "change_rate")} for r in days]
        assert_same(common, minutes, day_key)


def test_weeks_months_years_are_days(model: SyntheticMarket) -> None:
    for code in ("KRW-ETH", "KRW-TOTI"):
        days = model.candles(code, "days")
        assert_same(model.candles(code, "weeks", 1, "2024-01-01T00:00:00Z"), [d for d in days if d["candle_date_time_utc"] >= "2024-01-01"], week_key)
        assert_same(model.candles(code, "months"), days, lambda s: s[:7] + "-01T00:00:00")
        assert_same(model.candles(code, "years"), days, lambda s: s[:4] + "-01-01T00:00:00")


def test_forming_candle_only_has_the_past(model: SyntheticMarket) -> None:
    now_ms = 1795521600000
    for kind, unit in (("seconds", 1), ("minutes", 240), ("days", 1), ("years", 1)):
        row = model.latest_candles("KRW-BTC", kind, unit)[0]
        assert model.is_forming(kind, unit, row["candle_date_time_utc"] + "Z")
        assert row["timestamp"] < now_ms


def test_determinism_and_seed_dependence() -> None:
    a = SyntheticMarket(seed=11, now="2026-11-24T12:00:00Z", seconds_horizon_days=3)
    b = SyntheticMarket(seed=11, now="2026-11-24T12:00:00Z", seconds_horizon_days=3)
    c = SyntheticMarket(seed=12, now="2026-11-24T12:00:00Z", seconds_horizon_days=3)
    q = ("KRW-SOL", "minutes", 60, "2026-11-23T00:00:00Z", 30)
    assert a.latest_candles(*q) == b.latest_candles(*q) != c.latest_candles(*q)
    assert a.market_rows(True) == b.market_rows(True)


def test_live_clock_advances() -> None:
    m = SyntheticMarket(seed=7, now="2026-11-24T12:00:00Z", frozen=False, seconds_horizon_days=2)
    first = m.now_ms()
    assert first >= 1795521600000 and m.now_ms() >= first
    assert m.latest_candles("KRW-BTC", "seconds")[0]["timestamp"] < m.now_ms()
