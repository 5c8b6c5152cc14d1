"""Agents on a real Dask cluster: a scheduler and two workers on loopback, started as
subprocesses for this module. The coordinator stays one process; agents run on the workers,
exactly once in the record, and nothing outlives a coordinator that is interrupted or killed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Env, checkpoint_items, job_id_of, wait_for

pytest.importorskip("distributed")

DASK = str(Path(sys.executable).parent / "dask")


@dataclass
class Cluster:
    address: str  # HOST:PORT
    workers: list[subprocess.Popen[bytes]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def started_workers(scheduler_file: Path) -> int:
    try:
        info = json.loads(scheduler_file.read_text())
    except (OSError, ValueError):
        return 0
    return len(info.get("workers", {}))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    here = tmp_path_factory.mktemp("dask")
    port = free_port()
    common = ["--no-dashboard"]
    scheduler = subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), *common],
        cwd=here,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    workers = [
        subprocess.Popen(
            [DASK, "worker", f"tcp://{address}", "--nthreads", "2", "--name", f"w{n}", *common],
            cwd=here,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for n in range(2)
    ]
    try:
        wait_for(lambda: worker_count(address) == 2, timeout=60, what="two Dask workers")
        yield Cluster(address, workers)
    finally:
        for proc in [*workers, scheduler]:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def worker_count(address: str) -> int:
    code = (
        "from distributed import Client\n"
        f"c = Client('tcp://{address}', timeout=5)\n"
        "print(len(c.scheduler_info()['workers']))\n"
        "c.close()\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return 0
    return int(done.stdout.strip() or 0) if done.returncode == 0 else 0


WORKFLOW = """\
name: on-dask
mode: mapreduce
{executor}
# Workers do not get the coordinator's environment: only the workflow's env and PRODIGY_*.
env:
  LOGS: "{logs}"
map:
  input: items.json
  isolation: none
  max_parallel: {parallel}
  agent_template:
    - shell: >-
        echo ${{item_id}} $PRODIGY_WORKER $PPID >> $LOGS/started.log;
        touch $LOGS/running-${{item_id}};
        ls $LOGS | grep -c '^running-' >> $LOGS/concurrency.log;
        while [ -e $LOGS/hold-${{item_id}} ]; do sleep 0.05; done;
        sleep {sleep};
        rm -f $LOGS/running-${{item_id}};
        echo ${{item_id}} $PRODIGY_WORKER >> $LOGS/runs.log
