"""Candlestick charts (matplotlib, an optional extra: ``pip install "mdcoord[plot]"``).

Upbit's colours: red for a rising candle, blue for a falling one. Missing candles are shaded,
so a chart never hides a gap by drawing the neighbours next to each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._exceptions import InvalidRequestError
from ._frames import as_flat
from ._timeframe import Timeframe

__all__ = ["plot_candles"]

UP, DOWN, GAP = "#d24f45", "#1261c4", "#f2c94c"


def plot_candles(df: pd.DataFrame, tf: Timeframe, *, market: str | None = None, ax: Any = None,
                 title: str | None = None) -> Any:
    """Draw candles with a volume panel and shaded gaps; returns the matplotlib Figure."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('df.mdc.plot() needs matplotlib: pip install "mdcoord[plot]"') from exc
    flat = as_flat(df, (df.attrs.get("mdcoord", {}).get("markets") or ["?"])[0])
    markets = list(dict.fromkeys(flat["market"]))
    market = market or markets[0]
    if market not in markets:
        raise InvalidRequestError(f"plot(market={market!r}): that market is not in this frame; it holds {markets}")
    part = flat[flat["market"] == market]
    if ax is None:
        fig, (ax, vax) = plt.subplots(2, 1, sharex=True, figsize=(11, 5.5), gridspec_kw={"height_ratios": [3, 1]})
    else:  # pragma: no cover - caller-provided axes: price only
        fig, vax = ax.figure, None
    # x = slot ordinal: every interval gets its width, present or not
    x = tf.ordinal(part["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64)).astype(float)
    o, h, lo, c = (part[k].to_numpy() for k in ("open", "high", "low", "close"))
    colour = np.where(c >= o, UP, DOWN)
    ax.vlines(x, lo, h, colors=colour, linewidth=0.8)
    body = np.maximum(np.abs(c - o), (h.max() - lo.min()) * 1e-4 if len(h) else 0)
    # snap=False: at ~100 dpi a 1000-candle bar is under a pixel wide, and snapping to the pixel
    # grid drew a third of them with zero width (a complete series looked gappy)
    ax.bar(x, body, bottom=np.minimum(o, c), width=0.7, color=colour, linewidth=0, snap=False)
    if len(x):
        grid = np.arange(x.min(), x.max() + 1)
        missing = ~np.isin(grid, x)
        if missing.any():
            ax.fill_between(grid, 0, 1, where=missing, step="mid", color=GAP, alpha=0.35,
                            transform=ax.get_xaxis_transform(), label=f"no candle ({int(missing.sum())})")
            ax.legend(loc="upper left", fontsize=8)
    if vax is not None:
        vax.bar(x, part["volume"].to_numpy(), width=0.7, color=colour, linewidth=0, snap=False)
        vax.set_ylabel("volume")
    ticks = ax.get_xticks()
    labels = [tf.slot_start(int(t)).strftime("%m-%d %H:%M") if np.isfinite(t) else "" for t in ticks]
    (vax or ax).set_xticks(ticks, labels, rotation=0, fontsize=8)
    ax.set_xlim(x.min() - 1, x.max() + 1) if len(x) else None
    if len(x):  # 5% padding under the lowest low and over the highest high
        pad = (h.max() - lo.min()) * 0.05 or abs(h.max()) * 0.05 or 1.0
        ax.set_ylim(lo.min() - pad, h.max() + pad)
    # KRW prices in full with thousands separators (no "1e7", no offset)
    from matplotlib.ticker import FuncFormatter
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.4g}"))
    ax.set_ylabel("price")
    ax.set_title(title or f"{market} {tf.value} (UTC)")
    fig.tight_layout()
    return fig
