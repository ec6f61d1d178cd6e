"""``python -m mdcoord.sim``: run the synthetic Upbit server until Ctrl-C."""

from __future__ import annotations

import sys
import threading

from ._cli import Parser, at_least, iso_time, port
from ._config import SimConfig
from ._exchange import Exchange


def parse_args(argv: list[str] | None = None) -> SimConfig:
    p = Parser(
        prog="python -m mdcoord.sim",
        description="Serve a deterministic synthetic Upbit quotation API (every quotation endpoint: markets, candles, tickers, order books, trades) "
        "on 127.0.0.1 for testing clients. Prints the base URL, runs until Ctrl-C.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8080, help="port (0 = any free port; default 8080)")
    p.add_argument("--seed", type=int, default=7, help="market seed (default 7)")
    p.add_argument("--now", type=iso_time, default=None, help="sim start time, ISO UTC, e.g. 2026-11-24T12:00:00Z (default: real now)")
    p.add_argument("--frozen", action="store_true", help="keep now fixed instead of following the wall clock")
    p.add_argument("--latency", type=at_least(0, float), default=0.0, help="mean round-trip latency in seconds")
    p.add_argument("--jitter", type=at_least(0, float), default=0.0, help="± jitter of each half of the latency, seconds")
    p.add_argument("--rate-limit", type=at_least(0), default=10, help="requests per group per second; 0 disables")
    p.add_argument("--ban-after", type=at_least(1), default=5, help="429s within 10 s that trigger a 418 ban")
    p.add_argument("--ban-seconds", type=at_least(0, float), default=30.0, help="length of the first ban (grows on repeats)")
    p.add_argument("--json-429", action="store_true", help="answer 429 with a JSON error instead of plain text")
    p.add_argument("--seconds-horizon-days", type=at_least(1), default=93, help="days of seconds candles (default 93)")
    a = p.parse_args(argv)
    return SimConfig(
        seed=a.seed, now=a.now, frozen=a.frozen, latency=a.latency, jitter=a.jitter,
        rate_limit=a.rate_limit or None, ban_after=a.ban_after, ban_seconds=a.ban_seconds,
        plain_text_429=not a.json_429, seconds_horizon_days=a.seconds_horizon_days, host=a.host, port=a.port,
    )


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C; 2 for bad options (argparse exits), 1 when the address cannot be bound."""
    config = parse_args(argv)
    try:
        exchange = Exchange(config).start()
    except OSError as err:  # the port is taken, the host unknown...
        print(f"python -m mdcoord.sim: error: cannot serve on {config.host}:{config.port}: {err}", file=sys.stderr)
        return 1
    with exchange:
        print(exchange.base_url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
