"""Range wants in the runtime: one event for a set, lazy planning, priorities, pools, data-time anchoring."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import PartitionSet, WantCreated, WantStatus, check_log, check_replay_fidelity, rebuild
from eventlog import EventLog
from supervisor import Graph, JobContext, Runtime, Schedule, ScheduleError, _lazy, open_runtime, parse_partition_set
from supervisor._lazy import waiting_reason


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "wb.db"


async def assert_sound(rt: Runtime) -> None:
    await rt.wait_quiescent()
    world, violations = await check_log(rt.log, expect_all_terminal=True)
    assert [str(v) for v in violations] == []
    assert check_replay_fidelity(rt.world, world) == []


def daily_graph(built: list[str], *, batch: int = 50, concurrency: int | None = None, pool: str | None = None,
                delay: float = 0.0) -> Graph:
    g = Graph("backfill")
    if pool is not None:
        g.add_pool(pool, 1)

    async def daily(ctx: JobContext) -> None:
        if delay:
            await anyio.sleep(delay)
        built.extend(ctx.partitions)

    g.job("daily", outputs="daily/{date}", params={"date": "date"}, batch=batch, concurrency=concurrency,
          pool=pool)(daily)

    async def report(ctx: JobContext) -> None:
        if delay:
            await anyio.sleep(delay)
        built.extend(ctx.partitions)

    g.job("report", outputs="report/{date}", params={"date": "date"}, pool=pool)(report)
    return g


async def test_range_want_is_one_event_and_builds_every_partition(db: Path) -> None:
    """A want over a range is one WantCreated holding the set; every partition is built once, in batches."""
    built: list[str] = []
    g = daily_graph(built)
    parts = parse_partition_set(g, ["daily/2026-01-01..2026-12-31"])
    async with open_runtime(db, g) as rt:
        h = await rt.want(parts)
        assert (await h.done(timeout=30)).status is WantStatus.SUCCESSFUL
        assert sorted(built) == sorted(parts)
        assert len(built) == len(set(built)) == 365
        await assert_sound(rt)
    async with EventLog.open(db, writer=False) as log:
        creations = [r for r in await log.history("want", h.want_id) if r.event.event_name == "WantCreated"]
        world = await rebuild(log)
    assert len(creations) == 1
    created = creations[0].event
    assert isinstance(created, WantCreated)
    assert created.refs == ()
    assert created.parts is not None
    assert isinstance(world.wants[h.want_id].refs, PartitionSet)
    assert world.wants[h.want_id].data_time == dt.datetime(2026, 12, 31, tzinfo=dt.UTC).timestamp()


async def test_set_want_is_planned_within_the_window(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A set far larger than the planning window never has more than the window queued or in flight."""
    monkeypatch.setattr(_lazy, "WINDOW", 300)
    monkeypatch.setattr(_lazy, "CHUNK", 50)
    built: list[str] = []
    g = daily_graph(built, batch=20)
    n = 3_000
    parts = parse_partition_set(g, [f"daily/2000-01-01..{(dt.date(2000, 1, 1) + dt.timedelta(n - 1)).isoformat()}"])
    building = peak = 0
    async with open_runtime(db, g) as rt:
        def watch(rec: Any, old: Any, new: Any) -> None:
            nonlocal building, peak
            if rec.entity_kind == "partition":
                building += (new.status == "Building") - (old is not None and old.status == "Building")
                peak = max(peak, building)

        rt.add_hook(watch)
        h = await rt.want(parts)
        assert (await h.done(timeout=120)).status is WantStatus.SUCCESSFUL
    assert len(built) == n
    assert 0 < peak <= _lazy.WINDOW  # without the window, all of them would be planned (and leased) at once


async def test_priority_want_waits_at_most_one_run_behind_a_backfill(db: Path) -> None:
    """With one run slot, a priority want created during a backfill is planned in the very next slot."""
    built: list[str] = []
    g = daily_graph(built, batch=1, concurrency=1, delay=0.01)
    async with open_runtime(db, g) as rt:
        started = anyio.Event()
        rt.add_hook(lambda *_: started.set() if len(built) >= 3 else None)
        backfill = await rt.want(parse_partition_set(g, ["daily/2026-01-01..2026-03-31"]))
        with anyio.fail_after(10):
            await started.wait()
        seen = len(built)
        today = await rt.want(["daily/2026-11-28"], priority=10)
        assert (await today.done(timeout=10)).status is WantStatus.SUCCESSFUL
        assert built.index("daily/2026-11-28") <= seen + 1  # the run in flight, then this one
        assert (await backfill.done(timeout=30)).status is WantStatus.SUCCESSFUL
        await assert_sound(rt)


