"""Runs record what they read, by generation; lineage up and down; staleness; per-partition failures in a batch.
The core flows run on both backends (`log_target`: SQLite, then PostgreSQL)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from lineage_graphs import lineage_graph

from actors import (
    InvariantChecker,
    JobRunQueued,
    JobRunStarted,
    JobRunStatus,
    JobRunSucceeded,
    NeverBuilt,
    PartitionBuilding,
    PartitionLive,
    PartitionStatus,
    PartitionTainted,
    TaintApplied,
    TaintCreated,
    WantStatus,
    World,
    check_log,
    check_replay_fidelity,
)
from eventlog import Record
from supervisor import Job, JobContext, JobProtocolError, MissingDeps, Runtime, open_runtime, run_callable


async def sound(rt: Runtime) -> World:
    """The log is sound (I1-I7, strict I7 at this quiescent point) and replays to the live World and index."""
    await rt.wait_quiescent()
    world, violations = await check_log(rt.log, expect_all_terminal=True)
    assert [str(v) for v in violations] == []
    assert check_replay_fidelity(rt.world, world) == []
    assert world.lineage.readers == rt.world.lineage.readers
    assert world.lineage.builders == rt.world.lineage.builders
    return world


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "wb.db"


def keys(nodes: dict[str, Any]) -> list[str]:
    return sorted(nodes)


async def test_a_run_records_the_generations_it_read(log_target: str) -> None:
    """daily/1 reads raw/1: its Succeeded run's terminal event carries read={raw/1: generation}."""
    g, _ = lineage_graph()
    async with open_runtime(log_target, g) as rt:
        assert (await (await rt.want("daily/1")).done(timeout=10)).status is WantStatus.SUCCESSFUL
        daily = rt.get_partition("daily/1")
        run = rt.get_run(daily.built_by or "")
        assert run.read == {"raw/1": rt.get_partition("raw/1").generation}
        terminal = [r for r in await rt.history("job_run", run.job_run_id) if isinstance(r.event, JobRunSucceeded)]
        assert [r.event.read for r in terminal] == [{"raw/1": 1}]  # type: ignore[attr-defined]
        await sound(rt)


async def test_lineage_up_and_down_by_generation(log_target: str) -> None:
    """report/1 <- daily/1 <- raw/1 going up; raw/1 -> daily/1 -> report/1 going down; depth limits the walk."""
    g, _ = lineage_graph()
    async with open_runtime(log_target, g) as rt:
        await (await rt.want("report/1")).done(timeout=10)
        # Each level first ended DepMiss once (generation 1), then was built (generation 2); raw/1 built at once.
        up = await rt.lineage("report/1")
        assert keys(up.nodes) == ["daily/1@2", "raw/1@1", "report/1@2"]
        assert sorted(up.edges) == [("daily/1@2", "report/1@2"), ("raw/1@1", "daily/1@2")]
        down = await rt.lineage("raw/1", direction="down")
        assert keys(down.nodes) == ["daily/1@2", "raw/1@1", "report/1@2"]
        assert down.nodes["report/1@2"].level == 2
        shallow = await rt.lineage("raw/1", direction="down", depth=1)
        assert keys(shallow.nodes) == ["daily/1@2", "raw/1@1"]
        assert shallow.truncated
        assert "flowchart LR" in down.mermaid()
        assert down.to_dict()["root"] == "raw/1@1"
        await sound(rt)


async def test_into_keeps_a_batch_s_partitions_apart(db: Path) -> None:
    """A batch of three dailies, each reading its own raw into itself: lineage does not tie them together."""
    g, _ = lineage_graph(batch=3)
    async with open_runtime(db, g) as rt:
        await (await rt.want(["daily/1", "daily/2", "daily/3"])).done(timeout=10)
        assert len({rt.get_partition(f"daily/{i}").built_by for i in (1, 2, 3)}) == 1
        assert keys((await rt.lineage("daily/2")).nodes) == ["daily/2@2", "raw/2@1"]
        assert keys((await rt.lineage("raw/3", direction="down")).nodes) == ["daily/3@2", "raw/3@1"]
        await sound(rt)


