"""Process-wide defaults, validated in one place: :func:`set_options` (also a context manager).

Precedence for every setting: the function argument, then ``set_options``, then the environment
(``MDCOORD_BASE_URL``), then the built-in default.

>>> with mdcoord.set_options(concurrency=8, progress=False):
...     df = mdcoord.candles("KRW-BTC", "1m", count=1000)
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from ._exceptions import InvalidRequestError

__all__ = ["DEFAULT_BASE_URL", "Options", "get_options", "resolve_base_url", "resolve_cache_dir", "set_options", "source_name", "with_overrides"]

DEFAULT_BASE_URL = "https://api.upbit.com/v1"
BASE_URL_ENV = "MDCOORD_BASE_URL"
RATE_BUDGET_ENV = "MDCOORD_RATE_BUDGET"
LOCAL_ADDRESS_ENV = "MDCOORD_LOCAL_ADDRESS"
_BUDGET_URL_SCHEMES = ("redis://", "rediss://", "unix://")
CACHE_DIR_ENV = "MDCOORD_CACHE_DIR"


@dataclass(frozen=True)
class Options:
    """The tunable defaults. Every field can also be given per call where it makes sense.

    - ``base_url``: API root (None → ``$MDCOORD_BASE_URL`` or the real Upbit API).
    - ``concurrency``: ``"auto"`` (default) keeps as many requests in flight per rate-limit group
      as the limit and the measured latency need (about rate × latency, up to 32), shrinking on
      429s, timeouts and a stalled event loop and growing back; an int fixes it per call (1 is
      sequential). The rate limit rules either way.
    - ``max_retries``: retries of a retryable failure (429, 5xx, timeout, dropped, garbled).
    - ``backoff`` / ``max_backoff``: seconds; retry ``a`` waits between half and all of
      ``min(max_backoff, backoff * 2**a)`` (see :class:`~mdcoord.RetryPolicy`).
    - ``timeout`` / ``connect_timeout``: seconds for a whole request / for connecting.
    - ``rate_limit``: requests per second per rate-limit group (Upbit: 10).
    - ``rate_margin``: seconds added to the 1-second window to absorb network jitter; ``"auto"``
      (default) measures it from the spread of round trips (30-250 ms, 50 ms to begin with).
    - ``rate_budget``: whose budget ``rate_limit`` is (None → ``$MDCOORD_RATE_BUDGET`` or
      ``"machine"``). ``"machine"`` (default): one sliding window per (exchange, group) shared,
      in turn, by every mdcoord process of this machine through a small file
      (``$MDCOORD_BUDGET_DIR``), as Upbit counts per IP; a process killed at any point holds its
      slots for at most one window. ``"redis://host:6379/0"``: one window shared by every host
      that uses that Redis (several machines behind one address). ``"process"``: this process's
      own — only for a process with an address of its own (its own proxy): several processes
      on one address with ``"process"`` exceed the limit together and get the address blocked.
    - ``local_address``: the local IP address mdcoord's connections leave from (None →
      ``$MDCOORD_LOCAL_ADDRESS`` or the system's choice). Upbit counts the budget per address,
      so each address gets its own limiter, machine budget and 418 guard: a host with several
      addresses (or a test on 127.0.0.2, 127.0.0.3, ...) runs one budget per address.
    - ``progress``: True/False forces the progress bar; None shows it where a person watches.
    - ``on_error``: "raise" (default) raises :class:`IncompleteDataError` when pieces fail after
      retries; "partial" returns what arrived with the failures listed in ``attrs``.
    - ``cache``: read and fill the local Parquet cache (candles); ``cache_dir`` its location
      (None → ``$MDCOORD_CACHE_DIR`` or the OS user cache directory, see ``mdcoord.cache``).
    - ``tickers_per_request`` (10) / ``orderbooks_per_request`` (5): markets per request.
    - ``trades_per_window`` (1350): trades a time window of the trades split aims to hold (its
      length adapts to how busy the market is). A window pages by 500 until a page reaches past
      its start, so n trades cost floor(n/500)+1 pages: 1350 makes that 3 pages for ~2.7 pages
      of trades (1000 would cost 3 pages for 2).
    """

    base_url: str | None = None
    concurrency: int | str = "auto"
    max_retries: int = 3
    backoff: float = 0.25
    max_backoff: float = 8.0
    timeout: float = 15.0
    connect_timeout: float = 5.0
    rate_limit: int = 10
    rate_margin: float | str = "auto"
    rate_budget: str | None = None
    local_address: str | None = None
    progress: bool | None = None
    on_error: str = "raise"
    cache: bool = True
    cache_dir: str | None = None
    tickers_per_request: int = 10
    orderbooks_per_request: int = 5
    trades_per_window: int = 1350

    def __post_init__(self) -> None:
        if self.concurrency != "auto":
            try:
                _check_int("concurrency", self.concurrency, 1, 1000)
            except InvalidRequestError:
                raise InvalidRequestError(
                    f"concurrency must be 'auto' or an int in [1, 1000], got {self.concurrency!r}"
                ) from None
        _check_int("max_retries", self.max_retries, 0, 100)
        _check_int("rate_limit", self.rate_limit, 1, 10_000)
        _check_int("tickers_per_request", self.tickers_per_request, 1, 500)
        _check_int("orderbooks_per_request", self.orderbooks_per_request, 1, 500)
        _check_int("trades_per_window", self.trades_per_window, 1, 1_000_000)
        for name in ("backoff", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
                raise InvalidRequestError(f"{name} must be seconds in [0, 3600], got {value!r}")
        for name in ("timeout", "connect_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidRequestError(f"{name} must be a number of seconds > 0, got {value!r}")
        if self.rate_margin != "auto" and (
            isinstance(self.rate_margin, bool) or not isinstance(self.rate_margin, (int, float))
            or not 0 <= self.rate_margin <= 1
        ):
            raise InvalidRequestError(f"rate_margin must be 'auto' or seconds in [0, 1], got {self.rate_margin!r}")
        if self.rate_budget is not None:
            _check_rate_budget(self.rate_budget)
        if self.local_address is not None:
            _check_local_address(self.local_address)
        if self.progress not in (None, True, False):
            raise InvalidRequestError(f"progress must be True, False or None, got {self.progress!r}")
        if self.on_error not in ("raise", "partial"):
            raise InvalidRequestError(f"on_error must be 'raise' or 'partial', got {self.on_error!r}")
        if self.base_url is not None:
            _check_base_url(self.base_url)
        if not isinstance(self.cache, bool):
            raise InvalidRequestError(f"cache must be True or False, got {self.cache!r}")
        if self.cache_dir is not None and (not isinstance(self.cache_dir, (str, os.PathLike)) or not str(self.cache_dir)):
            raise InvalidRequestError(f"cache_dir must be a path, got {self.cache_dir!r}")


def source_name(base_url: str) -> str:
    """A short name for an exchange: ``upbit`` for the real API, else ``host_port`` (the cache's
    directory name and the metrics' source label)."""
    parts = urlsplit(base_url)
    host = parts.hostname or "unknown"
    if host == "api.upbit.com":
        return "upbit"
    name = f"{host}_{parts.port}" if parts.port else host
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidRequestError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")


def _check_rate_budget(value: object, where: str = "rate_budget") -> str:
    if isinstance(value, str) and value in ("process", "machine"):
        return value
    if isinstance(value, str) and value.startswith(_BUDGET_URL_SCHEMES):
        try:
            urlsplit(value).port  # noqa: B018 - raises for a port that is no number
        except ValueError:
            raise InvalidRequestError(f"{where} has a bad port: {budget_label(value.split('@')[-1])!r}") from None
        return value
    raise InvalidRequestError(
        f"{where} must be 'machine', 'process' or a Redis URL like 'redis://host:6379/0', got {value!r}"
    )


def _check_base_url(url: object) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidRequestError(f"base_url must be an http(s) URL like {DEFAULT_BASE_URL!r}, got {url!r}")
    return url.rstrip("/")


_current = Options()


def get_options() -> Options:
    """The options in force now."""
    return _current


def with_overrides(base: Options, overrides: dict[str, Any], *, parameters: tuple[str, ...] = ()) -> Options:
    """``base`` with ``overrides`` applied and validated; an unknown name is an
    :class:`InvalidRequestError` naming it, suggesting the closest option or call ``parameters``
    (a typo'd ``cuont=`` is "did you mean count?") and listing the valid options."""
    known = {f.name for f in fields(Options)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        hints = [m for u in unknown for m in difflib.get_close_matches(u, [*parameters, *known], n=1)]
        hint = f" (did you mean {', '.join(map(repr, hints))}?)" if hints else ""
        raise InvalidRequestError(f"unknown option(s) {unknown}{hint}; valid options are {sorted(known)}")
    return replace(base, **overrides) if overrides else base


class set_options:  # noqa: N801 - used like a function, as in xarray
    """Set process-wide defaults; as a context manager, restore the previous ones on exit."""

    def __init__(self, **kwargs: Any) -> None:
        global _current
        new = with_overrides(_current, kwargs)
        self._previous = _current
        _current = new

    def __enter__(self) -> Options:
        return _current

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _current
        _current = self._previous


def resolve_base_url(base_url: str | None = None) -> str:
    """The base URL for a call: argument, then options, then ``$MDCOORD_BASE_URL``, then Upbit."""
    for candidate in (base_url, _current.base_url, os.environ.get(BASE_URL_ENV) or None):
        if candidate is not None:
            return _check_base_url(candidate)
    return DEFAULT_BASE_URL


def resolve_rate_budget(options: Options | None = None) -> str:
    """Whose budget the rate limit is: option, then ``$MDCOORD_RATE_BUDGET``, then ``"machine"``."""
    chosen = (options or _current).rate_budget
    if chosen is not None:
        return chosen
    env = os.environ.get(RATE_BUDGET_ENV)
    return _check_rate_budget(env, f"${RATE_BUDGET_ENV}") if env else "machine"


def _check_local_address(value: object, where: str = "local_address") -> str:
    """An IP address to bind outgoing connections to (IPv4 or IPv6, no port, no host name)."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{where} must be an IP address such as '127.0.0.2', got {value!r}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidRequestError(f"{where} must be an IP address such as '127.0.0.2', got {value!r}") from None


def resolve_local_address(options: Options | None = None) -> str | None:
    """Where connections leave from: option, then ``$MDCOORD_LOCAL_ADDRESS``, then the system's
    choice (None)."""
    chosen = (options or _current).local_address
    if chosen is not None:
        return _check_local_address(chosen)
    env = os.environ.get(LOCAL_ADDRESS_ENV)
    return _check_local_address(env, f"${LOCAL_ADDRESS_ENV}") if env else None


def budget_label(spec: str) -> str:
    """``spec`` as metadata and messages may show it: a Redis URL without its credentials (the
    user and password before ``@``, and a ``password=`` query parameter)."""
    if not spec.startswith(_BUDGET_URL_SCHEMES):
        return spec
    parts = urlsplit(spec)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]  # (as written, even if bad)
    if port:
        netloc += f":{port}"
    query = "&".join(q for q in parts.query.split("&") if q and not q.lower().startswith("password="))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def resolve_cache_dir(options: Options | None = None) -> Path:
    """The cache directory: option, then ``$MDCOORD_CACHE_DIR``, then the OS user cache dir."""
    opts = options or _current
    chosen = opts.cache_dir or os.environ.get(CACHE_DIR_ENV) or platformdirs.user_cache_dir("mdcoord", appauthor=False)
    return Path(chosen).expanduser()
