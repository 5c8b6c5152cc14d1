"""Fuzzing the command line: any argument vector (real commands and flags, job ids, files,
junk, unicode) on a home with real jobs exits 0, 1, 2 or 3 with no traceback and no
"internal error" (the last line of defence in cli/main.py catching a bug).

The CLI runs in-process (`prodigy.cli.main.main` under click's CliRunner isolation), with the
home restored from a snapshot before each example, so commands that change it (clean, resume,
reprocess, cook) start from the same jobs every time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from fuzzing import fuzz, user_text
from hypothesis import example, given
from hypothesis import strategies as st

import prodigy.cli.events as events_command
from conftest import FAKE_CLAUDE, prodigy_executable, wait_for
from prodigy.cli.main import main
from prodigy.cli.output import Settings

ITEMS = '[{"n": 0}, {"n": 1}, {"n": 2}]'
OK = """\
name: ok
mode: mapreduce
map:
  input: items.json
  isolation: none
  agent_template:
    - shell: "true ${item.n}"
"""
FAILS = """\
name: fails
mode: mapreduce
map:
  input: items.json
  isolation: none
  agent_template:
    - shell: "test ${item.n} -ne 1"
"""
SETUP_FAILS = """\
name: setup-fails
mode: mapreduce
setup:
  - shell: "exit 4"
map:
  input: items.json
  isolation: none
  agent_template:
    - shell: "true"
