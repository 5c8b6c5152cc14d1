"""What a running job shows the user: a live bar on a terminal, plain lines otherwise.

The engine talks to a `Reporter`; it never prints directly.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from prodigy.state import Counts

if TYPE_CHECKING:
    from rich.progress import TaskID


def _summary(c: Counts, running: int, cost_usd: float) -> str:
    text = (
        f"{c.succeeded + c.dead + c.skipped}/{c.total} done "
        f"({c.succeeded} ok, {c.dead + c.skipped} failed, {c.retriable} retrying), "
        f"{running} running"
    )
    if cost_usd:
        text += f", ${cost_usd:.4f}"
    return text


def _print_or_detach(text: str, stream: TextIO) -> None:
    """Print a line; if the reader has gone (`prodigy cook wf.yaml | head -1`), the job goes on
    and its later output is discarded instead of killing the run with a broken pipe."""
    try:
        print(text, file=stream, flush=True)
    except (BrokenPipeError, ValueError):
        try:
            fd = stream.fileno()
        except (OSError, ValueError):
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)


class Reporter:
    """Plain lines: status to stdout, problems to stderr, progress at most every 2 seconds."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._last = 0.0
        self._started = time.monotonic()

    def say(self, text: str) -> None:
        _print_or_detach(text, self.out)

    def warn(self, text: str) -> None:
        _print_or_detach(text, self.err)

    def start_map(self, c: Counts) -> None:
        self._started = time.monotonic()

    def update(
        self, c: Callable[[], Counts], running: int, cost_usd: float, final: bool = False
    ) -> None:
        """Show progress; `c` is called only when a line is due (counting is O(items))."""
        now = time.monotonic()
        if final or now - self._last >= 2.0:
            self._last = now
            self.say(f"progress: {_summary(c(), running, cost_usd)}")

    def close(self) -> None:
        pass


class LiveReporter(Reporter):
    """A rich progress bar with done/failed/running/total, rate and ETA."""

    def __init__(self) -> None:
        # Imported here: a run without a terminal (the common case for big jobs) never loads rich.
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        super().__init__()
        self.console = Console(file=sys.stdout)
        self.bar = Progress(
            TextColumn("[bold]map[/bold]"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[detail]}"),
            TextColumn("[dim]{task.fields[rate]}[/dim]"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task: TaskID | None = None

    def say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def start_map(self, c: Counts) -> None:
        super().start_map(c)
        self.bar.start()
        self.task = self.bar.add_task("map", total=c.total, detail="", rate="")
        self._base = c.finished

    def update(
        self, c: Callable[[], Counts], running: int, cost_usd: float, final: bool = False
    ) -> None:
        now = time.monotonic()
        if self.task is None or not (final or now - self._last >= 0.1):
            return
        self._last = now
        elapsed = max(time.monotonic() - self._started, 1e-6)
        done = c()
        rate = (done.finished - self._base) / elapsed
        detail = f"ok {done.succeeded}  failed {done.dead + done.skipped}  running {running}"
        if cost_usd:
            detail += f"  ${cost_usd:.4f}"
        self.bar.update(self.task, completed=done.finished, detail=detail, rate=f"{rate:.1f}/s")

    def close(self) -> None:
        if self.task is not None:
            self.bar.stop()
            self.task = None


def make_reporter() -> Reporter:
    return LiveReporter() if sys.stdout.isatty() else Reporter()