async def test_static_dependencies_count_as_read(db: Path) -> None:
    """clean/4 has the static dependency raw/4: its run read it without the job saying so."""
    g, _ = lineage_graph()
    async with open_runtime(db, g) as rt:
        await (await rt.want("clean/4")).done(timeout=10)
        run = rt.get_run(rt.get_partition("clean/4").built_by or "")
        assert run.read == {"raw/4": 1}
        assert run.into == {"raw/4": ("clean/4",)}
        await sound(rt)


async def test_a_read_of_a_partition_that_is_not_live_waits_for_it(db: Path) -> None:
    """Even a job that swallows the MissingDeps of ctx.read ends DepMiss: it read raw/5 while Missing."""
    g, k = lineage_graph()
    k.swallow = True
    async with open_runtime(db, g) as rt:
        assert (await (await rt.want("daily/5")).done(timeout=10)).status is WantStatus.SUCCESSFUL
        runs = rt.runs()
        first = next(r for r in runs if r.job == "daily")
        assert first.status is JobRunStatus.DEP_MISS
        assert first.missing == ("raw/5",)
        assert rt.get_run(rt.get_partition("daily/5").built_by or "").read == {"raw/5": 1}
        await sound(rt)


@pytest.mark.parametrize(("read", "why"), [
    pytest.param("daily/6", "one of the partitions this run builds", id="own-output"),
    pytest.param("raw//6", "cannot read 'raw//6'", id="malformed"),
    pytest.param("nothing/6", "no job of graph 'lineage' produces", id="no-job"),
])
@pytest.mark.parametrize("swallow", [False, True], ids=["raised", "swallowed"])
async def test_a_read_the_job_may_not_make_fails_the_run(db: Path, read: str, why: str, swallow: bool) -> None:
    """Reading its own output, a malformed ref or one no job produces fails the run with the reason, even if
    the job catches the error."""
    g, k = lineage_graph()
    k.read_extra["daily/6"] = [read]
    k.swallow = swallow
    async with open_runtime(db, g) as rt:
        st = await (await rt.want("daily/6")).done(timeout=10)
        assert st.status is WantStatus.FAILED
        failed = rt.runs(JobRunStatus.FAILED)
        assert len(failed) == 1
        assert why in failed[0].reason
        assert failed[0].reason.startswith(("job protocol error", "raised JobProtocolError"))
        assert rt.get_partition("daily/6").status is PartitionStatus.FAILED
        await sound(rt)


async def test_one_bad_day_does_not_fail_the_batch(log_target: str) -> None:
    """A batch of 5 where raw/3 fails: 4 partitions Live, raw/3 Failed; the retry builds raw/3 alone."""
    g, k = lineage_graph(batch=5, retries=1)
    k.fail_times["raw/3"] = 1
    async with open_runtime(log_target, g) as rt:
        st = await (await rt.want([f"raw/{i}" for i in range(1, 6)])).done(timeout=10)
        assert st.status is WantStatus.SUCCESSFUL
        first, retry = rt.runs()
        assert first.status is JobRunStatus.SUCCEEDED
        assert first.failed == {"raw/3": "a bad day"}
        assert first.will_retry
        assert retry.partitions == ("raw/3",)
        assert (retry.attempt, retry.retry_of) == (2, first.job_run_id)
        assert k.builds == {"raw/1": 1, "raw/2": 1, "raw/3": 1, "raw/4": 1, "raw/5": 1}
        assert rt.get_partition("raw/3").generation == 2
        await sound(rt)


async def test_a_bad_day_with_no_retry_left_fails_only_its_wants(db: Path) -> None:
    """Without retries the failed partition is Failed for good: a want on it fails, one on the rest succeeds."""
    g, k = lineage_graph(batch=3)
    k.fail["raw/2"] = "the source was empty"
    async with open_runtime(db, g) as rt:
        both = await rt.want(["raw/1", "raw/2", "raw/3"])
        assert (await both.done(timeout=10)).status is WantStatus.FAILED
        assert rt.get_partition("raw/2").reason == "the source was empty"
        assert [rt.get_partition(f"raw/{i}").status for i in (1, 3)] == [PartitionStatus.LIVE] * 2
        assert (await (await rt.want(["raw/1", "raw/3"])).done(timeout=10)).status is WantStatus.SUCCESSFUL
        await sound(rt)


