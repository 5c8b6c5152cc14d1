"""Tests for `${...}` interpolation: names found, values rendered, missing values refused."""

from __future__ import annotations

import subprocess
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from prodigy.errors import MissingVariable, UnusableValue
from prodigy.interpolate import (
    Reference,
    parse_reference,
    referenced_names,
    render,
    split_name,
    to_text,
)

ITEM = {"path": "src/a.py", "size": 120, "meta": {"owner": "ann"}, "list": ["x", "y"]}


def test_referenced_names_in_order() -> None:
    template = "a ${item.path} b ${item.list[0]} ${map.results} ${REPORT_DIR} ${item.path}"
    assert referenced_names(template) == [
        "item.path",
        "item.list[0]",
        "map.results",
        "REPORT_DIR",
        "item.path",
    ]


def test_referenced_names_skips_escapes_and_bare_dollars() -> None:
    assert referenced_names("$${x} $HOME $$ ${y} $$${z}") == ["y"]


def test_split_name() -> None:
    assert split_name("item") == ("item", ())
    assert split_name("item.a.b") == ("item", ("a", "b"))
    assert split_name("item.list[0].name") == ("item", ("list", 0, "name"))
    assert split_name("map.results") == ("map", ("results",))
    assert split_name("item.file-name") == ("item", ("file-name",))
    for bad in ("", "1x", "item.", "item..a", "x:-y", "item[a]", "a b"):
        with pytest.raises(ValueError, match="not a valid variable reference"):
            split_name(bad)


def test_render_item_fields() -> None:
    variables = {"item": ITEM, "item_index": 3}
    assert render("check '${item.path}'", variables) == "check 'src/a.py'"
    assert render("${item.meta.owner}/${item.list[1]}/${item.list.0}", variables) == "ann/y/x"
    assert render("#${item_index} ${item.size}", variables) == "#3 120"


def test_render_whole_item() -> None:
    assert render("${item}", {"item": {"a": 1, "b": [True, None]}}) == '{"a":1,"b":[true,null]}'
    assert render("${item}", {"item": "plain string"}) == "plain string"
    assert render("${item}", {"item": 42}) == "42"


def test_to_text_formats() -> None:
    assert to_text("raw 'quoted'") == "raw 'quoted'"
    assert to_text(True) == "true"
    assert to_text(False) == "false"
    assert to_text(None) == "null"
    assert to_text(7) == "7"
    assert to_text(1.5) == "1.5"
    assert to_text([1, "a", {"k": None}]) == '[1,"a",{"k":null}]'


def test_big_int_exact_inside_json() -> None:
    big = 123456789012345678901234567890
    assert to_text(big) == "123456789012345678901234567890"
    assert to_text({"id": big}) == '{"id":123456789012345678901234567890}'


def test_escape_renders_literal() -> None:
    assert render("echo $${item.path} ${x}", {"x": "1"}) == "echo ${item.path} 1"
    assert render("echo $$ $HOME", {}) == "echo $$ $HOME"


def test_variables_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODIGY_TEST_VAR", "from-env")
    assert render("${PRODIGY_TEST_VAR}", {}) == "from-env"
    assert render("${PRODIGY_TEST_VAR}", {"PRODIGY_TEST_VAR": "mine"}) == "mine"


def test_environment_fallback_only_without_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODIGY_TEST_VAR", "x")
    with pytest.raises(MissingVariable):
        render("${PRODIGY_TEST_VAR.a}", {})


def test_missing_item_field_message() -> None:
    with pytest.raises(MissingVariable) as caught:
        render("cat ${item.path}", {"item": {"name": "a"}})
    assert caught.value.name == "item.path"
    assert caught.value.message == (
        "item field 'path' is missing from this item (variable ${item.path})"
    )


def test_missing_nested_and_index() -> None:
    with pytest.raises(MissingVariable, match=r"item field 'meta\.team' is missing"):
        render("${item.meta.team}", {"item": ITEM})
    with pytest.raises(MissingVariable, match=r"item field 'list\[5\]' is missing"):
        render("${item.list[5]}", {"item": ITEM})
    with pytest.raises(MissingVariable, match="item field 'path' is missing"):
        render("${item.path}", {"item": "a string item"})


def test_missing_root_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_DEFINED_ANYWHERE", raising=False)
    with pytest.raises(MissingVariable) as caught:
        render("${NOT_DEFINED_ANYWHERE}", {})
    assert caught.value.message == "variable ${NOT_DEFINED_ANYWHERE} is not defined"
    with pytest.raises(MissingVariable, match=r"variable \$\{map\.nope\} is not defined"):
        render("${map.nope}", {"map": {"total": 1}})


def test_invalid_reference_raises() -> None:
    with pytest.raises(MissingVariable, match="not a valid variable reference"):
        render("${a b}", {"a": 1})


