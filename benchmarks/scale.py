"""Throughput and scale of the coordinator, side by side with GNU parallel and a bare spawn loop.

Every prodigy run is `prodigy cook` of the same workflow: `isolation: none`, one
`shell: "true"` step per item, items from a JSON-lines file, `max_parallel` 8 (--parallel).
Times are whole-command wall clock (start-up included); items/s = items / wall. Each section
prints a Markdown table with the figure, its target and whether it is met:

  throughput  items/s for 2,000 items: prodigy cook (every completion fdatasync'd in the
              journal before it counts), GNU parallel -j 8 --joblog, and a bare asyncio loop
              spawning the same `bash -c true` processes (the practical limit), in rounds that
              alternate the order; medians and the ratios.
  scaling     items/s at 1,000 and at 100,000 items (a completion must not cost more in a
              bigger job).
  resume      a job killed (SIGKILL of its process group) once half its items are done, at
              100,000 and 1,000,000 items: the time from starting `prodigy resume-job` to its
              first new agent (the agent touches a file when a marker exists; the script waits
              for it to appear). The resume runs to the end, and every agent logs its item and
              its coordinator's pid: no item may be lost, none the journal had recorded as
              finished may run again, and only those in flight at the kill (at most --parallel)
              run twice.
  memory      the coordinator's peak RSS (VmHWM of the prodigy process itself, polled from
              /proc/PID/status) over a whole run, and over a resume from half way to its end,
              at 10,000, 100,000 and 1,000,000 items.
  size        the job directory's bytes per item after a run of 100,000 items, file by file.

The sizes are flags; --quick uses 1,000 and 10,000 only (a few minutes on 2 cores). The full
set runs a million trivial agents more than once: hours on a small machine.

    python benchmarks/scale.py --quick
    python benchmarks/scale.py --sections throughput --rounds 5
    python benchmarks/scale.py --sections resume,memory --sizes 100000

GNU parallel is found on PATH or installed with apt-get (Debian package `parallel`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prodigy.journal import replay_journal
from prodigy.state import ItemStatus

SECTIONS = ("throughput", "scaling", "resume", "memory", "size")

# Once `resumed` exists (after the kill), each agent appends its parent's pid (the
# coordinator's) to `first-agent`: the resumed run's pid appearing there is its first agent (an
# agent of the killed run may live on for an instant, until the reaper's SIGKILL reaches it).
# `[` and `echo` are bash builtins: no process more per item.
WORKFLOW = """\
name: scale
mode: mapreduce
map:
  input: items.jsonl
  isolation: none
  max_parallel: {parallel}
  agent_template:
    - shell: "{command}"
"""
TRIVIAL = "true"
# The resume section also logs which coordinator ran which item (`ran`: "PID N" lines), to check
# that every item ran and none recorded as finished before the kill ran again.
MARKED = "[ -e resumed ] && echo $PPID >> first-agent; echo $PPID $PRODIGY_ITEM_N >> ran"

BARE_LOOP = """
import asyncio, shutil, sys, time
BASH = shutil.which("bash") or "/bin/bash"
async def main(items: int, parallel: int) -> None:
    slots = asyncio.Semaphore(parallel)
    async def one() -> None:
        async with slots:
            proc = await asyncio.create_subprocess_exec(
                BASH, "-c", "true", stdin=asyncio.subprocess.DEVNULL, start_new_session=True
            )
            await proc.wait()
    await asyncio.gather(*(one() for _ in range(items)))
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def prodigy_command() -> list[str]:
    exe = shutil.which("prodigy", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "prodigy"]


def find_parallel() -> str:
    found = shutil.which("parallel")
    if found:
        return found
    print("GNU parallel not found; installing the Debian package `parallel`...", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "parallel"], check=False, capture_output=True)
    found = shutil.which("parallel")
    if not found:
        sys.exit("GNU parallel is needed as the baseline: install it (apt-get install parallel).")
    return found


# ---- one prodigy job ---------------------------------------------------------------------------


