"""The fault-injection suite: candles, tickers, orderbooks and trades under every fault the
embedded exchange can inject (issue 7, item 1).

For each fault the outcome is one of two, and nothing else:

- the result equals the fault-free result exactly (``assert_frame_equal``, no tolerance), or
- a typed error (``IncompleteDataError``, ``IPBlockedError``) that names the ranges or markets
  that could not be fetched, while what did arrive is kept (``err.partial``, and the cache for
  candles and trades: the next call fetches only what is missing).

And under all of them the client never provokes a 418 of its own from the strict exchange: the
only 418s in the log are the injected ones, and the only 429s are injected ones.

The per-fault recovery of a candles range is in ``tests/test_client.py``
(``test_retries_recover_from_each_fault_exactly``); this file covers the other data types, the
random fault mix, bursts of 429s, exhausted retries and bans in the middle of a job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mdcoord
from mdcoord._config import source_name
from mdcoord.sim import Exchange, SimConfig

from .checkpoints import wait_quiet
from .conftest import NOW

TICKER_MARKETS = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "KRW-ADA", "KRW-SUI", "KRW-TRX",
                  "KRW-LINK", "KRW-AVAX", "BTC-ETH", "USDT-BTC"]
BOOK_MARKETS = TICKER_MARKETS[:8]
C_START, C_END = "2026-11-18T00:00:00Z", "2026-11-18T20:00:00Z"  # 1200 one-minute slots: 6 pieces
T_START, T_END = "2026-11-18T22:30:00Z", "2026-11-19T01:30:00Z"  # KRW-XRP: ~3000 trades across 00:00 UTC

# One call per data type, sized to about 6-12 requests (a second of the rate limit) each.
CALLS: dict[str, Callable[..., pd.DataFrame]] = {
    "candles": lambda url, **kw: mdcoord.candles("KRW-BTC", "1m", start=C_START, end=C_END, base_url=url, **kw),
    "tickers": lambda url, **kw: mdcoord.tickers(TICKER_MARKETS, base_url=url, tickers_per_request=2, **kw),
    "orderbooks": lambda url, **kw: mdcoord.orderbooks(BOOK_MARKETS, depth=10, base_url=url,
                                                       orderbooks_per_request=1, **kw),
    "trades": lambda url, **kw: mdcoord.trades("KRW-XRP", start=T_START, end=T_END, base_url=url, **kw),
}
GROUPS = {"candles": "candles", "tickers": "ticker", "orderbooks": "orderbook", "trades": "crix-trades"}
# Requests a call sends before its pieces: none for a candles range (the clock is known) or a
# snapshot (the market list is known); a trades range first reads today's newest page (the head:
# it tells "now", and its failure leaves no partial result to report) and then the range's newest
# window alone (the probe: it tells the pace the other windows are sized by). Faults meant for an
# ordinary piece skip those. (A failed probe: tests/test_trades_failed_probe.py.)
BEFORE_PIECES = {"candles": 0, "tickers": 0, "orderbooks": 0, "trades": 2}


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.attrs = {}
    return out


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Exactly equal: same index, columns, dtypes and values (no tolerance)."""
    pd.testing.assert_frame_equal(_plain(got), _plain(want), check_exact=True)


def injected(ex: Exchange, kind: str | None = None) -> int:
    return sum(1 for r in ex.log if r.fault is not None and (kind is None or r.fault == kind))


def own_429s(ex: Exchange) -> int:
    """429s the exchange's limiter gave (not injected ones): the client overran the limit."""
    return sum(1 for r in ex.log if r.status == 429 and r.fault is None)


@pytest.fixture(scope="module")
def fx() -> Iterator[Exchange]:
    """An exchange of this module's own: faults here must not slow down or block other tests'
    clients (a 429 widens the client's margin for the rest of the process)."""
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True)) as ex:
        for name, call in CALLS.items():  # warm: the client knows the clock and the market list
            call(ex.base_url)
        yield ex


@pytest.fixture(scope="module")
def reference(fx: Exchange) -> dict[str, pd.DataFrame]:
    """The fault-free result of every call (the exchange's clock is frozen: it never changes)."""
    fx.faults.clear()
    return {name: call(fx.base_url) for name, call in CALLS.items()}


@pytest.fixture
def clean(fx: Exchange) -> Exchange:
    fx.faults.clear()
    fx.reset_rate_limits()
    fx.clear_log()
    return fx


# -- every fault, recovered exactly ----------------------------------------------------------------
# Faults of a family strike one after the other (the next requests of the data type's group).
FAULTS = [
    pytest.param([("server_error", {}), ("server_error", {"status": 502, "body": "html"})], id="5xx-json-and-html"),
    pytest.param([("drop", {}), ("slow", {"delay": 5.0})], id="dropped-and-slower-than-timeout"),
    pytest.param([("truncated", {}), ("malformed", {}), ("html", {})], id="truncated-malformed-html-bodies"),
    pytest.param([("rate_limited", {})] * 3, id="burst-of-plain-text-429s"),
]


