"""The pure plan of a resume: what it requeues or rolls back, the lines it says, its refusals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from prodigy.cli.resume import ResumePlan, ResumeRequest, plan_resume
from prodigy.errors import EXIT_FAILURE, ProdigyError
from prodigy.state import (
    Attempt,
    AttemptEnded,
    ItemsFrozen,
    JobEnded,
    JobEndStatus,
    Outcome,
    Record,
    ReduceStepCompleted,
    Requeued,
    RolledBack,
    SetupCompleted,
    replay,
)
from prodigy.workflow import Workflow, load_workflow

JOB = "mapreduce-20260101-120000"
MAX_ATTEMPTS = 3

# Two reduce steps, so a job can stop between them.
WORKFLOW = f"""\
name: demo
mode: mapreduce
map:
  input: items.json
  max_parallel: 2
  agent_template:
    - shell: "echo ${{item.path}}"
error_policy:
  retry_config:
    max_attempts: {MAX_ATTEMPTS}
reduce:
  - shell: "echo one"
  - shell: "echo two"
"""


@pytest.fixture
def workflow(tmp_path: Path) -> Workflow:
    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW)
    return load_workflow(path)


def ended(index: int, n: int, outcome: Outcome) -> AttemptEnded:
    ok = outcome == "succeeded"
    return AttemptEnded(
        index=index,
        outcome=outcome,
        result=Attempt(attempt=n, ok=ok, started_at="2026-01-01T00:00:00", duration_s=0.1),
    )


def job(*records: Record, items: int = 4) -> list[Record]:
    return [
        SetupCompleted(outputs={}),
        ItemsFrozen(count=items, max_attempts=MAX_ATTEMPTS),
        *records,
    ]


# Item 0 succeeded, item 1 is in the DLQ after 3 attempts, item 2 is retriable after 1, item 3
# is pending.
UNFINISHED = job(
    ended(0, 1, "succeeded"),
    ended(1, 1, "retry"),
    ended(1, 2, "retry"),
    ended(1, 3, "dead"),
    ended(2, 1, "retry"),
)

REDUCED = [ReduceStepCompleted(step=0, outputs={}), ReduceStepCompleted(step=1, outputs={})]


def complete(*failed: AttemptEnded) -> list[Record]:
    """A job whose map and reduce are done, and its end recorded: items 0 and 1 succeeded, the
    others as `failed`."""
    return [*unended(*failed), JobEnded(status="completed")]


def unended(*failed: AttemptEnded) -> list[Record]:
    """The same job stopped after its last reduce step was recorded, before its end was."""
    return [*job(ended(0, 1, "succeeded"), ended(1, 1, "succeeded"), *failed), *REDUCED]


@pytest.mark.parametrize("end", [None, JobEnded(status="interrupted", reason="SIGINT")])
def test_a_job_whose_end_was_not_recorded_is_finished(
    workflow: Workflow, end: JobEnded | None
) -> None:
    # A power loss (or crash) after the last reduce step's record and before `job_ended`, or
    # an interrupt that came after the last step: resume records the end, it does not refuse.
    records = complete(ended(2, 1, "succeeded"), ended(3, 3, "dead"))[:-1]
    if end is not None:
        records.append(end)
    finished = plan(records, workflow, ResumeRequest())
    assert not finished.already_complete
    assert finished.records() == []
    assert finished.said[-1] == "Every step had run; finishing the job"


def plan(
    records: Sequence[Record],
    workflow: Workflow,
    request: ResumeRequest,
    checkpoint_files: Sequence[int] = (),
) -> ResumePlan:
    return plan_resume(
        JOB,
        lambda version: replay(records, version),
        replay(records),
        workflow,
        request,
        checkpoint_files,
    )


def refusal(
    records: Sequence[Record],
    workflow: Workflow,
    request: ResumeRequest,
    checkpoint_files: Sequence[int] = (),
) -> ProdigyError:
    with pytest.raises(ProdigyError) as caught:
        plan(records, workflow, request, checkpoint_files)
    return caught.value


def test_a_complete_job_with_dlq_items_is_refused_without_force(workflow: Workflow) -> None:
    one = refusal(
        complete(ended(2, 1, "succeeded"), ended(3, 3, "dead")), workflow, ResumeRequest()
    )
    assert one.message == (
        f"No retriable items found in job {JOB}: nothing is pending and the 1 failed item is in "
        "the DLQ."
    )
    assert one.hint == f"Use --force to retry it anyway, or `prodigy dlq reprocess {JOB}`."
    assert one.exit_code == EXIT_FAILURE

    two = refusal(complete(ended(2, 3, "dead"), ended(3, 3, "dead")), workflow, ResumeRequest())
    assert "the 2 failed items are in the DLQ." in two.message
    assert two.hint is not None and two.hint.startswith("Use --force to retry them anyway")


def test_a_complete_job_without_failures_is_refused_or_reported_done(workflow: Workflow) -> None:
    records = complete(ended(2, 1, "succeeded"), ended(3, 1, "succeeded"))
    refused = refusal(records, workflow, ResumeRequest())
    assert refused.message == f"Job {JOB} is already complete (4/4 items succeeded, reduce done)."
    assert refused.hint == "Use --force to re-run its reduce phase."

    done = plan(records, workflow, ResumeRequest(skip_validation=True))
    assert done.already_complete
    assert done.said == (
        f"Resuming job {JOB}",
        "Loaded checkpoint v4: 4 completed, 0 remaining",
        f"Job {JOB} is complete: nothing is left to run.",
    )
    assert done.records() == []


@pytest.mark.parametrize("end", [None, "interrupted"])
def test_a_job_stopped_after_its_last_step_is_finished_not_refused(
    workflow: Workflow, end: JobEndStatus | None
) -> None:
    records = unended(ended(2, 1, "succeeded"), ended(3, 3, "dead"))
    if end is not None:
        records.append(JobEnded(status=end, reason="SIGINT"))
    finishing = plan(records, workflow, ResumeRequest())
    assert finishing.said == (
        f"Resuming job {JOB}",
        "Loaded checkpoint v4: 3 completed, 0 remaining, 1 in DLQ",
        "Every step had run; finishing the job",
    )
    assert finishing.records() == [] and not finishing.already_complete


def test_force_on_a_complete_job_requeues_every_failed_item_and_reruns_reduce(
    workflow: Workflow,
) -> None:
    # Item 2 is in the DLQ after 3 attempts, item 3 was skipped after 2.
    records = complete(ended(2, 3, "dead"), ended(3, 2, "skipped"))
    forced = plan(records, workflow, ResumeRequest(force=True))
    assert forced.said == (
        f"Resuming job {JOB}",
        "Loaded checkpoint v4: 2 completed, 0 remaining, 1 in DLQ",
        "Forcing a re-run of 2 failed items and the reduce phase of a completed job",
    )
    assert forced.requeue == (2, 3)
    assert forced.limits == (3 + MAX_ATTEMPTS, 2 + MAX_ATTEMPTS)  # a fresh round each
    assert forced.rerun_reduce
    assert forced.out_of_dlq == (2,)  # a skipped item was never in the DLQ
    assert forced.rollback_to is None
    assert forced.records() == [Requeued(indexes=[2, 3], limits=[6, 5], rerun_reduce=True)]

    extra = plan(records, workflow, ResumeRequest(force=True, extra_retries=2))
    assert extra.limits == (3 + MAX_ATTEMPTS + 2, 2 + MAX_ATTEMPTS + 2)


def test_force_on_a_complete_job_without_failures_reruns_only_reduce(workflow: Workflow) -> None:
    records = complete(ended(2, 1, "succeeded"), ended(3, 1, "succeeded"))
    forced = plan(records, workflow, ResumeRequest(force=True))
    assert forced.said[-1] == (
        "Forcing a re-run of 0 failed items and the reduce phase of a completed job"
    )
    assert forced.records() == [Requeued(indexes=[], limits=[], rerun_reduce=True)]
    assert forced.out_of_dlq == ()


def test_force_on_an_unfinished_job_requeues_only_its_dlq_items(workflow: Workflow) -> None:
    forced = plan(UNFINISHED, workflow, ResumeRequest(force=True))
    assert forced.said == (
        f"Resuming job {JOB}",
        "Loaded checkpoint v5: 1 completed, 2 remaining, 1 in DLQ",
        "Forcing 1 DLQ item back into the queue",
    )
    assert forced.requeue == (1,)
    assert forced.limits == (3 + MAX_ATTEMPTS,)
    assert forced.out_of_dlq == (1,)
    assert not forced.rerun_reduce
    assert forced.records() == [Requeued(indexes=[1], limits=[6])]


def test_a_plain_resume_of_an_unfinished_job_records_nothing(workflow: Workflow) -> None:
    plain = plan(UNFINISHED, workflow, ResumeRequest())
    assert plain.said == (
        f"Resuming job {JOB}",
        "Loaded checkpoint v5: 1 completed, 2 remaining, 1 in DLQ",
    )
    assert plain.records() == []
    assert not plain.already_complete


def test_additional_retries_raise_the_limit_of_retriable_items(workflow: Workflow) -> None:
    more = plan(UNFINISHED, workflow, ResumeRequest(extra_retries=2))
    assert more.said[2:] == (
        "Resuming with 1 retriable item",
        "Granting 2 additional retry attempts",
    )
    assert more.requeue == (2,)
    assert more.limits == (MAX_ATTEMPTS + 2,)  # its old limit, raised: not a fresh round
    assert more.out_of_dlq == ()

    # With --force, the DLQ items get a fresh round plus the extra attempts.
    both = plan(UNFINISHED, workflow, ResumeRequest(force=True, extra_retries=1))
    assert both.said[2:] == (
        "Forcing 1 DLQ item back into the queue",
        "Resuming with 1 retriable item",
        "Granting 1 additional retry attempt",
    )
    assert both.requeue == (1, 2)
    assert both.limits == (3 + MAX_ATTEMPTS + 1, MAX_ATTEMPTS + 1)
    assert both.out_of_dlq == (1,)


def test_from_checkpoint_out_of_range_is_refused_naming_the_files(workflow: Workflow) -> None:
    refused = refusal(UNFINISHED, workflow, ResumeRequest(from_checkpoint=6), [5, 3])
    assert refused.message == (
        f"Checkpoint v6 does not exist for job {JOB}: versions 0 to 5 can be restored "
        "(checkpoint files on disk: v5, v3)."
    )
    assert refused.hint is None
    assert refused.exit_code == 1

    none = refusal(UNFINISHED, workflow, ResumeRequest(from_checkpoint=9))
    assert none.message.endswith("(checkpoint files on disk: none).")


def test_from_checkpoint_rolls_back_and_ignores_force(workflow: Workflow) -> None:
    back = plan(UNFINISHED, workflow, ResumeRequest(from_checkpoint=1, force=True), [5])
    assert back.said == (
        f"Resuming job {JOB}",
        "Loading checkpoint v1...",
        "Rolling back to: 1 completed, 3 remaining",
    )
    assert back.rollback_to == 1
    assert back.requeue == ()
    assert back.records() == [RolledBack(to_version=1)]
    assert plan(UNFINISHED, workflow, ResumeRequest(from_checkpoint=0)).said[2] == (
        "Rolling back to: 0 completed, 4 remaining"
    )


def test_a_job_stopped_in_reduce_resumes_at_its_next_step(workflow: Workflow) -> None:
    records = [
        *job(ended(0, 1, "succeeded"), ended(1, 1, "succeeded"), items=2),
        ReduceStepCompleted(step=0, outputs={}),
    ]
    resumed = plan(records, workflow, ResumeRequest())
    assert resumed.said == (
        f"Resuming job {JOB}",
        "Loaded checkpoint v2: 2 completed, 0 remaining",
        "Map phase finished; resuming the reduce phase at step 2 of 2",
    )
    assert resumed.records() == []


def test_planning_leaves_the_state_untouched(workflow: Workflow) -> None:
    state = replay(UNFINISHED)
    before = (bytes(state.status), list(state.attempts), list(state.limits), state.version)
    plan_resume(
        JOB,
        lambda v: replay(UNFINISHED, v),
        state,
        workflow,
        ResumeRequest(force=True, extra_retries=2),
        (),
    )
    assert (bytes(state.status), list(state.attempts), list(state.limits), state.version) == before
