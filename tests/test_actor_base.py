"""The generic actor base: ordering, backpressure, ask/tell, supervision, passivation, shutdown."""

from __future__ import annotations

import asyncio
import math
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.typing import EventDict

from actors._actor import (
    Actor,
    ActorFailure,
    ActorRef,
    ActorStopped,
    ActorSystemClosed,
    AskDeadlock,
    AskTimeout,
    UnknownActorKind,
    note_crash,
)
from actors._system import ActorSystem
from eventlog import LeaseLost, WantbuildError


# -- helpers ------------------------------------------------------------------------------------------------------
async def settle(system: ActorSystem, *, rounds: int = 10_000) -> None:
    """Let the loop run until no actor of the system is active (or fail)."""
    for _ in range(rounds):
        if system.active_count() == 0:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"actors still active: {system.stats()}")


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


class Recorder(Actor[Any]):
    """Records every message it handles, one at a time; replies with the message."""

    kind = "rec"
    log: ClassVar[dict[str, list[Any]]]
    starts: ClassVar[dict[str, int]]
    stops: ClassVar[dict[str, int]]
    busy: ClassVar[int]
    max_busy: ClassVar[int]

    @classmethod
    def reset(cls) -> None:
        cls.log = defaultdict(list)
        cls.starts = defaultdict(int)
        cls.stops = defaultdict(int)
        cls.busy = cls.max_busy = 0

    async def on_start(self) -> None:
        Recorder.starts[self.key] += 1

    async def on_stop(self) -> None:
        Recorder.stops[self.key] += 1

    async def handle(self, msg: Any) -> Any:
        Recorder.busy += 1
        Recorder.max_busy = max(Recorder.max_busy, Recorder.busy)
        try:
            for _ in range(msg[-1] if isinstance(msg, tuple) else 0):
                await asyncio.sleep(0)  # a handler that suspends: others run meanwhile
            Recorder.log[self.key].append(msg)
            return msg
        finally:
            Recorder.busy -= 1


@pytest.fixture(autouse=True)
def _reset_recorder() -> None:
    Recorder.reset()


class Gate(Actor[Any]):
    """Blocks each message until the shared gate opens; records what it handled."""

    kind = "gate"
    gate: ClassVar[asyncio.Event]
    entered: ClassVar[asyncio.Event]
    handled: ClassVar[list[Any]]

    @classmethod
    def reset(cls) -> None:
        cls.gate = asyncio.Event()
        cls.entered = asyncio.Event()
        cls.handled = []

    async def handle(self, msg: Any) -> Any:
        Gate.entered.set()
        await Gate.gate.wait()
        Gate.handled.append(msg)
        return msg


# -- ask / tell --------------------------------------------------------------------------------------------------
async def test_tells_and_asks_are_handled_in_order_one_at_a_time() -> None:
    """Messages from one sender are handled FIFO, never two at once, and an ask returns the handler's reply."""
    async with ActorSystem(passivate_after=None) as system:
        system.register("rec", Recorder)
        for i in range(50):
            await system.tell("rec", "a", ("t", i, i % 3))
        assert await system.ask("rec", "a", ("ask", 50, 1)) == ("ask", 50, 1)
    assert [m[1] for m in Recorder.log["a"]] == list(range(51))
    assert Recorder.max_busy == 1


async def test_actors_of_different_keys_run_concurrently() -> None:
    """Each key is its own actor: one blocked actor does not hold up another."""
    Gate.reset()
    async with ActorSystem() as system:
        system.register("gate", Gate)
        system.register("rec", Recorder)
        await system.tell("gate", "blocked", 1)
        await Gate.entered.wait()
        assert await system.ask("rec", "free", ("x", 0)) == ("x", 0)
        Gate.gate.set()


async def test_full_mailbox_blocks_the_sender_until_there_is_room() -> None:
    """With the mailbox full, tell waits (it does not raise) and try_tell returns False; room lets it through."""
    Gate.reset()
    async with ActorSystem(mailbox_size=2) as system:
        system.register("gate", Gate)
        await system.tell("gate", "g", 0)
        await Gate.entered.wait()  # 0 is being handled; the mailbox holds two more
        await system.tell("gate", "g", 1)
        await system.tell("gate", "g", 2)
        assert system.try_tell("gate", "g", "nope") is False
        blocked = asyncio.create_task(system.tell("gate", "g", 3))
        await asyncio.sleep(0.02)
        assert not blocked.done()
        assert system.stats().kinds["gate"].senders_waiting == 1
        assert system.stats().mailbox_depth == 2
        Gate.gate.set()
        await asyncio.wait_for(blocked, 1)
        await settle(system)
    assert Gate.handled == [0, 1, 2, 3]


