"""Tests for prodigy.steps: shell, claude (via tests/fake_claude.py) and write_file steps."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import wait_gone
from prodigy.steps import (
    OutputTail,
    StepContext,
    StepOutcome,
    StepSpec,
    claude_available,
    run_step,
    tail_text,
)

FAKE_CLAUDE = Path(__file__).with_name("fake_claude.py")


def make_ctx(
    tmp_path: Path,
    variables: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    claude_bin: str = "claude-that-does-not-exist",
    output_limit: int = 64_000,
) -> StepContext:
    return StepContext(
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        variables=variables or {},
        claude_bin=claude_bin,
        scratch_dir=tmp_path / "scratch",
        output_limit=output_limit,
    )


def run(step: StepSpec, ctx: StepContext) -> StepOutcome:
    return asyncio.run(run_step(step, ctx))


def shell(command: str, **kwargs: Any) -> StepSpec:
    return StepSpec(kind="shell", command=command, **kwargs)


def read_pid(path: Path) -> int:
    return int(path.read_text().strip())


@pytest.fixture(params=["posix_spawn", "popen"])
def start_path(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Steps start with posix_spawn in the coordinator's own directory and with Popen in
    another (posix_spawn cannot change directory): run the test both ways."""
    if request.param == "posix_spawn":
        monkeypatch.chdir(tmp_path)
    return str(request.param)


_SURROUNDINGS = """
import os, signal
print(os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid())
print(os.readlink("/proc/self/fd/0"))
ignored = int(os.environ["IGNORED"].split()[1], 16)  # bash's, before Python ignores SIGPIPE
print(not ignored & (1 << (signal.SIGPIPE - 1)))
print(os.getcwd())
print(os.environ["STEP_VAR"])
print(sorted(int(fd) for fd in os.listdir("/proc/self/fd")))
"""


def test_a_step_process_starts_alone_in_a_clean_state(tmp_path: Path, start_path: str) -> None:
    """Its own session and group, stdin from /dev/null, signals at their defaults, in its
    directory with its environment, and no descriptor but its stdout and stderr."""
    script = tmp_path / "surroundings.py"
    script.write_text(_SURROUNDINGS)
    out = run(
        shell(
            f"IGNORED=$(grep SigIgn /proc/$$/status) exec {sys.executable} {script}",
            env={"STEP_VAR": "v"},
        ),
        make_ctx(tmp_path),
    )
    assert out.ok, out.error
    lines = out.stdout.splitlines()
    assert lines[:5] == ["True True", os.devnull, "True", str(tmp_path), "v"]
    assert json.loads(lines[5]) == [0, 1, 2, 3]  # 3: the one listdir reads the list through


_STEP_WITH_INHERITED_DESCRIPTOR = """
import asyncio, os, sys
from pathlib import Path
from prodigy.steps import StepContext, StepSpec, run_step
here = Path(sys.argv[1])
if sys.argv[2] == "posix_spawn":
    os.chdir(here)
ctx = StepContext(here, dict(os.environ), {}, "claude", here / "scratch")
out = asyncio.run(run_step(StepSpec(kind="shell", command="ls /proc/$$/fd; true"), ctx))
print(out.stdout.split())
"""


def test_descriptors_prodigy_inherited_are_not_passed_to_steps(
    tmp_path: Path, start_path: str
) -> None:
    read_end, write_end = os.pipe()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _STEP_WITH_INHERITED_DESCRIPTOR, str(tmp_path), start_path],
            pass_fds=(write_end,),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['0', '1', '2']"


# -- shell -------------------------------------------------------------------------------------


def test_shell_success_captures_stdout_and_stderr(tmp_path: Path, start_path: str) -> None:
    out = run(shell("echo hello; echo warn >&2"), make_ctx(tmp_path))
    assert out.ok and out.exit_code == 0 and not out.timed_out
    assert out.stdout == "hello\n"
    assert out.stderr == "warn\n"
    assert out.error is None and out.error_kind is None
    assert out.duration_s >= 0


def test_shell_runs_in_cwd_with_variables(tmp_path: Path) -> None:
    out = run(shell("pwd; echo '${item.path}'"), make_ctx(tmp_path, {"item": {"path": "a b"}}))
    assert out.stdout.splitlines() == [str(tmp_path), "a b"]


def test_nonzero_exit_names_code_command_and_last_stderr_line(tmp_path: Path) -> None:
    out = run(shell("echo first >&2; echo 'the real problem' >&2; exit 3"), make_ctx(tmp_path))
    assert not out.ok
    assert out.exit_code == 3
    assert out.error_kind == "exit_code"
    assert out.error is not None
    assert out.error.startswith("command exited with code 3: echo first")
    assert out.error.endswith("last stderr line: the real problem")


