"""Command line: ``python -m mdcoord demo`` (offline, against the embedded exchange).

The dataset-building commands (candles/tickers/... to parquet/csv, cache) come with later
releases; ``python -m mdcoord.sim`` runs the embedded exchange on its own.
"""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from ._exceptions import MdcoordError


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mdcoord", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fetch candles from the embedded exchange, offline, and show them")
    demo.add_argument("--market", default="KRW-BTC")
    demo.add_argument("--timeframe", default="1m")
    demo.add_argument("--count", type=int, default=1000)
    demo.add_argument("--latency", type=float, default=0.03, help="simulated round-trip latency in seconds")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except MdcoordError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
