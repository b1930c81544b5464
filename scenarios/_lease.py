"""The writer lease, simulated: several runtimes of one scenario share its log, and only the holder's writes land.

The scenario runner keeps one event log per segment (as a real deployment keeps one database). Each runtime it
opens writes through a :class:`FencedLog` carrying the epoch it was given; :class:`SimLease` holds the current
epoch. A **stalled** runtime's appends wait at the gate (a frozen process sends nothing); when it resumes, each of
them, and every later one, is checked against the epoch as PostgreSQL's batch statement does: if another runtime
took the lease meanwhile, the append is refused with :class:`eventlog.LeaseLost` and the stale runtime stops, as a
real one does. Everything happens on the scenario's loop at its commit points, so runs stay deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from eventlog import Append, Event, LeaseLost, Log, Record


class SimLease:
    """Who may write the scenario's log: the epoch of the current holder (1 for the first runtime)."""

    def __init__(self) -> None:
        self.epoch = 0

    def take(self) -> int:
        """A new holder: the next epoch (every older writer is fenced from now on)."""
        self.epoch += 1
        return self.epoch


class FencedLog:
    """A runtime's view of the shared log: appends fenced by ``epoch``, a gate for stalls; all else delegated."""

    def __init__(self, log: Log, lease: SimLease, epoch: int) -> None:
        self._log = log
        self._lease = lease
        self.epoch = epoch
        self._running = anyio.Event()
        self._running.set()
        self._lost: LeaseLost | None = None
        self._lost_event = anyio.Event()
        self.refused = 0
        """Appends refused because another runtime held the lease (a stale runtime's writes that did not land)."""
        self._held: list[tuple[asyncio.Future[Any], Callable[..., asyncio.Future[Any]], tuple[Any, ...],
                               dict[str, Any]]] = []
        """Submits made while stalled (the actor kernel's appends), handed on in order when it resumes."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    # -- stalls ------------------------------------------------------------------------------------------------
    def stall(self) -> None:
        """From now on appends wait (the process is frozen) until :meth:`resume`."""
        self._running = anyio.Event()

    def resume(self) -> None:
        self._running.set()
        held, self._held = self._held, []
        for outer, submit, args, kw in held:  # in the order they were made, before any later one
            self._forward(outer, submit(*args, **kw))

    @property
    def stalled(self) -> bool:
        return not self._running.is_set()

    # -- the fence ---------------------------------------------------------------------------------------------
    @property
    def current(self) -> bool:
        """Whether this runtime still holds the lease."""
        return self._lease.epoch == self.epoch

    def _check(self) -> None:
        if self._lost is None and not self.current:
            self._lost = LeaseLost(
                f"{self._log.path}: this writer (epoch {self.epoch}) lost its writer lease: epoch "
                f"{self._lease.epoch} took it while this one stalled; nothing more it appends is written"
            )
            self._lost_event.set()
        if self._lost is not None:
            self.refused += 1
            raise self._lost

    async def append(self, entity_kind: str, entity_id: str, expected_entity_seq: int, event: Event,
                     at: float | None = None, **kw: Any) -> Record:
        if not self._running.is_set():
            await self._running.wait()
        self._check()
        return await self._log.append(entity_kind, entity_id, expected_entity_seq, event, at, **kw)

    def submit(self, *args: Any, **kw: Any) -> asyncio.Future[Record]:
        """The actor kernel's append (``Log.submit``), fenced like :meth:`append`: held while stalled, refused (the
        future fails with :class:`LeaseLost`, as a real backend's batch does) once another runtime took the lease."""
        if not self._running.is_set():
            held: asyncio.Future[Record] = asyncio.get_running_loop().create_future()
            self._held.append((held, self.submit, args, kw))
            return held
        try:
            self._check()
        except LeaseLost as e:
            refused: asyncio.Future[Record] = asyncio.get_running_loop().create_future()
            refused.set_exception(e)
            return refused
        return self._log.submit(*args, **kw)

    def submit_many(self, appends: Sequence[Append]) -> asyncio.Future[list[Record | BaseException]]:
        """The kernel's appends of one pass (``Log.submit_many``), fenced as :meth:`submit` fences each of them: a
        refused pass fails every append with :class:`LeaseLost` (each counted in ``refused``)."""
        if not self._running.is_set():
            held: asyncio.Future[list[Record | BaseException]] = asyncio.get_running_loop().create_future()
            self._held.append((held, self.submit_many, (appends,), {}))
            return held
        try:
            self._check()
        except LeaseLost as e:
            self.refused += len(appends) - 1  # _check counted one
            refused: asyncio.Future[list[Record | BaseException]] = asyncio.get_running_loop().create_future()
            refused.set_result([e] * len(appends))
            return refused
        return self._log.submit_many(appends)

    @staticmethod
    def _forward(outer: asyncio.Future[Any], inner: asyncio.Future[Any]) -> None:
        def done(f: asyncio.Future[Any]) -> None:
            if outer.done():
                return
            if f.cancelled():
                outer.cancel()
            elif (e := f.exception()) is not None:
                outer.set_exception(e)
            else:
                outer.set_result(f.result())

        inner.add_done_callback(done)

    @property
    def lease_lost(self) -> LeaseLost | None:
        return self._lost

    async def wait_lease_lost(self) -> LeaseLost:
        await self._lost_event.wait()
        assert self._lost is not None
        return self._lost

    async def abort(self) -> None:
        """A crash of the holder drops the log's pending appends; a stale runtime has none there to drop."""
        if self.current:
            await self._log.abort()

    async def commit(self) -> None:
        """Only the runner commits (at its commit points); a runtime asking for a commit waits for one."""
        if self.current:
            await self._log.commit()
