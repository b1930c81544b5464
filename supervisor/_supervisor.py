"""The supervisor: the coordinating actor. It plans; the entity actors decide.

It reacts to messages only, never polls: committed transitions forwarded by the system hook (``Committed``),
runs that ended (``RunEnded``), timers that fired (``Due``), and shutdown. Its indices are all derived: from
the World at start, then from the messages, so a restart rebuilds them exactly.

The rules (numbers refer to the supervisor rules of the semantics):

1. A new want makes each of its refs *wanted*; Live ones count as done, Building/UpstreamWaiting ones are
   joined, the rest are queued for their job.
2. Queued refs are cut into runs of at most ``batch`` per job, within the job's concurrency limit; static
   dependencies are wanted first (the ref waits in the supervisor until they are Live).
3. A run takes its leases from the Partition actors itself (the collision policy lives in the JobRun actor).
4. A DepMiss run leaves its partitions UpstreamWaiting; the supervisor wants the missing refs (one derived want,
   ``source = job_run:<id>``) and wakes the partitions when every upstream ref is Live. A ref that needs itself
   through the chain fails the partitions of the cycle as UpstreamFailed, the cycle spelled out.
5. A failed run with attempts left is retried after its backoff; otherwise its partitions are Failed for good,
   the wants on them Failed, and whatever waits on them UpstreamFailed.
6. A want that ends (canceled, expired, failed, ...) releases its interest; a run no active want needs is
   canceled; derived wants whose every parent was canceled or expired are canceled too.
A want's status follows its partitions, kept as per-want counters so a 100,000-partition want costs O(1) per
partition change.

Recovery is level-triggered. Every index is derived from the World; :meth:`Supervisor._reconcile` rebuilds them
all and re-derives what must happen (runs to plan, dependencies to want, timers to arm) at start, after the
supervisor itself crashed, and whenever another actor crashed (``ActorCrashed``): a crash may have dropped a
message, and the committed state, not the message, says what is left to do. What the supervisor has asked for
but not yet seen committed (a derived want, a planned run) is kept in :class:`Pending`, which outlives a crash
of the supervisor, so reconciling never asks twice. An actor the system gave up on (``GaveUp``: it crashed past
the restart limit) ends what depends on it with the error as the reason: its run Failed or Canceled, the wants
on its partitions Failed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from enum import IntEnum
from typing import Any, Final

import msgspec

from actors import (
    Abandon,
    ApplyTaint,
    Behavior,
    CancelRun,
    Committed,
    CreateWant,
    Ctx,
    EndWant,
    EntityEnv,
    FailUpstream,
    InvalidRef,
    JobRunQueued,
    JobRunState,
    JobRunStatus,
    MarkSlaMissed,
    MoveWant,
    PartitionState,
    PartitionStatus,
    PlanRun,
    Reconcile,
    ReconcileTaint,
    RetryLeases,
    RunEnded,
    StayedLive,
    UpstreamReady,
    WantCreated,
    WantState,
    WantStatus,
)
from actors import CollisionPolicy as Policy
from eventlog import get_logger

from ._graph import Graph, Job, NoJobForRef
from ._ids import IdSource
from ._lazy import LazyPlanning
from ._lineage_work import is_stale, late_taints, rebuild_inputs, stale_readers
from ._timers import Timers
from ._waits import WaitIndex

log = get_logger("wantbuild.supervisor")
P = PartitionStatus
W = WantStatus


_PLANNABLE = frozenset({P.MISSING, P.TAINTED, P.FAILED, P.UPSTREAM_FAILED})
"""Statuses a queued ref may be planned in (a ref never seen is Missing)."""


# Enum members bound once, for the per-transition paths: a member read through its class is a metaclass lookup
# (~85 ns on Python 3.11, against ~20 for a global).
_LIVE: Final = P.LIVE
_BUILDING: Final = P.BUILDING
_MISSING: Final = P.MISSING
_TAINTED: Final = P.TAINTED
_FAILED: Final = P.FAILED
_UPSTREAM_FAILED: Final = P.UPSTREAM_FAILED
_UPSTREAM_WAITING: Final = P.UPSTREAM_WAITING


_READY: Final = UpstreamReady()  # frozen: one instance told to every partition woken (100,000 in a backfill)
_NEVER: Final = PartitionState(ref="")  # the state of a ref never seen, for reads of its status only


class Cat(IntEnum):
    """What a wanted partition means for the wants on it."""

    IDLE = 0
    BUILDING = 1
    WAITING = 2
    LIVE = 3
    FAILED = 4
    UPSTREAM_FAILED = 5


_CAT_IDLE: Final = Cat.IDLE
_CAT_BUILDING: Final = Cat.BUILDING
_CAT_WAITING: Final = Cat.WAITING
_CAT_LIVE: Final = Cat.LIVE
_CAT_FAILED: Final = Cat.FAILED
_CAT_UPSTREAM_FAILED: Final = Cat.UPSTREAM_FAILED


class Due(msgspec.Struct, frozen=True):
    """A timer fired: ``what`` is ``ttl``, ``sla`` or ``retry``; ``key`` the want or run id."""

    what: str
    key: str


class Drain(msgspec.Struct, frozen=True):
    """Stop starting runs (runtime shutdown)."""


class CommittedBatch(msgspec.Struct, frozen=True):
    """Committed transitions in commit order, delivered together (one message per loop iteration)."""

    items: tuple[Committed, ...]


class Tick(msgspec.Struct, frozen=True):
    """To itself: plan runs now. Queued behind the notifications already waiting, so a burst of partitions
    becoming schedulable is planned as full batches, not one run each."""


class Recover(msgspec.Struct, frozen=True):
    """Rebuild the indices from the World and resume (sent once at start, and to a supervisor revived after the
    system gave up on it: ``mailbox_lost``, the messages it held were dropped with it)."""

    mailbox_lost: bool = False


class ActorCrashed(msgspec.Struct, frozen=True):
    """An actor crashed (and restarted, or was stopped): the message it held may be lost; reconcile."""

    kind: str
    key: str
    message_type: str | None = None


class GaveUp(msgspec.Struct, frozen=True):
    """The actor system stopped an actor after repeated crashes: end what depends on it, with ``reason``."""

    kind: str
    key: str
    reason: str


SUPERVISOR_MESSAGES: tuple[str, ...] = ("CommittedBatch", "RunEnded", "Due", "Recover", "Tick", "Drain",
                                        "ActorCrashed", "GaveUp", "StayedLive")
"""The messages the supervisor handles, by type name (for fault drills naming one)."""


_MANY: Final = 16
"""Wants on one ref kept in a tuple; more go in a dict (a tuple copied per want added is quadratic)."""


class Ref(msgspec.Struct, gc=False):
    """What the supervisor keeps of one ref: the wants on it, its category for them, the runs planned for it,
    whether it is queued. One record per ref, not four maps: a committed transition's bookkeeping reads one object
    (issue 15: with 100,000 refs in flight each map's lookup is a cache miss, and case (b) paid four or five per
    transition). A record lives while any of its fields says something (:meth:`Supervisor._drop_ref`).

    A msgspec Struct untracked by the cyclic GC (it refers to strings, tuples of strings and a dict of strings,
    never back to anything): a backfill holds one per ref in flight (200,000 in case (b) at 100,000 partitions),
    and as tracked objects they were a fifth of what made the GC's first collection come and what it walked."""

    # the active wants on it; (): not wanted. A want's refs share its one-want tuple (issue 15: a list per ref
    # of a million-ref backfill was ~90 MB of small objects, whose arenas stayed pinned after it ended); past
    # _MANY wants a dict, so that adding and removing one stays O(1) for a ref that thousands of wants share
    wants: tuple[str, ...] | dict[str, None] = ()
    cat: Cat | None = None  # what it means for those wants (None while not wanted)
    # the non-terminal runs planned for it; a run's refs share its one-run tuple while it is their only run
    runs: tuple[str, ...] = ()
    queued: bool = False  # in its job's queue, to plan


