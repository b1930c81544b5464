"""The JobRun: one attempt of one job over a batch of partitions.

``Queued -> Running | Canceled | Lost``; ``Running -> Succeeded | Failed | DepMiss | Canceled | Lost``.
``JobRunDeferred`` records (without a status change) that a Queued run gave its leases back under the
``defer`` or ``all_or_nothing`` collision policy and waits for the runs that hold them; ``JobRunAttached``
records what the execution started for a Running run (a process), so a restart can fence it (a remote
execution names its task in ``JobRunStarted`` already, before submitting it). ``JobRunResultIgnored`` records
(without a status change) that a result arrived for a run that had already ended (a remote job finishing after
wantbuild timed it out, canceled it or saw its worker die): kept, never applied.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

from eventlog import Event, event

from ._machine import Machine, sources


class JobRunStatus(StrEnum):
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DEP_MISS = "DepMiss"
    CANCELED = "Canceled"
    LOST = "Lost"


R = JobRunStatus


@event("JobRunQueued", 1)
class JobRunQueued(Event, frozen=True):
    job: str
    partitions: tuple[str, ...]
    wants: tuple[str, ...] = ()
    attempt: int = 1
    max_attempts: int = 1
    retry_of: str | None = None
    policy: str = "shrink"
    reason: str = ""
    refresh: bool = False
    """A refresh of stale partitions: the run may lease partitions that are Live (see ``RequestLease``)."""


@event("JobRunDeferred", 1)
class JobRunDeferred(Event, frozen=True):
    refused: tuple[tuple[str, str], ...]
    """``(ref, holder run id or status)`` pairs that were refused."""


@event("JobRunStarted", 1)
class JobRunStarted(Event, frozen=True):
    partitions: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    """``(ref, why)``: partitions dropped from the batch, with the run holding them (shrink policy)."""
    generations: tuple[int, ...] = ()
    stdout_path: str | None = None
    stderr_path: str | None = None
    executor: str | None = None
    """Where the job runs (``dask``, ``ray``); None for the runtime's own processes."""
    handle: dict[str, Any] | None = None
    """What the executor submits the job as (for Dask ``{key, scheduler}``), recorded before it is submitted,
    so that a restarted runtime can find the task and fence it."""


@event("JobRunAttached", 1)
class JobRunAttached(Event, frozen=True):
    """What the execution started for a Running run (no status change), recorded so that a runtime restarted
    after a crash can find it and stop it before anything is leased again (``Execution.fence``).

    ``executor`` names the execution (``local``, ``dask``, ...); ``handle`` is its identity there: for a local
    command ``{"pid", "pgid", "start_ticks", "boot_id", "host"}``.
    """

    executor: str
    handle: dict[str, str | int | float]


@event("JobRunSucceeded", 1)
class JobRunSucceeded(Event, frozen=True, omit_defaults=True):
    """The job built its partitions, except those in ``failed`` (a batch with per-partition outcomes)."""

    read: dict[str, int] = msgspec.field(default_factory=dict)
    """What the run read, by generation: ``ctx.read``, the ``read`` protocol line and static dependencies."""
    into: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    """For an input read into only some of the run's partitions: ``input ref -> those partitions``. An input
    not listed here was read into every partition the run built."""
    failed: dict[str, str] = msgspec.field(default_factory=dict)
    """Partitions the job reported failed (``ctx.fail``, the ``failed`` protocol line): ``ref -> reason``. The
    others are built; a retry (``will_retry``) builds only these."""
    will_retry: bool = False
    retry_delay: float = 0.0


@event("JobRunFailed", 1)
class JobRunFailed(Event, frozen=True, omit_defaults=True):
    reason: str
    exit_code: int | None = None
    will_retry: bool = False
    retry_delay: float = 0.0
    read: dict[str, int] = msgspec.field(default_factory=dict)
    """What the run had read when it failed (as in :class:`JobRunSucceeded`), for diagnosis."""
    into: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)


@event("JobRunDepMiss", 1)
class JobRunDepMiss(Event, frozen=True):
    missing: tuple[str, ...]


@event("JobRunCanceled", 1)
class JobRunCanceled(Event, frozen=True):
    reason: str


@event("JobRunLost", 1)
class JobRunLost(Event, frozen=True):
    reason: str = "the runtime stopped while this run was in flight"


@event("JobRunResultIgnored", 1)
class JobRunResultIgnored(Event, frozen=True):
    """A result for a run that had already ended: recorded, never applied."""

    status: str
    reason: str = ""


JOB_RUN = Machine(
    kind="job_run",
    statuses=JobRunStatus,
    initial=R.QUEUED,
    terminal=frozenset({R.SUCCEEDED, R.FAILED, R.DEP_MISS, R.CANCELED, R.LOST}),
    table={
        "JobRunQueued": (sources(None), R.QUEUED),
        "JobRunDeferred": (sources(R.QUEUED), None),
        "JobRunStarted": (sources(R.QUEUED), R.RUNNING),
        "JobRunAttached": (sources(R.RUNNING), None),
        "JobRunSucceeded": (sources(R.RUNNING), R.SUCCEEDED),
        "JobRunFailed": (sources(R.RUNNING), R.FAILED),
        "JobRunDepMiss": (sources(R.RUNNING), R.DEP_MISS),
        "JobRunCanceled": (sources(R.QUEUED, R.RUNNING), R.CANCELED),
        "JobRunLost": (sources(R.QUEUED, R.RUNNING), R.LOST),
        "JobRunResultIgnored": (sources(R.SUCCEEDED, R.FAILED, R.DEP_MISS, R.CANCELED, R.LOST), None),
    },
)


