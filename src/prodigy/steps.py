"""Running one step — a shell command, a Claude Code call or a file write — and what came of it.

Each child runs in its own process group, and the whole group is ended on timeout, on
cancellation and when the step finishes, so nothing a step started outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, Literal, assert_never

import msgspec
from ruamel.yaml import YAML

from prodigy import spawn
from prodigy.display import one_line
from prodigy.errors import MissingVariable, UnusableValue
from prodigy.interpolate import render
from prodigy.reaper import forget_group, watch_group
from prodigy.secrets import NO_MASK, Masker
from prodigy.state import NO_SPEND, Spend

StepKind = Literal["shell", "claude", "write_file"]
FileFormat = Literal["text", "json", "yaml"]

# Linux refuses a single argv string over 128 KiB, so longer commands go through a script file.
SCRIPT_THRESHOLD_BYTES = 100_000
KILL_GRACE_S = 2.0  # between SIGTERM and SIGKILL of a process group
# Once the group is gone the pipes close at once; only a process that left the group (setsid)
# can hold them open, and we do not wait for it longer than this.
PIPE_GRACE_S = 0.5
# Claude's answer is parsed whole, so its stdout is kept far beyond the usual tail.
CLAUDE_STDOUT_CHARS = 4 * 1024 * 1024
CLAUDE_FLAGS = ("--print", "--output-format", "json", "--dangerously-skip-permissions")
MESSAGE_COMMAND_CHARS = 200
MESSAGE_DETAIL_CHARS = 500
_READ_CHUNK = 65_536
_DRAIN_CHUNKS = 16
LISTEN_AFTER_S = 0.05  # how long a step's output may wait in its pipes before we read it
_POLL_S = 0.02


@dataclass(frozen=True)
class StepSpec:
    """What to run; text fields are templates, rendered with the context's variables."""

    kind: StepKind
    command: str  # shell/claude text, or write_file content
    path: str | None = None  # write_file target, relative to the working directory
    file_format: FileFormat = "text"
    timeout: float | None = None  # seconds
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None  # relative to the context's cwd
    commit_required: bool = False  # fail unless the step moved HEAD (made a commit)


@dataclass(frozen=True)
class StepContext:
    """Where and with what a step runs."""

    cwd: Path
    env: Mapping[str, str]  # full base environment; the step's env is layered on top
    variables: Mapping[str, Any]
    claude_bin: str
    scratch_dir: Path  # temporary scripts for commands too long for argv
    output_limit: int = 64_000  # characters of stdout/stderr tails kept
    # Secret values (SPEC §9): masked in the outcome's output tails and messages.
    masker: Masker = NO_MASK


@dataclass(frozen=True)
class StepOutcome:
    """How a step ended. `error` is one sentence and `error_kind` a fixed word when not ok."""

    ok: bool
    exit_code: int | None  # None when killed by timeout or never started
    timed_out: bool
    stdout: str  # tail of stdout (claude: the `result` text)
    stderr: str  # tail of stderr
    error: str | None
    error_kind: str | None  # exit_code | timeout | claude_error | claude_output
    #                         | missing_variable | write_error | start_error
    duration_s: float
    spend: Spend = NO_SPEND
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    session_id: str | None = None


class OutputTail:
    """The last `limit` characters of a byte stream that arrives in chunks (UTF-8), with
    secret values masked."""

    def __init__(self, limit: int, masker: Masker = NO_MASK):
        self.limit = max(limit, 0)
        self.masker = masker
        # A character is at most 4 bytes; the extra 4 cover one cut through a character. The
        # longest secret's length more keeps a secret that the last `limit` characters start
        # inside of whole, so it is masked rather than cut in two.
        longest = max((len(v.encode()) for v in masker.values), default=0)
        self._keep = 4 * self.limit + 4 + longest
        self._buf = bytearray()
        self._dropped = False  # whether the kept bytes start inside the stream

    def append(self, chunk: bytes) -> None:
        self._buf += chunk
        # Trimming only when twice over keeps appends amortised O(chunk).
        if len(self._buf) > 2 * self._keep:
            del self._buf[: len(self._buf) - self._keep]
            self._dropped = True

    @property
    def data(self) -> bytes:
        """The kept bytes, as they came (unmasked: for parsing Claude's answer only)."""
        return bytes(self._buf[max(len(self._buf) - self._keep, 0) :])

    def text(self, limit: int | None = None) -> str:
        cut = self._dropped or len(self._buf) > self._keep
        return tail_text(self.data, self.limit if limit is None else limit, self.masker, cut)


