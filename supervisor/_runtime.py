"""The runtime: one event log, its World, the actor system, the supervisor and job execution, together.

``async with open_runtime(path, graph) as rt`` opens (or creates) the log, replays it into a World, marks the
runs that were in flight when the previous runtime died ``Lost`` (their partitions return to Missing), and lets
the supervisor carry on until every want is terminal. Leaving the block shuts down cleanly: no new runs start,
running ones are canceled (their processes killed), everything is committed, no task survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import hashlib
import itertools
import math
import os
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from actors import (
    ActorFailure,
    ActorStopped,
    AskTimeout,
    CancelRun,
    CancelTaint,
    Clock,
    CollisionPolicy,
    Committed,
    Completion,
    CreateSchedule,
    CreateTaint,
    CreateWant,
    EndWant,
    EntityEnv,
    EventFilter,
    Faults,
    Hooks,
    IllegalTransition,
    JobRunActor,
    JobRunState,
    Kernel,
    LineageDirection,
    LineageGraph,
    MarkLost,
    PartitionActor,
    PartitionSet,
    PartitionState,
    PartitionStatus,
    Restored,
    ScheduleActor,
    ScheduleState,
    Snapshotter,
    Stale,
    SystemClock,
    TaintActor,
    TaintCreated,
    TaintState,
    WantActor,
    WantCreated,
    WantState,
    World,
    lineage,
    rebuild,
    stale,
    validate_refs,
)
from actors._want import Anchor
from eventlog import (
    CommandCompletedError,
    CommitError,
    Durability,
    EventLog,
    LeaseLost,
    Log,
    LogClosedError,
    Record,
    SnapshotInfo,
    WantbuildError,
    get_logger,
    is_postgres,
    log_label,
)

from ._execution_glue import LocalExecution
from ._executors import ExecutionRouter, Executor, ExecutorEnv
from ._graph import Graph
from ._hints import did_you_mean, sole_error
from ._ids import IdSource
from ._scheduler import Scheduler, created_event
from ._schedules import Schedule, ScheduleError, check_schedule
from ._sets import check_set, parse_partition_set
from ._standby import open_log_and_world
from ._supervisor import ActorCrashed, CommittedBatch, Drain, GaveUp, Pending, Recover, Supervisor
from ._timers import Timers

log = get_logger("wantbuild.runtime")

SUPERVISOR = ("supervisor", "supervisor")


class UnknownEntity(WantbuildError, LookupError):
    """No want, partition or job run with that id in this log."""


class RuntimeClosed(WantbuildError, RuntimeError):
    """The runtime is shutting down or closed."""


@dataclass(frozen=True)
class Recovery:
    """What opening an existing log recovered (rule 8).

    ``events_replayed`` counts the log's events before recovery wrote its own; ``fenced`` says what was done
    about job processes the previous runtime left running (see ``Execution.fence``).
    """

    events_replayed: int
    lost_runs: tuple[str, ...]
    requeued_partitions: tuple[str, ...]
    active_wants: tuple[str, ...]
    fenced: tuple[str, ...] = ()
    restored: Restored | None = None
    """How the World was rebuilt: from which snapshot (and which were skipped, why), how many events replayed."""


class WantHandle:
    """A submitted want. ``await handle.done()`` returns its terminal state."""

    def __init__(self, rt: Runtime, want_id: str) -> None:
        self._rt = rt
        self.want_id = want_id

    @property
    def state(self) -> WantState:
        return self._rt.get_want(self.want_id)

    async def done(self, timeout: float | None = None) -> WantState:
        return await self._rt.wait_want(self.want_id, timeout=timeout)

    def __repr__(self) -> str:
        return f"WantHandle({self.want_id!r}, {self.state.status})"


class Runtime:
    """The embedding API's object. Create it with :func:`open_runtime` (``wantbuild.open``)."""

    def __init__(self, log_: Log, world: World, graph: Graph, clock: Clock, kernel: Kernel,
                 hooks: Hooks, ids: IdSource, recovery: Recovery) -> None:
        self.log = log_
        self.world = world
        self.graph = graph
        self.clock = clock
        self.kernel = kernel
        self.hooks = hooks
        self.ids = ids
        self.recovery = recovery
        self.snapshotter = Snapshotter(log_, world, every_events=None, every_seconds=None)
        """Takes the World's snapshots (in the background when ``open`` was given ``snapshot_every`` or
        ``snapshot_interval``)."""
        self.closing = False
        self.crashed = False
        self.lease_lost: LeaseLost | None = None
        self._want_events: dict[str, anyio.Event] = {}
        self._run_events: dict[str, anyio.Event] = {}
        self._taint_events: dict[str, anyio.Event] = {}
        self._settled = anyio.Event()
        self.failures: list[ActorFailure] = []
        """Actors the runtime gave up on (stopped after repeated crashes); what depended on them was ended with
        the error as its reason."""
        self._timers: Timers | None = None
        self._given_up: dict[tuple[str, str], int] = {}
        self.scheduler = Scheduler(self)

    # -- schedules (issue 16) -----------------------------------------------------------------------------
    async def add_schedule(self, schedule: Schedule, *, source: str = "api",
                           _command: Completion | None = None) -> ScheduleState:
        """Record a schedule (checked against the graph first: ScheduleError names the problem, nothing is
        written); its first tick is the cron's first fire after now. A schedule of that name that exists already
        is an error (delete it first)."""
        self._check_open()
        check_schedule(schedule, now=self.clock.now(), graph=self.graph)
        existing = self.world.schedules.get(schedule.name)
        if existing is not None:
            what = "was deleted (a name is never reused)" if existing.terminal else "exists"
            raise ScheduleError(f"schedule {schedule.name!r} {what}; pick another name"
                                + ("" if existing.terminal else f", or delete it first (`wantbuild schedule rm "
                                                                 f"{schedule.name}`)"))
        st: ScheduleState = await self.kernel.ask("schedule", schedule.name,
                                                  CreateSchedule(created_event(schedule, source), _command))
        self.scheduler.wake()
        return st

    async def pause_schedule(self, name: str, reason: str = "paused by request") -> ScheduleState:
        """Pause a schedule: no tick until it is resumed (ticks missed meanwhile are not caught up)."""
        return await self._change_schedule(name, "pause", reason)

    async def resume_schedule(self, name: str, reason: str = "resumed by request") -> ScheduleState:
        return await self._change_schedule(name, "resume", reason)

    async def delete_schedule(self, name: str, reason: str = "deleted by request") -> ScheduleState:
        """Delete a schedule for good (its wants go on); its name cannot be used again."""
        return await self._change_schedule(name, "delete", reason)

    def get_schedule(self, name: str) -> ScheduleState:
        st = self.world.schedules.get(name)
        if st is None:
            hint = did_you_mean(name, self.world.schedules)
            raise UnknownEntity(f"no schedule {name!r} in {self.log.path}{'; ' + hint if hint else ''}")
        return st

    async def _change_schedule(self, name: str, how: str, reason: str,
                               _command: Completion | None = None) -> ScheduleState:
        self._check_open()
        self.get_schedule(name)
        st: ScheduleState = await self.scheduler.change(name, how, reason, _command)
        return st

    # -- commands ---------------------------------------------------------------------------------------
    async def want(self, refs: Iterable[str] | str | PartitionSet, *, ttl: float | None = None,
                   sla: float | None = None, comment: str = "", source: str = "api", command_id: int | None = None,
                   priority: int = 0, data_time: float | None = None, anchor: Anchor = "created",
                   schedule: str | None = None, tick: float | None = None, want_id: str | None = None) -> WantHandle:
        """Submit a want for ``refs``; returns once ``WantCreated`` is committed.

        ``refs`` is a list of refs, or a :class:`~actors.PartitionSet` (``wantbuild.parse_partition_set(graph,
        ["daily/2026-01-01..2026-11-30"])``): a set with ranges is stored as one event whatever its size and
        planned lazily. ``priority``: higher is planned first. ``data_time`` (seconds since the epoch) defaults to
        the latest data time of the refs (from their ``date``/``hour`` typed parameter); ``anchor="data_time"``
        makes ``ttl`` and ``sla`` count from it instead of from creation.
        """
        self._check_open()
        parts: PartitionSet | None = refs if isinstance(refs, PartitionSet) and refs.ranges else None
        if isinstance(refs, PartitionSet) and parts is None:
            refs = refs.refs
        refs_t: tuple[str, ...] = ()
        if parts is not None:
            check_set(self.graph, parts, parts.refs)
            derived = _data_time(self.graph, parts.refs, parts.data_time)
        else:
            assert not isinstance(refs, PartitionSet)
            refs_t = validate_refs([refs] if isinstance(refs, str) else refs)
            # Kept by job_of until the supervisor has planned them (it says so itself once the want is indexed).
            self.graph.in_flight(self.graph.refs_in_flight + len(refs_t))
            derived = _data_time(self.graph, refs_t, None)  # job_of of each: NoJobForRef names the ref and patterns
        for name, val in (("ttl", ttl), ("sla", sla)):
            if val is not None and (not math.isfinite(val) or val <= 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {val!r}")
        if anchor not in ("created", "data_time"):
            raise ValueError(f"anchor must be 'created' or 'data_time', got {anchor!r}")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ValueError(f"priority must be an int (higher is planned first), got {priority!r}")
        want_id = want_id or self.ids.next_want()
        ev = WantCreated(refs=refs_t, source=source, ttl=ttl, sla=sla, comment=comment, command_id=command_id,
                         parts=None if parts is None else parts.to_json(),
                         data_time=data_time if data_time is not None else derived, anchor=anchor,
                         priority=priority, schedule=schedule, tick=tick)
        # A want made for an inbox command completes the command in WantCreated's own transaction.
        size = len(parts) if parts is not None else len(refs_t)
        done = None if command_id is None else (command_id, {"ok": True, "want_id": want_id, "size": size})
        await self.kernel.ask("want", want_id, CreateWant(ev, done))
        return WantHandle(self, want_id)

    async def cancel(self, want_id: str, reason: str = "canceled by request", *,
                     _command: Completion | None = None) -> WantState:
        """Cancel an active want; returns its state once ``WantCanceled`` is committed.

        A want that is already terminal (it may have finished a moment ago: cancel races with completion) is
        left as it is and its state returned, so check ``.status``; nothing is written. Runs that no active
        want needs any more are canceled. :class:`UnknownEntity` if there is no such want."""
        self._check_open()
        self.get_want(want_id)
        st: WantState = await self.kernel.ask("want", want_id, EndWant("cancel", reason, _command))
        return st

    async def taint(self, refs: Iterable[str] | str, reason: str, *, cascade: bool = True, depth: int | None = None,
                    wait: bool = True, timeout: float | None = None, command_id: int | None = None) -> TaintState:
        """Taint Live partitions ("do not read") and, with ``cascade`` (the default), every Live partition built from
        them through the lineage, ``depth`` levels down at most (None: all). Returns the Taint entity's state once
        the first wave is applied (``wait=False``: once it is created; :meth:`wait_taint` waits for it).

        One event creates the taint (``TaintCreated``; with ``command_id``, that inbox command completes in the
        same transaction); its actor taints the partitions level by level, one event each. Active wants covering
        tainted partitions rebuild them, upstream first. :class:`IllegalTransition` if a ref is not Live."""
        self._check_open()
        refs_t = tuple(dict.fromkeys(validate_refs([refs] if isinstance(refs, str) else refs)))
        if not refs_t:
            raise ValueError("taint needs at least one partition ref")
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"a taint needs a reason (kept in the log), got {reason!r}")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
            raise ValueError(f"depth must be a number of lineage levels >= 0 (or None: all), got {depth!r}")
        gens = []
        for ref in refs_t:
            st = self.world.partition(ref)
            if st.status is not PartitionStatus.LIVE:
                raise IllegalTransition("partition", ref, st.status, "PartitionTainted",
                                        "only a Live partition can be tainted")
            gens.append(st.generation)
        taint_id = self.ids.next_taint()
        ev = TaintCreated(refs=refs_t, generations=tuple(gens), reason=reason.strip(), cascade=bool(cascade),
                          depth=depth, command_id=command_id)
        command = None if command_id is None else (command_id, {"ok": True, "taint_id": taint_id,
                                                                "partitions": list(refs_t)})
        created: TaintState = await self.kernel.ask("taint", taint_id, CreateTaint(ev, command))
        if not wait:
            return created
        return await self.wait_taint(taint_id, timeout=timeout)

    async def cancel_taint(self, taint_id: str, reason: str = "canceled by request", *, wait: bool = True,
                           timeout: float | None = None, command_id: int | None = None) -> TaintState:
        """Cancel a taint: the partitions it tainted that were not rebuilt meanwhile (and that no other active taint
        reaches) go back to Live. Returns the state once that is done (``wait=False``: once it is canceled). A
        canceled taint is returned as it is; :class:`UnknownEntity` if there is no such taint."""
        self._check_open()
        st = self.get_taint(taint_id)
        if st.terminal:
            return st
        command = None if command_id is None else (command_id, {"ok": True, "taint_id": taint_id,
                                                                "status": "Canceled"})
        canceled: TaintState = await self.kernel.ask("taint", taint_id, CancelTaint(reason, command))
        if not wait:
            return canceled
        return await self.wait_taint(taint_id, timeout=timeout)

    async def wait_taint(self, taint_id: str, timeout: float | None = None) -> TaintState:
        """Wait until the taint's work is done: its first wave applied (``Applied``), or, once canceled, its
        partitions restored; return that state. ``TimeoutError`` after ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            while True:
                st = self.get_taint(taint_id)
                if (st.active and st.waves > 0) or (not st.active and st.restored is not None):
                    return st
                ev = self._taint_events.setdefault(taint_id, anyio.Event())
                await ev.wait()

    def get_taint(self, taint_id: str) -> TaintState:
        """The taint's state; :class:`UnknownEntity` if there is none."""
        st = self.world.taints.get(taint_id)
        if st is None:
            raise UnknownEntity(f"no taint {taint_id!r} in {self.log.path}; list them with `wantbuild taint list`")
        return st

    def taints(self, *statuses: str) -> list[TaintState]:
        return sorted((t for t in self.world.taints.values() if not statuses or t.status in statuses),
                      key=lambda t: t.taint_id)

    async def cancel_run(self, job_run_id: str, reason: str = "canceled by request",
                         timeout: float | None = None) -> JobRunState:
        """Cancel one job run (its process killed) and return its state once it is recorded ``Canceled``.

        Its partitions go back to Missing; the wants it served stay active, so the supervisor plans those
        partitions again in a new run (cancel the want to stop building them). A run that has already ended is
        left as it is and its state returned (check ``.status``). :class:`UnknownEntity` if there is no such
        run; ``TimeoutError`` after ``timeout`` seconds."""
        self._check_open()
        st = self.get_run(job_run_id)
        if st.terminal:
            return st
        ev = self._run_events.setdefault(job_run_id, anyio.Event())
        await self.kernel.ask("job_run", job_run_id, CancelRun(reason))
        with anyio.fail_after(timeout):
            if not self.get_run(job_run_id).terminal:
                await ev.wait()
        return self.get_run(job_run_id)

    async def wait_want(self, want_id: str, timeout: float | None = None) -> WantState:
        """Wait until the want is terminal and return that state (``handle.done()`` calls this); ``TimeoutError``
        after ``timeout`` seconds."""
        st = self.get_want(want_id)
        if st.terminal:
            return st
        ev = self._want_events.setdefault(want_id, anyio.Event())
        with anyio.fail_after(timeout):
            await ev.wait()
        return self.get_want(want_id)

    async def snapshot(self, timeout: float = 10.0) -> SnapshotInfo:
        """Take a snapshot of the World now (at the next point where it holds exactly the committed events) and
        store it in the log; a restart then replays only the events after it. Keeps the newest two.

        On a runtime that evicts (``evict_every``), the evicted entities' states are read back from the log for it
        (not kept): its cost grows with the entities evicted, not with the events since the last snapshot."""
        self._check_open()
        with anyio.fail_after(timeout):
            while True:
                await self.log.commit()
                info = await self.snapshotter.take()
                if info is not None:
                    return info
                await anyio.sleep(0.001)

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until every want is terminal."""
        with anyio.fail_after(timeout):
            while True:
                active = [w.want_id for w in self.world.active_wants()]
                if not active:
                    return
                await self.wait_want(active[0])

    async def wait_quiescent(self, timeout: float | None = 30.0) -> None:
        """Wait until nothing is in flight: no run Queued or Running, nothing waiting to commit, no message
        waiting or being handled (observed twice in a row). The live World then equals the log's (I3)."""
        await self.wait_settled(timeout, runs=True)

    async def wait_settled(self, timeout: float | None = 30.0, *, runs: bool = False) -> None:
        """Wait until nothing waits to commit and no message is waiting or being handled (observed twice in a
        row), while job runs may still be executing (``runs=True``: until none is Queued or Running either).
        The live World then equals the log's (I3)."""
        quiet = 0
        with anyio.fail_after(timeout):
            while quiet < 2:
                await self.log.commit()
                for _ in range(3):
                    await anyio.lowlevel.checkpoint()
                # The kernel's busy(): a message waiting or being handled, a commit in flight, replies awaited. A
                # run whose job is executing has no cell in the kernel (it is idle until its job reports).
                busy = self.log.pending() or (runs and self.world.in_flight_runs()) or self.kernel.busy()
                quiet = 0 if busy else quiet + 1
                if busy:
                    await anyio.sleep(0.002)

    # -- queries ----------------------------------------------------------------------------------------
    def get_want(self, want_id: str) -> WantState:
        """The want's state; :class:`UnknownEntity` if there is none."""
        st = self.world.wants.get(want_id)
        if st is None:
            raise UnknownEntity(f"no want {want_id!r} in {self.log.path}; list them with `wantbuild want list`")
        return st

    def get_partition(self, ref: str) -> PartitionState:
        """The partition's state. A ref the log never mentioned is Missing at generation 0 (partitions have no
        creation event), unless no job of the graph produces it: then :class:`NoJobForRef` (a typo, mostly).
        :class:`InvalidRef` for a malformed ref."""
        ref = validate_refs([ref])[0]
        st = self.world.partitions.get(ref)
        if st is None:
            self.graph.job_of(ref)  # NoJobForRef names the ref and the patterns
            return self.world.partition(ref)
        return st

    def get_run(self, job_run_id: str) -> JobRunState:
        """The job run's state; :class:`UnknownEntity` if there is none."""
        st = self.world.runs.get(job_run_id)
        if st is None:
            raise UnknownEntity(f"no job run {job_run_id!r} in {self.log.path}")
        return st

    def wants(self, *statuses: str) -> list[WantState]:
        return sorted(self.world.states("want", *statuses), key=lambda w: w.want_id)

    def partitions(self, *statuses: str) -> list[PartitionState]:
        return sorted(self.world.states("partition", *statuses), key=lambda p: p.ref)

    def runs(self, *statuses: str) -> list[JobRunState]:
        return sorted(self.world.states("job_run", *statuses), key=lambda r: r.job_run_id)

    async def history(self, kind: str | None = None, entity_id: str | None = None, *, refs: Iterable[str] = (),
                      patterns: Iterable[str] = (), jobs: Iterable[str] = (), runs: Iterable[str] = (),
                      wants: Iterable[str] = (), types: Collection[str] | None = None,
                      until_seq: int | None = None) -> list[Record]:
        """Committed events in ``seq`` order: one entity's (``kind``, ``entity_id``), or those the filters keep
        (by partition ref or ref pattern, job, run, want, event type; see :class:`actors.EventFilter`).

        ``rt.history("partition", "daily/1")`` is one entity's history; ``rt.history(refs=["daily/1"])`` adds
        the events of the runs that built it and of the wants and taints that name it."""
        flt = EventFilter(refs=refs, patterns=patterns, jobs=jobs, runs=runs, wants=wants, types=types)
        if kind is not None and entity_id is not None and flt.empty:
            return await self.log.history(kind, entity_id, until_seq=until_seq)
        out: list[Record] = []
        async for rec in self.log.read(1, until_seq=until_seq, kinds=None if kind is None else [kind],
                                       entity_id=entity_id):
            if flt(rec):
                out.append(rec)
        return out

    def events(self, from_seq: int | None = None, *, kinds: Collection[str] | None = None,
               entity_id: str | None = None, types: Collection[str] | None = None, refs: Iterable[str] = (),
               patterns: Iterable[str] = (), jobs: Iterable[str] = (), runs: Iterable[str] = (),
               wants: Iterable[str] = ()) -> AsyncIterator[Record]:
        """Committed events from ``from_seq`` on, following new ones as they commit (stop by breaking out).

        Without ``from_seq`` it starts after the last event committed when ``events()`` is *called*, not when
        iteration begins: ``it = rt.events()``, then ``await rt.want(...)``, then ``async for rec in it`` sees
        that want's ``WantCreated``. ``from_seq=1`` replays the whole log first. ``refs``, ``patterns``,
        ``jobs``, ``runs`` and ``wants`` filter as :class:`actors.EventFilter` says (``patterns=["daily/*"]``:
        everything about the daily partitions, their runs included)."""
        start = self.log.last_seq + 1 if from_seq is None else from_seq
        flt = EventFilter(refs=refs, patterns=patterns, jobs=jobs, runs=runs, wants=wants)
        if flt.empty:
            return self.log.follow(start, kinds=kinds, entity_id=entity_id, types=types)
        if start > 1:
            flt.seed(self.world)  # what the runs and wants it has not seen build and name
        return _filtered(self.log.follow(start, kinds=kinds, entity_id=entity_id, types=types), flt)

    # -- lineage ----------------------------------------------------------------------------------------
    async def lineage(self, ref: str, *, direction: LineageDirection = "up", depth: int | None = None,
                      generation: int | None = None, until: int | float | None = None) -> LineageGraph:
        """What ``ref`` was built from (``direction="up"``) or what was built from it (``"down"``), by generation,
        ``depth`` levels at most (None: all): an :class:`actors.LineageGraph` (``.nodes``, ``.edges``,
        ``.to_dict()``, ``.mermaid()``).

        ``generation`` picks a past generation of ``ref`` (default: its current one). ``until``, a ``seq``
        (int) or a clock time (float), answers from the World as it was then (replayed from the log). Raises
        :class:`actors.NeverBuilt` for a generation no run built."""
        ref = validate_refs([ref])[0]
        world = self.world
        if until is not None:
            if isinstance(until, bool) or not isinstance(until, int | float):
                raise TypeError(f"until is a seq (int) or a clock time (float), got {until!r}")
            world = await rebuild(self.log, until_seq=until if isinstance(until, int) else None,
                                  until_time=until if isinstance(until, float) else None)
        return lineage(world, ref, direction=direction, depth=depth, generation=generation)

    def stale(self) -> list[Stale]:
        """Live partitions built from inputs that have since been rebuilt (a newer generation is Live)."""
        return stale(self.world)

    async def explain(self, ref: str) -> Any:
        from ._explain import explain

        return await explain(self.world, self.graph, validate_refs([ref])[0], log_=self.log)

    def add_hook(self, hook: Any) -> Any:
        """Register a user hook ``hook(record, old, new)`` run after each committed transition."""
        return self.hooks.add(hook)

    async def crash(self) -> None:
        """Stop abruptly, as a killed process would: appends not yet committed are lost, no shutdown runs.

        For the scenario runner and crash tests; leave the ``open_runtime`` block right after calling it.
        """
        self.crashed = True
        self.closing = True
        if self._timers is not None:
            self._timers.cancel_all(tells=True)  # before the actors stop: a timer would tell a closed system
        await self.kernel.aclose()  # a killed process's actors stop with it (and do not log crashes)
        await self.log.abort()

    # -- internals --------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closing:
            raise RuntimeClosed(f"the runtime on {self.log.path} is shutting down")

    def _on_commit(self, batch: list[Committed]) -> None:
        """A commit landed (the kernel calls this once per commit, before anything the committing actors said is
        released): wake waiters, and tell the supervisor of the wants' and partitions' transitions."""
        items: list[Committed] = []
        settled = False
        append = items.append
        for item in batch:
            rec = item.record
            kind = rec.entity_kind
            if kind == "partition":  # most of a batch: nothing to wake here
                append(item)
                continue
            if kind == "job_run":
                if item.new.terminal:
                    settled = True
                    run_ev = self._run_events.pop(rec.entity_id, None)
                    if run_ev is not None:
                        run_ev.set()
                continue  # the supervisor hears of runs through RunEnded, sent once partitions are settled
            if kind == "want" and item.new.terminal:
                ev = self._want_events.pop(rec.entity_id, None)
                if ev is not None:
                    ev.set()
            elif kind == "taint":
                taint_ev = self._taint_events.pop(rec.entity_id, None)
                if taint_ev is not None:
                    taint_ev.set()
            append(item)
        if settled:
            self._settled.set()
        if items:
            self.kernel.tell(*SUPERVISOR, CommittedBatch(tuple(items)))

    def _on_crash(self, kind: str, key: str, msg: Any, error: Exception) -> None:
        """Any actor crashed: the supervisor reconciles (the message it held may be lost). Its own crash it
        reconciles in ``on_restart``."""
        if kind != "supervisor" and not self.closing:
            self.kernel.tell(*SUPERVISOR, ActorCrashed(kind, key, None if msg is None else type(msg).__name__))

    def _on_escalate(self, failure: ActorFailure) -> None:
        """An actor was stopped after repeated crashes: record it, and give up on it (the supervisor ends what
        depended on it with the error as the reason; the supervisor itself is started afresh and reconciles).

        Never fatal: with finitely many failures every want still ends (I5). An actor given up on again is
        revived after a backoff (1 s, 2 s, 4 s ... 60 s on the runtime's clock), so a lasting fault (a full disk)
        costs a loud log line a minute, not the runtime; whatever can still run goes on meanwhile.
        """
        self.failures.append(failure)
        key = (failure.kind, failure.key)
        n = self._given_up[key] = self._given_up.get(key, 0) + 1
        reason = (f"wantbuild gave up on {failure.kind} {failure.key} after {failure.restarts + 1} crashes: "
                  f"{type(failure.error).__name__}: {failure.error}")
        log.error("actor stopped after repeated crashes", kind=failure.kind, key=failure.key,
                  error=repr(failure.error), restarts=failure.restarts, given_up=n)
        if self.closing:
            return
        if n == 1 or self._timers is None:
            self._give_up(failure.kind, failure.key, reason)
        else:
            self._timers.call_later(min(2.0 ** (n - 2), 60.0),
                                    lambda: self._give_up(failure.kind, failure.key, reason))

    def _give_up(self, kind: str, key: str, reason: str) -> None:
        if self.closing:
            return
        if kind == "supervisor":
            # Its messages went with it (a poison message among them): a fresh one rebuilds all from the World.
            self.kernel.revive(*SUPERVISOR)
            self.kernel.tell(*SUPERVISOR, Recover())
        else:
            self.kernel.tell(*SUPERVISOR, GaveUp(kind, key, reason))