"""
# Its agents wait for a file `go`; the fixture kills the run (SIGKILL) while one waits, then
# creates `go`: the job is left crashed (no end event, lock free) and resumes quickly.
CRASHED = OK.replace("true ${item.n}", "while [ ! -e go ]; do sleep 0.05; done")
FILES = {
    "items.json": ITEMS,
    "ok.yaml": OK,
    "fails.yaml": FAILS,
    "setup_fails.yaml": SETUP_FAILS,
    "bad.yaml": "name: [\n",
    "worktree.yaml": OK.replace("isolation: none", "isolation: worktree"),
    "dask.yaml": OK + "executor: {dask: '127.0.0.1:1'}\n",
    "crashed.yaml": CRASHED,
}


@dataclass
class Home:
    """A repository directory (not git) and a PRODIGY_HOME holding four real jobs: complete,
    with an item in the DLQ, failed in setup, and crashed with two items pending."""

    repo: Path
    home: Path
    snapshot: Path
    env: dict[str, str]
    jobs: list[str]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    root = tmp_path_factory.mktemp("fuzz-cli")
    repo, state = root / "repo", root / "home"
    repo.mkdir()
    for name, text in FILES.items():
        (repo / name).write_text(text)
    env = {
        "PRODIGY_HOME": str(state),
        "PRODIGY_CLAUDE_BIN": str(FAKE_CLAUDE),
        "PRODIGY_INTERRUPT_GRACE": "1",
        "PRODIGY_DASK_CONNECT_TIMEOUT": "0.3",
        "PRODIGY_ITEM": None,
    }
    full_env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    for workflow, code in (("ok.yaml", 0), ("fails.yaml", 3), ("setup_fails.yaml", 1)):
        ran = subprocess.run(
            [*prodigy_executable(), "cook", workflow],
            cwd=repo,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == code, ran.stdout + ran.stderr
    crash(repo, full_env)
    jobs = sorted(p.name for p in (state / "state" / repo.name / "mapreduce" / "jobs").iterdir())
    assert len(jobs) == len(JOB_MARKERS)
    snapshot = root / "snapshot"
    shutil.copytree(state, snapshot)
    with pytest.MonkeyPatch.context() as patch:
        # `events watch` on a job that is not running waits this long before it gives up.
        patch.setattr(events_command, "ABANDONED_SECONDS", 0.1)
        patch.setattr(events_command, "POLL_SECONDS", 0.02)
        yield Home(repo, state, snapshot, env, jobs)


def crash(repo: Path, env: dict[str, str]) -> None:
    """Start crashed.yaml, SIGKILL its whole process group once an agent runs, then let any
    agent that outlived it finish."""
    jobs = Path(env["PRODIGY_HOME"], "state", repo.name, "mapreduce", "jobs")
    before = set(jobs.iterdir())
    process = subprocess.Popen(
        [*prodigy_executable(), "cook", "crashed.yaml"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def agent_started() -> bool:
        logs = [job / "events.jsonl" for job in set(jobs.iterdir()) - before]
        return any(log.exists() and b'"agent_started"' in log.read_bytes() for log in logs)

    try:
        wait_for(agent_started, what="an agent of crashed.yaml")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        (repo / "go").touch()


def run_cli(home: Home, argv: list[str]) -> tuple[int, str]:
    """Run `prodigy ARGV` in-process from a fresh copy of the home: (exit code, stderr)."""
    shutil.rmtree(home.home, ignore_errors=True)
    shutil.copytree(home.snapshot, home.home)
    runner = CliRunner()
    with runner.isolation(env=home.env) as (_out, err, _mixed), contextlib.chdir(home.repo):
        try:
            main(argv)
            code: object = 0
        except SystemExit as exc:
            code = exc.code
        finally:
            # The global options live on a class; the next run (or test) starts without them.
            Settings.verbose, Settings.yes, Settings.executor = 0, False, None
    return (code if isinstance(code, int) else 1), err.getvalue().decode(errors="replace")


# Values by kind; `@jobN` stands for the fixture's N-th job (its id is known only once it ran).
JOB_MARKERS = ["@job0", "@job1", "@job2", "@job3"]
JOBS = [*JOB_MARKERS, "mapreduce-20990101-000000", "../../etc", "", "*", "mapreduce-"]
WORKFLOWS = [
    "ok.yaml",
    "crashed.yaml",
    "fails.yaml",
    "setup_fails.yaml",
    "bad.yaml",
    "worktree.yaml",
    "dask.yaml",
    "missing.yaml",
    "items.json",
    ".",
    "/dev/null",
]
NUMBERS = ["1", "2", "0", "-1", "99999999999999999999", "1.5", "abc", "٣"]
DURATIONS = ["7d", "0s", "1m", "1h30m", "99999999999w", "7", "1d1d", "1µs"]
EXECUTORS = [
    "local",
    "dask://127.0.0.1:1",
    "dask://..:1",
    "dask://" + "a" * 300 + ":1",
    "dask://[::1]:99999",
    "dask://h:٣",
    "dask://",
    "Local",
]
TYPES = ["agent_completed", "job_started", "dlq_item_added", "nope", "AGENT_COMPLETED"]
ITEM_IDS = ["item_0", "item_1", "item_2", "nope", ""]

# What a shell can pass: no NUL (argv strings are C strings), but any other character, and
# bytes that are not UTF-8 arrive as lone surrogates (Python's surrogateescape).
arguments = st.one_of(
    user_text,
    st.binary(max_size=8).map(lambda b: b.decode("utf-8", errors="surrogateescape")),
).map(lambda text: text.replace("\x00", ""))
anything = st.one_of(
    arguments,
    st.sampled_from(JOBS + WORKFLOWS + NUMBERS + DURATIONS + EXECUTORS + ["-v", "--", "-"]),
)


def kind(values: list[str]) -> st.SearchStrategy[str]:
    """Mostly a value of the right kind, now and then any argument at all."""
    return st.integers(0, 9).flatmap(lambda n: anything if n == 7 else st.sampled_from(values))


FLAG = st.just("")  # an option without a value
# Each command: its words, its positional arguments (None: optional) and its options.
COMMANDS: list[tuple[list[str], list[tuple[list[str], bool]], dict[str, st.SearchStrategy[str]]]]
COMMANDS = [
    (
        [name],
        [(WORKFLOWS, True)],
        {
            "--max-parallel": kind(NUMBERS),
            "--max-items": kind(NUMBERS),
            "-y": FLAG,
            "--executor": kind(EXECUTORS),
            "--dry-run": FLAG,
        },
    )
    for name in ("cook", "run")
] + [
    (["resume"], [(JOBS, False)], {"-y": FLAG, "--executor": kind(EXECUTORS)}),
    (
        ["resume-job"],
        [(JOBS, True)],
        {
            "--yes": FLAG,
            "--executor": kind(EXECUTORS),
            "--force": FLAG,
            "--max-parallel": kind(NUMBERS),
            "--max-additional-retries": kind(NUMBERS),
            "--skip-validation": FLAG,
            "--from-checkpoint": kind(NUMBERS),
            "--verbose": FLAG,
        },
    ),
    (["checkpoints", "list"], [(JOBS, False)], {}),
    (["checkpoints", "show"], [(JOBS, True)], {"--version": kind(NUMBERS)}),
    (
        ["checkpoints", "clean"],
        [(JOBS, False)],
        {"--all": FLAG, "--older-than": kind(DURATIONS), "--force": FLAG, "--dry-run": FLAG},
    ),
    (
        ["events", "show"],
        [(JOBS, True)],
        {
            "--json": FLAG,
            "--type": kind(TYPES),
            "--item": kind(ITEM_IDS),
            "--tail": kind(NUMBERS),
        },
    ),
    (["events", "watch"], [(JOBS, False)], {"--json": FLAG}),
    (["dlq", "status"], [(JOBS, True)], {}),
    (["dlq", "list"], [(JOBS, True)], {"--json": FLAG, "--limit": kind(NUMBERS)}),
    (["dlq", "show"], [(JOBS, True), (ITEM_IDS, True)], {}),
    (
        ["dlq", "reprocess"],
        [(JOBS, True)],
        {
            "--max-parallel": kind(NUMBERS),
            "--item": kind(ITEM_IDS),
            "--force": FLAG,
            "--executor": kind(EXECUTORS),
        },
    ),
    (["sessions", "show"], [(JOBS, False)], {}),
    (["worktrees", "list"], [], {}),
    (["checkpoints"], [], {}),
    ([], [], {}),
]


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    """A command with mostly fitting arguments and options in any order, sometimes missing,
    repeated or stray ones, and sometimes a global option first."""
    argv = draw(st.sampled_from([[], [], [], [], [], [], ["-v"], ["--help"], ["--version"]]))
    words, positionals, options = draw(st.sampled_from(COMMANDS))
    argv += words
    parts: list[list[str]] = []
    for values, required in positionals:
        if required or draw(st.booleans()):
            parts.append([draw(kind(values))])
    if options:
        for option in draw(st.lists(st.sampled_from(sorted(options)), max_size=3)):
            strategy = options[option]
            parts.append([option] if strategy is FLAG else [option, draw(strategy)])
    parts += [[stray] for stray in draw(st.lists(anything, max_size=1))]
    for part in draw(st.permutations(parts)):
        argv += part
    return argv


def argv_for(home: Home, argv: list[str]) -> list[str]:
    return [home.jobs[JOB_MARKERS.index(a)] if a in JOB_MARKERS else a for a in argv]


@fuzz(150)
@given(argv=argvs())
@example(argv=["checkpoints", "list"])
@example(argv=["dlq", "reprocess", "@job1"])
@example(argv=["resume-job", "@job1", "--force"])
@example(argv=["events", "watch", "@job0"])
@example(argv=["events", "watch", "@job3"])
@example(argv=["resume"])
@example(argv=["checkpoints", "clean", "--all", "--older-than", "0s", "--force"])
# Found by fuzzing: socket's UnicodeError for a host name IDNA cannot encode.
@example(argv=["resume", "--executor", "dask://..:1"])
@example(argv=["cook", "ok.yaml", "--executor", "dask://" + "a" * 64 + ":1"])
# Found by fuzzing: a --tail bigger than a deque can hold was an OverflowError.
@example(argv=["events", "show", "@job0", "--tail", "99999999999999999999"])
def test_any_arguments_exit_cleanly(home: Home, argv: list[str]) -> None:
    real = argv_for(home, argv)
    code, err = run_cli(home, real)
    assert code in (0, 1, 2, 3), f"prodigy {real} exited {code}: {err}"
    assert "internal error" not in err, f"prodigy {real}: {err}"
    if not any(re.fullmatch(r"-v+|--verbose", a) for a in real):
        assert "Traceback" not in err, f"prodigy {real}: {err}"
