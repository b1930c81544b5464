"""The Want, Partition and JobRun actors: each owns one entity and changes it only by committed events.

Each is a :class:`~actors._kernel.Behavior` of the actor kernel: plain handlers over the actor's cell
(``ctx``), one state machine and event stream per entity. Messages are small frozen structs, named for what
they ask. The Partition actor is the authority over its build lease; the JobRun actor takes leases (applying
the collision policy), starts the job through the injected :class:`Execution`, records the outcome, then
settles its partitions and tells the supervisor. Its multi-step flows are steps chained by ``ctx.then`` and
``ctx.ask_many``; their progress lives in the cell (``ctx.scratch``) and is re-derived by
:meth:`JobRunActor.reconcile` after a crash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Final, Literal, Protocol, TypeAlias, get_args

import msgspec

from eventlog import Event, get_logger

from ._actor import ActorStopped
from ._jobrun import (
    JobRunAttached,
    JobRunCanceled,
    JobRunDeferred,
    JobRunDepMiss,
    JobRunFailed,
    JobRunLost,
    JobRunQueued,
    JobRunResultIgnored,
    JobRunStarted,
    JobRunState,
    JobRunStatus,
    JobRunSucceeded,
)
from ._kernel import Behavior, Ctx, replies_ok
from ._lineage import TaintedInput, tainted_input
from ._partition import (
    LEASABLE,
    PartitionBuilding,
    PartitionFailed,
    PartitionLive,
    PartitionMissing,
    PartitionRestored,
    PartitionState,
    PartitionStatus,
    PartitionTainted,
    PartitionUpstreamFailed,
    PartitionUpstreamWaiting,
)
from ._want import (
    STATUS_EVENT,
    WANT,
    WantCanceled,
    WantCreated,
    WantExpired,
    WantFailed,
    WantSlaMissed,
    WantState,
    WantStatus,
    WantUpstreamBuilding,
    WantUpstreamFailed,
)
from ._world import World

log = get_logger("wantbuild.actors")

SUPERVISOR = ("supervisor", "supervisor")
"""The (kind, key) of the supervisor actor, the recipient of :class:`RunEnded`."""

CollisionPolicy: TypeAlias = Literal["shrink", "defer", "all_or_nothing"]
"""What a JobRun does with partitions another run holds the lease on (docs/concepts.md, "Collisions")."""
POLICIES: Final[tuple[CollisionPolicy, ...]] = get_args(CollisionPolicy)


# --- messages -----------------------------------------------------------------------------------------
class GetState(msgspec.Struct, frozen=True):
    """Reply with the entity's committed state (None if it has none)."""


Completion = tuple[int, dict[str, Any]]
"""An inbox command completed by the message's transition: ``(command id, result)`` (see ``Ctx.persist``)."""


class CreateWant(msgspec.Struct, frozen=True):
    event: WantCreated
    command: Completion | None = None


class MoveWant(msgspec.Struct, frozen=True):
    """Walk the want to ``target`` through legal transitions (no-op if there, or terminal)."""

    target: WantStatus
    reason: str = ""
    refs: tuple[str, ...] = ()


class EndWant(msgspec.Struct, frozen=True):
    """Cancel or expire a non-terminal want (no-op otherwise)."""

    how: Literal["cancel", "expire"]
    reason: str = ""
    command: Completion | None = None


class MarkSlaMissed(msgspec.Struct, frozen=True):
    sla: float


class RequestLease(msgspec.Struct, frozen=True):
    job_run_id: str
    refresh: bool = False
    """The run refreshes stale partitions: a Live partition grants its lease too."""


class LeaseReply(msgspec.Struct, frozen=True):
    granted: bool
    ref: str
    status: PartitionStatus
    holder: str | None = None
    generation: int = 0


class ReleaseLease(msgspec.Struct, frozen=True):
    job_run_id: str
    reason: str


class SettleBuild(msgspec.Struct, frozen=True):
    """A run's outcome for one partition it holds: live, failed, dep_miss, missing (canceled/lost), or tainted
    (built, from a generation tainted while the run ran: ``taint`` says which taint, depth and input)."""

    job_run_id: str
    outcome: Literal["live", "failed", "dep_miss", "missing", "tainted"]
    reason: str = ""
    final: bool = True
    taint: TaintedInput | None = None


