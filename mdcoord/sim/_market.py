"""``SyntheticMarket``: the deterministic exchange model every endpoint is built on.

The model answers "which candles exist and what are they" for any market, interval and range,
from the tape in ``_tape`` through the one aggregation in ``_bars``; tickers (``_ticker``),
orderbooks (``_orderbook``) and trade pages (``_ticks``) are read from the same tables. It is
usable without a server (ground truth for tests; the endpoints call the same methods)::

    m = SyntheticMarket(seed=7, now="2026-11-24T12:00:00Z")
    rows = m.candles("KRW-BTC", "minutes", 5, "2026-11-24T10:00:00Z", "2026-11-24T11:00:00Z")

Caching (all bounded; generation is deterministic, so eviction costs time, never answers):
    * generated tapes and minute blocks live in one process-wide byte-bounded LRU, keyed by
      everything they depend on, so several models/servers with the same seed share work;
    * completed day aggregates are kept per market in a dense array (a few hundred KB per
      market at most) — weeks/months/years and ``days`` read only these.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np

from ._bars import Bars
from ._cache import LRUCache
from ._catalog import CAUTION_KEYS, DELISTED, MarketInfo, build_catalog
from ._clock import MS_PER_DAY, MS_PER_MINUTE, MS_PER_SECOND, Clock, dt_to_ms, format_date, format_naive, ms_to_dt
from ._interval import Interval, Kind
from ._orderbook import MAX_UNITS, build_book, instrument_row, level_multiple, orderbook_row
from ._tape import (
    BLOCK_DAYS,
    MinuteBlock,
    PricePath,
    Tape,
    block_bounds,
    build_path,
    day_tape,
    minute_block,
    round_to_tick,
    tape_extremes,
)
from ._ticker import WEEKS_52_DAYS, Extremes, LastTrade, ticker_row
from ._ticks import MAX_COUNT, RETENTION_DAYS, page_bounds, parse_time_of_day, tick_window
from ._ticks import rows as tick_rows

_KST = 9 * 3_600_000
_TABLES: LRUCache[Any] = LRUCache(256 * 2**20, lambda v: int(v.nbytes))
# Day aggregates of single days (minute blocks, tapes), a few hundred bytes each: the 52 weeks a
# ticker needs cost ~20 ms per market to generate, so they are shared by every model in the
# process without pushing the big tables out of ``_TABLES``.
_DAYS: LRUCache[Any] = LRUCache(64 * 2**20, lambda v: int(v[0].nbytes + v[1].nbytes))


def _set_cache_budget(max_bytes: int) -> None:
    """Resize the process-wide table cache (the largest budget asked for wins)."""
    _TABLES.max_bytes = max(_TABLES.max_bytes, max_bytes)


class _DayStore:
    """Completed-day aggregates of one market, dense from its listing day; filled on demand."""

    def __init__(self, day0: int, days: int) -> None:
        self.day0 = day0
        self.known = np.zeros(days, bool)
        self.has = np.zeros(days, bool)
        z = np.zeros(days)
        self.bars = Bars(np.arange(day0, day0 + days, dtype=np.int64) * MS_PER_DAY,
                         z.copy(), z.copy(), z.copy(), z.copy(), z.copy(), z.copy(), np.zeros(days, np.int64))
        self.lock = threading.Lock()

    def put(self, day: int, has: bool, row: Bars, i: int = 0) -> None:
        k = day - self.day0
        self.has[k] = has
        if has:
            for name in ("open", "high", "low", "close", "volume", "value", "last"):
                getattr(self.bars, name)[k] = getattr(row, name)[i]
        self.known[k] = True


class SyntheticMarket:
    """A deterministic synthetic Upbit: markets, listing dates and every candle, from ``seed``.

    ``now`` (datetime or ISO string, UTC; default the real current time) is the sim's present:
    only trades strictly before it exist, and the newest candle of a unit is still forming.
    ``frozen=True`` (the default here) keeps now fixed; otherwise it advances with the wall
    clock. Seconds candles exist for the ``seconds_horizon_days`` UTC days ending with now's day
    (the boundary is fixed at construction). Thread-safe.
    """

    def __init__(
        self,
        seed: int = 7,
        now: datetime | str | None = None,
        *,
        frozen: bool = True,
        seconds_horizon_days: int = 93,
        cache_bytes: int = 256 * 2**20,
        clock: Clock | None = None,
    ) -> None:
        if seconds_horizon_days < 1:
            raise ValueError("seconds_horizon_days must be >= 1 (now's day is always in the tape)")
        self.seed = int(seed)
        self.clock = clock if clock is not None else Clock(now, frozen=frozen)
        start = self.clock.start_ms
        self._catalog = build_catalog(self.seed, start)
        self._served = {c: m for c, m in self._catalog.items() if m.served}
        self.horizon_day = start // MS_PER_DAY - (seconds_horizon_days - 1)
        self._path_days = start // MS_PER_DAY + 400
        self._paths: dict[str, PricePath] = {}
        self._stores: dict[str, _DayStore] = {}
        self._lock = threading.Lock()
        order = np.random.default_rng([self.seed, 3]).permutation(len(self._served))
        self._shuffled = [list(self._served)[i] for i in order]
        self._weeks52: dict[tuple[str, int], Extremes | None] = {}  # completed days, per (code, day)
        self._snapshots: dict[tuple[str, int], dict[str, Any]] = {}  # tickers per (code, now)
        _set_cache_budget(cache_bytes)

    # ----------------------------------------------------------------- catalog
    def now(self) -> datetime:
        return self.clock.now()

    def now_ms(self) -> int:
        return self.clock.now_ms()

    @property
    def seconds_horizon_start(self) -> datetime:
        """The oldest instant with seconds candles (a UTC midnight)."""
        return ms_to_dt(self.horizon_day * MS_PER_DAY)

    def markets(self, quote: str | None = None) -> list[str]:
        """Codes served by ``/market/all`` (sorted), optionally of one quote currency."""
        return sorted(c for c in self._served if quote is None or c.startswith(quote.upper() + "-"))

    def delisted(self) -> list[str]:
        """Codes the model knows but the API answers with 404 ``Code not found``."""
        return list(DELISTED)

    def resolve(self, code: str) -> str | None:
        """The canonical served code for a case-insensitive ``code``, or None."""
        up = code.strip().upper()
        return up if up in self._served else None

    def info(self, code: str) -> MarketInfo:
        """Catalog entry of a served or delisted market; ``KeyError`` otherwise."""
        return self._catalog[code.upper()]

    def listing_time(self, code: str) -> datetime:
        """The first instant trades may happen in ``code``."""
        return ms_to_dt(self.info(code).listing_ms)

    def market_rows(self, details: bool = False) -> list[dict[str, Any]]:
        """``/market/all`` rows, in the catalog's fixed shuffled order."""
        rows = []
        for code in self._shuffled:
            m = self._served[code]
            row: dict[str, Any] = {"market": code, "korean_name": m.korean_name, "english_name": m.english_name}
            if details:
                row["market_event"] = {"warning": m.warning, "caution": dict(zip(CAUTION_KEYS, m.caution))}
            rows.append(row)
        return rows

    # ------------------------------------------------------------- public candles
    def forming_start(self, kind: Kind | str, unit: int = 1) -> datetime:
        """Start of the interval containing now (the candle that is still forming, if any)."""
        iv = Interval.of(kind, unit)
        return ms_to_dt(int(iv.floor(np.array([self.now_ms() - 1]))[0]))

    def is_forming(self, kind: Kind | str, unit: int, start: datetime | str) -> bool:
        """Whether the candle starting at ``start`` still changes (it contains now)."""
        return ms_to_dt(dt_to_ms(start)) == self.forming_start(kind, unit)

    def candles(
        self,
        code: str,
        kind: Kind | str,
        unit: int = 1,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        *,
        converting_price_unit: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every row the API would return with ``start <= candle_date_time_utc < end``, newest first.

        ``start`` defaults to the beginning (all history), ``end`` to just after now (forming
        candle included). Rows carry the same fields, in the same order, as the endpoint.
        """
        info = self._require(code)
        iv = Interval.of(kind, unit)
        now = self.now_ms()
        lo = dt_to_ms(start) if start is not None else 0
        hi = dt_to_ms(end) if end is not None else now + 1
        bars = self._range(info, iv, lo, hi, now)
        return self._rows(info, iv, bars, now, converting_price_unit)

    def latest_candles(
        self,
        code: str,
        kind: Kind | str,
        unit: int = 1,
        to: datetime | str | int | None = None,
        count: int = 1,
        *,
        converting_price_unit: str | None = None,
    ) -> list[dict[str, Any]]:
        """What the candle endpoint answers: the ``count`` newest rows with start ``< to``.

        ``to`` may be epoch ms; None means no bound (the forming candle comes first).
        """
        info = self._require(code)
        iv = Interval.of(kind, unit)
        now = self.now_ms()
        hi = now + 1 if to is None else (to if isinstance(to, int) else dt_to_ms(to))
        count = max(0, min(int(count), 200))
        if iv.intraday:
            bars = self._latest_intraday(info, iv, hi, count, now)
        else:
            bars = self._latest_periods(info, iv, hi, count, now)
        return self._rows(info, iv, bars, now, converting_price_unit)

    def trades(self, code: str, start: datetime | str, end: datetime | str) -> Tape:
        """The tape (seconds era only) with ``start <= ts < min(end, now)``, oldest first."""
        info = self._require(code)
        now = self.now_ms()
        lo = max(dt_to_ms(start), self.horizon_day * MS_PER_DAY)
        hi = min(dt_to_ms(end), now)
        parts = [self._tape(info, d).slice_ms(lo, hi) for d in range(lo // MS_PER_DAY, (hi - 1) // MS_PER_DAY + 1)] if hi > lo else []
        if not parts:
            return day_tape(info, self._path(info), -1, self.seed)
        return Tape(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("ts", "price", "volume", "bid")))


    # ------------------------------------------------------------- quotations
    def last_trade(self, code: str) -> LastTrade | None:
        """The latest trade strictly before now (None if the market never traded)."""
        return self._last_trade(self._require(code), self.now_ms())

    def ticker(self, code: str) -> dict[str, Any]:
        """The ``/ticker`` row of one market at now (same function the endpoint calls)."""
        return self.tickers([code])[0]

    def tickers(self, codes: Iterable[str]) -> list[dict[str, Any]]:
        """``/ticker`` rows in the given order; ``KeyError`` if any code is unknown or delisted.

        Consistency: ``trade_*`` = the last trade before now; ``opening/high/low_price`` and
        ``acc_trade_*`` = today's daily candle so far (UTC day); ``prev_closing_price`` = the
        close of the last earlier day with trades; ``*_24h`` = sums over ``[now - 24 h, now)``;
        52-week extremes over the daily candles of the 364 UTC days ending today. The first call
        for a market builds its 52 weeks of day aggregates (tens of ms); later calls are cheap.
        """
        infos = [self._require(c) for c in codes]
        now = self.now_ms()
        cold = list({i.code: i for i in infos if (i.code, now) not in self._snapshots}.values())
        if len(cold) > 1:  # first snapshots (each market's 52 weeks) on every core; cached below
            with ThreadPoolExecutor(min(len(cold), os.cpu_count() or 1)) as pool:
                list(pool.map(lambda info: self._ticker(info, now), cold))
        return [self._ticker(info, now) for info in infos]

    def orderbook(self, code: str, count: int = MAX_UNITS, level: float = 0) -> dict[str, Any] | None:
        """The ``/orderbook`` row at now; None if ``level`` is not supported for the market.

        ``count`` outside 1-30 means 30 (as on Upbit). Deterministic in (seed, market, the last
        trade's time): the book is rebuilt at each trade and stamped with its timestamp.
        """
        info = self._require(code)
        now = self.now_ms()
        count = count if 1 <= count <= MAX_UNITS else MAX_UNITS
        last = self._last_trade_or_listing(info, now)
        tick = self._path(info).tick(info.quote, last.ts // MS_PER_DAY)
        m = level_multiple(float(level), info.quote, tick)
        if m is None:
            return None
        book = build_book(self.seed, info.mid, last.ts, last.price, last.taker_bought, tick,
                          info.rate_per_min, info.trade_value, depth_ticks=(count + 1) * m)
        return orderbook_row(info.code, last.ts, book, count, m, level)

    def orderbook_instrument(self, code: str) -> dict[str, Any]:
        """The ``/orderbook/instruments`` row: tick size and supported ``level`` values (strings)."""
        info = self._require(code)
        last = self._last_trade_or_listing(info, self.now_ms())
        return instrument_row(info.code, info.quote, self._path(info).tick(info.quote, last.ts // MS_PER_DAY))

    def ticks(
        self,
        code: str,
        *,
        to: str | int | None = None,
        count: int = 1,
        cursor: int | None = None,
        days_ago: int | None = None,
    ) -> list[dict[str, Any]]:
        """What ``/trades/ticks`` answers (the endpoint calls this), rows newest first.

        ``days_ago`` 1-7 picks that UTC day before today (None: today); ``to`` (``HHmmss``,
        ``HH:mm:ss`` or ms since midnight) keeps trades strictly before that UTC time of day;
        ``cursor`` (a ``sequential_id``) keeps trades ordered before that trade; ``count`` is
        capped at 500. Only today and the 7 days before exist. ``ValueError`` on bad values.
        """
        info = self._require(code)
        now = self.now_ms()
        if days_ago is not None and not 1 <= days_ago <= RETENTION_DAYS:
            raise ValueError(f"days_ago must be 1-{RETENTION_DAYS}, got {days_ago}")
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        to_ms = parse_time_of_day(to) if isinstance(to, str) else to
        first = max(info.listing_ms, self.horizon_day * MS_PER_DAY)
        lo, hi = tick_window(now, days_ago, to_ms, first)
        return self._trade_page(info, lo, hi, min(count, MAX_COUNT), cursor, now)

    def trade_rows(self, code: str, start: datetime | str, end: datetime | str) -> list[dict[str, Any]]:
        """Every trade with ``start <= timestamp < min(end, now)`` as ``/trades/ticks`` rows, newest first.

        Ground truth for the endpoint: the same rows, built by the same function, but for any
        range of the seconds era (the endpoint serves today and the 7 days before).
        """
        info = self._require(code)
        now = self.now_ms()
        lo = max(dt_to_ms(start), info.listing_ms, self.horizon_day * MS_PER_DAY)
        return self._trade_page(info, lo, min(dt_to_ms(end), now), None, None, now)

    def _trade_page(self, info: MarketInfo, lo: int, hi: int, count: int | None, cursor: int | None,
                    now: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        if hi <= lo:
            return rows
        for day in range((hi - 1) // MS_PER_DAY, lo // MS_PER_DAY - 1, -1):  # newest day first
            tape = self._tape(info, day)
            a, b = page_bounds(tape, max(lo, day * MS_PER_DAY), min(hi, (day + 1) * MS_PER_DAY), count, cursor)
            if b > a:
                prev = self._last_close_before(info, day, now)
                rows += tick_rows(info.code, tape, a, b, float(tape.price[0]) if prev is None else prev)
            if count is not None:
                count -= b - a
                if count <= 0:
                    break
        return rows

    def _last_trade(self, info: MarketInfo, now: int) -> LastTrade | None:
        day = (now - 1) // MS_PER_DAY
        first = info.listing_ms // MS_PER_DAY
        while day >= max(first, self.horizon_day):
            tape = self._tape(info, day)
            k = int(np.searchsorted(tape.ts, now, side="left"))
            if k:
                return LastTrade(int(tape.ts[k - 1]), float(tape.price[k - 1]), float(tape.volume[k - 1]), bool(tape.bid[k - 1]))
            day -= 1
        while day >= first:  # minute era: the last print of the last minute (its own size is not kept)
            bars = self._minute_bars(info, day, now)
            if len(bars):
                return LastTrade(int(bars.last[-1]), float(bars.close[-1]), float(bars.volume[-1]), False)
            day -= 1
        return None

    def _last_trade_or_listing(self, info: MarketInfo, now: int) -> LastTrade:
        """The last trade, or for a market that has not traded yet a zero-size print at listing."""
        last = self._last_trade(info, now)
        if last is not None:
            return last
        day = info.listing_ms // MS_PER_DAY
        path = self._path(info)
        price = float(round_to_tick(np.exp(path.log_anchor[day - path.day0 : day - path.day0 + 1]), path.tick(info.quote, day))[0])
        return LastTrade(info.listing_ms, price, 0.0, False)

    def _ticker(self, info: MarketInfo, now: int) -> dict[str, Any]:
        key = (info.code, now)
        hit = self._snapshots.get(key)  # a frozen clock answers the same snapshot again and again
        if hit is not None:
            return hit
        today = now // MS_PER_DAY
        last = self._last_trade_or_listing(info, now)
        bars = self._day_bars(info, today, today + 1, now)
        day = None
        if len(bars):
            day = (float(bars.open[0]), float(bars.high[0]), float(bars.low[0]), float(bars.value[0]), float(bars.volume[0]))
        prev = self._last_close_before(info, today, now)
        if prev is None:  # listing day: compare with its own open, like the daily candle does
            prev = day[0] if day is not None else last.price
        weeks = self._weeks52_before(info, today, now)
        recent = Extremes.of(bars.start, bars.high, bars.low)
        merged = weeks.merge(recent) if weeks is not None else recent
        if merged is None:
            merged = Extremes(last.price, last.ts, last.price, last.ts)
        row = ticker_row(info.code, now, last, day, prev, self._sums(info, now - MS_PER_DAY, now), merged)
        if len(self._snapshots) > 4096:
            self._snapshots.clear()
        self._snapshots[key] = row
        return row

    def _weeks52_before(self, info: MarketInfo, today: int, now: int) -> Extremes | None:
        """Extremes of the completed days of the 52-week window ending today (cached per day)."""
        key = (info.code, today)
        if key not in self._weeks52:
            d0 = max(today - WEEKS_52_DAYS + 1, info.listing_ms // MS_PER_DAY)
            if now % MS_PER_DAY == 0:  # now at midnight: yesterday is still read from its minutes
                bars = self._day_bars(info, d0, today, now)
                self._weeks52[key] = Extremes.of(bars.start, bars.high, bars.low)
            else:
                self._weeks52[key] = self._completed_extremes(info, d0, today, now)
        return self._weeks52[key]

    def _completed_extremes(self, info: MarketInfo, d0: int, d1: int, now: int) -> Extremes | None:
        """``Extremes`` of the completed days ``[d0, d1)`` with trades, exactly as over their day
        candles, without building most of them.

        Seconds-era days: each tape's highest and lowest price (``tape_extremes``: no tape is
        built). Minute-era days: a cheap bound per day (``block_bounds``); days are built in
        order of their bound, best first, until no bound can reach the best price found, so
        only the few blocks near the extremes are generated. A skipped day's bound is strictly
        worse than the answer, so it can be neither the extreme nor a tie (earliest day wins).
        """
        split = min(max(d0, self.horizon_day), d1)
        tape = [(d, *self._tape_extremes(info, d)) for d in range(split, d1)]
        tape = [t for t in tape if t[1]]
        t_start = np.array([d * MS_PER_DAY for d, *_ in tape], np.int64)
        t_high, t_low = np.array([t[2] for t in tape]), np.array([t[3] for t in tape])
        exact: dict[int, Bars] = {}

        def built(day: int) -> Bars:
            if day not in exact:
                exact[day] = self._day_bars(info, day, day + 1, now)
            return exact[day]

        if split > d0:
            days = np.arange(d0, split)
            blocks = range(d0 // BLOCK_DAYS, (split - 1) // BLOCK_DAYS + 1)
            ub, lb = (np.concatenate(v)[d0 - blocks[0] * BLOCK_DAYS : split - blocks[0] * BLOCK_DAYS]
                      for v in zip(*(self._block_bounds(info, b) for b in blocks)))
            best_hi = float(t_high.max()) if len(tape) else -np.inf
            for i in np.argsort(-ub, kind="stable"):
                if ub[i] == -np.inf or ub[i] < best_hi:
                    break
                row = built(int(days[i]))
                best_hi = max(best_hi, float(row.high[0])) if len(row) else best_hi
            best_lo = float(t_low.min()) if len(tape) else np.inf
            for i in np.argsort(lb, kind="stable"):
                if lb[i] == np.inf or lb[i] > best_lo:
                    break
                row = built(int(days[i]))
                best_lo = min(best_lo, float(row.low[0])) if len(row) else best_lo
        minute = Bars.concat([exact[d] for d in sorted(exact)])
        return Extremes.of(np.r_[minute.start, t_start], np.r_[minute.high, t_high], np.r_[minute.low, t_low])

    def _sums(self, info: MarketInfo, lo: int, hi: int) -> tuple[float, float]:
        """(quote value, base volume) of the trades in ``[lo, hi)`` (minute-exact before the tape)."""
        value = volume = 0.0
        for day in range(max(lo, info.listing_ms) // MS_PER_DAY, (hi - 1) // MS_PER_DAY + 1):
            if day >= self.horizon_day:
                t = self._tape(info, day).slice_ms(lo, hi)
                value += float(np.dot(t.price, t.volume))
                volume += float(t.volume.sum())
            else:
                b = self._minute_bars(info, day, hi).clip(lo, hi)
                value += float(b.value.sum())
                volume += float(b.volume.sum())
        return value, volume

    # ------------------------------------------------------------------ sources
    def _require(self, code: str) -> MarketInfo:
        canon = self.resolve(code)
        if canon is None:
            raise KeyError(f"unknown or delisted market {code!r}")
        return self._served[canon]

    def _key(self, info: MarketInfo) -> tuple[int, str, int, int]:
        return (self.seed, info.code, info.listing_ms, self.horizon_day)

    def _path(self, info: MarketInfo) -> PricePath:
        path = self._paths.get(info.code)
        need = self.now_ms() // MS_PER_DAY + 2
        if path is None or path.day0 + path.days < need:
            path = build_path(info, self.seed, max(self._path_days, need + 400))
            with self._lock:
                self._paths[info.code] = path
        return path

    def _tape(self, info: MarketInfo, day: int, keep: bool = True) -> Tape:
        key = ("tape", *self._key(info), day)
        make = lambda: day_tape(info, self._path(info), day, self.seed)  # noqa: E731
        return _TABLES.get_or_make(key, make) if keep else (_TABLES.peek(key) or make())

    def _block(self, info: MarketInfo, block: int) -> MinuteBlock:
        key = ("block", *self._key(info), block)
        return _TABLES.get_or_make(key, lambda: minute_block(info, self._path(info), block, self.seed, self.horizon_day))

    def _block_days(self, info: MarketInfo, block: int) -> tuple[np.ndarray, Bars]:
        """``MinuteBlock.day_bars()`` of a block, cached process-wide; the block itself is not kept."""
        def make() -> tuple[np.ndarray, Bars]:
            blk = _TABLES.peek(("block", *self._key(info), block))
            if blk is None:
                blk = minute_block(info, self._path(info), block, self.seed, self.horizon_day)
            return blk.day_bars()
        return _DAYS.get_or_make(("block-days", *self._key(info), block), make)

    def _tape_extremes(self, info: MarketInfo, day: int) -> tuple[bool, float, float]:
        """``tape_extremes`` of a whole tape day, cached process-wide."""
        def make() -> tuple[np.ndarray, np.ndarray]:
            has, high, low = tape_extremes(info, self._path(info), day, self.seed)
            return np.array([has]), np.array([high, low])
        has, hl = _DAYS.get_or_make(("tape-extremes", *self._key(info), day), make)
        return bool(has[0]), float(hl[0]), float(hl[1])

    def _block_bounds(self, info: MarketInfo, block: int) -> tuple[np.ndarray, np.ndarray]:
        """``block_bounds`` of a minute-era block, cached process-wide."""
        return _DAYS.get_or_make(("block-bounds", *self._key(info), block),
                                 lambda: block_bounds(info, self._path(info), block, self.seed, self.horizon_day))

    def _tape_day(self, info: MarketInfo, day: int) -> tuple[np.ndarray, Bars]:
        """The day aggregate of a whole tape day (``has``, one-row bars), cached process-wide."""
        def make() -> tuple[np.ndarray, Bars]:
            # Aggregating the day straight from its tape equals aggregating its minutes.
            agg = self._tape(info, day, keep=False).bars(MS_PER_DAY)
            return np.array([len(agg) > 0]), agg
        return _DAYS.get_or_make(("tape-day", *self._key(info), day), make)

    def _minute_bars(self, info: MarketInfo, day: int, now: int) -> Bars:
        """1-minute bars of a day, trades before ``now`` only."""
        day_ms = day * MS_PER_DAY
        if day_ms >= now or day_ms + MS_PER_DAY <= info.listing_ms:
            return Bars.empty()
        if day < self.horizon_day:
            return self._block(info, day // BLOCK_DAYS).minute_bars(day)
        key = ("m1", *self._key(info), day)
        full = _TABLES.get_or_make(key, lambda: self._tape(info, day).bars(MS_PER_MINUTE))
        if day_ms + MS_PER_DAY <= now:
            return full
        cut = now // MS_PER_MINUTE * MS_PER_MINUTE  # the forming minute comes from the tape
        forming = self._tape(info, day).slice_ms(cut, now).bars(MS_PER_MINUTE)
        return Bars.concat([full.clip(day_ms, cut), forming])

    def _intraday_day(self, info: MarketInfo, iv: Interval, day: int, now: int) -> Bars:
        if iv.kind is Kind.SECONDS:
            day_ms = day * MS_PER_DAY
            if day < self.horizon_day or day_ms >= now:
                return Bars.empty()
            return self._tape(info, day).slice_ms(day_ms, now).bars(MS_PER_SECOND)
        bars = self._minute_bars(info, day, now)
        return bars if iv.unit == 1 else bars.coarsen(iv.floor(bars.start))

    def _store(self, info: MarketInfo) -> _DayStore:
        with self._lock:
            store = self._stores.get(info.code)
            today = self.now_ms() // MS_PER_DAY
            day0 = info.listing_ms // MS_PER_DAY
            if store is None or store.day0 + store.known.shape[0] <= today:
                fresh = _DayStore(day0, today - day0 + 64)
                if store is not None:  # the clock moved past the end: keep what we know
                    n = store.known.shape[0]
                    fresh.known[:n], fresh.has[:n] = store.known, store.has
                    for name in ("open", "high", "low", "close", "volume", "value", "last"):
                        getattr(fresh.bars, name)[:n] = getattr(store.bars, name)
                store = self._stores[info.code] = fresh
            return store

    def _day_bars(self, info: MarketInfo, d0: int, d1: int, now: int) -> Bars:
        """Day aggregates of days ``[d0, d1)`` with trades (before ``now``)."""
        store = self._store(info)
        today = (now - 1) // MS_PER_DAY
        d0 = max(d0, store.day0)
        full_end = min(d1, today)
        if full_end > d0:
            with store.lock:
                self._fill(info, store, d0, full_end)
                k0, k1 = d0 - store.day0, full_end - store.day0
                done = store.bars.take(slice(k0, k1)).take(store.has[k0:k1])
        else:
            done = Bars.empty()
        if d0 <= today < d1:
            minutes = self._minute_bars(info, today, now)
            return Bars.concat([done, minutes.coarsen(minutes.start // MS_PER_DAY * MS_PER_DAY)])
        return done

    def _fill(self, info: MarketInfo, store: _DayStore, d0: int, d1: int) -> None:
        missing = np.flatnonzero(~store.known[d0 - store.day0 : d1 - store.day0]) + d0
        for block in np.unique(missing[missing < self.horizon_day] // BLOCK_DAYS):
            has, bars = self._block_days(info, int(block))
            for i in range(BLOCK_DAYS):  # 16 scalar stores per block: negligible
                day = int(block) * BLOCK_DAYS + i
                if d0 <= day < d1 and not store.known[day - store.day0]:
                    store.put(day, bool(has[i]), bars, i)
        for day in missing[missing >= self.horizon_day].tolist():
            # The tape is not kept (a days request would otherwise flush the cache with 93 tapes).
            has, agg = self._tape_day(info, day)
            store.put(day, bool(has[0]), agg)

    # ------------------------------------------------------------------ queries
    def _range(self, info: MarketInfo, iv: Interval, lo: int, hi: int, now: int) -> Bars:
        hi_eff = min(hi, now)
        if hi_eff <= lo:
            return Bars.empty()
        if iv.intraday:
            days = range(max(lo // MS_PER_DAY, info.listing_ms // MS_PER_DAY), (hi_eff - 1) // MS_PER_DAY + 1)
            bars = Bars.concat([self._intraday_day(info, iv, d, now) for d in days])
        else:
            d0 = int(iv.floor(np.array([max(lo, info.listing_ms)]))[0]) // MS_PER_DAY
            d1 = iv.next_start(hi_eff - 1) // MS_PER_DAY
            days = self._day_bars(info, d0, d1, now)
            bars = days.coarsen(iv.floor(days.start))
        return bars.clip(lo, hi)

    def _latest_intraday(self, info: MarketInfo, iv: Interval, hi: int, count: int, now: int) -> Bars:
        parts: list[Bars] = []
        need = count
        day = (min(hi, now) - 1) // MS_PER_DAY
        first_day = info.listing_ms // MS_PER_DAY
        if iv.kind is Kind.SECONDS:
            first_day = max(first_day, self.horizon_day)
        while need > 0 and day >= first_day:
            if iv.kind is Kind.SECONDS:
                bars = self._seconds_tail(info, day, hi, now, need)
            else:
                bars = self._intraday_day(info, iv, day, now).clip(0, hi)
                bars = bars.take(slice(max(len(bars) - need, 0), None))
            parts.append(bars)
            need -= len(bars)
            day -= 1
        return Bars.concat(parts[::-1])

    def _seconds_tail(self, info: MarketInfo, day: int, hi: int, now: int, need: int) -> Bars:
        """The last ``need`` seconds bars of ``day`` starting before ``hi``, from a tape window."""
        tape = self._tape(info, day)
        end = min(((hi - 1) // MS_PER_SECOND + 1) * MS_PER_SECOND, now)
        stop = int(np.searchsorted(tape.ts, end, side="left"))
        width = 4 * need + 16
        while True:
            begin = max(stop - width, 0)
            bars = Tape(tape.ts[begin:stop], tape.price[begin:stop], tape.volume[begin:stop],
                        tape.bid[begin:stop]).bars(MS_PER_SECOND)
            if begin > 0:
                bars = bars.take(slice(1, None))  # the first second may be cut by the window
            if len(bars) >= need or begin == 0:
                return bars.take(slice(max(len(bars) - need, 0), None))
            width *= 4

    def _latest_periods(self, info: MarketInfo, iv: Interval, hi: int, count: int, now: int) -> Bars:
        last = min(hi, now) - 1  # the newest candle contains this instant
        first_day = info.listing_ms // MS_PER_DAY
        if count == 0 or last < first_day * MS_PER_DAY:
            return Bars.empty()
        end_day = iv.next_start(last) // MS_PER_DAY
        span = (count + 1) * iv.approx_days + 8
        while True:
            d0 = int(iv.floor(np.array([max(end_day - span, first_day) * MS_PER_DAY]))[0]) // MS_PER_DAY
            days = self._day_bars(info, d0, end_day, now)
            bars = days.coarsen(iv.floor(days.start)).clip(0, hi)
            if len(bars) >= count or d0 <= first_day:
                return bars.take(slice(max(len(bars) - count, 0), None))
            span *= 2

    def _last_close_before(self, info: MarketInfo, day: int, now: int) -> float | None:
        first_day = info.listing_ms // MS_PER_DAY
        step = 1  # usually yesterday traded: look there first, then further back in growing steps
        while day > first_day:
            lo = max(first_day, day - step)
            bars = self._day_bars(info, lo, day, now)
            if len(bars):
                return float(bars.close[-1])
            day = lo
            step = min(step * 4, 64)
        return None

    # ------------------------------------------------------------------- rows
    def _rows(self, info: MarketInfo, iv: Interval, bars: Bars, now: int, convert: str | None) -> list[dict[str, Any]]:
        """API rows, newest first, fields in Upbit's order."""
        if len(bars) == 0:
            return []
        utc = format_naive(bars.start)
        kst = format_naive(bars.start + _KST)
        cols = [bars.open.tolist(), bars.high.tolist(), bars.low.tolist(), bars.close.tolist(),
                bars.last.tolist(), bars.value.tolist(), bars.volume.tolist()]
        rows = []
        for i, (u, k, o, h, l, c, ts, val, vol) in enumerate(zip(utc, kst, *cols)):
            rows.append({
                "market": info.code, "candle_date_time_utc": u, "candle_date_time_kst": k,
                "opening_price": o, "high_price": h, "low_price": l, "trade_price": c,
                "timestamp": ts, "candle_acc_trade_price": val, "candle_acc_trade_volume": vol,
            })
        if iv.kind is Kind.MINUTES:
            for row in rows:
                row["unit"] = iv.unit
        elif iv.kind is Kind.DAYS:
            self._day_extras(info, bars, rows, now, convert)
        elif iv.kind is not Kind.SECONDS:
            for row, day in zip(rows, format_date(bars.start)):
                row["first_day_of_period"] = day
        rows.reverse()
        return rows

    def _day_extras(self, info: MarketInfo, bars: Bars, rows: list[dict[str, Any]], now: int, convert: str | None) -> None:
        first_prev = self._last_close_before(info, int(bars.start[0]) // MS_PER_DAY, now)
        # The listing day has no previous close: Upbit-like, it compares with its own open.
        prev = np.r_[bars.open[0] if first_prev is None else first_prev, bars.close[:-1]]
        change = bars.close - prev
        rate = change / prev
        converted: list[float | None] | None = None
        if convert is not None:
            converted = self._converted(info, bars, now)
        for i, row in enumerate(rows):
            row["prev_closing_price"] = float(prev[i])
            row["change_price"] = float(change[i])
            row["change_rate"] = float(rate[i])
            if converted is not None:
                row["converted_trade_price"] = converted[i]

    def _converted(self, info: MarketInfo, bars: Bars, now: int) -> list[float | None]:
        """Close in KRW: as is for KRW books; times KRW-BTC / KRW-USDT's close of that day."""
        if info.quote == "KRW":
            return bars.close.tolist()
        ref = self._served.get(f"KRW-{info.quote}")
        if ref is None:
            return [None] * len(bars)
        d0, d1 = int(bars.start[0]) // MS_PER_DAY, int(bars.start[-1]) // MS_PER_DAY + 1
        refs = self._day_bars(ref, d0, d1, now)
        where = dict(zip(refs.start.tolist(), refs.close.tolist()))
        return [None if (r := where.get(s)) is None else float(c * r) for s, c in zip(bars.start.tolist(), bars.close.tolist())]