def tail_text(data: bytes, limit: int, masker: Masker = NO_MASK, cut: bool = False) -> str:
    """The last `limit` characters of `data` decoded as UTF-8 (bad bytes replaced), secrets
    masked before cutting (so none is cut in two and left half in clear). `cut`: `data`
    itself starts inside a longer stream."""
    if limit <= 0:
        return ""
    if cut and masker:
        # Start at a whole character, so a cut secret's end still reads as that end.
        skip = 0
        while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
            skip += 1
        data = data[skip:]
    text = data.decode("utf-8", errors="replace")
    text = masker.mask_tail(text) if cut else masker.mask(text)
    return text[-limit:] if len(text) > limit else text


def claude_available(claude_bin: str) -> bool:
    """Whether `claude_bin` names an executable: a path to one, or a name found on PATH."""
    return _find_executable(claude_bin, os.environ.get("PATH")) is not None


async def run_step(step: StepSpec, ctx: StepContext) -> StepOutcome:
    """Run one step; failures are outcomes, only cancellation propagates (after killing).

    Secret values are masked in the outcome (its output tails and message), the one place
    where a step's text enters prodigy's records (SPEC §9)."""
    outcome = await _run_step(step, ctx)
    if not ctx.masker:
        return outcome
    return dataclasses.replace(
        outcome,
        stdout=ctx.masker.mask(outcome.stdout),
        stderr=ctx.masker.mask(outcome.stderr),
        error=None if outcome.error is None else ctx.masker.mask(outcome.error),
    )


async def _run_step(step: StepSpec, ctx: StepContext) -> StepOutcome:
    started = time.monotonic()
    try:
        rendered = _render_step(step, ctx.variables)
    except MissingVariable as exc:
        return _failure("missing_variable", exc.message, started)
    except UnusableValue as exc:
        return _failure("unusable_value", exc.message, started)
    workdir = ctx.cwd / rendered.working_dir if rendered.working_dir else ctx.cwd
    # prodigy's own directory (isolation: none) exists; it is not looked up for every step.
    if not spawn.is_current_directory(str(workdir)) and not workdir.is_dir():
        return _failure(
            "start_error",
            f"working directory '{rendered.working_dir or ctx.cwd}' does not exist "
            f"(looked for {workdir}); "
            "create it in an earlier step or fix working_dir",
            started,
        )
    head_before = await _git_head(workdir) if step.commit_required else None
    outcome = await _run_kind(step, rendered, workdir, ctx, started)
    if step.commit_required and outcome.ok and await _git_head(workdir) == head_before:
        return _failure(
            "no_commit",
            "the step created no commit, and it has commit_required: true "
            f"(HEAD of {workdir} is still {head_before or 'unborn'})",
            started,
        )
    return outcome


async def _run_kind(
    step: StepSpec, rendered: _Rendered, workdir: Path, ctx: StepContext, started: float
) -> StepOutcome:
    if step.kind == "write_file":
        return await _write_file_step(step, rendered, workdir, started)
    env = {**ctx.env, **rendered.env}
    if step.kind == "shell":
        return await _shell_step(step, rendered.command, workdir, env, ctx, started)
    if step.kind == "claude":
        return await _claude_step(step, rendered.command, workdir, env, ctx, started)
    assert_never(step.kind)


