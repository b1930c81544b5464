"""The actor kernel (issue #15): cells run by one dispatcher, write-ahead release, stashing, supervision, faults.

A small entity kind of the tests' own (``kt_counter``, added with ``register_entity_kind`` as docs/kernel.md shows)
and the runtime's Partition actor run on a real event log. Each test checks one promise of ``actors/_kernel.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    ActorFailure,
    ActorStopped,
    ActorSystemClosed,
    AskTimeout,
    Behavior,
    Committed,
    Ctx,
    Faults,
    InjectedFault,
    Kernel,
    Machine,
    PartitionActor,
    RequestLease,
    Snapshotter,
    SystemClock,
    World,
    decode_world,
    rebuild,
    register_entity_kind,
    replies_ok,
)
from actors._machine import sources
from eventlog import CommitError, Event, EventLog, event

pytestmark = pytest.mark.timeout(60)


# -- a small entity kind, as docs/kernel.md adds one -----------------------------------------------------
class CounterStatus(StrEnum):
    SET = "Set"


@event("KernelTestSet", 1)
class CounterSet(Event, frozen=True):
    value: int


COUNTER = Machine(kind="kt_counter", statuses=CounterStatus, initial=CounterStatus.SET, terminal=frozenset(),
                  table={"KernelTestSet": (sources(None, CounterStatus.SET), CounterStatus.SET)})


class CounterState(msgspec.Struct, frozen=True):
    key: str
    value: int
    entity_seq: int
    updated_at: float
    status: CounterStatus = CounterStatus.SET


def apply_counter(state: CounterState | None, ev: Event, key: str, at: float, entity_seq: int) -> CounterState:
    COUNTER.target(key, None if state is None else state.status, ev)
    assert isinstance(ev, CounterSet)
    return CounterState(key, ev.value, entity_seq, at)


register_entity_kind("kt_counter", COUNTER, apply_counter)


class Set(msgspec.Struct, frozen=True):
    value: int
    then_tell: tuple[str, str] | None = None


class Add(msgspec.Struct, frozen=True):
    """Persist value + n, twice in one step when ``twice``."""

    n: int
    twice: bool = False


class Get(msgspec.Struct, frozen=True):
    pass


class Boom(msgspec.Struct, frozen=True):
    pass


class Sum(msgspec.Struct, frozen=True):
    """Ask every key for its value (one envelope), reply with the sum."""

    keys: tuple[str, ...]


class Note(msgspec.Struct, frozen=True):
    text: str


class CounterActor(Behavior):
    def __init__(self, seen: list[tuple[str, Any]] | None = None, restarts: list[str] | None = None) -> None:
        self.seen = seen if seen is not None else []
        self.restarts = restarts if restarts is not None else []

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        self.seen.append((ctx.key, msg))
        st: CounterState | None = ctx.state
        if isinstance(msg, Set):
            new = ctx.persist(CounterSet(value=msg.value))
            if msg.then_tell is not None:
                ctx.tell(*msg.then_tell, Note(f"{ctx.key} set to {msg.value}"))
            return new.value
        if isinstance(msg, Add):
            base = 0 if st is None else st.value
            ctx.persist(CounterSet(value=base + msg.n))
            if msg.twice:
                ctx.persist(CounterSet(value=base + 2 * msg.n))
            return ctx.state.value
        if isinstance(msg, Get):
            return None if st is None else st.value
        if isinstance(msg, Boom):
            ctx.scratch = "half-done"
            raise ValueError(f"boom in {ctx.key}")
        if isinstance(msg, Sum):
            ctx.ask_many("kt_counter", [(k, Get()) for k in msg.keys], self._summed)
            return None
        if isinstance(msg, Note):
            return msg.text
        raise TypeError(msg)

    def _summed(self, ctx: Ctx, replies: list[Any]) -> int:
        return sum(r or 0 for r in replies_ok(replies))

    def restarted(self, ctx: Ctx, failed: Any, error: Exception) -> Any:
        self.restarts.append(f"{ctx.key} {type(error).__name__} scratch={ctx.scratch!r}")
        return None


@asynccontextmanager
async def running(tmp_path: Path, *, autocommit: bool = True, faults: Faults | None = None,
                  behavior: Behavior | None = None, **kw: Any) -> AsyncIterator[tuple[Kernel, EventLog, World]]:
    async with EventLog.open(tmp_path / "k.db", autocommit=autocommit) as log:
        world = World()
        async with Kernel(log, world, SystemClock(), faults=faults, **kw) as kernel:
            actor = behavior if behavior is not None else CounterActor()
            kernel.register("kt_counter", lambda _key: actor)
            kernel.register("partition", lambda _key: PartitionActor())
            yield kernel, log, world


@contextmanager
def failing_batches(fail_at: list[int]) -> Iterator[None]:
    """The event log's writer fails the batches numbered in ``fail_at`` (from 1) with a disk I/O error."""
    import sqlite3

    from eventlog import _log as log_module

    original = log_module._write_batch_sync
    calls = 0

    def flaky(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls in fail_at:
            raise sqlite3.OperationalError("disk I/O error")
        original(*args)

    log_module._write_batch_sync = flaky  # type: ignore[assignment]
    try:
        yield
    finally:
        log_module._write_batch_sync = original


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


# -- write-ahead -------------------------------------------------------------------------------------------
async def test_a_reply_comes_only_after_its_commit(tmp_path: Path) -> None:
    """With commits held back, an ask that persisted is not answered, nor its state adopted, until the commit."""
    async with running(tmp_path, autocommit=False) as (kernel, log, world):
        ask = asyncio.ensure_future(kernel.ask("kt_counter", "a", Set(7)))
        await settle()
        assert not ask.done()
        assert world.table("kt_counter") == {}
        assert log.pending() == 1
        await log.commit()
        assert await ask == 7
        assert world.table("kt_counter")["a"].value == 7


async def test_tells_of_a_step_wait_for_its_commit(tmp_path: Path) -> None:
    """What a step tells is delivered after the step's commit; a step that persisted nothing tells at once."""
    seen: list[tuple[str, Any]] = []
    async with running(tmp_path, autocommit=False, behavior=CounterActor(seen)) as (kernel, log, _world):
        kernel.tell("kt_counter", "a", Set(1, then_tell=("kt_counter", "b")))
        await settle()
        assert [k for k, _ in seen] == ["a"]  # b has not heard yet: a's event is not committed
        await log.commit()
        await settle()
        assert [k for k, _ in seen] == ["a", "b"]


class EffectActor(CounterActor):
    """Set persists the value and calls ``effect`` with the new state once it is committed (Ctx.after_commit)."""

    def __init__(self, effect: Any, restarts: list[str]) -> None:
        super().__init__(restarts=restarts)
        self.effect = effect

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        if isinstance(msg, Set):
            new = ctx.persist(CounterSet(value=msg.value))
            ctx.after_commit(self.effect, new)
            return new.value
        return super().receive(ctx, msg)


async def test_an_effect_after_commit_runs_once_the_step_is_durable(tmp_path: Path) -> None:
    """An after_commit effect runs once its step's commit lands, not before (nor at all if the step raised or
    its commit failed); an effect that raises gives the asker its error and restarts the actor."""
    effects: list[int] = []
    restarts: list[str] = []

    def effect(st: CounterState) -> None:
        if st.value < 0:
            raise ValueError(f"bad value {st.value}")
        effects.append(st.value)

    async with running(tmp_path, autocommit=False, behavior=EffectActor(effect, restarts)) as (kernel, log, world):
        ask = asyncio.ensure_future(kernel.ask("kt_counter", "a", Set(5)))
        await settle()
        assert effects == []
        assert not ask.done()
        await log.commit()
        assert await ask == 5
        assert effects == [5]
        failing = asyncio.ensure_future(kernel.ask("kt_counter", "a", Set(-1)))
        await settle()
        await log.commit()
        with pytest.raises(ValueError, match="bad value -1"):
            await failing
        await settle()
        assert restarts == ["a ValueError scratch=None"]
        assert world.table("kt_counter")["a"].value == -1  # committed: the effect came after
        assert effects == [5]


async def test_an_actor_with_a_persist_in_flight_stashes_its_messages(tmp_path: Path) -> None:
    """Three adds to one key while commits are held: each runs after the previous one committed, on its state."""
    async with running(tmp_path, autocommit=False) as (kernel, log, _world):
        asks = [asyncio.ensure_future(kernel.ask("kt_counter", "a", Add(10))) for _ in range(3)]
        results = []
        for _ in range(3):
            await settle()
            assert log.pending() == 1  # one at a time: the next waits in the mailbox
            await log.commit()
        results = [await a for a in asks]
        assert results == [10, 20, 30]
        history = await log.history("kt_counter", "a")
        assert [r.entity_seq for r in history] == [1, 2, 3]


async def test_the_appends_of_a_pass_share_one_commit(tmp_path: Path) -> None:
    """Messages to many idle actors in one loop turn: their events go to the log together, one batch."""
    async with running(tmp_path, autocommit=False) as (kernel, log, _world):
        asks = [asyncio.ensure_future(kernel.ask("kt_counter", f"k{i}", Set(i))) for i in range(50)]
        await settle()
        assert log.pending() == 50
        await log.commit()
        assert [await a for a in asks] == list(range(50))


async def test_two_events_of_one_step_are_adopted_together(tmp_path: Path) -> None:
    """A step may persist several events: they are checked in order and the reply sees the last state."""
    async with running(tmp_path) as (kernel, log, world):
        assert await kernel.ask("kt_counter", "a", Add(5, twice=True)) == 10
        assert [r.event.value for r in await log.history("kt_counter", "a")] == [5, 10]  # type: ignore[attr-defined]
        assert world.table("kt_counter")["a"].entity_seq == 2



class SetThenBoom(msgspec.Struct, frozen=True):
    value: int


class PersistThenRaise(CounterActor):
    """Persists two events for SetThenBoom, then raises: the step fails after its persists."""

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        if isinstance(msg, SetThenBoom):
            ctx.persist(CounterSet(value=msg.value))
            ctx.persist(CounterSet(value=msg.value + 1))
            raise ValueError(f"boom after persisting in {ctx.key}")
        return super().receive(ctx, msg)


async def test_a_step_that_raises_after_persisting_writes_nothing(tmp_path: Path) -> None:
    """In one pass, a step that persisted then raised writes nothing; the steps before and after it are written."""
    async with running(tmp_path, autocommit=False, behavior=PersistThenRaise()) as (kernel, log, world):
        before = asyncio.ensure_future(kernel.ask("kt_counter", "a", Add(1, twice=True)))
        failed = asyncio.ensure_future(kernel.ask("kt_counter", "b", SetThenBoom(5)))
        after = asyncio.ensure_future(kernel.ask("kt_counter", "c", Set(9)))
        await settle()
        assert log.pending() == 3  # a's two events and c's one, in one batch
        await log.commit()
        assert (await before, await after) == (2, 9)
        with pytest.raises(ValueError, match="boom after persisting in b"):
            await failed
        assert sorted(world.table("kt_counter")) == ["a", "c"]
        assert [r.event.value for r in await log.history("kt_counter", "a")] == [1, 2]  # type: ignore[attr-defined]
        assert await log.history("kt_counter", "b") == []
        again = asyncio.ensure_future(kernel.ask("kt_counter", "b", Set(4)))  # it restarted
        await settle()
        await log.commit()
        assert await again == 4
        assert world.table("kt_counter")["b"].entity_seq == 1  # its stream starts at 1: nothing of b was written

# -- envelopes and gathers ---------------------------------------------------------------------------------
async def test_an_ask_to_many_actors_replies_in_order(tmp_path: Path) -> None:
    """ask_many sends one envelope; each actor answers with its own state; the asker's next step gets them all."""
    async with running(tmp_path) as (kernel, _log, _world):
        for i in range(20):
            await kernel.ask("kt_counter", f"k{i}", Set(i))
        assert await kernel.ask("kt_counter", "sum", Sum(tuple(f"k{i}" for i in range(20)))) == sum(range(20))


async def test_partitions_asked_together_each_persist_their_own_event(tmp_path: Path) -> None:
    """500 lease requests as one envelope: 500 PartitionBuilding events, one per partition stream."""
    class Run(Behavior):
        def receive(self, ctx: Ctx, msg: Any) -> Any:
            ctx.ask_many("partition", [(f"p/{i}", RequestLease("r-1")) for i in range(500)], self.leased)
            return None

        def leased(self, ctx: Ctx, replies: list[Any]) -> Any:
            return [r.granted for r in replies_ok(replies)]

    async with running(tmp_path) as (kernel, log, world):
        kernel.register("run", lambda _k: Run(), entity=False)
        assert await kernel.ask("run", "r-1", Get()) == [True] * 500
        assert sorted(world.partitions) == sorted(f"p/{i}" for i in range(500))
        assert all(p.entity_seq == 1 and p.lease == "r-1" for p in world.partitions.values())
        assert log.last_seq == 500
        assert kernel.active_count("partition") == 0  # idle cells are dropped


# -- supervision -------------------------------------------------------------------------------------------
async def test_a_handler_that_raises_drops_its_message_and_restarts(tmp_path: Path) -> None:
    """The asker gets the error; the transient scratch is gone by the restart; the next message is handled."""
    restarts: list[str] = []
    crashes: list[tuple[str, str, Any]] = []
    async with running(tmp_path, behavior=CounterActor(restarts=restarts),
                       on_crash=lambda kind, key, msg, e: crashes.append((kind, key, type(msg).__name__))) as (
            kernel, _log, _world):
        await kernel.ask("kt_counter", "a", Set(3))
        with pytest.raises(ValueError, match="boom in a"):
            await kernel.ask("kt_counter", "a", Boom())
        assert await kernel.ask("kt_counter", "a", Get()) == 3
        assert restarts == ["a ValueError scratch=None"]
        assert crashes == [("kt_counter", "a", "Boom")]


async def test_a_failed_commit_crashes_every_actor_of_its_batch(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that does not commit: each of its actors' askers gets the CommitError, each actor restarts, and
    nothing of it is adopted."""
    from eventlog import _log as log_module

    restarts: list[str] = []
    async with running(tmp_path, autocommit=False, behavior=CounterActor(restarts=restarts)) as (
            kernel, log, world):
        asks = [asyncio.ensure_future(kernel.ask("kt_counter", k, Set(1))) for k in ("a", "b", "c")]
        await settle()

        def disk_full(*args: Any) -> None:
            import sqlite3
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(log_module, "_write_batch_sync", disk_full)
        with pytest.raises(CommitError):
            await log.commit()
        results = await asyncio.gather(*asks, return_exceptions=True)
        assert [type(r) for r in results] == [CommitError] * 3
        await settle()
        assert sorted(restarts) == ["a CommitError scratch=None", "b CommitError scratch=None",
                                    "c CommitError scratch=None"]
        assert world.table("kt_counter") == {}


async def test_an_actor_that_keeps_crashing_is_stopped_and_escalated(tmp_path: Path) -> None:
    """More than max_restarts crashes: asks raise ActorStopped, on_escalate hears of it; revive re-enables it,
    and the crash history survives the cell being dropped in between."""
    failures: list[ActorFailure] = []
    async with running(tmp_path, max_restarts=2, on_escalate=failures.append) as (kernel, _log, _world):
        for _ in range(3):
            with pytest.raises(ValueError, match="boom"):
                await kernel.ask("kt_counter", "a", Boom())
            await settle()
            assert not kernel.is_active("kt_counter", "a")  # idle in between: the history is kept elsewhere
        assert kernel.is_stopped("kt_counter", "a")
        assert [(f.kind, f.key, f.restarts) for f in failures] == [("kt_counter", "a", 2)]
        with pytest.raises(ActorStopped):
            await kernel.ask("kt_counter", "a", Get())
        kernel.tell("kt_counter", "a", Set(1))  # dropped with a warning, never raised into the sender
        kernel.revive("kt_counter", "a")
        assert await kernel.ask("kt_counter", "a", Set(4)) == 4


async def test_a_kernel_without_escalation_fails_on_a_stopped_actor(tmp_path: Path) -> None:
    """With no on_escalate, an actor stopped after repeated crashes fails the kernel's block with its error."""
    async def crash_once() -> None:
        async with running(tmp_path, max_restarts=0) as (kernel, _log, _world):
            with pytest.raises(ValueError, match="boom"):
                await kernel.ask("kt_counter", "a", Boom())
            await asyncio.sleep(1)

    with pytest.raises(BaseExceptionGroup) as info:
        await crash_once()
    assert any(isinstance(e, ValueError) for e in info.value.exceptions)


# -- hooks, closing ------------------------------------------------------------------------------------------
async def test_an_async_user_hook_holds_only_the_actor_that_committed(tmp_path: Path) -> None:
    """A hook that awaits holds its actor's reply until it is done; another actor's commit is not held."""
    gate = asyncio.Event()
    seen: list[int] = []

    async def hook(rec: Any, old: Any, new: Any) -> None:
        if rec.entity_id == "slow":
            await gate.wait()
        seen.append(rec.seq)

    async with running(tmp_path) as (kernel, _log, _world):
        kernel.hooks.add(hook)
        slow = asyncio.ensure_future(kernel.ask("kt_counter", "slow", Set(1)))
        assert await kernel.ask("kt_counter", "fast", Set(2)) == 2
        await settle()
        assert not slow.done()
        gate.set()
        assert await slow == 1
        assert sorted(seen) == [1, 2]


async def test_on_commit_is_told_once_per_commit_before_replies(tmp_path: Path) -> None:
    """The runtime's notification comes once per landed commit, with every transition, before any reply."""
    batches: list[list[Committed]] = []
    order: list[str] = []

    def on_commit(batch: list[Committed]) -> None:
        batches.append(batch)
        order.append("commit")

    async with running(tmp_path, autocommit=False, on_commit=on_commit) as (kernel, log, _world):
        asks = [asyncio.ensure_future(kernel.ask("kt_counter", k, Set(1))) for k in ("a", "b")]
        for a in asks:
            a.add_done_callback(lambda _f: order.append("reply"))
        await settle()
        await log.commit()
        await asyncio.gather(*asks)
        assert [[c.record.entity_id for c in b] for b in batches] == [["a", "b"]]
        assert order == ["commit", "reply", "reply"]


async def test_closing_fails_what_waits_and_ignores_a_late_commit(tmp_path: Path) -> None:
    """Asks waiting when the kernel closes raise ActorSystemClosed; a commit landing afterwards changes nothing."""
    async with running(tmp_path, autocommit=False) as (kernel, log, world):
        ask = asyncio.ensure_future(kernel.ask("kt_counter", "a", Set(1)))
        await settle()
        await kernel.aclose()
        with pytest.raises(ActorSystemClosed):
            await ask
        await log.commit()
        await settle()
        assert world.table("kt_counter") == {}
        with pytest.raises(ActorSystemClosed):
            kernel.tell("kt_counter", "a", Get())


# -- faults ------------------------------------------------------------------------------------------------
async def test_injected_faults_keep_their_meaning(tmp_path: Path) -> None:
    """handler: the asker gets InjectedFault and nothing is written; ask_timeout: AskTimeout at once, the message
    still handled; commit: CommitError before anything is written; notify: the record reaches nobody, the actor
    restarts after its commit."""
    faults = Faults()
    faults.add("handler", "kt_counter", "Set")
    faults.add("ask_timeout", "kt_counter", "Add")
    faults.add("commit", "kt_counter", "KernelTestSet", skip=1)
    faults.add("notify", "kt_counter", "KernelTestSet", skip=1)
    told: list[str] = []
    restarts: list[str] = []
    async with running(tmp_path, faults=faults, behavior=CounterActor(restarts=restarts),
                       on_commit=lambda batch: told.extend(str(c.record.event.value) for c in batch)) as (
            kernel, log, world):
        with pytest.raises(InjectedFault):
            await kernel.ask("kt_counter", "a", Set(1))
        with pytest.raises(AskTimeout):
            await kernel.ask("kt_counter", "a", Add(5))
        await settle()
        assert world.table("kt_counter")["a"].value == 5  # delivered and handled all the same
        with pytest.raises(CommitError, match="injected fault"):
            await kernel.ask("kt_counter", "a", Add(1))
        with pytest.raises(InjectedFault, match="notify"):
            await kernel.ask("kt_counter", "a", Add(2))
        assert world.table("kt_counter")["a"].value == 7  # committed: the notification was what failed
        assert told == ["5"]
        assert len(restarts) == 3  # the handler fault, the commit fault, the lost notification
        assert log.last_seq == 2


# -- the World and replay ------------------------------------------------------------------------------------
async def test_a_registered_entity_kind_replays_to_the_live_world(tmp_path: Path) -> None:
    """Whatever the kernel committed for a kind added with register_entity_kind folds back to the same World."""
    async with running(tmp_path) as (kernel, log, world):
        for i in range(30):
            await kernel.ask("kt_counter", f"k{i % 7}", Add(i))
        rebuilt = await rebuild(log)
        assert rebuilt.table("kt_counter") == world.table("kt_counter")
        assert world.diff(rebuilt) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["set", "add2", "boom", "get"]),
                              st.integers(0, 9)), min_size=1, max_size=40),
       fail_at=st.lists(st.integers(0, 39), max_size=4))
