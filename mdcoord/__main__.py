"""Command line: build datasets, inspect the cache, run the embedded exchange or the demo.

    python -m mdcoord candles KRW-BTC 1m --start 2026-08-01 --end 2026-11-01 --out btc.parquet
    python -m mdcoord tickers KRW --out krw.csv
    python -m mdcoord orderbooks KRW-BTC KRW-ETH --depth 15
    python -m mdcoord trades KRW-BTC --count 5000 --out trades.parquet
    python -m mdcoord backfill KRW 1m --start 2024-01-01 --end 2026-01-01 --store s3://bucket/krw-1m
    python -m mdcoord cache info | cache clear --market KRW-BTC
    python -m mdcoord sim --port 8080          # the embedded exchange
    python -m mdcoord demo                     # offline, end to end

Errors print one line (``error: ...``) and exit 1; an ``--out`` file that cannot be written is one
of them, found before anything is fetched. Bad usage exits 2: an unknown flag with this
command's usage and the closest known flag, a bad value with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ._exceptions import InvalidRequestError, MdcoordError
from .sim._cli import Parser, at_least

# --out FILE: the extensions we write, and how.
_WRITERS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    ".parquet": lambda df, path: df.to_parquet(path),
    ".csv": lambda df, path: df.to_csv(path),
}


def _demo(args: argparse.Namespace) -> int:
    import mdcoord
    from mdcoord.sim import Exchange, SimConfig

    config = SimConfig(seed=args.seed, latency=args.latency, jitter=args.latency / 5)
    print(f"Starting the embedded Upbit-compatible exchange (seed={args.seed}, latency={args.latency * 1000:.0f} ms)...")
    with Exchange(config) as exchange:
        print(f"  serving {exchange.base_url}")
        print(f"Fetching {args.count} {args.timeframe} candles of {args.market} through the full pipeline...")
        df = mdcoord.candles(
            args.market, args.timeframe, count=args.count, base_url=exchange.base_url, progress=not args.quiet,
            cache=False,  # the demo shows the network pipeline; an ephemeral exchange is not worth caching
        )
        meta = df.attrs["mdcoord"]
        with pd.option_context("display.width", 140, "display.max_columns", 20):
            print("\nhead:\n", df.head(), sep="")
            print("\ntail:\n", df.tail(), sep="")
        print("\nmetadata (df.attrs['mdcoord']):")
        print(json.dumps(meta, indent=2, ensure_ascii=False))
        print(
            f"\nexchange log: {exchange.count(group='candles')} candle requests, "
            f"{exchange.count(status=429)} answered 429, "
            f"at most {exchange.max_in_window('candles', 1.0)} in any 1-second window (limit 10)"
        )
    return 0


def _check_out(out: str) -> None:
    """Fail before any fetch if ``--out`` cannot be written: a known extension, in an existing,
    writable directory, and not itself a directory."""
    path = Path(out)
    if path.suffix.lower() not in _WRITERS:
        raise InvalidRequestError(f"--out {out!r}: use a .parquet or .csv file name")
    parent = path.parent
    if not parent.is_dir():
        raise InvalidRequestError(f"--out {out!r}: the directory {str(parent)!r} does not exist")
    if path.is_dir():
        raise InvalidRequestError(f"--out {out!r} is a directory; name a file in it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidRequestError(f"--out {out!r}: no permission to write in {str(parent)!r}")


def _write(df: pd.DataFrame, out: str | None) -> None:
    """Save to .parquet / .csv (by extension), or show a summary when no file is given. The file
    appears whole or not at all: a temp file in the same directory, then ``os.replace`` (an
    existing file survives a failed write)."""
    if out is None:
        with pd.option_context("display.width", 140, "display.max_columns", 20):
            print(df)
        return
    path = Path(out)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _WRITERS[path.suffix.lower()](df, tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    print(f"wrote {len(df)} rows to {out}", file=sys.stderr)


def _common(args: argparse.Namespace) -> dict[str, object]:
    opts: dict[str, object] = {"base_url": args.base_url}
    if args.progress is not None:
        opts["progress"] = args.progress
    if getattr(args, "no_cache", False):
        opts["cache"] = False
    return opts


def _candles_cmd(args: argparse.Namespace) -> int:
    import mdcoord

    df = mdcoord.candles(args.markets, args.timeframe, count=args.count, start=args.start, end=args.end, **_common(args))
    _write(df, args.out)
    return 0


def _tickers_cmd(args: argparse.Namespace) -> int:
    import mdcoord

    _write(mdcoord.tickers(args.markets, **_common(args)), args.out)
    return 0


def _orderbooks_cmd(args: argparse.Namespace) -> int:
    import mdcoord

    _write(mdcoord.orderbooks(args.markets, depth=args.depth, **_common(args)), args.out)
    return 0


def _trades_cmd(args: argparse.Namespace) -> int:
    import mdcoord

    df = mdcoord.trades(args.markets, count=args.count, start=args.start, end=args.end, **_common(args))
    _write(df, args.out)
    return 0


def _backfill_cmd(args: argparse.Namespace) -> int:
    import mdcoord

    opts: dict[str, object] = {}
    if args.local_address is not None:
        opts["local_address"] = args.local_address
    summary = mdcoord.backfill(args.markets, args.timeframe, args.start, args.end, store=args.store,
                               scheduler=args.scheduler, n_workers=args.workers, period=args.period,
                               addresses=args.addresses,
                               base_url=args.base_url, progress=args.progress, **opts)
    print(summary)
    return 0


def _record_cmd(args: argparse.Namespace) -> int:
    import mdcoord

    opts: dict[str, object] = {}
    for name in ("local_address", "cache_dir"):
        if getattr(args, name) is not None:
            opts[name] = getattr(args, name)
    print(f"recording {' '.join(args.types)} of {' '.join(args.markets)} "
          f"{'for ' + format(args.duration, 'g') + ' s' if args.duration else 'until Ctrl-C'}", file=sys.stderr, flush=True)
    summary = mdcoord.record(args.markets, args.types, duration=args.duration, flush_interval=args.flush_interval,
                             book_interval=args.book_interval, base_url=args.base_url, ws_url=args.ws_url,
                             progress=False, **opts)
    print(summary)
    return 0


def _cache_cmd(args: argparse.Namespace) -> int:
    import mdcoord

    if args.action == "info":
        info = mdcoord.cache.info()
        print(f"cache directory: {mdcoord.cache.directory()}")
        print(info.to_string() if len(info) else "(empty)")  # every column, however narrow the terminal
    else:
        removed = mdcoord.cache.clear(args.market, args.timeframe)
        print(f"removed {removed} partition file(s) from {mdcoord.cache.directory()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sim"]:  # hand everything after `sim` (--help included) to the exchange's CLI
        from mdcoord.sim.__main__ import main as sim_main

        return sim_main(argv[1:])
    parser = Parser(prog="python -m mdcoord", description="Upbit market data into files and frames.")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--out", help="write to this .parquet or .csv file (else print the frame)")
        p.add_argument("--base-url", default=None, help="API root (default $MDCOORD_BASE_URL or the real Upbit API)")
        bar = p.add_mutually_exclusive_group()
        bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress")
        bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
        return p

    c = data_command("candles", "OHLCV candles, e.g. candles KRW-BTC 1m --start 2026-08-01 --out btc.parquet")
    c.add_argument("markets", nargs="+", metavar="MARKET")
    c.add_argument("timeframe", help="1s 1m 3m 5m 10m 15m 30m 1h 4h 1d 1w 1M 1y")
    c.add_argument("--count", type=int)
    c.add_argument("--start")
    c.add_argument("--end")
    c.add_argument("--no-cache", action="store_true", help="neither read nor fill the local cache")
    c.set_defaults(func=_candles_cmd)
    t = data_command("tickers", "current tickers, e.g. tickers KRW --out krw.csv")
    t.add_argument("markets", nargs="+", metavar="MARKET_OR_QUOTE")
    t.set_defaults(func=_tickers_cmd)
    o = data_command("orderbooks", "order books, e.g. orderbooks KRW-BTC KRW-ETH --depth 15")
    o.add_argument("markets", nargs="+", metavar="MARKET")
    o.add_argument("--depth", type=int)
    o.set_defaults(func=_orderbooks_cmd)
    tr = data_command("trades", "trades of the last 7 days, e.g. trades KRW-BTC --count 5000")
    tr.add_argument("markets", nargs="+", metavar="MARKET")
    tr.add_argument("--count", type=int)
    tr.add_argument("--start")
    tr.add_argument("--end")
    tr.add_argument("--no-cache", action="store_true")
    tr.set_defaults(func=_trades_cmd)
    b = sub.add_parser("backfill", help="a market-wide Parquet dataset on a Dask cluster, e.g. "
                                        "backfill KRW 1m --start 2025-01-01 --end 2026-01-01 --store data/krw-1m")
    b.add_argument("markets", nargs="+", metavar="MARKET_OR_QUOTE")
    b.add_argument("timeframe", help="1s 1m 3m 5m 10m 15m 30m 1h 4h 1d 1w 1M 1y")
    b.add_argument("--start", required=True)
    b.add_argument("--end", required=True)
    b.add_argument("--store", required=True, help="a directory or an fsspec URL (s3://bucket/path)")
    b.add_argument("--scheduler", default=None, help="a Dask scheduler's address (default: a local cluster)")
    b.add_argument("--workers", type=at_least(1), default=2, help="workers of the local cluster (default 2)")
    b.add_argument("--period", choices=["day", "month", "year"], default=None,
                   help="one task per market and period (default: day of seconds, month of minutes, year of days)")
    b.add_argument("--local-address", default=None, help="the local IP address connections leave from")
    b.add_argument("--addresses", nargs="+", default=None, metavar="IP",
                   help="a local cluster of one worker per local IP address, each its own budget")
    b.add_argument("--base-url", default=None, help="API root (default $MDCOORD_BASE_URL or the real Upbit API)")
    bbar = b.add_mutually_exclusive_group()
    bbar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress")
    bbar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    b.set_defaults(func=_backfill_cmd)
    r = sub.add_parser("record", help="record live trades and order book snapshots into the cache until Ctrl-C, "
                                      "e.g. record KRW --duration 3600")
    r.add_argument("markets", nargs="+", metavar="MARKET_OR_QUOTE")
    r.add_argument("--types", nargs="+", choices=["trade", "orderbook"], default=["trade", "orderbook"])
    r.add_argument("--duration", type=at_least(0.001, float), default=None, help="seconds (default: until Ctrl-C)")
    r.add_argument("--flush-interval", type=at_least(0.001, float), default=5.0,
                   help="seconds between writes: the most a crash can lose (default 5)")
    r.add_argument("--book-interval", type=at_least(0.001, float), default=1.0,
                   help="seconds between order book snapshots (default 1)")
    r.add_argument("--cache-dir", default=None, help="the cache directory (default $MDCOORD_CACHE_DIR or the user cache)")
    r.add_argument("--local-address", default=None, help="the local IP address connections leave from")
    r.add_argument("--base-url", default=None, help="API root (default $MDCOORD_BASE_URL or the real Upbit API)")
    r.add_argument("--ws-url", default=None, help="the WebSocket (default: beside --base-url)")
    r.set_defaults(func=_record_cmd)
    k = sub.add_parser("cache", help="the local cache: cache info | cache clear [--market M] [--timeframe TF]")
    k.add_argument("action", choices=["info", "clear"])
    k.add_argument("--market")
    k.add_argument("--timeframe")
    k.set_defaults(func=_cache_cmd)
    sub.add_parser("sim", help="run the embedded exchange (options: python -m mdcoord sim --help)")
    demo = sub.add_parser("demo", help="fetch candles from the embedded exchange, offline, and show them")
    demo.add_argument("--market", default="KRW-BTC")
    demo.add_argument("--timeframe", default="1m")
    demo.add_argument("--count", type=at_least(1), default=1000)
    demo.add_argument("--latency", type=at_least(0, float), default=0.03, help="simulated round-trip latency in seconds")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)
    args, extras = parser.parse_known_args(argv)
    if extras:  # name the unknown flag under the subcommand's usage, not the top level's
        sub.choices[args.command].unknown(extras)
    try:
        if getattr(args, "out", None) is not None:
            _check_out(args.out)
        return int(args.func(args))
    except (MdcoordError, OSError) as err:  # OSError: writing --out failed (disk full...)
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
