"""What every log backend shares: the writer task and its group commit, the entity tips cache, type keys,
decoding, ``follow``, ``verify`` and the command inbox's rules. A backend (SQLite in ``_log.py``, PostgreSQL in
``_postgres.py``) supplies the storage: opening, one atomic batch write, and the queries.

Durability contract: **returning from ``append`` means the event is committed.** Appends from any number of
tasks are queued; one writer task takes what has queued, checks each append's ``expected_entity_seq``
against the entity's last ``entity_seq``, numbers the accepted ones, and hands them to the backend, which
writes them in one transaction; when that transaction commits, every append in it resolves at once. An
append with a stale ``expected_entity_seq`` fails alone with :class:`ConcurrencyError`; a transaction that
cannot commit fails all of its appends with :class:`CommitError` and leaves nothing half-written.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import anyio
import anyio.lowlevel
import msgspec

from ._errors import (
    CommitError,
    ConcurrencyError,
    CorruptLogError,
    EventLogError,
    FingerprintMismatch,
    LeaseLost,
    LogClosedError,
    ReadOnlyLogError,
    SchemaVersionError,
)
from ._events import Event, EventRegistry
from ._logging import get_logger
from ._records import Command, Lease, Problem, Record, VerifyReport
from ._schema import SCHEMA_VERSION

log = get_logger("wantbuild.eventlog")
_Future = asyncio.Future

_Decode = Callable[[bytes], Event]
# A queued append: kind, id, expected entity_seq, event, type key, encoded payload, at, its future.
_Item = tuple[str, str, int, Event, int, bytes, float, "asyncio.Future[Record]"]
# Rows the writer hands to a backend per batch.
TypeRow = tuple[int, str, int]  # type_key, name, version
EventRow = tuple[int, int, int, int | None, int, bytes, float]  # seq, entity_key, entity_seq, prev, type_key, ...
NewEntityRow = tuple[int, str, str, int, int]  # entity_key, kind, entity_id, last_seq, last_entity_seq
UpdateEntityRow = tuple[int, int, int]  # last_seq, last_entity_seq, entity_key
# Rows a backend hands back for reading: seq, kind, entity_id, entity_seq, type_key, payload, at.
ReadRow = tuple[int, str, str, int, int, bytes, float]

_MAX_PROBLEMS: Final = 1000
L = TypeVar("L", bound="LogCore")
READ_CHUNK: Final = 1000


class _Entity:
    """The writer's cached state of one entity: committed tip and pending tip (including queued batches)."""

    __slots__ = ("ceseq", "cseq", "eid", "in_db", "key", "kind", "peseq", "pseq")

    def __init__(self, key: int, kind: str, eid: str, last_seq: int, last_eseq: int, in_db: bool) -> None:
        self.key = key
        self.kind = kind
        self.eid = eid
        self.cseq = self.pseq = last_seq
        self.ceseq = self.peseq = last_eseq
        self.in_db = in_db


class _Failure:
    __slots__ = ("error", "hi", "lo")

    def __init__(self, lo: int, hi: int, error: BaseException) -> None:
        self.lo, self.hi, self.error = lo, hi, error


