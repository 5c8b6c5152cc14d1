"""The job directory: ids, atomic writes, checkpoint retention, finding jobs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prodigy.errors import JobNotFound
from prodigy.store import (
    JOB_ID_PATTERN,
    atomic_write,
    create_job_dir,
    find_job,
    list_jobs,
    write_checkpoint,
)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PRODIGY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_ids_are_unique_within_a_second_and_across_repositories() -> None:
    made = [create_job_dir("repo-a" if n % 2 else "repo-b") for n in range(6)]
    ids = [job.job_id for job in made]
    assert len(set(ids)) == 6
    assert all(JOB_ID_PATTERN.match(job_id) for job_id in ids)
    assert {find_job(job_id).path for job_id in ids} == {job.path for job in made}
    # Oldest first: the order they were created in (suffixes sort as numbers, -10 after -9).
    assert [j.job_id for j in list_jobs("repo-a")] == [j.job_id for j in made if j.repo == "repo-a"]


def test_ids_are_race_free_between_processes(home: Path) -> None:
    code = "from prodigy.store import create_job_dir; print(create_job_dir('repo').job_id)"
    env = {**os.environ, "PRODIGY_HOME": str(home)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    ids = [p.communicate()[0].strip() for p in procs]
    assert len(set(ids)) == 6, ids
    assert all(re.fullmatch(r"mapreduce-\d{8}-\d{6}(-\d+)?", i) for i in ids)


def test_unknown_job_is_not_found() -> None:
    with pytest.raises(JobNotFound, match="Checkpoint not found"):
        find_job("mapreduce-20240101-123456")
    with pytest.raises(JobNotFound):
        find_job("../..")


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    atomic_write(target, b"old")
    atomic_write(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_checkpoint_retention_keeps_the_newest_and_points_latest_at_it() -> None:
    job = create_job_dir("repo")
    for version in range(6):
        write_checkpoint(job, version, f'{{"v": {version}}}'.encode(), keep=3)
    assert job.checkpoint_versions() == [5, 4, 3]
    assert job.latest_version() == 5
    assert os.readlink(job.latest) == "checkpoint-v5.json"


def test_latest_json_missing_or_dangling_is_damage_but_not_before_the_first_checkpoint() -> None:
    job = create_job_dir("repo")
    assert job.latest_problem() is None  # a job killed before its first checkpoint
    assert "is missing (checkpoint files on disk: none)" in (job.latest_problem(True) or "")
    for version in range(3):
        write_checkpoint(job, version, b"{}", keep=3)
    assert job.latest_problem() is None
    job.checkpoint(2).unlink()
    assert (
        job.latest_problem() == f"{job.latest} points to checkpoint-v2.json, which does not exist"
    )
    job.latest.unlink()
    assert job.latest_problem() == f"{job.latest} is missing (checkpoint files on disk: v1, v0)"
