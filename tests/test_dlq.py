"""The DLQ model: which items are in it, what their entries say, and how they group."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from prodigy.dlq import (
    DlqEntry,
    ItemLookup,
    entries_from_state,
    group_by_kind,
    group_by_signature,
    status_phrase,
    summarize,
)
from prodigy.state import (
    Attempt,
    AttemptEnded,
    ItemsFrozen,
    ItemStatus,
    JobState,
    Outcome,
    Record,
    error_signature,
    replay,
)

IDS = [f"item_{i}" for i in range(6)]


def failure(
    attempt: int, kind: str = "exit_code", error: str = "command exited with code 1"
) -> Attempt:
    return Attempt(
        attempt=attempt,
        ok=False,
        started_at=f"2026-11-27T03:0{attempt}:00.000+00:00",
        duration_s=0.5,
        exit_code=1 if kind == "exit_code" else None,
        timed_out=kind == "timeout",
        error=error,
        error_kind=kind,
        signature=error_signature(kind, error),
    )


def success(attempt: int) -> Attempt:
    return Attempt(
        attempt=attempt,
        ok=True,
        started_at="2026-11-27T03:00:00.000+00:00",
        duration_s=0.1,
        exit_code=0,
    )


def ended(index: int, outcome: Outcome, result: Attempt) -> AttemptEnded:
    return AttemptEnded(index=index, outcome=outcome, result=result)


def data_of(index: int) -> dict[str, Any]:
    return {"n": index}


def job_state() -> JobState:
    """item_0 ok; item_1 dead after 2 exit failures; item_2 retriable; item_3 dead (missing
    field); item_4 dead after 3 identical timeouts; item_5 pending."""
    records: list[Record] = [
        ItemsFrozen(count=6, max_attempts=2),
        ended(0, "succeeded", success(1)),
        ended(1, "retry", failure(1, error="exit 1: first")),
        ended(1, "dead", failure(2, error="boom: second")),
        ended(2, "retry", failure(1)),
        ended(3, "dead", failure(1, "missing_variable", "item field 'name' is missing")),
        ended(4, "retry", failure(1, "timeout", "step timed out after 1s")),
        ended(4, "retry", failure(2, "timeout", "step timed out after 1s")),
        ended(4, "dead", failure(3, "timeout", "step timed out after 1s")),
    ]
    return replay(records)


def test_only_dead_items_are_entries_in_item_order() -> None:
    entries = entries_from_state(job_state(), IDS, data_of)
    assert [e.item_id for e in entries] == ["item_1", "item_3", "item_4"]
    assert [e.index for e in entries] == [1, 3, 4]
    assert [e.data for e in entries] == [{"n": 1}, {"n": 3}, {"n": 4}]


def test_entry_keeps_every_attempt_and_describes_the_last() -> None:
    entry = entries_from_state(job_state(), IDS, data_of)[0]
    assert [a.attempt for a in entry.attempts] == [1, 2]
    assert entry.attempt_count == 2
    assert entry.error_kind == "exit_code"
    assert entry.last_error == "boom: second"
    assert entry.last_attempt_at == "2026-11-27T03:02:00.000+00:00"
    assert entry.signature == error_signature("exit_code", "boom: second")
    assert not entry.manual_review and entry.retriable and entry.review_reason() is None


def test_manual_review_for_a_missing_field_and_for_a_repeated_error() -> None:
    by_id = {e.item_id: e for e in entries_from_state(job_state(), IDS, data_of)}
    missing, repeated = by_id["item_3"], by_id["item_4"]
    assert missing.manual_review and "lacks a field" in (missing.review_reason() or "")
    assert repeated.manual_review and "same error" in (repeated.review_reason() or "")
    assert repeated.error_kind == "timeout"


def test_summary_counts_and_groups() -> None:
    summary = summarize(entries_from_state(job_state(), IDS, data_of))
    assert (summary.total, summary.retriable, summary.manual_review) == (3, 1, 2)
    assert [(g.error_kind, g.count) for g in summary.by_kind] == [
        ("exit_code", 1),
        ("missing_variable", 1),
        ("timeout", 1),
    ]
    assert {g.sample_error for g in summary.by_signature} == {
        "boom: second",
        "item field 'name' is missing",
        "step timed out after 1s",
    }


def test_empty_history_falls_back_without_failing() -> None:
    entry = DlqEntry("x", 0, None, (), 0, manual_review=False)
    assert entry.error_kind == "unknown"
    assert entry.last_error == ""
    assert entry.last_attempt_at is None
    assert entry.signature == error_signature("unknown", "")


def test_a_state_without_items_has_an_empty_dlq() -> None:
    assert entries_from_state(JobState(), [], data_of) == []


def test_status_phrases_name_where_an_item_stands() -> None:
    def phrase(status: ItemStatus, attempts: int = 1, limit: int = 3) -> str:
        return status_phrase(ItemLookup("item_0", 0, status, attempts, limit, None))

    assert phrase(ItemStatus.SUCCEEDED) == "it succeeded (attempt 1)"
    assert "waiting for a retry (attempt 1 of 3)" in phrase(ItemStatus.RETRIABLE)
    assert "skipped" in phrase(ItemStatus.SKIPPED)
    assert phrase(ItemStatus.PENDING, attempts=0) == "it has not run yet"


kinds = st.sampled_from(["exit_code", "timeout", "missing_variable", "claude_error"])
errors = st.sampled_from(["exit 1", "exit 2 in /tmp/x", "timed out", "no field 'a'", "other"])


@st.composite
def dead_histories(draw: st.DrawFn) -> list[list[Attempt]]:
    histories = []
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        length = draw(st.integers(min_value=1, max_value=4))
        histories.append([failure(n + 1, draw(kinds), draw(errors)) for n in range(length)])
    return histories


@given(dead_histories())
def test_groups_partition_the_dlq(histories: list[list[Attempt]]) -> None:
    records: list[Record] = [ItemsFrozen(count=len(histories), max_attempts=10)]
    for index, history in enumerate(histories):
        for n, attempt in enumerate(history):
            outcome: Outcome = "dead" if n == len(history) - 1 else "retry"
            records.append(ended(index, outcome, attempt))
    ids = [f"i{n}" for n in range(len(histories))]
    entries = entries_from_state(replay(records), ids, data_of)
    summary = summarize(entries)
    assert summary.total == len(histories) == summary.retriable + summary.manual_review
    assert sum(g.count for g in group_by_kind(entries)) == summary.total
    signature_groups = group_by_signature(entries)
    assert sum(g.count for g in signature_groups) == summary.total
    members = [i for g in signature_groups for i in g.item_ids]
    assert sorted(members) == sorted(ids)
    by_id = {e.item_id: e for e in entries}
    for group in signature_groups:
        assert group.count == len(group.item_ids)
        assert {by_id[i].signature for i in group.item_ids} == {group.signature}
        assert group.sample_error in {by_id[i].last_error for i in group.item_ids}
    counts = [g.count for g in signature_groups]
    assert counts == sorted(counts, reverse=True)