@dataclass
class Workspace:
    """A git repository with the items and the workflow, and a PRODIGY_HOME of its own."""

    root: Path
    items: int

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def home(self) -> Path:
        return self.root / "home"

    def env(self) -> dict[str, str]:
        # Bytecode cached as in any installed copy (some sandboxes set PYTHONDONTWRITEBYTECODE,
        # and compiling prodigy at each start would be counted against every run).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return {**env, "PRODIGY_HOME": str(self.home)}

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """`prodigy ARGS` in the repository, in a process group of its own (to kill whole)."""
        return subprocess.Popen(
            [*prodigy_command(), *args],
            cwd=self.repo,
            env=self.env(),
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def job_dir(self) -> Path:
        jobs = list(self.home.glob("state/*/mapreduce/jobs/*"))
        if len(jobs) != 1:
            raise RuntimeError(f"expected one job under {self.home}, found {len(jobs)}")
        return jobs[0]


def make_workspace(parent: Path, items: int, command: str, parallel: int) -> Workspace:
    root = Path(tempfile.mkdtemp(prefix=f"scale-{items}-", dir=parent))
    space = Workspace(root, items)
    space.repo.mkdir()
    subprocess.run(["git", "init", "-q", str(space.repo)], check=True)
    with (space.repo / "items.jsonl").open("w") as f:
        f.writelines(f'{{"n": {n}}}\n' for n in range(items))
    (space.repo / "workflow.yaml").write_text(
        WORKFLOW.format(parallel=parallel, command=command.replace('"', '\\"'))
    )
    return space


class PeakRss:
    """Polls VmHWM (the peak resident set) of one process until it exits; kB."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        path = f"/proc/{self.pid}/status"
        while not self._stop.is_set():
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                            break
            except (OSError, ValueError):
                return
            self._stop.wait(self._interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kb


@dataclass
class CookRun:
    seconds: float
    peak_rss_kb: int
    job: Path

    def rate(self, items: int) -> float:
        return items / self.seconds


def cook(space: Workspace) -> CookRun:
    started = time.perf_counter()
    proc = space.start("cook", "workflow.yaml")
    rss = PeakRss(proc.pid)
    code = proc.wait()
    seconds = time.perf_counter() - started
    peak = rss.stop()
    if code != 0:
        raise RuntimeError(f"prodigy cook of {space.items} items exited with code {code}")
    return CookRun(seconds, peak, space.job_dir())


def count_growing(path: Path, needle: bytes) -> Iterator[int]:
    """How many times `needle` occurs in a growing file so far, each time it is asked."""
    seen, offset, tail = 0, 0, b""
    while True:
        try:
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        data = tail + chunk
        cut = data.rfind(b"\n") + 1
        seen += data[:cut].count(needle)
        tail = data[cut:]
        yield seen


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.001)


@dataclass
class ResumeRun:
    latency_s: float
    run_peak_rss_kb: int  # of the first run, killed at half way
    resume_peak_rss_kb: int
    resume_seconds: float
    audit: Audit


@dataclass
class Audit:
    """Every item once: what the agents' own log (`ran`) says against the journal."""

    items: int
    finished_at_kill: int  # items the journal had recorded as succeeded when the run was killed
    never_ran: int  # items no agent ran (lost)
    finished_then_rerun: int  # recorded as succeeded before the kill, run again by the resume
    rerun_unfinished: int  # in flight at the kill (not recorded), run again: expected, ≤ parallel
    ran_twice_in_resume: int
    all_succeeded: bool  # the journal at the end says every item succeeded

    @property
    def ok(self) -> bool:
        return (
            self.never_ran == self.finished_then_rerun == self.ran_twice_in_resume == 0
            and self.all_succeeded
        )


def succeeded_items(job: Path) -> set[int]:
    state = replay_journal(job / "journal.jsonl", compact=True)
    return {i for i, status in enumerate(state.status) if status == ItemStatus.SUCCEEDED}


def audit(space: Workspace, job: Path, resumed_pid: int, done: set[int]) -> Audit:
    by_first: set[int] = set()
    by_resume: set[int] = set()
    twice = 0
    with (space.repo / "ran").open() as f:
        for line in f:
            pid, n = (int(word) for word in line.split())
            if pid == resumed_pid:
                twice += n in by_resume
                by_resume.add(n)
            else:  # the killed run's, or one of its agents orphaned by the kill (a new parent)
                by_first.add(n)
    final = succeeded_items(job)
    return Audit(
        items=space.items,
        finished_at_kill=len(done),
        never_ran=space.items - len(by_first | by_resume),
        finished_then_rerun=len(done & by_resume),
        rerun_unfinished=len((by_first - done) & by_resume),
        ran_twice_in_resume=twice,
        all_succeeded=len(final) == space.items,
    )


def kill_half_way_then_resume(space: Workspace, timeout: float) -> ResumeRun:
    """Cook, SIGKILL the whole process group once half the items succeeded, resume to the end."""
    proc = space.start("cook", "workflow.yaml")
    rss = PeakRss(proc.pid)
    job: list[Path] = []

    def job_found() -> bool:
        if not job:
            found = list(space.home.glob("state/*/mapreduce/jobs/*/events.jsonl"))
            job.extend(p.parent for p in found)
        return bool(job)

    wait_until(job_found, timeout, "the job directory")
    completed = count_growing(job[0] / "events.jsonl", b'"type":"agent_completed"')
    half = space.items // 2
    wait_until(lambda: next(completed) >= half or proc.poll() is not None, timeout, "half way")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_peak = rss.stop()
    done = succeeded_items(job[0])
    (space.repo / "resumed").touch()
    marker = space.repo / "first-agent"
    started = time.perf_counter()
    resumed = space.start("resume-job", job[0].name)
    resume_rss = PeakRss(resumed.pid)
    ours = f"{resumed.pid}\n"

    def first_agent() -> bool:
        try:
            return ours in marker.read_text()
        except FileNotFoundError:
            return False

    wait_until(lambda: first_agent() or resumed.poll() is not None, timeout, "a first agent")
    latency = time.perf_counter() - started
    if not first_agent():
        raise RuntimeError(f"resume-job exited with code {resumed.returncode} before any agent")
    code = resumed.wait(timeout=timeout)
    resume_seconds = time.perf_counter() - started
    peak = resume_rss.stop()
    if code != 0:
        raise RuntimeError(f"resume-job exited with code {code}")
    return ResumeRun(
        latency, run_peak, peak, resume_seconds, audit(space, job[0], resumed.pid, done)
    )


def job_bytes(job: Path) -> dict[str, int]:
    """Bytes per file of the job directory (checkpoint files together)."""
    sizes: dict[str, int] = {}
    for path in job.rglob("*"):
        if path.is_file() and not path.is_symlink():
            name = "checkpoint-v*.json" if path.name.startswith("checkpoint-v") else path.name
            sizes[name] = sizes.get(name, 0) + path.stat().st_size
    return sizes


# ---- the baselines -----------------------------------------------------------------------------


def time_parallel(parallel: str, root: Path, items: int, jobs: int) -> float:
    joblog = root / "joblog.txt"
    joblog.unlink(missing_ok=True)
    arguments = "".join(f"{n}\n" for n in range(items)).encode()
    started = time.perf_counter()
    subprocess.run(
        [parallel, "-j", str(jobs), "--joblog", str(joblog), "true"],
        input=arguments,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def time_bare_loop(items: int, jobs: int) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE_LOOP, str(items), str(jobs)], check=True)
    return time.perf_counter() - started


