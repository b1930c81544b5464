"""A virtual clock whose time moves only when the scenario runner says so, and a quiescence detector.

:class:`VirtualClock` satisfies ``actors.Clock``. ``sleep`` parks the caller on a future in a heap keyed by
``(deadline, arrival order)``; nothing wakes until :meth:`VirtualClock.advance` moves the time to the earliest
deadline and resolves exactly the sleepers due then, in arrival order. Since the runner advances only when the
simulated world is quiescent, a day of job time costs as many loop iterations as there are things happening,
not seconds.

:func:`run_until_idle` lets every other task on the loop run until none is ready. It looks at asyncio's ready
queue (``loop._ready``, a private attribute that every CPython asyncio loop has); on a loop without it, it
falls back to a fixed number of passes. Work on other threads (aiosqlite) is invisible to it: the runner only
calls it when no such work is outstanding (it awaits its own commits and reads).
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio.lowlevel

__all__ = ["NeverQuiet", "VirtualClock", "run_until_idle"]


class NeverQuiet(RuntimeError):
    """The loop never became quiescent: some task keeps rescheduling itself without waiting on anything."""


@dataclass(order=True)
class _Sleeper:
    deadline: float
    order: int
    future: asyncio.Future[None] = field(compare=False)


class VirtualClock:
    """Time that stands still until :meth:`advance`. ``now()`` is seconds since the scenario's start."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._heap: list[_Sleeper] = []
        self._order = 0

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock reaches ``now() + seconds`` (a plain checkpoint when ``seconds <= 0``)."""
        if not seconds > 0:  # also catches NaN
            await anyio.lowlevel.checkpoint()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._order += 1
        heapq.heappush(self._heap, _Sleeper(self._now + seconds, self._order, fut))
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()  # dropped lazily from the heap

    def _prune(self) -> None:
        while self._heap and self._heap[0].future.done():
            heapq.heappop(self._heap)

    def next_deadline(self) -> float | None:
        """The earliest time a live sleeper waits for, or None when nobody sleeps."""
        self._prune()
        return self._heap[0].deadline if self._heap else None

    def sleepers(self) -> int:
        return sum(1 for s in self._heap if not s.future.done())

    def advance(self, to: float) -> int:
        """Move the time to ``to`` (never backwards) and wake every sleeper due by then, in (deadline, arrival)
        order. Returns how many were woken."""
        if to < self._now:
            raise ValueError(f"the virtual clock cannot go back from {self._now} to {to}")
        if math.isinf(to):
            raise ValueError("the virtual clock cannot advance to infinity")
        self._now = float(to)
        woken = 0
        while self._heap and self._heap[0].deadline <= self._now:
            s = heapq.heappop(self._heap)
            if not s.future.done():
                s.future.set_result(None)
                woken += 1
        return woken

    def drop_all(self) -> None:
        """Forget every sleeper (their tasks are gone: the runtime they belonged to crashed)."""
        for s in self._heap:
            if not s.future.done():
                s.future.cancel()
        self._heap.clear()


async def run_until_idle(*, quiet_passes: int = 3, max_passes: int = 1_000_000, soon: float = 0.05) -> int:
    """Yield to the loop until no other callback is ready for ``quiet_passes`` passes in a row.

    A loop timer due within ``soon`` real seconds (a short real-time sleep somewhere) counts as work still to
    come: it is waited for rather than mistaken for quiescence. Returns the number of passes. Raises
    :class:`NeverQuiet` after ``max_passes``.
    """
    loop = asyncio.get_running_loop()
    ready: deque[Any] | None = getattr(loop, "_ready", None)
    scheduled: list[Any] | None = getattr(loop, "_scheduled", None)
    quiet = 0
    passes = 0
    while quiet < quiet_passes:
        await asyncio.sleep(0)
        passes += 1
        if ready is None:
            quiet += 1 if passes % 50 == 0 else 0
        elif ready:
            quiet = 0
        else:
            quiet += 1
            if quiet >= quiet_passes and scheduled:
                due = min((h.when() for h in scheduled if not h.cancelled()), default=None)
                if due is not None and due - loop.time() < soon:
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    quiet = 0
        if passes >= max_passes:
            raise NeverQuiet(f"the event loop was still busy after {passes} passes")
    return passes
