"""Running one job run: an async callable in-process, or a command as a subprocess. Returns a :class:`RunOutcome`.

This module knows nothing of actors or the log: the caller (``_execution_glue``) records what it returns.
The protocol a job follows is written up for job authors in ``docs/job-protocol.md``.

Errors::

    WantbuildError
     ├── MissingDeps        raised by an in-process job (or by ``ctx.read`` of a partition that is not Live):
     │                      "build these upstream refs first"
     └── JobProtocolError   a job used its context wrongly: read its own output, a malformed ref or one no job
                            produces, or failed a partition it does not build (the run fails with it)

Decisions worth knowing:

- **Deadlines are measured on the injected clock.** A watchdog task sleeps on ``ctx.clock`` until the earliest
  of the run's timeout and heartbeat deadline, then cancels the job's scope; nothing here uses anyio's
  wall-clock timeouts for them, so a scenario's virtual clock drives timeouts of simulated jobs.
  ``kill_grace`` is the exception: it is how long a real OS process gets to react to SIGTERM, so it is waited
  in real time (a virtual clock that stands still would otherwise leave the process unkilled forever).
- **Cancellation is the caller's.** When the caller's scope is cancelled, the job is stopped (the whole
  process group for a command, killed and reaped under a shielded scope) and the cancellation propagates;
  nothing here returns ``status="canceled"``: the caller records that itself.
- **anyio.open_process, with our own stdout pipe.** anyio keeps the cancellation semantics of the rest of
  the runtime (cancel scopes, shielded cleanup) and runs on any backend. stdout is *not* an asyncio pipe: on
  Python 3.11, asyncio's ``Process.wait()`` returns only once every pipe of the process is closed, so a
  grandchild left holding stdout (``sleep 1000 &`` in a shell job) would hang the run after the job exited.
  We read our own non-blocking ``os.pipe()`` with :func:`anyio.wait_readable` instead (anyio >= 4.7), and
  stderr goes straight to its log file (the child writes it; we never touch it).
- **A job owns its process group.** The command starts in a new session (``start_new_session=True``), so its
  pid is its process group id. On timeout, missed heartbeat or cancellation the group gets SIGTERM (and
  SIGCONT, so stopped members see it), ``kill_grace`` seconds, then SIGKILL; the leader is always reaped.
  When the leader exits on its own, members it left behind are stopped the same way: a job must not leave
  processes running. Processes that leave the group (``setsid``, daemons) are beyond reach. Grandchildren
  are reparented to init, which reaps them; "alive" below ignores zombies (Linux ``/proc``; elsewhere a
  zombie counts as alive until reaped).
- **Reads are recorded, never guessed.** ``ctx.read(ref)`` (or a ``{"read": [...]}`` line) returns and records
  the generation of a Live input; an input that is not Live is a missing dependency (``MissingDeps``), and a run
  that went on regardless (it caught ``MissingDeps``, or a command printed the line and carried on) ends
  ``dep_miss`` on it anyway: its output was built from data that must not be read. A protocol error (reading its
  own output, a malformed ref, one no job produces) fails the run even if the job catches it.
- **Log files are written synchronously.** Each chunk read from stdout is written and flushed to
  ``<log_dir>/<job_run_id>.stdout`` on the event loop: a local page-cache write is cheaper than a hop to a
  worker thread, and flushing per chunk lets ``tail -f`` follow a running job.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Literal, NoReturn, TypeAlias

import anyio
import anyio.abc

from actors import Clock, SystemClock
from eventlog import LibraryLogger, WantbuildError, get_logger

from ._jobs import _is_async_callable

__all__ = ["JobCallable", "JobContext", "JobProtocolError", "MissingDeps", "ReadResolver", "RunOutcome",
           "run_callable", "run_command"]

_READ_SIZE = 65536
_MAX_PROTOCOL_LINE = 1 << 20
"""A longer stdout line is kept in the log but not parsed as a protocol line."""
_MAX_REASON = 2000
"""Exception messages are cut to this many characters in ``RunOutcome.reason`` (the traceback is logged)."""
_STDOUT_DRAIN_LIMIT = 5.0
"""Seconds (real time) to read what is left on stdout once the job's group is gone. Only a process that left
the group while holding stdout can make it last that long; what it writes later is not kept."""
_POLL_INTERVAL = 0.05
_SIGKILL_WAIT = 1.0
"""Seconds (real time) to see the group gone after SIGKILL before logging that some member survives."""

Status: TypeAlias = Literal["succeeded", "failed", "dep_miss", "canceled", "lost"]
"""``lost``: only from an executor that lost track of a remote job (its cluster became unreachable)."""


class MissingDeps(WantbuildError):
    """Raised by an in-process job: the upstream partitions ``refs`` must be built before it can run.

    ``raise MissingDeps(["raw/2026-11-01"])``. The run ends ``dep_miss``; the supervisor builds the refs and
    then starts a new run. ``refs`` must be a non-empty collection of ref strings; anything else makes the run
    fail with a reason saying what was wrong (the constructor itself never raises, so the job's ``raise``
    line is where the traceback points).
    """

    def __init__(self, refs: Iterable[str]) -> None:
        given: object = refs
        self.refs: tuple[str, ...] = ()
        self.problem: str | None = None
        if isinstance(given, str | bytes):
            self.problem = f"expected a list of partition refs, got a bare {type(given).__name__} {given!r}"
        elif not isinstance(given, Iterable):
            self.problem = f"expected a list of partition refs, got {type(given).__name__} {given!r}"
        else:
            self.refs = tuple(given)
            self.problem = _refs_problem(self.refs)
        super().__init__(f"missing dependencies: {', '.join(map(str, self.refs)) or given!r}")

    def __reduce__(self) -> tuple[type[MissingDeps], tuple[tuple[str, ...]]]:
        return (type(self), (self.refs,))


class JobProtocolError(WantbuildError, ValueError):
    """A job used its context (or the stdout protocol) wrongly: it read one of the partitions it builds, a
    malformed ref or one that no job produces, or reported as failed a partition it does not build.

    Raised by ``ctx.read`` / ``ctx.fail``; the run fails with this reason even if the job catches it (what it
    built cannot be trusted to have the lineage it records).
    """


ReadResolver: TypeAlias = Callable[[str], tuple[str, int]]
"""``resolve(ref) -> (status, generation)`` of a partition a job reads, now; raises :class:`JobProtocolError`
for a ref it may not read (malformed, or produced by no job). The runtime gives one to every job's context."""


