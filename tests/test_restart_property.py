"""A model-based test of the runtime across snapshots, crashes and restarts (issue 15).

Hypothesis drives a real runtime on a SQLite log through wants, cancels, taints, job outcomes decided by the test
(success, failure with a retry left or not, missing upstream partitions), snapshots, crashes and clean restarts.
After every step it checks, against the log: I1, I2 and I6 over the whole history; I3, the live World equals a full
replay; that a World rebuilt from the newest snapshot plus the tail equals the full replay; that a World whose
settled entities were evicted counts the same and, loaded back from the log, equals the full replay; and after
every crash I4 (every transition a hook was told of is in the log) and that the restarted runtime's World (loaded
from a snapshot when there is one) equals a full replay. At the end every run is let succeed and every want must
end (I5).

The runtime runs on a dedicated event loop kept between steps (``loop.run_until_complete``); a holder task keeps
the ``wantbuild.open`` block open, as the scenario runner does, so a step can crash it from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import wantbuild
from actors import World, check_log, fold, rebuild
from actors._evict import settled
from eventlog import Record, open_log

pytestmark = pytest.mark.timeout(600)

REFS = [f"{job}/{d}" for job in ("raw", "daily") for d in (1, 2, 3)]
OUTCOMES = ["ok", "ok", "fail", "missing"]


def note_event(text: str) -> None:
    """A statistic for ``--hypothesis-show-statistics`` (ignored when a rule is called outside Hypothesis)."""
    with contextlib.suppress(InvalidArgument):
        event(text)


class Jobs:
    """The jobs' outcomes, decided by the test: each run waits until it is told how to end."""

    def __init__(self) -> None:
        self.waiting: dict[str, tuple[Any, asyncio.Future[str]]] = {}

    async def run(self, ctx: wantbuild.JobContext) -> None:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting[ctx.job_run_id] = (ctx, fut)
        try:
            outcome = await fut
        finally:
            self.waiting.pop(ctx.job_run_id, None)
        if outcome == "fail":
            raise RuntimeError("the test told this run to fail")
        if outcome == "missing":
            needs = [f"raw/{ref.rsplit('/', 1)[1]}" for ref in ctx.partitions if ref.startswith("daily/")]
            if needs:
                raise wantbuild.MissingDeps(needs)

    def finish(self, run_id: str, outcome: str) -> None:
        entry = self.waiting.get(run_id)
        if entry is not None and not entry[1].done():
            entry[1].set_result(outcome)


def graph(jobs: Jobs) -> wantbuild.Graph:
    g = wantbuild.Graph("restart-property")
    g.job("raw", outputs="raw/{d}", batch=2)(jobs.run)
    g.job("daily", outputs="daily/{d}", retries=1, backoff=0.0)(jobs.run)
    return g


def lineage_of(world: Any) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """A World's lineage index (readers, builders, by ref hash), each ref's runs sorted (runs ending at one instant
    may be indexed in another order from a snapshot)."""
    def norm(index: Any) -> dict[int, list[str]]:
        return {k: sorted(v) for k, v in index.as_dict().items()}
    return norm(world.lineage.readers), norm(world.lineage.builders)


