"""Entity actors: write-ahead persistence of one entity's transitions, then hooks.

:meth:`EntityActor.persist` is the only way an entity changes: the transition is checked by the pure
transition function (an illegal one raises :class:`IllegalTransition` and nothing is written), appended to
the event log and committed, and only then adopted as the actor's state, written to the World, and announced
to the hooks (the supervisor's notifications first, then user hooks). A crash before the commit loses a
transition nobody was told about; a crash after it loses nothing.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from eventlog import CommitError, Event, Log, Record, get_logger

from ._actor import Actor, ActorSystem
from ._clock import Clock
from ._faults import Faults
from ._world import APPLY, EntityState, World

log = get_logger("wantbuild.actors")

St = TypeVar("St", bound=EntityState)

Hook = Callable[[Record, Any, Any], Awaitable[None] | None]
"""``hook(record, old_state, new_state)``: called after a committed transition."""


class Hooks:
    """Post-commit hooks: system hooks (the supervisor's notifications) run first, then user hooks.

    A failing user hook is logged and never affects the state or the other hooks. A failing system hook crashes
    the actor that committed (after its commit): the supervisor then reconciles from the World.
    """

    def __init__(self, faults: Faults | None = None) -> None:
        self._system: list[Hook] = []
        self._user: list[Hook] = []
        self.faults = faults

    def add_system(self, hook: Hook) -> None:
        self._system.append(hook)

    def add(self, hook: Hook) -> Callable[[], None]:
        """Register a user hook; returns a function that removes it."""
        self._user.append(hook)

        def remove() -> None:
            if hook in self._user:
                self._user.remove(hook)

        return remove

    async def run(self, rec: Record, old: Any, new: Any) -> None:
        faults = self.faults
        if faults is not None:
            faults.check("notify", rec.entity_kind, rec.entity_id, rec.event.event_name)
        for hook in self._system:
            res = hook(rec, old, new)
            if res is not None and inspect.isawaitable(res):
                await res
        for hook in self._user:
            try:
                if faults is not None:
                    faults.check("hook", rec.entity_kind, rec.entity_id, rec.event.event_name)
                res = hook(rec, old, new)
                if res is not None and inspect.isawaitable(res):
                    await res
            except Exception as e:
                # "event" is structlog's positional message: the event's name goes in as event_type.
                log.error("user hook failed", hook=getattr(hook, "__qualname__", repr(hook)), seq=rec.seq,
                          entity_kind=rec.entity_kind, entity_id=rec.entity_id,
                          event_type=rec.event.event_name, exc_info=e)


@dataclass
class EntityEnv:
    """What every entity actor shares: the log, the World, the actor system, hooks, the clock."""

    log: Log
    world: World
    system: ActorSystem
    hooks: Hooks
    clock: Clock
    faults: Faults | None = None
    leaving_live: Counter[str] = field(default_factory=Counter)
    """Partitions about to leave Live (being tainted by a taint's wave, leased by a refresh run): a want does not
    become Successful on them meanwhile (see ``WantActor``), whoever commits first."""


class EntityActor(Actor[Any], Generic[St]):
    """An actor whose state is one entity's committed state, changed only through :meth:`persist`."""

    kind: ClassVar[str]

    def __init__(self, key: str, env: EntityEnv) -> None:
        super().__init__(key)
        self.env = env
        # The committed state, read when the instance is made (every activation and every restart after a
        # crash makes a new one); not in on_start, which would cost a coroutine per activation.
        self.state: St | None = env.world.get(self.kind, key)  # type: ignore[assignment]

    async def persist(self, event: Event, command: tuple[int, Mapping[str, Any]] | None = None) -> St:
        """Check, append and commit one transition, then adopt it and run the hooks.

        ``command``: the inbox command this transition is the effect of, completed with the given result in the
        same transaction (exactly once: a crash leaves both or neither)."""
        old = self.state
        seq = 0 if old is None else old.entity_seq
        at = self.env.clock.now()
        # The transition is computed first (an illegal one raises IllegalTransition and nothing is written),
        # adopted only once its event is committed.
        new: St = APPLY[self.kind](old, event, self.key, at, seq + 1)
        if self.env.faults is not None and self.env.faults.hit("commit", self.kind, self.key, event.event_name):
            raise CommitError(f"injected fault: the batch holding {event.event_name} of {self.kind} {self.key} "
                              f"did not commit")
        rec = await self.env.log.append(self.kind, self.key, seq, event, at, command=command)
        self.state = new
        self.env.world.put(self.kind, self.key, new, rec.seq, rec.at)
        await self.env.hooks.run(rec, old, new)
        return new


class Committed(msgspec.Struct, frozen=True):
    """To the supervisor: a transition was committed (sent by the runtime's system hook)."""

    record: Record
    old: Any
    new: Any