def test_any_interleaving_keeps_the_world_equal_to_its_log(ops: list[tuple[str, str, int]],
                                                        fail_at: list[int], tmp_path_factory: Any) -> None:
    """Random asks, crashes (some past the restart limit) and failed commits to a few actors: each entity's
    entity_seq has no gap, and the World equals the fold of the log (I2, I3)."""
    tmp = tmp_path_factory.mktemp("kernel")

    async def main() -> None:
        with failing_batches(fail_at):
            async with running(tmp, on_escalate=lambda failure: None) as (kernel, log, world):
                futures = []
                for key, op, n in ops:
                    msg: Any = {"set": Set(n), "add2": Add(n, twice=True), "boom": Boom(), "get": Get()}[op]
                    futures.append(asyncio.ensure_future(kernel.ask("kt_counter", key, msg)))
                results = await asyncio.gather(*futures, return_exceptions=True)
                for (_key, op, _n), r in zip(ops, results, strict=True):
                    if isinstance(r, ActorStopped):  # four crashes of one key stop it (max_restarts=3)
                        continue
                    if op == "boom":
                        assert isinstance(r, ValueError)
                    elif isinstance(r, BaseException):
                        assert isinstance(r, CommitError), r
                await log.commit()
                rebuilt = await rebuild(log)
                assert world.diff(rebuilt) == []
                for key, st_ in world.table("kt_counter").items():
                    history = await log.history("kt_counter", key)
                    assert [r.entity_seq for r in history] == list(range(1, st_.entity_seq + 1))

    asyncio.run(main())