class RestartMachine(RuleBasedStateMachine):
    """The runtime under wants, cancels, taints, job outcomes, snapshots, crashes and restarts."""

    evict_every: int | None = None
    """With a number, the runtime evicts settled entities as it goes (``wantbuild.open(evict_every=...)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "prop.db"
        self.jobs = Jobs()
        self.graph = graph(self.jobs)
        self.rt: Any = None
        self.holder: asyncio.Task[None] | None = None
        self.stop: asyncio.Event | None = None
        self.wants: list[str] = []
        self.told: dict[tuple[str, str], int] = {}
        self.snapshots = 0
        self.restarts_from_snapshot = 0

    # -- the runtime's life ---------------------------------------------------------------------------------
    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _hold(self, ready: asyncio.Future[None], stop: asyncio.Event) -> None:
        try:
            async with wantbuild.open(self.path, self.graph, snapshot_every=None, snapshot_interval=None,
                                      shutdown_grace=0.5, evict_every=self.evict_every) as rt:
                self.rt = rt
                rt.add_hook(self._hook)
                ready.set_result(None)
                await stop.wait()
        except BaseException as e:
            if not ready.done():
                ready.set_exception(e)
            raise

    def _hook(self, rec: Record, old: Any, new: Any) -> None:
        key = (rec.entity_kind, rec.entity_id)
        self.told[key] = max(self.told.get(key, 0), rec.entity_seq)

    def open(self) -> None:
        ready: asyncio.Future[None] = self.loop.create_future()
        self.stop = asyncio.Event()
        self.holder = self.loop.create_task(self._hold(ready, self.stop))
        self.run(ready)
        self.settle()

    def close(self, *, crash: bool) -> None:
        assert self.holder is not None
        assert self.stop is not None
        if crash:
            self.run(self.rt.crash())
        self.stop.set()
        self.run(self.holder)
        self.rt = self.holder = None
        self.jobs.waiting.clear()

    def settle(self) -> None:
        self.run(self.rt.wait_settled(timeout=30))

    async def _replays(self) -> tuple[Any, Any]:
        async with open_log(str(self.path), writer=False) as log:
            return await rebuild(log, snapshots=False), await rebuild(log)

    # -- rules ----------------------------------------------------------------------------------------------
    @initialize()
    def start(self) -> None:
        self.open()

    @rule(refs=st.lists(st.sampled_from(REFS), min_size=1, max_size=3, unique=True))
    def want(self, refs: list[str]) -> None:
        handle = self.run(self.rt.want(refs))
        self.wants.append(handle.want_id)
        self.settle()

    @precondition(lambda self: bool(self.wants))
    @rule(i=st.integers(min_value=0, max_value=20))
    def cancel(self, i: int) -> None:
        want_id = self.wants[i % len(self.wants)]
        if not self.rt.get_want(want_id).terminal:
            self.run(self.rt.cancel(want_id, "canceled by the test"))
        self.settle()

    @rule(ref=st.sampled_from(REFS))
    def taint(self, ref: str) -> None:
        if self.rt.world.partition(ref).status == "Live":
            self.run(self.rt.taint([ref], "tainted by the test"))
        self.settle()

    @precondition(lambda self: self.rt is not None and bool(self.jobs.waiting))
    @rule(i=st.integers(min_value=0, max_value=20), outcome=st.sampled_from(OUTCOMES))
    def finish_run(self, i: int, outcome: str) -> None:
        runs = sorted(self.jobs.waiting)
        self.jobs.finish(runs[i % len(runs)], outcome)
        note_event(f"a run told: {outcome}")
        self.settle()

    @rule()
    def snapshot(self) -> None:
        if self.rt.log.last_seq:  # an evicting runtime's reads the evicted states back from the log
            self.run(self.rt.snapshot())
            self.snapshots += 1

    @rule(snapshot_first=st.booleans())
    def crash_and_restart(self, snapshot_first: bool) -> None:
        if snapshot_first and self.rt.log.last_seq:
            self.run(self.rt.snapshot())
        self.close(crash=True)
        full, fast = self.run(self._replays())
        have = {key: (0 if (st_ := full.get(*key)) is None else st_.entity_seq) for key in self.told}
        lost = [f"{k} {e}: told entity_seq {n}, the log has {have[(k, e)]}"
                for (k, e), n in sorted(self.told.items()) if have[(k, e)] < n]
        assert lost == [], "I4: " + "; ".join(lost)
        assert full.diff(fast) == [], "a World from the snapshot differs from a full replay"
        self.open()
        restored = self.rt.recovery.restored
        if restored is not None and restored.snapshot_seq is not None:
            self.restarts_from_snapshot += 1
            note_event("restarted from a snapshot")

    @rule()
    def restart(self) -> None:
        self.close(crash=False)
        self.open()

    # -- invariants -----------------------------------------------------------------------------------------
    @invariant()
    def log_and_world_agree(self) -> None:
        if self.rt is None:
            return
        self.settle()

        async def check() -> tuple[Any, list[Any], Any, Any]:
            async with open_log(str(self.path), writer=False) as log:
                world, violations = await check_log(log)
                full = await rebuild(log, snapshots=False)
                await self._evict_and_load_back(log, full)
                await self._lazy_restart(log, full)
                return world, violations, full, await rebuild(log)

        _, violations, full, fast = self.run(check())
        assert [str(v) for v in violations] == []
        if self.evict_every is None:
            assert full.diff(self.rt.world) == [], "I3: the live World differs from a full replay"
        else:  # the evicted entities read back from the log: the live World is still the log's fold
            world = self.rt.world
            gone = sum(world.evicted_count(kind) for kind in ("want", "job_run", "partition"))
            note_event(f"live World with evicted entities: {gone > 0}")
            assert world.resolved() == full.snapshot(), "I3: the live World (evicted read back) differs from a replay"
            assert world.counts() == full.counts()
        assert full.diff(fast) == [], "a World from the newest snapshot differs from a full replay"
        assert lineage_of(full) == lineage_of(fast), "the lineage index from a snapshot differs from a replay's"

    async def _lazy_restart(self, log: Any, full: Any) -> None:
        """An evicting runtime's restart (the newest snapshot's settled entities left evicted, the tail and what is
        in flight read back) counts the same as a full replay, equals it once the evicted are read back, and builds
        the same lineage index."""
        lazy = await rebuild(log, evicting=True)
        if lazy.restored.snapshot_seq is not None:
            gone = sum(lazy.evicted_count(kind) for kind in ("want", "job_run", "partition"))
            note_event(f"lazy snapshot load left entities evicted: {gone > 0}")
        assert lazy.load_now(log)
        assert lazy.counts() == full.counts(), "a lazy snapshot load counts differently from a full replay"
        assert lazy.resolved() == full.snapshot(), "a lazy snapshot load (evicted read back) differs from a replay"
        assert lineage_of(lazy) == lineage_of(full), "a lazy snapshot load's lineage index differs from a replay's"

    async def _evict_and_load_back(self, log: Any, full: Any) -> None:
        """Eviction: a World folded from the log with its settled entities evicted counts the same, reads them
        back from the log one kind at a time, and once all are back equals the full replay."""
        world = fold([r async for r in log.read()], World(evicting=True))
        gone = {kind: world.evict(kind, ids) for kind, ids in settled(world).items()}
        note_event(f"evicted {sum(gone.values()) > 0}")
        assert world.counts() == full.counts()
        for kind in ("job_run", "partition"):
            evicted = [i for i in sorted(await log.entity_ids(kind)) if world.is_evicted(kind, i)]
            await world.load(log, kind, evicted[::2])
        await world.load_all(log)
        assert world.diff(full) == [], "a World with evicted entities loaded back differs from a full replay"

    def teardown(self) -> None:
        try:
            if self.rt is not None:
                self._run_everything_to_the_end()
                self.close(crash=False)
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            self.dir.cleanup()

    def _run_everything_to_the_end(self) -> None:
        """I5: with every run from now on succeeding, every want ends."""
        for _ in range(200):
            self.settle()
            if not self.jobs.waiting and not self.rt.world.in_flight_runs() and not any(
                    True for _ in self.rt.world.active_wants()):
                break
            for run_id in list(self.jobs.waiting):
                self.jobs.finish(run_id, "ok")
            self.run(asyncio.sleep(0.005))
        active = [w.want_id for w in self.rt.world.active_wants()]
        assert active == [], f"I5: wants still active with every run succeeding: {active}"

        async def check() -> list[Any]:
            async with open_log(str(self.path), writer=False) as log:
                return (await check_log(log, expect_all_terminal=True))[1]

        assert [str(v) for v in self.run(check())] == []


EXAMPLES = int(os.environ.get("WANTBUILD_RESTART_EXAMPLES", "20"))

TestRestartMachine = RestartMachine.TestCase
TestRestartMachine.settings = settings(max_examples=EXAMPLES, stateful_step_count=40, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow], database=None)
TestRestartMachine.__doc__ = ("Wants, cancels, taints, job outcomes, snapshots, crashes and restarts keep I1-I6, "
                              "and a restart from a snapshot gives the World a full replay gives.")


class EvictingRestartMachine(RestartMachine):
    """The same machine on a runtime that evicts what is settled after every transition."""

    evict_every = 1


TestEvictingRestartMachine = EvictingRestartMachine.TestCase
TestEvictingRestartMachine.settings = settings(max_examples=max(EXAMPLES // 2, 5), stateful_step_count=40,
                                               deadline=None, suppress_health_check=[HealthCheck.too_slow],
                                               database=None)
TestEvictingRestartMachine.__doc__ = ("With eviction after every transition, the runtime keeps I1-I6, the live World "
                                      "read back equals a full replay, and crashes and restarts change nothing.")


def test_the_machine_restarts_from_snapshots() -> None:
    """The state machine's steps really restart from snapshots (a run that does: not only full replays)."""
    m = RestartMachine()
    try:
        m.start()
        m.want(["daily/1", "raw/2"])
        m.finish_run(0, "ok")
        m.crash_and_restart(True)
        assert m.restarts_from_snapshot == 1
        m.log_and_world_agree()
    finally:
        m.teardown()

