"""The runtime end to end with in-process jobs: scheduling, dependencies, failures, policies, restart."""

from __future__ import annotations

import contextvars
import gc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_graphs import chain_graph

from actors import JobRunStatus, PartitionStatus, WantStatus, check_log, check_replay_fidelity, rebuild
from eventlog import EventLog
from supervisor import Graph, JobContext, NoJobForRef, Runtime, open_runtime


async def assert_log_sound(rt: Runtime, *, all_terminal: bool = True) -> None:
    await rt.wait_quiescent()
    world, violations = await check_log(rt.log, expect_all_terminal=all_terminal)
    assert [str(v) for v in violations] == []
    assert check_replay_fidelity(rt.world, world) == []


async def until(rt: Runtime, pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``pred()`` holds, re-checking after every committed transition."""
    with anyio.fail_after(timeout):
        while not pred():
            changed = anyio.Event()
            remove = rt.add_hook(lambda *_, ev=changed: ev.set())
            try:
                await changed.wait()
            finally:
                remove()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "wb.db"


async def test_want_builds_its_partitions(db: Path) -> None:
    """A want for three independent partitions ends Successful with each built once."""
    g, built = chain_graph()
    async with open_runtime(db, g) as rt:
        h = await rt.want(["raw/1", "raw/2", "raw/3"])
        st_ = await h.done(timeout=10)
        assert st_.status is WantStatus.SUCCESSFUL
        assert built == {"raw/1": 1, "raw/2": 1, "raw/3": 1}
        assert all(rt.get_partition(f"raw/{i}").status is PartitionStatus.LIVE for i in (1, 2, 3))
        await assert_log_sound(rt)


async def test_the_execution_forgets_each_outcome_once_its_run_is_settled(db: Path) -> None:
    """Every run's outcome, kept by the execution until its terminal event and settles are done, is released
    (succeeded, DepMiss and retried runs alike): nothing stays behind once the want is done."""
    g, _ = chain_graph(fail_times={"raw/1": 1}, retries=1)
    async with open_runtime(db, g) as rt:
        st_ = await (await rt.want(["daily/1", "daily/2"])).done(timeout=10)
        assert st_.status is WantStatus.SUCCESSFUL
        execution = rt.kernel._kinds["job_run"].shared.execution  # type: ignore[union-attr]
        await until(rt, lambda: not rt.kernel.busy())
        runs = list(rt.world.runs)
        assert {str(rt.world.runs[r].status) for r in runs} == {"Succeeded", "DepMiss", "Failed"}
        assert [r for r in runs if execution.poll(r) is not None] == []


async def test_missing_dependency_creates_a_derived_want(db: Path) -> None:
    """daily reports raw missing: a derived want builds raw, then daily is rebuilt and the want succeeds."""
    g, built = chain_graph()
    async with open_runtime(db, g) as rt:
        h = await rt.want("daily/7")
        assert (await h.done(timeout=10)).status is WantStatus.SUCCESSFUL
        derived = [w for w in rt.wants() if w.want_id != h.want_id]
        assert len(derived) == 1
        d = derived[0]
        assert d.refs == ("raw/7",)
        assert d.source.startswith("job_run:")
        assert d.parent_want_ids == (h.want_id,)
        assert d.root_want_id == h.want_id
        assert d.status is WantStatus.SUCCESSFUL
        statuses = [r.status for r in rt.runs()]
        assert statuses.count(JobRunStatus.DEP_MISS) == 1
        assert statuses.count(JobRunStatus.SUCCEEDED) == 2
        assert built == {"raw/7": 1, "daily/7": 1}
        await assert_log_sound(rt)


async def test_failed_run_is_retried_with_attempt_and_retry_of(db: Path) -> None:
    """A job that fails once then succeeds: a second run with attempt 2 and retry_of set."""
    g, _ = chain_graph(fail_times={"raw/1": 1}, retries=2)
    async with open_runtime(db, g) as rt:
        h = await rt.want("raw/1")
        assert (await h.done(timeout=10)).status is WantStatus.SUCCESSFUL
        runs = rt.runs()
        assert [r.status for r in runs] == [JobRunStatus.FAILED, JobRunStatus.SUCCEEDED]
        assert runs[0].will_retry
        assert runs[1].attempt == 2
        assert runs[1].retry_of == runs[0].job_run_id
        await assert_log_sound(rt)


async def test_failure_for_good_fails_want_and_downstream(db: Path) -> None:
    """When attempts are spent the partition is Failed, its want Failed, the downstream UpstreamFailed."""
    g, _ = chain_graph(fail_times={"raw/1": 5}, retries=1)
    async with open_runtime(db, g) as rt:
        h = await rt.want("daily/1")
        st_ = await h.done(timeout=10)
        assert st_.status is WantStatus.UPSTREAM_FAILED
        assert rt.get_partition("raw/1").status is PartitionStatus.FAILED
        assert rt.get_partition("daily/1").status is PartitionStatus.UPSTREAM_FAILED
        assert "raw/1" in rt.get_partition("daily/1").reason
        derived = next(w for w in rt.wants() if w.want_id != h.want_id)
        assert derived.status is WantStatus.FAILED
        await assert_log_sound(rt)


async def test_dependency_cycle_is_failed_with_the_cycle_spelled_out(db: Path) -> None:
    """raw needs daily and daily needs raw: both UpstreamFailed naming the cycle; the want ends."""
    g, _ = chain_graph(cycle=True)
    async with open_runtime(db, g) as rt:
        h = await rt.want("daily/1")
        st_ = await h.done(timeout=10)
        assert st_.status is WantStatus.UPSTREAM_FAILED
        reason = rt.get_partition("daily/1").reason + rt.get_partition("raw/1").reason
        assert "dependency cycle" in reason
        assert "daily/1" in reason
        assert "raw/1" in reason
        await assert_log_sound(rt)


async def test_cancel_kills_the_run_no_want_needs(db: Path) -> None:
    """Canceling the only want of a running build cancels the run and returns the partition to Missing."""
    g, built = chain_graph(slow=30)
    async with open_runtime(db, g) as rt:
        h = await rt.want("raw/1")
        await until(rt, lambda: rt.get_partition("raw/1").status is PartitionStatus.BUILDING)
        await rt.cancel(h.want_id)
        assert (await h.done(timeout=5)).status is WantStatus.CANCELED
        await until(rt, lambda: rt.get_partition("raw/1").status is PartitionStatus.MISSING)
        assert rt.runs()[0].status is JobRunStatus.CANCELED
        assert "no active want needs it" in rt.runs()[0].reason
        assert built == {}
        await assert_log_sound(rt)


async def test_new_want_joins_a_running_build(db: Path) -> None:
    """A second want for a partition being built joins the build: one run, both wants Successful."""
    g, built = chain_graph(slow=0.2)
    async with open_runtime(db, g) as rt:
        h1 = await rt.want("raw/1")
        await until(rt, lambda: rt.get_partition("raw/1").status is PartitionStatus.BUILDING)
        h2 = await rt.want("raw/1")
        assert (await h1.done(timeout=5)).status is WantStatus.SUCCESSFUL
        assert (await h2.done(timeout=5)).status is WantStatus.SUCCESSFUL
        assert len(rt.runs()) == 1
        assert built == {"raw/1": 1}
        await assert_log_sound(rt)


@pytest.mark.parametrize("policy", ["shrink", "defer", "all_or_nothing"])
async def test_collision_policies_keep_one_lease(db: Path, policy: Any) -> None:
    """Two wants whose batches overlap: never two live leases (I1), every partition built, the policy's outcome."""
    g = Graph("collide")
    built: dict[str, int] = {}
    gate = anyio.Event()

    @g.job("raw", outputs="raw/{i}", batch=3)
    async def raw(ctx: JobContext) -> None:
        await gate.wait()
        for ref in ctx.partitions:
            built[ref] = built.get(ref, 0) + 1

    async with open_runtime(db, g, policy=policy) as rt:
        # Hold the first run between its JobRunQueued and its leases until the second want's run is queued
        # too: both runs then plan overlapping partitions, and the Partition actors' leases decide.
        second_queued = anyio.Event()
        handles: list[Any] = []

        async def hold(rec: Any, old: Any, new: Any) -> None:
            if rec.type != "JobRunQueued":
                return
            if not handles[1:]:
                handles.append(await rt.want(["raw/2", "raw/3", "raw/4"]))
                await second_queued.wait()
            else:
                second_queued.set()

        remove = rt.add_hook(hold)
        handles.append(await rt.want(["raw/1", "raw/2", "raw/3"]))
        await until(rt, lambda: any(r.skipped or r.deferred_on for r in rt.runs()))
        remove()
        h1, h2 = handles
        gate.set()
        for h in (h1, h2):
            assert (await h.done(timeout=10)).status is WantStatus.SUCCESSFUL
        assert built == {"raw/1": 1, "raw/2": 1, "raw/3": 1, "raw/4": 1}
        runs = rt.runs()
        assert len(runs) == 2
        assert all(r.status is JobRunStatus.SUCCEEDED for r in runs)
        built_by_runs = sorted(ref for r in runs for ref in r.partitions)
        assert built_by_runs == ["raw/1", "raw/2", "raw/3", "raw/4"]  # each partition built by exactly one run
        if policy == "shrink":  # the run that lost the race dropped the refused partitions and built the rest
            loser = [r for r in runs if r.skipped]
            assert len(loser) == 1
            winner = next(r for r in runs if r is not loser[0])
            assert set(dict(loser[0].skipped).values()) == {winner.job_run_id}
        else:  # the loser gave its leases back, waited for the holder, then built what was still missing
            histories = {r.job_run_id: [x.event.event_name for x in await rt.history("job_run", r.job_run_id)]
                         for r in runs}
            deferred = [rid for rid, h in histories.items() if "JobRunDeferred" in h]
            assert len(deferred) == 1
            assert histories[deferred[0]] == ["JobRunQueued", "JobRunDeferred", "JobRunStarted", "JobRunSucceeded"]
            assert all(not r.skipped for r in runs)
        await assert_log_sound(rt)


async def test_restart_marks_in_flight_runs_lost_and_finishes(db: Path) -> None:
    """After a crash mid-build, reopening marks the run Lost, requeues its partition, and the want succeeds."""
    g, _ = chain_graph(slow=30)
    async with open_runtime(db, g) as rt:
        h = await rt.want(["raw/1", "raw/2"])
        await until(rt, lambda: len(rt.partitions("Building")) >= 2)
        await rt.crash()
    g2, built = chain_graph()
    async with open_runtime(db, g2) as rt:
        assert len(rt.recovery.lost_runs) == 2
        assert sorted(rt.recovery.requeued_partitions) == ["raw/1", "raw/2"]
        assert (await rt.wait_want(h.want_id, timeout=10)).status is WantStatus.SUCCESSFUL
        assert sorted(built) == ["raw/1", "raw/2"]
        await assert_log_sound(rt)


async def test_taint_rebuilds_when_wanted_again(db: Path) -> None:
    """A tainted Live partition is rebuilt (new generation) by the next want."""
    g, built = chain_graph()
    async with open_runtime(db, g) as rt:
        await (await rt.want("raw/1")).done(timeout=5)
        await rt.taint(["raw/1"], "bad upstream data")
        assert rt.get_partition("raw/1").status is PartitionStatus.TAINTED
        await (await rt.want("raw/1")).done(timeout=5)
        p = rt.get_partition("raw/1")
        assert p.status is PartitionStatus.LIVE
        assert p.generation == 2
        assert built["raw/1"] == 2
        await assert_log_sound(rt)


async def test_ttl_expires_and_sla_miss_is_recorded(db: Path) -> None:
    """A want past its TTL is Expired; a missed SLA is an event without a status change."""
    g, _ = chain_graph(slow=30)
    async with open_runtime(db, g) as rt:
        h = await rt.want("raw/1", ttl=0.3, sla=0.1)
        st_ = await h.done(timeout=5)
        assert st_.status is WantStatus.EXPIRED
        assert st_.sla_missed
        types = [r.event.event_name for r in await rt.history("want", h.want_id)]
        assert "WantSlaMissed" in types
        assert types[-1] == "WantExpired"
        await assert_log_sound(rt)


async def test_bad_input_is_rejected_before_anything_is_written(db: Path) -> None:
    """A malformed ref or a ref no job produces is an error naming it; the log stays empty."""
    g, _ = chain_graph()
    async with open_runtime(db, g) as rt:
        with pytest.raises(ValueError, match="raw//1"):
            await rt.want("raw//1")
        with pytest.raises(NoJobForRef, match="weekly/1"):
            await rt.want("weekly/1")
        assert rt.log.last_seq == 0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["want", "cancel", "taint"]), st.integers(1, 4)), min_size=1,
                    max_size=8))
