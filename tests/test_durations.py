"""Durations: `--older-than`'s exact values and strict refusals, and the workflow dialect."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prodigy.durations import (
    AGE_SYNTAX,
    UNIT_SECONDS,
    WORKFLOW_SYNTAX,
    DurationSyntax,
    format_duration,
    parse_duration,
)
from prodigy.errors import EXIT_USAGE, UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("30m", 30 * 60),
        ("12h", 12 * 3600),
        ("7d", 7 * 86400),
        ("2w", 14 * 86400),
        ("0s", 0),
        ("1h30m", 5400),
        (" 7d ", 7 * 86400),
    ],
)
def test_parses_the_documented_units(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "7", "d", "7x", "7 d", "-1d", "1.5h", "7D", "d7", "7days", "1h 30m", "7d!"]
)
def test_refuses_malformed_durations_as_usage_errors(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_duration(text)
    assert caught.value.exit_code == EXIT_USAGE
    assert repr(text) in caught.value.message
    assert "30m, 12h, 7d or 2w" in caught.value.message


def test_absurdly_long_duration_is_a_usage_error_not_a_crash() -> None:
    with pytest.raises(UsageError):
        parse_duration("99999999999999w")


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNIT_SECONDS)))
def test_number_and_unit_round_trip(n: int, unit: str) -> None:
    assert parse_duration(f"{n}{unit}") == timedelta(seconds=n * UNIT_SECONDS[unit])


@given(st.lists(st.tuples(st.integers(0, 1000), st.sampled_from(sorted(UNIT_SECONDS))), min_size=1))
def test_compound_durations_add_up(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    expected = sum(n * UNIT_SECONDS[unit] for n, unit in parts)
    assert parse_duration(text).total_seconds() == expected


@given(st.text(max_size=12))
def test_any_text_parses_or_is_a_usage_error(text: str) -> None:
    try:
        parsed = parse_duration(text)
    except UsageError:
        assert not re.fullmatch(r"([0-9]+[smhdw])+", text.strip())
    else:
        assert parsed >= timedelta(0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("30 s", 30.0),
        ("1.5m", 90.0),
        (".5s", 0.5),
        ("2.", 2.0),
        ("45", 45.0),
        (" 1h ", 3600.0),
    ],
)
def test_workflow_dialect_reads_fractions_spaces_bare_seconds(text: str, seconds: float) -> None:
    assert WORKFLOW_SYNTAX.seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "7d", "1h30m", "-1s", "1e3", "1 h 2", "s"])
def test_workflow_dialect_refuses_what_it_does_not_know(text: str) -> None:
    assert WORKFLOW_SYNTAX.seconds(text) is None


@pytest.mark.parametrize("text", ["7", "1.5h", "500ms", "30 s"])
def test_what_a_workflow_accepts_is_not_always_an_age(text: str) -> None:
    assert WORKFLOW_SYNTAX.seconds(text) is not None
    assert AGE_SYNTAX.seconds(text) is None


def test_a_compound_dialect_cannot_have_bare_numbers() -> None:
    with pytest.raises(ValueError):
        DurationSyntax({"s": 1}, compound=True, bare_seconds=True)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (59, "59s"),
        (60, "1m"),
        (3599, "59m"),
        (3600, "1h"),
        (3660, "1h 1m"),
        (86400, "1d"),
        (8 * 86400 + 7200, "8d 2h"),
        (-5, "0s"),
    ],
)
def test_format_duration(seconds: int, shown: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == shown
