"""Turning `map.input` into frozen work items: reading the input file or command output, then
json_path, filter, sort_by, distinct, offset and max_items, then item ids (SPEC §2 map, §8).

Items stay plain JSON values (msgspec keeps big integers exact); WorkItem is the only wrapper.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from prodigy.display import unbroken
from prodigy.errors import InputError
from prodigy.item_filter import FieldPath, compile_filter, field_getter, parse_field_path
from prodigy.reaper import forget_group, watch_group

if TYPE_CHECKING:
    import jsonpath

# Read at call time so that tests can shorten it.
INPUT_COMMAND_TIMEOUT_S = 300.0

_LOOKS_LIKE_FILE = re.compile(r"\S+\.jsonl?", re.IGNORECASE)
_BYTE_POSITION = re.compile(r"\s*\(byte (\d+)\)$")
_BOM = b"\xef\xbb\xbf"
_KEYS_SHOWN = 20
_SIMPLE_PATH = re.compile(r"\$((?:\.[A-Za-z_][A-Za-z0-9_]*)*)(\[\*\])?")
_SIMPLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One unit of map work, frozen when the job is created."""

    index: int  # 0-based, after the whole pipeline
    id: str  # "item_<index>", or str(value of id_field)
    data: Any  # the JSON value


@dataclass(frozen=True)
class ItemSpec:
    """The workflow's map settings that decide the item list."""

    input: str
    json_path: str | None = None
    filter: str | None = None
    sort_by: str | None = None
    distinct: str | None = None
    offset: int = 0
    max_items: int | None = None
    id_field: str | None = None


@dataclass(frozen=True)
class LoadedItems:
    """The frozen item list and what the user should hear about it (none of it fatal)."""

    items: list[WorkItem]
    warnings: list[str]


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str  # as written, for messages
    path: FieldPath
    descending: bool


def load_items(spec: ItemSpec, cwd: Path, env: Mapping[str, str]) -> LoadedItems:
    """Read `spec.input` in `cwd` (commands get `env` as their whole environment), then select."""
    return select_items(read_input_document(spec.input, cwd, env), spec)


# ---- a large plain input file, one item at a time -----------------------------------------------


@dataclass
class StreamedItems:
    """Items read one at a time; `warnings` is complete once `items` is exhausted."""

    items: Iterator[WorkItem]
    warnings: list[str]


def stream_items(spec: ItemSpec, cwd: Path) -> StreamedItems | None:
    """The items of an input file that needs no whole-document step (no json_path, filter,
    sort_by or distinct), read one at a time so that freezing a million items takes no more
    memory than the file; None for every other input, which `load_items` reads whole."""
    if spec.json_path or spec.filter or spec.sort_by or spec.distinct:
        return None
    text = spec.input.strip()
    path = cwd / text
    suffix = path.suffix.lower()
    try:
        if not text or suffix not in (".json", ".jsonl") or not path.is_file():
            return None
    except (OSError, ValueError):
        return None
    _window([], spec.offset, spec.max_items, [])  # the same checks of offset and max_items
    if suffix == ".jsonl":
        values: Iterator[Any] = _json_lines(path, text)
    else:
        try:
            data = path.read_bytes().removeprefix(_BOM)
            _check_utf8(data)
            elements = msgspec.json.decode(data, type=list[msgspec.Raw])
        except (OSError, msgspec.DecodeError, UnicodeDecodeError):
            return None  # not an array, not JSON or not UTF-8: `load_items` says which
        values = _drain(elements)
    streamed = StreamedItems(iter(()), [])
    streamed.items = _identified(_windowed(values, spec, streamed.warnings), spec.id_field)
    return streamed