async def _filtered(records: AsyncIterator[Record], flt: EventFilter) -> AsyncIterator[Record]:
    async for rec in records:
        if flt(rec):
            yield rec


async def _recover_runs(system: Kernel, world: World) -> tuple[list[str], list[str]]:
    """Mark the runs the previous runtime left in flight Lost (their partitions go back to Missing)."""
    lost: list[str] = []
    requeued: list[str] = []
    for run in sorted(world.in_flight_runs(), key=lambda r: r.job_run_id):
        held = [ref for ref in run.partitions if world.partition(ref).lease == run.job_run_id]
        await _mark_lost(system, run.job_run_id)
        lost.append(run.job_run_id)
        requeued.extend(held)
    # A crash after a run's terminal event but before its partitions were settled: settle them now.
    building = [p for p in world.partitions.values() if p.status is PartitionStatus.BUILDING]
    for part in sorted(building, key=lambda p: p.ref):
        holder = world.runs.get(part.lease or "")
        if holder is not None and holder.terminal:
            await _mark_lost(system, holder.job_run_id)
    return lost, requeued


async def _mark_lost(system: Kernel, job_run_id: str) -> None:
    try:
        await system.ask("job_run", job_run_id, MarkLost())
    except WantbuildError as e:  # the actor crashed on it: its own recovery marks the run Lost (reconcile)
        log.warning("marking a run Lost failed; its actor recovers it", job_run_id=job_run_id, error=str(e))


