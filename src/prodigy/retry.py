"""Retry delays: how long an item waits before its next attempt.

Pure arithmetic over the workflow's `retry_config`; the attempt counts themselves are persisted
in the job state, not here.
"""

from __future__ import annotations

import random
from typing import Literal

Backoff = Literal["fixed", "linear", "exponential", "fibonacci"]


def _fibonacci(n: int) -> int:
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return a


def backoff_delay(
    backoff: Backoff,
    failed_attempts: int,
    initial_delay: float,
    max_delay: float,
    jitter: bool,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the `failed_attempts`-th failure (1-based) before trying again."""
    n = max(1, failed_attempts)
    if backoff == "fixed":
        delay = initial_delay
    elif backoff == "linear":
        delay = initial_delay * n
    elif backoff == "exponential":
        # Cap the exponent so a huge attempt count cannot overflow the float.
        delay = initial_delay * (2.0 ** min(n - 1, 60))
    else:
        delay = initial_delay * _fibonacci(min(n, 90))
    delay = min(delay, max_delay)
    if jitter and delay > 0:
        # "Full jitter" spreads retries of many items failing together.
        delay = (rng or random).uniform(delay / 2, delay)
    return max(0.0, delay)
