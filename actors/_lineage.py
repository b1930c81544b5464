"""Lineage: which generation of which partition was built from which, derived from what runs read.

A Succeeded run records what it read (``JobRunSucceeded.read``: ``ref -> generation``, with ``into`` for
inputs that fed only some of its partitions). A *node* is one generation of one partition, ``(ref,
generation)``; an edge goes from an input generation to an output generation that a run built from it.

:class:`LineageIndex` is kept by the :class:`~actors.World` as runs succeed (replay and live alike): two
reverse maps, ``readers`` (an input ref -> the Succeeded runs that read it) and ``builders`` (a ref -> the
Succeeded runs that built it). Everything else (the generations, the ``into`` narrowing) is read from the
runs themselves, so the index costs one entry per ref and one per further run of it, not per edge: 12-24 bytes
a ref, 8 a further run, the refs kept as their hashes in packed arrays (:class:`RunsByRef`): once eviction drops
the states, a dict keyed by the refs would be the only holder of every ref string. A World that keeps every state
(one that does not evict) keeps the two maps as dicts keyed by the refs instead, whose strings its states hold
anyway: filled in C, ~20 times cheaper a ref than the packed table's probe; it moves them into the packed arrays
when it starts to evict (``World.make_evicting``). Queries walk it breadth-first:

- :func:`lineage` ``(world, ref, direction="up"|"down", depth=None)``: a :class:`LineageGraph`;
- :func:`stale` ``(world)``: Live partitions whose inputs have since been rebuilt;
- :func:`tainted_reads` ``(world)``: Live partitions built from a generation that is Tainted now (I7).

Time travel is a World rebuilt up to a ``seq`` or a time (``rebuild(log, until_seq=...)``): its index is the
lineage as it was known then.
"""

from __future__ import annotations

import sys
from array import array
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import msgspec

from eventlog import WantbuildError

from ._jobrun import JobRunState, JobRunStatus
from ._partition import PartitionState, PartitionStatus

if TYPE_CHECKING:
    from ._taint import TaintState
    from ._world import World

P = PartitionStatus
LineageDirection = Literal["up", "down"]
"""``up``: what a partition was built from; ``down``: what was built from it."""


class NeverBuilt(WantbuildError, LookupError):
    """A lineage query on a partition (or generation) that no run ever built."""


_EMPTY = 0
_MIN_SLOTS = 1024
_ZERO_Q = (0,)
_ZERO_I = (0,)


class RunIds:
    """The Succeeded runs' ids by run number, packed: their UTF-8 in one ``bytearray``, their ends in an ``array('q')``.

    A string per run, allocated as its run ends and kept for good, would land among a backfill's short-lived objects
    and keep each of their allocator arenas from being given back (issue 15: 400 run ids held 12 MB at 200,000
    partitions); here the ids cost their bytes plus 8, in two buffers that grow as one. ``ids[n]`` makes the string.
    """

    __slots__ = ("_data", "_ends")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._data = bytearray()
        self._ends = array("q")
        self.extend(ids)

    def append(self, run_id: str) -> None:
        self._data += run_id.encode()
        self._ends.append(len(self._data))

    def extend(self, ids: Iterable[str]) -> None:
        for run_id in ids:
            self.append(run_id)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, n: int) -> str:
        ends = self._ends
        end = ends[n]  # IndexError as a list's
        if n < 0:
            n += len(ends)
        return self._data[ends[n - 1] if n else 0:end].decode()

    def __iter__(self) -> Iterator[str]:
        return (self[n] for n in range(len(self._ends)))

    def nbytes(self) -> int:
        return len(self._data) + self._ends.buffer_info()[1] * self._ends.itemsize