async def test_waiting_senders_keep_their_order() -> None:
    """Senders blocked on a full mailbox get in in the order they started waiting."""
    Gate.reset()
    async with ActorSystem(mailbox_size=1) as system:
        system.register("gate", Gate)
        await system.tell("gate", "g", "first")
        await Gate.entered.wait()
        await system.tell("gate", "g", "queued")
        waiting = []
        for i in range(5):
            waiting.append(asyncio.create_task(system.tell("gate", "g", i)))
            await asyncio.sleep(0)
        Gate.gate.set()
        await asyncio.gather(*waiting)
        await settle(system)
    assert Gate.handled == ["first", "queued", 0, 1, 2, 3, 4]


async def test_ask_timeout_names_actor_and_message_type() -> None:
    """An unanswered ask raises AskTimeout (a TimeoutError) naming the kind, the key and the message type."""

    @dataclass
    class RequestLease:
        run: str

    Gate.reset()
    async with ActorSystem(ask_timeout=5) as system:
        system.register("gate", Gate)
        with pytest.raises(AskTimeout) as info:
            await system.ask("gate", "daily/2026-11-01", RequestLease("r1"), timeout=0.05)
        Gate.gate.set()
    err = info.value
    assert isinstance(err, TimeoutError)
    assert isinstance(err, WantbuildError)
    assert (err.kind, err.key, err.message_type, err.timeout) == ("gate", "daily/2026-11-01", "RequestLease", 0.05)
    assert str(err) == "ask RequestLease to actor gate 'daily/2026-11-01' timed out after 0.05 s"


