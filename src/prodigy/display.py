"""How long values are fitted into one-line messages and listings."""

from __future__ import annotations


def one_line(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis, so a message stays one
    sentence and a table row stays one row."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 item`, `2 items`: a count with its noun agreeing."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
