"""The SQLite event log: one file, one writer task, group commit (the shared body is ``_core.LogCore``).

SQLite-specific here: the file and its connections (aiosqlite: one for the writer, one for reads and the
command inbox), the writer lock (``flock`` on ``<path>.lock``), and each batch written in one trip to the
writer connection's thread. See ``docs/eventlog.md`` for the schema, the measurements behind it and the
error list.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from itertools import chain
from typing import Any, Final
from urllib.parse import quote

import aiosqlite
import anyio
import anyio.lowlevel

from ._core import (
    COMPACTED,
    DEFAULT_DURABILITY,
    Aborted,
    CommandsNotPending,
    Durability,
    EventRow,
    LogCore,
    NewEntityRow,
    ReadRow,
    TypeRow,
    UpdateEntityRow,
    open_core,
)
from ._errors import (
    CorruptLogError,
    DamagedLogError,
    EventLogError,
    LogClosedError,
    LogNotFoundError,
    ReadOnlyLogError,
    WriterLockedError,
)
from ._events import REGISTRY, EventRegistry
from ._lock import WriterLock, lock_owner, writer_active
from ._logging import get_logger
from ._records import CommandState, Lease, Record
from ._schema import (
    APPLICATION_ID,
    COMMAND_STATE,
    COMPLETE_COMMAND,
    CREATE_SCHEMA,
    CREATE_SNAPSHOTS,
    HIGH_WATER,
    INSERT_ENTITY,
    INSERT_EVENT,
    INSERT_TYPE,
    LOOKUP_ENTITIES_CHUNK,
    MULTI_ROWS_MAX,
    SELECT_EVENTS,
    SELECT_HISTORIES,
    SELECT_HISTORY,
    UPDATE_ENTITY,
    UPDATE_HIGH_WATER,
    lookup_entities_sql,
    multi_row_sql,
)

log = get_logger("wantbuild.eventlog")

_SYNCHRONOUS: Final[dict[str, str]] = {"process": "NORMAL", "power": "FULL"}
_LOOKUP_KEYS: Final = 500  # keys per `IN (...)` query (SQLite allows 32,766 bound parameters)
_INLINE_ROWS: Final = 1 << 30
"""A batch of at most this many appends is written on the event loop's thread rather than through the
connection's thread (so, with this value, every batch; see docs/performance.md, "The actor kernel"). A thread
round trip cost ~50-100 us here, and more on a loaded machine, as much as committing a small batch, and a
dependency chain is a sequence of small commits. For big batches the thread does not help either: the sqlite3
module releases the GIL around each row's step, so a writer thread and a busy loop pass the GIL back and forth
per row (measured: 4,600 partitions/s through the thread, 7,800 inline, same sitting)."""


class _MultiRowSql(dict[int, str]):
    """``rows -> SQL`` inserting that many rows at once (``_schema.multi_row_sql``), each string made once: the
    statement cache of the sqlite3 module finds it by identity, without hashing or comparing its ~10 KB again."""

    def __init__(self, single: str) -> None:
        super().__init__()
        self.single = single

    def __missing__(self, rows: int) -> str:
        sql = self[rows] = multi_row_sql(self.single, rows)
        return sql


_EVENT_SQL: Final = _MultiRowSql(INSERT_EVENT)
_ENTITY_SQL: Final = _MultiRowSql(INSERT_ENTITY)


def _insert_rows(conn: sqlite3.Connection, sql: _MultiRowSql, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (at least one) with as few multi-row statements as the sizes ``1, 2, 4 .. MULTI_ROWS_MAX``
    allow, largest first (a batch of 250 rows: 128 + 64 + 32 + 16 + 8 + 2)."""
    n = len(rows)
    if n == 1:
        conn.execute(sql.single, rows[0])
        return
    width = len(rows[0])
    flat = list(chain.from_iterable(rows))
    i = 0
    while i < n:
        size = min(1 << ((n - i).bit_length() - 1), MULTI_ROWS_MAX)
        conn.execute(sql[size], flat[i * width:(i + size) * width])
        i += size