@asynccontextmanager
async def open_runtime(
    path: str | Path,
    graph: Graph,
    *,
    clock: Clock | None = None,
    policy: CollisionPolicy = "shrink",
    log_dir: str | Path | None = None,
    accept_graph_change: bool = False,
    shutdown_grace: float = 10.0,
    tune_gc: bool = False,
    serve_commands: bool = True,
    autocommit: bool = True,
    event_log: Log | None = None,
    durability: Durability | None = None,
    faults: Faults | None = None,
    executor: Executor | None = None,
    standby: bool = False,
    snapshot_every: int | None = 100_000,
    snapshot_interval: float | None = 600.0,
    load_snapshot: bool = True,
    evict_every: int | None = None,
) -> AsyncIterator[Runtime]:
    """Open a runtime on the log at ``path`` (created if missing) for ``graph``: ``async with`` it.

    :param path: the event log: a SQLite file, or a ``postgresql://`` URL (see ``docs/deploy.md``).
    :param graph: the jobs; a log written for another graph raises ``FingerprintMismatch``.
    :param clock: where the runtime reads time and sleeps (default: the system clock; scenarios pass a virtual
        one).
    :param policy: the collision policy for jobs that set none (``shrink``, ``defer``, ``all_or_nothing``).
    :param log_dir: where job runs' stdout/stderr files go (default ``<path>.logs``).
    :param accept_graph_change: open a log written for a different graph (its fingerprint is updated).
    :param shutdown_grace: seconds that leaving the block waits for canceled runs to end before killing them.
    :param tune_gc: tune Python's cyclic GC for the runtime while it is open (see :func:`_gc_policy`; the CLI
        turns it on).
    :param serve_commands: consume the log's command inbox (what ``wantbuild want create --db`` submits).
    :param autocommit: commit appends as they come (group commit); False leaves commits to the caller
        (``rt.log.commit()``), as the scenario runner does.
    :param event_log: run on this already-open log instead of opening ``path`` (the scenario runner's).
    :param durability: what a commit survives: ``"process"`` (any death of the process; the last commits can
        vanish on power loss or an OS crash) or ``"power"`` (those too; a disk flush per group commit). Default:
        the log's own (``"process"`` for a SQLite file, ``"power"`` for PostgreSQL). See docs/eventlog.md.
    :param faults: drills only: the :class:`actors.Faults` to inject.
    :param executor: where jobs without an executor of their own run (``DaskExecutor(client)``,
        ``RayExecutor(...)``); default: the graph's ``[executor]``, else the runtime's own processes.
    :param standby: if another runtime serves the log, wait (as long as it takes) to take over from it, replaying
        and following its commits meanwhile; the block is entered once this runtime holds the writer lease (see
        ``docs/deploy.md``, standby runtimes). Default: ``WriterLockedError`` at once.
    :param snapshot_every: take a snapshot of the World in the background every this many events (None: not by
        count); a restart loads the newest and replays only the events after it (see ``docs/restart.md``).
    :param snapshot_interval: also every this many seconds if any event came since the last one (None: not by
        time). Both None: no background snapshots (``rt.snapshot()`` still takes one). With ``autocommit=False``
        (the scenario runner) none are taken in the background.
    :param load_snapshot: start from the newest usable snapshot (default); False replays the whole log.
    :param evict_every: keep in memory what is in flight only: after every this many committed transitions, evict
        the settled wants, runs and Live partitions from the World; they are read back from the log when something
        reads them (``docs/restart.md``, memory follows active work). A SQLite log only, with no background
        snapshots (``snapshot_every=None, snapshot_interval=None``) and not compacted. Default: off.

    An exception raised in the ``async with`` body comes out as itself, not wrapped in an exception group by the
    runtime's task groups.
    """
    graph.validate()
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be an executor (DaskExecutor(...), RayExecutor(...), LocalExecutor()), "
                        f"got {executor!r}")
    clock = clock if clock is not None else SystemClock()
    if is_postgres(path):  # a database log: job output files go beside where the runtime runs
        logs = Path(log_dir) if log_dir is not None else Path(log_label(path) + ".logs")
    else:
        path = Path(path)
        logs = Path(log_dir) if log_dir is not None else path.parent / (path.name + ".logs")
    try:
        async with open_log_and_world(event_log, path, graph.fingerprint(), clock, accept_graph_change, autocommit,
                                      durability, standby, load_snapshot, evict_every is not None) as (elog, world):
            if evict_every is not None:
                _check_evicting(elog, evict_every, autocommit and (snapshot_every, snapshot_interval) != (None, None))
                world.make_evicting()  # before anything holds a table
                # The writer's tip cache need not outlast a sweep either: a settled entity's tip is read again
                # only if the entity moves again (docs/restart.md).
                if isinstance(elog, EventLog):
                    elog.entity_cache_size = min(elog.entity_cache_size, max(2 * evict_every, _MIN_TIP_CACHE))
                world.load_now(elog)
            hints = world.id_hints  # the highest ids among what a snapshot load left evicted
            ids = IdSource(itertools.chain(world.wants, hints.get("want", ())),
                           itertools.chain(world.runs, hints.get("job_run", ())),
                           itertools.chain(world.taints, hints.get("taint", ())))
            with _gc_policy(tune_gc):
                async with _running(elog, world, ids, graph, clock, policy, logs, serve_commands,
                                    shutdown_grace, faults, executor,
                                    (snapshot_every, snapshot_interval) if autocommit else (None, None)) as rt:
                    if evict_every is not None:
                        _evict_as_it_goes(rt, evict_every)
                    yield rt
    except BaseExceptionGroup as eg:
        inner = sole_error(eg)
        if inner is None:
            raise
        raise inner from None


