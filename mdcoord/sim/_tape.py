"""The synthetic tape: prices and trades, generated per market and per day (or block of days).

Price model
    Per market, one log-price **anchor** per UTC day boundary: a drift from the listing price to
    the 2026 level plus a random walk squashed by ``tanh`` (so prices stay plausible over nine
    years). Between two anchors the intraday path is a Brownian bridge, so every day can be made
    on its own and still meets its neighbours. Randomness is counter-based: each (market, day)
    or (market, 16-day block) has its own PCG64 stream keyed by ``(seed, market id, tag, index)``,
    so nothing depends on what was generated before.

Two eras (the boundary is a UTC midnight fixed when the model is built)
    * **seconds era** (the last ``seconds_horizon_days`` days up to and after now): a real
      trade tape — per-minute Poisson counts, trades spread over the minute on a jittered grid,
      each with price (tick-rounded, bid/ask bounce), volume (8 decimals), ms timestamp and taker
      side. Seconds candles, and later ``/trades/ticks``, come from it.
    * **minute era** (before): up to four prints per minute (open, high, low, close), made
      directly as per-minute tables for 16 days at a time. No API exposes finer data there.

Every candle aggregates these tables (see ``_bars``), so all units agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ._bars import Bars, from_trades
from ._catalog import MarketInfo
from ._clock import MS_PER_DAY, MS_PER_MINUTE, dt_to_ms

BLOCK_DAYS = 16  # minute-era days generated together (one RNG stream, one vectorized pass)
_MINUTES = 1440
_TAG_PATH, _TAG_TAPE, _TAG_BLOCK = 1, 2, 3
_PATH_CHUNK = 1024  # anchor days per RNG stream, so the walk is prefix-stable at any length
_DAY_2026 = dt_to_ms("2026-01-01T00:00:00Z") // MS_PER_DAY
_SQRT12 = float(np.sqrt(12.0))

# Intraday activity: busiest around 13:00 UTC (22:00 KST), quietest twelve hours later. Mean 1.
_M = np.arange(_MINUTES)
PROFILE = 1.0 + 0.5 * np.cos(2 * np.pi * (_M / _MINUTES - 13 / 24))
PROFILE /= PROFILE.mean()

# Upbit-like KRW tick table: (lower bound of price, tick).
_KRW_TICKS = (
    (2_000_000, 1000.0), (1_000_000, 500.0), (500_000, 100.0), (100_000, 50.0),
    (10_000, 10.0), (1_000, 1.0), (100, 1.0), (10, 0.01), (1, 0.001), (0.1, 0.0001),
    (0.01, 0.00001), (0.001, 0.000001), (0.0001, 0.0000001),
)


def _rng(seed: int, mid: int, tag: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, mid, tag, index])))


def tick_size(quote: str, price: float) -> float:
    """The price step of a market at a price level (KRW table, 1 satoshi, ~5 digits in USDT)."""
    if quote == "BTC":
        return 1e-8
    if quote == "USDT":
        exp = int(np.floor(np.log10(max(price, 1e-12)))) - 4
        return float(min(max(10.0**exp, 1e-8), 0.01))
    for bound, tick in _KRW_TICKS:
        if price >= bound:
            return tick
    return 1e-8


def round_to_tick(price: np.ndarray, tick: np.ndarray | float) -> np.ndarray:
    """Prices on the tick grid, as the nearest doubles of their decimals (clean JSON output)."""
    if np.size(tick) == 0:  # no prices at all (e.g. a block whose only listed minutes are empty)
        return np.asarray(price, dtype=np.float64).copy()
    if np.ndim(tick) == 0 or np.all(tick == np.ravel(tick)[0]):
        t = float(np.ravel(tick)[0])
        k = np.maximum(np.rint(price / t), 1.0, out=None)
        # k / (1/tick) rather than k * tick: dividing by an exact integer yields the double
        # nearest to the decimal, so 0.0123 prints as 0.0123, not 0.012300000000000002.
        return k * t if t >= 1.0 else k / round(1.0 / t)
    tick = np.asarray(tick, dtype=np.float64)
    k = np.maximum(np.rint(price / tick), 1.0)
    return np.where(tick >= 1.0, k * tick, k / np.rint(1.0 / np.minimum(tick, 1.0)))


def round_volume(v: np.ndarray) -> np.ndarray:
    """Volumes to 8 decimals, at least one unit."""
    return np.maximum(np.rint(v * 1e8), 1.0) / 1e8


@dataclass(frozen=True, slots=True)
class PricePath:
    """Daily anchors of one market. Index ``i`` is epoch day ``day0 + i``."""

    day0: int
    log_anchor: np.ndarray  # log price at the start of each day; one more than days
    sigma: np.ndarray  # daily log-volatility of the intraday bridge
    activity: np.ndarray  # multiplier of the trade rate for the day

    @property
    def days(self) -> int:
        return int(self.sigma.shape[0])

    def tick(self, quote: str, day: int) -> float:
        return tick_size(quote, float(np.exp(self.log_anchor[day - self.day0])))


def build_path(info: MarketInfo, seed: int, last_day: int) -> PricePath:
    """Anchors from the listing day through ``last_day`` (inclusive)."""
    day0 = info.listing_ms // MS_PER_DAY
    n = max(last_day - day0 + 1, 1)
    chunks = []
    for c in range((n + _PATH_CHUNK) // _PATH_CHUNK + 1):
        chunks.append(_rng(seed, info.mid, _TAG_PATH, c).random((4, _PATH_CHUNK)))
    u = np.concatenate(chunks, axis=1)[:, : n + 1]
    sigma = info.sigma_day * (0.6 + 0.8 * u[1, :n])
    step = (u[0, :n] - 0.5) * _SQRT12 * sigma
    walk = np.r_[0.0, np.cumsum(step)]
    span = 0.02 if info.sigma_day < 0.01 else 0.9  # stablecoins barely move
    lo, hi = np.log(info.price_at_listing), np.log(info.price_2026)
    frac = np.clip(np.arange(n + 1) / max(_DAY_2026 - day0, 1), 0.0, 1.0)
    log_anchor = lo + (hi - lo) * frac + span * np.tanh(walk / span)
    # Busy days: random level times a boost on days that move a lot (as on real exchanges).
    activity = np.exp(0.5 * (u[2, :n] - 0.5) * _SQRT12 * 0.5) * (1.0 + 2.0 * np.abs(step) / sigma / _SQRT12)
    return PricePath(day0, log_anchor, sigma, activity / activity.mean())


@dataclass(frozen=True, slots=True)
class Tape:
    """All trades of one market-day in the seconds era, time-ordered."""

    ts: np.ndarray  # int64 epoch ms
    price: np.ndarray  # float64, tick-rounded
    volume: np.ndarray  # float64, 8 decimals
    bid: np.ndarray  # bool: taker bought (Upbit ``ask_bid`` = "BID")

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self))

    def slice_ms(self, lo_ms: int, hi_ms: int) -> Tape:
        """Trades with ``lo_ms <= ts < hi_ms``."""
        a, b = np.searchsorted(self.ts, [lo_ms, hi_ms], side="left")
        return Tape(*(getattr(self, f.name)[a:b] for f in fields(self)))

    def sequential_ids(self) -> np.ndarray:
        """Upbit-like ``sequential_id``: ``timestamp_ms * 10**4 + n``, n counting within the ms."""
        if len(self) == 0:
            return np.empty(0, np.int64)
        first = np.flatnonzero(np.r_[True, self.ts[1:] != self.ts[:-1]])
        n = np.arange(len(self)) - np.repeat(first, np.diff(np.r_[first, len(self)]))
        return self.ts * 10_000 + n

    def bars(self, bucket_ms: int) -> Bars:
        return from_trades(self.ts, self.price, self.volume, bucket_ms)


@dataclass(frozen=True, slots=True)
class _TapeDraws:
    """The random part of a tape day, before any trade is priced."""

    counts: np.ndarray  # trades per minute
    u: np.ndarray  # (3, n) float32: time jitter, bridge increments, side and size
    a: float  # the day's opening and closing log anchors
    b: float
    w: np.ndarray  # the random walk of the bridge at each trade
    w_total: float
    tick: float
    half_spread: float  # of the log price: bought trades print above the bridge, sold below

    def log_price(self, k: np.ndarray | None = None) -> np.ndarray:
        """Log price of every trade, or of the trades at indices ``k`` (elementwise, so a subset
        equals the whole tape's)."""
        n = self.w.shape[0]
        at = slice(None) if k is None else k
        # Brownian bridge a -> b in *trade time* (volatility follows activity, as on real
        # markets): trade k sits at s = (k+1)/(n+1) of the day's variance.
        s = (np.arange(1, n + 1) if k is None else k + 1) / (n + 1)
        x = self.a + (self.b - self.a) * s + self.w[at] - s * self.w_total
        x += np.where(self.u[2][at] < 0.5, self.half_spread, -self.half_spread)
        return x


def _tape_draws(info: MarketInfo, path: PricePath, day: int, seed: int) -> _TapeDraws | None:
    """A tape day's draws; None for a day without trades."""
    i = day - path.day0
    if i < 0 or i >= path.days:
        return None
    rng = _rng(seed, info.mid, _TAG_TAPE, day)
    a, b = float(path.log_anchor[i]), float(path.log_anchor[i + 1])
    sig = float(path.sigma[i])
    counts = rng.poisson(info.rate_per_min * path.activity[i] * PROFILE)
    day_ms = day * MS_PER_DAY
    if info.listing_ms > day_ms:  # listing day: nothing before the first minute of trading
        counts[: (info.listing_ms - day_ms + MS_PER_MINUTE - 1) // MS_PER_MINUTE] = 0
    n = int(counts.sum())
    if n == 0:
        return None
    u = rng.random((3, n), dtype=np.float32)
    w_end = float(rng.random())
    # Increments are uniform with unit variance.
    w = np.cumsum(u[1] - np.float32(0.5), dtype=np.float64) * (_SQRT12 * sig / np.sqrt(n + 1))
    w_total = w[-1] + (w_end - 0.5) * _SQRT12 * sig / np.sqrt(n + 1)
    tick = path.tick(info.quote, day)
    return _TapeDraws(counts, u, a, b, w, w_total, tick, 0.6 * tick / float(np.exp(a)) + 1e-4)


def day_tape(info: MarketInfo, path: PricePath, day: int, seed: int) -> Tape:
    """The seconds-era trades of ``info`` on epoch day ``day`` (the whole day, ignoring now)."""
    d = _tape_draws(info, path, day, seed)
    if d is None:
        e = np.empty(0)
        return Tape(e.astype(np.int64), e, e, e.astype(bool))
    n, counts, u = d.w.shape[0], d.counts, d.u
    minute = np.repeat(_M, counts)
    first = (np.cumsum(counts) - counts)[minute]
    step = (MS_PER_MINUTE / np.maximum(counts, 1))[minute]
    # A jittered grid inside the minute: ordered without sorting, and an even spread means a
    # liquid market really has a trade in almost every second.
    offset = minute * MS_PER_MINUTE + ((np.arange(n) - first + u[0]) * step).astype(np.int64)
    bid = u[2] < 0.5
    price = round_to_tick(np.exp(d.log_price()), d.tick)
    # Trade value: exponential around the market's mean (u[2] reused: the half ``bid`` ignores).
    size = np.log1p(-(2.0 * u[2] - ~bid).astype(np.float64)) * -info.trade_value
    volume = round_volume(size / price)
    return Tape(day * MS_PER_DAY + offset, price, volume, bid)


def tape_extremes(info: MarketInfo, path: PricePath, day: int, seed: int) -> tuple[bool, float, float]:
    """``(traded, highest price, lowest price)`` of a whole tape day, without building the tape.

    Equal to ``day_tape(...).price.max()`` / ``.min()``. ``y`` = the bridge without its anchor
    and bounce differs from the log price by ``a ± half_spread`` (up to rounding, ~1e-14), so a
    trade more than ``2 * half_spread + 2e-6`` below the highest ``y`` lies more than 1e-6 below
    the highest log price; ``exp`` and tick rounding are monotone (up to an ulp), so it cannot
    print the highest price. Only the few trades near either extreme are priced, exactly.
    """
    d = _tape_draws(info, path, day, seed)
    if d is None:
        return False, 0.0, 0.0
    n = d.w.shape[0]
    y = d.w + np.arange(1, n + 1) * (((d.b - d.a) - d.w_total) / (n + 1))
    slack = 2 * d.half_spread + 2e-6
    top, bottom = np.flatnonzero(y >= y.max() - slack), np.flatnonzero(y <= y.min() + slack)
    high = round_to_tick(np.exp(d.log_price(top)), d.tick).max()
    low = round_to_tick(np.exp(d.log_price(bottom)), d.tick).min()
    return True, float(high), float(low)


@dataclass(frozen=True, slots=True)
class MinuteBlock:
    """Minute-era tables for ``BLOCK_DAYS`` days: row r is epoch day ``day0 + r``."""

    day0: int
    has: np.ndarray  # bool (days, 1440): minute has at least one print
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    value: np.ndarray
    last: np.ndarray  # int64 epoch ms of the last print

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self) if f.name != "day0")

    def minute_bars(self, day: int) -> Bars:
        r = day - self.day0
        m = np.flatnonzero(self.has[r])
        return Bars(
            day * MS_PER_DAY + m * MS_PER_MINUTE,
            self.open[r, m], self.high[r, m], self.low[r, m], self.close[r, m],
            self.volume[r, m], self.value[r, m], self.last[r, m],
        )

    def day_bars(self) -> tuple[np.ndarray, Bars]:
        """Per-row day aggregates: ``(has_any, bars for every row)`` (rows without trades hold junk)."""
        has = self.has
        any_ = has.any(axis=1)
        first = np.argmax(has, axis=1)
        last = _MINUTES - 1 - np.argmax(has[:, ::-1], axis=1)
        r = np.arange(has.shape[0])
        bars = Bars(
            (self.day0 + r) * MS_PER_DAY,
            self.open[r, first],
            np.where(has, self.high, -np.inf).max(axis=1),
            np.where(has, self.low, np.inf).min(axis=1),
            self.close[r, last],
            np.where(has, self.volume, 0.0).sum(axis=1),
            np.where(has, self.value, 0.0).sum(axis=1),
            self.last[r, last],
        )
        return any_, bars