class RunsByRef:
    """``ref -> the runs indexed under it`` (oldest first), in about 12-24 bytes a ref plus 8 a further run.

    A ref is kept as its 64-bit ``hash``, never as its string: once eviction has dropped the states, a dict keyed by
    the refs would be the only holder of a million ref strings (~65 bytes each, plus ~40 for the dict entry). The
    table is open addressing over two arrays (``array('q')`` of hashes, linear probing, at most 70% full;
    ``array('i')`` of heads): a head is the one run number indexed under the ref (an index into the
    :class:`LineageIndex`'s run ids) or, for a ref with several, ``-(p + 1)`` for a chain of ``(run, next)`` pairs
    in two more arrays, newest first.

    Two refs that share a hash (about n²/2⁶⁵ for n refs: 3e-8 at a million) share an entry, so :meth:`get` may also
    name a run of the other ref: every caller checks the run itself (``run.read``, :meth:`LineageIndex.generation_in`),
    as :class:`~actors._evict.EvictingTable` checks the log for a hash it holds.

    ``compact=False`` (a World that keeps every state, hence every ref string, in memory): the refs are kept in a
    plain dict ``ref -> run number | (run numbers)`` instead, filled in C a batch at a time (a probe of the packed
    table is ~9,000 instructions of interpreted 64-bit integer work a ref; the dict's ~200), its strings the very
    ones the runs' states hold; :meth:`make_compact` moves it into the packed table for good (a World that starts
    to evict). Every query answers the same either way.
    """

    __slots__ = ("_count", "_heads", "_hot", "_hv", "_keys", "_kv", "_limit", "_mask", "_next", "_runs", "names")

    def __init__(self, names: RunIds, *, compact: bool = True) -> None:
        self.names = names
        """The run ids by run number (the :class:`LineageIndex`'s, shared by its two maps)."""
        self._hot: dict[str, int | tuple[int, ...]] | None = None if compact else {}
        self._set_table(array("q", _ZERO_Q) * _MIN_SLOTS, array("i", _ZERO_I) * _MIN_SLOTS)
        self._runs = array("i")
        self._next = array("i")
        self._count = 0

    def _slot(self, h: int) -> int:
        """The slot holding ``h``, or the empty slot where it would go."""
        keys, mask = self._keys, self._mask
        i = h & mask
        while True:
            k = keys[i]
            if k in (h, _EMPTY):
                return i
            i = (i + 1) & mask

    @property
    def compact(self) -> bool:
        """Whether the refs are kept as hashes in the packed table (else in a dict keyed by the refs)."""
        return self._hot is None

    def make_compact(self) -> None:
        """Move the dict's entries into the packed table, run by run in the order they were indexed (so the table
        holds what indexing them there from the start would have), and keep every ref there from now on."""
        hot = self._hot
        if hot is None:
            return
        self._hot = None
        by_run: dict[int, list[str]] = {}
        for ref, got in hot.items():
            for n in (got,) if type(got) is int else got:  # type: ignore[union-attr]
                by_run.setdefault(n, []).append(ref)
        for n in sorted(by_run):
            self.add(by_run.pop(n), n)

    def add(self, refs: Collection[str], run: int) -> None:
        """Index ``run`` (a run number) under each of ``refs``, after the runs already there."""
        hot = self._hot
        if hot is not None:
            if hot.keys().isdisjoint(refs):  # the common case, new refs: both steps in C
                hot.update(zip(refs, repeat(run), strict=False))
                return
            for ref in refs:
                got = hot.get(ref)
                if got is None:
                    hot[ref] = run
                elif type(got) is int:
                    if got != run:
                        hot[ref] = (got, run)
                elif got[-1] != run:  # type: ignore[index]
                    hot[ref] = (*got, run)  # type: ignore[misc]
            return
        if self._count + len(refs) > self._limit:  # room for the whole batch first: no check per new ref
            self._grow(self._count + len(refs))
        keys, heads, mask = self._kv, self._hv, self._mask
        new = 0
        for ref in refs:
            h = hash(ref) or 1  # 0 marks an empty slot (a ref hashing to 0 shares 1's entry)
            i = h & mask
            k = keys[i]
            while k != h:
                if k == _EMPTY:
                    keys[i] = h
                    heads[i] = run
                    new += 1
                    break
                i = (i + 1) & mask
                k = keys[i]
            else:  # the ref (or one sharing its hash) has runs already: chain this one in front
                head = heads[i]
                if head == run:
                    continue
                runs, nxt = self._runs, self._next
                if head >= 0:
                    runs.append(head)
                    nxt.append(-1)
                    head = -len(runs)
                runs.append(run)
                nxt.append(-head - 1)
                heads[i] = -len(runs)
        self._count += new

    def _grow(self, need: int) -> None:
        """Double the table until ``need`` refs fit under 70%, moving each entry once (the empty slots skipped in C)."""
        old_keys, old_heads = self._keys, self._heads
        size = 2 * len(old_keys)
        while need > size * 7 // 10:
            size *= 2
        self._set_table(array("q", _ZERO_Q) * size, array("i", _ZERO_I) * size)
        keys, heads, mask = self._kv, self._hv, self._mask
        for h, head in compress(zip(old_keys, old_heads, strict=True), old_keys):
            i = h & mask
            while keys[i]:
                i = (i + 1) & mask
            keys[i] = h
            heads[i] = head

    def _set_table(self, keys: array[int], heads: array[int]) -> None:
        self._keys, self._heads = keys, heads
        self._kv, self._hv = memoryview(keys), memoryview(heads)  # item writes without array's argument parsing
        self._mask = len(keys) - 1
        self._limit = len(keys) * 7 // 10

    def _numbers(self, h: int) -> list[int]:
        """The run numbers in the packed table under hash ``h``, in the order they were added."""
        i = self._slot(h or 1)
        if self._keys[i] == _EMPTY:
            return []
        head = self._heads[i]
        if head >= 0:
            return [head]
        out: list[int] = []
        runs, nxt = self._runs, self._next
        p = -head - 1
        while p >= 0:
            out.append(runs[p])
            p = nxt[p]
        out.reverse()
        return out

    def get(self, ref: str) -> tuple[str, ...]:
        """The run ids indexed under ``ref`` (or a ref sharing its hash), oldest first, each once."""
        hot = self._hot
        if hot is not None:
            got = hot.get(ref)
            if got is None:
                return ()
            if type(got) is int:
                return (self.names[got],)
            return tuple(map(self.names.__getitem__, got))  # type: ignore[arg-type]
        h = hash(ref) or 1
        keys, mask = self._keys, self._mask
        i = h & mask
        k = keys[i]
        while k != h:  # the probe, inlined: this is the lineage walks' inner loop
            if k == _EMPTY:
                return ()
            i = (i + 1) & mask
            k = keys[i]
        head = self._heads[i]
        names = self.names
        if head >= 0:
            return (names[head],)
        return tuple(names[n] for n in dict.fromkeys(self._numbers(h)))

    def __contains__(self, ref: object) -> bool:
        if not isinstance(ref, str):
            return False
        if self._hot is not None:
            return ref in self._hot
        h = hash(ref) or 1
        keys, mask = self._keys, self._mask
        i = h & mask
        k = keys[i]
        while k != h:
            if k == _EMPTY:
                return False
            i = (i + 1) & mask
            k = keys[i]
        return True

    def __len__(self) -> int:
        """How many refs (in the packed table: hashes) have runs."""
        return self._count if self._hot is None else len(self._hot)

    def as_dict(self) -> dict[int, tuple[str, ...]]:
        """Every entry: ``hash(ref) -> run ids``, oldest first (for comparing two indexes built in one process)."""
        names = self.names
        hot = self._hot
        if hot is not None:  # refs sharing a hash merged, as the packed table keeps them
            merged: dict[int, list[int]] = {}
            for ref, got in hot.items():
                merged.setdefault(hash(ref) or 1, []).extend((got,) if type(got) is int else got)  # type: ignore[arg-type]
            return {h: tuple(names[n] for n in sorted(set(ns))) for h, ns in merged.items()}
        return {h: tuple(names[n] for n in dict.fromkeys(self._numbers(h)))
                for h in self._keys if h != _EMPTY}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunsByRef):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def copy(self, names: RunIds) -> RunsByRef:
        out = RunsByRef(names, compact=self._hot is None)
        if self._hot is not None:
            out._hot = dict(self._hot)  # its values are ints and tuples: nothing shared changes
        out._set_table(array("q", self._keys), array("i", self._heads))
        out._runs, out._next = array("i", self._runs), array("i", self._next)
        out._count = self._count
        return out

    def nbytes(self) -> int:
        """The memory its arrays (and its dict of refs, not the ref strings the states hold) take (not the run ids)."""
        hot = 0 if self._hot is None else sys.getsizeof(self._hot)
        return hot + sum(a.buffer_info()[1] * a.itemsize for a in (self._keys, self._heads, self._runs, self._next))


