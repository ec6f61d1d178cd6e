"""Pure, vectorized DataFrame functions: API rows → columns, clean, index, gaps.

Invariants of a candle frame produced here:
- index: tz-aware UTC ``DatetimeIndex`` named ``time`` (the candle START) for one market, or a
  ``(market, time)`` MultiIndex for several; sorted ascending; unique.
- columns: ``open, high, low, close, volume, value`` (float64; ``volume`` in the base currency,
  ``value`` the quote turnover) and ``last_trade_at`` (UTC time of the candle's last trade),
  plus for daily candles ``prev_close, change_price, change_rate``.
No function here loops over rows in Python.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._exceptions import InvalidRequestError
from ._timeframe import Timeframe

__all__ = ["CANDLE_COLUMNS", "CandlePage", "TradePage", "trade_pages_to_frame", "trades_to_frame", "candle_pages_to_frame", "candle_rows_to_frame", "clean_candles", "gap_table", "index_candles"]

# API field → column, in output order.
_CANDLE_FIELDS = {
    "opening_price": "open",
    "high_price": "high",
    "low_price": "low",
    "trade_price": "close",
    "candle_acc_trade_volume": "volume",
    "candle_acc_trade_price": "value",
}
_DAY_FIELDS = {"prev_closing_price": "prev_close", "change_price": "change_price", "change_rate": "change_rate"}
CANDLE_COLUMNS = [*_CANDLE_FIELDS.values(), "last_trade_at"]


class CandlePage:
    """One answer's candles as numpy columns: what a job keeps of a page instead of its JSON rows.

    Built as soon as the page arrives (one pass per field, no row objects kept), so a long job
    holds ~100 bytes a candle instead of a parsed dict each, and the final frame is a
    concatenation of arrays. ``time`` is the candle start (int64 ns, UTC); ``last`` the last
    trade (int64 ms).
    """

    __slots__ = ("cols", "market", "time", "last")

    def __init__(self, market: np.ndarray, time: np.ndarray, last: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        self.market, self.time, self.last, self.cols = market, time, last, cols

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], tf: Timeframe) -> CandlePage:
        """Raises KeyError / TypeError / ValueError for rows of the wrong shape."""
        fields = {**_CANDLE_FIELDS, **(_DAY_FIELDS if tf is Timeframe.D1 and rows and "change_rate" in rows[0] else {})}
        time = np.array([r["candle_date_time_utc"] for r in rows], dtype="datetime64[s]")
        return cls(
            np.array([r["market"] for r in rows], dtype=object),
            time.astype("datetime64[ns]").view(np.int64),
            np.array([r["timestamp"] for r in rows], dtype=np.int64),
            {dst: np.array([r[src] for r in rows], dtype=np.float64) for src, dst in fields.items()},
        )

    def __len__(self) -> int:
        return len(self.time)

    def take(self, mask: np.ndarray) -> CandlePage:
        return CandlePage(self.market[mask], self.time[mask], self.last[mask], {k: v[mask] for k, v in self.cols.items()})


def candle_pages_to_frame(pages: list[CandlePage], tf: Timeframe) -> pd.DataFrame:
    """Candle pages (any order, any markets) → a flat frame with ``market`` and ``time`` columns."""
    pages = [p for p in pages if len(p)]
    if not pages:
        return candle_rows_to_frame([], tf)  # the empty frame, with every dtype set
    names = [c for c in (*_CANDLE_FIELDS.values(), *_DAY_FIELDS.values()) if all(c in p.cols for p in pages)]
    cat = np.concatenate
    out = pd.DataFrame({
        "market": pd.array(cat([p.market for p in pages]), dtype="str"),
        "time": pd.to_datetime(cat([p.time for p in pages]), unit="ns", utc=True),
    })
    for name in names:
        out[name] = cat([p.cols[name] for p in pages])
    out["last_trade_at"] = pd.to_datetime(cat([p.last for p in pages]), unit="ms", utc=True)
    day = [c for c in _DAY_FIELDS.values() if c in names]
    return canonical_candles(out[["market", "time", *CANDLE_COLUMNS, *day]])


def candle_rows_to_frame(rows: list[dict[str, Any]], tf: Timeframe) -> pd.DataFrame:
    """API candle rows (any order, any markets) → a flat frame with ``market`` and ``time`` columns."""
    extra = _DAY_FIELDS if tf is Timeframe.D1 else {}
    if not rows:
        cols: dict[str, Any] = {
            "market": pd.Series([], dtype="str"),
            "time": pd.Series([], dtype="datetime64[ns, UTC]"),
        }
        cols.update({c: pd.Series([], dtype="float64") for c in [*_CANDLE_FIELDS.values(), *extra.values()]})
        cols["last_trade_at"] = pd.Series([], dtype="datetime64[ms, UTC]")
        return pd.DataFrame(cols)[["market", "time", *CANDLE_COLUMNS, *extra.values()]]
    return candle_pages_to_frame([CandlePage.from_rows(rows, tf)], tf)


def canonical_candles(df: pd.DataFrame) -> pd.DataFrame:
    """One set of dtypes whatever the source (API rows, the Parquet cache, an empty page), so
    frames concatenate without falling back to ``object``."""
    dtypes = {"time": "datetime64[ns, UTC]", "last_trade_at": "datetime64[ms, UTC]"}
    dtypes.update({c: "float64" for c in df.columns if c not in ("market", "time", "last_trade_at")})
    return df.astype({c: t for c, t in dtypes.items() if c in df.columns and df[c].dtype != t})


def clean_candles(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by (market, time) and drop duplicate candles (page seams); the last copy wins."""
    if df.empty:
        return df.reset_index(drop=True)
    # Market codes in string order (factorizing Arrow strings is ~10x cheaper than making a
    # million Python strings with to_numpy()), so (code, time) orders rows as (market, time).
    codes, _ = pd.factorize(df["market"], sort=True)
    t = df["time"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    if _strictly_increasing(codes, t):
        return df.reset_index(drop=True)  # already clean (e.g. straight from the cache): O(n) check
    # One stable sort of integer keys, then keep the last row of each run of equal keys: no
    # hashing of (market, time) pairs (drop_duplicates + sort_values cost ~3x more on 1M rows).
    order = np.argsort(t, kind="stable") if codes.max() == 0 else np.lexsort((t, codes))
    tk, ck = t[order], codes[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (tk[1:] != tk[:-1]) | (ck[1:] != ck[:-1])
    return df.take(order[last]).reset_index(drop=True)


def _strictly_increasing(markets: np.ndarray, keys: np.ndarray) -> bool:
    """True if rows are strictly increasing by (market, key): sorted and without duplicates."""
    if len(keys) < 2:
        return True
    same = markets[1:] == markets[:-1]
    if same.all():  # one market: the common case, no string ordering needed
        return bool(np.all(keys[1:] > keys[:-1]))
    return bool(np.all(np.where(same, keys[1:] > keys[:-1], markets[1:] > markets[:-1])))


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` for int64 keys, by sorting (numpy 2's hash-based unique is ~15x slower on a
    million sorted keys) and skipping the sort when the keys are already sorted."""
    if len(a) == 0:
        return a
    if not np.all(a[1:] >= a[:-1]):
        a = np.sort(a)
    return a[np.concatenate(([True], a[1:] != a[:-1]))]


def index_candles(df: pd.DataFrame, markets: tuple[str, ...]) -> pd.DataFrame:
    """Set the output index: ``time`` for one market, ``(market, time)`` for several."""
    if len(markets) == 1:
        return df.drop(columns="market").set_index("time")
    out = df.copy()
    out["market"] = pd.Categorical(out["market"], categories=sorted(markets)).astype("str")
    return out.set_index(["market", "time"])


def gap_table(
    df: pd.DataFrame,
    tf: Timeframe,
    spans: dict[str, tuple[pd.Timestamp, pd.Timestamp]],
    failed: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] | None = None,
) -> pd.DataFrame:
    """Missing candles inside each market's span, one row per run of missing slots.

    ``df`` is a flat frame (``market``, ``time`` columns, cleaned). ``spans[m] = (start, end)`` is
    the half-open time span the result is meant to cover for market ``m``; ``failed[m]`` lists the
    windows of pieces that could not be fetched. Returns columns ``market, start, end`` (the first
    missing candle start and the start of the next present one) ``missing`` (number of slots) and
    ``reason``: ``"no_trades"`` (every piece was answered: the exchange has no candle there) or
    ``"not_fetched"`` (the slots lie in a piece that failed).
    """
    failed = failed or {}
    parts = []
    for market, (start, end) in spans.items():
        lo, hi = tf.first_slot_at_or_after(start), tf.first_slot_at_or_after(end)
        if hi <= lo:
            continue
        times = df.loc[df["market"] == market, "time"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
        ords = sorted_unique(tf.ordinal(times))
        ords = ords[(ords >= lo) & (ords < hi)]
        edges = np.concatenate(([lo - 1], ords, [hi]))
        d = np.diff(edges)
        idx = np.nonzero(d > 1)[0]
        g_lo, g_hi = edges[idx] + 1, edges[idx + 1]
        reasons = np.full(len(g_lo), "no_trades", dtype=object)
        fails = [(tf.first_slot_at_or_after(a), tf.first_slot_at_or_after(b)) for a, b in failed.get(market, [])]
        if fails:  # rare: only when pieces failed; a Python loop over those few runs is fine
            runs = [r for a, b in zip(g_lo.tolist(), g_hi.tolist()) for r in _split_by(a, b, fails)]
            g_lo = np.array([r[0] for r in runs], dtype=np.int64)
            g_hi = np.array([r[1] for r in runs], dtype=np.int64)
            reasons = np.array([r[2] for r in runs], dtype=object)
        if len(g_lo):
            parts.append(
                pd.DataFrame(
                    {
                        "market": market,
                        "start": pd.to_datetime(tf.start_ns(g_lo), utc=True),
                        "end": pd.to_datetime(tf.start_ns(g_hi), utc=True),
                        "missing": g_hi - g_lo,
                        "reason": pd.array(reasons, dtype="str"),
                    }
                )
            )
    if not parts:
        return pd.DataFrame(
            {
                "market": pd.Series([], dtype="str"),
                "start": pd.Series([], dtype="datetime64[ns, UTC]"),
                "end": pd.Series([], dtype="datetime64[ns, UTC]"),
                "missing": pd.Series([], dtype="int64"),
                "reason": pd.Series([], dtype="str"),
            }
        )
    return pd.concat(parts, ignore_index=True).sort_values(["market", "start"], kind="stable").reset_index(drop=True)


def merge_gap_runs(table: pd.DataFrame) -> pd.DataFrame:
    """Gap tables of consecutive pieces (segments) as one: a run that ends where the next one of
    the same market and reason starts is one run."""
    if table.empty:
        return table.reset_index(drop=True)
    t = table.sort_values(["market", "start"], kind="stable").reset_index(drop=True)
    new = (t["market"] != t["market"].shift()) | (t["reason"] != t["reason"].shift()) | (t["start"] != t["end"].shift())
    out = t.groupby(new.cumsum(), sort=False).agg(
        market=("market", "first"), start=("start", "first"), end=("end", "last"), missing=("missing", "sum"),
        reason=("reason", "first"),
    )
    return out.reset_index(drop=True).astype(t.dtypes.to_dict())


def _split_by(a: int, b: int, fails: list[tuple[int, int]]) -> list[tuple[int, int, str]]:
    """Cut the missing run ``[a, b)`` into parts inside failed windows and parts outside."""
    cuts = sorted({a, b, *(x for f in fails for x in f if a < x < b)})
    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        inside = any(f_lo <= lo and hi <= f_hi for f_lo, f_hi in fails)
        reason = "not_fetched" if inside else "no_trades"
        if out and out[-1][2] == reason and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi, reason)
        else:
            out.append((lo, hi, reason))
    return out


# -- markets -------------------------------------------------------------------------------------
_CAUTIONS = (
    "PRICE_FLUCTUATIONS",
    "TRADING_VOLUME_SOARING",
    "DEPOSIT_AMOUNT_SOARING",
    "GLOBAL_PRICE_DIFFERENCES",
    "CONCENTRATION_OF_SMALL_ACCOUNTS",
)


def markets_to_frame(rows: list[dict[str, Any]], *, details: bool) -> pd.DataFrame:
    """``/market/all`` rows → index ``market``; ``quote, base, korean_name, english_name``, and with
    ``details`` a bool ``warning`` plus one bool column per caution flag (lower-case names) and
    ``caution`` (any of them). Both readings of the warning are handled: the current
    ``market_event`` object and the older ``market_warning: "CAUTION"|"NONE"`` string."""
    raw = pd.DataFrame(rows, columns=["market", "korean_name", "english_name"])
    codes = raw["market"].astype("str").str.upper()
    parts = codes.str.split("-", n=1, expand=True)
    out = pd.DataFrame(
        {
            "market": codes,
            "quote": parts[0] if len(raw) else pd.Series([], dtype="str"),
            "base": parts[1] if len(raw) else pd.Series([], dtype="str"),
            "korean_name": raw["korean_name"].astype("str"),
            "english_name": raw["english_name"].astype("str"),
        }
    )
    if details:
        events = [r.get("market_event") or {} for r in rows]
        legacy = [r.get("market_warning") for r in rows]
        out["warning"] = np.array(
            [bool(e.get("warning")) or w == "CAUTION" for e, w in zip(events, legacy)], dtype=bool
        )
        for key in _CAUTIONS:
            out[key.lower()] = np.array([bool((e.get("caution") or {}).get(key)) for e in events], dtype=bool)
        out["caution"] = out[[k.lower() for k in _CAUTIONS]].any(axis=1)
    return out.sort_values("market", kind="stable").set_index("market")


# -- tickers -------------------------------------------------------------------------------------
_TICKER_FLOATS = [
    "opening_price", "high_price", "low_price", "trade_price", "prev_closing_price", "change_price",
    "change_rate", "signed_change_price", "signed_change_rate", "trade_volume", "acc_trade_price",
    "acc_trade_price_24h", "acc_trade_volume", "acc_trade_volume_24h", "highest_52_week_price",
    "lowest_52_week_price",
]


def tickers_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``/ticker`` rows → one row per market (the latest ``timestamp`` wins), index ``market``.

    Numbers are float64; ``trade_timestamp`` and ``timestamp`` are tz-aware UTC datetimes (the
    API's date/time strings in UTC and KST are dropped: they say the same thing), the 52-week
    dates are UTC midnights; ``change`` is ``RISE``/``EVEN``/``FALL``.
    """
    cols = ["market", "trade_timestamp", *_TICKER_FLOATS, "change", "highest_52_week_date",
            "lowest_52_week_date", "timestamp"]
    raw = pd.DataFrame(rows, columns=cols)
    out = pd.DataFrame({"market": raw["market"].astype("str").str.upper()})
    out["trade_timestamp"] = pd.to_datetime(raw["trade_timestamp"].astype("int64"), unit="ms", utc=True)
    for c in _TICKER_FLOATS:
        out[c] = raw[c].astype("float64")
    out["change"] = raw["change"].astype("str")
    for c in ("highest_52_week_date", "lowest_52_week_date"):
        # one unit whatever the rows: an empty column would otherwise infer [s], a full one [us]
        out[c] = pd.to_datetime(raw[c], format="%Y-%m-%d", utc=True).astype("datetime64[us, UTC]")
    out["timestamp"] = pd.to_datetime(raw["timestamp"].astype("int64"), unit="ms", utc=True)
    out = out.sort_values(["market", "timestamp"], kind="stable").drop_duplicates("market", keep="last")
    return out.set_index("market")


# -- orderbooks ----------------------------------------------------------------------------------
def orderbooks_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``/orderbook`` rows → a long frame indexed by ``(market, level)``, level 1 = best.

    Columns ``bid_price, bid_size, ask_price, ask_size`` (float64) and ``timestamp`` (the book's,
    tz-aware UTC). Padding does not pose as liquidity: a side whose price and size are both zero
    is NaN, and a level where both sides are padding is dropped. If a market comes back twice,
    the newer book wins.
    """
    books = pd.DataFrame(rows, columns=["market", "timestamp"])
    books["market"] = books["market"].astype("str").str.upper()
    books["timestamp"] = pd.to_datetime(books["timestamp"].astype("int64"), unit="ms", utc=True)
    books["n"] = np.array([len(r.get("orderbook_units") or []) for r in rows], dtype=np.int64)
    keep = books.sort_values("timestamp", kind="stable").drop_duplicates("market", keep="last").index
    units = [u for i in keep for u in (rows[i].get("orderbook_units") or [])]
    levels = pd.DataFrame(units, columns=["bid_price", "bid_size", "ask_price", "ask_size"]).astype("float64")
    owner = books.loc[keep]
    levels.insert(0, "market", np.repeat(owner["market"].to_numpy(), owner["n"].to_numpy()))
    levels.insert(1, "level", np.concatenate([np.arange(1, n + 1) for n in owner["n"]]) if len(owner) else np.empty(0, np.int64))
    levels["timestamp"] = pd.Series(  # one dtype whatever the rows (an empty repeat is object)
        np.repeat(owner["timestamp"].to_numpy(), owner["n"].to_numpy()), index=levels.index, dtype="datetime64[us, UTC]"
    )
    for side in ("bid", "ask"):
        pad = (levels[f"{side}_price"] == 0) & (levels[f"{side}_size"] == 0)
        levels.loc[pad, [f"{side}_price", f"{side}_size"]] = np.nan
    levels = levels[levels["bid_price"].notna() | levels["ask_price"].notna()]
    levels["level"] = levels["level"].astype("int64")
    return levels.sort_values(["market", "level"], kind="stable").set_index(["market", "level"])


# -- trades --------------------------------------------------------------------------------------
class TradePage:
    """One answer's trades as numpy columns (what a trades job keeps of a page, like
    :class:`CandlePage`). ``time`` is the trade's ms timestamp (UTC)."""

    __slots__ = ("market", "time", "price", "volume", "side", "sequential_id", "prev_closing_price", "change_price")

    def __init__(self, **cols: np.ndarray) -> None:
        for name in self.__slots__:
            setattr(self, name, cols[name])

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> TradePage:
        """Raises KeyError / TypeError / ValueError for rows of the wrong shape."""
        return cls(
            market=np.array([str(r["market"]).upper() for r in rows], dtype=object),
            time=np.array([r["timestamp"] for r in rows], dtype=np.int64),
            price=np.array([r["trade_price"] for r in rows], dtype=np.float64),
            volume=np.array([r["trade_volume"] for r in rows], dtype=np.float64),
            side=np.array([str(r["ask_bid"]).lower() for r in rows], dtype=object),
            sequential_id=np.array([r["sequential_id"] for r in rows], dtype=np.int64),
            prev_closing_price=np.array([r.get("prev_closing_price", np.nan) for r in rows], dtype=np.float64),
            change_price=np.array([r.get("change_price", np.nan) for r in rows], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.time)

    def take(self, mask: np.ndarray) -> TradePage:
        return TradePage(**{name: getattr(self, name)[mask] for name in self.__slots__})

    @classmethod
    def concat(cls, pages: list[TradePage]) -> TradePage:
        if not pages:
            return cls.from_rows([])
        return cls(**{name: np.concatenate([getattr(p, name) for p in pages]) for name in cls.__slots__})


def trade_pages_to_frame(pages: list[TradePage]) -> pd.DataFrame:
    """Trade pages (any order, any markets) → flat frame: ``market, time`` (tz-aware UTC from the
    ms timestamp), ``price, volume`` (float64), ``side`` (``"ask"``/``"bid"``: the taker's side),
    ``sequential_id`` (int64), ``prev_closing_price, change_price``."""
    cat = np.concatenate

    def col(name: str, dtype: Any) -> np.ndarray:
        return cat([getattr(p, name) for p in pages]) if pages else np.empty(0, dtype=dtype)

    return pd.DataFrame(
        {
            "market": pd.array(col("market", object), dtype="str"),
            "time": pd.to_datetime(col("time", np.int64), unit="ms", utc=True).astype("datetime64[ns, UTC]"),
            "price": col("price", np.float64),
            "volume": col("volume", np.float64),
            "side": pd.array(col("side", object), dtype="str"),
            "sequential_id": col("sequential_id", np.int64),
            "prev_closing_price": col("prev_closing_price", np.float64),
            "change_price": col("change_price", np.float64),
        }
    )


def trades_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``/trades/ticks`` rows → the flat frame of :func:`trade_pages_to_frame`."""
    return trade_pages_to_frame([TradePage.from_rows(rows)] if rows else [])


def clean_trades(df: pd.DataFrame) -> pd.DataFrame:
    """Drop duplicate trades (same market and ``sequential_id``) and sort by market, time, id."""
    out = df.drop_duplicates(subset=["market", "sequential_id"], keep="last")
    return out.sort_values(["market", "time", "sequential_id"], kind="stable").reset_index(drop=True)


def span_mask(
    market_col: pd.Series | np.ndarray, keys: np.ndarray, spans: dict[str, tuple[int, int]], count: int | None
) -> tuple[np.ndarray, dict[str, int]]:
    """Rows to keep of a frame sorted by (market, key): per market those with ``lo <= key < hi``
    and, with ``count``, only the last ``count`` of them. Also returns each market's first kept
    key (``lo`` when none is kept)."""
    keep = np.zeros(len(keys), dtype=bool)
    first: dict[str, int] = {}
    codes, uniques = pd.factorize(market_col)  # integer compares, not a million string compares
    code_of = {str(u): i for i, u in enumerate(uniques)}
    for market, (lo, hi) in spans.items():  # a loop over markets, not rows
        mine = np.nonzero((codes == code_of.get(market, -2)) & (keys >= lo) & (keys < hi))[0]
        if count is not None:
            mine = mine[-count:]
        keep[mine] = True
        first[market] = int(keys[mine[0]]) if len(mine) else lo
    return keep, first


# -- analysis on returned frames (the df.mdc accessor delegates here) ------------------------------
OHLCV = ["open", "high", "low", "close", "volume"]


def as_flat(df: pd.DataFrame, market: str = "?") -> pd.DataFrame:
    """An output frame (``time`` or ``(market, time)`` index) as a flat frame with both columns."""
    flat = df.reset_index()
    if "market" not in flat.columns:
        flat.insert(0, "market", market)
    return flat


def like_input(flat: pd.DataFrame, template: pd.DataFrame) -> pd.DataFrame:
    """Back to the index shape of ``template`` (one market: ``time``; several: ``(market, time)``)."""
    if isinstance(template.index, pd.MultiIndex):
        return flat.set_index(["market", "time"])
    return flat.drop(columns="market").set_index("time")


def infer_timeframe(df: pd.DataFrame) -> Timeframe:
    """The timeframe of a candle frame: from its metadata, else from the most common step."""
    meta = df.attrs.get("mdcoord") or {}
    if meta.get("timeframe"):
        return Timeframe.parse(meta["timeframe"])
    times = df.index.get_level_values("time")
    steps = pd.Series(np.diff(times.asi8)).value_counts() if len(times) > 1 else pd.Series(dtype="int64")
    step = int(steps.index[0]) if len(steps) else 0
    for tf in Timeframe:
        if tf.step_ns == step:
            return tf
    if 28 * 86_400 * 10**9 <= step <= 31 * 86_400 * 10**9:
        return Timeframe.MO1
    if 365 * 86_400 * 10**9 <= step <= 366 * 86_400 * 10**9:
        return Timeframe.Y1
    raise InvalidRequestError(
        "cannot tell the timeframe of this frame: it has no attrs['mdcoord']['timeframe'] and its most common "
        "step between candles is no timeframe's; say it with df.attrs['mdcoord'] = {'timeframe': '1m'} (or another)"
    )


def validate_candles(df: pd.DataFrame) -> pd.DataFrame:
    """The invariants of a candle frame, one row per check: ``check``, ``ok``, ``violations``."""
    flat = as_flat(df)
    t = flat["time"].to_numpy(dtype="datetime64[ns]")
    m = flat["market"].to_numpy()
    o, h, lo, c = (flat[k].to_numpy() for k in ("open", "high", "low", "close"))
    checks = {
        "sorted and unique (market, time)": 0 if _strictly_increasing(m, t) else 1,
        "index is tz-aware UTC": 0 if str(getattr(df.index.get_level_values("time"), "tz", None)) == "UTC" else 1,
        "low <= open, close <= high": int(np.count_nonzero((lo > o) | (lo > c) | (o > h) | (c > h))),
        "low <= high": int(np.count_nonzero(lo > h)),
        "volume >= 0": int(np.count_nonzero(flat["volume"].to_numpy() < 0)),
        "value >= 0": int(np.count_nonzero(flat["value"].to_numpy() < 0)) if "value" in flat else 0,
        "no missing prices": int(flat[["open", "high", "low", "close"]].isna().any(axis=1).sum()),
        "prices > 0": int(np.count_nonzero((flat[["open", "high", "low", "close"]].to_numpy() <= 0).any(axis=1))),
    }
    return pd.DataFrame({"check": list(checks), "ok": [v == 0 for v in checks.values()],
                         "violations": list(checks.values())})


def fill_candles(df: pd.DataFrame, tf: Timeframe) -> pd.DataFrame:
    """Every slot from each market's first to last candle; a missing candle becomes a flat
    candle at the previous close with zero volume and value, marked ``filled=True``."""
    parts = []
    for market, part in as_flat(df).groupby("market", sort=False):  # per market, not per row
        ords = tf.ordinal(part["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64))
        grid = np.arange(ords.min(), ords.max() + 1) if len(ords) else ords
        full = part.set_index(ords).reindex(grid)
        filled = full["close"].isna().to_numpy()
        close = full["close"].ffill()
        for col in ("open", "high", "low"):
            full[col] = full[col].where(~filled, close)
        full["close"] = close
        for col in ("volume", "value"):
            if col in full:
                full[col] = full[col].fillna(0.0)
        full["market"] = market
        full["time"] = pd.to_datetime(tf.start_ns(grid), utc=True).astype("datetime64[ns, UTC]")
        full["filled"] = filled
        parts.append(full.reset_index(drop=True))
    out = pd.concat(parts, ignore_index=True) if parts else as_flat(df).assign(filled=False)
    return like_input(out, df)


_RESAMPLE_AGG = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum", "value": "sum",
                 "last_trade_at": "max"}


def resample_candles(df: pd.DataFrame, to: Timeframe) -> pd.DataFrame:
    """OHLCV-correct resampling onto ``to``'s UTC grid (first/max/min/last/sum). Gap-aware: a
    bucket without any candle is absent, never a row of NaN; ``candles`` counts the candles each
    bucket was built from (so a partial bucket is visible)."""
    flat = as_flat(df)
    agg = {k: v for k, v in _RESAMPLE_AGG.items() if k in flat.columns}
    bucket = to.ordinal(flat["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64))
    grouped = flat.assign(_bucket=bucket).groupby(["market", "_bucket"], sort=True)
    out = grouped.agg(agg)
    out["candles"] = grouped.size()
    out = out.reset_index()
    out["time"] = pd.to_datetime(to.start_ns(out["_bucket"].to_numpy()), utc=True).astype("datetime64[ns, UTC]")
    return like_input(out.drop(columns="_bucket"), df)
