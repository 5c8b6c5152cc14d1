"""TEST-ONLY pause points, so the kill soak (`benchmarks/soak.py`) can strike a writer mid-write.

Inactive unless `PRODIGY_TEST_PAUSE` is set, and then costs writers one check of `ACTIVE`.
`PRODIGY_TEST_PAUSE=journal@7,checkpoint@2` pauses the 7th journal write (between its two
halves) and the 2nd checkpoint write (temporary file written and synced, not yet renamed);
`merge@N` pauses after the N-th worktree merge commit, before its record. At a pause the
writer creates `<name>.paused` in `PRODIGY_TEST_PAUSE_DIR` and waits until that file is
removed (the soak kills it first, or removes the file to let a graceful exit go on).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

_SPEC = os.environ.get("PRODIGY_TEST_PAUSE", "")
ACTIVE = bool(_SPEC)
_due: dict[str, int] = {
    name: int(nth)
    for name, _, nth in (part.partition("@") for part in _SPEC.split(",") if part)
    if nth.isdigit()
}
_seen: dict[str, int] = {}
_lock = threading.Lock()


def reached(name: str) -> None:
    """Count one pass of the point `name`; on its chosen pass, pause until released."""
    with _lock:
        _seen[name] = count = _seen.get(name, 0) + 1
    if _due.get(name) != count:
        return
    marker = Path(os.environ.get("PRODIGY_TEST_PAUSE_DIR", ".")) / f"{name}.paused"
    marker.write_text(f"{os.getpid()}\n")
    while marker.exists():
        time.sleep(0.005)


def write_first_half(fd: int, data: memoryview, name: str) -> int:
    """On the chosen pass, write about half of `data` and pause there; bytes written."""
    with _lock:
        due = _due.get(name) == _seen.get(name, 0) + 1
    if not due or len(data) < 2:
        reached(name)
        return 0
    written = os.write(fd, data[: len(data) // 2])
    reached(name)
    return written