def _write_batch_sync(
    conn: sqlite3.Connection,
    types: list[TypeRow],
    rows: list[EventRow],
    new: list[NewEntityRow],
    upd: list[UpdateEntityRow],
    aborting: Callable[[], bool],
    commands: Sequence[tuple[float, str, int]] = (),
    mark: int | None = None,
) -> None:
    """Write one batch in one transaction, on the connection's own thread; roll back on any error.

    ``mark``, when given, is written as the high-water mark (see ``LogCore._needs_mark``).
    ``commands`` are inbox completions ``(completed_at, result, id)`` that commit with the batch; one whose
    command is not pending (completed already, or no such command) rolls the whole batch back with
    :class:`CommandsNotPending`, so the writer can retry the batch without its append.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if commands:
            bad = [i for i, row in enumerate(commands) if conn.execute(COMPLETE_COMMAND, row).rowcount != 1]
            if bad:
                raise CommandsNotPending(bad)
        if types:
            conn.executemany(INSERT_TYPE, types)
        _insert_rows(conn, _EVENT_SQL, rows)
        if new:
            _insert_rows(conn, _ENTITY_SQL, new)
        if upd:
            conn.executemany(UPDATE_ENTITY, upd)
        if mark is not None:
            conn.execute(UPDATE_HIGH_WATER, (mark,))
        if aborting():
            raise Aborted
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite rolls back by itself after some errors (e.g. SQLITE_FULL)
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _fetch_sync(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """A query on the writer's connection (on the loop's thread or the connection's: see ``_on_wconn``)."""
    return conn.execute(sql, params).fetchall()