def _refs_problem(refs: Sequence[object]) -> str | None:
    """Why ``refs`` is not a valid missing-dependency report, or None. Ref syntax is the supervisor's check."""
    if not refs:
        return "the list of missing refs is empty; report at least one ref, or do not report missing deps"
    bad = [r for r in refs if not isinstance(r, str)]
    if bad:
        return f"every missing ref must be a str, got {type(bad[0]).__name__} {bad[0]!r}"
    return None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How one job run ended. ``reason`` is for humans; ``missing`` is set for ``dep_miss`` only.

    ``read`` (``ref -> generation``) and ``into`` (inputs read into only some partitions) are what the job read;
    ``failed`` (``ref -> reason``) the partitions a ``succeeded`` batch reported failed (the others are built).
    """

    status: Status
    reason: str = ""
    missing: tuple[str, ...] = ()
    exit_code: int | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    error_type: str | None = None
    read: Mapping[str, int] = field(default_factory=dict)
    into: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    failed: Mapping[str, str] = field(default_factory=dict)


class JobContext:
    """What a job run sees: which partitions to build, and how to report liveness.

    ``params`` holds, per partition, the placeholders its ref matched in the job's output pattern
    (``daily/{date}`` -> ``{"date": "2026-11-01"}``). Build one per run.
    """

    def __init__(
        self,
        *,
        job_run_id: str,
        job_name: str,
        partitions: Sequence[str],
        attempt: int = 1,
        params: Sequence[Mapping[str, str]] | None = None,
        clock: Clock | None = None,
        generations: Sequence[int] | None = None,
        resolve_read: ReadResolver | None = None,
    ) -> None:
        self.job_run_id = job_run_id
        self.job_name = job_name
        self.partitions: tuple[str, ...] = tuple(partitions)
        self.attempt = attempt
        self.generations: Mapping[str, int] = dict(zip(self.partitions, generations or (), strict=False))
        """The generation of each partition this run holds the lease of: its fencing token (see
        :attr:`fence_token` and docs/job-protocol.md). Empty when the run was made outside a runtime."""
        self.params: tuple[Mapping[str, str], ...] = (
            tuple({} for _ in self.partitions) if params is None else tuple(params)
        )
        if len(self.params) != len(self.partitions):
            raise ValueError(
                f"job run {job_run_id!r}: {len(self.params)} params for {len(self.partitions)} partitions; "
                f"give one mapping per partition"
            )
        self.clock: Clock = SystemClock() if clock is None else clock
        self._log: LibraryLogger | None = None
        self._started = self.clock.now()
        self._last_heartbeat = self._started
        self._resolve = resolve_read
        self._own: frozenset[str] | None = None
        self._read: dict[str, int] = {}
        self._into: dict[str, set[str] | None] = {}  # input -> the partitions it was read into (None: all)
        self._not_live: dict[str, str] = {}  # inputs read while not Live -> their status then
        self._failed: dict[str, str] = {}
        self._problem: str | None = None

    def __repr__(self) -> str:
        return (
            f"JobContext(job_run_id={self.job_run_id!r}, job_name={self.job_name!r}, "
            f"partitions={self.partitions!r}, attempt={self.attempt!r})"
        )

    @property
    def log(self) -> LibraryLogger:
        """A logger bound to this run (``job_run_id``, ``job``): structlog when configured, else stdlib logging
        ``wantbuild.job``; made on first use."""
        if self._log is None:
            self._log = get_logger("wantbuild.job", job_run_id=self.job_run_id, job=self.job_name)
        return self._log

    @property
    def fence_token(self) -> str:
        """This run's fencing token, as JSON: ``{"run": run id, "generations": {ref: generation}}``.

        A job publishing its output compares the generation with what the output's destination last accepted
        and refuses to overwrite a newer one (:func:`wantbuild.publish` does), so a run that was declared Lost
        while its process lived on cannot replace the output of the run that rebuilt the partition. Commands
        get it as ``WANTBUILD_FENCE``.
        """
        return json.dumps({"run": self.job_run_id, "generations": dict(self.generations)}, separators=(",", ":"))

    @property
    def last_heartbeat(self) -> float:
        """The clock's time of the last heartbeat (the start of the run until the first one)."""
        return self._last_heartbeat

    def heartbeat(self) -> None:
        """Tell the runtime the job is alive: moves the heartbeat deadline to now + ``heartbeat_timeout``."""
        self._last_heartbeat = self.clock.now()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the run's clock (virtual in scenarios). Does not count as a heartbeat."""
        await self.clock.sleep(seconds)

    # -- lineage and per-partition outcomes ----------------------------------------------------------------

    @property
    def reads(self) -> Mapping[str, int]:
        """What this run has read so far: ``ref -> generation`` (the first read of each ref)."""
        return dict(self._read)

    @property
    def failures(self) -> Mapping[str, str]:
        """The partitions this run reported failed so far: ``ref -> reason``."""
        return dict(self._failed)

    def read(self, ref: str, *, into: str | Iterable[str] | None = None) -> int:
        """Declare that the job reads partition ``ref``; returns the generation it reads (recorded in the run's
        lineage: what each partition was built from).

        Call it before reading the data. ``into``: the partitions of this run the input feeds (default: all of
        them); a batch whose partitions each read their own input names it, so lineage and taints do not tie
        every partition of the batch to every input. Raises :class:`MissingDeps` if ``ref`` is not Live (build
        it first; the run ends DepMiss even if the job catches it) and :class:`JobProtocolError` for one of the
        run's own partitions, a malformed ref, or a ref no job produces. Static dependencies are read for the
        job before it starts.
        """
        return self.read_many((ref,), into=into)[ref]

    def read_many(self, refs: Iterable[str] | Mapping[str, str | Iterable[str]], *,
                  into: str | Iterable[str] | None = None) -> dict[str, int]:
        """:meth:`read` for several refs at once; one :class:`MissingDeps` names every one that is not Live.

        ``refs`` may map each input to the partitions it is read into (``{"raw/1": "daily/1", ...}``): a batch
        reads every partition's own input in one call, and learns of all its missing inputs at once."""
        if isinstance(refs, str):
            self._protocol(f"read_many() takes a list of refs, got the str {refs!r}; use read() for one ref")
        into_of = self._into_targets
        pairs: list[tuple[str, set[str] | None]]
        if isinstance(refs, Mapping):
            pairs = [(ref, into_of(target)) for ref, target in refs.items()]
        else:
            targets = into_of(into)
            pairs = [(ref, targets) for ref in refs]
        # The hot path of lineage (a batch of 500 reads per run): locals, and the resolver's status compared as
        # the str it is.
        got: dict[str, int] = {}
        missing: list[str] = []
        read = self._read
        into_map = self._into
        resolve = self._resolve_one
        for ref, targets in pairs:
            status, generation = resolve(ref)
            if status != "Live":
                self._not_live.setdefault(ref, str(status))
                missing.append(ref)
                continue
            got[ref] = read.setdefault(ref, generation)
            if targets is None:
                into_map[ref] = None
            elif ref not in into_map:
                into_map[ref] = set(targets)
            else:
                cur = into_map[ref]
                if cur is not None:
                    cur |= targets
        if missing:
            raise MissingDeps(missing)
        return got

    def fail(self, ref: str, reason: str) -> None:
        """Report that partition ``ref`` of this run could not be built, for ``reason``; the run's other
        partitions are built when the job returns. One bad day does not fail a batch: the retry policy then
        concerns only the failed partitions. If every partition fails, the run fails."""
        if ref not in self._own_refs():
            self._protocol(f"fail({ref!r}): {ref!r} is not a partition of this run "
                           f"({', '.join(self.partitions[:5])}{', ...' if len(self.partitions) > 5 else ''})")
        if not isinstance(reason, str) or not reason.strip():
            self._protocol(f"fail({ref!r}, {reason!r}): give the reason as a non-empty str")
        self._failed.setdefault(ref, reason.strip())

    def _own_refs(self) -> frozenset[str]:
        if self._own is None:
            self._own = frozenset(self.partitions)
        return self._own

    def _protocol(self, problem: str) -> NoReturn:
        self._problem = self._problem or problem
        raise JobProtocolError(f"job run {self.job_run_id}: {problem}")

    def _into_targets(self, into: str | Iterable[str] | None) -> set[str] | None:
        if into is None:
            return None
        if type(into) is str and into in (self._own if self._own is not None else self._own_refs()):
            return {into}
        targets = {into} if isinstance(into, str) else set(into)
        stray = sorted(t for t in targets if t not in self._own_refs()) if all(
            isinstance(t, str) for t in targets) else [repr(next(t for t in targets if not isinstance(t, str)))]
        if stray:
            self._protocol(f"into={into!r}: {stray[0]} is not a partition of this run; name the partitions the "
                           f"input is read into")
        if not targets:
            self._protocol("into=[] names no partition; leave it out to read into every partition of the run")
        return targets

    def _resolve_one(self, ref: object) -> tuple[str, int]:
        if type(ref) is not str and not isinstance(ref, str):
            self._protocol(f"read({ref!r}): a partition ref is a str")
        if ref in (self._own if self._own is not None else self._own_refs()):
            self._protocol(f"read({ref!r}): {ref!r} is one of the partitions this run builds; a job cannot read "
                           f"its own output (read its upstream partitions)")
        if self._resolve is None:  # a context made outside a runtime: syntax only, generation unknown
            from actors import InvalidRef, validate_ref

            try:
                validate_ref(ref)
            except InvalidRef as e:
                self._protocol(f"cannot read {ref!r}: {e}")
            return "Live", 0
        try:
            return self._resolve(ref)
        except JobProtocolError as e:
            self._protocol(str(e))

    def _outcome(self, outcome: RunOutcome, *, on_its_own: bool) -> RunOutcome:
        """``outcome`` as the job's exit gave it, corrected by what the job did through this context, with what
        it read attached.

        A protocol error fails the run. A read of a partition that was not Live makes the run ``dep_miss`` on it
        when the job ended ``on_its_own`` (it returned, raised MissingDeps, or a command exited by itself; not a
        deadline kill or another exception of a callable): its output was built from data that must not be read.
        Failed partitions make a success partial, or a failure if none is left.
        """
        if not (self._read or self._into or self._failed or self._not_live or self._problem is not None
                or outcome.read or outcome.into):
            return outcome  # the job used nothing of its context: its outcome as it is (replace() costs 8 us)
        read = dict(self._read)
        into: dict[str, tuple[str, ...]] = {}
        order: dict[str, int] | None = None
        for ref, parts in self._into.items():
            if parts is None or ref not in read:
                continue
            if len(parts) == 1:  # the usual case: an input read into its own partition
                into[ref] = tuple(parts)
                continue
            if order is None:
                order = {p: i for i, p in enumerate(self.partitions)}
            into[ref] = tuple(sorted(parts, key=order.__getitem__))
        if self._problem is not None:
            return replace(outcome, status="failed", reason=f"job protocol error: {self._problem}", missing=(),
                           error_type="JobProtocolError", read=read, into=into, failed={})
        if self._not_live and on_its_own and outcome.status != "canceled":
            missing = tuple(dict.fromkeys((*outcome.missing, *self._not_live)))
            shown = ", ".join(f"{r} ({s})" for r, s in list(self._not_live.items())[:5])
            return replace(outcome, status="dep_miss", missing=missing, read=read, into=into, failed={},
                           reason=f"{_missing_reason(missing)} (it read {shown}: an input must be Live)")
        if outcome.status == "succeeded" and self._failed:
            failed = {p: self._failed[p] for p in self.partitions if p in self._failed}
            if len(failed) == len(self.partitions):
                first, why = next(iter(failed.items()))
                more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
                return replace(outcome, status="failed", reason=f"every partition failed: {first}: {why}{more}",
                               read=read, into=into, failed={})
            return replace(outcome, read=read, into=into, failed=failed)
        return replace(outcome, read=read, into=into)

    def _begin(self) -> None:
        self._started = self._last_heartbeat = self.clock.now()