async def _git_head(workdir: Path) -> str | None:
    """The commit HEAD points to in `workdir`, or None (not a repository, or no commit yet)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "rev-parse",
            "--verify",
            "-q",
            "HEAD",
            cwd=workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    out, _ = await proc.communicate()
    return out.decode().strip() or None if proc.returncode == 0 else None


# -- rendering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rendered:
    command: str
    path: str | None
    env: dict[str, str]
    working_dir: str | None


def _render_step(step: StepSpec, variables: Mapping[str, Any]) -> _Rendered:
    # Everything but a file's content goes to the OS, which cannot carry a NUL character.
    def to_os(template: str) -> str:
        return render(template, variables, for_command=True)

    return _Rendered(
        command=render(step.command, variables, for_command=step.kind != "write_file"),
        path=None if step.path is None else to_os(step.path),
        env={name: to_os(value) for name, value in step.env.items()},
        working_dir=None if step.working_dir is None else to_os(step.working_dir),
    )


# -- shell -------------------------------------------------------------------------------------


async def _shell_step(
    step: StepSpec,
    command: str,
    workdir: Path,
    env: Mapping[str, str],
    ctx: StepContext,
    started: float,
) -> StepOutcome:
    bash = _bash()
    shown = ctx.masker.mask(command)  # for messages: secrets masked before any shortening
    encoded = command.encode("utf-8", errors="surrogateescape")
    script: Path | None = None
    try:
        if len(encoded) > SCRIPT_THRESHOLD_BYTES:
            try:
                script = _write_script(ctx.scratch_dir, encoded)
            except OSError as exc:
                return _failure(
                    "start_error",
                    f"cannot write the script for a {len(encoded)}-byte command into "
                    f"{ctx.scratch_dir}: {exc.strerror or exc}",
                    started,
                )
            argv = [bash, str(script)]
        else:
            argv = [bash, "-c", command]
        stdout = OutputTail(ctx.output_limit, ctx.masker)
        stderr = OutputTail(ctx.output_limit, ctx.masker)
        try:
            done = await _run_process(argv, workdir, env, step.timeout, stdout, stderr)
        except OSError as exc:
            return _failure(
                "start_error", f"cannot start bash for command {_short(shown)}: {exc}", started
            )
    finally:
        if script is not None:
            script.unlink(missing_ok=True)

    out, err = stdout.text(), stderr.text()
    if done.timed_out:
        return _timed_out(step, shown, out, err, started)
    if done.exit_code != 0:
        message = f"command {_exit_phrase(done.exit_code)}: {_short(shown)}"
        last = _last_line(err)
        if last:
            message += f"; last stderr line: {_short(last, MESSAGE_DETAIL_CHARS)}"
        return _failure("exit_code", message, started, done.exit_code, out, err)
    return StepOutcome(
        ok=True,
        exit_code=0,
        timed_out=False,
        stdout=out,
        stderr=err,
        error=None,
        error_kind=None,
        duration_s=time.monotonic() - started,
    )


@functools.cache
def _bash() -> str:
    # Resolved against our own PATH: a workflow env that changes PATH must not lose bash.
    return shutil.which("bash") or "/bin/bash"


def _write_script(scratch_dir: Path, body: bytes) -> Path:
    scratch_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="step-", suffix=".sh", dir=scratch_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


# -- claude ------------------------------------------------------------------------------------


async def _claude_step(
    step: StepSpec,
    command: str,
    workdir: Path,
    env: Mapping[str, str],
    ctx: StepContext,
    started: float,
) -> StepOutcome:
    executable = _find_executable(ctx.claude_bin, env.get("PATH"))
    if executable is None:
        return _failure(
            "start_error",
            f"the claude executable '{ctx.claude_bin}' was not found; install Claude Code or "
            "set PRODIGY_CLAUDE_BIN to its path",
            started,
        )
    argv = [executable, *CLAUDE_FLAGS, command]
    stdout = OutputTail(max(ctx.output_limit, CLAUDE_STDOUT_CHARS), ctx.masker)
    stderr = OutputTail(ctx.output_limit, ctx.masker)
    try:
        done = await _run_process(argv, workdir, env, step.timeout, stdout, stderr)
    except OSError as exc:
        return _failure("start_error", f"cannot start claude ({executable}): {exc}", started)

    raw_out, err = stdout.text(ctx.output_limit), stderr.text()
    if done.timed_out:
        return _timed_out(step, ctx.masker.mask(command), raw_out, err, started)
    answer = _claude_answer(stdout.data)
    if answer is None:
        if done.exit_code != 0:
            message = f"claude {_exit_phrase(done.exit_code)}"
            last = _last_line(err) or _last_line(raw_out)
            if last:
                message += f": {_short(last, MESSAGE_DETAIL_CHARS)}"
        elif not raw_out.strip():
            message = "claude printed nothing on stdout; expected one JSON result object"
        else:
            message = f"claude printed output that is not a JSON result object: {_short(raw_out)}"
        return _failure("claude_output", message, started, done.exit_code, raw_out, err)

    return _claude_outcome(answer, done.exit_code, err, ctx.output_limit, started, ctx.masker)


def _claude_outcome(
    answer: Mapping[str, Any],
    exit_code: int | None,
    err: str,
    limit: int,
    started: float,
    masker: Masker = NO_MASK,
) -> StepOutcome:
    """The outcome of a claude step that printed its JSON answer (its text masked before it
    is cut to the tail kept)."""
    result = masker.mask(_as_text(answer.get("result")))
    ok = False
    if answer.get("is_error") is True:
        error_kind: str | None = "claude_error"
        subtype = masker.mask(_as_text(answer.get("subtype")))
        reason = result if result.strip() else subtype or "unknown error"
        error: str | None = _short(reason, MESSAGE_DETAIL_CHARS)
    elif exit_code != 0:
        error_kind = "claude_output"
        error = f"claude {_exit_phrase(exit_code)} although its answer reports no error"
    else:
        ok, error_kind, error = True, None, None
    return StepOutcome(
        ok=ok,
        exit_code=exit_code,
        timed_out=False,
        stdout=result[-limit:] if limit > 0 else "",
        stderr=err,
        error=error,
        error_kind=error_kind,
        duration_s=time.monotonic() - started,
        **_claude_spend(answer),
    )


def _claude_answer(data: bytes) -> dict[str, Any] | None:
    """The result object Claude printed, or None when stdout holds none."""
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    # With --verbose the CLI prints a list of messages ending with the result; accept that too.
    if isinstance(document, list):
        results = [m for m in document if isinstance(m, dict) and m.get("type") == "result"]
        document = results[-1] if results else None
    return document if isinstance(document, dict) else None


def _claude_spend(answer: Mapping[str, Any]) -> dict[str, Any]:
    usage = answer.get("usage")
    if not isinstance(usage, Mapping):
        usage = {}
    cost = answer.get("total_cost_usd", answer.get("cost_usd"))
    session = answer.get("session_id")
    return {
        "spend": Spend(
            cost_usd=float(cost) if _is_number(cost) else 0.0,
            input_tokens=_count(usage.get("input_tokens")),
            output_tokens=_count(usage.get("output_tokens")),
        ),
        "cache_read_tokens": _count(usage.get("cache_read_input_tokens")),
        "cache_creation_tokens": _count(usage.get("cache_creation_input_tokens")),
        "session_id": session if isinstance(session, str) else None,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> int:
    return int(value) if _is_number(value) and value >= 0 else 0


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def _find_executable(name: str, search_path: str | None) -> str | None:
    if os.sep in name:
        path = os.path.abspath(name)
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which(name, path=search_path)


# -- write_file --------------------------------------------------------------------------------


class _WriteFailed(Exception):
    pass


async def _write_file_step(
    step: StepSpec, rendered: _Rendered, workdir: Path, started: float
) -> StepOutcome:
    if not rendered.path:
        return _failure("write_error", "write_file step has no path to write to", started)
    target = workdir / rendered.path
    try:
        # Off the event loop: fsync can take long enough to stall every other agent.
        await asyncio.to_thread(
            _write_file, target, rendered.path, rendered.command, step.file_format
        )
    except _WriteFailed as exc:
        return _failure("write_error", str(exc), started)
    return StepOutcome(
        ok=True,
        exit_code=None,
        timed_out=False,
        stdout="",
        stderr="",
        error=None,
        error_kind=None,
        duration_s=time.monotonic() - started,
    )


def _write_file(target: Path, shown: str, content: str, file_format: FileFormat) -> None:
    body = _file_body(shown, content, file_format)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(target, body)
    except OSError as exc:
        raise _WriteFailed(f"cannot write {shown}: {exc.strerror or exc}") from exc


def _file_body(shown: str, content: str, file_format: FileFormat) -> bytes:
    if file_format == "text":
        return content.encode("utf-8", errors="surrogateescape")
    try:
        document = msgspec.json.decode(content)
    except msgspec.DecodeError as exc:
        if file_format == "yaml":
            return content.encode("utf-8", errors="surrogateescape")
        raise _WriteFailed(
            f"content for {shown} is not valid JSON ({exc}); use format: text to write it unchanged"
        ) from exc
    if file_format == "json":
        return msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n"
    yaml = YAML()  # round-trip mode keeps the keys in their JSON order
    yaml.default_flow_style = False
    text = StringIO()
    yaml.dump(document, text)
    return text.getvalue().encode()


def _write_atomically(target: Path, body: bytes) -> None:
    """Replace `target` with `body` so that readers see the old file or the new, never half."""
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Finished:
    exit_code: int | None  # None when timed out
    timed_out: bool


async def _run_process(
    argv: list[str],
    cwd: Path,
    env: Mapping[str, str],
    timeout: float | None,
    stdout: OutputTail,
    stderr: OutputTail,
) -> _Finished:
    """Run `argv` in a new process group, feeding its output into the tails.

    Our own pipes rather than asyncio's: we must be able to stop reading and close them while
    some escaped process still holds the other end.
    """
    loop = asyncio.get_running_loop()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = await spawn.start(argv, cwd, env, out_w, err_w)
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    watch_group(proc.pid)
    readers = (_PipeReader(loop, out_r, stdout), _PipeReader(loop, err_r, stderr))
    # A child that ends at once leaves its output in the pipes, read then without putting the
    # pipes on the loop (two registrations less per trivial agent); one still running after a
    # moment has them read as it writes, before a full pipe can block it for long.
    listen = loop.call_later(LISTEN_AFTER_S, _listen, readers)
    timed_out = False
    try:
        try:
            if timeout is None:
                await proc.wait()  # no Timeout context: most steps have none
            else:
                async with asyncio.timeout(timeout):
                    await proc.wait()
        except TimeoutError:
            timed_out = True
        listen.cancel()
        await _end_group(proc)
        for reader in readers:
            reader.drain()
        if not all(reader.eof.done() for reader in readers):
            await asyncio.wait([r.eof for r in readers], timeout=PIPE_GRACE_S)
    except asyncio.CancelledError:
        listen.cancel()
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    finally:
        forget_group(proc.pid)
        for reader in readers:
            reader.close()
    if timed_out:
        return _Finished(exit_code=None, timed_out=True)
    return _Finished(exit_code=_exit_status(proc.returncode), timed_out=False)


def _exit_status(returncode: int | None) -> int | None:
    # The shell's convention, 128 + signal number, for a child killed by a signal.
    return 128 - returncode if returncode is not None and returncode < 0 else returncode


async def _end_group(proc: spawn.Child) -> None:
    """SIGTERM the process group, SIGKILL it if anything is left after the grace; reap."""
    group = proc.pid  # start_new_session: the child leads its own group
    if _signal_group(group, signal.SIGTERM):
        deadline = time.monotonic() + KILL_GRACE_S
        while proc.returncode is None or _group_alive(group):
            if time.monotonic() >= deadline:
                _signal_group(group, signal.SIGKILL)
                break
            await asyncio.sleep(_POLL_S)
    await proc.wait()


def _signal_group(group: int, signum: int) -> bool:
    """Send `signum` to the group; False when the group no longer exists."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # EPERM: every member left is beyond our reach (a setuid program); nothing to wait for.
        return False
    return True


