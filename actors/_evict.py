"""Eviction: settled entities leave memory and are folded back from the log on demand (issue 15).

A World made with ``World(evicting=True)`` keeps its tables as :class:`EvictingTable`: the resident states in
the dict, and the ids of the evicted ones in ``table.evicted`` (the index: an evicted id's events are in the log,
reached by its ``prev_seq`` chain through :meth:`eventlog.Log.histories`). What may be evicted is what nothing in
flight reads (:func:`settled`): terminal wants, terminal runs no resident partition waits on or holds a lease
for, and Live partitions that no active want, active run or active taint names. :meth:`World.evict` drops them;
:meth:`World.load` (async) folds them back. The actor kernel loads an evicted entity before it hands it a
message (``Kernel._send``), so the entity actors never see the difference.

A synchronous read of an evicted entity (``table.get``, ``table[id]``) is a bug in the caller, not a miss:
it raises :class:`EntityEvicted` rather than answering "never written", which for a partition would mean
"Missing" and a rebuild. ``id in table`` is true for an evicted id (the entity exists); ``len``, ``values()``
and ``items()`` see the resident states only; :meth:`World.counts` counts both.
"""

from __future__ import annotations

import itertools
from array import array
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from eventlog import Log, Record, WantbuildError

if TYPE_CHECKING:
    from ._world import World

_MISS: Any = object()


class EntityEvicted(WantbuildError, RuntimeError):
    """An evicted entity was read synchronously: the caller must ``await world.load(log, kind, ids)`` first.
    An internal error (a wantbuild bug), raised instead of answering "never written"."""

    def __init__(self, kind: str, entity_id: str) -> None:
        what = f"{kind} {entity_id!r} is" if entity_id != "*" else f"{kind} entities are"
        super().__init__(f"internal error: {what} evicted from memory and read without being loaded; await "
                         f"world.load(log, {kind!r}, [...]) before reading (please report this)")
        self.kind = kind
        self.entity_id = entity_id


_BITS = 1 << 24  # the filter's bits: 2 MiB


class HashIndex:
    """A set of 64-bit hashes in about 8 bytes each: a sorted ``array('q')`` searched by bisection, and the
    hashes added since the last merge in a small set, merged in once it is a quarter of the array (a sort of
    mostly sorted runs: ~0.1 s at a million, a few times per doubling). A one-hash bit filter in front answers
    most hashes that are not in it (every new id a reader looks up) without the bisection."""

    __slots__ = ("bits", "merged", "recent")

    def __init__(self) -> None:
        self.merged = array("q")
        self.recent: set[int] = set()
        self.bits: bytearray | None = None  # made on the first add: most tables never evict

    def __contains__(self, h: object) -> bool:
        bits = self.bits
        if bits is None:
            return False
        b = h & (_BITS - 1)  # type: ignore[operator]
        if not bits[b >> 3] & (1 << (b & 7)):
            return False
        if h in self.recent:
            return True
        a = self.merged
        i = bisect_left(a, h)  # type: ignore[call-overload]
        return i < len(a) and bool(a[i] == h)

    def __bool__(self) -> bool:
        return bool(self.recent) or bool(self.merged)

    def __len__(self) -> int:
        return len(self.merged) + len(self.recent)

    def add(self, h: int) -> None:
        if h not in self:
            self.recent.add(h)
            if self.bits is None:
                self.bits = bytearray(_BITS >> 3)
            b = h & (_BITS - 1)
            self.bits[b >> 3] |= 1 << (b & 7)

    def extend(self, hashes: list[int]) -> Iterator[None]:
        """Add many hashes at once (a lazy snapshot load's settled entities), sorted straight into the array; the
        filter is opened (every hash "maybe", answered by the array) and the returned steps build it back, a slice
        at a time, for the caller to run when it has time (``World.defer``)."""
        hashes.extend(self.merged)
        hashes.extend(self.recent)
        hashes.sort()
        self.merged = array("q", hashes)
        self.recent = set()
        self.bits = bytearray(b"\xff" * (_BITS >> 3))
        return self._refilter()

    def _refilter(self) -> Iterator[None]:
        bits, mask, merged = bytearray(_BITS >> 3), _BITS - 1, self.merged
        for i in range(0, len(merged), 50_000):
            for h in merged[i:i + 50_000]:
                b = h & mask
                bits[b >> 3] |= 1 << (b & 7)
            yield None
        if self.merged is merged:  # else a merge since made the array anew: the open filter stays right
            for h in self.recent:
                b = h & mask
                bits[b >> 3] |= 1 << (b & 7)
            self.bits = bits

    def settle(self, everything: bool = False) -> None:
        """Merge the recent hashes in if there are enough of them (after each batch of additions), or if there are
        any with ``everything`` (as a want ends: a set of ints, made as the backfill went, would hold its memory)."""
        if len(self.recent) > (0 if everything else max(4096, len(self.merged) >> 2)):
            self.merged = array("q", sorted(itertools.chain(self.merged, self.recent)))
            self.recent = set()


