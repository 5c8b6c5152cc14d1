"""Starting a step's process in a session of its own, and waiting for it on the event loop.

On Linux (pidfd) a child is started with `os.posix_spawn` (vfork-like, no copy of the
coordinator's page tables) when it runs in the coordinator's own directory, with
`subprocess.Popen` when it needs another one, and waited for by a pidfd in an epoll set that
the event loop watches. That is a third of the coordinator's CPU per trivial agent less than
`asyncio.create_subprocess_exec` (its transport, protocol and child watcher). Elsewhere
asyncio's subprocess support is used.
"""

from __future__ import annotations

import asyncio
import functools
import os
import select
import signal
import subprocess
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

# What subprocess.Popen(restore_signals=True) puts back to default: Python ignores them.
_RESTORED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)


class Child(Protocol):
    """A started process: its pid (which leads its own process group) and exit status."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


@functools.cache
def pidfd_works() -> bool:
    """pidfd_open exists in the os module but needs Linux 5.3+ at run time."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


async def start(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], stdout: int, stderr: int
) -> Child:
    """Start `argv` in a new session (so its own process group), stdin from /dev/null and
    the given descriptors as stdout and stderr. Raises OSError when it cannot start."""
    if not pidfd_works():
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    loop = asyncio.get_running_loop()
    if is_current_directory(str(cwd)):
        _keep_descriptors_private()
        pid = os.posix_spawn(
            argv[0],
            list(argv),
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, stdout, 1),
                (os.POSIX_SPAWN_DUP2, stderr, 2),
            ],
            setsid=True,
            setsigdef=_RESTORED_SIGNALS,
        )
        return _PidfdChild(loop, pid, None)
    # posix_spawn cannot change directory before Python 3.13; Popen can (with vfork).
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    return _PidfdChild(loop, popen.pid, popen)


@functools.cache
def _keep_descriptors_private() -> None:
    """Make every descriptor this process inherited close on exec, as Popen's close_fds does
    for its children: posix_spawn passes on whatever is not marked so."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
            except OSError:
                continue  # the descriptor listdir itself used, closed by now


def is_current_directory(path: str) -> bool:
    # Asked once per agent step with one of a few directories: remembered for the directory
    # prodigy is in (one getcwd instead of two stats).
    return path == "." or _same_file(os.getcwd(), path)


@functools.lru_cache(maxsize=64)
def _same_file(here: str, path: str) -> bool:
    try:
        a = os.stat(here)
        b = os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class _ExitWatcher:
    """The pidfds of one event loop's children in one epoll set, which the loop watches as a
    single descriptor: a child costs one `epoll_ctl` each way, not a loop registration."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._epoll = select.epoll()
        self._children: dict[int, _PidfdChild] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)

    def watch(self, pidfd: int, child: _PidfdChild) -> None:
        self._children[pidfd] = child
        self._epoll.register(pidfd, select.EPOLLIN)

    def forget(self, pidfd: int) -> None:
        self._children.pop(pidfd, None)
        self._epoll.unregister(pidfd)

    def _ready(self) -> None:
        for pidfd, _ in self._epoll.poll(0):
            child = self._children.get(pidfd)
            if child is not None:
                child.reap()


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ExitWatcher] = (
    weakref.WeakKeyDictionary()
)


def _watcher(loop: asyncio.AbstractEventLoop) -> _ExitWatcher:
    found = _watchers.get(loop)
    if found is None:
        found = _watchers[loop] = _ExitWatcher(loop)
    return found


class _PidfdChild:
    """A child waited for through its pidfd: readable once the child has exited."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, pid: int, popen: subprocess.Popen[bytes] | None
    ) -> None:
        self._pid = pid
        self._popen = popen  # kept so that Popen's own reaping never races ours
        self._returncode: int | None = None
        self._exited: asyncio.Future[None] = loop.create_future()
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:
            # Out of descriptors: the child runs; reap it and report why we cannot wait.
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        self._watcher = _watcher(loop)
        self._watcher.watch(self._pidfd, self)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._returncode

    async def wait(self) -> int:
        if self._returncode is None:
            # Shielded: a cancelled waiter must not cancel the exit the next waiter awaits.
            await asyncio.shield(self._exited)
        assert self._returncode is not None
        return self._returncode

    def reap(self) -> None:
        if self._popen is not None:
            code = self._popen.poll()
        else:
            try:
                pid, status = os.waitpid(self._pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self._pid, 255 << 8  # reaped by someone else: status unknown
            code = os.waitstatus_to_exitcode(status) if pid else None
        if code is None:
            return
        self._returncode = code
        self._watcher.forget(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        if not self._exited.done():
            self._exited.set_result(None)