def test_long_command_is_shortened_in_the_message(tmp_path: Path) -> None:
    command = "false # " + "x" * 500
    out = run(shell(command), make_ctx(tmp_path))
    assert out.error is not None
    assert len(out.error) < 300
    assert "…" in out.error


def test_output_tails_keep_the_end_of_both_streams(tmp_path: Path, start_path: str) -> None:
    # Both pipes far beyond the pipe buffer: only concurrent reading avoids a deadlock.
    command = (
        "head -c 1000000 /dev/zero | tr '\\0' e >&2; echo ERR-END >&2; "
        "head -c 1000000 /dev/zero | tr '\\0' o; echo OUT-END"
    )
    out = run(shell(command), make_ctx(tmp_path, output_limit=20))
    assert out.ok
    assert out.stdout == "o" * 12 + "OUT-END\n"
    assert out.stderr == "e" * 12 + "ERR-END\n"


def test_missing_variable_fails_without_running(tmp_path: Path) -> None:
    out = run(shell("touch ran; echo ${nope}"), make_ctx(tmp_path))
    assert not out.ok
    assert out.error_kind == "missing_variable"
    assert out.error == "variable ${nope} is not defined"
    assert not (tmp_path / "ran").exists()


def test_missing_item_field_in_env_value(tmp_path: Path) -> None:
    step = shell("true", env={"X": "${item.size}"})
    out = run(step, make_ctx(tmp_path, {"item": {"path": "a"}}))
    assert out.error_kind == "missing_variable"
    assert out.error is not None and "size" in out.error


def test_step_env_is_layered_on_the_base_environment(tmp_path: Path) -> None:
    step = shell('echo "$A $B $C"', env={"B": "${v}", "C": "plain"})
    ctx = make_ctx(tmp_path, {"v": "from-step"}, env={"A": "base-a", "B": "base-b"})
    out = run(step, ctx)
    assert out.stdout == "base-a from-step plain\n"


def test_huge_command_goes_through_a_script_file(tmp_path: Path) -> None:
    payload = "a" * 200_000
    # `$${#x}` is the escape for a literal `${#x}`, bash's string length.
    out = run(shell(f"x={payload}; echo $${{#x}}"), make_ctx(tmp_path))
    assert out.ok, out.error
    assert out.stdout == "200000\n"
    assert list((tmp_path / "scratch").iterdir()) == []


def test_working_dir_relative_to_cwd(tmp_path: Path) -> None:
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    out = run(shell("pwd", working_dir="sub/${d}"), make_ctx(tmp_path, {"d": "dir"}))
    assert out.stdout == f"{tmp_path / 'sub' / 'dir'}\n"


def test_missing_working_dir_is_a_start_error(tmp_path: Path) -> None:
    out = run(shell("touch ran", working_dir="nowhere"), make_ctx(tmp_path))
    assert out.error_kind == "start_error"
    assert out.error is not None and "'nowhere' does not exist" in out.error
    assert not (tmp_path / "ran").exists()


def test_signal_death_reported_shell_style(tmp_path: Path) -> None:
    out = run(shell("kill -KILL $$"), make_ctx(tmp_path))
    assert out.exit_code == 137
    assert out.error is not None and "SIGKILL" in out.error


# -- timeouts, leftovers, cancellation ---------------------------------------------------------


def test_timeout_kills_grandchildren(tmp_path: Path, start_path: str) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    out = run(shell(f"sleep 300 & echo $! > {pidfile}; wait", timeout=0.5), make_ctx(tmp_path))
    assert time.monotonic() - started < 3
    assert out.timed_out and not out.ok
    assert out.exit_code is None
    assert out.error_kind == "timeout"
    assert out.error == f"step timed out after 0.5s: sleep 300 & echo $! > {pidfile}; wait"
    assert wait_gone(read_pid(pidfile))


def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    command = f"trap '' TERM; sleep 300 & echo $! > {pidfile}; wait"
    started = time.monotonic()
    out = run(shell(command, timeout=0.3), make_ctx(tmp_path))
    elapsed = time.monotonic() - started
    assert out.timed_out
    assert 2.0 <= elapsed < 5
    assert wait_gone(read_pid(pidfile))