class LineageIndex:
    """The reverse maps lineage queries walk; fed one Succeeded run at a time (:meth:`add_run`).

    ``readers`` and ``builders`` are :class:`RunsByRef`: packed arrays keyed by the refs' hashes, pointing at run
    numbers; the run ids are kept once, in ``runs`` (docs/decisions.md, "A compact lineage index").
    """

    __slots__ = ("_inputs", "_positions", "builders", "readers", "runs")

    _CACHE = 4096
    """Runs whose per-partition views (positions, inputs per output) are kept; a run is immutable once it
    Succeeded, so nothing is ever stale in them."""

    def __init__(self, *, compact: bool = True) -> None:
        self.runs = RunIds()
        """The Succeeded runs' ids by run number, in the order they were indexed."""
        self.readers = RunsByRef(self.runs, compact=compact)
        """An input ref -> the Succeeded runs that read it."""
        self.builders = RunsByRef(self.runs, compact=compact)
        """A ref -> the Succeeded runs that built it."""
        self._positions: dict[str, dict[str, int]] = {}
        self._inputs: dict[str, dict[str, dict[str, int]]] = {}

    def generation_in(self, run: JobRunState, ref: str) -> int | None:
        """The generation of ``ref`` that ``run`` built (or was building); None if it never held ``ref``."""
        if len(run.partitions) <= 8:
            return run.generation_of(ref)
        pos = self._positions.get(run.job_run_id)
        if pos is None:
            if len(self._positions) >= self._CACHE:
                self._positions.clear()
            pos = self._positions[run.job_run_id] = {p: i for i, p in enumerate(run.partitions)}
        i = pos.get(ref)
        return run.generations[i] if i is not None and i < len(run.generations) else None

    def inputs_in(self, run: JobRunState, ref: str) -> dict[str, int]:
        """The inputs (``ref -> generation``) ``run`` read into partition ``ref`` (see ``JobRunState.read_into``),
        from a per-run view built once, so a walk over a batch's partitions costs its reads once, not per node."""
        if not run.into:
            return dict(run.read)
        if len(run.read) <= 8:
            return run.read_into(ref)
        per = self._inputs.get(run.job_run_id)
        if per is None:
            if len(self._inputs) >= self._CACHE:
                self._inputs.clear()
            common = {r: g for r, g in run.read.items() if r not in run.into}
            per = {}
            for r, outs in run.into.items():
                g = run.read.get(r)
                if g is None:
                    continue
                for out in outs:
                    per.setdefault(out, dict(common))[r] = g
            per[""] = common  # partitions that only read the inputs read into all of them
            self._inputs[run.job_run_id] = per
        found = per.get(ref)
        return dict(found if found is not None else per[""])

    def add_run(self, run: JobRunState) -> None:
        """Index a run that has just Succeeded."""
        n = len(self.runs)
        self.runs.append(run.job_run_id)
        self.readers.add(run.read, n)
        self.builders.add(run.built(), n)

    @property
    def compact(self) -> bool:
        """Whether the refs are kept as hashes in packed arrays (:class:`RunsByRef`), else in dicts keyed by them."""
        return self.builders.compact

    def make_compact(self) -> None:
        """Keep the refs as hashes from now on (a World that starts to evict: its states may no longer hold them)."""
        self.readers.make_compact()
        self.builders.make_compact()

    def copy(self) -> LineageIndex:
        out = LineageIndex(compact=self.compact)
        out.runs.extend(self.runs)
        out.readers = self.readers.copy(out.runs)
        out.builders = self.builders.copy(out.runs)
        return out

    def reader_runs(self, ref: str) -> tuple[str, ...]:
        """The Succeeded runs that read ``ref`` (any generation), in the order they ended. Rarely (a ref sharing
        ``ref``'s hash, :class:`RunsByRef`) also a run that did not: check ``ref in run.read``."""
        return self.readers.get(ref)

    def builder_runs(self, ref: str) -> tuple[str, ...]:
        """The Succeeded runs that built ``ref``, oldest first. Rarely (a ref sharing ``ref``'s hash) also a run
        that did not: check :meth:`generation_in`."""
        return self.builders.get(ref)

    def nbytes(self) -> int:
        """The memory the index holds: its arrays, its run ids, its caches' dicts (not what they share)."""
        return self.readers.nbytes() + self.builders.nbytes() + self.runs.nbytes()

    def __len__(self) -> int:
        return len(self.builders)


