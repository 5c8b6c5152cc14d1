"""How values are worded in messages and listings: one-line text, times.

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


def format_time(value: datetime | None) -> str:
    """A moment in local time to the second, `-` when unknown."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"
