"""How a run ends: the `job_ended` record, the final checkpoint and metadata, the job-level
event, the message a person reads and the exit code (SPEC §1).
"""

from __future__ import annotations

from prodigy.context import RunContext
from prodigy.display import plural
from prodigy.errors import EXIT_FAILURE, EXIT_ITEMS_IN_DLQ, EXIT_OK, ProdigyError
from prodigy.events import JobCompleted, JobFailed, JobInterrupted, JobStopped, count_fields
from prodigy.state import ItemStatus, JobEnded, JobEndStatus, counts, phase


async def record_end(run: RunContext, status: JobEndStatus, reason: str = "") -> None:
    await run.writer.flush()
    await run.recorder.record(JobEnded(status=status, reason=reason))
    run.save_checkpoint()
    run.write_metadata(status)


async def end_early(run: RunContext, failure: str | None) -> int:
    """The end of a run cut short: by an error, a signal, a failing phase or the policy."""
    fatal = run.interrupts.fatal_message()
    if fatal is not None:
        return await failed(run, fatal)
    if run.interrupts.signal is not None:
        return await interrupted(run)
    if failure is not None:
        return await failed(run, failure)
    reason = run.interrupts.policy_reason or "stopped"
    await record_end(run, "stopped", reason)
    c = counts(run.state)
    run.events.emit(JobStopped(reason=reason, **count_fields(c)))
    run.reporter.warn(f"Job stopped: {reason}.")
    run.reporter.say(
        f"Stopped at checkpoint v{run.state.version}: {c.succeeded} completed, "
        f"{c.remaining} remaining, {c.dead} in DLQ. Resume with: {run.resume_hint()}"
    )
    return EXIT_FAILURE


async def failed(run: RunContext, reason: str) -> int:
    try:
        await record_end(run, "failed", reason)
    except ProdigyError as exc:
        # A full disk that failed the run fails its last record too: say it once.
        if run.interrupts.fatal is None:
            run.reporter.warn(f"error: {exc}")
    run.events.emit(JobFailed(reason=reason))
    run.reporter.warn(f"Job failed: {reason}")
    run.reporter.warn(f"Fix the cause, then run: {run.resume_hint()}")
    return EXIT_FAILURE


async def interrupted(run: RunContext) -> int:
    await record_end(run, "interrupted", run.interrupts.signal_name())
    c = counts(run.state)
    run.events.emit(JobInterrupted(version=run.state.version, **count_fields(c)))
    run.reporter.close()
    run.reporter.say(
        f"Interrupted: state saved at checkpoint v{run.state.version} "
        f"({c.succeeded} completed, {c.remaining} remaining)."
    )
    run.reporter.say(f"Resume with: {run.resume_hint()}")
    return run.interrupts.exit_code()


async def completed(run: RunContext) -> int:
    await record_end(run, "completed")
    c = counts(run.state)
    spent = run.state.spent
    run.events.emit(JobCompleted(**count_fields(c), cost_usd=spent.cost_usd or None))
    run.reporter.close()
    summary = f"{c.succeeded}/{c.total} items succeeded, {c.failed} failed"
    if spent:
        summary += (
            f"; cost ${spent.cost_usd:.4f} "
            f"({spent.input_tokens} input / {spent.output_tokens} output tokens)"
        )
    if c.dead:
        in_dlq = plural(c.dead, "item")
        run.reporter.say(f"Job completed with {in_dlq} in the DLQ: {summary}.")
        run.reporter.say(f"Inspect them with: prodigy dlq list {run.meta.job_id}")
        return EXIT_ITEMS_IN_DLQ
    run.reporter.say(f"Job completed successfully! {summary}.")
    return EXIT_OK


async def reprocessed(
    run: RunContext, indexes: list[int], status_before: JobEndStatus | None
) -> int:
    """The end of a `dlq reprocess`: 3 while any item of the job is still in the DLQ."""
    c = counts(run.state)
    still = sum(1 for i in indexes if run.state.status[i] == ItemStatus.DEAD)
    run.reporter.close()
    run.reporter.say(
        f"Reprocessed {plural(len(indexes), 'DLQ item')}: {len(indexes) - still} succeeded "
        f"and left the DLQ, {still} failed and stay in it ({c.dead} in the DLQ now)."
    )
    done = phase(run.state, len(run.workflow.reduce)) == "done"
    status: JobEndStatus = "completed" if done else (status_before or "interrupted")
    await record_end(run, status, run.state.end_reason if not done else "")
    if done and len(indexes) > still:
        run.reporter.say(
            "The reduce phase ran before these items succeeded; re-run it with: "
            f"prodigy resume-job {run.meta.job_id} --force"
        )
    return EXIT_ITEMS_IN_DLQ if c.dead else EXIT_OK