# -- one step up or down -----------------------------------------------------------------------------------


def builder_of(world: World, ref: str, generation: int) -> JobRunState | None:
    """The Succeeded run that built generation ``generation`` of ``ref``, or None."""
    index = world.lineage
    for rid in index.builders.get(ref):
        run = world.runs.get(rid)
        if run is not None and index.generation_in(run, ref) == generation:
            return run
    return None


def inputs_of(world: World, ref: str, generation: int) -> dict[str, int]:
    """What generation ``generation`` of ``ref`` was built from: ``input ref -> generation``."""
    run = builder_of(world, ref, generation)
    return {} if run is None else world.lineage.inputs_in(run, ref)


def outputs_of(world: World, ref: str, generation: int) -> Iterator[tuple[str, int, JobRunState]]:
    """``(output ref, its generation, the run)`` for every generation built from ``ref``'s ``generation``."""
    index = world.lineage
    for rid in index.readers.get(ref):
        run = world.runs.get(rid)
        if run is None or run.read.get(ref) != generation:
            continue
        outs = run.into.get(ref)
        if outs is None:
            outs = run.built()
        for out in outs:
            if out in run.failed:
                continue
            gen = index.generation_in(run, out)
            if gen is not None:
                yield out, gen, run


# -- a whole query ------------------------------------------------------------------------------------------


