"""How values are worded in messages and listings: one-line text, counted nouns, times, sizes.

Pure text, no printing, so every layer (the engine's messages, the commands' tables) words a
thing the same way.
"""

from __future__ import annotations

from datetime import datetime


def one_line(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis, so a message stays one
    sentence and a table row stays one row."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# Every character at which str.splitlines() breaks a line.
_LINE_BREAKS = str.maketrans(dict.fromkeys("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029", " "))


def unbroken(text: str) -> str:
    """`text` with each line break replaced by a space: a user's text quoted in a one-sentence
    error stays on one line, and a column number still points at the same character."""
    return text.translate(_LINE_BREAKS)


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 item`, `0 items`, `2 failed items`: the count and its noun (phrase), agreeing;
    `many` for a noun not made plural by an s (`branches`)."""
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


def format_time(value: datetime | None) -> str:
    """A moment in local time to the second, `-` when unknown."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def display_time(ts: str, millis: bool = True) -> str:
    """`2026-11-27T03:01:02.123+01:00` as `2026-11-27 03:01:02.123`, the writer's wall clock."""
    try:
        moment = datetime.fromisoformat(ts)
    except ValueError:
        return ts
    shown = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{shown}.{moment.microsecond // 1000:03d}" if millis else shown


def byte_size(n: int) -> str:
    """`512 B`, `1.5 KB`, `2.0 GB`."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