JobCallable: TypeAlias = Callable[[JobContext], Awaitable[None]]


def _check_limits(timeout: float | None, heartbeat_timeout: float | None) -> None:
    for what, value in (("timeout", timeout), ("heartbeat_timeout", heartbeat_timeout)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf
        ):
            raise ValueError(f"{what} must be a number of seconds > 0, or None for no limit, got {value!r}")


class _Watchdog:
    """Cancels ``target`` when the run outlives ``timeout`` or goes ``heartbeat_timeout`` without a heartbeat.

    Sleeps on the run's clock until the earliest deadline, then looks again (a heartbeat meanwhile moved it).
    ``expired`` is the reason once it fired.
    """

    def __init__(self, ctx: JobContext, timeout: float | None, heartbeat_timeout: float | None) -> None:
        _check_limits(timeout, heartbeat_timeout)
        self.ctx = ctx
        self.timeout = timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.expired: str | None = None
        self._scope = anyio.CancelScope()

    async def run(self, target: anyio.CancelScope) -> None:
        ctx = self.ctx
        with self._scope:
            while True:
                due: list[tuple[float, str]] = []
                if self.timeout is not None:
                    due.append((ctx._started + self.timeout, f"timed out after {float(self.timeout)} s"))
                if self.heartbeat_timeout is not None:
                    due.append((ctx.last_heartbeat + self.heartbeat_timeout,
                                f"no heartbeat for {float(self.heartbeat_timeout)} s"))
                if not due:
                    return
                when, reason = min(due, key=lambda d: d[0])
                now = ctx.clock.now()
                if now >= when:
                    self.expired = reason
                    target.cancel()
                    return
                await ctx.clock.sleep(when - now)

    def stop(self) -> None:
        self._scope.cancel()


