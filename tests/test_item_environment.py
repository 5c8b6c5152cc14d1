"""The PRODIGY_* variables of an agent attempt: one per item field, and what cannot be passed."""

from __future__ import annotations

import errno
import re
import subprocess
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prodigy.errors import UnusableValue
from prodigy.interpolate import to_text
from prodigy.item_environment import (
    ENV_STRING_LIMIT,
    check_passable,
    field_variable,
    field_variables,
    prodigy_variables,
)


def test_field_names() -> None:
    assert field_variable("path") == "PRODIGY_ITEM_PATH"
    assert field_variable("file-name") == "PRODIGY_ITEM_FILE_NAME"
    assert field_variable("a.b c") == "PRODIGY_ITEM_A_B_C"
    assert field_variable("_private") == "PRODIGY_ITEM__PRIVATE"
    assert field_variable("größe") == "PRODIGY_ITEM_GR__E"  # not GRÖSSE: ASCII names only
    for no_name in ("", "2nd", "9"):
        assert field_variable(no_name) is None


def test_values_strings_raw_others_json() -> None:
    data = {"path": "a b.txt", "n": 12345678901234567890, "ok": True, "none": None, "tags": ["x"]}
    assert field_variables(data) == {
        "PRODIGY_ITEM_PATH": "a b.txt",
        "PRODIGY_ITEM_N": "12345678901234567890",
        "PRODIGY_ITEM_OK": "true",
        "PRODIGY_ITEM_NONE": "null",
        "PRODIGY_ITEM_TAGS": '["x"]',
    }


def test_colliding_fields_give_neither_and_reserved_names_keep_their_meaning() -> None:
    data = {"file-name": "a", "file_name": "b", "Path": "c", "path": "d", "id": "e", "index": 1}
    assert field_variables({**data, "other": "f"}) == {"PRODIGY_ITEM_OTHER": "f"}
    env = prodigy_variables("job", "item_3", 3, 1, data)
    assert env["PRODIGY_ITEM_ID"] == "item_3" and env["PRODIGY_ITEM_INDEX"] == "3"
    assert "PRODIGY_ITEM_FILE_NAME" not in env and "PRODIGY_ITEM_PATH" not in env


@pytest.mark.parametrize(
    ("data", "value"), [("text", "text"), (42, "42"), (None, "null"), ([1, "a"], '[1,"a"]')]
)
def test_an_item_that_is_not_an_object_is_one_value(data: Any, value: str) -> None:
    assert field_variables(data) == {"PRODIGY_ITEM_VALUE": value}
    assert prodigy_variables("job", "item_0", 0, 1, data)["PRODIGY_ITEM_VALUE"] == value


def test_a_field_named_value_is_a_field() -> None:
    assert field_variables({"value": 1}) == {"PRODIGY_ITEM_VALUE": "1"}


def test_every_prodigy_variable() -> None:
    assert prodigy_variables("job-1", "item_4", 4, 2, {"name": "x"}) == {
        "PRODIGY_JOB_ID": "job-1",
        "PRODIGY_ITEM_ID": "item_4",
        "PRODIGY_ITEM_INDEX": "4",
        "PRODIGY_ATTEMPT": "2",
        "PRODIGY_ITEM": '{"name":"x"}',
        "PRODIGY_ITEM_NAME": "x",
    }


def test_nul_fails_naming_the_field() -> None:
    with pytest.raises(
        UnusableValue,
        match=r"^item field 'bad key' contains a NUL character, which no environment variable "
        r"\(PRODIGY_ITEM_BAD_KEY\) can hold; remove NUL characters from the input$",
    ):
        prodigy_variables("job", "item_0", 0, 1, {"ok": "fine", "bad key": "a\0b"})
    with pytest.raises(UnusableValue, match=r"^the item contains a NUL character"):
        prodigy_variables("job", "item_0", 0, 1, "a\0b")
    # Nested, a NUL is a JSON escape in the field's variable and in PRODIGY_ITEM: no problem.
    assert prodigy_variables("job", "i", 0, 1, {"a": ["\0"]})["PRODIGY_ITEM_A"] == '["\\u0000"]'


def test_a_value_too_large_for_the_environment_fails_naming_the_field() -> None:
    body = "x" * ENV_STRING_LIMIT
    with pytest.raises(
        UnusableValue,
        match=r"^item field 'body' is too large for the environment variable PRODIGY_ITEM_BODY "
        rf"\({ENV_STRING_LIMIT + 19} bytes; Linux allows {ENV_STRING_LIMIT} per variable\); keep "
        "large data in files",
    ):
        prodigy_variables("job", "item_0", 0, 1, {"small": "y", "body": body})


def test_the_limit_is_the_one_the_kernel_applies() -> None:
    """`NAME=value` plus its NUL at the limit starts a program; one byte more does not."""
    name = "PRODIGY_ITEM_X"
    fits = "é" * ((ENV_STRING_LIMIT - len(name) - 2) // 2)
    fits += "x" * (ENV_STRING_LIMIT - len(name) - 2 - len(fits.encode()))
    check_passable({name: fits}, {})
    done = subprocess.run(["printenv", name], env={name: fits}, capture_output=True, check=True)
    assert done.stdout == fits.encode() + b"\n"
    too_big = fits + "x"
    with pytest.raises(UnusableValue):
        check_passable({name: too_big}, {})
    with pytest.raises(OSError) as refused:
        subprocess.run(["printenv", name], env={name: too_big}, check=False)
    assert refused.value.errno == errno.E2BIG


keys = st.text(st.sampled_from("aAbB_-. 1é"), max_size=4)
values = st.one_of(
    st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))),
    st.integers(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@given(st.dictionaries(keys, values, max_size=6))
def test_every_unambiguous_field_is_exported_exactly(data: dict[str, Any]) -> None:
    env = field_variables(data)
    names = [field_variable(key) for key in data]
    reserved = {"PRODIGY_ITEM_ID", "PRODIGY_ITEM_INDEX"}
    assert env == {
        name: to_text(data[key])
        for key, name in zip(data, names, strict=True)
        if name is not None and names.count(name) == 1 and name not in reserved
    }
    assert all(re.fullmatch(r"PRODIGY_ITEM_[A-Z_][A-Z0-9_]*", name) for name in env)