class UpstreamReady(msgspec.Struct, frozen=True):
    """Every upstream ref this partition waits on is Live: schedulable again."""


class FailUpstream(msgspec.Struct, frozen=True):
    reason: str
    upstream: tuple[str, ...] = ()


class Taint(msgspec.Struct, frozen=True):
    """Mark a Live partition Tainted. From a Taint entity: ``taint_id``, the ``depth`` below what it named, the
    input it came through (``via``), and the ``generation`` meant (a partition rebuilt since is left alone)."""

    reason: str
    taint_id: str | None = None
    depth: int = 0
    via: str | None = None
    generation: int | None = None


class Restore(msgspec.Struct, frozen=True):
    """A Tainted partition whose taint was canceled, not rebuilt since (still ``generation``): Live again."""

    taint_id: str
    generation: int
    reason: str = ""


class PlanRun(msgspec.Struct, frozen=True):
    """Create the run (Queued), take its leases, start it."""

    queued: JobRunQueued


class RetryLeases(msgspec.Struct, frozen=True):
    """A deferred run's blockers moved: try the leases again."""


class CancelRun(msgspec.Struct, frozen=True):
    reason: str


class MarkLost(msgspec.Struct, frozen=True):
    reason: str = "the runtime stopped while this run was in flight"


class Finished(msgspec.Struct, frozen=True):
    """From the execution: the job ended with ``outcome``. A hint: the execution keeps the outcome until the
    run's terminal event is committed (``Execution.release``), so a crash while recording it loses nothing."""

    outcome: Outcome


class Attached(msgspec.Struct, frozen=True):
    """From the execution: what it started for the run (a process, a remote task), to record for fencing."""

    executor: str
    handle: dict[str, str | int | float]


class Reconcile(msgspec.Struct, frozen=True):
    """To a JobRun actor: do what its committed state says is next (see :meth:`JobRunActor.reconcile`)."""


class Abandon(msgspec.Struct, frozen=True):
    """The runtime gave up on this run (its actor kept crashing): end it with ``reason``, by the shortest path."""

    reason: str


class RunEnded(msgspec.Struct, frozen=True):
    """To the supervisor: a run reached a terminal status (or was deferred) and its partitions are settled."""

    run: JobRunState


class Outcome(Protocol):
    """What an execution reports (``supervisor.RunOutcome`` satisfies it)."""

    @property
    def status(self) -> str: ...  # "succeeded" | "failed" | "dep_miss" | "canceled" | "lost"
    @property
    def reason(self) -> str: ...
    @property
    def missing(self) -> tuple[str, ...]: ...
    @property
    def exit_code(self) -> int | None: ...

    # Optional (read with getattr): ``read`` (ref -> generation), ``into`` (input -> the partitions it fed),
    # ``failed`` (ref -> reason: a succeeded batch's partitions that could not be built), ``retry_delay``.


def _lineage(outcome: Outcome) -> dict[str, Any]:
    """The lineage fields of a run's terminal event, from what its execution reported."""
    fields: dict[str, Any] = {}
    read = getattr(outcome, "read", None)
    if read:
        fields["read"] = dict(read)
        into = getattr(outcome, "into", None)
        if into:
            fields["into"] = {k: tuple(v) for k, v in into.items()}
    return fields


MESSAGES: Final[dict[str, tuple[str, ...]]] = {
    "want": ("CreateWant", "MoveWant", "EndWant", "MarkSlaMissed", "GetState"),
    "partition": ("RequestLease", "ReleaseLease", "SettleBuild", "UpstreamReady", "FailUpstream", "Taint",
                  "Restore", "GetState"),
    "job_run": ("PlanRun", "RetryLeases", "Finished", "Attached", "CancelRun", "MarkLost", "Abandon", "Reconcile",
                "GetState"),
    "taint": ("CreateTaint", "CancelTaint", "ApplyTaint", "RestoreTaints", "ReconcileTaint", "GetState"),
}
"""The messages each entity actor kind handles, by type name (for fault drills naming one)."""

