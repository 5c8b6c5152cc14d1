"""What a job of worktree isolation leaves in git: its parent worktree and branch, and its
agents' worktrees and branches (failed attempts', attempts cut short by a crash). Found and
described for `prodigy worktrees list`; removed for `worktrees clean` and `checkpoints clean`.

Work merged nowhere else (commits in neither the parent branch nor the user's base branch, or
uncommitted changes in a worktree) is removed only when forced, and then named. Nothing of the
user's is touched: only branches `prodigy/<job>` and `prodigy-agents/<job>/...` and worktrees
in prodigy's own directories, and never a repository-wide `git worktree prune`.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from prodigy.display import byte_size, plural
from prodigy.errors import ProdigyError, StateError
from prodigy.events import EventLog, WorktreeRemoved
from prodigy.git import Git
from prodigy.items import WorkItem
from prodigy.job import ItemsFile, JobMetadata, load_state
from prodigy.state import Attempt, JobState
from prodigy.store import JobDir, directory_size
from prodigy.worktree import (
    agents_dir,
    agents_prefix,
    item_slug,
    parent_branch,
    parent_path,
)

# running: the job's lock is held (the job or another prodigy command is at work);
# merged: its work is in the parent branch (agents) or the user's base branch (parent);
# failed: a failed attempt's, kept for inspection; succeeded: an attempt whose merge waits for
# the job to resume; orphaned: a branch no recorded attempt names (cut short by a crash) or a
# worktree without a branch; left: a completed job's branch the final merge left; unfinished:
# the branch of a job that can be resumed; unknown: the journal cannot be read.
EntryState = Literal[
    "running", "merged", "failed", "succeeded", "orphaned", "left", "unfinished", "unknown"
]
_AGENT_NAME = re.compile(r"^(?P<slug>.+)-a(?P<attempt>\d+)(?P<cut>-cut\d+)?$")


@dataclass(frozen=True)
class JobWorktree:
    """One branch of a job and the worktree it is checked out in (either may be missing)."""

    role: Literal["parent", "agent"]
    state: EntryState
    branch: str | None
    worktree: Path | None
    item_id: str | None = None
    attempt: int | None = None
    registered: bool = True  # False: a directory git does not know (a crash's leftover)
    size: int | None = None  # bytes on disk of the worktree
    unmerged: int = 0  # commits in neither the parent branch nor the user's base branch
    uncommitted: bool = False  # the worktree has changes no commit holds
    checked_out_in: Path | None = None  # a worktree that is not prodigy's has the branch
    detached_at: str | None = None  # the commit of a worktree without a branch

    @property
    def holds_work(self) -> bool:
        """Removing it would lose work that exists nowhere else."""
        return self.unmerged > 0 or self.uncommitted

    def work_description(self) -> str:
        """`2 commits merged nowhere else, uncommitted changes`, or `nothing unmerged`."""
        parts = []
        if self.unmerged:
            parts.append(f"{plural(self.unmerged, 'commit')} merged nowhere else")
        if self.uncommitted:
            parts.append("uncommitted changes")
        return ", ".join(parts) or "nothing unmerged"

    def name(self) -> str:
        """How messages name it: the branch, else the worktree's path."""
        if self.branch is not None:
            return f"branch {self.branch}"
        return f"worktree {self.worktree}"

    def owner(self) -> str:
        if self.role == "parent":
            return "the job's parent"
        attempt = f", attempt {self.attempt}" if self.attempt is not None else ""
        return f"item {self.item_id or '?'}{attempt}"


@dataclass(frozen=True)
class JobWorktrees:
    job_id: str
    repo_root: Path
    isolated: bool  # the job ran with `map.isolation: worktree`
    entries: tuple[JobWorktree, ...]
    agents_folder: Path | None = None

    @property
    def worktrees(self) -> tuple[JobWorktree, ...]:
        return tuple(e for e in self.entries if e.worktree is not None)

    @property
    def branches(self) -> tuple[JobWorktree, ...]:
        return tuple(e for e in self.entries if e.branch is not None)

    @property
    def size(self) -> int:
        return sum(e.size or 0 for e in self.entries)


class UnmergedWork(ProdigyError):
    """Cleaning would delete work merged nowhere else, and --force was not given."""


class WorktreesNotFound(ProdigyError):
    """The job's repository cannot be read, so what it left in git cannot be found."""


