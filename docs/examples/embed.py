"""Embedding wantbuild in an asyncio program (docs/embedding.md walks through it; a test runs it).

    python docs/examples/embed.py [FOLDER]

It writes ``example.db`` (the event log) and a ``data/`` folder into FOLDER (default: a new temporary folder).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from pathlib import Path

import anyio
import structlog

import wantbuild


def make_graph(data: Path) -> wantbuild.Graph:
    """raw/{date} <- daily/{date}: daily discovers that raw is missing and the supervisor builds it first."""
    graph = wantbuild.Graph("embed-example")

    def path_of(ref: str) -> Path:
        return data / (ref.replace("/", "__") + ".txt")

    @graph.job("ingest", outputs="raw/{date}", batch=7)
    async def ingest(ctx: wantbuild.JobContext) -> None:
        for ref in ctx.partitions:
            await anyio.Path(path_of(ref)).write_text(f"rows for {ref}\n")

    @graph.job("daily", outputs="daily/{date}", concurrency=2, retries=1)
    async def daily(ctx: wantbuild.JobContext) -> None:
        missing = [f"raw/{p['date']}" for p in ctx.params if not await anyio.Path(path_of(f"raw/{p['date']}")).exists()]
        if missing:
            raise wantbuild.MissingDeps(missing)  # the run ends DepMiss; a derived want builds them
        for ref in ctx.partitions:
            ctx.heartbeat()
            await anyio.Path(path_of(ref)).write_text(f"aggregate of {ref}\n")

    return graph


async def watch_runs(rt: wantbuild.Runtime) -> None:
    """Committed events, filtered, as they happen (rt.events follows the log live)."""
    async for rec in rt.events(kinds=["job_run"], types=["JobRunSucceeded", "JobRunDepMiss", "JobRunFailed"]):
        print(f"  event seq {rec.seq}: {rec.type} {rec.entity_id}")


async def main(folder: Path) -> None:
    # wantbuild logs through structlog; the application decides how much to see (here: warnings and errors).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    db = folder / "example.db"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    graph = make_graph(folder / "data")

    async with wantbuild.open(db, graph) as rt:
        watcher = asyncio.create_task(watch_runs(rt))
        handle = await rt.want(["daily/2026-11-02", "daily/2026-11-03"], comment="embedding example")
        state = await handle.done(timeout=30)
        watcher.cancel()
        print(f"want {state.want_id}: {state.status}")

        for run in rt.runs():
            print(f"run {run.job_run_id}: {run.job} {run.status} {', '.join(run.partitions)}")
        derived = [w for w in rt.wants() if w.parent_want_ids]
        print(f"derived wants: {[(w.want_id, w.refs) for w in derived]}")

        explanation = await rt.explain("daily/2026-11-02")
        print(f"explain: {explanation}")
        history = await rt.history("partition", "daily/2026-11-02")
        print(f"history of daily/2026-11-02: {[rec.type for rec in history]}")

    # The log alone tells the same story: rebuild the state, check the invariants.
    async with wantbuild.EventLog.open(db, writer=False) as log:
        world = await wantbuild.rebuild(log)
        _, violations = await wantbuild.check_log(log, expect_all_terminal=True)
    print(f"replayed {world.last_seq} events: {world.counts()['partition']['Live']} partitions Live, "
          f"{len(violations)} invariant violations")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="wantbuild-embed-"))
    asyncio.run(main(target))
