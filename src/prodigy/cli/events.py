"""`prodigy events show` and `prodigy events watch`: a job's events log, read or followed live.

The log is only read here. `watch` follows it like `tail -f`, holding back a last line until
its newline arrives, and stops by itself when the job has ended and nothing holds its lock.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgspec

from prodigy.cli.output import quiet_broken_pipe, say, warn
from prodigy.display import display_time, one_line
from prodigy.errors import ProdigyError
from prodigy.events import END_EVENTS, EVENT_TYPES, TornLine, with_job_id
from prodigy.job import ItemsFile
from prodigy.lock import is_locked
from prodigy.store import JobDir, find_job, find_repository, jobs_root, list_jobs

START_EVENTS = frozenset({"job_started", "job_resumed"})
POLL_SECONDS = 0.15
# How long a job must look abandoned (no lock holder, no end event) before `watch` gives up:
# long enough to cover the instant between a job directory's creation and its lock being taken.
ABANDONED_SECONDS = 1.0
READ_CHUNK = 1 << 20
TYPE_WIDTH = 15  # the agent_* types line up; longer names just push the line right
ERROR_CHARS = 120

# Fields shown in a fixed place (or not at all) rather than as key=value.
_PLACED = frozenset({"ts", "type", "job_id", "item_id", "error", "reason"})
_LEADING = ("attempt", "exit_code", "error_kind", "duration_s", "version")
# The job counts that start, end and resume events carry (`prodigy.events.count_fields`).
_COUNTS = ("total", "succeeded", "failed", "dead_lettered", "remaining")


@dataclass(frozen=True)
class Event:
    """One parsed line of the log, with its text kept so `--json` prints it unchanged."""

    data: dict[str, Any]
    raw: str

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))

    @property
    def item_id(self) -> str | None:
        value = self.data.get("item_id")
        return None if value is None else str(value)

    def json(self, job_id: str) -> str:
        """The line as written, with the job named where the log leaves it out."""
        if "job_id" in self.data:
            return self.raw
        return msgspec.json.encode(with_job_id(self.data, job_id)).decode()


def parse_line(raw: bytes, line_number: int) -> Event | TornLine:
    text = raw.decode("utf-8", "replace")
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return TornLine(line_number, text)
    if not isinstance(value, dict):
        return TornLine(line_number, text)
    return Event(value, text.rstrip("\r"))


def read_log(path: Path) -> Iterator[Event | TornLine]:
    """Every line of the log in order; a final line without its newline is included."""
    try:
        log = path.open("rb")
    except FileNotFoundError:
        return
    with log:
        for number, line in enumerate(log, start=1):
            if line.strip():
                yield parse_line(line.rstrip(b"\n"), number)


class LineAssembler:
    """Cuts a stream of appended bytes into complete lines, holding a partial last line back."""

    def __init__(self) -> None:
        self._pending = b""
        self.lines_seen = 0

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        """The lines completed by `chunk`, each with its 1-based line number in the file."""
        parts = (self._pending + chunk).split(b"\n")
        self._pending = parts.pop()
        numbered = []
        for part in parts:
            self.lines_seen += 1
            numbered.append((self.lines_seen, part))
        return numbered

    @property
    def pending(self) -> bytes:
        return self._pending


class EndTracker:
    """Whether the job's latest run (start or resume) has recorded its end."""

    def __init__(self) -> None:
        self.ended = False
        self.end_type: str | None = None

    def observe(self, event: Event) -> None:
        if event.type in START_EVENTS:
            self.ended = False
            self.end_type = None
        elif event.type in END_EVENTS:
            self.ended = True
            self.end_type = event.type


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ",".join(str(v) for v in value)
    return msgspec.json.encode(value).decode()