def test_replay_rebuilds_the_live_world(tmp_path: Path, ops: list[tuple[str, int]]) -> None:
    """I3 as a property: after random wants, cancels and taints, the World rebuilt from the log equals the live one."""

    async def go() -> None:
        path = tmp_path / f"p{abs(hash(tuple(ops)))}.db"
        g, _ = chain_graph(batch=2)
        async with open_runtime(path, g) as rt:
            handles = []
            for op, i in ops:
                if op == "want":
                    handles.append(await rt.want([f"daily/{i}", f"daily/{i % 4 + 1}"]))
                elif op == "cancel" and handles:
                    await rt.cancel(handles[i % len(handles)].want_id)
                elif op == "taint" and rt.get_partition(f"raw/{i}").status is PartitionStatus.LIVE:
                    await rt.taint([f"raw/{i}"], "property test")
            await rt.wait_idle(timeout=20)
            await assert_log_sound(rt)
        async with EventLog.open(path, writer=False) as log:  # and again from a fresh process's view
            replayed = await rebuild(log)
        assert not list(replayed.active_wants())
        assert replayed.counts()["want"]["Canceled"] + replayed.counts()["want"]["Successful"] == len(replayed.wants)

    anyio.run(go)


async def _collect(it: AsyncIterator[Any], n: int) -> list[Any]:
    out = []
    async for x in it:
        out.append(x)
        if len(out) >= n:
            break
    return out