# -- in-process jobs ---------------------------------------------------------------------------------------


async def run_callable(
    fn: JobCallable, ctx: JobContext, *, timeout: float | None, heartbeat_timeout: float | None
) -> RunOutcome:
    """Run the async job ``fn(ctx)`` to its outcome.

    Returns normally -> ``succeeded`` (partly, with the partitions it reported through ``ctx.fail``);
    raises :class:`MissingDeps` -> ``dep_miss``; raises anything else -> ``failed`` (traceback logged at info);
    outlives ``timeout`` or ``heartbeat_timeout`` without ``ctx.heartbeat()`` (both measured on ``ctx.clock``
    from now) -> cancelled, ``failed``. What it did through ``ctx`` (reads, failures, protocol errors) then
    corrects that, see :meth:`JobContext._outcome`. A cancellation of the caller's scope cancels the job and
    propagates. Raises :class:`TypeError` if ``fn`` is not async.
    """
    if not _is_async_callable(fn):
        raise TypeError(
            f"job {ctx.job_name!r}: {fn!r} is not an async function; define it with `async def` "
            f"(wrap blocking code with anyio.to_thread.run_sync)"
        )
    _check_limits(timeout, heartbeat_timeout)
    # The run's bound logger is made only for a line that is emitted (binding one costs as much as a no-op job).
    debug = _JOB_LOG.enabled("debug")
    ctx._begin()
    if debug:
        ctx.log.debug("job started", partitions=ctx.partitions, attempt=ctx.attempt)
    if timeout is None and heartbeat_timeout is None:
        # Nothing to watch: no watchdog (nor its cancel scope), no task group (a no-op job costs half as much).
        outcome = await _call(fn, ctx)
        if debug:
            ctx.log.debug("job finished", status=outcome.status, reason=outcome.reason)
        return ctx._outcome(outcome, on_its_own=outcome.error_type in (None, "MissingDeps"))
    watchdog = _Watchdog(ctx, timeout, heartbeat_timeout)
    outcome = _SUCCEEDED  # stays if the watchdog cancels the job first (then failed, below)
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as job_scope:
            tg.start_soon(watchdog.run, job_scope)
            try:
                outcome = await _call(fn, ctx)
            finally:
                watchdog.stop()
    on_its_own = outcome.error_type in (None, "MissingDeps")
    if watchdog.expired is not None:
        outcome = RunOutcome("failed", reason=watchdog.expired)
        on_its_own = False
        ctx.log.info("job killed", reason=watchdog.expired)
    if debug:
        ctx.log.debug("job finished", status=outcome.status, reason=outcome.reason)
    return ctx._outcome(outcome, on_its_own=on_its_own)