def _drop_events_sync(conn: sqlite3.Connection, entities: list[tuple[str, str]], through_seq: int) -> int:
    """Delete these entities' events up to ``through_seq`` and raise the compaction mark, in one transaction.
    One pass over the events up to that seq (a rowid range), each checked against a temporary table of keys."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS drop_keys (k INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM drop_keys")
        conn.executemany("INSERT OR IGNORE INTO drop_keys SELECT entity_key FROM entities WHERE kind = ? AND "
                         "entity_id = ?", entities)
        n = conn.execute("DELETE FROM events WHERE seq <= ? AND entity_key IN (SELECT k FROM drop_keys)",
                         (through_seq,)).rowcount
        conn.execute(f"INSERT INTO meta (key, value) VALUES ('{COMPACTED}', ?) ON CONFLICT (key) DO UPDATE SET "
                     "value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))", (str(through_seq),))
        conn.execute("DELETE FROM drop_keys")
        conn.execute("COMMIT")
        return int(n)
    except BaseException:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _execute_in_tx(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> None:
    """One statement in its own transaction (a snapshot's piece, head row or deletion)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


async def _in_db_thread(db: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(connection, *args)`` on an aiosqlite connection's worker thread, in one round trip.

    aiosqlite has no public call for this; ``Connection._execute`` (present and unchanged from 0.17 to
    0.22) is the primitive its own methods use. A batch needs BEGIN, several ``executemany`` and COMMIT:
    as separate aiosqlite calls that is five thread round trips of ~0.1 ms each on this machine, 7% of the
    append budget, and a transaction that other coroutines could interleave with.
    ``tests/test_eventlog_internals.py`` pins this dependency.
    """
    return await db._execute(_with_conn, db, fn, args)


def _with_conn(db: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return fn(db._conn, *args)


_ENTITY_IDS: Final = "SELECT entity_id FROM entities WHERE kind = ?"


def _db_uri(path: str, mode: str) -> str:
    return f"file:{quote(os.path.abspath(path))}?mode={mode}"


def _cannot_write_here(e: sqlite3.Error) -> bool:
    """Whether SQLite failed because this process may not write the file, its folder, or its WAL index."""
    name = getattr(e, "sqlite_errorname", "")
    return name.startswith("SQLITE_READONLY") or name == "SQLITE_CANTOPEN"


class EventLog(LogCore):
    """An append-only log of typed events in one SQLite file. Create it with :meth:`open`.

    One process writes a log (``writer=True`` takes an exclusive lock on ``<path>.lock``); any number of
    processes may read it (``writer=False``) and submit commands to the writer through the command inbox.

    **Cancellation.** Cancelling a task that awaits :meth:`append` does not withdraw the append: once
    ``append`` has been called, the event is part of the next batch and may still be committed. The caller
    just is not told. (Write-ahead still holds: whoever was cancelled must not act as if it committed.)

    **Command inbox, exactly once.** :meth:`submit_command` stores a command; the writer process reads
    :meth:`pending_commands`, handles each and calls :meth:`complete_command` with its result. A command that
    was never completed (the runtime crashed while handling it) is delivered again by
    :meth:`pending_commands` after a restart: delivery is at least once, so handling must be idempotent (for
    example, the want created for a command takes an id derived from the command id, and the handler first
    checks whether it exists). Together that consumes every command exactly once.
    """

    # What a batch that failed in the database raises: CommitError, the batch did not commit. ProgrammingError and
    # InterfaceError (both sqlite3.Error) mean the API was used wrongly, e.g. a closed connection or a value that
    # cannot be bound: a bug, like any other exception, which stops the writer (see LogCore._writer_failed).
    _db_errors = (sqlite3.Error, OSError)
    _bug_db_errors = (sqlite3.ProgrammingError, sqlite3.InterfaceError)

    def __init__(self, path: str, *, busy_timeout: float, lease_wait: float | None = 0.0,
                 durability: Durability = DEFAULT_DURABILITY, **options: Any) -> None:
        if durability not in _SYNCHRONOUS:
            raise ValueError(
                f"durability must be 'process' (a commit survives the process dying) or 'power' (it also survives "
                f"power loss and OS crashes, at the cost of a disk flush per batch), got {durability!r}"
            )
        super().__init__(path, **options)
        self._durability: Durability = durability
        self._read_only = False  # a reader that could open the file only for reading (no commands)
        self._busy_timeout = busy_timeout
        self._lease_wait = lease_wait
        self._lock: WriterLock | None = None
        self._wdb: Any = None  # aiosqlite.Connection of the writer
        self._rdb: Any = None  # aiosqlite.Connection for reads and the command inbox
        self._now_db: sqlite3.Connection | None = None  # histories_now's own read connection, opened on first use
        self._inline_rows = _INLINE_ROWS
        self._wconn = asyncio.Lock()
        """Held across a call on the writer connection's thread: the batches the writer commits on the loop's
        thread, and the snapshot and compaction transactions, take turns on that one connection (see ``_on_wconn``)."""

    # ------------------------------------------------------------------ opening and closing

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        fingerprint: str | None = None,
        accept_fingerprint_change: bool = False,
        now: Callable[[], float] = time.time,
        writer: bool = True,
        max_batch: int = 4096,
        max_wait: float = 0.0,
        autocommit: bool = True,
        registry: EventRegistry = REGISTRY,
        busy_timeout: float = 5.0,
        entity_cache_size: int = 600_000,
        poll_interval: float = 0.1,
        lease_wait: float | None = 0.0,
        durability: Durability = DEFAULT_DURABILITY,
    ) -> AbstractAsyncContextManager[EventLog]:
        """Open (and on first use create) the log at ``path``; an async context manager.

        ``fingerprint`` is the graph's fingerprint: a log written for another graph raises
        :class:`FingerprintMismatch` unless ``accept_fingerprint_change`` (then the new fingerprint is
        recorded and the old one kept in ``meta``). ``now`` stamps each event's ``at``. ``writer=False``
        opens an existing log for reading and for submitting commands, without the writer lock.

        Group commit: a batch is at most ``max_batch`` appends; after the first append arrives the writer
        waits up to ``max_wait`` seconds for more (0: it takes whatever queued while the previous batch was
        committing). With ``autocommit=False`` nothing is written until :meth:`commit` is called, so batch
        boundaries, and therefore the log, depend only on the order of appends and commits.

        ``busy_timeout`` bounds how long a write waits for a lock held by another connection;
        ``entity_cache_size`` bounds the writer's cache of entity tips; ``poll_interval`` is how often
        :meth:`follow` looks for new events when another process writes. ``lease_wait`` is how long a writer
        waits for another process's writer lock (``None``: until it is free, as a standby would); then
        :class:`WriterLockedError`.

        ``durability`` says which crash a commit survives, i.e. what returning from :meth:`append` promises:
        ``"process"`` (WAL, ``synchronous=NORMAL``): the death of the process, however it dies; after a power
        loss or an OS crash the last commits may be gone (the log stays consistent, it just ends earlier).
        ``"power"`` (``synchronous=FULL``): power loss and OS crashes too, at the cost of one disk flush per
        batch. ``docs/eventlog.md`` has the measurements and why ``"process"`` is the default.
        """
        return open_core(
            cls(
                os.fspath(path),
                fingerprint=fingerprint,
                accept_fingerprint_change=accept_fingerprint_change,
                now=now,
                writer=writer,
                max_batch=max_batch,
                max_wait=max_wait,
                autocommit=autocommit,
                registry=registry,
                busy_timeout=busy_timeout,
                entity_cache_size=entity_cache_size,
                poll_interval=poll_interval,
                lease_wait=lease_wait,
                durability=durability,
            )
        )

    async def _connect(self, mode: str, *, inline: bool = False) -> Any:
        if mode == "rw" and not os.path.exists(self._path):  # noqa: ASYNC240 - one stat, at open
            # Refuse before connecting: a failed aiosqlite.connect leaves its worker thread behind.
            raise LogNotFoundError(f"{self._path}: no event log here (no such file)")
        try:
            # ``inline``: the writer's connection is also used from the loop's thread (never at the same time as
            # from its own: the writer task awaits each of its calls); SQLite itself is built serialized.
            db = await aiosqlite.connect(_db_uri(self._path, mode), uri=True, isolation_level=None,
                                         check_same_thread=not inline)
        except sqlite3.OperationalError as e:
            if mode == "rw":
                raise LogNotFoundError(f"{self._path}: no event log here ({e})") from e
            raise EventLogError(f"{self._path}: cannot open the event log: {e}") from e
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            if self._writer and mode == "rwc":
                await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[self._durability]}")
            if self._durability == "power":  # macOS flushes the drive's own cache only with F_FULLFSYNC
                await db.execute("PRAGMA fullfsync = ON")
        except sqlite3.DatabaseError as e:
            await db.close()
            if _cannot_write_here(e):
                raise  # a reader falls back to reading only (_connect_reader); _start explains it to a writer
            raise self._corrupt_open_error(e) from e
        return db

    def _corrupt_open_error(self, e: sqlite3.Error) -> EventLogError:
        if isinstance(e, sqlite3.DatabaseError) and "not a database" in str(e):
            return CorruptLogError(f"{self._path}: not a wantbuild event log: not a SQLite database ({e})")
        if self._writer and _cannot_write_here(e):
            return EventLogError(
                f"{self._path}: cannot open the log for writing: the file or its folder is read-only for this user "
                f"({e}); make them writable, or open the log with writer=False to read it (the CLI's query "
                "commands, such as status, events and replay, do)"
            )
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            return EventLogError(
                f"{self._path}: cannot open the event log: another process has held its write lock for more than "
                f"{self._busy_timeout:g} s ({e}); it is not a wantbuild runtime (that would be refused at once): a "
                f"tool with an open write transaction, or a copy or backup in progress. Find it with `fuser "
                f"{self._path}`, let it finish, then try again"
            )
        return EventLogError(f"{self._path}: cannot open the event log: {e}")

    async def _connect_reader(self) -> Any:
        """A reader's connection: read-write if it may (to submit commands), else read-only, else immutable.

        SQLite reads a WAL-mode database through its ``-shm`` index, which a reader creates (or opens for
        writing) next to the file: in a read-only folder without one, or beside a read-only ``-shm``, the
        read-write and read-only opens fail. Then the file is opened ``immutable=1``: read as a plain file,
        with no locking and without the WAL. That is exact when there is no WAL (a log closed cleanly, the
        usual state of a log in a read-only place); a non-empty ``-wal`` holds commits that immutable reading
        would not see, so that case is refused with the way out instead of showing an older state.
        """
        for mode in ("rw", "ro"):
            db = None
            try:
                db = await self._connect(mode)
                await db.execute_fetchall("SELECT COUNT(*) FROM sqlite_master")  # the first read opens the WAL
            except sqlite3.OperationalError as e:
                if db is not None:
                    await db.close()
                if not _cannot_write_here(e):
                    raise
                continue
            self._read_only = mode == "ro"
            return db
        wal = self._path + "-wal"
        size = os.path.getsize(wal) if os.path.exists(wal) else 0  # noqa: ASYNC240 - two stats, at open
        if size:
            raise EventLogError(
                f"{self._path}: cannot read the log's latest commits: they are in {wal} ({size} bytes), and SQLite "
                f"reads that file only with write access to the folder (to create {self._path}-shm) or an existing "
                "-shm file; copy the log together with its -wal file to a folder you can write, and read the copy"
            )
        db = await self._connect("ro&immutable=1")
        self._read_only = True
        log.info("eventlog opened immutable", path=self._path, reason="read-only file or folder, no WAL")
        return db

    @property
    def read_only(self) -> bool:
        """Whether this reader had to open the log read-only (its folder or its ``-shm`` cannot be written).

        It reads everything; :meth:`submit_command` raises :class:`ReadOnlyLogError`, as it also does for a
        read-only file in a writable folder (which SQLite opens without saying it is read-only, so this is
        False then)."""
        return self._read_only

    async def _db_start(self) -> None:
        try:
            if self._writer:
                if self._lock is None:
                    self._lock = await self._take_lock()
                self._wdb = await self._connect("rwc", inline=True)
                await self._init_or_check(self._wdb)
                self._rdb = await self._connect("rw")
            else:
                self._rdb = await self._connect_reader()
                await self._init_or_check(self._rdb)
        except sqlite3.Error as e:
            raise self._corrupt_open_error(e) from e

    async def _wait_to_write(self) -> None:
        if self._writer and self._lease_wait != 0:  # waiting for another process's lock stays cancellable
            self._lock = await self._take_lock()

    async def _take_lock(self) -> WriterLock:
        """The writer lock, waiting up to ``lease_wait`` seconds (None: as long as it takes) for its holder."""
        deadline = None if self._lease_wait is None else time.monotonic() + self._lease_wait
        while True:
            try:
                return WriterLock(self._path)
            except WriterLockedError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
            pause = 0.05 if deadline is None else min(0.05, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(pause)

    async def _init_or_check(self, db: Any, *, schema_wait: float = 2.0) -> None:
        """Create the schema in an empty database, or check that this is a log we can use.

        A reader that finds the database empty while a writer holds the lock has arrived between the writer's
        lock and its schema commit (milliseconds): it waits up to ``schema_wait`` seconds for the schema.
        """
        if not self._writer:
            deadline = time.monotonic() + schema_wait
            # The writer is (usually) another process: there is nothing to wait on but the file itself.
            while (not await db.execute_fetchall("SELECT 1 FROM sqlite_master WHERE type='table' LIMIT 1")  # noqa: ASYNC110
                   and writer_active(self._path) and time.monotonic() < deadline):
                await asyncio.sleep(0.01)
        if self._writer:
            await db.execute("BEGIN IMMEDIATE")
        try:
            tables = {r[0] for r in await db.execute_fetchall("SELECT name FROM sqlite_master WHERE type='table'")}
            app_id = (await db.execute_fetchall("PRAGMA application_id"))[0][0]
            if not tables and app_id == 0:
                if not self._writer:
                    raise LogNotFoundError(f"{self._path}: no event log here (the database is empty)")
                await self._create(db)
            elif "meta" not in tables or "events" not in tables or app_id != APPLICATION_ID:
                raise CorruptLogError(
                    f"{self._path}: not a wantbuild event log (a SQLite database with other content; "
                    f"application_id {app_id:#x}, tables: {', '.join(sorted(tables)) or 'none'})"
                )
            else:
                if self._writer:  # a read-only file opens "read-write" without a word: find out now, not at append
                    await db.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
                meta = dict(await db.execute_fetchall("SELECT key, value FROM meta"))
                updates = self._check_meta(meta)
                if self._writer:
                    problems = await self._tail_problems(meta.get(HIGH_WATER))
                    if problems:  # the error says it all; logged for the record only
                        log.info("eventlog damaged, not opened for writing", path=self._path, problems=problems)
                        raise DamagedLogError(self._path, problems)
                    if HIGH_WATER not in meta:  # a log from before the mark: start it now
                        await db.execute(
                            "INSERT INTO meta (key, value) VALUES (?, (SELECT COALESCE(MAX(seq), 0) FROM events))",
                            (HIGH_WATER,),
                        )
                if updates:
                    await db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                         list(updates.items()))
            if self._writer:
                for statement in CREATE_SNAPSHOTS.split(";"):  # logs made before snapshots get their tables
                    if statement.strip():
                        await db.execute(statement)
                await db.execute("COMMIT")
        except BaseException:
            if self._writer:
                with suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
            raise

    async def _create(self, db: Any) -> None:
        for statement in CREATE_SCHEMA.split(";"):
            if statement.strip():
                await db.execute(statement)
        await db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        await db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                             [*self._new_meta().items(), (HIGH_WATER, "0")])
        log.info("eventlog created", path=self._path, schema_version=self._schema_version)

    async def _db_max_keys(self) -> tuple[int, int]:
        db = self._wdb if self._writer else self._rdb
        rows = await db.execute_fetchall("SELECT (SELECT MAX(seq) FROM events), (SELECT MAX(entity_key) FROM entities)")
        return rows[0][0] or 0, rows[0][1] or 0

    async def _db_types(self) -> list[TypeRow]:
        db = self._rdb if self._rdb is not None else self._wdb
        return list(await db.execute_fetchall("SELECT type_key, name, version FROM event_types"))

    async def _db_close(self) -> None:
        if self._now_db is not None:
            self._now_db.close()
            self._now_db = None
        for name in ("_rdb", "_wdb"):
            db = getattr(self, name)
            setattr(self, name, None)
            if db is not None:
                try:
                    await db.close()
                except sqlite3.Error as e:  # pragma: no cover - closing a healthy connection does not fail
                    log.warning("eventlog close failed", path=self._path, error=str(e))
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @staticmethod
    def writer_active(path: str | os.PathLike[str]) -> bool:
        """Whether a process (this one included) holds the writer lock of the log at ``path``."""
        return writer_active(os.fspath(path))

    async def _db_lease(self) -> Lease | None:
        if not writer_active(self._path):
            return None
        return Lease(owner=lock_owner(self._path), epoch=0, expires_in=None)

    # ------------------------------------------------------------------ writing

    async def _on_wconn(self, inline: bool, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(connection, *args)`` on the writer's connection: on the loop's thread (``inline``) or in one trip
        to the connection's thread, never overlapping another such call.

        A call on the loop's thread runs to its end without yielding, so it cannot overlap another inline call;
        a call on the connection's thread holds ``_wconn`` while it runs, and everything else waits for it. (Two
        transactions interleaved on one connection would be one transaction: a batch's rows committed by a
        snapshot piece's COMMIT, or a BEGIN failing inside the other.)
        """
        if inline and not self._wconn.locked():  # the common case: no await, nothing can come in between
            return fn(self._wdb._conn, *args)
        async with self._wconn:
            if inline:
                return fn(self._wdb._conn, *args)
            with anyio.CancelScope(shield=True):  # the thread goes on regardless: keep the connection till it ends
                return await _in_db_thread(self._wdb, fn, *args)

    async def _db_lookup(self, keys: list[tuple[str, str]]) -> list[NewEntityRow]:
        out: list[NewEntityRow] = []
        for i in range(0, len(keys), LOOKUP_ENTITIES_CHUNK):
            chunk = keys[i : i + LOOKUP_ENTITIES_CHUNK]
            params = [x for pair in chunk for x in pair]
            out.extend(await self._on_wconn(len(chunk) <= self._inline_rows, _fetch_sync,
                                            lookup_entities_sql(len(chunk)), params))
        return out

    async def _db_write(self, types: list[TypeRow], rows: list[EventRow], new: list[NewEntityRow],
                        upd: list[UpdateEntityRow], commands: list[tuple[float, str, int]], mark: int | None) -> None:
        # One call writes and commits the whole batch (or rolls it back): on the loop's thread up to
        # ``_inline_rows`` appends, else in one trip to the connection's thread.
        await self._on_wconn(len(rows) <= self._inline_rows, _write_batch_sync, types, rows, new, upd,
                             self._is_aborting, commands, mark)

    def _db(self) -> Any:
        return self._wdb if self._writer and self._wdb is not None else self._r()

    async def _db_events_at(self, seqs: Collection[int]) -> dict[int, tuple[int, int]]:
        keys = sorted(seqs)
        out: dict[int, tuple[int, int]] = {}
        for i in range(0, len(keys), _LOOKUP_KEYS):
            chunk = keys[i : i + _LOOKUP_KEYS]
            for seq, ek, eseq in await self._db().execute_fetchall(
                f"SELECT seq, entity_key, entity_seq FROM events WHERE seq IN ({','.join('?' * len(chunk))})", chunk
            ):
                out[seq] = (ek, eseq)
        return out

    async def _db_tail(self, n: int) -> list[tuple[int, int, int, int | None, int, bytes]]:
        return list(await self._db().execute_fetchall(
            "SELECT seq, entity_key, entity_seq, prev_seq, type_key, payload FROM events ORDER BY seq DESC LIMIT ?",
            (n,),
        ))

    async def _db_entities_by_key(self, keys: list[int]) -> list[NewEntityRow]:
        out: list[NewEntityRow] = []
        for i in range(0, len(keys), _LOOKUP_KEYS):
            chunk = keys[i : i + _LOOKUP_KEYS]
            out.extend(await self._db().execute_fetchall(
                "SELECT entity_key, kind, entity_id, last_seq, last_entity_seq FROM entities "
                f"WHERE entity_key IN ({','.join('?' * len(chunk))})", chunk
            ))
        return out

    # ------------------------------------------------------------------ snapshots

    async def _snapshot_tx(self, sql: str, params: Sequence[Any]) -> None:
        """One statement in its own transaction on the writer's connection, between two batches: on the loop's
        thread, like the batches (a piece is about a megabyte: a millisecond or two)."""
        await self._on_wconn(True, _execute_in_tx, sql, params)

    async def _db_snapshot_piece(self, seq: int, piece: int, data: bytes) -> None:
        await self._snapshot_tx("INSERT OR REPLACE INTO snapshot_pieces (seq, piece, data) VALUES (?, ?, ?)",
                                (seq, piece, data))

    async def _db_snapshot_head(self, row: tuple[int, float, str, int, int, str, float, int]) -> None:
        await self._snapshot_tx("DELETE FROM snapshot_pieces WHERE seq = ? AND piece >= ?", (row[0], row[7]))
        await anyio.lowlevel.checkpoint()  # each transaction runs inline without suspending: batches go between
        await self._snapshot_tx("INSERT OR REPLACE INTO snapshots (seq, at, format, size, stored, checksum, "
                                "created_at, pieces) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)

    async def _db_snapshot_list(self) -> list[tuple[int, float, str, int, int, str, float, int]]:
        try:
            return list(await self._r().execute_fetchall(
                "SELECT seq, at, format, size, stored, checksum, created_at, pieces FROM snapshots ORDER BY seq DESC"
            ))
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []  # a log no writer has opened since snapshots exist
            raise

    async def _db_snapshot_pieces(self, seq: int) -> list[tuple[int, bytes]]:
        return list(await self._r().execute_fetchall(
            "SELECT piece, CAST(data AS BLOB) FROM snapshot_pieces WHERE seq = ? ORDER BY piece", (seq,)
        ))

    async def _db_drop_events(self, entities: list[tuple[str, str]], through_seq: int) -> int:
        # On the connection's thread (it may take seconds); the writer's batches wait for it.
        return int(await self._on_wconn(False, _drop_events_sync, entities, through_seq))

    async def _db_snapshot_delete(self, seqs: list[int]) -> None:
        marks = ",".join("?" * len(seqs))
        await self._snapshot_tx(f"DELETE FROM snapshots WHERE seq IN ({marks})", seqs)
        pieces = await self._on_wconn(True, _fetch_sync,
                                      f"SELECT seq, piece FROM snapshot_pieces WHERE seq IN ({marks})", seqs)
        for seq, piece in pieces:  # a piece per transaction, as they were written: the writer's batches go between
            await self._snapshot_tx("DELETE FROM snapshot_pieces WHERE seq = ? AND piece = ?", (seq, piece))
            await anyio.lowlevel.checkpoint()  # (an inline transaction does not suspend by itself)

    # ------------------------------------------------------------------ reading

    def _r(self) -> Any:
        if not self._open or self._rdb is None:
            raise LogClosedError(f"{self._path}: the event log is closed")
        return self._rdb

    async def _db_scan(self, from_seq: int, until_seq: int | None, until_time: float | None,
                       kinds: list[str] | None, entity_id: str | None, type_keys: list[int] | None,
                       chunk: int) -> AsyncIterator[list[ReadRow]]:
        conds = ["e.seq >= ?"]
        params: list[Any] = []
        if until_seq is not None:
            conds.append("e.seq <= ?")
            params.append(until_seq)
        if until_time is not None:
            conds.append("e.at <= ?")
            params.append(until_time)
        if kinds is not None:
            conds.append(f"n.kind IN ({','.join('?' * len(kinds))})")
            params.extend(kinds)
        if entity_id is not None:
            conds.append("n.entity_id = ?")
            params.append(entity_id)
        if type_keys is not None:
            conds.append(f"e.type_key IN ({','.join('?' * len(type_keys))})")
            params.extend(type_keys)
        # CROSS JOIN keeps events as the outer loop: a rowid range scan, never a sort.
        sql = SELECT_EVENTS.replace("JOIN", "CROSS JOIN", 1) + "WHERE " + " AND ".join(conds)
        sql += " ORDER BY e.seq LIMIT ?"
        nxt = from_seq
        while True:
            rows = await self._r().execute_fetchall(sql, (nxt, *params, chunk))
            if not rows:
                return
            yield rows
            if len(rows) < chunk:
                return
            nxt = rows[-1][0] + 1

    async def _db_wait_commits(self, after_seq: int) -> None:
        await asyncio.sleep(self._poll_interval)

    async def _db_history(self, entity_kind: str, entity_id: str) -> list[tuple[int, int, int, bytes, float]]:
        return list(await self._r().execute_fetchall(SELECT_HISTORY, (entity_kind, entity_id)))

    async def _db_histories(self, entity_kind: str,
                            entity_ids: list[str]) -> list[tuple[str, int, int, int, bytes, float]]:
        out: list[tuple[str, int, int, int, bytes, float]] = []
        for i in range(0, len(entity_ids), LOOKUP_ENTITIES_CHUNK):
            chunk = entity_ids[i:i + LOOKUP_ENTITIES_CHUNK]
            sql = SELECT_HISTORIES.format(marks=",".join("?" * len(chunk)))
            out.extend(await self._r().execute_fetchall(sql, (entity_kind, *chunk)))
        return out

    def _sync_db(self) -> sqlite3.Connection:
        """The synchronous reads' own connection (opened on first use, closed with the log)."""
        self._check_readable()
        if not self._open:
            raise LogClosedError(f"{self._path}: the event log is closed")
        db = self._now_db
        if db is None:
            db = self._now_db = sqlite3.connect(_db_uri(self._path, "ro"), uri=True, isolation_level=None,
                                                check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        return db

    def histories_now(self, entity_kind: str, entity_ids: Collection[str]) -> dict[str, list[Record]]:
        """:meth:`histories`, synchronously, on a read connection of its own (WAL: it sees every committed
        batch). For a caller on the loop that cannot await (the World reading back an evicted entity for a
        synchronous reader): a few entities' chains are a few point reads, tens of microseconds each."""
        db = self._sync_db()
        ids = list(dict.fromkeys(entity_ids))
        out: dict[str, list[Record]] = {eid: [] for eid in ids}
        rows: list[tuple[int, str, str, int, int, bytes, float]] = []
        for i in range(0, len(ids), LOOKUP_ENTITIES_CHUNK):
            chunk = ids[i:i + LOOKUP_ENTITIES_CHUNK]
            sql = SELECT_HISTORIES.format(marks=",".join("?" * len(chunk)))
            rows.extend((s, entity_kind, eid, es, tk, p, at)
                        for eid, s, es, tk, p, at in db.execute(sql, (entity_kind, *chunk)).fetchall())
        try:
            recs = self._decode_fast(rows)
        except Exception:  # the slow path names the row that does not decode
            recs = [self._decode_one(*row) for row in rows]
        for rec in recs:
            out[rec.entity_id].append(rec)
        return out

    async def _db_entity_ids(self, entity_kind: str) -> list[str]:
        return [r[0] for r in await self._r().execute_fetchall(_ENTITY_IDS, (entity_kind,))]

    def entity_ids_now(self, entity_kind: str) -> list[str]:
        """:meth:`entity_ids`, synchronously (on :meth:`histories_now`'s connection)."""
        return [r[0] for r in self._sync_db().execute(_ENTITY_IDS, (entity_kind,)).fetchall()]

    async def _db_entity_seq(self, entity_kind: str, entity_id: str) -> int:
        rows = await self._r().execute_fetchall(
            "SELECT last_entity_seq FROM entities WHERE kind = ? AND entity_id = ?", (entity_kind, entity_id)
        )
        return int(rows[0][0]) if rows else 0

    async def _db_verify_events(self) -> AsyncIterator[list[tuple[int, int, int, int | None, int, bytes]]]:
        sql = ("SELECT seq, entity_key, entity_seq, prev_seq, type_key, payload FROM events "
               "WHERE seq > ? ORDER BY seq LIMIT 10000")
        last = 0
        while True:
            rows = await self._r().execute_fetchall(sql, (last,))
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    async def _db_verify_entities(self) -> list[NewEntityRow]:
        return list(await self._r().execute_fetchall(
            "SELECT entity_key, kind, entity_id, last_seq, last_entity_seq FROM entities ORDER BY entity_key"
        ))

    # ------------------------------------------------------------------ command inbox

    async def _db_submit_command(self, name: str, body: str, at: float) -> int:
        if self._read_only:
            raise ReadOnlyLogError(
                f"{self._path}: cannot store command {name!r}: the log's file or folder is read-only for this user; "
                "run the command as a user who can write the log's folder"
            )
        try:
            cur = await self._r().execute(
                "INSERT INTO commands (name, payload, submitted_at) VALUES (?, ?, ?)", (name, body, at)
            )
        except sqlite3.Error as e:
            if _cannot_write_here(e):
                raise ReadOnlyLogError(
                    f"{self._path}: cannot store command {name!r}: the log is read-only for this user ({e}); run "
                    "the command as a user who can write the log and its folder"
                ) from e
            raise
        return int(cur.lastrowid)

    async def _db_pending_commands(self) -> list[tuple[int, str, str, float]]:
        return list(await self._r().execute_fetchall(
            "SELECT id, name, payload, submitted_at FROM commands WHERE completed_at IS NULL ORDER BY id"
        ))

    async def _db_complete_command(self, command_id: int, at: float, body: str) -> bool:
        cur = await self._r().execute(COMPLETE_COMMAND, (at, body, command_id))
        return bool(cur.rowcount == 1)

    async def _db_commands(self, state: CommandState | None, limit: int | None, newest_first: bool,
                           ) -> list[tuple[int, str, str, float, float | None, str | None]]:
        sql = "SELECT id, name, payload, submitted_at, completed_at, result FROM commands"
        params: list[Any] = []
        if state == "pending":  # the partial index commands_pending serves this one
            sql += " WHERE completed_at IS NULL"
        elif state is not None:
            sql += f" WHERE {COMMAND_STATE} = ?"
            params.append(state)
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return list(await self._r().execute_fetchall(sql, params))

    async def _db_command_counts(self) -> dict[str, int]:
        rows = await self._r().execute_fetchall(
            f"SELECT {COMMAND_STATE} AS state, COUNT(*) FROM commands GROUP BY state"
        )
        return {str(state): int(n) for state, n in rows}

    async def _db_command(self, command_id: int) -> tuple[int, str, str, float, float | None, str | None] | None:
        rows = await self._r().execute_fetchall(
            "SELECT id, name, payload, submitted_at, completed_at, result FROM commands WHERE id = ?",
            (command_id,),
        )
        return tuple(rows[0]) if rows else None

