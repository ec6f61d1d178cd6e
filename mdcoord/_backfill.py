"""Market-wide backfills on a Dask cluster: one task per market x period, one Parquet file each.

``backfill(markets, timeframe, start, end, store=...)`` plans the job as tasks (a market's
candles over one calendar period: a day of seconds, a month of minutes, a year of days), runs
them on a Dask cluster (the client given, a scheduler address, or a local cluster), and writes a
Parquet dataset partitioned by market and period::

    <store>/market=KRW-BTC/period=2026-10/part.parquet     the candles: time + OHLCV columns
    <store>/_mdcoord/backfill.json                           what the dataset is (timeframe...)
    <store>/_mdcoord/tasks/market=KRW-BTC/period=2026-10.json  one task's record: rows, requests,
                                                             missing candles, host, address

Exactly once, resumable: a task writes its file under a temporary name in the same directory
(a leading ``.``, which Parquet readers skip) and renames it into place, then writes its record
the same way. The record is the commit: a task whose record exists is done and sends nothing
when the job runs again; a task killed before its record leaves at most a temporary file, and
its rerun (Dask's, after a worker died, or the next run's) writes the same rows again under the
same name. Nothing is appended, so nothing can be duplicated.

The rate budget is the machine's (``rate_budget="machine"``, the default): every worker of a
host shares its host's 10 a second per group, whatever the number of workers; hosts with other
addresses add up (and so do workers bound to other local addresses, ``local_address``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from ._config import LOCAL_ADDRESS_ENV, Options, _check_local_address, resolve_base_url
from ._exceptions import IncompleteDataError, InvalidRequestError
from ._markets import expand_codes
from ._timeframe import Timeframe, to_utc

__all__ = ["BackfillSummary", "BackfillTask", "backfill", "plan_backfill"]

PERIODS = ("day", "month", "year")
_META_DIR = "_mdcoord"
_FILE = "part.parquet"
_FORMAT = 1  # the layout's version, in backfill.json


@dataclass(frozen=True, order=True)
class BackfillTask:
    """One market's candles over ``[start, end)``: the calendar ``period`` it names, clipped to
    the job's range."""

    market: str
    period: str
    start: pd.Timestamp
    end: pd.Timestamp

    @property
    def data_path(self) -> str:
        return f"market={self.market}/period={self.period}/{_FILE}"

    @property
    def record_path(self) -> str:
        return f"{_META_DIR}/tasks/market={self.market}/period={self.period}.json"


def default_period(timeframe: Timeframe) -> str:
    """A task of about 200-1,300 requests: a day of seconds, a month of minutes, a year of days."""
    if timeframe.kind == "seconds":
        return "day"
    if timeframe.kind == "minutes":
        return "month"
    return "year"


def plan_backfill(markets: Sequence[str], timeframe: str | Timeframe, start: Any, end: Any,
                  period: str | None = None) -> list[BackfillTask]:
    """The tasks of a backfill: every market x every calendar period that ``[start, end)``
    touches, clipped to it (pure; in market, then time order)."""
    tf = Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
    a, b = to_utc(start, "start"), to_utc(end, "end")
    if not a < b:
        raise InvalidRequestError(f"start must be before end, got start={a} end={b}")
    period = default_period(tf) if period is None else period
    if period not in PERIODS:
        raise InvalidRequestError(f"period must be one of {PERIODS}, got {period!r}")
    if not markets:
        raise InvalidRequestError("backfill needs at least one market")
    freq, fmt = {"day": ("D", "%Y-%m-%d"), "month": ("MS", "%Y-%m"), "year": ("YS", "%Y")}[period]
    first = a.floor("D") if period == "day" else pd.Timestamp(year=a.year, month=a.month if period == "month" else 1,
                                                              day=1, tz="UTC")
    edges = list(pd.date_range(first, b, freq=freq, inclusive="left"))
    tasks = []
    for market in markets:
        for lo in edges:
            hi = lo + pd.tseries.frequencies.to_offset(freq)
            s, e = max(lo, a), min(hi, b)
            if s < e:
                tasks.append(BackfillTask(market, lo.strftime(fmt), s, e))
    return tasks


