"""The `map.filter:` language: syntax errors with columns, and never-raising semantics."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prodigy.errors import InputError
from prodigy.item_filter import (
    FilterSyntaxError,
    compile_filter,
    field_getter,
    json_equal,
    parse_field_path,
)


def keep(text: str, item: Any) -> bool:
    return compile_filter(text).matches(item)


# ---- syntax errors -------------------------------------------------------------------------------


def test_error_message_names_filter_and_one_based_column() -> None:
    with pytest.raises(InputError) as caught:
        compile_filter("size >> 100")
    assert str(caught.value) == "filter 'size >> 100' is invalid at column 7: expected a value"
    assert isinstance(caught.value, FilterSyntaxError)
    assert caught.value.column == 7


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("", 1, "expected a value"),
        ("a ==", 5, "expected a value"),
        ("a = 1", 3, "'=='"),
        ("(a or b", 8, "expected ')'"),
        ("a AND b", 3, "keywords are lowercase"),
        ("a b", 3, "expected 'and', 'or'"),
        ("name == 'abc", 9, "unterminated string"),
        ("size > 10kb", 8, "'10kb' is not a number"),
        ("path matches '('", 14, "invalid regular expression"),
        ("path matches 3", 14, "regular expression in quotes"),
        ("tag in ['x' 'y']", 13, "expected ',' or ']'"),
        ("a.", 3, "field name after '.'"),
        ("a[x]", 3, "index like [0]"),
        ("a & b", 3, "'&&'"),
        ("a @ b", 3, "unexpected character '@'"),
        ("and", 1, "expected a value"),
        ("not", 4, "expected a value"),
    ],
)
def test_syntax_errors_point_at_the_column(text: str, column: int, words: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        compile_filter(text)
    assert caught.value.column == column
    assert words in caught.value.message
    assert caught.value.message.startswith(f"filter '{text}' is invalid at column {column}: ")


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(FilterSyntaxError, match="nested too deeply"):
        compile_filter("(" * 5000 + "a" + ")" * 5000)


# Found by fuzzing (tests/fuzz): re.compile refuses these with OverflowError and RecursionError,
# not re.error, so they escaped compile_filter, and `matches` with the pattern in the item raised.
HUGE_REPEAT = "a{4294967296}"
DEEP_GROUPS = "(" * 1500 + ")" * 1500


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [(HUGE_REPEAT, "repetition number is too large"), (DEEP_GROUPS, "nested too deeply")],
)
def test_regex_beyond_re_limits_is_a_syntax_error(pattern: str, reason: str) -> None:
    with pytest.raises(FilterSyntaxError, match=reason) as caught:
        compile_filter(f"path matches '{pattern}'")
    assert caught.value.column == 14
    assert "invalid regular expression" in caught.value.reason


@pytest.mark.parametrize("pattern", [HUGE_REPEAT, DEEP_GROUPS])
def test_regex_beyond_re_limits_in_the_item_does_not_match(pattern: str) -> None:
    assert not keep("path matches pattern", {"path": "a", "pattern": pattern})


# ---- semantics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "item", "expected"),
    [
        ("size > 100", {"size": 101}, True),
        ("size > 100", {"size": 100}, False),
        ("size >= 100", {"size": 100}, True),
        ("size < 1.5", {"size": 1}, True),
        ("size <= -2", {"size": -2.0}, True),
        ("size > 100", {}, False),
        ("size > 100", {"size": None}, False),
        ("size > 100", {"size": "200"}, False),
        ("size < 100", {"size": "2"}, False),
        ("size > 0", {"size": True}, False),
        ("name < 'b'", {"name": "abc"}, True),
        ("name > 'b'", {"name": "abc"}, False),
        ("size == 1", {"size": 1.0}, True),
        ("size == 1", {"size": True}, False),
        ("flag == true", {"flag": True}, True),
        ("flag == true", {"flag": 1}, False),
        ("size == '1'", {"size": 1}, False),
        ("size != '1'", {"size": 1}, True),
        ("missing == null", {}, True),
        ("missing != null", {}, False),
        ("missing != 'x'", {}, True),
        ("tags == ['a', 1]", {"tags": ["a", 1.0]}, True),
        ("tags == ['a', 1]", {"tags": ["a", 1, 2]}, False),
        ("a.b.c == 3", {"a": {"b": {"c": 3}}}, True),
        ("a.b.c == 3", {"a": {"b": 3}}, False),
        ("list[0] == 'x'", {"list": ["x", "y"]}, True),
        ("list[-1] == 'y'", {"list": ["x", "y"]}, True),
        ("list[5] == null", {"list": ["x", "y"]}, True),
        ("a['odd key'].b == 1", {"odd key": {"b": 1}}, False),
        ("x['odd key'] == 1", {"x": {"odd key": 1}}, True),
        ("file-name == 'a'", {"file-name": "a"}, True),
        ("meta.not == 1", {"meta": {"not": 1}}, True),
    ],
)
def test_comparisons(text: str, item: Any, expected: bool) -> None:
    assert keep(text, item) is expected


def test_thirty_digit_integers_compare_exactly() -> None:
    big = 123456789012345678901234567890
    assert keep("id == 123456789012345678901234567890", {"id": big})
    assert not keep("id == 123456789012345678901234567891", {"id": big})
    assert keep("id > 123456789012345678901234567889", {"id": big})
    # Rounded to a float it is another number; comparing through floats would call them equal.
    assert not keep("id == 123456789012345678901234567890", {"id": float(big)})
    assert not keep("id > 123456789012345678901234567890", {"id": big})


@pytest.mark.parametrize(
    ("text", "item", "expected"),
    [
        ("archived", {"archived": True}, True),
        ("archived", {"archived": False}, False),
        ("archived", {}, False),
        ("not archived", {}, True),
        ("!archived", {"archived": 0}, True),
        ("name", {"name": ""}, False),
        ("tags", {"tags": []}, False),
        ("tags", {"tags": [0]}, True),
        ("meta", {"meta": {}}, False),
        ("count", {"count": 0.0}, False),
    ],
)
def test_bare_fields_are_truth_tested(text: str, item: Any, expected: bool) -> None:
    assert keep(text, item) is expected


def test_precedence_not_binds_tighter_than_and_tighter_than_or() -> None:
    # a or b and c == a or (b and c)
    assert keep("a or b and c", {"a": True, "b": False, "c": False})
    assert not keep("(a or b) and c", {"a": True, "b": False, "c": False})
    # not a and b == (not a) and b
    assert keep("not a and b", {"a": False, "b": True})
    assert not keep("not (a and b)", {"a": True, "b": True})
    assert keep("not a == 1", {"a": 2})
    assert keep("a || b && c", {"a": True, "b": False, "c": False})
    assert keep("! a && b", {"a": False, "b": True})


def test_example_from_the_brief() -> None:
    text = "(a < 1 or b.c != \"x\") and tag in ['x', 'y']"
    assert keep(text, {"a": 0, "b": {"c": "x"}, "tag": "y"})
    assert keep(text, {"a": 5, "b": {"c": "z"}, "tag": "x"})
    assert not keep(text, {"a": 5, "b": {"c": "x"}, "tag": "x"})
    assert not keep(text, {"a": 0, "tag": "z"})
    assert keep("priority >= 3 and status == 'open'", {"priority": 3, "status": "open"})


@pytest.mark.parametrize(
    ("text", "item", "expected"),
    [
        ("tag in ['x', 'y']", {"tag": "y"}, True),
        ("tag in ['x', 'y']", {"tag": "z"}, False),
        ("tag in ['x', 'y']", {}, False),
        ("tag not in ['x', 'y']", {"tag": "z"}, True),
        ("tag not in ['x', 'y']", {"tag": "x"}, False),
        ("n in [1, 2]", {"n": 2.0}, True),
        ("n in [1, 2]", {"n": True}, False),
        ("n in []", {"n": 1}, False),
        ("'a' in tags", {"tags": ["a", "b"]}, True),
        ("'sub' in name", {"name": "a substring"}, True),
        ("'k' in meta", {"meta": {"k": 1}}, True),
        ("name contains 'test'", {"name": "my_test.py"}, True),
        ("name contains 'test'", {"name": "main.py"}, False),
        ("tags contains 'a'", {"tags": ["a"]}, True),
        ("tags contains 1", {"tags": [1.0]}, True),
        ("name contains 'x'", {"name": 5}, False),
        ("name contains 'x'", {}, False),
        ("path matches '^src/'", {"path": "src/a.py"}, True),
        ("path matches '^src/'", {"path": "lib/src/a.py"}, False),
        ("path matches 'src/'", {"path": "lib/src/a.py"}, True),
        ("path matches '\\.py$'", {"path": "a.py"}, True),
        ("path matches '\\d+'", {"path": "v12"}, True),
        ("path matches 'x'", {"path": 12}, False),
        ("path matches pattern", {"path": "abc", "pattern": "^a"}, True),
        ("path matches pattern", {"path": "abc", "pattern": "("}, False),
        ("a == b", {"a": [1], "b": [1.0]}, True),
    ],
)
def test_in_contains_matches(text: str, item: Any, expected: bool) -> None:
    assert keep(text, item) is expected


def test_string_escapes_and_both_quotes() -> None:
    assert keep('name == "it\'s"', {"name": "it's"})
    assert keep("name == 'say \"hi\"'", {"name": 'say "hi"'})
    assert keep("name == 'a\\nb'", {"name": "a\nb"})
    assert keep("name == 'back\\\\slash'", {"name": "back\\slash"})


def test_literals() -> None:
    assert keep("x == 1e3", {"x": 1000})
    assert keep("x == -0.5", {"x": -0.5})
    assert keep("x == null", {"x": None})
    assert keep("x == false", {"x": False})
    assert keep("x == [[1], 'a']", {"x": [[1], "a"]})


@pytest.mark.parametrize("item", [None, 3, "size", [1, 2], True])
def test_items_that_are_not_objects_have_no_fields(item: Any) -> None:
    assert not keep("size > 1", item)
    assert keep("size == null", item)
    assert keep("not size", item)


def test_filter_is_immutable_and_compared_by_text() -> None:
    expr = compile_filter("a > 1")
    assert expr == compile_filter("a > 1")
    assert "a > 1" in repr(expr)
    with pytest.raises(AttributeError):
        expr.text = "b"  # type: ignore[misc]


# ---- field paths ---------------------------------------------------------------------------------


def test_parse_field_path() -> None:
    assert parse_field_path("a") == ("a",)
    assert parse_field_path("a.b[0]['c d']") == ("a", "b", 0, "c d")
    assert parse_field_path("null") == ("null",)
    for bad in ["", "a.", "a b", "1a", "a[x]"]:
        with pytest.raises(ValueError):
            parse_field_path(bad)


def test_field_getter() -> None:
    item = {"a": {"b": [10, {"c": "x"}]}}
    assert field_getter(("a", "b", 1, "c"))(item) == "x"
    assert field_getter(("a", "b", 2))(item) is None
    assert field_getter(("a", "z"))(item) is None
    assert field_getter(("a",))("not a dict") is None


# ---- properties ----------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)
FILTERS = [
    "x > 1",
    "x <= 'm'",
    "x == 1",
    "x != null",
    "x",
    "x.y[0] > 0",
    "x in [1, 'a', null]",
    "x contains 'a'",
    "x matches 'a'",
    "not x or x.y and x[0] < 3",
]


@given(item=json_values, text=st.sampled_from(FILTERS))
def test_filters_never_raise_and_not_inverts(item: Any, text: str) -> None:
    result = compile_filter(text).matches(item)
    assert isinstance(result, bool)
    assert compile_filter(f"not ({text})").matches(item) is (not result)


@given(x=st.integers() | st.floats(allow_nan=False, allow_infinity=False), y=st.integers())
def test_numeric_comparisons_agree_with_python(x: float, y: int) -> None:
    item = {"x": x}
    assert keep(f"x < {y}", item) is (x < y)
    assert keep(f"x >= {y}", item) is (x >= y)
    assert keep(f"x == {y}", item) is (x == y)


@given(value=json_values)
def test_json_equal_is_reflexive(value: Any) -> None:
    assert json_equal(value, value)