def _block_bridge(path: PricePath, block: int, end_day: int, u0: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A block's log-price bridge from its first uniforms: ``(path index, valid, x_start, x_end)``
    per (day, minute); a day is valid when it is listed and before ``end_day``."""
    days = block * BLOCK_DAYS + np.arange(BLOCK_DAYS)
    idx = np.clip(days - path.day0, 0, path.days - 1)
    valid = (days >= path.day0) & (days < min(end_day, path.day0 + path.days))
    a = path.log_anchor[idx][:, None]
    b = path.log_anchor[idx + 1][:, None]
    sig = path.sigma[idx][:, None]
    k = np.arange(1, _MINUTES + 1) / _MINUTES
    w = np.cumsum(u0 - 0.5, axis=1) * (_SQRT12 * sig / np.sqrt(_MINUTES))
    x_end = a + (b - a) * k + w - k * w[:, -1:]  # the bridge at the end of each minute
    x_start = np.concatenate([a, x_end[:, :-1]], axis=1)
    return idx, valid, x_start, x_end


def block_bounds(info: MarketInfo, path: PricePath, block: int, seed: int, end_day: int) -> tuple[np.ndarray, np.ndarray]:
    """Per day of a minute block, a bound above its highest and below its lowest price (-inf and
    +inf for days that cannot trade), from three of the block's thirteen rows of draws.

    A minute's high print is ``exp`` of (the higher bridge end + ``half``, the bid/ask bounce, +
    ``excursion * -log1p(-u[3])``), its low likewise with ``u[4]``; open and close lie within
    ``half`` of the bridge ends; all are tick-rounded (at most half a tick off, at least one
    tick). Taking the highest bridge end and the largest ``u`` of the day's minutes (traded or
    not) and widening by a tick and a relative 1e-9 makes these true bounds; they let the 52-week extremes skip most blocks of the minute era exactly.
    """
    rng = _rng(seed, info.mid, _TAG_BLOCK, block)
    shape = (BLOCK_DAYS, _MINUTES)
    idx, valid, _, x_end = _block_bridge(path, block, end_day, rng.random(shape))
    rng.bit_generator.advance(2 * BLOCK_DAYS * _MINUTES)  # skip u[1] and u[2] (one output per double)
    u_high, u_low = rng.random((2, *shape)).max(axis=2)  # the largest excursion of any minute
    a = path.log_anchor[idx]
    level = np.exp(a)
    ticks = np.array([tick_size(info.quote, float(p)) for p in level])
    half = 0.6 * ticks / level + 1e-4
    excursion = path.sigma[idx] / np.sqrt(_MINUTES) * 0.5
    # the minute's bridge ends: x_end, and for the first minute the day's anchor a
    top = np.maximum(x_end.max(axis=1), a) + half - np.log1p(-u_high) * excursion
    bottom = np.minimum(x_end.min(axis=1), a) - half + np.log1p(-u_low) * excursion
    top = np.exp(top) * (1 + 1e-9) + ticks
    bottom = np.exp(bottom) * (1 - 1e-9) - ticks
    return np.where(valid, top, -np.inf), np.where(valid, bottom, np.inf)


def minute_block(info: MarketInfo, path: PricePath, block: int, seed: int, end_day: int) -> MinuteBlock:
    """Minute tables of days ``[block*16, block*16+16)``; days at or after ``end_day`` are empty.

    The random numbers of the whole block are always drawn, so a day's prints never depend on
    which neighbours exist (listing day, era boundary). A minute has trades with the Poisson
    probability ``1 - exp(-mu)``; its print count (1-4) and value grow with ``mu``.
    """
    nd = BLOCK_DAYS
    day0 = block * nd
    days = day0 + np.arange(nd)
    rng = _rng(seed, info.mid, _TAG_BLOCK, block)
    u = rng.random((13, nd, _MINUTES))
    idx, valid, x_start, x_end = _block_bridge(path, block, end_day, u[0])
    mu = info.rate_per_min * path.activity[idx][:, None] * PROFILE
    p_any = -np.expm1(-mu)
    a = path.log_anchor[idx][:, None]
    sig = path.sigma[idx][:, None]
    minute_ms = days[:, None] * MS_PER_DAY + _M[None, :] * MS_PER_MINUTE
    has = (u[12] < p_any) & valid[:, None] & (minute_ms >= info.listing_ms)

    # Prices and volumes only for minutes with prints (few in thin markets). Liquid blocks are
    # nearly full, where plain reshapes beat gathering and scattering.
    flat = has.ravel()
    sel: np.ndarray | slice = slice(None) if flat.mean() > 0.5 else np.flatnonzero(flat)
    r = np.repeat(np.arange(nd), _MINUTES)[sel]
    uu = u[1:12].reshape(11, -1)[:, sel]
    xs, xe = x_start.ravel()[sel], x_end.ravel()[sel]
    level = np.exp(a[:, 0])
    ticks = np.array([tick_size(info.quote, float(p)) for p in level])
    tick = ticks[r]
    half = (0.6 * ticks / level + 1e-4)[r]
    excursion = (sig[:, 0] / np.sqrt(_MINUTES) * 0.5)[r]
    logs = np.stack([
        xs + np.where(uu[0] < 0.5, half, -half),
        np.maximum(xs, xe) + half - np.log1p(-uu[2]) * excursion,
        np.minimum(xs, xe) - half + np.log1p(-uu[3]) * excursion,
        xe + np.where(uu[1] < 0.5, half, -half),
    ])
    p_open, p_high, p_low, p_close = round_to_tick(np.exp(logs), tick)
    trades = (mu / p_any).ravel()[sel]  # expected trades in a minute that has some
    n = np.minimum(1 + np.floor(uu[4] * trades), 4)  # prints: open, [high and/or low], close
    has_c = n >= 2
    has_h = (n == 4) | ((n == 3) & (uu[5] < 0.5))
    has_l = (n == 4) | ((n == 3) & (uu[5] >= 0.5))
    close = np.where(has_c, p_close, p_open)
    p_high = np.where(has_h, np.maximum(p_high, np.maximum(p_open, close)), p_high)
    p_low = np.where(has_l, np.minimum(p_low, np.minimum(p_open, close)), p_low)
    present = np.stack([np.ones_like(has_c), has_h, has_l, has_c])
    prices = np.stack([p_open, p_high, p_low, p_close])
    wt = (0.2 + uu[6:10]) * present
    share = trades * info.trade_value * (0.5 + uu[10]) / wt.sum(axis=0)
    vols = np.where(present, round_volume(wt * share / prices), 0.0)
    jitter = (uu[10] * 15_000).astype(np.int64)

    def grid(values: np.ndarray) -> np.ndarray:
        out = np.zeros(flat.shape, dtype=values.dtype)
        out[sel] = values
        return np.where(has, out.reshape(has.shape), 0)

    return MinuteBlock(
        day0=day0,
        has=has,
        open=grid(p_open),
        high=grid(np.where(has_h, p_high, np.maximum(p_open, close))),
        low=grid(np.where(has_l, p_low, np.minimum(p_open, close))),
        close=grid(close),
        volume=grid(vols.sum(axis=0)),
        value=grid((vols * prices).sum(axis=0)),
        last=grid(minute_ms.ravel()[sel] + np.where(has_c, 45_000 + jitter, jitter)),
    )
