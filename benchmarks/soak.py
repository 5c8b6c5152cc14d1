"""Kill soak: interrupt real jobs at random moments, over and over, and check from outside that
resume never repeats finished work, never loses any, and never leaves a file it cannot read.

    python benchmarks/soak.py --kills 300 --signal KILL --kind all
    python benchmarks/soak.py --kills 50 --signal TERM --kind plain --items 2000 --seed 7

Each job's agents append `start ID` and `done ID` lines to a ledger outside the job directory;
setup and reduce steps append theirs. A run (`cook`, then `resume-job`) is interrupted at a
random moment, or at a test-only pause point inside a journal append, a checkpoint write
(temporary file written, not yet renamed) or a worktree merge (`PRODIGY_TEST_PAUSE`, see
`src/prodigy/test_pause.py`), then resumed, until the job is interrupted `--kills-per-job`
times; the last run finishes it. SIGKILL goes to prodigy's whole process tree (frozen first,
so nothing runs on: a machine crash); SIGTERM and SIGINT go to prodigy's process group, as a
terminal sends them, and prodigy must exit 143 or 130 with no agent left running.

After every interruption, with nothing of the job running:
  * every file of the job directory parses: `*.json` as JSON; `journal.jsonl` as prodigy's
    reader reads it (checksums), where only a torn final line (bytes after the last newline,
    never acknowledged) is acceptable; `events.jsonl` line by line, where likewise only a
    final line without its newline is acceptable (events are written after their record;
    a torn one is lost news, never lost state); `items.jsonl` completely. Hidden `.*.tmp`
    files are an atomic write cut short before its rename: prodigy never reads them; they
    are counted, not parsed.
  * finished work is never repeated: an item recorded as succeeded in the journal or in ANY
    checkpoint file seen so far (temporary ones included) never gets a later `start` line;
    a setup or a reduce step recorded as completed never gets a later start line either.
    (A step or an agent cut short before its record legitimately runs again.)
At the end of each job: it completed (exit 0); every item is succeeded exactly once in the
journal and the final checkpoint and has a `done` line (else it is *lost*); reduce's last run
of each step saw the right totals; under worktree isolation each item's branch was merged into
the job's branch exactly once. Any violation makes the exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prodigy.errors import StateError
from prodigy.journal import read_journal

KINDS = ("plain", "setup-reduce", "worktree")
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}  # README, "Interrupting and resuming"
LANDINGS = (
    "startup",
    "agents running",
    "inside journal append",
    "inside checkpoint write",
    "during setup",
    "during reduce",
    "around a merge",
    "job ending",
)
REDUCE_STEPS = 2

PLAIN = """\
name: soak-{kind}
mode: mapreduce
{setup}map:
  input: items.json
  isolation: {isolation}
  max_parallel: {parallel}
  agent_template:
    - shell: >-
        echo start ${{item_id}} >> {ledger}; {work}
        echo done ${{item_id}} >> {ledger}; echo ${{item.n}}
{reduce}"""

SETUP = """\
setup:
  - shell: >-
      echo setup-start >> {ledger}; sleep 0.2;
      python3 -c 'import json; json.dump([{{"n": i}} for i in range({items})], open("items.json", "w"))';
      echo setup-done >> {ledger}
"""  # noqa: E501

REDUCE = """\
reduce:
  - shell: >-
      echo reduce-start 1 >> {ledger}; sleep 0.2;
      echo reduce-done 1 ${{map.successful}}/${{map.total}} >> {ledger}
  - shell: >-
      echo reduce-start 2 >> {ledger};
      python3 -c 'import json, os; r = json.load(open(os.environ["PRODIGY_MAP_RESULTS_FILE"]));
      print("reduce-done 2", sum(int(x["output"]) for x in r if x["status"] == "succeeded"))'
      >> {ledger}