class EvictingTable(dict[str, Any]):
    """A World table whose settled entries can be evicted: resident states in the dict, and ``index``, the hashes
    of every id ever evicted (a :class:`HashIndex`: about 8 bytes an entity, against ~76 for a set of the hashes
    and ~40-200 for a set of the ids).

    An id that is not resident and whose hash is in the index *may* be evicted: the log says (a hash shared with
    another id only costs a read that finds nothing). A hash stays in the index once the entity is read back:
    resident ids are answered by the dict first, so a stale hash is never consulted for them, and no collision can
    ever make an evicted entity look never written. Reading an evicted id loads it through ``loader``, or raises
    :class:`EntityEvicted` where nothing can load synchronously; ``in`` says whether the entity exists."""

    __slots__ = ("index", "kind", "loader")

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.index = HashIndex()
        self.loader: Callable[[str], Any] | None = None
        """Folds one evicted entity back synchronously and returns its state, or None if the log has none (a
        SQLite log's point read, ``World.load_now``); None: such a read raises :class:`EntityEvicted`."""

    def maybe_evicted(self, key: str) -> bool:
        return not dict.__contains__(self, key) and hash(key) in self.index

    def _read(self, key: str) -> Any:
        loader = self.loader
        if loader is None:
            raise EntityEvicted(self.kind, key)
        return loader(key)

    def get(self, key: str, default: Any = None) -> Any:
        value = dict.get(self, key, _MISS)
        if value is _MISS:
            if hash(key) in self.index:
                value = self._read(key)
                return default if value is None else value
            return default
        return value

    def __missing__(self, key: str) -> Any:
        if hash(key) in self.index:
            value = self._read(key)
            if value is not None:
                return value
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if dict.__contains__(self, key):
            return True
        return isinstance(key, str) and hash(key) in self.index and self._read(key) is not None

    def copy(self) -> dict[str, Any]:
        if self.index:  # a whole-table copy would miss the evicted: World.resolved() reads them all
            raise EntityEvicted(self.kind, "*")
        return dict(self)


def settled(world: World) -> dict[str, list[str]]:
    """The resident entities nothing in flight reads, by kind: what :meth:`World.evict` may drop.

    - wants: terminal;
    - partitions: Live, named by no non-terminal run (planned or leased) nor, unless the World loads on the spot
      for synchronous readers (:meth:`World.load_now`), by a non-terminal want; none at all while a taint is
      spreading or restoring;
    - runs: terminal, not to be retried (``will_retry``), and no partition that stays resident holds its lease
      or waits on it (``waiting_run``: the supervisor reads the DepMiss run's missing refs for an UpstreamWaiting
      partition).
    Schedules and taints stay (few, and read by their loops).
    """
    from ._partition import PartitionStatus

    # Readers that cannot load on the spot: keep what an active want may read too.
    busy = _in_flight_refs(world, wants=world._read_now is None)
    # A taint's wave and its restore read partitions by lineage, synchronously: none is evicted meanwhile.
    live = PartitionStatus.LIVE
    parts = [] if spreading(world.taints.values()) else [
        ref for ref, p in world.partitions.items() if p.status is live and ref not in busy]
    gone = set(parts)
    held: set[str] = set()
    for ref, p in world.partitions.items():
        if ref not in gone:
            if p.lease:
                held.add(p.lease)
            if p.waiting_run:
                held.add(p.waiting_run)
    # A run that will be retried stays: the supervisor's recovery finds the retries to arm by scanning the runs.
    runs = [rid for rid, r in world.runs.items() if r.terminal and not r.will_retry and rid not in held]
    wants = [wid for wid, w in world.wants.items() if w.terminal]
    return {"want": wants, "partition": parts, "job_run": runs}


