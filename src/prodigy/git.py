"""Running git: one command at a time per repository, no prompts, errors as sentences.

Every git command prodigy runs goes through `Git.run`, which never asks a question (no
editor, no credential prompt) and turns a failure into `GitError` naming the command and
git's own last line. Commands that change the repository's shared state (refs, worktrees,
merges) hold the repository's lock, so concurrent agents never race git's own lock files.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from prodigy.errors import ProdigyError

_QUIET_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true",
    "GIT_MERGE_AUTOEDIT": "no",
    "LC_ALL": "C",
}


class GitError(ProdigyError):
    def __init__(self, args: tuple[str, ...], code: int, output: str) -> None:
        last = next((line for line in reversed(output.splitlines()) if line.strip()), "")
        super().__init__(f"`git {' '.join(args)}` failed (exit code {code}): {last.strip()}")
        self.code = code
        self.output = output


@dataclass(frozen=True)
class GitResult:
    code: int
    out: str
    err: str


_KILLED_BY_INTERRUPT = frozenset({-signal.SIGINT, -signal.SIGTERM})


class Git:
    """git in one repository (or worktree) directory."""

    def __init__(
        self, cwd: Path, lock: asyncio.Lock | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.cwd = cwd
        self.lock = lock or asyncio.Lock()
        self.env = env if env is not None else {}

    def at(self, cwd: Path) -> Git:
        """The same repository's lock, run in another of its worktrees."""
        return Git(cwd, self.lock, self.env)

    async def ensure_identity(self) -> None:
        """Merge commits need an author: where git has none configured, prodigy signs."""
        if not await self.ok("config", "user.email") and "GIT_AUTHOR_EMAIL" not in os.environ:
            self.env.update(
                GIT_AUTHOR_NAME="prodigy",
                GIT_AUTHOR_EMAIL="prodigy@localhost",
                GIT_COMMITTER_NAME="prodigy",
                GIT_COMMITTER_EMAIL="prodigy@localhost",
            )

    async def run(self, *args: str, check: bool = True) -> GitResult:
        code, out, err = await self._run_once(args)
        if code in _KILLED_BY_INTERRUPT:
            # A SIGINT/SIGTERM to prodigy's process group reached git between its fork and its
            # setsid, before it ran (the kill soak found a `worktree add` so killed failing the
            # run): git did nothing, so it runs again, out of reach this time.
            code, out, err = await self._run_once(args)
        result = GitResult(code, out.decode(errors="replace"), err.decode())
        if check and result.code != 0:
            raise GitError(args, result.code, result.err or result.out)
        return result

    async def _run_once(self, args: tuple[str, ...]) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=self.cwd,
            env={**os.environ, **_QUIET_ENV, **self.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Out of prodigy's process group, like every step: a terminal's Ctrl-C (or a SIGTERM
            # to the group) reaches prodigy, which stops gracefully, and never kills a merge or
            # a `worktree add` half-way (found by the kill soak: the item went to the DLQ as a
            # merge conflict, or the run failed instead of being interrupted).
            start_new_session=True,
        )
        out, err = await proc.communicate()
        return proc.returncode or 0, out, err

    async def out(self, *args: str) -> str:
        return (await self.run(*args)).out.strip()

    async def ok(self, *args: str) -> bool:
        return (await self.run(*args, check=False)).code == 0
