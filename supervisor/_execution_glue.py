"""Runs job runs for the runtime: cancelable, each in a task of its own once it awaits, reporting ``Finished`` to
the run.

The JobRun actor calls :meth:`LocalExecution.start` once its ``JobRunStarted`` is committed; the job starts in a
worker task (one for every run started at the same turn of the loop whose jobs do not await: a no-op or in-memory
job costs no task of its own), keeps that task and its cancel scope from its first await on, and is awaited when
the runtime closes (so the JobRun actor may be passivated meanwhile); its outcome is told back to the run's
actor, which records it. Cancel kills the job (the whole process group for commands).

The outcome is also kept here until the actor has committed it and settled the run's partitions
(:meth:`release`): ``Finished`` is a hint, and an actor that crashed while recording it finds it again with
:meth:`poll`. A command's process is reported to
the actor (``Attached``) as soon as it runs, so the log names it, and :meth:`fence` stops what a dead runtime's
jobs left running before a restarted runtime leases anything. An execution task that fails (a bug of ours, not
the job's) ends its run Failed with the error, never the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import types
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import anyio
import msgspec

from actors import (
    RUNNING,
    ActorSystemClosed,
    Attached,
    Clock,
    Faults,
    Finished,
    InvalidRef,
    JobRunState,
    Kernel,
    World,
)
from eventlog import get_logger

from ._execution import (
    _SUCCEEDED,
    JobContext,
    JobProtocolError,
    MissingDeps,
    ReadResolver,
    RunOutcome,
    _dep_miss_outcome,
    run_callable,
    run_command,
)
from ._fence import EXECUTOR, fence_local, process_handle
from ._graph import Graph
from ._graph_errors import NoJobForRef
from ._jobs import Job

log = get_logger("wantbuild.execution")


class _Outcome(msgspec.Struct, frozen=True):
    """What the run's actor records (a Struct: made once per run, a tenth of a frozen dataclass's cost)."""

    status: str
    reason: str
    missing: tuple[str, ...]
    exit_code: int | None
    retry_delay: float = 0.0
    read: dict[str, int] = msgspec.field(default_factory=dict)
    into: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    failed: dict[str, str] = msgspec.field(default_factory=dict)


def job_params(job: Job, partitions: Sequence[str]) -> tuple[dict[str, str], ...]:
    """The pattern parameters of each of ``partitions``, as the job's context gives them (``ctx.params``)."""
    return tuple(dict(job.params(ref) or {}) for ref in partitions)


def to_record(job: Job, attempt: int, outcome: RunOutcome) -> _Outcome:
    """What the run's actor records for the job's ``outcome``: a failure (or a batch with failed partitions, to be
    retried alone) carries its retry delay; the reads, what they fed and the failed partitions go with it."""
    if outcome is _SUCCEEDED:
        return _PLAIN_SUCCESS
    delay = job.retry.delay(attempt) if outcome.status == "failed" or outcome.failed else 0.0
    return _Outcome(outcome.status, outcome.reason, tuple(outcome.missing), outcome.exit_code, delay,
                    dict(outcome.read), dict(outcome.into), dict(outcome.failed))


_PLAIN_SUCCESS = _Outcome("succeeded", "", (), None)
"""The record of a job that succeeded and used nothing of its context, shared (nothing writes to its mappings)."""


def tell_finished(system: Kernel, job_run_id: str, outcome: _Outcome) -> None:
    """Give the run's actor its outcome; dropped when the runtime closed (its restart marks the run Lost)."""
    try:
        system.tell("job_run", job_run_id, Finished(outcome))
    except ActorSystemClosed:
        log.debug("outcome dropped: the runtime is closed", job_run_id=job_run_id, status=outcome.status)


