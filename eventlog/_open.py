"""One way in for every backend: :func:`open_log` and the :class:`Log` protocol the rest of wantbuild codes to.

``open_log("run.db")`` opens the SQLite log in that file; ``open_log("postgresql://user:pw@host/db")`` the
PostgreSQL log in that database (schema ``wantbuild`` unless ``?schema=NAME``). Both return a :class:`Log`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from ._core import Append, Durability
from ._errors import LeaseLost
from ._events import Event
from ._log import EventLog
from ._postgres import PostgresEventLog
from ._records import Command, CommandState, Lease, Record, SnapshotInfo, VerifyReport
from ._target import is_postgres

_SQLITE_ONLY = frozenset({"busy_timeout"})
_POSTGRES_ONLY = frozenset({"lease_ttl", "owner", "connect_timeout"})


@runtime_checkable
class Log(Protocol):
    """What wantbuild needs of an event log, whichever database holds it (see ``docs/eventlog.md``)."""

    @property
    def path(self) -> str:
        """The log's file, or its URL with the password hidden: what messages name."""

    @property
    def fingerprint(self) -> str | None: ...

    @property
    def schema_version(self) -> int: ...

    @property
    def last_seq(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    @property
    def writer(self) -> bool: ...

    @property
    def lease_lost(self) -> LeaseLost | None: ...

    def pending(self) -> int: ...

    @property
    def durability(self) -> Durability: ...

    @property
    def read_only(self) -> bool: ...

    async def append(self, entity_kind: str, entity_id: str, expected_entity_seq: int, event: Event,
                     at: float | None = None, *, command: tuple[int, Mapping[str, Any]] | None = None) -> Record: ...

    def submit(self, entity_kind: str, entity_id: str, expected_entity_seq: int, event: Event,
               at: float | None = None, *, command: tuple[int, Mapping[str, Any]] | None = None,
               new: bool = False) -> asyncio.Future[Record]:
        """:meth:`append` without waiting: queue it now, return the future of its record."""

    def submit_many(self, appends: Sequence[Append]) -> asyncio.Future[list[Record | BaseException]]:
        """:meth:`submit` for many appends with one future for all: each one's record or error, in order (the actor
        kernel's, once per pass)."""

    async def commit(self) -> None: ...

    def forget_tips(self, entity_kind: str, entity_ids: Iterable[str]) -> None:
        """Drop the writer's cached tips of these entities (they will not move soon); safe at any time."""

    async def close(self) -> None: ...

    async def abort(self) -> None: ...

    def read(self, from_seq: int = 1, *, until_seq: int | None = None, until_time: float | None = None,
             kinds: Collection[str] | None = None, entity_id: str | None = None,
             types: Collection[str] | None = None) -> AsyncIterator[Record]: ...

    def read_batches(self, from_seq: int = 1, *, until_seq: int | None = None,
                     batch_size: int = 10000) -> AsyncIterator[list[Record]]: ...

    def follow(self, from_seq: int = 1, *, until_seq: int | None = None, until_time: float | None = None,
               kinds: Collection[str] | None = None, entity_id: str | None = None,
               types: Collection[str] | None = None) -> AsyncIterator[Record]: ...

    async def history(self, entity_kind: str, entity_id: str, *, until_seq: int | None = None) -> list[Record]: ...

    async def histories(self, entity_kind: str, entity_ids: Collection[str]) -> dict[str, list[Record]]: ...

    async def entity_ids(self, entity_kind: str) -> list[str]: ...

    async def entity_seq(self, entity_kind: str, entity_id: str) -> int: ...

    async def verify(self) -> VerifyReport: ...

    async def submit_command(self, name: str, payload: Mapping[str, Any]) -> int: ...

    async def pending_commands(self) -> list[Command]: ...

    async def complete_command(self, command_id: int, result: Mapping[str, Any]) -> None: ...

    async def command(self, command_id: int) -> Command | None: ...

    async def commands(self, state: CommandState | None = None, *, limit: int | None = None,
                       newest_first: bool = False) -> list[Command]: ...

    async def command_counts(self) -> dict[CommandState, int]: ...

    async def write_snapshot(self, seq: int, at: float, format: str, data: bytes | Sequence[bytes]) -> SnapshotInfo:
        """Store a snapshot covering events ``1..seq`` (the writer only); see ``LogCore.write_snapshot``."""

    async def snapshots(self) -> list[SnapshotInfo]:
        """The stored snapshots, newest first."""

    async def read_snapshot(self, snapshot: SnapshotInfo) -> bytes:
        """A snapshot's bytes, checked; :class:`SnapshotError` if they cannot be trusted."""

    async def delete_snapshots(self, seqs: Collection[int]) -> None: ...

    @property
    def compacted_through(self) -> int:
        """The seq through which events of terminal entities were dropped (0: never); see ``drop_events``."""

    async def drop_events(self, entities: Collection[tuple[str, str]], through_seq: int) -> int: ...

    async def lease(self) -> Lease | None:
        """Who holds the writer lease (SQLite: the lock file) now; ``None`` when no writer runs."""

    async def renew_lease(self) -> None:
        """Extend this writer's lease now; :class:`LeaseLost` if it is gone (SQLite: nothing to do)."""

    async def wait_lease_lost(self) -> LeaseLost:
        """Return once this writer has lost its lease (a SQLite lock is never lost: waits forever)."""


def open_log(target: str | os.PathLike[str], **options: Any) -> AbstractAsyncContextManager[Log]:
    """Open the log at ``target``: a ``postgresql://`` (or ``postgres://``) URL, or else a SQLite file path.

    ``options`` are those of :meth:`EventLog.open` (SQLite) or :meth:`PostgresEventLog.open`; the common ones
    (``fingerprint``, ``writer``, ``now``, ``max_batch``, ``autocommit``...) mean the same for both. An option
    only the other backend knows is refused with a ``TypeError`` that says so.
    """
    if isinstance(target, str) and is_postgres(target):
        _refuse(options, _SQLITE_ONLY, "SQLite", target)
        return PostgresEventLog.open(target, **options)  # as given: str() of a CLI URL hides its password
    _refuse(options, _POSTGRES_ONLY, "PostgreSQL", target)
    return EventLog.open(target, **options)


def _refuse(options: Mapping[str, Any], only: frozenset[str], backend: str, target: str | os.PathLike[str]) -> None:
    wrong = sorted(set(options) & only)
    if wrong:
        from ._target import redact

        raise TypeError(f"{redact(target)}: option(s) {', '.join(wrong)} apply only to {backend} logs")
