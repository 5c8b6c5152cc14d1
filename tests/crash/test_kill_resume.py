"""Interrupt a job any way you like; resume finishes it, repeating no finished work, losing none.

Every test drives the real `prodigy` executable. Agents, setup and reduce steps append to log
files in the repository, so the tests count exactly what ran. Kill points are made
deterministic with *hold files*: a step whose `hold/<name>` file exists waits until the test
removes it, so the test knows which agents are mid-way when it strikes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Env, events, hold, ids, line_count, lines, release, the_job, wait_for

WORKFLOW = """\
name: crash-test
mode: mapreduce
setup:
  - shell: "echo setup >> setup.log"
  - shell: "while [ -e hold/setup ]; do sleep 0.02; done; echo setup-done >> setup.log"
  - shell: "echo from-setup"
    capture_output: cap
map:
  input: items.json
  isolation: none
  max_parallel: {max_parallel}
  agent_template:
    - shell: >-
        echo ${{item_id}} >> started.log; sleep {sleep};
        while [ -e hold/${{item_id}} ]; do sleep 0.02; done;
        echo ${{item_id}} ${{cap}} >> runs.log
reduce:
  - shell: "echo r1 >> reduce-started.log; while [ -e hold/r1 ]; do sleep 0.02; done; echo r1 >> reduce.log"
  - shell: "echo r2 >> reduce-started.log; while [ -e hold/r2 ]; do sleep 0.02; done; sleep 0.1; echo r2 >> reduce.log"
  - shell: "echo r3 ${{map.successful}}/${{map.total}} >> reduce.log"
"""  # noqa: E501


# ---- running prodigy --------------------------------------------------------------------------


class Run:
    """A prodigy process in its own process group, its output drained by threads as it runs."""

    def __init__(self, world: Env, *args: str, **env: str) -> None:
        self.proc = world.popen(*args, **env)
        self.pid = self.proc.pid
        self._out: list[str] = []
        self._err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=_drain, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=_drain, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def signal(self, signum: int) -> None:
        """What a terminal does on Ctrl-C: signal prodigy's whole process group."""
        os.killpg(self.pid, signum)

    def wait(self, timeout: float = 30) -> int:
        rc = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=5)
        return rc

    def crash(self) -> None:
        """Simulate a machine crash: SIGKILL prodigy's process group and everything it started.

        Agents run in process groups of their own, so they are frozen (SIGSTOP) first, found
        through the process tree, and killed with the rest: nothing runs on after the crash.
        """
        os.killpg(self.pid, signal.SIGSTOP)
        victims: set[int] = {self.pid}
        while True:
            found = _descendants(self.pid) - victims
            if not found:
                break
            for pid in found:
                _kill(pid, signal.SIGSTOP)
            victims |= found
        for pid in victims:
            _kill(pid, signal.SIGKILL)
        os.killpg(self.pid, signal.SIGKILL)
        self.wait()


