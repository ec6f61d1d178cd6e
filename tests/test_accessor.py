"""df.mdc: thin delegations to the pure frame functions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mdcoord
from mdcoord.sim import Exchange

from .conftest import NOW, truth


def test_refuses_frames_it_does_not_fit() -> None:
    with pytest.raises(AttributeError, match="candle frames"):
        pd.DataFrame({"a": [1]}).mdc
    naive = pd.DataFrame({c: [1.0] for c in ["open", "high", "low", "close", "volume"]},
                         index=pd.DatetimeIndex(["2024-01-01"], name="time"))
    with pytest.raises(AttributeError, match="tz-aware"):
        naive.mdc


def test_meta_gaps_validate(ex: Exchange) -> None:
    thin = next(c for c in ex.market.markets("KRW")
                if 10 < len(ex.market.candles(c, "minutes", 1, "2026-11-20T06:00:00Z", "2026-11-20T12:00:00Z")) < 300)
    df = mdcoord.candles(thin, "1m", count=300, base_url=ex.base_url)
    assert df.mdc.meta["data_count"] == 300 and "split_count" in repr(df.mdc.meta)
    g = df.mdc.gaps()
    assert g["missing"].sum() == df.attrs["mdcoord"]["missing_candles"] > 0
    report = df.mdc.validate()
    assert report["ok"].all() and len(report) >= 6
    broken = df.copy()
    broken.iloc[3, broken.columns.get_loc("low")] = broken["high"].iloc[3] + 1
    bad = broken.mdc.validate().set_index("check")
    assert not bad.loc["low <= open, close <= high", "ok"]


def test_fill_then_drop_filled_gives_back_the_original(ex: Exchange) -> None:
    thin = next(c for c in ex.market.markets("KRW")
                if 10 < len(ex.market.candles(c, "minutes", 1, "2026-11-20T06:00:00Z", "2026-11-20T12:00:00Z")) < 300)
    df = mdcoord.candles(thin, "1m", count=200, base_url=ex.base_url)
    full = df.mdc.fill()
    assert full.index.is_unique and len(full) == (df.index[-1] - df.index[0]) / pd.Timedelta(minutes=1) + 1
    assert full["filled"].sum() == len(full) - len(df) == full.attrs["mdcoord"]["filled"]
    flat = full[full["filled"]]
    assert (flat["volume"] == 0).all() and (flat["open"] == flat["close"]).all()
    pd.testing.assert_frame_equal(full[~full["filled"]].drop(columns="filled"), df, check_freq=False)
    assert full.mdc.validate()["ok"].all()


def test_resample_is_ohlcv_correct_and_equals_the_exchange(ex: Exchange) -> None:
    start, end = "2026-11-19T00:00:00Z", "2026-11-19T12:00:00Z"
    m1 = mdcoord.candles("KRW-BTC", "1m", start=start, end=end, base_url=ex.base_url)
    m15 = m1.mdc.resample("15m")
    want = truth(ex, "KRW-BTC", "15m", start, end)
    assert list(m15.index) == list(want.index)
    for col in ("open", "high", "low", "close"):
        assert np.array_equal(m15[col].to_numpy(), want[col].to_numpy())
    assert np.allclose(m15["volume"], want["volume"], rtol=1e-12)
    assert (m15["candles"] == 15).all() and m15.attrs["mdcoord"]["timeframe"] == "15m"


def test_to_kst_and_multi_market(ex: Exchange) -> None:
    df = mdcoord.candles(["KRW-BTC", "KRW-ETH"], "1h", count=48, base_url=ex.base_url)
    kst = df.mdc.to_kst()
    assert str(kst.index.get_level_values("time").tz) == "Asia/Seoul"
    assert (kst.index.get_level_values("time") == df.index.get_level_values("time")).all()
    h4 = df.mdc.resample("4h")
    assert set(h4.index.get_level_values("market")) == {"KRW-BTC", "KRW-ETH"}


def test_update_fetches_only_what_is_new(ex: Exchange) -> None:
    df = mdcoord.candles("KRW-BTC", "1m", end="2026-11-20T12:00:00Z", count=100, base_url=ex.base_url)
    ex.clear_log()
    newer = df.mdc.update()
    forming = pd.Timestamp(NOW).floor("min")
    assert newer.index[-1] == forming - pd.Timedelta(minutes=1)
    assert len(newer) == 100 + 34 and newer.index.is_unique
    assert ex.count(group="candles") == 1


def test_plot_draws_candles_volume_and_gaps(ex: Exchange, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    thin = next(c for c in ex.market.markets("KRW")
                if 10 < len(ex.market.candles(c, "minutes", 1, "2026-11-20T06:00:00Z", "2026-11-20T12:00:00Z")) < 300)
    df = mdcoord.candles(thin, "1m", count=120, base_url=ex.base_url)
    fig = df.mdc.plot()
    price, volume = fig.axes
    assert len(price.patches) == 120 and len(volume.patches) == 120  # a body and a volume bar each
    legend = price.get_legend().get_texts()[0].get_text()
    inside = int((df.index[-1] - df.index[0]) / pd.Timedelta(minutes=1)) + 1 - len(df)
    assert inside > 0 and legend == f"no candle ({inside})"  # the gaps between the first and last candle
    fig.savefig(tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 10_000
    low, high = price.get_ylim()
    span = df["high"].max() - df["low"].min()
    assert low <= df["low"].min() - 0.049 * span and high >= df["high"].max() + 0.049 * span  # 5% padding
    fmt = price.yaxis.get_major_formatter()  # thousands separators, no offset, no "1e7"
    assert (fmt(145_250_000.0, 0), fmt(20.4, 0)) == ("145,250,000", "20.4")
    with pytest.raises(mdcoord.InvalidRequestError, match=r"plot\(market='KRW-NOPE'\)"):
        df.mdc.plot(market="KRW-NOPE")


@pytest.mark.parametrize(("source", "target", "ok"), [
    ("1m", "15m", True), ("1h", "1d", True), ("1d", "1w", True), ("1d", "1M", True), ("1M", "1y", True),
    ("1m", "1m", True), ("1h", "1m", False), ("1w", "1M", False), ("1w", "1y", False), ("4h", "1w", True),
    ("1d", "4h", False),
])
def test_resample_only_to_timeframes_the_candles_nest_in(source: str, target: str, ok: bool) -> None:
    assert mdcoord.Timeframe.parse(source).nests_in(mdcoord.Timeframe.parse(target)) is ok


def test_resample_to_a_finer_timeframe_is_refused(ex: Exchange) -> None:
    df = mdcoord.candles("KRW-BTC", "1h", count=10, base_url=ex.base_url)
    with pytest.raises(mdcoord.InvalidRequestError, match="cannot resample 1h candles to 1m"):
        df.mdc.resample("1m")
