"""Power cuts at random instants under a real prodigy job, and the checks after each one.

`PowerCuts` runs jobs with PRODIGY_HOME on a lazyfs mount (see `lazyfs.py`). The git
repository, the workflow and a *ledger* live outside the mount, on the real disk: they stand
for the outside world, which a power loss of the machine running prodigy does not roll back.
Setup, every agent and every reduce step append a line to the ledger when they start.

A cut happens at a random instant of `cook` or `resume`: the filesystem stops persisting
(optionally letting background writeback save a random part of what was pending), every
process of the run is killed, and the filesystem is mounted again from what was durable.
Then, on the durable side:

- every file of the job parses (a torn final line of the journal or the events log is the one
  damage allowed: it was never acknowledged);
- what any earlier cut found recorded (setup done, items succeeded, reduce steps done) is
  still recorded: nothing acknowledged is lost;
- and `prodigy resume` carries on. A job whose directory, metadata or journal never became
  durable has nothing recorded; it is started again with `cook`.

At the end of each job every item has succeeded, and the ledger shows that nothing started
again after a cut had found it recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from lazyfs import Mount

from prodigy.errors import ProdigyError
from prodigy.job import load_state
from prodigy.journal import read_journal
from prodigy.state import ItemStatus, JobState, replay
from prodigy.store import CHECKPOINT_PATTERN, JobDir

START_UP_SHARE = 0.2  # cuts aimed at a run's start-up; the rest at its steps

WORKFLOW = """\
name: powerloss
mode: mapreduce
setup:
  - shell: "echo setup >> {ledger}; sleep 0.2"
  - shell: "echo from-setup"
    capture_output: cap
map:
  input: items.json
  isolation: none
  max_parallel: 4
  agent_template:
    - shell: >-
        echo start ${{item_index}} >> {ledger};
        sleep 0.$(( ${{item_index}} % 3 + 1 ));
        echo done ${{item_index}} ${{cap}} >> {ledger}
reduce:
  - shell: "echo reduce 1 >> {ledger}; sleep 0.2"
  - shell: >-
      echo reduce 2 ${{map.successful}}/${{map.total}} >> {ledger}; sleep 0.2;
      echo reduce-end >> {ledger}
