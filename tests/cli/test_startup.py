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


def test_ctrl_c_during_start_up_is_an_interruption_not_an_abort(
    world: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIGINT before a job's handlers exist reaches click as KeyboardInterrupt, which it
    turns into Abort ("Aborted.", exit 1); the kill soak found it. It must exit 130."""
    from prodigy.cli import main as cli_main

    def interrupted(ctx: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setenv("PRODIGY_HOME", str(world.home))
    monkeypatch.setattr(cli_main.cli, "invoke", interrupted)
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["sessions", "show"])
    assert exited.value.code == 130
    assert "Interrupted." in capsys.readouterr().err