RUNNING: Final = "running"
"""What :meth:`Execution.poll` returns for a run still executing."""


class Execution(Protocol):
    """Starts and cancels job executions; tells ``Finished(outcome)`` to the run's actor when one ends.

    The actor treats ``Finished`` as a hint and :meth:`poll` as the truth: after a crash it asks the execution
    what became of its run (see :meth:`JobRunActor.reconcile`).

    ``placement(run)`` says, before the run is started, where it will run and under what handle
    (``("dask", {"key": ..., "scheduler": ...})``, or None for the runtime's own processes); it is recorded in
    ``JobRunStarted`` (write-ahead), so that a restarted runtime can find and fence what it started.
    """

    def log_paths(self, run: JobRunState) -> tuple[str | None, str | None]: ...

    def placement(self, run: JobRunState) -> tuple[str, dict[str, Any]] | None: ...

    def start(self, run: JobRunState) -> None: ...

    def cancel(self, job_run_id: str, reason: str) -> bool: ...

    def poll(self, job_run_id: str) -> Outcome | Literal["running"] | None:
        """``"running"`` while the run executes here, its outcome once it ended (until :meth:`release`), ``None``
        if this execution does not know the run (never started here, or released)."""
        ...

    def release(self, job_run_id: str) -> None:
        """The run's terminal event is committed: forget its outcome."""
        ...


# --- Want ---------------------------------------------------------------------------------------------
class WantActor(Behavior):
    """A want: created once (idempotent), walked to the status its partitions imply, ended by cancel or TTL.

    ``leaving_live`` (``EntityEnv.leaving_live``): partitions about to leave Live; a want does not become
    Successful on them meanwhile."""

    def __init__(self, world: World, leaving_live: Counter[str]) -> None:
        self.world = world
        self.leaving_live = leaving_live

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        st: WantState | None = ctx.state
        if isinstance(msg, MoveWant):
            return self._move(ctx, msg)
        if isinstance(msg, CreateWant):
            if st is not None:  # idempotent re-delivery (command inbox)
                return st
            return ctx.persist(msg.event, msg.command)
        if isinstance(msg, EndWant):
            if st is None or st.terminal:
                return st
            ev: Event = WantCanceled(reason=msg.reason) if msg.how == "cancel" else WantExpired(reason=msg.reason)
            return ctx.persist(ev, msg.command)
        if isinstance(msg, MarkSlaMissed):
            if st is None or st.terminal or st.sla_missed:
                return st
            return ctx.persist(WantSlaMissed(sla=msg.sla))
        if isinstance(msg, GetState):
            return st
        raise TypeError(f"want {ctx.key}: unexpected message {msg!r}")

    def _move(self, ctx: Ctx, msg: MoveWant) -> WantState | None:
        st: WantState | None = ctx.state
        if st is None or st.terminal or st.status == msg.target:
            return st
        for _, status in WANT.path(st.status, msg.target):
            cls = STATUS_EVENT[status]
            ev: Event
            if cls is WantUpstreamBuilding:
                ev = WantUpstreamBuilding(waiting_on=msg.refs, reason=msg.reason)
            elif cls is WantFailed or cls is WantUpstreamFailed:
                ev = cls(failed_refs=msg.refs, reason=msg.reason)
            elif status == msg.target:
                ev = cls(reason=msg.reason) if "reason" in cls.__struct_fields__ else cls()
            else:
                ev = cls(reason=f"on the way to {msg.target}") if "reason" in cls.__struct_fields__ else cls()
            if status is WantStatus.SUCCESSFUL and not self._all_live(st):
                # A partition left Live (or is leaving it: a taint's wave, a refresh) since the supervisor decided:
                # no success. The check and the append below run in one step of the loop, so whichever of this
                # event and the partition's commits first, the log never shows a Successful want on a partition
                # that is not Live. The supervisor decides again when the partition's change commits (or, if the
                # partition stayed Live, when it is told the partition is no longer leaving).
                return st
            st = ctx.persist(ev)
        return st

    def _all_live(self, st: WantState) -> bool:
        is_live = self.world.is_live  # an evicted partition is Live without being read back
        leaving = self.leaving_live
        return all(is_live(r) and not leaving[r] for r in st.refs) if leaving else all(is_live(r) for r in st.refs)