async def test_events_follow_committed_transitions(db: Path) -> None:
    """rt.events() yields committed events, filtered by kind, as they happen."""
    g, _ = chain_graph()
    async with open_runtime(db, g) as rt:
        async with anyio.create_task_group() as tg:
            got: list[Any] = []

            async def follow() -> None:
                got.extend(await _collect(rt.events(kinds=["want"]), 3))

            tg.start_soon(follow)
            await anyio.sleep(0.05)
            await (await rt.want("raw/1")).done(timeout=5)
        assert [r.event.event_name for r in got] == ["WantCreated", "WantBuilding", "WantSucceeded"]


def _hanging_graph() -> tuple[Graph, anyio.Event, list[str]]:
    """A job that runs until cancelled, then cleans up with an await (shielded) and records it."""
    g = Graph("hang")
    started = anyio.Event()
    cleaned: list[str] = []

    @g.job("slow", outputs="slow/{i}")
    async def slow(ctx: JobContext) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):  # cleanup that itself awaits: closing must wait for it
                await anyio.sleep(0.05)
            cleaned.extend(ctx.partitions)

    return g, started, cleaned


async def test_close_cancels_running_jobs_and_waits_for_their_cleanup(db: Path) -> None:
    """A job still running when the runtime closes is cancelled, and its cleanup has run when close returns."""
    g, started, cleaned = _hanging_graph()
    async with open_runtime(db, g) as rt:
        await rt.want("slow/1")
        with anyio.fail_after(5):
            await started.wait()
    assert cleaned == ["slow/1"]
    async with open_runtime(db, g) as rt:  # recorded Canceled by the shutdown: nothing was Lost
        run = rt.runs()[0]
        assert run.status is JobRunStatus.CANCELED, run
        assert rt.get_partition("slow/1").status is PartitionStatus.MISSING
        assert rt.recovery.lost_runs == ()