_JOB_LOG = get_logger("wantbuild.job")
"""The jobs' logger, unbound: asked whether a level is on before a run binds its own."""

_SUCCEEDED = RunOutcome("succeeded")
"""A plain success, shared (an outcome is frozen and its empty mappings are never written to)."""


async def _call(fn: JobCallable, ctx: JobContext) -> RunOutcome:
    """``fn(ctx)``'s outcome from how it returned: normally, by MissingDeps, or by another exception."""
    try:
        await fn(ctx)
    except MissingDeps as e:
        return _dep_miss_outcome(e, ctx)
    except Exception as e:
        outcome = RunOutcome("failed", reason=_raised(e), error_type=type(e).__name__)
        ctx.log.info("job failed", reason=outcome.reason, exc_info=e)
        return outcome
    return _SUCCEEDED


def _raised(e: BaseException) -> str:
    message = str(e)
    if len(message) > _MAX_REASON:
        message = message[:_MAX_REASON] + "…"
    return f"raised {type(e).__name__}: {message}" if message else f"raised {type(e).__name__}"


def _dep_miss_outcome(e: MissingDeps, ctx: JobContext) -> RunOutcome:
    if e.problem is not None:
        reason = f"raised MissingDeps with an invalid list of refs: {e.problem}"
        ctx.log.info("job failed", reason=reason, exc_info=e)
        return RunOutcome("failed", reason=reason, error_type="MissingDeps")
    missing = tuple(dict.fromkeys(e.refs))
    return RunOutcome("dep_miss", reason=_missing_reason(missing), missing=missing)


