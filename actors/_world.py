"""The World: every entity's committed state, rebuilt by folding the log through the transition functions.

The live runtime keeps one World up to date as its actors commit transitions; :func:`rebuild` produces the same
World from the log alone (invariant I3: the two are equal at any crash point). Replay can stop at a ``seq`` or a
time (time travel). An event that does not apply stops replay with a :class:`ReplayError` giving its ``seq``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeAlias

import anyio
import anyio.abc

from eventlog import CorruptLogError, Event, Log, Record

from ._evict import EntityEvicted, EvictingTable, fold_back, fold_now, pinned, settled
from ._jobrun import JOB_RUN, JobRunState, JobRunStatus, apply_job_run
from ._lineage import LineageIndex
from ._machine import IllegalTransition, Machine
from ._partition import PARTITION, PartitionState, PartitionStatus, apply_partition
from ._schedule import SCHEDULE, ScheduleState, apply_schedule
from ._taint import TAINT, TaintState, apply_taint
from ._want import WANT, WantState, WantStatus, apply_want

EntityKind: TypeAlias = Literal["want", "partition", "job_run", "schedule", "taint"]
KINDS: tuple[EntityKind, ...] = ("want", "partition", "job_run", "schedule", "taint")
"""The built-in entity kinds (:data:`MACHINES` also has the kinds added with :func:`register_entity_kind`)."""
EntityState: TypeAlias = WantState | PartitionState | JobRunState | ScheduleState | TaintState

MACHINES: dict[str, Machine[Any]] = {"want": WANT, "partition": PARTITION, "job_run": JOB_RUN, "schedule": SCHEDULE,
                                     "taint": TAINT}
APPLY: dict[str, Callable[[Any, Event, str, float, int], Any]] = {
    "want": apply_want,
    "partition": apply_partition,
    "job_run": apply_job_run,
    "schedule": apply_schedule,
    "taint": apply_taint,
}
_SUCCEEDED = JobRunStatus.SUCCEEDED
_DONE: Any = object()
_LIVE = PartitionStatus.LIVE


def register_entity_kind(kind: str, machine: Machine[Any], apply: Callable[[Any, Event, str, float, int], Any]) -> None:
    """Add an entity kind: its state machine and its pure transition function ``apply(state, event, id, at,
    entity_seq) -> state``. Every World made afterwards keeps a table of its states, replay folds its events,
    and the actor kernel can run it (``Kernel.register(kind, ..., entity=True)``). Call it when the module
    that defines the kind is imported, before any World is made (see docs/kernel.md)."""
    if kind in APPLY and (MACHINES.get(kind) is not machine or APPLY[kind] is not apply):
        raise ValueError(f"entity kind {kind!r} is already registered with another machine or transition")
    if machine.kind != kind:
        raise ValueError(f"entity kind {kind!r}: its machine is for {machine.kind!r}")
    MACHINES[kind] = machine
    APPLY[kind] = apply


def _plain(kind: str) -> dict[str, Any]:
    return {}


class ReplayError(CorruptLogError):
    """An event in the log that does not apply to its entity. ``seq`` names it."""


class World:
    """Every entity's committed state, with queries by id and by status, and the lineage index
    (:class:`~actors.LineageIndex`, fed as runs succeed)."""

    def __init__(self, *, evicting: bool = False) -> None:
        table: Callable[[str], dict[str, Any]] = EvictingTable if evicting else _plain
        self.evicting = evicting
        """Whether settled entities can be evicted (:meth:`evict`): the tables are then
        :class:`~actors._evict.EvictingTable` (docs/restart.md, "Memory follows active work")."""
        self.wants: dict[str, WantState] = table("want")
        self.partitions: dict[str, PartitionState] = table("partition")
        self.runs: dict[str, JobRunState] = table("job_run")
        self.schedules: dict[str, ScheduleState] = table("schedule")
        self.taints: dict[str, TaintState] = table("taint")
        self._lineage = LineageIndex(compact=evicting)  # a World that keeps every state keeps its refs' strings
        self._lineage_todo: Iterator[None] | None = None
        """Work left before :attr:`lineage` may be read (a snapshot's Succeeded runs to index, done in steps by
        :meth:`index_lineage` in the background or at once by the first reader), and the runs that succeeded
        since, indexed after them in the order they came."""
        self._lineage_later: list[JobRunState] = []
        self._later: list[Iterator[None]] = []
        self.id_hints: dict[str, list[str]] = {}
        """Per kind, the highest numbered ids (one per ``prefix-``) among the entities a lazy snapshot load left
        evicted: what a runtime's id counters must continue after (``supervisor.IdSource``)."""
        self.last_seq = 0
        self.last_at = 0.0
        self.history: dict[tuple[str, str], list[Record]] | None = None
        self.applied = 0
        """Committed records folded or put since this World was made (snapshots use it to find a point where the
        World holds exactly the log's committed prefix)."""
        self.restored: Any = None
        """How :func:`rebuild` made this World (an ``actors.Restored``: the snapshot used, the tail, what was
        skipped); None for a World made otherwise."""
        self._tables: dict[str, dict[str, Any]] = {
            "want": self.wants, "partition": self.partitions, "job_run": self.runs, "schedule": self.schedules,
            "taint": self.taints,
        }
        for kind in APPLY:  # kinds added with register_entity_kind
            if kind not in self._tables:
                self._tables[kind] = table(kind)
        self._read_now: Callable[[str, list[str]], dict[str, list[Record]]] | None = None
        self._ids_now: Callable[[str], list[str]] | None = None
        self.evicted_counts: dict[str, dict[str, int]] = {}
        """Evicted entities per status, per kind (what :meth:`counts` adds to the resident ones)."""
        self.on_adopt: dict[str, Callable[[Any, Any], None]] = {"job_run": self._run_adopted}
        """What else a live transition of a kind changes besides its table (the lineage index, fed as runs
        succeed): the actor kernel calls ``on_adopt[kind](old, new)`` as it adopts a committed state."""

    # -- folding ---------------------------------------------------------------------------------------
    def apply(self, rec: Record) -> EntityState:
        """Fold one record; raise :class:`ReplayError` (with its seq) if it does not apply."""
        kind = rec.entity_kind
        table = self._tables.get(kind)
        if table is None:
            raise ReplayError(f"unknown entity kind {kind!r}", rec.seq)
        eid = rec.entity_id
        old = table.get(eid)
        eseq = rec.entity_seq
        if eseq != (1 if old is None else old.entity_seq + 1):
            have = 0 if old is None else old.entity_seq
            raise ReplayError(f"{kind} {eid!r}: entity_seq {eseq} follows {have} (gap or repeat)", rec.seq)
        try:
            new = APPLY[kind](old, rec.event, eid, rec.at, eseq)
        except IllegalTransition as e:
            raise ReplayError(str(e), rec.seq) from e
        table[eid] = new
        if new.status is _SUCCEEDED and kind == "job_run" and (old is None or old.status is not _SUCCEEDED):
            self._index_run(new)
        self.last_seq = rec.seq
        self.last_at = rec.at
        self.applied += 1
        if self.history is not None:
            self.history.setdefault((kind, eid), []).append(rec)
        return new  # type: ignore[no-any-return]

    def _run_adopted(self, old: JobRunState | None, new: JobRunState) -> None:
        if new.status is _SUCCEEDED and (old is None or old.status is not _SUCCEEDED):
            self._index_run(new)

    # -- the lineage index, built after a snapshot load ------------------------------------------------
    @property
    def lineage(self) -> LineageIndex:
        """The lineage index (:class:`~actors.LineageIndex`). After a snapshot load it is built in the background
        (:meth:`index_lineage`); reading it before that is done finishes it first."""
        if self._lineage_todo is not None:
            self.index_lineage(None)
        return self._lineage

    @lineage.setter
    def lineage(self, index: LineageIndex) -> None:
        self._lineage, self._lineage_todo, self._lineage_later = index, None, []

    def _index_run(self, run: JobRunState) -> None:
        if self._lineage_todo is None:
            self._lineage.add_run(run)
        else:
            self._lineage_later.append(run)

    def defer_lineage(self, steps: Iterator[None]) -> None:
        """Build the lineage index by running ``steps`` (a generator that indexes runs into :attr:`_lineage`,
        yielding between pieces of work) before it is read; runs that succeed meanwhile wait for it."""
        self._lineage_todo = steps

    def defer(self, steps: Iterator[None]) -> None:
        """Work a load left for later that nothing waits for (an eviction index's filter): :meth:`background_step`
        runs it."""
        self._later.append(steps)

    def background_step(self) -> bool:
        """Do one piece of the work a snapshot load deferred (the lineage index first); whether all is done."""
        if not self.index_lineage(1):
            return False
        while self._later:
            if next(self._later[0], _DONE) is not _DONE:
                return False
            self._later.pop(0)
        return True

    def index_lineage(self, steps: int | None = 1) -> bool:
        """Do ``steps`` pieces of the lineage index's deferred build (None: all of it); whether it is done."""
        todo = self._lineage_todo
        if todo is None:
            return True
        for _ in itertools.count() if steps is None else range(steps):
            if next(todo, _DONE) is _DONE:
                break
        else:
            return False
        self._lineage_todo = None
        for run in self._lineage_later:
            self._lineage.add_run(run)
        self._lineage_later = []
        return True

    def put(self, kind: str, entity_id: str, state: EntityState, seq: int, at: float) -> None:
        """Record a live actor's committed state (the runtime's write path; replay uses :meth:`apply`)."""
        table = self._tables[kind]
        if state.status is _SUCCEEDED and kind == "job_run":
            old = table.get(entity_id)
            if old is None or old.status is not _SUCCEEDED:
                self._index_run(state)
        table[entity_id] = state
        self.applied += 1
        if seq > self.last_seq:
            self.last_seq = seq
            self.last_at = at

    # -- queries ---------------------------------------------------------------------------------------
    def get(self, kind: str, entity_id: str) -> EntityState | None:
        return self._tables[kind].get(entity_id)

    def table(self, kind: str) -> dict[str, Any]:
        """Every committed state of ``kind`` by id (the live dict: read it, do not change it)."""
        return self._tables[kind]

    def partition(self, ref: str) -> PartitionState:
        """The partition's state; a ref never seen is Missing at generation 0."""
        table = self.partitions
        st = dict.get(table, ref)  # a resident state without EvictingTable.get's frame (the supervisor's hot read)
        if st is None:
            st = table.get(ref)  # evicted (read back) or never seen
        return st if st is not None else PartitionState(ref=ref)

    def is_live(self, ref: str) -> bool:
        """Whether the partition is Live, without reading it back if it is evicted: only Live partitions are
        evicted, and one changes only once loaded again (its actor's cell loads it first)."""
        table = self.partitions
        st = dict.get(table, ref)
        if st is None:
            return isinstance(table, EvictingTable) and table.maybe_evicted(ref)
        return st.status is _LIVE

    def needs(self, ref: str) -> tuple[str, ...]:
        """The upstream refs an UpstreamWaiting partition waits on: its DepMiss run's missing refs."""
        st = self.partitions.get(ref)
        if st is None or st.status is not PartitionStatus.UPSTREAM_WAITING or st.waiting_run is None:
            return ()
        run = self.runs.get(st.waiting_run)
        return run.missing if run is not None else ()

    def by_status(self, kind: str, *statuses: str) -> list[EntityState]:
        wanted = set(statuses)
        return [s for s in self._tables[kind].values() if s.status in wanted]

    def counts(self) -> dict[str, dict[str, int]]:
        """Entities per status, per kind (every status listed, zeros included; evicted ones too)."""
        out: dict[str, dict[str, int]] = {}
        for kind, machine in MACHINES.items():
            c = {str(s): 0 for s in machine.statuses}
            for st in self._tables[kind].values():
                c[str(st.status)] += 1
            for status, n in self.evicted_counts.get(kind, {}).items():
                c[status] += n
            out[kind] = c
        return out

    # -- eviction (actors/_evict.py) -------------------------------------------------------------------
    def evict(self, kind: str, ids: Iterable[str]) -> int:
        """Drop these resident states from memory, keeping their ids' hashes in the table's index; return how
        many. Only for a World made with ``evicting=True``, and only entities nothing in flight reads
        (:func:`~actors._evict.settled` says which): the caller decides."""
        table = self._tables[kind]
        if not isinstance(table, EvictingTable):
            raise ValueError("this World keeps every state in memory: make it with World(evicting=True) to evict")
        counts = self.evicted_counts.setdefault(kind, {})
        index = table.index
        n = 0
        pop = dict.pop
        for eid in ids:
            st = pop(table, eid, None)
            if st is None:
                continue
            index.add(hash(eid))
            status = str(st.status)
            counts[status] = counts.get(status, 0) + 1
            n += 1
        index.settle()
        return n

    def settle_evicted(self) -> None:
        """Merge every table's recently evicted hashes into its packed index (a runtime does as a want ends)."""
        for table in self._tables.values():
            if isinstance(table, EvictingTable):
                table.index.settle(everything=True)

    def make_evicting(self) -> None:
        """Turn this World's tables into evicting ones, keeping every state (call it before anything holds a
        table: a runtime does as it opens)."""
        if self.evicting:
            return
        self._lineage.make_compact()  # evicted states no longer hold the ref strings: the index keeps hashes
        for kind, old in list(self._tables.items()):
            table = EvictingTable(kind)
            table.update(old)
            self._tables[kind] = table
        t = self._tables
        self.wants, self.partitions, self.runs = t["want"], t["partition"], t["job_run"]
        self.schedules, self.taints = t["schedule"], t["taint"]
        self.evicting = True

    def evicted_count(self, kind: str) -> int:
        return sum(self.evicted_counts.get(kind, {}).values())

    def is_evicted(self, kind: str, entity_id: str) -> bool:
        """Whether ``entity_id`` may be evicted (not resident, its hash in the index; the log has the last word)."""
        table = self._tables.get(kind)
        return isinstance(table, EvictingTable) and table.maybe_evicted(entity_id)

    def _evicted_ids(self, kind: str, known: Iterable[str]) -> list[str]:
        """Of the ids the log knows for ``kind``, those not resident whose hash is in the index."""
        table = self._tables[kind]
        if not isinstance(table, EvictingTable) or not self.evicted_count(kind):
            return []
        return [eid for eid in known if table.maybe_evicted(eid)]

    def states(self, kind: str, *statuses: str) -> Iterator[Any]:
        """Every state of ``kind`` (with one of ``statuses``, if given): the resident ones, then the evicted ones
        read back from the log without keeping them (a listing must not fill memory again). Needs :meth:`load_now`."""
        table = self._tables[kind]
        wanted = set(statuses)
        for st in list(table.values()):
            if not wanted or st.status in wanted:
                yield st
        counts = self.evicted_counts.get(kind, {})
        if not any(counts.get(str(s), 0) for s in (wanted or counts)):
            return
        for states in self._read_evicted(kind):
            for st in states.values():
                if not wanted or st.status in wanted:
                    yield st

    def _read_evicted(self, kind: str) -> Iterator[dict[str, Any]]:
        if self._read_now is None or self._ids_now is None:
            raise EntityEvicted(kind, "*")
        ids = sorted(self._evicted_ids(kind, self._ids_now(kind)))
        for i in range(0, len(ids), 1000):
            yield fold_now(self._read_now(kind, ids[i:i + 1000]), self, kind)

    def resolved(self) -> dict[str, dict[str, Any]]:
        """Every state by kind and id, the evicted ones read back from the log without keeping them (what
        :meth:`snapshot` gives for a World with nothing evicted). Needs :meth:`load_now` if anything is evicted."""
        out: dict[str, dict[str, Any]] = {k: dict(t) for k, t in self._tables.items()}
        for kind in self._tables:
            if self.evicted_count(kind):
                for states in self._read_evicted(kind):
                    out[kind].update(states)
        return out

    def evict_settled(self) -> dict[str, int]:
        """Evict every entity :func:`~actors._evict.settled` finds settled; return how many per kind."""
        return {kind: self.evict(kind, ids) for kind, ids in settled(self).items()}

    async def load(self, log: Log, kind: str, ids: Iterable[str]) -> None:
        """Fold the evicted ones among ``ids`` back into memory from the log (the rest are left as they are)."""
        table = self._tables[kind]
        if not isinstance(table, EvictingTable):
            return
        want = [eid for eid in dict.fromkeys(ids) if table.maybe_evicted(eid)]
        if not want:
            return
        states = await fold_back(log, self, kind, want)
        for eid in want:
            if not dict.__contains__(table, eid):  # not loaded meanwhile by another caller
                self._loaded(table, eid, states.get(eid))

    def _loaded(self, table: EvictingTable, eid: str, st: Any) -> Any:
        """Put a state read back in its table (None: the log has no such entity, its hash is another's)."""
        if st is not None:
            dict.__setitem__(table, eid, st)
            self.evicted_counts[table.kind][str(st.status)] -= 1
        return st

    def load_now(self, log: Log) -> bool:
        """Let synchronous readers load an evicted entity on the spot (a point read) when ``log`` can read
        synchronously (SQLite's ``histories_now``); return whether it can. Otherwise such a read raises
        :class:`~actors._evict.EntityEvicted` and every reader must ``await`` :meth:`load` first."""
        read = getattr(log, "histories_now", None)
        ids = getattr(log, "entity_ids_now", None)
        if read is None or ids is None:
            return False
        self._read_now, self._ids_now = read, ids
        for table in self._tables.values():
            if isinstance(table, EvictingTable):
                def load(eid: str, table: EvictingTable = table) -> Any:
                    states = fold_now(read(table.kind, [eid]), self, table.kind)
                    return self._loaded(table, eid, states.get(eid))
                table.loader = load
        return True

    async def load_all(self, log: Log) -> None:
        """Fold every evicted entity back (for whole-World checks: equality with a replay, a snapshot)."""
        for kind in self._tables:
            if self.evicted_count(kind):
                ids = self._evicted_ids(kind, await log.entity_ids(kind))
                for i in range(0, len(ids), 2000):
                    await self.load(log, kind, ids[i:i + 2000])

    def active_wants(self) -> Iterator[WantState]:
        return (w for w in self.wants.values() if not w.terminal)

    def in_flight_runs(self) -> list[JobRunState]:
        return [r for r in self.runs.values() if r.status in (JobRunStatus.QUEUED, JobRunStatus.RUNNING)]

    def copy(self) -> World:
        """A World with the same states (shared: they are immutable) and its own tables and lineage index."""
        self._check_resident()
        w = World()
        for kind, table in self._tables.items():
            w._tables[kind].update(table)
        w.lineage = self.lineage.copy()
        w.last_seq = self.last_seq
        w.last_at = self.last_at
        return w

    def _check_resident(self) -> None:
        """Whole-World operations need every state in memory (:meth:`load_all` first)."""
        for kind in self._tables:
            if self.evicted_count(kind):
                raise EntityEvicted(kind, "*")

    def snapshot(self) -> dict[str, dict[str, EntityState]]:
        """Plain dicts of every state, for equality checks (I3)."""
        self._check_resident()
        return {k: dict(t) for k, t in self._tables.items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, World):
            return NotImplemented
        return self.snapshot() == other.snapshot()

    __hash__ = None  # type: ignore[assignment]

    def diff(self, other: World, limit: int = 10) -> list[str]:
        """Human-readable differences between two worlds (for I3 failures)."""
        out: list[str] = []
        a, b = self.snapshot(), other.snapshot()
        for kind in dict.fromkeys((*a, *b)):
            ta, tb = a.get(kind, {}), b.get(kind, {})
            for key in sorted(set(ta) | set(tb)):
                if ta.get(key) != tb.get(key):
                    out.append(f"{kind} {key}: {ta.get(key)!r} != {tb.get(key)!r}")
                    if len(out) >= limit:
                        return out
        return out


