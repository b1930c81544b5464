"""The supervisor's open runs: while a run it planned has not ended, every ref the run planned lists it in the ref's
record (what lets a Building or UpstreamWaiting transition under that run skip the record, issue 15)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import Ctx, WantStatus, check_log
from supervisor import Graph, JobContext, MissingDeps, open_runtime
from supervisor._supervisor import Supervisor


def two_level(batch: int) -> Graph:
    """Daily partitions that report their raw partition missing until it is built (case (b)'s shape)."""
    g = Graph("two_level")
    built: set[str] = set()

    @g.job("raw", outputs="raw/{i}", batch=batch)
    async def raw(ctx: JobContext) -> None:
        await anyio.sleep(0.001)
        built.update(ctx.partitions)

    @g.job("daily", outputs="daily/{i}", batch=batch)
    async def daily(ctx: JobContext) -> None:
        await anyio.sleep(0.001)
        missing = [f"raw/{p['i']}" for p in ctx.params if f"raw/{p['i']}" not in built]
        if missing:
            raise MissingDeps(missing)
        built.update(ctx.partitions)

    return g


def open_runs_sound(sup: Supervisor) -> list[str]:
    """What breaks the open runs' rule in ``sup``'s indices, if anything."""
    bad = []
    flat = set().union(*sup.inflight.values()) if sup.inflight else set()
    if flat != sup.open_runs:
        bad.append(f"open_runs {sorted(sup.open_runs)} != inflight {sorted(flat)}")
    for rid in sup.open_runs:
        run = sup.world.runs.get(rid)
        planned = run.planned if run is not None else sup.pending.runs[rid].partitions
        for ref in planned:
            rec = sup.refs.get(ref)
            if rec is None or rid not in rec.runs:
                bad.append(f"{ref} planned by open run {rid} without it in its record")
    return bad


async def test_open_runs_are_listed_by_every_ref_they_planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After every supervisor message, each run it planned and has not seen end is in the records of all its refs,
    through DepMiss runs, derived wants, a second want over the same refs planned again, and their ends."""
    seen: list[str] = []
    checked = 0
    receive = Supervisor.receive

    def checking(self: Supervisor, ctx: Ctx, msg: Any) -> Any:
        nonlocal checked
        out = receive(self, ctx, msg)
        seen.extend(open_runs_sound(self))
        checked += 1
        return out

    monkeypatch.setattr(Supervisor, "receive", checking)
    g = two_level(batch=7)
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        first = await rt.want([f"daily/{i}" for i in range(60)])
        second = await rt.want([f"daily/{i}" for i in range(30, 90)])  # overlaps runs of the first in flight
        assert (await first.done(timeout=60)).status is WantStatus.SUCCESSFUL
        assert (await second.done(timeout=60)).status is WantStatus.SUCCESSFUL
        await rt.wait_quiescent()
        _world, violations = await check_log(rt.log, expect_all_terminal=True)
        assert [str(v) for v in violations] == []
    assert seen == []
    assert checked > 20  # the check ran through the whole backfill, not once