# ---- finding them ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Registered:
    """One entry of `git worktree list --porcelain`."""

    path: Path
    head: str
    branch: str | None  # without refs/heads/; None when detached


def _parse_worktrees(porcelain: str) -> list[_Registered]:
    found: list[_Registered] = []
    for block in porcelain.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value
        if "worktree" in fields:
            branch = fields.get("branch")
            found.append(
                _Registered(
                    path=Path(fields["worktree"]),
                    head=fields.get("HEAD", ""),
                    branch=branch.removeprefix("refs/heads/") if branch else None,
                )
            )
    return found


@dataclass(frozen=True)
class _Recorded:
    item_id: str
    attempt: int
    state: EntryState


def _recorded_attempts(state: JobState, item_id: list[str] | None) -> dict[str, _Recorded]:
    """The branch of every attempt the journal names, with what became of it."""
    found: dict[str, _Recorded] = {}

    def note(index: int, attempt: Attempt, what: EntryState) -> None:
        if attempt.branch is not None:
            name = item_id[index] if item_id is not None else f"#{index}"
            found[attempt.branch] = _Recorded(name, attempt.attempt, what)

    for index, past in state.history.items():
        for attempt in past:
            note(index, attempt, "failed")
    for index, attempt in state.merging.items():
        note(index, attempt, "succeeded")
    for index, attempt in state.results.items():
        note(index, attempt, "merged" if attempt.ok else "failed")
    return found


def _read_records(job: JobDir) -> tuple[JobState | None, list[str] | None]:
    """The job's state and item ids; None for what cannot be read (listing goes on)."""
    try:
        state = load_state(job)
    except (StateError, OSError, ValueError, IndexError):
        return None, None
    try:
        items = ItemsFile(job.items)
    except (StateError, OSError):
        return state, None
    ids = list(items.ids)
    items.close()
    return state, ids


