"""Snapshots of the World: msgspec-encoded, stored in the log's database, loaded instead of replaying the head.

A snapshot at ``seq`` S is the World a replay of events ``1..S`` gives, every entity's state. The log stores its
bytes (compressed, with a checksum, see ``LogCore.write_snapshot``); this module says what the bytes are:

    4-byte big-endian length | msgpack header | chunk | chunk | ...

The header names the format version, S, its ``at`` and each chunk's kind and length; a chunk is a msgpack array of
one kind's states. ``FORMAT`` carries a fingerprint of the state classes' fields and types, so a snapshot written
by a wantbuild whose states differ (a field added, renamed, retyped) is ignored, never misread: a replay from an
older snapshot or from the start gives the right World where decoding the old bytes with new defaults might not.

Taking one (:class:`Snapshotter`) never stops the runtime for long: the tables are copied at a point where the
World is exactly the log's committed prefix (the states are immutable, so a copy of the dicts is a consistent
cut), then encoded a chunk at a time between other work, and written in pieces between the writer's batches.
Restart (:func:`load_newest`) takes the newest snapshot that passes its checksum and decodes; one that does not is
skipped, logged as a warning and reported in :attr:`World.restored`.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import operator
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Final, cast

import anyio
import anyio.lowlevel
import msgspec

from eventlog import Log, SnapshotError, SnapshotInfo, get_logger

from ._evict import EvictingTable, fold_back, spreading
from ._jobrun import JobRunState, JobRunStatus
from ._lineage import LineageIndex
from ._partition import PartitionState, PartitionStatus
from ._partition_set import PartitionSet
from ._schedule import ScheduleState
from ._taint import TaintState
from ._want import WantState
from ._world import World, rebuild

log = get_logger("wantbuild.actors")

FORMAT_VERSION: Final = 2
"""1: chunks of every state; 2 (issue 15): a kind's settled states in chunks of their own, each followed by their
ids, so an evicting runtime's restart leaves them undecoded (a format-1 snapshot is skipped, reported)."""
_SETTLED: Final = ":settled"
_IDS: Final = ":ids"
_RUN_SETTLED = frozenset({JobRunStatus.SUCCEEDED, JobRunStatus.FAILED, JobRunStatus.CANCELED, JobRunStatus.LOST})

STATE_TYPES: dict[str, type[msgspec.Struct]] = {
    "want": WantState, "partition": PartitionState, "job_run": JobRunState, "schedule": ScheduleState,
    "taint": TaintState,
}
"""The state class of each kind a snapshot holds (a kind without one makes the runtime skip snapshots)."""

CHUNK: Final = 2000
"""Work per encoding step, in states plus the refs they list (a run's partitions, a want's refs): about a
millisecond, then other tasks run."""


