"""Executors: where job runs execute. The descriptions users pass, and the orchestrator side of remote runs.

An :class:`Executor` is a description (``LocalExecutor()``, ``DaskExecutor(client)``, ``RayExecutor()``); the
runtime opens each one it needs into an execution that implements the JobRun actor's ``Execution`` protocol.
:class:`RemoteExecution` is what the Dask and Ray executions share; they add only how to submit, watch and stop
a task on their engine.

Decisions worth knowing (the user-facing ones are in ``docs/executors.md``):

- **wantbuild owns the lifecycle; the engine only executes.** Each attempt is one task, submitted with the
  engine's retries off under a key made of the runtime's namespace, the run id and the attempt. The first
  outcome of a run is the one recorded; anything later (a result arriving after wantbuild timed the run out,
  canceled it or saw its worker die) goes to the run's actor as a late result, which the log keeps as
  ``JobRunResultIgnored``.
- **Deadlines twice.** The worker enforces ``timeout`` and ``heartbeat_timeout`` on its own clock (the job
  code of local runs), and the orchestrator enforces them again on the runtime's clock from the submission
  (one watchdog task for all remote runs), so a job on a worker that stopped answering is still failed and
  stopped. The orchestrator's heartbeat deadline counts heartbeats as they arrive, with a slack of a quarter
  of the deadline for the way there.
- **A run is reported ended only once its job is known to be stopped** (the engine confirms the task is gone
  from every worker), or after ``stop_timeout`` seconds, said in the reason: a run that is Canceled or Failed in
  the log must not still be writing its partitions while a retry starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import anyio

from actors import RUNNING, Clock, JobRunState, Kernel
from eventlog import WantbuildError, get_logger

from .._execution import ReadResolver, RunOutcome
from .._execution_glue import _Outcome, job_params, resolve_remote_reads, tell_finished, to_record
from .._graph import Graph
from .worker import RemoteJob

log = get_logger("wantbuild.executors")


class ExecutorError(WantbuildError, RuntimeError):
    """An executor cannot be used: its engine is not installed, or its cluster cannot be reached."""


@dataclass(frozen=True)
class ExecutorEnv:
    """What an opened executor needs from the runtime."""

    graph: Graph
    clock: Clock
    system: Kernel
    namespace: str
    """Distinguishes this log's tasks from another runtime's on a shared cluster (part of every key)."""
    resolve_read: ReadResolver | None = None
    """What a partition a remote job read is now (status, generation): its reads are resolved when its outcome
    arrives (see :func:`~supervisor._execution_glue.resolve_remote_reads`)."""


class Executor(ABC):
    """Where a job's runs execute. A description: the runtime opens the executors it needs and closes them."""

    kind: ClassVar[str]

    @abstractmethod
    def identity(self) -> Hashable:
        """Two descriptions with the same identity share one opened execution (one cluster connection)."""

    def open(self, env: ExecutorEnv) -> AbstractAsyncContextManager[RemoteExecution]:
        raise NotImplementedError  # pragma: no cover - LocalExecutor is opened by the runtime itself

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Executor) and other.identity() == self.identity()

    def __hash__(self) -> int:
        return hash(self.identity())


class LocalExecutor(Executor):
    """Run jobs in the runtime's own process (async functions) and its child processes (commands): the default."""

    kind = "local"

    def identity(self) -> Hashable:
        return ("local",)

    def __repr__(self) -> str:
        return "LocalExecutor()"


@dataclass(eq=False)
class RemoteRun:
    """The orchestrator's bookkeeping of one submitted run."""

    run: JobRunState
    job: RemoteJob
    submitted_at: float | None = None
    last_beat: float = 0.0
    decided: RunOutcome | None = None
    """The outcome to record (the first one known); later ones are late results."""
    stopping: bool = False
    reported: bool = False
    settled: bool = False
    """The engine's handle resolved (result, error or cancellation): nothing more can arrive."""
    late: list[RunOutcome] = field(default_factory=list)
    handle: Any = None
    """The engine's future / object ref, once submitted."""
    got_result: bool = False
    """The job's outcome arrived (from the task's result or from a worker asked about it): a second copy of the
    same result is recognised and dropped."""

    @property
    def key(self) -> str:
        return self.job.key


