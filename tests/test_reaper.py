"""The reaper: groups still listed when the coordinator dies are killed, forgotten ones are not."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from conftest import alive, wait_gone

GONE_WITHIN = 10.0  # seconds for the reaper to wake and kill what its table lists

# Coordinators: each starts sleepers in groups of their own, lists some with the reaper, prints
# their pids and dies without closing anything (as by kill -9).
_SLEEPERS = """
import os, subprocess
import prodigy.reaper
from prodigy.reaper import forget_group, reaping, watch_group
prodigy.reaper._MAPPED_SLOTS = {mapped_slots}
with reaping():
    groups = [
        subprocess.Popen(
            ["sleep", "300"], start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).pid
        for _ in range({count})
    ]
{body}
    print(" ".join(map(str, groups)), flush=True)
    os._exit(0)
"""

# Lists three groups, forgets the second, lists a fourth in its slot, forgets the third.
_COORDINATOR = _SLEEPERS.format(
    mapped_slots=4096,
    count=4,
    body="""
    for group in groups[:3]:
        watch_group(group)
    forget_group(groups[1])
    watch_group(groups[3])  # in the slot the second left
    forget_group(groups[2])
""",
)


def test_the_groups_listed_when_the_coordinator_dies_are_killed_and_no_others() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _COORDINATOR], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    first, forgotten, forgotten_too, reused = map(int, done.stdout.split())
    try:
        assert wait_gone(first, GONE_WITHIN) and wait_gone(reused, GONE_WITHIN)
        assert alive(forgotten) and alive(forgotten_too)
    finally:
        for pid in (first, forgotten, forgotten_too, reused):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


# A table mapped for two slots at first, so that the third group makes it grow.
_GROWING = _SLEEPERS.format(
    mapped_slots=2,
    count=3,
    body="""
    for group in groups:
        watch_group(group)
""",
)


def test_a_group_listed_after_the_table_grew_is_killed_too() -> None:
    done = subprocess.run([sys.executable, "-c", _GROWING], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    groups = list(map(int, done.stdout.split()))
    try:
        assert len(groups) == 3 and all(wait_gone(pid, GONE_WITHIN) for pid in groups)
    finally:
        for pid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