@dataclass
class LineageNode:
    """One generation of one partition in a lineage answer."""

    ref: str
    generation: int
    level: int
    """Lineage levels from the queried node (0: the node itself)."""
    status: str
    """The partition's status if this is its current generation, else ``Superseded``."""
    current_generation: int
    run: str | None = None
    """The run that built this generation (None: never built by a run this log knows)."""
    job: str | None = None
    built_at: float | None = None
    stale: bool = False
    """Current and Live, but an input has since been rebuilt."""
    tainted_by: str | None = None

    @property
    def key(self) -> str:
        return f"{self.ref}@{self.generation}"

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "generation": self.generation, "level": self.level, "status": self.status,
                "current_generation": self.current_generation, "run": self.run, "job": self.job,
                "built_at": self.built_at, "stale": self.stale, "tainted_by": self.tainted_by}


@dataclass
class LineageGraph:
    """The answer of :func:`lineage`: nodes by ``ref@generation``, edges input -> output, in walk order.

    ``truncated`` says the walk stopped at ``depth`` with nodes left below (or above) it, or at ``max_nodes``.
    """

    root: LineageNode
    direction: LineageDirection
    depth: int | None
    nodes: dict[str, LineageNode] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    """``(input key, output key)`` pairs, ``key = ref@generation``."""
    truncated: bool = False

    def children(self, key: str) -> list[str]:
        """The nodes one level further from the root than ``key`` (its outputs going down, inputs going up)."""
        if self.direction == "down":
            return [o for i, o in self.edges if i == key]
        return [i for i, o in self.edges if o == key]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what ``wantbuild lineage --json`` prints and the web view draws."""
        return {"root": self.root.key, "direction": self.direction, "depth": self.depth,
                "truncated": self.truncated, "nodes": [n.to_dict() for n in self.nodes.values()],
                "edges": [{"from": a, "to": b} for a, b in self.edges]}

    def mermaid(self) -> str:
        """A Mermaid ``flowchart`` of the graph, inputs on the left."""
        ids = {key: f"n{i}" for i, key in enumerate(self.nodes)}
        lines = ["flowchart LR"]
        for key, node in self.nodes.items():
            label = f"{node.ref}<br/>g{node.generation} {node.status}"
            if node.stale:
                label += " (stale)"
            lines.append(f'    {ids[key]}["{_mermaid_text(label)}"]')
        for a, b in self.edges:
            lines.append(f"    {ids[a]} --> {ids[b]}")
        classes = {"Live": "live", "Tainted": "tainted", "Superseded": "old"}
        for key, node in self.nodes.items():
            cls = classes.get(node.status)
            if cls is not None:
                lines.append(f"    class {ids[key]} {cls}")
        lines += ["    classDef live fill:#d7f5dd,stroke:#2a7a3b", "    classDef tainted fill:#fde7b0,stroke:#a66a00",
                  "    classDef old fill:#eeeeee,stroke:#888888,color:#555555"]
        return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _node(world: World, ref: str, generation: int, level: int, run: JobRunState | None) -> LineageNode:
    part = world.partition(ref)
    current = part.generation == generation
    status = str(part.status) if current else "Superseded"
    node = LineageNode(ref=ref, generation=generation, level=level, status=status,
                       current_generation=part.generation, run=run.job_run_id if run is not None else None,
                       job=run.job if run is not None else None, built_at=run.ended_at if run is not None else None,
                       tainted_by=part.tainted_by if current else None)
    if current and part.status is P.LIVE and run is not None:
        node.stale = bool(newer_inputs(world, run, ref))
    return node


def lineage(world: World, ref: str, *, direction: LineageDirection = "up", depth: int | None = None,
            generation: int | None = None, max_nodes: int = 100_000) -> LineageGraph:
    """The lineage of ``ref`` (its current generation, or ``generation``): what it was built from (``up``), or
    what was built from it (``down``), ``depth`` levels at most (None: all), breadth-first.

    Raises :class:`NeverBuilt` if no run this log knows built that generation and (going down) none read it.
    """
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be >= 0 or None, got {depth!r}")
    part = world.partition(ref)
    gen = part.generation if generation is None else generation
    run = builder_of(world, ref, gen)
    if run is None and (direction == "up" or not any(True for _ in outputs_of(world, ref, gen))):
        if generation is None and part.generation == 0:
            raise NeverBuilt(f"{ref} was never built: no run in this log built it (it is {part.status}); "
                             f"`wantbuild explain {ref}` says why")
        raise NeverBuilt(f"generation {gen} of {ref} was built by no run this log knows (the partition is "
                         f"{part.status} at generation {part.generation}); pick a generation a run built, see "
                         f"`wantbuild events --entity {ref} --type PartitionLive`")
    root = _node(world, ref, gen, 0, run)
    graph = LineageGraph(root=root, direction=direction, depth=depth)
    graph.nodes[root.key] = root
    frontier: deque[tuple[str, int, int]] = deque([(ref, gen, 0)])
    index = world.lineage
    while frontier:
        cur_ref, cur_gen, level = frontier.popleft()
        key = f"{cur_ref}@{cur_gen}"
        if direction == "up":
            builder = builder_of(world, cur_ref, cur_gen) if level else run
            steps: list[tuple[str, int, JobRunState | None]] = []
            if builder is not None:
                for r, g in index.inputs_in(builder, cur_ref).items():
                    steps.append((r, g, None))
        else:
            steps = [(o, g, r) for o, g, r in outputs_of(world, cur_ref, cur_gen)]
        if not steps:
            continue
        if depth is not None and level >= depth:
            graph.truncated = True
            continue
        for nref, ngen, nrun in steps:
            nkey = f"{nref}@{ngen}"
            graph.edges.append((nkey, key) if direction == "up" else (key, nkey))
            if nkey in graph.nodes:
                continue
            if len(graph.nodes) >= max_nodes:
                graph.truncated = True
                graph.edges.pop()
                continue
            built_by = nrun if nrun is not None else builder_of(world, nref, ngen)
            graph.nodes[nkey] = _node(world, nref, ngen, level + 1, built_by)
            frontier.append((nref, ngen, level + 1))
    return graph


# -- staleness ---------------------------------------------------------------------------------------------


def newer_inputs(world: World, run: JobRunState, ref: str) -> dict[str, tuple[int, int]]:
    """Inputs of ``ref`` (as ``run`` built it) that have since been rebuilt: ``input -> (read, now Live)``."""
    out: dict[str, tuple[int, int]] = {}
    for r, g in world.lineage.inputs_in(run, ref).items():
        cur = world.partitions.get(r)
        if cur is not None and cur.status is P.LIVE and cur.generation > g:
            out[r] = (g, cur.generation)
    return out


@dataclass(frozen=True)
class Stale:
    """A Live partition built from inputs that have since been rebuilt."""

    ref: str
    generation: int
    built_by: str
    job: str
    newer: dict[str, tuple[int, int]]
    """``input ref -> (generation read, generation Live now)``."""

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "generation": self.generation, "built_by": self.built_by, "job": self.job,
                "newer": {r: {"read": a, "now": b} for r, (a, b) in self.newer.items()}}


def live_outputs(partitions: Mapping[str, PartitionState], run: JobRunState) -> Iterator[tuple[str, PartitionState]]:
    """The partitions ``run`` built that are still Live at the generation it built."""
    for i, ref in enumerate(run.partitions):
        part = partitions.get(ref)
        if part is None or part.status is not P.LIVE or part.built_by != run.job_run_id:
            continue
        if i < len(run.generations) and part.generation != run.generations[i]:
            continue
        yield ref, part


def stale(world: World) -> list[Stale]:
    """Every Live partition whose inputs have since been rebuilt (a newer generation is Live), by ref.

    One pass over the Succeeded runs that built a partition still Live, looking up each input once per run.
    """
    out: list[Stale] = []
    partitions = world.partitions
    for run in world.runs.values():
        if run.status is not JobRunStatus.SUCCEEDED or not run.read:
            continue
        newer = {}
        for r, g in run.read.items():
            cur = partitions.get(r)
            if cur is not None and cur.status is P.LIVE and cur.generation > g:
                newer[r] = (g, cur.generation)
        if not newer:
            continue
        for ref, part in live_outputs(partitions, run):
            mine = {r: v for r, v in newer.items() if r not in run.into or ref in run.into[r]}
            if mine:
                out.append(Stale(ref, part.generation, run.job_run_id, run.job, mine))
    out.sort(key=lambda s: s.ref)
    return out


# -- taints -------------------------------------------------------------------------------------------------


class TaintedInput(msgspec.Struct, frozen=True):
    """Why a partition must be tainted: the taint, the depth it would be at, the input it comes through."""

    taint_id: str
    depth: int
    via: str
    reason: str


def reaching_taint(world: World, ref: str, generation: int) -> TaintState | None:
    """The active taint whose cascade goes on below ``ref``'s ``generation``, if that generation is Tainted now."""
    cur = world.partitions.get(ref)
    if cur is None or cur.status is not P.TAINTED or cur.generation != generation or cur.tainted_by is None:
        return None
    taint = world.taints.get(cur.tainted_by)
    if taint is None or not taint.active or not taint.reaches(cur.taint_depth):
        return None
    return taint


