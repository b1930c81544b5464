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
import hashlib
import itertools
import zlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec

from ._errors import (
    CommandCompletedError,
    CommitError,
    ConcurrencyError,
    CorruptLogError,
    DamagedLogError,
    EventLogError,
    FingerprintMismatch,
    LeaseLost,
    LogClosedError,
    ReadOnlyLogError,
    SchemaVersionError,
    SnapshotError,
    UnknownCommandError,
    WriterFailedError,
)
from ._events import Event, EventRegistry
from ._logging import get_logger
from ._records import Command, CommandState, Lease, Problem, Record, SnapshotInfo, VerifyReport
from ._schema import SCHEMA_VERSION
from ._tips import PackedTips

log = get_logger("wantbuild.eventlog")
_Future = asyncio.Future

_Decode = Callable[[bytes], Event]
# A queued append: kind, id, expected entity_seq, event, type key, encoded payload, at, where its outcome goes, whether
# the caller said the entity is new (``submit(new=True)``), and its index in that group (-1: the sink is the append's
# own future, from ``submit``; else a ``_Group`` of ``submit_many``). Touched only through ``_done``/``_fail`` and the
# writer's success loop. The payload is a bytearray: SQLite's module binds one without its adapter lookup
# (``_schema.INSERT_EVENT``).
_Item = tuple[str, str, int, Event, int, bytearray, float, "asyncio.Future[Record] | _Group", bool, int]
Append = tuple[str, str, int, Event, "float | None", "tuple[int, Mapping[str, Any]] | None", bool]
"""One append of :meth:`LogCore.submit_many`: kind, id, expected entity_seq, event, at (``None``: now), command
(``None``: none), new."""
# Rows the writer hands to a backend per batch.
TypeRow = tuple[int, str, int]  # type_key, name, version
# seq, entity_key, entity_seq, prev_seq (0: the entity's first event, stored as NULL), type_key, payload, at.
EventRow = tuple[int, int, int, int, int, bytes | bytearray, float]
NewEntityRow = tuple[int, str, str, int, int]  # entity_key, kind, entity_id, last_seq, last_entity_seq
UpdateEntityRow = tuple[int, int, int]  # last_seq, last_entity_seq, entity_key
# Rows a backend hands back for reading: seq, kind, entity_id, entity_seq, type_key, payload, at.
ReadRow = tuple[int, str, str, int, int, bytes, float]

_MAX_PROBLEMS: Final = 1000
L = TypeVar("L", bound="LogCore")
READ_CHUNK: Final = 1000


