"""Fuzzing `${...}` rendering: any template with any variables renders to text or raises
MissingVariable with a one-line message, never another exception."""

from __future__ import annotations

from typing import Any

from fuzzing import assert_clear_error, fuzz, json_values, user_text
from hypothesis import example, given
from hypothesis import strategies as st

from prodigy.errors import MissingVariable
from prodigy.interpolate import referenced_names, render, split_name

ROOTS = ["item", "map", "job_id", "env_var", "x", "HOME", "PATH", "_a1"]
segments = st.one_of(
    st.sampled_from(["a", "b", "0", "1", "list", "file-name", "²", "٣", "-1", ""]).map(
        lambda s: "." + s
    ),
    st.integers(0, 5).map(lambda i: f"[{i}]"),
    st.sampled_from(["[-1]", "[x]", "[", "]", "[²]", " ", "\n", ".a b", "[99999999999999]"]),
    st.integers(4290, 4400).map(lambda n: f"[{'1' * n}]"),
)
names = st.one_of(
    user_text,
    st.builds(lambda root, path: root + "".join(path), st.sampled_from(ROOTS), st.lists(segments)),
)
pieces = st.one_of(
    user_text,
    names.map(lambda n: "${" + n + "}"),
    names.map(lambda n: "$${" + n + "}"),
    st.sampled_from(["$", "${", "}", "$$", "$HOME", "${}", "${${x}}", "{", "$${"]),
)
templates = st.lists(pieces, max_size=6).map("".join)
variables = st.dictionaries(
    st.one_of(st.sampled_from(ROOTS), user_text),
    st.one_of(
        json_values,
        st.dictionaries(st.sampled_from(["a", "b", "0", "list", "file-name"]), json_values),
        st.lists(json_values, max_size=4),
    ),
    max_size=5,
)


@st.composite
def resolvable(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A reference and variables shaped along its path, so resolution goes deep before it
    finds (or misses) the value."""
    root = draw(st.sampled_from(ROOTS))
    path = draw(st.lists(segments, max_size=4))
    value: Any = draw(json_values)
    for segment in reversed(path):
        key = segment.removeprefix(".").strip("[]")
        if draw(st.booleans()):
            value = {key: value}
        else:
            value = [*draw(st.lists(json_values, max_size=3)), value]
    return "${" + root + "".join(path) + "}", {root: value}


@fuzz(300)
@given(resolvable())
# Found by fuzzing: `²` passed str.isdigit() as a list index, and int() refused it.
@example(("${item.²}", {"item": [None]}))
@example(("${item.list." + "1" * 5000 + "}", {"item": {"list": []}}))
@example(("${item.list[" + "1" * 5000 + "]}", {"item": {"list": []}}))
def test_render_follows_any_path_or_says_what_is_missing(case: tuple[str, Any]) -> None:
    template, values = case
    try:
        rendered = render(template, values)
    except Exception as exc:
        assert_clear_error(exc, MissingVariable)
    else:
        assert isinstance(rendered, str)


@fuzz(400)
@given(templates, variables)
# Found by fuzzing: a reference spanning lines was quoted with its line break.
@example("${A\r}", {})
def test_render_gives_text_or_a_missing_variable(template: str, values: dict[str, Any]) -> None:
    try:
        rendered = render(template, values)
    except Exception as exc:
        assert_clear_error(exc, MissingVariable)
    else:
        assert isinstance(rendered, str)
        if not referenced_names(template):
            assert rendered == template.replace("$${", "${")


@fuzz(300)
@given(names)
def test_split_name_gives_a_path_or_a_value_error(name: str) -> None:
    try:
        root, path = split_name(name)
    except ValueError as exc:
        assert str(exc)
    else:
        assert root and all(isinstance(part, str | int) for part in path)
