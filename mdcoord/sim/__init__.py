"""An embedded, deterministic, Upbit-compatible quotation server for testing Upbit clients.

The sim is a real aiohttp server on 127.0.0.1 serving every quotation endpoint —
``/v1/market/all``, every candle unit, ``/v1/ticker`` and ``/v1/ticker/all``, ``/v1/orderbook``
(and ``/orderbook/instruments``), ``/v1/trades/ticks`` — exactly as documented in
``docs/upbit.md`` (fields and their order, parameter semantics, errors, ``Remaining-Req``), over
a synthetic market of ~310 pairs that is a pure function of ``seed`` and ``now``. Tickers,
books and trades are read from the same tape as the candles, so they agree with them. It enforces Upbit's limits strictly (429, then 418),
can add latency/jitter and inject faults, and logs every request. It imports nothing from the
rest of mdcoord.

Usage::

    from mdcoord.sim import Exchange, SimConfig

    with Exchange(SimConfig(seed=7, now="2026-11-24T12:00:00Z", frozen=True)) as ex:
        ex.base_url                      # 'http://127.0.0.1:54321/v1'
        ex.faults.inject("server_error", count=2, group="candles")
        ...                              # run a client against ex.base_url
        ex.max_in_window("candles")      # <= 10 if the client respected the limit
        truth = ex.market.candles("KRW-BTC", "minutes", 1, "2026-11-24T10:00:00Z", "2026-11-24T11:00:00Z")

The model alone (no server)::

    from mdcoord.sim import SyntheticMarket
    m = SyntheticMarket(seed=7, now="2026-11-24T12:00:00Z")
    m.latest_candles("KRW-BTC", "days", count=200)
    m.ticker("KRW-BTC"), m.orderbook("KRW-BTC", count=15), m.ticks("KRW-BTC", count=500, days_ago=1)

The same exchange in a process of its own (its clock then never waits for the caller's
interpreter lock: for tests and benchmarks whose own process is busy, e.g. a Dask scheduler)::

    with ExchangeProcess(SimConfig(seed=7, now="2026-11-24T12:00:00Z", frozen=True)) as ex:
        ...                              # the same questions: ex.base_url, ex.count(), ex.log, ...

From a shell: ``python -m mdcoord.sim --port 8080 --seed 7 --now 2026-11-24T12:00:00Z``.
"""

from ._config import SimConfig
from ._exchange import Exchange
from ._log import RequestRecord
from ._market import SyntheticMarket
from ._process import ExchangeProcess

__all__ = ["Exchange", "ExchangeProcess", "RequestRecord", "SimConfig", "SyntheticMarket"]
