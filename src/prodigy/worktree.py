"""Git worktree isolation (`map.isolation: worktree`): a workspace whose setup and reduce run
in the job's parent worktree (branch `prodigy/<job_id>`) and whose every agent attempt runs in
a child worktree on a branch of its own, merged back into the parent one merge at a time.

Exactly once: a merge commit carries trailers naming job, item and attempt, and `integrate`
first asks git whether the attempt's branch already landed (a crash between the merge and its
record), so running it again after any crash never merges twice. Failed attempts' worktrees
and branches are kept (their DLQ entry names them); only merged branches are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import msgspec

from prodigy import test_pause
from prodigy.events import (
    AgentMerged,
    EventLog,
    MergeConflict,
    WorktreeCreated,
    WorktreeRemoved,
)
from prodigy.git import Git, GitError
from prodigy.items import WorkItem
from prodigy.job import JobMetadata
from prodigy.state import Attempt, Spend, error_signature
from prodigy.store import prodigy_home
from prodigy.workspace import Place, SharedWorkspace, Workspace

INCLUDE_FILE = ".worktreeinclude"
# Seconds a shared git lock file may stay before it counts as left by a dead git.
STALE_LOCK_S = 3.0
TRAILER_JOB = "Prodigy-Job"
TRAILER_ITEM = "Prodigy-Item"
TRAILER_ATTEMPT = "Prodigy-Attempt"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def parent_branch(job_id: str) -> str:
    return f"prodigy/{job_id}"


def item_slug(item: WorkItem) -> str:
    """An item id fit for a path and a branch name; the index keeps cleaned ids apart."""
    cleaned = _UNSAFE.sub("_", item.id).strip("._-")[:80]
    return (
        cleaned
        if cleaned == item.id and not cleaned.endswith(".lock")
        else (f"{cleaned or 'item'}-{item.index}")
    )


def agent_branch(job_id: str, item: WorkItem, attempt: int) -> str:
    return f"{agents_prefix(job_id)}{item_slug(item)}-a{attempt}"


def worktrees_root(repo_name: str) -> Path:
    return prodigy_home() / "worktrees" / repo_name


def parent_path(repo_name: str, job_id: str) -> Path:
    return worktrees_root(repo_name) / job_id


def agents_prefix(job_id: str) -> str:
    """Every agent branch of the job starts with this (and nothing of another job does)."""
    return f"prodigy-agents/{job_id}/"


def agents_dir(repo_name: str, job_id: str) -> Path:
    # Beside the parent worktree, not in it: the parent must not see them as untracked files.
    return worktrees_root(repo_name) / f"{job_id}.agents"


def merge_message(job_id: str, item: WorkItem, attempt: int) -> str:
    return (
        f"prodigy: merge {item.id} (attempt {attempt})\n\n"
        f"{TRAILER_JOB}: {job_id}\n"
        f"{TRAILER_ITEM}: {json.dumps(item.id)}\n"
        f"{TRAILER_ATTEMPT}: {attempt}\n"
    )


ConflictSteps = Callable[[Path, WorkItem, Attempt], Awaitable[tuple[bool, Spend]]]


class GitWorkspace:
    """The parent worktree for setup and reduce, a child worktree per attempt."""

    def __init__(
        self,
        repo_root: Path,
        repo_name: str,
        job_id: str,
        base_commit: str,
        events: EventLog,
    ) -> None:
        self.git = Git(repo_root)
        self.repo_name = repo_name
        self.job_id = job_id
        self.base_commit = base_commit
        self.events = events
        self.branch = parent_branch(job_id)
        self._root = parent_path(repo_name, job_id)
        self.on_conflict: ConflictSteps | None = None

    @property
    def root(self) -> Path:
        return self._root

    # ---- lifecycle: the parent worktree ----------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.git.ensure_identity()
        await self._drop_stale_ref_locks()
        await self._drop_broken_registrations()
        await self.git.run("worktree", "prune")
        if await self._registered(self._root):
            await self._repair(self._root)
        else:
            if self._root.exists():
                shutil.rmtree(self._root)  # a directory git does not know: a crash's leftover
            self._root.parent.mkdir(parents=True, exist_ok=True)
            if await self.git.ok("rev-parse", "--verify", "--quiet", f"refs/heads/{self.branch}"):
                await self.git.run("worktree", "add", str(self._root), self.branch)
            else:
                await self.git.run(
                    "worktree", "add", "-b", self.branch, str(self._root), self.base_commit
                )
        await self._lock(self._root, f"prodigy job {self.job_id} (parent)")
        await self._copy_included(self._root)
        await self._remove_strays()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.git.run("worktree", "unlock", str(self._root), check=False)

    async def _copy_included(self, target: Path) -> None:
        """Untracked files a worktree needs (`.env`, local config) never reach it through
        git: those named by the patterns of `.worktreeinclude` (gitignore syntax, as Claude
        Code reads it) are copied from the user's repository, unless already there."""
        patterns = self.git.cwd / INCLUDE_FILE
        if not patterns.is_file():
            return
        listing = await self.git.out(
            "ls-files", "--others", "--ignored", f"--exclude-from={patterns}", "-z"
        )
        names = [name for name in listing.split("\0") if name]
        await asyncio.to_thread(_copy_files, self.git.cwd, target, names)

    async def _registered(self, path: Path) -> bool:
        listing = await self.git.out("worktree", "list", "--porcelain")
        return f"worktree {path}" in listing.splitlines()

    async def _lock(self, path: Path, reason: str) -> None:
        # Locked while in use, so that a user's `git worktree prune` cannot take it.
        await self.git.run("worktree", "lock", "--reason", reason, str(path), check=False)

    async def _drop_stale_ref_locks(self) -> None:
        """A git killed with the previous run (a branch deleted after its merge) can leave
        `packed-refs.lock` (or `config.lock`) behind, and every later branch change fails
        (found by the kill soak). A live git holds it for milliseconds; one still there after
        STALE_LOCK_S is a dead git's, and goes. Locks of this job's own refs go at once: the
        job's lock says nobody else works on them."""
        common = Path(await self.git.out("rev-parse", "--path-format=absolute", "--git-common-dir"))
        for mine in (common / "refs" / "heads" / "prodigy-agents" / self.job_id).glob("**/*.lock"):
            mine.unlink(missing_ok=True)
        (common / "refs" / "heads" / f"{self.branch}.lock").unlink(missing_ok=True)
        # Shared by every git of the repository: `config.lock` too, left by a `branch -m`
        # killed half way ("update of config-file failed"; found by the worktree soak).
        shared = [common / "packed-refs.lock", common / "config.lock"]
        for _ in range(int(STALE_LOCK_S / 0.05)):
            if not any(lock.exists() for lock in shared):
                return
            await asyncio.sleep(0.05)
        for lock in shared:
            lock.unlink(missing_ok=True)

    async def _drop_broken_registrations(self) -> None:
        """A `git worktree add` killed half way leaves `.git/worktrees/<name>` without its
        `gitdir`, `commondir` or `HEAD` (or with one still empty), and every later `git
        worktree list` fails ("failed to read .../commondir"; found by the kill soak). Such an
        entry of this job (its `locked` file, written first, names the job) goes, with its
        directory: the attempt was never recorded and runs again. One with no `locked` file
        yet goes once it is STALE_LOCK_S old (a live `worktree add` writes it within
        milliseconds)."""
        common = Path(await self.git.out("rev-parse", "--path-format=absolute", "--git-common-dir"))
        admin = common / "worktrees"
        if not admin.is_dir():
            return
        for entry in admin.iterdir():
            if all(_has_content(entry / name) for name in ("gitdir", "commondir", "HEAD")):
                continue
            locked = entry / "locked"
            try:
                reason = locked.read_text(errors="replace")
            except OSError:
                reason = None
            if reason is not None and f"prodigy job {self.job_id}" not in reason:
                continue  # another job's, or the user's: not ours to touch
            if reason is None and time.time() - entry.stat().st_mtime < STALE_LOCK_S:
                continue
            shutil.rmtree(entry, ignore_errors=True)

    async def _repair(self, path: Path) -> None:
        """What a crash can leave in a worktree: a merge in progress, stale lock files (every
        git process of this job died with it; the job's lock says nobody else runs it)."""
        here = self.git.at(path)
        git_dir = Path(await here.out("rev-parse", "--absolute-git-dir"))
        for lock in git_dir.glob("*.lock"):
            lock.unlink(missing_ok=True)
        if (git_dir / "MERGE_HEAD").exists():
            await here.run("merge", "--abort", check=False)
        elif not await here.ok("diff", "--cached", "--quiet"):
            # A merge killed before it wrote MERGE_HEAD (in its commit hook, say) leaves its
            # result staged. `reset --merge` drops what is staged and keeps unstaged changes.
            await here.run("reset", "--merge", "--quiet", "HEAD", check=False)

    async def _remove_strays(self) -> None:
        """Directories under the job's agents folder that git does not know as worktrees."""
        folder = agents_dir(self.repo_name, self.job_id)
        if not folder.is_dir():
            return
        listing = (await self.git.out("worktree", "list", "--porcelain")).splitlines()
        for child in folder.iterdir():
            if f"worktree {child}" not in listing:
                shutil.rmtree(child, ignore_errors=True)

    # ---- one attempt ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def attempt(self, item: WorkItem, attempt: int) -> AsyncIterator[Place]:
        branch = agent_branch(self.job_id, item, attempt)
        path = agents_dir(self.repo_name, self.job_id) / branch.rsplit("/", 1)[1]
        async with self.git.lock:
            await self._clear_leftover(path, branch)
            path.parent.mkdir(parents=True, exist_ok=True)
            reason = f"prodigy job {self.job_id}, item {item.id}"
            await self.git.run(
                "worktree",
                "add",
                "--lock",
                "--reason",
                reason,
                "-b",
                branch,
                str(path),
                self.branch,
            )
        await self._copy_included(path)
        self.events.emit(
            WorktreeCreated(item_id=item.id, attempt=attempt, path=str(path), branch=branch)
        )
        try:
            yield Place(path, branch)
        finally:
            # Under the lock: `git worktree list` elsewhere fails if a lock file vanishes
            # while it reads it.
            async with self.git.lock:
                await self.git.run("worktree", "unlock", str(path), check=False)

    async def _clear_leftover(self, path: Path, branch: str) -> None:
        """An attempt cut short by a crash left its worktree and branch unrecorded; the
        attempt runs again under the same name. Work it committed is kept on a side branch."""
        if path.exists():
            removed = await self.git.run("worktree", "remove", "-f", "-f", str(path), check=False)
            if removed.code != 0:  # not a worktree git knows
                shutil.rmtree(path)
        else:
            # Registered, locked, and gone (a kill between git's bookkeeping and the checkout,
            # found by the kill soak): `worktree add` refuses the path until it is pruned.
            await self.git.run("worktree", "unlock", str(path), check=False)
            await self.git.run("worktree", "prune", check=False)
        if not await self.git.ok("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"):
            return
        if await self.git.ok("merge-base", "--is-ancestor", branch, self.branch):
            await self.git.run("branch", "-D", branch)
            return
        n = 1
        while await self.git.ok("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}-cut{n}"):
            n += 1
        await self.git.run("branch", "-m", branch, f"{branch}-cut{n}")

    # ---- bringing an attempt's work back ----------------------------------------------------

    async def integrate(self, item: WorkItem, result: Attempt, recovering: bool = False) -> Attempt:
        """Merge a successful attempt's branch into the parent branch (once: when `recovering`
        a merge a crash cut short, a branch that already landed is only recorded). A conflict
        fails the attempt as `merge_conflict`."""
        branch = result.branch
        if branch is None:
            return result
        async with self.git.lock:
            parent = self.git.at(self._root)
            # A branch made and committed in this run cannot have landed yet.
            landed = await self._landed(item, result.attempt, branch) if recovering else None
            if landed is None and recovering:
                await self._undo_cut_merge(parent, branch)
            if landed is None:
                merged = await parent.run(
                    "merge",
                    "--no-ff",
                    "-m",
                    merge_message(self.job_id, item, result.attempt),
                    branch,
                    check=False,
                )
                if merged.code != 0:
                    return await self._conflict(item, result, parent, merged.out + merged.err)
                landed = await parent.out("rev-parse", "HEAD")
                if test_pause.ACTIVE:  # test-only: the kill soak strikes before the record
                    test_pause.reached("merge")
            await self._remove_merged(result)
        self.events.emit(AgentMerged(item_id=item.id, attempt=result.attempt, commit=landed))
        return msgspec.structs.replace(result, merge_commit=landed)

    async def _undo_cut_merge(self, parent: Git, branch: str) -> None:
        """A merge killed while it wrote the parent worktree leaves the branch's files there,
        whole or half written, neither staged nor committed, and merging again refuses to
        overwrite them (found by the kill soak). Each file the branch changes is put back as
        HEAD has it (removed, if HEAD has none): those are the files the cut-short merge of
        this very branch wrote. Files the branch does not touch (setup's) stay."""
        names = await parent.out("diff", "--name-only", "-z", "--no-renames", f"HEAD...{branch}")
        for name in filter(None, names.split("\0")):
            path = self._root / name
            if path.is_dir() and not path.is_symlink():
                continue
            if await parent.ok("cat-file", "-e", f"HEAD:{name}"):
                await parent.run("checkout", "HEAD", "--", name)
            elif path.exists() or path.is_symlink():
                path.unlink()

    async def _landed(self, item: WorkItem, attempt: int, branch: str) -> str | None:
        """The commit by which `branch` is in the parent branch, or None if it is not."""
        exists = await self.git.ok("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")
        if exists and not await self.git.ok("merge-base", "--is-ancestor", branch, self.branch):
            return None
        log = await self.git.out(
            "log",
            "--merges",
            f"--grep={TRAILER_ITEM}: {json.dumps(item.id)}",
            "--fixed-strings",
            "--format=%H%x00%B%x1e",
            self.branch,
        )
        for entry in log.split("\x1e"):
            commit, _, body = entry.strip().partition("\x00")
            if f"{TRAILER_JOB}: {self.job_id}\n" in body and (
                f"{TRAILER_ATTEMPT}: {attempt}\n" in body + "\n"
            ):
                return commit
        if exists:  # in the parent without a merge commit of its own: nothing was new in it
            return await self.git.out("rev-parse", self.branch)
        return None

    async def _conflict(self, item: WorkItem, result: Attempt, parent: Git, output: str) -> Attempt:
        conflicted = (await parent.out("diff", "--name-only", "--diff-filter=U")).splitlines()
        resolved = False
        if self.on_conflict is not None:
            resolved, spend = await self.on_conflict(self._root, item, result)
            # What the conflict steps paid (a claude step) is part of this attempt's cost.
            result = msgspec.structs.replace(result, spend=result.spend + spend)
        if resolved and await _merge_concluded(parent):
            landed = await parent.out("rev-parse", "HEAD")
            await self._remove_merged(result)
            self.events.emit(AgentMerged(item_id=item.id, attempt=result.attempt, commit=landed))
            return msgspec.structs.replace(result, merge_commit=landed)
        await parent.run("merge", "--abort", check=False)
        self.events.emit(MergeConflict(item_id=item.id, attempt=result.attempt, files=conflicted))
        lines = [line for line in output.strip().splitlines() if line.strip()]
        what = ", ".join(conflicted[:5]) if conflicted else (lines[-1] if lines else "?")
        error = (
            f"merging branch {result.branch} into {self.branch} conflicted ({what}); its "
            "worktree and branch are kept, and the next attempt starts from the updated parent "
            "branch"
        )
        return msgspec.structs.replace(
            result,
            ok=False,
            error=error,
            error_kind="merge_conflict",
            signature=error_signature("merge_conflict", error),
        )

    async def _remove_merged(self, result: Attempt) -> None:
        """A merged attempt's worktree and branch hold nothing the parent branch lacks."""
        if result.worktree is not None:
            # Twice forced: it removes a locked worktree too; gone already is fine.
            await self.git.run("worktree", "remove", "-f", "-f", result.worktree, check=False)
        if result.branch is not None:
            await self.git.run("branch", "-D", result.branch, check=False)
        if result.worktree is not None:
            self.events.emit(WorktreeRemoved(path=result.worktree, branch=result.branch or ""))