"""


@dataclass
class Tally:
    """What the cuts found, for the report."""

    cuts: int = 0
    jobs: int = 0
    landed: Counter[str] = field(default_factory=Counter)  # "cook/map", "resume/reduce", ...
    lost: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # resume refused, a job did not finish
    torn_tails: int = 0
    torn_events: int = 0
    jobs_never_durable: int = 0  # cuts after which the job had nothing durable: started again
    nothing_recorded: int = 0  # of those, job directories that resume said recorded nothing
    reruns_unacknowledged: int = 0  # agents run again whose success was never durable
    writeback_cuts: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.repeated or self.unreadable or self.failures)

    def table(self) -> str:
        rows = [
            ("cuts", str(self.cuts)),
            ("  of which with random background writeback", str(self.writeback_cuts)),
            ("jobs completed", str(self.jobs)),
            *((f"  landed in {where}", str(n)) for where, n in sorted(self.landed.items())),
            ("lost (recorded, then gone)", str(len(self.lost))),
            ("repeated (recorded, then started again)", str(len(self.repeated))),
            ("unreadable files", str(len(self.unreadable))),
            ("resume failures", str(len(self.failures))),
            ("torn final journal lines dropped", str(self.torn_tails)),
            ("torn final events-log lines", str(self.torn_events)),
            ("cuts before the job was durable (cook again)", str(self.jobs_never_durable)),
            ("  of which resume said 'recorded nothing'", str(self.nothing_recorded)),
            ("agents re-run, success never durable", str(self.reruns_unacknowledged)),
            ("time taken", f"{self.seconds:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"| {k.ljust(width)} | {v.rjust(8)} |" for k, v in rows)


@dataclass
class Recorded:
    """What the durable state of one job says is done, and when (ledger line) it was seen."""

    setup: int | None = None
    items: dict[int, int] = field(default_factory=dict)
    reduce: dict[int, int] = field(default_factory=dict)


class PowerCuts:
    def __init__(
        self, root: Path, items: int = 12, seed: int = 0, writeback_share: float = 0.5
    ) -> None:
        self.root = root
        self.items = items
        self.random = random.Random(seed)
        self.writeback_share = writeback_share
        self.home = root / "home"  # the mount point: PRODIGY_HOME
        self.repo = root / "repo"
        self.ledger = root / "repo" / "ledger.log"
        self.mount = Mount(root / "backing", self.home, seed=seed)
        self.tally = Tally()
        self.repo.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", str(self.repo)], check=True)
        (self.repo / "items.json").write_text(json.dumps([{"n": n} for n in range(items)]))
        (self.repo / "workflow.yml").write_text(WORKFLOW.format(ledger=self.ledger))
        self.env = {
            **os.environ,
            "PRODIGY_HOME": str(self.home),
            "PYTHONUNBUFFERED": "1",
            "PRODIGY_INTERRUPT_GRACE": "1",
        }
        self.budget = 0.0  # seconds an uncut job takes: cuts land uniformly within it
        self.startup = 0.0  # seconds from `cook` to its first step
        self.closed: set[str] = set()  # jobs finished, or abandoned with nothing durable

    # -- running prodigy --

    def _prodigy(self, *args: str) -> subprocess.Popen[bytes]:
        exe = Path(sys.executable).parent / "prodigy"
        with open(self.root / "prodigy.err", "wb") as err:
            return subprocess.Popen(
                [str(exe), *args],
                cwd=self.repo,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )

    def _stderr(self) -> str:
        return (self.root / "prodigy.err").read_text(errors="replace").strip()

    def calibrate(self) -> None:
        """One job without a cut: how long a whole job takes here sets where cuts land."""
        self.mount.start()
        started = time.monotonic()
        before = _line_count(self.ledger)
        proc = self._prodigy("cook", "workflow.yml", "-y")
        self._wait_for_work(proc, before)
        self.startup = time.monotonic() - started
        if proc.wait(timeout=120) != 0:
            raise RuntimeError(f"an uncut job failed: {self._stderr()}")
        self.budget = time.monotonic() - started
        self.closed.update(p.name for p in self._job_dirs())
        self.mount.stop()

    def run(self, cuts: int, progress: bool = False) -> Tally:
        """Run jobs one after another, cutting the power at random, until `cuts` cuts."""
        started = time.monotonic()
        if not self.budget:
            self.calibrate()
        self.mount.start()
        try:
            while self.tally.cuts < cuts:
                self._job(cuts, progress)
        finally:
            self.mount.stop()
        self.tally.seconds = time.monotonic() - started
        return self.tally

    def _job(self, cuts: int, progress: bool) -> None:
        """One job from `cook` to its end, through as many cuts as land before it finishes."""
        ledger_start = _line_count(self.ledger)
        recorded = Recorded()
        job_id: str | None = None
        command = "cook"
        while True:
            ledger_at_start = _line_count(self.ledger)
            proc = (
                self._prodigy("cook", "workflow.yml", "-y")
                if job_id is None
                else self._prodigy("resume", job_id, "-y")
            )
            cut = self.tally.cuts < cuts
            if self.random.random() < START_UP_SHARE:
                delay = self.random.uniform(0, self.startup)
            else:
                # Past start-up (imports, replay, checks), spread over the work of the run.
                self._wait_for_work(proc, ledger_at_start)
                delay = self.random.uniform(0, self.budget - self.startup)
            try:
                rc = proc.wait(timeout=delay if cut else 120)
            except subprocess.TimeoutExpired:
                rc = None
            if rc is not None:
                if rc != 0:
                    self.tally.failures.append(f"{command} exited {rc}: {self._stderr()}")
                    self.closed.update(p.name for p in self._job_dirs())  # go on with a new job
                    return
                self._finished(job_id, recorded, ledger_start)
                return
            where = f"{command}/{self._phase(ledger_start, ledger_at_start)}"
            writeback = self.random.random() < self.writeback_share
            self.mount.cut(writeback=writeback)
            _kill_tree(proc)
            self.mount.restart()
            self.tally.cuts += 1
            self.tally.writeback_cuts += writeback
            self.tally.landed[where] += 1
            if progress:
                print(f"cut {self.tally.cuts}: {where}", file=sys.stderr)
            job_id = self._after_cut(job_id, recorded, where)
            ended = None if job_id is None else load_state(JobDir(self.jobs_root / job_id)).ended
            if ended == "completed":
                # The cut came after the job's end was recorded: nothing is left to resume.
                self._finished(job_id, recorded, ledger_start)
                return
            command = "cook" if job_id is None else "resume"

    def _wait_for_work(self, proc: subprocess.Popen[bytes], ledger_before: int) -> None:
        """Until the run's first step writes to the ledger, or the run ends."""
        deadline = time.monotonic() + 120
        while _line_count(self.ledger) == ledger_before and proc.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("prodigy ran no step within 120 s")
            time.sleep(0.005)

    def _phase(self, ledger_start: int, ledger_at_start: int) -> str:
        """Where the job stood at the cut, as the outside world saw it (the last step)."""
        lines = _lines(self.ledger)
        if len(lines) == ledger_at_start:
            return "start-up"  # nothing ran yet in this process: loading, replaying, checking
        last = lines[-1] if len(lines) > ledger_start else ""
        if last == "reduce-end":
            return "end"  # every step ran: recording the end, the final checkpoint
        if last.startswith("reduce"):
            return "reduce"
        if last.startswith(("start", "done")):
            return "map"
        return "setup"

    # -- the checks --

    @property
    def jobs_root(self) -> Path:
        return self.home / "state" / self.repo.name / "mapreduce" / "jobs"

    def _job_dirs(self) -> list[Path]:
        return sorted(self.jobs_root.iterdir()) if self.jobs_root.is_dir() else []

    def _acked(self, job_id: str) -> JobState | None:
        """The job's state as its last acknowledged journal fsync left it (lazyfs's copy)."""
        rel = self.jobs_root.relative_to(self.home) / job_id / "journal.jsonl"
        copy = self.mount.backing / "acked" / str(rel).replace("/", "%")
        if not copy.exists():
            return None
        return replay(read_journal(copy).records)

    def _acked_jobs(self) -> set[str]:
        prefix = str(self.jobs_root.relative_to(self.home)).replace("/", "%") + "%"
        acked = self.mount.backing / "acked"
        names = [p.name for p in acked.iterdir()] if acked.is_dir() else []
        return {n[len(prefix) :].split("%")[0] for n in names if n.startswith(prefix)}

    def _after_cut(self, job_id: str | None, recorded: Recorded, where: str) -> str | None:
        """Check the durable side after a cut; the job id to resume (None: cook again)."""
        durable = {p.name for p in self._job_dirs()}
        if job_id is None:
            candidates = sorted((durable | self._acked_jobs()) - self.closed)
            job_id = candidates[-1] if candidates else None
        if job_id is None:
            self.tally.jobs_never_durable += 1
            return None
        acked = self._acked(job_id)
        job = JobDir(self.jobs_root / job_id)
        if job_id not in durable or not job.metadata.exists() or not job.journal.exists():
            if _has_progress(acked) or _recorded_any(recorded):
                what = "directory" if job_id not in durable else "metadata or journal"
                self.tally.lost.append(
                    f"after a cut in {where}, the job {job_id} lost its {what} "
                    f"although its journal had been fsync'd with {_progress(acked)}"
                )
            # Nothing durable to resume from: as far as the disk knows, the job never started.
            if job_id in durable:
                self._nothing_to_resume(job_id)
            self.closed.add(job_id)
            self.tally.jobs_never_durable += 1
            return None
        self.tally.unreadable.extend(f"{where}: {p}" for p in self._unreadable(job))
        try:
            state = load_state(job)
            contents = read_journal(job.journal)
        except ProdigyError as exc:
            self.tally.unreadable.append(f"{where}: {exc}")
            self.closed.add(job_id)
            return None
        self.tally.torn_tails += contents.torn_tail
        position = _line_count(self.ledger)
        succeeded = set(state.indexes_with(ItemStatus.SUCCEEDED))
        if acked is not None:
            # Acknowledged counts as recorded, from this cut on.
            if acked.setup_done and recorded.setup is None:
                recorded.setup = position
            for index in acked.indexes_with(ItemStatus.SUCCEEDED):
                recorded.items.setdefault(index, position)
            for step in range(1, acked.reduce_done + 1):
                recorded.reduce.setdefault(step, position)
        if recorded.setup is not None and not state.setup_done:
            self.tally.lost.append(f"{job_id}: setup was recorded done, then lost ({where})")
        for index in recorded.items:
            if index not in succeeded:
                self.tally.lost.append(f"{job_id}: item {index} was recorded, then lost ({where})")
        for step in recorded.reduce:
            if step > state.reduce_done:
                self.tally.lost.append(f"{job_id}: reduce step {step} was lost ({where})")
        if state.setup_done and recorded.setup is None:
            recorded.setup = position
        for index in succeeded:
            recorded.items.setdefault(index, position)
        for step in range(1, state.reduce_done + 1):
            recorded.reduce.setdefault(step, position)
        return job_id

    def _nothing_to_resume(self, job_id: str) -> None:
        """A job directory with nothing recorded: resume must say so, in one sentence."""
        proc = self._prodigy("resume", job_id, "-y")
        rc = proc.wait(timeout=120)
        said = self._stderr()
        if rc == 0 or "recorded nothing" not in said or "\n" in said:
            self.tally.failures.append(f"resume of {job_id}, which recorded nothing: {said}")
        self.tally.nothing_recorded += 1

    def _finished(self, job_id: str | None, recorded: Recorded, ledger_start: int) -> None:
        """A run exited 0: the job is complete, and the ledger shows nothing ran twice."""
        if job_id is None:
            new = sorted({p.name for p in self._job_dirs()} - self.closed)
            job_id = new[-1] if new else None
        if job_id is None:
            self.tally.failures.append("a run exited 0 but left no job")
            return
        self.closed.add(job_id)
        job = JobDir(self.jobs_root / job_id)
        state = load_state(job)
        if state.count(ItemStatus.SUCCEEDED) != self.items or state.ended != "completed":
            self.tally.failures.append(f"{job_id} ended {state.ended} without every item")
        lines = _lines(self.ledger)
        for index, seen in recorded.items.items():
            if f"start {index}" in lines[seen:]:
                self.tally.repeated.append(f"{job_id}: item {index} started after it was recorded")
        if recorded.setup is not None and "setup" in lines[recorded.setup :]:
            self.tally.repeated.append(f"{job_id}: setup ran again after it was recorded")
        for step, seen in recorded.reduce.items():
            if any(line.startswith(f"reduce {step}") for line in lines[seen:]):
                self.tally.repeated.append(f"{job_id}: reduce step {step} ran again")
        starts = Counter(line for line in lines[ledger_start:] if line.startswith("start"))
        self.tally.reruns_unacknowledged += sum(n - 1 for n in starts.values())
        self.tally.jobs += 1

    def _unreadable(self, job: JobDir) -> list[str]:
        """Files of the job directory that do not parse as what they claim to be."""
        bad: list[str] = []
        for path in sorted(job.path.iterdir()):
            name = path.name
            if name.startswith(".") or name in ("lock", "tmp", "map-results.json"):
                continue  # temporary files, the lock, scratch, and a view rebuilt each reduce
            try:
                if name == "journal.jsonl":
                    continue  # read by load_state, which tells a torn tail from damage
                if name in ("items.jsonl", "events.jsonl"):
                    lines = path.read_bytes().split(b"\n")
                    # Only the events log, appended without fsync, may end in a torn line.
                    tail = lines[-1:] if name == "events.jsonl" else []
                    self.tally.torn_events += bool(tail and tail[0])
                    for line in lines[: len(lines) - len(tail)]:
                        if line:
                            msgspec.json.decode(line)
                    if name == "items.jsonl" and len(lines) - 1 > 0 and lines[-1]:
                        raise ValueError("the last line has no newline")
                elif name in ("latest.json", "metadata.json") or CHECKPOINT_PATTERN.match(name):
                    msgspec.json.decode(path.read_bytes())
                else:
                    bad.append(f"{path}: a file prodigy does not write")
            except (ValueError, OSError) as exc:
                bad.append(f"{path}: {exc}")
        return bad


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Power loss kills everything: prodigy, its reaper and every agent, frozen first."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGSTOP)
    victims: set[int] = {proc.pid}
    while True:
        found = _descendants(proc.pid) - victims
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        victims |= found
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _progress(state: JobState | None) -> str:
    if state is None:
        return "nothing"
    return (
        f"setup {'done' if state.setup_done else 'not done'}, "
        f"{state.count(ItemStatus.SUCCEEDED)} items succeeded, {state.reduce_done} reduce steps"
    )


def _has_progress(state: JobState | None) -> bool:
    return state is not None and (
        state.setup_done or state.count(ItemStatus.SUCCEEDED) > 0 or state.reduce_done > 0
    )


def _recorded_any(recorded: Recorded) -> bool:
    return recorded.setup is not None or bool(recorded.items) or bool(recorded.reduce)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def _line_count(path: Path) -> int:
    return len(_lines(path))