def fold(records: Iterable[Record], world: World | None = None) -> World:
    """Fold records into a World (synchronous; for tests and in-memory checks)."""
    w = world if world is not None else World()
    for rec in records:
        w.apply(rec)
    return w


async def rebuild(
    log: Log,
    *,
    until_seq: int | None = None,
    until_time: float | None = None,
    keep_history: bool = False,
    on_record: Callable[[World, Record, EntityState], None] | None = None,
    snapshots: bool = True,
    evicting: bool = False,
) -> World:
    """Rebuild the World from the log, optionally stopping at a seq or a time (inclusive).

    With ``snapshots`` (the default) it starts from the newest usable snapshot at or before the bound and replays
    only the records after it; ``on_record`` then sees those records only. ``keep_history`` always replays the
    whole log. The World's ``restored`` says what was done (the snapshot used, the ones skipped and why).

    ``evicting`` (an evicting runtime's restart): a World made with ``evicting=True`` whose settled entities a
    snapshot left evicted (read back from the log as the tail, or what is in flight, names them); a log that
    cannot read an entity back (a compacted one) is rebuilt whole.
    """
    from ._snapshot import Restored, load_newest  # the snapshot module builds on this one

    t0 = time.perf_counter()
    world: World | None = None
    skipped: list[Any] = []
    cached: list[Record] | None = None
    compacted = log.compacted_through
    if compacted:  # events before it are gone: only a snapshot at or after it can start a replay
        if until_seq is not None and until_seq < compacted:
            raise ReplayError(f"{log.path}: the log was compacted through seq {compacted} (`wantbuild compact`): the "
                              f"state at seq {until_seq} is gone; time travel starts at seq {compacted}", until_seq)
        world, skipped = await load_newest(log, until_seq=until_seq, until_time=until_time, min_seq=compacted)
        if world is None:
            why = "; ".join(f"seq {s.seq}: {s.reason}" for s in skipped) or "none is stored"
            raise ReplayError(f"{log.path}: the log was compacted through seq {compacted} (`wantbuild compact`) and no "
                              f"usable snapshot at or after that seq is left ({why}): its state cannot be rebuilt; "
                              "restore the log from a backup", compacted)
    elif snapshots and not keep_history:
        tail: dict[int, list[Record]] = {}

        async def moved(seq: int) -> dict[str, set[str]]:
            """What the tail after ``seq`` moves (its records kept for the replay): a lazy load decodes those."""
            tail.clear()
            recs = tail[seq] = [rec async for batch in log.read_batches(seq + 1, until_seq=until_seq) for rec in batch]
            out: dict[str, set[str]] = {}
            for rec in recs:
                out.setdefault(rec.entity_kind, set()).add(rec.entity_id)
            return out

        lazy = evicting and until_time is None and on_record is None
        world, skipped = await load_newest(log, until_seq=until_seq, until_time=until_time, lazy=lazy,
                                           keep=moved if lazy else None)
        if world is not None:
            cached = tail.pop(world.last_seq, None)
    snap_seq = None if world is None else world.last_seq
    if world is None:
        world = World()
    elif world.evicting:  # the tail's reads back are batched (_load_moved); a point read for a hash another id shares
        world.load_now(log)
    t1 = time.perf_counter()
    if keep_history:
        world.history = {}
    if cached is not None:  # the tail the lazy load read: folded from memory (what it moves was decoded)
        await _load_moved(log, world, cached)  # only a new id sharing a settled id's hash is still evicted
        for rec in cached:
            world.apply(rec)
    await _replay(log, world, world.last_seq + 1, until_seq, until_time, on_record)
    if world.evicted_count("partition") or world.evicted_count("job_run"):
        for kind, ids in pinned(world).items():
            todo = sorted(ids)
            for i in range(0, len(todo), 2000):
                await world.load(log, kind, todo[i:i + 2000])
    world.restored = Restored(snap_seq, world.applied, tuple(skipped), round(t1 - t0, 4),
                              round(time.perf_counter() - t1, 4))
    return world


