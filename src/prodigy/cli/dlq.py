"""`prodigy dlq ...`: inspect a job's dead letter queue (status, list, show).

These commands only read the job (no lock taken); the DLQ itself is modelled in prodigy.dlq.
"""

from __future__ import annotations

from typing import Any

import click
import msgspec

from prodigy.cli.output import say, table, warn
from prodigy.display import display_time, one_line, plural
from prodigy.dlq import DlqEntry, DlqSummary, dlq_entries, lookup_item, status_phrase, summarize
from prodigy.errors import ProdigyError
from prodigy.job import load_state
from prodigy.state import Attempt, ItemStatus
from prodigy.store import JobDir, find_job

LIST_ERROR_CHARS = 60
SAMPLE_ERROR_CHARS = 80
# Attempt fields `show` lays out itself; any other non-empty field is printed as `name: value`.
_SHOWN_ATTEMPT_FIELDS = frozenset(
    {
        "attempt",
        "ok",
        "started_at",
        "duration_s",
        "exit_code",
        "timed_out",
        "error",
        "error_kind",
        "signature",
        "failed_step",
        "output",
        "stderr",
        "spend",
    }
)


@click.group("dlq")
def dlq() -> None:
    """Inspect the dead letter queue: items whose attempts are used up."""


# ---- status ------------------------------------------------------------------------------------


def _print_summary(job: JobDir, summary: DlqSummary) -> None:
    say(f"DLQ of job {job.job_id}: {plural(summary.total, 'item')}")
    say(f"- Retriable (a plain reprocess may help): {summary.retriable}")
    say(f"- Needing manual review: {summary.manual_review}")
    say("")
    say("By error kind:")
    table(["KIND", "ITEMS"], [[g.error_kind, str(g.count)] for g in summary.by_kind])
    say("")
    say("By error signature:")
    table(
        ["SIGNATURE", "ITEMS", "KIND", "SAMPLE ERROR"],
        [
            [g.signature, str(g.count), g.error_kind, one_line(g.sample_error, SAMPLE_ERROR_CHARS)]
            for g in summary.by_signature
        ],
    )
    say("")
    say(f"List them: prodigy dlq list {job.job_id}")
    if summary.retriable:
        say(f"Retry them: prodigy dlq reprocess {job.job_id}")
    if summary.manual_review:
        say("Items needing manual review are skipped by `dlq reprocess` unless --force.")


@dlq.command("status")
@click.argument("job_id")
def status(job_id: str) -> int:
    """Counts of JOB_ID's DLQ: retriable vs manual review, by error kind and by signature."""
    job = find_job(job_id)
    state = load_state(job)
    entries = dlq_entries(job, state)
    if entries:
        _print_summary(job, summarize(entries))
    else:
        say(f"No items in the DLQ of job {job.job_id}.")
    waiting = state.count(ItemStatus.RETRIABLE)
    if waiting:
        one = waiting == 1
        say(
            f"{plural(waiting, 'more item')} failed but still {'has' if one else 'have'} "
            f"attempts left (not in the DLQ); `prodigy resume-job {job.job_id}` retries "
            f"{'it' if one else 'them'}."
        )
    return 0


# ---- list --------------------------------------------------------------------------------------


def entry_json(entry: DlqEntry) -> dict[str, Any]:
    last = entry.last
    return {
        "item_id": entry.item_id,
        "index": entry.index,
        "attempts": entry.attempt_count,
        "error_kind": entry.error_kind,
        "last_error": entry.last_error,
        "last_attempt_at": entry.last_attempt_at,
        "exit_code": last.exit_code if last is not None else None,
        "timed_out": last.timed_out if last is not None else False,
        "failed_step": last.failed_step if last is not None else None,
        "signature": entry.signature,
        "manual_review": entry.manual_review,
        "item": entry.data,
    }