@dataclass
class BackfillSummary:
    """What a backfill did. ``str()`` is the summary the CLI prints."""

    store: str
    timeframe: str
    markets: int
    tasks: int
    tasks_done: int = 0
    tasks_skipped: int = 0  #: finished by an earlier run: 0 requests
    tasks_failed: int = 0
    rows: int = 0
    requests: int = 0
    missing_candles: int = 0  #: slots without a candle inside the data's span (no trade: a gap)
    wall_s: float = 0.0
    #: per host (and local address): tasks, rows, requests, requests/s over the job's wall time
    hosts: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    dashboard: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [
            f"backfill {self.timeframe} -> {self.store}: {self.tasks_done + self.tasks_skipped}/{self.tasks} tasks "
            f"({self.tasks_skipped} already done, {self.tasks_failed} failed), {self.markets} markets, "
            f"{self.rows:,} rows, {self.requests:,} requests, {self.missing_candles:,} missing candles, "
            f"{self.wall_s:.1f} s",
        ]
        for host, h in sorted(self.hosts.items()):
            lines.append(f"  {host}: {int(h['tasks'])} tasks, {int(h['rows']):,} rows, {int(h['requests']):,} requests, "
                         f"{h['requests_per_s']:.2f} requests/s")
        for f in self.failures:
            lines.append(f"  failed: {f['market']} {f['period']}: {f['error']}")
        return "\n".join(lines)


