"""Power loss under a real job: random cuts of a lazyfs mount holding PRODIGY_HOME.

A short version of `benchmarks/powerloss.py` (which runs 200 cuts): a few cuts spread over
cook and resume, each followed by a remount of only what was durable, the checks of
`powercut.py`, and a resume; in the end every job completed with nothing lost, nothing
started again after it was recorded, and every file readable. Also the filesystem's own
rules, so a bug in lazyfs cannot pass for a durable prodigy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from lazyfs import Mount, fuse_unavailable

pytestmark = pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    made = Mount(tmp_path / "backing", tmp_path / "mnt", seed=7)
    made.start()
    yield made
    made.stop()


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_only_what_was_made_durable_survives_a_cut(mount: Mount) -> None:
    m = mount.mountpoint
    (m / "d").mkdir()
    fsync(m)
    (m / "d" / "synced").write_text("kept")
    fsync(m / "d" / "synced")
    (m / "d" / "named-only").write_text("data never fsync'd")
    fsync(m / "d")
    (m / "d" / "data-only").write_text("name never fsync'd")
    fsync(m / "d" / "data-only")
    with open(m / "d" / "synced", "a") as f:
        f.write(" and lost")
    tmp = m / "d" / ".tmp"
    tmp.write_text("new")
    fsync(tmp)
    os.replace(tmp, m / "d" / "replaced")  # rename not made durable
    (m / "e").mkdir()  # the root is not fsync'd again
    assert sorted(os.listdir(m / "d")) == ["data-only", "named-only", "replaced", "synced"]

    mount.cut()
    with pytest.raises(OSError):
        os.listdir(m)  # the power is off
    mount.restart()

    assert os.listdir(m) == ["d"]
    assert sorted(os.listdir(m / "d")) == ["named-only", "synced"]
    assert (m / "d" / "synced").read_text() == "kept"
    assert (m / "d" / "named-only").read_text() == ""


def test_a_clean_unmount_keeps_everything(mount: Mount) -> None:
    (mount.mountpoint / "f").write_text("pending")
    os.symlink("f", mount.mountpoint / "link")
    mount.restart()
    assert os.readlink(mount.mountpoint / "link") == "f"
    assert (mount.mountpoint / "f").read_text() == "pending"


@pytest.mark.timeout(150)  # about 15 s alone; more on a loaded machine
def test_random_power_cuts_lose_nothing_and_repeat_nothing(tmp_path: Path) -> None:
    from powercut import PowerCuts

    cuts = PowerCuts(tmp_path, items=6, seed=11)
    tally = cuts.run(4)
    report = "\n".join([tally.table(), *tally.lost, *tally.repeated, *tally.unreadable])
    assert tally.ok, report + "\n" + "\n".join(tally.failures)
    assert tally.cuts == 4
    assert tally.jobs >= 1, report


def test_a_new_job_directory_survives_a_power_cut(
    mount: Mount, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: `create_job_dir` made state/{repo}/mapreduce/jobs/{id} without fsyncing the
    # directories above, so a power loss took the whole job, fsync'd journal and all.
    from prodigy.store import create_job_dir

    monkeypatch.setenv("PRODIGY_HOME", str(mount.mountpoint / "home"))
    job = create_job_dir("repo")
    relative = job.path.relative_to(mount.mountpoint)
    mount.cut()
    mount.restart()
    assert (mount.mountpoint / relative).is_dir()
