#!/usr/bin/env python3
"""A stand-in for `claude --print --output-format json --dangerously-skip-permissions TEXT`.

Prints one JSON result object like the Claude Code CLI. Words in TEXT switch behaviour, so
workflows can exercise failures: FAIL_CLAUDE (is_error answer), BADJSON (output that is not
JSON), EXIT3 (exit code 3), SLEEP=<secs> (sleep first). FAKE_CLAUDE_LOG=<path> appends TEXT,
one line per call, to that file.

EDIT=<path> makes it edit code as Claude would in an agent's worktree: it appends the line
`# fake claude: TEXT` (TEXT on one line) to <path> (no spaces; quotes around it are dropped),
relative to its current directory and inside it, then `git add`s and `git commit`s that file
there. Only a call that would succeed edits. A missing file, a path outside the current
directory or a failing git command gives an is_error answer (exit code 1), like a Claude that
could not do the task.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

EXPECTED_FLAGS = ["--print", "--output-format", "json", "--dangerously-skip-permissions"]


def log_call(text: str) -> None:
    path = os.environ.get("FAKE_CLAUDE_LOG")
    if not path:
        return
    # One write on an O_APPEND descriptor: concurrent agents never interleave their lines.
    line = text.replace("\n", "\\n") + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8", errors="surrogateescape"))
    finally:
        os.close(fd)


def edit_and_commit(path_text: str, text: str) -> str | None:
    """Append a line naming TEXT to the file and commit it; the reason it failed, or None."""
    here = Path.cwd().resolve()
    path = (here / path_text).resolve()
    if not path.is_relative_to(here):
        return f"EDIT={path_text} is outside the current directory {here}"
    if not path.is_file():
        return f"EDIT={path_text}: no such file in {here}"
    one_line = " ".join(text.split())
    with path.open("a", encoding="utf-8") as file:
        file.write(f"# fake claude: {one_line}\n")
    name = str(path.relative_to(here))
    for command in (
        ["git", "add", "--", name],
        ["git", "commit", "--quiet", "-m", f"fake claude: edit {name}", "--", name],
    ):
        done = subprocess.run(command, cwd=here, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed: {(done.stderr or done.stdout).strip()}"
    return None


def main(argv: list[str]) -> int:
    started = time.monotonic()
    if len(argv) != len(EXPECTED_FLAGS) + 1 or argv[: len(EXPECTED_FLAGS)] != EXPECTED_FLAGS:
        print(
            f"fake_claude: expected {' '.join(EXPECTED_FLAGS)} TEXT, got {argv!r}",
            file=sys.stderr,
        )
        return 2
    text = argv[-1]
    log_call(text)
    sleep = re.search(r"SLEEP=(\d+(?:\.\d+)?)", text)
    if sleep:
        time.sleep(float(sleep.group(1)))
    if "EXIT3" in text:
        print("fake_claude: simulated crash", file=sys.stderr)
        return 3
    if "BADJSON" in text:
        print("this is not JSON {")
        return 0
    failed = "FAIL_CLAUDE" in text
    result = "simulated failure" if failed else f"analyzed: {text}"
    edit = re.search(r"EDIT=(\S+)", text)
    if edit and not failed:
        target = edit.group(1).strip("'\"")
        problem = edit_and_commit(target, text)
        failed = problem is not None
        result = problem if problem is not None else f"edited {target}: {text}"
    answer = {
        "type": "result",
        "subtype": "error_during_execution" if failed else "success",
        "is_error": failed,
        "result": result,
        "session_id": str(uuid.uuid4()),
        "num_turns": 1,
        "duration_ms": int((time.monotonic() - started) * 1000),
        "total_cost_usd": 0.01,
        "usage": {
            "input_tokens": 100,
            "output_tokens": 20,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }
    print(json.dumps(answer))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
