"""SIGINT and SIGTERM for the CLI's long-running commands: installed first, honoured at any moment.

A command that runs a runtime (``run``, ``demo``, ``restart``; ``events --follow``) installs :class:`Interrupts`
before it does anything else: before the graph is loaded, the log opened or replayed. From then on:

- the **first** SIGINT/SIGTERM starts a clean shutdown at whatever point the command is (start-up and replay
  included): the command's work is cancelled, and the runtime's shutdown (cancel runs in flight, record them,
  commit) runs to its end;
- a **second** one is reported on stderr and changes nothing: cleanup is not skipped;
- a **third** one exits at once, after saying what it leaves behind (runs recorded as in flight, which the
  next start marks Lost; their job processes die with this process through ``PR_SET_PDEATHSIG``).

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the main thread happens to be, and
asyncio's runner turns that into a cancellation only once it is running: an interrupt during start-up was
swallowed, or skipped the shutdown. Handlers installed with ``signal.signal`` run between bytecodes in the main
thread; they only record the signal and hand the cancellation to the event loop (``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import anyio

__all__ = ["EXIT_SIGNAL", "Interrupts"]

EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
_WATCHED = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """The interrupt policy of one CLI command (see the module docstring). Use as a context manager."""

    def __init__(self, write: Callable[[str], None] | None = None, *, announce: bool = True) -> None:
        """``announce``: say on stderr that a clean shutdown started (off for a command with nothing to stop)."""
        self.received: list[int] = []
        self._announce = announce
        self.leaving: Callable[[], str] | None = None
        """Says what a forced exit leaves behind (set once a runtime is open)."""
        self._write = write if write is not None else _stderr
        self._scope: anyio.CancelScope | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._saved: dict[int, Any] = {}

    @property
    def first(self) -> int | None:
        """The first signal received, or None."""
        return self.received[0] if self.received else None

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in _WATCHED:
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._saved.items():
            signal.signal(sig, old)
        self._saved.clear()

    @contextmanager
    def stoppable(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope the first signal cancels (at once if one already arrived). Call inside the event loop."""
        with anyio.CancelScope() as scope:
            self._scope = scope
            self._loop = asyncio.get_running_loop()
            if self.received:
                scope.cancel()
            try:
                yield scope
            finally:
                self._scope = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        name = signal.Signals(signum).name
        n = len(self.received)
        if n == 1:
            if self._announce:
                self._write(f"wantbuild: {name}: shutting down cleanly (stopping runs in flight, recording them); "
                            f"send it twice more to exit at once")
            scope, loop = self._scope, self._loop
            if scope is not None and loop is not None:
                loop.call_soon_threadsafe(scope.cancel)
        elif n == 2:
            self._write(f"wantbuild: {name} again: still shutting down cleanly; one more exits at once, leaving "
                        f"what is in flight for the next start")
        else:
            left = ""
            if self.leaving is not None:
                try:
                    left = self.leaving()
                except Exception as e:  # a forced exit must not fail on its farewell
                    left = f"(could not tell what is left: {e})"
            self._write(f"wantbuild: {name} a third time: exiting now. {left}".rstrip())
            os._exit(EXIT_SIGNAL.get(signal.Signals(self.received[0]), 1))


def _stderr(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
