"""``df.mdc``: a thin namespace on candle frames that delegates to the pure functions of
``_frames.py``. It fits frames returned by :func:`mdcoord.candles` and any frame of the same
shape (``time`` or ``(market, time)`` index, tz-aware; ``open high low close volume`` columns).

>>> df = mdcoord.candles("KRW-BTC", "1m", count=1000)
>>> df.mdc.gaps(); df.mdc.validate(); df.mdc.fill(); df.mdc.resample("15m"); df.mdc.to_kst()
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ._frames import (
    OHLCV,
    as_flat,
    fill_candles,
    gap_table,
    infer_timeframe,
    like_input,
    resample_candles,
    validate_candles,
)
from ._exceptions import InvalidRequestError
from ._timeframe import Timeframe, to_utc

__all__ = ["CandleAccessor"]


class Meta(dict):  # type: ignore[type-arg]
    """The metadata dict, shown readably (JSON in a terminal, a table in a notebook)."""

    def __repr__(self) -> str:
        return json.dumps(self, indent=2, ensure_ascii=False, default=str)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>" for k, v in self.items()
        )
        return f"<table>{rows}</table>"


@pd.api.extensions.register_dataframe_accessor("mdc")
class CandleAccessor:
    """Candle tools on a frame: ``meta, gaps, validate, fill, resample, to_kst, update, plot``."""

    def __init__(self, df: pd.DataFrame) -> None:
        missing = [c for c in OHLCV if c not in df.columns]
        names = list(df.index.names)
        if missing or names not in (["time"], ["market", "time"]):
            raise AttributeError(
                "df.mdc works on candle frames: a 'time' or ('market', 'time') index and the columns "
                f"{OHLCV} (as mdcoord.candles returns); this frame has index {names} and lacks {missing}"
            )
        if getattr(df.index.get_level_values("time"), "tz", None) is None:
            raise AttributeError("df.mdc needs a tz-aware time index (mdcoord returns UTC): use df.tz_localize('UTC')")
        self._df = df

    # -- metadata -------------------------------------------------------------------------------
    @property
    def meta(self) -> Meta:
        """``df.attrs["mdcoord"]``, readably shown ({} for a frame not made by mdcoord)."""
        return Meta(self._df.attrs.get("mdcoord") or {})

    @property
    def timeframe(self) -> Timeframe:
        return infer_timeframe(self._df)

    def _derived(self, out: pd.DataFrame, **changes: Any) -> pd.DataFrame:
        """Carry the metadata over, noting what the operation changed."""
        meta = dict(self._df.attrs.get("mdcoord") or {})
        meta.update(changes, data_count=len(out))
        out.attrs["mdcoord"] = meta
        return out

    # -- checks ----------------------------------------------------------------------------------
    def gaps(self) -> pd.DataFrame:
        """Missing intervals (``market, start, end, missing, reason``); reason ``no_trades`` or
        ``not_fetched`` (from the metadata; without it, every gap is between present candles)."""
        tf = self.timeframe
        flat = as_flat(self._df, (self.meta.get("markets") or ["?"])[0])
        spans = {m: (to_utc(a, "span"), to_utc(b, "span")) for m, (a, b) in self.meta.get("spans", {}).items()}
        if not spans:
            for market, part in flat.groupby("market", sort=False):
                last = part["time"].max()
                spans[str(market)] = (part["time"].min(), tf.slot_start(tf.slot_of(last) + 1))
        failed: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
        for f in self.meta.get("failures", []):
            if f.get("range"):
                a, b = f["range"].strip("[)").split(", ")
                failed.setdefault(f["market"], []).append((to_utc(a, "range"), to_utc(b, "range")))
        return gap_table(flat, tf, spans, failed)

    def validate(self) -> pd.DataFrame:
        """The frame's invariants, one row per check (``check, ok, violations``)."""
        return validate_candles(self._df)

    # -- transformations ----------------------------------------------------------------------------
    def fill(self) -> pd.DataFrame:
        """A complete grid: each missing candle as a flat, zero-volume candle at the previous
        close, marked in a ``filled`` column. Leading/trailing slots outside the data are not added."""
        out = fill_candles(self._df, self.timeframe)
        return self._derived(out, filled=int(out["filled"].sum()))

    def resample(self, timeframe: str | Timeframe) -> pd.DataFrame:
        """OHLCV-correct resampling to a coarser timeframe (first/max/min/last/sum); buckets
        without candles are absent; ``candles`` counts the source candles per bucket."""
        to = Timeframe.parse(timeframe)
        if not self.timeframe.nests_in(to):
            raise InvalidRequestError(
                f"cannot resample {self.timeframe.value} candles to {to.value}: the target must be coarser and "
                f"each {self.timeframe.value} candle must fall inside one {to.value} bucket "
                "(e.g. 1m→15m, 1h→1d, 1d→1w, 1d→1M; not 1w→1M)"
            )
        out = resample_candles(self._df, to)
        return self._derived(out, timeframe=to.value, resampled_from=self.timeframe.value, spans={}, gaps_found=None,
                             missing_candles=None)

    def to_kst(self) -> pd.DataFrame:
        """The same frame indexed in Asia/Seoul time (Upbit's local time)."""
        flat = as_flat(self._df)
        flat["time"] = flat["time"].dt.tz_convert("Asia/Seoul")
        return self._derived(like_input(flat, self._df), timezone="Asia/Seoul")

    def plot(self, market: str | None = None, **kwargs: Any) -> Any:
        """Candlesticks with volume and shaded gaps (matplotlib, the ``plot`` extra); one market
        at a time (the first by default). Returns the Figure."""
        from ._plot import plot_candles

        return plot_candles(self._df, self.timeframe, market=market, **kwargs)

    def update(self, **options: Any) -> pd.DataFrame:
        """Fetch the candles that closed since the last one and return the extended frame (from
        the same exchange, cache-first; metadata of the new call)."""
        from ._api import candles  # the face imports the accessor, not the other way round

        meta = self.meta
        tf = self.timeframe
        if not meta.get("markets") and not isinstance(self._df.index, pd.MultiIndex):
            raise InvalidRequestError(
                "update() needs to know the market: this frame has no attrs['mdcoord']['markets'] and no market "
                "index level; call mdcoord.candles(market, ...) instead, or set df.attrs['mdcoord'] = "
                "{'markets': ['KRW-BTC'], 'timeframe': '1m'}"
            )
        if self._df.empty:
            raise InvalidRequestError("update() extends a frame from its newest candle; this frame has none")
        flat = as_flat(self._df, (meta.get("markets") or ["?"])[0])
        start = tf.slot_start(tf.slot_of(flat["time"].max()) + 1)
        markets = meta.get("markets") or sorted(flat["market"].unique())
        fresh = candles(markets, tf, start=start, base_url=meta.get("source") or None, **options)
        merged = pd.concat([flat, as_flat(fresh, markets[0])], ignore_index=True)
        merged = merged.drop_duplicates(["market", "time"], keep="last").sort_values(["market", "time"])
        out = like_input(merged.reset_index(drop=True), self._df)
        out.attrs["mdcoord"] = {**fresh.attrs.get("mdcoord", {}), "data_count": len(out), "updated_from": len(self._df)}
        return out
