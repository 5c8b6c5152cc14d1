"""The progress report built from a job directory."""

from __future__ import annotations

from pathlib import Path

import msgspec

from prodigy.report import (
    ProgressReport,
    bucket_seconds,
    encode_report,
    event_detail,
    read_report,
    span_text,
)
from prodigy.store import JobDir
from synthetic_job import ERROR, write_job


def test_counts_failures_dlq_and_cost_of_a_finished_job(tmp_path: Path) -> None:
    job = write_job(tmp_path, 100, parallel=4, fail_every=10, cost_usd=0.5)
    report = read_report(job)
    c = report.counts
    assert (c.total, c.succeeded, c.dead_lettered, c.failed, c.finished) == (100, 90, 10, 10, 100)
    assert c.percent_done == 100.0 and c.running == 0 and c.waiting == 0
    assert report.job.status == "completed" and not report.job.live and report.job.phase == "done"
    assert report.job.runs == 1 and report.job.max_parallel == 4
    (group,) = report.failures
    assert (group.count, group.in_dlq, group.error_kind, group.sample_error) == (
        10,
        10,
        "exit_code",
        ERROR,
    )
    assert group.item_ids[:2] == ["item_9", "item_19"]
    assert report.dlq.total == 10 and report.dlq.by_signature[0].count == 10
    assert [k.error_kind for k in report.dlq.by_kind] == ["exit_code"]
    # Every attempt was paid for, failed ones included: 90 + 10 x 2.
    assert abs(report.cost.total_usd - 55.0) < 1e-6
    assert report.cost.costliest[0].usd == 1.0 and report.cost.costliest[0].attempts == 2
    assert report.cost.per_item_usd == 0.55
    # Throughput counts every ended attempt once, by outcome.
    t = report.throughput
    assert (sum(t.succeeded), sum(t.retried), sum(t.failed)) == (90, 10, 10)
    assert report.timeline.attempts == 110 and not report.timeline.aggregated
    assert report.timeline.lanes == 4 and len(report.timeline.bars) == 110
    assert report.pace.eta_s is None, "no ETA for a job that is not running"
    assert report.recent_events[0].type == "job_completed"


def test_the_json_is_the_report(tmp_path: Path) -> None:
    report = read_report(write_job(tmp_path, 20, parallel=2))
    decoded = msgspec.json.decode(encode_report(report), type=ProgressReport)
    assert decoded == report


def test_wording() -> None:
    assert [span_text(s) for s in (0.42, 12.3, 133, 3725, 2 * 86400 + 7200)] == [
        "0.4s",
        "12s",
        "2m 13s",
        "1h 02m",
        "2d 2h",
    ]
    assert span_text(None) == "-"
    assert bucket_seconds(50, 60) == 1 and bucket_seconds(10_000, 60) == 300
    assert (
        event_detail({"type": "agent_failed", "attempt": 2, "duration_s": 1.5, "error": "boom"})
        == "attempt 2, 1.50s: boom"
    )
    assert event_detail(
        {"total": 3, "succeeded": 2, "failed": 1, "dead_lettered": 1, "skipped": 0, "remaining": 0}
    ).startswith("2/3 succeeded, 0 remaining, 1 in DLQ")


def test_a_job_with_nothing_readable_yet_still_reports(tmp_path: Path) -> None:
    path = tmp_path / "state" / "r" / "mapreduce" / "jobs" / "mapreduce-20261101-000000"
    path.mkdir(parents=True)
    (path / "metadata.json").write_text('{"status": "running", "workflow_name": "w"}')
    report = read_report(JobDir(path))
    assert (report.job.status, report.job.crashed, report.job.phase) == (
        "interrupted",
        True,
        "unknown",
    )
    assert report.counts.total == 0 and report.timeline.attempts == 0
    assert any("journal" in p and "missing" in p for p in report.problems)
    assert report.job.started_at is not None  # from the job id