"""


@pytest.fixture
def job(world: Env, tmp_path: Path) -> Env:
    logs = tmp_path / "logs"
    logs.mkdir()
    world.env["LOGS"] = str(logs)
    world.env["PRODIGY_INTERRUPT_GRACE"] = "1"
    return world


def write(w: Env, n: int, parallel: int = 4, sleep: float = 0, executor: str = "") -> None:
    w.write_json("items.json", list(range(n)))
    text = WORKFLOW.format(executor=executor, parallel=parallel, sleep=sleep, logs=logs(w))
    w.write("wf.yaml", text)


def logs(w: Env) -> Path:
    return Path(w.env["LOGS"])


def runs(w: Env) -> list[list[str]]:
    path = logs(w) / "runs.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def started(w: Env) -> list[list[str]]:
    path = logs(w) / "started.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_every_item_runs_once_on_a_worker(job: Env, cluster: Cluster) -> None:
    write(job, 12)
    result = job.run("cook", "wf.yaml", "--executor", f"dask://{cluster.address}")
    assert result.returncode == 0, result.stdout + result.stderr
    done = runs(job)
    assert Counter(item for item, _ in done) == {f"item_{n}": 1 for n in range(12)}
    workers = {worker for _, worker in done}
    assert workers and all(w.startswith("tcp://127.0.0.1:") for w in workers)
    coordinator_pids = {line[2] for line in started(job)}
    assert str(os.getpid()) not in coordinator_pids


def test_the_workflow_names_the_cluster_and_the_flag_wins(job: Env, cluster: Cluster) -> None:
    write(job, 3, executor=f'executor: {{dask: "{cluster.address}"}}')
    on_cluster = job.run("cook", "wf.yaml")
    assert on_cluster.returncode == 0, on_cluster.stdout + on_cluster.stderr
    assert all(len(line) == 2 for line in runs(job)), "PRODIGY_WORKER set on the cluster"
    (logs(job) / "runs.log").unlink()
    local = job.run("cook", "wf.yaml", "--executor", "local")
    assert local.returncode == 0, local.stdout + local.stderr
    assert all(len(line) == 1 for line in runs(job)), "no worker: it ran locally"


def test_max_parallel_caps_items_in_flight_across_the_cluster(job: Env, cluster: Cluster) -> None:
    write(job, 8, parallel=2, sleep=0.3)
    result = job.run("cook", "wf.yaml", "--executor", f"dask://{cluster.address}")
    assert result.returncode == 0, result.stdout + result.stderr
    seen = [int(n) for n in (logs(job) / "concurrency.log").read_text().split()]
    assert max(seen) <= 2, "four worker threads, but never more than max_parallel agents"


def test_a_worker_killed_mid_item_and_the_job_still_finishes_once_each(
    job: Env, cluster: Cluster
) -> None:
    write(job, 4, parallel=4)
    (logs(job) / "hold-item_0").touch()
    proc = job.popen("cook", "wf.yaml", "--executor", f"dask://{cluster.address}")
    wait_for(lambda: any(line[0] == "item_0" for line in started(job)), what="item_0 to start")
    worker_pid = next(int(line[2]) for line in started(job) if line[0] == "item_0")
    os.kill(worker_pid, signal.SIGKILL)  # the worker process running item_0
    (logs(job) / "hold-item_0").unlink()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    # At-least-once from the cluster (an item whose result was still on the dead worker runs
    # again), exactly once in the record, and the lost run is not a failed attempt.
    assert set(line[0] for line in runs(job)) == {f"item_{n}" for n in range(4)}
    job_id = job_id_of(out)
    latest = json.loads((job.job_dir(job_id) / "latest.json").read_text())
    items = checkpoint_items(job.job_dir(job_id), latest)
    assert [(i["status"], i["attempts"]) for i in items] == [("succeeded", 1)] * 4
    journal = (job.job_dir(job_id) / "journal.jsonl").read_text().splitlines()
    ended = [json.loads(line) for line in journal if '"attempt_ended"' in line]
    assert sorted(record["index"] for record in ended) == [0, 1, 2, 3]
    assert json.loads(job.run("dlq", "list", job_id, "--json").stdout) == []
    wait_for(lambda: worker_count(cluster.address) == 2, timeout=60, what="the worker back")


def agents_gone(w: Env) -> bool:
    pids = [int(p) for p in (logs(w) / "agent-pids").read_text().split()]
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return not alive


@pytest.mark.parametrize("how", ["sigkill", "ctrl-c"])
def test_agents_on_workers_end_with_the_coordinator_and_resume_finishes(
    job: Env, cluster: Cluster, how: str
) -> None:
    write(job, 6, parallel=3)
    workflow = (
        (job.repo / "wf.yaml")
        .read_text()
        .replace("touch $LOGS/running-", "echo $$ >> $LOGS/agent-pids; touch $LOGS/running-")
    )
    job.write("wf.yaml", workflow)
    for n in range(3, 6):
        (logs(job) / f"hold-item_{n}").touch()
    proc = job.popen("cook", "wf.yaml", "--executor", f"dask://{cluster.address}")
    wait_for(lambda: len(runs(job)) >= 3 and len(started(job)) >= 6, what="three held agents")
    if how == "sigkill":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    if how == "ctrl-c":
        assert proc.returncode == 130, out + err
    wait_for(lambda: agents_gone(job), timeout=15, what="the agents on the workers to end")
    job_id = next(p.name for p in job.jobs_dir().iterdir())
    # Finished = recorded as succeeded; such an item must never run again.
    journal = (job.job_dir(job_id) / "journal.jsonl").read_text().splitlines()
    recorded = [json.loads(line) for line in journal if '"attempt_ended"' in line]
    finished = {f"item_{r['index']}" for r in recorded if r["outcome"] == "succeeded"}
    runs_before = Counter(line[0] for line in runs(job))
    for n in range(3, 6):
        (logs(job) / f"hold-item_{n}").unlink()

    resumed = job.run("resume-job", job_id, "--executor", f"dask://{cluster.address}")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    counts = Counter(line[0] for line in runs(job))
    assert set(counts) == {f"item_{n}": 1 for n in range(6)}.keys()
    assert finished, "some items were recorded before the coordinator went"
    assert all(counts[item] == runs_before[item] for item in finished), "none ran again"


def test_an_unreachable_scheduler_is_one_sentence_and_no_job(job: Env) -> None:
    write(job, 2)
    result = job.run(
        "cook",
        "wf.yaml",
        "--executor",
        f"dask://127.0.0.1:{free_port()}",
        PRODIGY_DASK_CONNECT_TIMEOUT="2",
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be reached" in lines[0] and "127.0.0.1" in lines[0]
    assert not job.jobs_dir().exists() or not list(job.jobs_dir().iterdir())


def test_an_unknown_scheme_is_a_usage_error(job: Env) -> None:
    write(job, 2)
    result = job.run("cook", "wf.yaml", "--executor", "ray://somewhere:1")
    assert result.returncode == 2
    assert "local or dask://HOST:PORT" in result.stderr and "Traceback" not in result.stderr


def test_without_the_extra_the_install_command_is_named(job: Env, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "distributed"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    write(job, 2)
    result = job.run(
        "cook",
        "wf.yaml",
        "--executor",
        "dask://127.0.0.1:1",
        PYTHONPATH=str(tmp_path / "shadow"),
    )
    assert result.returncode == 1
    assert "pip install 'prodigy[dask]'" in result.stderr


def test_worktree_isolation_is_refused_on_a_cluster(job: Env, cluster: Cluster) -> None:
    write(job, 2)
    job.write("wf.yaml", (job.repo / "wf.yaml").read_text().replace("none", "worktree"))
    for args in (["add", "."], ["-c", "user.email=u@x", "-c", "user.name=u", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=job.repo, check=True)
    result = job.run("cook", "wf.yaml", "--executor", f"dask://{cluster.address}")
    assert result.returncode == 2
    assert "isolation" in result.stderr and "Traceback" not in result.stderr


def test_agents_run_in_the_working_dir_the_workflow_names(
    job: Env, cluster: Cluster, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "seen-by-workers"
    elsewhere.mkdir()
    executor = f'executor: {{dask: "{cluster.address}", working_dir: "{elsewhere}"}}'
    write(job, 2, executor=executor)
    workflow = (
        (job.repo / "wf.yaml")
        .read_text()
        .replace(
            "echo ${item_id} $PRODIGY_WORKER >> $LOGS/runs.log",
            "echo ${item_id} $(pwd) >> $LOGS/runs.log",
        )
    )
    job.write("wf.yaml", workflow)
    result = job.run("cook", "wf.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(runs(job)) == [["item_0", str(elsewhere)], ["item_1", str(elsewhere)]]