def _field(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if key == "attempt":
        return f"attempt {value}"
    if key == "exit_code":
        return f"exit {value}"
    if key == "duration_s" and isinstance(value, int | float):
        return f"{value:.2f}s"
    if key == "delay_s" and isinstance(value, int | float):
        return f"after {value:g}s"
    if key == "version":
        return f"v{value}"
    if key == "cost_usd" and isinstance(value, int | float):
        return f"${value:.4f}"
    if key == "error_kind":
        # An exit code already says so; other kinds (timeout, missing_variable...) are news.
        return None if value == "exit_code" else str(value)
    return f"{key}={_compact(value)}"


def counts_summary(data: dict[str, Any]) -> str | None:
    """`2/3 succeeded, 0 remaining, 1 in DLQ`, worded like resume's status line; None unless
    the event carries every count (anything else is shown field by field)."""
    values = [data.get(key) for key in _COUNTS]
    numbers = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    if len(numbers) != len(_COUNTS):
        return None
    total, succeeded, _failed, dead, remaining = numbers
    text = f"{succeeded}/{total} succeeded, {remaining} remaining, {dead} in DLQ"
    skipped = data.get("skipped")
    return (text + f", {skipped} skipped") if isinstance(skipped, int) and skipped else text


def format_event(data: dict[str, Any]) -> str:
    """One readable line: time, type, item, the other fields compactly, the error last."""
    parts = [display_time(str(data.get("ts", "?"))), f"{data.get('type', '?')!s:<{TYPE_WIDTH}}"]
    if data.get("item_id") is not None:
        parts.append(str(data["item_id"]))
    summary = counts_summary(data)
    placed = _PLACED | frozenset((*_COUNTS, "skipped")) if summary is not None else _PLACED
    leading = [key for key in _LEADING if key in data]
    rest = [key for key in data if key not in placed and key not in _LEADING]
    shown = [_field(key, data[key]) for key in leading]
    shown.append(summary)
    shown += [_field(key, data[key]) for key in rest]
    parts += [text for text in shown if text is not None]
    for key in ("reason", "error"):
        if data.get(key):
            parts.append(one_line(str(data[key]), ERROR_CHARS))
    return "  ".join(parts).rstrip()


def torn_message(torn: TornLine, path: Path, complete: bool = True) -> str:
    what = "is not valid JSON" if complete else "is incomplete or damaged"
    return (
        f"warning: {path.name} line {torn.line_number} {what}, skipped: {one_line(torn.text, 80)}"
    )


def _check_item(job: JobDir, item_id: str) -> None:
    if not job.items.exists():
        return
    items = ItemsFile(job.items)
    try:
        known = item_id in set(items.ids)
    finally:
        items.close()
    if not known:
        raise ProdigyError(
            f"Job {job.job_id} has no item {item_id!r}.",
            hint=f"See its item ids with `prodigy events show {job.job_id} --type agent_started`.",
        )


def select_events(
    lines: Iterable[Event | TornLine],
    types: tuple[str, ...],
    item_id: str | None,
    tail: int | None,
    on_torn: Any,
) -> list[Event]:
    """Filter by type and item, then keep the last `tail`; torn lines go to `on_torn`."""
    # More than could ever be kept is the same as "all" (a deque refuses a bigger maxlen).
    kept: deque[Event] = deque(maxlen=None if tail is None else min(tail, sys.maxsize))
    for line in lines:
        if isinstance(line, TornLine):
            on_torn(line)
            continue
        if types and line.type not in types:
            continue
        if item_id is not None and line.item_id != item_id:
            continue
        kept.append(line)
    return list(kept)


@click.group("events")
def events() -> None:
    """Show or follow a job's event history."""


_type_choice = click.Choice(EVENT_TYPES)


@events.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the original JSON lines.")
@click.option(
    "--type",
    "types",
    multiple=True,
    type=_type_choice,
    metavar="TYPE",
    help="Only events of this type (repeatable), e.g. agent_failed.",
)
@click.option("--item", "item_id", metavar="ID", help="Only events about this item id.")
@click.option(
    "--tail", type=click.IntRange(min=0), metavar="N", help="Only the last N (after filtering)."
)
def show(
    job_id: str, as_json: bool, types: tuple[str, ...], item_id: str | None, tail: int | None
) -> int:
    """Print the event history of JOB_ID, one event per line."""
    job = find_job(job_id)
    if item_id is not None:
        _check_item(job, item_id)
    if not job.events.exists():
        warn(f"No events recorded yet for job {job.job_id}.")
        return 0
    selected = select_events(
        read_log(job.events),
        types,
        item_id,
        tail,
        lambda torn: warn(torn_message(torn, job.events, complete=False)),
    )
    try:
        for event in selected:
            say(event.json(job.job_id) if as_json else format_event(event.data))
    except BrokenPipeError:
        return quiet_broken_pipe()
    if not selected and (types or item_id is not None):
        warn(f"No events of job {job.job_id} match the filters.")
    return 0


def _newest_job() -> JobDir:
    repo = find_repository(Path.cwd())
    jobs = list_jobs(repo.name)
    if not jobs:
        raise ProdigyError(
            f"No jobs found for repository {repo.name!r} (looked in {jobs_root(repo.name)}).",
            hint="Pass a job id, or start a job with `prodigy cook WORKFLOW.yaml`.",
        )
    return jobs[-1]


class Follower:
    """Reads what was appended to the log since the last call, line by complete line."""

    def __init__(self, job: JobDir) -> None:
        self.job = job
        self.assembler = LineAssembler()
        self._fd: int | None = None
        self._position = 0

    def _open(self) -> bool:
        if self._fd is None:
            try:
                self._fd = os.open(self.job.events, os.O_RDONLY)
            except FileNotFoundError:
                if not self.job.path.is_dir():
                    raise ProdigyError(
                        f"Job {self.job.job_id} was deleted while it was being watched."
                    ) from None
                return False
        return True

    def read(self) -> list[tuple[int, bytes]]:
        """Complete lines appended since the last call (none if the log does not exist yet)."""
        if not self._open():
            return []
        assert self._fd is not None
        lines: list[tuple[int, bytes]] = []
        while True:
            size = os.fstat(self._fd).st_size
            if size <= self._position:
                return lines
            chunk = os.pread(self._fd, min(size - self._position, READ_CHUNK), self._position)
            if not chunk:
                return lines
            self._position += len(chunk)
            lines.extend(self.assembler.feed(chunk))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def follow(job: JobDir, as_json: bool) -> int:
    """Print the events so far, then new ones as they come, until the job's run has ended."""
    follower = Follower(job)
    tracker = EndTracker()
    first_pass = True
    unheld_since: float | None = None
    try:
        while True:
            ended_now = False
            for number, raw in follower.read():
                if not raw.strip():
                    continue
                line = parse_line(raw, number)
                if isinstance(line, TornLine):
                    warn(torn_message(line, job.events))
                    continue
                tracker.observe(line)
                ended_now = ended_now or line.type in END_EVENTS
                say(line.json(job.job_id) if as_json else format_event(line.data))
            if ended_now and tracker.ended and not first_pass:
                # The end arrived while watching: the run is over, whoever holds the lock.
                return 0
            first_pass = False
            # The lock is checked after reading, and the writer logs its end before releasing
            # the lock: once the lock is free, one more read is sure to hold that end event.
            if is_locked(job.lock) is not None:
                unheld_since = None
            elif tracker.ended and unheld_since is not None:
                return 0
            elif unheld_since is None:
                unheld_since = time.monotonic()
            elif time.monotonic() - unheld_since >= ABANDONED_SECONDS:
                warn(
                    f"Job {job.job_id} is not running and its last run recorded no end (it "
                    f"crashed or was killed). Resume it with `prodigy resume-job {job.job_id}`."
                )
                return 0
            if unheld_since is None or not tracker.ended:
                time.sleep(POLL_SECONDS)
    finally:
        follower.close()


@events.command("watch")
@click.argument("job_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the original JSON lines.")
def watch(job_id: str | None, as_json: bool) -> int:
    """Follow a job's events live (default: the newest job of this repository).

    Exits by itself when the job ends; Ctrl-C stops watching (the job is not affected).
    """
    job = find_job(job_id) if job_id else _newest_job()
    if not job_id:
        warn(f"Watching job {job.job_id} (Ctrl-C to stop).")
    try:
        return follow(job, as_json)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return quiet_broken_pipe()
