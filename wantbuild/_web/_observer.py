"""The web view's model: one World kept up to date in memory, with the indices the pages need.

Two ways to feed it, one way to use it:

- **following a log** (``wantbuild ui --db LOG``): the log is replayed once with :func:`actors.rebuild`, then
  polled for new records (``read_batches`` from the last seq seen), which are folded into the same World. It
  works whether or not a runtime writes the log; the log is opened with ``writer=False`` and never written to
  (writes go through its command inbox).
- **a live runtime** (``wantbuild.web_app(rt)``): the runtime's own World is used as it is, and a post-commit
  hook keeps the indices current. Nothing is replayed.

Either way every page reads memory: no request replays the log. What the World does not index (a want's
runs, a partition's runs, derived wants, missing-dependency edges, counts per status, throughput per minute)
is kept here, updated from ``(record, old state, new state)`` per committed transition, or built in one pass
over the World's states at start.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import structlog

from actors import (
    MACHINES,
    JobRunState,
    JobRunStatus,
    PartitionState,
    PartitionStatus,
    WantState,
    World,
    rebuild,
)
from eventlog import EventLog, Record, WantbuildError
from supervisor import sole_error

from ._source import display_name, is_url

log = structlog.get_logger("wantbuild.web")

Phase = Literal["starting", "loading", "ready", "failed"]

RECENT = 5000
"""How many of the newest records are kept in memory for the event stream and the events page."""
MINUTE = 60.0
KEEP_MINUTES = 180
"""Throughput buckets older than this (before the newest) are dropped."""


@dataclass
class Throughput:
    """Per-minute counts: partitions that became Live, runs that succeeded and failed, events committed."""

    live: dict[int, int] = field(default_factory=dict)
    succeeded: dict[int, int] = field(default_factory=dict)
    failed: dict[int, int] = field(default_factory=dict)
    events: dict[int, int] = field(default_factory=dict)

    def add(self, series: dict[int, int], at: float, n: int = 1) -> None:
        minute = int(at // MINUTE)
        series[minute] = series.get(minute, 0) + n
        if len(series) > KEEP_MINUTES + 10:
            self._prune(series)

    @staticmethod
    def _prune(series: dict[int, int]) -> None:
        if series:
            newest = max(series)
            for m in [m for m in series if m < newest - KEEP_MINUTES]:
                del series[m]

    def prune(self) -> None:
        """Drop the minutes older than :data:`KEEP_MINUTES` before the newest of each series."""
        for series in (self.live, self.succeeded, self.failed, self.events):
            self._prune(series)

    def window(self, end: float, minutes: int) -> list[dict[str, Any]]:
        """The last ``minutes`` whole minutes up to ``end``, oldest first, zeros included."""
        last = int(end // MINUTE)
        return [
            {"minute": m * MINUTE, "live": self.live.get(m, 0), "succeeded": self.succeeded.get(m, 0),
             "failed": self.failed.get(m, 0), "events": self.events.get(m, 0)}
            for m in range(last - minutes + 1, last + 1)
        ]


class Observer:
    """A World and its indices, followed live. Create it with :meth:`for_runtime` or :meth:`follow_log`."""

    def __init__(self, db: str, world: World | None = None, *, tune_gc: bool = False) -> None:
        self.source = db
        self._lease_held = False  # a PostgreSQL log's writer lease, refreshed by the follow loop
        """Where the log is (a path, or a database URL with its credentials)."""
        self.db = display_name(db)
        """The log as pages and messages name it (a URL without its password)."""
        self.world = world if world is not None else World()
        self.phase: Phase = "starting"
        self.error: str | None = None
        """Why the log cannot be shown at all (phase ``failed``)."""
        self.follow_error: str | None = None
        """Why following stopped: the state shown is the log's up to :attr:`world.last_seq`."""
        self.target_seq = 0
        """While loading: the log's last seq when loading began."""
        self.log: EventLog | None = None
        self.runtime: Any = None
        self.tune_gc = tune_gc
        self.load_seconds: dict[str, float] | None = None
        """How long loading took: replaying the log, then indexing the World (following a log only)."""
        """Freeze the loaded World out of the cyclic GC's reach (the CLI's own process only: GC is global)."""
        """The live runtime when mounted on one (then a runtime is running by definition)."""
        self._loading_world: World | None = None
        self._load_events: dict[int, int] = {}
        self._changed = asyncio.Event()
        self._notify_scheduled = False
        self._reset_indices()

    def _reset_indices(self) -> None:
        self.runs_by_want: dict[str, list[str]] = {}
        self.runs_by_ref: dict[str, list[str]] = {}
        self.wants_by_ref: dict[str, list[str]] = {}
        self.children: dict[str, list[str]] = {}
        self.retried_by: dict[str, str] = {}
        self.needs: dict[str, dict[str, str]] = {}
        """ref -> {upstream ref it was reported to miss: the DepMiss run that reported it}."""
        self.needed_by: dict[str, dict[str, str]] = {}
        """upstream ref -> {ref whose run reported it missing: that DepMiss run}."""
        self.jobs: set[str] = set()
        self.failed_runs: deque[str] = deque(maxlen=50)
        self.members: dict[str, dict[str, dict[str, None]]] = {
            k: {str(s): {} for s in m.statuses} for k, m in MACHINES.items()
        }
        """kind -> status -> the ids in that status, in the order they entered it (oldest first)."""
        self.throughput = Throughput()
        self.recent: deque[Record] = deque(maxlen=RECENT)
        self._recent_seq = 0
        self._sorted_refs: list[str] = []
        self._new_refs: list[str] = []

    # -- starting ----------------------------------------------------------------------------------------
    @classmethod
    def for_runtime(cls, rt: Any) -> Observer:
        """An observer of a live runtime's World: indexed now, kept current by a post-commit hook."""
        obs = cls(rt.log.path, rt.world)
        obs.runtime = rt
        obs.log = rt.log
        obs._index_world()
        rt.add_hook(obs.on_commit)
        obs.phase = "ready"
        return obs

    async def follow_log(self, log_: EventLog, *, poll_interval: float = 0.25,
                         task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Replay ``log_`` once, then fold each new record as it commits, until cancelled.

        Reports started at once (pages answer "loading" meanwhile). A log that cannot be replayed puts the
        observer in phase ``failed`` with the reason; one that stops applying later keeps the state up to the
        last good record and says where following stopped (:attr:`follow_error`).
        """
        self.log = log_
        self.phase = "loading"
        self.target_seq = log_.last_seq
        task_status.started()
        t0 = time.perf_counter()
        try:
            world = await self._load(log_)
        except Exception as e:  # rebuild's task group wraps what it raises
            err = sole_error(e) or e
            if not isinstance(err, WantbuildError):
                log.exception("web view could not load the log", db=self.db)
            self._fail(f"{self.db} cannot be read: {err}")
            return
        self._loading_world = None
        self.world = world
        if self.tune_gc:
            # The World is long-lived: keep the collector from walking it again and again (as the runtime's
            # tune_gc does); measured, indexing 100,000 partitions then takes a third less.
            gc.freeze()
        t1 = time.perf_counter()
        self._index_world()
        self.throughput.events.update(self._load_events)
        self._load_events = {}
        self.throughput.prune()
        await self._load_recent()
        self.load_seconds = {"replay": round(t1 - t0, 3), "index": round(time.perf_counter() - t1, 3)}
        self.phase = "ready"
        self._notify()
        log.info("web view loaded", db=self.db, last_seq=world.last_seq, wants=len(world.wants),
                 partitions=len(world.partitions), runs=len(world.runs), **self.load_seconds)
        while True:
            try:
                async for batch in log_.read_batches(self.world.last_seq + 1, batch_size=5000):
                    self._apply_batch(batch)
            except Exception as e:
                err = sole_error(e) or e
                if not isinstance(err, WantbuildError):
                    log.exception("web view stopped following the log", db=self.db)
                self.follow_error = f"following stopped after seq {self.world.last_seq}: {err}"
                log.error("web view stopped following the log", db=self.db, error=str(err))
                self._notify()
                return
            if is_url(self.source):
                with contextlib.suppress(WantbuildError):
                    self._lease_held = await log_.lease() is not None
            await anyio.sleep(poll_interval)

    async def _load(self, log_: EventLog) -> World:
        """The World at the log's end: the newest usable snapshot, then the records after it (all of them if there
        is none). Time to first page is then that of the tail, not of the whole log; the events-per-minute chart
        counts the tail's records (it shows recent minutes only). A snapshot skipped (checksum, format) is logged
        and kept in ``world.restored``."""
        return await rebuild(log_, on_record=self._loading)

    def _loading(self, world: World, rec: Record, state: Any) -> None:
        """Per record while loading: where loading is (for the loading page), and events per minute."""
        self._loading_world = world
        events = self._load_events
        minute = int(rec.at // MINUTE)
        events[minute] = events.get(minute, 0) + 1

    def _fail(self, message: str) -> None:
        self.phase = "failed"
        self.error = message
        log.error("web view cannot show the log", db=self.db, error=message)
        self._notify()

    @property
    def loaded_seq(self) -> int:
        """How far loading has got (the World's last seq once loaded)."""
        w = self._loading_world
        return w.last_seq if w is not None and self.phase == "loading" else self.world.last_seq

    async def _load_recent(self) -> None:
        assert self.log is not None
        start = max(1, self.world.last_seq - RECENT + 1)
        async for batch in self.log.read_batches(start, until_seq=self.world.last_seq, batch_size=RECENT):
            self.recent.extend(batch)
        if self.recent:
            self._recent_seq = max(self._recent_seq, self.recent[-1].seq)

    async def ensure_recent(self) -> None:
        """Fill the recent-records buffer from the log if it is empty (a runtime mounted with history)."""
        if not self.recent and self.world.last_seq and self.log is not None:
            await self._load_recent()

    # -- folding ------------------------------------------------------------------------------------------
    def _apply_batch(self, batch: list[Record]) -> None:
        world = self.world
        tables: dict[str, dict[str, Any]] = {"want": world.wants, "partition": world.partitions,
                                             "job_run": world.runs, "taint": world.taints}
        on = self.on_commit
        for rec in batch:
            table = tables.get(rec.entity_kind)
            old = table.get(rec.entity_id) if table is not None else None
            new = world.apply(rec)  # raises ReplayError (a WantbuildError) for a record that does not apply
            on(rec, old, new)

    def on_commit(self, rec: Record, old: Any, new: Any) -> None:
        """One committed transition (a runtime hook, or a record folded while following).

        On a runtime this runs after every commit, so it is kept to a few dictionary operations: every index
        changes only when a status does (a first event is a change from nothing).
        """
        if old is None or old.status is not new.status:
            self._index(rec.entity_kind, old, new, rec.at)
        seq = rec.seq
        if seq > self._recent_seq:
            self.recent.append(rec)
            self._recent_seq = seq
        else:  # hooks of one commit may run slightly out of seq order
            items = list(self.recent)
            bisect.insort(items, rec, key=lambda r: r.seq)
            self.recent.clear()
            self.recent.extend(items)
        events = self.throughput.events
        minute = int(rec.at // MINUTE)
        events[minute] = events.get(minute, 0) + 1
        if not self._notify_scheduled:
            self._notify_scheduled = True
            try:
                asyncio.get_running_loop().call_later(0.1, self._notify)
            except RuntimeError:  # no loop (a synchronous fold in a test): nobody is waiting
                self._notify_scheduled = False

    def _index_world(self) -> None:
        """Build every index from the World's states in one pass (at start, instead of replaying).

        The same indices :meth:`_index` keeps per transition (``tests/test_web_observer.py`` checks they agree),
        written as flat loops: at 100,000 partitions and 60,000 runs this pass is part of the time to first page.
        """
        self._reset_indices()
        w = self.world
        minute = MINUTE
        wants = self.members["want"]
        index_want = self._index_new_want
        for wid, want in w.wants.items():
            wants[want.status][wid] = None
            index_want(want)
        runs = self.members["job_run"]
        index_run = self._index_new_run
        succeeded, failed = self.throughput.succeeded, self.throughput.failed
        for rid, run in w.runs.items():
            status = run.status
            runs[status][rid] = None
            index_run(run)
            if status is JobRunStatus.SUCCEEDED:
                m = int((run.ended_at or run.updated_at) // minute)
                succeeded[m] = succeeded.get(m, 0) + 1
            elif status is JobRunStatus.FAILED:
                m = int((run.ended_at or run.updated_at) // minute)
                failed[m] = failed.get(m, 0) + 1
                self.failed_runs.append(rid)
            elif status is JobRunStatus.DEP_MISS:
                self._index_depmiss(run)
        parts = self.members["partition"]
        live = self.throughput.live
        for ref, part in w.partitions.items():
            parts[part.status][ref] = None
            if part.status is PartitionStatus.LIVE:
                m = int(part.updated_at // minute)
                live[m] = live.get(m, 0) + 1
        taints = self.members["taint"]
        for tid, taint in w.taints.items():
            taints[taint.status][tid] = None
        self._new_refs = list(w.partitions)
        self.throughput.prune()

    def _index(self, kind: str, old: Any, new: Any, at: float) -> None:
        """A status changed (or an entity appeared): move it between status sets, and index what it adds."""
        members = self.members[kind]
        key = (new.ref if kind == "partition" else new.want_id if kind == "want" else new.taint_id if kind == "taint"
               else new.job_run_id)
        if old is not None:
            del members[old.status][key]
        members[new.status][key] = None
        if kind == "partition":
            if old is None:
                self._new_refs.append(new.ref)
            if new.status is PartitionStatus.LIVE:
                self.throughput.add(self.throughput.live, at)
        elif kind == "job_run":
            if old is None:
                self._index_new_run(new)
            status = new.status
            if status is JobRunStatus.SUCCEEDED:
                self.throughput.add(self.throughput.succeeded, at)
            elif status is JobRunStatus.FAILED:
                self.throughput.add(self.throughput.failed, at)
                self.failed_runs.append(new.job_run_id)
            elif status is JobRunStatus.DEP_MISS:
                self._index_depmiss(new)
        elif kind == "want" and old is None:
            self._index_new_want(new)

    def _index_new_want(self, want: WantState) -> None:
        want_id = want.want_id
        for parent in want.parent_want_ids:
            self.children.setdefault(parent, []).append(want_id)
        by_ref = self.wants_by_ref
        for ref in want.refs:
            lst = by_ref.get(ref)
            if lst is None:
                by_ref[ref] = [want_id]
            else:
                lst.append(want_id)

    def _index_depmiss(self, run: JobRunState) -> None:
        """A run ended DepMiss: each of its partitions needs each ref it reported missing (lineage edges)."""
        for ref in run.partitions:
            needs = self.needs.setdefault(ref, {})
            for up in run.missing:
                needs[up] = run.job_run_id
                self.needed_by.setdefault(up, {})[ref] = run.job_run_id

    def _index_new_run(self, run: JobRunState) -> None:
        run_id = run.job_run_id
        self.jobs.add(run.job)
        by_want = self.runs_by_want
        for want_id in run.wants:
            lst = by_want.get(want_id)
            if lst is None:
                by_want[want_id] = [run_id]
            else:
                lst.append(run_id)
        by_ref = self.runs_by_ref
        for ref in run.planned or run.partitions:
            lst = by_ref.get(ref)
            if lst is None:
                by_ref[ref] = [run_id]
            else:
                lst.append(run_id)
        if run.retry_of is not None:
            self.retried_by[run.retry_of] = run_id

    # -- change notification -----------------------------------------------------------------------------
    def _notify(self) -> None:
        self._notify_scheduled = False
        if len(self.throughput.events) > KEEP_MINUTES + 10:
            self.throughput.prune()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self, timeout: float) -> bool:
        """Wait until the state changes (at most ``timeout`` seconds); whether it did."""
        ev = self._changed
        with anyio.move_on_after(timeout):
            await ev.wait()
            return True
        return False

    def close(self) -> None:
        """Wake every waiter (streams end when the app shuts down)."""
        self._notify()

    # -- queries the World does not answer --------------------------------------------------------------
    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Entities per status, per kind (every status listed, zeros included), like ``World.counts()``."""
        return {kind: {s: len(ids) for s, ids in per.items()} for kind, per in self.members.items()}

    def ids_in(self, kind: str, statuses: Iterable[str]) -> list[str]:
        """The ids of ``kind`` in any of ``statuses``, most recently entered last (per status)."""
        per = self.members[kind]
        out: list[str] = []
        for s in statuses:
            out.extend(per[str(s)])
        return out

    def sorted_refs(self) -> list[str]:
        """Every partition ref the log has seen, sorted (merged lazily as new ones appear)."""
        if self._new_refs:
            self._sorted_refs.extend(self._new_refs)
            self._new_refs = []
            self._sorted_refs.sort()  # timsort: near-linear on a sorted list with a sorted-ish tail
        return self._sorted_refs

    def wants_of(self, ref: str) -> list[str]:
        """The wants that ask for ``ref`` (``supervisor.explain``'s index)."""
        return self.wants_by_ref.get(ref, [])

    def runs_of(self, ref: str) -> list[str]:
        """The job runs that planned ``ref`` (``supervisor.explain``'s index)."""
        return self.runs_by_ref.get(ref, [])

    def known_ref(self, ref: str) -> bool:
        """Whether the log mentions ``ref`` at all: a partition event, a want or a run for it."""
        return ref in self.world.partitions or ref in self.wants_by_ref or ref in self.runs_by_ref

    def runtime_running(self) -> bool:
        """Whether a runtime writes the log now."""
        if self.runtime is not None:
            return not bool(getattr(self.runtime, "closing", False))
        if is_url(self.source):  # a PostgreSQL log: its writer lease, as the follow loop last read it
            return self._lease_held
        try:
            return EventLog.writer_active(self.source)
        except OSError:
            return False

    def state(self) -> dict[str, Any]:
        """Where the observer is: phase, seq, and any error (for every page's banner and ``/api/health``)."""
        return {"phase": self.phase, "last_seq": self.world.last_seq, "loaded_seq": self.loaded_seq,
                "target_seq": self.target_seq, "error": self.error, "follow_error": self.follow_error,
                "load_seconds": self.load_seconds}

    def throughput_window(self, minutes: int = 30) -> tuple[float, list[dict[str, Any]]]:
        """Per-minute throughput over the ``minutes`` up to now (or up to the last event if the log is idle)."""
        now = time.time()
        last = self.world.last_at
        end = now if last >= 1e8 and now - last < minutes * MINUTE else last
        end = (int(end // MINUTE) + 1) * MINUTE  # the end of its minute: the chart changes once a minute
        return end, self.throughput.window(end - 1, minutes)


def statuses_of(states: Iterable[WantState | PartitionState | JobRunState]) -> dict[str, int]:
    """Entities per status (only the statuses that occur)."""
    out: dict[str, int] = {}
    for st in states:
        key = str(st.status)
        out[key] = out.get(key, 0) + 1
    return out


StateHook = Callable[[Record, Any, Any], None]
