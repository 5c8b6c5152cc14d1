"""The `PRODIGY_*` variables an agent's commands get: the job, the item, and each field.

Item data reaches a shell safely through the environment: `"$PRODIGY_ITEM_PATH"` is expanded
by the shell after parsing, so no value is ever read as code. Pure functions over plain data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from prodigy.errors import UnusableValue
from prodigy.interpolate import to_text

ITEM_PREFIX = "PRODIGY_ITEM_"
# Scalar items (a string, a number...) have no fields: their value is this one variable.
SCALAR_VARIABLE = "PRODIGY_ITEM_VALUE"
# Already taken by the item's id and index; a field of that name keeps only ${item.id}.
RESERVED_VARIABLES = frozenset({"PRODIGY_ITEM_ID", "PRODIGY_ITEM_INDEX"})
# Linux refuses to start a program when one "NAME=value" string (with its NUL) is longer than
# MAX_ARG_STRLEN, 32 pages; the spawn then fails with a bare "Argument list too long".
ENV_STRING_LIMIT = 128 * 1024

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
_IDENTIFIER = re.compile(r"[A-Z_][A-Z0-9_]*")


def field_variable(key: str) -> str | None:
    """`file-name` -> `PRODIGY_ITEM_FILE_NAME`; None when the key gives no identifier (`2nd`)."""
    # Replace before upper-casing: `ß`.upper() is `SS`, and only ASCII is portable in env names.
    suffix = _NOT_ALNUM.sub("_", key).upper()
    if _IDENTIFIER.fullmatch(suffix) is None:
        return None
    return ITEM_PREFIX + suffix


def field_variables(data: Any) -> dict[str, str]:
    """One variable per top-level field of an object item (strings raw, other values as JSON);
    `PRODIGY_ITEM_VALUE` for any other item, spelled as `${item}` renders it.

    Two fields that map to one name (`file-name`, `file_name`) give neither: which of them the
    variable held would depend on key order, and a wrong value is worse than a missing one.
    """
    if not isinstance(data, dict):
        return {SCALAR_VARIABLE: to_text(data)}
    keys_of: dict[str, list[str]] = {}
    for key in data:
        name = field_variable(key)
        if name is not None and name not in RESERVED_VARIABLES:
            keys_of.setdefault(name, []).append(key)
    return {name: to_text(data[keys[0]]) for name, keys in keys_of.items() if len(keys) == 1}


def prodigy_variables(
    job_id: str, item_id: str, index: int, attempt: int, data: Any
) -> dict[str, str]:
    """Every `PRODIGY_*` variable of one agent attempt; UnusableValue if one cannot be passed."""
    fields = field_variables(data)
    variables = {
        "PRODIGY_JOB_ID": job_id,
        "PRODIGY_ITEM_ID": item_id,
        "PRODIGY_ITEM_INDEX": str(index),
        "PRODIGY_ATTEMPT": str(attempt),
        "PRODIGY_ITEM": msgspec.json.encode(data).decode(),
        **fields,
    }
    # Fields first: "item field 'body' is too large" says more than "the item is too large".
    check_passable({**fields, **variables}, _origin(data))
    return variables


def check_passable(variables: Mapping[str, str], origin: Mapping[str, str]) -> None:
    """Raise UnusableValue for a value holding NUL or past the size of one variable.

    `origin` names what a variable holds, for the message ("item field 'path'").
    """
    for name, value in variables.items():
        what = origin.get(name, name)
        if "\0" in value:
            raise UnusableValue(
                f"{what} contains a NUL character, which no environment variable ({name}) can "
                "hold; remove NUL characters from the input"
            )
        size = len(name) + 1 + len(value.encode("utf-8", errors="surrogateescape")) + 1
        if size > ENV_STRING_LIMIT:
            raise UnusableValue(
                f"{what} is too large for the environment variable {name} ({size} bytes; "
                f"Linux allows {ENV_STRING_LIMIT} per variable); keep large data in files and "
                "put their paths in the items"
            )


def _origin(data: Any) -> dict[str, str]:
    origin = {"PRODIGY_ITEM": "the item (as JSON)", SCALAR_VARIABLE: "the item"}
    if isinstance(data, dict):
        for key in data:
            name = field_variable(key)
            if name is not None:
                origin[name] = f"item field {key!r}"
    return origin