# -- the worker's side ---------------------------------------------------------------------------
def _filesystem(store: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(store, **(storage_options or {}))
    return fs, root.rstrip("/")


def _put_atomically(fs: Any, path: str, write: Any) -> None:
    """``write(file)`` to a hidden temporary name beside ``path``, then rename it into place: a
    reader sees the whole file or none (a rename within one directory, or one object PUT)."""
    directory, name = path.rsplit("/", 1)
    fs.makedirs(directory, exist_ok=True)
    tmp = f"{directory}/.{name}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(tmp, "wb") as f:
            write(f)
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def run_task(task: BackfillTask, timeframe: str, store: str, storage_options: dict[str, Any] | None,
             base_url: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """Run one task where it is called (a Dask worker): skip it if its record exists, else fetch
    its candles and write its file, then its record. Returns the record."""
    import mdcoord

    fs, root = _filesystem(store, storage_options)
    record_path = f"{root}/{task.record_path}"
    if fs.exists(record_path):
        with fs.open(record_path, "rb") as f:
            return {**json.loads(f.read()), "skipped": True}
    started = time.perf_counter()
    df = mdcoord.candles(task.market, timeframe, start=task.start, end=task.end, base_url=base_url,
                         cache=False, progress=False, **options)
    meta = df.attrs["mdcoord"]
    frame = df.reset_index()
    frame.attrs = {}  # the metadata goes to the record, not into every file's schema
    # Microsecond timestamps: what DuckDB (nanoseconds lose their time zone there), Spark and
    # Polars all read as UTC instants; candles sit on whole seconds, so nothing is lost.
    _put_atomically(fs, f"{root}/{task.data_path}",
                    lambda f: frame.to_parquet(f, index=False, coerce_timestamps="us", allow_truncated_timestamps=False))
    record = {
        "market": task.market, "period": task.period, "timeframe": timeframe,
        "start": task.start.isoformat(), "end": task.end.isoformat(),
        "rows": len(frame), "requests": int(meta["requests_sent"]), "missing_candles": int(meta["missing_candles"]),
        "gaps": int(meta["gaps_found"]), "complete": bool(meta["complete"]),
        "host": socket.gethostname(), "local_address": meta.get("local_address"), "pid": os.getpid(),
        "fetched_at": meta.get("fetched_at"), "seconds": round(time.perf_counter() - started, 3),
    }
    _put_atomically(fs, record_path, lambda f: f.write(json.dumps(record, indent=1).encode()))
    return {**record, "skipped": False}


# -- the driver's side ---------------------------------------------------------------------------
def _resolve_markets(markets: str | Iterable[str], base_url: str | None, options: dict[str, Any]) -> list[str]:
    """Codes as given; a quote currency (``"KRW"``, no dash) becomes its markets."""
    import mdcoord

    given = [markets] if isinstance(markets, str) else list(markets)
    for m in given:
        if not isinstance(m, str) or not m:
            raise InvalidRequestError(f"markets must be codes such as 'KRW-BTC' or a quote currency such as 'KRW', got {m!r}")
    if not given:
        raise InvalidRequestError("backfill needs at least one market")
    # One request for the list: quote currencies expand, and an unknown code fails here, with
    # suggestions, before any worker starts — not as a failed task an hour into the job.
    listing = mdcoord.markets(base_url=base_url, progress=False, **options)
    return expand_codes(given, listing, base_url)


def _write_job(fs: Any, root: str, job: dict[str, Any]) -> None:
    """Record what the dataset is; a store that holds another timeframe is refused (its files
    would mix two grids under one layout)."""
    path = f"{root}/{_META_DIR}/backfill.json"
    if fs.exists(path):
        with fs.open(path, "rb") as f:
            old = json.loads(f.read())
        if old.get("timeframe") != job["timeframe"]:
            raise InvalidRequestError(
                f"the store {root!r} holds a backfill of {old.get('timeframe')} candles, not {job['timeframe']}: "
                "use another store for another timeframe")
        job = {**old, "markets": sorted(set(old.get("markets", [])) | set(job["markets"])),
               "start": min(old["start"], job["start"]), "end": max(old["end"], job["end"])}
    _put_atomically(fs, path, lambda f: f.write(json.dumps(job, indent=1).encode()))


def backfill(
    markets: str | Iterable[str],
    timeframe: str = "1m",
    start: Any = None,
    end: Any = None,
    *,
    store: str,
    client: Any = None,
    scheduler: str | None = None,
    n_workers: int = 2,
    addresses: Sequence[str] | None = None,
    threads_per_worker: int = 1,
    period: str | None = None,
    storage_options: dict[str, Any] | None = None,
    base_url: str | None = None,
    progress: bool | None = None,
    **options: Any,
) -> BackfillSummary:
    """Download ``markets``' ``timeframe`` candles over ``[start, end)`` into a Parquet dataset at
    ``store`` (a path or an fsspec URL such as ``s3://bucket/krw-1m``), on a Dask cluster.

    ``markets``: codes and/or quote currencies (``"KRW"``: every KRW market). ``client``: a
    ``distributed.Client``; else ``scheduler`` (an address such as ``tcp://10.0.0.5:8786``); else
    a local cluster of ``n_workers`` processes, closed at the end — or, with ``addresses`` (local
    IPs of this host), one worker per address, its connections bound to it: one budget per
    address, as Upbit counts (``threads_per_worker`` each, default 1). One task per market x
    ``period`` (default: a day of seconds, a month of minutes, a year of days). Tasks already
    done in ``store`` are skipped (0 requests). ``options`` are mdcoord's (``rate_budget``,
    ``max_retries``...), applied on the workers. Raises :class:`IncompleteDataError` after every
    other task finished when some failed (their failures in ``err.failures``; a rerun does only
    those).

    >>> mdcoord.backfill("KRW", "1m", "2024-01-01", "2026-01-01", store="s3://bucket/krw-1m",
    ...                  scheduler="tcp://scheduler:8786")
    """
    if start is None or end is None:
        raise InvalidRequestError("backfill needs start and end")
    if not isinstance(store, (str, os.PathLike)) or not str(store):
        raise InvalidRequestError(f"store must be a path or an fsspec URL, got {store!r}")
    if "cache" in options or "progress" in options:
        raise InvalidRequestError("backfill writes to store, not to the cache; progress= is its own argument")
    for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequestError(f"{name} must be an int >= 1, got {value!r}")
    if addresses is not None:
        if isinstance(addresses, str) or not addresses:
            raise InvalidRequestError(f"addresses must be a list of local IP addresses, got {addresses!r}")
        addresses = [_check_local_address(a, "addresses") for a in addresses]
        if client is not None or scheduler is not None:
            raise InvalidRequestError("addresses= starts a local cluster: give it without client= or scheduler=")
        if "local_address" in options:
            raise InvalidRequestError("give addresses= or local_address=, not both")
    Options(**{k: v for k, v in options.items() if k != "base_url"})  # check every option here, not on a worker
    tf = Timeframe.parse(timeframe)
    store = os.fspath(store)
    base_url = base_url if base_url is not None else resolve_base_url(None)
    names = _resolve_markets(markets, base_url, options)
    tasks = plan_backfill(names, tf, start, end, period)
    fs, root = _filesystem(store, storage_options)
    _write_job(fs, root, {"format": _FORMAT, "timeframe": tf.value, "markets": sorted(set(names)),
                          "start": tasks[0].start.isoformat() if tasks else None,
                          "end": max(t.end for t in tasks).isoformat() if tasks else None,
                          "period": period or default_period(tf),
                          "partitioning": ["market", "period"], "time_column": "time"})
    summary = BackfillSummary(store=store, timeframe=tf.value, markets=len(names), tasks=len(tasks))
    _needs_distributed()
    owned = None
    if client is None:
        from distributed import Client, LocalCluster

        if scheduler is not None:
            client = owned = Client(scheduler)
        else:
            cluster = (_address_cluster(addresses, threads_per_worker) if addresses is not None else
                       LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                                    dashboard_address=":0"))
            client = owned = Client(cluster)
            client.wait_for_workers(len(addresses) if addresses is not None else n_workers)
    try:
        summary.dashboard = getattr(client, "dashboard_link", None)
        _run(client, tasks, tf.value, store, storage_options, base_url, options, summary, progress)
    finally:
        if owned is not None:
            cluster = owned.cluster
            owned.close()
            if cluster is not None and scheduler is None:
                cluster.close()
    if summary.failures:
        # the others are in the store; the same backfill again does only the failed ones
        err = IncompleteDataError([{"market": f["market"], "range": f"period {f['period']}", "error": f["error"]}
                                   for f in summary.failures])
        err.summary = summary  # type: ignore[attr-defined]
        raise err
    return summary


def _address_cluster(addresses: Sequence[str], threads: int) -> Any:
    """A local cluster of one worker process per address, each bound to it through
    ``$MDCOORD_LOCAL_ADDRESS`` (so each has its own limiter, machine budget and 418 guard)."""
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {f"mdcoord-{i}-{a}": {"cls": Nanny, "options": {"nthreads": threads, "host": "127.0.0.1",
                                                              "env": {LOCAL_ADDRESS_ENV: a}}}
               for i, a in enumerate(addresses)}
    return SpecCluster(workers=workers, silence_logs=logging.ERROR,
                       scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0", "host": "127.0.0.1"}})


def _needs_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise InvalidRequestError('mdcoord.backfill runs on Dask distributed: pip install "mdcoord[dask]"') from None


def _run(client: Any, tasks: list[BackfillTask], timeframe: str, store: str, storage_options: dict[str, Any] | None,
         base_url: str | None, options: dict[str, Any], summary: BackfillSummary, progress: bool | None) -> None:
    from distributed import as_completed

    from ._progress import Progress

    t0 = time.perf_counter()
    token = uuid.uuid4().hex[:8]
    futures = [client.submit(run_task, t, timeframe, store, storage_options, base_url, options,
                             key=f"mdcoord-backfill-{t.market}-{t.period}-{token}", pure=False, retries=2)
               for t in tasks]
    where = {f.key: t for f, t in zip(futures, tasks, strict=True)}
    bar = Progress(progress, f"backfill {timeframe}", unit="task")
    bar.add_total(len(tasks))
    try:
        for fut in as_completed(futures):
            task = where[fut.key]
            try:
                rec = fut.result()
            except Exception as err:  # noqa: BLE001 - a task's failure is reported, the others go on
                summary.tasks_failed += 1
                summary.failures.append({"market": task.market, "period": task.period,
                                         "error": f"{type(err).__name__}: {err}"})
                bar.tick(0, failed=summary.tasks_failed)
                continue
            if rec.get("skipped"):
                summary.tasks_skipped += 1
            else:
                summary.tasks_done += 1
                summary.requests += rec["requests"]
                host = rec["host"] + (f"@{rec['local_address']}" if rec.get("local_address") else "")
                h = summary.hosts.setdefault(host, {"tasks": 0, "rows": 0, "requests": 0, "requests_per_s": 0.0})
                h["tasks"] += 1
                h["rows"] += rec["rows"]
                h["requests"] += rec["requests"]
            summary.rows += rec["rows"]
            summary.missing_candles += rec["missing_candles"]
            bar.tick(rec["rows"], requests=f"{summary.requests:,}", skipped=summary.tasks_skipped)
    finally:
        bar.close()
        summary.wall_s = round(time.perf_counter() - t0, 3)
        for h in summary.hosts.values():
            h["requests_per_s"] = round(h["requests"] / summary.wall_s, 3) if summary.wall_s else 0.0