_MIN_TIP_CACHE = 20_000
"""The fewest entity tips an evicting runtime's log writer keeps cached (an ``evict_every`` of 1 must not make
every append a lookup)."""


def _check_evicting(elog: Log, every: int, snapshots: bool) -> None:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"evict_every must be a number of transitions >= 1 (or None: no eviction), not {every!r}")
    if not hasattr(elog, "histories_now"):
        raise ValueError(f"evict_every needs a SQLite log: {elog.path} cannot read an evicted entity back "
                         "synchronously (eviction on PostgreSQL is not supported yet); drop evict_every")
    if snapshots:
        raise ValueError("evict_every cannot be combined with background snapshots yet (each would read every "
                         "evicted entity back from the log): pass snapshot_every=None, snapshot_interval=None and take "
                         "snapshots with rt.snapshot(), or drop evict_every")
    if elog.compacted_through:
        raise ValueError(f"evict_every cannot run on a compacted log yet ({elog.path} was compacted through seq "
                         f"{elog.compacted_through}: an ended entity's state is in a snapshot); drop evict_every")


def _evict_as_it_goes(rt: Runtime, every: int) -> None:
    """Evict what is settled after every ``every`` committed transitions and when a want ends, at the loop's next
    turn (not inside the commit's callback: the entities the commit's actors are about to handle still have their
    cells), and once as the runtime opens. After a want ends, freed heap pages also go back to the system
    (:func:`_trim_heap`)."""
    kernel = rt.kernel
    inner = kernel.on_commit
    loop = asyncio.get_running_loop()
    count = 0
    due = False
    trim = False

    def sweep() -> None:
        nonlocal due, trim
        due = False
        if not rt.closing and not kernel.closed:
            gone = kernel.evict_settled()
            log.debug("evicted settled entities", **gone)
            if trim:
                rt.graph.forget_refs()
                rt.world.settle_evicted()
                _trim_heap()
        trim = False

    def on_commit(batch: list[Committed]) -> None:
        nonlocal count, due, trim
        if inner is not None:
            inner(batch)
        count += len(batch)
        ended = any(c.record.entity_kind == "want" and c.new.terminal for c in batch)
        trim = trim or ended
        if not due and (count >= every or ended):  # every N transitions, and as a want ends (what it held is settled)
            count = 0
            due = True
            loop.call_soon(sweep)

    kernel.on_commit = on_commit
    due = trim = True  # and once as the runtime opens: a restart loaded every state
    loop.call_soon(sweep)