@given(st.text().filter(lambda s: "$" not in s))
def test_render_without_dollar_is_identity(text: str) -> None:
    assert render(text, {}) == text


@given(st.text(alphabet=st.sampled_from("ab${}. \n")))
def test_escaped_text_round_trips(text: str) -> None:
    escaped = text.replace("${", "$${")
    assert referenced_names(escaped) == []
    assert render(escaped, {}) == text


@given(st.integers())
def test_ints_render_exactly(number: int) -> None:
    assert render("n=${n}", {"n": number}) == f"n={number}"
    assert render("${item.id}", {"item": {"id": number}}) == str(number)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_structured_values_render_as_json(value: Any) -> None:
    if isinstance(value, dict | list):
        assert msgspec.json.decode(render("${v}", {"v": value})) == value


names = st.from_regex(
    r"[A-Za-z_][A-Za-z0-9_]{0,8}(\.[a-z]{1,5}|\[[0-9]{1,2}\]){0,3}", fullmatch=True
)


@given(st.lists(st.tuples(st.text(alphabet="ab {}\n"), names), max_size=5))
def test_referenced_names_finds_every_reference(parts: list[tuple[str, str]]) -> None:
    template = "".join(f"{text}${{{name}}}" for text, name in parts)
    assert referenced_names(template) == [name for _, name in parts]
    for _, name in parts:
        root, _ = split_name(name)
        assert name.startswith(root)


# ---- ${sh:name}: the value as one shell word ------------------------------------------------


def test_parse_reference_forms() -> None:
    assert parse_reference("item.path") == Reference(None, "item", ("path",))
    assert parse_reference("sh:item.list[0]") == Reference("sh", "item", ("list", 0))
    assert parse_reference("sh:HOME") == Reference("sh", "HOME", ())
    # A colon inside a field name is the field's (`ns:key`), in either form.
    assert parse_reference("item.ns:key") == Reference(None, "item", ("ns:key",))
    assert parse_reference("sh:item.ns:key") == Reference("sh", "item", ("ns:key",))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sh:", r"\$\{sh:\} names no variable \(write one after 'sh:', as in \$\{sh:item"),
        ("env:X", r"\$\{env:X\} is not a valid variable reference \(the only prefixed form is"),
        ("HOME:-/tmp", r"\$\{HOME:-/tmp\} is not a valid variable reference"),
        (":x", r"\$\{:x\} is not a valid variable reference"),
        ("sh:item.", r"\$\{item\.\} is not a valid variable reference"),
        ("sh:sh:x", r"\$\{sh:x\} is not a valid variable reference"),
    ],
)
def test_parse_reference_refuses(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_reference(name)


def test_render_sh_quotes_the_value() -> None:
    variables = {"item": {"path": "it's a file.txt", "n": 3, "list": ["a b"]}, "x": ""}
    assert render("cat ${sh:item.path}", variables) == "cat 'it'\"'\"'s a file.txt'"
    assert render("${sh:item.n} ${sh:item.list[0]} ${sh:x}", variables) == "3 'a b' ''"
    assert render("${sh:item.list}", variables) == "'[\"a b\"]'"
    # The raw form is raw: quoting it is the template's business.
    assert render("'${item.path}'", variables) == "'it's a file.txt'"


def test_render_sh_missing_field_names_the_reference() -> None:
    with pytest.raises(
        MissingVariable, match=r"item field 'nope' is missing .*\$\{sh:item\.nope\}"
    ):
        render("${sh:item.nope}", {"item": {}})


def test_render_sh_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODIGY_TEST_VAR", "a b")
    assert render("${sh:PRODIGY_TEST_VAR}", {}) == "'a b'"


def test_nul_refused_only_for_commands() -> None:
    variables = {"item": {"x": "a\0b"}}
    assert render("${item.x}", variables) == "a\0b"  # a file's content may hold one
    for template in ("echo ${item.x}", "echo ${sh:item.x}"):
        with pytest.raises(UnusableValue, match=r"value of \$\{(sh:)?item\.x\} contains a NUL"):
            render(template, variables, for_command=True)


# Any text but NUL (no command line can hold one); surrogates stand for undecodable bytes.
shell_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))


@settings(max_examples=60, deadline=None)
@given(text=shell_text)
@example(text="'; touch pwned; '")
@example(text='$(touch pwned)`touch pwned`\n"\\ ${x} $HOME *')
@example(text="-n")
def test_sh_form_reaches_a_real_shell_unchanged(
    text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir = tmp_path_factory.mktemp("sh")
    command = render("printf %s ${sh:item.x}", {"item": {"x": text}}, for_command=True)
    for shell in ("sh", "bash"):
        done = subprocess.run([shell, "-c", command], cwd=workdir, capture_output=True, check=True)
        assert done.stdout == text.encode()
    assert list(workdir.iterdir()) == []