class JobRunState(msgspec.Struct, frozen=True, gc=False):
    """A job run's committed state. ``partitions``: planned while Queued, leased once Running."""

    job_run_id: str
    job: str
    status: JobRunStatus
    partitions: tuple[str, ...]
    wants: tuple[str, ...]
    attempt: int
    max_attempts: int
    created_at: float
    updated_at: float
    entity_seq: int
    retry_of: str | None = None
    policy: str = "shrink"
    refresh: bool = False
    planned: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    deferred_on: tuple[tuple[str, str], ...] = ()
    generations: tuple[int, ...] = ()
    """Running: the generation of each leased partition (``partitions`` order), the run's fencing token."""
    started_at: float | None = None
    ended_at: float | None = None
    reason: str = ""
    exit_code: int | None = None
    missing: tuple[str, ...] = ()
    will_retry: bool = False
    retry_delay: float = 0.0
    stdout_path: str | None = None
    stderr_path: str | None = None
    executor: str | None = None
    handle: dict[str, Any] | None = None
    """Where the job runs and its identity there: from ``JobRunStarted`` (remote executors, recorded before the
    task is submitted) or ``JobRunAttached`` (a local process, once it runs)."""
    ignored_results: int = 0
    read: dict[str, int] = msgspec.field(default_factory=dict)
    """Succeeded or Failed: what the run read, ``ref -> generation`` (see :class:`JobRunSucceeded`)."""
    into: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    """Inputs read into only some partitions: ``input ref -> those partitions``; absent: into all it built."""
    failed: dict[str, str] = msgspec.field(default_factory=dict)
    """Succeeded: partitions the job reported failed, ``ref -> reason`` (not built)."""

    def built(self) -> tuple[str, ...]:
        """The partitions this run made Live: all of a Succeeded run's but those it reported failed."""
        if self.status is not JobRunStatus.SUCCEEDED:
            return ()
        if not self.failed:
            return self.partitions
        return tuple(p for p in self.partitions if p not in self.failed)

    def generation_of(self, ref: str) -> int | None:
        """The generation of ``ref`` that this run built (or was building), None if it never held ``ref``."""
        try:
            return self.generations[self.partitions.index(ref)]
        except (ValueError, IndexError):
            return None

    def read_into(self, ref: str) -> dict[str, int]:
        """The inputs (``ref -> generation``) this run read into partition ``ref``."""
        into = self.into
        if not into:
            return dict(self.read)
        return {r: g for r, g in self.read.items() if r not in into or ref in into[r]}

    @property
    def terminal(self) -> bool:
        return self.status in JOB_RUN.terminal


def apply_job_run(state: JobRunState | None, ev: Event, run_id: str, at: float, entity_seq: int) -> JobRunState:
    """The pure transition function of a job run."""
    target = JOB_RUN.target(run_id, None if state is None else state.status, ev)
    if state is None:
        assert isinstance(ev, JobRunQueued)
        return JobRunState(
            job_run_id=run_id, job=ev.job, status=R.QUEUED, partitions=ev.partitions, wants=ev.wants,
            attempt=ev.attempt, max_attempts=ev.max_attempts, created_at=at, updated_at=at,
            entity_seq=entity_seq, retry_of=ev.retry_of, policy=ev.policy, planned=ev.partitions,
            reason=ev.reason, refresh=ev.refresh,
        )
    rep = msgspec.structs.replace
    if isinstance(ev, JobRunSucceeded):
        return rep(state, status=target, updated_at=at, entity_seq=entity_seq, ended_at=at, read=ev.read,
                   into=ev.into, failed=ev.failed, will_retry=ev.will_retry, retry_delay=ev.retry_delay)
    if isinstance(ev, JobRunStarted):
        return rep(state, status=target, updated_at=at, entity_seq=entity_seq, partitions=ev.partitions,
                   skipped=ev.skipped, generations=ev.generations, started_at=at, stdout_path=ev.stdout_path,
                   stderr_path=ev.stderr_path, deferred_on=(), executor=ev.executor, handle=ev.handle)
    if isinstance(ev, JobRunResultIgnored):
        return rep(state, updated_at=at, entity_seq=entity_seq, ignored_results=state.ignored_results + 1)
    if isinstance(ev, JobRunDeferred):
        return rep(state, deferred_on=ev.refused, updated_at=at, entity_seq=entity_seq)
    if isinstance(ev, JobRunAttached):
        return rep(state, executor=ev.executor, handle=dict(ev.handle), updated_at=at, entity_seq=entity_seq)
    if isinstance(ev, JobRunFailed):
        return rep(state, status=target, updated_at=at, entity_seq=entity_seq, ended_at=at, reason=ev.reason,
                   exit_code=ev.exit_code, will_retry=ev.will_retry, retry_delay=ev.retry_delay, read=ev.read,
                   into=ev.into)
    if isinstance(ev, JobRunDepMiss):
        return rep(state, status=target, updated_at=at, entity_seq=entity_seq, ended_at=at, missing=ev.missing,
                   reason="missing upstream partitions")
    assert isinstance(ev, JobRunCanceled | JobRunLost)
    return rep(state, status=target, updated_at=at, entity_seq=entity_seq, ended_at=at, reason=ev.reason)
