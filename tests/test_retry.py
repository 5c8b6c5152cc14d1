"""Backoff delays: shapes, the cap and jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prodigy.retry import backoff_delay


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("fixed", [2, 2, 2, 2, 2]),
        ("linear", [2, 4, 6, 8, 10]),
        ("exponential", [2, 4, 8, 16, 32]),
        ("fibonacci", [2, 2, 4, 6, 10]),
    ],
)
def test_shapes(backoff: str, expected: list[float]) -> None:
    delays = [backoff_delay(backoff, n, 2.0, 1000.0, False) for n in range(1, 6)]  # type: ignore[arg-type]
    assert delays == expected


kinds = st.sampled_from(["fixed", "linear", "exponential", "fibonacci"])


@given(kinds, st.integers(1, 500), st.floats(0, 100), st.floats(0, 1000))
def test_never_above_the_cap_and_never_negative(
    backoff: str, failures: int, initial: float, cap: float
) -> None:
    delay = backoff_delay(backoff, failures, initial, cap, False)  # type: ignore[arg-type]
    assert 0 <= delay <= cap


@given(kinds, st.integers(1, 60), st.floats(0.01, 10))
def test_without_jitter_delays_never_shrink(backoff: str, failures: int, initial: float) -> None:
    first = backoff_delay(backoff, failures, initial, 1e9, False)  # type: ignore[arg-type]
    second = backoff_delay(backoff, failures + 1, initial, 1e9, False)  # type: ignore[arg-type]
    assert second >= first


@given(kinds, st.integers(1, 30), st.integers(0, 2**32))
def test_jitter_stays_between_half_and_the_full_delay(
    backoff: str, failures: int, seed: int
) -> None:
    full = backoff_delay(backoff, failures, 1.0, 60.0, False)  # type: ignore[arg-type]
    jittered = backoff_delay(backoff, failures, 1.0, 60.0, True, random.Random(seed))  # type: ignore[arg-type]
    assert full / 2 <= jittered <= full