def _missing_reason(missing: tuple[str, ...]) -> str:
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return f"missing dependencies: {shown}"


# -- command jobs ------------------------------------------------------------------------------------------


async def run_command(
    argv: Sequence[str],
    ctx: JobContext,
    *,
    log_dir: Path,
    timeout: float | None,
    heartbeat_timeout: float | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    kill_grace: float = 2.0,
    on_spawn: Callable[[int], None] | None = None,
) -> RunOutcome:
    """Run ``argv + ctx.partitions`` as a subprocess in its own process group, following the job protocol.

    ``env`` adds variables to the runtime's environment; ``WANTBUILD_JOB_RUN_ID``, ``WANTBUILD_JOB``,
    ``WANTBUILD_ATTEMPT`` and ``WANTBUILD_FENCE`` (the fencing token) are always set. On Linux the process is
    started with ``PR_SET_PDEATHSIG`` (through ``setpriv``), so it is killed if the runtime dies without
    stopping it; ``on_spawn(pid)`` is called once it runs (its pid is its process group's id).
    stdout goes to ``<log_dir>/<job_run_id>.stdout`` (its protocol
    lines are also acted on), stderr to ``<log_dir>/<job_run_id>.stderr``. On timeout or missed heartbeat
    (measured on ``ctx.clock``) the process group is killed and the run ``failed``; on cancellation of the
    caller's scope it is killed and the cancellation propagates. A command that cannot be started is a
    ``failed`` outcome, not an exception.
    """
    if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
        raise TypeError(f"job {ctx.job_name!r}: argv must be a non-empty sequence of str, got {argv!r}")
    if not 0 <= kill_grace < math.inf:
        raise ValueError(f"kill_grace must be a number of seconds >= 0, got {kill_grace!r}")
    watchdog = _Watchdog(ctx, timeout, heartbeat_timeout)
    log = ctx.log
    stdout_path, stderr_path = _log_paths(log_dir, ctx.job_run_id)
    command = [*argv, *ctx.partitions]
    child_env = {
        **os.environ,
        **(env or {}),
        "WANTBUILD_JOB_RUN_ID": ctx.job_run_id,
        "WANTBUILD_JOB": ctx.job_name,
        "WANTBUILD_ATTEMPT": str(ctx.attempt),
        "WANTBUILD_FENCE": ctx.fence_token,
    }

    try:
        out_file, err_file = _open_logs(stdout_path, stderr_path)
    except OSError as e:  # the runtime's problem, but one run's outcome: do not take the runtime down
        reason = f"cannot open the job's log files in {os.fspath(log_dir)!r}: {e.strerror or e}"
        log.warning("job not started", reason=reason)
        return RunOutcome("failed", reason=reason, error_type=type(e).__name__)
    try:
        read_fd, write_fd = os.pipe()
    except BaseException:
        out_file.close()
        err_file.close()
        raise
    try:
        os.set_blocking(read_fd, False)
        ctx._begin()
        process = await anyio.open_process(
            _with_death_signal(command, cwd, child_env), stdin=subprocess.DEVNULL, stdout=write_fd,
            stderr=err_file, cwd=cwd, env=child_env, start_new_session=True,
        )
    except OSError as e:
        os.close(read_fd)
        out_file.close()
        reason = _start_failure(argv[0], cwd, e)
        err_file.write(f"wantbuild: {reason}\n".encode())
        log.info("job failed to start", command=command, reason=reason)
        return RunOutcome("failed", reason=reason, error_type=type(e).__name__, stdout_path=str(stdout_path),
                          stderr_path=str(stderr_path))
    except BaseException:
        os.close(read_fd)
        out_file.close()
        raise
    finally:
        os.close(write_fd)
        err_file.close()

    log.debug("job started", command=command, pid=process.pid, attempt=ctx.attempt)
    if on_spawn is not None:
        on_spawn(process.pid)
    reader = _StdoutReader(read_fd, out_file, ctx)
    killed_for: str | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader.run)
            try:
                with anyio.CancelScope() as job_scope:
                    tg.start_soon(watchdog.run, job_scope)
                    await process.wait()
            finally:
                watchdog.stop()
                # Still running: the watchdog fired, or the caller is cancelling us. Exited: it won any race.
                if process.returncode is None:
                    killed_for = watchdog.expired or "canceled"
                try:
                    with anyio.CancelScope(shield=True):
                        await _stop_group(process, kill_grace, killed_for, log)
                finally:
                    reader.finish_within(_STDOUT_DRAIN_LIMIT)
    finally:
        if process.returncode is None:  # _stop_group raised: still leave nothing behind
            _signal_group(process.pid, signal.SIGKILL)
        os.close(read_fd)
        out_file.close()
        with anyio.CancelScope(shield=True):
            await process.aclose()

    code = process.returncode
    if reader.cut_off:
        log.warning("job's stdout still open after its process group ended; later output is not kept",
                    path=str(stdout_path))
    status: Status = "failed"
    missing: tuple[str, ...] = ()
    if killed_for is not None:  # a watchdog's reason: a cancellation has propagated above
        reason = killed_for
    elif code == 0:
        status, reason = "succeeded", ""
        if reader.missing or reader.problem:
            log.info("job exited 0 after reporting missing deps; exit 0 means built, the report is ignored")
    elif reader.problem is not None:
        reason = f"{_exit_reason(code)}; invalid missing_deps line: {reader.problem}"
    elif reader.missing:
        missing = tuple(reader.missing)
        status, reason = "dep_miss", _missing_reason(missing)
    else:
        reason = _exit_reason(code)
    log.debug("job finished", status=status, reason=reason, exit_code=code)
    outcome = RunOutcome(status, reason=reason, missing=missing, exit_code=code, stdout_path=str(stdout_path),
                         stderr_path=str(stderr_path))
    return ctx._outcome(outcome, on_its_own=killed_for is None)