async def test_pool_limits_runs_across_jobs_and_says_why(db: Path) -> None:
    """Two jobs in a pool of one never run at once; while one runs, the other's refs wait on the full pool."""
    built: list[str] = []
    g = daily_graph(built, batch=1, pool="warehouse", delay=0.02)
    running: list[int] = []
    reasons: set[str] = set()
    async with open_runtime(db, g) as rt:
        def watch(*_: Any) -> None:
            running.append(len(rt.world.in_flight_runs()))
            why = waiting_reason(g, rt.world, g["report"])
            if why:
                reasons.add(why)

        rt.add_hook(watch)
        a = await rt.want(["daily/2026-01-01", "daily/2026-01-02"])
        b = await rt.want(["report/2026-01-01", "report/2026-01-02"])
        assert (await a.done(timeout=10)).status is WantStatus.SUCCESSFUL
        assert (await b.done(timeout=10)).status is WantStatus.SUCCESSFUL
        await assert_sound(rt)
    assert max(running) == 1
    assert "pool warehouse full: 1/1" in reasons


@pytest.mark.parametrize(("anchor", "expired"), [
    pytest.param("data_time", True, id="data-time"),
    pytest.param("created", False, id="created"),
])
async def test_ttl_anchored_to_data_time_or_creation(db: Path, anchor: Any, expired: bool) -> None:
    """A TTL of a day on last year's data: anchored to data_time it has passed already (Expired); anchored to
    creation (the default) it has not, and the want succeeds."""
    built: list[str] = []
    g = daily_graph(built, delay=0.05)
    async with open_runtime(db, g) as rt:
        h = await rt.want(["daily/2025-01-01"], ttl=86400, anchor=anchor)
        assert h.state.data_time == dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp()
        st = await h.done(timeout=10)
        assert (st.status is WantStatus.EXPIRED) is expired
        if not expired:
            assert st.status is WantStatus.SUCCESSFUL


async def test_sla_anchored_to_a_given_data_time(db: Path) -> None:
    """An SLA anchored to a data time given in the past is missed at once; the want still succeeds."""
    built: list[str] = []
    g = daily_graph(built, delay=0.05)
    async with open_runtime(db, g) as rt:
        h = await rt.want(["daily/2026-01-01"], sla=60, anchor="data_time", data_time=rt.clock.now() - 3600)
        st = await h.done(timeout=10)
        assert (st.status, st.sla_missed) == (WantStatus.SUCCESSFUL, True)


async def test_schedule_ticks_pauses_resumes_and_is_deleted(db: Path) -> None:
    """A schedule firing every second creates one want per tick; paused, it creates none, and resuming does not
    catch up the paused time; deleted, it stops for good. Reopening the log keeps it and never doubles a tick."""
    built: list[str] = []
    g = daily_graph(built)
    sched = Schedule("often", "* * * * * *", "daily/{date}", priority=5)
    async with open_runtime(db, g) as rt:
        await rt.add_schedule(sched)
        with pytest.raises(ScheduleError, match="exists"):
            await rt.add_schedule(sched)
        await anyio.sleep(2.5)
        ticks = rt.get_schedule("often").ticks
        assert ticks >= 1
        await rt.pause_schedule("often")
        await anyio.sleep(2.0)
        assert rt.get_schedule("often").ticks == ticks
        await rt.resume_schedule("often")
        await anyio.sleep(1.6)
        resumed = rt.get_schedule("often").ticks
        assert ticks < resumed <= ticks + 2  # the paused seconds are not caught up
    async with open_runtime(db, g) as rt:
        st = rt.get_schedule("often")
        await rt.delete_schedule("often")
        await anyio.sleep(1.5)
        assert rt.get_schedule("often").ticks <= st.ticks + 2
        wants = [w for w in rt.world.wants.values() if w.schedule == "often"]
        assert len(wants) == len({w.tick for w in wants}) == rt.get_schedule("often").ticks
        assert all(w.priority == 5 and w.anchor == "data_time" for w in wants)
        assert str(rt.get_schedule("often").status) == "Deleted"


async def test_explain_says_a_queued_ref_waits_on_its_full_pool(db: Path) -> None:
    """While a pool of one is busy with another job's run, explain says the queued ref waits on the full pool."""
    release, started = anyio.Event(), anyio.Event()
    g = Graph("pools")
    g.add_pool("warehouse", 1)

    @g.job("load", outputs="load/{n}", pool="warehouse")
    async def load(ctx: JobContext) -> None:
        started.set()
        await release.wait()

    @g.job("report", outputs="report/{n}", pool="warehouse")
    async def report(ctx: JobContext) -> None:
        return None

    async with open_runtime(db, g) as rt:
        busy = await rt.want(["load/1"])
        with anyio.fail_after(5):
            await started.wait()
        idle = anyio.Event()
        rt.add_hook(lambda rec, old, new: idle.set() if rec.event.event_name == "WantIdle" else None)
        waiting = await rt.want(["report/1"])
        with anyio.fail_after(5):
            await idle.wait()
        ex = await rt.explain("report/1")
        assert "pool warehouse full: 1/1" in ex.summary
        release.set()
        assert (await busy.done(timeout=5)).status is WantStatus.SUCCESSFUL
        assert (await waiting.done(timeout=5)).status is WantStatus.SUCCESSFUL
