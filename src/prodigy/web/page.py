"""The report page: a `ProgressReport` rendered as one self-contained HTML document.

Jinja2 templates (package data, with the stylesheet and the live page's script inlined) and
the charts' inline SVG: the file opens offline and makes no request. The page is made of
sections with ids; the live dashboard re-renders them one by one (`render_sections`) and
pushes the ones that changed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from prodigy.report import ProgressReport, moment_text, span_text
from prodigy.web.charts import bars_chart, cells_chart, throughput_chart

SECTION_IDS = (
    "job",
    "counts",
    "throughput",
    "timeline",
    "failures",
    "dlq",
    "items",
    "cost",
    "events",
)

_RUN_WORDS = {
    "job_started": "cook",
    "job_resumed": "resumed",
    "dlq_reprocess_started": "DLQ reprocess",
}


def _f1(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _f2(value: float) -> str:
    return f"{value:.2f}"


def _num(value: int | float) -> str:
    return f"{value:,}"


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"${value:,.0f}"
    return f"${value:,.2f}" if value >= 100 else f"${value:.4f}"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _clock(iso: str | None) -> str:
    """`05:46:27`, the local time of a moment (the date is in the header)."""
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return iso


def _span(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return span_text(value)


def _run_word(kind: str) -> str:
    return _RUN_WORDS.get(kind, kind)


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("prodigy.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    filters: dict[str, Callable[..., str]] = {
        "f1": _f1,
        "f2": _f2,
        "num": _num,
        "usd": _usd,
        "rate": _rate,
        "clock": _clock,
        "span": _span,
        "moment": moment_text,
        "run_word": _run_word,
    }
    env.filters.update(filters)
    return env


@functools.cache
def _static(name: str) -> str:
    return (resources.files("prodigy.web") / "static" / name).read_text(encoding="utf-8")


def render_sections(report: ProgressReport) -> dict[str, str]:
    """Each section of the page by its id, as HTML."""
    macros: Any = _environment().get_template("sections.html.j2").module
    timeline = report.timeline
    rendered: dict[str, Markup] = {
        "job": macros.section_job(report),
        "counts": macros.section_counts(report),
        "throughput": macros.section_throughput(report, throughput_chart(report)),
        "timeline": macros.section_timeline(
            report,
            cells_chart(timeline) if timeline.aggregated else None,
            bars_chart(timeline),
        ),
        "failures": macros.section_failures(report),
        "dlq": macros.section_dlq(report),
        "items": macros.section_items(report),
        "cost": macros.section_cost(report),
        "events": macros.section_events(report),
    }
    return {key: str(value) for key, value in rendered.items()}


def render_page(
    report: ProgressReport,
    live: bool = False,
    sections: dict[str, str] | None = None,
    generation: int = 0,
) -> str:
    """The whole page. `live` adds the script that keeps it up to date from the server that
    served it; without it the page is a static report that makes no request at all."""
    parts = sections if sections is not None else render_sections(report)
    return (
        _environment()
        .get_template("page.html.j2")
        .render(
            report=report,
            live=live,
            generation=generation,
            sections={key: Markup(html) for key, html in parts.items()},
            css=Markup(_static("report.css")),
            script=Markup(_static("live.js")) if live else "",
        )
    )