@pytest.mark.parametrize("data_type", list(CALLS))
@pytest.mark.parametrize("faults", FAULTS)
def test_each_fault_is_recovered_exactly(clean: Exchange, reference: dict[str, pd.DataFrame], data_type: str,
                                         faults: list[tuple[str, dict[str, Any]]]) -> None:
    ex = clean
    for kind, params in faults:
        ex.faults.inject(kind, group=GROUPS[data_type], **params)
    df = CALLS[data_type](ex.base_url, timeout=1.5)  # an ordinary answer takes milliseconds
    assert_same(df, reference[data_type])
    assert sorted(r.fault for r in ex.log if r.fault) == sorted(kind for kind, _ in faults)  # they all struck
    meta = df.attrs["mdcoord"]
    assert meta["complete"] is True and meta["failures"] == []
    assert meta["retries"] == len(faults)  # one retry per fault, no more
    assert meta["rate_limited"] == sum(kind == "rate_limited" for kind, _ in faults)
    assert ex.count(status=418) == 0 and own_429s(ex) == 0


# -- retries exhausted: a typed error naming what is missing, the rest kept ------------------------
@pytest.mark.parametrize(
    "data_type, kind",
    # 429s exhaust a piece like 5xx do (each one also pauses the group for a second): once is enough
    [*((d, "server_error") for d in CALLS), ("candles", "rate_limited")],
)
def test_exhausted_retries_name_what_is_missing_and_keep_the_rest(
    clean: Exchange, reference: dict[str, pd.DataFrame], tmp_path: Path, data_type: str, kind: str
) -> None:
    """One piece meets its fault on every attempt (4 with max_retries=3): the call raises IncompleteDataError
    naming that piece's range or markets; the partial frame holds everything else; for candles and
    trades the cache holds it too, so the same call afterwards fetches only the missing piece."""
    ex = clean
    call = CALLS[data_type]
    # concurrency 1: the first piece takes every fault, deterministically (each 429 also pauses
    # the group for a second: one retry is enough to show it)
    retries = 3 if kind == "server_error" else 1
    ex.faults.inject(kind, count=retries + 1, group=GROUPS[data_type], after=BEFORE_PIECES[data_type])
    with pytest.raises(mdcoord.IncompleteDataError) as info:
        call(ex.base_url, concurrency=1, max_retries=retries, cache=True, cache_dir=str(tmp_path))
    err = info.value
    (f,) = err.failures
    want = reference[data_type]
    expected_type = "ServerError" if kind == "server_error" else "RateLimitError"
    assert f["error_type"] == expected_type and ("HTTP 5" in f["error"] or "HTTP 429" in f["error"])
    assert err.partial is not None
    if data_type == "candles":
        assert f["market"] == "KRW-BTC" and f["range"] == "[2026-11-18T16:40:00+00:00, 2026-11-18T20:00:00+00:00)"
        lo, hi = pd.Timestamp("2026-11-18T16:40Z"), pd.Timestamp("2026-11-18T20:00Z")
        assert_same(err.partial, want[(want.index < lo) | (want.index >= hi)])  # nothing else missing
    elif data_type == "trades":
        a, b = (pd.Timestamp(x) for x in f["range"].strip("[)").split(", "))
        assert f["market"] == "KRW-XRP" and pd.Timestamp(T_START) <= a < b <= pd.Timestamp(T_END)
        inside = (want.index >= a) & (want.index < b)
        assert inside.any()
        assert_same(err.partial, want[~inside])
    else:
        missing = f["markets"]
        assert missing == TICKER_MARKETS[:2] if data_type == "tickers" else missing == BOOK_MARKETS[:1]
        markets = err.partial.index.get_level_values("market")
        assert set(markets) == set(want.index.get_level_values("market")) - set(missing)
        assert_same(err.partial, want[~want.index.get_level_values("market").isin(missing)])
    assert "could not be fetched" in str(err) and f["market" if data_type in ("candles", "trades") else "markets"]
    assert ex.count(status=418) == 0 and own_429s(ex) == 0

    # the same call again: complete, and (candles, trades) only the failed piece is asked for
    ex.clear_log()
    again = call(ex.base_url, concurrency=1, cache=True, cache_dir=str(tmp_path))
    assert_same(again, want)
    if data_type == "candles":
        assert ex.count(group="candles") == 1
    elif data_type == "trades":
        # besides the head (today's newest page: "now"), only the failed window's day and times
        a, b = (pd.Timestamp(x) for x in f["range"].strip("[)").split(", "))
        asked = [r.query for r in ex.log if r.group == "crix-trades"][1:]
        day = (pd.Timestamp(NOW).floor("D") - a.floor("D")).days
        assert asked and all(q.get("days_ago") == str(day) for q in asked)
        assert all(q.get("to", "99") >= a.strftime("%H:%M:%S") and q.get("to", "") <= b.ceil("s").strftime("%H:%M:%S")
                   for q in asked if "to" in q)