def _drain(stream: Any, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    return parents


def _descendants(root: int) -> set[int]:
    parents = _parents()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= children
        frontier = children
    return found


def _processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is `directory` (agents left running)."""
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            state = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        if state[state.rfind(b")") + 2 : state.rfind(b")") + 3] in (b"Z", b"X"):
            continue
        if cwd == str(directory):
            pids.append(int(entry))
    return pids


# ---- the world ---------------------------------------------------------------------------------


@pytest.fixture
def w(world: Env) -> Iterator[Env]:
    world.env["PRODIGY_INTERRUPT_GRACE"] = "0.3"
    (world.repo / "hold").mkdir()
    yield world
    # Never leave agents behind (a product bug could orphan them): kill what runs in the repo.
    for pid in _processes_in(world.repo):
        _kill(pid, signal.SIGKILL)


def setup_job(w: Env, items: int, max_parallel: int = 3, sleep: float = 0.05) -> None:
    w.write("wf.yml", WORKFLOW.format(max_parallel=max_parallel, sleep=sleep))
    w.write_json("items.json", [{"n": n} for n in range(items)])


def first_words(w: Env, name: str) -> list[str]:
    return [line.split()[0] for line in lines(w, name)]


def completed(w: Env, job: str) -> set[str]:
    """Items whose success is durably recorded (the event follows the journal append)."""
    return {e["item_id"] for e in events(w, job, "agent_completed")}


def journal_records(w: Env, job: str) -> list[dict[str, Any]]:
    out = []
    for line in (w.job_dir(job) / "journal.jsonl").read_bytes().split(b"\n"):
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line
    return out


def journal_successes(w: Env, job: str) -> list[str]:
    return [
        f"item_{r['index']}"
        for r in journal_records(w, job)
        if r.get("type") == "succeeded"
        or (r.get("type") == "attempt_ended" and r.get("outcome") == "succeeded")
    ]


def wait_started(w: Env, *items: str, times: int = 1) -> None:
    def ready() -> bool:
        counts = Counter(first_words(w, "started.log"))
        return all(counts[i] >= times for i in items)

    wait_for(ready, what=f"agents {items} to start")


def wait_completed(w: Env, job: str, items: list[str]) -> None:
    wait_for(lambda: set(items) <= completed(w, job), what=f"{items} to be recorded")


def resume(w: Env, job: str | None, *flags: str) -> subprocess.CompletedProcess[str]:
    args = ("resume-job", job, *flags) if job else ("resume", *flags)
    return w.run(*args, timeout=40)


def assert_exactly_once(w: Env, n: int) -> None:
    runs = Counter(first_words(w, "runs.log"))
    assert runs == Counter(ids(*range(n))), f"runs.log is not every item exactly once: {runs}"
    # Setup outputs reach every agent, including those run by a resume.
    assert all(line.endswith(" from-setup") for line in lines(w, "runs.log")), lines(w, "runs.log")


def assert_reduce_once(w: Env, n: int) -> None:
    assert lines(w, "reduce.log") == ["r1", "r2", f"r3 {n}/{n}"]


def started_counts(w: Env) -> Counter[str]:
    return Counter(first_words(w, "started.log"))


# ---- interrupt points ---------------------------------------------------------------------------


def test_sigint_mid_map_lets_running_agents_finish_and_resume_completes(w: Env) -> None:
    setup_job(w, items=10, max_parallel=3)
    hold(w, *ids(5, 6, 7))
    run = Run(w, "cook", "wf.yml", PRODIGY_INTERRUPT_GRACE="2")
    job = the_job(w)
    wait_completed(w, job, ids(0, 1, 2, 3, 4))
    wait_started(w, *ids(5, 6, 7))

    run.signal(signal.SIGINT)
    wait_for(lambda: "interrupt" in run.stderr.lower(), what="the interrupt notice")
    # item_5 finishes within the grace period: it must be recorded, not thrown away.
    release(w, "item_5")
    assert run.wait() == 130, run.stdout + run.stderr
    assert f"prodigy resume-job {job}" in run.stdout
    assert "item_5" in first_words(w, "runs.log")
    assert not {"item_6", "item_7"} & set(first_words(w, "runs.log"))
    # No agent starts after the first Ctrl-C.
    assert not {"item_8", "item_9"} & set(first_words(w, "started.log"))

    release(w, "item_6", "item_7")
    result = resume(w, job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exactly_once(w, 10)
    started = started_counts(w)
    # Finished before the interrupt (item_5 within the grace): never started again.
    assert all(started[i] == 1 for i in ids(0, 1, 2, 3, 4, 5, 8, 9)), started
    # Killed after the grace period: started twice, finished once.
    assert started["item_6"] == 2 and started["item_7"] == 2, started
    assert lines(w, "setup.log") == ["setup", "setup-done"]
    assert_reduce_once(w, 10)


def test_sigterm_mid_map_exits_143_and_resume_without_id_completes(w: Env) -> None:
    setup_job(w, items=8, max_parallel=2)
    hold(w, *ids(3, 4))
    run = Run(w, "cook", "wf.yml")
    job = the_job(w)
    wait_completed(w, job, ids(0, 1, 2))
    wait_started(w, *ids(3, 4))

    run.signal(signal.SIGTERM)
    assert run.wait() == 143, run.stdout + run.stderr
    assert f"prodigy resume-job {job}" in run.stdout
    release(w, *ids(3, 4))

    result = resume(w, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Resuming job {job}" in result.stdout
    assert_exactly_once(w, 8)
    started = started_counts(w)
    assert all(started[i] == 1 for i in ids(0, 1, 2, 5, 6, 7)), started
    assert started["item_3"] == 2 and started["item_4"] == 2, started
    assert lines(w, "setup.log") == ["setup", "setup-done"]
    assert_reduce_once(w, 8)


def test_sigint_mid_setup_and_mid_reduce(w: Env) -> None:
    setup_job(w, items=4, max_parallel=2)
    hold(w, "setup")
    run = Run(w, "cook", "wf.yml")
    job = the_job(w)
    wait_for(lambda: lines(w, "setup.log") == ["setup"], what="setup step 1")
    run.signal(signal.SIGINT)
    assert run.wait() == 130, run.stdout + run.stderr
    assert f"prodigy resume-job {job}" in run.stdout
    assert not (w.repo / "started.log").exists(), "agents started after an interrupted setup"

    release(w, "setup")
    hold(w, "r2")
    run = Run(w, "resume-job", job)
    wait_for(lambda: "r2" in lines(w, "reduce-started.log"), what="the slow reduce step")
    wait_for(lambda: events(w, job, "reduce_step_completed"), what="reduce step 1 recorded")
    run.signal(signal.SIGINT)
    assert run.wait() == 130, run.stdout + run.stderr
    assert lines(w, "reduce.log") == ["r1"], "reduce steps ran after the interrupt"

    release(w, "r2")
    result = resume(w, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(w, "setup.log") == ["setup", "setup", "setup-done"]
    assert started_counts(w) == Counter(ids(*range(4)))
    assert_exactly_once(w, 4)
    assert lines(w, "reduce-started.log") == ["r1", "r2", "r2"]
    assert_reduce_once(w, 4)


def test_sigkill_of_process_group_mid_map_leaves_no_agent_running_on(w: Env) -> None:
    """`kill -9` of prodigy's process group (what a terminal or supervisor does).

    Agents run in process groups of their own; when their coordinator dies they must not run
    on unsupervised, or their work is done twice once the job is resumed.
    """
    setup_job(w, items=6, max_parallel=2)
    hold(w, *ids(2, 3))
    run = Run(w, "cook", "wf.yml")
    job = the_job(w)
    wait_completed(w, job, ids(0, 1))
    wait_started(w, *ids(2, 3))

    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    wait_for(
        lambda: not _processes_in(w.repo),
        timeout=15,
        what="the killed run's agents to end (they run on after prodigy was killed)",
    )
    release(w, *ids(2, 3))
    result = resume(w, job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exactly_once(w, 6)
    started = started_counts(w)
    assert all(started[i] == 1 for i in ids(0, 1, 4, 5)), started
    assert started["item_2"] == 2 and started["item_3"] == 2, started
    assert_reduce_once(w, 6)


def test_sigkill_of_process_group_mid_reduce_leaves_no_step_running_on(w: Env) -> None:
    setup_job(w, items=3, max_parallel=3)
    hold(w, "r2")
    run = Run(w, "cook", "wf.yml")
    job = the_job(w)
    wait_for(lambda: "r2" in lines(w, "reduce-started.log"), what="the slow reduce step")
    wait_for(lambda: events(w, job, "reduce_step_completed"), what="reduce step 1 recorded")

    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    wait_for(
        lambda: not _processes_in(w.repo),
        timeout=15,
        what="the killed run's reduce step to end (it runs on after prodigy was killed)",
    )
    release(w, "r2")
    result = resume(w, job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert started_counts(w) == Counter(ids(0, 1, 2)), "the map phase ran again"
    assert lines(w, "reduce-started.log") == ["r1", "r2", "r2"]
    assert_reduce_once(w, 3)


def test_crash_mid_map_resumes_and_takes_over_the_stale_lock(w: Env) -> None:
    setup_job(w, items=9, max_parallel=3)
    hold(w, *ids(4, 5, 6))
    run = Run(w, "cook", "wf.yml")
    job = the_job(w)
    wait_completed(w, job, ids(0, 1, 2, 3))
    wait_started(w, *ids(4, 5, 6))
    run.crash()
    release(w, *ids(4, 5, 6))

    result = resume(w, job)
    assert result.returncode == 0, result.stdout + result.stderr
    # The dead holder's lock is taken over automatically, and the user is told.
    assert re.search(r"tak(e|es|ing|en) over", result.stderr, re.IGNORECASE), result.stderr
    assert str(run.pid) in result.stderr, result.stderr
    assert_exactly_once(w, 9)
    started = started_counts(w)
    assert all(started[i] == 1 for i in ids(0, 1, 2, 3, 7, 8)), started
    assert all(started[i] == 2 for i in ids(4, 5, 6)), started
    assert lines(w, "setup.log") == ["setup", "setup-done"]
    assert_reduce_once(w, 9)


def test_crash_between_map_and_reduce(w: Env) -> None:
    setup_job(w, items=6, max_parallel=3)
    hold(w, "r1")
    run = Run(w, "cook", "wf.yml")
    job = the_job(w)
    wait_completed(w, job, ids(*range(6)))
    wait_for(lambda: lines(w, "reduce-started.log") == ["r1"], what="reduce step 1 to start")
    run.crash()
    release(w, "r1")

    result = resume(w, job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert started_counts(w) == Counter(ids(*range(6))), "the map phase ran again"
    assert_exactly_once(w, 6)
    assert lines(w, "setup.log") == ["setup", "setup-done"]
    assert lines(w, "reduce-started.log") == ["r1", "r1", "r2"]
    assert_reduce_once(w, 6)


def test_crash_mid_reduce_never_repeats_a_completed_reduce_step(w: Env) -> None:
    setup_job(w, items=5, max_parallel=3)
    hold(w, "r2")
    run = Run(w, "cook", "wf.yml")
    job = the_job(w)
    wait_for(lambda: line_count(w.repo / "reduce.log") == 1, what="reduce step 1 to finish")
    wait_for(lambda: events(w, job, "reduce_step_completed"), what="reduce step 1 recorded")
    wait_for(lambda: "r2" in lines(w, "reduce-started.log"), what="the slow reduce step")
    run.crash()
    release(w, "r2")

    result = resume(w, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert started_counts(w) == Counter(ids(*range(5))), "the map phase ran again"
    assert_exactly_once(w, 5)
    # r2 was killed mid-step and runs again; r1 had completed and never runs again.
    assert lines(w, "reduce-started.log") == ["r1", "r2", "r2"]
    assert_reduce_once(w, 5)


def test_crash_mid_setup_reruns_setup_from_its_start(w: Env) -> None:
    setup_job(w, items=5, max_parallel=2)
    hold(w, "setup")
    run = Run(w, "cook", "wf.yml")
    job = the_job(w)
    wait_for(lambda: lines(w, "setup.log") == ["setup"], what="setup step 1")
    run.crash()
    assert not (w.repo / "started.log").exists()
    release(w, "setup")

    result = resume(w, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Resuming job {job}" in result.stdout
    assert lines(w, "setup.log") == ["setup", "setup", "setup-done"]
    assert started_counts(w) == Counter(ids(*range(5)))
    assert_exactly_once(w, 5)
    assert_reduce_once(w, 5)


def test_repeated_crashes_at_increasing_progress_then_resume(w: Env) -> None:
    setup_job(w, items=12, max_parallel=3)
    hold(w, "setup", *ids(*range(3, 12)))
    run = Run(w, "cook", "wf.yml")
    job = the_job(w)
    wait_for(lambda: lines(w, "setup.log") == ["setup"], what="setup step 1")
    run.crash()  # 1: mid-setup

    release(w, "setup")
    for batch in range(3):  # 2, 3, 4: mid-map, a batch further each time
        run = Run(w, "resume-job", job) if batch % 2 else Run(w, "resume")
        done = ids(*range(3 * batch + 3))
        wait_completed(w, job, done)
        wait_started(w, *ids(*range(3 * batch + 3, 3 * batch + 6)), times=1)
        run.crash()
        release(w, *ids(*range(3 * batch + 3, 3 * batch + 6)))

    hold(w, "r2")
    run = Run(w, "resume-job", job)
    wait_for(lambda: "r2" in lines(w, "reduce-started.log"), what="the slow reduce step")
    wait_for(lambda: events(w, job, "reduce_step_completed"), what="reduce step 1 recorded")
    run.crash()  # 5: mid-reduce
    release(w, "r2")

    result = resume(w, job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exactly_once(w, 12)
    started = started_counts(w)
    assert all(started[i] == 1 for i in ids(0, 1, 2)), started
    assert all(started[i] == 2 for i in ids(*range(3, 12))), started
    assert lines(w, "setup.log") == ["setup", "setup", "setup-done"]
    assert lines(w, "reduce-started.log") == ["r1", "r2", "r2"]
    assert_reduce_once(w, 12)


def test_crashes_at_arbitrary_moments_never_repeat_recorded_work(w: Env) -> None:
    """Kills not synchronised with the agents: the journal decides what counts as done."""
    n = 16
    setup_job(w, items=n, max_parallel=4, sleep=0.1)
    run = Run(w, "cook", "wf.yml")
    job = the_job(w)
    snapshots: list[tuple[set[str], int]] = []  # (recorded successes, started.log lines)
    for target in (3, 8, 12):
        wait_for(lambda t=target: line_count(w.repo / "runs.log") >= t, what=f"{target} runs")
        run.crash()
        snapshots.append((set(journal_successes(w, job)), line_count(w.repo / "started.log")))
        run = Run(w, "resume-job", job)
    assert run.wait() == 0, run.stdout + run.stderr

    successes = Counter(journal_successes(w, job))
    assert successes == Counter(ids(*range(n))), f"not one recorded success per item: {successes}"
    started = first_words(w, "started.log")
    for recorded, offset in snapshots:
        again = recorded & set(started[offset:])
        assert not again, f"items recorded as done before a crash were started again: {again}"
    runs = Counter(first_words(w, "runs.log"))
    assert set(runs) == set(ids(*range(n)))
    # A side effect may repeat only when the crash fell between it and its journal record.
    assert all(c <= 1 + len(snapshots) for c in runs.values()), runs
    assert_reduce_once(w, n)


# ---- concurrency and damaged state ------------------------------------------------------------


def interrupted_job(w: Env, held: int) -> str:
    """A job stopped by Ctrl-C while item `held` was running and every earlier item was done."""
    hold(w, f"item_{held}")
    run = Run(w, "cook", "wf.yml")
    job = the_job(w)
    wait_completed(w, job, ids(*range(held)))
    wait_started(w, f"item_{held}")
    run.signal(signal.SIGINT)
    assert run.wait() == 130, run.stdout + run.stderr
    return job


def test_second_resume_of_a_running_job_is_refused_naming_the_holder(w: Env) -> None:
    setup_job(w, items=5, max_parallel=2)
    job = interrupted_job(w, 2)

    first = Run(w, "resume-job", job)
    wait_started(w, "item_2", times=2)
    clock = time.monotonic()
    second = w.run("resume-job", job, timeout=20)
    elapsed = time.monotonic() - clock
    assert second.returncode == 1, second.stdout + second.stderr
    assert elapsed < 5, f"the second resume took {elapsed:.1f}s to be refused"
    assert str(first.pid) in second.stderr, second.stderr
    assert socket.gethostname() in second.stderr, second.stderr
    assert "Traceback" not in second.stderr

    release(w, "item_2")
    assert first.wait() == 0, first.stdout + first.stderr
    assert_exactly_once(w, 5)
    assert_reduce_once(w, 5)


def truncate_latest(w: Env, job: str) -> tuple[Path, bytes, list[int]]:
    """Cut the file latest.json points to in half; its path, new bytes and the older versions."""
    latest = w.job_dir(job) / "latest.json"
    target = latest.resolve()
    data = target.read_bytes()
    damaged = data[: len(data) // 2]
    target.write_bytes(damaged)
    version = int(re.findall(r"\d+", target.name)[0])
    older = sorted(
        int(m.group(1))
        for p in w.job_dir(job).iterdir()
        if (m := re.fullmatch(r"checkpoint-v(\d+)\.json", p.name)) and int(m.group(1)) < version
    )
    return target, damaged, older


def preserved(w: Env, job: str, damaged: bytes) -> list[Path]:
    return [p for p in w.job_dir(job).iterdir() if p.is_file() and p.read_bytes() == damaged]


def test_truncated_latest_checkpoint_is_reported_and_an_older_version_used(w: Env) -> None:
    setup_job(w, items=6, max_parallel=1)
    job = interrupted_job(w, 4)
    target, damaged, older = truncate_latest(w, job)
    assert older, "no older checkpoint file was kept"

    refused = resume(w, job)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert target.name in refused.stderr, refused.stderr
    for v in older:
        assert f"v{v}" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert target.read_bytes() == damaged, "the damaged checkpoint was modified"
    assert (w.job_dir(job) / "latest.json").resolve() == target
    assert not (w.repo / "reduce.log").exists()

    # Completions after version 2 (items 2 and 3) are rolled back and run again.
    release(w, "item_4")
    result = resume(w, job, "--from-checkpoint", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert preserved(w, job, damaged), "the damaged checkpoint's bytes were not kept"
    runs = Counter(first_words(w, "runs.log"))
    assert runs == Counter({**dict.fromkeys(ids(*range(6)), 1), "item_2": 2, "item_3": 2}), runs
    assert_reduce_once(w, 6)


def test_truncated_latest_checkpoint_force_rebuilds_from_the_journal(w: Env) -> None:
    setup_job(w, items=6, max_parallel=1)
    job = interrupted_job(w, 3)
    _, damaged, _ = truncate_latest(w, job)
    release(w, "item_3")

    result = resume(w, job, "--force")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert preserved(w, job, damaged), "the damaged checkpoint's bytes were not kept"
    assert_exactly_once(w, 6)
    started = started_counts(w)
    assert all(started[i] == 1 for i in ids(0, 1, 2, 4, 5)), started
    assert_reduce_once(w, 6)


def test_torn_last_journal_line_is_ignored_by_resume(w: Env) -> None:
    setup_job(w, items=6, max_parallel=1)
    job = interrupted_job(w, 3)
    journal = w.job_dir(job) / "journal.jsonl"
    # A crash in the middle of recording item_4's success: half a line, no newline.
    record = {
        "type": "attempt_ended",
        "index": 4,
        "outcome": "succeeded",
        "result": {"attempt": 1, "ok": True, "started_at": "x", "duration_s": 0.1},
    }
    text = json.dumps(record)
    with journal.open("ab") as f:
        f.write(text[: len(text) // 2].encode())
    release(w, "item_3")

    result = resume(w, job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Loaded checkpoint v3: 3 completed, 3 remaining" in result.stdout
    assert_exactly_once(w, 6)
    assert started_counts(w)["item_4"] == 1
    # The torn bytes were dropped, not welded onto the next record.
    for line in journal.read_text().splitlines():
        json.loads(line)
    assert_reduce_once(w, 6)


def test_second_ctrl_c_stops_running_agents_at_once(w: Env) -> None:
    """First Ctrl-C: agents get the grace period (here 60 s); a second one kills them now."""
    setup_job(w, items=4, max_parallel=2)
    hold(w, *ids(0, 1))
    run = Run(w, "cook", "wf.yml", PRODIGY_INTERRUPT_GRACE="60")
    job = the_job(w)
    wait_started(w, *ids(0, 1))
    run.signal(signal.SIGINT)
    wait_for(lambda: "Interrupt received" in run.stderr, what="the first interrupt's notice")
    clock = time.monotonic()
    run.signal(signal.SIGINT)
    assert run.wait() == 130, run.stdout + run.stderr
    assert time.monotonic() - clock < 20, "the second Ctrl-C did not cut the grace period short"
    assert f"prodigy resume-job {job}" in run.stdout
    wait_for(lambda: not _processes_in(w.repo), timeout=15, what="the killed agents to end")
    release(w, *ids(0, 1))
    result = resume(w, job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exactly_once(w, 4)
    assert_reduce_once(w, 4)
