"""Graphs shared by the runtime tests and the subprocesses they start."""

from __future__ import annotations

from supervisor import Graph, JobContext, MissingDeps


def chain_graph(*, fail_times: dict[str, int] | None = None, retries: int = 0, batch: int = 1,
                slow: float = 0.0, cycle: bool = False) -> tuple[Graph, dict[str, int]]:
    """raw/{i} <- daily/{i} (daily discovers raw as a missing dependency)."""
    g = Graph("test")
    built: dict[str, int] = {}
    fails = dict(fail_times or {})

    @g.job("raw", outputs="raw/{i}", batch=batch, retries=retries, backoff=0.01)
    async def raw(ctx: JobContext) -> None:
        if cycle:
            missing = [f"daily/{p['i']}" for p in ctx.params if built.get(f"daily/{p['i']}", 0) == 0]
            if missing:
                raise MissingDeps(missing)
        for ref in ctx.partitions:
            if fails.get(ref, 0) > 0:
                fails[ref] -= 1
                raise RuntimeError(f"boom {ref}")
        if slow:
            await ctx.sleep(slow)
        for ref in ctx.partitions:
            built[ref] = built.get(ref, 0) + 1

    @g.job("daily", outputs="daily/{i}", batch=batch)
    async def daily(ctx: JobContext) -> None:
        missing = [f"raw/{p['i']}" for p in ctx.params if built.get(f"raw/{p['i']}", 0) == 0]
        if missing:
            raise MissingDeps(missing)
        for ref in ctx.partitions:
            built[ref] = built.get(ref, 0) + 1

    return g, built