async def test_ask_timeout_covers_the_wait_for_mailbox_room() -> None:
    """An ask stuck behind a full mailbox times out too, and the default ask_timeout applies."""
    Gate.reset()
    async with ActorSystem(mailbox_size=1, ask_timeout=0.05) as system:
        system.register("gate", Gate)
        await system.tell("gate", "g", 0)
        await Gate.entered.wait()
        await system.tell("gate", "g", 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(AskTimeout, match=r"ask int to actor gate 'g' timed out after 0\.05 s"):
            await system.ask("gate", "g", 2)
        assert 0.05 <= loop.time() - t0 < 1
        Gate.gate.set()


async def test_timed_out_ask_is_still_handled_and_its_reply_dropped() -> None:
    """A timed-out ask is not withdrawn: the actor handles it later and nothing fails."""
    Gate.reset()
    async with ActorSystem() as system:
        system.register("gate", Gate)
        with pytest.raises(AskTimeout):
            await system.ask("gate", "g", "late", timeout=0.01)
        Gate.gate.set()
        await settle(system)
    assert Gate.handled == ["late"]


async def test_cancelled_asker_does_not_disturb_the_actor() -> None:
    """If the asking task is cancelled, the actor still handles the message and goes on."""
    Gate.reset()
    async with ActorSystem() as system:
        system.register("gate", Gate)
        task = asyncio.create_task(system.ask("gate", "g", "a"))
        await Gate.entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        Gate.gate.set()
        assert await system.ask("gate", "g", "b") == "b"
    assert Gate.handled == ["a", "b"]


async def test_asking_yourself_raises_instead_of_deadlocking() -> None:
    """An actor that asks itself gets AskDeadlock at once; asking another actor from a handler works."""

    class Selfish(Actor[str]):
        kind = "selfish"

        async def handle(self, msg: str) -> Any:
            if msg == "self":
                return await self.system.ask("selfish", self.key, "x")
            return await self.system.ask("rec", self.key, ("via", 1))

    async with ActorSystem() as system:
        system.register("selfish", Selfish)
        system.register("rec", Recorder)
        with pytest.raises(AskDeadlock, match="actor selfish 'k' asked itself str"):
            await system.ask("selfish", "k", "self", timeout=1)
        assert await system.ask("selfish", "k", "other") == ("via", 1)


async def test_tasks_spawned_by_a_handler_may_ask_that_actor() -> None:
    """The self-ask check does not misfire for a task that inherited the actor's context."""
    results: list[Any] = []
    tasks: list[asyncio.Task[None]] = []

    class Spawner(Actor[str]):
        kind = "spawner"

        async def handle(self, msg: str) -> Any:
            if msg == "spawn":
                async def later() -> None:
                    results.append(await self.system.ask("spawner", self.key, "hello"))
                tasks.append(asyncio.create_task(later()))
            return msg

    async with ActorSystem(passivate_after=None) as system:
        system.register("spawner", Spawner)
        await system.tell("spawner", "s", "spawn")
        await settle_until(lambda: bool(tasks))
        await asyncio.wait_for(tasks[0], 1)
    assert results == ["hello"]


async def settle_until(cond: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_ask_many_sends_all_before_waiting_and_keeps_request_order() -> None:
    """ask_many offers every message first (the actors run concurrently) and returns replies in request order."""
    started: set[str] = set()
    all_started = asyncio.Event()

    class Rendezvous(Actor[int]):
        kind = "rv"

        async def handle(self, msg: int) -> int:
            started.add(self.key)
            if len(started) == 5:
                all_started.set()
            await all_started.wait()  # only returns if all five were asked before any reply was awaited
            return msg * 10

    async with ActorSystem(ask_timeout=5) as system:
        system.register("rv", Rendezvous)
        replies = await system.ask_many("rv", [(f"k{i}", i) for i in reversed(range(5))])
    assert replies == [40, 30, 20, 10, 0]


@pytest.mark.usefixtures("counter")
async def test_ask_many_reraises_the_first_error_after_all_replies() -> None:
    """A failing request does not stop the others: all are handled, then the first error is raised."""
    async with ActorSystem(passivate_after=None) as system:
        system.register("counter", Counter)
        await system.stop_actor("counter", "s")
        with pytest.raises(ValueError, match="boom in b"):
            await system.ask_many("counter", [("a", "incr"), ("b", "boom"), ("s", "incr"), ("c", "incr")])
        assert Counter.store == {"a": 1, "c": 1}
        with pytest.raises(ActorStopped, match="counter 's'"):
            await system.ask_many("counter", [("a", "incr"), ("s", "incr")])
        assert Counter.store["a"] == 2


async def test_ask_many_waits_for_room_and_detects_asking_itself() -> None:
    """A full mailbox in ask_many is waited on; an actor asking itself through ask_many gets AskDeadlock."""
    Gate.reset()

    class Fanout(Actor[str]):
        kind = "fanout"

        async def handle(self, msg: str) -> Any:
            return await self.system.ask_many("fanout", [(self.key, "x")])

    async with ActorSystem(mailbox_size=1, ask_timeout=5) as system:
        system.register("gate", Gate)
        system.register("fanout", Fanout)
        await system.tell("gate", "g", 0)
        await Gate.entered.wait()
        await system.tell("gate", "g", 1)  # g's mailbox is now full
        many = asyncio.create_task(system.ask_many("gate", [("g", 2), ("h", 3)]))
        await asyncio.sleep(0.01)
        assert not many.done()
        Gate.gate.set()
        assert await asyncio.wait_for(many, 2) == [2, 3]
        with pytest.raises(AskDeadlock, match="ask_many"):
            await system.ask("fanout", "f", "go")


async def test_refs_reach_the_actor_across_passivation() -> None:
    """An ActorRef stays usable after its actor passivated: the next message activates it again."""
    async with ActorSystem(passivate_after=0) as system:
        system.register("rec", Recorder)
        ref = system.ref("rec", "r")
        assert isinstance(ref, ActorRef)
        assert await ref.ask(("a", 0)) == ("a", 0)
        await settle(system)
        await ref.tell(("b", 1))
        assert ref.try_tell(("c", 2)) is True
        await settle(system)
    assert [m[0] for m in Recorder.log["r"]] == ["a", "b", "c"]
    assert Recorder.starts["r"] >= 2


async def test_unknown_kind_and_closed_system_raise_clear_errors() -> None:
    """An unregistered kind raises UnknownActorKind; a system not entered or closed raises ActorSystemClosed."""
    system = ActorSystem()
    system.register("rec", Recorder)
    with pytest.raises(ActorSystemClosed, match="not running"):
        await system.tell("rec", "a", 1)
    async with system:
        with pytest.raises(UnknownActorKind, match=r"'nope'.*registered: rec"):
            await system.tell("nope", "a", 1)
        with pytest.raises(ValueError, match="already registered"):
            system.register("rec", Recorder)
    with pytest.raises(ActorSystemClosed, match="closing or closed"):
        await system.ask("rec", "a", 1)


# -- supervision -------------------------------------------------------------------------------------------------
class Counter(Actor[str]):
    """Commits its count to ``store`` (the "log"); 'boom' changes the in-memory count, then crashes."""

    kind = "counter"
    store: ClassVar[dict[str, int]] = {}
    starts: ClassVar[int] = 0

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.count = -1

    async def on_start(self) -> None:
        Counter.starts += 1
        self.count = Counter.store.get(self.key, 0)

    async def handle(self, msg: str) -> Any:
        if msg == "incr":
            Counter.store[self.key] = self.count + 1  # commit first, then adopt
            self.count += 1
            return self.count
        if msg == "boom":
            self.count += 1000  # never committed
            raise ValueError(f"boom in {self.key}")
        return self.count


@pytest.fixture
def counter() -> None:
    Counter.store = {}
    Counter.starts = 0


@pytest.mark.usefixtures("counter")
async def test_crash_restarts_from_committed_state_and_the_asker_gets_the_error(logs: list[EventDict]) -> None:
    """A crashing handler: the asker gets its exception, the error is logged, the actor reloads its state."""
    async with ActorSystem(passivate_after=None) as system:
        system.register("counter", Counter)
        assert await system.ask("counter", "c", "incr") == 1
        assert await system.ask("counter", "c", "incr") == 2
        with pytest.raises(ValueError, match="boom in c") as info:
            await system.ask("counter", "c", "boom")
        assert await system.ask("counter", "c", "get") == 2  # the uncommitted +1000 is gone
        assert Counter.starts == 2
        assert system.stats().restarts == 1
    crashed = [e for e in logs if e["event"] == "actor crashed"]
    assert len(crashed) == 1
    entry = crashed[0]
    assert (entry["log_level"], entry["actor_kind"], entry["actor_key"], entry["message_type"], entry["action"]) == (
        "error", "counter", "c", "str", "restart")
    assert entry["exc_info"] is info.value


@pytest.mark.usefixtures("counter")
async def test_crash_on_a_tell_keeps_the_queued_messages(logs: list[EventDict]) -> None:
    """A tell that crashes the actor is logged; the messages queued behind it are still handled."""
    async with ActorSystem(passivate_after=None) as system:
        system.register("counter", Counter)
        system.try_tell("counter", "c", "incr")
        system.try_tell("counter", "c", "boom")
        system.try_tell("counter", "c", "incr")
        assert await system.ask("counter", "c", "get") == 2
    assert [e["message_type"] for e in logs if e["event"] == "actor crashed"] == ["str"]


@pytest.mark.usefixtures("counter")
async def test_reply_errors_go_to_the_asker_without_a_restart(logs: list[EventDict]) -> None:
    """Exceptions listed in reply_errors are answers: the asker gets them, the actor is not restarted."""

    class Strict(Counter):
        reply_errors = (ValueError,)

    async with ActorSystem(passivate_after=None) as system:
        system.register("counter", Strict)
        with pytest.raises(ValueError, match="boom"):
            await system.ask("counter", "c", "boom")
        assert await system.ask("counter", "c", "get") == 1000  # same instance: its state was kept
    assert Counter.starts == 1
    assert not [e for e in logs if e["event"] == "actor crashed"]


@pytest.mark.usefixtures("counter")
async def test_actor_crashing_too_often_is_stopped_and_escalated(logs: list[EventDict]) -> None:
    """More than max_restarts crashes in the window stop the actor and escalate one ActorFailure."""
    failures: list[ActorFailure] = []
    async with ActorSystem(passivate_after=None, max_restarts=2, on_escalate=failures.append) as system:
        system.register("counter", Counter)
        for _ in range(3):
            with pytest.raises(ValueError, match="boom in c"):
                await system.ask("counter", "c", "boom")
        assert len(failures) == 1
        failure = failures[0]
        assert (failure.kind, failure.key, failure.restarts) == ("counter", "c", 2)
        assert isinstance(failure.error, ValueError)
        assert system.is_stopped("counter", "c")
        assert not system.is_active("counter", "c")
        assert await system.ask("counter", "other", "incr") == 1  # other keys are unaffected

        with pytest.raises(ActorStopped, match=r"actor counter 'c' is stopped \(3 crashes") as info:
            await system.ask("counter", "c", "get")
        assert info.value.__cause__ is failure.error
        await system.tell("counter", "c", "incr")  # dropped, with a warning
        assert system.try_tell("counter", "c", "incr") is True
        assert Counter.store.get("c", 0) == 0

        system.revive("counter", "c")
        assert await system.ask("counter", "c", "incr") == 1
        assert system.stats().stopped == 0
    actions = [e["action"] for e in logs if e["event"] == "actor crashed"]
    assert actions == ["restart", "restart", "stop"]
    dropped = [e for e in logs if e["event"] == "tell to a stopped actor dropped"]
    assert len(dropped) == 2
    assert (dropped[0]["log_level"], dropped[0]["actor_key"]) == ("warning", "c")


async def test_stopped_actor_fails_the_asks_queued_behind_the_crash() -> None:
    """When an actor is stopped, asks already waiting in its mailbox raise ActorStopped."""
    gate = asyncio.Event()

    class Fragile(Actor[str]):
        kind = "fragile"

        async def handle(self, msg: str) -> Any:
            await gate.wait()
            raise RuntimeError(msg)

    failures: list[ActorFailure] = []
    async with ActorSystem(max_restarts=0, on_escalate=failures.append) as system:
        system.register("fragile", Fragile)
        first = asyncio.create_task(system.ask("fragile", "f", "one"))
        await asyncio.sleep(0)
        second = asyncio.create_task(system.ask("fragile", "f", "two"))
        await asyncio.sleep(0)
        gate.set()
        with pytest.raises(RuntimeError, match="one"):
            await first
        with pytest.raises(ActorStopped, match="fragile 'f'"):
            await second
    assert [f.restarts for f in failures] == [0]


@pytest.mark.usefixtures("counter")
async def test_crash_history_survives_passivation() -> None:
    """A poison message that crashes a fresh activation every time still reaches the crash limit."""
    failures: list[ActorFailure] = []
    async with ActorSystem(passivate_after=0, max_restarts=2, on_escalate=failures.append) as system:
        system.register("counter", Counter)
        for _ in range(3):
            await system.tell("counter", "c", "boom")
            await settle(system)
        assert [f.key for f in failures] == ["c"]


@pytest.mark.usefixtures("counter")
async def test_async_escalation_and_escalate_to_target() -> None:
    """An async on_escalate is awaited, and a kind's escalate_to actor receives the ActorFailure message."""
    seen: list[Any] = []

    async def on_escalate(failure: ActorFailure) -> None:
        await asyncio.sleep(0)
        seen.append(("callback", failure.key))

    async with ActorSystem(passivate_after=None, max_restarts=0, on_escalate=on_escalate) as system:
        system.register("counter", Counter, escalate_to=("rec", "boss"))
        system.register("rec", Recorder)
        with pytest.raises(ValueError, match="boom in c"):
            await system.ask("counter", "c", "boom")
        await settle_until(lambda: bool(Recorder.log["boss"]) and bool(seen))
    assert seen == [("callback", "c")]
    [failure] = Recorder.log["boss"]
    assert isinstance(failure, ActorFailure)
    assert failure.key == "c"


@pytest.mark.usefixtures("counter")
async def test_unhandled_escalation_fails_the_system() -> None:
    """With no escalation target, a stopped actor's error fails the block like an escaped task error."""
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="boom in c")):
        async with ActorSystem(passivate_after=None, max_restarts=0) as system:
            system.register("counter", Counter)
            with pytest.raises(ValueError, match="boom in c"):
                await system.ask("counter", "c", "boom")
            await asyncio.sleep(10)  # cancelled by the failure
            pytest.fail("the system's failure did not cancel the block")