def _copy_files(source: Path, target: Path, names: list[str]) -> None:
    for name in names:
        destination = target / name
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, destination, follow_symlinks=False)


def open_workspace(meta: JobMetadata, events: EventLog) -> Workspace:
    """The job's workspace, by its isolation (decided when the job was created)."""
    if meta.isolation == "worktree":
        return GitWorkspace(Path(meta.workdir), meta.repo, meta.job_id, meta.base_commit, events)
    return SharedWorkspace(Path(meta.workdir))


async def _merge_concluded(parent: Git) -> bool:
    """No unmerged paths and no merge in progress: the conflict steps committed the merge."""
    if await parent.out("diff", "--name-only", "--diff-filter=U"):
        return False
    git_dir = Path(await parent.out("rev-parse", "--absolute-git-dir"))
    return not (git_dir / "MERGE_HEAD").exists()


def head_commit(repo_root: Path) -> str | None:
    """The commit a job's parent branch starts from; None when the repository has none."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() if found.returncode == 0 else None


def current_branch(repo_root: Path) -> str | None:
    """The branch checked out in the user's working tree; None when HEAD is detached."""
    found = subprocess.run(
        ["git", "symbolic-ref", "--quiet", "--short", "HEAD"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() if found.returncode == 0 else None


__all__ = [
    "GitError",
    "GitWorkspace",
    "Place",
    "agent_branch",
    "head_commit",
    "merge_message",
    "parent_branch",
    "parent_path",
]


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
