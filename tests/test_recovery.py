"""Level-triggered recovery (issue #10): whatever fails inside a running runtime, every want still ends.

Each test injects one fault through :class:`actors.Faults` into a real runtime with in-process jobs, then checks
that the affected wants end (Successful when the fault heals, Failed with the reason when it cannot), that no
concurrency slot or lease leaks, and that the log replays to the live World with I1-I6 holding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from runtime_graphs import chain_graph

from actors import Faults, JobRunStatus, PartitionStatus, WantStatus, check_log, check_replay_fidelity
from supervisor import Graph, JobContext, MissingDeps, Runtime, open_runtime


async def assert_log_sound(rt: Runtime) -> None:
    await rt.wait_quiescent()
    world, violations = await check_log(rt.log, expect_all_terminal=True)
    assert [str(v) for v in violations] == []
    assert check_replay_fidelity(rt.world, world) == []


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "wb.db"


def one_slot_graph() -> tuple[Graph, list[str]]:
    """One job with concurrency=1: a leaked slot would leave every later want Idle forever."""
    g = Graph("slots")
    built: list[str] = []

    @g.job("daily", outputs="daily/{i}", concurrency=1)
    async def daily(ctx: JobContext) -> None:
        built.extend(ctx.partitions)

    return g, built


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        pytest.param("job_run", "JobRunQueued", id="run-queued"),
        pytest.param("job_run", "JobRunStarted", id="run-started"),
        pytest.param("job_run", "JobRunSucceeded", id="run-succeeded"),
        pytest.param("partition", "PartitionBuilding", id="lease"),
        pytest.param("partition", "PartitionLive", id="settle"),
        pytest.param("want", "WantCreated", id="want-created"),
        pytest.param("want", "WantBuilding", id="want-status"),
    ],
)
async def test_a_failed_commit_heals(db: Path, kind: str, match: str) -> None:
    """One append that fails with CommitError: the actor restarts, re-derives its work, and both wants succeed."""
    g, built = one_slot_graph()
    faults = Faults()
    faults.add("commit", kind, match)
    async with open_runtime(db, g, faults=faults) as rt:
        try:
            h1 = await rt.want("daily/1")
        except Exception:  # the want's own creation failed: the caller was told, as with any failed commit
            assert match == "WantCreated"
            h1 = await rt.want("daily/1")
        h2 = await rt.want("daily/2")
        assert (await h1.done(timeout=10)).status is WantStatus.SUCCESSFUL
        assert (await h2.done(timeout=10)).status is WantStatus.SUCCESSFUL
        assert faults.fired, "the fault never fired: the test proves nothing"
        assert sorted(set(built)) == ["daily/1", "daily/2"]
        await assert_log_sound(rt)


@pytest.mark.parametrize(
    ("point", "kind", "match"),
    [
        pytest.param("ask_timeout", "partition", "RequestLease", id="lease-ask-timeout"),
        pytest.param("ask_timeout", "partition", "SettleBuild", id="settle-ask-timeout"),
        pytest.param("handler", "job_run", "PlanRun", id="plan-handler"),
        pytest.param("handler", "job_run", "Finished", id="finished-handler"),
        pytest.param("handler", "partition", "RequestLease", id="lease-handler"),
        pytest.param("handler", "want", "MoveWant", id="want-handler"),
        pytest.param("handler", "supervisor", "CommittedBatch", id="supervisor-handler"),
        pytest.param("handler", "supervisor", "RunEnded", id="supervisor-run-ended"),
        pytest.param("notify", "partition", "PartitionLive", id="notification-lost"),
        pytest.param("job", None, None, id="execution-task"),
    ],
)
async def test_a_crash_anywhere_heals(db: Path, point: Any, kind: str | None, match: str | None) -> None:
    """An exception in a handler, an ask timeout, a lost notification, a crashed execution task: wants still end,
    and the next want on the concurrency=1 job is not blocked by a leaked slot."""
    g, built = one_slot_graph()
    faults = Faults()
    faults.add(point, kind, match)
    async with open_runtime(db, g, faults=faults) as rt:
        h1 = await rt.want("daily/1")
        s1 = await h1.done(timeout=10)
        h2 = await rt.want("daily/2")
        s2 = await h2.done(timeout=10)
        assert faults.fired, "the fault never fired: the test proves nothing"
        # An execution task that fails ends its run Failed (no retries in this graph): the want says why.
        if point == "job":
            assert s1.status is WantStatus.FAILED
            assert "wantbuild could not execute the job" in s1.reason
        else:
            assert s1.status is WantStatus.SUCCESSFUL
        assert s2.status is WantStatus.SUCCESSFUL
        assert "daily/2" in built
        await assert_log_sound(rt)


async def test_a_raising_user_hook_is_contained(db: Path) -> None:
    """A user hook that raises on every event is logged and never stops a run (docs: "logged, never fatal")."""
    g, built = one_slot_graph()
    calls = 0

    def bad_hook(rec: Any, old: Any, new: Any) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a user's bug")

    async with open_runtime(db, g) as rt:
        rt.add_hook(bad_hook)
        hs = [await rt.want(f"daily/{i}") for i in range(3)]
        for h in hs:
            assert (await h.done(timeout=10)).status is WantStatus.SUCCESSFUL
        assert calls > 10
        assert rt.failures == []
        assert sorted(built) == ["daily/0", "daily/1", "daily/2"]
        await assert_log_sound(rt)


async def test_an_actor_that_keeps_crashing_fails_its_wants_with_the_reason(db: Path) -> None:
    """A run whose actor crashes past the restart limit: the runtime gives up on it, its want ends Failed with
    the error as the reason, rt.failures names it, and the next want on the job still runs."""
    g, _ = one_slot_graph()
    faults = Faults()
    faults.add("commit", "job_run", "JobRunSucceeded", times=50)  # the run's success never commits
    async with open_runtime(db, g, faults=faults) as rt:
        h1 = await rt.want("daily/1")
        s1 = await h1.done(timeout=10)
        assert s1.status is WantStatus.FAILED
        assert "gave up on job_run" in s1.reason
        assert "CommitError" in s1.reason
        assert [f.kind for f in rt.failures] == ["job_run"]
        faults.rules.clear()
        h2 = await rt.want("daily/2")
        assert (await h2.done(timeout=10)).status is WantStatus.SUCCESSFUL
        run = rt.get_run(rt.failures[0].key)
        assert run.status is JobRunStatus.FAILED
        await assert_log_sound(rt)


async def test_a_partition_actor_that_keeps_crashing_fails_the_wants_on_it(db: Path) -> None:
    """A poisoned partition actor: the wants on it end Failed with the reason; other partitions are unaffected."""
    g, _ = one_slot_graph()
    faults = Faults()
    faults.add("handler", "partition", "RequestLease", times=4)
    async with open_runtime(db, g, faults=faults) as rt:
        h1 = await rt.want("daily/1")
        s1 = await h1.done(timeout=10)
        assert s1.status is WantStatus.FAILED
        assert "gave up on partition daily/1" in s1.reason
        h2 = await rt.want(["daily/2", "daily/1"])  # the actor was revived: a later want gets a fresh chance
        assert (await h2.done(timeout=10)).status is WantStatus.SUCCESSFUL
        await assert_log_sound(rt)


async def test_restart_does_not_duplicate_derived_wants(db: Path) -> None:
    """After a crash with derived wants active, recovery indexes every active want before planning: no second
    derived want for a ref already wanted, no duplicate runs (issue #10 item 3)."""
    gate = anyio.Event()
    g = Graph("chain")

    @g.job("raw", outputs="raw/{i}", batch=10)
    async def raw(ctx: JobContext) -> None:
        await gate.wait()

    @g.job("daily", outputs="daily/{i}", batch=10)
    async def daily(ctx: JobContext) -> None:
        missing = [f"raw/{p['i']}" for p in ctx.params]
        if not all(ctx_live(m) for m in missing):
            raise MissingDeps([m for m in missing if not ctx_live(m)])

    live: set[str] = set()

    def ctx_live(ref: str) -> bool:
        return ref in live

    refs = [f"daily/{i}" for i in range(5)]
    async with open_runtime(db, g) as rt:
        await rt.want(refs)
        with anyio.fail_after(10):  # the derived want for raw/0..4 exists and its run is building them
            while not any(r.job == "raw" and r.status is JobRunStatus.RUNNING for r in rt.runs()):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        await rt.crash()
    gate.set()
    live.update(f"raw/{i}" for i in range(5))
    async with open_runtime(db, g) as rt:
        await rt.wait_idle(timeout=10)
        derived = [w for w in rt.wants() if w.source.startswith("job_run:")]
        assert [sorted(w.refs) for w in derived] == [[f"raw/{i}" for i in range(5)]]
        assert all(w.status is WantStatus.SUCCESSFUL for w in rt.wants())
        canceled = [r for r in rt.runs() if r.status is JobRunStatus.CANCELED]
        assert canceled == []
        await assert_log_sound(rt)


async def test_a_job_reporting_a_live_partition_missing_fails_instead_of_looping(db: Path) -> None:
    """A job that reports an already Live partition as missing fails with a reason that says so, retried by its
    policy, and the want ends Failed (issue #10 item 4: it looped forever)."""
    g = Graph("liar")

    @g.job("raw", outputs="raw/{i}")
    async def raw(ctx: JobContext) -> None:
        pass

    @g.job("daily", outputs="daily/{i}", retries=2, backoff=0.01)
    async def daily(ctx: JobContext) -> None:
        raise MissingDeps(["raw/1"])

    async with open_runtime(db, g) as rt:
        assert (await (await rt.want("raw/1")).done(timeout=10)).status is WantStatus.SUCCESSFUL
        st = await (await rt.want("daily/1")).done(timeout=10)
        assert st.status is WantStatus.FAILED
        assert "reported raw/1 as a missing dependency, but it was Live" in st.reason
        runs = [r for r in rt.runs() if r.job == "daily"]
        assert [r.status for r in runs] == [JobRunStatus.FAILED] * 3
        assert [r.attempt for r in runs] == [1, 2, 3]
        await assert_log_sound(rt)


async def test_a_dependency_built_meanwhile_is_not_a_lie(db: Path) -> None:
    """A job that reports a dependency missing which became Live only after it started is an honest DepMiss."""
    g, _ = chain_graph()
    async with open_runtime(db, g) as rt:
        st = await (await rt.want("daily/1")).done(timeout=10)
        assert st.status is WantStatus.SUCCESSFUL
        statuses = [r.status for r in rt.runs()]
        assert JobRunStatus.DEP_MISS in statuses
        assert JobRunStatus.FAILED not in statuses
        assert rt.get_partition("raw/1").status is PartitionStatus.LIVE


@pytest.mark.parametrize(
    ("name", "fault"),
    [pytest.param("want", "WantCreated", id="want"), pytest.param("cancel", "WantCanceled", id="cancel"),
     pytest.param("taint", "PartitionTainted", id="taint")],
)
async def test_an_inbox_command_is_applied_once_with_its_completion(db: Path, name: str, fault: str) -> None:
    """A command's effect and its completion commit together: when the effect's commit fails the command stays
    pending and is applied on the next pass, exactly once, and completed with its result (issue #10 item 6)."""
    from eventlog import EventLog

    g, _ = one_slot_graph()
    never = anyio.Event()

    @g.job("slow", outputs="slow/{i}")
    async def slow(ctx: JobContext) -> None:
        await never.wait()  # keeps its want active until canceled

    async with open_runtime(db, g) as rt:
        w = await rt.want("daily/1")
        assert (await w.done(timeout=10)).status is WantStatus.SUCCESSFUL
        other = await rt.want("slow/1")
    payloads: dict[str, dict[str, Any]] = {"want": {"refs": ["daily/3"]}, "cancel": {"want_id": other.want_id},
                                           "taint": {"refs": ["daily/1"]}}
    payload = payloads[name]
    faults = Faults()
    faults.add("commit", None, fault)
    async with EventLog.open(db, writer=False) as reader:
        command_id = await reader.submit_command(name, payload)
    async with open_runtime(db, g, faults=faults) as rt:
        with anyio.fail_after(10):
            while (cmd := await rt.log.command(command_id)) is None or cmd.completed_at is None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert faults.fired, "the effect's commit never failed: the test proves nothing"
        assert cmd.result is not None
        assert cmd.result["ok"] is True, cmd.result
        effects = [r async for r in rt.log.read(types=[fault])]
        if name == "want":
            assert [r.event.command_id for r in effects].count(command_id) == 1  # type: ignore[attr-defined]
        elif name == "cancel":
            assert [r.entity_id for r in effects] == [other.want_id]
        else:
            assert [r.entity_id for r in effects] == ["daily/1"]
