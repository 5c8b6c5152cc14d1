"""Where a job stands, as one plain model: the `prodigy progress` summary, its JSON, the HTML
report and the live dashboard all show a `ProgressReport`.

`build_report` is a function of what a `JobWatch` read (metadata, the state replayed from the
journal, the attempt log from the events) and the current time; it reads no file itself.
Everything that grows with the job is capped or aggregated here, so that the report of a
100,000-item job stays small: lists keep their first entries and say how many more there are,
and a timeline with more attempts than bars fits is drawn as busy-time cells per slot.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec

from prodigy.attempt_log import (
    FAILED,
    INTERRUPTED,
    OUTCOMES,
    RETRIED,
    RUNNING,
    SUCCEEDED,
    AttemptLog,
    Run,
)
from prodigy.display import one_line
from prodigy.dlq import make_entry
from prodigy.dlq import summarize as summarize_dlq
from prodigy.job_watch import JobWatch
from prodigy.state import (
    STATUS_NAMES,
    Attempt,
    ItemStatus,
    JobState,
    counts,
    error_signature,
    phase,
)
from prodigy.store import JobDir, time_from_job_id

RATE_WINDOW_S = 60.0  # the rate (and so the ETA) is measured over the last minute of the run
TOP = 10  # slowest items, costliest items
FAILING_SHOWN = 20
IDS_PER_GROUP = 20
DLQ_SHOWN = 100
MAX_THROUGHPUT_BUCKETS = 60
MAX_BARS = 1000  # a run with more attempts is drawn as cells, plus its latest attempts as bars
DETAIL_BARS = 300
MAX_CELLS = 4000
MAX_COLUMNS = 240
NICE_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
ERROR_CHARS = 300

BarOutcome = Literal["running", "succeeded", "failed", "retried", "interrupted"]


class JobHeader(msgspec.Struct, kw_only=True):
    id: str
    workflow: str
    workflow_path: str
    repo: str
    state_dir: str
    status: str  # running | completed | failed | stopped | interrupted | unknown
    crashed: bool  # the last run died without recording its end
    live: bool  # a process runs the job now
    holder: str | None  # who, when live
    phase: str
    version: int
    started_at: str | None
    updated_at: str | None
    elapsed_s: float | None
    runs: int
    run_kind: str | None  # what started the latest run: job_started, job_resumed, ...
    run_started_at: str | None
    max_parallel: int | None
    generated_at: str


class ItemCounts(msgspec.Struct, kw_only=True):
    total: int
    succeeded: int
    failed: int  # retriable + dead_lettered + skipped: the one meaning of failed
    retriable: int
    dead_lettered: int
    skipped: int
    pending: int  # running items included (the journal does not know them apart)
    running: int
    remaining: int  # pending + retriable
    waiting: int  # remaining, less the running ones
    finished: int  # succeeded + dead_lettered + skipped
    percent_done: float


class Pace(msgspec.Struct, kw_only=True):
    items_per_s: float | None  # items that ended for good, over the window
    attempts_per_s: float | None
    window_s: float | None
    eta_s: float | None  # only while the job runs and items are ending
    eta_at: str | None


class ItemCost(msgspec.Struct, kw_only=True):
    item_id: str
    usd: float
    attempts: int


class CostSummary(msgspec.Struct, kw_only=True):
    total_usd: float  # setup and reduce included
    input_tokens: int
    output_tokens: int
    items_usd: float
    items_with_cost: int
    per_item_usd: float | None  # average over items that ran, failed attempts included
    projected_usd: float | None  # total + per item x remaining, while items remain
    costliest: list[ItemCost]


class SlowItem(msgspec.Struct, kw_only=True):
    item_id: str
    attempt: int
    duration_s: float
    outcome: str  # succeeded, failed-retriable, dead-lettered, skipped, running


class FailingItem(msgspec.Struct, kw_only=True):
    item_id: str
    status: str
    attempts: int
    limit: int
    error_kind: str
    error: str
    at: str


class FailureGroup(msgspec.Struct, kw_only=True):
    signature: str
    error_kind: str
    sample_error: str
    count: int
    in_dlq: int
    retriable: int
    skipped: int
    item_ids: list[str]
    more: int  # ids not listed


class KindCount(msgspec.Struct, kw_only=True):
    error_kind: str
    count: int


class DlqSignature(msgspec.Struct, kw_only=True):
    signature: str
    error_kind: str
    count: int
    sample_error: str
    item_ids: list[str]
    more: int


class DlqItem(msgspec.Struct, kw_only=True):
    item_id: str
    attempts: int
    error_kind: str
    error: str
    last_attempt_at: str | None
    manual_review: bool


class DlqView(msgspec.Struct, kw_only=True):
    total: int
    retriable: int
    manual_review: int
    by_kind: list[KindCount]
    by_signature: list[DlqSignature]
    items: list[DlqItem]
    more: int


class Throughput(msgspec.Struct, kw_only=True):
    """Attempts that ended in the latest run, per time bucket, by outcome."""

    bucket_s: float
    succeeded: list[int]
    retried: list[int]
    failed: list[int]


class TimelineBar(msgspec.Struct, kw_only=True):
    lane: int
    start_s: float  # from the run's start
    end_s: float
    item_id: str
    attempt: int
    outcome: BarOutcome
    duration_s: float
    error: str | None = None
    cost_usd: float | None = None


class TimelineCell(msgspec.Struct, kw_only=True):
    """One slot over one stretch of time, when attempts are too many to draw one by one."""

    lane: int
    column: int
    busy: float  # fraction of the stretch the slot was running an agent
    attempts: int  # attempts that ended in it
    failed: int


class Timeline(msgspec.Struct, kw_only=True):
    run_started_at: str | None
    span_s: float
    lanes: int
    attempts: int
    bars: list[TimelineBar]  # every attempt, or (aggregated) the latest DETAIL_BARS
    bars_from_s: float  # where the bars' window starts
    aggregated: bool
    cell_s: float
    columns: int
    cells: list[TimelineCell]


class RecentEvent(msgspec.Struct, kw_only=True):
    ts: str
    type: str
    item_id: str | None
    detail: str


class ProgressReport(msgspec.Struct, kw_only=True):
    job: JobHeader
    counts: ItemCounts
    pace: Pace
    cost: CostSummary
    slowest: list[SlowItem]
    failing: list[FailingItem]
    failing_more: int
    failures: list[FailureGroup]
    dlq: DlqView
    throughput: Throughput
    timeline: Timeline
    recent_events: list[RecentEvent]
    problems: list[str]


_encoder = msgspec.json.Encoder()


def encode_report(report: ProgressReport) -> bytes:
    return msgspec.json.format(_encoder.encode(report), indent=2) + b"\n"


# ---- wording shared by the terminal summary and the page ---------------------------------------


def span_text(seconds: float | None) -> str:
    """`0.4s`, `12.3s`, `2m 13s`, `1h 02m`, `3d 4h`; `-` when unknown."""
    if seconds is None or math.isnan(seconds):
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def moment_text(iso: str | None) -> str:
    """An ISO moment in local time to the second, `-` when unknown."""
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _iso(epoch: float | None) -> str | None:
    if epoch is None or math.isnan(epoch):
        return None
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="milliseconds")


# ---- building it -------------------------------------------------------------------------------


def read_report(job: JobDir) -> ProgressReport:
    """The report of a job as its files say now (a one-shot `JobWatch`)."""
    watch = JobWatch(job)
    watch.refresh()
    return build_report(watch)


@dataclass(frozen=True)
class _Clock:
    now: float
    live: bool
    run: Run | None
    run_end: float  # now while live, else when the run ended (or its last event)

    def offset(self, epoch: float) -> float:
        start = self.run.started if self.run is not None else epoch
        return round(epoch - start, 3)


def _job_status(meta_status: str | None, ended: str | None, live: bool) -> tuple[str, bool]:
    """The job's status and whether it crashed: a live process first, then the journal (it
    records the end before metadata.json is rewritten), then metadata.json."""
    if live:
        return "running", False
    if ended == "completed":
        return "completed", False
    if meta_status == "running":
        return "interrupted", True
    if meta_status in ("completed", "failed", "stopped", "interrupted"):
        return meta_status, False
    if ended is not None:
        return ended, False
    return "unknown", False


def build_report(watch: JobWatch, now: float | None = None) -> ProgressReport:
    current = time.time() if now is None else now
    log = watch.log
    live = watch.holder is not None
    run = log.run
    if live or run is None:
        run_end = current
    else:
        run_end = run.ended if run.ended is not None else (log.last_ts or current)
    clock = _Clock(current, live, run, run_end)
    failing, failing_more = _failing(watch)
    problems = sorted(watch.problems.values())
    if log.torn_lines:
        problems.append(f"{log.torn_lines} damaged line(s) of the events log were skipped")
    return ProgressReport(
        job=_header(watch, clock),
        counts=_counts(watch.state, log.running if live else 0),
        pace=_pace(watch, clock),
        cost=_cost(watch),
        slowest=_slowest(watch, clock),
        failing=failing,
        failing_more=failing_more,
        failures=_failure_groups(watch),
        dlq=_dlq(watch),
        throughput=_throughput(log, clock),
        timeline=_timeline(log, clock),
        recent_events=_recent(log),
        problems=problems,
    )


def _header(watch: JobWatch, clock: _Clock) -> JobHeader:
    meta = watch.meta
    state = watch.state
    job = watch.job
    status, crashed = _job_status(meta.status if meta else None, state.ended, clock.live)
    started = meta.created_at if meta and meta.created_at else time_from_job_id(job.job_id)
    started_epoch = started.timestamp() if started is not None else None
    end = clock.now if clock.live else (clock.run.ended if clock.run else None)
    if end is None and meta is not None and meta.updated_at is not None:
        end = meta.updated_at.timestamp()
    elapsed = end - started_epoch if end is not None and started_epoch is not None else None
    run = clock.run
    return JobHeader(
        id=job.job_id,
        workflow=(meta.workflow_name if meta else "") or "",
        workflow_path=(meta.workflow_path if meta else "") or "",
        repo=(meta.repo if meta else "") or job.repo,
        state_dir=str(job.path),
        status=status,
        crashed=crashed,
        live=clock.live,
        holder=watch.holder.describe() if watch.holder is not None else None,
        phase=_phase(watch),
        version=state.version,
        started_at=_iso(started_epoch),
        updated_at=meta.updated_at.isoformat(timespec="seconds")
        if meta and meta.updated_at
        else None,
        elapsed_s=round(elapsed, 3) if elapsed is not None else None,
        runs=len(watch.log.runs),
        run_kind=run.kind if run else None,
        run_started_at=_iso(run.started) if run else None,
        max_parallel=run.max_parallel if run else None,
        generated_at=_iso(clock.now) or "",
    )


def _phase(watch: JobWatch) -> str:
    meta = watch.meta
    if "journal" in watch.problems and meta is not None:
        return meta.phase  # as of metadata.json's last update: the journal could not be read
    return phase(watch.state, meta.reduce_steps if meta else 0)


def _counts(state: JobState, running_attempts: int) -> ItemCounts:
    c = counts(state)
    running = min(running_attempts, c.remaining)
    return ItemCounts(
        total=c.total,
        succeeded=c.succeeded,
        failed=c.failed,
        retriable=c.retriable,
        dead_lettered=c.dead,
        skipped=c.skipped,
        pending=c.pending,
        running=running,
        remaining=c.remaining,
        waiting=max(0, c.remaining - running),
        finished=c.finished,
        percent_done=round(100.0 * c.finished / c.total, 1) if c.total else 0.0,
    )


def _pace(watch: JobWatch, clock: _Clock) -> Pace:
    log = watch.log
    run = clock.run
    if run is None:
        return Pace(items_per_s=None, attempts_per_s=None, window_s=None, eta_s=None, eta_at=None)
    window_start = max(run.started, clock.run_end - RATE_WINDOW_S)
    window = clock.run_end - window_start
    if window <= 0:
        return Pace(items_per_s=None, attempts_per_s=None, window_s=None, eta_s=None, eta_at=None)
    finished = attempts = 0
    ends, outcomes = log.ends, log.outcomes
    for position in range(len(outcomes)):
        end = ends[position]
        if end >= window_start:  # nan (running) compares False
            outcome = outcomes[position]
            if outcome in (SUCCEEDED, FAILED, RETRIED):
                attempts += 1
                if outcome != RETRIED:
                    finished += 1
    items_per_s = finished / window
    remaining = counts(watch.state).remaining
    eta = remaining / items_per_s if clock.live and items_per_s > 0 and remaining else None
    return Pace(
        items_per_s=round(items_per_s, 3),
        attempts_per_s=round(attempts / window, 3),
        window_s=round(window, 1),
        eta_s=round(eta, 1) if eta is not None else None,
        eta_at=_iso(clock.now + eta) if eta is not None else None,
    )


def _ran(state: JobState) -> set[int]:
    return set(state.results) | set(state.history)


def _cost(watch: JobWatch) -> CostSummary:
    state = watch.state
    spent = state.spent
    items_usd = 0.0
    costs: list[tuple[float, int]] = []
    if spent.cost_usd:
        # `JobState.item_spend` summed by hand: the same rule (failed attempts, and the last
        # one if it succeeded) without a Spend per addition, for 100,000 items.
        for index in _ran(state):
            usd = sum(past.spend.cost_usd for past in state.history.get(index, ()))
            last = state.results.get(index)
            if last is not None and last.ok:
                usd += last.spend.cost_usd
            if usd:
                items_usd += usd
                costs.append((usd, index))
    ran = len(state.results)
    per_item = items_usd / ran if ran and items_usd else None
    remaining = counts(state).remaining
    projected = spent.cost_usd + per_item * remaining if per_item is not None else None
    return CostSummary(
        total_usd=round(spent.cost_usd, 6),
        input_tokens=spent.input_tokens,
        output_tokens=spent.output_tokens,
        items_usd=round(items_usd, 6),
        items_with_cost=len(costs),
        per_item_usd=round(per_item, 6) if per_item is not None else None,
        projected_usd=round(projected, 6) if projected is not None else None,
        costliest=[
            ItemCost(item_id=watch.item_id(i), usd=round(usd, 6), attempts=state.attempts[i])
            for usd, i in heapq.nlargest(TOP, costs)
        ],
    )


def _slowest(watch: JobWatch, clock: _Clock) -> list[SlowItem]:
    state = watch.state
    candidates: list[SlowItem] = [
        SlowItem(
            item_id=watch.item_id(i),
            attempt=result.attempt,
            duration_s=round(result.duration_s, 3),
            outcome=STATUS_NAMES[ItemStatus(state.status[i])],
        )
        for i, result in heapq.nlargest(TOP, state.results.items(), key=lambda kv: kv[1].duration_s)
    ]
    if clock.live:
        log = watch.log
        candidates += [
            SlowItem(
                item_id=log.item_ids[p],
                attempt=log.attempt_numbers[p],
                duration_s=round(clock.now - log.starts[p], 3),
                outcome="running",
            )
            for p in log.open_positions()
        ]
    return heapq.nlargest(TOP, candidates, key=lambda s: s.duration_s)


_FAILED_STATUSES = (ItemStatus.RETRIABLE, ItemStatus.DEAD, ItemStatus.SKIPPED)


def _last_failure(state: JobState, index: int) -> Attempt | None:
    result = state.results.get(index)
    if result is not None and not result.ok:
        return result
    history = state.history.get(index)
    return history[-1] if history else None


def _failing(watch: JobWatch) -> tuple[list[FailingItem], int]:
    """Items whose last attempt failed, the most recent failure first."""
    state = watch.state
    failing = [
        (attempt.started_at, i, attempt)
        for i in state.indexes_with(*_FAILED_STATUSES)
        if (attempt := _last_failure(state, i)) is not None
    ]
    shown = heapq.nlargest(FAILING_SHOWN, failing, key=lambda f: (f[0], f[1]))
    return [
        FailingItem(
            item_id=watch.item_id(i),
            status=STATUS_NAMES[ItemStatus(state.status[i])],
            attempts=state.attempts[i],
            limit=state.limits[i],
            error_kind=attempt.error_kind or "unknown",
            error=one_line(attempt.error or "", ERROR_CHARS),
            at=at,
        )
        for at, i, attempt in shown
    ], max(0, len(failing) - FAILING_SHOWN)


def _failure_groups(watch: JobWatch) -> list[FailureGroup]:
    """Items whose last attempt failed, grouped by that attempt's error signature."""
    state = watch.state
    groups: dict[str, list[tuple[int, Attempt]]] = {}
    for i in state.indexes_with(*_FAILED_STATUSES):
        attempt = _last_failure(state, i)
        if attempt is None:
            continue
        signature = attempt.signature or error_signature(attempt.error_kind, attempt.error)
        groups.setdefault(signature, []).append((i, attempt))
    result = []
    for signature, members in groups.items():
        statuses = Counter(state.status[i] for i, _ in members)
        first = members[0][1]
        result.append(
            FailureGroup(
                signature=signature,
                error_kind=first.error_kind or "unknown",
                sample_error=one_line(first.error or "", ERROR_CHARS),
                count=len(members),
                in_dlq=statuses[ItemStatus.DEAD],
                retriable=statuses[ItemStatus.RETRIABLE],
                skipped=statuses[ItemStatus.SKIPPED],
                item_ids=[watch.item_id(i) for i, _ in members[:IDS_PER_GROUP]],
                more=max(0, len(members) - IDS_PER_GROUP),
            )
        )
    return sorted(result, key=lambda g: (-g.count, g.error_kind, g.signature))


