"""Fuzzing the filter language: any text compiles or is a FilterSyntaxError naming a column, and
a compiled filter answers True or False for any JSON item, never raising."""

from __future__ import annotations

from typing import Any

from fuzzing import assert_clear_error, fuzz, json_values, user_text
from hypothesis import example, given
from hypothesis import strategies as st

from prodigy.item_filter import FilterSyntaxError, compile_filter

FIELDS = ["a", "b", "name", "size", "tags", "path", "priority", "pattern", "x-y", "AND", "Not"]
# Regular expressions, good and bad, for `matches` written in the filter or held by the item.
# (Deeply nested groups are built by `nested_groups`, so that reprs stay short.)
REGEXES = [
    "",
    "a+",
    r"\d+",
    "^src/.*\\.py$",
    "(",
    "[a-",
    "a{2,1}",
    "a{4294967296}",
    "(?P<x>a)(?P<x>b)",
    "(?<=a+)b",
    "\\",
    "(?i",
]

nested_groups = st.integers(50, 1500).map(lambda n: "(" * n + ")" * n)
regexes = st.one_of(st.sampled_from(REGEXES), nested_groups)
field_paths = st.builds(
    lambda head, rest: head + "".join(rest),
    st.sampled_from(FIELDS),
    st.lists(
        st.one_of(
            st.sampled_from(FIELDS).map(lambda f: "." + f),
            st.integers(-3, 3).map(lambda i: f"[{i}]"),
            st.sampled_from(FIELDS).map(lambda f: f"['{f}']"),
            st.sampled_from([".", "[", "[x]", "[1.5]", "]", "[0"]),
        ),
        max_size=3,
    ),
)
numbers = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e5", "1e+5", "-0", "10kb", "1.", ".5", "1e", "1_000", "٣", "0x10"]),
    # Past int()'s 4300-digit limit for decimal strings.
    st.integers(4290, 4400).map(lambda n: "7" * n),
)


def quoted(text: str) -> str:
    quote = "'" if "'" not in text or '"' in text else '"'
    return quote + text.replace("\\", "\\\\") + quote


strings = st.one_of(
    user_text.map(quoted),
    regexes.map(quoted),
    st.sampled_from(["'unterminated", "'a\\'b'", '"tab\\t"', "'\\d+'", "''"]),
)
literals = st.one_of(numbers, strings, st.sampled_from(["true", "false", "null", "True", "NULL"]))
lists = st.lists(literals, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]")
operands = st.one_of(field_paths, literals, lists)
comparisons = st.one_of(
    operands,
    st.builds(
        lambda a, op, b: f"{a} {op} {b}",
        operands,
        st.sampled_from(
            ["==", "!=", ">", ">=", "<", "<=", "in", "not in", "contains", "=", "<>", "IN"]
        ),
        operands,
    ),
    st.builds(
        lambda a, b: f"{a} matches {b}",
        field_paths,
        st.one_of(regexes.map(quoted), field_paths, numbers),
    ),
)


def _expressions(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(
            lambda a, op, b: f"{a} {op} {b}",
            children,
            st.sampled_from(["and", "or", "&&", "||", "&", "AND"]),
            children,
        ),
        children.map(lambda e: f"not {e}"),
        children.map(lambda e: f"!{e}"),
        children.map(lambda e: f"({e})"),
    )


expressions = st.recursive(comparisons, _expressions, max_leaves=8)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A near-valid text with a few characters inserted, deleted or replaced."""
    text = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from([*"()[]'\".,=!<>&| \n\\", "\x00", "é", "and"]))
        if action == "insert":
            text = text[:at] + char + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + char + text[at + 1 :]
    return text


filter_texts = st.one_of(user_text, expressions, mutated(expressions))
items = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(FIELDS),
        st.one_of(json_values, regexes, st.lists(regexes, max_size=3)),
        max_size=5,
    ),
)


def compiled_or_error(text: str) -> Any:
    try:
        return compile_filter(text)
    except Exception as exc:
        assert_clear_error(exc, FilterSyntaxError)
        assert isinstance(exc, FilterSyntaxError)
        assert 1 <= exc.column <= len(text) + 1
        return None


@fuzz(400)
@given(filter_texts)
# Found by fuzzing: the filter was quoted with its line breaks, so the error was two lines.
@example("\r")
@example("size >\n10kb")
# Found by fuzzing: int() refused the number with a ValueError.
@example("7" * 4301)
def test_any_text_compiles_or_is_a_syntax_error(text: str) -> None:
    compiled_or_error(text)


@fuzz(300)
@given(filter_texts, st.lists(items, max_size=4))
def test_a_compiled_filter_answers_for_any_item(text: str, values: list[Any]) -> None:
    expr = compiled_or_error(text)
    if expr is None:
        return
    for value in values:
        assert expr.matches(value) in (True, False)
