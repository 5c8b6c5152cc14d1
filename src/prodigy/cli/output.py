"""How the commands write to the terminal: status lines to stdout, warnings to stderr, tables,
and how much to say (`-v`). Every command writes through here; wording of values (plurals,
times, sizes) is `prodigy.display`'s, so the engine words them the same way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from prodigy.store import jobs_root


class Settings:
    """The global options given before the command (`prodigy -v ...`)."""

    verbose = 0
    yes = False  # -y: answer yes to every question (the final merge of worktree isolation)
    executor: str | None = None  # --executor, as given (the workflow's `executor:` otherwise)


def say(text: str = "") -> None:
    click.echo(text)


def warn(text: str) -> None:
    click.echo(text, err=True)


def say_no_jobs(repo: str) -> None:
    say(f"No jobs for repository {repo!r} (looked in {jobs_root(repo)}).")


def quiet_broken_pipe() -> int:
    """The reader (`head`, say) went away: stop quietly, and keep Python's exit flush silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """The one way listings are printed: a rich table on a terminal, plain aligned columns
    (greppable, stable) when piped."""
    if sys.stdout.isatty():
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        rich_table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for column in columns:
            rich_table.add_column(column, no_wrap=True)
        for row in rows:
            # Text, not str: a `[` in a workflow name must not be read as rich markup.
            rich_table.add_row(*(Text(cell) for cell in row))
        console = Console()
        # Rich cuts cells with "…" to fit the terminal, but ids and times are only useful
        # whole: on a narrow terminal let the terminal wrap the lines instead.
        console.width = max(console.width, sum(_widths(columns, rows)) + 3 * len(columns))
        console.print(rich_table)
        return
    widths = _widths(columns, rows)
    for line in [columns, *rows]:
        say("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _widths(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