# --- Partition ----------------------------------------------------------------------------------------
# Bound once: an enum member read through its class costs a metaclass lookup (~85 ns on Python 3.11), and these
# are read for every partition message.
_P_BUILDING: Final = PartitionStatus.BUILDING
_P_LIVE: Final = PartitionStatus.LIVE
_P_UPSTREAM_WAITING: Final = PartitionStatus.UPSTREAM_WAITING


class PartitionActor(Behavior):
    """A partition: the authority over its build lease; settled by the run that holds it."""

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        key = ctx.key
        state: PartitionState | None = ctx.state
        t = type(msg)
        if state is None and t is RequestLease:  # never mentioned: Missing at generation 0, so leasable
            st = ctx.persist(PartitionBuilding(job_run_id=msg.job_run_id))
            return LeaseReply(True, key, st.status, msg.job_run_id, st.generation)
        cur = state if state is not None else PartitionState(ref=key)
        if t is RequestLease:
            run_id = msg.job_run_id
            status = cur.status
            if status is _P_BUILDING and cur.lease == run_id:
                return LeaseReply(True, key, status, cur.lease, cur.generation)
            if status in LEASABLE or (msg.refresh and status is _P_LIVE):
                st = ctx.persist(PartitionBuilding(job_run_id=run_id))
                return LeaseReply(True, key, st.status, run_id, st.generation)
            return LeaseReply(False, key, status, cur.lease, cur.generation)
        if t is SettleBuild:
            if cur.status is not _P_BUILDING or cur.lease != msg.job_run_id:
                log.warning("stale settle ignored", ref=key, run=msg.job_run_id, status=str(cur.status),
                            lease=cur.lease)
                return cur
            ev: Event
            if msg.outcome == "live":
                ev = PartitionLive(job_run_id=msg.job_run_id)
            elif msg.outcome == "failed":
                ev = PartitionFailed(job_run_id=msg.job_run_id, reason=msg.reason, final=msg.final)
            elif msg.outcome == "dep_miss":
                ev = PartitionUpstreamWaiting(job_run_id=msg.job_run_id)
            elif msg.outcome == "tainted" and msg.taint is not None:
                t = msg.taint
                ev = PartitionTainted(reason=t.reason, taint_id=t.taint_id, depth=t.depth, via=t.via,
                                      job_run_id=msg.job_run_id)
            else:
                ev = PartitionMissing(reason=msg.reason, job_run_id=msg.job_run_id)
            return ctx.persist(ev)
        if t is ReleaseLease:
            if cur.status is _P_BUILDING and cur.lease == msg.job_run_id:
                return ctx.persist(PartitionMissing(reason=msg.reason, job_run_id=msg.job_run_id))
            return cur
        if t is UpstreamReady:
            if cur.status is _P_UPSTREAM_WAITING:
                return ctx.persist(PartitionMissing(reason="upstream partitions are live"))
            return cur
        if t is FailUpstream:
            if cur.status is PartitionStatus.UPSTREAM_WAITING:
                return ctx.persist(PartitionUpstreamFailed(reason=msg.reason, upstream=msg.upstream))
            return cur
        if t is Taint:
            if cur.status is PartitionStatus.LIVE and msg.generation in (None, cur.generation):
                return ctx.persist(PartitionTainted(reason=msg.reason, taint_id=msg.taint_id, depth=msg.depth,
                                                    via=msg.via))
            return cur  # not Live (any more), or rebuilt since: a no-op (the caller sees the state)
        if t is Restore:
            if (cur.status is PartitionStatus.TAINTED and cur.tainted_by == msg.taint_id
                    and cur.generation == msg.generation):
                return ctx.persist(PartitionRestored(taint_id=msg.taint_id, reason=msg.reason))
            return cur
        if t is GetState:
            return state
        raise TypeError(f"partition {key}: unexpected message {msg!r}")


