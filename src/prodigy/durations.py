"""Durations typed by people: `45s`, `30m`, `12h`, `7d`, `2w` (and sums such as `1h30m`).

Used by `checkpoints clean --older-than`; parsing is strict so a typo never deletes more than
the user meant (a bare `7` could mean seconds or days, so it is refused).
"""

from __future__ import annotations

import re
from datetime import timedelta

from prodigy.errors import UsageError

UNIT_SECONDS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

_PART = re.compile(r"([0-9]+)([smhdw])")
_WHOLE = re.compile(r"(?:[0-9]+[smhdw])+")


def parse_duration(text: str) -> timedelta:
    """`7d` -> 7 days; raises UsageError (exit 2) for anything that is not number+unit pairs."""
    compact = text.strip()
    if not _WHOLE.fullmatch(compact):
        raise UsageError(
            f"{text!r} is not a duration: write a whole number followed by a unit "
            "(s, m, h, d or w), for example 30m, 12h, 7d or 2w."
        )
    seconds = sum(int(n) * UNIT_SECONDS[unit] for n, unit in _PART.findall(compact))
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
