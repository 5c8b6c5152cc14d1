"""The charts of the report as geometry: rectangles, ticks and hover texts in SVG user units.

Computed here, in Python, and drawn by the template as inline SVG: the page needs no script
and no network to show them, the exported file and the live page draw the same thing, and a
test can read every figure from the DOM. Hover texts are SVG `<title>`s (the browser's own
tooltip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prodigy.report import ProgressReport, Timeline, TimelineBar, bucket_seconds, span_text

WIDTH = 960.0
LEFT = 56.0  # room for the y labels / slot names
RIGHT = 12.0
TOP = 8.0
AXIS = 24.0  # room for the time labels under the plot
THROUGHPUT_HEIGHT = 180.0
LANE_AREA = 360.0  # lanes share this height, each between MIN_ROW and MAX_ROW
MIN_ROW = 3.0
MAX_ROW = 18.0
MIN_BAR = 1.5  # the shortest attempt still shows
X_TICKS = 8


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    css: str  # the outcome or series: the stylesheet colours it
    title: str
    opacity: float = 1.0


@dataclass(frozen=True)
class Tick:
    at: float  # x for time ticks, y for value ticks and lane labels
    label: str


@dataclass(frozen=True)
class Chart:
    width: float
    height: float
    left: float
    top: float
    right: float  # x where the plot ends
    bottom: float  # y where the plot ends
    rects: list[Rect] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    lane_labels: list[Tick] = field(default_factory=list)
    empty: str | None = None  # what to say instead of an empty plot


def offset_label(seconds: float) -> str:
    """`0`, `45s`, `2m`, `2m30s`, `1h`: a time axis label, counted from the run's start."""
    whole = round(seconds)
    if whole == 0:
        return "0"
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if secs:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


def _time_ticks(start_s: float, end_s: float, left: float, right: float) -> list[Tick]:
    span = end_s - start_s
    if span <= 0:
        return [Tick(left, offset_label(start_s))]
    step = bucket_seconds(span, X_TICKS)
    first = math.ceil(start_s / step) * step
    ticks = []
    value = first
    while value <= end_s + 1e-9:
        ticks.append(Tick(left + (value - start_s) / span * (right - left), offset_label(value)))
        value += step
    return ticks