# --- JobRun -------------------------------------------------------------------------------------------
class _Leasing:
    """A Queued run's lease collection in progress (in its cell: transient, re-derived after a crash)."""

    __slots__ = ("granted", "i", "refs", "refused")

    def __init__(self, refs: list[str]) -> None:
        self.refs = refs
        self.i = 0
        self.granted: list[LeaseReply] = []
        self.refused: list[LeaseReply] = []


def _lease_reply(ref: str, got: Any) -> LeaseReply:
    if isinstance(got, ActorStopped):
        return LeaseReply(False, ref, PartitionStatus.MISSING, f"unavailable ({got.reason})")
    if isinstance(got, Exception):
        raise got  # the run crashes; its reconcile asks again (a lease it already holds is granted again)
    assert isinstance(got, LeaseReply)
    return got


class JobRunActor(Behavior):
    """One job run: takes its leases (the collision policy), starts the job, records how it ended, settles its
    partitions and tells the supervisor.

    Recovery is level-triggered: whatever message or step was in hand when the actor crashed, :meth:`reconcile`
    derives what must happen next from the committed state (and the execution's :meth:`~Execution.poll`): a
    Queued run takes its leases and starts, a Running run whose execution is gone is Lost, a run that ended
    settles what it still holds and reports again (the supervisor treats a second report as a no-op).
    """

    def __init__(self, execution: Execution, world: World) -> None:
        self.execution = execution
        self.world = world

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        st: JobRunState | None = ctx.state
        if isinstance(msg, PlanRun):
            if st is None:
                ctx.persist(msg.queued)
                # The lease asks go out once JobRunQueued is committed (asks are released after the step's
                # commit), in this step: no continuation step of its own.
                return self._lease_and_start(ctx, None)
            return st
        if isinstance(msg, RetryLeases):
            if st is not None and st.status is JobRunStatus.QUEUED:
                return self._lease_and_start(ctx, None)
            return st
        if isinstance(msg, Finished):
            return self._finish(ctx, msg.outcome)
        if isinstance(msg, Attached):
            if st is not None and st.status is JobRunStatus.RUNNING and st.handle is None:
                return ctx.persist(JobRunAttached(executor=msg.executor, handle=msg.handle))
            return st
        if isinstance(msg, CancelRun):
            if st is None or st.terminal:
                return st
            if st.status is JobRunStatus.RUNNING and self.execution.cancel(ctx.key, msg.reason):
                return st  # the execution reports Finished(canceled) when the process is gone
            # Queued, or not executing in this process (e.g. started before a restart): record it directly.
            ctx.persist(JobRunCanceled(reason=msg.reason))
            ctx.then(self._settle_and_report)
            return None
        if isinstance(msg, MarkLost):
            if st is not None and not st.terminal:
                ctx.persist(JobRunLost(reason=msg.reason))
                ctx.then(self._settle_quietly)
                return None
            return self._settle_quietly(ctx, None)
        if isinstance(msg, Abandon):
            return self._abandon(ctx, msg.reason)
        if isinstance(msg, Reconcile):
            return self.reconcile(ctx, "a reconcile after a crash elsewhere")
        if isinstance(msg, GetState):
            return st
        raise TypeError(f"job_run {ctx.key}: unexpected message {msg!r}")

    def restarted(self, ctx: Ctx, failed: Any, error: Exception) -> Any:
        return self.reconcile(ctx, f"{type(error).__name__}: {error}")

    def reconcile(self, ctx: Ctx, why: str) -> Any:
        """Do what the committed state says is next (see the class docstring). ``why``: for reasons."""
        st: JobRunState | None = ctx.state
        if st is None:
            return None  # never created: the supervisor planned it and derives it again
        if st.status is JobRunStatus.QUEUED:
            world = self.world
            if st.deferred_on and any(world.partition(ref).status is PartitionStatus.BUILDING
                                      for ref, _ in st.deferred_on):
                ctx.tell(*SUPERVISOR, RunEnded(st))  # still waiting: make sure it is known
                return st
            return self._lease_and_start(ctx, None)
        if st.status is JobRunStatus.RUNNING:
            polled = self.execution.poll(ctx.key)
            if polled == RUNNING:
                return st
            if polled is None:
                ctx.persist(JobRunLost(reason=f"its execution was lost when wantbuild recovered from {why}"))
                ctx.then(self._settle_and_report)
                return None
            return self._finish(ctx, polled)
        self.execution.release(ctx.key)  # committed terminal: a crash may have come before the release
        return self._settle_and_report(ctx, None)

    def _abandon(self, ctx: Ctx, reason: str) -> Any:
        st: JobRunState | None = ctx.state
        if st is None:
            return None
        if st.terminal:
            return self._settle_and_report(ctx, None)
        self.execution.cancel(ctx.key, reason)
        if st.status is JobRunStatus.RUNNING:
            ctx.persist(JobRunFailed(reason=reason, will_retry=False))
        else:
            ctx.persist(JobRunCanceled(reason=reason))
        ctx.then(self._release_and_settle)
        return None

    # -- leases ------------------------------------------------------------------------------------------
    def _lease_and_start(self, ctx: Ctx, _: Any) -> Any:
        st: JobRunState = ctx.state
        refs = sorted(st.partitions)
        run_id = ctx.key
        if st.policy in ("defer", "all_or_nothing"):
            # One lease at a time in ref order, stopping at the first refusal: two such runs never hold
            # leases the other waits for, so they cannot deadlock or livelock (shrink leases concurrently).
            ctx.scratch = _Leasing(refs)
            return self._next_lease(ctx, None)
        req = RequestLease(run_id, st.refresh)
        ctx.scratch = refs
        ctx.ask_many("partition", [(ref, req) for ref in refs], self._leases_in)
        return None

    def _next_lease(self, ctx: Ctx, replies: list[Any] | None) -> Any:
        lz: _Leasing = ctx.scratch
        if replies is not None:
            reply = _lease_reply(lz.refs[lz.i - 1], replies[0])
            if reply.granted:
                lz.granted.append(reply)
            elif reply.status is not PartitionStatus.LIVE:
                lz.refused.append(reply)
                return self._decide(ctx, lz.granted, lz.refused)
        if lz.i < len(lz.refs):
            ref = lz.refs[lz.i]
            lz.i += 1
            st: JobRunState = ctx.state
            ctx.ask_many("partition", [(ref, RequestLease(ctx.key, st.refresh))], self._next_lease)
            return None
        return self._decide(ctx, lz.granted, lz.refused)

    def _leases_in(self, ctx: Ctx, replies: list[Any]) -> Any:
        refs: list[str] = ctx.scratch
        granted: list[LeaseReply] = []
        refused: list[LeaseReply] = []
        for ref, got in zip(refs, replies, strict=True):
            reply = _lease_reply(ref, got)
            if reply.granted:
                granted.append(reply)
            elif reply.status is not _P_LIVE:
                refused.append(reply)
        return self._decide(ctx, granted, refused)

    def _decide(self, ctx: Ctx, granted: list[LeaseReply], refused: list[LeaseReply]) -> Any:
        st: JobRunState = ctx.state
        ctx.scratch = None
        why = tuple([(r.ref, r.holder or str(r.status)) for r in refused]) if refused else ()
        if refused and st.policy in ("defer", "all_or_nothing"):
            if granted:
                release = ReleaseLease(ctx.key, f"deferred ({st.policy}): waiting for {why[0][1]}")
                ctx.scratch = why
                ctx.ask_many("partition", [(g.ref, release) for g in granted], self._released)
                return None
            return self._defer(ctx, why)
        if not granted:
            reason = "nothing left to build: " + (
                ", ".join(f"{ref} held by {h}" for ref, h in why) if why else "every partition is already Live"
            )
            ctx.persist(JobRunCanceled(reason=reason))
            ctx.then(self._settle_and_report)
            return None
        out, err = self.execution.log_paths(st)
        where = self.execution.placement(st)
        started: JobRunState = ctx.persist(JobRunStarted(
            partitions=tuple([g.ref for g in granted]), skipped=why,
            generations=tuple([g.generation for g in granted]), stdout_path=out, stderr_path=err,
            executor=None if where is None else where[0], handle=None if where is None else where[1],
        ))
        ctx.after_commit(self.execution.start, started)  # the job starts once JobRunStarted is durable
        return started

    def _released(self, ctx: Ctx, replies: list[Any]) -> Any:
        replies_ok(replies)
        why: tuple[tuple[str, str], ...] = ctx.scratch
        ctx.scratch = None
        return self._defer(ctx, why)

    def _defer(self, ctx: Ctx, why: tuple[tuple[str, str], ...]) -> JobRunState:
        st: JobRunState = ctx.persist(JobRunDeferred(refused=why))
        ctx.tell(*SUPERVISOR, RunEnded(st))
        return st

    # -- outcomes ----------------------------------------------------------------------------------------
    def _finish(self, ctx: Ctx, outcome: Outcome) -> Any:
        st: JobRunState | None = ctx.state
        if st is None or st.status is not JobRunStatus.RUNNING:
            if st is not None and st.terminal and st.executor not in (None, "local"):
                # A late result (a remote job that finished after it was timed out, canceled or lost): kept in
                # the log as a fact, never applied. (A local outcome re-delivered after a recovery is a hint.)
                log.info("late result ignored", job_run_id=ctx.key, run_status=str(st.status),
                         result=outcome.status, reason=outcome.reason)
                return ctx.persist(JobRunResultIgnored(status=outcome.status, reason=outcome.reason))
            return st
        delay = float(getattr(outcome, "retry_delay", 0.0) or 0.0)
        if outcome.status == "succeeded":
            fields = _lineage(outcome)
            failed = dict(getattr(outcome, "failed", None) or {})
            if failed:  # some partitions of the batch failed: a retry builds only those
                fields.update(failed=failed, will_retry=st.attempt < st.max_attempts, retry_delay=delay)
            ctx.persist(JobRunSucceeded(**fields))
        elif outcome.status == "dep_miss":
            stale = self._live_before_start(st, outcome.missing)
            if stale is not None:
                # Reporting a partition that was Live all along would loop forever (build nothing, ask again):
                # it is the job's failure, retried by its policy like any other.
                ctx.persist(JobRunFailed(reason=stale, will_retry=st.attempt < st.max_attempts, retry_delay=delay))
            else:
                ctx.persist(JobRunDepMiss(missing=tuple(outcome.missing)))
        elif outcome.status == "canceled":
            ctx.persist(JobRunCanceled(reason=outcome.reason or "canceled"))
        elif outcome.status == "lost":  # the executor lost track of the job (its cluster became unreachable)
            ctx.persist(JobRunLost(reason=outcome.reason or "lost"))
        else:
            ctx.persist(JobRunFailed(reason=outcome.reason, exit_code=outcome.exit_code,
                                     will_retry=st.attempt < st.max_attempts, retry_delay=delay,
                                     **_lineage(outcome)))
        # The settle asks go out once the terminal event is committed, from this step; the execution forgets the
        # outcome when they are answered (it is kept until then: a crash before the commit finds it with poll).
        return self._settle(ctx, report=True, release=True)

    def _live_before_start(self, st: JobRunState, missing: Sequence[str]) -> str | None:
        """Why the run's missing-dependency report is wrong, if it names a partition Live since before it started."""
        started = st.started_at if st.started_at is not None else st.created_at
        for ref in missing:
            part = self.world.partitions.get(ref)
            if part is not None and part.status is PartitionStatus.LIVE and part.updated_at <= started:
                return (f"reported {ref} as a missing dependency, but it was Live (generation {part.generation}, "
                        f"built by {part.built_by}) before this run started: a job must read a Live dependency, "
                        f"not report it missing")
        return None

    def _release_and_settle(self, ctx: Ctx, _: Any) -> Any:
        """The terminal event is committed: the execution may forget the outcome; settle the partitions."""
        self.execution.release(ctx.key)
        return self._settle_and_report(ctx, None)

    def _release_and_report(self, ctx: Ctx, _: Any) -> Any:
        """The terminal event of a run that held nothing any more is committed: forget the outcome, report."""
        self.execution.release(ctx.key)
        st: JobRunState = ctx.state
        ctx.tell(*SUPERVISOR, RunEnded(st))
        return st

    def _settle_quietly(self, ctx: Ctx, _: Any) -> Any:
        return self._settle(ctx, report=False)

    def _settle_and_report(self, ctx: Ctx, _: Any) -> Any:
        return self._settle(ctx, report=True)

    def _settle(self, ctx: Ctx, *, report: bool, release: bool = False) -> Any:
        """Settle every partition this terminal run still holds, then tell the supervisor.

        Idempotent: partitions already settled are skipped, and the supervisor ignores a second report.
        ``release``: called in the step that persists the terminal event (not committed yet); the execution's
        outcome is released after that commit, once the settles are answered (or at once if there is nothing to
        settle), and then the supervisor is told.
        """
        st: JobRunState | None = ctx.state
        if st is None:
            return None
        assert st.terminal
        if st.status is JobRunStatus.SUCCEEDED:
            msg: SettleBuild = SettleBuild(st.job_run_id, "live")
        elif st.status is JobRunStatus.DEP_MISS:
            msg = SettleBuild(st.job_run_id, "dep_miss")
        elif st.status is JobRunStatus.FAILED:
            msg = SettleBuild(st.job_run_id, "failed", reason=st.reason, final=not st.will_retry)
        else:
            msg = SettleBuild(st.job_run_id, "missing", reason=f"run {st.job_run_id} {st.status}: {st.reason}")
        parts = self.world.partitions
        rid = st.job_run_id
        # Every planned ref is checked: a lease granted after its ask timed out is held too, though the run
        # started without it; such a partition was not built by the run and goes back to Missing.
        partitions, planned = st.partitions, st.planned
        holders = []
        for ref in partitions if planned == partitions else dict.fromkeys((*partitions, *planned)):
            p = parts.get(ref)
            if p is not None and p.lease == rid:
                holders.append(ref)
        if not holders:
            if release:
                ctx.then(self._release_and_report)
                return None
            if report:
                ctx.tell(*SUPERVISOR, RunEnded(st))
            return st
        then = self._settled_release if release else self._settled_report if report else self._settled_quiet
        failed = st.failed  # a Succeeded batch's partitions that the job reported failed
        # Only a run that read something, while a taint is active, can have built from a tainted generation.
        world = self.world
        check_taints = bool(st.read) and msg.outcome == "live" and any(t.active for t in world.taints.values())
        ctx.scratch = holders
        if not failed and not check_taints and (holders == list(partitions) or planned == partitions):
            # The common case: every holder was built by the run (or settles with the run's outcome): one message.
            ctx.ask_many("partition", [(ref, msg) for ref in holders], then)
            return None
        built = set(partitions)

        def settle(ref: str) -> SettleBuild:
            if ref not in built:
                return SettleBuild(rid, "missing", reason=f"run {rid} started without it")
            if ref in failed:
                return SettleBuild(rid, "failed", reason=failed[ref], final=not st.will_retry)
            if check_taints:
                # Built from a generation tainted while the run ran: built, but must not be read.
                bad = tainted_input(world, st, ref)
                if bad is not None:
                    return SettleBuild(rid, "tainted", taint=bad)
            return msg

        ctx.ask_many("partition", [(ref, settle(ref)) for ref in holders], then)
        return None

    def _settled_release(self, ctx: Ctx, replies: list[Any]) -> Any:
        self.execution.release(ctx.key)
        return self._settled(ctx, replies, report=True)

    def _settled_report(self, ctx: Ctx, replies: list[Any]) -> Any:
        return self._settled(ctx, replies, report=True)

    def _settled_quiet(self, ctx: Ctx, replies: list[Any]) -> Any:
        return self._settled(ctx, replies, report=False)

    def _settled(self, ctx: Ctx, replies: list[Any], *, report: bool) -> Any:
        st: JobRunState = ctx.state
        holders: list[str] = ctx.scratch
        ctx.scratch = None
        for reply in replies:
            if isinstance(reply, Exception):  # rare: an actor stopped (logged), or an error (the run crashes)
                replies_ok(replies)
                for ref, got in zip(holders, replies, strict=True):
                    if isinstance(got, ActorStopped):
                        log.error("partition not settled: its actor is stopped", ref=ref, run=st.job_run_id,
                                  reason=got.reason)
                break
        if report:
            ctx.tell(*SUPERVISOR, RunEnded(st))
        return st
