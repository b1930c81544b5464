"""Eviction (issue 15): settled entities leave the World and are folded back from the log on demand."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_snapshots import fill

from actors import (
    Behavior,
    Ctx,
    Kernel,
    LeaseReply,
    PartitionActor,
    RequestLease,
    SettleBuild,
    SystemClock,
    World,
    compact,
    rebuild,
    replies_ok,
    verify_snapshots,
)
from actors._evict import EntityEvicted, EvictingTable, settled
from actors._jobrun import JobRunResultIgnored
from eventlog import EventLog, Log, open_log

pytestmark = pytest.mark.timeout(120)


class Drive(Behavior):
    """Asks a wave of partitions for a lease for ``run``, then settles them with ``outcome``; replies the replies."""

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        run, refs, outcome, refresh = msg
        ctx.scratch = (run, refs, outcome)
        ctx.ask_many("partition", [(r, RequestLease(run, refresh=refresh)) for r in refs], self._leased)
        return None

    def _leased(self, ctx: Ctx, replies: list[Any]) -> Any:
        run, refs, outcome = ctx.scratch
        granted = [r for r, rep in zip(refs, replies_ok(replies), strict=True) if cast(LeaseReply, rep).granted]
        if not granted:
            return []
        ctx.ask_many("partition", [(r, SettleBuild(run, outcome)) for r in granted], self._settled)
        return None

    def _settled(self, ctx: Ctx, replies: list[Any]) -> Any:
        return replies_ok(replies)


async def drive(kernel: Kernel, run: str, refs: list[str], outcome: str = "live", refresh: bool = False) -> Any:
    return await kernel.ask("drive", run, (run, refs, outcome, refresh))


def kernel_on(log: Log, world: World) -> Kernel:
    kernel = Kernel(log, world, SystemClock())
    kernel.register("partition", lambda _key: PartitionActor())
    kernel.register("drive", lambda _key: Drive(), entity=False)
    return kernel


def test_an_evicted_entity_is_never_read_as_missing() -> None:
    """Reading an evicted id raises EntityEvicted (never "not written"); `in` finds it; counts include it."""
    w = World(evicting=True)
    assert isinstance(w.partitions, EvictingTable)
    from actors import PartitionState, PartitionStatus

    w.partitions["a"] = PartitionState("a", PartitionStatus.LIVE, 1, 2)
    w.partitions["b"] = PartitionState("b", PartitionStatus.FAILED, 1, 2)
    assert w.evict("partition", ["a", "never"]) == 1
    for read in (lambda: w.partitions.get("a"), lambda: w.partitions["a"], lambda: w.partition("a"),
                 lambda: "a" in w.partitions):
        with pytest.raises(EntityEvicted, match="partition 'a' is evicted"):
            read()
    for whole in (w.snapshot, w.copy, w.partitions.copy):
        with pytest.raises(EntityEvicted, match="partition entities are evicted"):
            whole()
    assert "never" not in w.partitions
    assert w.partitions.get("never") is None
    assert w.is_evicted("partition", "a")
    assert not w.is_evicted("partition", "b")
    assert w.is_live("a")  # only Live partitions are evicted: no read needed
    assert (w.counts()["partition"]["Live"], w.counts()["partition"]["Failed"]) == (1, 1)
    with pytest.raises(ValueError, match="evicting=True"):
        World().evict("partition", ["a"])


async def test_messages_to_evicted_partitions_load_them_first(log_target: str) -> None:
    """The kernel folds an evicted partition back from the log before its actor handles a message, on both
    backends: a refresh of evicted Live partitions builds generation 2, and the World equals a full replay."""
    refs = [f"daily/{i:04d}" for i in range(600)]
    async with open_log(log_target) as log:
        world = World(evicting=True)
        async with kernel_on(log, world) as kernel:
            await drive(kernel, "r-1", refs)
            await drive(kernel, "r-2", refs[:10], outcome="failed")  # Live ones refuse the lease: stay Live
            assert settled(world)["partition"] == refs
            assert kernel.evict_settled()["partition"] == 600
            assert len(world.partitions) == 0
            assert world.counts()["partition"]["Live"] == 600
            again = refs[100:550]
            replies = await drive(kernel, "r-3", again, refresh=True)  # one load for the 450 cells
            assert [(p.ref, p.status, p.generation) for p in replies] == [(r, "Live", 2) for r in again]
            assert len(world.partitions) == 450
            assert world.evicted_count("partition") == 150
            await world.load_all(log)
            assert world == await rebuild(log, snapshots=False)


async def test_evicted_entities_load_back_after_compaction(log_target: str) -> None:
    """An entity whose chain `compact` cut (a run whose events up to the cut are gone) is folded back from the
    snapshot at the cut plus its events after it, on both backends; partitions from their whole chains."""
    async with open_log(log_target) as log:
        await fill(log, 10)  # 10 runs, each built one partition, ended by seq 50
        await compact(log, 30)
        await log.append("job_run", "r-0", 3, JobRunResultIgnored(status="Succeeded", reason="late"))
        expected = await rebuild(log)
        world = World(evicting=True)
        for kind, table in expected._tables.items():
            world._tables[kind].update(table)
        world.last_seq = expected.last_seq
        gone = kernelless_evict(world)
        assert (gone["job_run"], gone["partition"]) == (10, 10)
        await world.load(log, "job_run", ["r-0", "r-1", "r-9"])  # r-0: one event after the cut; r-1: none
        assert (world.runs["r-0"], world.runs["r-1"]) == (expected.runs["r-0"], expected.runs["r-1"])
        await world.load_all(log)
        assert world.diff(expected) == []


def kernelless_evict(world: World) -> dict[str, int]:
    return {kind: world.evict(kind, ids) for kind, ids in settled(world).items()}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 7), min_size=1, max_size=5, unique=True),
                          st.sampled_from(["live", "failed", "missing"]), st.booleans(), st.booleans()),
                min_size=1, max_size=8))
def test_evicting_during_a_history_keeps_the_world_a_replay(steps: list[tuple[list[int], str, bool, bool]]) -> None:
    """Whatever the builds, evicting what is settled between them and loading back on demand leaves a World
    that, once every evicted entity is loaded, equals a full replay; the counts agree at every step."""
    import tempfile
    from pathlib import Path

    async def go() -> None:
        with tempfile.TemporaryDirectory() as d:
            async with EventLog.open(Path(d) / "log.db") as log:
                world = World(evicting=True)
                async with kernel_on(log, world) as kernel:
                    for i, (idx, outcome, refresh, evict) in enumerate(steps):
                        await drive(kernel, f"r-{i}", [f"p/{j}" for j in idx], outcome, refresh)
                        if evict:
                            kernel.evict_settled()
                        full = await rebuild(log, snapshots=False)
                        assert world.counts() == full.counts()
                    await world.load_all(log)
                    assert world.diff(await rebuild(log, snapshots=False)) == []

    asyncio.run(go())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(-2**63, 2**63 - 1), max_size=3000), st.booleans()), max_size=6),
       st.lists(st.integers(-2**63, 2**63 - 1), max_size=50))
def test_the_hash_index_is_a_set(batches: list[tuple[list[int], bool]], probes: list[int]) -> None:
    """The compact index answers membership exactly as a set of the same hashes, across merges (forced or not)."""
    from actors._evict import HashIndex

    index, model = HashIndex(), set()
    for batch, everything in batches:
        for h in batch:
            index.add(h)
        index.settle(everything)
        if everything:
            assert not index.recent  # all merged: no set of ints left behind
        model.update(batch)
        assert len(index) == len(model)
        assert all(h in index for h in batch)
        assert all((h in index) == (h in model) for h in probes)


_H64 = st.integers(-(2**63), 2**63 - 1)


@given(st.lists(_H64, max_size=300), st.lists(_H64, max_size=50), st.lists(_H64, max_size=300), st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_a_bulk_load_answers_exactly_before_and_after_its_filter_is_built(
        first: list[int], later: list[int], probes: list[int], steps: int) -> None:
    """Hashes added at once (a lazy snapshot load's) are found at once, with the filter open; adds meanwhile and
    after the filter is built back in steps are found too; nothing else is."""
    from actors._evict import HashIndex

    index, model = HashIndex(), set(first)
    build = index.extend(list(first))
    for _ in range(steps):
        next(build, None)
    for h in later:
        index.add(h)
        model.add(h)
    assert all(h in index for h in model)
    for _ in build:
        pass
    index.add(12345)
    model.add(12345)
    assert all(h in index for h in model)
    assert all((h in index) == (h in model) for h in probes)
    assert index.bits is not None
    assert index.bits.count(0xFF) < len(index.bits)  # the real filter, not the open one


def test_the_hash_index_merges_what_it_holds() -> None:
    """Past its merge point the index keeps its hashes in the sorted array and still finds every one."""
    from actors._evict import HashIndex

    index = HashIndex()
    for h in range(0, 30_000, 3):
        index.add(h * 7919)
    index.settle()
    assert len(index.merged) == 10_000
    assert not index.recent
    index.add(5)
    assert all(h * 7919 in index for h in range(0, 30_000, 3))
    assert 5 in index
    assert 7919 not in index
    assert len(index) == 10_001


async def test_a_runtime_that_evicts_refuses_what_it_cannot_do(tmp_path: Any) -> None:
    """evict_every with background snapshots fails naming why; a snapshot asked of an evicting runtime equals a
    full replay, and a restart from it leaves its settled entities evicted and carries on."""
    import wantbuild

    g = wantbuild.Graph("evict")

    @g.job("daily", outputs="daily/{i}", batch=10)
    async def daily(ctx: wantbuild.JobContext) -> None:
        return None

    with pytest.raises(ValueError, match="background snapshots"):
        async with wantbuild.open(tmp_path / "a.db", g, evict_every=10):
            pass
    with pytest.raises(ValueError, match="evict_every must be"):
        async with wantbuild.open(tmp_path / "b.db", g, evict_every=0, snapshot_every=None, snapshot_interval=None):
            pass
    async with wantbuild.open(tmp_path / "c.db", g, evict_every=1, snapshot_every=None,
                              snapshot_interval=None) as rt:
        refs = [f"daily/{i}" for i in range(30)]
        assert str((await (await rt.want(refs)).done()).status) == "Successful"
        await asyncio.sleep(0.01)  # the sweep after the want ended
        assert rt.world.evicted_count("partition") == 30
        assert [p.ref for p in rt.partitions("Live")] == sorted(refs)  # read back, not kept
        assert rt.world.evicted_count("partition") == 30
        assert rt.get_partition("daily/7").status == "Live"  # a point read loads it
        assert rt.world.evicted_count("partition") == 29
        info = await rt.snapshot()  # the evicted states read back from the log for it, not kept
        assert rt.world.evicted_count("partition") == 29
        last_run = max(r.job_run_id for r in rt.runs())
    async with EventLog.open(tmp_path / "c.db") as log:
        assert await verify_snapshots(log) == []  # it equals a full replay up to its seq
        full = await rebuild(log, snapshots=False)
    async with wantbuild.open(tmp_path / "c.db", g, evict_every=1, snapshot_every=None,
                              snapshot_interval=None) as rt:
        assert rt.recovery.restored is not None
        assert rt.recovery.restored.snapshot_seq == info.seq
        assert rt.world.evicted_count("partition") == 30  # the snapshot's Live partitions left undecoded
        assert rt.world.counts() == full.counts()
        assert rt.world.resolved() == full.snapshot()
        handle = await rt.want(["daily/7", "daily/30"])
        assert str((await handle.done()).status) == "Successful"
        runs = [r.job_run_id for r in rt.runs()]
        assert len(set(runs)) == len(runs)
        assert max(runs) > last_run  # ids continue after the evicted runs'


async def test_an_evicting_runtime_keeps_fewer_tips_in_its_log_writer(tmp_path: Any) -> None:
    """evict_every bounds the log writer's tip cache to twice the sweep (at least 20,000) and drops the tips of what
    a sweep evicts, and a want's end its refs' job answers and unmerged hashes; without it the log's own bound
    stays; a bad size is refused by name."""
    import wantbuild

    g = wantbuild.Graph("evict")

    @g.job("daily", outputs="daily/{i}", batch=10)
    async def daily(ctx: wantbuild.JobContext) -> None:
        return None

    async with wantbuild.open(tmp_path / "a.db", g, evict_every=50_000, snapshot_every=None,
                              snapshot_interval=None) as rt:
        assert isinstance(rt.log, EventLog)
        assert rt.log.entity_cache_size == 100_000
    async with wantbuild.open(tmp_path / "b.db", g, evict_every=10, snapshot_every=None,
                              snapshot_interval=None) as rt:
        assert isinstance(rt.log, EventLog)
        assert rt.log.entity_cache_size == 20_000
        assert str((await (await rt.want([f"daily/{i}" for i in range(20)])).done()).status) == "Successful"
        await anyio.sleep(0.05)  # the sweep after the want ended
        evicted = [f"daily/{i}" for i in range(20) if rt.world.is_evicted("partition", f"daily/{i}")]
        assert evicted
        cached = {(k, eid) for k, d in rt.log._cache.items() for eid in d}
        cached |= {(k, eid) for k, eid, _ in rt.log._packed.items()}
        assert not cached & {("partition", r) for r in evicted}  # their tips left with them
        # As the want ended, what the backfill left in small objects went too: job_of's answers, the recent hashes.
        assert not rt.graph._found
        assert not cast(EvictingTable, rt.world.partitions).index.recent
    async with wantbuild.open(tmp_path / "c.db", g) as rt:
        assert isinstance(rt.log, EventLog)
        assert rt.log.entity_cache_size == 600_000
        with pytest.raises(ValueError, match="entity_cache_size must be a whole number of tips >= 1, not 0"):
            rt.log.entity_cache_size = 0