class _Finder:
    """Builds one job's entries from git's view and the journal's."""

    def __init__(self, job: JobDir, meta: JobMetadata, running: bool) -> None:
        self.meta = meta
        self.running = running
        self.git = Git(Path(meta.workdir))
        self.parent = parent_branch(meta.job_id)
        self.parent_dir = parent_path(meta.repo, meta.job_id).resolve()
        self.agents = agents_dir(meta.repo, meta.job_id).resolve()
        self.state, self.item_ids = _read_records(job)
        self.recorded = (
            _recorded_attempts(self.state, self.item_ids) if self.state is not None else {}
        )
        self._slugs: dict[str, str] | None = None
        self.base_ref = ""

    def ours(self, path: Path) -> bool:
        resolved = path.resolve()
        return resolved == self.parent_dir or resolved.parent == self.agents

    async def find(self) -> JobWorktrees:
        root = Path(self.meta.workdir)
        if not root.is_dir():
            raise WorktreesNotFound(
                f"The repository {root} of job {self.meta.job_id} is gone, so its worktrees "
                "and branches cannot be found."
            )
        readable = await self.git.run("rev-parse", "--git-dir", check=False)
        if readable.code != 0:
            last = (readable.err.strip().splitlines() or ["not a git repository"])[-1]
            raise WorktreesNotFound(
                f"The repository {root} of job {self.meta.job_id} cannot be read by git "
                f"({last}), so its worktrees and branches cannot be found."
            )
        registered = _parse_worktrees(await self.git.out("worktree", "list", "--porcelain"))
        branches = await self._job_branches()
        self.base_ref = await self._base_ref()
        entries: list[JobWorktree] = []
        by_branch = {r.branch: r for r in registered if r.branch is not None}
        for branch in branches:
            holder = by_branch.get(branch)
            if holder is not None and not self.ours(holder.path):
                entries.append(self._entry(branch, None, elsewhere=holder.path))
            else:
                entries.append(self._entry(branch, holder))
        for reg in registered:
            if self.ours(reg.path) and reg.branch not in branches:
                entries.append(self._entry(None, reg))
        entries.extend(self._strays(registered))
        measured = [await self._measure(e) for e in entries]
        measured.sort(key=lambda e: (e.role != "parent", e.item_id or "", e.attempt or 0))
        return JobWorktrees(self.meta.job_id, root, True, tuple(measured), self.agents)

    async def _job_branches(self) -> list[str]:
        listing = await self.git.out(
            "for-each-ref",
            "--format=%(refname)",
            f"refs/heads/{self.parent}",
            f"refs/heads/{agents_prefix(self.meta.job_id)}",
        )
        names = [line.removeprefix("refs/heads/") for line in listing.splitlines() if line]
        # for-each-ref also matches what lies below `prodigy/<job>/`, which is not ours.
        agents = agents_prefix(self.meta.job_id)
        return [n for n in names if n == self.parent or n.startswith(agents)]

    async def _base_ref(self) -> str:
        """What "merged into the user's branch" is measured against: their base branch, or
        (deleted, or never known) the commit the job started from, which holds none of it."""
        base = self.meta.base_branch
        if base and await self.git.ok("rev-parse", "--verify", "--quiet", f"refs/heads/{base}"):
            return f"refs/heads/{base}"
        return self.meta.base_commit

    def _slug_ids(self) -> dict[str, str]:
        if self._slugs is None:
            ids = self.item_ids or []
            self._slugs = {item_slug(WorkItem(i, item, None)): item for i, item in enumerate(ids)}
        return self._slugs

    def _entry(
        self, branch: str | None, reg: _Registered | None, elsewhere: Path | None = None
    ) -> JobWorktree:
        path = reg.path if reg is not None else None
        detached = reg.head if reg is not None and branch is None and reg.head else None
        if branch == self.parent or (path is not None and path.resolve() == self.parent_dir):
            parent_state = self._parent_state(branch)
            return JobWorktree(
                "parent", parent_state, branch, path, checked_out_in=elsewhere, detached_at=detached
            )
        entry = JobWorktree(
            "agent", "orphaned", branch, path, checked_out_in=elsewhere, detached_at=detached
        )
        return entry if branch is None else self._attempt_of(entry, branch)

    def _attempt_of(self, entry: JobWorktree, branch: str) -> JobWorktree:
        """Item, attempt and state of an agent branch: as recorded, else from its name."""
        recorded = self.recorded.get(branch)
        if recorded is not None:
            state = recorded.state
            if state == "succeeded" and self.running:
                state = "running"  # its merge is under way
            return replace(entry, state=state, item_id=recorded.item_id, attempt=recorded.attempt)
        named = _AGENT_NAME.match(branch.removeprefix(agents_prefix(self.meta.job_id)))
        if named is None:
            return entry
        if self.state is None:
            state = "unknown"
        elif self.running and not named["cut"]:
            state = "running"  # an attempt not recorded yet: it is running now
        else:
            state = "orphaned"  # cut short by a crash, or its record is gone
        slug = named["slug"]
        return replace(
            entry,
            state=state,
            item_id=self._slug_ids().get(slug, slug),
            attempt=int(named["attempt"]),
        )

    def _parent_state(self, branch: str | None) -> EntryState:
        if self.running:
            return "running"
        if branch is None:
            return "orphaned"
        if self.state is None:
            return "unknown"
        return "left" if self.state.ended == "completed" else "unfinished"

    def _strays(self, registered: list[_Registered]) -> list[JobWorktree]:
        """Directories in prodigy's places that git does not know: a crash's leftovers."""
        known = {r.path.resolve() for r in registered}
        candidates = [self.parent_dir]
        if self.agents.is_dir():
            candidates.extend(sorted(self.agents.iterdir()))
        return [
            JobWorktree(
                "parent" if path == self.parent_dir else "agent",
                "running" if self.running else "orphaned",
                None,
                path,
                registered=False,
            )
            for path in candidates
            if path.is_dir() and path.resolve() not in known
        ]

    async def _measure(self, entry: JobWorktree) -> JobWorktree:
        """Its size and the work in it that exists nowhere else."""
        size = None
        uncommitted = False
        if entry.worktree is not None and entry.worktree.is_dir():
            size = directory_size(entry.worktree)
            if entry.registered:
                # No optional locks: a running agent's own `git commit` must never find the
                # index locked by a listing.
                status = await self.git.at(entry.worktree).run(
                    "--no-optional-locks", "status", "--porcelain", check=False
                )
                uncommitted = status.code != 0 or bool(status.out.strip())
        unmerged = 0
        tip = f"refs/heads/{entry.branch}" if entry.branch is not None else entry.detached_at
        if tip is not None:
            safe = [self.base_ref] if self.base_ref else []
            if entry.branch != self.parent and await self._exists(self.parent):
                safe.append(f"refs/heads/{self.parent}")
            count = await self.git.out("rev-list", "--count", tip, "--not", *safe, "--")
            unmerged = int(count or 0)
        # A completed job's branch whose work is all in the user's branch was merged.
        merged = entry.state == "left" and unmerged == 0
        return replace(
            entry,
            size=size,
            uncommitted=uncommitted,
            unmerged=unmerged,
            state="merged" if merged else entry.state,
        )

    async def _exists(self, branch: str) -> bool:
        return await self.git.ok("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")