async def test_failing_on_start_counts_as_a_crash() -> None:
    """An actor whose on_start keeps failing is stopped after max_restarts, and its asker learns it."""

    class Broken(Actor[Any]):
        kind = "broken"

        async def on_start(self) -> None:
            raise OSError("cannot load state")

    failures: list[ActorFailure] = []
    async with ActorSystem(max_restarts=1, on_escalate=failures.append) as system:
        system.register("broken", Broken)
        with pytest.raises(ActorStopped, match="cannot load state"):
            await system.ask("broken", "b", 1)
    assert [(f.key, f.restarts, type(f.error)) for f in failures] == [("b", 1, OSError)]


async def test_stop_actor_drains_then_stops_until_revived() -> None:
    """stop_actor lets the actor finish its queue and on_stop; then it is stopped until revive."""
    Gate.reset()
    async with ActorSystem(passivate_after=None) as system:
        system.register("gate", Gate)
        await system.tell("gate", "g", 1)
        await system.tell("gate", "g", 2)
        stopping = asyncio.create_task(system.stop_actor("gate", "g"))
        await asyncio.sleep(0.01)
        assert not stopping.done()
        with pytest.raises(ActorStopped, match="stopped by stop_actor"):
            await system.ask("gate", "g", 3)
        Gate.gate.set()
        await asyncio.wait_for(stopping, 1)
        assert Gate.handled == [1, 2]
        system.revive("gate", "g")
        assert await system.ask("gate", "g", 4) == 4