_SETPRIV: str | None = shutil.which("setpriv") if sys.platform == "linux" else None
"""util-linux's setpriv sets PR_SET_PDEATHSIG, then execs the job (no extra process, ~1 ms). A ``preexec_fn``
calling prctl would do the same without it, but is unsafe in a process with threads (aiosqlite's)."""


def _with_death_signal(command: list[str], cwd: Path | None, env: Mapping[str, str]) -> list[str]:
    """``command`` run so that the kernel kills it when the runtime dies (Linux), else unchanged.

    The program is looked up first, so a missing one fails to start exactly as without the wrapper.
    """
    if _SETPRIV is None:
        return command
    program = command[0]
    if os.sep in program:
        path = os.path.join(os.fspath(cwd), program) if cwd is not None else program
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if not os.access(path, os.X_OK) or os.path.isdir(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    # The signal is armed after the fork: a runtime killed in between would leave the job running. So once it is
    # armed, a shell checks that its parent is still this process (else it exits: nobody is waiting), then
    # execs the job (same pid, same argv as without the wrapper).
    return [_SETPRIV, "--pdeathsig", "KILL", "--", _SH, "-c", _PARENT_CHECK, "wantbuild-job", str(os.getpid()),
            *command]


_SH = shutil.which("sh") or "/bin/sh"
_PARENT_CHECK = '[ "$PPID" = "$1" ] || exit 125; shift; exec "$@"'
"""Run by ``sh -c`` with the runtime's pid, then the job's argv: exit 125 if the runtime died before the death
signal was armed, else become the job."""


def _log_paths(log_dir: Path, job_run_id: str) -> tuple[Path, Path]:
    if not job_run_id or "/" in job_run_id or "\0" in job_run_id or job_run_id in (".", ".."):
        raise ValueError(f"job_run_id {job_run_id!r} cannot name a log file")
    return log_dir / f"{job_run_id}.stdout", log_dir / f"{job_run_id}.stderr"


def _open_logs(stdout_path: Path, stderr_path: Path) -> tuple[IO[bytes], IO[bytes]]:
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    out_file = open(stdout_path, "wb")  # noqa: SIM115 - closed by run_command once the output is drained
    try:
        return out_file, open(stderr_path, "wb")  # the child writes it; closed once it is spawned
    except BaseException:
        out_file.close()
        raise


def _start_failure(program: str, cwd: Path | None, e: OSError) -> str:
    what = e.strerror or str(e)
    if cwd is not None and e.filename is not None and os.fsdecode(e.filename) == os.fspath(cwd):
        return f"cannot run {program!r}: working directory {os.fspath(cwd)!r}: {what}"
    return f"cannot run {program!r}: {what}"


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-code} ({name})"
    return f"exit code {code}"