async def find_job_worktrees(job: JobDir, meta: JobMetadata, running: bool) -> JobWorktrees:
    """Every worktree and branch of the job. `running`: the job's lock is held by someone
    else (the caller says so: a cleaner holding the lock itself must not see it as running).
    Read-only: git is asked, never changed."""
    if meta.isolation != "worktree":
        return JobWorktrees(meta.job_id, Path(meta.workdir), False, ())
    return await _Finder(job, meta, running).find()


def job_worktree_dirs(repo_name: str, job_id: str) -> list[Path]:
    """The job's directories in prodigy's worktrees folder that exist (no git needed)."""
    return [
        p for p in (parent_path(repo_name, job_id), agents_dir(repo_name, job_id)) if p.exists()
    ]


# ---- removing them -----------------------------------------------------------------------------


def check_removable(found: JobWorktrees, force: bool) -> tuple[JobWorktree, ...]:
    """Raise when the job's worktrees and branches must not be removed; return the entries
    whose work exists nowhere else (removed only because of --force, and to be named)."""
    for entry in found.entries:
        if entry.checked_out_in is not None:
            raise ProdigyError(
                f"Branch {entry.branch} of job {found.job_id} is checked out in "
                f"{entry.checked_out_in}, a worktree that is not prodigy's, so it is left "
                "alone; nothing was removed.",
                hint="Check out another branch there first.",
            )
    held = tuple(e for e in found.entries if e.holds_work)
    if held and not force:
        named = "; ".join(f"{e.name()} ({e.owner()}: {e.work_description()})" for e in held[:5])
        more = f"; and {len(held) - 5} more" if len(held) > 5 else ""
        raise UnmergedWork(
            f"Job {found.job_id} holds work merged nowhere else: {named}{more}; nothing was "
            "removed.",
            hint=f"See `prodigy worktrees list {found.job_id}`; merge or copy what you want to "
            "keep, or pass --force to delete it.",
        )
    return held


async def remove_job_worktrees(found: JobWorktrees, events: EventLog | None = None) -> None:
    """Remove the worktrees (agents' first, the parent's last), then the branches. Call
    `check_removable` first, holding the job's lock."""
    git = Git(found.repo_root)
    ordered = sorted(found.worktrees, key=lambda e: e.role == "parent")
    for entry in ordered:
        assert entry.worktree is not None
        if entry.registered:
            # Locked while a run used it; the job's lock (held by the caller) says none does.
            await git.run("worktree", "unlock", str(entry.worktree), check=False)
            await git.run("worktree", "remove", "--force", str(entry.worktree))
        else:
            shutil.rmtree(entry.worktree, ignore_errors=True)
        if events is not None:
            events.emit(WorktreeRemoved(path=str(entry.worktree), branch=entry.branch or ""))
    for entry in found.branches:
        assert entry.branch is not None
        await git.run("branch", "-D", entry.branch)
    if found.agents_folder is not None:
        with contextlib.suppress(OSError):
            found.agents_folder.rmdir()  # the job's agents folder, once empty


def describe_removal(found: JobWorktrees) -> str:
    """`2 worktrees and 3 branches (1.2 MB)`: what cleaning the job removes from git."""
    worktrees = plural(len(found.worktrees), "worktree")
    branches = plural(len(found.branches), "branch", "branches")
    return f"{worktrees} and {branches} ({byte_size(found.size)})"


def forced_removal(entry: JobWorktree, dry_run: bool) -> str:
    """Names what --force deletes although it holds work merged nowhere else (SPEC §6)."""
    verb, holds = ("Would delete", "holds") if dry_run else ("Deleted", "held")
    work = entry.work_description()
    return f"{verb} {entry.name()} ({entry.owner()}), which {holds} {work} (--force)."
