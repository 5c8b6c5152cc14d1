"""Resume latency and coordinator memory at a size too big to run whole here (1,000,000 items).

Running a million trivial agents takes most of an hour on 2 cores, so this script measures the
two things that depend on the job's size, not on running every agent:

1. **run**: a real `prodigy cook` of N items (items from a JSON-lines file, streamed into the
   job), SIGKILLed with its process group once `--run-items` agents have been recorded. Peak RSS
   (VmHWM of the coordinator) covers freezing all N items and the start of the map phase.
2. **half way**: the same job is brought to 50% with prodigy's own writers, as a run would have
   left it: `succeeded` records appended to its journal (`Journal.append_now`) for the items up
   to N/2, then a checkpoint of that state written as the checkpoint writer writes it. This
   stands in for the agents in between, which would each do the same.
3. **resume**: `prodigy resume-job` of that job: the time from its start to its first new agent
   (the agent appends its parent's pid, the resumed coordinator's, to a file), and its peak RSS
   over `--resume-seconds` of running, then SIGKILL.

    python benchmarks/million.py --items 1000000
    python benchmarks/million.py --items 100000 --items 10000   # several sizes, side by side

`benchmarks/scale.py` measures the same with whole runs (hours at a million items).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from prodigy.checkpoint import JobInfo, checkpoint_document, encode_checkpoint
from prodigy.job import ItemsFile, read_job_metadata
from prodigy.journal import Journal, replay_journal
from prodigy.state import Attempt, AttemptEnded, ItemStatus
from prodigy.store import JobDir, write_checkpoint

WORKFLOW = """\
name: million
mode: mapreduce
map:
  input: items.jsonl
  isolation: none
  max_parallel: 8
  agent_template:
    - shell: "[ -e resumed ] && echo $PPID >> first-agent; true"
"""


def prodigy() -> str:
    return str(Path(sys.executable).with_name("prodigy"))


def peak_rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def recorded(journal: Path) -> int:
    try:
        with journal.open("rb") as f:
            return sum(1 for line in f if b'"succeeded"' in line or b'"attempt_ended"' in line)
    except FileNotFoundError:
        return 0


def run_then_kill(root: Path, env: dict[str, str], run_items: int) -> tuple[JobDir, float]:
    proc = subprocess.Popen(
        [prodigy(), "cook", "wf.yaml"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    jobs = Path(env["PRODIGY_HOME"]) / "state" / root.name / "mapreduce" / "jobs"
    peak = 0.0
    while True:
        peak = max(peak, peak_rss_mb(proc.pid))
        found = list(jobs.glob("*/journal.jsonl")) if jobs.exists() else []
        if found and recorded(found[0]) >= run_items:
            break
        if proc.poll() is not None:
            sys.exit("the run ended before it could be killed; raise --items")
        time.sleep(0.05)
    peak = max(peak, peak_rss_mb(proc.pid))
    kill_group(proc)
    return JobDir(found[0].parent), peak


def bring_to_half(job: JobDir) -> int:
    """Record the items up to N/2 as succeeded and write the checkpoint a run would have."""
    state = replay_journal(job.journal, compact=True)
    total = state.item_count or 0
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    todo = [i for i in range(total // 2) if state.status[i] != ItemStatus.SUCCEEDED]
    journal = Journal(job.journal, state.journal_bytes)
    for start in range(0, len(todo), 50_000):
        journal.append_now(
            [
                AttemptEnded(i, "succeeded", Attempt(1, True, now, 0.003, exit_code=0))
                for i in todo[start : start + 50_000]
            ]
        )
    journal.close()
    state = replay_journal(job.journal, compact=True)
    meta = read_job_metadata(job)
    info = JobInfo(meta.job_id, meta.workflow_path, meta.workflow_hash, {}, meta.workdir, 0, "")
    items = ItemsFile(job.items)
    document = checkpoint_document(state, info, items.id_of)
    items.close()
    write_checkpoint(job, state.version, encode_checkpoint(document), 3)
    return state.version


def resume(root: Path, env: dict[str, str], job: JobDir, seconds: float) -> tuple[float, float]:
    (root / "resumed").touch()
    marker = root / "first-agent"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [prodigy(), "resume-job", job.job_id],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    latency = None
    peak = 0.0
    wanted = str(proc.pid)
    while time.perf_counter() - started < seconds or latency is None:
        peak = max(peak, peak_rss_mb(proc.pid))
        if latency is None and marker.exists() and wanted in marker.read_text().split():
            latency = time.perf_counter() - started
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    peak = max(peak, peak_rss_mb(proc.pid))
    kill_group(proc)
    if latency is None:
        sys.exit("the resumed run started no agent")
    return latency, peak


def measure(items: int, run_items: int, resume_seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="prodigy-million-") as tmp:
        root = Path(tmp) / "repo"
        root.mkdir()
        with (root / "items.jsonl").open("w") as f:
            f.writelines(f'{{"n": {i}}}\n' for i in range(items))
        (root / "wf.yaml").write_text(WORKFLOW)
        env = {**os.environ, "PRODIGY_HOME": str(Path(tmp) / "home")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        job, run_peak = run_then_kill(root, env, run_items)
        version = bring_to_half(job)
        latency, resume_peak = resume(root, env, job, resume_seconds)
        return {
            "items": items,
            "half": version,
            "run_rss": run_peak,
            "resume_latency": latency,
            "resume_rss": resume_peak,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, action="append", help="job size (repeatable)")
    parser.add_argument("--run-items", type=int, default=2000, help="agents before the kill")
    parser.add_argument("--resume-seconds", type=float, default=15.0)
    args = parser.parse_args()
    sizes = args.items or [1_000_000]
    rows = [measure(n, args.run_items, args.resume_seconds) for n in sizes]
    print("| items | run: peak RSS | resume at 50%: first new agent | resume: peak RSS |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['items']:,.0f} | {r['run_rss']:.0f} MB | {r['resume_latency']:.2f} s "
            f"| {r['resume_rss']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