# ---- the sections ------------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def table(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        self.lines += ["", f"### {title}", ""]
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---" for _ in header) + "|")
        self.lines += ["| " + " | ".join(row) + " |" for row in rows]
        print("\n".join(self.lines[-(len(rows) + 4) :]), flush=True)


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MB"


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.report = Report()
        self._cooked: dict[int, tuple[Workspace, CookRun]] = {}

    def cooked(self, items: int) -> tuple[Workspace, CookRun]:
        """One whole run of `items`, shared by the sections that need it."""
        if items not in self._cooked:
            space = make_workspace(self.tmp, items, TRIVIAL, self.args.parallel)
            print(f"  cook {items:,} items...", file=sys.stderr, flush=True)
            self._cooked[items] = (space, cook(space))
        return self._cooked[items]

    def throughput(self) -> None:
        items, jobs = self.args.items, self.args.parallel
        parallel = find_parallel()
        times: dict[str, list[float]] = {"prodigy": [], "parallel": [], "bare": []}
        runners: dict[str, Callable[[], float]] = {
            "prodigy": lambda: (
                cook(make_workspace(self.tmp, items, TRIVIAL, self.args.parallel)).seconds
            ),
            "parallel": lambda: time_parallel(parallel, self.tmp, items, jobs),
            "bare": lambda: time_bare_loop(items, jobs),
        }
        order = list(runners)
        for n in range(self.args.rounds):
            print(f"  throughput round {n + 1}/{self.args.rounds}...", file=sys.stderr, flush=True)
            for kind in order[n % 3 :] + order[: n % 3]:
                times[kind].append(runners[kind]())
        rate = {kind: items / statistics.median(t) for kind, t in times.items()}
        spread = {kind: f"{items / max(t):.0f}–{items / min(t):.0f}" for kind, t in times.items()}
        to_parallel = rate["prodigy"] / rate["parallel"]
        to_bare = rate["prodigy"] / rate["bare"]
        self.report.table(
            f"Throughput: {items:,} trivial items, {jobs} at a time, median of "
            f"{self.args.rounds} rounds (load average {os.getloadavg()[0]:.1f})",
            ["runner", "items/s (median)", "range", "prodigy's ratio", "target", "met"],
            [
                ["prodigy cook (fdatasync per completion)", f"{rate['prodigy']:.0f}",
                 spread["prodigy"], "", "", ""],
                ["GNU parallel --joblog", f"{rate['parallel']:.0f}", spread["parallel"],
                 f"{to_parallel:.2f}×", "≥ 2.5×", verdict(to_parallel >= 2.5)],
                ["bare asyncio spawn loop", f"{rate['bare']:.0f}", spread["bare"],
                 f"{to_bare:.0%}", "≥ 75%", verdict(to_bare >= 0.75)],
            ],
        )  # fmt: skip

    def scaling(self) -> None:
        small, big = self.args.scaling
        rows = []
        rates = {}
        for items in (small, big):
            _, run = self.cooked(items)
            rates[items] = run.rate(items)
            rows.append([f"{items:,}", f"{run.seconds:.1f} s", f"{rates[items]:.0f}", "", "", ""])
        ratio = rates[big] / rates[small]
        rows[-1][3:] = [f"{ratio:.0%}", "≥ 90%", verdict(ratio >= 0.9)]
        self.report.table(
            "Scaling: items/s by job size (one run each)",
            ["items", "wall", "items/s", "of the small job's rate", "target", "met"],
            rows,
        )

    def resume(self) -> None:
        rows, audits = [], []
        targets = {100_000: 1.0, 1_000_000: 3.0}
        for items in self.args.resume:
            space = make_workspace(self.tmp, items, MARKED, self.args.parallel)
            print(f"  kill {items:,} items at half way, resume...", file=sys.stderr, flush=True)
            run = kill_half_way_then_resume(space, self.args.timeout)
            self._resumed[items] = run
            target = targets.get(items, 1.0 if items <= 100_000 else 3.0)
            rows.append(
                [
                    f"{items:,}",
                    f"{run.latency_s:.2f} s",
                    f"< {target:g} s",
                    verdict(run.latency_s < target),
                    mb(run.run_peak_rss_kb),
                    mb(run.resume_peak_rss_kb),
                ]
            )
            a = run.audit
            audits.append(
                [
                    f"{items:,}",
                    f"{a.finished_at_kill:,}",
                    f"{run.resume_seconds:.0f} s",
                    f"{a.never_ran}",
                    f"{a.finished_then_rerun}",
                    f"{a.ran_twice_in_resume}",
                    f"{a.rerun_unfinished}",
                    "yes" if a.all_succeeded else "**no**",
                    verdict(a.ok),
                ]
            )
            shutil.rmtree(space.root, ignore_errors=True)
        self.report.table(
            "Resume latency: `resume-job` start → first new agent, killed at 50%",
            ["items", "latency", "target", "met", "peak RSS: run to 50%", "peak RSS: resume"],
            rows,
        )
        self.report.table(
            "Every item once: the agents' own log against the journal, killed at 50%",
            [
                "items",
                "succeeded at the kill",
                "resume to the end",
                "never ran",
                "finished, then run again",
                "run twice by the resume",
                "in flight at the kill, run again",
                "journal: all succeeded",
                "every item once",
            ],
            audits,
        )

    def memory(self) -> None:
        rows = []
        baseline: dict[str, int] = {}
        for items in self.args.memory:
            _, run = self.cooked(items)
            if items not in self._resumed:
                space = make_workspace(self.tmp, items, MARKED, self.args.parallel)
                print(f"  kill {items:,} at half way, resume...", file=sys.stderr, flush=True)
                self._resumed[items] = kill_half_way_then_resume(space, self.args.timeout)
                shutil.rmtree(space.root, ignore_errors=True)
            resumed = self._resumed[items]
            for phase, kb in (("run", run.peak_rss_kb), ("resume", resumed.resume_peak_rss_kb)):
                baseline.setdefault(phase, kb)
                growth = kb / baseline[phase]
                ok = kb < 150 * 1024 and growth <= 1.5
                rows.append(
                    [f"{items:,}", phase, mb(kb), f"{growth:.2f}×", "< 150 MB, ≤ 1.5×", verdict(ok)]
                )
        self.report.table(
            "Coordinator peak RSS (VmHWM of the prodigy process)",
            ["items", "during", "peak RSS", f"of {self.args.memory[0]:,} items'", "target", "met"],
            rows,
        )

    def size(self) -> None:
        items = self.args.size
        _, run = self.cooked(items)
        sizes = job_bytes(run.job)
        total = sum(sizes.values())
        rows = [
            [name, f"{size:,}", f"{size / items:.0f}", "", ""]
            for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])
        ]
        per_item = total / items
        rows.append(["**all**", f"{total:,}", f"{per_item:.0f}", "< 400", verdict(per_item < 400)])
        self.report.table(
            f"Job directory after {items:,} items",
            ["file", "bytes", "bytes/item", "target", "met"],
            rows,
        )

    def run(self, sections: list[str]) -> None:
        self._resumed: dict[int, ResumeRun] = {}
        for section in sections:
            getattr(self, section)()
        print("\n".join(["", "## All results", *self.report.lines]))


def sizes(text: str) -> list[int]:
    return [int(part.replace("_", "").replace(",", "")) for part in text.split("/") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 items only")
    parser.add_argument("--items", type=int, default=2000, help="throughput: items per round")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scaling", default="1000/100000", help="scaling: small/big")
    parser.add_argument("--resume", default="100000/1000000", help="resume: sizes")
    parser.add_argument("--memory", default="10000/100000/1000000", help="memory: sizes")
    parser.add_argument("--size", type=int, default=100_000, help="size: items")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per wait")
    args = parser.parse_args()
    if args.quick:
        args.scaling, args.resume, args.memory, args.size = (
            "1000/10000",
            "1000/10000",
            "1000/10000",
            10_000,
        )
    args.scaling = sizes(args.scaling)
    args.resume = sizes(args.resume)
    args.memory = sizes(args.memory)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if len(args.scaling) != 2:
        parser.error("--scaling takes two sizes, small/big (e.g. 1000/100000)")
    with tempfile.TemporaryDirectory(prefix="prodigy-scale-") as tmp:
        Bench(args, Path(tmp)).run(chosen)


if __name__ == "__main__":
    main()