def _json_lines(path: Path, shown: str) -> Iterator[msgspec.Raw]:
    """A .jsonl file's values, unparsed but checked to be JSON, as `_parse_json_lines` reads."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if number == 1:
                line = line.removeprefix(_BOM)
            if line.isspace() or not line:
                continue
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                # Said as for a file read whole: the byte's line and column in the file.
                raise _not_utf8(path.read_bytes(), f"input file {shown}") from None
            try:
                yield msgspec.json.decode(line, type=msgspec.Raw)
            except msgspec.DecodeError as exc:
                reason = _BYTE_POSITION.sub("", str(exc)).removeprefix("JSON is malformed: ")
                raise _input_error(
                    f"input file {shown}:{number} is not valid JSON: {reason}",
                    hint="A .jsonl file needs one JSON value on each line.",
                ) from None


def _check_utf8(data: bytes) -> None:
    """UnicodeDecodeError unless `data` is UTF-8 (checked a megabyte at a time)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    for start in range(0, len(view), 1 << 20):
        decoder.decode(view[start : start + (1 << 20)])
    decoder.decode(b"", final=True)


def _drain(elements: list[msgspec.Raw]) -> Iterator[msgspec.Raw]:
    """The elements in order, each let go of once it is handed out."""
    empty = msgspec.Raw(b"null")
    for index in range(len(elements)):
        value, elements[index] = elements[index], empty
        yield value


def _windowed(values: Iterator[Any], spec: ItemSpec, warnings: list[str]) -> Iterator[Any]:
    seen = 0
    for value in values:
        seen += 1
        if seen <= spec.offset:
            continue
        if spec.max_items is not None and seen > spec.offset + spec.max_items:
            return
        yield value
    if spec.offset and seen and spec.offset >= seen:
        warnings.append(f"offset {spec.offset} skipped all {seen} items; the job has 0 items")


def _identified(values: Iterator[msgspec.Raw], id_field: str | None) -> Iterator[WorkItem]:
    if id_field is None:
        for index, value in enumerate(values):
            yield WorkItem(index, f"item_{index}", value)
        return
    get = field_getter(_field_path(id_field, "id_field"))
    first_index: dict[str, int] = {}
    for index, raw in enumerate(values):
        value = msgspec.json.decode(raw)
        if not isinstance(value, dict):
            raise _input_error(
                f"item {index} is not an object ({_preview(value)}), so id_field "
                f"'{id_field}' cannot apply"
            )
        item_id = _id_text(get(value), index, id_field)
        earlier = first_index.setdefault(item_id, index)
        if earlier != index:
            raise _input_error(
                f"items {earlier} and {index} have the same id '{item_id}' "
                f"(map.id_field '{id_field}'); item ids must be unique"
            )
        yield WorkItem(index, item_id, raw)


# ---- step 1: the input document ----------------------------------------------------------------


def read_input_document(spec_input: str, cwd: Path, env: Mapping[str, str]) -> Any:
    """The input as one JSON value: a file's document, a .jsonl file or line output as a list."""
    text = spec_input.strip()
    if not text:
        raise _input_error(
            "map.input is empty; set it to a JSON file or a command that prints JSON"
        )
    path = cwd / text
    try:
        is_file = path.is_file()
    except (OSError, ValueError):
        # A long command line is not a valid path on every system; it is simply not a file.
        is_file = False
    if is_file:
        return _read_file(path, text)
    if _LOOKS_LIKE_FILE.fullmatch(text):
        if path.exists():
            raise _input_error(f"input {text} is a directory, not a JSON file (looked in {cwd})")
        raise _input_error(
            f"input file not found: {text} (looked in {cwd})",
            hint="If a setup step creates it, check where that step writes it.",
        )
    return _run_command(text, cwd, env)


def _read_file(path: Path, shown: str) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _input_error(f"input file {shown} cannot be read: {exc.strerror or exc}") from None
    data = data.removeprefix(_BOM)
    if path.suffix.lower() == ".jsonl":
        return _parse_json_lines(data, shown)
    if not data.strip():
        raise _input_error(f"input file {shown} is empty; it must hold one JSON document")
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise _input_error(f"input file {shown} is not valid JSON {_locate(data, exc)}") from None
    except UnicodeDecodeError:
        raise _not_utf8(data, f"input file {shown}") from None


