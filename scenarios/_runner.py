"""The scenario runner: the real runtime, a temporary event log, simulated jobs, and a virtual clock.

How one scenario runs (all on one asyncio loop, on a fresh loop per run):

1. The runner opens the event log itself (``autocommit=False``) and the runtime on it
   (``serve_commands=False``, the :class:`~scenarios._clock.VirtualClock`), from a holder task.
2. At each virtual instant it wakes the sleepers due then, starts the timeline steps due then (in file
   order), and *settles*: let every task run until none is ready (:func:`run_until_idle`), commit what is
   pending (``await log.commit()``: the only commit points, so batch boundaries are deterministic), read the
   newly committed records and feed them to the invariant checker, and repeat until nothing is pending.
   Then it advances the clock to the earliest sleeper or timeline step.
3. A ``crash`` step stops the runtime abruptly at a quiescent point, before the pending appends are
   committed (``rt.crash()``: they are lost), or right after the commit that holds a given event
   (``after_event``). The runner then rebuilds the World from the log and compares it with the live World
   at the crash (I3), checks that every transition a hook was told about is in the log (I4), and opens a new
   runtime on the same log and the same clock. Timeline steps whose effect was lost are submitted again, as a
   client that got no reply would.
4. Invariants I1, I2 and I6 are checked on every committed record, I3 on the touched entities at every
   quiescent point and in full at each crash and at the end, I5 at the end. A violation stops the scenario.

The result (:class:`~scenarios._result.ScenarioResult`) carries every event, run, want, crash and metric, and
the verdict of each expectation of the scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio

from actors import CollisionPolicy
from eventlog import get_logger
from supervisor import sole_error

from ._clock import VirtualClock, run_until_idle
from ._lease import FencedLog, SimLease
from ._model import Bound, Expectations, Scenario, Step
from ._result import (
    Check,
    CrashRow,
    EventRow,
    Metrics,
    RunSpan,
    ScenarioResult,
    ViolationRow,
    WantRow,
    percentile,
)
from ._sim import Simulation, build_graph

log = get_logger("wantbuild.scenarios")

__all__ = ["Checker", "run_scenario", "run_scenario_async"]


class Checker(Protocol):
    """What the runner needs of an invariant checker (``actors.InvariantChecker`` fits)."""

    violations: list[Any]
    world: Any

    def feed(self, rec: Any) -> None: ...

    def finish(self, *, expect_all_terminal: bool = False, quiescent: bool = False) -> list[Any]: ...


CheckerFactory = Callable[[], Checker]


class _Stop(Exception):
    """Internal: stop the scenario (an invariant was violated)."""


@dataclasses.dataclass
class _Crash:
    step: Step
    trigger: str


def _copy_world(world: Any) -> Any:
    return world.copy()


class _Runner:
    def __init__(self, sc: Scenario, *, policy: CollisionPolicy | None, workdir: Path,
                 checker_factory: CheckerFactory | None, clock: VirtualClock | None = None,
                 upstream: Mapping[str, tuple[str, Any]] | None = None) -> None:
        from actors import InvariantChecker

        self.sc = sc
        self.policy: CollisionPolicy = policy or sc.policy
        self.workdir = workdir
        self.shared_clock = clock is not None  # one graph of several: the clock is not this runner's alone
        self.path = workdir / (f"{sc.name}.db" if self.shared_clock else "scenario.db")
        self.clock = clock if clock is not None else VirtualClock()
        self.sim = Simulation(sc, is_live=self._is_live, now=self.clock.now)
        self.graph = build_graph(sc, self.sim.job_callable, upstream)
        self.checker: Checker = checker_factory() if checker_factory is not None else InvariantChecker()
        self.records: list[Any] = []
        self.steps: deque[Step] = deque(sc.ordered_timeline())
        self.want_ids: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.taint_ids: dict[str, str] = {}
        self.armed: list[Step] = []
        self.crash_now: _Crash | None = None
        self.crashes: list[CrashRow] = []
        self.notes: list[str] = []
        self.violations: list[ViolationRow] = []
        self.stopped = ""
        self.told: dict[tuple[str, str], int] = {}
        self.rt: Any = None
        self.elog: Any = None
        self.actions: dict[int, tuple[Step, anyio.CancelScope]] = {}
        self.touched: set[tuple[str, str]] = set()
        self.end_time = 0.0
        self.final_world: Any = None
        self.runtime_errors: list[str] = []
        self.refused: dict[str, tuple[tuple[str, str], ...]] = {}
        self.created: dict[str, anyio.Event] = {}
        self.deferred_refusals = 0
        self._action_tg: Any = None
        from actors import Faults

        self.faults = Faults()  # armed by fault steps; outlives crashes, as a flaky disk would
        self.gave_up: list[str] = []
        self.lease = SimLease()
        self.flog: FencedLog | None = None  # the current runtime's view of the log
        self.stale: list[tuple[Any, FencedLog]] = []  # runtimes whose lease was taken while they stalled
        self.timed: list[tuple[float, int, str, Any]] = []  # (at, order, "takeover" | "resume", (rt, flog))
        self._holders: Any = None
        self._stop_holders: anyio.Event | None = None

    # -- the outside world -------------------------------------------------------------------------------
    def _is_live(self, ref: str) -> bool:
        from actors import PartitionStatus

        rt = self.rt
        return rt is not None and rt.world.partition(ref).status is PartitionStatus.LIVE

    # -- top level ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            crash = await self._segment()
            if crash is None:
                break
            if self.stopped:
                break
            if crash.step.downtime > 0:
                self.clock.advance(self.clock.now() + crash.step.downtime)
        self.end_time = self.clock.now()
        for s in self.armed:
            self.notes.append(f"{s.describe()}: no {s.after_event} was committed after t={s.at:g}, so it never "
                              f"happened")

    async def _segment(self) -> _Crash | None:
        """One runtime's life: open it, drive the scenario until the end or a crash, then stop it."""
        crash: _Crash | None = None
        async with self.serving() as box:
            try:
                crash = await self._drive()
            except _Stop:
                crash = None
            box.append(crash)
        return crash

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[list[_Crash | None]]:
        """Open the log and the runtime; on the way out stop the runtime abruptly where it is and, if the body
        put a crash in the yielded list, check the log against it (else keep the World for the final I3)."""
        from eventlog import open_log

        box: list[_Crash | None] = []
        live_world: Any = None
        last_seq = 0
        async with open_log(self.path, fingerprint=self.graph.fingerprint(), now=self.clock.now,
                            autocommit=False) as elog:
            self.elog = elog
            ready = anyio.Event()
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                self._holders, self._stop_holders = tg, stop
                tg.start_soon(self._hold, elog, ready, stop)
                async with anyio.create_task_group() as actions:
                    self._action_tg = actions
                    try:
                        await self._open_runtime(ready)
                        yield box
                    finally:
                        # Stop at once, at this quiescent point: no await between here and the abort.
                        for _step, scope in self.actions.values():
                            scope.cancel()
                        self.timed.clear()
                        for old_rt, _flog in self.stale:  # frozen or stopping: they die with the segment
                            if not old_rt.crashed:
                                await self._stop_abruptly(old_rt)
                        self.stale.clear()
                        if self.rt is not None:
                            live_world = _copy_world(self.rt.world)
                            last_seq = elog.last_seq
                            self._collect_failures()
                            await self._stop_abruptly(self.rt)
                        stop.set()
                        actions.cancel_scope.cancel()
            self._action_tg = None
            self._holders = self._stop_holders = None
        self.rt = None
        self.flog = None
        self.elog = None
        if not self.shared_clock:  # another graph's sleepers are not this runtime's to drop
            self.clock.drop_all()
        crash = box[0] if box else None
        if crash is not None and not self.stopped:
            await self._after_crash(crash, live_world, last_seq)
        else:
            self.final_world = live_world

    @staticmethod
    async def _stop_abruptly(rt: Any) -> None:
        """Die the way a killed process does: the actors stop where they are, then the appends still waiting
        for a commit are dropped (``rt.crash()``). Nothing can commit in between: only the runner commits.

        Stopping the actors first is what a dying process looks like, and it keeps the actors whose appends
        are dropped from "crashing" on the CommitError and logging errors with tracebacks (see the report).
        """
        await rt.kernel.aclose()
        await rt.crash()

    async def _open_runtime(self, ready: anyio.Event) -> None:
        """Commit recovery's appends (marking runs Lost) until the holder task has the runtime open.

        Opening replays the log on aiosqlite's thread, which the quiescence check cannot see: while nothing
        is pending and the runtime is not ready yet, wait a moment of real time. Replay ends before recovery
        appends anything, so the commit points stay deterministic.
        """
        with anyio.fail_after(60):
            while not ready.is_set():
                if not await self._settle_step():
                    await anyio.sleep(0.001)

    def _collect_failures(self) -> None:
        for f in getattr(self.rt, "failures", ()):
            text = f"actor {f.kind} {f.key} stopped after repeated crashes, given up on: {f.error!r}"
            if text not in self.gave_up:
                self.gave_up.append(text)

    async def _hold(self, elog: Any, ready: anyio.Event, stop: anyio.Event, took_over: bool = False) -> None:
        from eventlog import LeaseLost
        from supervisor import open_runtime

        flog = FencedLog(elog, self.lease, self.lease.take())
        try:
            async with open_runtime(
                self.path, self.graph, clock=self.clock, policy=self.policy, autocommit=False,
                serve_commands=False, event_log=flog, log_dir=self.workdir / "job-logs",
                shutdown_grace=1.0, faults=self.faults,
            ) as rt:
                self.rt, self.flog = rt, flog
                rt.add_hook(self._hook)
                if rt.recovery.lost_runs:
                    who = f"the standby (epoch {flog.epoch})" if took_over else "restart"
                    self.notes.append(f"t={self.clock.now():g}: {who} marked {len(rt.recovery.lost_runs)} "
                                      f"run(s) Lost: {', '.join(rt.recovery.lost_runs)}")
                ready.set()
                await stop.wait()
        except LeaseLost:
            self.notes.append(f"t={self.clock.now():g}: the runtime of epoch {flog.epoch} found its lease gone: "
                              f"{flog.refused} write(s) refused, none landed; it stopped (LeaseLost)")

    def _hook(self, rec: Any, old: Any, new: Any) -> None:
        key = (rec.entity_kind, rec.entity_id)
        if rec.entity_seq > self.told.get(key, 0):
            self.told[key] = rec.entity_seq

    # -- driving -----------------------------------------------------------------------------------------
    async def _drive(self) -> _Crash | None:
        while True:
            await self._due_timed()
            self._start_due_steps()
            crash = await self._settle()
            if crash is not None:
                return crash
            nxt = [t for t in (self.steps[0].at if self.steps else None, self.clock.next_deadline(),
                               self.timed[0][0] if self.timed else None)
                   if t is not None]
            if not nxt:
                return None
            t = min(nxt)
            if t > self.sc.horizon:
                self.clock.advance(self.sc.horizon)
                self.notes.append(f"stopped at the horizon (t={self.sc.horizon:g}) with "
                                  f"{self.clock.sleepers()} timer(s) and {len(self.steps)} step(s) left")
                return None
            self.clock.advance(t)

    def _start_due_steps(self) -> None:
        now = self.clock.now()
        while self.steps and self.steps[0].at <= now and self.crash_now is None:
            step = self.steps.popleft()
            if step.after_event is not None:
                self.armed.append(step)
            else:
                self._fire(step, f"at t={now:g}")

    def _fire(self, step: Step, trigger: str) -> None:
        now = self.clock.now()
        if step.action == "crash":
            self.crash_now = _Crash(step, trigger)
        elif step.action == "kill":
            hit = self.sim.kill(ref=step.ref, job=step.job, reason=step.reason)
            what = step.ref if step.ref is not None else f"job {step.job}"
            self.notes.append(f"t={now:g}: kill {what}: " + (", ".join(hit) if hit else "no run was executing"))
        elif step.action == "stall":
            self._stall(step)
        elif step.action == "fault":
            assert step.point is not None
            self.faults.add(step.point, step.kind, step.match, skip=step.skip, times=step.times)  # type: ignore[arg-type]
            self.notes.append(f"t={now:g}: armed {step.describe()}")
        else:
            self._spawn(step)

    # -- stalls and takeovers (a simulated writer lease; see _lease.py) ------------------------------------------
    def _stall(self, step: Step) -> None:
        """Freeze the serving runtime for ``downtime`` s: its writes wait; past ``lease_ttl`` a standby takes the
        lease (the lease lapses ``lease_ttl`` after the stall began: it was renewed just before)."""
        now = self.clock.now()
        flog = self.flog
        if flog is None or flog.stalled:
            self.notes.append(f"t={now:g}: {step.describe()} skipped: no runtime serving")
            return
        flog.stall()
        self.notes.append(f"t={now:g}: the runtime of epoch {flog.epoch} stalls for {step.downtime:g} s "
                          f"(lease {step.lease_ttl:g} s)")
        order = len(self.timed) + step.index * 2
        if step.downtime > step.lease_ttl:
            self.timed.append((now + step.lease_ttl, order, "takeover", (self.rt, flog)))
        self.timed.append((now + step.downtime, order + 1, "resume", (self.rt, flog)))
        self.timed.sort(key=lambda e: (e[0], e[1]))

    async def _due_timed(self) -> None:
        now = self.clock.now()
        while self.timed and self.timed[0][0] <= now:
            _at, _order, what, (rt, flog) = self.timed.pop(0)
            if what == "takeover":
                await self._takeover(rt, flog)
            else:
                flog.resume()
                if flog.current:
                    self.notes.append(f"t={now:g}: the runtime of epoch {flog.epoch} resumes; its lease held")
                else:
                    self.notes.append(f"t={now:g}: the stalled runtime of epoch {flog.epoch} resumes, but epoch "
                                      f"{self.lease.epoch} holds the lease now")

    async def _takeover(self, old_rt: Any, old_flog: FencedLog) -> None:
        """The stalled runtime's lease lapsed: a standby takes it, fences the old runtime's jobs (as on one
        machine), replays the log and recovers (its runs Lost), while the old runtime stays frozen."""
        now = self.clock.now()
        world = self.checker.world  # the committed log
        inflight = sorted(r.job_run_id for r in world.runs.values() if not r.terminal)
        fenced = self.sim.fence(inflight, "fenced: the runtime that took over the log stopped it")
        self.notes.append(f"t={now:g}: the lease of epoch {old_flog.epoch} lapsed; a standby takes over"
                          + (f" and stops the jobs of {', '.join(fenced)}" if fenced else ""))
        self.stale.append((old_rt, old_flog))
        self.rt = self.flog = None  # the standby's, once it has replayed
        ready = anyio.Event()
        assert self._holders is not None
        assert self._stop_holders is not None
        self._holders.start_soon(self._hold, self.elog, ready, self._stop_holders, True)
        await self._open_runtime(ready)

    def _spawn(self, step: Step) -> None:
        scope = anyio.CancelScope()
        self.actions[step.index] = (step, scope)
        if step.action == "want" and step.name is not None:
            self.created[step.name] = anyio.Event()
        assert self._action_tg is not None
        self._action_tg.start_soon(self._act, step, scope)

    async def _act(self, step: Step, scope: anyio.CancelScope) -> None:
        from eventlog import WantbuildError

        rt = self.rt
        now = self.clock.now()
        with scope:
            try:
                if step.action == "want":
                    from supervisor import parse_partition_set

                    h = await rt.want(parse_partition_set(rt.graph, step.refs), ttl=step.ttl, sla=step.sla,
                                      source="scenario", priority=step.priority,
                                      comment=step.comment or (f"scenario want {step.name}" if step.name else ""))
                    if step.name is not None:
                        self.want_ids[step.name] = h.want_id
                        self.names[h.want_id] = step.name
                        self.created[step.name].set()
                elif step.action == "cancel":
                    pending = self.created.get(step.want) if step.want is not None else None
                    if pending is not None:  # the want was asked for at this same instant: cancel it once it exists
                        await pending.wait()
                    if step.taint is not None:
                        tid = self.taint_ids.get(step.taint)
                        if tid is None:
                            self.notes.append(f"t={now:g}: cancel taint {step.taint}: it does not exist (yet)")
                        else:
                            await rt.cancel_taint(tid, step.reason or f"canceled by the scenario at t={now:g}",
                                                  wait=False)
                    elif (wid := self.want_ids.get(step.want or "")) is None:
                        self.notes.append(f"t={now:g}: cancel {step.want}: that want does not exist (yet)")
                    else:
                        await rt.cancel(wid, step.reason or f"canceled by the scenario at t={now:g}")
                elif step.action == "taint":
                    from actors import PartitionStatus

                    refs = [r for r in step.refs if rt.world.partition(r).status is PartitionStatus.LIVE]
                    for r in step.refs:
                        if r not in refs:
                            self.notes.append(f"t={now:g}: taint {r} skipped: it is "
                                              f"{rt.world.partition(r).status}, only a Live partition can be "
                                              f"tainted")
                    if refs:
                        self.sim.taint(tuple(refs))
                        t = await rt.taint(refs, step.reason or f"tainted by the scenario at t={now:g}",
                                           cascade=step.cascade, depth=step.depth, wait=False)
                        if step.name is not None:
                            self.taint_ids[step.name] = t.taint_id
            except WantbuildError as e:
                if not rt.crashed:
                    self.notes.append(f"t={now:g}: {step.describe()} refused: {e}")
        if not scope.cancel_called:
            self.actions.pop(step.index, None)

    async def _settle_step(self) -> bool:
        """Run until idle, then commit what is pending; False when nothing was pending."""
        await run_until_idle()
        self._check_touched()
        if self.crash_now is not None:
            return False
        elog = self.elog
        if not elog.pending():
            return False
        before = elog.last_seq
        await elog.commit()
        if elog.last_seq > before:
            await self._read_new(before)
        return True

    async def _settle(self) -> _Crash | None:
        while await self._settle_step():
            pass
        crash, self.crash_now = self.crash_now, None
        return crash

    async def _read_new(self, after: int) -> None:
        from actors import ReplayError

        new = [rec async for rec in self.elog.read(after + 1)]
        for rec in new:
            self.records.append(rec)
            if rec.type == "PartitionTainted":  # the outside world: that output must not be read (cascades too)
                self.sim.taint((rec.entity_id,))
            elif rec.type == "PartitionRestored":
                self.sim.restore((rec.entity_id,))
            elif rec.type == "JobRunCanceled":
                self._note_refusals(rec)
            elif rec.type == "JobRunDeferred":
                self.deferred_refusals += len(getattr(rec.event, "refused", ()))
            n_before = len(self.checker.violations)
            with contextlib.suppress(ReplayError):
                self.checker.feed(rec)
            self.touched.add((rec.entity_kind, rec.entity_id))
            if len(self.checker.violations) > n_before:
                for v in self.checker.violations[n_before:]:
                    self.violations.append(ViolationRow(v.invariant, v.seq, v.message, tuple(v.entities),
                                                        self.clock.now()))
        if self.violations and self.sc.expect.invariants:
            v = self.violations[0]
            self.stopped = f"invariant {v.invariant} violated at seq {v.seq} (t={self.clock.now():g}): {v.message}"
            raise _Stop
        if self.armed and self.rt is not None:  # triggers are looked for while the runtime is up
            for step in list(self.armed):
                if self.crash_now is not None:
                    break  # the runtime is about to die: later triggers wait for the next one
                for rec in new:
                    if rec.type == step.after_event and (step.entity is None or rec.entity_id == step.entity):
                        self.armed.remove(step)
                        self._fire(step, f"after {rec.type} of {rec.entity_kind} {rec.entity_id} "
                                         f"(seq {rec.seq}, t={self.clock.now():g})")
                        break

    def _note_refusals(self, rec: Any) -> None:
        """A run canceled while Queued because its partitions were leased to other runs: a collision too."""
        world = self.checker.world
        run = world.runs.get(rec.entity_id)
        if run is None or str(run.status) != "Queued":
            return
        held = []
        for ref in run.planned:
            p = world.partitions.get(ref)
            if p is not None and str(p.status) == "Building" and p.lease not in (None, rec.entity_id):
                held.append((ref, str(p.lease)))
        if held:
            self.refused[rec.entity_id] = tuple(held)

    def _check_touched(self) -> None:
        """I3 on the entities the last commit touched: the live World equals the fold of the log."""
        if not self.touched or self.rt is None:
            return
        touched, self.touched = self.touched, set()
        live, folded = self.rt.world, self.checker.world
        for kind, eid in sorted(touched):
            a, b = live.get(kind, eid), folded.get(kind, eid)
            if a != b:
                self.violations.append(ViolationRow(
                    "I3", folded.last_seq, f"live {kind} {eid} differs from the log: {a!r} != {b!r}", (eid,),
                    self.clock.now()))
        if self.violations and self.sc.expect.invariants:
            v = self.violations[0]
            self.stopped = f"invariant {v.invariant} violated (t={self.clock.now():g}): {v.message}"
            raise _Stop

    # -- crashes -----------------------------------------------------------------------------------------
    async def _after_crash(self, crash: _Crash, live: Any, last_seq: int) -> None:
        from actors import check_replay_fidelity, rebuild
        from eventlog import open_log

        async with open_log(self.path, writer=False) as reader:
            rebuilt = await rebuild(reader)
        diffs = [v.message for v in check_replay_fidelity(live, rebuilt)]
        lost_told = []
        for (kind, eid), eseq in sorted(self.told.items()):
            st = rebuilt.get(kind, eid)
            have = 0 if st is None else st.entity_seq
            if have < eseq:
                lost_told.append(f"{kind} {eid}: a hook was told of entity_seq {eseq}, the log has {have}")
        now = self.clock.now()
        for d in diffs:
            self.violations.append(ViolationRow("I3", last_seq, f"at the crash: {d}", (), now))
        for d in lost_told:
            self.violations.append(ViolationRow("I4", last_seq, d, (), now))
        inflight = sorted(r.job_run_id for r in rebuilt.runs.values() if not r.terminal)
        self.crashes.append(CrashRow(
            at=now, trigger=crash.trigger, last_seq=last_seq, lost_runs=tuple(inflight),
            requeued=tuple(sorted(p.ref for p in rebuilt.partitions.values() if p.lease in inflight)),
            i3_ok=not diffs, i3_diff=tuple(diffs[:10]), downtime=crash.step.downtime,
        ))
        resubmit = sorted((s for s, _ in self.actions.values()), key=lambda s: s.index)
        self.actions.clear()
        for s in resubmit:
            self.notes.append(f"t={now:g}: {s.describe()} was lost in the crash; submitted again after the restart")
        self.steps.extendleft(reversed(resubmit))
        if (diffs or lost_told) and self.sc.expect.invariants:
            v = self.violations[-1]
            self.stopped = f"invariant {v.invariant} violated at the crash at t={now:g}: {v.message}"

    # -- the result --------------------------------------------------------------------------------------
    def result(self, wall: float) -> ScenarioResult:
        # The runner ends settled (nothing pending, the loop idle): I7 holds strictly there.
        final_violations = [v for v in self.checker.finish(expect_all_terminal=self.sc.expect.all_terminal,
                                                           quiescent=not self.stopped)
                            if (v.invariant, v.seq, v.message) not in
                            {(x.invariant, x.seq, x.message) for x in self.violations}]
        for v in final_violations:
            self.violations.append(ViolationRow(v.invariant, v.seq, v.message, tuple(v.entities), self.end_time))
        world = self.checker.world
        if self.final_world is not None and not self.stopped:
            from actors import check_replay_fidelity

            for v in check_replay_fidelity(self.final_world, world):
                self.violations.append(ViolationRow("I3", world.last_seq, f"at the end: {v.message}", (),
                                                    self.end_time))
        events = [EventRow(r.seq, r.type, r.entity_kind, r.entity_id, r.entity_seq, r.at) for r in self.records]
        deferrals = Counter(r.entity_id for r in self.records if r.type == "JobRunDeferred")
        crash_times = [c.at for c in self.crashes]
        runs = []
        for run in sorted(world.runs.values(), key=lambda r: r.job_run_id):
            worked = run.ended_at
            if run.status == "Lost" and run.started_at is not None:
                later = [t for t in crash_times if t >= run.started_at]
                worked = min(later) if later else run.ended_at
            runs.append(RunSpan(
                job_run_id=run.job_run_id, job=run.job, status=str(run.status), attempt=run.attempt,
                planned=tuple(run.planned), partitions=tuple(run.partitions) if run.started_at is not None else (),
                skipped=tuple((a, b) for a, b in run.skipped) or self.refused.get(run.job_run_id, ()),
                deferrals=deferrals.get(run.job_run_id, 0),
                queued_at=run.created_at, started_at=run.started_at, ended_at=run.ended_at, reason=run.reason,
                retry_of=run.retry_of, worked_until=worked,
            ))
        wants = []
        for w in sorted(world.wants.values(), key=lambda w: w.want_id):
            wants.append(WantRow(
                want_id=w.want_id, name=self.names.get(w.want_id),
                refs=(w.refs.describe(),) if w.is_set else tuple(w.refs), source=w.source,
                status=str(w.status), created_at=w.created_at, ended_at=w.updated_at if w.terminal else None,
                reason=w.reason, sla_missed=w.sla_missed,
            ))
        partitions = {ref: str(p.status) for ref, p in sorted(world.partitions.items())}
        metrics = self._metrics(runs, wants, events)
        r = ScenarioResult(
            name=self.sc.name, description=self.sc.description, policy=self.policy, seed=self.sc.seed, ok=True,
            end_time=self.end_time, events=events, runs=runs, wants=wants, partitions=partitions,
            crashes=list(self.crashes), violations=list(self.violations), checks=[], metrics=metrics,
            timeline=[s.describe() for s in self.sc.ordered_timeline()],
            notes=[*self.notes, *self.gave_up, *self.runtime_errors],
            stopped=self.stopped, wall_seconds=wall,
        )
        r.checks = self._checks(r, world)
        r.ok = all(c.ok for c in r.checks) and not self.stopped
        return r

    def _metrics(self, runs: list[RunSpan], wants: list[WantRow], events: list[EventRow]) -> Metrics:
        by_status = Counter(r.status for r in runs)
        by_type = Counter(e.type for e in events)
        skipped = sum(len(r.skipped) for r in runs)
        deferrals = by_type.get("JobRunDeferred", 0)
        wasted = 0.0
        for r in runs:
            if r.status in ("Canceled", "Lost", "Failed", "DepMiss") and r.started_at is not None:
                wasted += max(0.0, (r.worked_until if r.worked_until is not None else r.started_at) - r.started_at)
        lat = [w.latency for w in wants if w.source == "scenario" and w.latency is not None]
        return Metrics(
            job_runs=len(runs), duplicate_work=len(self.sim.duplicates), wasted_run_time=round(wasted, 6),
            collisions=skipped + self.deferred_refusals, crashes=len(self.crashes),
            latency_p50=percentile(lat, 50), latency_p95=percentile(lat, 95), latency_max=max(lat) if lat else None,
            runs_by_status=dict(sorted(by_status.items())), events_by_type=dict(sorted(by_type.items())),
            deferrals=deferrals, skipped=skipped,
            derived_wants=sum(1 for w in wants if w.source != "scenario"), executions=self.sim.executions,
            faults=len(self.faults.fired), gave_up=len(self.gave_up),
        )

    def _checks(self, r: ScenarioResult, world: Any) -> list[Check]:
        def partition(ref: str) -> tuple[str, int]:
            st = world.partitions.get(ref)
            return (str(st.status), st.generation) if st is not None else ("Missing", 0)

        return expectation_checks(self.sc.expect, r, self.want_ids, partition, self.runtime_errors, self.gave_up)