def _trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere). CPython keeps
    memory its objects freed unless whole arenas empty; after a sweep much of it is free (20 us here)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


@contextmanager
def _gc_policy(enabled: bool) -> Iterator[None]:
    """Optionally tune Python's cyclic GC for the runtime's allocation pattern, and restore it afterwards.

    The runtime allocates many short-lived containers (tasks, futures, messages) while holding many long-lived
    ones (the World, indices); with the default thresholds full collections walk the long-lived heap again
    and again (measured: 30-50% of orchestration time, nothing ever collected). Enabled, the replayed World is
    frozen (never scanned again) and the young generation is collected every 1,000,000 allocations, not 700.
    Each young collection also touches the old objects the young ones point to, so its cost grows with the
    heap: at 50,000 a 20,000-partition backfill still spent 23% of its time in 200 collections; at 1,000,000,
    5%. Cyclic garbage waits longer (reference counting frees everything else at once); one full collection
    before the freeze keeps what is already garbage (say, a previous runtime's cycles) out of it.
    """
    if not enabled:
        yield
        return
    old = gc.get_threshold()
    gc.collect()  # what is garbage now (a previous runtime's cycles) must not be frozen with the World
    gc.freeze()
    gc.set_threshold(1_000_000, max(old[1], 20), max(old[2], 100))
    try:
        yield
    finally:
        # What the runtime allocated since the last young collection goes to the oldest generation as it is (freeze,
        # then unfreeze), not through a young collection as soon as the default thresholds are back: at 10,000
        # one-run partitions that collection walked ~300,000 live objects, 40-80 ms of the runtime's close. Those
        # objects are soon freed by reference counting, or long-lived; cyclic garbage among them waits for the next
        # full collection.
        gc.freeze()
        gc.set_threshold(*old)
        gc.unfreeze()


