"""`prodigy sessions show [JOB_ID]`: the jobs of this repository, or one job in detail.

Also home of `print_table`, the one way listings are printed: a rich table on a terminal,
plain aligned columns (greppable, stable) when piped.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from prodigy.display import format_time
from prodigy.store import find_job, find_repository, jobs_root, list_jobs
from prodigy.summary import JobSummary, failed_split, summarize


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if sys.stdout.isatty():
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for column in columns:
            table.add_column(column, no_wrap=True)
        for row in rows:
            # Text, not str: a `[` in a workflow name must not be read as rich markup.
            table.add_row(*(Text(cell) for cell in row))
        console = Console()
        # Rich cuts cells with "…" to fit the terminal, but ids and times are only useful
        # whole: on a narrow terminal let the terminal wrap the lines instead.
        console.width = max(console.width, sum(_widths(columns, rows)) + 3 * len(columns))
        console.print(table)
        return
    widths = _widths(columns, rows)
    for line in [columns, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _widths(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]


def repository_summaries() -> tuple[str, list[JobSummary]]:
    """The current repository's name and its jobs, newest first."""
    repo = find_repository(Path.cwd())
    return repo.name, [summarize(job) for job in reversed(list_jobs(repo.name))]


def say_no_jobs(repo: str) -> None:
    click.echo(f"No jobs for repository {repo!r} (looked in {jobs_root(repo)}).")


def _progress(s: JobSummary) -> str:
    c = s.counts
    return f"{c.succeeded}/{c.failed}/{c.total}"


def _details(s: JobSummary) -> list[tuple[str, str]]:
    c = s.counts
    lines = [
        ("Job", s.job_id),
        ("Workflow", f"{s.workflow_name or '-'} ({s.workflow_path or 'path unknown'})"),
        ("Status", s.status_label),
        ("Phase", s.phase),
        (
            "Items",
            f"{c.succeeded} succeeded, {c.failed} failed ({failed_split(c)}), "
            f"{c.pending + c.running} pending, {c.total} total",
        ),
        ("DLQ", f"{c.dead} item{'s' if c.dead != 1 else ''}"),
    ]
    on_disk = ", ".join(f"v{v}" for v in s.checkpoint_versions) or "none"
    current = f"v{s.version}" if s.version is not None else "unknown"
    lines += [
        ("Checkpoint", f"{current} (files on disk: {on_disk})"),
        ("Started", format_time(s.started_at)),
        ("Last update", format_time(s.updated_at)),
        (
            "Cost",
            f"${s.cost_usd:.4f} ({s.input_tokens} input / {s.output_tokens} output tokens)",
        ),
        ("Working directory", s.workdir or "-"),
        ("State directory", str(s.state_dir)),
    ]
    if s.holder is not None:
        lines.append(("Lock", f"held by {s.holder.describe()}"))
    if s.counts_source == "metadata":
        lines.append(("Note", "counts are from metadata.json; the journal could not be read"))
    lines += [("Problem", problem) for problem in s.problems]
    if not s.finished and s.holder is None and s.status != "unknown":
        lines.append(("Next", f"prodigy resume-job {s.job_id}"))
    if c.dead:
        lines.append(("DLQ items", f"prodigy dlq list {s.job_id}"))
    return lines


@click.group("sessions")
def sessions() -> None:
    """Jobs of this repository and where each one stands."""


@sessions.command("show")
@click.argument("job_id", required=False)
def show(job_id: str | None) -> int:
    """Table of this repository's jobs, newest first; with JOB_ID, that job in detail."""
    if job_id is not None:
        details = _details(summarize(find_job(job_id)))
        width = max(len(label) for label, _ in details) + 2
        for label, value in details:
            click.echo(f"{label + ':':<{width}}{value}")
        return 0
    repo, jobs = repository_summaries()
    if not jobs:
        say_no_jobs(repo)
        return 0
    print_table(
        ["JOB ID", "WORKFLOW", "STATUS", "PHASE", "DONE/FAILED/TOTAL", "STARTED", "LAST UPDATE"],
        [
            [
                s.job_id,
                s.workflow_name or "-",
                s.status_label,
                s.phase,
                _progress(s),
                format_time(s.started_at),
                format_time(s.updated_at),
            ]
            for s in jobs
        ],
    )
    return 0