# -- passivation -------------------------------------------------------------------------------------------------
async def test_idle_actor_passivates_and_reloads_state_on_its_next_message() -> None:
    """passivate_after=0: the actor ends once its mailbox is empty (on_stop runs); the next message restarts it."""
    async with ActorSystem(passivate_after=0) as system:
        system.register("rec", Recorder)
        await system.ask("rec", "p", ("a", 0))
        await settle(system)
        assert not system.is_active("rec", "p")
        assert (Recorder.starts["p"], Recorder.stops["p"]) == (1, 1)
        await system.ask("rec", "p", ("b", 0))
        assert Recorder.starts["p"] == 2
        stats = system.stats()
    assert (stats.activations, stats.passivations) == (2, 1)


@pytest.mark.usefixtures("counter")
async def test_passivated_actor_reloads_committed_state() -> None:
    """State lives in the store, not the instance: a passivated counter comes back with its committed count."""
    async with ActorSystem(passivate_after=0) as system:
        system.register("counter", Counter)
        assert await system.ask("counter", "c", "incr") == 1
        assert await system.ask("counter", "c", "incr") == 2
        await settle(system)
        starts = Counter.starts
        assert await system.ask("counter", "c", "get") == 2
        assert Counter.starts == starts + 1


async def test_asking_yourself_from_on_stop_raises() -> None:
    """on_stop runs after deregistration; asking its own key from there raises AskDeadlock, not a hang."""
    errors: list[BaseException] = []

    class Stopper(Actor[str]):
        kind = "stopper"

        async def handle(self, msg: str) -> str:
            return msg

        async def on_stop(self) -> None:
            try:
                await self.system.ask("stopper", self.key, "again", timeout=5)
            except AskDeadlock as exc:
                errors.append(exc)

    async with ActorSystem(passivate_after=0) as system:
        system.register("stopper", Stopper)
        await system.tell("stopper", "s", "x")
        await settle_until(lambda: bool(errors))
    assert "while stopping" in str(errors[0])


