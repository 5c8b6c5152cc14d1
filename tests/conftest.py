"""Shared fixtures: a temporary PRODIGY_HOME and git repository, and the real `prodigy` CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKE_CLAUDE = ROOT / "tests" / "fake_claude.py"
JOB_ID = re.compile(r"mapreduce-\d{8}-\d{6}(?:-\d+)?")

# Items 0-4 succeed; the others fail (one attempt, to the DLQ) until a file `fixed` exists.
# Each success appends its id to `ledger.log`.
FIXABLE_WORKFLOW = """\
name: fixable
mode: mapreduce
map:
  input: items.json
  isolation: none
  max_parallel: 2
  agent_template:
    - shell: "test ${item} -lt 5 || test -f fixed"
    - shell: "echo ${item_id} >> ledger.log"
error_policy:
  retry_config: {max_attempts: 1, initial_delay: 0}
"""


def prodigy_executable() -> list[str]:
    exe = shutil.which("prodigy", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "prodigy"]


@dataclass
class Env:
    """One test's world: its own PRODIGY_HOME and its own git repository."""

    home: Path
    repo: Path
    env: dict[str, str]

    def write(self, name: str, text: str) -> Path:
        path = self.repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def write_json(self, name: str, value: Any) -> Path:
        path = self.repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
        return path

    def run(
        self, *args: str, timeout: float = 50, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prodigy_executable(), *args],
            cwd=cwd or self.repo,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """Start prodigy in its own process group (so a test can kill the whole group)."""
        return subprocess.Popen(
            [*prodigy_executable(), *args],
            cwd=self.repo,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def jobs_dir(self) -> Path:
        return self.home / "state" / self.repo.name / "mapreduce" / "jobs"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir() / job_id

    def events(self, job_id: str) -> list[dict[str, Any]]:
        path = self.job_dir(job_id) / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def job_id_of(output: str) -> str:
    match = JOB_ID.search(output)
    assert match, f"no job id in output: {output!r}"
    return match.group(0)


def wait_for(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    """Poll a condition (a file appearing, a line count reached) until it holds or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie counts as gone (PID 1 may never reap it here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def wait_gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def line_count(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def make_world(root: Path) -> Env:
    """A PRODIGY_HOME and a fresh git repository (no commit) under `root`."""
    home, repo = root / "home", root / "repo"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    env = {
        **os.environ,
        "PRODIGY_HOME": str(home),
        "PRODIGY_CLAUDE_BIN": str(FAKE_CLAUDE),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PRODIGY_ITEM", None)
    return Env(home=home, repo=repo, env=env)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Env]:
    made = make_world(tmp_path)
    made.env["PRODIGY_INTERRUPT_GRACE"] = "5"
    yield made


# ---- shared by the kill/resume tests: held agents, logs, the one job of a test ----------


def hold(w: Env, *names: str) -> None:
    for name in names:
        (w.repo / "hold" / name).touch()


def release(w: Env, *names: str) -> None:
    for name in names:
        (w.repo / "hold" / name).unlink(missing_ok=True)


def ids(*indexes: int) -> list[str]:
    return [f"item_{n}" for n in indexes]


def lines(w: Env, name: str) -> list[str]:
    path = w.repo / name
    return path.read_text().splitlines() if path.exists() else []


def the_job(w: Env) -> str:
    wait_for(lambda: w.jobs_dir().is_dir() and any(w.jobs_dir().iterdir()), what="a job dir")
    jobs = sorted(p.name for p in w.jobs_dir().iterdir())
    assert len(jobs) == 1, jobs
    return jobs[0]


def events(w: Env, job: str, kind: str) -> list[dict[str, Any]]:
    path = w.job_dir(job) / "events.jsonl"
    found = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            if event.get("type") == kind:
                found.append(event)
    return found


def checkpoint_items(job: Path, document: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A checkpoint's items one by one, as a person reading it would list them: id, status
    (running shown as such), attempts, max_attempts and the last result (a failed one from the
    checkpoint's detail, a succeeded one from the journal it points to)."""
    from prodigy.job import ItemsFile
    from prodigy.journal import read_journal
    from prodigy.state import AttemptEnded

    doc = document if document is not None else json.loads((job / "latest.json").read_text())
    part = doc["items"]
    if part is None:
        return []
    statuses: dict[int, str] = {}
    for name in ("pending", "succeeded", "failed-retriable", "dead-lettered", "skipped"):
        for first, last in part[name]:
            statuses.update(dict.fromkeys(range(first, last + 1), name))
    for index in part["running"]:
        statuses[index] = "running"

    def runs(pairs: list[list[int]]) -> list[int]:
        return [value for value, count in pairs for _ in range(count)]

    attempts, limits = runs(part["attempts"]), runs(part["max_attempts"])
    detail = {d["index"]: d for d in part["detail"]}
    succeeded: dict[int, Any] = {}
    for record in read_journal(job / "journal.jsonl").records:
        if isinstance(record, AttemptEnded) and record.result.ok:
            succeeded[record.index] = msgspec.to_builtins(record.result)
    items = ItemsFile(job / "items.jsonl")
    try:
        ids = list(items.ids)
    finally:
        items.close()
    out = []
    for index in range(doc["counts"]["total"]):
        item: dict[str, Any] = {
            "id": ids[index],
            "status": statuses[index],
            "attempts": attempts[index],
            "max_attempts": limits[index],
        }
        extra = detail.get(index, {})
        result = extra.get("result")
        if result is None and index in succeeded and statuses[index] == "succeeded":
            result = succeeded[index]
        if result is not None:
            item["result"] = result
        if extra.get("failed_attempts"):
            item["failed_attempts"] = extra["failed_attempts"]
        out.append(item)
    return out


def ended_records(job: Path) -> list[dict[str, Any]]:
    """The journal's ended attempts as `attempt_ended` objects (whole lines only; the short
    form of a plain success, `{"type": "succeeded", ...}`, read as the record it stands for)."""
    from prodigy.journal import read_journal
    from prodigy.state import AttemptEnded

    return [
        {"type": "attempt_ended", **msgspec.to_builtins(record)}
        for record in read_journal(job / "journal.jsonl").records
        if isinstance(record, AttemptEnded)
    ]