class LocalExecution:
    def __init__(self, graph: Graph, clock: Clock, log_dir: Path, system: Kernel,
                 faults: Faults | None = None, world: World | None = None, log_id: str = "") -> None:
        self.graph = graph
        self.world = world
        self.resolve_read = _resolver(graph, world) if world is not None else None
        self.log_id = log_id
        """The log this runtime runs on (``WANTBUILD_LOG`` in each job's environment; see ``_fence.py``)."""
        self.faults = faults
        self.clock = clock
        self.log_dir = log_dir
        self.system = system
        self._scopes: dict[str, anyio.CancelScope | None] = {}
        """The runs started and not ended: the cancel scope of the task each awaits in, ``None`` until it awaits."""
        self._pending: deque[JobRunState] = deque()
        self._worker_free = False  # a worker task is there to start the pending runs (none of them awaits in it)
        self._cancel_reasons: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: dict[str, _Outcome] = {}
        self._scope_cls: type[anyio.CancelScope] | None = None

    def log_paths(self, run: JobRunState) -> tuple[str | None, str | None]:
        job = self.graph[run.job]
        if job.command is None:
            return None, None
        return (str(self.log_dir / f"{run.job_run_id}.stdout"), str(self.log_dir / f"{run.job_run_id}.stderr"))

    def placement(self, run: JobRunState) -> tuple[str, dict[str, Any]] | None:
        return None  # the runtime's own tasks and processes

    def start(self, run: JobRunState) -> None:
        self._scopes[run.job_run_id] = None
        self._pending.append(run)
        if not self._worker_free:
            self._spawn_worker()

    def _spawn_worker(self) -> None:
        # A plain asyncio task, tracked here and awaited by :meth:`aclose` (anyio's start_soon costs three times as
        # much); an unexpected error still fails the runtime.
        self._worker_free = True
        self._tasks.add(asyncio.get_running_loop().create_task(self._worker(), name="job runs"))

    async def _worker(self) -> None:
        """Start the pending runs in order, each in a context of its own, in this one task and its cancel scope.

        A job that finishes without awaiting anything (a no-op, a check, in-memory work) costs no task nor scope of
        its own. The first run that awaits keeps this task and scope from then on (they are its own: canceling
        the run cancels the scope), as a task per run did; another worker takes the runs still pending. Jobs run
        one at a time and a run cannot be canceled before it first awaits, so sharing the task until then changes
        nothing a job can see but :func:`asyncio.current_task` (a fresh context per run keeps its context
        variables its own).
        """
        task = asyncio.current_task()
        pending = self._pending
        dedicated = False
        outcome: RunOutcome | None = None
        try:
            if self._scope_cls is None:
                # anyio.CancelScope() finds the running backend on every call (2.3 us); the backend's own class,
                # taken from one instance, makes the same scope in 0.4 us.
                self._scope_cls = type(anyio.CancelScope())
            scope = self._scope_cls()
            with scope:
                while pending:
                    run = pending.popleft()
                    rid = run.job_run_id
                    if rid in self._cancel_reasons:  # canceled before it started: the job is not run
                        self._ended(run, None)
                        continue
                    coro = self._execute(run)
                    context = contextvars.copy_context()
                    try:
                        awaited = context.run(coro.send, None)
                    except StopIteration as done:
                        self._ended(run, done.value)
                        continue
                    except asyncio.CancelledError:  # raised by the job itself, not a cancel of ours
                        self._ended(run, None)
                        continue
                    dedicated = True
                    self._scopes[rid] = scope
                    self._worker_free = False
                    if pending:
                        self._spawn_worker()
                    break
                if dedicated:
                    outcome = await _resume(coro, awaited, context)
            if dedicated:
                self._ended(run, None if scope.cancel_called else outcome)
        except Exception as e:  # pragma: no cover - _execute turns every Exception into an outcome
            self.system._fatal(e)
        finally:
            if not dedicated:
                self._worker_free = False
            self._tasks.discard(task)

    def poll(self, job_run_id: str) -> _Outcome | Literal["running"] | None:
        if job_run_id in self._scopes:
            return RUNNING
        return self._outcomes.get(job_run_id)

    def release(self, job_run_id: str) -> None:
        self._outcomes.pop(job_run_id, None)

    async def fence(self, runs: Sequence[JobRunState], grace: float = 2.0) -> list[str]:
        """Stop what the previous runtime's in-flight ``runs`` left running here; lines saying what was done."""
        return await fence_local(runs, grace, self.log_id)

    async def aclose(self, reason: str) -> None:
        """Cancel every run still executing and wait until their tasks are gone."""
        self.cancel_all(reason)
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def cancel(self, job_run_id: str, reason: str) -> bool:
        if job_run_id not in self._scopes:
            return False
        self._cancel_reasons[job_run_id] = reason
        scope = self._scopes[job_run_id]
        if scope is not None:  # it awaits in a task of its own (else it has not started: it never will)
            scope.cancel()
        return True

    def cancel_all(self, reason: str) -> None:
        for run_id in list(self._scopes):
            self.cancel(run_id, reason)

    def running(self) -> int:
        return len(self._scopes)

    async def _execute(self, run: JobRunState) -> RunOutcome:
        """The run's job, to its outcome (the caller's scope cancels it)."""
        rid = run.job_run_id
        job = self.graph[run.job]
        try:
            if self.faults is not None:
                self.faults.check("job", run.job, rid, run.job)
            ctx = JobContext(job_run_id=rid, job_name=run.job, partitions=run.partitions, attempt=run.attempt,
                             params=job_params(job, run.partitions), clock=self.clock,
                             generations=run.generations, resolve_read=self.resolve_read)
            # Static dependencies are read for the job; one that is not Live (any more) is a DepMiss.
            outcome = _read_static_deps(self.graph, ctx) if job.deps is not None else None
            if outcome is None and job.command is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                return await run_command(job.command, ctx, log_dir=self.log_dir, timeout=job.timeout,
                                         heartbeat_timeout=job.heartbeat_timeout,
                                         env={"WANTBUILD_LOG": self.log_id} if self.log_id else None,
                                         on_spawn=lambda pid: self._attached(rid, pid))
            if outcome is None:
                assert job.run is not None
                return await run_callable(job.run, ctx, timeout=job.timeout, heartbeat_timeout=job.heartbeat_timeout)
            return outcome
        except Exception as e:  # wantbuild's failure, not the job's: this run fails, the runtime goes on
            log.error("job execution failed", job_run_id=rid, exc_info=e)
            return RunOutcome("failed", reason=f"wantbuild could not execute the job: {type(e).__name__}: {e}",
                              error_type=type(e).__name__)

    def _ended(self, run: JobRunState, outcome: RunOutcome | None) -> None:
        """Record the run's outcome (``None``: canceled) until it is released, and tell the run's actor."""
        rid = run.job_run_id
        self._scopes.pop(rid, None)
        reason = self._cancel_reasons.pop(rid, None)
        if outcome is None or reason is not None:
            outcome = RunOutcome(status="canceled", reason=reason or "canceled")
        result = to_record(self.graph[run.job], run.attempt, outcome)
        self._outcomes[rid] = result
        tell_finished(self.system, rid, result)

    def _attached(self, job_run_id: str, pid: int) -> None:
        with contextlib.suppress(ActorSystemClosed):
            self.system.tell("job_run", job_run_id, Attached(EXECUTOR, process_handle(pid)))