def test_background_job_left_behind_is_ended_with_the_step(tmp_path: Path, start_path: str) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    out = run(shell(f"sleep 300 & echo $! > {pidfile}; echo done"), make_ctx(tmp_path))
    assert time.monotonic() - started < 2
    assert out.ok and out.stdout == "done\n"
    assert wait_gone(read_pid(pidfile))


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid")
def test_escaped_process_holding_the_pipe_does_not_hang_us(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    out = run(shell(f"setsid sleep 300 & echo $! > {pidfile}; echo done"), make_ctx(tmp_path))
    try:
        assert time.monotonic() - started < 3
        assert out.ok and out.stdout == "done\n"
    finally:
        os.kill(read_pid(pidfile), 9)


def test_cancellation_kills_the_group_and_propagates(tmp_path: Path, start_path: str) -> None:
    bash_pid, sleep_pid = tmp_path / "bash", tmp_path / "sleep"
    step = shell(f"echo $$ > {bash_pid}; sleep 300 & echo $! > {sleep_pid}; wait")

    async def scenario() -> None:
        task = asyncio.create_task(run_step(step, make_ctx(tmp_path)))
        deadline = time.monotonic() + 5
        while not (sleep_pid.exists() and sleep_pid.read_text().strip()):
            assert time.monotonic() < deadline, "the command never started"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert wait_gone(read_pid(bash_pid))
    assert wait_gone(read_pid(sleep_pid))


def test_enclosing_timeout_cancels_the_step(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    step = shell(f"sleep 300 & echo $! > {pidfile}; wait")

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await run_step(step, make_ctx(tmp_path))

    asyncio.run(scenario())
    assert wait_gone(read_pid(pidfile))


# -- write_file --------------------------------------------------------------------------------


def write(content: str, path: str, file_format: Any = "text", **kwargs: Any) -> StepSpec:
    return StepSpec(
        kind="write_file", command=content, path=path, file_format=file_format, **kwargs
    )


def test_write_text_creates_parents_and_interpolates(tmp_path: Path) -> None:
    out = run(write("hello ${who}\n", "out/deep/${who}.txt"), make_ctx(tmp_path, {"who": "bob"}))
    assert out.ok, out.error
    target = tmp_path / "out" / "deep" / "bob.txt"
    assert target.read_text() == "hello bob\n"
    assert [p.name for p in target.parent.iterdir()] == ["bob.txt"]  # no temp file left


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("old contents that are longer")
    assert run(write("new", "f.txt"), make_ctx(tmp_path)).ok
    assert (tmp_path / "f.txt").read_text() == "new"


def test_write_json_pretty_prints_and_keeps_big_integers(tmp_path: Path) -> None:
    content = '{"z": [1, {"b": null}], "id": ${id}}'
    out = run(write(content, "r.json", "json"), make_ctx(tmp_path, {"id": 10**29 + 7}))
    assert out.ok, out.error
    text = (tmp_path / "r.json").read_text()
    assert text.startswith('{\n  "z": [\n    1,')
    assert '"id": 100000000000000000000000000007' in text
    assert json.loads(text) == {"z": [1, {"b": None}], "id": 10**29 + 7}


def test_write_invalid_json_fails_naming_the_path(tmp_path: Path) -> None:
    out = run(write("{not json", "bad.json", "json"), make_ctx(tmp_path))
    assert not out.ok
    assert out.error_kind == "write_error"
    assert out.error is not None and "bad.json" in out.error
    assert not (tmp_path / "bad.json").exists()


def test_write_yaml_from_json_and_from_plain_text(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    assert run(write('{"name": "x", "list": [1, 2]}', "a.yaml", "yaml"), ctx).ok
    assert (tmp_path / "a.yaml").read_text() == "name: x\nlist:\n- 1\n- 2\n"
    assert run(write("already: yaml\n", "b.yaml", "yaml"), ctx).ok
    assert (tmp_path / "b.yaml").read_text() == "already: yaml\n"


def test_write_under_working_dir(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    assert run(write("x", "f.txt", working_dir="w"), make_ctx(tmp_path)).ok
    assert (tmp_path / "w" / "f.txt").read_text() == "x"


def test_write_error_when_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    out = run(write("x", "blocker/f.txt"), make_ctx(tmp_path))
    assert out.error_kind == "write_error"
    assert out.error is not None and "blocker/f.txt" in out.error


# -- claude ------------------------------------------------------------------------------------


@pytest.fixture
def fake_claude(tmp_path: Path) -> str:
    wrapper = tmp_path / "bin" / "claude"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_CLAUDE}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def claude(text: str, **kwargs: Any) -> StepSpec:
    return StepSpec(kind="claude", command=text, **kwargs)


def test_claude_success_records_result_and_spend(tmp_path: Path, fake_claude: str) -> None:
    log = tmp_path / "calls.log"
    ctx = make_ctx(
        tmp_path, {"p": "src/a b.py"}, env={"FAKE_CLAUDE_LOG": str(log)}, claude_bin=fake_claude
    )
    text = "/analyze '${p}' \"quoted\" $HOME"
    out = run(claude(text), ctx)
    assert out.ok, out.error
    assert out.exit_code == 0
    assert out.stdout == "analyzed: /analyze 'src/a b.py' \"quoted\" $HOME"
    assert out.spend.cost_usd == pytest.approx(0.01)
    assert (out.spend.input_tokens, out.spend.output_tokens) == (100, 20)
    assert (out.cache_read_tokens, out.cache_creation_tokens) == (0, 0)
    assert out.session_id
    assert log.read_text() == "/analyze 'src/a b.py' \"quoted\" $HOME\n"


def test_claude_is_error_fails_but_keeps_spend(tmp_path: Path, fake_claude: str) -> None:
    out = run(claude("please FAIL_CLAUDE"), make_ctx(tmp_path, claude_bin=fake_claude))
    assert not out.ok
    assert out.error_kind == "claude_error"
    assert out.error == "simulated failure"
    assert out.spend.cost_usd == pytest.approx(0.01)
    assert out.spend.input_tokens == 100


def test_claude_non_json_output(tmp_path: Path, fake_claude: str) -> None:
    out = run(claude("BADJSON"), make_ctx(tmp_path, claude_bin=fake_claude))
    assert out.error_kind == "claude_output"
    assert out.error is not None and "not a JSON result" in out.error
    assert "this is not JSON" in out.stdout
    assert out.spend.cost_usd == 0


def test_claude_nonzero_exit(tmp_path: Path, fake_claude: str) -> None:
    out = run(claude("EXIT3"), make_ctx(tmp_path, claude_bin=fake_claude))
    assert out.error_kind == "claude_output"
    assert out.exit_code == 3
    assert out.error == "claude exited with code 3: fake_claude: simulated crash"
    assert "simulated crash" in out.stderr


def test_claude_timeout(tmp_path: Path, fake_claude: str) -> None:
    started = time.monotonic()
    out = run(claude("SLEEP=30", timeout=0.5), make_ctx(tmp_path, claude_bin=fake_claude))
    assert time.monotonic() - started < 3
    assert out.timed_out and out.error_kind == "timeout"
    assert out.error == "step timed out after 0.5s: SLEEP=30"


def test_claude_missing_executable_is_a_start_error(tmp_path: Path) -> None:
    out = run(claude("hi"), make_ctx(tmp_path, claude_bin="no-such-claude-binary"))
    assert out.error_kind == "start_error"
    assert out.error is not None and "PRODIGY_CLAUDE_BIN" in out.error


def test_claude_available(tmp_path: Path, fake_claude: str) -> None:
    assert claude_available(fake_claude)
    assert claude_available("bash")
    assert not claude_available("no-such-claude-binary")
    assert not claude_available(str(tmp_path / "missing"))
    (tmp_path / "not-exec").write_text("")
    assert not claude_available(str(tmp_path / "not-exec"))


def test_fake_claude_refuses_unexpected_arguments() -> None:
    bad = subprocess.run(
        [sys.executable, str(FAKE_CLAUDE), "--print", "hi"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "expected" in bad.stderr


# -- output tails ------------------------------------------------------------------------------


@given(
    text=st.text(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=1200), max_size=8),
    limit=st.integers(min_value=0, max_value=60),
)
def test_output_tail_equals_the_tail_of_the_whole_stream(
    text: str, cuts: list[int], limit: int
) -> None:
    data = text.encode()
    tail = OutputTail(limit)
    start = 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        tail.append(data[start:cut])
        start = cut
    assert tail.text() == tail_text(data, limit)


def test_commit_required_fails_a_step_that_made_no_commit(tmp_path: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "base"], cwd=tmp_path, check=True)
    ctx = make_ctx(tmp_path)
    idle = run(shell("echo no commit here", commit_required=True), ctx)
    assert not idle.ok and idle.error_kind == "no_commit"
    assert "commit_required" in (idle.error or "")
    commit = " ".join(git) + " commit -q --allow-empty -m work"
    made = run(shell(commit, commit_required=True), ctx)
    assert made.ok, made.error
    # Without the flag the same idle step is fine.
    assert run(shell("echo no commit here"), ctx).ok