async def _replay(log: Log, world: World, from_seq: int, until_seq: int | None, until_time: float | None,
                  on_record: Callable[[World, Record, EntityState], None] | None) -> None:
    apply = world.apply
    batches: anyio.abc.ObjectSendStream[list[Record] | None]
    batches, incoming = anyio.create_memory_object_stream[list[Record] | None](2)

    async def read() -> None:  # the next batch is read while this one is folded
        async with batches:
            async for batch in log.read_batches(from_seq, until_seq=until_seq):
                await batches.send(batch)
                if until_time is not None and batch and batch[-1].at > until_time:
                    break

    async with anyio.create_task_group() as tg, incoming:
        tg.start_soon(read)
        async for batch in incoming:
            assert batch is not None
            if world.evicting:  # a lazy snapshot load's settled entities the batch moves are read back first
                await _load_moved(log, world, batch)
            if until_time is not None and batch and batch[-1].at > until_time:
                for rec in batch:
                    if rec.at > until_time:
                        tg.cancel_scope.cancel()
                        return
                    st = apply(rec)
                    if on_record is not None:
                        on_record(world, rec, st)
                continue
            if on_record is None:
                for rec in batch:
                    apply(rec)
            else:
                for rec in batch:
                    on_record(world, rec, apply(rec))


async def _load_moved(log: Log, world: World, batch: list[Record]) -> None:
    wanted: dict[str, list[str]] = {}
    tables = world._tables
    for rec in batch:
        table = tables.get(rec.entity_kind)
        if isinstance(table, EvictingTable) and table.maybe_evicted(rec.entity_id):
            wanted.setdefault(rec.entity_kind, []).append(rec.entity_id)
    for kind, ids in wanted.items():
        await world.load(log, kind, ids)


__all__ = [
    "KINDS",
    "MACHINES",
    "EntityKind",
    "EntityState",
    "PartitionStatus",
    "ReplayError",
    "WantStatus",
    "World",
    "fold",
    "rebuild",
    "register_entity_kind",
]