def expectation_checks(e: Expectations, r: ScenarioResult, want_ids: Mapping[str, str],
                       partition: Callable[[str], tuple[str, int]], runtime_errors: Sequence[str],
                       gave_up: Sequence[str], invariants: str = "I1-I7 hold") -> list[Check]:
    """The checks of ``[expect]`` on a result: ``want_ids`` maps want step names to ids, ``partition(ref)`` gives
    ``(status, generation)`` at the end; ``invariants`` says which invariants the violations stand for."""
    out: list[Check] = []
    if e.invariants:
        bad = sorted({v.invariant for v in r.violations})
        out.append(Check("invariants", not bad, invariants, "hold" if not bad else
                         f"{len(r.violations)} violation(s) of {', '.join(bad)}"))
    if r.stopped and not e.invariants:
        out.append(Check("completed", False, "the scenario runs to its end", r.stopped))

    def bound(name: str, b: Bound, value: float | None) -> None:
        shown = "none" if value is None else (f"{value:g}")
        out.append(Check(name, value is not None and b.holds(value), str(b), shown))

    for name, b in e.metrics.items():
        bound(name, b, r.metrics.value(name))
    for status, b in e.runs.items():
        bound(f"runs.{status}", b, float(r.metrics.runs_by_status.get(status, 0)))
    for typ, b in e.events.items():
        bound(f"events.{typ}", b, float(r.metrics.events_by_type.get(typ, 0)))
    rows = {w.want_id: w for w in r.wants}
    for name, we in e.wants.items():
        wid = want_ids.get(name)
        row = rows.get(wid or "")
        if we.status is not None:
            out.append(Check(f"wants.{name}.status", row is not None and row.status == we.status,
                             we.status, row.status if row is not None else "never created"))
        if we.latency is not None:
            bound(f"wants.{name}.latency", we.latency, None if row is None else row.latency)
    for ref, pe in e.partitions.items():
        status, generation = partition(ref)
        if pe.status is not None:
            out.append(Check(f"partitions.{ref}.status", status == pe.status, pe.status, status))
        if pe.generation is not None:
            bound(f"partitions.{ref}.generation", pe.generation, float(generation))
    if runtime_errors:
        out.append(Check("runtime errors", False, "the runtime never fails", "; ".join(runtime_errors[:3])))
    if gave_up and "gave_up" not in e.metrics:
        out.append(Check("gave_up", False, "no actor given up on (bound gave_up to expect it)",
                         "; ".join(gave_up[:3])))
    return out


