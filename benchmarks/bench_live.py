"""Benchmark: live trade messages into frames, per second on one core, and end-to-end latency
(issue 15, item 6).

**Parse**: ``--messages`` trade messages as Upbit sends them (UTF-8 JSON, one per binary frame in
DEFAULT, or lists of 100 in JSON_LIST), prepared in memory, then run through what a stream does
with each batch: decode the frames (``mdcoord._ws.decode``), de-duplicate by ``sequential_id``
per market and build the trade frame (``_Stream._trades`` and ``frame``), and append the frame to a
list. One thread, batches of ``--batch`` frames; messages/s over ``--runs`` runs (median). The
target is 20,000/s; the whole KRW market of Upbit trades far less than that at its peak.

**Latency**: a stream of tickers (and the trades that drive them) of the ``--markets`` most traded
KRW markets from the embedded exchange on a running clock at real time (its clock is this machine's
wall clock, so the message's ``timestamp`` — stamped by the exchange when it pushes it — and the
moment the frame is yielded share one clock). Per ticker row: yielded − pushed, median and p99
over ``--seconds`` seconds. The exchange pushes every 100 ms.

    python benchmarks/bench_live.py [--messages 200000] [--batch 200] [--runs 5] [--markets 20] [--seconds 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

import mdcoord
from benchmarks._common import cli, md_table, median
from mdcoord._live import _Stream
from mdcoord._ws import decode
from mdcoord.sim import Exchange, SimConfig

MARKETS = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE"]


def _messages(n: int, fmt: str) -> list[bytes]:
    rng = np.random.default_rng(7)
    t0 = 1_795_178_096_000
    out, chunk = [], []
    for i in range(n):
        ts = t0 + i // 3
        m = {"type": "trade", "code": MARKETS[i % 5], "timestamp": ts + 40, "trade_date": "2026-11-20",
             "trade_time": "12:34:56", "trade_timestamp": ts, "trade_price": float(62_600_000 + rng.integers(-50, 50) * 1000),
             "trade_volume": round(float(rng.random()), 8), "ask_bid": "BID" if i % 2 else "ASK",
             "prev_closing_price": 62_839_000.0, "change": "FALL", "change_price": 213000.0,
             "sequential_id": ts * 10_000 + i % 3, "best_ask_price": 62_627_000.0, "best_ask_size": 0.1,
             "best_bid_price": 62_626_000.0, "best_bid_size": 0.2, "stream_type": "REALTIME"}
        if fmt == "DEFAULT":
            out.append(json.dumps(m).encode())
        else:
            chunk.append(m)
            if len(chunk) == 100:
                out.append(json.dumps(chunk).encode())
                chunk = []
    if chunk:
        out.append(json.dumps(chunk).encode())
    return out


def parse_rate(n: int, batch: int, fmt: str) -> float:
    frames = _messages(n, fmt)
    producer = _Stream(tuple(MARKETS), ("trade",), base_url="http://127.0.0.1:1/v1", ws_url="ws://127.0.0.1:1/websocket/v1",
                       book_depth=30, heartbeat=10.0, fill=False, options={})
    kept: list[Any] = []
    t0 = time.perf_counter()
    for i in range(0, len(frames), batch):
        messages = [m for f in frames[i:i + batch] for m in decode(f)]
        producer._take(messages)
        while not producer.out.empty():
            kept.append(producer.out.get_nowait())
    took = time.perf_counter() - t0
    rows = sum(len(f) for f in kept)
    assert rows == n, (rows, n)  # every message became a row, none twice
    return n / took


def latency(markets: int, seconds: float) -> dict[str, Any]:
    with Exchange(SimConfig(seed=7, now=None, frozen=False, rate_limit=None)) as ex:
        top = mdcoord.tickers("KRW", base_url=ex.base_url, progress=False)  # the most traded: the busiest stream
        codes = list(top["acc_trade_price_24h"].sort_values(ascending=False).index[:markets])
        lat: list[float] = []
        t_end = time.monotonic() + seconds
        for df in mdcoord.stream(codes, ["ticker", "trade"], base_url=ex.base_url, progress=False):
            now_ms = time.time() * 1000
            if df.attrs["mdcoord"]["type"] == "ticker":
                live = df[df["stream_type"] == "REALTIME"]
                pushed = live["timestamp"].astype("int64").to_numpy() // 1000  # us -> ms
                lat += (now_ms - pushed).tolist()
            # `seconds` of measuring, and at least one pushed row however slow the machine (the
            # stream's first REALTIME frame can take longer than a short run on a loaded box)
            if time.monotonic() > t_end and (lat or time.monotonic() > t_end + 60):
                break
    arr = np.array(lat)
    return {"markets": markets, "seconds": seconds, "rows": len(arr),
            "median_ms": round(float(np.median(arr)), 2) if len(arr) else None,
            "p99_ms": round(float(np.percentile(arr, 99)), 2) if len(arr) else None}


def bench(messages: int, batch: int, runs: int, markets: int, seconds: float, log: Any = print) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": messages, "batch_frames": batch, "runs": runs, "parse": {}}
    for fmt in ("DEFAULT", "JSON_LIST"):
        rates = [parse_rate(messages, batch, fmt) for _ in range(runs)]
        out["parse"][fmt] = {"median_per_s": round(median(rates)), "runs_per_s": [round(r) for r in rates]}
        log(f"  parse {fmt}: {median(rates):,.0f} messages/s")
    out["latency"] = latency(markets, seconds)
    log(f"  latency: median {out['latency']['median_ms']} ms, p99 {out['latency']['p99_ms']} ms")
    return out


def table(res: dict[str, Any]) -> str:
    rows = [[f"parse + frame, {fmt}", f"{v['median_per_s']:,} messages/s", "≥ 20,000/s",
             ", ".join(f"{r:,}" for r in v["runs_per_s"])] for fmt, v in res["parse"].items()]
    lat = res["latency"]
    rows.append([f"exchange push → yielded frame ({lat['markets']} markets, {lat['rows']:,} ticker rows)",
                 f"median {lat['median_ms']} ms, p99 {lat['p99_ms']} ms", "", ""])
    return md_table(["what", "measured", "target", "runs"], rows)


def main() -> int:
    def options(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--messages", type=int, default=200_000)
        ap.add_argument("--batch", type=int, default=200)
        ap.add_argument("--runs", type=int, default=5)
        ap.add_argument("--markets", type=int, default=20)
        ap.add_argument("--seconds", type=float, default=20.0)

    return cli(__doc__, options, lambda a, log: bench(a.messages, a.batch, a.runs, a.markets, a.seconds, log), table)


if __name__ == "__main__":
    sys.exit(main())