@dlq.command("list")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of objects.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Show at most N items.")
def list_(job_id: str, as_json: bool, limit: int | None) -> int:
    """One line per DLQ item of JOB_ID: id, attempts, error kind, last error, last attempt."""
    job = find_job(job_id)
    entries = dlq_entries(job)
    shown = entries[:limit] if limit is not None else entries
    if as_json:
        document = msgspec.json.encode([entry_json(e) for e in shown])
        say(msgspec.json.format(document, indent=2).decode())
    elif not entries:
        say(f"No items in the DLQ of job {job.job_id}.")
    else:
        table(
            ["ITEM", "ATTEMPTS", "KIND", "LAST ERROR", "LAST ATTEMPT"],
            [
                [
                    e.item_id,
                    str(e.attempt_count),
                    e.error_kind,
                    one_line(e.last_error, LIST_ERROR_CHARS),
                    display_time(e.last_attempt_at, millis=False) if e.last_attempt_at else "-",
                ]
                for e in shown
            ],
        )
    if len(shown) < len(entries):
        warn(f"Showing {len(shown)} of {len(entries)} DLQ items (--limit {limit}).")
    return 0


# ---- show --------------------------------------------------------------------------------------


def _ending(attempt: Attempt) -> str:
    if attempt.timed_out:
        return "timed out"
    if attempt.exit_code is not None:
        return f"exit code {attempt.exit_code}"
    return "no exit code (the command did not run)"


def _block(title: str, text: str) -> None:
    say(f"  {title}:")
    for line in text.rstrip("\n").splitlines():
        say(f"    {line}")


def _print_attempt(attempt: Attempt, of: int) -> None:
    when = display_time(attempt.started_at)
    say(f"Attempt {attempt.attempt} of {of}: {when}, {attempt.duration_s:.2f}s, {_ending(attempt)}")
    if attempt.failed_step:
        say(f"  Failed step: {attempt.failed_step}")
    kind = f" ({attempt.error_kind})" if attempt.error_kind else ""
    say(f"  Error{kind}: {attempt.error or '(no message)'}")
    spend = attempt.spend
    if spend:
        say(
            f"  Cost: ${spend.cost_usd:.4f} ({spend.input_tokens} input / "
            f"{plural(spend.output_tokens, 'output token')})"
        )
    for name, value in msgspec.structs.asdict(attempt).items():
        if name not in _SHOWN_ATTEMPT_FIELDS and value not in (None, "", [], {}, False):
            say(f"  {name.replace('_', ' ').capitalize()}: {value}")
    if attempt.output.strip():
        _block("Output (tail)", attempt.output)
    if attempt.stderr.strip():
        _block("Stderr (tail)", attempt.stderr)


def print_entry(job: JobDir, entry: DlqEntry) -> None:
    say(
        f"Item {entry.item_id} of job {job.job_id}: in the DLQ after "
        f"{plural(entry.attempt_count, 'attempt')}."
    )
    reason = entry.review_reason()
    if reason is None:
        say(f"Retriable: `prodigy dlq reprocess {job.job_id}` may help.")
    else:
        say(f"Needs manual review: {reason}.")
    say("")
    say("Item data:")
    say(msgspec.json.format(msgspec.json.encode(entry.data), indent=2).decode())
    for attempt in entry.attempts:
        say("")
        _print_attempt(attempt, entry.attempt_count)


@dlq.command("show")
@click.argument("job_id")
@click.argument("item_id")
def show(job_id: str, item_id: str) -> int:
    """One DLQ item of JOB_ID in full: its data and every attempt with its error and output."""
    job = find_job(job_id)
    found = lookup_item(job, item_id)
    if found.entry is None:
        raise ProdigyError(
            f"Item {item_id} of job {job.job_id} is not in the DLQ: {status_phrase(found)}.",
            hint=f"List the DLQ items with `prodigy dlq list {job.job_id}`.",
        )
    print_entry(job, found.entry)
    return 0
