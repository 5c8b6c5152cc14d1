"""A disk that fills up mid-run: one clear sentence, exit 1, nothing recorded lost, and the job
resumes once there is space again. Needs root to mount a small tmpfs (skipped otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Env, job_id_of

WORKFLOW = """\
name: disk
mode: mapreduce
map:
  input: items.json
  isolation: none
  max_parallel: 4
  agent_template:
    - shell: "head -c 3000 /dev/zero | tr '\\\\0' x; echo ${{item_id}} >> runs.log"
checkpoint:
  interval_items: {interval}
"""


@pytest.fixture
def tiny_home(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    home = tmp_path / "tiny-home"
    home.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(home)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


@pytest.mark.parametrize("interval", [1, 100000], ids=["checkpoint-fills-it", "journal-fills-it"])
def test_a_full_disk_stops_the_run_with_one_sentence_and_the_job_resumes(
    world: Env, tiny_home: Path, interval: int
) -> None:
    world.write_json("items.json", list(range(300)))
    world.write("wf.yaml", WORKFLOW.format(interval=interval))
    world.env["PRODIGY_HOME"] = str(tiny_home)

    full = world.run("cook", "wf.yaml")

    assert full.returncode == 1, full.stdout + full.stderr
    assert "No space left on device" in full.stderr and "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if "No space left" in line]
    assert len(errors) == 1, full.stderr
    job = job_id_of(full.stdout)
    state_dir = tiny_home / "state" / world.repo.name / "mapreduce" / "jobs" / job
    # Only whole lines count: the write the disk cut short left a torn last line, which is
    # never acknowledged (and resume drops it).
    journal = (state_dir / "journal.jsonl").read_text().split("\n")[:-1]
    recorded = {json.loads(line)["index"] for line in journal if '"attempt_ended"' in line}
    assert recorded, "some completions were recorded before the disk filled"

    subprocess.run(["mount", "-o", "remount,size=20m", str(tiny_home)], check=True)
    resumed = world.run("resume-job", job)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = (world.repo / "runs.log").read_text().split()
    assert set(runs) == {f"item_{n}" for n in range(300)}
    for index in recorded:
        assert runs.count(f"item_{index}") == 1, "a recorded item ran again"
