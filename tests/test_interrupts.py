"""A step or a git command killed by the signal that also reached prodigy is an interruption,
not a failure, even when it ends before prodigy's own handler of that signal has run."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from prodigy.git import Git, GitError
from prodigy.interrupts import SIGNAL_SETTLE_SECONDS, Interrupts
from prodigy.state import Attempt


def died(exit_code: int) -> Attempt:
    return Attempt(attempt=1, ok=False, started_at="t", duration_s=0.0, exit_code=exit_code)


async def judged(result: Attempt, signal_after: float | None) -> bool:
    interrupts = Interrupts(warn=lambda _: None, grace=60)
    loop = asyncio.get_running_loop()
    if signal_after is not None:
        loop.call_later(signal_after, interrupts.on_signal, signal.SIGINT)
    return await interrupts.interrupted(result)


def test_a_step_killed_by_sigint_before_prodigy_handled_it_is_cut_short() -> None:
    assert asyncio.run(judged(died(130), signal_after=0.0))
    assert asyncio.run(judged(died(130), signal_after=SIGNAL_SETTLE_SECONDS / 4))


def test_a_step_that_died_of_sigint_with_no_interrupt_is_a_failure() -> None:
    assert not asyncio.run(judged(died(130), signal_after=None))


def test_other_exits_are_judged_at_once() -> None:
    assert not asyncio.run(judged(died(1), signal_after=0.0))
    # SIGTERM's code while the run received SIGINT: a failure of its own.
    assert not asyncio.run(judged(died(143), signal_after=0.0))


def test_a_git_command_killed_by_the_groups_sigint_before_it_ran_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A `git` that dies of SIGINT the first time, as one caught between its fork and its
    # setsid does, and answers the second time.
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    fake.write_text(
        f"#!/bin/sh\nif [ ! -e {tmp_path}/once ]; then touch {tmp_path}/once; kill -INT $$; fi\n"
        "echo answered\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert asyncio.run(Git(tmp_path).out("status")) == "answered"
    # Any other failure is reported as it was.
    fake.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    with pytest.raises(GitError, match="exit code 3"):
        asyncio.run(Git(tmp_path).out("status"))