async def test_passivate_after_delay_and_never() -> None:
    """passivate_after=t keeps an idle actor about t seconds; None keeps it until shutdown."""
    async with ActorSystem(passivate_after=0.3) as system:
        system.register("rec", Recorder)
        system.register("forever", Recorder, passivate_after=None)
        await system.ask("rec", "a", ("x", 0))
        await system.ask("forever", "a", ("x", 0))
        await asyncio.sleep(0.15)
        assert system.is_active("rec", "a")
        await system.ask("rec", "a", ("y", 0))  # activity resets the idle clock
        await asyncio.sleep(0.2)  # 0.35 s after the first message, 0.2 s after the last
        assert system.is_active("rec", "a")
        await asyncio.sleep(0.5)
        assert not system.is_active("rec", "a")
        assert system.is_active("forever", "a")
        assert system.active_count() == 1


async def test_no_message_is_lost_when_tells_race_passivation() -> None:
    """Many senders hammering few keys with passivate_after=0: every message is handled once, in sender order."""
    senders, per_sender, keys = 40, 150, 5
    rng = random.Random(7)
    plan = [[(f"k{rng.randrange(keys)}", rng.randrange(3)) for _ in range(per_sender)] for _ in range(senders)]

    async def sender(s: int, system: ActorSystem) -> None:
        for i, (key, yields) in enumerate(plan[s]):
            msg = (s, i, yields)
            if i % 7 == 0:
                assert await system.ask("rec", key, msg) == msg
            elif i % 5 == 0 and system.try_tell("rec", key, msg):
                pass
            else:
                await system.tell("rec", key, msg)
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)

    async with ActorSystem(passivate_after=0, mailbox_size=4) as system:
        system.register("rec", Recorder)
        await asyncio.gather(*(sender(s, system) for s in range(senders)))
        await settle(system)
        stats = system.stats()
    handled = [m for msgs in Recorder.log.values() for m in msgs]
    assert sorted(handled) == sorted((s, i, y) for s in range(senders) for i, (_, y) in enumerate(plan[s]))
    for key, msgs in Recorder.log.items():
        for s in range(senders):
            mine = [i for (sender_, i, _) in msgs if sender_ == s]
            assert mine == sorted(mine), (key, s)
            assert all(plan[s][i][0] == key for i in mine)
    assert stats.passivations > keys  # the race was actually exercised
    assert stats.activations == stats.passivations