def hot_tips(entity_cache_size: int, least: int) -> int:
    """How many of ``entity_cache_size`` tips the writer keeps as ``_Entity`` objects (the rest packed): half, at
    least ``least``."""
    return min(entity_cache_size, max(least, entity_cache_size // 2))


HOT_TIPS_MIN: Final = 20_000
"""The fewest tips kept as objects (what a batch or two moves), however small the cache."""


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


class _Group:
    """One completion for the appends of a :meth:`LogCore.submit_many` call: ``out[i]`` becomes append i's record or
    its exception; the future resolves with ``out`` once every one has its outcome."""

    __slots__ = ("future", "left", "out")

    def __init__(self, future: asyncio.Future[list[Record | BaseException]], n: int) -> None:
        self.future = future
        self.out: list[Record | BaseException | None] = [None] * n
        self.left = n

    def put(self, i: int, value: Record | BaseException) -> None:
        out = self.out
        if out[i] is None:
            out[i] = value
            self.left -= 1
            if not self.left and not self.future.done():
                self.future.set_result(out)  # type: ignore[arg-type]  # no None left


def _done(it: _Item) -> bool:
    """Whether an append's outcome is given (or its caller stopped waiting)."""
    i = it[9]
    sink = it[7]
    return sink.out[i] is not None if i >= 0 else sink.done()  # type: ignore[union-attr]


def _fail(it: _Item, error: BaseException) -> None:
    """Fail one append (if its outcome is not given yet)."""
    i = it[9]
    sink = it[7]
    if i >= 0:
        sink.put(i, error)  # type: ignore[union-attr]
    elif not sink.done():  # type: ignore[union-attr]
        sink.set_exception(error)  # type: ignore[union-attr]


def _key(it: _Item) -> tuple[object, int]:
    """The append's key in the inbox completions riding on appends (``LogCore._commands``)."""
    return (it[7], it[9])


class _CommitWait:
    """A :meth:`LogCore.commit` call waiting for the appends ``lo <= ordinal < hi``; ``error`` is the first failure."""

    __slots__ = ("error", "hi", "lo")

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.error: CommitError | None = None


class Aborted(Exception):
    """Internal: the log was aborted while a batch was being written."""


class CommandsNotPending(Exception):
    """Internal: these of a batch's command completions (indexes into its list) found their command not pending.

    A backend raises it from ``_db_write`` having written nothing; the writer fails those appends alone and
    writes the batch again without them."""

    def __init__(self, indexes: list[int]) -> None:
        super().__init__(indexes)
        self.indexes = indexes


Durability = Literal["process", "power"]
"""Which crash a commit survives: the process dying (``"process"``), or also power loss / an OS crash."""
DEFAULT_DURABILITY: Final[Durability] = "process"
"""SQLite's default (``docs/eventlog.md`` says why); a PostgreSQL log defaults to ``"power"``."""

SNAPSHOT_PIECE: Final = 1 << 18
"""Stored bytes per snapshot piece: each piece is its own small transaction, so writing a snapshot of any size
holds the database's write lock (and the log's writer) for about a millisecond at a time (a megabyte was up to 7 ms
of the loop's CPU on a busy machine; reading does not depend on it)."""

SnapshotRow = tuple[int, float, str, int, int, str, float, int]
"""seq, at, format, size, stored, checksum, created_at, pieces"""


class _Packer:
    """Compresses and checksums a snapshot's bytes a slice at a time (see ``write_snapshot``)."""

    STEP: Final = 256 * 1024
    """Bytes per step: about a millisecond of zlib and BLAKE2b here."""

    def __init__(self) -> None:
        self.comp = zlib.compressobj(1)
        self.digest = hashlib.blake2b(digest_size=16)
        self.out: list[bytes] = []

    def feed(self, part: bytes | memoryview) -> None:
        self.digest.update(part)
        self.out.append(self.comp.compress(part))

    def finish(self) -> tuple[bytes, str]:
        self.out.append(self.comp.flush())
        return b"".join(self.out), self.digest.hexdigest()


def _unpack_snapshot(stored: bytes, checksum: str) -> bytes | str:
    """The snapshot's bytes, or why they are not usable."""
    try:
        data = zlib.decompress(stored)
    except zlib.error as e:
        return f"its bytes do not decompress ({e})"
    got = hashlib.blake2b(data, digest_size=16).hexdigest()
    if got != checksum:
        return f"checksum mismatch (stored {checksum}, computed {got})"
    return data


COMPACTED: Final = "compacted_through"
"""The ``meta`` key holding the seq through which ``drop_events`` removed events (0 or absent: never)."""

TAIL_CHECK: Final = 256
"""How many of the last events a writer's open checks (links, heads, types, payloads): a few ms at any size."""


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class LogCore:
    """The backend-independent body of a log. Subclasses implement the storage hooks (``_db_*``)."""

    _shield_open = True
    _hot_least = HOT_TIPS_MIN

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
        self._hot_tips = hot_tips(entity_cache_size, self._hot_least)
        self._poll_interval = poll_interval
        self._encode = registry.encoder.encode
        self._durability: Durability = DEFAULT_DURABILITY  # the backend sets what it was opened with
        self._loop: asyncio.AbstractEventLoop | None = None

        self._open = False  # accepting appends and reads
        self._appendable = False  # open and the writer: the one flag append() checks
        self._closed = False  # fully closed
        self._schema_version = SCHEMA_VERSION
        self._compacted = 0  # meta COMPACTED: events of some entities up to this seq were dropped
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
        # The commit() calls now waiting, so a failed batch can tell each one whose appends it held. Nothing else
        # is kept: a commit() that starts later never asks about appends that were already done.
        self._commit_waits: list[_CommitWait] = []
        self._writer_error: BaseException | None = None  # the bug that stopped the writer
        self._damage: tuple[str, ...] = ()  # damage an append found: nothing more is written
        # Inbox completions riding on queued appends: their ``_key`` -> (command id, result as JSON).
        self._commands: dict[tuple[object, int], tuple[int, str]] = {}
        self._progress = asyncio.Event()
        # The tip cache, two tiers: the entities moved lately as objects (pending and committed tips), and the
        # committed tips shed from there packed, one int each (``_tips.py``). An entity is in one tier at most.
        # The objects are held in a dict per kind keyed by the id string, not in one dict keyed by a (kind, id)
        # tuple: no tuple is built, hashed and compared per append, nor kept per entity, and a hit compares the id
        # string by identity (the caller's id is usually the very string cached) instead of reading the stored
        # tuple and its strings: fewer cache misses in a table of 100,000s of tips (docs/performance.md).
        self._cache: dict[str, dict[str, _Entity]] = {}
        self._packed = PackedTips()
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

    _db_errors: tuple[type[BaseException], ...] = (OSError,)
    """What a batch that failed in the database raises (then: CommitError, the batch did not commit)."""
    _bug_db_errors: tuple[type[BaseException], ...] = ()
    """Those of ``_db_errors`` that mean the API was used wrongly: a bug, which stops the writer."""

    @property
    def _batch_errors(self) -> tuple[type[BaseException], ...]:
        return (Aborted, *self._db_errors)

    async def _db_write(self, types: list[TypeRow], rows: list[EventRow], new: list[NewEntityRow],
                        upd: list[UpdateEntityRow], commands: list[tuple[float, str, int]], mark: int | None) -> None:
        """Write one batch in one transaction, or nothing of it (then raise). Shielded by the caller.

        ``commands`` are inbox completions ``(completed_at, result, id)`` that commit with the batch: if one's
        command is not pending, write nothing and raise :class:`CommandsNotPending`. ``mark``, when given, is a
        committed seq the open check must be able to see (``_needs_mark``)."""
        raise NotImplementedError

    async def _db_events_at(self, seqs: Collection[int]) -> dict[int, tuple[int, int]]:
        """``seq -> (entity_key, entity_seq)`` of those of ``seqs`` that are in the log."""
        raise NotImplementedError

    async def _db_tail(self, n: int) -> list[tuple[int, int, int, int | None, int, bytes]]:
        """The last ``n`` events, newest first: seq, entity_key, entity_seq, prev_seq, type_key, payload."""
        raise NotImplementedError

    async def _db_entities_by_key(self, keys: list[int]) -> list[NewEntityRow]:
        raise NotImplementedError

    async def _db_commands(self, state: CommandState | None, limit: int | None, newest_first: bool,
                           ) -> list[tuple[int, str, str, float, float | None, str | None]]:
        raise NotImplementedError

    async def _db_command_counts(self) -> dict[str, int]:
        raise NotImplementedError

    def _db_scan(self, from_seq: int, until_seq: int | None, until_time: float | None,
                 kinds: list[str] | None, entity_id: str | None, type_keys: list[int] | None,
                 chunk: int) -> AsyncIterator[list[ReadRow]]:
        """Matching rows from ``from_seq`` in seq order, at most ``chunk`` per list (keyset pages)."""
        raise NotImplementedError

    async def _db_history(self, entity_kind: str, entity_id: str) -> list[tuple[int, int, int, bytes, float]]:
        """One entity's rows in seq order: seq, entity_seq, type_key, payload, at."""
        raise NotImplementedError

    async def _db_histories(self, entity_kind: str,
                            entity_ids: list[str]) -> list[tuple[str, int, int, int, bytes, float]]:
        """``(entity_id, seq, entity_seq, type_key, payload, at)`` of every record of these entities, by seq."""
        raise NotImplementedError

    async def _db_entity_ids(self, entity_kind: str) -> list[str]:
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

    async def _wait_to_write(self) -> None:
        """Before the (possibly shielded) open: wait for the right to write, where that is a separate step
        (SQLite's writer lock). A backend whose open waits by itself (PostgreSQL's lease) does nothing here."""

    async def _db_snapshot_piece(self, seq: int, piece: int, data: bytes) -> None:
        """Store one piece of a snapshot being written (replacing a piece of an earlier, unfinished attempt)."""
        raise NotImplementedError

    async def _db_snapshot_head(self, row: SnapshotRow) -> None:
        """Store a snapshot's head row, in its own transaction after all its pieces: only then is it listed.
        Pieces of that seq numbered ``row[7]`` (its piece count) and up, left by an attempt that died, go too."""
        raise NotImplementedError

    async def _db_snapshot_list(self) -> list[SnapshotRow]:
        """Every snapshot with a head row, newest (highest seq) first; [] if the log has no snapshot table."""
        raise NotImplementedError

    async def _db_snapshot_pieces(self, seq: int) -> list[tuple[int, bytes]]:
        """A snapshot's pieces in order: (piece number, bytes)."""
        raise NotImplementedError

    async def _db_snapshot_delete(self, seqs: list[int]) -> None:
        """Delete these snapshots (head first, then pieces)."""
        raise NotImplementedError

    async def _db_drop_events(self, entities: list[tuple[str, str]], through_seq: int) -> int:
        """In one transaction: delete these entities' events with ``seq <= through_seq`` and set meta
        ``COMPACTED`` to ``through_seq`` (if higher); return how many events were deleted."""
        raise NotImplementedError

    # ------------------------------------------------------------------ opening and closing

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self._db_start()
            self._committed_seq, last_key = await self._db_max_keys()
            # drop_events may have removed the log's last events: their seqs are never given out again.
            self._committed_seq = max(self._committed_seq, self._compacted)
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
        try:
            self._compacted = int(meta.get(COMPACTED, "0"))
        except ValueError:
            raise CorruptLogError(f"{self._path}: meta {COMPACTED} is {meta.get(COMPACTED)!r}, not a seq") from None
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
    def entity_cache_size(self) -> int:
        """How many entity tips the writer keeps cached: the entities moved lately as objects (half, at least
        20,000), the rest packed (about 75 bytes a tip); past it, the older half goes and each reloads from the log
        on its next append. Settable (a runtime that evicts settled entities keeps fewer: they will not move)."""
        return self._entity_cache_size

    @entity_cache_size.setter
    def entity_cache_size(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"entity_cache_size must be a whole number of tips >= 1, not {n!r}")
        self._entity_cache_size = n
        self._hot_tips = hot_tips(n, self._hot_least)
        if len(self._packed) > n - self._hot_tips:  # the objects wait for the next batch's end (they may be pending)
            self._packed.shed(n - self._hot_tips)

    def forget_tips(self, entity_kind: str, entity_ids: Iterable[str]) -> None:
        """Drop the cached tips of these entities: each is read from the log on its next append. For a caller that
        knows they will not move soon (an evicting runtime's settled entities); safe at any time, as a tip an
        append in flight holds is promoted all the same and the log has it once that commits."""
        ids = entity_ids if isinstance(entity_ids, Collection) else list(entity_ids)
        d = self._cache.get(entity_kind)
        if d:
            pop = d.pop
            for eid in ids:
                pop(eid, None)
        if len(self._packed):
            self._packed.discard(entity_kind, ids)

    def _shed_tips(self) -> None:
        """Between batches (nothing is pending, so any tip may go): move the older half of the objects to the packed
        tier, then bound that. The older half of each kind (insertion order, rounded up), not all of it: clearing
        everything made every active entity miss at once, and a log just past the size paid a lookup per append from
        then on."""
        packed = self._packed
        put = packed.put
        cache = self._cache
        for kind, d in list(cache.items()):
            half = (len(d) + 1) // 2
            for e in itertools.islice(d.values(), half):
                if e.in_db:  # committed tips only: a writer that stopped on a bug may hold pending ones
                    put(e.kind, e.eid, e.key, e.cseq, e.ceseq)
            # The newer half in a dict of its own: a dict does not give back its table when entries are deleted.
            kept = dict(itertools.islice(d.items(), half, None))
            if kept:
                cache[kind] = kept
            else:
                del cache[kind]
        if len(packed) > self._entity_cache_size - self._hot_tips:
            packed.shed(self._entity_cache_size - self._hot_tips)

    def _hot_count(self) -> int:
        """How many tips are held as objects (the first tier)."""
        return sum(map(len, self._cache.values()))

    def _cached(self, kind: str, eid: str) -> _Entity | None:
        """The entity's tip object, if it is in the first tier."""
        d = self._cache.get(kind)
        return None if d is None else d.get(eid)

    def _cache_put(self, e: _Entity) -> None:
        d = self._cache.get(e.kind)
        if d is None:
            d = self._cache[e.kind] = {}
        d[e.eid] = e

    def _uncache(self, kind: str, eid: str) -> None:
        d = self._cache.get(kind)
        if d is not None:
            d.pop(eid, None)
            if not d:
                del self._cache[kind]

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
    def compacted_through(self) -> int:
        """The seq through which events of terminal entities were dropped (``drop_events``); 0 if never. The state
        before it is only in the snapshot kept there."""
        return self._compacted

    @property
    def closed(self) -> bool:
        """Whether the log is closed (or closing)."""
        return not self._open

    @property
    def durability(self) -> Durability:
        """Which crash a commit survives: ``"process"`` or ``"power"`` (see ``open``)."""
        return self._durability

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
        if self._writer_error is not None:
            raise self._writer_failed_error()
        if self._damage:
            raise DamagedLogError(self._path, self._damage)
        if not self._open:
            raise LogClosedError(f"{self._path}: the event log is closed")
        if not self._writer:
            raise ReadOnlyLogError(
                f"{self._path}: the event log was opened with writer=False; only the process holding the "
                "writer lock appends events (submit a command to it instead)"
            )

    async def append(self, entity_kind: str, entity_id: str, expected_entity_seq: int, event: Event,
                     at: float | None = None, *, command: tuple[int, Mapping[str, Any]] | None = None) -> Record:
        """Append ``event`` to the entity's history; return its record once it is committed.

        ``expected_entity_seq`` is the entity's last ``entity_seq`` as the caller knows it (0 for a new
        entity); the new record gets ``expected_entity_seq + 1``, or the append fails with
        :class:`ConcurrencyError`. ``at`` is ``now()`` at the call unless the caller gives it (an actor that
        already read the runtime clock for its transition); ``seq`` follows the order of calls.
        Raises :class:`CommitError` if its batch could not be committed (nothing of it was written), and
        :class:`LeaseLost` once the writer's lease is lost.

        ``command=(command_id, result)`` completes that inbox command with ``result`` (``completed_at`` is the
        event's ``at``) in the same transaction as the event: both commit or neither does, so a command whose
        effect is this event is applied exactly once. If the command is no longer pending (completed already,
        also by an earlier append of the same batch) this append fails alone with
        :class:`CommandCompletedError` (:class:`UnknownCommandError` if there is no such command) and nothing
        of it is written; the rest of its batch commits as usual.
        """
        return await self.submit(entity_kind, entity_id, expected_entity_seq, event, at, command=command)

    def submit(self, entity_kind: str, entity_id: str, expected_entity_seq: int, event: Event,
               at: float | None = None, *, command: tuple[int, Mapping[str, Any]] | None = None,
               new: bool = False) -> asyncio.Future[Record]:
        """:meth:`append` without waiting: queue the append now and return the future of its record.

        For callers that run many appends from synchronous code (the actor kernel's dispatcher): the future
        resolves when the append's batch commits, or fails as :meth:`append` would raise. Appends are taken in
        the order of the calls, and the writer resolves the futures of one batch in that order.

        ``new=True`` (with ``expected_entity_seq=0``): the caller knows the entity has no event in the log (the
        kernel does: its World is the log's), so the writer does not look for it in the database. If it is wrong,
        the database's unique key on entities refuses the batch: every append of it fails with
        :class:`CommitError` and nothing is written (the single wrong append would otherwise fail alone, with
        :class:`ConcurrencyError`).
        """
        if not self._appendable:
            self._check_writable()
        tk = self._type_keys.get(type(event))
        if tk is None:
            tk = self._new_type_key(event)
        fut: asyncio.Future[Record] = _Future(loop=self._loop)
        if command is not None:
            self._commands[(fut, -1)] = (command[0], self._result_json(command[0], command[1]))
        incoming = self._incoming
        incoming.append(
            (entity_kind, entity_id, expected_entity_seq, event, tk, bytearray(self._encode(event)),
             self._now() if at is None else at, fut, new, -1)
        )
        if (wake := self._wake) is not None and len(incoming) >= self._wake_at:
            self._wake = None
            if not wake.done():
                wake.set_result(None)
        return fut

    def submit_many(self, appends: Sequence[Append]) -> asyncio.Future[list[Record | BaseException]]:
        """:meth:`submit` for many appends at once, with one future for all of them: it resolves, once every one
        has its outcome, with a list holding each append's record or the exception :meth:`append` would raise
        (as values, in the order given). Each append is queued, numbered, checked and committed exactly as by its
        own :meth:`submit` call, in this order; only the completion is shared (a future per append cost ~0.25 us
        to make and resolve, paid per transition by the actor kernel).

        ``appends`` are ``(kind, id, expected_entity_seq, event, at, command, new)`` (``at`` ``None``: now;
        ``command`` ``None``: none). An append that cannot be queued (an unregistered event type, a command result
        that is not JSON) gets its error in its place; the others are queued. Raises, queuing nothing, if the log
        takes no appends (closed, read-only, failed, lease lost)."""
        if not self._appendable:
            self._check_writable()
        loop = self._loop
        assert loop is not None
        group = _Group(_Future(loop=loop), len(appends))
        if not appends:
            group.future.set_result([])
            return group.future
        type_keys = self._type_keys
        encode = self._encode
        now = self._now
        incoming = self._incoming
        add = incoming.append
        for i, (kind, eid, expected, event, at, command, new) in enumerate(appends):
            try:
                tk = type_keys.get(type(event))
                if tk is None:
                    tk = self._new_type_key(event)
                if command is not None:
                    self._commands[(group, i)] = (command[0], self._result_json(command[0], command[1]))
            except EventLogError as e:
                group.put(i, e)
                continue
            add((kind, eid, expected, event, tk, bytearray(encode(event)), now() if at is None else at, group, new,
                 i))
        if (wake := self._wake) is not None and len(incoming) >= self._wake_at:
            self._wake = None
            if not wake.done():
                wake.set_result(None)
        return group.future

    @staticmethod
    def _result_json(command_id: int, result: Mapping[str, Any]) -> str:
        if type(command_id) is not int:
            raise EventLogError(f"a command id is an int (what submit_command returned), got {command_id!r}")
        try:
            return msgspec.json.encode(dict(result)).decode()
        except (TypeError, msgspec.EncodeError) as e:
            raise EventLogError(f"command {command_id}: result is not JSON-serializable: {e}") from e

    def _forget_commands(self, items: Sequence[_Item]) -> None:
        """Drop the inbox completions of appends that failed before their batch was written."""
        if self._commands:
            for item in items:
                self._commands.pop(_key(item), None)

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
        if self._writer_error is not None:
            raise self._writer_failed_error()
        if not self._open:
            raise LogClosedError(f"{self._path}: the event log is closed")
        if not self._writer:
            return
        target = self._submitted
        if self._done >= target:
            return
        wait = _CommitWait(self._done, target)
        self._commit_waits.append(wait)
        try:
            if target > self._flush_to:
                self._flush_to = target
                self._kick()
            while self._done < target:
                if self._closed or self._writer_done is None or self._writer_done.is_set():
                    if self._writer_error is not None:
                        raise self._writer_failed_error()
                    raise LogClosedError(f"{self._path}: the event log was closed before the commit finished")
                await self._progress.wait()
        finally:
            self._commit_waits.remove(wait)
        if self._lease_lost is not None:
            raise self._lease_lost
        if wait.error is not None:
            raise CommitError(f"{self._path}: commit failed: {wait.error}") from wait.error
        if self._writer_error is not None:  # the writer stopped on a bug while writing these appends
            raise self._writer_failed_error()

    def _note_failure(self, lo: int, hi: int, error: CommitError) -> None:
        """Appends ``lo <= ordinal < hi`` did not commit: tell each waiting commit() that covers one of them."""
        for wait in self._commit_waits:
            if wait.error is None and lo < wait.hi and hi > wait.lo:
                wait.error = error

    def _kick(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _notify_progress(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _fail_incoming(self, message: str, error: EventLogError | None = None) -> None:
        """Fail every append not yet taken by the writer (the log is aborting, or its lease is lost)."""
        items, self._incoming = self._incoming, []
        self._forget_commands(items)
        failure = CommitError(f"{self._path}: {message}")
        for item in items:
            if not _done(item):
                _fail(item, error if error is not None else CommitError(f"{self._path}: {message}"))
        lo = self._taken
        self._taken += len(items)
        self._done += len(items)
        self._flush_to = max(self._flush_to, self._taken)
        if items:
            self._note_failure(lo, self._taken, failure)

    def _writer_failed_error(self) -> WriterFailedError:
        error = self._writer_error
        err = WriterFailedError(
            f"{self._path}: the log's writer stopped on an unexpected error (a bug, not a database error), and "
            f"the log accepts no more appends; nothing of the batch it was writing was written: "
            f"{type(error).__name__}: {error}"
        )
        err.__cause__ = error
        return err

    def _writer_failed(self, error: BaseException, items: Sequence[_Item]) -> None:
        """The writer hit a bug (or was cancelled): fail the batch in hand and everything queued, stop appends."""
        if self._writer_error is None:
            self._writer_error = error
            log.error("eventlog writer failed", path=self._path, error=f"{type(error).__name__}: {error}")
        self._open = self._appendable = False
        for item in items:
            if not _done(item):
                _fail(item, self._writer_failed_error())
        rest, self._incoming = self._incoming, []
        self._forget_commands(items)
        self._forget_commands(rest)
        for item in rest:
            if not _done(item):
                _fail(item, self._writer_failed_error())
        self._taken += len(rest)
        self._done += len(rest)

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
            # Only a bug (or the task's cancellation) gets here: batches catch their database errors.
            self._writer_failed(e, ())
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
        """Load the tips of these appends' entities (none of them in the cache), or mark them new: an entity whose
        first append here was submitted with ``new=True`` (and expects 0) is not looked for."""
        missing: dict[tuple[str, str], _Entity | str] = {}
        fresh: set[tuple[str, str]] | None = None
        for item in items:
            k = (item[0], item[1])
            if k not in missing:
                if type(k[0]) is not str or type(k[1]) is not str or not k[0] or not k[1]:
                    missing[k] = f"entity kind and id must be non-empty strings, got {k[0]!r}, {k[1]!r}"
                else:
                    missing[k] = ""
                    if item[8] and item[2] == 0:
                        if fresh is None:
                            fresh = set()
                        fresh.add(k)
        keys = [k for k, v in missing.items() if not v]
        ask = [k for k in keys if k not in fresh] if fresh else keys
        if ask and len(self._packed):
            take = self._packed.take
            unpacked = []
            for k in ask:
                tip = take(k[0], k[1])
                if tip is None:
                    unpacked.append(k)
                else:
                    missing[k] = _Entity(tip[0], k[0], k[1], tip[1], tip[2], True)
            ask = unpacked
        if ask:
            for ek, kind, eid, last_seq, last_eseq in await self._db_lookup(ask):
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
            await self._write_items(items, lo)
        except BaseException as e:
            self._writer_failed(e, items)
            raise
        finally:
            self._done += n
            if self._hot_count() > self._hot_tips:
                self._shed_tips()
            self._notify_progress()

    def _cached_or_fresh(self, items: list[_Item]) -> list[_Entity] | None:
        """The batch's entities in one pass, if each is cached or new (its first append here submitted with
        ``new=True``, expecting 0: made and cached now, as ``_lookup`` would); ``None`` (nothing made) if one is
        neither, for ``_lookup`` to resolve."""
        cache = self._cache
        ents: list[_Entity] = []
        add = ents.append
        made: list[_Entity] | None = None
        last_kind: object = None
        d: dict[str, _Entity] | None = None  # the last kind's dict: a batch is mostly of one or two kinds
        for it in items:
            kind = it[0]
            eid = it[1]
            if kind is not last_kind:
                d = cache.get(kind)
                last_kind = kind
            e = None if d is None else d.get(eid)
            if e is None:
                if not (it[8] and it[2] == 0 and type(kind) is str and type(eid) is str and kind and eid):
                    if made is not None:  # undo: the lookup makes these (keys in the same order)
                        self._next_entity_key -= len(made)
                        for m in made:
                            self._uncache(m.kind, m.eid)
                    return None
                if d is None:
                    d = cache[kind] = {}
                e = d[eid] = _Entity(self._next_entity_key, kind, eid, 0, 0, False)
                self._next_entity_key += 1
                if made is None:
                    made = [e]
                else:
                    made.append(e)
            add(e)
        return ents

    async def _write_items(self, items: list[_Item], lo: int,
                           cmds: dict[tuple[object, int], tuple[int, str]] | None = None) -> None:
        """Check, number and write one batch (appends ``lo ..``); a database error fails it with CommitError.

        ``cmds`` are the batch's inbox completions (taken from ``_commands`` here on the first attempt).
        """
        if cmds is None and self._commands:
            cmds = {ck: c for it in items if (c := self._commands.pop(ck := _key(it), None)) is not None}
        if self._lease_lost is not None:
            for it in items:
                _fail(it, self._lease_lost)
            return
        ents = self._cached_or_fresh(items)
        if ents is None:
            # An entity neither cached nor new (``submit(new=True)``): one pass over the batch for the cached tips;
            # the lookup sees only the others.
            cached = self._cached
            have = [cached(it[0], it[1]) for it in items]
            try:
                found = await self._lookup([it for it, e in zip(items, have, strict=True) if e is None])
            except LeaseLost as e:
                self._fail_lease_lost(e, items)
                return
            except self._bug_db_errors:
                raise
            except self._db_errors as e:  # nothing is numbered or cached yet: only the appends need failing
                self._fail_batch(e, items, lo, len(items), "", "")
                return
            bad: dict[tuple[str, str], str] = {}
            for k, v in found.items():
                if isinstance(v, _Entity):
                    self._cache_put(v)
                else:
                    bad[k] = v
            if bad:
                for it in items:
                    msg = bad.get((it[0], it[1]))
                    if msg is not None:
                        _fail(it, EventLogError(msg))
                kept = [(it, e) for it, e in zip(items, have, strict=True) if (it[0], it[1]) not in bad]
                items = [it for it, _ in kept]
                have = [e for _, e in kept]
            ents = [e if e is not None else found[(it[0], it[1])]  # type: ignore[misc]
                    for it, e in zip(items, have, strict=True)]

        # Check and number the appends, in call order, against the pending tips.
        seq = first_seq = self._next_seq
        rows: list[EventRow] = []
        recs: list[Record] = []
        oks: list[_Item] = []  # the appends numbered, one for one with rows and recs
        rows_append, recs_append, oks_append = rows.append, recs.append, oks.append
        record = Record
        conflicts: list[tuple[_Item, _Entity, int, int]] | None = None
        # Between batches every pending tip equals its committed tip, so an entity is touched (its tip moves)
        # when an append of it is numbered while the two are still equal: the touched, each once, in order.
        touched: list[_Entity] = []
        touched_append = touched.append
        # zip(strict=False): ents was built from items, one for one; the strict check costs in this loop.
        for it, ent in zip(items, ents, strict=False):
            kind, eid, expected, ev, tk, payload, at = it[:7]
            last = ent.peseq
            if expected != last:
                if conflicts is None:
                    conflicts = []
                conflicts.append((it, ent, expected, last))
                continue
            last += 1
            prev = ent.pseq
            if prev == ent.cseq:
                touched_append(ent)
            rows_append((seq, ent.key, last, prev, tk, payload, at))
            recs_append(record(seq, kind, eid, last, ev, at))
            oks_append(it)
            ent.pseq = seq
            ent.peseq = last
            seq += 1
        if conflicts is not None and await self._conflicts_reveal_damage(conflicts, touched, oks):
            return
        if not rows:
            return
        new = [(e.key, e.kind, e.eid, e.pseq, e.peseq) for e in touched if not e.in_db]
        upd = [(e.pseq, e.peseq, e.key) for e in touched if e.in_db]
        types = [(tk, name, version) for tk, (name, version) in self._unsaved_types.items()]
        cmd_items: list[_Item] = []
        cmd_rows: list[tuple[float, str, int]] = []
        if cmds:
            for it, rec in zip(oks, recs, strict=True):
                if (c := cmds.get(_key(it))) is not None:
                    cmd_items.append(it)
                    cmd_rows.append((rec.at, c[1], c[0]))

        # One call writes and commits the whole batch (or nothing of it).
        # Shielded: once started, the outcome must be known, whatever happens to this task.
        try:
            with anyio.CancelScope(shield=True):
                await self._db_write(types, rows, new, upd, cmd_rows,
                                     seq - 1 if self._needs_mark(touched, seq - 1) else None)
        except CommandsNotPending as e:
            # Fail those appends alone and write the batch again without them (and without appends already
            # failed: a conflict they caused is not undone, their callers were told).
            self._rollback(touched)
            assert cmds is not None
            await self._fail_not_pending([(cmd_items[i], cmd_rows[i][2]) for i in e.indexes])
            left = [it for it in items if not _done(it)]
            await self._write_items(left, lo, {ck: c for it in left if (c := cmds.get(ck := _key(it))) is not None})
            return
        except LeaseLost as e:
            self._rollback(touched)
            self._fail_lease_lost(e, oks)
            return
        except self._batch_errors as e:
            self._rollback(touched)
            if isinstance(e, self._bug_db_errors):
                raise
            self._fail_batch(e, oks, lo, len(items), f" (seq {first_seq}..{seq - 1})", f" of {len(oks)} appends")
            return
        except BaseException:
            self._rollback(touched)
            raise

        # Committed: promote the pending tips and tell every appender.
        for ent in touched:
            ent.cseq = ent.pseq
            ent.ceseq = ent.peseq
            ent.in_db = True
        for tk, _, _ in types:
            self._unsaved_types.pop(tk, None)
        self._committed_seq = seq - 1
        self._next_seq = seq
        for it, rec in zip(oks, recs, strict=False):
            i = it[9]
            if i >= 0:  # _Group.put, inlined
                group: _Group = it[7]  # type: ignore[assignment]
                out = group.out
                if out[i] is None:
                    out[i] = rec
                    group.left -= 1
                    if not group.left and not group.future.done():
                        group.future.set_result(out)  # type: ignore[arg-type]  # no None left
                continue
            try:  # noqa: SIM105 - suppress() would cost a context manager per append in the hot loop
                it[7].set_result(rec)  # type: ignore[union-attr]
            except asyncio.InvalidStateError:
                pass  # the appender was cancelled; its event is committed all the same

    @staticmethod
    def _needs_mark(touched: list[_Entity], last: int) -> bool:
        """Whether a batch ending at seq ``last`` must write the high-water mark for the open check to see the
        loss of its events.

        If the log's last events are lost, look at the first lost one, e: if its entity's previous event p is
        within ``TAIL_CHECK`` of it, p is in the tail the writer's open checks, and the entity's head in
        ``entities`` (past p) gives the loss away. Otherwise (p is older, or e was its entity's first event) only
        the mark can: so a batch writes it when one of its entities is new or last moved ``TAIL_CHECK`` seqs
        before the batch's end (a cheap superset of the events that need it; the first entity usually decides).
        Batches of entities that move often, the common case of a small batch, write no extra page.
        """
        horizon = last - TAIL_CHECK
        return any(e.cseq == 0 or e.cseq < horizon for e in touched)

    async def _fail_not_pending(self, failed: list[tuple[_Item, int]]) -> None:
        """Fail appends whose command completion found the command not pending, saying why."""
        for item, command_id in failed:
            try:
                row = await self._db_command(command_id)
            except self._bug_db_errors:
                raise
            except self._db_errors:
                row = None
            error: EventLogError
            if row is None:
                error = UnknownCommandError(
                    f"{self._path}: there is no command {command_id}, so this append, which was to complete it, "
                    "was not written", command_id)
            else:
                name, done_at = row[1], row[4]
                when = "earlier in the same batch" if done_at is None else f"at {done_at}"
                error = CommandCompletedError(
                    f"{self._path}: command {command_id} ({name}) was already completed ({when}); nothing of this "
                    "append was written, so the command's effect is not applied twice", command_id)
            _fail(item, error)

    async def _conflicts_reveal_damage(
        self,
        conflicts: list[tuple[_Item, _Entity, int, int]],
        touched: list[_Entity],
        oks: list[_Item],
    ) -> bool:
        """Fail the conflicting appends with ConcurrencyError, unless the conflict comes from a damaged log.

        The one writer numbers every append, so an append whose expected ``entity_seq`` is not the entity's
        comes from a caller whose view is not the log's: a bug in the caller, or a log that lost its entity's
        last event (the caller's replay of it counts one event fewer than ``entities`` does). The latter is
        damage: then the whole batch fails with DamagedLogError, nothing is written, and nothing ever will be.
        A rare path: it reads each conflicting entity's head row, by key.
        """
        damage = await self._conflict_damage({id(c[1]): c[1] for c in conflicts if c[1].in_db}.values())
        if not damage:
            for item, ent, expected, actual in conflicts:
                _fail(item, ConcurrencyError(ent.kind, ent.eid, expected, actual))
            return False
        self._rollback(touched)
        self._damage = tuple(damage)
        self._appendable = False
        log.error("eventlog damaged", path=self._path, problems=damage)
        for item in [c[0] for c in conflicts] + oks:
            _fail(item, DamagedLogError(self._path, self._damage))
        rest, self._incoming = self._incoming, []
        self._forget_commands(rest)
        for item in rest:
            _fail(item, DamagedLogError(self._path, self._damage))
        self._taken += len(rest)
        self._done += len(rest)
        return True

    async def _conflict_damage(self, ents: Collection[_Entity]) -> list[str]:
        """Problems with these entities' committed last events (missing, another entity's, misnumbered)."""
        try:
            heads = await self._db_events_at({e.cseq for e in ents})
        except self._bug_db_errors:
            raise
        except self._db_errors:
            return []  # cannot tell: the conflicts stay conflicts
        problems = []
        for e in ents:
            head = heads.get(e.cseq)
            if head is None:
                problems.append(f"{e.kind} {e.eid!r}: its last event, seq {e.cseq}, is not in the log")
            elif head[0] != e.key:
                problems.append(f"{e.kind} {e.eid!r}: its last event, seq {e.cseq}, is another entity's")
            elif head[1] != e.ceseq:
                problems.append(
                    f"{e.kind} {e.eid!r}: its last event, seq {e.cseq}, has entity_seq {head[1]}, but entities says "
                    f"{e.ceseq}"
                )
        return problems

    async def _tail_problems(self, mark: str | None) -> list[str]:
        """What is structurally wrong with the log's last ``TAIL_CHECK`` events; [] when they are sound.

        Each event must link (``prev_seq``) to an earlier event of its own entity with the previous
        ``entity_seq``, have a known type key and a payload that decodes strictly (when this registry knows its
        type); the entity of each must have its last event in the tail recorded as its head in ``entities``;
        and the last event must not be below ``mark``, the high-water mark (a committed seq). Reads a few
        hundred rows by key: milliseconds whatever the log's size. Damage older than the tail is found by
        ``verify()``, or by an append that meets it (:meth:`_conflict_damage`).
        """
        problems: list[str] = []
        tail = await self._db_tail(TAIL_CHECK)
        last = tail[0][0] if tail else 0
        try:
            committed = None if mark is None else int(mark)
        except ValueError:
            problems.append(f"the high-water mark is {mark!r}, not a seq")
            committed = None
        if committed is not None and committed > last and committed > self._compacted:
            problems.append(
                f"the log's last events are missing: seq {committed} was committed, but the last event is "
                + (f"seq {last}" if last else "none (the events table is empty)")
            )
        by_seq = {seq: (ek, eseq) for seq, ek, eseq, *_ in tail}
        by_seq.update(await self._db_events_at({r[3] for r in tail if r[3] is not None and r[3] not in by_seq}))
        types = {tk: (name, version) for tk, name, version in await self._db_types()}
        heads: dict[int, tuple[int, int]] = {}  # entity_key -> its last (seq, entity_seq) in the tail
        for seq, ek, eseq, prev, tk, payload in tail:
            heads.setdefault(ek, (seq, eseq))
            if prev is None:
                if eseq != 1:
                    problems.append(f"seq {seq}: entity_seq {eseq} without a prev_seq (only a first event has none)")
            elif prev >= seq:
                problems.append(f"seq {seq}: prev_seq {prev} is not before it")
            elif (linked := by_seq.get(prev)) is None:
                if prev > self._compacted:  # at or below it, the event was dropped on purpose (drop_events)
                    problems.append(f"seq {seq}: prev_seq {prev} points at an event that is not in the log")
            elif linked[0] != ek:
                problems.append(f"seq {seq}: prev_seq {prev} points at an event of another entity")
            elif linked[1] != eseq - 1:
                problems.append(f"seq {seq}: entity_seq {eseq} follows entity_seq {linked[1]} (a gap or a repeat)")
            name_version = types.get(tk)
            if name_version is None:
                problems.append(f"seq {seq}: event type key {tk} is not in the event_types table")
                continue
            try:
                cls = self._registry.lookup(*name_version)
            except CorruptLogError:
                continue  # a type this wantbuild does not know: not damage; reading it says so
            try:
                self._registry.strict_decoder_for(cls).decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as e:
                problems.append(f"seq {seq}: undecodable payload for {name_version[0]} v{name_version[1]}: {e}")
        found = {ek: (kind, eid, ls, les) for ek, kind, eid, ls, les in await self._db_entities_by_key(list(heads))}
        for ek, (seq, eseq) in heads.items():
            ent = found.get(ek)
            if ent is None:
                problems.append(f"seq {seq}: its entity (entity_key {ek}) is not in the entities table")
            elif (ent[2], ent[3]) != (seq, eseq):
                problems.append(
                    f"{ent[0]} {ent[1]!r}: entities says last seq {ent[2]} / entity_seq {ent[3]}, but its events "
                    f"end at seq {seq} / entity_seq {eseq}"
                )
        return problems

    def _is_aborting(self) -> bool:
        return self._aborting

    def _rollback(self, touched: list[_Entity]) -> None:
        """Undo a batch in memory that did not commit (the database already rolled it back)."""
        for e in touched:
            if e.in_db:
                e.pseq = e.cseq
                e.peseq = e.ceseq
            else:
                self._uncache(e.kind, e.eid)
        self._next_seq = self._committed_seq + 1

    def _fail_lease_lost(self, error: LeaseLost, items: list[_Item]) -> None:
        """The batch's fence did not hold: nothing was written; fail its appends and fence the log."""
        for item in items:
            _fail(item, error)
        self._fence(error)

    def _fail_batch(
        self, error: BaseException, items: list[_Item], lo: int, n: int, seqs: str, size: str
    ) -> None:
        """A batch (appends ``lo .. lo + n``) did not commit: fail its appends with CommitError, tell commit()."""
        if isinstance(error, Aborted):
            message = f"{self._path}: log aborted before this append was committed"
        else:
            message = (
                f"{self._path}: could not commit a batch{size}{seqs}, nothing of it was written: "
                f"{type(error).__name__}: {error}"
            )
            log.error("eventlog commit failed", path=self._path, appends=len(items), error=str(error))
        failure = CommitError(message)
        failure.__cause__ = error
        self._note_failure(lo, lo + n, failure)
        for item in items:
            if not _done(item):
                err = CommitError(message)
                err.__cause__ = error
                _fail(item, err)

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

    def _decode_payload(self, seq: int, tk: int, payload: bytes, strict: bool = False) -> Event:
        """Decode one row's payload, or raise CorruptLogError saying why; ``strict`` refuses unknown fields."""
        name_version = self._type_names.get(tk)
        if name_version is None:
            raise CorruptLogError(f"{self._path}: event type key {tk} is not in the event_types table", seq)
        name, version = name_version
        dec = self._decoders[tk] if tk < len(self._decoders) else None
        if dec is not None and strict:
            dec = self._registry.strict_decoder_for(self._registry.lookup(name, version)).decode
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

    async def histories(self, entity_kind: str, entity_ids: Collection[str]) -> dict[str, list[Record]]:
        """Several entities' committed records, each entity's in order (a walk down its ``prev_seq`` chain), in one
        query per few hundred ids: what the World folds an evicted entity back from. An id the log has never seen
        maps to ``[]``. After ``compact`` an ended entity's chain starts past the cut (its state is in the
        snapshot there)."""
        self._check_readable()
        ids = list(dict.fromkeys(entity_ids))
        out: dict[str, list[Record]] = {eid: [] for eid in ids}
        if not ids:
            return out
        rows = await self._db_histories(entity_kind, ids)
        recs = await self._records([(s, entity_kind, eid, es, tk, p, at) for eid, s, es, tk, p, at in rows])
        for rec in recs:
            out[rec.entity_id].append(rec)
        return out

    async def entity_ids(self, entity_kind: str) -> list[str]:
        """The id of every entity of ``entity_kind`` the log has committed an event of (in no particular order)."""
        self._check_readable()
        return await self._db_entity_ids(entity_kind)

    async def entity_seq(self, entity_kind: str, entity_id: str) -> int:
        """The entity's last committed ``entity_seq``; 0 if the log has never seen it."""
        ent = self._cached(entity_kind, entity_id)
        if ent is not None:
            return ent.ceseq
        tip = self._packed.get(entity_kind, entity_id)
        if tip is not None:
            return tip[2]
        self._check_readable()
        return await self._db_entity_seq(entity_kind, entity_id)

    async def verify(self) -> VerifyReport:
        """Check the whole log's structure; return every problem found (never raises for a bad row).

        Checks: ``seq`` increases; each entity's ``entity_seq`` runs 1, 2, 3... without gaps and its
        ``prev_seq`` chain links each event to the entity's previous one and ends at ``entities.last_seq``;
        every event type is known; every payload decodes into its type strictly: a field the type does not
        have is a problem here (reading ignores it), as is a required field that is missing.
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
                if tip is None and prev is not None and prev <= self._compacted:
                    want_eseq, want_prev = eseq, prev  # its earlier events were dropped (drop_events)
                if eseq != want_eseq:
                    problem(seq, f"entity_seq {eseq} where {want_eseq} was due (gap or repeat)")
                if prev != want_prev:
                    problem(seq, f"prev_seq {prev} but the entity's previous event is {want_prev}")
                tips[ek] = (seq, eseq)
                try:
                    self._decode_payload(seq, tk, payload, strict=True)
                except CorruptLogError as e:
                    problem(seq, str(e).removeprefix(f"seq {seq}: ").removeprefix(f"{self._path}: "))
        entities = 0
        for ek, kind, eid, e_last, e_eseq in await self._db_verify_entities():
            entities += 1
            tip = tips.pop(ek, None)
            if tip is None:
                if e_last > self._compacted:  # else every event of it was dropped (drop_events)
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

    # ------------------------------------------------------------------ snapshots

    async def write_snapshot(self, seq: int, at: float, format: str, data: bytes | Sequence[bytes]) -> SnapshotInfo:
        """Store ``data`` as the snapshot covering events ``1..seq`` (the writer only); return what was stored.

        ``data`` may be given in parts (a list of bytes): they are stored as their concatenation.
        The log does not interpret ``data``: ``format`` says what it is. It is compressed and checksummed a quarter
        megabyte at a time (other tasks run in between), then written in pieces of about a megabyte, each its own
        transaction (so the writer's batches are never held up for long), and listed only once its head row is
        written after the last piece: a crash half-way leaves nothing visible. ``seq`` must be committed.
        """
        self._check_writable()
        if not 0 < seq <= self._committed_seq:
            raise EventLogError(f"{self._path}: a snapshot must cover committed events; seq {seq} is not committed "
                                f"(last committed seq {self._committed_seq})")
        parts: list[bytes] = [data] if isinstance(data, bytes) else list(data)
        size = sum(len(p) for p in parts)
        # On the event loop, a slice at a time with a checkpoint between: a worker thread would do it in one go,
        # but it takes the GIL back after every zlib and hash call, and the loop then waits for it (measured:
        # gaps of 150 ms between the writer's commits, against 1-2 ms steps here).
        packer = _Packer()
        for part in parts:
            view = memoryview(part)
            for i in range(0, len(view), _Packer.STEP):
                packer.feed(view[i:i + _Packer.STEP])
                await anyio.lowlevel.checkpoint()
        stored, checksum = packer.finish()
        n = max(1, -(-len(stored) // SNAPSHOT_PIECE))
        for i in range(n):
            self._check_writable()
            await self._db_snapshot_piece(seq, i, stored[i * SNAPSHOT_PIECE:(i + 1) * SNAPSHOT_PIECE])
            # A SQLite piece is written on the loop's thread without suspending: let the batches in between.
            await anyio.lowlevel.checkpoint()
        row: SnapshotRow = (seq, at, format, size, len(stored), checksum, self._now(), n)
        await self._db_snapshot_head(row)
        log.info("eventlog snapshot written", path=self._path, seq=seq, format=format, size=size,
                 stored=len(stored))
        return SnapshotInfo(*row[:7])

    async def snapshots(self) -> list[SnapshotInfo]:
        """The stored snapshots, newest (highest ``seq``) first."""
        self._check_readable()
        return [SnapshotInfo(*row[:7]) for row in await self._db_snapshot_list()]

    async def read_snapshot(self, snapshot: SnapshotInfo) -> bytes:
        """A snapshot's bytes, checked against its checksum; :class:`SnapshotError` if they cannot be trusted."""
        self._check_readable()
        pieces = await self._db_snapshot_pieces(snapshot.seq)
        if [i for i, _ in pieces] != list(range(len(pieces))) or not pieces:
            raise SnapshotError(f"{self._path}: the snapshot is incomplete (pieces {[i for i, _ in pieces]})",
                                snapshot.seq)
        stored = b"".join(p for _, p in pieces)
        if len(stored) != snapshot.stored:
            raise SnapshotError(f"{self._path}: the snapshot has {len(stored)} bytes stored, its head row says "
                                f"{snapshot.stored}", snapshot.seq)
        got = await anyio.to_thread.run_sync(_unpack_snapshot, stored, snapshot.checksum)
        if isinstance(got, str):
            raise SnapshotError(f"{self._path}: the snapshot fails its check: {got}", snapshot.seq)
        return got

    async def delete_snapshots(self, seqs: Collection[int]) -> None:
        """Delete these snapshots (the writer only)."""
        self._check_writable()
        if seqs:
            await self._db_snapshot_delete(sorted(seqs))

    async def drop_events(self, entities: Collection[tuple[str, str]], through_seq: int) -> int:
        """Delete the events of these ``(kind, id)`` entities with ``seq <= through_seq`` (the writer only; one
        transaction); return how many were deleted. Retention (``wantbuild compact``): the caller keeps a snapshot at
        ``through_seq`` and passes entities that will not change again. The entities keep their tips, so appends
        and the damage checks go on; their history before ``through_seq`` is gone (``history`` returns what is
        left), and a replay must start from a snapshot at or after ``compacted_through``."""
        self._check_writable()
        if not 0 < through_seq <= self._committed_seq:
            raise EventLogError(f"{self._path}: can only drop committed events; seq {through_seq} is not committed "
                                f"(last committed seq {self._committed_seq})")
        n = await self._db_drop_events(sorted(set(entities)), through_seq)
        self._compacted = max(self._compacted, through_seq)
        log.info("eventlog events dropped", path=self._path, entities=len(entities), events=n,
                 through_seq=through_seq)
        return n

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
        """Record a command's result; it is then no longer pending. Writer only; once per command.

        For a command whose effect is an event, complete it with that event instead (``append(...,
        command=(id, result))``): both then commit together."""
        self._check_writable()
        body = self._result_json(command_id, result)
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
                raise UnknownCommandError(f"{self._path}: there is no command {command_id}", command_id)
            raise CommandCompletedError(
                f"{self._path}: command {command_id} ({existing.name}) was already completed", command_id
            )

    async def commands(self, state: CommandState | None = None, *, limit: int | None = None,
                       newest_first: bool = False) -> list[Command]:
        """Inbox commands in id order (newest first if asked), all or those in one ``state``, with results.

        ``state``: ``"pending"`` (not completed yet), ``"ok"`` (completed) or ``"failed"`` (completed with
        ``{"ok": false, "error": ...}``: the runtime refused or failed it; :attr:`Command.error` says why).
        """
        if state is not None and state not in ("pending", "ok", "failed"):
            raise ValueError(f"state must be 'pending', 'ok', 'failed' or None, got {state!r}")
        self._check_readable()
        rows = await self._db_commands(state, limit, newest_first)
        return [Command(i, n, msgspec.json.decode(p), at, done_at, None if r is None else msgspec.json.decode(r))
                for i, n, p, at, done_at, r in rows]

    async def command_counts(self) -> dict[CommandState, int]:
        """How many inbox commands are pending, ok and failed (every state present, 0 when none)."""
        self._check_readable()
        counts: dict[CommandState, int] = {"pending": 0, "ok": 0, "failed": 0}
        for state, n in (await self._db_command_counts()).items():
            if state in counts:
                counts[state] = n
        return counts

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
    await self._wait_to_write()  # may wait as long as lease_wait says (a standby): always cancellable
    with anyio.CancelScope(shield=self._shield_open):
        await self._start()
    try:
        await anyio.lowlevel.checkpoint()
        if self._writer:
            self._start_writer()
        yield self
    finally:
        await self.close()