class RemoteExecution(ABC):
    """The orchestrator side of running jobs on a cluster, shared by Dask and Ray.

    Subclasses implement :meth:`_submit` (batched by the caller), :meth:`_cancel_remote`,
    :meth:`_still_running`, :meth:`fence` and the connection's life; they call :meth:`_result` when the engine
    returns an outcome and :meth:`_decide` when something else ends a run (a dead worker, a lost cluster).
    """

    kind: ClassVar[str]
    address: str = ""
    """The cluster this execution submits to (a Dask scheduler, a Ray GCS), as recorded in run handles."""
    stop_timeout: float = 15.0
    """Seconds to wait for the engine to confirm a stopped job is gone before recording its end anyway."""

    def __init__(self, env: ExecutorEnv, *, log_dir: str | None, kill_grace: float) -> None:
        self.env = env
        self.graph = env.graph
        self.clock = env.clock
        self.system = env.system
        self.log_dir = log_dir
        self.kill_grace = kill_grace
        self.runs: dict[str, RemoteRun] = {}
        self.by_key: dict[str, RemoteRun] = {}
        self.ended: OrderedDict[str, RemoteRun] = OrderedDict()
        """Recently ended runs by key (bounded): a result arriving after a run was forgotten is still known."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._deadlines: list[tuple[float, int, str, str]] = []
        self._deadline_seq = 0
        self._watchdog: asyncio.Task[None] | None = None
        self._watch_scope: anyio.CancelScope | None = None
        self._pending: list[RemoteRun] = []
        self._flush_scheduled = False
        self._outcomes: dict[str, _Outcome] = {}  # reported, until the run ended and settled (release)
        self.closed = False

    # -- the Execution protocol ---------------------------------------------------------------------
    def log_paths(self, run: JobRunState) -> tuple[str | None, str | None]:
        if self.graph[run.job].command is None or self.log_dir is None:
            return None, None  # without a shared log_dir, command output stays on the worker (see the outcome)
        return f"{self.log_dir}/{run.job_run_id}.stdout", f"{self.log_dir}/{run.job_run_id}.stderr"

    def key_of(self, run: JobRunState) -> str:
        return f"wantbuild-{self.env.namespace}-{run.job_run_id}-a{run.attempt}"

    @abstractmethod
    def placement(self, run: JobRunState) -> tuple[str, dict[str, Any]]: ...

    def start(self, run: JobRunState) -> None:
        job = self.graph[run.job]
        remote = RemoteJob(
            key=self.key_of(run), job_run_id=run.job_run_id, job_name=run.job, partitions=run.partitions,
            params=job_params(job, run.partitions), attempt=run.attempt, generations=run.generations, run=job.run,
            command=job.command, timeout=job.timeout, heartbeat_timeout=job.heartbeat_timeout,
            log_dir=self.log_dir, kill_grace=self.kill_grace,
        )
        r = RemoteRun(run, remote)
        self.runs[run.job_run_id] = r
        self.by_key[remote.key] = r
        self._pending.append(r)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def cancel(self, job_run_id: str, reason: str) -> bool:
        r = self.runs.get(job_run_id)
        if r is None or r.reported:
            return False
        self._stop(r, RunOutcome("canceled", reason=reason))
        return True

    def cancel_all(self, reason: str) -> None:
        for r in list(self.runs.values()):
            if not r.reported:
                self._stop(r, RunOutcome("canceled", reason=reason))

    def running(self) -> int:
        return sum(1 for r in self.runs.values() if not r.reported)

    def poll(self, job_run_id: str) -> _Outcome | Literal["running"] | None:
        """The Execution protocol's poll: the outcome reported (until released), ``"running"``, or None."""
        done = self._outcomes.get(job_run_id)
        if done is not None:
            return done
        r = self.runs.get(job_run_id)
        return RUNNING if r is not None and not r.reported else None

    def release(self, job_run_id: str) -> None:
        self._outcomes.pop(job_run_id, None)

    @abstractmethod
    async def fence(self, runs: Sequence[JobRunState]) -> None:
        """Before anything is leased again after a restart: make sure no task of ``runs`` still executes."""

    async def aclose(self, reason: str) -> None:
        """Stop every run still executing (recorded Canceled when the actors still listen) and wait for it."""
        self.cancel_all(reason)
        with anyio.move_on_after(self.stop_timeout + 1):
            while any(not t.done() for t in self._tasks):
                await asyncio.wait([t for t in self._tasks if not t.done()])
        self._shutdown_tasks()

    def abandon(self) -> None:
        """Forget everything without stopping anything (a crash): the engine sees its client go away."""
        self.closed = True
        self._shutdown_tasks()

    def _shutdown_tasks(self) -> None:
        self.closed = True
        for t in self._tasks:
            t.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()

    # -- submission ---------------------------------------------------------------------------------
    def _flush(self) -> None:
        self._flush_scheduled = False
        pending = [r for r in self._pending if r.decided is None]
        self._pending = []
        if not pending or self.closed:
            return
        if not self._can_submit():
            self._pending = pending  # the cluster is unreachable: they wait for it (see _reconnected)
            return
        now = self.clock.now()
        for r in pending:
            r.submitted_at = r.last_beat = now
            self._arm(r)
        self._submit(pending)

    def _resubmit_pending(self) -> None:
        """The cluster is reachable again: submit the runs that waited for it."""
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _can_submit(self) -> bool:
        return True

    @abstractmethod
    def _submit(self, runs: list[RemoteRun]) -> None:
        """Submit ``runs`` to the engine (one batch) and arrange for :meth:`_result` / :meth:`_decide`."""

    @abstractmethod
    async def _cancel_remote(self, runs: list[RemoteRun], reason: str) -> None:
        """Ask the engine to stop the tasks of ``runs`` (wherever they execute)."""

    @abstractmethod
    async def _still_running(self, keys: list[str]) -> list[str] | None:
        """Those of ``keys`` whose job still executes somewhere (None: cannot tell now)."""

    # -- outcomes -----------------------------------------------------------------------------------
    def _result(self, r: RemoteRun, outcome: RunOutcome) -> None:
        """The job of ``r`` ended with ``outcome`` (from the task's result, or from a worker asked about it)."""
        if r.got_result:
            log.debug("a second copy of a result ignored", key=r.key, status=outcome.status)
            return
        r.got_result = True
        r.settled = True
        if r.decided is None:
            r.decided = outcome
            self._spawn(self._report(r))
        elif outcome.status != "canceled" or not r.stopping:
            # A result after the run's end was decided (not just the confirmation of our own stop): a late one.
            r.late.append(outcome)
            if r.reported:
                self._spawn(self._report_late(r))
        self._forget_if_done(r)

    def _decide(self, r: RemoteRun, outcome: RunOutcome, *, stop: bool = True) -> None:
        """End ``r`` with ``outcome`` (a dead worker, a lost cluster, a deadline): stop its job first if asked."""
        if r.decided is not None:
            return
        if stop:
            self._stop(r, outcome)
        else:
            r.decided = outcome
            self._spawn(self._report(r))

    def _stop(self, r: RemoteRun, outcome: RunOutcome) -> None:
        if r.decided is None:
            r.decided = outcome
        if r.stopping:
            return
        r.stopping = True
        if r in self._pending:  # never submitted: nothing runs anywhere
            self._pending.remove(r)
            r.settled = True
            self._spawn(self._report(r))
            return
        self._spawn(self._stop_and_report(r, outcome.reason))

    async def _stop_and_report(self, r: RemoteRun, reason: str) -> None:
        note = ""
        try:
            await self._cancel_remote([r], reason)
            note = await self._wait_gone([r.key])
        except Exception as e:  # the cluster is gone: the job's fate is unknown, say so
            note = f" (could not confirm that the job stopped: {type(e).__name__}: {e})"
            log.warning("cannot stop a remote job", key=r.key, error=str(e))
        if note and r.decided is not None:
            r.decided = dataclasses.replace(r.decided, reason=r.decided.reason + note)
        await self._report(r)

    async def _wait_gone(self, keys: list[str]) -> str:
        """Wait until none of ``keys`` executes anywhere; '' when confirmed, else a note for the reason."""
        with anyio.move_on_after(self.stop_timeout):
            delay = 0.05
            while True:
                left = await self._still_running(keys)
                if left is not None and not left:
                    return ""
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)
        return f" (the engine did not confirm within {self.stop_timeout:g} s that the job stopped)"

    async def _report(self, r: RemoteRun) -> None:
        if r.reported:
            return
        r.reported = True
        assert r.decided is not None
        d = r.decided
        if self.env.resolve_read is not None:
            d = resolve_remote_reads(d, r.run.partitions, self.env.resolve_read)
        outcome = to_record(self.graph[r.run.job], r.run.attempt, d)
        self._outcomes[r.run.job_run_id] = outcome
        tell_finished(self.system, r.run.job_run_id, outcome)
        await self._report_late(r)
        self._forget_if_done(r)

    async def _report_late(self, r: RemoteRun) -> None:
        late, r.late = r.late, []
        for o in late:
            tell_finished(self.system, r.run.job_run_id, _Outcome(
                o.status, f"late result: {o.reason}" if o.reason else "late result", tuple(o.missing), o.exit_code))

    def _forget_if_done(self, r: RemoteRun) -> None:
        if r.reported and (r.settled or r.stopping) and self.runs.pop(r.run.job_run_id, None) is not None:
            self.by_key.pop(r.key, None)
            r.handle = None
            if r.stopping:  # stopped by us: its job may still deliver a late result
                self.ended[r.key] = r
                if len(self.ended) > _ENDED_KEPT:
                    self.ended.popitem(last=False)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.system._fatal(error)  # a bug here must not pass silently

    # -- heartbeats and deadlines -------------------------------------------------------------------
    def _beat(self, key: str) -> None:
        r = self.by_key.get(key)
        if r is not None and r.decided is None:
            r.last_beat = self.clock.now()

    def _arm(self, r: RemoteRun) -> None:
        job = r.job
        assert r.submitted_at is not None
        if job.timeout is not None:
            self._push(r.submitted_at + job.timeout + _slack(job.timeout), r, "timeout")
        if job.heartbeat_timeout is not None:
            self._push(r.submitted_at + job.heartbeat_timeout + _slack(job.heartbeat_timeout), r, "heartbeat")

    def _push(self, when: float, r: RemoteRun, what: str) -> None:
        self._deadline_seq += 1
        first = not self._deadlines or when < self._deadlines[0][0]
        heapq.heappush(self._deadlines, (when, self._deadline_seq, r.run.job_run_id, what))
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        elif first and self._watch_scope is not None:
            self._watch_scope.cancel()  # sleeping until a later deadline: look again

    async def _watch(self) -> None:
        while self._deadlines and not self.closed:
            when = self._deadlines[0][0]
            now = self.clock.now()
            if when > now:
                with anyio.CancelScope() as self._watch_scope:
                    await self.clock.sleep(when - now)
                self._watch_scope = None
                continue
            _, _, run_id, what = heapq.heappop(self._deadlines)
            r = self.runs.get(run_id)
            if r is None or r.decided is not None:
                continue
            job = r.job
            if what == "timeout" and job.timeout is not None:
                self._decide(r, RunOutcome("failed", reason=f"timed out after {float(job.timeout)} s"))
            elif what == "heartbeat" and job.heartbeat_timeout is not None:
                due = r.last_beat + job.heartbeat_timeout + _slack(job.heartbeat_timeout)
                if due > now:
                    self._push(due, r, "heartbeat")
                else:
                    self._decide(r, RunOutcome("failed", reason=f"no heartbeat for {float(job.heartbeat_timeout)} s"))


_ENDED_KEPT = 4096


def _slack(seconds: float) -> float:
    """How much later than the worker the orchestrator enforces a deadline: the worker's verdict (with the job's
    own output) normally arrives first; the orchestrator's is for a worker that cannot deliver one."""
    return min(max(0.25 * seconds, 0.5), 30.0)


def check_resources(resources: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Placement hints: a mapping of resource name to a number >= 0; ValueError otherwise (the caller names the
    job)."""
    if resources is None:
        return None
    if not isinstance(resources, Mapping):
        raise ValueError(f"resources must be a mapping such as {{'gpu': 1}}, got {resources!r}")
    out: dict[str, float] = {}
    for name, amount in resources.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"resources: a resource name must be a non-empty str, got {name!r}")
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 <= amount < math.inf:
            raise ValueError(f"resources: {name!r} must be a number >= 0, got {amount!r}")
        out[name] = float(amount)
    return out