async def test_next_incarnation_waits_for_on_stop_of_the_previous_one() -> None:
    """A message arriving while on_stop runs activates a new instance only after on_stop has finished."""
    events: list[str] = []
    release = asyncio.Event()

    class Slow(Actor[str]):
        kind = "slow"

        async def on_start(self) -> None:
            events.append("start")

        async def handle(self, msg: str) -> None:
            events.append(msg)

        async def on_stop(self) -> None:
            events.append("stop-begin")
            await release.wait()
            events.append("stop-end")

    async with ActorSystem(passivate_after=0) as system:
        system.register("slow", Slow)
        await system.tell("slow", "s", "one")
        await settle_until(lambda: "stop-begin" in events)
        assert not system.is_active("slow", "s")
        await system.tell("slow", "s", "two")
        await asyncio.sleep(0.01)
        assert events == ["start", "one", "stop-begin"]
        release.set()
        await settle_until(lambda: events.count("stop-end") == 2)
    assert events == ["start", "one", "stop-begin", "stop-end", "start", "two", "stop-begin", "stop-end"]


async def test_memory_follows_active_actors_not_keys_seen() -> None:
    """10,000 keys activated and passivated leave nothing behind in the registry."""
    before = other_tasks()
    async with ActorSystem(passivate_after=0) as system:
        system.register("rec", Recorder)
        for i in range(10_000):
            await system.tell("rec", f"key-{i}", i)
        await settle(system)
        stats = system.stats()
        kind = system._kinds["rec"]
        assert (len(kind.actors), len(kind.exiting), len(kind.stopped), len(kind.crash_log)) == (0, 0, 0, 0)
        assert not system._running
        assert other_tasks() == before
    assert (stats.active, stats.activations, stats.passivations) == (0, 10_000, 10_000)
    assert sum(len(v) for v in Recorder.log.values()) == 10_000


async def test_tell_to_many_new_keys_does_not_pile_up_tasks() -> None:
    """A loop telling new keys lets them run as it goes: only a bounded number are alive at once."""
    peak = 0

    class Peek(Actor[int]):
        kind = "peek"

        async def handle(self, msg: int) -> None:
            nonlocal peak
            peak = max(peak, len(asyncio.all_tasks()))

    async with ActorSystem(passivate_after=0) as system:
        system.register("peek", Peek)
        for i in range(2_000):
            await system.tell("peek", str(i), i)
        await settle(system)
    assert peak < 100


# -- shutdown ----------------------------------------------------------------------------------------------------
async def test_leaving_the_block_cancels_and_awaits_every_actor() -> None:
    """On exit, busy and idle actors are cancelled and awaited, queued asks fail, on_stop runs: no task survives."""
    before = other_tasks()
    stopped: list[str] = []
    busy = asyncio.Event()

    class Stubborn(Actor[str]):
        kind = "stubborn"

        async def handle(self, msg: str) -> None:
            busy.set()
            await asyncio.sleep(3600)

        async def on_stop(self) -> None:
            stopped.append(self.key)

    outcomes: list[BaseException | str] = []

    async def asker(system: ActorSystem) -> None:
        try:
            await system.ask("stubborn", "s", "queued", timeout=None)
            outcomes.append("answered")
        except BaseException as exc:
            outcomes.append(exc)

    async with ActorSystem(passivate_after=None) as system:
        system.register("stubborn", Stubborn)
        system.register("rec", Recorder)
        await system.tell("stubborn", "s", "work")
        await busy.wait()
        pending = asyncio.create_task(asker(system))
        await system.ask("rec", "idle", ("x", 0))
        await asyncio.sleep(0)
        assert system.active_count() == 2
    await pending
    assert other_tasks() == before
    assert stopped == ["s"]
    assert Recorder.stops["idle"] == 1
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], ActorSystemClosed)
    assert system.active_count() == 0


async def test_cancelling_the_block_propagates_and_leaves_no_task() -> None:
    """A cancel scope around the system cancels the block and every actor; the cancellation is not swallowed."""
    before = other_tasks()
    Gate.reset()
    with anyio.CancelScope() as scope:
        async with ActorSystem() as system:
            system.register("gate", Gate)
            await system.tell("gate", "a", 1)
            await Gate.entered.wait()
            scope.cancel()
            await system.ask("gate", "b", 2, timeout=None)
            pytest.fail("not cancelled")
    assert scope.cancelled_caught
    assert other_tasks() == before


async def test_task_cancellation_of_the_owner_propagates() -> None:
    """Cancelling the task that owns the system raises CancelledError out of it, after the actors are gone."""
    before = other_tasks()
    Gate.reset()
    inside = asyncio.Event()

    async def owner() -> None:
        async with ActorSystem() as system:
            system.register("gate", Gate)
            await system.tell("gate", "a", 1)
            inside.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(owner())
    await inside.wait()
    await Gate.entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert other_tasks() == before


