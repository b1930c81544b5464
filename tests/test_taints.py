"""Taints as entities: they cascade through the lineage, active wants rebuild upstream first, a cancel restores,
runs that read a tainted generation end Tainted, stale partitions of rebuild_stale jobs are refreshed. The cascade,
the rebuild, the cancel and the crash drill run on both backends (`log_target`: SQLite, then PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from lineage_graphs import lineage_graph

from actors import (
    FaultRule,
    Faults,
    IllegalTransition,
    InvariantChecker,
    JobRunStatus,
    PartitionStatus,
    TaintStatus,
    WantStatus,
    check_replay_fidelity,
)
from supervisor import Graph, JobContext, Runtime, UnknownEntity, open_runtime

P = PartitionStatus


async def sound(rt: Runtime) -> None:
    """I1-I7 over the whole log (I7 strictly: the runtime is quiescent), and the log replays to the live World."""
    await rt.wait_quiescent()
    checker = InvariantChecker()
    async for batch in rt.log.read_batches(1):
        for rec in batch:
            checker.feed(rec)
    assert [str(v) for v in checker.finish(expect_all_terminal=True, quiescent=True)] == []
    assert check_replay_fidelity(rt.world, checker.world) == []


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "wb.db"


def status(rt: Runtime, *refs: str) -> list[str]:
    return [str(rt.get_partition(r).status) for r in refs]


async def test_a_taint_cascades_to_everything_built_from_it(log_target: str) -> None:
    """Tainting raw/1 taints daily/1 and report/1 (built from it), each once, with its depth and way in;
    raw/2 and daily/2, not built from raw/1, stay Live."""
    g, _ = lineage_graph()
    async with open_runtime(log_target, g) as rt:
        await (await rt.want(["report/1", "daily/2"])).done(timeout=10)
        t = await rt.taint("raw/1", "duplicated rows", timeout=10)
        assert (t.status, t.tainted, t.waves) == (TaintStatus.APPLIED, 3, 1)
        assert status(rt, "raw/1", "daily/1", "report/1", "raw/2", "daily/2") == [
            "Tainted", "Tainted", "Tainted", "Live", "Live"]
        daily = rt.get_partition("daily/1")
        assert (daily.tainted_by, daily.taint_depth) == (t.taint_id, 1)
        assert rt.get_partition("report/1").taint_depth == 2
        tainted = [r for r in await rt.history(types=["PartitionTainted"])]
        assert sorted(r.entity_id for r in tainted) == ["daily/1", "raw/1", "report/1"]
        assert [getattr(r.event, "via", None) for r in tainted] == [None, "raw/1@1", "daily/1@2"]
        await sound(rt)


@pytest.mark.parametrize(("cascade", "depth", "tainted"), [
    pytest.param(False, None, ["raw/1"], id="no-cascade"),
    pytest.param(True, 0, ["raw/1"], id="depth-0"),
    pytest.param(True, 1, ["raw/1", "daily/1"], id="depth-1"),
    pytest.param(True, None, ["raw/1", "daily/1", "report/1"], id="all"),
])
async def test_how_far_a_taint_reaches(db: Path, cascade: bool, depth: int | None, tainted: list[str]) -> None:
    """--no-cascade taints only the named partitions; --depth N stops N levels down; I7 holds either way."""
    g, _ = lineage_graph()
    async with open_runtime(db, g) as rt:
        await (await rt.want("report/1")).done(timeout=10)
        await rt.taint("raw/1", "bad", cascade=cascade, depth=depth, timeout=10)
        assert sorted(p.ref for p in rt.partitions("Tainted")) == sorted(tainted)
        await sound(rt)


async def test_a_want_rebuilds_upstream_first_each_partition_once(log_target: str) -> None:
    """A want for the tainted report/1 rebuilds raw/1, then daily/1, then report/1: one run each, no DepMiss."""
    g, k = lineage_graph()
    async with open_runtime(log_target, g) as rt:
        await (await rt.want("report/1")).done(timeout=10)
        before = {r.job_run_id for r in rt.runs()}
        k.builds.clear()
        await rt.taint("raw/1", "bad", timeout=10)
        st = await (await rt.want("report/1")).done(timeout=10)
        assert st.status is WantStatus.SUCCESSFUL
        rebuilt = [r for r in rt.runs() if r.job_run_id not in before]
        assert [(r.job, r.status) for r in rebuilt] == [("raw", JobRunStatus.SUCCEEDED),
                                                        ("daily", JobRunStatus.SUCCEEDED),
                                                        ("report", JobRunStatus.SUCCEEDED)]
        assert k.builds == {"raw/1": 1, "daily/1": 1, "report/1": 1}
        assert [(w.source, w.refs) for w in rt.wants()][-2:] == [("rebuild:report/1", ("daily/1",)),
                                                                  ("rebuild:daily/1", ("raw/1",))]
        await sound(rt)


async def test_cancel_restores_what_was_not_rebuilt(log_target: str) -> None:
    """Canceling a taint restores raw/1's downstream not rebuilt since, at its generation; raw/1, rebuilt
    meanwhile, keeps its new generation; report/1's restoration makes it stale."""
    g, _ = lineage_graph()
    async with open_runtime(log_target, g) as rt:
        await (await rt.want("report/1")).done(timeout=10)
        t = await rt.taint("raw/1", "false alarm", timeout=10)
        await (await rt.want("raw/1")).done(timeout=10)
        done = await rt.cancel_taint(t.taint_id, "the rows were right", timeout=10)
        assert (done.status, done.restored) == (TaintStatus.CANCELED, 2)
        assert status(rt, "raw/1", "daily/1", "report/1") == ["Live", "Live", "Live"]
        assert [rt.get_partition(r).generation for r in ("raw/1", "daily/1", "report/1")] == [2, 2, 2]
        assert [s.ref for s in rt.stale()] == ["daily/1"]
        again = await rt.cancel_taint(t.taint_id)
        assert again.restored == 2  # a second cancel changes nothing
        await sound(rt)


