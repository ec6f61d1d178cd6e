"""``/orderbook``: a synthetic book around the last trade, deterministic in (seed, market, time).

The book is rebuilt at every trade (its ``timestamp`` is the last trade's) from a PCG64 stream
keyed by ``(seed, market id, tag, timestamp)``, one stream per side, so it never depends on
what was asked before. Prices are integers ``k`` in ticks of the day's tick size (the grid the
trades use); a price is printed as ``k * tick`` or ``k / (1/tick)`` exactly as trade prices are.

Shape (liquidity follows the market's trade rate):
    * the last trade sits at the touch: a taker **buy** hit the best ask, which is still there
      (or, consumed, one tick higher); a taker **sell** mirrors that on the bid. The spread is
      one tick or more (a geometric number), so ``best bid <= last price <= best ask``;
    * going away from the touch, levels are occupied with a probability (0.92 liquid, 0.6 mid,
      0.35 thin); each level's size is an exponential amount of the market's mean trade value;
    * mid and thin books are **finite**: thin markets show 2-29 levels per side, so ``count=30``
      returns zero-padded units, as on Upbit;
    * draws come in chunks, each side's stream read sequentially, so a deeper request (grouping
      with ``level``) sees the same first levels as a shallow one.

Grouping (``level``, KRW markets only): bids floor to the level's grid, asks ceil, sizes add.
Supported levels are 0 (none) and 1, 10, 100 and 1000 ticks of the market's current tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._tape import round_volume

MAX_UNITS = 30
LEVEL_MULTIPLES = (1, 10, 100, 1000)
_TAG_BOOK, _TAG_BID, _TAG_ASK = 4, 5, 6


def _rng(seed: int, mid: int, tag: int, ts: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, mid, tag, ts])))


def _liquidity(rate_per_min: float) -> tuple[float, float, tuple[int, int] | None]:
    """(fill probability of a level, spread continuation probability, depth cap range)."""
    if rate_per_min >= 10:
        return 0.92, 0.1, None
    if rate_per_min >= 1:
        return 0.6, 0.4, (25, 150)
    return 0.35, 0.7, (2, 30)


def price_of(k: np.ndarray, tick: float) -> np.ndarray:
    """Prices of tick counts, as the doubles nearest their decimals (like the tape's prices)."""
    k = np.asarray(k, dtype=np.float64)
    return k * tick if tick >= 1.0 else k / round(1.0 / tick)


@dataclass(frozen=True, slots=True)
class Book:
    """One side each: prices in ticks (bids descending, asks ascending) and sizes."""

    tick: float
    bid_k: np.ndarray
    bid_size: np.ndarray
    ask_k: np.ndarray
    ask_size: np.ndarray


def _side(rng: np.random.Generator, best_k: int, direction: int, fill: float, cap: int | None,
          depth_ticks: int, value: float, tick: float) -> tuple[np.ndarray, np.ndarray]:
    """Levels of one side: at least ``MAX_UNITS`` levels and ``depth_ticks`` deep, or ``cap``."""
    gaps: list[np.ndarray] = []
    draws: list[np.ndarray] = []
    n = depth = 0
    chunk = 64
    limit = best_k - 1 if direction < 0 else None  # bids stop above price zero
    while (cap is None or n < cap) and (n < MAX_UNITS or depth < depth_ticks) and (limit is None or depth < limit):
        u = rng.random((chunk, 2))
        gap = 1 + np.floor(np.log1p(-u[:, 0]) / np.log1p(-fill)).astype(np.int64)
        if not gaps:
            gap[0] = 0  # the first level sits at the touch
        gaps.append(gap)
        draws.append(u[:, 1])
        n += chunk
        depth += int(gap.sum())
        chunk *= 2
    if not gaps:
        return np.empty(0, np.int64), np.empty(0)
    offset = np.cumsum(np.concatenate(gaps))
    u = np.concatenate(draws)
    keep = np.ones(offset.shape[0], bool) if cap is None else np.arange(offset.shape[0]) < cap
    k = best_k + direction * offset
    keep &= k >= 1
    k, u = k[keep], u[keep]
    i = np.arange(k.shape[0])
    amount = value * (0.2 - 2.0 * np.log1p(-u)) * (1.0 + i / 20.0)
    return k, round_volume(amount / price_of(k, tick))


def build_book(seed: int, mid: int, ts: int, last_price: float, taker_bought: bool, tick: float,
               rate_per_min: float, trade_value: float, depth_ticks: int = MAX_UNITS + 1) -> Book:
    """The book right after the trade at ``ts``; sides reach ``depth_ticks`` ticks when not capped."""
    fill, spread_p, cap_range = _liquidity(rate_per_min)
    head = _rng(seed, mid, _TAG_BOOK, ts).random(4)
    k_last = int(round(last_price / tick))
    stays = head[0] < 0.6  # the level the taker hit was not used up
    spread = 1 + int(np.floor(np.log1p(-head[1]) / np.log(spread_p)))
    if taker_bought:
        ask0 = k_last if stays else k_last + 1
        bid0 = ask0 - spread
    else:
        bid0 = k_last if stays else k_last - 1
        ask0 = bid0 + spread
    caps: list[int | None] = [None, None]
    if cap_range is not None:
        lo, hi = cap_range
        caps = [lo + int(head[2] * (hi - lo)), lo + int(head[3] * (hi - lo))]
    bid_k, bid_size = _side(_rng(seed, mid, _TAG_BID, ts), bid0, -1, fill, caps[0], depth_ticks, trade_value, tick)
    ask_k, ask_size = _side(_rng(seed, mid, _TAG_ASK, ts), ask0, 1, fill, caps[1], depth_ticks, trade_value, tick)
    return Book(tick, bid_k, bid_size, ask_k, ask_size)


def supported_levels(quote: str, tick: float) -> list[float]:
    """Grouping steps the market accepts: 0 (none); KRW markets also 1/10/100/1000 ticks."""
    if quote != "KRW":
        return [0.0]
    return [0.0] + [float(price_of(np.array([m]), tick)[0]) for m in LEVEL_MULTIPLES]


def level_multiple(level: float, quote: str, tick: float) -> int | None:
    """Ticks per group for a ``level`` (1 for 0), or None when the market does not support it."""
    if level == 0:
        return 1
    if quote != "KRW" or level < 0:
        return None
    m = level / tick
    r = round(m)
    return r if r in LEVEL_MULTIPLES and abs(m - r) <= 1e-9 * r else None


def _group(k: np.ndarray, size: np.ndarray, m: int, up: bool) -> tuple[np.ndarray, np.ndarray]:
    if m == 1 or k.shape[0] == 0:
        return k, size
    key = -((-k) // m) * m if up else k // m * m
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    return key[first], np.add.reduceat(size, first)


def orderbook_row(code: str, ts: int, book: Book, count: int, m: int, level: float) -> dict[str, Any]:
    """The ``/orderbook`` row: ``count`` units, grouped by ``m`` ticks, zero-padded."""
    bid_k, bid_size = _group(book.bid_k, book.bid_size, m, up=False)
    ask_k, ask_size = _group(book.ask_k, book.ask_size, m, up=True)
    bid_k, bid_size, ask_k, ask_size = bid_k[:count], bid_size[:count], ask_k[:count], ask_size[:count]

    def padded(a: np.ndarray) -> list[float]:
        return np.r_[a, np.zeros(count - a.shape[0])].tolist()

    bp, bs = padded(price_of(bid_k, book.tick)), padded(bid_size)
    ap, as_ = padded(price_of(ask_k, book.tick)), padded(ask_size)
    # Live answers list the bid keys first (docs/upbit.md); clients must not depend on key order.
    units = [{"bid_price": b, "bid_size": s, "ask_price": a, "ask_size": t} for b, s, a, t in zip(bp, bs, ap, as_)]
    return {
        "market": code,
        "timestamp": ts,
        "total_ask_size": round(float(ask_size.sum()), 8),
        "total_bid_size": round(float(bid_size.sum()), 8),
        "orderbook_units": units,
        "level": int(level) if float(level).is_integer() else level,
    }


def instrument_row(code: str, quote: str, tick: float) -> dict[str, Any]:
    """``/orderbook/instruments`` row (strings, as Upbit documents them)."""

    def text(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else np.format_float_positional(x, trim="-")

    return {"market": code, "quote_currency": quote, "tick_size": text(tick),
            "supported_levels": [text(v) for v in supported_levels(quote, tick)]}
