"""The dead letter queue as seen by a reader: one `DlqEntry` per dead-lettered item.

The DLQ is not a file of its own: it is the items whose status is DEAD in the state rebuilt
from the journal, with their failed-attempt history. This module reads it and groups it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prodigy.errors import ProdigyError
from prodigy.job import ItemsFile, load_state
from prodigy.state import (
    STATUS_NAMES,
    Attempt,
    ItemStatus,
    JobState,
    error_signature,
    needs_manual_review,
)
from prodigy.store import JobDir

NO_KIND = "unknown"
SAME_ERROR_RUN = 3  # as in state.needs_manual_review: this many equal signatures in a row


@dataclass(frozen=True)
class DlqEntry:
    """One item in the DLQ: its data and every failed attempt, newest last."""

    item_id: str
    index: int
    data: Any
    attempts: tuple[Attempt, ...]
    attempt_count: int  # attempt number of the last attempt (history may be shorter)
    manual_review: bool

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def error_kind(self) -> str:
        last = self.last
        return (last.error_kind if last is not None else None) or NO_KIND

    @property
    def last_error(self) -> str:
        last = self.last
        return (last.error if last is not None else None) or ""

    @property
    def last_attempt_at(self) -> str | None:
        last = self.last
        return last.started_at if last is not None else None

    @property
    def signature(self) -> str:
        last = self.last
        if last is not None and last.signature:
            return last.signature
        return error_signature(self.error_kind, self.last_error)

    @property
    def retriable(self) -> bool:
        """A plain `dlq reprocess` may help (it skips manual-review items unless --force)."""
        return not self.manual_review

    def review_reason(self) -> str | None:
        """Why a plain retry cannot help, in words; None when it can."""
        if not self.manual_review:
            return None
        if self.error_kind == "missing_variable":
            return "the item lacks a field the agent template uses"
        return f"its last {SAME_ERROR_RUN} or more attempts failed with the same error"


@dataclass(frozen=True)
class KindGroup:
    error_kind: str
    count: int


@dataclass(frozen=True)
class SignatureGroup:
    signature: str
    error_kind: str
    count: int
    sample_error: str
    item_ids: tuple[str, ...]


@dataclass(frozen=True)
class DlqSummary:
    total: int
    retriable: int
    manual_review: int
    by_kind: tuple[KindGroup, ...]
    by_signature: tuple[SignatureGroup, ...]


def make_entry(state: JobState, index: int, item_id: str, data: Any) -> DlqEntry:
    history = tuple(state.history.get(index, ()))
    return DlqEntry(
        item_id=item_id,
        index=index,
        data=data,
        attempts=history,
        attempt_count=state.attempts[index],
        manual_review=needs_manual_review(history),
    )


def entries_from_state(
    state: JobState, item_ids: Sequence[str], item_data: Callable[[int], Any]
) -> list[DlqEntry]:
    """The DLQ of `state`, in item order; `item_data(index)` reads one item's data."""
    return [
        make_entry(state, index, item_ids[index], item_data(index))
        for index in state.indexes_with(ItemStatus.DEAD)
    ]


def dlq_entries(job: JobDir, state: JobState | None = None) -> list[DlqEntry]:
    """The job's DLQ as it stands now (rebuilt from the journal unless `state` is given)."""
    if state is None:
        state = load_state(job)
    if state.item_count is None or not state.indexes_with(ItemStatus.DEAD):
        return []
    items = ItemsFile(job.items)
    try:
        return entries_from_state(state, items.ids, lambda i: items.get(i).data)
    finally:
        items.close()


def summarize(entries: Sequence[DlqEntry]) -> DlqSummary:
    manual = sum(1 for e in entries if e.manual_review)
    return DlqSummary(
        total=len(entries),
        retriable=len(entries) - manual,
        manual_review=manual,
        by_kind=group_by_kind(entries),
        by_signature=group_by_signature(entries),
    )


def group_by_kind(entries: Sequence[DlqEntry]) -> tuple[KindGroup, ...]:
    """Counts per error kind, most frequent first (ties by name)."""
    counted = Counter(e.error_kind for e in entries)
    ordered = sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(KindGroup(kind, n) for kind, n in ordered)


def group_by_signature(entries: Sequence[DlqEntry]) -> tuple[SignatureGroup, ...]:
    """Entries that failed the same way, most frequent first; the sample is the first item's."""
    members: dict[str, list[DlqEntry]] = {}
    for entry in entries:
        members.setdefault(entry.signature, []).append(entry)
    groups = [
        SignatureGroup(
            signature=signature,
            error_kind=group[0].error_kind,
            count=len(group),
            sample_error=group[0].last_error,
            item_ids=tuple(e.item_id for e in group),
        )
        for signature, group in members.items()
    ]
    return tuple(sorted(groups, key=lambda g: (-g.count, g.error_kind, g.signature)))


@dataclass(frozen=True)
class ItemLookup:
    """Where one item of a job stands: in the DLQ (with its entry) or not (with its status)."""

    item_id: str
    index: int
    status: ItemStatus
    attempt_count: int
    attempt_limit: int
    entry: DlqEntry | None


def lookup_item(job: JobDir, item_id: str) -> ItemLookup:
    """One item by id, whatever its status; an unknown id is an error naming the fix."""
    state = load_state(job)
    if state.item_count is None:
        raise ProdigyError(
            f"Job {job.job_id} has no items yet (its setup phase has not finished), so it has "
            f"no item {item_id!r}.",
            hint=f"See where it stands with `prodigy events show {job.job_id}`.",
        )
    items = ItemsFile(job.items)
    try:
        try:
            index = items.ids.index(item_id)
        except ValueError:
            raise ProdigyError(
                f"Job {job.job_id} has no item {item_id!r}.",
                hint=f"List the items in its DLQ with `prodigy dlq list {job.job_id}`.",
            ) from None
        status = ItemStatus(state.status[index])
        entry = None
        if status == ItemStatus.DEAD:
            entry = make_entry(state, index, item_id, items.get(index).data)
        return ItemLookup(
            item_id=item_id,
            index=index,
            status=status,
            attempt_count=state.attempts[index],
            attempt_limit=state.limits[index],
            entry=entry,
        )
    finally:
        items.close()


def status_phrase(found: ItemLookup) -> str:
    """Where an item stands, as a clause for a sentence ("it succeeded")."""
    if found.status == ItemStatus.SUCCEEDED:
        return f"it succeeded (attempt {found.attempt_count})"
    if found.status == ItemStatus.RETRIABLE:
        return (
            f"it failed and is waiting for a retry (attempt {found.attempt_count} of "
            f"{found.attempt_limit})"
        )
    if found.status == ItemStatus.SKIPPED:
        return "it failed for good and was skipped (error_policy.on_item_failure: skip)"
    if found.status == ItemStatus.PENDING:
        return "it has not run yet" if found.attempt_count == 0 else "it is pending a re-run"
    return f"its status is {STATUS_NAMES[found.status]}"