def _dlq(watch: JobWatch) -> DlqView:
    state = watch.state
    entries = [
        make_entry(state, i, watch.item_id(i), None) for i in state.indexes_with(ItemStatus.DEAD)
    ]
    summary = summarize_dlq(entries)
    return DlqView(
        total=summary.total,
        retriable=summary.retriable,
        manual_review=summary.manual_review,
        by_kind=[KindCount(error_kind=k.error_kind, count=k.count) for k in summary.by_kind],
        by_signature=[
            DlqSignature(
                signature=g.signature,
                error_kind=g.error_kind,
                count=g.count,
                sample_error=one_line(g.sample_error, ERROR_CHARS),
                item_ids=list(g.item_ids[:IDS_PER_GROUP]),
                more=max(0, len(g.item_ids) - IDS_PER_GROUP),
            )
            for g in summary.by_signature
        ],
        items=[
            DlqItem(
                item_id=e.item_id,
                attempts=e.attempt_count,
                error_kind=e.error_kind,
                error=one_line(e.last_error, ERROR_CHARS),
                last_attempt_at=e.last_attempt_at,
                manual_review=e.manual_review,
            )
            for e in entries[:DLQ_SHOWN]
        ],
        more=max(0, len(entries) - DLQ_SHOWN),
    )


def bucket_seconds(span: float, most: int) -> float:
    """The smallest round bucket width that cuts `span` into at most `most` buckets."""
    for step in NICE_STEPS_S:
        if span / step <= most:
            return float(step)
    return float(math.ceil(span / most))