@types.coroutine
def _resume(coro: Any, awaited: Any, context: contextvars.Context) -> Any:
    """``await coro`` for a coroutine already started (it yielded ``awaited``), each step run in ``context``."""
    send, throw = coro.send, coro.throw
    while True:
        try:
            value = yield awaited
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as e:  # a cancellation, thrown into the job where it awaits
            try:
                awaited = context.run(throw, e)
            except StopIteration as done:
                return done.value
        else:
            try:
                awaited = context.run(send, value)
            except StopIteration as done:
                return done.value


def _resolver(graph: Graph, world: World) -> ReadResolver:
    """What ``ctx.read`` asks: the partition's status and generation in the World, now; a malformed ref or one no
    job produces is a :class:`JobProtocolError` (the run fails with it)."""
    partitions = world.partitions
    job_of = graph.job_of

    def resolve(ref: str) -> tuple[str, int]:
        st = partitions.get(ref)
        if st is not None:  # in the log: a valid ref some job produced (checked when it was first wanted)
            return st.status, st.generation  # a PartitionStatus is a str
        try:
            job_of(ref)
        except (InvalidRef, NoJobForRef) as e:
            raise JobProtocolError(f"cannot read {ref!r}: {e}") from None
        return "Missing", 0

    return resolve


def _read_static_deps(graph: Graph, ctx: JobContext) -> RunOutcome | None:
    """Static dependencies count as read: each partition's are read into it before the job starts. None if they
    are all Live; else the DepMiss outcome naming those that are not (tainted or rebuilt since it was planned)."""
    missing: list[str] = []
    for ref in ctx.partitions:
        deps = graph.static_deps(ref)
        if deps:
            try:
                ctx.read_many(deps, into=ref)
            except MissingDeps as e:
                missing.extend(e.refs)
    if not missing:
        return None
    return ctx._outcome(_dep_miss_outcome(MissingDeps(list(dict.fromkeys(missing))), ctx), on_its_own=True)


def resolve_remote_reads(outcome: RunOutcome, partitions: Sequence[str], resolve: ReadResolver) -> RunOutcome:
    """The outcome of a job that ran on a cluster, its reads resolved now, when it arrives.

    A worker cannot ask the World what it reads, so a remote job's ``ctx.read`` checks the ref's syntax and records
    it; here each read gets the generation Live now, and the run's outcome becomes what it would have been locally
    had the input been in that state: an input not Live makes a finished run ``dep_miss`` on it, a ref no job
    produces fails it. The difference with a local run: an input rebuilt while the job ran is recorded at its new
    generation (docs/executors.md).
    """
    if not outcome.read:
        return outcome
    ctx = JobContext(job_run_id="remote", job_name="remote", partitions=partitions, resolve_read=resolve)
    for ref in outcome.read:
        into = outcome.into.get(ref)
        with contextlib.suppress(MissingDeps, JobProtocolError):  # recorded in ctx: _outcome says what it means
            ctx.read_many({ref: list(into)} if into else [ref])
    ctx._failed.update(outcome.failed)
    on_its_own = outcome.status in ("succeeded", "dep_miss") or (outcome.status == "failed"
                                                                and outcome.error_type in (None, "MissingDeps"))
    return ctx._outcome(replace(outcome, failed={}), on_its_own=on_its_own)