"""

WORKTREE_WORK = (
    'echo ${item_id} > out/${item_id}.txt && git add out && git commit -qm "${item_id}" &&'
)
TRAILER_ITEM = re.compile(r'^Prodigy-Item: "?([^"\n]+)"?$', re.M)


# ---- the tally ----------------------------------------------------------------------------------


@dataclass
class Tally:
    interruptions: Counter[str] = field(default_factory=Counter)  # by signal name
    landed: Counter[str] = field(default_factory=Counter)
    missed: int = 0  # runs that finished before the planned interruption
    jobs: Counter[str] = field(default_factory=Counter)  # finished jobs by kind
    items: int = 0
    lost: int = 0
    repeated: int = 0
    unreadable: int = 0
    torn_tails: int = 0  # acceptable: a final journal/events line without its newline
    stray_temp_files: int = 0  # acceptable: `.*.tmp` of an atomic write cut short
    setup_runs: int = 0
    reduce_runs: int = 0
    reduce_reruns_cut_short: int = 0
    bad_exits: int = 0
    outside_handlers: Counter[str] = field(default_factory=Counter)
    merged_twice: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return sum(self.interruptions.values())

    def violate(self, message: str) -> None:
        self.violations.append(message)
        print(f"VIOLATION: {message}", file=sys.stderr, flush=True)


# ---- processes ----------------------------------------------------------------------------------


def prodigy_command() -> list[str]:
    exe = shutil.which("prodigy", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "prodigy"]


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        parents[int(entry)] = int(stat[stat.rfind(b")") + 2 :].split()[1])
    return parents


def descendants(root: int) -> set[int]:
    parents = _parents()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= children
        frontier = children
    return found


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def processes_under(root: Path) -> list[int]:
    """Live processes working anywhere under `root` (agents, git, a reaper left running)."""
    me, found = os.getpid(), []
    prefix = str(root)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X"):
            continue
        if cwd == prefix or cwd.startswith(prefix + "/"):
            found.append(int(entry))
    return found


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---- reading what a job left --------------------------------------------------------------------


def journal_lines(path: Path) -> list[dict[str, Any]]:
    """The journal's complete lines as JSON (a torn last line left out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n")[:-1]:
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


def recorded_successes(records: list[dict[str, Any]]) -> list[int]:
    # A plain success is journaled in its short form, `{"type": "succeeded", ...}`.
    return [
        r["index"]
        for r in records
        if r.get("type") == "succeeded"
        or (r.get("type") == "attempt_ended" and r.get("outcome") == "succeeded")
    ]


def checkpoint_successes(document: Any, ids: list[str]) -> set[str]:
    """Item ids a checkpoint document records as succeeded (the one place that knows its
    shapes: `prodigy-checkpoint/2` lists index ranges per status, /1 listed every item)."""
    items = document.get("items") if isinstance(document, dict) else None
    if items is None and isinstance(document, dict) and "items" in document:
        return set()  # the items were not frozen yet
    if isinstance(items, dict) and isinstance(items.get("succeeded"), list):
        return {ids[i] for first, last in items["succeeded"] for i in range(first, last + 1)}
    if not isinstance(items, list):
        raise ValueError("no `items` list: the soak does not know this checkpoint format")
    return {i["id"] for i in items if isinstance(i, dict) and i.get("status") == "succeeded"}


@dataclass
class FileCheck:
    unreadable: list[str] = field(default_factory=list)
    torn_tails: int = 0
    temp_files: int = 0
    checkpoints: list[Any] = field(default_factory=list)  # every parsed checkpoint document


