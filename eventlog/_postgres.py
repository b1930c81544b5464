"""The PostgreSQL event log: the shared body (``_core.LogCore``) on asyncpg, fenced by a writer lease.

PostgreSQL-specific here:

- **one statement per batch** (``_pg_schema.APPEND_BATCH``): the lease fence, the event rows (``unnest`` of
  arrays), new and updated entity tips and the NOTIFY, in one round trip and one implicit transaction;
- **the writer lease**: taken at open (``lease_wait`` seconds of waiting for a holder to go), extended by every
  batch and by a renewal task when idle, given back at close; a batch or a renewal that finds the epoch gone or
  the lease expired fences this log (:class:`LeaseLost`, every append refused from then on);
- **a dropped connection** during a batch: the writer reconnects and reads the lease row, which every batch
  stamps with its number (the idempotency key): the batch is retried if it did not commit, reported committed
  if it did, never written twice; if the server stays out of reach past the lease, the log is fenced;
- **readers follow** through LISTEN/NOTIFY (the writer notifies in the committing statement) and look again
  after every wake-up and every few seconds, so a missed notification costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, Final

from . import _pg_schema as q
from ._core import (
    COMPACTED,
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
    LeaseLost,
    LogAccessDenied,
    LogClosedError,
    LogNotFoundError,
    LogUnreachableError,
    WriterLockedError,
)
from ._events import REGISTRY, EventRegistry
from ._logging import get_logger
from ._records import CommandState, Lease
from ._target import PgTarget

log = get_logger("wantbuild.eventlog")

DEFAULT_LEASE_TTL: Final = 10.0
"""Seconds a writer lease lasts without renewal: what a standby waits after its writer's death at most."""
_FOLLOW_FALLBACK: Final = 5.0
"""A follower looks for new events at least this often even without a notification."""
_LOOKUP_CHUNK: Final = 5000
_SYNCHRONOUS_COMMIT: Final = {"power": "on", "process": "off"}

_CONNECTION_LOST: tuple[type[BaseException], ...] = ()


def _pg() -> Any:
    """asyncpg, imported on first use: a program that only opens SQLite logs never pays its import (~70 ms)."""
    global _CONNECTION_LOST
    import asyncpg

    if not _CONNECTION_LOST:
        # Errors after which a connection is gone and the outcome of the statement in flight is unknown.
        _CONNECTION_LOST = (
            OSError,
            asyncio.TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.AdminShutdownError,
            asyncpg.exceptions.CrashShutdownError,
            asyncpg.exceptions.CannotConnectNowError,
            # A connection the server closed while idle can fail its next call with "another operation is in
            # progress" before asyncpg marks it closed: as lost, the statement's outcome is checked, not assumed.
            asyncpg.exceptions.InternalClientError,
        )
    return asyncpg


def _lost(e: BaseException) -> bool:
    return isinstance(e, _CONNECTION_LOST)


def _owner_name(owner: str | None) -> str:
    base = f"pid {os.getpid()} on {socket.gethostname()}"
    return f"{owner} ({base})" if owner else base