class Pending:
    """What the supervisor asked for and has not seen committed yet; kept by the runtime, so it outlives a crash of
    the supervisor (reconciling must not ask for a derived want or a run a second time)."""

    def __init__(self) -> None:
        self.wants: dict[str, WantCreated] = {}  # want id -> its event: CreateWant told, WantCreated not seen
        self.creating: dict[str, str] = {}  # ref -> the pending want that will want it
        self.runs: dict[str, JobRunQueued] = {}  # run id -> PlanRun told, the run not in the World yet
        self.draining = False  # the runtime is shutting down: plan nothing more

    def forget_want(self, want_id: str) -> None:
        ev = self.wants.pop(want_id, None)
        creating = self.creating
        if ev is None or not creating:  # nothing pending (a user's want: its 100,000 refs not walked for nothing)
            return
        for ref in ev.refs:
            if creating.get(ref) == want_id:
                del creating[ref]


class Supervisor(LazyPlanning, Behavior):
    """The supervisor's logic: one instance per runtime (replaced after a crash), its indices all derived."""

    def __init__(self, key: str, env: EntityEnv, graph: Graph, ids: IdSource, timers: Timers,
                 policy: Policy = "shrink", pending: Pending | None = None) -> None:
        self.key = key
        self.env = env
        self.kernel = env.kernel
        self.world = env.world
        self.graph = graph
        self.ids = ids
        self.timers = timers
        self.policy = policy
        self.pending = pending if pending is not None else Pending()
        self.tick_pending = False
        # Staleness is looked at only if a job asked for it (a rebuild is then event-driven: see _refresh).
        self.refresh_enabled = any(job.rebuild_stale for job in graph.jobs().values())
        self.refreshing: set[str] = set()
        world = self.world
        # Whether a partition is Live, without making a Missing state for a ref never seen (a DepMiss run's missing
        # refs, 500 a run); an evicting World reads an evicted state back, as World.partition does.
        self._is_live: Any = world.is_live if not world.evicting else (
            lambda ref: world.partition(ref).status is _LIVE)
        self._reset()

    def _reset(self) -> None:
        """Empty every derived index (:meth:`_reconcile` rebuilds them from the World)."""
        # per ref: the wants on it and its category for them (interest), the runs planned for it and whether it is
        # queued (scheduling), in one record; the counters say how many refs are wanted, queued and planned
        self.refs: dict[str, Ref] = {}
        self.n_wanted = 0
        self.n_queued = 0
        self.n_planned = 0
        # interest, per want
        self._one: dict[str, tuple[str]] = {}  # set want -> its one-want tuple, while it activates refs
        self.counts: dict[str, list[int]] = {}  # want -> how many of its refs are in each Cat (index: Cat)
        self.sent: dict[str, W] = {}
        self.dirty: set[str] = set()
        # scheduling (the queues of refs to plan, by job and priority, and set wants' cursors: _lazy.py)
        self._reset_lazy()
        self.inflight: dict[str, set[str]] = {}
        # the same runs, all jobs together: while a run is here each ref it planned has it in its record's runs,
        # so a Building or UpstreamWaiting transition under it needs no recount (_on_batch skips the record)
        self.open_runs: set[str] = set()
        self.retrying: dict[str, str] = {}
        self.to_schedule = False
        # dependencies: partitions of a DepMiss run wait together on the run's missing refs (a wait group)
        self.groups = WaitIndex()  # DepMiss run -> its missing refs not yet Live
        self.deferred: dict[str, set[str]] = {}
        # static dependencies: a wanted ref waits for its job's static deps and its rebuild inputs to be Live
        self.static = WaitIndex()  # ref -> its static deps / rebuild inputs not yet Live
        self.static_failed: dict[str, str] = {}
        self.broken: dict[str, str] = {}  # wanted ref -> why the runtime gave up on it (GaveUp)
        # staleness: Live refs of rebuild_stale jobs that a want covers and whose inputs were rebuilt
        for ref in self.refreshing:  # a reconcile re-derives them: give back what they held
            self._leave(ref, False)
        self.refreshing = set()
        self.refresh_queues: dict[str, deque[str]] = {}
        self.children: dict[str, set[str]] = {}  # active want -> its active derived wants

    # -- per-ref records ------------------------------------------------------------------------------
    def wants_on(self, ref: str) -> Collection[str]:
        """The active wants on ``ref`` (empty if none; read only)."""
        rec = self.refs.get(ref)
        return () if rec is None else rec.wants

    def is_wanted(self, ref: str) -> bool:
        rec = self.refs.get(ref)
        return rec is not None and bool(rec.wants)

    def is_planned(self, ref: str) -> bool:
        rec = self.refs.get(ref)
        return rec is not None and bool(rec.runs)

    def _drop_ref(self, ref: str, rec: Ref) -> None:
        """Forget ``ref``'s record if it says nothing any more."""
        if not rec.wants and not rec.runs and not rec.queued and self.refs.get(ref) is rec:
            del self.refs[ref]

    def _add_run(self, ref: str, one: tuple[str]) -> Ref:
        """The run ``one[0]`` is planned for ``ref`` (``one``: that run's shared one-run tuple, so that a batch's
        refs do not make a tuple each): its record, which says so."""
        rec = self.refs.get(ref)
        if rec is None:
            rec = self.refs[ref] = Ref()
        runs = rec.runs
        if not runs:
            self.n_planned += 1
            rec.runs = one
        elif one[0] not in runs:
            rec.runs = (*runs, *one)
        return rec

    def _remove_run(self, ref: str, rec: Ref, run_id: str) -> None:
        """``run_id`` (one of ``rec.runs``) ended."""
        runs = rec.runs
        rec.runs = () if len(runs) == 1 else tuple(r for r in runs if r != run_id)
        if not rec.runs:
            self.n_planned -= 1
            self._drop_ref(ref, rec)

    # -- message loop ---------------------------------------------------------------------------------
    def receive(self, ctx: Ctx, msg: Any) -> Any:
        if isinstance(msg, CommittedBatch):
            self._on_batch(msg.items)
        elif isinstance(msg, Committed):
            self._on_committed(msg)
        elif isinstance(msg, RunEnded):
            self._on_run_ended(msg.run)
        elif isinstance(msg, Due):
            self._on_due(msg)
        elif isinstance(msg, Recover):
            self._recover(msg.mailbox_lost)
        elif isinstance(msg, ActorCrashed):
            self._on_crashed(msg)
        elif isinstance(msg, GaveUp):
            self._on_gave_up(msg)
        elif isinstance(msg, StayedLive):
            self._decide_again(msg.refs)
        elif isinstance(msg, Tick):
            self.tick_pending = False
            if not self.pending.draining:
                self.to_schedule = False
                self._schedule()
        elif isinstance(msg, Drain):
            self.pending.draining = True
            return None
        else:
            raise TypeError(f"supervisor: unexpected message {msg!r}")
        self._flush()
        return None

    def _flush(self) -> None:
        if self.to_schedule and not self.pending.draining and not self.tick_pending:
            self.tick_pending = True
            self.kernel.tell("supervisor", self.key, Tick())
        if self.dirty and not self.tick_pending:  # after planning, so a planned ref counts as Building
            dirty, self.dirty = self.dirty, set()
            for want_id in sorted(dirty):
                self._sync_want(want_id)

    # -- committed transitions -----------------------------------------------------------------------
    def _on_committed(self, msg: Committed) -> None:
        rec = msg.record
        if rec.entity_kind == "partition":
            self._on_batch((msg,))
        elif rec.entity_kind == "want":
            new: WantState = msg.new
            if msg.old is None:
                self.pending.forget_want(new.want_id)
                self._add_want(new)
            elif new.terminal:
                self._drop_want(new)

    def _on_batch(self, items: Iterable[Committed]) -> None:
        """One commit's transitions, in commit order. Partitions are most of them (a backfill commits thousands
        per batch): their common case is handled here, with the indices held in locals and the empty ones
        skipped; anything else goes through :meth:`_on_committed`."""
        refs = self.refs
        recat = self._recat
        live, building, cat_building, waiting = _LIVE, _BUILDING, _CAT_BUILDING, _UPSTREAM_WAITING
        # Never replaced while a batch is handled (only a reconcile makes new ones).
        groups_by_ref, static_by_ref, deferred = self.groups.by_ref, self.static.by_ref, self.deferred
        open_runs = self.open_runs
        for item in items:
            if item.record.entity_kind != "partition":
                self._on_committed(item)
                continue
            st: PartitionState = item.new
            ref = st.ref
            status = st.status
            # Leased by, or left waiting by, a run planned here and not ended: the ref's record lists that run, so
            # its category holds (a planned ref counts as Building) and there is nothing else to do for these two
            # statuses. The record is not read: with a backfill's partitions all in flight it is a cold read
            # (issue 15), and the run's end reads it anyway.
            if status is building:
                if st.lease in open_runs:
                    continue
            elif status is waiting and st.waiting_run in open_runs:
                if deferred and ref in deferred:
                    self._wake_deferred(ref)
                continue
            rec = refs.get(ref)
            wanted = False
            if rec is not None and rec.wants:
                wanted = True
                # A planned ref counts as Building whatever it goes through before its run ends (a lease, a settle
                # that is not Live): nothing to recount then (_category says so first; broken and static_failed
                # refs keep their category too).
                if status is live or rec.cat is not cat_building or not rec.runs:
                    recat(ref, st, rec)
            if status is building:
                continue
            if status is live:
                if groups_by_ref and ref in groups_by_ref:
                    self._wake_waiters(ref)
                if static_by_ref and ref in static_by_ref:
                    self._wake_static(ref)
                if self.refresh_enabled and st.generation > 1:
                    for stale_ref in stale_readers(self.world, self.graph, ref):
                        self._refresh(stale_ref)
            elif (status is _FAILED and st.final) or status is _UPSTREAM_FAILED:
                self._fail_waiters(ref, st)
                self._fail_static(ref, st)
            if deferred and ref in deferred:
                self._wake_deferred(ref)
            if wanted and (status is _MISSING or status is _TAINTED):
                self._enqueue(ref)


    # -- wants ----------------------------------------------------------------------------------------
    def _add_want(self, want: WantState) -> None:
        if self._index_want(want):
            self._plan_want(want)

    def _index_want(self, want: WantState) -> bool:
        """Count the want's interest in its refs and arm its timers; False if it is terminal or known already."""
        wid = want.want_id
        if want.terminal or wid in self.counts:
            return False
        counts = [0] * len(Cat)
        self.counts[wid] = counts
        if want.priority:
            self.priority[wid] = want.priority
        if want.is_set:
            self._index_set(want, counts, _CAT_IDLE)
            self.to_schedule = True
        else:
            one = (wid,)
            records, category = self.refs, self._category
            added = 0
            for ref in want.refs:  # _index_ref, inlined for its common case: a ref no other want is on
                rec = records.get(ref)
                if rec is None:
                    rec = records[ref] = Ref()
                elif rec.wants:
                    self._index_ref(one, ref, counts)
                    continue
                rec.wants = one
                rec.cat = cat = category(ref, None, rec)
                counts[cat] += 1
                added += 1
            self.n_wanted += added
        for parent in want.parent_want_ids:
            self.children.setdefault(parent, set()).add(wid)
        self.dirty.add(wid)
        self.graph.in_flight(self.n_wanted)
        now = self.env.clock.now()
        if want.ttl is not None:
            self.timers.call_at(want.anchored_at + want.ttl, Due("ttl", wid), now=now)
        if want.sla is not None and not want.sla_missed:
            self.timers.call_at(want.anchored_at + want.sla, Due("sla", wid), now=now)
        return True

    def _index_ref(self, one: tuple[str], ref: str, counts: list[int]) -> None:
        """Index ``ref`` under the want ``one[0]`` (``one``: that want's shared one-want tuple)."""
        rec = self.refs.get(ref)
        if rec is None:
            rec = self.refs[ref] = Ref()
        wants = rec.wants
        if wants:
            if isinstance(wants, dict):
                wants[one[0]] = None
            elif len(wants) < _MANY:
                rec.wants = wants + one
            else:
                rec.wants = dict.fromkeys((*wants, *one))
            cat = rec.cat
            assert cat is not None  # set while wanted
        else:
            rec.wants = one
            rec.cat = cat = self._category(ref, None, rec)
            self.n_wanted += 1
        counts[cat] += 1

    def _activate_refs(self, want: WantState, refs: list[str]) -> None:
        """Index a chunk of a set want's refs (they counted as Idle so far) and queue those that need building.
        Never plans a ref planned already (a set's refs are not new: they may be planned before a restart)."""
        wid = want.want_id
        counts = self.counts[wid]
        one = self._one.get(wid)
        if one is None:
            one = self._one[wid] = (wid,)
        for ref in refs:
            counts[_CAT_IDLE] -= 1
            self._index_ref(one, ref, counts)
            st = self.world.partition(ref)
            if st.status in (_MISSING, _TAINTED) or (st.status in (_FAILED, _UPSTREAM_FAILED)
                                                      and ref not in self.retrying):
                self._enqueue(ref)
            elif st.status is _UPSTREAM_WAITING:
                self._ensure_upstream(st)
        self.dirty.add(wid)
        self.graph.in_flight(self.n_wanted)

    def _plan_want(self, want: WantState, *, new: bool = True) -> None:
        """Queue the want's refs that need building; join or re-want the upstreams of those that wait.

        ``new``: the want was just created (it plans from committed state, see :meth:`_enqueue`); a reconcile
        passes False, so a ref already planned in a run is not planned again.
        """
        parts = self.world.partitions
        for ref in self._indexed_refs(want):
            st = parts.get(ref)  # an evicting table's get reads an evicted state back
            if st is None:  # never seen: Missing (no state made for it)
                self._enqueue(ref, new_want=new)
                continue
            if st.status in (_MISSING, _TAINTED) or (st.status in (_FAILED, _UPSTREAM_FAILED)
                                                      and ref not in self.retrying):
                self._enqueue(ref, new_want=new)
            elif st.status is _UPSTREAM_WAITING:
                self._ensure_upstream(st)
            elif st.status is _LIVE and self.refresh_enabled and is_stale(self.world, ref):
                self._refresh(ref)

    def _drop_want(self, want: WantState) -> None:
        wid = want.want_id
        if self.counts.pop(wid, None) is None:
            return
        self.sent.pop(wid, None)
        self.dirty.discard(wid)
        if want.ttl is not None:  # armed only then (_index_want)
            self.timers.cancel(Due("ttl", wid))
        if want.sla is not None:
            self.timers.cancel(Due("sla", wid))
        for parent in want.parent_want_ids:
            siblings = self.children.get(parent)
            if siblings is not None:
                siblings.discard(wid)
                if not siblings:
                    del self.children[parent]
        runs_to_check: set[str] = set()
        indexed = self._indexed_refs(want)
        self.cursors.pop(wid, None)
        self._one.pop(wid, None)
        self.priority.pop(wid, None)
        refs, broken, refreshing = self.refs, self.broken, self.refreshing
        waited_on, static_missing, static_failed = self.groups.by_ref, self.static.missing, self.static_failed
        static_waited_on = self.static.by_ref
        for ref in indexed:
            rec = refs.get(ref)
            if rec is None or not rec.wants:
                continue
            lst = rec.wants
            if wid in lst:
                if isinstance(lst, dict):
                    del lst[wid]
                else:
                    i = lst.index(wid)
                    lst = rec.wants = lst[:i] + lst[i + 1:]
            if not lst:
                rec.cat = None
                self.n_wanted -= 1
                if broken:
                    broken.pop(ref, None)
                if ref in waited_on or ref in static_waited_on:  # _needed_by's own first test, without its frame
                    needers = self._needed_by(ref)
                    if needers:  # still an upstream of a partition an active want waits for: want it again
                        self._drop_ref(ref, rec)
                        source, waiting = needers[0]
                        self._want_refs([ref], source=source, for_refs=waiting)
                        continue
                if rec.queued:  # _dequeue
                    rec.queued = False
                    self.n_queued -= 1
                if ref in static_missing or ref in static_failed:
                    self._forget_static(ref)
                if ref in refreshing:
                    self._stop_refreshing(ref)
                if rec.runs:
                    runs_to_check.update(rec.runs)
                self._drop_ref(ref, rec)
        for run_id in sorted(runs_to_check):
            run = self.world.runs.get(run_id)
            if run is None or run.terminal:
                continue
            if not any(self.is_wanted(r) for r in run.partitions):
                self.kernel.tell("job_run", run_id, CancelRun(f"no active want needs it any more "
                                                                        f"(want {wid} {want.status})"))
        self.graph.in_flight(self.n_wanted)
        children = self.children.pop(wid, set())
        if want.status in (W.CANCELED, W.EXPIRED):
            for other_id in sorted(children):
                other = self.world.wants.get(other_id)
                if other is None or other.terminal:
                    continue
                parents = [self.world.wants.get(p) for p in other.parent_want_ids]
                if all(p is not None and p.status in (W.CANCELED, W.EXPIRED) for p in parents) and not any(
                        self._needed_by(r) for r in other.refs):
                    self.kernel.tell("want", other_id, EndWant("cancel", f"every parent want ended "
                                                                                   f"({want.status})"))

    def _needed_by(self, ref: str, seen: set[str] | None = None) -> list[tuple[str, list[str]]]:
        """Why ``ref`` is still needed: ``(source, waiting partitions)`` for each DepMiss run or static
        dependency whose waiting partitions are still wanted (directly, or as the upstream of something
        wanted). Dropping a want must never strand a waiting partition (I5)."""
        if ref not in self.groups.by_ref and ref not in self.static.by_ref:
            return []  # nothing waits on it (the common case: a derived want's ref, built)
        seen = set() if seen is None else seen
        seen.add(ref)

        def wanted(member: str) -> bool:
            return self.is_wanted(member) or (member not in seen and bool(self._needed_by(member, seen)))

        out: list[tuple[str, list[str]]] = []
        for rid in sorted(self.groups.waiters(ref)):
            run = self.world.runs.get(rid)
            members = self._group_members(run) if run is not None else []
            if any(wanted(m) for m in members):
                out.append((f"job_run:{rid}", members))
        for r in sorted(self.static.waiters(ref)):
            if wanted(r):
                out.append((f"static_deps:{r}", [r]))
        return out

    def _category(self, ref: str, st: PartitionState | None = None, rec: Ref | None = None) -> Cat:
        if self.broken and ref in self.broken:
            return _CAT_FAILED
        if self.static_failed and ref in self.static_failed:
            return _CAT_UPSTREAM_FAILED
        if st is None:
            st = self.world.partitions.get(ref)  # an evicting table's get reads an evicted state back
            if st is None:
                st = _NEVER
        s = st.status
        if rec is None:
            rec = self.refs.get(ref)
        if s is _LIVE:
            return _CAT_BUILDING if self.refreshing and ref in self.refreshing else _CAT_LIVE
        if s is _BUILDING or (rec is not None and rec.runs) or (self.retrying and ref in self.retrying):
            return _CAT_BUILDING
        if s is _UPSTREAM_WAITING or (self.static.missing and ref in self.static.missing):
            return _CAT_WAITING
        if rec is not None and rec.queued:
            return _CAT_IDLE
        if s is _FAILED and st.final:
            return _CAT_FAILED
        if s is _UPSTREAM_FAILED:
            return _CAT_UPSTREAM_FAILED
        return _CAT_IDLE

    def _recat(self, ref: str, st: PartitionState | None = None, rec: Ref | None = None) -> None:
        """Recount ``ref`` for the wants on it (``st``: its state, ``rec``: its record, if the caller has them)."""
        if rec is None:
            rec = self.refs.get(ref)
            if rec is None:
                return
        if not rec.wants:
            return
        new = self._category(ref, st, rec)
        old = rec.cat
        if new == old:
            return
        rec.cat = new
        counts = self.counts
        dirty = self.dirty
        for wid in rec.wants:
            c = counts[wid]
            if old is not None:
                c[old] -= 1
            c[new] += 1
            dirty.add(wid)

    def _sync_want(self, wid: str) -> None:
        counts = self.counts.get(wid)
        want = self.world.wants.get(wid)
        if counts is None or want is None or want.terminal:
            return
        n = len(want.refs)
        if counts[_CAT_LIVE] == n:
            target = W.SUCCESSFUL
        elif counts[_CAT_FAILED]:
            target = W.FAILED
        elif counts[_CAT_UPSTREAM_FAILED]:
            target = W.UPSTREAM_FAILED
        elif counts[_CAT_WAITING]:
            target = W.UPSTREAM_BUILDING
        elif counts[_CAT_BUILDING]:
            target = W.BUILDING
        else:
            target = W.IDLE
        if target == self.sent.get(wid, want.status):
            return
        refs: tuple[str, ...] = ()
        reason = ""
        if target is W.FAILED:
            refs = self._refs_in(want, _CAT_FAILED)
            reason = "; ".join(f"{r}: {self.broken.get(r) or self.world.partition(r).reason}" for r in refs[:3])
        elif target is W.UPSTREAM_FAILED:
            refs = self._refs_in(want, _CAT_UPSTREAM_FAILED)
            reason = "; ".join(f"{r}: {self.static_failed.get(r) or self.world.partition(r).reason}"
                               for r in refs[:3])
        elif target is W.UPSTREAM_BUILDING:
            refs = self._upstream_of(self._refs_in(want, _CAT_WAITING))
        self.sent[wid] = target
        self.kernel.tell("want", wid, MoveWant(target, reason, refs))

    def _upstream_of(self, waiting: Iterable[str], limit: int = 50) -> tuple[str, ...]:
        """The upstream refs that the waiting refs wait on (not yet Live), the first ``limit`` of them."""
        out: dict[str, None] = {}
        for ref in waiting:
            for up in (*self.world.needs(ref), *sorted(self.static.missing.get(ref, ()))):
                if up not in out and not self._is_live(up):
                    out[up] = None
                    if len(out) >= limit:
                        return tuple(out)
        return tuple(out)

    def _refs_in(self, want: WantState, cat: Cat, limit: int = 50) -> tuple[str, ...]:
        out = []
        refs = self.refs
        for r in self._indexed_refs(want):
            if (rec := refs.get(r)) is not None and rec.cat == cat:
                out.append(r)
                if len(out) >= limit:
                    break
        return tuple(out)

    # -- scheduling -----------------------------------------------------------------------------------
    def _enqueue(self, ref: str, *, new_want: bool = False) -> None:
        """Queue a wanted ref for its job.

        A new want plans from committed state only (semantics rule 1: it joins builds that are *Building*), so
        a ref planned in a run that has not taken its lease yet is planned again and the Partition actor's
        lease decides (the collision policy). Other triggers never plan a ref twice.
        """
        rec = self.refs.get(ref)
        if ((rec is not None and (rec.queued or (rec.runs and not new_want)))
                or ref in self.static.missing or ref in self.retrying):
            return
        try:
            job = self.graph.job_of(ref)
        except NoJobForRef:
            return
        deps = [] if job.deps is None else [d for d in self.graph.static_deps(ref)
                                            if not self._is_live(d)]
        # A tainted partition is rebuilt after the inputs of its tainted build are Live again (upstream first).
        inputs = rebuild_inputs(self.world, ref)  # [] unless the partition is Tainted
        if inputs and deps:
            inputs = [d for d in inputs if d not in deps]
        if deps or inputs:
            self.static.wait(ref, (*deps, *inputs))
            self._recat(ref)
            if deps:
                self._want_refs(deps, source=f"static_deps:{ref}", for_refs=(ref,))
            if inputs:
                self._want_refs(inputs, source=f"rebuild:{ref}", for_refs=(ref,))
            return
        self._push(job.name, ref)
        if rec is None:
            rec = self.refs[ref] = Ref()
        rec.queued = True
        self.n_queued += 1
        self.to_schedule = True

    def _forget_static(self, ref: str) -> None:
        """Nothing wants ``ref`` any more: stop waiting for its static dependencies (a later want starts over)."""
        self.static_failed.pop(ref, None)
        self.static.forget(ref)

    def _dequeue(self, ref: str) -> None:
        rec = self.refs.get(ref)
        if rec is not None and rec.queued:  # the stale deque entry is skipped when planning
            rec.queued = False
            self.n_queued -= 1
            self._drop_ref(ref, rec)

    def _schedule(self) -> None:
        self._activate()
        records, parts = self.refs, self.world.partitions
        for name in self._jobs_in_order():
            job = self.graph[name]
            refs = self._pop_refs(name)
            while self._free_slots(job)[0] > 0:
                batch: list[str] = []
                for ref in refs:
                    rec = records.get(ref)
                    if rec is None or not rec.queued:
                        continue
                    rec.queued = False
                    self.n_queued -= 1
                    st = parts.get(ref)
                    if not rec.wants or (st is not None and st.status not in _PLANNABLE):
                        self._drop_ref(ref, rec)
                        continue
                    batch.append(ref)
                    if len(batch) >= job.batch:
                        break
                if not batch:
                    break
                self._plan(job.name, tuple(batch), attempt=1, retry_of=None,
                                 max_attempts=job.retry.max_attempts, policy=self._policy_of(job))
        if self.refresh_queues:
            self._schedule_refreshes()

    def _refresh(self, ref: str) -> None:
        """A wanted Live partition of a ``rebuild_stale`` job is stale: rebuild it (a refresh run leases it Live);
        its wants count it as building meanwhile."""
        if not self.is_wanted(ref) or ref in self.refreshing or self.is_planned(ref):
            return
        try:
            job = self.graph.job_of(ref)
        except NoJobForRef:
            return
        self.refreshing.add(ref)
        self._leave(ref, True)
        self.refresh_queues.setdefault(job.name, deque()).append(ref)
        self._recat(ref)
        self.to_schedule = True

    def _leave(self, ref: str, on: bool) -> None:
        """Mark ``ref`` as leaving Live (a refresh will lease it) for the want actors, or unmark it."""
        leaving = self.env.leaving_live
        if on:
            leaving[ref] += 1
        elif leaving[ref] > 0:
            leaving[ref] -= 1
            if not leaving[ref]:
                del leaving[ref]

    def _stop_refreshing(self, ref: str) -> None:
        self.refreshing.discard(ref)
        self._leave(ref, False)
        self._recat(ref)
        self._decide_again((ref,))

    def _decide_again(self, refs: Iterable[str]) -> None:
        """The wants on ``refs`` were maybe held back from success by their want actors (a partition was leaving
        Live, and stayed): decide their status again."""
        for ref in refs:
            for wid in self.wants_on(ref):
                if self.sent.get(wid) is W.SUCCESSFUL:
                    del self.sent[wid]
                    self.dirty.add(wid)

    def _schedule_refreshes(self) -> None:
        for name in sorted(self.refresh_queues):
            q = self.refresh_queues[name]
            job = self.graph[name]
            while q and self._free_slots(job)[0] > 0:
                batch: list[str] = []
                while q and len(batch) < job.batch:
                    ref = q.popleft()
                    if self.is_wanted(ref) and ref in self.refreshing and is_stale(self.world, ref):
                        batch.append(ref)
                    elif ref in self.refreshing:  # no longer wanted, or fresh (rebuilt meanwhile)
                        self._stop_refreshing(ref)
                if batch:
                    self._plan(job.name, tuple(batch), attempt=1, retry_of=None,
                               max_attempts=job.retry.max_attempts, policy=self._policy_of(job), refresh=True)
            if not q:
                del self.refresh_queues[name]

    def _policy_of(self, job: Job) -> str:
        return job.collision_policy or self.graph.default_collision_policy or self.policy

    def _plan(self, job: str, refs: tuple[str, ...], *, attempt: int, retry_of: str | None,
              max_attempts: int, policy: str, refresh: bool = False) -> str:
        run_id = self.ids.next_run()
        wants = sorted({w for r in refs for w in self.wants_on(r)})
        self.inflight.setdefault(job, set()).add(run_id)
        self.open_runs.add(run_id)
        one = (run_id,)
        for r in refs:
            self._recat(r, None, self._add_run(r, one))
        reason = f"serves {', '.join(wants[:5])}{' …' if len(wants) > 5 else ''}"
        if retry_of:
            reason = f"retry {attempt}/{max_attempts} of {retry_of}; " + reason
        if refresh:
            reason = "refreshes stale partitions; " + reason
        queued = JobRunQueued(job=job, partitions=refs, wants=tuple(wants), attempt=attempt,
                              max_attempts=max_attempts, retry_of=retry_of, policy=policy, reason=reason,
                              refresh=refresh)
        self.pending.runs[run_id] = queued
        self.kernel.tell("job_run", run_id, PlanRun(queued))
        return run_id

    # -- runs -----------------------------------------------------------------------------------------
    def _on_run_ended(self, run: JobRunState) -> None:
        rid = run.job_run_id
        self.pending.runs.pop(rid, None)
        if run.status is JobRunStatus.QUEUED:  # deferred: wait until the refused partitions move
            for ref, _holder in run.deferred_on:
                self.deferred.setdefault(ref, set()).add(rid)
            for ref, _holder in run.deferred_on:
                if self.world.partition(ref).status is not _BUILDING:
                    self._wake_deferred(ref)
            return
        # Idempotent: a run may be reported twice (its actor recovered after a crash), or after a reconcile that
        # already dropped it from the indices; the bookkeeping below finds nothing to do then, and each effect
        # checks the committed state before acting.
        self.inflight.get(run.job, set()).discard(rid)
        self.open_runs.discard(rid)
        records, parts = self.refs, self.world.partitions
        for ref in run.planned:
            rec = records.get(ref)
            if rec is not None and rid in rec.runs:
                self._remove_run(ref, rec, rid)
                if rec.wants:
                    st = parts.get(ref)
                    self._recat(ref, st, rec)
                    if st is None or st.status is _MISSING or st.status is _TAINTED:
                        self._enqueue(ref)
        for ref, _ in run.deferred_on:
            self.deferred.get(ref, set()).discard(rid)
        if run.refresh:
            for ref in run.planned:
                if ref in self.refreshing:
                    self._stop_refreshing(ref)
        for taint_id in late_taints(self.world, run):  # settled Live although an input was tainted meanwhile
            self._tell_soon("taint", taint_id, ApplyTaint())
        self.to_schedule = True
        if run.status is JobRunStatus.DEP_MISS:
            self._on_dep_miss(run)
        elif run.will_retry and run.status in (JobRunStatus.FAILED, JobRunStatus.SUCCEEDED):
            # A failed run, or a batch that reported some partitions failed: retry what failed, after backoff.
            # The partitions it failed and nothing has leased since (a second report finds them leased).
            waiting = [ref for ref in run.partitions if (p := self.world.partition(ref)).status is _FAILED
                       and not p.final]
            if waiting:
                for ref in waiting:
                    self.retrying[ref] = rid
                    self._recat(ref)
                delay = self.graph[run.job].retry.delay(run.attempt)
                self.timers.call_at(run.ended_at + delay if run.ended_at else self.env.clock.now() + delay,
                                    Due("retry", rid), now=self.env.clock.now())
        elif run.status is JobRunStatus.FAILED:
            for ref in run.partitions:
                self._recat(ref)

    def _on_dep_miss(self, run: JobRunState) -> None:
        rid = run.job_run_id
        bad: list[tuple[str, str]] = []
        for m in run.missing:
            try:
                self.graph.job_of(m)  # validates the ref first: InvalidRef, else NoJobForRef
            except (InvalidRef, NoJobForRef) as e:
                bad.append((m, str(e)))
        members = self._group_members(run)
        if bad:
            for p in members:
                self._tell_partition(p, FailUpstream(f"missing dependency cannot be built: {bad[0][1]}",
                                                           tuple(b[0] for b in bad)))
            return
        cycle = self._find_cycle(set(members), run.missing)
        if cycle:
            text = " -> ".join(cycle)
            for member in dict.fromkeys(cycle):
                if self.world.partition(member).status is _UPSTREAM_WAITING:
                    self._tell_partition(member, FailUpstream(f"dependency cycle: {text}", tuple(cycle)))
            return
        self._track_group(run, members)
        self._want_refs(run.missing, source=f"job_run:{rid}", parents=run.wants)

    def _group_members(self, run: JobRunState) -> list[str]:
        part, rid = self.world.partition, run.job_run_id
        return [p for p in run.partitions if (st := part(p)).status is _UPSTREAM_WAITING and st.waiting_run == rid]

    def _track_group(self, run: JobRunState, members: list[str]) -> None:
        """Wait on the run's missing refs; wake its partitions at once if they are all Live already."""
        rid = run.job_run_id
        if rid in self.groups or not members:
            return
        is_live = self._is_live
        left = {m for m in run.missing if not is_live(m)}
        if not left:
            for p in members:
                self._tell_partition(p, _READY)
            return
        self.groups.wait(rid, left)

    def _find_cycle(self, members: set[str], needs: Iterable[str]) -> list[str] | None:
        """A path member -> ... -> member through UpstreamWaiting partitions' needs, if there is one."""
        if not members:
            return None
        needs_of = self.world.needs
        needs = tuple(needs)
        if not any(m in members or needs_of(m) for m in needs):  # the common case: no missing ref waits itself
            return None
        start = min(members)
        stack: list[tuple[str, list[str]]] = [(m, [start, m]) for m in needs]
        seen: set[str] = set()
        while stack:
            ref, path = stack.pop()
            if ref in members:
                return path if ref == start else [ref, *path[1:]]
            if ref in seen:
                continue
            seen.add(ref)
            for nxt in needs_of(ref):
                stack.append((nxt, [*path, nxt]))
        return None

    def _ensure_upstream(self, st: PartitionState) -> None:
        """A wanted partition waits on upstream refs: make sure its group is tracked and its needs wanted."""
        run = self.world.runs.get(st.waiting_run or "")
        if run is None:
            return
        self._track_group(run, self._group_members(run))
        self._want_refs(run.missing, source=f"job_run:{run.job_run_id}", for_refs=(st.ref,))

    def _want_refs(self, refs: Iterable[str], *, source: str, parents: Iterable[str] = (),
                   for_refs: Iterable[str] = ()) -> str | None:
        """Create one derived want for the refs that are neither Live nor wanted yet."""
        creating, records, is_live = self.pending.creating, self.refs, self._is_live
        need = [r for r in dict.fromkeys(refs)
                if ((rec := records.get(r)) is None or not rec.wants) and r not in creating and not is_live(r)]
        if not need:
            return None
        parent_ids = [p for p in parents if p in self.counts]
        if not parent_ids:
            parent_ids = sorted({w for r in for_refs for w in self.wants_on(r)})
        root = None
        if parent_ids:
            first = self.world.wants.get(parent_ids[0])
            root = first.root_want_id if first is not None else None
        want_id = self.ids.next_want()
        for r in need:
            creating[r] = want_id
        ev = WantCreated(refs=tuple(need), source=source, parent_want_ids=tuple(parent_ids), root_want_id=root,
                         comment=f"derived: needed by {', '.join(list(for_refs)[:3]) or source}")
        self.pending.wants[want_id] = ev
        self._tell_soon("want", want_id, CreateWant(ev))
        return want_id

    def _wake_waiters(self, ref: str) -> None:
        """``ref`` is Live: wake the partitions of every DepMiss run that now has all its missing refs."""
        runs, tell = self.world.runs, self.kernel.tell
        for rid in self.groups.arrived(ref):
            for p in self._group_members(runs[rid]):
                tell("partition", p, _READY)

    def _fail_waiters(self, ref: str, st: PartitionState) -> None:
        """``ref`` failed: the partitions of every DepMiss run that waited on it fail upstream."""
        rids = self.groups.failed(ref)
        if not rids:
            return
        why = f"upstream {ref} {st.status}: {st.reason}"
        for rid in rids:
            for p in self._group_members(self.world.runs[rid]):
                self._tell_partition(p, FailUpstream(why, (ref,)))

    def _wake_static(self, ref: str) -> None:
        """``ref`` is Live: recount, and plan if wanted, every ref whose static deps are now all Live."""
        is_wanted = self.is_wanted
        for r in self.static.arrived(ref):
            self._recat(r)
            if is_wanted(ref) or is_wanted(r):
                self._enqueue(r)

    def _fail_static(self, ref: str, st: PartitionState) -> None:
        """``ref`` failed: every ref that waited on it as a static dependency is upstream-failed."""
        for r in self.static.failed(ref):
            self.static_failed[r] = f"static dependency {ref} {st.status}: {st.reason}"
            self._recat(r)

    def _wake_deferred(self, ref: str) -> None:
        for rid in sorted(self.deferred.pop(ref, ())):
            self.kernel.tell("job_run", rid, RetryLeases())

    def _tell_soon(self, kind: str, key: str, msg: Any) -> None:
        self.kernel.tell(kind, key, msg)

    def _tell_partition(self, ref: str, msg: Any) -> None:
        self.kernel.tell("partition", ref, msg)

    # -- timers ---------------------------------------------------------------------------------------
    def _on_due(self, due: Due) -> None:
        if due.what == "ttl":
            want = self.world.wants.get(due.key)
            if want is not None and not want.terminal:
                self.kernel.tell("want", due.key, EndWant("expire", f"ttl of {want.ttl} s passed"))
        elif due.what == "sla":
            want = self.world.wants.get(due.key)
            if want is not None and not want.terminal and want.sla is not None:
                self.kernel.tell("want", due.key, MarkSlaMissed(want.sla))
        elif due.what == "retry":
            self._retry(due.key)

    def _retry(self, run_id: str) -> None:
        run = self.world.runs.get(run_id)
        if run is None:
            return
        refs = []
        for ref in run.partitions:
            if self.retrying.get(ref) == run_id:
                del self.retrying[ref]
                st = self.world.partition(ref)
                if st.status is _FAILED and self.is_wanted(ref) and not self.is_planned(ref):
                    refs.append(ref)
                self._recat(ref)
        if not refs or self.pending.draining:
            for ref in run.partitions:
                if self.is_wanted(ref) and self.world.partition(ref).status is _FAILED:
                    self._enqueue(ref)
            return
        job = self.graph[run.job]
        self._plan(run.job, tuple(refs), attempt=run.attempt + 1, retry_of=run_id,
                         max_attempts=run.max_attempts, policy=self._policy_of(job))

    # -- recovery -------------------------------------------------------------------------------------
    def restarted(self, ctx: Ctx, failed: Any, error: Exception) -> None:
        """The supervisor crashed: its indices may be half-updated. Rebuild them all from the World.

        A crash report it was handling is not lost with it: the intent the crashed actor dropped is known only
        from the report (pending intents are not in the World), so no reconcile would find it again (a want then
        waited for ever on a run that was never created: found by tests/test_fault_property.py)."""
        if isinstance(failed, ActorCrashed):
            self._forget_lost_intent(failed)
        self._reconcile()
        self._flush()

    def _on_crashed(self, msg: ActorCrashed) -> None:
        self._forget_lost_intent(msg)
        self._reconcile()

    def _forget_lost_intent(self, msg: ActorCrashed) -> None:
        """The crashed actor may have dropped what the supervisor asked of it and has not seen committed."""
        world = self.world
        if msg.kind == "want" and msg.key in self.pending.wants and msg.key not in world.wants:
            self.pending.forget_want(msg.key)  # its CreateWant was lost with the crash: want the refs again
        elif msg.kind == "job_run" and msg.key in self.pending.runs and msg.key not in world.runs:
            del self.pending.runs[msg.key]  # its PlanRun was lost: plan the refs again

    def _recover(self, mailbox_lost: bool) -> None:
        """Reconcile; after a give-up on the supervisor (``mailbox_lost``) also re-derive what its dropped mailbox
        held, from state instead of messages.

        The mailbox held crash reports (each may say an intent was lost, see :meth:`restarted`) and give-ups, and
        tells to the supervisor while it was stopped were dropped too (found by tests/test_fault_property.py: a
        want left Building for ever, its run's PlanRun lost while the supervisor was stopped). So a taint still
        stopped is revived first (its GaveUp is the only thing that revives it, and the reconcile tells it to
        re-derive its cascade); the reconcile gives up on the wants, runs and partitions still stopped, reviving
        them; then every pending intent is asked for again (``PlanRun`` and ``CreateWant`` are idempotent: an
        actor that already has its state ignores the second)."""
        kernel = self.kernel
        if mailbox_lost:
            for key in sorted(kernel.stopped("taint")):
                kernel.revive("taint", key)  # as _end_given_up does for a taint (it has no failed state)
        self._reconcile()
        if mailbox_lost:
            world, pending = self.world, self.pending
            for rid, queued in list(pending.runs.items()):
                if rid not in world.runs:
                    kernel.tell("job_run", rid, PlanRun(queued))
            for wid, ev in list(pending.wants.items()):
                if wid not in world.wants:
                    kernel.tell("want", wid, CreateWant(ev))

    def _on_gave_up(self, msg: GaveUp) -> None:
        self._end_given_up(msg)
        self._reconcile()

    def _end_given_up(self, msg: GaveUp) -> None:
        """End what depends on an actor the system stopped: nothing else would ever move it (I5)."""
        system = self.kernel
        if msg.kind == "job_run":
            run = self.world.runs.get(msg.key)
            if run is not None and not run.terminal:
                for ref in run.planned:
                    if self.is_wanted(ref):
                        self.broken[ref] = msg.reason
                        self._recat(ref)
            system.revive("job_run", msg.key)
            system.tell("job_run", msg.key, Abandon(msg.reason))
        elif msg.kind == "partition":
            if self.is_wanted(msg.key):
                self.broken[msg.key] = msg.reason
                self._recat(msg.key)
            system.revive("partition", msg.key)  # a later want gets a fresh actor
        elif msg.kind == "taint":
            # A taint has no terminal failure: its actor crashes when a partition it taints fails to commit
            # (tests/test_fault_property.py found a cascade left half-applied, its actor stopped for good, I7).
            # Revive it: the reconcile that follows tells it to re-derive its work. A lasting fault does not loop:
            # the runtime passes a repeated give-up on only after its backoff (1 s ... 60 s).
            system.revive("taint", msg.key)
        elif msg.kind == "want":
            want = self.world.wants.get(msg.key)
            system.revive("want", msg.key)
            if want is not None and not want.terminal:
                self.sent[msg.key] = W.FAILED
                system.tell("want", msg.key, MoveWant(W.FAILED, msg.reason, tuple(want.refs[:50])))

    def _reconcile(self) -> None:
        """Rebuild every index from the World and the pending intents, then re-derive what must happen next:
        refs to plan, upstreams to want, dependency groups to wait on, deferred runs to wake, retries and want
        timers to arm, runs that ended without settling to settle. Idempotent; O(World)."""
        world = self.world
        pending = self.pending
        now = self.env.clock.now()
        broken = self.broken
        self._reset()
        self.broken = {ref: why for ref, why in broken.items()}
        self.timers.cancel_all()
        for wid in [w for w in pending.wants if w in world.wants]:
            pending.forget_want(wid)
        for rid in [r for r in pending.runs if r in world.runs]:
            del pending.runs[rid]
        retried = {r.retry_of for r in world.runs.values() if r.retry_of}
        retried.update(q.retry_of for q in pending.runs.values() if q.retry_of)
        for run in sorted(world.runs.values(), key=lambda r: r.job_run_id):
            rid = run.job_run_id
            if not run.terminal:
                self.inflight.setdefault(run.job, set()).add(rid)
                self.open_runs.add(rid)
                one = (rid,)
                for ref in run.planned:
                    self._add_run(ref, one)
                if run.refresh:
                    self.refreshing.update(run.planned)
                for ref, _holder in run.deferred_on:
                    self.deferred.setdefault(ref, set()).add(rid)
                continue
            if run.will_retry and run.status in (JobRunStatus.FAILED, JobRunStatus.SUCCEEDED) and rid not in retried:
                waiting = [ref for ref in run.partitions if world.partition(ref).status is _FAILED
                           and not world.partition(ref).final]
                if waiting:
                    for ref in waiting:
                        self.retrying[ref] = rid
                    delay = self.graph[run.job].retry.delay(run.attempt)
                    self.timers.call_at((run.ended_at or now) + delay, Due("retry", rid), now=now)
        for rid, queued in pending.runs.items():
            self.inflight.setdefault(queued.job, set()).add(rid)
            self.open_runs.add(rid)
            one = (rid,)
            for ref in queued.partitions:
                self._add_run(ref, one)
        # Every active want is indexed before any is planned: a ref that a derived want (a later id) already
        # wants must not be wanted again for its parent.
        active = sorted(world.active_wants(), key=lambda w: w.want_id)
        for want in active:
            self._index_want(want)
        for want in active:
            self._plan_want(want, new=False)
        waiting_runs = sorted({p.waiting_run for p in world.partitions.values()
                               if p.status is _UPSTREAM_WAITING and p.waiting_run})
        for rid in waiting_runs:
            dep_miss = world.runs.get(rid)
            if dep_miss is not None:
                self._track_group(dep_miss, self._group_members(dep_miss))
        for ref in sorted(self.deferred):
            if world.partition(ref).status is not _BUILDING:
                self._wake_deferred(ref)
        stranded = sorted({p.lease for p in world.partitions.values() if p.status is _BUILDING and p.lease
                           and (world.runs.get(p.lease) is None or world.runs[p.lease].terminal)})
        for rid in stranded:  # ended without settling its partitions (a crash in between): settle them now
            if rid in world.runs:
                self._tell_soon("job_run", rid, Reconcile())
        for taint in sorted(world.taints.values(), key=lambda t: t.taint_id):  # its work, re-derived by its actor
            if taint.active or taint.restored is None:
                self._tell_soon("taint", taint.taint_id, ReconcileTaint())
        for kind in ("want", "job_run", "partition"):  # stopped while its GaveUp could not reach us
            for key, why in sorted(self.kernel.stopped(kind).items()):
                self._end_given_up(GaveUp(kind, key, f"wantbuild gave up on {kind} {key}: {why}"))
        self.to_schedule = True