async def test_a_partition_two_taints_reach_stays_tainted_until_both_are_canceled(db: Path) -> None:
    """report/1 and report/2, built in one run that read daily/1 and daily/2 into both: tainted by raw/1's taint,
    they stay Tainted when that one is canceled while raw/2's reaches them, and are restored with it."""
    g, _ = lineage_graph(report_batch=2)
    async with open_runtime(db, g) as rt:
        await (await rt.want(["report/1", "report/2"])).done(timeout=10)
        first = await rt.taint("raw/1", "one", timeout=10)
        second = await rt.taint("raw/2", "two", timeout=10)
        await rt.cancel_taint(first.taint_id, timeout=10)
        assert status(rt, "raw/1", "daily/1", "report/1", "report/2") == ["Live", "Live", "Tainted", "Tainted"]
        await rt.cancel_taint(second.taint_id, timeout=10)
        assert not rt.partitions("Tainted")
        await sound(rt)


async def test_a_run_that_read_a_generation_tainted_meanwhile_ends_tainted(db: Path) -> None:
    """daily/1 reads raw/1, raw/1 is tainted while daily/1 builds: the run succeeds, daily/1 ends Tainted (not
    Live), and the want still waiting for it has it rebuilt after raw/1."""
    gate = anyio.Event()
    reading = anyio.Event()
    g = Graph("late")

    @g.job("raw", outputs="raw/{i}")
    async def raw(ctx: JobContext) -> None:
        return None

    @g.job("daily", outputs="daily/{i}")
    async def daily(ctx: JobContext) -> None:
        ctx.read_many({f"raw/{p['i']}": ref for ref, p in zip(ctx.partitions, ctx.params, strict=True)})
        if not gate.is_set():
            reading.set()
            await gate.wait()

    async with open_runtime(db, g) as rt:
        await (await rt.want("raw/1")).done(timeout=10)
        h = await rt.want("daily/1")
        with anyio.fail_after(10):
            await reading.wait()
        await rt.taint("raw/1", "bad", timeout=10)
        gate.set()
        assert (await h.done(timeout=10)).status is WantStatus.SUCCESSFUL
        history = [r.type for r in await rt.history("partition", "daily/1")]
        assert history == ["PartitionBuilding", "PartitionTainted", "PartitionBuilding", "PartitionLive"]
        first = rt.runs("Succeeded")[1]
        assert first.job == "daily"
        assert rt.get_run(rt.get_partition("daily/1").built_by or "").read == {"raw/1": 2}
        await sound(rt)


