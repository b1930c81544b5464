"""Graphs whose jobs declare what they read: raw/{i} -> daily/{i} -> report/{i}, and clean/{i} (static deps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from supervisor import Graph, JobContext


@dataclass
class Knobs:
    """What the jobs do, changed by a test while the runtime runs."""

    fail: dict[str, str] = field(default_factory=dict)
    """ref -> reason: the job reports that partition failed (ctx.fail) while building the rest."""
    fail_times: dict[str, int] = field(default_factory=dict)
    """ref -> how many more builds of it fail (then it succeeds)."""
    builds: dict[str, int] = field(default_factory=dict)
    """ref -> how many times it was built (its job returned with it not failed)."""
    read_extra: dict[str, list[str]] = field(default_factory=dict)
    """ref -> extra refs its job reads (to provoke protocol errors)."""
    swallow: bool = False
    """Jobs catch every exception ctx.read raises and return (the runtime must not be fooled)."""


def lineage_graph(*, batch: int = 1, retries: int = 0, report_batch: int = 1,
                  executor: Any = None) -> tuple[Graph, Knobs]:
    """``executor``: where every job runs (a Dask or Ray executor: the knobs are then copied to the workers when
    each run is submitted, and ``Knobs.builds`` stays empty here)."""
    g = Graph("lineage", default_executor=executor)
    k = Knobs()

    def build(ctx: JobContext) -> None:
        for ref in ctx.partitions:
            left = k.fail_times.get(ref, 0)
            if ref in k.fail or left:
                if left:
                    k.fail_times[ref] = left - 1
                ctx.fail(ref, k.fail.get(ref, "a bad day"))
            else:
                k.builds[ref] = k.builds.get(ref, 0) + 1

    def extra(ctx: JobContext) -> None:
        for ref in ctx.partitions:
            for other in k.read_extra.get(ref, ()):
                try:
                    ctx.read(other)
                except Exception:
                    if not k.swallow:
                        raise

    @g.job("raw", outputs="raw/{i}", batch=batch, retries=retries, backoff=0.01)
    async def raw(ctx: JobContext) -> None:
        extra(ctx)
        build(ctx)

    @g.job("daily", outputs="daily/{i}", batch=batch, retries=retries, backoff=0.01)
    async def daily(ctx: JobContext) -> None:
        try:  # each daily reads its own raw; one call names every raw that is missing
            ctx.read_many({f"raw/{p['i']}": ref for ref, p in zip(ctx.partitions, ctx.params, strict=True)})
        except Exception:
            if not k.swallow:
                raise
        extra(ctx)
        build(ctx)

    @g.job("report", outputs="report/{i}", batch=report_batch, retries=retries, backoff=0.01)
    async def report(ctx: JobContext) -> None:
        ctx.read_many([f"daily/{p['i']}" for p in ctx.params])  # into every partition of the run
        extra(ctx)
        build(ctx)

    @g.job("clean", outputs="clean/{i}", deps="raw/{i}", batch=batch)
    async def clean(ctx: JobContext) -> None:
        build(ctx)

    return g, k
