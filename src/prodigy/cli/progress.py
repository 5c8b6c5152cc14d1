"""`prodigy progress [JOB_ID]`: where a job stands, as a terminal summary, one JSON object, a
self-contained report file (`--export`), or a live dashboard (`--web PORT`).

Everything is read from the job directory without taking its lock or writing to it, so it is
safe beside a running `cook` or `resume`. The page's libraries are imported only by the
options that need them: Jinja2 for an HTML export, aiohttp (the `web` extra) for `--web`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from pathlib import Path

import click

from prodigy.cli.output import quiet_broken_pipe, say, warn
from prodigy.display import one_line, plural
from prodigy.errors import ProdigyError, UsageError
from prodigy.report import (
    ProgressReport,
    encode_report,
    moment_text,
    read_report,
    span_text,
)
from prodigy.store import JobDir, atomic_write, find_job, find_repository, jobs_root, list_jobs

BAR_WIDTH = 40
LISTED = 5  # slowest items, failing items, DLQ signatures in the terminal summary
LABEL_WIDTH = 10


def _newest_job() -> JobDir:
    repo = find_repository(Path.cwd())
    jobs = list_jobs(repo.name)
    if not jobs:
        raise ProdigyError(
            f"No jobs found for repository {repo.name!r} (looked in {jobs_root(repo.name)}).",
            hint="Pass a job id, or start a job with `prodigy cook WORKFLOW.yaml`.",
        )
    return jobs[-1]


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _bar(report: ProgressReport, fancy: bool) -> str:
    c = report.counts
    if not c.total:
        return ""
    done = round(BAR_WIDTH * c.finished / c.total)
    full, empty = ("█", "░") if fancy else ("#", ".")
    return f"[{full * done}{empty * (BAR_WIDTH - done)}] {c.percent_done}%"


Lines = list[tuple[str, str]]


def summary_lines(report: ProgressReport, fancy: bool = False) -> Lines:
    """The terminal summary as (label, text) lines; a label of "" continues the line above."""
    return [
        *_header_lines(report),
        *_count_lines(report, fancy),
        *_spend_lines(report),
        *_item_lines(report),
        *_dlq_lines(report),
        *[("Problem", problem) for problem in report.problems],
        *[("Next", command) for command in _next_commands(report)],
    ]


def _header_lines(report: ProgressReport) -> Lines:
    j = report.job
    status = j.status + (" (crashed)" if j.crashed else "")
    when = f"started {moment_text(j.started_at)}"
    if j.elapsed_s is not None:
        when += f", {span_text(j.elapsed_s)} {'elapsed' if j.live else 'in all'}"
    lines = [
        ("Job", f"{j.id} ({j.workflow or 'unnamed workflow'})"),
        ("Status", f"{status}, phase {j.phase}, {when}"),
    ]
    if j.holder:
        lines.append(("", f"run by {j.holder}"))
    return lines


def _count_lines(report: ProgressReport, fancy: bool) -> Lines:
    j, c, p = report.job, report.counts, report.pace
    failed = f"{c.failed} failed ({c.dead_lettered} in DLQ, {c.retriable} retriable"
    failed += f", {c.skipped} skipped)" if c.skipped else ")"
    lines = [
        (
            "Items",
            f"{c.finished}/{c.total} done: {c.succeeded} succeeded, {failed}, "
            f"{c.running} running, {c.waiting} waiting",
        )
    ]
    if c.total:
        lines.append(("", _bar(report, fancy)))
    if p.items_per_s is not None:
        rate = f"{p.items_per_s:.2f} items/s over the last {span_text(p.window_s)}"
        if p.eta_s is not None:
            rate += f"; ETA {span_text(p.eta_s)} (at {moment_text(p.eta_at)})"
        elif j.live and c.remaining:
            rate += "; ETA unknown until items finish"
        lines.append(("Rate", rate))
    return lines


def _spend_lines(report: ProgressReport) -> Lines:
    c, cost = report.counts, report.cost
    if not (cost.total_usd or cost.input_tokens or cost.output_tokens):
        return []
    text = (
        f"{_usd(cost.total_usd)} so far ({cost.input_tokens:,} input / "
        f"{cost.output_tokens:,} output tokens)"
    )
    if cost.per_item_usd is not None:
        text += f", {_usd(cost.per_item_usd)} per item"
    if cost.projected_usd is not None and c.remaining:
        text += f", {_usd(cost.projected_usd)} projected"
    return [("Cost", text)]


def _item_lines(report: ProgressReport) -> Lines:
    lines: Lines = []
    for index, slow in enumerate(report.slowest[:LISTED]):
        lines.append(
            (
                "Slowest" if index == 0 else "",
                f"{slow.item_id}  {span_text(slow.duration_s)}  "
                f"(attempt {slow.attempt}, {slow.outcome})",
            )
        )
    for index, failing in enumerate(report.failing[:LISTED]):
        lines.append(
            (
                "Failing" if index == 0 else "",
                f"{failing.item_id}  {failing.status}, attempt {failing.attempts}/"
                f"{failing.limit}: {failing.error_kind}: {one_line(failing.error, 100)}",
            )
        )
    hidden = len(report.failing) - LISTED + report.failing_more
    if hidden > 0:
        lines.append(("", f"and {plural(hidden, 'more failing item')}"))
    return lines


def _dlq_lines(report: ProgressReport) -> Lines:
    d = report.dlq
    if not d.total:
        return []
    lines = [
        (
            "DLQ",
            f"{plural(d.total, 'item')} ({d.retriable} retriable, "
            f"{d.manual_review} need manual review), by error signature:",
        )
    ]
    for group in d.by_signature[:LISTED]:
        shown = ", ".join(group.item_ids[:3])
        more = group.count - min(3, len(group.item_ids))
        who = f"{shown} and {more} more" if more > 0 else shown
        lines.append(
            (
                "",
                f"{group.count:>5} x {group.error_kind} [{group.signature}] "
                f"{one_line(group.sample_error, 80)} ({who})",
            )
        )
    if len(d.by_signature) > LISTED:
        lines.append(("", f"and {plural(len(d.by_signature) - LISTED, 'more signature')}"))
    return lines


def _next_commands(report: ProgressReport) -> list[str]:
    j = report.job
    commands = []
    if j.live:
        commands.append(f"prodigy progress {j.id} --web 8080   (a live dashboard)")
    elif j.status != "completed" and j.status != "unknown":
        commands.append(f"prodigy resume-job {j.id}")
    if report.dlq.total:
        commands.append(f"prodigy dlq list {j.id}")
    return commands


def print_summary(report: ProgressReport) -> None:
    fancy = sys.stdout.isatty()
    for label, text in summary_lines(report, fancy):
        say(f"{label:<{LABEL_WIDTH}}{text}".rstrip())


def export(report: ProgressReport, path: Path, quiet_stdout: bool = False) -> None:
    """Write the report file; `quiet_stdout` says so on stderr (stdout carries JSON)."""
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        from prodigy.web.page import render_page

        data = render_page(report).encode()
    elif suffix == ".json":
        data = encode_report(report)
    else:
        raise UsageError(
            f"--export writes an .html or a .json file, and {str(path)!r} is neither.",
            hint="Name the file report.html or report.json.",
        )
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise ProdigyError(f"Cannot write the report to {path}: {exc.strerror or exc}.") from None
    message = f"Wrote the report of job {report.job.id} to {path}."
    warn(message) if quiet_stdout else say(message)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_dashboard(job: JobDir, host: str, port: int) -> int:
    try:
        from prodigy.web.server import serve
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "aiohttp":
            raise
        raise ProdigyError(
            "The live dashboard needs the web extra, which is not installed.",
            hint="Install it with `pip install 'prodigy[web]'`, or export a report with "
            "`--export report.html`.",
        ) from None
    if not _is_loopback(host):
        warn(
            f"warning: serving on {host}: anyone who can reach this machine on port {port} can "
            "read this job's items, errors and costs (the dashboard has no login)."
        )

    def ready(url: str) -> None:
        say(f"Dashboard of job {job.job_id}: {url}  (Ctrl-C to stop)")
        sys.stdout.flush()

    try:
        asyncio.run(serve(job, host, port, ready))
    except KeyboardInterrupt:
        say("Stopped serving the dashboard.")
    return 0


@click.command("progress")
@click.argument("job_id", required=False)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="A summary for people, or the same as one JSON object.",
)
@click.option(
    "--export",
    "export_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write a self-contained report: FILE.html (opens offline) or FILE.json.",
)
@click.option(
    "--web",
    "port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Serve a live dashboard on 127.0.0.1:PORT until Ctrl-C (0: any free port).",
)
@click.option(
    "--host",
    metavar="HOST",
    help="Address for --web instead of 127.0.0.1 (others on the network can then see it).",
)
def progress(
    job_id: str | None,
    output_format: str,
    export_path: Path | None,
    port: int | None,
    host: str | None,
) -> int:
    """Where a job stands: counts, rate, ETA, cost, slowest and failing items, the DLQ
    (default: the newest job of this repository)."""
    if host is not None and port is None:
        raise UsageError("--host only applies to the dashboard.", hint="Add --web PORT.")
    job = find_job(job_id) if job_id else _newest_job()
    if port is not None:
        if export_path is not None:
            export(read_report(job), export_path)
        return serve_dashboard(job, host or "127.0.0.1", port)
    report = read_report(job)
    if export_path is not None:
        export(report, export_path, quiet_stdout=output_format == "json")
        if output_format == "text":
            return 0
    try:
        if output_format == "json":
            sys.stdout.write(encode_report(report).decode())
        else:
            print_summary(report)
    except BrokenPipeError:
        return quiet_broken_pipe()
    return 0
