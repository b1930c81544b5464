"""The bundled example graph that ``wantbuild demo`` builds: a week of daily partitions.

``raw/{date}`` (ingest) -> ``clean/{date}`` (flaky: its first attempt fails for some dates, it retries) ->
``daily/{date}`` -> ``weekly/{week}`` (needs seven dailies). Jobs write a small file per partition under a
data folder and discover their inputs the way real jobs do: an input whose file is missing is reported as a
missing dependency, which the supervisor builds first. Each declares what it reads (``ctx.read_many``), so
``wantbuild lineage weekly/2026-11-02`` shows what the report was built from.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import anyio

from supervisor import Graph, JobContext, MissingDeps

WEEK_START = dt.date(2026, 11, 2)


def week_dates(start: dt.date = WEEK_START) -> list[str]:
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(7)]


def example_graph(data_dir: str | Path, *, work_seconds: float = 0.05) -> Graph:
    data = Path(data_dir)
    g = Graph("example")

    def path_of(ref: str) -> Path:
        return data / (ref.replace("/", "__") + ".txt")

    def require(ctx: JobContext, needs: dict[str, str]) -> None:
        """Read each input into the partition that needs it (recorded as lineage); an input whose file is missing,
        or that is not Live (``ctx.read_many`` raises), is a missing dependency."""
        missing = [r for r in needs if not path_of(r).exists()]
        if missing:
            raise MissingDeps(missing)
        ctx.read_many(needs)

    async def write(ctx: JobContext, ref: str, body: str) -> None:
        await ctx.sleep(work_seconds)
        ctx.heartbeat()
        await anyio.Path(data).mkdir(parents=True, exist_ok=True)
        tmp = path_of(ref).with_suffix(".tmp")
        await anyio.Path(tmp).write_text(body)
        await anyio.Path(tmp).replace(path_of(ref))

    @g.job("ingest", outputs="raw/{date}", batch=7, concurrency=2)
    async def ingest(ctx: JobContext) -> None:
        for ref in ctx.partitions:
            await write(ctx, ref, f"raw rows for {ref}\n")

    @g.job("clean", outputs="clean/{date}", concurrency=3, retries=2, backoff=0.1)
    async def clean(ctx: JobContext) -> None:
        require(ctx, {f"raw/{p['date']}": ref for ref, p in zip(ctx.partitions, ctx.params, strict=True)})
        for ref, p in zip(ctx.partitions, ctx.params, strict=True):
            flaky = int(hashlib.sha256(p["date"].encode()).hexdigest(), 16) % 3 == 0
            if flaky and ctx.attempt == 1:
                raise RuntimeError(f"transient error while cleaning {ref} (the example's flaky job)")
            await write(ctx, ref, f"clean rows for {ref}\n")

    @g.job("daily", outputs="daily/{date}", concurrency=4)
    async def daily(ctx: JobContext) -> None:
        require(ctx, {f"clean/{p['date']}": ref for ref, p in zip(ctx.partitions, ctx.params, strict=True)})
        for ref in ctx.partitions:
            await write(ctx, ref, f"daily aggregate {ref}\n")

    @g.job("weekly", outputs="weekly/{week}")
    async def weekly(ctx: JobContext) -> None:
        for ref, p in zip(ctx.partitions, ctx.params, strict=True):
            start = dt.date.fromisoformat(p["week"])
            require(ctx, {f"daily/{d}": ref for d in week_dates(start)})
            await write(ctx, ref, f"weekly report {ref}\n")

    return g