async def test_a_crashed_runtime_still_waits_for_its_running_jobs(db: Path) -> None:
    """After crash() nothing is recorded, but the job's task is cancelled and finished when the block exits."""
    g, started, cleaned = _hanging_graph()
    async with open_runtime(db, g) as rt:
        await rt.want("slow/1")
        with anyio.fail_after(5):
            await started.wait()
        await rt.crash()
    assert cleaned == ["slow/1"]
    async with open_runtime(db, g) as rt:
        assert rt.recovery.lost_runs == (rt.runs()[0].job_run_id,)


async def test_runs_that_never_await_share_a_task_and_one_that_awaits_keeps_its_own(db: Path) -> None:
    """Of runs started together, those whose jobs never await finish while one that awaits (inside a task group
    opened before its first await) still runs, then finishes in its own task; each run sees its own context
    variables."""
    g = Graph("mixed")
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: dict[str, str] = {}
    release = anyio.Event()

    @g.job("part", outputs="part/{i}")
    async def part(ctx: JobContext) -> None:
        ref = ctx.partitions[0]
        seen[ref] = var.get()
        var.set(ref)  # must not leak into the next run
        if ref == "part/1":
            async with anyio.create_task_group() as tg:  # a scope on the run's task before its first await
                tg.start_soon(release.wait)

    async with open_runtime(db, g) as rt:
        h = await rt.want([f"part/{i}" for i in range(1, 7)])
        await until(rt, lambda: all(rt.get_partition(f"part/{i}").status is PartitionStatus.LIVE
                                    for i in range(2, 7)))
        assert rt.get_partition("part/1").status is PartitionStatus.BUILDING
        release.set()
        assert (await h.done(timeout=5)).status is WantStatus.SUCCESSFUL
        assert seen == {f"part/{i}": "unset" for i in range(1, 7)}
        await assert_log_sound(rt)


@pytest.mark.parametrize("tune", [True, False])
async def test_tune_gc_raises_the_young_threshold_and_restores_it(db: Path, tune: bool) -> None:
    """tune_gc=True collects the young generation far less often while the runtime is open, then restores
    the process's thresholds and unfreezes; without it the thresholds are never touched."""
    g, _ = chain_graph()
    before = gc.get_threshold()
    async with open_runtime(db, g, tune_gc=tune) as rt:
        inside = gc.get_threshold()
        frozen = gc.get_freeze_count()
        assert (await (await rt.want("raw/1")).done(timeout=10)).status is WantStatus.SUCCESSFUL
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    if tune:
        assert inside[0] >= 1_000_000
        assert frozen > 0
    else:
        assert inside == before