def nice_ceiling(value: float) -> float:
    """1, 2, 5, 10, 20, 50...: the smallest such number at least `value` (and at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if value <= factor * power:
            return float(factor * power)
    return float(10 * power)


def throughput_chart(report: ProgressReport) -> Chart:
    """Attempts ended per bucket of the latest run, stacked: succeeded, retried, failed."""
    t = report.throughput
    bottom = THROUGHPUT_HEIGHT - AXIS
    right = WIDTH - RIGHT
    chart = Chart(WIDTH, THROUGHPUT_HEIGHT, LEFT, TOP, right, bottom)
    totals = [s + r + f for s, r, f in zip(t.succeeded, t.retried, t.failed, strict=True)]
    if not any(totals):
        return Chart(
            WIDTH, THROUGHPUT_HEIGHT, LEFT, TOP, right, bottom, empty="No attempt has ended yet."
        )
    step = nice_ceiling(max(totals) / 4)
    top_value = math.ceil(max(totals) / step) * step
    scale = (bottom - TOP) / top_value
    slot = (right - LEFT) / len(totals)
    gap = min(2.0, slot * 0.15)
    for index, (s, r, f) in enumerate(zip(t.succeeded, t.retried, t.failed, strict=True)):
        if not s + r + f:
            continue
        x = LEFT + index * slot + gap / 2
        since, until = index * t.bucket_s, (index + 1) * t.bucket_s
        title = (
            f"{offset_label(since)}–{offset_label(until)} after the run started: "
            f"{s} succeeded, {r} failed and retried, {f} failed"
        )
        y = bottom
        for value, css in ((s, "succeeded"), (r, "retried"), (f, "failed")):
            if value:
                height = value * scale
                y -= height
                chart.rects.append(Rect(x, y, slot - gap, height, css, title))
    span = len(totals) * t.bucket_s
    chart.x_ticks.extend(_time_ticks(0.0, span, LEFT, right))
    for tick in range(round(top_value / step) + 1):
        chart.y_ticks.append(Tick(bottom - tick * step * scale, f"{tick * step:,.0f}"))
    return chart


def _row(lanes: int) -> float:
    return max(MIN_ROW, min(MAX_ROW, LANE_AREA / max(lanes, 1)))


def _lane_chart(timeline: Timeline, start_s: float, end_s: float) -> Chart:
    row = _row(timeline.lanes)
    bottom = TOP + row * timeline.lanes
    right = WIDTH - RIGHT
    chart = Chart(WIDTH, bottom + AXIS, LEFT, TOP, right, bottom)
    chart.x_ticks.extend(_time_ticks(start_s, end_s, LEFT, right))
    every = max(1, math.ceil(timeline.lanes / (LANE_AREA / 14)))
    for lane in range(0, timeline.lanes, every):
        chart.lane_labels.append(Tick(TOP + row * (lane + 0.5), f"slot {lane + 1}"))
    return chart


def _bar_title(bar: TimelineBar) -> str:
    words = {
        "running": "running",
        "succeeded": "succeeded",
        "failed": "failed",
        "retried": "failed, retried",
        "interrupted": "cut short (interrupted)",
    }
    title = f"{bar.item_id} · attempt {bar.attempt} · {words[bar.outcome]} · "
    title += f"{span_text(bar.duration_s)}"
    if bar.cost_usd:
        title += f" · ${bar.cost_usd:.4f}"
    if bar.error:
        title += f"\n{bar.error}"
    return title


def bars_chart(timeline: Timeline) -> Chart:
    """One lane per agent slot, one bar per attempt, coloured by its outcome."""
    start_s = timeline.bars_from_s
    end_s = max(timeline.span_s, start_s + 1e-3)
    chart = _lane_chart(timeline, start_s, end_s)
    if not timeline.bars:
        return Chart(
            chart.width, chart.height, LEFT, TOP, chart.right, chart.bottom,
            x_ticks=chart.x_ticks, empty="No agent has started in this run yet.",
        )  # fmt: skip
    row = _row(timeline.lanes)
    scale = (chart.right - LEFT) / (end_s - start_s)
    pad = 1.0 if row >= 6 else 0.0
    for bar in timeline.bars:
        x = LEFT + (bar.start_s - start_s) * scale
        width = max(MIN_BAR, (bar.end_s - bar.start_s) * scale)
        y = TOP + bar.lane * row + pad
        chart.rects.append(Rect(x, y, width, row - 2 * pad, bar.outcome, _bar_title(bar)))
    return chart


MOSTLY_OK = 0.1  # a cell where fewer attempts than this failed is green; amber up to half


def _cell_css(attempts: int, failed: int) -> str:
    if not attempts or failed < MOSTLY_OK * attempts:
        return "succeeded"
    return "retried" if failed < 0.5 * attempts else "failed"


def cells_chart(timeline: Timeline) -> Chart:
    """The same lanes for a run with too many attempts to draw: each cell is one slot over one
    stretch of time, as opaque as the slot was busy, coloured by the share of attempts that
    failed in it (a few failures among many must not paint the whole run red)."""
    chart = _lane_chart(timeline, 0.0, max(timeline.span_s, 1e-3))
    row = _row(timeline.lanes)
    width = (chart.right - LEFT) / max(timeline.columns, 1)
    for cell in timeline.cells:
        since = cell.column * timeline.cell_s
        title = (
            f"slot {cell.lane + 1}, {offset_label(since)}–{offset_label(since + timeline.cell_s)}"
            f": busy {cell.busy:.0%}, {cell.attempts} attempts ended, {cell.failed} failed"
        )
        css = _cell_css(cell.attempts, cell.failed)
        chart.rects.append(
            Rect(
                LEFT + cell.column * width,
                TOP + cell.lane * row,
                width,
                row,
                css,
                title,
                opacity=round(0.15 + 0.85 * cell.busy, 3),
            )
        )
    return chart
