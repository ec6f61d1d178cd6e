from __future__ import annotations

import random

import pytest

from mdcoord import (
    BadRequestError,
    ConnectionFailedError,
    InvalidRequestError,
    IPBlockedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    RetryPolicy,
    ServerError,
)


def test_delays_grow_exponentially_with_bounded_jitter() -> None:
    policy = RetryPolicy(max_retries=5, backoff=0.25, max_backoff=1.0)
    rng = random.Random(1)
    for attempt, ceiling in enumerate([0.25, 0.5, 1.0, 1.0, 1.0]):
        for _ in range(50):
            d = policy.delay(attempt, rng)
            assert ceiling / 2 <= d <= ceiling


def test_delay_is_deterministic_for_a_seeded_rng() -> None:
    p = RetryPolicy()
    assert [p.delay(a, random.Random(7)) for a in range(3)] == [p.delay(a, random.Random(7)) for a in range(3)]


@pytest.mark.parametrize(
    "err, retry",
    [
        (RateLimitError(429, "Too many API requests."), True),
        (ServerError(503, "x"), True),
        (RequestTimeoutError("t"), True),
        (ConnectionFailedError("c"), True),
        (ResponseFormatError("r"), True),
        (BadRequestError(400, "x"), False),
        (IPBlockedError(418, "x"), False),
        (InvalidRequestError("x"), False),
        (ValueError("not ours"), False),
    ],
)
def test_retryability_is_the_class(err: BaseException, retry: bool) -> None:
    policy = RetryPolicy(max_retries=3)
    assert policy.should_retry(err, 0) is retry
    assert policy.should_retry(err, 3) is False


def test_invalid_policy() -> None:
    with pytest.raises(InvalidRequestError):
        RetryPolicy(max_retries=-1)