class Aborted(Exception):
    """Internal: the log was aborted while a batch was being written."""


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class LogCore:
    """The backend-independent body of a log. Subclasses implement the storage hooks (``_db_*``)."""

    _shield_open = True

    def __init__(
        self,
        path: str,
        *,
        fingerprint: str | None,
        accept_fingerprint_change: bool,
        now: Callable[[], float],
        writer: bool,
        max_batch: int,
        max_wait: float,
        autocommit: bool,
        registry: EventRegistry,
        entity_cache_size: int,
        poll_interval: float,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, got {max_wait}")
        self._path = path
        self._want_fingerprint = fingerprint
        self._accept_fingerprint_change = accept_fingerprint_change
        self._now = now
        self._writer = writer
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._autocommit = autocommit
        self._registry = registry
        self._entity_cache_size = entity_cache_size
        self._poll_interval = poll_interval
        self._encode = registry.encoder.encode
        self._loop: asyncio.AbstractEventLoop | None = None

        self._open = False  # accepting appends and reads
        self._appendable = False  # open and the writer: the one flag append() checks
        self._closed = False  # fully closed
        self._schema_version = SCHEMA_VERSION
        self._fingerprint: str | None = None
        self._lease_lost: LeaseLost | None = None
        self._lease_lost_event = asyncio.Event()

        # Event types: class -> type_key for writing; type_key -> decoder for reading.
        self._type_keys: dict[type[Event], int] = {}
        self._type_by_name: dict[tuple[str, int], int] = {}
        self._type_names: dict[int, tuple[str, int]] = {}
        self._decoders: list[_Decode | None] = []
        self._unsaved_types: dict[int, tuple[str, int]] = {}
        self._next_type_key = 1

        # Writer state. Ordinals count appends: submitted >= taken >= done.
        self._incoming: list[_Item] = []
        self._taken = 0
        self._done = 0
        self._flush_to = 0
        self._wake: asyncio.Future[None] | None = None
        self._wake_at = 1 if autocommit else 1 << 62
        self._stopping = False
        self._aborting = False
        self._writer_done: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._closed_event = asyncio.Event()
        self._shutdown_started = False
        self._failures: deque[_Failure] = deque(maxlen=64)
        self._progress = asyncio.Event()
        self._cache: dict[tuple[str, str], _Entity] = {}
        self._next_seq = 1
        self._committed_seq = 0
        self._next_entity_key = 1

    # ------------------------------------------------------------------ storage hooks (the backend's part)

    async def _db_start(self) -> None:
        """Connect, create or check the schema (``_check_meta``), take the writer lock or lease if a writer."""
        raise NotImplementedError

    async def _db_close(self) -> None:
        """Close every connection and give back the writer lock or lease; never raises."""
        raise NotImplementedError

    async def _db_max_keys(self) -> tuple[int, int]:
        """The last ``seq`` and the last ``entity_key`` in the log (0 for none)."""
        raise NotImplementedError

    async def _db_types(self) -> list[TypeRow]:
        raise NotImplementedError

    async def _db_lookup(self, keys: list[tuple[str, str]]) -> list[NewEntityRow]:
        """The stored tips of these entities (those the log has): key, kind, id, last seq, last entity_seq."""
        raise NotImplementedError

    async def _db_write(self, types: list[TypeRow], rows: list[EventRow], new: list[NewEntityRow],
                        upd: list[UpdateEntityRow]) -> None:
        """Write one batch in one transaction, or nothing of it (then raise). Shielded by the caller."""
        raise NotImplementedError

    def _db_scan(self, from_seq: int, until_seq: int | None, until_time: float | None,
                 kinds: list[str] | None, entity_id: str | None, type_keys: list[int] | None,
                 chunk: int) -> AsyncIterator[list[ReadRow]]:
        """Matching rows from ``from_seq`` in seq order, at most ``chunk`` per list (keyset pages)."""
        raise NotImplementedError

    async def _db_history(self, entity_kind: str, entity_id: str) -> list[tuple[int, int, int, bytes, float]]:
        """One entity's rows in seq order: seq, entity_seq, type_key, payload, at."""
        raise NotImplementedError

    async def _db_entity_seq(self, entity_kind: str, entity_id: str) -> int:
        raise NotImplementedError

    async def _db_wait_commits(self, after_seq: int) -> None:
        """In a reader: return when commits after ``after_seq`` may exist (or after a while, to look again)."""
        raise NotImplementedError

    def _db_verify_events(self) -> AsyncIterator[list[tuple[int, int, int, int | None, int, bytes]]]:
        """Every event row in seq order, in pages: seq, entity_key, entity_seq, prev_seq, type_key, payload."""
        raise NotImplementedError

    async def _db_verify_entities(self) -> list[NewEntityRow]:
        """Every entity row, by key: entity_key, kind, entity_id, last_seq, last_entity_seq."""
        raise NotImplementedError

    async def _db_submit_command(self, name: str, body: str, at: float) -> int:
        raise NotImplementedError

    async def _db_pending_commands(self) -> list[tuple[int, str, str, float]]:
        raise NotImplementedError

    async def _db_complete_command(self, command_id: int, at: float, body: str) -> bool:
        """Mark a pending command completed; False if there is no such pending command."""
        raise NotImplementedError

    async def _db_command(self, command_id: int) -> tuple[int, str, str, float, float | None, str | None] | None:
        raise NotImplementedError

    async def _db_lease(self) -> Lease | None:
        raise NotImplementedError

    # ------------------------------------------------------------------ opening and closing

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self._db_start()
            self._committed_seq, last_key = await self._db_max_keys()
            self._next_seq = self._committed_seq + 1
            self._next_entity_key = last_key + 1
            await self._load_types()
        except BaseException:
            await self._db_close()
            raise
        self._open = True
        self._appendable = self._writer
        log.info("eventlog opened", path=self._path, writer=self._writer, last_seq=self._committed_seq,
                 fingerprint=self._fingerprint)

    def _check_meta(self, meta: Mapping[str, str]) -> dict[str, str]:
        """Check a log's ``meta``; return the entries a writer must store (a newly accepted fingerprint)."""
        try:
            version = int(meta["schema_version"])
        except (KeyError, ValueError):
            raise CorruptLogError(
                f"{self._path}: not a wantbuild event log (meta has no valid schema_version: "
                f"{meta.get('schema_version')!r})"
            ) from None
        self._schema_version = version
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self._path}: the log has schema version {version}, but this wantbuild reads schema "
                f"version {SCHEMA_VERSION}; it was written by a newer wantbuild: upgrade wantbuild to open it"
            )
        if version < SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self._path}: the log has schema version {version}, but this wantbuild reads schema "
                f"version {SCHEMA_VERSION} and has no upgrade from {version}"
            )
        stored = meta.get("fingerprint")
        self._fingerprint = stored
        want = self._want_fingerprint
        if want is None or want == stored:
            return {}
        if stored is not None and not self._accept_fingerprint_change:
            raise FingerprintMismatch(
                f"{self._path}: the log was written for graph fingerprint {stored}, but the graph now has "
                f"fingerprint {want}; if the graph change is intended, accept it with "
                "accept_fingerprint_change=True (CLI: --accept-graph-change), or use another log"
            )
        self._fingerprint = want
        if not self._writer:
            return {}
        history: list[Any] = msgspec.json.decode(meta.get("fingerprint_history", "[]"))
        if stored is not None:
            history.append({"fingerprint": stored, "replaced_at": self._now(), "replaced_by": want})
            log.warning("eventlog graph fingerprint changed", path=self._path, old=stored, new=want)
        return {"fingerprint": want, "fingerprint_history": msgspec.json.encode(history).decode()}

    def _new_meta(self) -> dict[str, str]:
        """The ``meta`` of a log being created."""
        meta = {"schema_version": str(SCHEMA_VERSION), "created_at": repr(self._now()),
                "format": "wantbuild event log"}
        if self._want_fingerprint is not None:
            meta["fingerprint"] = self._want_fingerprint
        self._fingerprint = self._want_fingerprint
        return meta

    async def _load_types(self) -> None:
        for tk, name, version in await self._db_types():
            self._type_names[tk] = (name, version)
            self._type_by_name[(name, version)] = tk
            self._next_type_key = max(self._next_type_key, tk + 1)
        self._bind_decoders()

    def _bind_decoders(self) -> None:
        """Point each known type key at the registry's decoder (registry classes may appear after open)."""
        size = max(self._type_names, default=0) + 1
        decoders: list[_Decode | None] = [None] * size
        for tk, (name, version) in self._type_names.items():
            try:
                cls = self._registry.lookup(name, version)
            except CorruptLogError:
                continue
            decoders[tk] = self._registry.decoder_for(cls).decode
            self._type_keys.setdefault(cls, tk)
        self._decoders = decoders

    async def close(self) -> None:
        """Commit what is pending, stop the writer, close the connections and release the writer lock."""
        await self._shutdown(abort=False)

    async def abort(self) -> None:
        """Simulate a crash: drop every append not yet committed and close without committing it.

        Dropped appends fail with :class:`CommitError` ("log aborted"). A batch whose commit has already
        started may still commit; its appenders are then told so, as after a real crash at that instant.
        """
        await self._shutdown(abort=True)

    async def _shutdown(self, *, abort: bool) -> None:
        if self._shutdown_started:
            await self._closed_event.wait()
            return
        self._shutdown_started = True
        self._open = False
        self._appendable = False
        self._stopping = True
        # Shielded: a close interrupted half-way would leave appenders waiting and the lock held.
        with anyio.CancelScope(shield=True):
            try:
                task = self._writer_task
                if task is not None and self._writer_done is not None:
                    if abort:
                        self._aborting = True
                        self._fail_incoming("log aborted before this append was committed")
                    else:
                        self._flush_to = self._submitted
                    self._kick()
                    await self._writer_done.wait()
                    await task  # re-raises what stopped the writer if it was a bug
            finally:
                await self._db_close()
                self._closed = True
                self._closed_event.set()
                self._notify_progress()
                log.info("eventlog closed", path=self._path, last_seq=self._committed_seq, aborted=abort)

    def _start_writer(self) -> None:
        self._writer_done = asyncio.Event()
        self._writer_task = asyncio.create_task(self._writer_main(), name=f"eventlog writer {self._path}")

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> str:
        """The log's file, or its URL with the password hidden."""
        return self._path

    @property
    def fingerprint(self) -> str | None:
        """The graph fingerprint the log is (now) recorded for."""
        return self._fingerprint

    @property
    def schema_version(self) -> int:
        """The schema version of the log."""
        return self._schema_version

    @property
    def last_seq(self) -> int:
        """The last committed ``seq`` (0 for an empty log); in a reader, the last one it has seen."""
        return self._committed_seq

    @property
    def closed(self) -> bool:
        """Whether the log is closed (or closing)."""
        return not self._open

    @property
    def writer(self) -> bool:
        """Whether this log was opened as the writer."""
        return self._writer

    def pending(self) -> int:
        """How many appends are waiting for their batch to commit."""
        return self._submitted - self._done

    @property
    def _submitted(self) -> int:
        return self._taken + len(self._incoming)

    # ------------------------------------------------------------------ the writer's lease

    async def lease(self) -> Lease | None:
        """Who holds the writer lease now (``None``: nobody); works in readers too."""
        self._check_readable()
        return await self._db_lease()

    @property
    def lease_lost(self) -> LeaseLost | None:
        """Set once this writer lost its lease: every append since has failed with it."""
        return self._lease_lost

    async def renew_lease(self) -> None:
        """Extend this writer's lease now (a lock held for the process's lifetime needs nothing: SQLite)."""
        self._check_writable()

    async def wait_lease_lost(self) -> LeaseLost:
        """Wait until this writer loses its lease (never, for a lease that cannot be lost); return the error."""
        await self._lease_lost_event.wait()
        assert self._lease_lost is not None
        return self._lease_lost

    def _fence(self, error: LeaseLost) -> None:
        """This writer lost its lease: refuse every append from now on and tell whoever waits."""
        if self._lease_lost is None:
            self._lease_lost = error
            self._appendable = False
            log.error("eventlog lease lost", path=self._path, error=str(error))
            self._fail_incoming(str(error), error=error)
            self._lease_lost_event.set()

    # ------------------------------------------------------------------ appending

    def _check_writable(self) -> None:
        if self._lease_lost is not None:
            raise self._lease_lost
        if not self._open:
            raise LogClosedError(f"{self._path}: the event log is closed")
        if not self._writer:
            raise ReadOnlyLogError(
                f"{self._path}: the event log was opened with writer=False; only the process holding the "
                "writer lock appends events (submit a command to it instead)"
            )

    async def append(self, entity_kind: str, entity_id: str, expected_entity_seq: int, event: Event,
                     at: float | None = None) -> Record:
        """Append ``event`` to the entity's history; return its record once it is committed.

        ``expected_entity_seq`` is the entity's last ``entity_seq`` as the caller knows it (0 for a new
        entity); the new record gets ``expected_entity_seq + 1``, or the append fails with
        :class:`ConcurrencyError`. ``at`` is ``now()`` at the call unless the caller gives it (an actor that
        already read the runtime clock for its transition); ``seq`` follows the order of calls.
        Raises :class:`CommitError` if its batch could not be committed (nothing of it was written), and
        :class:`LeaseLost` once the writer's lease is lost.
        """
        if not self._appendable:
            self._check_writable()
        tk = self._type_keys.get(type(event))
        if tk is None:
            tk = self._new_type_key(event)
        fut: asyncio.Future[Record] = _Future(loop=self._loop)
        incoming = self._incoming
        incoming.append(
            (entity_kind, entity_id, expected_entity_seq, event, tk, self._encode(event),
             self._now() if at is None else at, fut)
        )
        if (wake := self._wake) is not None and len(incoming) >= self._wake_at:
            self._wake = None
            if not wake.done():
                wake.set_result(None)
        return await fut

    def _new_type_key(self, event: Event) -> int:
        cls = type(event)
        if not isinstance(event, Event):
            raise EventLogError(f"cannot append {event!r}: events are Event subclasses declared with @event")
        name, version = cls.event_name, cls.event_version
        try:
            registered = self._registry.lookup(name, version)
        except CorruptLogError:
            registered = None
        if registered is not cls:
            raise EventLogError(
                f"cannot append {cls.__qualname__}: it is not a registered event type of this log's registry "
                "(declare it with @event(name, version))"
            )
        tk = self._type_by_name.get((name, version))
        if tk is None:
            tk = self._next_type_key
            self._next_type_key += 1
            self._type_by_name[(name, version)] = tk
            self._type_names[tk] = (name, version)
            self._unsaved_types[tk] = (name, version)
        self._type_keys[cls] = tk
        self._bind_decoders()
        return tk

    async def commit(self) -> None:
        """Commit every append made so far, and return once they are committed.

        With ``autocommit=False`` this is what writes them (in batches of at most ``max_batch``); with
        ``autocommit=True`` it waits for the writer. Raises :class:`CommitError` if a batch holding one of
        those appends failed to commit.
        """
        if self._lease_lost is not None:
            raise self._lease_lost
        if not self._open:
            raise LogClosedError(f"{self._path}: the event log is closed")
        if not self._writer:
            return
        target = self._submitted
        start = self._done
        if target > self._flush_to:
            self._flush_to = target
            self._kick()
        while self._done < target:
            if self._closed or self._writer_done is None or self._writer_done.is_set():
                raise LogClosedError(f"{self._path}: the event log was closed before the commit finished")
            await self._progress.wait()
        if self._lease_lost is not None:
            raise self._lease_lost
        for f in self._failures:
            if f.hi > start and f.lo < target:
                raise CommitError(f"{self._path}: commit failed: {f.error}") from f.error

    def _kick(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _notify_progress(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _fail_incoming(self, message: str, error: EventLogError | None = None) -> None:
        items, self._incoming = self._incoming, []
        for item in items:
            fut = item[7]
            if not fut.done():
                fut.set_exception(error if error is not None else CommitError(f"{self._path}: {message}"))
        self._taken += len(items)
        self._done += len(items)
        self._flush_to = max(self._flush_to, self._taken)

    # ------------------------------------------------------------------ the writer task

    def _ready(self) -> int:
        """How many queued appends the writer may take now."""
        if self._autocommit:
            return min(len(self._incoming), self._max_batch)
        return min(self._flush_to - self._taken, self._max_batch)  # only what commit() (or close) asked for

    async def _writer_main(self) -> None:
        """The writer task: take what has queued, write it as one batch, repeat until told to stop."""
        loop = asyncio.get_running_loop()
        assert self._writer_done is not None
        try:
            while True:
                n = self._ready()
                if n <= 0:
                    if self._stopping:
                        break
                    self._wake = loop.create_future()
                    try:
                        await self._wake
                    finally:
                        self._wake = None
                    continue
                if self._max_wait > 0 and self._autocommit and not self._stopping and n < self._max_batch:
                    await self._linger(loop)
                    n = self._ready()
                await self._write_batch(n)
        except BaseException as e:
            # Only a bug gets here (batches catch their own errors): fail everything still waiting.
            self._open = self._appendable = False
            self._fail_incoming(f"the log's writer stopped: {e!r}")
            raise
        finally:
            self._writer_done.set()
            self._notify_progress()

    async def _linger(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait up to ``max_wait`` for the batch to fill up."""
        wake = self._wake = loop.create_future()
        self._wake_at = self._max_batch
        handle = loop.call_later(self._max_wait, _set_once, wake)
        try:
            await wake
        finally:
            handle.cancel()
            self._wake = None
            self._wake_at = 1

    async def _lookup(self, items: Sequence[_Item]) -> dict[tuple[str, str], _Entity | str]:
        """Load the tips of entities missing from the cache, or mark them new."""
        cache = self._cache
        missing: dict[tuple[str, str], _Entity | str] = {}
        for item in items:
            k = (item[0], item[1])
            if k not in cache and k not in missing:
                if type(k[0]) is not str or type(k[1]) is not str or not k[0] or not k[1]:
                    missing[k] = f"entity kind and id must be non-empty strings, got {k[0]!r}, {k[1]!r}"
                else:
                    missing[k] = ""
        keys = [k for k, v in missing.items() if not v]
        if keys:
            for ek, kind, eid, last_seq, last_eseq in await self._db_lookup(keys):
                missing[(kind, eid)] = _Entity(ek, kind, eid, last_seq, last_eseq, True)
        for k in keys:
            if not isinstance(missing[k], _Entity):
                missing[k] = _Entity(self._next_entity_key, k[0], k[1], 0, 0, False)
                self._next_entity_key += 1
        return missing

    async def _write_batch(self, n: int) -> None:
        incoming = self._incoming
        if n == len(incoming):
            items, self._incoming = incoming, []
        else:
            items = incoming[:n]
            del incoming[:n]
        lo = self._taken
        self._taken += n
        try:
            await self._write_items(items)
        finally:
            self._done += n
            if self._failures and self._failures[-1].lo == -1:  # this batch failed: note which appends
                self._failures[-1].lo, self._failures[-1].hi = lo, lo + n
            if len(self._cache) > self._entity_cache_size:
                # Nothing is pending between batches, so any tip may go: it reloads on its next miss. The older
                # half goes (insertion order), not all of it: clearing everything made every active entity miss
                # at once, and a log just past the size paid a lookup per append from then on.
                cache = self._cache
                for key in list(itertools.islice(cache, len(cache) // 2)):
                    del cache[key]
            self._notify_progress()

    async def _write_items(self, items: list[_Item]) -> None:
        if self._lease_lost is not None:
            for it in items:
                if not it[7].done():
                    it[7].set_exception(self._lease_lost)
            return
        cache = self._cache
        try:
            ents = [cache[(it[0], it[1])] for it in items]
        except KeyError:
            try:
                found = await self._lookup(items)
            except Exception as e:
                self._rollback(e, [], [it[7] for it in items], self._next_seq, self._next_seq + len(items) - 1)
                return
            bad: dict[tuple[str, str], str] = {}
            for k, v in found.items():
                if isinstance(v, _Entity):
                    cache[k] = v
                else:
                    bad[k] = v
            if bad:
                for it in items:
                    msg = bad.get((it[0], it[1]))
                    if msg is not None and not it[7].done():
                        it[7].set_exception(EventLogError(msg))
                items = [it for it in items if (it[0], it[1]) not in bad]
            ents = [cache[(it[0], it[1])] for it in items]

        # Check and number the appends, in call order, against the pending tips.
        seq = first_seq = self._next_seq
        rows: list[EventRow] = []
        recs: list[Record] = []
        futs: list[asyncio.Future[Record]] = []
        rows_append, recs_append, futs_append = rows.append, recs.append, futs.append
        record = Record
        # zip(strict=False): ents was built from items, one for one; the strict check costs in this loop.
        for (kind, eid, expected, ev, tk, payload, at, fut), ent in zip(items, ents, strict=False):
            last = ent.peseq
            if expected != last:
                if not fut.done():
                    fut.set_exception(ConcurrencyError(kind, eid, expected, last))
                continue
            last += 1
            rows_append((seq, ent.key, last, ent.pseq or None, tk, payload, at))
            recs_append(record(seq, kind, eid, last, ev, at))
            futs_append(fut)
            ent.pseq = seq
            ent.peseq = last
            seq += 1
        if not rows:
            return
        # Between batches every pending tip equals its committed tip, so the touched entities are exactly
        # those whose tips moved.
        touched = [e for e in dict.fromkeys(ents) if e.pseq != e.cseq]
        new = [(e.key, e.kind, e.eid, e.pseq, e.peseq) for e in touched if not e.in_db]
        upd = [(e.pseq, e.peseq, e.key) for e in touched if e.in_db]
        types = [(tk, name, version) for tk, (name, version) in self._unsaved_types.items()]

        # One call writes and commits the whole batch (or nothing of it).
        # Shielded: once started, the outcome must be known, whatever happens to this task.
        try:
            with anyio.CancelScope(shield=True):
                await self._db_write(types, rows, new, upd)
        except Exception as e:
            self._rollback(e, touched, futs, first_seq, seq - 1)
            return

        # Committed: promote the pending tips and tell every appender.
        for ent in touched:
            ent.cseq = ent.pseq
            ent.ceseq = ent.peseq
            ent.in_db = True
        for tk, _, _ in types:
            self._unsaved_types.pop(tk, None)
        self._committed_seq = seq - 1
        self._next_seq = seq
        for fut, rec in zip(futs, recs, strict=False):
            try:  # noqa: SIM105 - suppress() would cost a context manager per append in the hot loop
                fut.set_result(rec)
            except asyncio.InvalidStateError:
                pass  # the appender was cancelled; its event is committed all the same

    def _is_aborting(self) -> bool:
        return self._aborting

    def _rollback(
        self,
        error: BaseException,
        touched: list[_Entity],
        futs: list[asyncio.Future[Record]],
        first: int,
        last: int,
    ) -> None:
        """Undo a failed batch in memory (the database already rolled back) and fail its appends."""
        for e in touched:
            if e.in_db:
                e.pseq = e.cseq
                e.peseq = e.ceseq
            else:
                self._cache.pop((e.kind, e.eid), None)
        self._next_seq = self._committed_seq + 1
        if isinstance(error, LeaseLost):
            self._failures.append(_Failure(-1, -1, error))
            for fut in futs:
                if not fut.done():
                    fut.set_exception(error)
            self._fence(error)
            return
        if isinstance(error, Aborted):
            message = f"{self._path}: log aborted before this append was committed"
        else:
            message = (
                f"{self._path}: could not commit a batch of {len(futs)} appends (seq {first}..{last}), "
                f"nothing of it was written: {type(error).__name__}: {error}"
            )
            log.error("eventlog commit failed", path=self._path, appends=len(futs), error=str(error))
        self._failures.append(_Failure(-1, -1, CommitError(message)))
        for fut in futs:
            if not fut.done():
                err = CommitError(message)
                err.__cause__ = error
                fut.set_exception(err)

    # ------------------------------------------------------------------ reading

    def _check_readable(self) -> None:
        if not self._open:
            raise LogClosedError(f"{self._path}: the event log is closed")

    def _decode_fast(self, rows: Sequence[Any]) -> list[Record]:
        decs = self._decoders
        return [Record(s, k, i, es, decs[tk](p), at) for s, k, i, es, tk, p, at in rows]

    async def _records(self, rows: Sequence[Any]) -> list[Record]:
        try:
            return self._decode_fast(rows)
        except Exception:
            pass  # the slow path below finds the row and explains it
        await self._load_types()
        return [self._decode_one(*row) for row in rows]

    def _decode_one(self, seq: int, kind: str, eid: str, eseq: int, tk: int, payload: bytes, at: float) -> Record:
        return Record(seq, kind, eid, eseq, self._decode_payload(seq, tk, payload), at)

    def _decode_payload(self, seq: int, tk: int, payload: bytes) -> Event:
        name_version = self._type_names.get(tk)
        if name_version is None:
            raise CorruptLogError(f"{self._path}: event type key {tk} is not in the event_types table", seq)
        name, version = name_version
        dec = self._decoders[tk] if tk < len(self._decoders) else None
        if dec is None:
            known = sorted(v for (n, v) in self._type_by_name if n == name and self._decoders_has(n, v))
            hint = f" (this wantbuild knows versions {known})" if known else ""
            raise CorruptLogError(f"{self._path}: unknown event type {name} v{version}{hint}", seq)
        try:
            return dec(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise CorruptLogError(f"{self._path}: undecodable payload for {name} v{version}: {e}", seq) from e
        except TypeError as e:
            raise CorruptLogError(
                f"{self._path}: payload of {name} v{version} is a {type(payload).__name__}, not JSON", seq
            ) from e

    def _decoders_has(self, name: str, version: int) -> bool:
        try:
            self._registry.lookup(name, version)
        except CorruptLogError:
            return False
        return True

    def _type_keys_named(self, types: Collection[str]) -> list[int]:
        wanted = set(types)
        return [tk for tk, (name, _) in self._type_names.items() if name in wanted]

    async def _scan(
        self,
        from_seq: int,
        until_seq: int | None,
        until_time: float | None,
        kinds: Collection[str] | None,
        entity_id: str | None,
        types: Collection[str] | None,
        chunk: int,
    ) -> AsyncIterator[list[Record]]:
        """Matching records from ``from_seq`` in seq order, ``chunk`` rows per query (keyset pages)."""
        self._check_readable()
        kind_list = None if kinds is None else list(kinds)
        if kind_list == []:
            return
        type_keys = None
        if types is not None:
            if not self._writer:
                await self._load_types()
            type_keys = self._type_keys_named(types)
            if not type_keys:
                return
        async for rows in self._db_scan(from_seq, until_seq, until_time, kind_list, entity_id, type_keys, chunk):
            last = rows[-1][0]
            if last > self._committed_seq and not self._writer:
                self._committed_seq = last
            yield await self._records(rows)

    async def read(
        self,
        from_seq: int = 1,
        *,
        until_seq: int | None = None,
        until_time: float | None = None,
        kinds: Collection[str] | None = None,
        entity_id: str | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[Record]:
        """Committed records from ``from_seq`` in ``seq`` order, filtered; memory stays constant.

        ``until_seq`` and ``until_time`` are inclusive bounds on ``seq`` and ``at``; ``kinds``, ``entity_id``
        and ``types`` (event type names, any version) keep only matching records.
        Raises :class:`CorruptLogError` (with the row's ``seq``) for a row that cannot be decoded.
        """
        async for batch in self._scan(from_seq, until_seq, until_time, kinds, entity_id, types, READ_CHUNK):
            for rec in batch:
                yield rec

    async def read_batches(
        self, from_seq: int = 1, *, until_seq: int | None = None, batch_size: int = 10000
    ) -> AsyncIterator[list[Record]]:
        """Committed records in ``seq`` order, ``batch_size`` per list: the fast path replay uses."""
        async for batch in self._scan(from_seq, until_seq, None, None, None, None, batch_size):
            yield batch

    async def follow(
        self,
        from_seq: int = 1,
        *,
        until_seq: int | None = None,
        until_time: float | None = None,
        kinds: Collection[str] | None = None,
        entity_id: str | None = None,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[Record]:
        """Every matching record from ``from_seq``, then each new one as it commits, until the log closes.

        In the writer's process the writer wakes followers after each commit; in another process the backend
        says when to look again (SQLite: every ``poll_interval``; PostgreSQL: on a notification). Every wake-up
        reads everything after the last record seen, so a missed wake-up costs latency, never a record.
        Ends after ``until_seq`` if given.
        """
        nxt = from_seq
        while True:
            if not self._open:
                return
            progress = self._progress
            if self._writer:
                hi = self._committed_seq
            else:
                self._check_readable()
                hi = (await self._db_max_keys())[0]
                self._committed_seq = max(self._committed_seq, hi)
            if until_seq is not None:
                hi = min(hi, until_seq)
            if hi >= nxt:
                async for batch in self._scan(nxt, hi, until_time, kinds, entity_id, types, READ_CHUNK):
                    for rec in batch:
                        yield rec
                nxt = hi + 1
            if until_seq is not None and nxt > until_seq:
                return
            if self._writer:
                if self._committed_seq < nxt and self._open:
                    await progress.wait()
            elif self._open:
                await self._db_wait_commits(nxt - 1)

    async def history(self, entity_kind: str, entity_id: str, *, until_seq: int | None = None) -> list[Record]:
        """One entity's committed records in order (a walk down its ``prev_seq`` chain); [] if unknown."""
        self._check_readable()
        rows = await self._db_history(entity_kind, entity_id)
        if until_seq is not None:
            rows = [r for r in rows if r[0] <= until_seq]
        return await self._records([(s, entity_kind, entity_id, es, tk, p, at) for s, es, tk, p, at in rows])

    async def entity_seq(self, entity_kind: str, entity_id: str) -> int:
        """The entity's last committed ``entity_seq``; 0 if the log has never seen it."""
        ent = self._cache.get((entity_kind, entity_id))
        if ent is not None:
            return ent.ceseq
        self._check_readable()
        return await self._db_entity_seq(entity_kind, entity_id)

    async def verify(self) -> VerifyReport:
        """Check the whole log's structure; return every problem found (never raises for a bad row).

        Checks: ``seq`` increases; each entity's ``entity_seq`` runs 1, 2, 3... without gaps and its
        ``prev_seq`` chain links each event to the entity's previous one and ends at ``entities.last_seq``;
        every event type is known; every payload decodes into its type.
        """
        self._check_readable()
        await self._load_types()
        problems: list[Problem] = []

        def problem(seq: int | None, message: str) -> None:
            if len(problems) < _MAX_PROBLEMS:
                problems.append(Problem(seq, message))

        tips: dict[int, tuple[int, int]] = {}
        last_seq = 0
        count = 0
        async for rows in self._db_verify_events():
            for seq, ek, eseq, prev, tk, payload in rows:
                count += 1
                if seq <= last_seq:  # pragma: no cover - the primary key makes this impossible
                    problem(seq, f"seq does not increase (follows {last_seq})")
                last_seq = seq
                tip = tips.get(ek)
                want_eseq, want_prev = (1, None) if tip is None else (tip[1] + 1, tip[0])
                if eseq != want_eseq:
                    problem(seq, f"entity_seq {eseq} where {want_eseq} was due (gap or repeat)")
                if prev != want_prev:
                    problem(seq, f"prev_seq {prev} but the entity's previous event is {want_prev}")
                tips[ek] = (seq, eseq)
                try:
                    self._decode_payload(seq, tk, payload)
                except CorruptLogError as e:
                    problem(seq, str(e).removeprefix(f"seq {seq}: ").removeprefix(f"{self._path}: "))
        entities = 0
        for ek, kind, eid, e_last, e_eseq in await self._db_verify_entities():
            entities += 1
            tip = tips.pop(ek, None)
            if tip is None:
                problem(None, f"{kind} {eid!r} is in entities but has no events")
            elif tip != (e_last, e_eseq):
                problem(
                    tip[0],
                    f"{kind} {eid!r}: entities says last seq {e_last} / entity_seq {e_eseq}, "
                    f"but its events end at seq {tip[0]} / entity_seq {tip[1]}",
                )
        for ek, (seq, _) in tips.items():
            problem(seq, f"event of entity_key {ek}, which is not in entities")
        report = VerifyReport(self._path, count, entities, tuple(problems))
        log.info("eventlog verified", path=self._path, events=count, entities=entities, problems=len(problems))
        return report

    # ------------------------------------------------------------------ command inbox

    async def submit_command(self, name: str, payload: Mapping[str, Any]) -> int:
        """Store a command for the writer process (works with ``writer=False``); return its id."""
        self._check_readable()
        try:
            body = msgspec.json.encode(dict(payload)).decode()
        except (TypeError, msgspec.EncodeError) as e:
            raise EventLogError(f"command {name!r}: payload is not JSON-serializable: {e}") from e
        try:
            command_id = await self._db_submit_command(name, body, self._now())
        except EventLogError:
            raise
        except Exception as e:
            raise CommitError(f"{self._path}: could not store command {name!r}: {e}") from e
        log.info("eventlog command submitted", path=self._path, command_id=command_id, command=name)
        return command_id

    async def pending_commands(self) -> list[Command]:
        """Commands submitted and not completed, in id order (again after a restart: at least once)."""
        self._check_readable()
        return [Command(i, n, msgspec.json.decode(p), at) for i, n, p, at in await self._db_pending_commands()]

    async def complete_command(self, command_id: int, result: Mapping[str, Any]) -> None:
        """Record a command's result; it is then no longer pending. Writer only; once per command."""
        self._check_writable()
        try:
            body = msgspec.json.encode(dict(result)).decode()
        except (TypeError, msgspec.EncodeError) as e:
            raise EventLogError(f"command {command_id}: result is not JSON-serializable: {e}") from e
        self._check_readable()
        try:
            done = await self._db_complete_command(command_id, self._now(), body)
        except EventLogError:
            raise
        except Exception as e:
            raise CommitError(f"{self._path}: could not complete command {command_id}: {e}") from e
        if not done:
            existing = await self.command(command_id)
            if existing is None:
                raise EventLogError(f"{self._path}: there is no command {command_id}")
            raise EventLogError(f"{self._path}: command {command_id} ({existing.name}) was already completed")

    async def command(self, command_id: int) -> Command | None:
        """One command with its result once completed, or ``None`` if there is no such command."""
        self._check_readable()
        row = await self._db_command(command_id)
        if row is None:
            return None
        i, n, p, at, done_at, result = row
        decoded = None if result is None else msgspec.json.decode(result)
        return Command(i, n, msgspec.json.decode(p), at, done_at, decoded)

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<{type(self).__name__} {self._path!r} {state} writer={self._writer} last_seq={self._committed_seq}>"


@asynccontextmanager
async def open_core(self: L) -> AsyncIterator[L]:
    """A log's lifetime: open, start the writer task, and on exit (however it happens) close.

    The log owns exactly one task, the writer, and always ends it here: ``close`` (shielded) tells it to
    commit what is pending and stop, then awaits it. It is a plain task rather than a task group on
    purpose: a task group would wrap every exception raised in the caller's ``async with`` body into an
    ``ExceptionGroup``, and the writer never fails on its own (batches catch their errors; a bug in it is
    re-raised by ``close``).
    """
    # Shielded where the backend asks (SQLite): opening takes milliseconds, and a cancellation in the middle of it
    # (a Ctrl-C at start-up) would leave a half-made aiosqlite connection, whose thread later finds its event
    # loop closed. A cancellation that arrives meanwhile is delivered at the checkpoint right after, with the log
    # open and closable. PostgreSQL's open may wait for the writer lease (a standby): it stays cancellable, and
    # its connections are simply dropped when cancelled.
    with anyio.CancelScope(shield=self._shield_open):
        await self._start()
    try:
        await anyio.lowlevel.checkpoint()
        if self._writer:
            self._start_writer()
        yield self
    finally:
        await self.close()