def check_files(job_dir: Path) -> FileCheck:
    found = FileCheck()
    for path in sorted(job_dir.rglob("*")):
        rel = path.relative_to(job_dir)
        if path.is_dir() or rel.parts[0] == "tmp" or path.name == "lock":
            continue  # tmp/: step scripts; lock: holder text
        name = path.name
        if name.startswith(".") and name.endswith(".tmp"):
            found.temp_files += 1
            if name.startswith(".checkpoint-v"):
                with contextlib.suppress(ValueError, OSError):
                    found.checkpoints.append(json.loads(path.read_bytes()))
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            found.unreadable.append(f"{rel}: {exc}")
            continue
        if name == "journal.jsonl":
            try:
                contents = read_journal(path)
            except StateError as exc:
                found.unreadable.append(f"{rel}: {exc}")
                continue
            found.torn_tails += contents.torn_tail
        elif name.endswith(".jsonl"):
            lines = data.split(b"\n")
            if lines[-1]:
                if name == "events.jsonl":
                    found.torn_tails += 1
                else:
                    found.unreadable.append(f"{rel}: its last line has no newline")
            for number, line in enumerate(lines[:-1], start=1):
                try:
                    json.loads(line)
                except ValueError:
                    found.unreadable.append(f"{rel}: line {number} is not JSON")
                    break
        elif name.endswith(".json"):
            try:
                document = json.loads(data)
            except ValueError as exc:
                found.unreadable.append(f"{rel}: {exc}")
                continue
            if name.startswith("checkpoint-v"):
                found.checkpoints.append(document)
    return found


# ---- one job ------------------------------------------------------------------------------------


@dataclass
class Plan:
    signum: int
    mode: str  # random | setup | reduce | journal | checkpoint | merge
    delay: float = 0.0
    nth: int = 0
    early: bool = False  # the moment counts from the process's start, not from its first work

    @property
    def pause(self) -> str | None:
        return (
            f"{self.mode}@{self.nth}" if self.mode in ("journal", "checkpoint", "merge") else None
        )


