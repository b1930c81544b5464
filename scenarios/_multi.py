"""Scenarios of several graphs: one runner per graph, one virtual clock, graphs wired to each other directly.

Each graph (``[graphs.NAME]``) gets its own :class:`~scenarios._runner._Runner`: its own temporary log, its own
runtime and simulated jobs, all on one :class:`~scenarios._clock.VirtualClock`. A graph that reads another one
(``upstream = ["events"]``) gets the usual built-in ``upstream.events`` job, whose link reaches the ``events``
runner's runtime directly (:class:`RuntimeLink`: ``rt.want``, ``rt.wait_want``, ``rt.cancel``) instead of through
the log's command inbox, which is polled: the same want, wait and cancel, with no real time in between.

How it runs: at each virtual instant every graph starts its due steps (graphs in name order), then the graphs
*settle* in turns, in name order: each runs until the loop is idle and commits what it has pending, and the turns
go round until a whole round commits nothing in any graph. Only then does the clock move, to the earliest sleeper
or step of any graph. So the commit points, hence every log, depend only on the scenario and its seed.

Each graph's log is checked for I1-I7 as in a one-graph scenario, and across graphs (:func:`cross_graph_checks`):

- **X1**: a partition of a graph that other graphs asked for is built at most once at a time and never again
  while its output is valid (the upstream graph's simulated duplicate work, on the refs other graphs wanted);
- **X2**: every want a downstream graph made in its upstream graph, and every want of a graph that reads another,
  ends Successful or with a reason; one that ended so because a want it made in another graph did not succeed
  names that graph in its reason.

Crash and stall steps are refused in such scenarios for now (``scenarios/_parser.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from actors import CollisionPolicy, WantStatus
from eventlog import WantbuildError, get_logger
from supervisor._upstream import want_ended, want_refused

from ._clock import VirtualClock
from ._model import Scenario
from ._result import EventRow, Metrics, RunSpan, ScenarioResult, ViolationRow, WantRow, percentile

log = get_logger("wantbuild.scenarios")

__all__ = ["RuntimeLink", "cross_graph_checks", "run_graphs"]


class RuntimeLink:
    """An :class:`supervisor.UpstreamLink` to the runtime serving graph ``name`` in this program (the one
    ``serving()`` returns when called: a runtime may be replaced)."""

    def __init__(self, name: str, serving: Any, db: str) -> None:
        self.name = name
        self.serving = serving
        self.db = db
        self.closing = False
        """Set when the whole scenario stops: a run canceled by the stop leaves the other graph alone."""

    def _rt(self) -> Any:
        rt = self.serving()
        if rt is None:
            raise RuntimeError(f"graph {self.name!r} has no runtime serving it")
        return rt

    async def want(self, ctx: Any, refs: list[str], *, source: str, comment: str) -> object:
        try:
            handle = await self._rt().want(refs, source=source, comment=comment)
        except WantbuildError as e:
            raise RuntimeError(want_refused(self.name, self.db, refs, str(e))) from None
        return str(handle.want_id)

    async def wait(self, ctx: Any, token: object, refs: list[str]) -> None:
        st = await self._rt().wait_want(str(token))
        if st.status is not WantStatus.SUCCESSFUL:
            raise RuntimeError(want_ended(self.name, str(token), refs, st.status, st.reason, self.db))

    async def cancel(self, token: object, reason: str) -> None:
        if not self.closing:
            await self._rt().cancel(str(token), reason)


def _order(sc: Scenario) -> list[str]:
    """The graphs upstream first (a graph after every graph it reads from), by name among equals."""
    ups = {g.name: set(g.upstream) for g in sc.graphs}
    out: list[str] = []
    while len(out) < len(ups):
        ready = sorted(n for n, u in ups.items() if n not in out and u <= set(out))
        out.append(ready[0])  # the format refuses cycles, so there is always one
    return out


async def run_graphs(sc: Scenario, *, policy: CollisionPolicy | None, workdir: Path,
                     checker_factory: Any) -> ScenarioResult:
    """Run a scenario of several graphs (see the module docstring) and return its merged result."""
    from ._runner import _Runner, _Stop

    started = time.perf_counter()
    clock = VirtualClock()
    runners: dict[str, _Runner] = {}
    links: list[RuntimeLink] = []
    for name in _order(sc):
        sub = sc.graph_scenario(name)
        wired: dict[str, tuple[str, Any]] = {}
        for up in sub.upstream:
            other = runners[up]
            db = f"{up}/scenario.db"  # its log, relative to the scenario's folder: reasons stay the same every run
            link = RuntimeLink(up, lambda other=other: other.rt, db)
            links.append(link)
            wired[up] = (db, link)
        (workdir / name).mkdir(parents=True, exist_ok=True)
        runners[name] = _Runner(sub, policy=policy, workdir=workdir / name, checker_factory=checker_factory,
                                clock=clock, upstream=wired)
    turns = [runners[n] for n in sorted(runners)]
    stopped = ""
    try:
        async with contextlib.AsyncExitStack() as stack:
            # Downstream graphs open first, so they are stopped last: an upstream graph stops with no run of a
            # downstream one asking it anything.
            for name in reversed(_order(sc)):
                await stack.enter_async_context(runners[name].serving())
            try:
                stopped = await _drive(sc, clock, turns)
            except _Stop:
                stopped = next(r.stopped for r in turns if r.stopped)
            for link in links:
                link.closing = True
            for r in turns:
                r.stopped = r.stopped or stopped
    except Exception as e:  # the runtime (not the scenario) broke: report it as this scenario's failure
        from supervisor import sole_error

        error = sole_error(e) or e
        log.error("scenario aborted by a runtime error", scenario=sc.name, error=repr(error))
        stopped = f"the runtime failed at t={clock.now():g}: {type(error).__name__}: {error}"
        for r in turns:
            r.stopped = r.stopped or stopped
        turns[0].runtime_errors.append(stopped)
    for r in turns:
        r.end_time = clock.now()
        for s in r.armed:
            r.notes.append(f"{s.describe()}: no {s.after_event} was committed after t={s.at:g}, so it never "
                           f"happened")
    wall = time.perf_counter() - started
    return _merge(sc, {r.sc.name: r for r in turns}, {r.sc.name: r.result(wall) for r in turns},
                  policy or sc.policy, stopped, wall)


async def _drive(sc: Scenario, clock: VirtualClock, turns: Sequence[Any]) -> str:
    """Start due steps, settle all graphs in turns, move the clock; the note of the horizon if it was reached."""
    while True:
        for r in turns:
            r._start_due_steps()
        moved = True
        while moved:
            moved = False
            for r in turns:
                while await r._settle_step():
                    moved = True
        nxt = [t for t in (*(r.steps[0].at for r in turns if r.steps), clock.next_deadline()) if t is not None]
        if not nxt:
            return ""
        t = min(nxt)
        if t > sc.horizon:
            clock.advance(sc.horizon)
            turns[0].notes.append(f"stopped at the horizon (t={sc.horizon:g}) with {clock.sleepers()} timer(s) "
                                  f"and {sum(len(r.steps) for r in turns)} step(s) left")
            return ""
        clock.advance(t)


def _p(graph: str, x: str) -> str:
    return f"{graph}:{x}"


def _merge(sc: Scenario, runners: Mapping[str, Any], parts: Mapping[str, ScenarioResult], policy: str,
           stopped: str, wall: float) -> ScenarioResult:
    """One result for the whole scenario: every id and ref prefixed with its graph (``GRAPH:``), events by time
    (graphs in name order at equal times), metrics summed, then the checks of ``[expect]`` and across graphs."""
    from ._runner import expectation_checks

    events: list[EventRow] = []
    runs: list[RunSpan] = []
    wants: list[WantRow] = []
    partitions: dict[str, str] = {}
    violations: list[ViolationRow] = []
    notes: list[str] = []
    for g, r in parts.items():
        events += [dataclasses.replace(e, entity_id=_p(g, e.entity_id)) for e in r.events]
        runs += [dataclasses.replace(
            x, job_run_id=_p(g, x.job_run_id), job=_p(g, x.job), planned=tuple(_p(g, p) for p in x.planned),
            partitions=tuple(_p(g, p) for p in x.partitions),
            skipped=tuple((_p(g, a), _p(g, b)) for a, b in x.skipped),
            retry_of=None if x.retry_of is None else _p(g, x.retry_of)) for x in r.runs]
        wants += [dataclasses.replace(w, want_id=_p(g, w.want_id), refs=tuple(_p(g, x) for x in w.refs))
                  for w in r.wants]
        partitions.update({_p(g, ref): status for ref, status in r.partitions.items()})
        violations += [dataclasses.replace(v, message=f"graph {g}: {v.message}",
                                           entities=tuple(_p(g, x) for x in v.entities)) for v in r.violations]
        notes += [f"graph {g}: {n}" for n in r.notes]
    events.sort(key=lambda e: e.at)  # stable: graphs in name order, then seq, at equal times
    violations += cross_graph_checks(sc, runners, runs, wants)
    metrics = _metrics([p.metrics for p in parts.values()], wants, runs)
    end = max((p.end_time for p in parts.values()), default=0.0)
    result = ScenarioResult(
        name=sc.name, description=sc.description, policy=policy, seed=sc.seed, ok=True, end_time=end,
        events=events, runs=runs, wants=wants, partitions=dict(sorted(partitions.items())), crashes=[],
        violations=violations, checks=[], metrics=metrics, timeline=[s.describe() for s in sc.ordered_timeline()],
        notes=notes, stopped=stopped, wall_seconds=wall,
    )
    want_ids = {name: _p(g, wid) for g, r in runners.items() for name, wid in r.want_ids.items()}

    def partition(ref: str) -> tuple[str, int]:
        g, _, inner = ref.partition(":")
        st = runners[g].checker.world.partitions.get(inner)
        return (str(st.status), st.generation) if st is not None else ("Missing", 0)

    errors = [e for r in runners.values() for e in r.runtime_errors]
    gave_up = [x for r in runners.values() for x in r.gave_up]
    result.checks = expectation_checks(sc.expect, result, want_ids, partition, errors, gave_up,
                                       invariants="I1-I7 hold in every graph, X1-X2 across graphs")
    result.ok = all(c.ok for c in result.checks) and not stopped
    return result


def _metrics(parts: Sequence[Metrics], wants: Sequence[WantRow], runs: Sequence[RunSpan]) -> Metrics:
    """The graphs' metrics summed; latencies over every graph's scenario wants."""
    lat = [w.latency for w in wants if w.source == "scenario" and w.latency is not None]
    by_status: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    for m in parts:
        by_status.update(m.runs_by_status)
        by_type.update(m.events_by_type)

    def total(name: str) -> Any:
        return sum(getattr(m, name) for m in parts)

    return Metrics(
        job_runs=total("job_runs"), duplicate_work=total("duplicate_work"),
        wasted_run_time=round(total("wasted_run_time"), 6), collisions=total("collisions"), crashes=0,
        latency_p50=percentile(lat, 50), latency_p95=percentile(lat, 95), latency_max=max(lat) if lat else None,
        runs_by_status=dict(sorted(by_status.items())), events_by_type=dict(sorted(by_type.items())),
        deferrals=total("deferrals"), skipped=total("skipped"), derived_wants=total("derived_wants"),
        executions=total("executions"), faults=total("faults"), gave_up=total("gave_up"),
    )


def cross_graph_checks(sc: Scenario, runners: Mapping[str, Any], runs: Sequence[RunSpan],
                       wants: Sequence[WantRow]) -> list[ViolationRow]:
    """X1 and X2 (see the module docstring) over the merged runs and wants (ids prefixed ``GRAPH:``)."""
    out: list[ViolationRow] = []
    asked: dict[tuple[str, str], set[str]] = {}  # (upstream graph, ref) -> the graphs that asked for it
    for run in runs:
        g, _, job = run.job.partition(":")
        if job.startswith("upstream."):
            up = job.removeprefix("upstream.")
            for ref in run.planned:
                asked.setdefault((up, ref.split(":", 2)[2]), set()).add(g)
    for (up, ref), by in sorted(asked.items()):
        for d in runners[up].sim.duplicates:
            if d.ref == ref:
                out.append(ViolationRow("X1", None, f"graph {up}: {ref}, wanted by graph(s) {', '.join(sorted(by))}, "
                                                    f"was built again by {d.job_run_id} ({d.why})",
                                        (_p(up, ref), _p(up, d.job_run_id)), d.at))
    readers = {g.name for g in sc.graphs if g.upstream}
    # Downstream graph -> upstream graphs one of its runs waited on in vain. "Ended so because of it" is taken
    # conservatively: in such a graph, every want that failed must name one of them (a scenario that also fails a
    # downstream job on its own gets a false alarm, never a missed silent end).
    failed_upstream: dict[str, set[str]] = {}
    for run in runs:
        g, _, job = run.job.partition(":")
        if job.startswith("upstream.") and run.status == "Failed":
            failed_upstream.setdefault(g, set()).add(job.removeprefix("upstream."))
    for w in wants:
        g = w.want_id.partition(":")[0]
        made_by = w.source.removeprefix("graph:") if w.source.startswith("graph:") else None
        if g not in readers and made_by is None:
            continue
        what = f"want {w.want_id}" + (f" (made by graph {made_by})" if made_by else "")
        if w.status == "Successful":
            continue
        if w.ended_at is None:
            if sc.expect.all_terminal:
                out.append(ViolationRow("X2", None, f"{what} never ended ({w.status})", (w.want_id,), None))
        elif not w.reason.strip():
            out.append(ViolationRow("X2", None, f"{what} ended {w.status} without a reason", (w.want_id,), w.ended_at))
        elif w.status in ("Failed", "UpstreamFailed") and failed_upstream.get(g) and made_by is None and not any(
                f"graph {up!r}" in w.reason for up in failed_upstream[g]):
            out.append(ViolationRow("X2", None, f"{what} ended {w.status} after a want in graph(s) "
                                                f"{', '.join(sorted(failed_upstream[g]))} failed, but its reason does "
                                                f"not name it: {w.reason!r}", (w.want_id,), w.ended_at))
    return out
