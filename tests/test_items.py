"""Input loading and the item pipeline: files, commands, json_path, filter, sort, ids."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import prodigy.items as items_module
from prodigy.errors import InputError
from prodigy.items import (
    ItemSpec,
    LoadedItems,
    WorkItem,
    load_items,
    parse_sort_by,
    read_input_document,
    select_items,
    stream_items,
)

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}


def load(tmp_path: Path, **spec: Any) -> LoadedItems:
    return load_items(ItemSpec(**spec), tmp_path, ENV)


def select(document: Any, **spec: Any) -> list[Any]:
    return [item.data for item in select_items(document, ItemSpec(input="-", **spec)).items]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- step 1: input -------------------------------------------------------------------------------


def test_json_file_with_json_path(tmp_path: Path) -> None:
    write(tmp_path, "files.json", json.dumps({"files": [{"path": "a"}, {"path": "b"}]}))
    loaded = load(tmp_path, input="files.json", json_path="$.files[*]")
    assert loaded.items == [
        WorkItem(0, "item_0", {"path": "a"}),
        WorkItem(1, "item_1", {"path": "b"}),
    ]
    assert loaded.warnings == []


def test_jsonl_file_one_value_per_line(tmp_path: Path) -> None:
    write(tmp_path, "items.jsonl", '{"a": 1}\n\n"text"\n3\r\n')
    assert [i.data for i in load(tmp_path, input="items.jsonl").items] == [{"a": 1}, "text", 3]


def test_jsonl_bad_line_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "items.jsonl", '{"a": 1}\nnot json\n')
    with pytest.raises(InputError, match=r"input file items.jsonl:2 is not valid JSON"):
        load(tmp_path, input="items.jsonl")


def test_empty_jsonl_is_zero_items_but_empty_json_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "none.jsonl", "")
    assert load(tmp_path, input="none.jsonl").items == []
    write(tmp_path, "none.json", "  \n")
    with pytest.raises(InputError, match=r"input file none\.json is empty"):
        load(tmp_path, input="none.json")


def test_invalid_json_file_reports_line_and_column(tmp_path: Path) -> None:
    write(tmp_path, "bad.json", '{\n  "files": [\n    {"a": x}\n  ]\n}\n')
    with pytest.raises(InputError) as caught:
        load(tmp_path, input="bad.json")
    assert (
        caught.value.message == "input file bad.json is not valid JSON at 3:11: invalid character"
    )


def test_column_counts_characters_not_bytes(tmp_path: Path) -> None:
    write(tmp_path, "bad.json", '["héé", x]')
    with pytest.raises(InputError, match=r"at 1:9: invalid character"):
        load(tmp_path, input="bad.json")


def test_truncated_json_file_points_at_its_end(tmp_path: Path) -> None:
    write(tmp_path, "cut.json", "[1,\n 2")
    with pytest.raises(InputError, match=r"cut.json is not valid JSON at 2:3"):
        load(tmp_path, input="cut.json")


def test_missing_file_is_not_run_as_a_command(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load(tmp_path, input="files.json")
    assert caught.value.message == f"input file not found: files.json (looked in {tmp_path})"
    with pytest.raises(InputError, match=r"input file not found: data/x\.jsonl"):
        load(tmp_path, input="data/x.jsonl")


def test_file_with_other_extension_is_a_json_document(tmp_path: Path) -> None:
    write(tmp_path, "list.txt", "[1, 2]")
    assert [i.data for i in load(tmp_path, input="list.txt").items] == [1, 2]


def test_absolute_path_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf[1]")
    assert [i.data for i in load(tmp_path / "..", input=str(path)).items] == [1]


def test_command_printing_a_json_document(tmp_path: Path) -> None:
    command = """printf '{"files": [{"n": 1},\\n {"n": 2}]}'"""
    loaded = load(tmp_path, input=command, json_path="$.files[*]")
    assert [i.data for i in loaded.items] == [{"n": 1}, {"n": 2}]


def test_command_printing_one_item_per_line(tmp_path: Path) -> None:
    command = """printf 'src/a.py\\n{"b": 2}\\n\\n42\\nhello world\\n'"""
    assert [i.data for i in load(tmp_path, input=command).items] == [
        "src/a.py",
        {"b": 2},
        42,
        "hello world",
    ]


def test_command_runs_in_cwd_with_the_given_environment(tmp_path: Path) -> None:
    write(tmp_path, "marker", "")
    document = read_input_document("ls; echo $ONLY_HERE", tmp_path, {**ENV, "ONLY_HERE": "yes"})
    assert document == ["marker", "yes"]


def test_command_with_no_output_is_zero_items(tmp_path: Path) -> None:
    assert load(tmp_path, input="true").items == []


def test_command_failure_names_command_code_and_last_stderr_line(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load(tmp_path, input="echo first >&2; echo 'the real reason' >&2; exit 3")
    message = caught.value.message
    assert "`echo first >&2; echo 'the real reason' >&2; exit 3`" in message
    assert "exit code 3: the real reason" in message


def test_unknown_command_hints_that_no_file_exists(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load(tmp_path, input="no-such-program-xyz")
    assert "exit code 127" in caught.value.message
    assert caught.value.hint is not None and "no such file" in caught.value.hint


def test_broken_multiline_json_output_is_an_error_not_text(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="starts like JSON but is not valid JSON"):
        load(tmp_path, input="""printf '{\\n  "a": 1,\\n}\\n'""")


def test_command_timeout_kills_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(items_module, "INPUT_COMMAND_TIMEOUT_S", 0.5)
    started = time.monotonic()
    with pytest.raises(InputError, match=r"did not finish within 0\.5 s"):
        load(tmp_path, input="sleep 30 & sleep 30")
    assert time.monotonic() - started < 10


def test_thirty_digit_integers_stay_exact(tmp_path: Path) -> None:
    write(tmp_path, "big.json", '[{"id": 123456789012345678901234567890}]')
    loaded = load(tmp_path, input="big.json", id_field="id")
    assert loaded.items[0].data["id"] == 123456789012345678901234567890
    assert loaded.items[0].id == "123456789012345678901234567890"
    via_path = load(tmp_path, input="big.json", json_path="$[?@.id > 1]")
    assert via_path.items[0].data["id"] == 123456789012345678901234567890


# ---- step 2: json_path and the document's shape ------------------------------------------------


DOC = {
    "files": [
        {"path": "a.py", "size": 50},
        {"path": "b.py", "size": 150},
        {"path": "c.py", "size": 300},
    ],
    "meta": {"n": 3},
}


def test_json_path_with_filter_expression() -> None:
    assert select(DOC, json_path="$.files[?(@.size > 100)]") == DOC["files"][1:]
    assert select(DOC, json_path="$.files[?@.path == 'a.py']") == DOC["files"][:1]


def test_json_path_to_a_list_means_its_elements() -> None:
    assert select(DOC, json_path="$.files") == DOC["files"]
    assert select(DOC, json_path="$['files']") == DOC["files"]
    assert select(DOC, json_path="$.meta") == [{"n": 3}]


def test_simple_paths_agree_with_the_jsonpath_library() -> None:
    document = {"a": {"b": [1, {"c": 2}], "d": {"x": 1, "y": 2}}, "e": 5}
    for fast, general in [
        ("$.a.b[*]", "$['a']['b'][*]"),
        ("$.a.d[*]", "$['a']['d'][*]"),
        ("$.a.b", "$['a']['b']"),
        ("$.a", "$['a']"),
        ("$.e", "$['e']"),
        ("$", "$[?true]"),
    ]:
        if fast == "$":
            assert select([1, 2], json_path=fast) == [1, 2]
            continue
        assert select(document, json_path=fast) == select(document, json_path=general)


def test_json_path_selecting_nothing_lists_the_top_level_keys() -> None:
    with pytest.raises(InputError) as caught:
        select(DOC, json_path="$.file[*]")
    assert caught.value.message == (
        "map.json_path '$.file[*]' selected nothing from the input; "
        "the input's top-level keys are: files, meta"
    )
    with pytest.raises(InputError, match="array of 2 values"):
        select([1, 2], json_path="$.files[*]")


def test_json_path_on_empty_documents_is_zero_items() -> None:
    assert select([], json_path="$.files[*]") == []
    assert select({}, json_path="$.files[*]") == []
    assert select({"files": []}, json_path="$.files[*]") == []
    assert select({"files": []}, json_path="$.files") == []


def test_json_path_filter_matching_nothing_is_a_warning_not_an_error() -> None:
    loaded = select_items(DOC, ItemSpec(input="-", json_path="$.files[?(@.size > 1000)]"))
    assert loaded.items == []
    assert loaded.warnings == [
        "map.json_path '$.files[?(@.size > 1000)]' matched no items; the job has 0 items"
    ]
    # An existing empty list is simply an empty job.
    assert select_items({"files": []}, ItemSpec(input="-", json_path="$.files[*]")).warnings == []


def test_json_path_typo_in_a_name_is_an_error_even_when_nested() -> None:
    with pytest.raises(InputError, match="selected nothing"):
        select(DOC, json_path="$.meta.nn")
    with pytest.raises(InputError, match="selected nothing"):
        select(DOC, json_path="$.fils[?(@.size > 1)]")
    with pytest.raises(InputError, match="selected nothing"):
        select(DOC, json_path="$..nothing_here")


def test_invalid_json_path() -> None:
    with pytest.raises(
        InputError, match=r"map.json_path '\$.files\[\?\(@.size >> 1\)\]' is invalid"
    ):
        select(DOC, json_path="$.files[?(@.size >> 1)]")


def test_object_without_json_path_is_an_error_naming_keys() -> None:
    with pytest.raises(InputError) as caught:
        select(DOC)
    assert caught.value.message == (
        "input is a JSON object; set map.json_path to select the items "
        "(top-level keys: files, meta)"
    )
    assert select({}) == []
    assert select([]) == []


# Found by fuzzing (tests/fuzz): the quoted setting or key kept its line break, so the one
# sentence became two lines.
@pytest.mark.parametrize(
    ("document", "spec"),
    [
        ({"a\rb": 1}, {}),
        ([], {"json_path": "0\r"}),
        ([{"a": 1}], {"sort_by": "0\r0"}),
        ([{"a": 1}], {"distinct": "\r"}),
        ([{"a": 1}], {"id_field": "a.\nb"}),
    ],
)
def test_errors_quoting_a_line_break_stay_one_line(document: Any, spec: dict[str, Any]) -> None:
    with pytest.raises(InputError) as caught:
        select(document, **spec)
    assert len(caught.value.message.splitlines()) == 1, caught.value.message


def test_warnings_quoting_a_line_break_stay_one_line() -> None:
    loaded = select_items([{"a": 1}], ItemSpec(input="-", filter="a >\n 1"))
    assert loaded.warnings == ["filter 'a >  1' removed all 1 items; the job has 0 items"]


@pytest.mark.parametrize("document", [3, "text", None, True])
def test_scalar_document_is_an_error(document: Any) -> None:
    with pytest.raises(InputError, match="input is a single JSON"):
        select(document)


# ---- step 3: filter ------------------------------------------------------------------------------


def test_filter_drops_items_and_bad_syntax_is_an_input_error() -> None:
    assert select(DOC["files"], filter="size > 100 and path != 'c.py'") == [DOC["files"][1]]
    with pytest.raises(InputError, match="column 7: expected a value"):
        select(DOC["files"], filter="size >> 100")


def test_filter_removing_everything_is_a_warning() -> None:
    loaded = select_items(DOC["files"], ItemSpec(input="-", filter="size > 1000"))
    assert loaded.items == []
    assert loaded.warnings == ["filter 'size > 1000' removed all 3 items; the job has 0 items"]
    assert select_items([], ItemSpec(input="-", filter="size > 1")).warnings == []


def test_filter_on_non_objects_treats_fields_as_missing() -> None:
    assert select([1, "a", {"x": 2}], filter="x == 2") == [{"x": 2}]


# ---- step 4: sort_by -----------------------------------------------------------------------------


def test_sort_multi_key_with_desc_and_missing_values() -> None:
    values = [
        {"name": "d", "priority": 1},
        {"name": "b"},
        {"name": "c", "priority": 3},
        {"name": "a", "priority": 3},
        {"name": "e", "priority": None},
        {"name": "f", "priority": 1},
    ]
    names = [v["name"] for v in select(values, sort_by="priority DESC, name")]
    assert names == ["a", "c", "d", "f", "b", "e"]
    names = [v["name"] for v in select(values, sort_by="priority asc, name DESC")]
    # Missing and null keep the order the secondary key gave them.
    assert names == ["f", "d", "c", "a", "e", "b"]


def test_sort_mixed_types_by_rank() -> None:
    values = [{"k": [1]}, {"k": "b"}, {"k": True}, {"k": 2.5}, {"k": "a"}, {"k": 1}]
    assert [v["k"] for v in select(values, sort_by="k")] == [1, 2.5, "a", "b", True, [1]]


def test_sort_nested_path() -> None:
    values = [{"m": {"p": 2}}, {"m": {"p": 1}}, {"m": "flat"}]
    assert select(values, sort_by="m.p") == [{"m": {"p": 1}}, {"m": {"p": 2}}, {"m": "flat"}]


def test_sort_on_non_object_item_is_an_error() -> None:
    with pytest.raises(InputError) as caught:
        select([{"priority": 1}, {}, {}, "x"], sort_by="priority")
    assert caught.value.message == (
        "item 3 is not an object (\"x\"), so sort_by 'priority' cannot apply"
    )


@pytest.mark.parametrize("text", ["", "a,", "a DOWN", "a b c", "a.", "a, ,b"])
def test_malformed_sort_by(text: str) -> None:
    with pytest.raises(InputError, match=r"map\.sort_by"):
        parse_sort_by(text)


# ---- step 5: distinct ----------------------------------------------------------------------------


def test_distinct_keeps_first_and_compares_by_json_value() -> None:
    values = [
        {"k": "a", "n": 0},
        {"k": {"x": 1, "y": 2}, "n": 1},
        {"k": "a", "n": 2},
        {"k": {"y": 2, "x": 1}, "n": 3},
        {"n": 4},
        {"n": 5},
        {"k": [1, 2], "n": 6},
        {"k": [1, 2], "n": 7},
        {"k": 1, "n": 8},
        {"k": "1", "n": 9},
    ]
    assert [v["n"] for v in select(values, distinct="k")] == [0, 1, 4, 5, 6, 8, 9]
    with pytest.raises(InputError, match="item 1 is not an object"):
        select([{"k": 1}, 2], distinct="k")


# ---- step 6: offset / max_items ------------------------------------------------------------------


def test_offset_and_max_items() -> None:
    values = list(range(10))
    assert select(values, offset=3, max_items=4) == [3, 4, 5, 6]
    assert select(values, max_items=0) == []
    loaded = select_items(values, ItemSpec(input="-", offset=10))
    assert loaded.items == [] and "offset 10 skipped all 10 items" in loaded.warnings[0]
    with pytest.raises(InputError, match="offset"):
        select(values, offset=-1)
    with pytest.raises(InputError, match="max_items"):
        select(values, max_items=-1)


@given(
    values=st.lists(st.integers(), max_size=30),
    offset=st.integers(min_value=0, max_value=40),
    max_items=st.none() | st.integers(min_value=0, max_value=40),
)
def test_offset_and_max_items_are_list_slicing(
    values: list[int], offset: int, max_items: int | None
) -> None:
    loaded = select_items(values, ItemSpec(input="-", offset=offset, max_items=max_items))
    end = None if max_items is None else offset + max_items
    assert [item.data for item in loaded.items] == values[offset:end]
    assert [item.index for item in loaded.items] == list(range(len(loaded.items)))
    assert [item.id for item in loaded.items] == [f"item_{i}" for i in range(len(loaded.items))]


@given(
    keys=st.lists(st.none() | st.integers(min_value=0, max_value=3), max_size=40),
    descending=st.booleans(),
)
def test_sort_is_stable_and_puts_missing_last(keys: list[int | None], descending: bool) -> None:
    values = [{"pos": pos} if k is None else {"k": k, "pos": pos} for pos, k in enumerate(keys)]
    result = select(values, sort_by="k DESC" if descending else "k")
    present = [v for v in values if "k" in v]
    expected = sorted(present, key=lambda v: -v["k"] if descending else v["k"])
    expected += [v for v in values if "k" not in v]
    assert result == expected


# ---- step 7: ids ---------------------------------------------------------------------------------


def test_id_field_values_become_ids() -> None:
    values = [{"name": "a"}, {"name": 7}, {"name": 2.5}]
    loaded = select_items(values, ItemSpec(input="-", id_field="name"))
    assert [(i.index, i.id) for i in loaded.items] == [(0, "a"), (1, "7"), (2, "2.5")]


def test_id_field_duplicate_is_an_error() -> None:
    with pytest.raises(InputError) as caught:
        select([{"id": "x"}, {"id": "y"}, {"id": 1}, {"id": "1"}], id_field="id")
    assert caught.value.message == (
        "items 2 and 3 have the same id '1' (map.id_field 'id'); item ids must be unique"
    )


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ([{"id": "a"}, {}], "item 1 has no value for map.id_field 'id'"),
        ([{"id": None}], "item 0 has no value"),
        ([{"id": ""}], "non-empty"),
        ([{"id": "a\nb"}], "control characters"),
        ([{"id": True}], "string or a number"),
        ([{"id": {"x": 1}}], "string or a number"),
        ([{"id": "a"}, "b"], "item 1 is not an object (\"b\"), so id_field 'id' cannot apply"),
    ],
)
def test_id_field_missing_or_unusable(values: list[Any], words: str) -> None:
    with pytest.raises(InputError) as caught:
        select(values, id_field="id")
    assert words in caught.value.message


def test_ids_are_assigned_after_the_whole_pipeline() -> None:
    values = [{"n": n, "keep": n % 2 == 0} for n in range(10)]
    loaded = select_items(
        values, ItemSpec(input="-", filter="keep", sort_by="n DESC", offset=1, max_items=2)
    )
    assert [(i.index, i.id, i.data["n"]) for i in loaded.items] == [
        (0, "item_0", 6),
        (1, "item_1", 4),
    ]


# ---- performance ---------------------------------------------------------------------------------


def test_hundred_thousand_items_take_the_plain_path_fast_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # python-jsonpath costs ~0.3 s per 100k items: a plain `$.a[*]` must not go through it.
    # (Speed itself is measured by benchmarks/, not asserted here.)
    import jsonpath

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a plain path went through python-jsonpath")

    monkeypatch.setattr(jsonpath, "compile", refuse)
    rows = [{"path": f"src/f{i}.py", "size": i} for i in range(100_000)]
    write(tmp_path, "big.json", json.dumps({"files": rows}))
    loaded = load(tmp_path, input="big.json", json_path="$.files[*]")
    assert len(loaded.items) == 100_000
    assert loaded.items[-1] == WorkItem(99_999, "item_99999", rows[-1])


# ---- streamed: a plain input file read one item at a time ------------------------------------


@pytest.mark.parametrize("name", ["items.json", "items.jsonl"])
@pytest.mark.parametrize(
    ("offset", "max_items", "id_field"),
    [(0, None, None), (2, 3, None), (0, 4, "key"), (9, None, None), (1, None, "key")],
)
def test_streamed_items_are_the_items_load_items_selects(
    tmp_path: Path, name: str, offset: int, max_items: int | None, id_field: str | None
) -> None:
    rows = [{"key": f"k{i}", "n": i, "big": 123456789012345678901234567890} for i in range(7)]
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    spec = ItemSpec(input=name, offset=offset, max_items=max_items, id_field=id_field)
    streamed = stream_items(spec, tmp_path)
    assert streamed is not None
    got = [(i.index, i.id, msgspec.json.decode(i.data)) for i in streamed.items]
    loaded = load_items(spec, tmp_path, {})
    assert got == [(i.index, i.id, i.data) for i in loaded.items]
    assert streamed.warnings == loaded.warnings


def test_inputs_that_need_the_whole_document_are_not_streamed(tmp_path: Path) -> None:
    (tmp_path / "items.json").write_text('{"items": [1, 2]}')
    (tmp_path / "list.json").write_text("[1, 2]")
    assert stream_items(ItemSpec(input="items.json"), tmp_path) is None
    assert stream_items(ItemSpec(input="list.json", filter="x > 1"), tmp_path) is None
    assert stream_items(ItemSpec(input="echo 1"), tmp_path) is None


def test_a_bad_line_in_a_streamed_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text('{"a": 1}\n{"a": \n')
    streamed = stream_items(ItemSpec(input="items.jsonl"), tmp_path)
    assert streamed is not None
    with pytest.raises(InputError, match=r"items.jsonl:2 is not valid JSON"):
        list(streamed.items)