async def run_scenario_async(sc: Scenario, *, policy: CollisionPolicy | None = None, workdir: str | Path | None = None,
                             checker_factory: CheckerFactory | None = None) -> ScenarioResult:
    """Run ``sc`` on the current (asyncio) loop. Prefer :func:`run_scenario`, which uses a fresh loop."""
    started = time.perf_counter()
    if sc.graphs:  # several graphs: one runner each, on one clock (_multi.py)
        from ._multi import run_graphs

        with tempfile.TemporaryDirectory(prefix="wantbuild-scenario-") as tmp:
            result = await run_graphs(sc, policy=policy, workdir=Path(workdir) if workdir is not None else Path(tmp),
                                      checker_factory=checker_factory)
        log.info("scenario finished", scenario=sc.name, policy=result.policy, ok=result.ok, graphs=len(sc.graphs),
                 events=len(result.events), virtual_seconds=result.end_time,
                 wall_seconds=round(result.wall_seconds, 3))
        return result
    with tempfile.TemporaryDirectory(prefix="wantbuild-scenario-") as tmp:
        runner = _Runner(sc, policy=policy, workdir=Path(workdir) if workdir is not None else Path(tmp),
                         checker_factory=checker_factory)
        try:
            await runner.run()
        except Exception as e:  # the runtime (not the scenario) broke: report it as this scenario's failure
            error = sole_error(e) or e  # task groups wrap what crosses them
            log.error("scenario aborted by a runtime error", scenario=sc.name, error=repr(error))
            runner.stopped = f"the runtime failed at t={runner.clock.now():g}: {type(error).__name__}: {error}"
            runner.runtime_errors.append(runner.stopped)
            runner.end_time = runner.clock.now()
        result = runner.result(time.perf_counter() - started)
    log.info("scenario finished", scenario=sc.name, policy=result.policy, ok=result.ok, events=len(result.events),
             virtual_seconds=result.end_time, wall_seconds=round(result.wall_seconds, 3))
    return result


def run_scenario(sc: Scenario, *, policy: CollisionPolicy | None = None, workdir: str | Path | None = None,
                 checker_factory: CheckerFactory | None = None) -> ScenarioResult:
    """Run ``sc`` deterministically on a fresh asyncio loop and return its result."""
    with asyncio.Runner() as runner:
        return runner.run(run_scenario_async(sc, policy=policy, workdir=workdir, checker_factory=checker_factory))
