"""Fuzzing both duration dialects: any text is a duration or None (workflow) / a UsageError
(`--older-than`), never another exception."""

from __future__ import annotations

import math
from datetime import timedelta

from fuzzing import assert_clear_error, fuzz, user_text
from hypothesis import given
from hypothesis import strategies as st

from prodigy.durations import WORKFLOW_SYNTAX, parse_duration
from prodigy.errors import UsageError

digits = st.one_of(
    st.text(st.characters(categories=["Nd"]), min_size=1, max_size=6),
    st.text("0123456789", min_size=1, max_size=400),
    # Past int()'s 4300-digit limit for decimal strings.
    st.integers(4290, 4400).map(lambda n: "9" * n),
)
spaces = st.sampled_from(["", " ", "  ", "\t", "\n", "\u3000"])
workflow_units = st.sampled_from(["", "ms", "s", "m", "h", "d", "M", "sec", "µs"])
age_units = st.sampled_from(["s", "m", "h", "d", "w", "", "ms", "y", "W"])


@st.composite
def workflow_durations(draw: st.DrawFn) -> str:
    number = draw(digits)
    if draw(st.booleans()):
        number += "." + draw(st.text("0123456789", max_size=4))
    if draw(st.booleans()):
        number = draw(st.sampled_from(["-", "+", "."])) + number
    return draw(spaces) + number + draw(spaces) + draw(workflow_units) + draw(spaces)


@st.composite
def age_durations(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(digits, spaces, age_units), min_size=1, max_size=4))
    return draw(spaces) + "".join(n + g + u for n, g, u in parts) + draw(spaces)


@fuzz(300)
@given(st.one_of(user_text, workflow_durations()))
def test_workflow_dialect_is_seconds_or_none(text: str) -> None:
    seconds = WORKFLOW_SYNTAX.seconds(text)
    assert seconds is None or (isinstance(seconds, float | int) and not math.isnan(seconds))
    assert seconds is None or seconds >= 0


@fuzz(300)
@given(st.one_of(user_text, age_durations()))
def test_age_dialect_is_a_timedelta_or_a_usage_error(text: str) -> None:
    try:
        delta = parse_duration(text)
    except Exception as exc:
        assert_clear_error(exc, UsageError)
    else:
        assert isinstance(delta, timedelta)
        assert delta >= timedelta(0)
