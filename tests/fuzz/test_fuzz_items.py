"""Fuzzing item selection: `json_path` over any JSON document, `sort_by` parsing and sorting,
and the whole pipeline (filter, sort_by, distinct, offset, max_items, id_field) on any items.
Each gives items or one InputError sentence, never another exception."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
from fuzzing import assert_clear_error, fuzz, json_keys, json_objects, json_values, user_text
from hypothesis import example, given
from hypothesis import strategies as st
from test_fuzz_item_filter import filter_texts, mutated

from prodigy.errors import InputError
from prodigy.items import ItemSpec, LoadedItems, parse_sort_by, select_items, sort_values

NAMES = ["a", "b", "name", "size", "items", "files", "tags", "id", "x-y", "*", "0"]
FILTERS = [
    "@.size > 100",
    "@.a == 'x'",
    "@.b",
    "!@.b",
    "@.size > 1 && @.size < 10",
    "@ == 1",
    "length(@.tags) > 1",
    "count(@.*) > 1",
    "match(@.name, 'a.*')",
    "search(@.name, '(')",
    "match(@.name, 'a{4294967296}')",
    "value(@..a) == 1",
    "@.a == $.b",
    "@.a < 'x'",
    "@.a in [1, 2]",
    "@.a =~ /x/",
    "@.a == 99999999999999999999999",
]
json_path_segments = st.one_of(
    st.sampled_from(NAMES).map(lambda n: "." + n),
    st.sampled_from(NAMES).map(lambda n: f"['{n}']"),
    st.sampled_from(NAMES).map(lambda n: ".." + n),
    st.integers(-3, 3).map(lambda i: f"[{i}]"),
    st.sampled_from(
        ["[*]", ".*", "..*", "[1:3]", "[::2]", "[::-1]", "[-1:]", "[0,1]", "['a','b']", "[]"]
    ),
    st.sampled_from(FILTERS).map(lambda f: f"[?({f})]"),
    st.sampled_from(FILTERS).map(lambda f: f"[?{f}]"),
    st.sampled_from(["[99999999999999999999]", "[1:2:0]", "[" + "9" * 5000 + "]", "|", "~"]),
)
json_paths = st.builds(
    lambda root, segments: root + "".join(segments),
    st.sampled_from(["$", "$", "$", "@", "", "^", "_"]),
    st.lists(json_path_segments, max_size=4),
)
any_json_paths = st.one_of(user_text, json_paths, mutated(json_paths))

# Items that look like what a workflow selects: objects sharing field names.
item_objects = st.dictionaries(
    st.sampled_from(["a", "b", "name", "size", "tags", "id", "priority", "x-y"]),
    json_values,
    max_size=5,
)
documents = st.one_of(
    json_values,
    st.lists(item_objects, max_size=6),
    st.dictionaries(
        st.sampled_from(["items", "files", "a", "b"]),
        st.one_of(st.lists(item_objects, max_size=5), item_objects, json_values),
        max_size=3,
    ),
)
field_names = st.one_of(
    st.sampled_from(["a", "b", "name", "size", "tags[0]", "a.b", "['x-y']", "id", "priority"]),
    user_text,
)
sort_texts = st.one_of(
    user_text,
    st.lists(
        st.builds(
            lambda field, direction: field + direction,
            field_names,
            st.sampled_from(["", " ASC", " desc", " DESC", " up", "  Desc ", " asc desc"]),
        ),
        min_size=1,
        max_size=3,
    ).map(", ".join),
)


def encoded(values: list[Any]) -> Counter[bytes]:
    return Counter(msgspec.json.encode(value, order="sorted") for value in values)


def selected_or_error(document: Any, spec: ItemSpec) -> LoadedItems | None:
    try:
        loaded = select_items(document, spec)
    except Exception as exc:
        assert_clear_error(exc, InputError)
        return None
    for warning in loaded.warnings:
        assert warning and len(warning.splitlines()) == 1, warning
    return loaded


@fuzz(400)
@given(documents, any_json_paths)
# Found by fuzzing: python-jsonpath let int()'s ValueError and OverflowError escape.
@example([], "$[" + "9" * 5000 + "]")
@example([{"a": 1}], "$[?@.a == 1e999]")
@example([{"a": 1}], "$[?@.a == 1" + "0" * 5000 + "]")
# Found by fuzzing: the path was quoted with its line break.
@example([], "0\r")
def test_json_path_selects_items_or_says_why_not(document: Any, json_path: str) -> None:
    loaded = selected_or_error(document, ItemSpec(input="input.json", json_path=json_path))
    if loaded is not None:
        assert [item.index for item in loaded.items] == list(range(len(loaded.items)))


@fuzz(300)
@given(sort_texts, st.one_of(st.lists(item_objects, max_size=8), st.lists(json_values, max_size=8)))
def test_sort_by_parses_and_sorts_any_items(text: str, values: list[Any]) -> None:
    try:
        keys = parse_sort_by(text)
    except Exception as exc:
        assert_clear_error(exc, InputError)
        return
    try:
        ordered = sort_values(values, keys, text)
    except Exception as exc:
        assert_clear_error(exc, InputError)
        assert not all(isinstance(value, dict) for value in values)
        return
    assert encoded(ordered) == encoded(values)


@fuzz(300)
@given(
    documents,
    st.fixed_dictionaries(
        {},
        optional={
            "json_path": json_paths,
            "filter": filter_texts,
            "sort_by": sort_texts,
            "distinct": field_names,
            "offset": st.integers(0, 10),
            "max_items": st.integers(0, 10),
            "id_field": field_names,
        },
    ),
)
def test_the_whole_pipeline_gives_items_or_one_input_error(
    document: Any, settings: dict[str, Any]
) -> None:
    loaded = selected_or_error(document, ItemSpec(input="input.json", **settings))
    if loaded is not None:
        ids = [item.id for item in loaded.items]
        assert len(set(ids)) == len(ids)
        assert all(isinstance(item_id, str) and item_id for item_id in ids)


@fuzz(100)
@given(json_objects, json_keys)
def test_an_object_document_without_json_path_is_refused_or_empty(
    document: dict[str, Any], _key: str
) -> None:
    loaded = selected_or_error(document, ItemSpec(input="input.json"))
    assert (loaded is None) == bool(document)
