"""Diagnostic for the benchmarks' ``--split``: commits resolved in memory, to say what the durable log costs.

Never a headline figure: nothing is durable with it, which the product never allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from eventlog import Append, Log, Record


class MemoryCommits:
    """``append``/``submit`` resolved in memory, once per loop iteration (a group commit that writes nothing)."""

    def __init__(self) -> None:
        self.last_seq = 0
        self._pending: list[tuple[asyncio.Future[Record], str, str, int, Any, float]] = []
        self._many: list[tuple[asyncio.Future[list[Record | BaseException]], Sequence[Append]]] = []

    async def append(self, kind: str, eid: str, expected: int, event: Any, at: float | None = None, *,
                     command: Any = None) -> Record:
        return await self.submit(kind, eid, expected, event, at)

    def submit(self, kind: str, eid: str, expected: int, event: Any, at: float | None = None, *,
               command: Any = None, new: bool = False) -> asyncio.Future[Record]:
        """Queue the append; ``command`` (an inbox completion) and ``new`` (a hint) change nothing here."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Record] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._commit)
        self._pending.append((fut, kind, eid, expected + 1, event, at or 0.0))
        return fut

    def submit_many(self, appends: Sequence[Append]) -> asyncio.Future[list[Record | BaseException]]:
        """Queue the appends with one future for all (``Log.submit_many``)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Record | BaseException]] = loop.create_future()
        if not self._pending and not self._many:
            loop.call_soon(self._commit)
        self._many.append((fut, appends))
        return fut

    def _commit(self) -> None:
        pending, self._pending = self._pending, []
        for fut, kind, eid, eseq, event, at in pending:
            self.last_seq += 1
            fut.set_result(Record(self.last_seq, kind, eid, eseq, event, at))
        many, self._many = self._many, []
        for done, appends in many:
            out: list[Record | BaseException] = []
            for kind, eid, expected, event, when, _cmd, _new in appends:
                self.last_seq += 1
                out.append(Record(self.last_seq, kind, eid, expected + 1, event, when or 0.0))
            done.set_result(out)


def skip_durability(log: Log) -> MemoryCommits:
    """Make this open log's appends resolve in memory (reads, commands and the rest stay real)."""
    mem = MemoryCommits()
    log.append = mem.append  # type: ignore[method-assign,assignment]
    log.submit = mem.submit  # type: ignore[method-assign,assignment]
    log.submit_many = mem.submit_many  # type: ignore[method-assign]
    return mem