def tainted_input(world: World, run: JobRunState, ref: str) -> TaintedInput | None:
    """If ``run`` built ``ref`` from a generation that is Tainted now (by a taint that reaches below it), why."""
    for r, g in world.lineage.inputs_in(run, ref).items():
        taint = reaching_taint(world, r, g)
        if taint is not None:
            depth = world.partitions[r].taint_depth + 1
            return TaintedInput(taint.taint_id, depth, f"{r}@{g}",
                                f"built from {r}@{g}, tainted by {taint.taint_id}: {taint.reason}")
    return None


class Reach(NamedTuple):
    """One partition generation a taint reaches: ``depth`` levels below what it named, through ``via``."""

    ref: str
    generation: int
    depth: int
    via: str | None


def cascade(world: World, taint: TaintState) -> list[list[Reach]]:
    """What ``taint`` reaches, level by level (the roots first): every partition generation built, transitively
    through the lineage, from a generation it names, within its depth (only the roots without ``cascade``).

    Each ref appears once, at the first level that reaches it. Generations that are no longer current are walked
    through (what was built from them was built from bad data too) but only current ones are returned; the
    caller taints those that are Live. Linear in what it reaches.
    """
    levels: list[list[Reach]] = []
    partitions = world.partitions
    readers = world.lineage.readers
    refs_seen: set[str] = set()
    # node -> the input it was reached through ("ref@gen"); a node is walked once
    via: dict[tuple[str, int], str | None] = {}
    frontier: list[tuple[str, int]] = []
    for node in zip(taint.refs, taint.generations, strict=False):
        if node not in via:
            via[node] = None
            frontier.append(node)
    depth = 0
    while frontier:
        level: list[Reach] = []
        nxt: list[tuple[str, int]] = []
        go_on = taint.reaches(depth)
        for node in frontier:
            ref, gen = node
            part = partitions.get(ref)
            if part is not None and part.generation == gen and ref not in refs_seen:
                refs_seen.add(ref)
                level.append(Reach(ref, gen, depth, via[node]))
            if go_on and ref in readers:
                came = f"{ref}@{gen}"
                for out, ogen, _run in outputs_of(world, ref, gen):
                    onode = (out, ogen)
                    if onode not in via:
                        via[onode] = came
                        nxt.append(onode)
        if level:
            levels.append(level)
        frontier = nxt
        depth += 1
    return levels


