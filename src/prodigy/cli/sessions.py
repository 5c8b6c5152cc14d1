"""`prodigy sessions show [JOB_ID]`: the jobs of this repository, or one job in detail."""

from __future__ import annotations

from pathlib import Path

import click

from prodigy.cli.output import say, say_no_jobs, table, warn
from prodigy.display import format_time, plural
from prodigy.store import find_job, find_repository
from prodigy.summary import JobSummary, failed_split, repository_summaries, summarize


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
            f"{c.pending} pending, {c.total} total",
        ),
        ("DLQ", plural(c.dead, "item")),
    ]
    on_disk = ", ".join(f"v{v}" for v in s.checkpoint_versions) or "none"
    current = f"v{s.version}" if s.version is not None else "unknown"
    lines += [
        ("Checkpoint", f"{current} (files on disk: {on_disk})"),
        ("Started", format_time(s.started_at)),
        ("Last update", format_time(s.updated_at)),
        (
            "Cost",
            f"${s.cost_usd:.4f} ({s.input_tokens} input / "
            f"{plural(s.output_tokens, 'output token')})",
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
            say(f"{label + ':':<{width}}{value}")
        return 0
    repo = find_repository(Path.cwd()).name
    jobs = repository_summaries(repo)
    if not jobs:
        say_no_jobs(repo)
        return 0
    table(
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
    for s in jobs:
        for problem in s.problems:
            warn(f"warning: job {s.job_id}: {problem}.")
    return 0
