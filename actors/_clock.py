"""The runtime's clock, injected at the edge.

Everything in wantbuild that reads the time or waits for it (event timestamps, backoff, TTL and SLA timers,
heartbeat deadlines, job timeouts) asks a :class:`Clock`. The live runtime uses :class:`SystemClock`; the
scenario runner passes a virtual clock whose time only moves when the simulated world is quiescent.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import anyio


@runtime_checkable
class Clock(Protocol):
    """Time source and sleeper. ``now()`` is seconds since the epoch (or since a scenario's start)."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time and real sleeping."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))