class _WantRow(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A want in a snapshot: a range want's refs are its partition set (``parts``), not an expansion."""

    state: WantState
    parts: dict[str, Any] | None = None


class _RunRow(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A job run in a snapshot: ``same`` when its planned partitions are its partitions (the usual case), which
    are then written and read once, and share one tuple again after loading."""

    state: JobRunState
    same: bool = False


class _Header(msgspec.Struct, frozen=True):
    format: str
    seq: int
    at: float
    chunks: list[tuple[str, int]]


def _fingerprint() -> str:
    """A digest of every snapshotted state class's fields and types (part of :data:`FORMAT`)."""
    _, defs = msgspec.json.schema_components([*STATE_TYPES.values(), _WantRow, _RunRow])
    return hashlib.blake2b(json.dumps(defs, sort_keys=True).encode(), digest_size=6).hexdigest()


FORMAT: Final = f"wantbuild-world/{FORMAT_VERSION}+{_fingerprint()}"
"""What this wantbuild writes and reads; another value (an older format, other state classes) is ignored."""

_ENCODER = msgspec.msgpack.Encoder()
_HEADER = msgspec.msgpack.Decoder(_Header)
_DECODERS: dict[str, msgspec.msgpack.Decoder[Any]] = {
    "want": msgspec.msgpack.Decoder(list[_WantRow]),
    "job_run": msgspec.msgpack.Decoder(list[_RunRow]),
    **{k: msgspec.msgpack.Decoder(list[t]) for k, t in STATE_TYPES.items()  # type: ignore[valid-type]
       if k not in ("want", "job_run")},
}
_IDS_DECODER = msgspec.msgpack.Decoder(dict[str, list[str]])
_ID_OF = {kind: operator.attrgetter(key) for kind, key in (("partition", "ref"), ("job_run", "job_run_id"),
                                                        ("schedule", "name"), ("taint", "taint_id"),
                                                        ("want", "want_id"))}
_LISTS = {"want": "refs", "job_run": "partitions", "taint": "refs"}
"""The field of a kind's states that lists refs (what makes a state big)."""
_KEY = {"want": "want_id", "partition": "ref", "job_run": "job_run_id", "schedule": "name", "taint": "taint_id"}


class SnapshotSkipped(msgspec.Struct, frozen=True):
    """A snapshot restart did not use, and why (checksum, decoding, another format)."""

    seq: int
    reason: str


class Restored(msgspec.Struct, frozen=True):
    """How a World was rebuilt: from which snapshot (None: a full replay), the tail replayed, what was skipped."""

    snapshot_seq: int | None
    tail_events: int
    skipped: tuple[SnapshotSkipped, ...] = ()
    snapshot_seconds: float = 0.0
    replay_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


class SnapshotUnusable(ValueError):
    """Internal: bytes that passed the checksum but do not decode as this format (a bug or a foreign writer)."""


def _rows(kind: str, states: list[Any]) -> list[Any]:
    if kind == "job_run":
        return [_RunRow(msgspec.structs.replace(st, planned=()), True) if st.planned == st.partitions
                else _RunRow(st) for st in states]
    if kind != "want":
        return states
    out: list[Any] = []
    for st in states:
        if isinstance(st.refs, PartitionSet):
            out.append(_WantRow(msgspec.structs.replace(st, refs=()), st.refs.to_json()))
        else:
            out.append(_WantRow(st))
    return out


def _settled_test(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, Callable[[Any], bool]]:
    """Per kind, which states go in the snapshot's settled chunks (what a lazy load leaves evicted): terminal wants,
    runs that ended for good (not DepMiss, not to be retried, no retry: the supervisor's recovery reads those),
    Live partitions unless a taint is spreading or restoring (its wave reads partitions synchronously). A lazy load
    reads back, after the tail, whatever something in flight names (:func:`actors._evict.pinned`)."""
    out: dict[str, Callable[[Any], bool]] = {
        "want": lambda st: st.terminal,
        "job_run": lambda st: st.status in _RUN_SETTLED and not st.will_retry and st.retry_of is None,
    }
    if not spreading(tables.get("taint", {}).values()):
        out["partition"] = lambda st: st.status is PartitionStatus.LIVE
    return out


def encode_chunks(tables: Mapping[str, Mapping[str, Any]], seq: int, at: float) -> Iterator[list[bytes] | None]:
    """Encode a snapshot; yields ``None`` between chunks (a place to let other work run), then its bytes as a list
    of parts (joined by whoever stores them: the log does it off the event loop).

    A kind's states go in chunks in table order, each chunk either active states (kind ``want``) or settled ones
    (``want:settled``, followed by ``want:ids``: their ids by status), so a lazy load can leave the settled ones
    undecoded and evicted (:func:`decode_world` with ``lazy``)."""
    chunks: list[bytes] = []
    layout: list[tuple[str, int]] = []
    tests = _settled_test(tables)
    for kind, table in tables.items():
        if not table:  # nothing to say (a kind added with register_entity_kind that has no states yet, say)
            continue
        if kind not in STATE_TYPES:
            raise SnapshotUnusable(f"entity kind {kind!r} has no snapshot encoding: a World holding its states is "
                                   "not snapshotted (restart replays from an older snapshot or the start)")
        field = _LISTS.get(kind)
        test = tests.get(kind)
        key = _KEY[kind]
        batch: list[Any] = []
        weight = 0
        settled = False
        for st in table.values():  # the caller's copy: nothing changes it meanwhile
            s = test is not None and test(st)
            if batch and (s is not settled or weight >= CHUNK):
                chunks.extend(_chunk(kind, batch, settled, key, layout))
                batch, weight = [], 0
                yield None
            settled = s
            batch.append(st)
            if field is None:
                weight += 1
            else:  # a want's refs or a run's partitions count too
                refs = getattr(st, field)
                weight += 1 + (len(refs) if type(refs) is tuple else 0)
        if batch:
            chunks.extend(_chunk(kind, batch, settled, key, layout))
            yield None
    head = _ENCODER.encode(_Header(FORMAT, seq, at, layout))
    yield [struct.pack(">I", len(head)), head, *chunks]


def _chunk(kind: str, batch: list[Any], settled: bool, key: str, layout: list[tuple[str, int]]) -> list[bytes]:
    blob = _ENCODER.encode(_rows(kind, batch))
    if not settled:
        layout.append((kind, len(blob)))
        return [blob]
    ids: dict[str, list[str]] = {}
    for st in batch:
        ids.setdefault(st.status, []).append(getattr(st, key))
    index = _ENCODER.encode(ids)
    layout.append((kind + _SETTLED, len(blob)))
    layout.append((kind + _IDS, len(index)))
    return [blob, index]


def encode_world(world: World) -> bytes:
    """The snapshot bytes of ``world`` at its ``last_seq`` (at once, for tests and offline tools)."""
    out: list[bytes] = []
    for part in encode_chunks(_tables(world), world.last_seq, world.last_at):
        if part is not None:
            out = part
    return b"".join(out)


def _tables(world: World) -> dict[str, dict[str, Any]]:
    return world._tables


def decode_world(data: bytes, *, lazy: bool = False, keep: Mapping[str, AbstractSet[str]] | None = None) -> World:
    """The World a snapshot holds; :class:`SnapshotUnusable` if the bytes are not this format.

    ``lazy``: an evicting World (``World(evicting=True)``) whose settled entities are left evicted, their chunks
    undecoded (their ids go to the tables' indexes: they are read back from the log when something reads them), as
    an evicting runtime's restart wants; those of them named in ``keep`` (by kind: what the tail after the snapshot
    moves) are decoded and kept, saving a read back from the log each. Either way the lineage index is built after
    the load, in steps (:meth:`World.index_lineage`), or at once when something reads it first.

    The cyclic garbage collector is paused meanwhile: millions of new containers, none of them garbage, would
    otherwise trigger collections that walk them again and again (a fifth of the time at 10 million events)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _decode_world(data, lazy, keep)
    finally:
        if enabled:
            gc.enable()


def _run_state(row: _RunRow) -> JobRunState:
    st = row.state
    return msgspec.structs.replace(st, planned=st.partitions) if row.same else st


def _decode_world(data: bytes, lazy: bool, keep: Mapping[str, AbstractSet[str]] | None) -> World:
    try:
        (n,) = struct.unpack_from(">I", data, 0)
        head = _HEADER.decode(data[4:4 + n])
    except (struct.error, msgspec.DecodeError, msgspec.ValidationError) as e:
        raise SnapshotUnusable(f"its header does not decode ({e})") from e
    if head.format != FORMAT:
        raise SnapshotUnusable(f"format {head.format}, this wantbuild reads {FORMAT}")
    world = World(evicting=lazy)
    tables = world._tables
    pos = 4 + n
    view = memoryview(data)
    done: list[JobRunState | bytes] = []
    """The Succeeded runs in table order, for the lineage index (a lazy load's settled run chunks as bytes)."""
    hashes: dict[str, list[int]] = {}
    kind = ""
    chunks = head.chunks
    i = 0
    try:
        while i < len(chunks):
            kind, length = chunks[i]
            chunk = view[pos:pos + length]
            pos += length
            i += 1
            base, _, part = kind.partition(":")
            if part == _IDS[1:]:  # a full load reads the states themselves
                continue
            if part == _SETTLED[1:] and lazy:
                ikind, ilen = chunks[i]
                if ikind != base + _IDS:
                    raise SnapshotUnusable(f"its {kind} chunk is followed by {ikind!r}, not its ids")
                ids = _IDS_DECODER.decode(view[pos:pos + ilen])
                pos += ilen
                i += 1
                wanted = keep.get(base) if keep else None
                if wanted and any(not wanted.isdisjoint(these) for these in ids.values()):
                    # settled, but the tail moves some: those are decoded and stay, the rest are left evicted
                    states = [st for st in _states(base, chunk) if _ID_OF[base](st) in wanted]
                    dict.update(tables[base], zip(map(_ID_OF[base], states), states, strict=True))
                    ids = {status: [e for e in these if e not in wanted] for status, these in ids.items()}
                _index_settled(world, base, ids, hashes.setdefault(base, []))
                if base == "job_run":
                    done.append(bytes(chunk))
                continue
            if part and part != _SETTLED[1:]:
                raise SnapshotUnusable(f"chunk kind {kind!r} is not one this wantbuild writes")
            states = _states(base, chunk)
            dict.update(tables[base], zip(map(_ID_OF[base], states), states, strict=True))
            if base == "job_run":
                done.extend(r for r in states if r.status is JobRunStatus.SUCCEEDED)
    except (KeyError, IndexError, TypeError, ValueError, msgspec.DecodeError) as e:
        raise SnapshotUnusable(f"its {kind} states do not decode ({e})") from e
    if pos != len(data):
        raise SnapshotUnusable(f"{len(data) - pos} bytes after its last chunk")
    for base, hs in hashes.items():
        world.defer(cast(EvictingTable, tables[base]).index.extend(hs))
    world.defer_lineage(_index_lineage(world._lineage, done))
    world.last_seq, world.last_at = head.seq, head.at
    return world


def _states(kind: str, chunk: memoryview) -> list[Any]:
    """A chunk's states (a want's refs a tuple or its partition set, a run's planned partitions restored)."""
    rows = _DECODERS[kind].decode(chunk)
    if kind == "job_run":
        return [_run_state(row) for row in rows]
    if kind != "want":
        return rows  # type: ignore[no-any-return]
    out: list[Any] = []
    for row in rows:
        st = row.state
        if row.parts is not None:
            st = msgspec.structs.replace(st, refs=PartitionSet.from_json(row.parts))
        else:  # ``refs: Sequence[str]`` decodes as a list; the transition function keeps a tuple
            st = msgspec.structs.replace(st, refs=tuple(st.refs))
        out.append(st)
    return out


def _index_settled(world: World, kind: str, ids: dict[str, list[str]], hashes: list[int]) -> None:
    """A lazy load's settled chunk: its entities counted as evicted, their ids' hashes kept for the index."""
    counts = world.evicted_counts.setdefault(kind, {})
    for status, these in ids.items():
        counts[status] = counts.get(status, 0) + len(these)
        hashes.extend(map(hash, these))
        if kind in ("want", "job_run", "taint"):  # what a runtime's id counters continue after
            hints = world.id_hints.setdefault(kind, [])
            hints[:] = _highest(itertools.chain(hints, these))


def _highest(ids: Iterable[str]) -> list[str]:
    """The highest numbered id per prefix (``r-00000012``: prefix ``r-``, number 12) among ``ids``."""
    best: dict[str, tuple[int, str]] = {}
    for i in ids:
        prefix, sep, tail = i.rpartition("-")
        if sep and tail.isdigit():
            n = int(tail)
            if n >= best.get(prefix, (-1, ""))[0]:
                best[prefix] = (n, i)
    return [i for _, i in best.values()]


def _index_lineage(index: LineageIndex, done: list[JobRunState | bytes]) -> Iterator[None]:
    """Index a snapshot's Succeeded runs in the order a replay did, in steps of about :data:`CHUNK` refs.

    A replay adds each run as it succeeds; runs that ended at the same instant keep the order they were created
    in (the tables' order, which the chunks keep)."""
    runs: list[JobRunState] = []
    for item in done:
        if isinstance(item, bytes):  # a lazy load's settled runs: decoded only for this, then dropped
            runs.extend(_run_state(row) for row in _DECODERS["job_run"].decode(item)
                        if row.state.status is JobRunStatus.SUCCEEDED)
            yield None
        else:
            runs.append(item)
    runs.sort(key=lambda r: r.ended_at or 0.0)
    weight = 0
    for run in runs:
        index.add_run(run)
        weight += 1 + len(run.partitions) + len(run.read)
        if weight >= CHUNK:
            weight = 0
            yield None


async def load_newest(log_: Log, *, until_seq: int | None = None, until_time: float | None = None,
                      min_seq: int = 0, lazy: bool = False,
                      keep: Callable[[int], Awaitable[Mapping[str, AbstractSet[str]]]] | None = None,
                      ) -> tuple[World | None, list[SnapshotSkipped]]:
    """The World of the newest usable snapshot at or before ``until_seq`` / ``until_time`` and at or after
    ``min_seq`` (None: none usable), and the snapshots skipped on the way (each logged as a warning). ``lazy``:
    an evicting World, its settled entities left evicted but those ``keep(seq)`` names (:func:`decode_world`)."""
    skipped: list[SnapshotSkipped] = []
    for info in await log_.snapshots():
        if (until_seq is not None and info.seq > until_seq) or (until_time is not None and info.at > until_time):
            continue
        if info.seq < min_seq:
            break
        if info.format != FORMAT:
            # Another wantbuild's format: not damage, and not worth a warning each start; reported all the same.
            skipped.append(SnapshotSkipped(info.seq, f"format {info.format}, this wantbuild reads {FORMAT}"))
            continue
        try:
            data = await log_.read_snapshot(info)
            world = decode_world(data, lazy=lazy, keep=await keep(info.seq) if lazy and keep is not None else None)
        except (SnapshotError, SnapshotUnusable) as e:
            reason = str(e)
            log.warning("snapshot skipped", db=log_.path, seq=info.seq, reason=reason)
            skipped.append(SnapshotSkipped(info.seq, reason))
            continue
        if world.last_seq != info.seq:
            reason = f"it says seq {world.last_seq}, its head row seq {info.seq}"
            log.warning("snapshot skipped", db=log_.path, seq=info.seq, reason=reason)
            skipped.append(SnapshotSkipped(info.seq, reason))
            continue
        return world, skipped
    return None, skipped


async def verify_snapshots(log_: Log, *, until_seq: int | None = None) -> list[str]:
    """Check every stored snapshot (up to ``until_seq``) against a full replay up to its seq; the problems found."""
    infos = sorted((i for i in await log_.snapshots() if until_seq is None or i.seq <= until_seq),
                   key=lambda i: i.seq)
    if not infos:
        return []
    problems: list[str] = []
    world = World()
    compacted = log_.compacted_through
    if compacted:  # the events before the base snapshot are gone: check the later ones against base + replay
        base = next((i for i in infos if i.seq >= compacted and i.format == FORMAT), None)
        if base is None:
            return [f"the log was compacted through seq {compacted} and no snapshot of this format at or after it "
                    "is stored"]
        try:
            world = decode_world(await log_.read_snapshot(base))
        except (SnapshotError, SnapshotUnusable) as e:
            return [f"snapshot at seq {base.seq} (the compaction's base): unusable ({e})"]
        infos = [i for i in infos if i.seq > base.seq]
        if not infos:
            return []
    pending = list(infos)

    async def check(info: SnapshotInfo) -> None:
        if info.format != FORMAT:
            return  # another format is ignored by restart: nothing to check it against
        try:
            snap = decode_world(await log_.read_snapshot(info))
        except (SnapshotError, SnapshotUnusable) as e:
            problems.append(f"snapshot at seq {info.seq}: unusable ({e}); restart skips it")
            return
        diff = world.diff(snap, limit=3)
        if diff or snap.last_seq != world.last_seq:
            problems.append(f"snapshot at seq {info.seq} differs from a replay up to that seq: " + "; ".join(diff))

    async for batch in log_.read_batches(world.last_seq + 1, until_seq=pending[-1].seq):
        for rec in batch:
            world.apply(rec)
            while pending and pending[0].seq == rec.seq:
                await check(pending.pop(0))
    for info in pending:  # snapshots past the log's end (the log lost events)
        problems.append(f"snapshot at seq {info.seq} is beyond the log's last event (seq {world.last_seq})")
    return problems


class Compacted(msgspec.Struct, frozen=True):
    """What :func:`compact` did."""

    through_seq: int
    snapshot_written: bool
    entities: int
    events_dropped: int


async def compact(log_: Log, through_seq: int) -> Compacted:
    """Retention: keep a snapshot at ``through_seq`` and drop the events up to it of the entities terminal there
    (wants, runs, deleted schedules: their states never change again). Partitions are never terminal: their events
    stay. Time travel then starts at ``through_seq``; a full replay is no longer possible (restart and queries
    start from a snapshot at or after it). The log must be open as the writer, with no runtime on it."""
    world = await rebuild(log_, until_seq=through_seq)
    if world.last_seq != through_seq:
        raise ValueError(f"{log_.path}: seq {through_seq} is past the log's last event (seq {world.last_seq})")
    have = {s.seq for s in await log_.snapshots() if s.format == FORMAT}
    written = through_seq not in have
    if written:
        await log_.write_snapshot(through_seq, world.last_at, FORMAT, encode_world(world))
    done = [(k, eid) for k, table in world._tables.items() for eid, st in table.items()
            if getattr(st, "terminal", False)]
    dropped = await log_.drop_events(done, through_seq)
    return Compacted(through_seq, written, len(done), dropped)


class Snapshotter:
    """Takes snapshots of a runtime's World in the background: every ``every_events`` committed events, or every
    ``every_seconds`` if any event came since the last one; keeps the newest ``keep``.

    A snapshot is taken only at a point where the World holds exactly the log's committed events (every commit
    adopted: ``World.applied`` counts them); the copy of the tables is the only step that holds the event loop
    (a dict copy: about 3 ms per 100,000 entities here), the encoding runs a chunk at a time.
    """

    def __init__(self, log_: Log, world: World, *, every_events: int | None = 100_000,
                 every_seconds: float | None = 600.0, keep: int = 2, check_interval: float = 0.5) -> None:
        self.log = log_
        self.world = world
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.keep = max(1, keep)
        self.check_interval = check_interval
        self.base_seq = world.last_seq
        self.base_applied = world.applied
        self.last_seq = world.last_seq
        self.last_time = time.monotonic()
        self.taken: list[SnapshotInfo] = []
        self.copy_seconds: list[float] = []
        """How long each snapshot's copy of the tables held the event loop."""
        self.max_step_seconds = 0.0
        """The longest step of any snapshot that held the event loop (the copy, or encoding one chunk)."""
        self.spans: list[tuple[float, float]] = []
        """``time.perf_counter()`` at the start and end of each snapshot taken (for measuring what it cost)."""
        self.failed: str | None = None
        self.phase = "idle"
        """What the snapshot being taken is doing (``copy``, ``read back``, ``encode``, ``write``, ``prune``; ``idle``
        between snapshots): for measuring which step holds the loop."""

    def consistent(self) -> bool:
        """Whether the World holds exactly the log's committed events now."""
        w = self.world
        return (w.last_seq == self.log.last_seq
                and w.applied - self.base_applied == w.last_seq - self.base_seq)

    def due(self) -> bool:
        behind = self.log.last_seq - self.last_seq
        if behind <= 0:
            return False
        if self.every_events is not None and behind >= self.every_events:
            return True
        return self.every_seconds is not None and time.monotonic() - self.last_time >= self.every_seconds

    async def run(self) -> None:
        """Take snapshots when due, until cancelled. A failure is logged and retried at the next due point."""
        while True:
            await anyio.sleep(self.check_interval)
            if not self.due():
                continue
            for _ in range(200):  # a consistent point comes within a loop iteration or two of a commit
                if self.consistent():
                    break
                await anyio.lowlevel.checkpoint()
            else:
                continue
            try:
                await self.take()
            except Exception as e:  # never fatal: restart replays more, that is all
                self.failed = str(e)
                log.warning("snapshot failed", db=self.log.path, error=f"{type(e).__name__}: {e}")
                # Retried at the next due point, not at the next check (a World of a kind without a snapshot
                # encoding would otherwise be copied and refused every check_interval).
                self.last_seq, self.last_time = self.world.last_seq, time.monotonic()

    async def _read_back(self, tables: dict[str, dict[str, Any]], seq: int) -> None:
        """Add to a copy of an evicting World's tables (taken at ``seq``) the states of the entities it had evicted
        then, folded from their chains in the log up to ``seq``: the ids the log knows that are not in the copy
        and whose hash is in the table's index (an entity evicted after the copy is in it; one loaded back since
        reads the same up to ``seq``; one created after ``seq`` has no event up to it, so it is left out)."""
        w = self.world
        for kind, copy in tables.items():
            table = w._tables[kind]
            if not isinstance(table, EvictingTable) or not w.evicted_count(kind):
                continue
            index = table.index
            known = await self.log.entity_ids(kind)
            ids: list[str] = []
            for i in range(0, len(known), 20_000):
                ids.extend(eid for eid in known[i:i + 20_000] if eid not in copy and hash(eid) in index)
                await anyio.lowlevel.checkpoint()
            ids.sort()
            for i in range(0, len(ids), 200):
                copy.update(await fold_back(self.log, w, kind, ids[i:i + 200], until_seq=seq))

    async def take(self) -> SnapshotInfo | None:
        """Take a snapshot now if the World is at a consistent point (else None); prune old ones."""
        if not self.consistent():
            return None
        try:
            return await self._take()
        finally:
            self.phase = "idle"

    async def _take(self) -> SnapshotInfo:
        w = self.world
        self.phase = "copy"
        t0 = time.perf_counter()
        tables = {k: dict.copy(t) for k, t in w._tables.items() if t or w.evicted_count(k)}
        seq, at = w.last_seq, w.last_at
        t1 = time.perf_counter()
        self.copy_seconds.append(t1 - t0)
        step = t1 - t0
        if w.evicting:  # the evicted entities' states at seq, read back from the log without keeping them
            self.phase = "read back"
            await self._read_back(tables, seq)
            t1 = time.perf_counter()
        self.phase = "encode"
        data: list[bytes] = []
        for part in encode_chunks(tables, seq, at):
            t2 = time.perf_counter()
            step = max(step, t2 - t1)
            if part is None:
                await anyio.lowlevel.checkpoint()
            else:
                data = part
            t1 = time.perf_counter()
        del tables
        self.max_step_seconds = max(self.max_step_seconds, step)
        self.phase = "write"
        info = await self.log.write_snapshot(seq, at, FORMAT, data)
        self.last_seq, self.last_time = seq, time.monotonic()
        self.taken.append(info)
        self.phase = "prune"
        with anyio.CancelScope(shield=True):  # a runtime closing meanwhile still keeps only the newest ``keep``
            base = self.log.compacted_through  # the compaction's base: time travel starts there, it stays
            old = [s.seq for s in (await self.log.snapshots())[self.keep:] if s.seq != base]
            if old:
                await self.log.delete_snapshots(old)
        self.spans.append((t0, time.perf_counter()))
        return info


__all__ = [
    "FORMAT",
    "Compacted",
    "Restored",
    "SnapshotSkipped",
    "Snapshotter",
    "compact",
    "decode_world",
    "encode_world",
    "load_newest",
    "verify_snapshots",
]