def _parse_json_lines(data: bytes, shown: str) -> list[Any]:
    decode = msgspec.json.Decoder().decode
    values: list[Any] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.isspace() or not line:
            continue
        try:
            values.append(decode(line))
        except msgspec.DecodeError as exc:
            reason = _BYTE_POSITION.sub("", str(exc)).removeprefix("JSON is malformed: ")
            raise _input_error(
                f"input file {shown}:{number} is not valid JSON: {reason}",
                hint="A .jsonl file needs one JSON value on each line.",
            ) from None
        except UnicodeDecodeError:
            raise _not_utf8(data, f"input file {shown}") from None
    return values


def _not_utf8(data: bytes, what: str) -> InputError:
    """'... is not UTF-8 text: byte 0xff at 2:7', for input that is not valid UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start
    else:  # only a lone surrogate escape fails msgspec yet decodes here; a JSON error, then
        return _input_error(f"{what} holds text that is not valid Unicode")
    line = data.count(b"\n", 0, offset) + 1
    column = len(data[data.rfind(b"\n", 0, offset) + 1 : offset].decode("utf-8")) + 1
    return _input_error(
        f"{what} is not UTF-8 text (byte 0x{data[offset]:02x} at {line}:{column}); input "
        "must be UTF-8: convert it first, for example with `iconv -f latin1 -t utf-8`"
    )


def _locate(data: bytes, exc: msgspec.DecodeError) -> str:
    """'at 3:14: invalid character' from msgspec's byte offset (truncation: the end of file)."""
    message = str(exc)
    found = _BYTE_POSITION.search(message)
    if found:
        offset = min(int(found.group(1)), len(data))
        reason = message[: found.start()].removeprefix("JSON is malformed: ")
    elif message.startswith("Input data was truncated"):
        offset, reason = len(data), "the document ends too early"
    else:
        return f": {message}"
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return f"at {line}:{column}: {reason}"


def _run_command(command: str, cwd: Path, env: Mapping[str, str]) -> Any:
    timeout = INPUT_COMMAND_TIMEOUT_S
    shown = command if len(command) <= 200 else command[:200] + "…"
    try:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own process group, so a timeout ends the command's children too.
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise _input_error(
            f"input command `{shown}` could not be started in {cwd}: {reason}"
        ) from None
    watch_group(process.pid)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise _input_error(
            f"input command `{shown}` did not finish within {timeout:g} s and was stopped"
        ) from None
    finally:
        if process.returncode is None:
            _kill_group(process)
        forget_group(process.pid)
    if process.returncode != 0:
        raise _command_failed(shown, process.returncode, stderr, cwd)
    return _parse_command_output(stdout, shown)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # A grandchild that left the group still holds the pipes; the command itself is dead.
        process.kill()
        process.wait()