def _group_alive(group: int) -> bool:
    """Whether the group has a member that is not a zombie.

    Zombies count as gone: where PID 1 does not reap orphans (containers), they stay forever.
    """
    if not _signal_group(group, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name, which may itself contain spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(group).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _listen(readers: tuple[_PipeReader, ...]) -> None:
    for reader in readers:
        reader.listen()


class _PipeReader:
    """Reads one pipe into an OutputTail until end of file or close(): from the event loop
    once `listen` is called, and all that is there at once on `drain`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, sink: OutputTail):
        self._loop = loop
        self._fd = fd
        self._sink = sink
        self._listening = False
        self.eof: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)

    def listen(self) -> None:
        if self._fd >= 0 and not self._listening:
            self._loop.add_reader(self._fd, self._on_readable)
            self._listening = True

    def drain(self) -> None:
        """Read what the pipe holds; listen for more if its writers have not all gone."""
        for _ in range(_DRAIN_CHUNKS):
            if self._fd < 0 or not self._read():
                return
        self.listen()  # an escaped process keeps writing: not here, on the loop

    def _on_readable(self) -> None:
        self._read()

    def _read(self) -> bool:
        """One read; False when there is nothing more to read now (or ever)."""
        try:
            chunk = os.read(self._fd, _READ_CHUNK)
        except BlockingIOError:
            self.listen()
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return False
        self._sink.append(chunk)
        return True

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._listening:
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        if not self.eof.done():
            self.eof.set_result(None)


# -- outcomes ----------------------------------------------------------------------------------


def _failure(
    kind: str,
    error: str,
    started: float,
    exit_code: int | None = None,
    stdout: str = "",
    stderr: str = "",
) -> StepOutcome:
    return StepOutcome(
        ok=False,
        exit_code=exit_code,
        timed_out=False,
        stdout=stdout,
        stderr=stderr,
        error=error,
        error_kind=kind,
        duration_s=time.monotonic() - started,
    )


def _timed_out(step: StepSpec, shown: str, stdout: str, stderr: str, started: float) -> StepOutcome:
    return StepOutcome(
        ok=False,
        exit_code=None,
        timed_out=True,
        stdout=stdout,
        stderr=stderr,
        error=f"step timed out after {step.timeout:g}s: {_short(shown)}",
        error_kind="timeout",
        duration_s=time.monotonic() - started,
    )


def _exit_phrase(code: int | None) -> str:
    if code is not None and code > 128:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(code - 128).name} (exit code {code})"
    return f"exited with code {code}"


def _short(text: str, limit: int = MESSAGE_COMMAND_CHARS) -> str:
    return one_line(text, limit)


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""
