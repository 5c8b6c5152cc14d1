"""What the fuzz tests share: the hypothesis profile, JSON and text strategies, and the one
property every target has: a result, or one clear error.

The `fuzz` profile keeps CI bounded (`fuzz(n)` is n examples, no deadline). For a deeper run,
multiply every target's examples (and lift pytest's 60 s limit per test):

    PRODIGY_FUZZ_SCALE=20 .venv/bin/pytest tests/fuzz -n 2 --timeout 0
"""

from __future__ import annotations

import os
import string

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from prodigy.errors import ProdigyError

settings.register_profile(
    "fuzz",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
_SCALE = max(1, int(os.environ.get("PRODIGY_FUZZ_SCALE", "1")))


def fuzz(examples: int) -> settings:
    """The fuzz profile with `examples` examples (times PRODIGY_FUZZ_SCALE)."""
    return settings(settings.get_profile("fuzz"), max_examples=examples * _SCALE)


def assert_clear_error(exc: BaseException, *kinds: type[ProdigyError]) -> None:
    """`exc` is one of `kinds` (a ProdigyError) whose message is one non-empty line."""
    assert isinstance(exc, kinds or (ProdigyError,)), f"{type(exc).__name__}: {exc}"
    assert isinstance(exc, ProdigyError)
    for text in (exc.message, exc.hint):
        if text is None:
            continue
        assert text.strip(), f"empty message from {type(exc).__name__}"
        assert len(text.splitlines()) == 1, f"message is not one line: {text!r}"


# ---- values ----------------------------------------------------------------------------------

# Text a user might type: mostly printable ASCII, with some of everything else.
user_text = st.one_of(
    st.text(string.printable, max_size=40),
    st.text(max_size=40),
)

# JSON as msgspec decodes it: big integers stay ints, floats are finite (JSON has no NaN).
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    user_text,
)
json_keys = st.one_of(
    st.sampled_from(["a", "b", "name", "size", "id", "tags", "path", "priority", "x-y", ""]),
    user_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(json_keys, children, max_size=5),
    ),
    max_leaves=25,
)
json_objects = st.dictionaries(json_keys, json_values, max_size=6)
