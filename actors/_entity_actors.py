"""The Want, Partition and JobRun actors: each owns one entity and changes it only by committed events.

Messages are small frozen dataclasses, named for what they ask. The Partition actor is the authority over its
build lease; the JobRun actor takes leases (applying the collision policy), starts the job through the
injected :class:`Execution`, records the outcome, then settles its partitions and tells the supervisor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal, Protocol, TypeAlias, get_args

import msgspec

from eventlog import Event, get_logger

from ._actor import ActorStopped
from ._entity import EntityActor, EntityEnv
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
"""An inbox command completed by the message's transition: ``(command id, result)`` (see ``EntityActor.persist``)."""


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
class WantActor(EntityActor[WantState]):
    kind = "want"

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, MoveWant):
            return await self._move(msg)
        if isinstance(msg, CreateWant):
            if self.state is not None:  # idempotent re-delivery (command inbox)
                return self.state
            return await self.persist(msg.event, msg.command)
        if isinstance(msg, EndWant):
            if self.state is None or self.state.terminal:
                return self.state
            ev: Event = WantCanceled(reason=msg.reason) if msg.how == "cancel" else WantExpired(reason=msg.reason)
            return await self.persist(ev, msg.command)
        if isinstance(msg, MarkSlaMissed):
            if self.state is None or self.state.terminal or self.state.sla_missed:
                return self.state
            return await self.persist(WantSlaMissed(sla=msg.sla))
        if isinstance(msg, GetState):
            return self.state
        raise TypeError(f"want {self.key}: unexpected message {msg!r}")

    async def _move(self, msg: MoveWant) -> WantState | None:
        st = self.state
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
            st = await self.persist(ev)
        return st

    def _all_live(self, st: WantState) -> bool:
        world = self.env.world
        leaving = self.env.leaving_live
        live = PartitionStatus.LIVE
        return all(world.partition(r).status is live and not leaving[r] for r in st.refs) if leaving else all(
            world.partition(r).status is live for r in st.refs)