def spreading(taints: Iterable[Any]) -> bool:
    """Whether a taint is spreading or restoring (its wave reads partitions by lineage, synchronously)."""
    from ._taint import TaintStatus

    return any(t.status is TaintStatus.APPLYING or (t.status is TaintStatus.CANCELED and t.restored is None)
               for t in taints)


def _in_flight_refs(world: World, *, wants: bool) -> set[str]:
    """The partitions the runs in flight plan or hold (and, with ``wants``, that the active wants name)."""
    refs: set[str] = set()
    if wants:
        for w in world.wants.values():
            if not w.terminal:
                refs.update(w.refs)
    for r in world.runs.values():
        if not r.terminal:
            refs.update(r.planned)
            refs.update(r.partitions)
    return refs


def pinned(world: World) -> dict[str, set[str]]:
    """What a World loaded lazily from a snapshot (its settled entities left evicted) must read back before it
    serves: the partitions that a run in flight plans or holds and that an active want names (the supervisor's
    recovery plans them), and the runs that a resident partition holds a lease from or waits on."""
    parts = _in_flight_refs(world, wants=True)
    runs: set[str] = set()
    for p in world.partitions.values():
        if p.lease:
            runs.add(p.lease)
        if p.waiting_run:
            runs.add(p.waiting_run)
    return {"partition": parts, "job_run": runs}


def fold_now(histories: dict[str, list[Record]], world: World, kind: str) -> dict[str, Any]:
    """:func:`fold_back` from histories read synchronously (an id without records is left out: never written).
    A chain ``compact`` cut cannot be folded so (its start is in a snapshot, which only an async load reads):
    :class:`EntityEvicted` for it."""
    from ._world import APPLY

    apply = APPLY[kind]
    out: dict[str, Any] = {}
    for eid, recs in histories.items():
        recs = [r for r in recs if r.seq <= world.last_seq]
        if recs and recs[0].entity_seq != 1:
            raise EntityEvicted(kind, eid)
        if recs:
            out[eid] = _fold(apply, None, recs)
    return out


async def fold_back(log: Log, world: World, kind: str, ids: Collection[str], until_seq: int | None = None
                    ) -> dict[str, Any]:
    """The committed states of ``ids`` (of ``kind``) at the World's seq (or ``until_seq``), folded from their
    chains in the log; for an entity whose chain was cut by ``compact`` (it does not start at entity_seq 1, or is
    gone), from the newest usable snapshot at or before that seq plus the records after it."""
    from ._world import APPLY

    apply = APPLY[kind]
    until = world.last_seq if until_seq is None else until_seq
    histories = await log.histories(kind, ids)
    out: dict[str, Any] = {}
    cut: dict[str, list[Record]] = {}
    for eid, recs in histories.items():
        recs = [r for r in recs if r.seq <= until]
        if (recs[0].entity_seq != 1) if recs else log.compacted_through:
            cut[eid] = recs
        elif recs:  # none: an id the log never saw (its hash is an evicted one's)
            out[eid] = _fold(apply, None, recs)
    if cut:
        from ._snapshot import load_newest

        snap, _skipped = await load_newest(log, until_seq=until, min_seq=log.compacted_through)
        if snap is None:
            raise EntityEvicted(kind, next(iter(cut)))
        table = snap.table(kind)
        for eid, recs in cut.items():
            st = _fold(apply, table.get(eid), [r for r in recs if r.seq > snap.last_seq])
            if st is not None:
                out[eid] = st
    return out


def _fold(apply: Any, state: Any, recs: Iterable[Record]) -> Any:
    for rec in recs:
        state = apply(state, rec.event, rec.entity_id, rec.at, rec.entity_seq)
    return state


__all__ = ["EntityEvicted", "EvictingTable", "HashIndex", "fold_back", "fold_now", "pinned", "settled", "spreading"]
