"""Fast start: commands that only read (and `--help`) import only what they use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import Env

HEAVY = ("pydantic", "rich", "ruamel", "jsonpath", "distributed", "prodigy.engine")

PROBE = """
import sys
from prodigy.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = {heavy!r}
loaded = [m for m in sys.modules if m.split(".")[0] in heavy or m in heavy]
print("LOADED:" + " ".join(sorted(loaded)))
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["checkpoints", "list"], ["events", "show"], ["sessions", "show"]],
    ids=["help", "checkpoints-list", "events-show", "sessions-show"],
)
def test_reading_commands_do_not_import_the_heavy_libraries(world: Env, args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        cwd=world.repo,
        env=world.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    marker = [line for line in done.stdout.splitlines() if line.startswith("LOADED:")]
    assert marker, done.stdout + done.stderr
    loaded = marker[-1].removeprefix("LOADED:")
    assert loaded == "", f"`prodigy {' '.join(args)}` imported: {loaded}"
