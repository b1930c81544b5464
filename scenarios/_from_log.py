"""``wantbuild scenario from-log``: a war-game made from a real event log (issue 16).

The scenario reproduces, on the simulated clock, what the log recorded:

- **wants**: every want created by a user, a CLI, an API or a schedule (derived wants are left out: the runtime
  derives them again) is a ``want`` step at its creation time, with its refs (a range want keeps its ranges), TTL,
  SLA and priority; cancels are ``cancel`` steps, taints ``taint`` steps;
- **jobs**: from the graph when one is given (``--graph``: outputs, deps, batch, concurrency, retries, types,
  pools), else inferred from the runs (a pattern per job from its refs, the largest batch, the most runs at once,
  the most attempts, the shortest retry delay);
- **builds**: each job gets a ``script``: for every ref it built, how its 1st, 2nd... build went in the log (how
  long it ran; succeeded, failed, or reported missing dependencies and which; a canceled run hangs until the
  replay cancels it too). Runs lost in a crash are not scripted;
- **expectations**: every want that ended in the log must end in the same status.

Time is shifted so that the first want (or ``--from``) is ``t=0``. ``--from``/``--to`` keep the wants created in
that window (and everything they caused). Then ``scenario compare`` answers what-ifs on real traffic: the same day
under another collision policy, with a backfill added as one more ``want`` step, with another pool size.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from actors import JobRunStatus, PartitionSet, WantState, World, rebuild
from eventlog import EventLog, Record

from ._dumper import dump_scenario
from ._model import Attempt, Expectations, JobSpec, Scenario, Step, WantExpect

__all__ = ["scenario_from_log"]

_DERIVED = ("job_run:", "static_deps:")
_TERMINAL = {"Successful", "Failed", "UpstreamFailed", "Canceled", "Expired"}


async def scenario_from_log(path: str | Path, *, graph: Any | None = None, start: float | None = None,
                            end: float | None = None, name: str | None = None) -> Scenario:
    """The scenario that replays the log at ``path`` (see the module docstring); ``graph`` a ``supervisor.Graph``."""
    cancels: dict[str, tuple[float, str]] = {}
    taints: list[tuple[float, str, str]] = []

    def seen(world: World, rec: Record, state: Any) -> None:
        ev = rec.event
        if rec.event.event_name == "WantCanceled":
            cancels[rec.entity_id] = (rec.at, getattr(ev, "reason", ""))
        elif rec.event.event_name == "PartitionTainted":
            taints.append((rec.at, rec.entity_id, getattr(ev, "reason", "")))

    async with EventLog.open(path, writer=False) as log:
        world = await rebuild(log, on_record=seen, snapshots=False)  # sees every record
    roots = sorted((w for w in world.wants.values() if not w.source.startswith(_DERIVED)
                    and (start is None or w.created_at >= start) and (end is None or w.created_at <= end)),
                   key=lambda w: (w.created_at, w.want_id))
    if not roots:
        raise ValueError(f"no want was created in {path}" + (" in that window" if start or end else "")
                         + "; nothing to replay")
    t0 = start if start is not None else roots[0].created_at
    keep_roots = {w.root_want_id for w in roots} | {w.want_id for w in roots}
    kept_wants = {w.want_id for w in world.wants.values() if w.root_want_id in keep_roots}
    runs = sorted((r for r in world.runs.values() if set(r.wants) & kept_wants), key=lambda r: r.job_run_id)

    steps: list[Step] = []
    expect: dict[str, WantExpect] = {}
    names: dict[str, str] = {}
    for i, w in enumerate(roots, start=1):
        label = f"w{i}"
        names[w.want_id] = label
        steps.append(Step(at=round(w.created_at - t0, 6), action="want", name=label, refs=_spec_of(w),
                          ttl=w.ttl, sla=w.sla, priority=w.priority,
                          comment=f"replayed {w.want_id} ({w.source})"))
        if str(w.status) in _TERMINAL and w.want_id not in cancels:
            expect[label] = WantExpect(status=str(w.status))
    for want_id, (at, reason) in sorted(cancels.items(), key=lambda x: x[1][0]):
        if want_id in names:
            steps.append(Step(at=round(at - t0, 6), action="cancel", want=names[want_id], reason=reason))
            expect[names[want_id]] = WantExpect(status="Canceled")
    for at, ref, reason in taints:
        if at >= t0 and (end is None or at <= end):
            steps.append(Step(at=round(at - t0, 6), action="taint", refs=(ref,), reason=reason))
    steps.sort(key=lambda s: s.at)
    steps = [dataclasses.replace(s, index=i) for i, s in enumerate(steps)]

    jobs = _jobs(runs, graph)
    last = max([w.updated_at for w in world.wants.values() if w.want_id in kept_wants]
               + [r.updated_at for r in runs] + [roots[-1].created_at])
    all_done = all(str(world.wants[w].status) in _TERMINAL for w in kept_wants)
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "-", Path(path).stem)
    return Scenario(
        name=name or f"{stem}-replayed",
        description=f"Replayed from {Path(path).name}: {len(roots)} want(s), {len(runs)} run(s), their durations "
                    f"and outcomes, on the simulated clock.",
        jobs=jobs,
        timeline=tuple(steps),
        horizon=max(60.0, round(last - t0, 6) * 2 + 60),
        expect=Expectations(all_terminal=all_done, wants=expect),
        pools=dict(getattr(graph, "pools", {}) or {}),
    )


def _spec_of(w: WantState) -> tuple[str, ...]:
    refs = w.refs
    if isinstance(refs, PartitionSet):
        return tuple(r.text() for r in refs.ranges) + refs.refs
    return tuple(refs)


def _jobs(runs: list[Any], graph: Any | None) -> tuple[JobSpec, ...]:
    by_job: dict[str, list[Any]] = defaultdict(list)
    for r in runs:
        by_job[r.job].append(r)
    out = []
    for job, job_runs in sorted(by_job.items()):
        script: dict[str, list[Attempt]] = defaultdict(list)
        for r in job_runs:
            if r.started_at is None or r.ended_at is None:
                continue
            if r.status is JobRunStatus.SUCCEEDED:
                attempt = Attempt(round(r.ended_at - r.started_at, 6))
            elif r.status is JobRunStatus.FAILED:
                attempt = Attempt(round(r.ended_at - r.started_at, 6), "fail")
            elif r.status is JobRunStatus.DEP_MISS:
                attempt = Attempt(round(r.ended_at - r.started_at, 6), "missing_deps", tuple(r.missing))
            elif r.status is JobRunStatus.CANCELED:
                attempt = Attempt(round(r.ended_at - r.started_at, 6), "hang")  # it never finished by itself
            else:
                continue  # lost in a crash: nothing says how it would have ended
            for ref in r.partitions:
                script[ref].append(attempt)
        spec = _from_graph(job, graph) if graph is not None and job in graph else _inferred(job, job_runs)
        out.append(dataclasses.replace(spec, script={ref: tuple(a) for ref, a in sorted(script.items())},
                                       duration=0.0))
    return tuple(out)


def _from_graph(name: str, graph: Any) -> JobSpec:
    job = graph[name]
    deps: tuple[str, ...] = ()
    templates = getattr(job.deps, "templates", None)
    if templates is not None:
        deps = tuple(t.text for t in templates)
    return JobSpec(
        name=name, outputs=tuple(p.text for p in job.outputs), deps=deps, batch=job.batch,
        concurrency=job.concurrency, retries=job.retry.max_attempts - 1, backoff=job.retry.backoff,
        backoff_factor=job.retry.factor, max_backoff=job.retry.max_backoff, timeout=job.timeout,
        heartbeat_timeout=job.heartbeat_timeout, collision_policy=job.collision_policy,
        params={k: (v.values if v.kind == "enum" else v.kind) for k, v in job.param_types.items()}, pool=job.pool,
    )


def _inferred(name: str, runs: list[Any]) -> JobSpec:
    refs = sorted({ref for r in runs for ref in (*r.planned, *r.partitions)})
    spans = sorted((r.started_at, r.ended_at) for r in runs if r.started_at is not None and r.ended_at is not None)
    most, live = 0, list[float]()
    for s, e in spans:
        live = [x for x in live if x > s]
        live.append(e)
        most = max(most, len(live))
    retries = max((r.attempt for r in runs), default=1) - 1
    gaps = [b.created_at - a.ended_at for a in runs for b in runs
            if b.retry_of == a.job_run_id and a.ended_at is not None]
    return JobSpec(name=name, outputs=_patterns(name, refs), batch=max((len(r.planned) for r in runs), default=1),
                   concurrency=most or None, retries=retries,
                   backoff=round(max(min(gaps), 0.0), 6) if gaps else 1.0)


def _patterns(name: str, refs: list[str]) -> tuple[str, ...]:
    """One pattern per shape of ref: segments every ref shares stay literal, the others become placeholders."""
    shapes: dict[int, list[list[str]]] = defaultdict(list)
    for ref in refs:
        shapes[ref.count("/")].append(ref.split("/"))
    out = []
    for _, segs in sorted(shapes.items()):
        parts = []
        for i, column in enumerate(zip(*segs, strict=True)):
            parts.append(column[0] if len(set(column)) == 1 else f"{{p{i}}}")
        out.append("/".join(parts))
    return tuple(out) or (f"{name}/{{key}}",)


def dump_replay(sc: Scenario, source: str) -> str:
    return dump_scenario(sc, header=f"Made by `wantbuild scenario from-log {source}`: a replay of real traffic.\n"
                                    f"Edit the timeline to ask what-ifs; `scenario compare` runs it under each "
                                    f"collision policy.")