@asynccontextmanager
async def _running(elog: Log, world: World, ids: IdSource, graph: Graph, clock: Clock,
                   policy: CollisionPolicy, logs: Path, serve_commands: bool,
                   shutdown_grace: float, faults: Faults | None,
                   default_executor: Executor | None,
                   snapshots: tuple[int | None, float | None] = (None, None)) -> AsyncIterator[Runtime]:
    hooks = Hooks(faults)
    async with anyio.create_task_group() as tg:
        system = Kernel(elog, world, clock, hooks=hooks, faults=faults)
        async with system, contextlib.AsyncExitStack() as stack:
            env = EntityEnv(elog, world, system, hooks, clock, faults)
            timers = Timers(tg, system, clock)
            # The log jobs run for (WANTBUILD_LOG), the same from any process: a standby in another folder must
            # find the jobs of the runtime it replaces.
            log_id = elog.path if is_postgres(elog.path) else os.path.abspath(elog.path)  # noqa: ASYNC240 - no I/O
            local = LocalExecution(graph, clock, logs, system, faults, world, log_id=log_id)
            env_x = ExecutorEnv(graph, clock, system, _namespace(elog), local.resolve_read)
            execution = await stack.enter_async_context(ExecutionRouter.open(graph, local, env_x, default_executor))
            pending = Pending()
            system.register("want", lambda key: WantActor(world, env.leaving_live))
            system.register("partition", lambda key: PartitionActor())
            system.register("job_run", lambda key: JobRunActor(execution, world))
            system.register("schedule", lambda key: ScheduleActor())
            system.register("taint", lambda key: TaintActor(world, env.leaving_live))
            system.register("supervisor", lambda key: Supervisor(key, env, graph, ids, timers, policy, pending),
                            entity=False, keep=True)
            replayed = elog.last_seq
            rt = Runtime(elog, world, graph, clock, system, hooks, ids, Recovery(replayed, (), (), ()))
            rt._timers = timers
            system.on_escalate = rt._on_escalate
            system.on_crash = rt._on_crash
            system.on_commit = rt._on_commit
            # Before anything is leased again: stop what the previous runtime's jobs left running.
            fenced = await execution.fence(world.in_flight_runs())
            lost, requeued = await _recover_runs(system, world)
            rt.recovery = Recovery(replayed, tuple(lost), tuple(requeued),
                                   tuple(w.want_id for w in world.active_wants()), tuple(fenced), world.restored)
            if lost:
                log.info("recovered runs", lost=len(lost), requeued=len(requeued), fenced=len(fenced))
            system.tell(*SUPERVISOR, Recover())
            tg.start_soon(_finish_load, world)
            if serve_commands:
                tg.start_soon(_serve_commands, rt)
            if graph.schedules:
                await rt.scheduler.ensure(graph.schedules.values(), "graph")
            tg.start_soon(rt.scheduler.run)
            tg.start_soon(_stop_on_lease_lost, rt, tg.cancel_scope)
            snapshot_scope = anyio.CancelScope()
            if snapshots != (None, None):
                rt.snapshotter.every_events, rt.snapshotter.every_seconds = snapshots
                tg.start_soon(_take_snapshots, rt, snapshot_scope)
            try:
                yield rt
            finally:
                snapshot_scope.cancel()  # a snapshot half-written is invisible; the next runtime takes another
                if not rt.crashed:
                    with anyio.CancelScope(shield=True):
                        await _shutdown(rt, execution, timers, shutdown_grace)
                else:
                    execution.crash()
                    timers.cancel_all(tells=True)
                with anyio.CancelScope(shield=True):
                    await execution.aclose("the runtime is closing")
        tg.cancel_scope.cancel()
    if rt.lease_lost is not None:
        raise rt.lease_lost