async def test_an_error_in_the_block_propagates_unwrapped() -> None:
    """An exception raised in the block comes out as itself, not in an ExceptionGroup."""

    async def block() -> None:
        async with ActorSystem() as system:
            system.register("rec", Recorder)
            await system.tell("rec", "a", 1)
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        await block()


async def test_aclose_is_idempotent_and_stats_count_activity() -> None:
    """aclose can be called early and again; stats report activations per kind."""
    async with ActorSystem(passivate_after=None) as system:
        system.register("rec", Recorder, mailbox_size=math.inf)
        for i in range(3):
            await system.tell("rec", f"k{i}", i)
        await settle_until(lambda: sum(len(v) for v in Recorder.log.values()) == 3)
        assert system.stats().kinds["rec"].active == 3
        await system.aclose()
        await system.aclose()
        assert system.active_count() == 0
    assert system.stats().kinds["rec"].activations == 3


# -- property: exactly once, per-sender order --------------------------------------------------------------------
op = st.tuples(st.integers(0, 3), st.integers(0, 2), st.sampled_from(["tell", "ask", "try"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plans=st.lists(st.lists(op, max_size=25), min_size=1, max_size=5),
    passivate_after=st.sampled_from([0.0, 0.001, None]),
    mailbox_size=st.sampled_from([1, 2, 256]),
    seed=st.integers(0, 2**16),
)
def test_random_interleavings_handle_each_message_once_in_sender_order(
    plans: list[list[tuple[int, int, str]]], passivate_after: float | None, mailbox_size: int, seed: int
) -> None:
    """Random tells/asks from concurrent senders to random keys: each handled exactly once, per-sender FIFO."""
    Recorder.reset()
    rng = random.Random(seed)
    sent: list[tuple[int, int, int]] = []

    async def sender(s: int, system: ActorSystem) -> None:
        for i, (key, yields, how) in enumerate(plans[s]):
            msg = (s, i, yields)
            sent.append(msg)
            if how == "ask":
                assert await system.ask("rec", f"k{key}", msg) == msg
            elif how == "try" and system.try_tell("rec", f"k{key}", msg):
                pass
            else:
                await system.tell("rec", f"k{key}", msg)
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)

    async def main() -> None:
        async with asyncio.timeout(5):  # a lost message must fail the example fast, not hang the shrinker
            async with ActorSystem(passivate_after=passivate_after, mailbox_size=mailbox_size,
                                   ask_timeout=1) as system:
                system.register("rec", Recorder)
                await asyncio.gather(*(sender(s, system) for s in range(len(plans))))
                for _ in range(10_000):
                    if sum(len(v) for v in Recorder.log.values()) >= len(sent):
                        break
                    await asyncio.sleep(0)
        assert not other_tasks()

    asyncio.run(main())
    handled = [(key, m) for key, msgs in Recorder.log.items() for m in msgs]
    assert sorted(m for _, m in handled) == sorted(sent)
    for key, msgs in Recorder.log.items():
        assert all(f"k{plans[s][i][0]}" == key for s, i, _ in msgs)
        for s in range(len(plans)):
            mine = [i for (sender_, i, _) in msgs if sender_ == s]
            assert mine == sorted(mine)


@pytest.mark.parametrize("linger", [True, False])
async def test_linger_keeps_an_idle_actor_for_one_loop_round(linger: bool) -> None:
    """With passivate_after=0, a lingering actor is still active when its asker asks again at once (one
    activation for the exchange); without linger it passivates first, and each ask activates it anew."""
    async with ActorSystem(passivate_after=0) as system:
        system.register("rec", Recorder, linger=linger)
        for i in range(5):
            assert await system.ask("rec", "a", i) == i
        await settle(system)
        st = system.stats().kinds["rec"]
        assert Recorder.log["a"] == [0, 1, 2, 3, 4]
        assert st.activations == (1 if linger else 5)
        assert st.passivations == st.activations


def test_a_crash_from_a_lost_writer_lease_is_not_logged_as_an_actor_error(logs: list[EventDict]) -> None:
    """A handler failing with LeaseLost (the runtime is stopping) is logged at info without a traceback; any other
    exception is an error with its traceback."""
    lost = LeaseLost("this writer (epoch 1) lost the lease: stop this runtime")
    note_crash(None, 0.0, 60.0, 3, "jobrun", "r-1", None, lost, None)
    note_crash(None, 0.0, 60.0, 3, "jobrun", "r-2", None, ValueError("boom"), None)
    assert [(e["event"], e["log_level"], e["actor_key"], "exc_info" in e) for e in logs] == [
        ("actor stopped by a lost writer lease", "info", "r-1", False),
        ("actor crashed", "error", "r-2", True)]
