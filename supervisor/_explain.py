"""``explain(ref)``: why a partition is not Live yet, as a chain, from the World (and so from the log alone).

The answer walks: the partition's status and the run holding or last touching it; the wants on it; for an
UpstreamWaiting partition, each upstream ref it waits on, recursively (with cycle protection); for failures,
the run's reason and retry state; for a Missing partition, whether anything wants it and what it waits for
(the job's concurrency slots, a deferred run).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from actors import JobRunState, JobRunStatus, PartitionStatus, World, newer_inputs
from eventlog import redact

from ._graph import Graph
from ._graph_errors import NoJobForRef
from ._lazy import waiting_reason
from ._upstream import UpstreamRun, split_upstream

P = PartitionStatus


@dataclass
class Explanation:
    ref: str
    status: str
    summary: str
    details: list[str] = field(default_factory=list)
    wants: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    upstream: list[Explanation] = field(default_factory=list)

    def lines(self, indent: int = 0) -> list[str]:
        pad = "  " * indent
        out = [f"{pad}{self.ref} [{self.status}]: {self.summary}"]
        out += [f"{pad}  - {d}" for d in self.details]
        for up in self.upstream:
            out += up.lines(indent + 1)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "status": self.status, "summary": self.summary, "details": self.details,
                "wants": self.wants, "runs": self.runs, "upstream": [u.to_dict() for u in self.upstream]}


def _built_from(world: World, run: JobRunState, ref: str, limit: int = 10) -> str:
    """``built from raw/1@2, clean/1@3`` (the generations its run read into it), and which are stale."""
    inputs = run.read_into(ref)
    if not inputs:
        return f"built from no recorded input (its job {run.job} declared no reads)"
    shown = [f"{r}@{g}" for r, g in sorted(inputs.items())[:limit]]
    more = f" and {len(inputs) - limit} more" if len(inputs) > limit else ""
    text = f"built from {', '.join(shown)}{more}"
    newer = newer_inputs(world, run, ref)
    if newer:
        text += "; stale: " + ", ".join(f"{r} is now @{now}" for r, (_, now) in sorted(newer.items())[:limit])
    return text


class ExplainIndex(Protocol):
    """Who mentions a ref, for callers that keep it indexed (the web view); without one, explain scans."""

    def wants_of(self, ref: str) -> Iterable[str]:
        """The ids of the wants whose refs include ``ref``."""
        ...

    def runs_of(self, ref: str) -> Iterable[str]:
        """The ids of the job runs that planned or built ``ref``."""
        ...


def _runs_for(world: World, ref: str, index: ExplainIndex | None = None) -> list[JobRunState]:
    if index is not None:
        return sorted((world.runs[r] for r in index.runs_of(ref) if r in world.runs), key=lambda r: r.job_run_id)
    return sorted((r for r in world.runs.values() if ref in r.planned or ref in r.partitions),
                  key=lambda r: r.job_run_id)


async def explain(world: World, graph: Graph | None, ref: str, *, log_: Any = None, depth: int = 0,
                  seen: set[str] | None = None, index: ExplainIndex | None = None) -> Explanation:
    """Why ``ref`` is not Live yet (or how it became Live). ``index`` answers "who mentions this ref" without a
    scan of every want and run (the answer is the same; a 100,000-run World makes the scan cost ~100 ms)."""
    seen = set() if seen is None else seen
    seen.add(ref)
    st = world.partition(ref)
    if index is not None:
        wants = sorted(w for w in index.wants_of(ref) if w in world.wants)
    else:
        wants = sorted(w.want_id for w in world.wants.values() if ref in w.refs)
    active = [w for w in wants if not world.wants[w].terminal]
    runs = _runs_for(world, ref, index)
    ex = Explanation(ref, str(st.status), "", wants=wants, runs=[r.job_run_id for r in runs])
    job_name = None
    no_job = False
    if graph is not None:
        try:
            job = graph.job_for(ref)[0]
            job_name = job.name
        except NoJobForRef as e:
            no_job = True
            ex.details.append(str(e))
        else:
            if isinstance(job.run, UpstreamRun):  # another graph's partition: say where to look further
                inner = split_upstream(ref)[1]
                ex.details.append(f"partition {inner} of graph {job.run.name!r}, built by its runtime: "
                                  f"`wantbuild explain {inner} --db {redact(job.run.db)}`")
    if active:
        ex.details.append(f"wanted by {', '.join(active)}")
    elif wants:
        ex.details.append(f"no active want (past wants: {', '.join(wants[-3:])})")
    last = runs[-1] if runs else None
    s = st.status
    if s is P.LIVE:
        ex.summary = f"Live (generation {st.generation}, built by {st.built_by})"
        builder = world.runs.get(st.built_by or "")
        if builder is not None:
            ex.details.append(_built_from(world, builder, ref))
    elif s is P.BUILDING:
        run = world.runs.get(st.lease or "")
        what = f"{run.job} attempt {run.attempt}/{run.max_attempts}, {run.status}" if run else "unknown run"
        ex.summary = f"being built by {st.lease} ({what})"
        if run and run.wants:
            ex.details.append(f"that run serves {', '.join(run.wants)}")
    elif s is P.UPSTREAM_WAITING:
        needs = world.needs(ref)
        ex.summary = f"waiting on {len(needs)} upstream partition(s) reported missing by {st.waiting_run}"
        for up in needs[:20]:
            if up in seen:
                ex.upstream.append(Explanation(up, str(world.partition(up).status), "(cycle: already shown above)"))
            elif depth < 20:
                ex.upstream.append(await explain(world, graph, up, depth=depth + 1, seen=seen, index=index))
    elif s is P.FAILED:
        run = world.runs.get(st.lease or "") or last
        retry = "no attempts left" if st.final else "a retry is pending"
        ex.summary = f"failed: {st.reason} ({retry})"
        if run is not None and run.stderr_path:
            ex.details.append(f"logs: {run.stdout_path}, {run.stderr_path}")
    elif s is P.UPSTREAM_FAILED:
        ex.summary = f"an upstream partition failed: {st.reason}"
    elif s is P.TAINTED:
        by = f" by {st.tainted_by}" + (f", {st.taint_depth} level(s) below what it named" if st.taint_depth else "")
        ex.summary = f"tainted{by if st.tainted_by else ''} ({st.reason}); rebuilt when next wanted"
        builder = world.runs.get(st.built_by or "")
        if builder is not None:
            ex.details.append(_built_from(world, builder, ref))
    else:
        if no_job and graph is not None:
            ex.summary = f"Missing, and no job of graph {graph.name!r} produces it, so nothing can build it"
        elif not active:
            ex.summary = "Missing and nothing wants it (create a want for it)"
        elif last is not None and last.status is JobRunStatus.QUEUED and last.deferred_on:
            ex.summary = f"run {last.job_run_id} is deferred until " + ", ".join(
                f"{r} ({h})" for r, h in last.deferred_on)
        elif last is not None and last.status is JobRunStatus.QUEUED:
            ex.summary = f"queued in run {last.job_run_id}, taking its leases"
        else:
            busy = [r.job_run_id for r in world.in_flight_runs() if r.job == job_name]
            why = waiting_reason(graph, world, graph[job_name]) if graph is not None and job_name else None
            ex.summary = "Missing, waiting to be scheduled" + (
                f": {why}" if why else
                f" (job {job_name} has {len(busy)} run(s) in flight: {', '.join(busy[:5])})" if busy else "")
            if st.reason:
                ex.details.append(f"last change: {st.reason}")
    if last is not None and s is not P.LIVE:
        tail = f"last run {last.job_run_id}: {last.status}"
        if last.reason:
            tail += f" ({last.reason})"
        if last.skipped and ref in dict(last.skipped):
            tail += f"; skipped because {dict(last.skipped)[ref]} held it"
        ex.details.append(tail)
    return ex
