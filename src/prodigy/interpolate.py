"""`${...}` variables: finding the names a template uses and rendering it with values.

`${name}` is raw text substitution (SPEC §8); `${sh:name}` is the same value shell-quoted, safe
for any item data. `$${x}` is the escape for a literal `${x}` and `$NAME` without braces is left
alone for the shell. A name that has no value raises.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from prodigy.display import unbroken
from prodigy.errors import MissingVariable, UnusableValue

# `$${` is tried first so that an escaped reference is never also read as a real one.
_TOKEN = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
_ROOT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A field is anything up to the next separator, so that item keys such as `file-name` work.
_SEGMENT = re.compile(r"\.([^.\[\]{}\s]+)|\[(\d+)\]")

PathSegment = str | int
# `${sh:name}`: the value as one shell word. A word and a colon at the start is a form, known or
# not, so `${HOME:-x}` (bash's default syntax) is refused; a colon after a dot is part of a
# field's name (`${item.ns:key}`).
FORMS: dict[str, Callable[[str], str]] = {"sh": shlex.quote}
_FORM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*|):")
# Far past any list's length, and well under int()'s limit on the digits of a string.
_MAX_INDEX_DIGITS = 100


def referenced_names(template: str) -> list[str]:
    """Every `${name}` in `template`, in order of appearance (escaped `$${x}` excluded)."""
    return [m.group(1) for m in _TOKEN.finditer(template) if m.group(1) is not None]


@dataclass(frozen=True)
class Reference:
    """One `${...}`: its form (`None` for raw text, `"sh"` for shell-quoted) and its path."""

    form: str | None
    root: str
    path: tuple[PathSegment, ...]


def parse_reference(name: str) -> Reference:
    """`sh:item.list[0]` -> Reference("sh", "item", ("list", 0)); ValueError if malformed."""
    form = _FORM.match(name)
    if form is None:
        return Reference(None, *split_name(name))
    prefix, rest = form.group(1), name[form.end() :]
    shown = unbroken(name)
    if prefix not in FORMS:
        known = ", ".join(f"${{{f}:NAME}}" for f in FORMS)
        raise ValueError(
            f"${{{shown}}} is not a valid variable reference (the only prefixed form is {known}, "
            "the value shell-quoted)"
        )
    if not rest:
        raise ValueError(
            f"${{{shown}}} names no variable (write one after '{prefix}:', "
            f"as in ${{{prefix}:item.path}})"
        )
    root, path = split_name(rest)
    return Reference(prefix, root, path)


def split_name(name: str) -> tuple[str, tuple[PathSegment, ...]]:
    """Split `item.list[0].a` into `("item", ("list", 0, "a"))`; ValueError if malformed."""
    # `${...}` may span lines in a template; the message names it on one line.
    invalid = f"${{{unbroken(name)}}} is not a valid variable reference"
    root = _ROOT.match(name)
    if root is None:
        raise ValueError(invalid)
    path: list[PathSegment] = []
    pos = root.end()
    while pos < len(name):
        seg = _SEGMENT.match(name, pos)
        if seg is None:
            raise ValueError(invalid)
        field, index = seg.groups()
        if index is not None and len(index) > _MAX_INDEX_DIGITS:
            raise ValueError(invalid)  # int() refuses it, and no list is that long
        path.append(field if field is not None else int(index))
        pos = seg.end()
    return root.group(0), tuple(path)


def to_text(value: Any) -> str:
    """How a value appears in a command: strings raw, JSON spelling for everything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        # str() of an int is exact at any size; going through float would round 30-digit ids.
        return str(value)
    if value is None:
        return "null"
    return msgspec.json.encode(value).decode()


def render(template: str, variables: Mapping[str, Any], *, for_command: bool = False) -> str:
    """Replace every `${name}` in `template`; raise MissingVariable for a name with no value.

    `for_command`: the text goes to the OS (a command line, an environment value, a path),
    which cannot hold a NUL character; a value with one raises UnusableValue naming it.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "${"
        try:
            ref = parse_reference(name)
        except ValueError as exc:
            raise MissingVariable(name, str(exc)) from None
        text = to_text(_resolve(name, ref, variables))
        if for_command and "\0" in text:
            raise UnusableValue(
                f"the value of ${{{unbroken(name)}}} contains a NUL character, which no "
                "command line or environment variable can hold; remove it from the input"
            )
        return text if ref.form is None else FORMS[ref.form](text)

    return _TOKEN.sub(substitute, template)


def _resolve(name: str, ref: Reference, variables: Mapping[str, Any]) -> Any:
    root, path = ref.root, ref.path
    if root in variables:
        value = variables[root]
    elif not path and root in os.environ:
        return os.environ[root]
    else:
        raise MissingVariable(name)
    for depth, segment in enumerate(path):
        found, value = _step_into(value, segment)
        if not found:
            raise MissingVariable(name, _missing_message(name, root, path[: depth + 1]))
    return value


def _step_into(value: Any, segment: PathSegment) -> tuple[bool, Any]:
    if isinstance(value, Mapping):
        if isinstance(segment, str) and segment in value:
            return True, value[segment]
        return False, None
    if isinstance(value, list | tuple):
        index = segment if isinstance(segment, int) else _as_index(segment)
        if index is not None and index < len(value):
            return True, value[index]
    return False, None


def _as_index(segment: str) -> int | None:
    # `${item.list.0}` is accepted as well as `${item.list[0]}`. isdecimal, not isdigit: int()
    # refuses digits such as `²`.
    if not segment.isdecimal() or len(segment) > _MAX_INDEX_DIGITS:
        return None
    return int(segment)


def _path_text(path: tuple[PathSegment, ...]) -> str:
    text = ""
    for segment in path:
        text += f"[{segment}]" if isinstance(segment, int) else f".{segment}"
    return text.removeprefix(".")


def _missing_message(name: str, root: str, path: tuple[PathSegment, ...]) -> str:
    if root == "item":
        return f"item field '{_path_text(path)}' is missing from this item (variable ${{{name}}})"
    return f"variable ${{{name}}} is not defined ('{root}' has no field '{_path_text(path)}')"
