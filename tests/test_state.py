"""Pure job-state transitions: replay, versions, rollbacks, outcomes and signatures."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from prodigy.state import (
    Attempt,
    AttemptEnded,
    FailureLimits,
    ItemsFrozen,
    ItemStatus,
    JobEnded,
    JobState,
    MergeStepsEnded,
    Record,
    ReduceStepCompleted,
    Requeued,
    RolledBack,
    RunTally,
    SetupCompleted,
    Spend,
    apply,
    apply_record,
    counts,
    decide_outcome,
    error_signature,
    failure_policy_stop,
    needs_manual_review,
    phase,
    replay,
)

N_ITEMS = 6


def attempt(n: int, ok: bool, error: str | None = None, kind: str | None = None) -> Attempt:
    return Attempt(
        attempt=n,
        ok=ok,
        started_at="2026-01-01T00:00:00",
        duration_s=0.1,
        error=error,
        error_kind=kind,
        signature=None if ok else error_signature(kind, error),
        spend=Spend(cost_usd=0.5),
    )


def ended(index: int, n: int, outcome: str) -> AttemptEnded:
    return AttemptEnded(index=index, outcome=outcome, result=attempt(n, outcome == "succeeded"))  # type: ignore[arg-type]


HEAD: list[Record] = [
    SetupCompleted(outputs={"x": "1"}),
    ItemsFrozen(count=N_ITEMS, max_attempts=3),
]


def test_replay_counts_and_versions() -> None:
    records = [*HEAD, ended(0, 1, "succeeded"), ended(1, 1, "retry"), ended(1, 2, "dead")]
    state = replay(records)
    assert state.version == 3
    c = counts(state)
    assert (c.succeeded, c.dead, c.pending, c.retriable) == (1, 1, 4, 0)
    assert [a.attempt for a in state.history[1]] == [1, 2]
    assert state.spent.cost_usd == 1.5


def test_state_at_version_stops_before_next_attempt() -> None:
    records = [*HEAD, ended(0, 1, "succeeded"), ended(1, 1, "succeeded"), ended(2, 1, "succeeded")]
    assert counts(replay(records, 0)).succeeded == 0
    assert counts(replay(records, 2)).succeeded == 2
    assert replay(records, 2).version == 2


def test_rollback_restores_earlier_version_as_a_new_version() -> None:
    records: list[Record] = [
        *HEAD,
        ended(0, 1, "succeeded"),
        ended(1, 1, "succeeded"),
        ended(2, 1, "succeeded"),
        RolledBack(to_version=1),
    ]
    state = replay(records)
    assert state.version == 4
    assert state.status[0] == ItemStatus.SUCCEEDED
    assert state.status[1] == ItemStatus.PENDING
    assert state.status[2] == ItemStatus.PENDING
    # Money spent on rolled-back attempts stays spent.
    assert state.spent.cost_usd == 1.5
    # Versions before the rollback can still be restored exactly.
    assert counts(replay(records, 3)).succeeded == 3


def test_requeue_gives_dlq_items_new_limits_and_can_rerun_reduce() -> None:
    records: list[Record] = [
        *HEAD,
        ended(0, 3, "dead"),
        ReduceStepCompleted(step=0, outputs={}),
        Requeued(indexes=[0], limits=[6], rerun_reduce=True),
    ]
    state = replay(records)
    assert state.status[0] == ItemStatus.PENDING
    assert state.limits[0] == 6
    assert state.reduce_done == 0


def test_requeue_never_touches_succeeded_items() -> None:
    state = replay([*HEAD, ended(0, 1, "succeeded"), Requeued(indexes=[0], limits=[9])])
    assert state.status[0] == ItemStatus.SUCCEEDED


def test_phase_progression() -> None:
    assert phase(JobState(), 1) == "setup"
    records: list[Record] = list(HEAD)
    assert phase(replay(records), 1) == "map"
    records += [ended(i, 1, "succeeded") for i in range(N_ITEMS)]
    assert phase(replay(records), 1) == "reduce"
    records.append(ReduceStepCompleted(step=0, outputs={"r": "v"}))
    assert phase(replay(records), 1) == "done"
    assert replay(records).captures() == {"x": "1", "r": "v"}


def test_apply_is_pure() -> None:
    before = replay(list(HEAD))
    after = apply(before, ended(0, 1, "succeeded"))
    assert before.status[0] == ItemStatus.PENDING
    assert after.status[0] == ItemStatus.SUCCEEDED


def test_decide_outcome() -> None:
    assert decide_outcome(True, 1, 1, "dlq") == "succeeded"
    assert decide_outcome(False, 1, 3, "dlq") == "retry"
    assert decide_outcome(False, 3, 3, "dlq") == "dead"
    assert decide_outcome(False, 3, 3, "skip") == "skipped"
    assert decide_outcome(False, 1, 3, "dlq", retriable=False) == "dead"


def test_signature_ignores_numbers_and_paths() -> None:
    a = error_signature("exit_code", "command exited with code 3: cat /tmp/a/1.txt")
    b = error_signature("exit_code", "command exited with code 3: cat /tmp/b/22.txt")
    c = error_signature("timeout", "command exited with code 3: cat /tmp/b/22.txt")
    assert a == b != c


def test_manual_review() -> None:
    same = [attempt(n, False, "boom 1", "exit_code") for n in (1, 2, 3)]
    assert needs_manual_review(same)
    assert not needs_manual_review(same[:2])
    assert needs_manual_review([attempt(1, False, "x", "missing_variable")])
    assert needs_manual_review([attempt(1, False, "x", "unusable_value")])
    mixed = [*same[:2], attempt(3, False, "other failure", "timeout")]
    assert not needs_manual_review(mixed)


# ---- property: crash at any point --------------------------------------------------------------

outcomes = st.sampled_from(["succeeded", "retry", "dead", "skipped"])
record_strategy = st.one_of(
    st.builds(
        lambda i, n, o: ended(i, n, o),
        st.integers(0, N_ITEMS - 1),
        st.integers(1, 5),
        outcomes,
    ),
    st.builds(
        lambda idx, lim: Requeued(indexes=sorted(set(idx)), limits=[lim] * len(set(idx))),
        st.lists(st.integers(0, N_ITEMS - 1), max_size=3),
        st.integers(1, 9),
    ),
    st.builds(lambda s: ReduceStepCompleted(step=s, outputs={}), st.integers(0, 2)),
    st.builds(lambda usd: MergeStepsEnded(Spend(cost_usd=usd)), st.sampled_from([0.25, 1.5])),
    st.builds(lambda s: JobEnded(status=s), st.sampled_from(["completed", "interrupted"])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(record_strategy, max_size=40), st.data())
def test_replay_equals_incremental_application(tail: list[Record], data: st.DataObject) -> None:
    """Folding records one by one (the running engine) equals replaying them (resume)."""
    records = [*HEAD, *tail]
    live = JobState()
    for record in records:
        apply_record(live, record)
    assert live == replay(records)
    # Any prefix, i.e. a crash after any record, replays to the state the engine had then.
    cut = data.draw(st.integers(0, len(records)))
    partial = JobState()
    for record in records[:cut]:
        apply_record(partial, record)
    assert partial == replay(records[:cut])


@settings(max_examples=100, deadline=None)
@given(st.lists(record_strategy, max_size=30), st.data())
def test_rollback_to_any_version_equals_that_prefix(
    tail: list[Record], data: st.DataObject
) -> None:
    records = [*HEAD, *tail]
    final = replay(records)
    version = data.draw(st.integers(0, final.version))
    rolled = replay([*records, RolledBack(to_version=version)])
    target = replay(records, version)
    assert rolled.status == target.status
    assert rolled.attempts == target.attempts
    assert rolled.version == final.version + 1


def test_a_second_success_for_an_item_changes_nothing() -> None:
    records = [*HEAD, ended(0, 1, "succeeded"), ended(0, 1, "succeeded"), ended(0, 2, "dead")]
    state = replay(records)
    assert state.version == 1
    assert state.status[0] == ItemStatus.SUCCEEDED and state.attempts[0] == 1
    assert state.spent.cost_usd == 0.5, "a duplicate is not paid for twice"


def test_failure_policy_counts_only_failures_for_good() -> None:
    limits = FailureLimits(max_failures=2)
    tally = RunTally().after("dead")
    assert failure_policy_stop(limits, tally, "dead", "a") is None
    assert tally.after("retry") == tally, "a retry has not ended the item"
    tally = tally.after("skipped")
    reason = failure_policy_stop(limits, tally, "skipped", "b")
    assert reason is not None and reason.startswith("2 items failed")
    assert failure_policy_stop(limits, tally.after("succeeded"), "succeeded", "c") is None


def test_failure_policy_stop_on_item_failure_and_threshold() -> None:
    stop = FailureLimits(stop_on_item_failure=True)
    assert "item x failed" in (failure_policy_stop(stop, RunTally(1, 1), "dead", "x") or "")
    rate = FailureLimits(failure_threshold=0.3)
    assert failure_policy_stop(rate, RunTally(9, 9), "dead", "x") is None, "fewer than 10 done"
    reason = failure_policy_stop(rate, RunTally(10, 3), "dead", "x")
    assert reason is not None and "30%" in reason
    assert failure_policy_stop(rate, RunTally(10, 2), "dead", "x") is None