async def _finish_load(world: World) -> None:
    """Do what a snapshot load deferred (the lineage index, an eviction index's filter), a step (about a
    millisecond) at a time between other work."""
    while not world.background_step():
        await anyio.lowlevel.checkpoint()


async def _take_snapshots(rt: Runtime, scope: anyio.CancelScope) -> None:
    with scope:
        await rt.snapshotter.run()


async def _stop_on_lease_lost(rt: Runtime, scope: anyio.CancelScope) -> None:
    """Another runtime took the log (or this one stalled past its lease): stop at once, acting no more.

    Nothing this runtime appends can land any more, so it stops as a crashed one does (its jobs are stopped, no
    shutdown events): the runtime that holds the lease now replays the log and carries on. The embedder's
    ``async with`` body is cancelled and the block raises :class:`LeaseLost`.
    """
    err = await rt.log.wait_lease_lost()
    log.error("lease lost: the runtime stops", error=str(err))
    rt.lease_lost = err
    rt.crashed = True
    rt.closing = True
    scope.cancel()


def _namespace(elog: Log) -> str:
    """A short name of this log, part of every remote task's key: two runtimes on different logs may share a
    cluster, and one log's restarted runtime finds the keys its predecessor used (a file by its absolute path,
    a PostgreSQL log by its URL, password hidden, which names its server, database and schema)."""
    where = elog.path if is_postgres(elog.path) else str(Path(elog.path).resolve())
    return hashlib.sha256(where.encode()).hexdigest()[:10]