async def test_a_batch_where_every_partition_failed_is_a_failed_run(db: Path) -> None:
    """If the job reports every partition failed, the run is Failed (and names the first)."""
    g, k = lineage_graph(batch=2)
    k.fail.update({"raw/1": "no file", "raw/2": "no file"})
    async with open_runtime(db, g) as rt:
        await (await rt.want(["raw/1", "raw/2"])).done(timeout=10)
        (run,) = rt.runs()
        assert run.status is JobRunStatus.FAILED
        assert run.reason == "every partition failed: raw/1: no file (and 1 more)"
        await sound(rt)


async def test_lineage_of_a_ref_never_built_says_so(log_target: str) -> None:
    """A lineage query on a ref no run built raises NeverBuilt, naming it; so does a generation never built."""
    g, _ = lineage_graph()
    async with open_runtime(log_target, g) as rt:
        with pytest.raises(NeverBuilt, match="raw/9 was never built"):
            await rt.lineage("raw/9")
        await (await rt.want("raw/9")).done(timeout=10)
        with pytest.raises(NeverBuilt, match="generation 4 of raw/9"):
            await rt.lineage("raw/9", generation=4)


async def test_staleness_and_time_travel(log_target: str) -> None:
    """raw/1 rebuilt (generation 2) leaves daily/1 stale; the lineage as of before the rebuild shows daily/1
    built from raw/1@1, Live and not stale."""
    g, _ = lineage_graph()
    async with open_runtime(log_target, g) as rt:
        await (await rt.want("daily/1")).done(timeout=10)
        before = rt.log.last_seq
        assert rt.stale() == []
        await rt.taint("raw/1", "bad rows", cascade=False)  # daily/1 stays Live: stale
        await (await rt.want("raw/1")).done(timeout=10)
        (stale,) = rt.stale()
        assert (stale.ref, stale.newer) == ("daily/1", {"raw/1": (1, 2)})
        now = await rt.lineage("daily/1")
        assert now.root.stale
        assert now.nodes["raw/1@1"].status == "Superseded"
        then = await rt.lineage("daily/1", until=before)
        assert (then.root.stale, then.nodes["raw/1@1"].status) == (False, "Live")
        await sound(rt)


async def test_read_in_a_context_made_outside_a_runtime() -> None:
    """run_callable with a bare JobContext: reads are recorded (generation 0, unknown), the protocol still holds."""
    ctx = JobContext(job_run_id="r-1", job_name="daily", partitions=["daily/1", "daily/2"])

    async def job(c: JobContext) -> None:
        c.read("raw/1", into="daily/1")
        c.fail("daily/2", "bad")

    out = await run_callable(job, ctx, timeout=None, heartbeat_timeout=None)
    assert (out.status, dict(out.read), dict(out.into), dict(out.failed)) == (
        "succeeded", {"raw/1": 0}, {"raw/1": ("daily/1",)}, {"daily/2": "bad"})
    with pytest.raises(JobProtocolError, match="not a partition of this run"):
        ctx.fail("daily/9", "x")
    with pytest.raises(JobProtocolError, match="into="):
        ctx.read("raw/2", into=["daily/7"])


async def test_read_of_a_missing_partition_raises_missing_deps() -> None:
    """ctx.read_many names every input that is not Live in one MissingDeps."""
    status = {"raw/1": ("Live", 3), "raw/2": ("Tainted", 1), "raw/3": ("Missing", 0)}
    ctx = JobContext(job_run_id="r-1", job_name="daily", partitions=["daily/1"],
                     resolve_read=lambda ref: status[ref])
    with pytest.raises(MissingDeps) as info:
        ctx.read_many(["raw/1", "raw/2", "raw/3"])
    assert info.value.refs == ("raw/2", "raw/3")
    assert ctx.reads == {"raw/1": 3}


def _build(seq: int, run: str, job: str, ref: str, gen: int, read: dict[str, int]) -> list[Record]:
    """The records of one run building generation ``gen`` of ``ref`` from ``read``, from ``seq`` on."""
    evs: list[tuple[str, str, int, Any]] = [
        ("job_run", run, 1, JobRunQueued(job=job, partitions=(ref,))),
        ("partition", ref, 2 * gen - 1, PartitionBuilding(job_run_id=run)),
        ("job_run", run, 2, JobRunStarted(partitions=(ref,), generations=(gen,))),
        ("job_run", run, 3, JobRunSucceeded(read=read)),
        ("partition", ref, 2 * gen, PartitionLive(job_run_id=run)),
    ]
    return [Record(seq + i, kind, eid, eseq, ev, float(seq + i)) for i, (kind, eid, eseq, ev) in enumerate(evs)]