async def test_rebuild_stale_refreshes_a_stale_partition_an_active_want_covers(db: Path) -> None:
    """With rebuild_stale, a want covering a stale daily partition rebuilds it (a refresh run leases it Live);
    without it, the want is Successful at once on the stale one."""
    async def scenario(refresh: bool) -> tuple[list[str], int]:
        g = Graph("stale")
        built: list[str] = []

        @g.job("raw", outputs="raw/{i}")
        async def raw(ctx: JobContext) -> None:
            built.extend(ctx.partitions)

        @g.job("daily", outputs="daily/{i}", rebuild_stale=refresh)
        async def daily(ctx: JobContext) -> None:
            ctx.read_many({f"raw/{p['i']}": ref for ref, p in zip(ctx.partitions, ctx.params, strict=True)})
            built.extend(ctx.partitions)

        path = db.with_name(f"{refresh}.db")
        async with open_runtime(path, g) as rt:
            await (await rt.want("daily/1")).done(timeout=10)
            await rt.taint("raw/1", "reload", cascade=False, timeout=10)
            await (await rt.want("raw/1")).done(timeout=10)
            built.clear()
            assert [s.ref for s in rt.stale()] == ["daily/1"]
            st = await (await rt.want("daily/1")).done(timeout=10)
            assert st.status is WantStatus.SUCCESSFUL
            await sound(rt)
            return built, len(rt.stale())

    assert await scenario(True) == (["daily/1"], 0)
    assert await scenario(False) == ([], 1)


async def test_rebuild_stale_is_event_driven_while_a_want_is_active(db: Path) -> None:
    """An active want covering raw/1 (Tainted) and daily/1 (Live, built from it): when raw/1 is rebuilt,
    daily/1 becomes stale and is refreshed at once, before the want succeeds."""
    g = Graph("stale")

    @g.job("raw", outputs="raw/{i}")
    async def raw(ctx: JobContext) -> None:
        return None

    @g.job("daily", outputs="daily/{i}", rebuild_stale=True)
    async def daily(ctx: JobContext) -> None:
        ctx.read_many({f"raw/{p['i']}": ref for ref, p in zip(ctx.partitions, ctx.params, strict=True)})

    async with open_runtime(db, g) as rt:
        await (await rt.want("daily/1")).done(timeout=10)
        await rt.taint("raw/1", "reload", cascade=False, timeout=10)
        gen = rt.get_partition("daily/1").generation
        st = await (await rt.want(["raw/1", "daily/1"])).done(timeout=10)
        assert st.status is WantStatus.SUCCESSFUL
        assert rt.get_partition("daily/1").generation == gen + 1
        refresh = [r for r in rt.runs() if r.refresh]
        assert [(r.job, r.status, r.partitions) for r in refresh] == [("daily", JobRunStatus.SUCCEEDED,
                                                                        ("daily/1",))]
        assert rt.stale() == []
        await sound(rt)


async def test_a_crash_in_the_cascade_is_healed(log_target: str) -> None:
    """The commit of a cascade's PartitionTainted fails: the taint actor re-derives its work and finishes it."""
    g, _ = lineage_graph()
    faults = Faults([FaultRule("commit", kind="partition", match="PartitionTainted", skip=1)])
    async with open_runtime(log_target, g, faults=faults) as rt:
        await (await rt.want("report/1")).done(timeout=10)
        t = await rt.taint("raw/1", "bad", timeout=10)
        assert faults.fired
        await rt.wait_quiescent()
        assert rt.get_taint(t.taint_id).tainted == 3
        assert status(rt, "raw/1", "daily/1", "report/1") == ["Tainted"] * 3
        await sound(rt)


async def test_taint_bad_input(db: Path) -> None:
    """Tainting a partition that is not Live, with no reason or a negative depth, and an unknown taint id."""
    g, _ = lineage_graph()
    async with open_runtime(db, g) as rt:
        with pytest.raises(IllegalTransition, match="only a Live partition can be tainted"):
            await rt.taint("raw/1", "bad")
        await (await rt.want("raw/1")).done(timeout=10)
        with pytest.raises(ValueError, match="needs a reason"):
            await rt.taint("raw/1", " ")
        with pytest.raises(ValueError, match="depth must be"):
            await rt.taint("raw/1", "bad", depth=-1)
        with pytest.raises(UnknownEntity, match="no taint 't-00000009'"):
            await rt.cancel_taint("t-00000009")
        assert rt.taints() == []