def _throughput(log: AttemptLog, clock: _Clock) -> Throughput:
    run = clock.run
    span = clock.run_end - run.started if run is not None else 0.0
    width = bucket_seconds(max(span, 1.0), MAX_THROUGHPUT_BUCKETS)
    count = max(1, math.ceil(max(span, 1e-9) / width))
    series = {SUCCEEDED: [0] * count, RETRIED: [0] * count, FAILED: [0] * count}
    if run is not None:
        origin, ends, last = run.started, log.ends, count - 1
        for position, outcome in enumerate(log.outcomes):
            tally = series.get(outcome)
            if tally is not None:
                bucket = int((ends[position] - origin) / width)
                tally[0 if bucket < 0 else last if bucket > last else bucket] += 1
    return Throughput(
        bucket_s=width, succeeded=series[SUCCEEDED], retried=series[RETRIED], failed=series[FAILED]
    )


def _bar(log: AttemptLog, position: int, clock: _Clock) -> TimelineBar:
    code = log.outcomes[position]
    start = log.starts[position]
    end = log.ends[position]
    if code == RUNNING:
        # Still open: running while the job is live, cut short by a crash otherwise.
        end = clock.run_end
        if not clock.live:
            code = INTERRUPTED
    duration = log.durations[position]
    if math.isnan(duration):
        duration = end - start
    error = log.errors.get(position)
    return TimelineBar(
        lane=log.lanes[position],
        start_s=clock.offset(start),
        end_s=clock.offset(max(end, start)),
        item_id=log.item_ids[position],
        attempt=log.attempt_numbers[position],
        outcome=OUTCOMES[code],
        duration_s=round(duration, 3),
        error=one_line(error, ERROR_CHARS) if error else None,
        cost_usd=log.costs.get(position),
    )