class _StdoutReader:
    """Copies the job's stdout to its log file and acts on protocol lines (heartbeat, missing_deps, read,
    failed).

    Runs shielded: a cancelled caller still gets the output up to the kill. :meth:`finish_within` bounds how
    long it keeps reading once the job's process group is gone.
    """

    def __init__(self, fd: int, out: IO[bytes], ctx: JobContext) -> None:
        self.fd = fd
        self.out = out
        self.ctx = ctx
        self.missing: dict[str, None] = {}
        self.problem: str | None = None
        self.cut_off = False
        self.write_error: OSError | None = None
        self._partial = bytearray()
        self._skipping = False  # inside an over-long line: not a protocol line
        self._scope = anyio.CancelScope(shield=True)

    async def run(self) -> None:
        with self._scope:
            while True:
                await anyio.wait_readable(self.fd)
                try:
                    chunk = os.read(self.fd, _READ_SIZE)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                self._keep(chunk)
                self._feed(chunk)
        if self._scope.cancelled_caught:
            self.cut_off = True
        elif self._partial and not self._skipping:
            self._line(bytes(self._partial))

    def _keep(self, chunk: bytes) -> None:
        if self.write_error is not None:
            return
        try:
            self.out.write(chunk)
            self.out.flush()
        except OSError as e:  # disk full, say: the job goes on, its log is incomplete
            self.write_error = e
            self.ctx.log.warning("cannot write the job's stdout log; later output is not kept", error=str(e))

    def finish_within(self, seconds: float) -> None:
        self._scope.deadline = min(self._scope.deadline, anyio.current_time() + seconds)

    def _feed(self, chunk: bytes) -> None:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if not self._skipping:
                self._partial += chunk[start:end]
                self._line(bytes(self._partial))
            self._partial.clear()
            self._skipping = False
            start = end + 1
        if not self._skipping:
            self._partial += chunk[start:]
            if len(self._partial) > _MAX_PROTOCOL_LINE:
                self._partial.clear()
                self._skipping = True

    def _line(self, line: bytes) -> None:
        text = line.strip()
        if not text.startswith(b"{"):
            return
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # not JSON (or absurdly nested): plain output
            return
        if not isinstance(message, dict):
            return
        if message.get("heartbeat") is True:
            self.ctx.heartbeat()
        if "missing_deps" in message:
            refs = message["missing_deps"]
            if isinstance(refs, list):
                problem = _refs_problem(refs)
            else:
                problem = f"expected a list of partition refs, got {refs!r}"
            if problem is not None:
                self.problem = self.problem or problem
            else:
                self.missing.update(dict.fromkeys(refs))
        if "read" in message:
            self._read(message["read"], message.get("into"))
        if "failed" in message:
            self._fail(message["failed"])

    def _read(self, refs: object, into: object) -> None:
        """``{"read": ["raw/1", ...], "into": [...]}``: record the reads (``ctx.read_many``); a ref that is not
        Live is recorded as such (the run ends dep_miss on it), a protocol error fails the run."""
        ctx = self.ctx
        try:
            if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
                ctx._protocol(f"invalid read line: expected a non-empty list of partition refs, got {refs!r}")
            if into is not None and not isinstance(into, str) and (
                    not isinstance(into, list) or not all(isinstance(r, str) for r in into)):
                ctx._protocol(f"invalid read line: into must be a ref or a list of refs, got {into!r}")
            ctx.read_many(refs, into=into)
        except (MissingDeps, JobProtocolError):
            pass  # recorded in ctx: the outcome says what it means

    def _fail(self, failed: object) -> None:
        """``{"failed": {"daily/3": "reason", ...}}``: these partitions of the batch could not be built."""
        ctx = self.ctx
        try:
            if not isinstance(failed, dict) or not failed:
                ctx._protocol(f"invalid failed line: expected an object of partition ref -> reason, got {failed!r}")
            for ref, reason in failed.items():
                ctx.fail(ref, reason)
        except JobProtocolError:
            pass  # recorded in ctx: the run fails with it


async def _stop_group(
    process: anyio.abc.Process, kill_grace: float, why: str | None, log: LibraryLogger
) -> None:
    """Stop the job's process group (SIGTERM, ``kill_grace``, SIGKILL) if anything of it lives; reap the leader.

    ``why`` is None when the leader exited on its own: then only members it left behind are stopped.
    """
    pgid = process.pid  # start_new_session=True: the leader's pid is the group's id
    if why is None and not await _group_alive(pgid):
        await process.wait()
        return
    if why is None:
        log.warning("job exited leaving processes in its process group; stopping them", pgid=pgid)
    else:
        log.info("killing job process group", pgid=pgid, reason=why)
    _signal_group(pgid, signal.SIGTERM)
    _signal_group(pgid, signal.SIGCONT)
    with anyio.move_on_after(kill_grace):
        await process.wait()
        await _group_gone(pgid)
    if process.returncode is None or await _group_alive(pgid):
        log.warning("job process group outlived SIGTERM; sending SIGKILL", pgid=pgid, grace=kill_grace)
        _signal_group(pgid, signal.SIGKILL)
        await process.wait()
        with anyio.move_on_after(_SIGKILL_WAIT):
            await _group_gone(pgid)
        if await _group_alive(pgid):
            log.warning("job processes still alive after SIGKILL (in uninterruptible sleep?)", pgid=pgid)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


async def _group_gone(pgid: int) -> None:
    """Return once no process of the group is alive. Polls: the OS tells nobody but the parent of an exit."""
    while True:
        if not await _group_alive(pgid):
            return
        await anyio.sleep(_POLL_INTERVAL)


async def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is alive (zombies awaiting their reaper do not count on Linux)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return await anyio.to_thread.run_sync(_group_has_live_member, pgid)


def _group_has_live_member(pgid: int) -> bool:
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no procfs: a member exists, dead or alive
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False