# --- Partition ----------------------------------------------------------------------------------------
class PartitionActor(EntityActor[PartitionState]):
    kind = "partition"

    def _cur(self) -> PartitionState:
        return self.state if self.state is not None else PartitionState(ref=self.key)

    async def handle(self, msg: Any) -> Any:
        cur = self._cur()
        if isinstance(msg, RequestLease):
            if cur.status is PartitionStatus.BUILDING and cur.lease == msg.job_run_id:
                return LeaseReply(True, self.key, cur.status, cur.lease, cur.generation)
            if cur.status in LEASABLE or (msg.refresh and cur.status is PartitionStatus.LIVE):
                st = await self.persist(PartitionBuilding(job_run_id=msg.job_run_id))
                return LeaseReply(True, self.key, st.status, msg.job_run_id, st.generation)
            return LeaseReply(False, self.key, cur.status, cur.lease, cur.generation)
        if isinstance(msg, SettleBuild):
            if cur.status is not PartitionStatus.BUILDING or cur.lease != msg.job_run_id:
                log.warning("stale settle ignored", ref=self.key, run=msg.job_run_id, status=str(cur.status),
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
            return await self.persist(ev)
        if isinstance(msg, ReleaseLease):
            if cur.status is PartitionStatus.BUILDING and cur.lease == msg.job_run_id:
                return await self.persist(PartitionMissing(reason=msg.reason, job_run_id=msg.job_run_id))
            return cur
        if isinstance(msg, UpstreamReady):
            if cur.status is PartitionStatus.UPSTREAM_WAITING:
                return await self.persist(PartitionMissing(reason="upstream partitions are live"))
            return cur
        if isinstance(msg, FailUpstream):
            if cur.status is PartitionStatus.UPSTREAM_WAITING:
                return await self.persist(PartitionUpstreamFailed(reason=msg.reason, upstream=msg.upstream))
            return cur
        if isinstance(msg, Taint):
            if cur.status is PartitionStatus.LIVE and msg.generation in (None, cur.generation):
                return await self.persist(PartitionTainted(reason=msg.reason, taint_id=msg.taint_id, depth=msg.depth,
                                                           via=msg.via))
            return cur  # not Live (any more), or rebuilt since: a no-op (the caller sees the state)
        if isinstance(msg, Restore):
            if (cur.status is PartitionStatus.TAINTED and cur.tainted_by == msg.taint_id
                    and cur.generation == msg.generation):
                return await self.persist(PartitionRestored(taint_id=msg.taint_id, reason=msg.reason))
            return cur
        if isinstance(msg, GetState):
            return self.state
        raise TypeError(f"partition {self.key}: unexpected message {msg!r}")


# --- JobRun -------------------------------------------------------------------------------------------
class JobRunActor(EntityActor[JobRunState]):
    """One job run: takes its leases (the collision policy), starts the job, records how it ended, settles its
    partitions and tells the supervisor.

    Recovery is level-triggered: whatever message was in hand when the actor crashed, :meth:`reconcile` derives
    what must happen next from the committed state (and the execution's :meth:`~Execution.poll`): a Queued run
    takes its leases and starts, a Running run whose execution is gone is Lost, a run that ended settles what it
    still holds and reports again (the supervisor treats a second report as a no-op).
    """

    kind = "job_run"

    def __init__(self, key: str, env: EntityEnv, execution: Execution) -> None:
        super().__init__(key, env)
        self.execution = execution

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, PlanRun):
            if self.state is None:
                await self.persist(msg.queued)
                return await self._lease_and_start()
            return self.state
        if isinstance(msg, RetryLeases):
            if self.state is not None and self.state.status is JobRunStatus.QUEUED:
                return await self._lease_and_start()
            return self.state
        if isinstance(msg, Finished):
            return await self._finish(msg.outcome)
        if isinstance(msg, Attached):
            st = self.state
            if st is not None and st.status is JobRunStatus.RUNNING and st.handle is None:
                return await self.persist(JobRunAttached(executor=msg.executor, handle=msg.handle))
            return st
        if isinstance(msg, CancelRun):
            st = self.state
            if st is None or st.terminal:
                return st
            if st.status is JobRunStatus.QUEUED:
                await self.persist(JobRunCanceled(reason=msg.reason))
                return await self._settle_and_report()
            if not self.execution.cancel(self.key, msg.reason):
                # Not executing in this process (e.g. started before a restart): record it directly.
                await self.persist(JobRunCanceled(reason=msg.reason))
                return await self._settle_and_report()
            return st  # the execution reports Finished(canceled) when the process is gone
        if isinstance(msg, MarkLost):
            st = self.state
            if st is not None and not st.terminal:
                await self.persist(JobRunLost(reason=msg.reason))
            return await self._settle_and_report(report=False)
        if isinstance(msg, Abandon):
            return await self._abandon(msg.reason)
        if isinstance(msg, Reconcile):
            return await self.reconcile("a reconcile after a crash elsewhere")
        if isinstance(msg, GetState):
            return self.state
        raise TypeError(f"job_run {self.key}: unexpected message {msg!r}")

    async def on_restart(self, failed: Any, error: Exception) -> None:
        await self.reconcile(f"{type(error).__name__}: {error}")

    async def reconcile(self, why: str) -> JobRunState | None:
        """Do what the committed state says is next (see the class docstring). ``why``: for reasons."""
        st = self.state
        if st is None:
            return None  # never created: the supervisor planned it and derives it again
        if st.status is JobRunStatus.QUEUED:
            world = self.env.world
            if st.deferred_on and any(world.partition(ref).status is PartitionStatus.BUILDING
                                      for ref, _ in st.deferred_on):
                await self.env.system.tell(*SUPERVISOR, RunEnded(st))  # still waiting: make sure it is known
                return st
            return await self._lease_and_start()
        if st.status is JobRunStatus.RUNNING:
            polled = self.execution.poll(self.key)
            if polled == RUNNING:
                return st
            if polled is None:
                await self.persist(JobRunLost(reason=f"its execution was lost when wantbuild recovered from {why}"))
                return await self._settle_and_report()
            return await self._finish(polled)
        return await self._settle_and_report()

    async def _abandon(self, reason: str) -> JobRunState | None:
        st = self.state
        if st is None:
            return None
        if not st.terminal:
            self.execution.cancel(self.key, reason)
            if st.status is JobRunStatus.RUNNING:
                await self.persist(JobRunFailed(reason=reason, will_retry=False))
            else:
                await self.persist(JobRunCanceled(reason=reason))
            self.execution.release(self.key)
        return await self._settle_and_report()

    async def _ask_all(self, refs: Sequence[str], make: Any) -> list[Any]:
        """Ask each partition; a partition whose actor was stopped answers with its ActorStopped (any other
        error is raised, and the crash's reconcile asks again)."""
        replies = await self.env.system.ask_many("partition", [(ref, make(ref)) for ref in refs],
                                                 return_exceptions=True)
        for reply in replies:
            if isinstance(reply, Exception) and not isinstance(reply, ActorStopped):
                raise reply
        return replies

    async def _lease(self, ref: str, run_id: str, refresh: bool = False) -> LeaseReply:
        try:
            reply: LeaseReply = await self.env.system.ask("partition", ref, RequestLease(run_id, refresh))
        except ActorStopped as e:
            return LeaseReply(False, ref, PartitionStatus.MISSING, f"unavailable ({e.reason})")
        return reply

    async def _lease_and_start(self) -> JobRunState | None:
        st = self.state
        assert st is not None
        refs = sorted(st.partitions)
        run_id = self.key
        granted: list[LeaseReply] = []
        refused: list[LeaseReply] = []
        if st.policy in ("defer", "all_or_nothing"):
            # One lease at a time in ref order, stopping at the first refusal: two such runs never hold
            # leases the other waits for, so they cannot deadlock or livelock (shrink leases concurrently).
            for ref in refs:
                reply = await self._lease(ref, run_id, st.refresh)
                if reply.granted:
                    granted.append(reply)
                elif reply.status is not PartitionStatus.LIVE:
                    refused.append(reply)
                    break
        else:
            lease = RequestLease(run_id, st.refresh)
            for ref, got in zip(refs, await self._ask_all(refs, lambda _r: lease), strict=True):
                reply = got if not isinstance(got, ActorStopped) else LeaseReply(
                    False, ref, PartitionStatus.MISSING, f"unavailable ({got.reason})")
                if reply.granted:
                    granted.append(reply)
                elif reply.status is not PartitionStatus.LIVE:
                    refused.append(reply)
        why = tuple((r.ref, r.holder or str(r.status)) for r in refused)
        if refused and st.policy in ("defer", "all_or_nothing"):
            if granted:
                await self._ask_all([g.ref for g in granted],
                                    lambda _r: ReleaseLease(run_id, f"deferred ({st.policy}): waiting for {why[0][1]}"))
            st = await self.persist(JobRunDeferred(refused=why))
            await self.env.system.tell(*SUPERVISOR, RunEnded(st))
            return st
        if not granted:
            reason = "nothing left to build: " + (
                ", ".join(f"{ref} held by {h}" for ref, h in why) if why else "every partition is already Live"
            )
            await self.persist(JobRunCanceled(reason=reason))
            return await self._settle_and_report()
        out, err = self.execution.log_paths(st)
        where = self.execution.placement(st)
        st = await self.persist(JobRunStarted(
            partitions=tuple(g.ref for g in granted), skipped=why,
            generations=tuple(g.generation for g in granted), stdout_path=out, stderr_path=err,
            executor=None if where is None else where[0], handle=None if where is None else where[1],
        ))
        self.execution.start(st)
        return st

    async def _finish(self, outcome: Outcome) -> JobRunState | None:
        st = self.state
        if st is None or st.status is not JobRunStatus.RUNNING:
            if st is not None and st.terminal and st.executor not in (None, "local"):
                # A late result (a remote job that finished after it was timed out, canceled or lost): kept in
                # the log as a fact, never applied. (A local outcome re-delivered after a recovery is a hint.)
                log.info("late result ignored", job_run_id=self.key, run_status=str(st.status),
                         result=outcome.status, reason=outcome.reason)
                return await self.persist(JobRunResultIgnored(status=outcome.status, reason=outcome.reason))
            return st
        delay = float(getattr(outcome, "retry_delay", 0.0) or 0.0)
        if outcome.status == "succeeded":
            fields = _lineage(outcome)
            failed = dict(getattr(outcome, "failed", None) or {})
            if failed:  # some partitions of the batch failed: a retry builds only those
                fields.update(failed=failed, will_retry=st.attempt < st.max_attempts, retry_delay=delay)
            await self.persist(JobRunSucceeded(**fields))
        elif outcome.status == "dep_miss":
            stale = self._live_before_start(st, outcome.missing)
            if stale is not None:
                # Reporting a partition that was Live all along would loop forever (build nothing, ask again):
                # it is the job's failure, retried by its policy like any other.
                await self.persist(JobRunFailed(reason=stale, will_retry=st.attempt < st.max_attempts,
                                                retry_delay=delay))
            else:
                await self.persist(JobRunDepMiss(missing=tuple(outcome.missing)))
        elif outcome.status == "canceled":
            await self.persist(JobRunCanceled(reason=outcome.reason or "canceled"))
        elif outcome.status == "lost":  # the executor lost track of the job (its cluster became unreachable)
            await self.persist(JobRunLost(reason=outcome.reason or "lost"))
        else:
            await self.persist(JobRunFailed(reason=outcome.reason, exit_code=outcome.exit_code,
                                            will_retry=st.attempt < st.max_attempts, retry_delay=delay,
                                            **_lineage(outcome)))
        self.execution.release(self.key)
        return await self._settle_and_report()

    def _live_before_start(self, st: JobRunState, missing: Sequence[str]) -> str | None:
        """Why the run's missing-dependency report is wrong, if it names a partition Live since before it started."""
        started = st.started_at if st.started_at is not None else st.created_at
        for ref in missing:
            part = self.env.world.partitions.get(ref)
            if part is not None and part.status is PartitionStatus.LIVE and part.updated_at <= started:
                return (f"reported {ref} as a missing dependency, but it was Live (generation {part.generation}, "
                        f"built by {part.built_by}) before this run started: a job must read a Live dependency, "
                        f"not report it missing")
        return None

    async def _settle_and_report(self, report: bool = True) -> JobRunState | None:
        """Settle every partition this terminal run still holds, then tell the supervisor.

        Idempotent: partitions already settled are skipped, and the supervisor ignores a second report.
        """
        st = self.state
        assert st is not None
        assert st.terminal
        if st.status is JobRunStatus.SUCCEEDED:
            msg: SettleBuild = SettleBuild(st.job_run_id, "live")
        elif st.status is JobRunStatus.DEP_MISS:
            msg = SettleBuild(st.job_run_id, "dep_miss")
        elif st.status is JobRunStatus.FAILED:
            msg = SettleBuild(st.job_run_id, "failed", reason=st.reason, final=not st.will_retry)
        else:
            msg = SettleBuild(st.job_run_id, "missing", reason=f"run {st.job_run_id} {st.status}: {st.reason}")
        world = self.env.world
        built = set(st.partitions)
        # Every planned ref is checked: a lease granted after its ask timed out is held too, though the run
        # started without it; such a partition was not built by the run and goes back to Missing.
        extra = SettleBuild(st.job_run_id, "missing", reason=f"run {st.job_run_id} started without it")
        holders = [ref for ref in dict.fromkeys((*st.partitions, *st.planned))
                   if world.partition(ref).lease == st.job_run_id]
        failed = st.failed  # a Succeeded batch's partitions that the job reported failed
        # Only a run that read something, while a taint is active, can have built from a tainted generation.
        check_taints = bool(st.read) and msg.outcome == "live" and any(t.active for t in world.taints.values())

        def settle(ref: str) -> SettleBuild:
            if ref not in built:
                return extra
            if ref in failed:
                return SettleBuild(st.job_run_id, "failed", reason=failed[ref], final=not st.will_retry)
            if check_taints:
                # Built from a generation tainted while the run ran: built, but must not be read.
                bad = tainted_input(world, st, ref)
                if bad is not None:
                    return SettleBuild(st.job_run_id, "tainted", taint=bad)
            return msg

        if holders:
            replies = await self._ask_all(holders, settle)
            for ref, reply in zip(holders, replies, strict=True):
                if isinstance(reply, ActorStopped):
                    log.error("partition not settled: its actor is stopped", ref=ref, run=st.job_run_id,
                              reason=reply.reason)
        if report:
            await self.env.system.tell(*SUPERVISOR, RunEnded(st))
        return st
