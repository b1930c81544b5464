"""The supervisor's planning for large and competing wants (issue 16): partition sets planned lazily, priorities,
and concurrency pools across jobs. A mixin of :class:`~supervisor._supervisor.Supervisor`, kept apart so the rules
read in one place and the supervisor's handlers only call in at a few points.

- **Sets are planned lazily.** A want over a :class:`~actors.PartitionSet` is indexed by a cursor, not ref by ref:
  its refs past the cursor count as Idle in the want's counters, and :meth:`LazyPlanning._activate` moves the
  cursor in chunks, as the refs queued or in flight fall below :data:`WINDOW`, highest priority first. So a
  million-partition want costs one event and a few bytes until capacity frees up, and the supervisor's memory
  follows the window, not the set. After a restart a cursor starts again at 0: refs already Live are counted and
  skipped in passing, refs being built are joined.
- **Priorities.** A queued ref carries the highest priority of the wants on it; planning takes refs in priority
  order (then arrival), and jobs whose best queued ref has the higher priority are planned first, so a new
  high-priority want waits for at most one run slot behind a running backfill.
- **Pools.** A job with ``pool = "warehouse"`` counts its runs against the graph's pool of that size, shared
  with every job of the pool. :meth:`LazyPlanning.waiting_reason` says why a job's queued refs wait.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Collection, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from actors import PartitionStatus, WantState

if TYPE_CHECKING:
    from ._graph import Graph
    from ._jobs import Job

P = PartitionStatus

WINDOW = 20_000
"""Refs of partition-set wants kept queued or in flight at once: enough to fill every run slot, small enough
that a million-ref want never sits in the supervisor's indices as a whole."""
CHUNK = 2_000
"""Refs activated at a time."""


class LazyPlanning:
    """State and rules for set wants, priorities and pools; mixed into the supervisor."""

    graph: Graph
    world: Any
    counts: dict[str, list[int]]  # want -> refs per category (indexed by the supervisor's Cat)
    n_queued: int  # refs queued
    n_planned: int  # refs planned in a run not ended yet
    inflight: dict[str, set[str]]

    def _reset_lazy(self) -> None:
        self.cursors: dict[str, int] = {}  # set want -> refs activated so far (a prefix of its set)
        self.priority: dict[str, int] = {}  # active want -> its priority (only when not 0)
        self.pqueues: dict[str, dict[int, deque[str]]] = {}  # job -> priority -> refs to plan, in arrival order

    # -- sets --------------------------------------------------------------------------------------------------
    def _index_set(self, want: WantState, counts: list[int], idle: int) -> None:
        """A set want: all its refs count as Idle until activated."""
        counts[idle] += len(want.refs)
        self.cursors[want.want_id] = 0

    def _indexed_refs(self, want: WantState) -> Iterable[str]:
        """The want's refs the supervisor indexed (all of a list want's; the activated prefix of a set's)."""
        if want.is_set:
            return itertools.islice(want.refs, self.cursors.get(want.want_id, len(want.refs)))
        return want.refs

    def _activate(self) -> None:
        """Activate set wants' refs, highest priority first, while fewer than WINDOW refs are queued or in flight."""
        if not self.cursors:
            return
        order = sorted(self.cursors, key=lambda wid: (-self.priority.get(wid, 0), wid))
        for wid in order:
            want = self.world.wants.get(wid)
            if want is None or want.terminal or wid not in self.counts:
                self.cursors.pop(wid, None)
                continue
            refs = want.refs
            while self.n_queued + self.n_planned < WINDOW:
                start = self.cursors[wid]
                if start >= len(refs):
                    break
                chunk = list(itertools.islice(refs.iter_from(start), CHUNK))
                self.cursors[wid] = start + len(chunk)
                self._activate_refs(want, chunk)
            if self.cursors[wid] >= len(refs):
                del self.cursors[wid]
            if self.n_queued + self.n_planned >= WINDOW:
                return

    def _activate_refs(self, want: WantState, refs: list[str]) -> None:
        raise NotImplementedError  # the supervisor's: index each ref, then plan it

    def wants_on(self, ref: str) -> Collection[str]:
        raise NotImplementedError  # the supervisor's: the active wants on the ref

    # -- priorities ----------------------------------------------------------------------------------------------
    def _ref_priority(self, ref: str) -> int:
        prio = self.priority
        if not prio:
            return 0
        return max((prio.get(w, 0) for w in self.wants_on(ref)), default=0)

    def _push(self, job: str, ref: str) -> None:
        queues = self.pqueues.get(job)
        if queues is None:
            queues = self.pqueues[job] = {}
        prio = self._ref_priority(ref)
        q = queues.get(prio)
        if q is None:
            q = queues[prio] = deque()
        q.append(ref)

    def _jobs_in_order(self) -> list[str]:
        """Jobs with queued refs: the one whose best queued ref has the highest priority first, then by name."""
        best = []
        for name, queues in self.pqueues.items():
            live = [p for p, q in queues.items() if q]
            if live:
                best.append((-max(live), name))
        return [name for _, name in sorted(best)]

    def _pop_refs(self, job: str) -> Iterator[str]:
        """The job's queued refs, highest priority first (stale entries are skipped by the caller)."""
        queues = self.pqueues.get(job, {})
        for prio in sorted(queues, reverse=True):
            q = queues[prio]
            while q:
                yield q.popleft()
            del queues[prio]

    def _requeue_front(self, job: str, refs: Iterable[str]) -> None:
        """Put refs taken but not planned back at the front of their priority's queue."""
        for ref in reversed(list(refs)):
            queues = self.pqueues.setdefault(job, {})
            queues.setdefault(self._ref_priority(ref), deque()).appendleft(ref)

    # -- pools -----------------------------------------------------------------------------------------------
    def _free_slots(self, job: Job) -> tuple[int, str]:
        """How many more runs of ``job`` may start now, and why not when none (``pool warehouse full: 4/4``)."""
        if job.concurrency is None and job.pool is None:
            return 1 << 30, ""  # no limit (the common case: asked once per planned run)
        running = len(self.inflight.get(job.name, ()))
        free = (job.concurrency - running) if job.concurrency is not None else 1 << 30
        why = f"job {job.name} at its concurrency limit: {running}/{job.concurrency}"
        if job.pool is not None:
            size = self.graph.pools.get(job.pool, 1 << 30)
            used = sum(len(self.inflight.get(j.name, ())) for j in self.graph.jobs().values() if j.pool == job.pool)
            if size - used < free:
                free = size - used
                why = f"pool {job.pool} full: {used}/{size}"
        return max(free, 0), why


def waiting_reason(graph: Graph, world: Any, job: Job) -> str | None:
    """Why ``job``'s queued refs wait, from committed state (for ``explain``): its concurrency or its pool."""
    inflight: Counter[str] = Counter(r.job for r in world.in_flight_runs())
    running = inflight[job.name]
    if job.pool is not None and job.pool in graph.pools:
        size = graph.pools[job.pool]
        used = sum(inflight[j.name] for j in graph.jobs().values() if j.pool == job.pool)
        if used >= size:
            return f"pool {job.pool} full: {used}/{size}"
    if job.concurrency is not None and running >= job.concurrency:
        return f"job {job.name} at its concurrency limit: {running}/{job.concurrency}"
    return None
