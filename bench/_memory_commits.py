"""Diagnostic for the benchmarks' ``--split``: commits resolved in memory, to say what the durable log costs.

Never a headline figure: nothing is durable with it, which the product never allows.
"""

from __future__ import annotations

import asyncio
from typing import Any

from eventlog import Log, Record


class MemoryCommits:
    """``append`` resolved in memory, once per loop iteration (a group commit that writes nothing)."""

    def __init__(self) -> None:
        self.last_seq = 0
        self._pending: list[tuple[asyncio.Future[Record], str, str, int, Any, float]] = []

    async def append(self, kind: str, eid: str, expected: int, event: Any, at: float | None = None) -> Record:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Record] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._commit)
        self._pending.append((fut, kind, eid, expected + 1, event, at or 0.0))
        return await fut

    def _commit(self) -> None:
        pending, self._pending = self._pending, []
        for fut, kind, eid, eseq, event, at in pending:
            self.last_seq += 1
            fut.set_result(Record(self.last_seq, kind, eid, eseq, event, at))


def skip_durability(log: Log) -> MemoryCommits:
    """Make this open log's appends resolve in memory (reads, commands and the rest stay real)."""
    mem = MemoryCommits()
    log.append = mem.append  # type: ignore[method-assign,assignment]
    return mem
