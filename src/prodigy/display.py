"""How long values are fitted into one-line messages and listings."""

from __future__ import annotations


def one_line(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis, so a message stays one
    sentence and a table row stays one row."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