async def _shutdown(rt: Runtime, execution: ExecutionRouter, timers: Timers, grace: float) -> None:
    """Stop starting runs, cancel the ones in flight, and wait until they are recorded."""
    rt.closing = True
    rt.kernel.tell(*SUPERVISOR, Drain())
    timers.cancel_all()
    with anyio.move_on_after(grace):
        while True:
            inflight = rt.world.in_flight_runs()
            if not inflight:
                break
            rt._settled = anyio.Event()
            for run in inflight:
                rt.kernel.tell("job_run", run.job_run_id, CancelRun("the runtime is shutting down"))
            with anyio.move_on_after(0.5):
                await rt._settled.wait()
    execution.cancel_all("the runtime is shutting down")
    # Runs are terminal; let them settle their partitions (Building -> Missing) before the actors stop.
    with anyio.move_on_after(grace):
        await rt.wait_quiescent(timeout=None)
    timers.cancel_all(tells=True)
    await rt.log.commit()


def _data_time(graph: Graph, refs: Iterable[str], start: float | None) -> float | None:
    """The latest data time of ``refs`` (and ``start``), from their jobs' ``date``/``hour`` typed parameters."""
    best = start
    timed: dict[str, bool] = {}
    for ref in refs:
        job = graph.job_of(ref)
        has = timed.get(job.name)
        if has is None:
            has = timed[job.name] = any(kind.timed for kind in job.param_types.values())
        if has:
            t = job.data_time(ref)
            if t is not None and (best is None or t > best):
                best = t
    return best


async def _serve_commands(rt: Runtime, interval: float = 0.2) -> None:
    """Consume the command inbox (commands from the CLI while this runtime runs), each exactly once.

    A command's effect and its completion commit in one transaction (the effect's event carries it: ``append(...,
    command=...)``), so a command still pending after a crash has no effect yet and is simply handled again. A
    command refused (bad input) or without an effect (nothing left to do) is completed on its own. A transient
    failure (a commit that failed, the runtime closing) leaves it pending: the next pass retries it.
    """
    while not rt.closing:
        for cmd in await rt.log.pending_commands():
            if rt.closing:
                return
            result: dict[str, Any] | None
            try:
                result = await _run_command(rt, cmd.id, cmd.name, cmd.payload)
            except (CommitError, LogClosedError, ActorStopped, AskTimeout, RuntimeClosed) as e:
                log.warning("command not applied yet; retried", command=cmd.name, id=cmd.id, error=str(e))
                continue
            except CommandCompletedError:
                continue  # completed meanwhile (by its effect): nothing left to do
            except WantbuildError as e:
                result = {"ok": False, "error": str(e)}
            except Exception as e:  # a bad command must not stop the runtime
                log.exception("command failed", command=cmd.name, id=cmd.id)
                result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            if result is not None:
                with contextlib.suppress(CommandCompletedError):
                    await rt.log.complete_command(cmd.id, result)
        await anyio.sleep(interval)


async def _run_command(rt: Runtime, command_id: int, name: str,
                       payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """Apply one inbox command. None: its effect completed it; else the result to complete it with."""
    if name == "want":
        refs: Any = payload.get("refs", ())
        if payload.get("specs"):  # ranges, read against this runtime's graph
            refs = parse_partition_set(rt.graph, payload["specs"], refs=refs)
        await rt.want(refs, ttl=payload.get("ttl"), sla=payload.get("sla"),
                      comment=payload.get("comment", ""), source=str(payload.get("source", "cli")),
                      command_id=command_id,
                      priority=int(payload.get("priority", 0)), anchor=payload.get("anchor", "created"),
                      data_time=payload.get("data_time"))
        return None
    if name == "schedule_add":
        sched = Schedule(**dict(payload))
        await rt.add_schedule(sched, source="cli", _command=(command_id, {"ok": True, "schedule": sched.name}))
        return None
    if name == "schedule_change":
        target = {"pause": "Paused", "resume": "Active", "delete": "Deleted"}.get(payload["how"], "")
        sched_st = rt.get_schedule(payload["name"])
        done = {"ok": True, "schedule": sched_st.name, "status": target}
        if str(sched_st.status) == target or sched_st.terminal:  # nothing to write: complete it on its own
            return {**done, "status": str(sched_st.status)}
        await rt._change_schedule(sched_st.name, payload["how"], payload.get("reason", "from the CLI"),
                                  _command=(command_id, done))
        return None
    if name == "cancel":
        want_id = payload["want_id"]
        st = rt.get_want(want_id)
        result = {"ok": True, "want_id": want_id, "status": "Canceled"}
        if st.terminal:
            return {**result, "status": str(st.status)}
        await rt.cancel(want_id, payload.get("reason", "canceled from the CLI"), _command=(command_id, result))
        # A want that ended meanwhile wrote nothing: the command is still pending, and the next pass completes it.
        return None
    if name == "taint":
        await rt.taint(payload["refs"], payload.get("reason", "tainted from the CLI"),
                       cascade=payload.get("cascade", True), depth=payload.get("depth"), wait=False,
                       command_id=command_id)
        return None  # TaintCreated completed it
    if name == "cancel_taint":
        t = await rt.cancel_taint(payload["taint_id"], payload.get("reason", "canceled from the CLI"), wait=False,
                                  command_id=command_id)
        # A taint already canceled wrote nothing: the command is completed the ordinary way.
        return None if t.cancel_command_id == command_id else {"ok": True, "taint_id": t.taint_id,
                                                               "status": str(t.status)}
    if name == "cancel_run":
        run = await rt.cancel_run(payload["job_run_id"], payload.get("reason", "canceled from the CLI"),
                                  timeout=payload.get("timeout"))
        return {"ok": True, "job_run_id": run.job_run_id, "status": str(run.status)}
    return {"ok": False, "error": f"unknown command {name!r}"}