def covered(world: World, taints: list[TaintState]) -> set[str]:
    """Every ref the given taints reach (at its current generation), for deciding what a cancel may restore."""
    out: set[str] = set()
    for taint in taints:
        for level in cascade(world, taint):
            out.update(r.ref for r in level)
    return out


# -- I7 -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaintedRead:
    """A Live partition (not stale) built from a generation that is Tainted now, inside that taint's reach."""

    ref: str
    generation: int
    built_by: str
    input: str
    input_generation: int
    taint_id: str | None
    depth: int
    """The depth the partition would be tainted at (its input's depth + 1)."""


def tainted_reads(world: World) -> list[TaintedRead]:
    """Live partitions that a taint should have reached: built from a generation Tainted now, by a taint whose
    cascade goes on below that input (and not stale, which the cascade may leave: a newer input is Live).

    The runtime taints these (cascade, and runs that read the input before it was tainted); at a quiescent
    point the list is empty (invariant I7).
    """
    out: list[TaintedRead] = []
    partitions = world.partitions
    for run in world.runs.values():
        if run.status is not JobRunStatus.SUCCEEDED or not run.read:
            continue
        bad: dict[str, tuple[int, str | None, int]] = {}
        for r, g in run.read.items():
            taint = reaching_taint(world, r, g)
            if taint is not None:
                bad[r] = (g, taint.taint_id, partitions[r].taint_depth + 1)
        if not bad:
            continue
        for ref, part in live_outputs(partitions, run):
            hits = [r for r in bad if r not in run.into or ref in run.into[r]]
            if not hits or newer_inputs(world, run, ref):
                continue
            r = hits[0]
            g, tid, d = bad[r]
            out.append(TaintedRead(ref, part.generation, run.job_run_id, r, g, tid, d))
    out.sort(key=lambda t: t.ref)
    return out