# -- a 418 in the middle of a job ------------------------------------------------------------------------
@pytest.mark.parametrize("data_type", list(CALLS))
def test_a_ban_mid_job_stops_everything_and_the_call_works_after_it(
    reference: dict[str, pd.DataFrame], tmp_path: Path, data_type: str
) -> None:
    """A 418 after some pieces: IPBlockedError at once, nothing sent after it (beyond requests
    already on the wire), every call during the block fails without a request, and the same call
    after the block gives the fault-free result."""
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True)) as ex:  # a ban is per client: a fresh one
        call = CALLS[data_type]
        call(ex.base_url)  # the clock and the market list are known
        ex.clear_log()
        ex.faults.inject("ban", group=GROUPS[data_type], after=BEFORE_PIECES[data_type] + 2, seconds=2)
        with pytest.raises(mdcoord.IPBlockedError, match="418") as info:
            call(ex.base_url, cache=True, cache_dir=str(tmp_path))
        with pytest.raises(mdcoord.IPBlockedError, match="still blocked"):  # at once: the block lasts 2 s
            mdcoord.candles("KRW-DOGE", "1d", count=3, base_url=ex.base_url)  # (a request it would send: its own)
        assert info.value.retry_after == pytest.approx(2, abs=0.5)
        # every request the calls sent is in the log now (requests on the wire when the ban began
        # meet it too: at most the concurrency gate's ceiling of 32) ...
        wait_quiet(ex)
        assert 1 <= ex.count(status=418) <= 32  # (two requests passed before it: after=2)
        sent, bans = ex.count(), ex.count(status=418)
        # ... and while the block lasts, nothing more is sent: not by the call that raised, not by
        # the refused one. (This wait is the subject — the block's end by both clocks — not a sync.)
        time.sleep(2.2)
        assert not ex.log[sent:], [(r.status, r.query) for r in ex.log[sent:]]
        assert not [r for r in ex.log if r.query.get("market") == "KRW-DOGE"]  # refused without a request
        df = call(ex.base_url, cache=True, cache_dir=str(tmp_path))
        assert_same(df, reference[data_type])
        assert ex.count(status=418) == bans and own_429s(ex) == 0


# -- never a 418 of its own ------------------------------------------------------------------------------
def test_ten_percent_faults_on_all_data_types_at_once_never_provoke_a_ban(reference: dict[str, pd.DataFrame]) -> None:
    """Four threads (one per data type, two calls each) against one strict exchange with network
    jitter: 10% 5xx (JSON or HTML bodies) plus dropped connections, answers slower than the timeout,
    truncated, malformed and HTML bodies at random in every group (the market list too), and a
    burst of 429s in each group. Every result is the fault-free one; each group stays within 10
    requests in any second as the exchange counts them; the client's own 429 count — five within
    ten seconds earn a 418 — stays at zero; mdcoord.metrics() agrees with the exchange's log."""
    with Exchange(SimConfig(seed=7, now=NOW, frozen=True, latency=0.02, jitter=0.005)) as ex:
        for call in CALLS.values():
            call(ex.base_url)
        ex.clear_log()
        mdcoord.reset_metrics()
        # (a random slow answer takes SimConfig.slow_delay, 30 s: far over the 1.5 s timeout)
        ex.faults.set_rates(server_error=0.10, drop=0.02, slow=0.02, truncated=0.02, malformed=0.02, html=0.02, seed=3)
        for group in GROUPS.values():
            ex.faults.inject("rate_limited", count=2, group=group, after=1)
        out: dict[str, list[pd.DataFrame]] = {}
        errors: list[BaseException] = []

        def work(name: str) -> None:
            try:
                out[name] = [CALLS[name](ex.base_url, max_retries=5, timeout=1.5) for _ in range(2)]
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(name,)) for name in CALLS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        for name, frames in out.items():
            for df in frames:
                assert_same(df, reference[name])
        ex.faults.clear()
        assert injected(ex) >= 12 and injected(ex, "rate_limited") == 8
        assert ex.count(status=418) == 0 and own_429s(ex) == 0
        for group in GROUPS.values():
            assert ex.max_in_window(group, 1.0) <= 10
        # the client's own figures agree with the exchange's log: one retry per fault, no more
        m = mdcoord.metrics().xs(source_name(ex.base_url), level="source")
        assert int(m["retries"].sum()) == injected(ex) == sum(df.attrs["mdcoord"]["retries"]
                                                              for frames in out.values() for df in frames)
        assert int(m["5xx"].sum()) == injected(ex, "server_error") and int(m["429"].sum()) == 8


def test_after_lets_requests_through_before_the_fault(clean: Exchange) -> None:
    """The sim's ``after=`` (used above to strike in the middle of a job)."""
    ex = clean
    ex.faults.inject("server_error", count=2, group="candles", after=3)
    with pytest.raises(ValueError, match="after"):
        ex.faults.inject("drop", after=-1)
    mdcoord.candles("KRW-BTC", "1m", start=C_START, end=C_END, base_url=ex.base_url, concurrency=1)
    assert [r.fault for r in ex.log][:6] == [None, None, None, "server_error", "server_error", None]
