"""Option types the commands share: a malformed value is a usage error (exit 2) in one
sentence, like every other bad flag.
"""

from __future__ import annotations

from datetime import timedelta

import click

from prodigy.durations import parse_duration
from prodigy.errors import UsageError


class DurationParam(click.ParamType[timedelta, object]):
    """`--older-than 7d`: a malformed duration is a usage error (exit 2)."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except UsageError as exc:
            self.fail(exc.message, param, ctx)
