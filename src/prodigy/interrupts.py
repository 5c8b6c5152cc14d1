"""Why a run stops, and when running work must be killed.

A first SIGINT/SIGTERM, the failure policy or a fatal error sets `stopping` (start nothing new).
Running agents then get a grace period; when it ends, or at a second signal, or at once for a
fatal error, `killing` is set and whatever runs under `killable` is cancelled (which kills its
process groups). The reason decides the job's end status and exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from prodigy.errors import EXIT_SIGINT, EXIT_SIGTERM, ProdigyError
from prodigy.state import Attempt

T = TypeVar("T")

DEFAULT_GRACE_SECONDS = 5.0
# How long a step that died of SIGINT/SIGTERM waits for prodigy's own handler of that signal.
SIGNAL_SETTLE_SECONDS = 0.2
_DIED_OF_INTERRUPT = frozenset({128 + signal.SIGINT, 128 + signal.SIGTERM})


def grace_seconds() -> float:
    """How long running agents may finish after a first Ctrl-C (PRODIGY_INTERRUPT_GRACE)."""
    try:
        return float(os.environ.get("PRODIGY_INTERRUPT_GRACE", DEFAULT_GRACE_SECONDS))
    except ValueError:
        return DEFAULT_GRACE_SECONDS


class Interrupts:
    def __init__(self, warn: Callable[[str], None], grace: float | None = None) -> None:
        self.warn = warn
        self.grace = grace_seconds() if grace is None else grace
        self.stopping = asyncio.Event()
        self.killing = asyncio.Event()
        self.signal: int | None = None
        self.policy_reason: str | None = None
        self.fatal: BaseException | None = None

    # ---- causes ----------------------------------------------------------------------------

    def on_signal(self, signum: int) -> None:
        if self.signal is not None:
            self.killing.set()
            return
        self.signal = signum
        self.stopping.set()
        self.warn(
            "Interrupt received: starting no new agents; running agents get "
            f"{self.grace:g}s to finish (press Ctrl-C again to stop them now)."
        )
        asyncio.get_running_loop().call_later(self.grace, self.killing.set)

    def stop_for_policy(self, reason: str) -> None:
        """The failure policy: start nothing new, let running agents finish."""
        if self.policy_reason is None:
            self.policy_reason = reason
        self.stopping.set()

    def fail(self, exc: BaseException) -> None:
        """Something the run cannot go on without broke: stop and kill at once."""
        if self.fatal is None:
            self.fatal = exc
        self.stopping.set()
        self.killing.set()

    @property
    def stopped(self) -> bool:
        return self.stopping.is_set()

    @property
    def cut_short(self) -> bool:
        """The run ends early for a signal or an error (not for the failure policy)."""
        return self.signal is not None or self.fatal is not None

    def explains(self, result: Attempt) -> bool:
        """A step that died of the signal this run received was cut short, not failed: a
        signal sent to prodigy's process group can reach a child in the instant between its
        fork and its move to a process group of its own."""
        return self.signal is not None and not result.ok and result.exit_code == 128 + self.signal

    async def interrupted(self, result: Attempt) -> bool:
        """`explains`, once a signal that reached prodigy with the child has been handled.

        The child can die of it and be reaped before prodigy's own handler has run (the handler
        runs from the event loop, a few iterations after the signal arrives; found by the kill
        soak). A step that died of SIGINT or SIGTERM is only judged after a short wait.
        """
        if not self.explains(result) and not result.ok and result.exit_code in _DIED_OF_INTERRUPT:
            await asyncio.sleep(SIGNAL_SETTLE_SECONDS)
        return self.explains(result)

    def fatal_message(self) -> str | None:
        if self.fatal is None:
            return None
        exc = self.fatal
        return str(exc) if isinstance(exc, ProdigyError) else repr(exc)

    def exit_code(self) -> int:
        return EXIT_SIGTERM if self.signal == signal.SIGTERM else EXIT_SIGINT

    def signal_name(self) -> str:
        return signal.Signals(self.signal or signal.SIGINT).name

    # ---- effects ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.on_signal, signum)
        try:
            yield
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    async def killable(self, work: Awaitable[T]) -> T | None:
        """`work`'s result, or None if killing started first (the work is then cancelled)."""
        task = asyncio.ensure_future(work)
        killer = asyncio.ensure_future(self.killing.wait())
        try:
            await asyncio.wait({task, killer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            killer.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