class PostgresEventLog(LogCore):
    """An append-only log of typed events in a PostgreSQL schema. Create it with :meth:`open` (or ``open_log``).

    Everything :class:`EventLog` promises holds here too (the contract tests run against both); in addition a
    writer holds the log's **writer lease**: any number of processes on any machines may open the log, one of
    them writes, and a writer that lost its lease (it stalled past ``lease_ttl``, or another took over) has
    every further write refused with :class:`LeaseLost`.
    """

    _shield_open = False  # opening may wait for the lease: it must stay cancellable
    # A batch's statement raises the log's own errors (translated from asyncpg's): CommitError, the batch did not
    # commit; LeaseLost is caught before them.
    _db_errors = (EventLogError, OSError)

    def __init__(self, url: str, *, lease_ttl: float | None, lease_wait: float | None, owner: str | None,
                 connect_timeout: float, durability: Durability = "power", **options: Any) -> None:
        self._target = PgTarget(url)
        super().__init__(self._target.display, **options)
        if lease_ttl is None:
            lease_ttl = self._target.lease_ttl if self._target.lease_ttl is not None else DEFAULT_LEASE_TTL
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be > 0 seconds, got {lease_ttl}")
        self._lease_ttl = float(lease_ttl)
        self._lease_wait = lease_wait
        self._owner = _owner_name(owner)
        self._connect_timeout = connect_timeout
        if durability not in _SYNCHRONOUS_COMMIT:
            raise ValueError(f"durability must be 'process' or 'power', got {durability!r}")
        self._durability = durability
        self._read_only = False
        s = self._quoted = '"' + self._target.schema + '"'
        self._sql_append = q.APPEND_BATCH.format(s=s)
        self._sql_lease = q.LEASE_STATE.format(s=s)
        self._sql_renew = q.RENEW_LEASE.format(s=s)
        self._channel = q.channel(self._target.schema)
        self._wconn: Any = None  # the writer's connection (batches, lookups, lease)
        self._wlock = asyncio.Lock()
        self._pool: Any = None  # reads and the command inbox
        self._listener: Any = None  # LISTEN connection of a following reader
        self._notified = asyncio.Event()
        self._epoch = 0
        self._batch = 0
        self._lease_valid_until = 0.0  # monotonic: when the lease lapses unless renewed (as this side sees it)
        self._renewer: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls,
        url: str,
        *,
        fingerprint: str | None = None,
        accept_fingerprint_change: bool = False,
        now: Callable[[], float] = time.time,
        writer: bool = True,
        max_batch: int = 4096,
        max_wait: float = 0.0,
        autocommit: bool = True,
        registry: EventRegistry = REGISTRY,
        entity_cache_size: int = 600_000,
        poll_interval: float = 0.1,
        lease_ttl: float | None = None,
        lease_wait: float | None = 0.0,
        owner: str | None = None,
        connect_timeout: float = 10.0,
        durability: Durability = "power",
    ) -> AbstractAsyncContextManager[PostgresEventLog]:
        """Open (and on first use create) the log at ``url``; an async context manager.

        ``url`` is ``postgresql://user:password@host:port/database?schema=name`` (any libpq-style parameter
        asyncpg understands may follow; ``schema`` defaults to ``wantbuild``). The options shared with
        :meth:`EventLog.open` mean the same. A writer takes the writer lease: ``lease_ttl`` is how long it lasts
        without renewal (default: ``?lease_ttl=`` in the URL, else 10 s; the log renews it with every batch, and
        every ``lease_ttl / 3`` s when idle); ``lease_wait`` is how long to wait for another writer's lease to
        lapse (``None``: as long as it takes, the way a standby waits) before :class:`WriterLockedError`.
        ``owner`` names this writer in the lease. ``durability``: ``"power"`` (default) commits with
        ``synchronous_commit = on`` (acknowledged once on the server's disk); ``"process"`` with ``off`` (a commit
        survives this process's crash, not the server's; several times faster per commit).
        """
        return open_core(
            cls(
                url,
                fingerprint=fingerprint,
                accept_fingerprint_change=accept_fingerprint_change,
                now=now,
                writer=writer,
                max_batch=max_batch,
                max_wait=max_wait,
                autocommit=autocommit,
                registry=registry,
                entity_cache_size=entity_cache_size,
                poll_interval=poll_interval,
                lease_ttl=lease_ttl,
                lease_wait=lease_wait,
                owner=owner,
                connect_timeout=connect_timeout,
                durability=durability,
            )
        )

    # ------------------------------------------------------------------ connections and errors

    def _error(self, e: BaseException, doing: str) -> EventLogError:
        """Turn a driver error met while ``doing`` into the log's error, naming the URL and the fix."""
        if isinstance(e, EventLogError):
            return e
        asyncpg = _pg()
        what = self._target.scrub(f"{type(e).__name__}: {e}")
        url = self._path
        if isinstance(e, asyncpg.InvalidPasswordError):
            return LogAccessDenied(f"{url}: the server refused the password ({what}); fix the password in the URL")
        if isinstance(e, asyncpg.InvalidAuthorizationSpecificationError):
            return LogAccessDenied(
                f"{url}: the server refused the connection ({what}); check the user name in the URL and the "
                "server's pg_hba.conf"
            )
        if isinstance(e, asyncpg.InsufficientPrivilegeError):
            return LogAccessDenied(
                f"{url}: permission denied while {doing} ({what}); grant the user the privilege (e.g. GRANT CREATE "
                f"ON DATABASE ... TO user, or create schema {self._target.schema} for it)"
            )
        if isinstance(e, asyncpg.InvalidCatalogNameError):
            return LogNotFoundError(
                f"{url}: {what}; create the database (createdb NAME, or CREATE DATABASE) or fix the URL"
            )
        if _lost(e) or isinstance(e, asyncpg.TooManyConnectionsError):
            return LogUnreachableError(
                f"{url}: cannot reach the PostgreSQL server while {doing} ({what}); check that it is running and "
                "that the host and port in the URL are right"
            )
        return EventLogError(f"{url}: PostgreSQL error while {doing}: {what}")

    def _settings(self, role: str) -> dict[str, str]:
        """Session settings: ``application_name`` says which log and which role (what to look for in
        ``pg_stat_activity``), unless the URL sets its own; the writer's ``synchronous_commit`` is its
        ``durability``."""
        settings = {}
        if "application_name" not in self._target.dsn:
            settings["application_name"] = f"wantbuild {role} {self._target.schema}"[:63]
        if role == "writer":
            settings["synchronous_commit"] = _SYNCHRONOUS_COMMIT[self._durability]
        return settings

    async def _connect(self, role: str = "writer") -> Any:
        try:
            conn = await _pg().connect(self._target.dsn, timeout=self._connect_timeout,
                                         server_settings=self._settings(role))
        except BaseException as e:
            if isinstance(e, Exception):
                raise self._error(e, "connecting") from None
            raise
        return conn

    async def _reconnect_writer(self, deadline: float) -> Any:
        """The writer's connection, reconnecting with back-off until the monotonic ``deadline`` (then raise)."""
        delay = 0.05
        while True:
            if self._wconn is not None and not self._wconn.is_closed():
                return self._wconn
            try:
                conn = await _pg().connect(self._target.dsn, timeout=min(
                    self._connect_timeout, max(0.1, deadline - time.monotonic())),
                    server_settings=self._settings("writer"))
                if self._epoch:
                    await conn.execute(q.REATTACH_LEASE.format(s=self._quoted), self._epoch)
                self._wconn = conn
                log.warning("eventlog reconnected", path=self._path)
                return conn
            except Exception as e:
                if not _lost(e) or time.monotonic() + delay >= deadline:
                    raise self._error(e, "reconnecting") from e
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _drop_writer_conn(self) -> None:
        conn, self._wconn = self._wconn, None
        if conn is not None:
            conn.terminate()

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        """A read on the pool; once more on a fresh connection if the first one turned out dead."""
        if self._pool is None:
            raise LogClosedError(f"{self._path}: the event log is closed")
        for attempt in (1, 2):
            try:
                async with self._pool.acquire() as conn:
                    return list(await conn.fetch(sql, *args))
            except Exception as e:
                if attempt == 2 or not _lost(e):
                    raise self._error(e, "reading") from e
                self._pool.expire_connections()
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ opening and closing

    async def _db_start(self) -> None:
        try:
            self._pool = await _pg().create_pool(self._target.dsn, min_size=1, max_size=4,
                                                   timeout=self._connect_timeout,
                                                   server_settings=self._settings("reader"))
        except Exception as e:
            raise self._error(e, "connecting") from None
        if self._writer:
            self._wconn = await self._connect()
            await self._init_or_check(self._wconn)
            await self._acquire(self._wconn)
            # The lease row's last_seq is the high-water mark: every batch writes it with its events.
            mark = (await self._fetch(self._sql_lease))[0][3]
            problems = await self._tail_problems(str(mark))
            if problems:
                log.info("eventlog damaged, not opened for writing", path=self._path, problems=problems)
                raise DamagedLogError(self._path, problems)
            self._renewer = asyncio.create_task(self._renew_loop(), name=f"eventlog lease {self._path}")
        else:
            async with self._pool.acquire() as conn:
                await self._init_or_check(conn)

    async def _init_or_check(self, conn: Any) -> None:
        schema = self._target.schema
        try:
            async with conn.transaction():
                if self._writer:
                    await conn.execute(q.CREATE_LOCK, schema)
                tables = {r[0] for r in await conn.fetch(q.SCHEMA_TABLES, schema)}
                if not tables:
                    if not self._writer:
                        raise LogNotFoundError(
                            f"{self._path}: no event log here (schema {schema} has no log); a runtime creates it "
                            "when it first opens the log (`wantbuild run GRAPH.toml --db URL`)"
                        )
                    await self._create(conn)
                elif not {"meta", "events", "writer_lease"} <= tables:
                    raise CorruptLogError(
                        f"{self._path}: not a wantbuild event log (schema {schema} holds other tables: "
                        f"{', '.join(sorted(tables))}); choose another schema with ?schema=NAME in the URL"
                    )
                else:
                    meta = {k: v for k, v in await conn.fetch(f"SELECT key, value FROM {self._quoted}.meta")}
                    if meta.get("format") != "wantbuild event log":
                        raise CorruptLogError(
                            f"{self._path}: not a wantbuild event log (schema {schema} has a meta table without "
                            "format 'wantbuild event log'); choose another schema with ?schema=NAME in the URL"
                        )
                    updates = self._check_meta(meta)
                    if updates:
                        await conn.executemany(
                            f"INSERT INTO {self._quoted}.meta (key, value) VALUES ($1, $2) "
                            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                            list(updates.items()),
                        )
                if self._writer and not {"snapshots", "snapshot_pieces"} <= tables:
                    await conn.execute(q.CREATE_SNAPSHOTS.format(s=self._quoted))
        except EventLogError:
            raise
        except Exception as e:
            raise self._error(e, "opening the log") from e

    async def _create(self, conn: Any) -> None:
        await conn.execute(q.CREATE_SCHEMA.format(s=self._quoted))
        await conn.executemany(f"INSERT INTO {self._quoted}.meta (key, value) VALUES ($1, $2)",
                               list(self._new_meta().items()))
        log.info("eventlog created", path=self._path, schema_version=self._schema_version)

    async def _acquire(self, conn: Any) -> None:
        """Take the writer lease, waiting up to ``lease_wait`` seconds (None: forever) for a holder to go."""
        wait = self._lease_wait
        deadline = None if wait is None else time.monotonic() + wait
        sql = q.ACQUIRE_LEASE.format(s=self._quoted)
        while True:
            sent = time.monotonic()
            try:
                epoch = await conn.fetchval(sql, self._owner, self._lease_ttl)
            except Exception as e:
                raise self._error(e, "taking the writer lease") from e
            if epoch is not None:
                self._epoch = int(epoch)
                self._batch = 0
                self._lease_valid_until = sent + self._lease_ttl
                log.info("eventlog lease acquired", path=self._path, epoch=self._epoch, owner=self._owner)
                return
            holder = await conn.fetchrow(self._sql_lease)
            left = max(0.0, float(holder[2]))
            if not holder[5]:
                continue  # its session ended meanwhile: take it now
            if deadline is not None and time.monotonic() >= deadline:
                raise WriterLockedError(
                    f"{self._path}: a wantbuild runtime ({holder[0]}, epoch {holder[1]}) holds the writer lease "
                    f"of this log for another {left:.1f} s unless it renews it; only one process writes a log. "
                    "Talk to the running runtime through its command inbox (the CLI does this by itself), stop it "
                    "first, or wait for the lease (lease_wait)"
                )
            pause = min(left + 0.01, self._lease_ttl / 10, 1.0)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(max(pause, 0.01))

    async def _db_close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with suppress(BaseException):
                await self._renewer
            self._renewer = None
        if self._writer and self._wconn is not None and self._epoch and self._lease_lost is None:
            # Give the lease back, so a standby need not wait for it to lapse. A simulated crash (abort) only
            # marks its session gone, as a real crash would end it: the next writer may then take it at once.
            sql = q.DETACH_LEASE if self._aborting else q.RELEASE_LEASE
            with suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._wconn.execute(sql.format(s=self._quoted), self._epoch)
        for name in ("_wconn", "_listener"):
            conn = getattr(self, name)
            setattr(self, name, None)
            if conn is not None:
                with suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await conn.close()
                conn.terminate()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(2.0):
                    await pool.close()
            except Exception:
                pool.terminate()

    async def _db_max_keys(self) -> tuple[int, int]:
        rows = await self._fetch(
            f"SELECT (SELECT max(seq) FROM {self._quoted}.events), "
            f"(SELECT max(entity_key) FROM {self._quoted}.entities)"
        )
        return int(rows[0][0] or 0), int(rows[0][1] or 0)

    async def _db_types(self) -> list[TypeRow]:
        rows = await self._fetch(f"SELECT type_key, name, version FROM {self._quoted}.event_types")
        return [(int(tk), str(n), int(v)) for tk, n, v in rows]

    # ------------------------------------------------------------------ the lease

    async def _db_lease(self) -> Lease | None:
        row = (await self._fetch(self._sql_lease))[0]
        if row[2] is None or row[2] <= 0 or not row[0] or not row[5]:
            return None  # never taken, lapsed, or its writer's session is gone (it crashed)
        return Lease(owner=row[0], epoch=int(row[1]), expires_in=float(row[2]))

    @property
    def epoch(self) -> int:
        """This writer's lease epoch (0 in a reader)."""
        return self._epoch

    @property
    def lease_ttl(self) -> float:
        return self._lease_ttl

    async def renew_lease(self) -> None:
        """Extend this writer's lease by ``lease_ttl`` now; :class:`LeaseLost` (and the log fenced) if it is gone.

        Batches and an idle-time task renew it already; call this before a long step that must not lose it.
        """
        self._check_writable()
        sent = time.monotonic()
        async with self._wlock:
            conn = await self._reconnect_writer(self._lease_valid_until)
            try:
                got = await conn.fetchval(self._sql_renew, self._lease_ttl, self._epoch)
            except Exception as e:
                if _lost(e):
                    self._drop_writer_conn()
                raise self._error(e, "renewing the writer lease") from e
        if got is None:
            err = await self._lease_lost_error("renewing it")
            self._fence(err)
            raise err
        self._lease_valid_until = max(self._lease_valid_until, sent + self._lease_ttl)

    async def _renew_loop(self) -> None:
        """Renew the lease whenever no batch has for a third of its TTL; fence the log when it cannot."""
        interval = self._lease_ttl / 3
        while self._lease_lost is None:
            since = time.monotonic() - (self._lease_valid_until - self._lease_ttl)
            await asyncio.sleep(max(0.0, interval - since))
            if time.monotonic() - (self._lease_valid_until - self._lease_ttl) < interval * 0.9:
                continue  # a batch renewed it meanwhile
            try:
                await self.renew_lease()
            except LeaseLost:
                return
            except EventLogError as e:
                if time.monotonic() >= self._lease_valid_until:
                    self._fence(LeaseLost(
                        f"{self._path}: this writer (epoch {self._epoch}) could not renew its lease before it "
                        f"lapsed ({e}); it writes no more: restart the runtime once the database is reachable"
                    ))
                    return
                log.warning("eventlog lease renewal failed, retrying", path=self._path, error=str(e))
                await asyncio.sleep(min(1.0, interval / 3))

    async def _lease_lost_error(self, doing: str) -> LeaseLost:
        """The :class:`LeaseLost` to raise, saying who holds the lease now (if the database can say)."""
        try:
            row = (await self._fetch(self._sql_lease))[0]
            now_ = f"; the lease is now epoch {row[1]} held by {row[0] or 'nobody'}"
            if int(row[1]) == self._epoch:
                now_ = f"; it lapsed {max(0.0, -float(row[2])):.1f} s ago and nobody took it"
        except Exception:
            now_ = ""
        return LeaseLost(
            f"{self._path}: this writer (epoch {self._epoch}, {self._owner}) lost its writer lease while {doing}"
            f"{now_}; nothing more it appends is written: stop this runtime (another one owns the log now, or "
            "restart it to take the lease again)"
        )

    # ------------------------------------------------------------------ writing

    async def _db_lookup(self, keys: list[tuple[str, str]]) -> list[NewEntityRow]:
        sql = q.LOOKUP_ENTITIES.format(s=self._quoted)
        out: list[NewEntityRow] = []
        for i in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[i : i + _LOOKUP_CHUNK]
            kinds = [k for k, _ in chunk]
            ids = [e for _, e in chunk]
            for attempt in (1, 2):
                try:
                    async with self._wlock:
                        conn = await self._reconnect_writer(self._lease_valid_until)
                        rows = await conn.fetch(sql, kinds, ids)
                    break
                except Exception as e:
                    if attempt == 2 or not _lost(e):
                        raise self._error(e, "looking up entities") from e
                    self._drop_writer_conn()
            out.extend((int(a), b, c, int(d), int(e_)) for a, b, c, d, e_ in rows)
        return out

    async def _db_write(self, types: list[TypeRow], rows: list[EventRow], new: list[NewEntityRow],
                        upd: list[UpdateEntityRow], commands: list[tuple[float, str, int]], mark: int | None) -> None:
        # ``mark`` is SQLite's: here every batch writes its last seq into the lease row, the open check's mark.
        if self._aborting:
            raise Aborted
        if commands:
            # Only the writer completes commands, and its batches are fenced: checking first is race-free.
            ids = [c[2] for c in commands]
            pending = {int(r[0]) for r in await self._fetch(
                f"SELECT id FROM {self._quoted}.commands WHERE id = ANY($1::bigint[]) AND completed_at IS NULL", ids)}
            seen: set[int] = set()
            bad = []
            for i, cid in enumerate(ids):
                if cid not in pending or cid in seen:
                    bad.append(i)
                seen.add(cid)
            if bad:
                raise CommandsNotPending(bad)
        cm: Sequence[Sequence[Any]] = ([c[2] for c in commands], [c[0] for c in commands], [c[1] for c in commands])
        batch = self._batch + 1
        ev = list(zip(*rows, strict=True))
        ty: Sequence[Sequence[Any]] = list(zip(*types, strict=True)) if types else ([], [], [])
        ne: Sequence[Sequence[Any]] = list(zip(*new, strict=True)) if new else ([], [], [], [], [])
        ue: Sequence[Sequence[Any]] = list(zip(*upd, strict=True)) if upd else ([], [], [])
        args = (self._lease_ttl, self._epoch, rows[-1][0], batch, *ty, *ev, *ne, *ue, self._channel, *cm)
        while True:
            sent = time.monotonic()
            try:
                async with self._wlock:
                    conn = await self._reconnect_writer(self._lease_valid_until)
                    got = await conn.fetchval(self._sql_append, *args)
            except EventLogError as e:  # could not reconnect before the lease lapsed
                raise LeaseLost(
                    f"{self._path}: this writer (epoch {self._epoch}) lost contact with the database for longer "
                    f"than its lease ({e}); the batch of seq {rows[0][0]}..{rows[-1][0]} may or may not have "
                    "committed, and this writer writes no more: restart the runtime (it replays what committed)"
                ) from e
            except Exception as e:
                if not _lost(e):
                    raise self._error(e, "committing a batch") from e
                self._drop_writer_conn()
                log.warning("eventlog connection lost during a batch", path=self._path, batch=batch,
                            error=self._target.scrub(str(e)))
                if await self._batch_committed(batch, rows):
                    break
                continue  # it did not commit: send it again (the fence still decides)
            if got is None:
                raise await self._lease_lost_error(f"committing the batch of seq {rows[0][0]}..{rows[-1][0]}")
            self._lease_valid_until = max(self._lease_valid_until, sent + self._lease_ttl)
            break
        self._batch = batch

    async def _batch_committed(self, batch: int, rows: list[EventRow]) -> bool:
        """After a lost connection: did batch number ``batch`` commit? (The lease row holds the last batch's.)"""
        try:
            async with self._wlock:
                conn = await self._reconnect_writer(self._lease_valid_until)
                row = await conn.fetchrow(self._sql_lease)
        except Exception as e:
            raise LeaseLost(
                f"{self._path}: this writer (epoch {self._epoch}) lost contact with the database for longer than "
                f"its lease ({self._target.scrub(str(e))}); the batch of seq {rows[0][0]}..{rows[-1][0]} may or may "
                "not have committed, and this writer writes no more: restart the runtime (it replays what committed)"
            ) from e
        _owner, epoch, _left, last_seq, last_batch, _alive = row
        if int(epoch) != self._epoch:
            raise await self._lease_lost_error(f"reconnecting during the batch of seq {rows[0][0]}..{rows[-1][0]}")
        if int(last_batch) == batch and int(last_seq) == rows[-1][0]:
            log.info("eventlog batch had committed before the connection dropped", path=self._path, batch=batch)
            return True
        if int(last_batch) == batch - 1:
            return False
        raise CorruptLogError(  # pragma: no cover - only a foreign writer under our epoch could do this
            f"{self._path}: the lease row says batch {last_batch} (seq {last_seq}) of epoch {epoch}, but this writer "
            f"was committing batch {batch}; another process writes under this writer's epoch"
        )

    # ------------------------------------------------------------------ reading

    def _scan_sql(self, until_seq: int | None, until_time: float | None, kinds: list[str] | None,
                  entity_id: str | None, type_keys: list[int] | None) -> tuple[str, list[Any]]:
        conds = ["e.seq >= $1"]
        params: list[Any] = []

        def arg(value: Any) -> str:
            params.append(value)
            return f"${len(params) + 1}"

        if until_seq is not None:
            conds.append(f"e.seq <= {arg(until_seq)}")
        if until_time is not None:
            conds.append(f"e.at <= {arg(until_time)}")
        if kinds is not None:
            conds.append(f"n.kind = ANY({arg(kinds)}::text[])")
        if entity_id is not None:
            conds.append(f"n.entity_id = {arg(entity_id)}")
        if type_keys is not None:
            conds.append(f"e.type_key = ANY({arg(type_keys)}::integer[])")
        limit = f"${len(params) + 2}"
        sql = q.SELECT_EVENTS.format(s=self._quoted) + "WHERE " + " AND ".join(conds) + f" ORDER BY e.seq LIMIT {limit}"
        return sql, params

    async def _db_scan(self, from_seq: int, until_seq: int | None, until_time: float | None,
                       kinds: list[str] | None, entity_id: str | None, type_keys: list[int] | None,
                       chunk: int) -> AsyncIterator[list[ReadRow]]:
        sql, params = self._scan_sql(until_seq, until_time, kinds, entity_id, type_keys)
        nxt = from_seq
        while True:
            rows = await self._fetch(sql, nxt, *params, chunk)
            if not rows:
                return
            yield rows
            if len(rows) < chunk:
                return
            nxt = rows[-1][0] + 1

    async def _db_wait_commits(self, after_seq: int) -> None:
        if self._listener is None or self._listener.is_closed():
            await self._listen()
            return  # look again now: a commit may have landed before LISTEN took effect
        try:
            async with asyncio.timeout(_FOLLOW_FALLBACK):
                await self._notified.wait()
        except TimeoutError:
            pass
        self._notified.clear()

    async def _listen(self) -> None:
        self._notified.clear()
        try:
            conn = await self._connect("listener")
            await conn.add_listener(self._channel, self._on_notify)
        except Exception as e:
            log.warning("eventlog cannot listen for commits, polling", path=self._path, error=str(e))
            await asyncio.sleep(min(_FOLLOW_FALLBACK, max(self._poll_interval, 0.5)))
            return
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn

    def _on_notify(self, *_: object) -> None:
        self._notified.set()

    def _on_listener_lost(self, *_: object) -> None:
        self._listener = None
        self._notified.set()  # wake the follower: it reconnects and looks again

    async def _db_history(self, entity_kind: str, entity_id: str) -> list[tuple[int, int, int, bytes, float]]:
        return [tuple(r) for r in await self._fetch(q.SELECT_HISTORY.format(s=self._quoted), entity_kind, entity_id)]

    async def _db_histories(self, entity_kind: str,
                            entity_ids: list[str]) -> list[tuple[str, int, int, int, bytes, float]]:
        sql = q.SELECT_HISTORIES.format(s=self._quoted)
        return [tuple(r) for r in await self._fetch(sql, entity_kind, entity_ids)]

    async def _db_entity_ids(self, entity_kind: str) -> list[str]:
        return [r[0] for r in await self._fetch(f"SELECT entity_id FROM {self._quoted}.entities WHERE kind = $1",
                                                entity_kind)]

    async def _db_entity_seq(self, entity_kind: str, entity_id: str) -> int:
        rows = await self._fetch(
            f"SELECT last_entity_seq FROM {self._quoted}.entities WHERE kind = $1 AND entity_id = $2",
            entity_kind, entity_id,
        )
        return int(rows[0][0]) if rows else 0

    async def _db_verify_events(self) -> AsyncIterator[list[tuple[int, int, int, int | None, int, bytes]]]:
        sql = (f"SELECT seq, entity_key, entity_seq, prev_seq, type_key, payload FROM {self._quoted}.events "
               "WHERE seq > $1 ORDER BY seq LIMIT 10000")
        last = 0
        while True:
            rows = await self._fetch(sql, last)
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    async def _db_verify_entities(self) -> list[NewEntityRow]:
        return [tuple(r) for r in await self._fetch(
            f"SELECT entity_key, kind, entity_id, last_seq, last_entity_seq FROM {self._quoted}.entities "
            "ORDER BY entity_key"
        )]

    # ------------------------------------------------------------------ command inbox

    async def _db_submit_command(self, name: str, body: str, at: float) -> int:
        rows = await self._fetch(
            f"INSERT INTO {self._quoted}.commands (name, payload, submitted_at) VALUES ($1, $2, $3) RETURNING id",
            name, body, at,
        )
        return int(rows[0][0])

    async def _db_pending_commands(self) -> list[tuple[int, str, str, float]]:
        return [tuple(r) for r in await self._fetch(
            f"SELECT id, name, payload, submitted_at FROM {self._quoted}.commands WHERE completed_at IS NULL "
            "ORDER BY id"
        )]

    async def _db_complete_command(self, command_id: int, at: float, body: str) -> bool:
        # Fenced like a batch: a writer that lost its lease completes nothing.
        rows = await self._fetch(
            f"UPDATE {self._quoted}.commands SET completed_at = $1, result = $2 WHERE id = $3 "
            f"AND completed_at IS NULL AND EXISTS (SELECT 1 FROM {self._quoted}.writer_lease "
            "WHERE id = 1 AND epoch = $4 AND expires_at > clock_timestamp()) RETURNING id",
            at, body, command_id, self._epoch,
        )
        if rows:
            return True
        state = (await self._fetch(self._sql_lease))[0]
        if int(state[1]) != self._epoch or float(state[2]) <= 0:
            err = await self._lease_lost_error(f"completing command {command_id}")
            self._fence(err)
            raise err
        return False

    async def _db_command(self, command_id: int) -> tuple[int, str, str, float, float | None, str | None] | None:
        rows = await self._fetch(
            f"SELECT id, name, payload, submitted_at, completed_at, result FROM {self._quoted}.commands WHERE id = $1",
            command_id,
        )
        return tuple(rows[0]) if rows else None

    async def _db_commands(self, state: CommandState | None, limit: int | None, newest_first: bool,
                           ) -> list[tuple[int, str, str, float, float | None, str | None]]:
        sql = f"SELECT id, name, payload, submitted_at, completed_at, result FROM {self._quoted}.commands"
        params: list[Any] = []
        if state == "pending":
            sql += " WHERE completed_at IS NULL"
        elif state is not None:
            params.append(state)
            sql += f" WHERE {q.COMMAND_STATE} = $1"
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        if limit is not None:
            params.append(limit)
            sql += f" LIMIT ${len(params)}"
        return [tuple(r) for r in await self._fetch(sql, *params)]

    async def _db_command_counts(self) -> dict[str, int]:
        rows = await self._fetch(f"SELECT {q.COMMAND_STATE} AS state, count(*) FROM {self._quoted}.commands GROUP BY 1")
        return {str(state): int(n) for state, n in rows}

    # ------------------------------------------------------------------ snapshots

    async def _snapshot_write(self, sql: str, *args: Any) -> None:
        """A snapshot write on a pooled connection: concurrent with the writer's batches, never holding them up.
        Idempotent (a retry after a lost connection rewrites the same row)."""
        await self._fetch(sql, *args)

    async def _db_snapshot_piece(self, seq: int, piece: int, data: bytes) -> None:
        await self._snapshot_write(
            f"INSERT INTO {self._quoted}.snapshot_pieces (seq, piece, data) VALUES ($1, $2, $3) "
            "ON CONFLICT (seq, piece) DO UPDATE SET data = EXCLUDED.data", seq, piece, data)

    async def _db_snapshot_head(self, row: tuple[int, float, str, int, int, str, float, int]) -> None:
        await self._snapshot_write(f"DELETE FROM {self._quoted}.snapshot_pieces WHERE seq = $1 AND piece >= $2",
                                   row[0], row[7])
        await self._snapshot_write(
            f"INSERT INTO {self._quoted}.snapshots (seq, at, format, size, stored, checksum, created_at, pieces) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (seq) DO UPDATE SET at = EXCLUDED.at, "
            "format = EXCLUDED.format, size = EXCLUDED.size, stored = EXCLUDED.stored, "
            "checksum = EXCLUDED.checksum, created_at = EXCLUDED.created_at, pieces = EXCLUDED.pieces", *row)

    async def _db_snapshot_list(self) -> list[tuple[int, float, str, int, int, str, float, int]]:
        exists = await self._fetch("SELECT to_regclass($1)", f"{self._quoted}.snapshots")
        if exists[0][0] is None:
            return []  # a log no writer has opened since snapshots exist
        rows = await self._fetch(f"SELECT seq, at, format, size, stored, checksum, created_at, pieces "
                                 f"FROM {self._quoted}.snapshots ORDER BY seq DESC")
        return [(int(a), float(b), str(c), int(d), int(e), str(f), float(g), int(h)) for a, b, c, d, e, f, g, h in rows]

    async def _db_snapshot_pieces(self, seq: int) -> list[tuple[int, bytes]]:
        rows = await self._fetch(
            f"SELECT piece, data FROM {self._quoted}.snapshot_pieces WHERE seq = $1 ORDER BY piece", seq)
        return [(int(i), bytes(d)) for i, d in rows]

    async def _db_drop_events(self, entities: list[tuple[str, str]], through_seq: int) -> int:
        s = self._quoted
        async with self._wlock:
            conn = await self._reconnect_writer(self._lease_valid_until)
            try:
                async with conn.transaction():
                    held = await conn.fetchval(f"SELECT 1 FROM {s}.writer_lease WHERE id = 1 AND epoch = $1 AND "
                                               "expires_at > clock_timestamp() FOR UPDATE", self._epoch)
                    if held is None:
                        raise await self._lease_lost_error("dropping events")
                    status = await conn.execute(
                        f"DELETE FROM {s}.events e USING {s}.entities n, unnest($2::text[], $3::text[]) AS v(k, i) "
                        "WHERE e.entity_key = n.entity_key AND n.kind = v.k AND n.entity_id = v.i AND e.seq <= $1",
                        through_seq, [k for k, _ in entities], [i for _, i in entities])
                    await conn.execute(
                        f"INSERT INTO {s}.meta (key, value) VALUES ('{COMPACTED}', $1) ON CONFLICT (key) DO UPDATE "
                        "SET value = GREATEST(meta.value::bigint, EXCLUDED.value::bigint)::text", str(through_seq))
            except EventLogError:
                raise
            except Exception as e:
                raise self._error(e, "dropping events") from e
        return int(status.split()[-1])

    async def _db_snapshot_delete(self, seqs: list[int]) -> None:
        await self._snapshot_write(f"DELETE FROM {self._quoted}.snapshots WHERE seq = ANY($1::bigint[])", seqs)
        await self._snapshot_write(f"DELETE FROM {self._quoted}.snapshot_pieces WHERE seq = ANY($1::bigint[])", seqs)

    # ------------------------------------------------------------------ the open check's reads

    async def _db_events_at(self, seqs: Collection[int]) -> dict[int, tuple[int, int]]:
        rows = await self._fetch(
            f"SELECT seq, entity_key, entity_seq FROM {self._quoted}.events WHERE seq = ANY($1::bigint[])", list(seqs)
        )
        return {int(seq): (int(ek), int(es)) for seq, ek, es in rows}

    async def _db_tail(self, n: int) -> list[tuple[int, int, int, int | None, int, bytes]]:
        return [tuple(r) for r in await self._fetch(
            f"SELECT seq, entity_key, entity_seq, prev_seq, type_key, payload FROM {self._quoted}.events "
            "ORDER BY seq DESC LIMIT $1", n
        )]

    async def _db_entities_by_key(self, keys: list[int]) -> list[NewEntityRow]:
        return [tuple(r) for r in await self._fetch(
            f"SELECT entity_key, kind, entity_id, last_seq, last_entity_seq FROM {self._quoted}.entities "
            "WHERE entity_key = ANY($1::bigint[])", keys
        )]

    @property
    def read_only(self) -> bool:
        """Always False: a PostgreSQL reader may submit commands (if the server lets its user insert)."""
        return self._read_only
