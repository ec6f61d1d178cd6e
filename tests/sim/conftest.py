"""Fixtures: real servers on 127.0.0.1 and a tiny urllib client (no mocking anywhere)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mdcoord.sim import Exchange, SimConfig, SyntheticMarket

NOW = "2026-11-24T12:00:00Z"
# A short seconds horizon keeps cold generation cheap; both eras are still exercised.
HORIZON = 10


@dataclass
class Reply:
    status: int | None
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def get(base_url: str, path: str, headers: dict[str, str] | None = None, timeout: float = 300.0) -> Reply:
    """One GET; HTTP errors are returned, not raised. ``path`` is appended to the base URL. The
    timeout only ends a hang: a cold ``/ticker/all`` builds seconds of history, more on a busy machine."""
    req = urllib.request.Request(base_url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Reply(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, dict(e.headers), e.read())


def config(**kw: Any) -> SimConfig:
    base: dict[str, Any] = dict(seed=7, now=NOW, frozen=True, seconds_horizon_days=HORIZON)
    base.update(kw)
    return SimConfig(**base)


@pytest.fixture(scope="session")
def ex() -> Iterator[Exchange]:
    """A shared, unlimited, frozen exchange for API-shape tests."""
    with Exchange(config(rate_limit=None)) as e:
        yield e


@pytest.fixture(scope="session")
def model() -> SyntheticMarket:
    return SyntheticMarket(seed=7, now=NOW, seconds_horizon_days=HORIZON)


@pytest.fixture
def limited() -> Iterator[Exchange]:
    """A fresh exchange with Upbit's limits and a short ban, for limit and fault tests."""
    with Exchange(config(ban_after=3, ban_seconds=2.0)) as e:
        yield e