def _timeline(log: AttemptLog, clock: _Clock) -> Timeline:
    run = clock.run
    span = round(max(clock.run_end - run.started, 0.0), 3) if run is not None else 0.0
    total = len(log)
    lanes = max(log.lane_count, 1)
    aggregated = total > MAX_BARS
    first_bar = total - DETAIL_BARS if aggregated else 0
    bars = [_bar(log, p, clock) for p in range(first_bar, total)]
    cells: list[TimelineCell] = []
    columns = 0
    cell_s = 0.0
    if aggregated and run is not None:
        columns = max(20, min(MAX_COLUMNS, MAX_CELLS // lanes))
        cell_s = max(span, 1e-3) / columns
        cells = _cells(log, clock, columns, cell_s)
    return Timeline(
        run_started_at=_iso(run.started) if run else None,
        span_s=span,
        lanes=lanes,
        attempts=total,
        bars=bars,
        bars_from_s=min((b.start_s for b in bars), default=0.0) if aggregated else 0.0,
        aggregated=aggregated,
        cell_s=round(cell_s, 3),
        columns=columns,
        cells=cells,
    )


def _cells(log: AttemptLog, clock: _Clock, columns: int, cell_s: float) -> list[TimelineCell]:
    assert clock.run is not None
    origin = clock.run.started
    lanes = max(log.lane_count, 1)
    # Flat per (lane, column) tallies: this loop runs once per attempt of the run.
    busy = [0.0] * (lanes * columns)
    ended = [0] * (lanes * columns)
    failed = [0] * (lanes * columns)
    last = columns - 1
    open_end = clock.run_end - origin
    starts, ends, lane_of = log.starts, log.ends, log.lanes
    for position, code in enumerate(log.outcomes):
        row = lane_of[position] * columns
        start = starts[position] - origin
        end = ends[position] - origin if code != RUNNING else open_end
        if not end >= start:  # nan, or a clock that stepped back
            end = start
        first_col = min(int(start / cell_s), last)
        last_col = min(int(end / cell_s), last)
        if first_col == last_col:
            busy[row + first_col] += end - start
        else:
            for column in range(first_col, last_col + 1):
                overlap = min(end, (column + 1) * cell_s) - max(start, column * cell_s)
                if overlap > 0:
                    busy[row + column] += overlap
        if code in (SUCCEEDED, FAILED, RETRIED):
            ended[row + last_col] += 1
            if code != SUCCEEDED:
                failed[row + last_col] += 1
    return [
        TimelineCell(
            lane=key // columns,
            column=key % columns,
            busy=round(min(1.0, busy[key] / cell_s), 3),
            attempts=ended[key],
            failed=failed[key],
        )
        for key in range(lanes * columns)
        if busy[key] > 0 or ended[key]
    ]


# Fields an event line shows in its own column, or not at all.
_SHOWN_APART = frozenset({"ts", "type", "job_id", "item_id"})
_COUNT_FIELDS = ("total", "succeeded", "failed", "dead_lettered", "skipped", "remaining")


def event_detail(data: dict[str, Any]) -> str:
    """The rest of an event in a few words: `attempt 2, 1.20s, exit 1: error text`."""
    parts: list[str] = []
    if all(isinstance(data.get(k), int) for k in _COUNT_FIELDS):
        parts.append(
            f"{data['succeeded']}/{data['total']} succeeded, {data['remaining']} remaining, "
            f"{data['dead_lettered']} in DLQ"
        )
    for key, value in data.items():
        if key in _SHOWN_APART or key in _COUNT_FIELDS or value is None:
            continue
        if key in ("error", "reason"):
            continue
        if key == "attempt":
            parts.append(f"attempt {value}")
        elif key == "duration_s" and isinstance(value, int | float):
            parts.append(f"{value:.2f}s")
        elif key == "exit_code":
            parts.append(f"exit {value}")
        elif key == "cost_usd" and isinstance(value, int | float):
            parts.append(f"${value:.4f}")
        elif key == "version":
            parts.append(f"v{value}")
        elif key == "error_kind" and value == "exit_code":
            continue
        else:
            text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
            parts.append(f"{key}={one_line(text, 80)}")
    text = ", ".join(parts)
    for key in ("reason", "error"):
        if data.get(key):
            text = f"{text}: {data[key]}" if text else str(data[key])
    return one_line(text, ERROR_CHARS)


def _recent(log: AttemptLog) -> list[RecentEvent]:
    shown = []
    for raw in reversed(log.recent):
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            continue
        if not isinstance(data, dict):
            continue
        item = data.get("item_id")
        shown.append(
            RecentEvent(
                ts=str(data.get("ts", "")),
                type=str(data.get("type", "")),
                item_id=None if item is None else str(item),
                detail=event_detail(data),
            )
        )
    return shown