def _taint_records(cascade: bool, applied: bool, cascaded: bool) -> list[Record]:
    recs = _build(1, "r-1", "raw", "raw/1", 1, {}) + _build(6, "r-2", "daily", "daily/1", 1, {"raw/1": 1})
    recs.append(Record(11, "taint", "t-1", 1, TaintCreated(refs=("raw/1",), generations=(1,), reason="bad",
                                                           cascade=cascade), 11.0))
    recs.append(Record(12, "partition", "raw/1", 3, PartitionTainted(reason="bad", taint_id="t-1"), 12.0))
    if cascaded:
        recs.append(Record(13, "partition", "daily/1", 3,
                           PartitionTainted(reason="bad", taint_id="t-1", depth=1, via="raw/1@1"), 13.0))
    if applied:
        recs.append(Record(14, "taint", "t-1", 2, TaintApplied(partitions=2 if cascaded else 1), 14.0))
    return recs


@pytest.mark.parametrize(("cascade", "applied", "cascaded", "strict", "violated"), [
    pytest.param(True, False, False, True, True, id="quiescent-cascade-missing"),
    pytest.param(True, False, False, False, False, id="log-end-cascade-in-progress"),
    pytest.param(True, True, False, False, True, id="log-end-applied-but-missed"),
    pytest.param(True, True, True, True, False, id="cascaded"),
    pytest.param(False, True, False, True, False, id="no-cascade-asked"),
])
def test_invariant_i7(cascade: bool, applied: bool, cascaded: bool, strict: bool, violated: bool) -> None:
    """I7: a Live partition built from a generation Tainted now (by a cascading taint) is a violation; at the end
    of a log, only once the taint recorded its wave as applied."""
    checker = InvariantChecker()
    for rec in _taint_records(cascade, applied, cascaded):
        checker.feed(rec)
    found = checker.check_lineage(strict=strict)
    assert [v.invariant for v in found] == (["I7"] if violated else [])
    if violated:
        assert "daily/1" in found[0].message
        assert "raw/1 generation 1" in found[0].message


def test_i7_allows_a_stale_partition() -> None:
    """A partition built from a tainted generation whose input has since been rebuilt (stale) is no violation."""
    checker = InvariantChecker()
    recs = _taint_records(True, True, False)
    # raw/1 generation 2 is built after the taint: daily/1 is stale now, and the cascade may leave it.
    for rec in recs + _build(15, "r-3", "raw", "raw/1", 2, {}):
        if rec.entity_kind == "partition" and rec.entity_id == "raw/1" and rec.seq > 14:
            rec = Record(rec.seq, rec.entity_kind, rec.entity_id, rec.entity_seq + 1, rec.event, rec.at)
        checker.feed(rec)
    assert checker.check_lineage(strict=True) == []


@pytest.mark.parametrize(("read", "why"), [
    pytest.param("raw//6", "cannot read 'raw//6'", id="malformed"),
    pytest.param("nothing/6", "no job of graph 'lineage' produces", id="no-job"),
    pytest.param("cmd/6", "one of the partitions this run builds", id="own-output"),
])
async def test_a_command_job_reading_a_ref_it_may_not_fails_the_run(db: Path, read: str, why: str) -> None:
    """A command job's {"read": [...]} line naming a malformed ref, one no job produces or its own output: the run
    fails with the reason although the command exits 0, and the partition is Failed."""
    g, _ = lineage_graph()
    protocol = Path(__file__).parent / "jobs" / "protocol.py"
    g.add_job(Job.create("cmd", outputs="cmd/{i}", command=[sys.executable, str(protocol), "0",
                                                           json.dumps({"read": [read]}), "--"]))
    async with open_runtime(db, g) as rt:
        assert (await (await rt.want("cmd/6")).done(timeout=20)).status is WantStatus.FAILED
        (run,) = rt.runs()
        assert run.status is JobRunStatus.FAILED
        assert run.reason.startswith("job protocol error: ")
        assert why in run.reason
        assert rt.get_partition("cmd/6").status is PartitionStatus.FAILED
        await sound(rt)
