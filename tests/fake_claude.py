#!/usr/bin/env python3
"""A stand-in for `claude --print --output-format json --dangerously-skip-permissions TEXT`.

Prints one JSON result object like the Claude Code CLI. Words in TEXT switch behaviour, so
workflows can exercise failures: FAIL_CLAUDE (is_error answer), BADJSON (output that is not
JSON), EXIT3 (exit code 3), SLEEP=<secs> (sleep first). FAKE_CLAUDE_LOG=<path> appends TEXT,
one line per call, to that file.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid

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
    answer = {
        "type": "result",
        "subtype": "error_during_execution" if failed else "success",
        "is_error": failed,
        "result": "simulated failure" if failed else f"analyzed: {text}",
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