class SoakJob:
    """One job in a world of its own: a repository, a PRODIGY_HOME, a ledger."""

    def __init__(self, root: Path, kind: str, items: int, parallel: int, tally: Tally) -> None:
        self.root, self.kind, self.items, self.tally = root, kind, items, tally
        self.repo = root / "repo"
        self.home = root / "home"
        self.ledger = root / "ledger"
        self.pause_dir = root / "pause"
        self.job_id: str | None = None
        self.ledger_checked = 0  # ledger lines already judged
        self.succeeded_since: dict[str, int] = {}  # item id -> ledger line count when first seen
        self.setup_done_since: int | None = None
        self.reduce_done_since: dict[int, int] = {}
        self.runs = 0
        self.run_began = (0, 0)  # ledger lines and journal bytes when the current run started
        self.plans = 0
        self.clean_end = False  # the last run ended by itself with exit 0
        self.ids = [f"item_{n}" for n in range(items)]
        for d in (self.repo, self.home, self.pause_dir):
            d.mkdir(parents=True)
        self._make_repo(parallel)

    def _make_repo(self, parallel: int) -> None:
        ledger = str(self.ledger)
        text = PLAIN.format(
            kind=self.kind,
            setup=SETUP.format(ledger=ledger, items=self.items)
            if self.kind == "setup-reduce"
            else "",
            isolation="worktree" if self.kind == "worktree" else "none",
            parallel=parallel,
            ledger=ledger,
            work=WORKTREE_WORK if self.kind == "worktree" else "",
            reduce=REDUCE.format(ledger=ledger) if self.kind == "setup-reduce" else "",
        )
        (self.repo / "wf.yml").write_text(text)
        if self.kind != "setup-reduce":
            (self.repo / "items.json").write_text(json.dumps([{"n": n} for n in range(self.items)]))
        subprocess.run(["git", "init", "-q", str(self.repo)], check=True)
        if self.kind == "worktree":
            (self.repo / "out").mkdir()
            (self.repo / "out" / ".keep").touch()
            git = ["git", "-c", "user.name=soak", "-c", "user.email=soak@example.invalid"]
            subprocess.run([*git, "add", "."], cwd=self.repo, check=True)
            subprocess.run([*git, "commit", "-qm", "soak"], cwd=self.repo, check=True)

    # ---- state as the files tell it

    @property
    def job_dir(self) -> Path | None:
        if self.job_id is None:
            jobs = self.home / "state" / self.repo.name / "mapreduce" / "jobs"
            found = sorted(jobs.iterdir()) if jobs.is_dir() else []
            if not found:
                return None
            self.job_id = found[0].name
        return self.home / "state" / self.repo.name / "mapreduce" / "jobs" / self.job_id

    def records(self) -> list[dict[str, Any]]:
        job_dir = self.job_dir
        return journal_lines(job_dir / "journal.jsonl") if job_dir else []

    def ledger_lines(self) -> list[str]:
        try:
            return self.ledger.read_text().splitlines()
        except FileNotFoundError:
            return []

    def completed(self) -> bool:
        ended = [r for r in self.records() if r.get("type") == "job_ended"]
        return bool(ended) and ended[-1].get("status") == "completed"

    def phase(self) -> str:
        records = self.records()
        types = Counter(r.get("type") for r in records)
        if self.kind == "setup-reduce" and not types["setup_completed"]:
            return "setup"
        if len(set(recorded_successes(records))) < self.items:
            return "map"
        if self.kind == "setup-reduce" and types["reduce_step_completed"] < REDUCE_STEPS:
            return "reduce"
        return "ending"

    # ---- runs

    def env(self, plan: Plan | None) -> dict[str, str]:
        env = {
            **os.environ,
            "PRODIGY_HOME": str(self.home),
            "PRODIGY_INTERRUPT_GRACE": "0.5",
            "GIT_AUTHOR_NAME": "soak",
            "GIT_AUTHOR_EMAIL": "soak@example.invalid",
            "GIT_COMMITTER_NAME": "soak",
            "GIT_COMMITTER_EMAIL": "soak@example.invalid",
        }
        for name in ("PRODIGY_TEST_PAUSE", "PRODIGY_TEST_PAUSE_DIR", "PRODIGY_ITEM"):
            env.pop(name, None)
        if plan is not None and plan.pause:
            env["PRODIGY_TEST_PAUSE"] = plan.pause
            env["PRODIGY_TEST_PAUSE_DIR"] = str(self.pause_dir)
        return env

    def start(self, plan: Plan | None) -> subprocess.Popen[bytes]:
        for marker in self.pause_dir.iterdir():
            marker.unlink()
        self.clean_end = False
        args = ["resume-job", self.job_id] if self.job_dir is not None else ["cook", "wf.yml"]
        self.runs += 1
        out = open(self.root / f"run-{self.runs}.out", "wb")  # noqa: SIM115 (closed below)
        try:
            return subprocess.Popen(
                [*prodigy_command(), *args],
                cwd=self.repo,
                env=self.env(plan),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            out.close()

    def output(self) -> str:
        return (self.root / f"run-{self.runs}.out").read_text(errors="replace")

    def interrupt(self, plan: Plan) -> bool:
        """One run, interrupted as planned; False if it finished first."""
        proc = self.start(plan)
        lines_before = len(self.ledger_lines())
        self.run_began = (lines_before, self.journal_size())
        target = self._wait_for_moment(proc, plan, lines_before)
        if target is None:
            return self._finished_run(proc)
        landed = target
        if plan.signum == signal.SIGKILL:
            landed = self._crash(proc, target)
        else:
            landed = target if target != "running" else self._classify(proc)
            os.killpg(proc.pid, plan.signum)
            for marker in self.pause_dir.iterdir():
                marker.unlink(missing_ok=True)  # let a paused writer go on into the graceful path
            self._graceful_exit(proc, plan.signum, landed)
        self.tally.interruptions[signal.Signals(plan.signum).name.removeprefix("SIG")] += 1
        self.tally.landed[landed] += 1
        self.check(final=False)
        return True

    def _wait_for_moment(
        self, proc: subprocess.Popen[bytes], plan: Plan, lines_before: int
    ) -> str | None:
        """Wait for the planned moment; what it is, or None if the run ended first."""
        if plan.pause:
            marker = self.pause_dir / f"{plan.mode}.paused"
            wait_until(lambda: marker.exists() or proc.poll() is not None, 120)
            if not marker.exists():
                return None
            return {
                "journal": "inside journal append",
                "checkpoint": "inside checkpoint write",
                "merge": "around a merge",
            }[plan.mode]
        if plan.mode in ("setup", "reduce"):
            word = f"{plan.mode}-start"
            wait_until(
                lambda: (
                    any(word in line for line in self.ledger_lines()[lines_before:])
                    or proc.poll() is not None
                ),
                120,
            )
        elif not plan.early:
            # The random moment is counted from when this run starts to work (a job of
            # thousands of items takes a while to start on a busy machine); `early` plans
            # count it from the process's start, so some land in start-up, before prodigy's
            # signal handlers exist.
            wait_until(
                lambda: len(self.ledger_lines()) > lines_before or proc.poll() is not None, 120
            )
        deadline = time.monotonic() + plan.delay
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        return None if proc.poll() is not None else "running"

    def journal_size(self) -> int:
        job_dir = self.job_dir
        try:
            return (job_dir / "journal.jsonl").stat().st_size if job_dir else 0
        except FileNotFoundError:
            return 0

    def _classify(self, proc: subprocess.Popen[bytes]) -> str:
        children = descendants(proc.pid)
        if (len(self.ledger_lines()), self.journal_size()) == self.run_began:
            return "startup"  # this run has not begun to work (nor to record) yet
        for pid in children:
            with contextlib.suppress(OSError):
                if b"merge" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3]:
                    return "around a merge"
        return {
            "setup": "during setup",
            "map": "agents running",
            "reduce": "during reduce",
            "ending": "job ending",
        }[self.phase()]

    def _crash(self, proc: subprocess.Popen[bytes], target: str) -> str:
        """SIGKILL prodigy and everything it started, frozen first so nothing runs on."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGSTOP)
        victims = {proc.pid}
        while True:
            found = descendants(proc.pid) - victims
            if not found:
                break
            for pid in found:
                _signal(pid, signal.SIGSTOP)
            victims |= found
        landed = target if target != "running" else self._classify(proc)
        for pid in victims:
            _signal(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if not wait_until(lambda: not processes_under(self.root), 10):
            self.tally.violate(f"{self.root.name}: processes left after SIGKILL of the tree")
        return landed

    def _graceful_exit(self, proc: subprocess.Popen[bytes], signum: int, landed: str) -> None:
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.tally.violate(f"{self.root.name}: no exit within 60 s of SIG{signum}")
            self._crash(proc, "running")
            return
        self.clean_end = code == 0
        expected = EXIT_CODES[signum]
        # prodigy handles SIGINT and SIGTERM while it runs a job. Before that (interpreter
        # start-up) and after the job's end is recorded, Python's defaults apply: SIGTERM ends
        # the process (a shell shows 143 all the same), SIGINT exits 130 through
        # KeyboardInterrupt. Either way nothing is left to do or lose.
        outside = landed == "startup" or self.completed()
        if code != expected:
            if outside and code in (0, -signum):
                self.tally.outside_handlers[
                    f"SIG{signal.Signals(signum).name[3:]} exit {code}"
                ] += 1
            else:
                self.tally.bad_exits += 1
                self.tally.violate(
                    f"{self.root.name}: exit {code} after {signal.Signals(signum).name} "
                    f"landing {landed} (expected {expected}): {self.output()[-400:]!r}"
                )
        if not wait_until(lambda: not processes_under(self.root), 10):
            self.tally.violate(
                f"{self.root.name}: processes outlived prodigy's graceful exit: "
                f"{processes_under(self.root)}"
            )

    def _finished_run(self, proc: subprocess.Popen[bytes]) -> bool:
        code = proc.wait()
        self.clean_end = code == 0
        if code != 0:
            self.tally.violate(
                f"{self.root.name}: run {self.runs} exited {code}: {self.output()!r}"
            )
        self.tally.missed += 1
        return False

    def finish(self) -> None:
        proc = self.start(None)
        try:
            code = proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            self._crash(proc, "running")
            code = -1
        self.clean_end = code == 0
        if code != 0:
            self.tally.violate(f"{self.root.name}: the final run exited {code}: {self.output()!r}")

    # ---- the checks

    def check(self, final: bool) -> None:
        job_dir = self.job_dir
        if job_dir is None:
            return  # killed before the job directory was made: nothing to check yet
        files = check_files(job_dir)
        name = self.root.name
        for problem in files.unreadable:
            self.tally.violate(f"{name}: unreadable file {problem}")
        self.tally.unreadable += len(files.unreadable)
        self.tally.torn_tails += files.torn_tails
        self.tally.stray_temp_files = max(self.tally.stray_temp_files, files.temp_files)

        ledger = self.ledger_lines()
        now = len(ledger)
        records = self.records()
        seen = {self.ids[i] for i in recorded_successes(records)}
        for document in files.checkpoints:
            try:
                seen |= checkpoint_successes(document, self.ids)
            except ValueError as exc:
                self.tally.violate(f"{name}: {exc}")
        for item in seen:
            self.succeeded_since.setdefault(item, now)
        types = [r.get("type") for r in records]
        if "setup_completed" in types and self.setup_done_since is None:
            self.setup_done_since = now
        for r in records:
            if r.get("type") == "reduce_step_completed":
                # The journal counts steps from 0, the ledger (like the events) from 1.
                self.reduce_done_since.setdefault(int(r["step"]) + 1, now)
        self._judge_ledger(ledger)
        if final:
            self._final(files, records, ledger)

    def _judge_ledger(self, ledger: list[str]) -> None:
        """Starts written after the work was seen recorded as done are repeated finished work."""
        for number in range(self.ledger_checked, len(ledger)):
            words = ledger[number].split()
            if not words:
                continue
            if words[0] == "start":
                since = self.succeeded_since.get(words[1])
                if since is not None and number >= since:
                    self.tally.repeated += 1
                    self.tally.violate(f"{self.root.name}: {words[1]} started again after success")
            elif words[0] == "setup-start":
                self.tally.setup_runs += 1
                if self.setup_done_since is not None and number >= self.setup_done_since:
                    self.tally.violate(f"{self.root.name}: setup ran again after it completed")
            elif words[0] == "reduce-start":
                step = int(words[1])
                self.tally.reduce_runs += step == 1
                since = self.reduce_done_since.get(step)
                if since is not None and number >= since:
                    self.tally.violate(
                        f"{self.root.name}: reduce step {step} ran again after it completed"
                    )
        self.ledger_checked = len(ledger)

    def _final(self, files: FileCheck, records: list[dict[str, Any]], ledger: list[str]) -> None:
        name = self.root.name
        assert self.job_dir is not None
        self.tally.items += self.items
        successes = Counter(recorded_successes(records))
        done = {line.split()[1] for line in ledger if line.startswith("done ")}
        lost = [item for n, item in enumerate(self.ids) if successes[n] != 1 or item not in done]
        if self.clean_end:
            # A run that ended by itself wrote its final checkpoint (a kill can land between
            # the `job_ended` record and that file: then only the journal tells).
            # The file latest.json names: a temporary file cut short before its rename can
            # hold the same version, taken while the last items were still running.
            latest = json.loads((self.job_dir / "latest.json").read_bytes())
            lost += [
                i
                for i in self.ids
                if i not in checkpoint_successes(latest, self.ids) and i not in lost
            ]
        self.tally.lost += len(lost)
        if lost:
            self.tally.violate(f"{name}: {len(lost)} items not succeeded exactly once: {lost[:5]}")
        ended = [r for r in records if r.get("type") == "job_ended"]
        if not ended or ended[-1].get("status") != "completed":
            self.tally.violate(
                f"{name}: the journal does not end with a completed job: {ended[-1:]}"
            )
        if self.kind == "setup-reduce":
            last = {}
            for line in ledger:
                words = line.split()
                if words[0] == "reduce-done":
                    last[words[1]] = words[2]
            want = {"1": f"{self.items}/{self.items}", "2": str(sum(range(self.items)))}
            if last != want:
                self.tally.violate(f"{name}: reduce saw {last}, expected {want}")
        if self.kind == "worktree":
            log = subprocess.run(
                ["git", "log", "--merges", "--format=%B", f"prodigy/{self.job_id}"],
                cwd=self.repo,
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            merges = Counter(TRAILER_ITEM.findall(log))
            twice = [item for item, n in merges.items() if n > 1]
            missing = [item for item in self.ids if merges[item] == 0]
            self.tally.merged_twice += len(twice)
            if twice or missing:
                self.tally.violate(f"{name}: merged twice {twice[:5]}, never merged {missing[:5]}")
        self.tally.jobs[self.kind] += 1


# ---- the soak -----------------------------------------------------------------------------------


def plan_for(job: SoakJob, rng: random.Random, signal_choice: str, max_delay: float) -> Plan:
    """The next interruption of `job`: its signal, and its moment, taking the kinds of moment
    in turn (so even a short soak strikes inside a journal append and a checkpoint write)."""
    name = signal_choice
    if signal_choice == "mixed":
        name = rng.choices(["KILL", "TERM", "INT"], weights=[6, 2, 2])[0]
    phase = job.phase() if job.job_dir is not None else "setup"
    modes = ["journal", "random", "checkpoint", "random"]
    if job.kind == "setup-reduce":
        modes = ["setup", "journal", "random"] if phase == "setup" else [*modes, "reduce"]
    elif job.kind == "worktree":
        modes = ["merge", *modes]
    mode = modes[job.plans % len(modes)]
    job.plans += 1
    nth = {"journal": rng.randint(1, 15), "checkpoint": rng.randint(1, 4)}.get(mode, 0)
    if mode == "merge":
        nth = rng.randint(1, 4)
    delay = rng.uniform(0.0, 0.3) if mode in ("setup", "reduce") else rng.uniform(0.1, max_delay)
    early = mode == "random" and rng.random() < 0.2
    return Plan(SIGNALS[name], mode, delay, nth, early)


def soak(args: argparse.Namespace, root: Path) -> Tally:
    rng = random.Random(args.seed)
    tally = Tally()
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    started = time.monotonic()
    number = 0
    while tally.delivered < args.kills:
        kind = kinds[number % len(kinds)]
        number += 1
        items = args.worktree_items if kind == "worktree" else args.items
        job = SoakJob(root / f"job-{number}-{kind}", kind, items, args.parallel, tally)
        kills_here = 0
        while kills_here < args.kills_per_job and tally.delivered < args.kills:
            if job.completed():
                break  # an interruption landed after the job's end was recorded
            plan = plan_for(job, rng, args.signal, args.max_delay)
            if not job.interrupt(plan):
                break  # it finished first
            kills_here += 1
        else:
            if not job.completed():
                job.finish()
        job.check(final=True)
        print(
            f"job {number} ({kind}, {items} items): {kills_here} interruptions, {job.runs} runs; "
            f"{tally.delivered}/{args.kills} delivered, {len(tally.violations)} violations, "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
        if tally.violations and args.stop_on_violation:
            break
        if not tally.violations and not args.keep:
            shutil.rmtree(job.root, ignore_errors=True)
    return tally


def figures(tally: Tally) -> dict[str, Any]:
    return {
        "delivered": tally.delivered,
        "by_signal": dict(tally.interruptions),
        "landed": dict(tally.landed),
        "missed": tally.missed,
        "jobs": dict(tally.jobs),
        "items": tally.items,
        "lost": tally.lost,
        "repeated": tally.repeated,
        "unreadable": tally.unreadable,
        "torn_tails": tally.torn_tails,
        "setup_runs": tally.setup_runs,
        "reduce_runs": tally.reduce_runs,
        "merged_twice": tally.merged_twice,
        "bad_exits": tally.bad_exits,
        "outside_handlers": dict(tally.outside_handlers),
        "violations": tally.violations,
    }


def summary(tally: Tally, args: argparse.Namespace, seconds: float) -> str:
    rows = [
        ("interruptions delivered", f"{tally.delivered}"),
        *((f"  by SIG{name}", str(n)) for name, n in sorted(tally.interruptions.items())),
        *(
            (f"  landed: {where}", str(tally.landed[where]))
            for where in LANDINGS
            if tally.landed[where]
        ),
        ("runs that finished before their planned interruption", str(tally.missed)),
        ("jobs finished", ", ".join(f"{n} {k}" for k, n in sorted(tally.jobs.items())) or "0"),
        ("items in finished jobs", str(tally.items)),
        ("items lost", str(tally.lost)),
        ("finished items repeated", str(tally.repeated)),
        ("unreadable files", str(tally.unreadable)),
        ("checks that met a torn final line (journal/events, acceptable)", str(tally.torn_tails)),
        ("most stray .tmp files in one job dir (acceptable)", str(tally.stray_temp_files)),
        ("setup runs (a cut-short setup runs again)", str(tally.setup_runs)),
        ("reduce runs (a cut-short step runs again)", str(tally.reduce_runs)),
        ("worktree merges repeated", str(tally.merged_twice)),
        *(
            (f"graceful signal outside prodigy's handlers: {what}", str(n))
            for what, n in sorted(tally.outside_handlers.items())
        ),
        ("wrong exit codes after TERM/INT", str(tally.bad_exits)),
        ("violations", str(len(tally.violations))),
    ]
    width = max(len(r[0]) for r in rows)
    head = (
        f"soak: --kills {args.kills} --signal {args.signal} --kind {args.kind} "
        f"--items {args.items} --worktree-items {args.worktree_items} --seed {args.seed}, "
        f"{seconds:.0f} s"
    )
    body = "\n".join(f"| {name:<{width}} | {value:>6} |" for name, value in rows)
    return f"{head}\n\n| {'':<{width}} | {'':>6} |\n|{'-' * (width + 2)}|{'-' * 7}:|\n{body}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="interruptions to deliver")
    parser.add_argument("--signal", choices=[*SIGNALS, "mixed"], default="KILL")
    parser.add_argument("--kind", choices=[*KINDS, "all"], default="all")
    parser.add_argument("--items", type=int, default=2000, help="items per plain/setup job")
    parser.add_argument("--worktree-items", type=int, default=40, help="items per worktree job")
    parser.add_argument("--kills-per-job", type=int, default=12)
    parser.add_argument("--parallel", type=int, default=8, help="max_parallel of the jobs")
    parser.add_argument("--max-delay", type=float, default=1.5, help="latest random moment (s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep every job's directory")
    parser.add_argument("--stop-on-violation", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--workdir", type=Path, help="where jobs live (default: a temp dir)")
    args = parser.parse_args()
    if args.kills < 0 or args.items < 1 or args.worktree_items < 1 or args.kills_per_job < 1:
        parser.error("--kills must be 0 or more; --items, --worktree-items, --kills-per-job 1+")
    root = Path(tempfile.mkdtemp(prefix="prodigy-soak-", dir=args.workdir))
    started = time.monotonic()
    tally = soak(args, root)
    print(summary(tally, args, time.monotonic() - started))
    if args.json:
        args.json.write_text(json.dumps(figures(tally), indent=1) + "\n")
    if tally.violations:
        print(f"\n{len(tally.violations)} violations; job directories kept under {root}")
        for line in tally.violations[:20]:
            print(f"  {line}")
        return 1
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