async def test_snapshots_of_a_kernel_world(tmp_path: Path) -> None:
    """The kernel counts what it adopts (World.applied), so a snapshot is taken at its commits and decodes to a
    replay's World; a World holding states of a kind added with register_entity_kind is refused, naming it."""
    async with running(tmp_path) as (kernel, log, world):
        snapshots = Snapshotter(log, world, every_events=None, every_seconds=None)
        for i in range(5):
            assert (await kernel.ask("partition", f"p/{i}", RequestLease(f"r-{i}"))).granted
        assert world.applied == log.last_seq == 5
        info = await snapshots.take()
        assert info is not None
        assert info.seq == 5
        assert decode_world(await log.read_snapshot(info)).diff(await rebuild(log, snapshots=False)) == []
        assert await kernel.ask("kt_counter", "a", Set(1)) == 1
        with pytest.raises(ValueError, match="entity kind 'kt_counter' has no snapshot encoding"):
            await snapshots.take()


def test_the_kernel_page_runs() -> None:
    """docs/kernel.md's example adds an entity kind, runs its actor on a kernel and replays it."""
    from test_docs import DOCS, run_blocks

    run_blocks(DOCS / "kernel.md")



_KEYS = ("a", "b", "c", "d", "e")


class _Ticks:
    """A clock that moves one second per read: two runs of one program give the same timestamps."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        self.t += 1.0
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


def _op_message(key: str, op: str, n: int) -> Any:
    other = _KEYS[n % len(_KEYS)]
    return {"set": Set(n), "add2": Add(n, twice=True), "boom": Boom(), "get": Get(),
            "sum": Sum(tuple(k for k in _KEYS[: 1 + n % len(_KEYS)] if k > key)),  # no cycle of asks: none waits
            "set_tell": Set(n, then_tell=("kt_counter", other)), "lease": RequestLease(f"run-{n % 3}")}[op]


async def _run_program(tmp: Path, chunks: list[list[tuple[str, str, int]]], fail_at: list[int],
                       pool: int) -> tuple[list[Any], list[tuple[str, Any]], list[Any], dict[str, Any]]:
    """Run ``chunks`` (each chunk's asks concurrently, the chunks in turn) with ``_POOL = pool``, the writer's
    batches in ``fail_at`` failing; return the replies, the handled messages in order, the log and the World."""
    from actors import _kernel as kernel_module

    original_pool = kernel_module._POOL

    def shown(r: Any) -> Any:
        return (type(r).__name__, str(r).replace(str(tmp), "")) if isinstance(r, BaseException) else r

    kernel_module._POOL = pool  # type: ignore[misc]
    seen: list[tuple[str, Any]] = []
    try:
        with failing_batches(fail_at):
            async with EventLog.open(tmp / "k.db") as log:
                world = World()
                async with Kernel(log, world, _Ticks(), on_escalate=lambda failure: None) as kernel:
                    actor = CounterActor(seen=seen)
                    kernel.register("kt_counter", lambda _key: actor)
                    kernel.register("partition", lambda _key: PartitionActor())
                    replies: list[Any] = []
                    for chunk in chunks:
                        asks = [asyncio.ensure_future(kernel.ask("partition" if op == "lease" else "kt_counter",
                                                                 f"p/{key}" if op == "lease" else key,
                                                                 _op_message(key, op, n)))
                                for key, op, n in chunk]
                        replies += [shown(r) for r in await asyncio.gather(*asks, return_exceptions=True)]
                    await settle()
                    await log.commit()
                    history = [(r.entity_kind, r.entity_id, r.entity_seq, r.event, r.at)
                               for kind, keys in (("kt_counter", _KEYS), ("partition", [f"p/{k}" for k in _KEYS]))
                               for key in keys for r in await log.history(kind, key)]
                    assert world.diff(await rebuild(log)) == []
                    assert kernel.active_count() == 0, "every idle cell was dropped"
                    tables = {kind: dict(world.table(kind)) for kind in ("kt_counter", "partition")}
                    return replies, seen, history, tables
    finally:
        kernel_module._POOL = original_pool  # type: ignore[misc]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.lists(st.tuples(st.sampled_from(_KEYS),
                                          st.sampled_from(["set", "add2", "boom", "get", "sum", "set_tell", "lease"]),
                                          st.integers(0, 9)), min_size=1, max_size=12), min_size=1, max_size=5),
       fail_at=st.lists(st.integers(1, 30), max_size=4))
def test_a_reused_idle_cell_behaves_as_a_new_one(chunks: list[list[tuple[str, str, int]]], fail_at: list[int],
                                                 tmp_path_factory: Any) -> None:
    """Idle cells reused from the kind's pool (_POOL) and cells made afresh give the same replies, the same
    messages handled in the same order, the same log and the same World, under random interleavings, envelopes,
    tells, stashing behind commits in flight, crashes (some past the restart limit) and failed commits."""
    pooled = asyncio.run(_run_program(tmp_path_factory.mktemp("pooled"), chunks, fail_at, 2048))
    fresh = asyncio.run(_run_program(tmp_path_factory.mktemp("fresh"), chunks, fail_at, 0))
    assert pooled == fresh


# -- cells of idle actors made at their turn (_Env), commits in flight bounded (_FLIGHT) -------------------------
class Stamped(msgspec.Struct, frozen=True):
    """A message numbered when it is sent; its handler tells ``forward`` a new one each and persists if asked."""

    stamp: int
    forward: tuple[str, ...] = ()
    persist: bool = False


class AskAll(msgspec.Struct, frozen=True):
    """Ask each ``(key, forward, persist)`` a numbered message, as one envelope."""

    requests: tuple[tuple[str, tuple[str, ...], bool], ...]


class StampRecorder(Behavior):
    def __init__(self) -> None:
        self.clock = 0
        self.seen: dict[str, list[int]] = {}

    def stamp(self) -> int:
        self.clock += 1
        return self.clock

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        if isinstance(msg, Stamped):
            self.seen.setdefault(ctx.key, []).append(msg.stamp)
            if msg.persist:
                ctx.persist(CounterSet(value=msg.stamp))
            for key in msg.forward:  # numbered when sent: after the step's commit (a tell is sent then)
                ctx.after_commit(self._forward, (ctx.kernel, key))
            return msg.stamp
        if isinstance(msg, AskAll):
            ctx.ask_many("kt_counter", [(key, Stamped(self.stamp(), fwd, p)) for key, fwd, p in msg.requests],
                         lambda _ctx, replies: replies_ok(replies))
            return None
        raise TypeError(msg)

    def _forward(self, arg: tuple[Kernel, str]) -> None:
        kernel, key = arg
        kernel.tell("kt_counter", key, Stamped(self.stamp()))


_TARGETS = ["t0", "t1", "t2", "t3"]
_send_op = st.tuples(st.sampled_from(_TARGETS), st.lists(st.sampled_from(_TARGETS), max_size=2).map(tuple),
                     st.booleans())


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(bursts=st.lists(st.lists(st.one_of(st.tuples(st.just("tell"), _send_op),
                                          st.tuples(st.sampled_from(["a0", "a1"]),
                                                    st.lists(_send_op, min_size=1, max_size=5).map(tuple))),
                                min_size=1, max_size=8), min_size=1, max_size=4),
       budget=st.sampled_from([1, 3, 4000]), flight=st.sampled_from([1, 2, 8192]))
def test_every_actor_handles_its_messages_in_the_order_they_were_sent(
        bursts: list[list[tuple[str, Any]]], budget: int, flight: int, tmp_path_factory: Any) -> None:
    """Each actor handles its messages in the order they were sent (numbered at sending), whether it had a cell, its
    first message waited in the queue for its cell (an envelope's part or a tell to an idle actor) while more came,
    or its cell was made meanwhile; every message is handled once, with passes and commits in flight cut short."""
    from actors import _kernel as kernel_module

    async def run() -> tuple[StampRecorder, int]:
        rec = StampRecorder()
        sent = 0
        async with (EventLog.open(tmp_path_factory.mktemp("order") / "k.db") as log,
                    Kernel(log, World(), SystemClock()) as kernel):
            kernel.register("kt_counter", lambda _key: rec)
            for burst in bursts:  # each burst sent at once, while the one before may still be in flight
                for who, what in burst:
                    if who == "tell":
                        key, fwd, persist = what
                        kernel.tell("kt_counter", key, Stamped(rec.stamp(), fwd, persist))
                        sent += 1 + len(fwd)
                    else:
                        kernel.tell("kt_counter", who, AskAll(what))
                        sent += sum(1 + len(fwd) for _key, fwd, _p in what)
                await asyncio.sleep(0)
            for _ in range(2000):
                if not kernel.busy():
                    break
                await asyncio.sleep(0.001)
            assert not kernel.busy()
            assert kernel.active_count() == 0, "every cell was dropped once idle"
        return rec, sent

    saved = kernel_module._BUDGET, kernel_module._FLIGHT
    kernel_module._BUDGET, kernel_module._FLIGHT = budget, flight  # type: ignore[misc]
    try:
        rec, sent = asyncio.run(run())
    finally:
        kernel_module._BUDGET, kernel_module._FLIGHT = saved  # type: ignore[misc]
    for key, stamps in rec.seen.items():
        assert stamps == sorted(stamps), f"{key} handled {stamps}"
    assert sum(len(s) for s in rec.seen.values()) == sent


async def test_a_burst_to_idle_actors_keeps_few_cells_alive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Envelopes to 300 idle actors make their cells only as the dispatcher reaches them, and the dispatcher waits
    for commits to land past _FLIGHT steps in flight: their cells alive stay within _FLIGHT, a pass and an envelope."""
    from actors import _kernel as kernel_module

    monkeypatch.setattr(kernel_module, "_BUDGET", 10)
    monkeypatch.setattr(kernel_module, "_FLIGHT", 20)
    rec = StampRecorder()
    alive: list[int] = []
    async with EventLog.open(tmp_path / "k.db") as log:
        world = World()

        def on_commit(batch: list[Committed]) -> None:
            cells = kernel._kinds["kt_counter"].cells.values()
            alive.append(sum(isinstance(c, Ctx) and c.key[0] == "k" for c in cells))

        async with Kernel(log, world, SystemClock(), on_commit=on_commit) as kernel:
            kernel.register("kt_counter", lambda _key: rec)
            keys = [f"k{i:03d}" for i in range(300)]
            for i in range(30):  # 30 envelopes of 10 at once
                kernel.tell("kt_counter", f"a{i:02d}", AskAll(tuple((k, (), True) for k in keys[i * 10:i * 10 + 10])))
            for _ in range(5000):
                if len(world.table("kt_counter")) == 300 and not kernel.busy():
                    break
                await asyncio.sleep(0.001)
            assert sorted(world.table("kt_counter")) == keys
            assert [rec.seen[k] for k in keys] == [[i + 1] for i in range(300)]
    assert alive
    assert max(alive) <= 20 + 10 + 10, max(alive)
