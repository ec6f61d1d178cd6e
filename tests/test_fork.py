"""What a child forked by a process that used mdcoord inherits, and must leave alone.

The runtime's loop thread does not survive ``fork()``; the child starts a runtime of its own on
first use (``mdcoord/_runtime.py``). The launchers that fork, fetching in the children, are
tested in ``tests/test_budget_launchers.py``.
"""

from __future__ import annotations

import gc
import multiprocessing as mp

import mdcoord
from mdcoord.sim import Exchange


def _collect_garbage() -> None:
    gc.collect()


def test_a_forked_child_leaves_the_parents_connections_alone(fresh: Exchange) -> None:
    """A child forked after the parent fetched inherits the parent's runtime: its session, its
    pooled connections, and its loop's epoll, which is the parent's own kernel object. When the
    child's garbage collector finalized that session (any child's does, sooner or later), its
    sockets left the *parent's* epoll, and the parent's next request on a pooled connection
    never heard its answer: a timeout, then a retry (15 s lost; a failure without retries)."""
    kwargs = {"count": 5, "base_url": fresh.base_url, "max_retries": 0}
    mdcoord.candles("KRW-BTC", "1m", **kwargs)
    child = mp.get_context("fork").Process(target=_collect_garbage)
    child.start()
    child.join(60)
    assert child.exitcode == 0
    df = mdcoord.candles("KRW-BTC", "1m", **kwargs)  # the bug: IncompleteDataError (TimeoutError)
    assert len(df) == 5 and fresh.count(status=200) == fresh.count()


def _fetch(base_url: str) -> None:
    mdcoord.candles("KRW-BTC", "1m", count=5, base_url=base_url)


def test_a_child_forked_while_the_metrics_were_being_updated_can_fetch(fresh: Exchange) -> None:
    """Forked while another thread of the parent (its loop thread, a request ending) held the
    metrics' lock, the child inherited it held by a thread it does not have: its first request
    waited on it for ever."""
    from mdcoord._metrics import METRICS

    child = mp.get_context("fork").Process(target=_fetch, args=(fresh.base_url,))
    with METRICS._lock:  # held at the moment of fork, as by another thread
        child.start()
    child.join(60)
    if child.exitcode is None:
        child.kill()
        child.join()
    assert child.exitcode == 0
    assert fresh.count(status=200) >= 1
