"""Durations typed by people, one grammar in two dialects: `WORKFLOW_SYNTAX` for a workflow's
timeouts and delays (`500ms`, `1.5m`, a bare `45` seconds) and the strict `AGE_SYNTAX` of
`--older-than` (`30m`, `7d`, `1h30m`; a bare `7` is refused, so a typo never deletes too much).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta

from prodigy.errors import UsageError

UNIT_SECONDS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
WORKFLOW_UNIT_SECONDS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# `\d`, not [0-9]: YAML authors always could write any Unicode digit that float() reads.
_DECIMAL = r"\d+(?:\.\d*)?|\.\d+"
_WHOLE = r"[0-9]+"


class DurationSyntax:
    """One dialect of the grammar: its units and which liberties it allows."""

    def __init__(
        self,
        units: Mapping[str, float],
        *,
        fractions: bool = False,
        bare_seconds: bool = False,
        compound: bool = False,
        space_before_unit: bool = False,
    ) -> None:
        if compound and bare_seconds:
            raise ValueError("a compound duration needs a unit on every part (is `12` 1+2?)")
        self.units = dict(units)
        self.fractions = fractions
        number = _DECIMAL if fractions else _WHOLE
        # Longest first, so `ms` is never read as `m` followed by a stray `s`.
        unit = "|".join(sorted(self.units, key=len, reverse=True))
        gap = r"\s*" if space_before_unit else ""
        part = f"({number}){gap}({unit}){'?' if bare_seconds else ''}"
        self._part = re.compile(part)
        self._whole = re.compile(f"(?:{part})+" if compound else part)

    def seconds(self, text: str) -> float | None:
        """`text` in seconds, or None when it is not a duration of this dialect (each caller
        words its own error, in its own place). Whole numbers add up exactly: `7d` is 604800."""
        compact = text.strip()
        if not self._whole.fullmatch(compact):
            return None
        total: float = 0
        for number, unit in self._part.findall(compact):
            amount = float(number) if self.fractions else int(number)
            total += amount * self.units[unit or "s"]
        return total


WORKFLOW_SYNTAX = DurationSyntax(
    WORKFLOW_UNIT_SECONDS, fractions=True, bare_seconds=True, space_before_unit=True
)
AGE_SYNTAX = DurationSyntax(UNIT_SECONDS, compound=True)


def parse_duration(text: str) -> timedelta:
    """`7d` -> 7 days (`AGE_SYNTAX`); raises UsageError (exit 2) for anything else."""
    try:
        seconds = AGE_SYNTAX.seconds(text)
    except ValueError:  # more digits than int() will read: far beyond timedelta anyway
        seconds = float("inf")
    if seconds is None:
        raise UsageError(
            f"{text!r} is not a duration: write a whole number followed by a unit "
            "(s, m, h, d or w), for example 30m, 12h, 7d or 2w."
        )
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise UsageError(f"The duration {text!r} is too long to be meaningful.") from None


def format_duration(delta: timedelta) -> str:
    """A short, rounded reading of an age: `45s`, `12m`, `3h 5m`, `8d 2h`."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"
