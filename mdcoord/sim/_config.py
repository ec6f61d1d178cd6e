"""``SimConfig``: every knob of the embedded exchange, as one immutable value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SimConfig:
    """Configuration of :class:`~mdcoord.sim.Exchange`.

    Market: ``seed`` and ``now`` (datetime or ISO string, UTC; None = the real current time)
    fix the synthetic market; ``frozen`` keeps now still (deterministic tests), otherwise it
    advances with the wall clock. Seconds candles exist for ``seconds_horizon_days`` days.

    Network: ``latency`` is the mean round trip in seconds, split into an uplink delay (before
    the request is admitted, logged and rate-checked) and a downlink delay (after the answer is
    computed); each half varies uniformly by ``± jitter``. ``net_seed`` seeds that jitter
    (default: derived from ``seed``), separate from the market.

    Limits: ``rate_limit`` requests per group in any ``rate_window`` seconds (sliding, all
    arrivals count, rejected ones too); None disables limiting. ``ban_after`` 429s within
    ``ban_window`` seconds → HTTP 418 for every request during ``ban_seconds``, multiplied by
    ``ban_growth`` for each further ban. ``origin_limit`` per ``origin_window`` applies to
    requests that carry an ``Origin`` header. ``plain_text_429`` answers 429 with the text
    ``Too many API requests.`` (else a JSON error). ``remaining_req_on_errors`` adds the
    ``Remaining-Req`` header to error answers too.

    Faults: ``slow_delay`` is the default delay of a ``slow`` fault (long enough to trip a
    client's timeout).

    Clock: ``speed`` makes a running clock (``frozen=False``) advance that many times faster than
    the wall clock (60: an hour of trades in a minute), for REST and WebSocket alike.

    WebSocket (``/websocket/v1``): ``ws_connect_limit`` new connections per client address in any
    ``ws_connect_window`` seconds (more: HTTP 429 at the handshake); ``ws_subscribe_limit``
    subscription requests per connection per second and ``ws_subscribe_limit_minute`` per minute
    (more: the connection is closed, code 1008); ``ws_idle_timeout`` seconds without a frame from
    the client close the connection; ``ws_interval`` seconds (wall clock) between two pushes of a
    connection; ``ws_binary`` sends data as binary frames (as Upbit is reported to), else text.
    """

    seed: int = 7
    now: datetime | str | None = None
    frozen: bool = False
    seconds_horizon_days: int = 93
    latency: float = 0.0
    jitter: float = 0.0
    net_seed: int | None = None
    rate_limit: int | None = 10
    rate_window: float = 1.0
    origin_limit: int = 1
    origin_window: float = 10.0
    ban_after: int = 5
    ban_window: float = 10.0
    ban_seconds: float = 30.0
    ban_growth: float = 2.0
    plain_text_429: bool = True
    remaining_req_on_errors: bool = True
    slow_delay: float = 30.0
    host: str = "127.0.0.1"
    port: int = 0
    cache_mb: int = 256
    speed: float = 1.0
    ws_connect_limit: int = 5
    ws_connect_window: float = 1.0
    ws_subscribe_limit: int = 5
    ws_subscribe_limit_minute: int = 100
    ws_idle_timeout: float = 120.0
    ws_interval: float = 0.1
    ws_binary: bool = True

    def __post_init__(self) -> None:
        if self.latency < 0 or self.jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be >= 1 or None")
        if self.seconds_horizon_days < 1:
            raise ValueError("seconds_horizon_days must be >= 1")
        if not self.speed > 0:
            raise ValueError("speed must be > 0")
        if self.ws_interval <= 0 or self.ws_idle_timeout <= 0 or self.ws_connect_limit < 1:
            raise ValueError("ws_interval and ws_idle_timeout must be > 0, ws_connect_limit >= 1")
