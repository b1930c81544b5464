"""What lineage asks of the supervisor: rebuild order after a taint, runs that read a tainted generation, staleness.

Pure functions over the World (and the graph), called by :class:`~supervisor._supervisor.Supervisor` at a few
points; the supervisor keeps no state of its own for them beyond its existing wait sets, so a reconcile rebuilds
everything from the World as for any other rule.

- :func:`rebuild_inputs`: a Tainted partition that a want needs waits for the inputs its tainted generation was
  built from (those not Live now) before it is rebuilt, and wants them: upstream first, each downstream once,
  after its inputs are Live again (the inputs of its last build are the best prediction of its next one's).
- :func:`late_taints`: a run that succeeded and settled a partition Live although it read a generation tainted
  meanwhile (its settlement raced the taint): the taints whose actors must walk again.
- :func:`stale_readers`: the Live partitions of ``rebuild_stale`` jobs built from an older generation of a ref
  that has just been rebuilt.
"""

from __future__ import annotations

from actors import (
    JobRunState,
    JobRunStatus,
    PartitionStatus,
    World,
    inputs_of,
    newer_inputs,
    outputs_of,
    tainted_input,
)

from ._graph import Graph
from ._graph_errors import NoJobForRef

P = PartitionStatus


def rebuild_inputs(world: World, ref: str) -> list[str]:
    """For a Tainted partition: the inputs its tainted generation was built from that are not Live now."""
    part = world.partitions.get(ref)
    if part is None or part.status is not P.TAINTED:
        return []
    return [r for r in inputs_of(world, ref, part.generation) if world.partition(r).status is not P.LIVE]


def late_taints(world: World, run: JobRunState) -> set[str]:
    """The taints that reach a partition this Succeeded run settled Live from a generation they taint now."""
    if run.status is not JobRunStatus.SUCCEEDED or not run.read or not any(t.active for t in world.taints.values()):
        return set()
    out: set[str] = set()
    for ref in run.built():
        part = world.partitions.get(ref)
        if part is None or part.status is not P.LIVE or part.built_by != run.job_run_id:
            continue
        bad = tainted_input(world, run, ref)
        if bad is not None:
            out.add(bad.taint_id)
    return out


def stale_readers(world: World, graph: Graph, ref: str) -> list[str]:
    """Live partitions of ``rebuild_stale`` jobs that were built from an older generation of ``ref`` (just rebuilt,
    Live at a newer one) and are stale because of it."""
    part = world.partitions.get(ref)
    if part is None or part.status is not P.LIVE:
        return []
    out: dict[str, None] = {}
    older = sorted({g for rid in world.lineage.reader_runs(ref)
                    if (run := world.runs.get(rid)) is not None
                    and (g := run.read.get(ref, part.generation)) < part.generation})
    for gen in older:
        for out_ref, out_gen, run in outputs_of(world, ref, gen):
            cur = world.partitions.get(out_ref)
            if cur is None or cur.status is not P.LIVE or cur.generation != out_gen or out_ref in out:
                continue
            try:
                job = graph.job_of(out_ref)
            except NoJobForRef:
                continue
            if job.rebuild_stale and newer_inputs(world, run, out_ref):
                out[out_ref] = None
    return list(out)


def is_stale(world: World, ref: str) -> bool:
    """Whether ``ref`` is Live and built from an input that has been rebuilt since."""
    part = world.partitions.get(ref)
    if part is None or part.status is not P.LIVE:
        return False
    run = world.runs.get(part.built_by or "")
    return run is not None and bool(newer_inputs(world, run, ref))
