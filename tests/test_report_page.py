"""The report page and its charts: self-contained, small for a big job, readable by tests."""

from __future__ import annotations

import re
from pathlib import Path

from prodigy.job_watch import JobWatch
from prodigy.report import DETAIL_BARS, build_report, read_report
from prodigy.web.charts import bars_chart, cells_chart, offset_label, throughput_chart
from prodigy.web.page import SECTION_IDS, render_page, render_sections
from synthetic_job import write_job


def test_a_big_job_is_aggregated_and_its_page_stays_small(tmp_path: Path) -> None:
    job = write_job(tmp_path, 100_000, parallel=8, fail_every=50, cost_usd=0.01)
    watch = JobWatch(job)
    watch.refresh()
    report = build_report(watch)
    html = render_page(report)
    timeline = report.timeline
    assert timeline.aggregated and len(timeline.bars) == DETAIL_BARS
    assert timeline.cells and len(timeline.cells) <= 8 * 240
    assert report.counts.total == 100_000 and report.dlq.total == 2_000
    assert len(report.dlq.items) == 100 and report.dlq.more == 1_900
    assert len(report.failures[0].item_ids) == 20 and report.failures[0].more == 1_980
    assert len(html) < 600_000, len(html)
    assert not watch.refresh(), "a second look reads only what was appended: nothing"


def test_the_page_makes_no_request(tmp_path: Path) -> None:
    report = read_report(write_job(tmp_path, 50, parallel=3, fail_every=5, cost_usd=0.1))
    for live in (False, True):
        html = render_page(report, live=live)
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html), "no remote URL"
        assert '<link rel="stylesheet"' not in html and "<script src" not in html
        assert "@import" not in html and "url(" not in html
    static = render_page(report)
    assert "<script" not in static, "the exported report runs no script"
    assert "default-src 'none'" in static


def test_sections_carry_the_figures_the_tests_read(tmp_path: Path) -> None:
    report = read_report(write_job(tmp_path, 30, parallel=3, fail_every=10))
    sections = render_sections(report)
    assert set(sections) == set(SECTION_IDS)
    for key, html in sections.items():
        assert html.startswith(f'<section id="{key}"'), key
    assert '<div class="value" id="count-succeeded">27</div>' in sections["counts"]
    assert 'id="count-total">30<' in sections["counts"]
    assert "<title>item_9 · attempt 1 · failed, retried" in sections["timeline"]


def test_charts_geometry(tmp_path: Path) -> None:
    report = read_report(write_job(tmp_path, 40, parallel=4, fail_every=10))
    chart = throughput_chart(report)
    assert chart.rects and all(chart.left <= r.x <= chart.right for r in chart.rects)
    assert chart.y_ticks[0].label == "0"
    bars = bars_chart(report.timeline)
    assert len(bars.rects) == report.timeline.attempts
    assert {r.css for r in bars.rects} == {"succeeded", "retried", "failed"}
    assert cells_chart(report.timeline).rects == []  # not aggregated: no cells


def test_time_axis_labels() -> None:
    assert [offset_label(s) for s in (0, 45, 120, 150, 3600, 3610)] == [
        "0",
        "45s",
        "2m",
        "2m30s",
        "1h",
        "1h00m10s",
    ]