def _command_failed(shown: str, code: int, stderr: bytes, cwd: Path) -> InputError:
    lines = [line.strip() for line in stderr.decode("utf-8", errors="replace").splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    how = f"was killed by signal {-code}" if code < 0 else f"failed with exit code {code}"
    said = f": {last[:300]}" if last else " and printed nothing on stderr"
    hint = None
    if code == 127:
        hint = f"map.input is run as a command because no such file exists in {cwd}."
    return _input_error(f"input command `{shown}` {how}{said}", hint=hint)


def _parse_command_output(stdout: bytes, shown: str) -> Any:
    """One JSON array or object, else one item per line (JSON if it parses, else the text)."""
    stdout = stdout.removeprefix(_BOM)
    if not stdout.strip():
        return []
    # Checked whole, once: a text line would otherwise be decoded with replacement characters,
    # and an item's data silently altered.
    try:
        stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise _not_utf8(stdout, f"the output of input command `{shown}`") from None
    try:
        document = msgspec.json.decode(stdout)
    except msgspec.DecodeError:
        pass
    else:
        if isinstance(document, list | dict):
            return document
    decode = msgspec.json.Decoder().decode
    values: list[Any] = []
    for number, line in enumerate(stdout.split(b"\n"), start=1):
        line = line.removesuffix(b"\r")
        if line.isspace() or not line:
            continue
        try:
            values.append(decode(line))
            continue
        except msgspec.DecodeError as exc:
            # A line that starts like JSON but does not parse is a broken document, not text.
            if line.lstrip()[:1] in (b"{", b"["):
                reason = _BYTE_POSITION.sub("", str(exc)).removeprefix("JSON is malformed: ")
                raise _input_error(
                    f"line {number} of the output of input command `{shown}` starts like JSON "
                    f"but is not valid JSON: {reason}"
                ) from None
        values.append(line.decode("utf-8"))
    return values


# ---- steps 2..7: from the document to work items ----------------------------------------------


def select_items(document: Any, spec: ItemSpec) -> LoadedItems:
    """Apply json_path, filter, sort_by, distinct, offset, max_items and ids to `document`."""
    warnings: list[str] = []
    values = _select(document, spec.json_path, warnings)
    if spec.filter is not None:
        expr = compile_filter(spec.filter)
        kept = [value for value in values if expr.matches(value)]
        if values and not kept:
            warnings.append(
                unbroken(
                    f"filter '{spec.filter}' removed all {len(values)} items; the job has 0 items"
                )
            )
        values = kept
    if spec.sort_by is not None:
        values = sort_values(values, parse_sort_by(spec.sort_by), spec.sort_by)
    if spec.distinct is not None:
        values = distinct_values(values, spec.distinct)
    values = _window(values, spec.offset, spec.max_items, warnings)
    return LoadedItems(items=_with_ids(values, spec.id_field), warnings=warnings)


def _select(document: Any, json_path: str | None, warnings: list[str]) -> list[Any]:
    if not isinstance(document, list | dict):
        raise _input_error(
            f"input is a single JSON {_kind(document)} ({_preview(document)}), not a list of "
            "items; give a JSON array, an object with map.json_path, or one item per line"
        )
    if json_path is None:
        if isinstance(document, list):
            return document
        if not document:
            return []
        raise _input_error(
            "input is a JSON object; set map.json_path to select the items "
            f"(top-level keys: {_keys(document)})"
        )
    found = _run_json_path(document, json_path)
    if found.values:
        # `$.files` names the list itself; its elements are what the user means by the items.
        if found.singular and len(found.values) == 1 and isinstance(found.values[0], list):
            return list(found.values[0])
        return found.values
    if not document:
        return []
    if found.parents:
        # The path exists and only its last wildcard or filter matched nothing: no typo there.
        if any(isinstance(parent, list | dict) and parent for parent in found.parents):
            warnings.append(
                unbroken(f"map.json_path '{json_path}' matched no items; the job has 0 items")
            )
        return []
    if isinstance(document, dict):
        where = f"the input's top-level keys are: {_keys(document)}"
    else:
        where = f"the input is an array of {len(document)} values (paths into it start '$[')"
    raise _input_error(
        f"map.json_path '{json_path}' selected nothing from the input; {where}",
        hint="Check the path for a typo.",
    )


class _PathResult(NamedTuple):
    values: list[Any]
    singular: bool  # the path can select at most one value
    parents: list[Any]  # what the path without its last wildcard/filter selects, else []


def _run_json_path(document: Any, json_path: str) -> _PathResult:
    simple = _SIMPLE_PATH.fullmatch(json_path.strip())
    if simple:
        # python-jsonpath costs ~0.3 s per 100k items; plain `$.a.b[*]` needs none of it.
        wildcard = simple.group(2) is not None
        value: Any = document
        for name in _SIMPLE_NAME.findall(simple.group(1)):
            if not isinstance(value, dict) or name not in value:
                return _PathResult([], not wildcard, [])
            value = value[name]
        if not wildcard:
            return _PathResult([value], True, [])
        if isinstance(value, list):
            return _PathResult(list(value), False, [value])
        return _PathResult(list(value.values()) if isinstance(value, dict) else [], False, [value])
    # Imported here: listing and inspecting jobs (which read frozen items) never need it.
    import jsonpath
    from jsonpath.segments import JSONPathChildSegment
    from jsonpath.selectors import IndexSelector, NameSelector

    try:
        path = compile_json_path(json_path)
        selected = path.findall(document)
        if selected or not isinstance(path, jsonpath.JSONPath) or not path.segments:
            return _PathResult(selected, _is_singular(path), [])
        last = path.segments[-1]
        if not isinstance(last, JSONPathChildSegment) or all(
            isinstance(selector, NameSelector | IndexSelector) for selector in last.selectors
        ):
            return _PathResult([], _is_singular(path), [])
        parent = jsonpath.JSONPath(
            env=path.env, segments=path.segments[:-1], pseudo_root=path.pseudo_root
        )
        return _PathResult([], False, parent.findall(document))
    except jsonpath.JSONPathError as exc:
        reason = json_path_reason(exc)
        raise _input_error(f"map.json_path '{json_path}' is invalid: {reason}") from None


def compile_json_path(text: str) -> jsonpath.JSONPath | jsonpath.CompoundJSONPath:
    """jsonpath.compile, with every refusal a JSONPathError: python-jsonpath lets int()'s
    ValueError (an index of 5000 digits) and OverflowError (`1e999` in a filter) escape."""
    import jsonpath

    try:
        return jsonpath.compile(text)
    except (ValueError, OverflowError):
        raise jsonpath.JSONPathError("a number in it is too large") from None


def json_path_reason(exc: jsonpath.JSONPathError) -> str:
    """The first line of python-jsonpath's message (its str() adds a drawing of the path)."""
    lines = str(exc.message or "").splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_singular(path: jsonpath.JSONPath | jsonpath.CompoundJSONPath) -> bool:
    import jsonpath

    return isinstance(path, jsonpath.JSONPath) and path.singular_query()


def parse_sort_by(text: str) -> tuple[SortKey, ...]:
    """Parse "priority DESC, name" into sort keys; raise InputError when malformed."""
    keys: list[SortKey] = []
    for part in text.split(","):
        words = part.split()
        descending = False
        if len(words) == 2 and words[1].lower() in ("asc", "desc"):
            descending = words[1].lower() == "desc"
        elif len(words) != 1:
            raise _input_error(
                f"map.sort_by '{text}' is invalid: '{part.strip()}' should be a field name "
                "optionally followed by ASC or DESC, as in 'priority DESC, name'"
            )
        keys.append(SortKey(words[0], _field_path(words[0], "sort_by"), descending))
    return tuple(keys)


def sort_values(values: list[Any], keys: tuple[SortKey, ...], text: str) -> list[Any]:
    """Stable multi-key sort; items missing a key (or null there) go last in either direction."""
    _require_objects(values, f"sort_by '{text}'")
    # One stable pass per key, least significant first, gives the combined ordering.
    for key in reversed(keys):
        get = field_getter(key.path)
        present: list[tuple[tuple[int, Any], Any]] = []
        missing: list[Any] = []
        for value in values:
            field_value = get(value)
            if field_value is None:
                missing.append(value)
            else:
                present.append((_sort_rank(field_value), value))
        present.sort(key=itemgetter(0), reverse=key.descending)
        values = [value for _, value in present]
        values.extend(missing)
    return values


def _sort_rank(value: Any) -> tuple[int, Any]:
    """Numbers < strings < booleans < arrays/objects, so mixed types never raise."""
    if isinstance(value, bool):
        return (2, value)
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (3, msgspec.json.encode(value, order="sorted"))


def distinct_values(values: list[Any], field: str) -> list[Any]:
    """Keep the first item for each value of `field`; items without the field are all kept."""
    _require_objects(values, f"distinct '{field}'")
    get = field_getter(_field_path(field, "distinct"))
    encode = msgspec.json.Encoder(order="sorted").encode
    seen: set[bytes] = set()
    kept: list[Any] = []
    for value in values:
        field_value = get(value)
        if field_value is None:
            kept.append(value)
            continue
        key = encode(field_value)
        if key not in seen:
            seen.add(key)
            kept.append(value)
    return kept


def _window(
    values: list[Any], offset: int, max_items: int | None, warnings: list[str]
) -> list[Any]:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise _input_error(f"map.offset must be a whole number of 0 or more, not {offset!r}")
    if max_items is not None and (
        isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0
    ):
        raise _input_error(f"max_items must be a whole number of 0 or more, not {max_items!r}")
    if offset:
        if values and offset >= len(values):
            warnings.append(f"offset {offset} skipped all {len(values)} items; the job has 0 items")
        values = values[offset:]
    if max_items is not None:
        values = values[:max_items]
    return values


def _with_ids(values: list[Any], id_field: str | None) -> list[WorkItem]:
    if id_field is None:
        return [WorkItem(index, f"item_{index}", value) for index, value in enumerate(values)]
    _require_objects(values, f"id_field '{id_field}'")
    get = field_getter(_field_path(id_field, "id_field"))
    first_index: dict[str, int] = {}
    items: list[WorkItem] = []
    for index, value in enumerate(values):
        item_id = _id_text(get(value), index, id_field)
        earlier = first_index.setdefault(item_id, index)
        if earlier != index:
            raise _input_error(
                f"items {earlier} and {index} have the same id '{item_id}' "
                f"(map.id_field '{id_field}'); item ids must be unique"
            )
        items.append(WorkItem(index, item_id, value))
    return items


def _id_text(raw: Any, index: int, id_field: str) -> str:
    if raw is None:
        raise _input_error(
            f"item {index} has no value for map.id_field '{id_field}'; every item needs one"
        )
    if isinstance(raw, str):
        # Ids appear in branch names, file names and line-oriented logs.
        if not raw.strip() or not raw.isprintable():
            raise _input_error(
                f"item {index} has id {_preview(raw)} (map.id_field '{id_field}'); an id must "
                "be non-empty text without control characters"
            )
        return raw
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return str(raw)
    raise _input_error(
        f"item {index} has id {_preview(raw)} (map.id_field '{id_field}'); an id must be a "
        "string or a number"
    )


# ---- shared details ----------------------------------------------------------------------------


def _input_error(message: str, hint: str | None = None) -> InputError:
    """An InputError on one line, whatever the input it quotes holds: a multi-line command
    (`input: |`), a path, a key or a field with a line break in it."""
    return InputError(unbroken(message), hint=hint)


def _field_path(text: str, setting: str) -> FieldPath:
    try:
        return parse_field_path(text)
    except ValueError as exc:
        raise _input_error(f"map.{setting} '{text}' is not a field path: {exc}") from None


def _require_objects(values: list[Any], use: str) -> None:
    for index, value in enumerate(values):
        if not isinstance(value, dict):
            raise _input_error(
                f"item {index} is not an object ({_preview(value)}), so {use} cannot apply"
            )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _preview(value: Any, limit: int = 60) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _keys(document: dict[str, Any]) -> str:
    keys = list(document)
    shown = ", ".join(str(key) for key in keys[:_KEYS_SHOWN])
    if len(keys) > _KEYS_SHOWN:
        shown += f" and {len(keys) - _KEYS_SHOWN} more"
    return shown
