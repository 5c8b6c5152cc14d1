"""The reaper: groups still listed when the coordinator dies are killed, forgotten ones are not."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# A coordinator that lists three groups, forgets the second, lists a fourth in its slot, forgets
# the third, and dies without closing anything (as by kill -9).
_COORDINATOR = """
import os, subprocess, sys
from prodigy.reaper import forget_group, reaping, watch_group
with reaping():
    groups = [
        subprocess.Popen(
            ["sleep", "300"], start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).pid
        for _ in range(4)
    ]
    for group in groups[:3]:
        watch_group(group)
    forget_group(groups[1])
    watch_group(groups[3])  # in the slot the second left
    forget_group(groups[2])
    print(" ".join(map(str, groups)), flush=True)
    os._exit(0)
"""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def wait_gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_the_groups_listed_when_the_coordinator_dies_are_killed_and_no_others() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _COORDINATOR], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    first, forgotten, forgotten_too, reused = map(int, done.stdout.split())
    try:
        assert wait_gone(first) and wait_gone(reused)
        assert alive(forgotten) and alive(forgotten_too)
    finally:
        for pid in (first, forgotten, forgotten_too, reused):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


# A table mapped for two slots at first, so that the third group makes it grow.
_GROWING = """
import os, subprocess
import prodigy.reaper
prodigy.reaper._MAPPED_SLOTS = 2
with prodigy.reaper.reaping():
    groups = [
        subprocess.Popen(
            ["sleep", "300"], start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).pid
        for _ in range(3)
    ]
    for group in groups:
        prodigy.reaper.watch_group(group)
    print(" ".join(map(str, groups)), flush=True)
    os._exit(0)
"""


def test_a_group_listed_after_the_table_grew_is_killed_too() -> None:
    done = subprocess.run([sys.executable, "-c", _GROWING], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    groups = list(map(int, done.stdout.split()))
    try:
        assert len(groups) == 3 and all(wait_gone(pid) for pid in groups)
    finally:
        for pid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
