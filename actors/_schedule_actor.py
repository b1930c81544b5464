"""The Schedule actor: records a schedule's changes and ticks (see :mod:`actors._schedule`).

A :class:`~actors._kernel.Behavior` of the actor kernel, like the Want, Partition and JobRun actors: every handler
is one step that persists at most one event and replies with the state it leads to (after its commit)."""

from __future__ import annotations

from typing import Any

import msgspec

from ._kernel import Behavior, Ctx
from ._machine import IllegalTransition
from ._schedule import (
    S,
    ScheduleCreated,
    ScheduleDeleted,
    SchedulePaused,
    ScheduleResumed,
    ScheduleState,
    ScheduleTicked,
)


# --- messages and the actor -------------------------------------------------------------------------------
class CreateSchedule(msgspec.Struct, frozen=True):
    event: ScheduleCreated
    command: tuple[int, dict[str, Any]] | None = None
    """The inbox command this completes, in the same transaction (see ``Ctx.persist``)."""


class RecordTick(msgspec.Struct, frozen=True):
    """Record ``tick`` unless it is not after the last one (then reply with the state unchanged: idempotent)."""

    tick: float
    want_id: str | None
    skipped: int = 0


class ChangeSchedule(msgspec.Struct, frozen=True):
    how: str  # pause | resume | delete
    reason: str = ""
    command: tuple[int, dict[str, Any]] | None = None


class ScheduleActor(Behavior):
    """A schedule: created once (idempotent), ticked forward only, paused, resumed, deleted for good."""

    def receive(self, ctx: Ctx, msg: Any) -> Any:
        st: ScheduleState | None = ctx.state
        if isinstance(msg, RecordTick):
            if st is None or st.status is not S.ACTIVE or msg.tick <= st.last_tick:
                return st
            return ctx.persist(ScheduleTicked(tick=msg.tick, want_id=msg.want_id, skipped=msg.skipped))
        if isinstance(msg, CreateSchedule):
            if st is not None and not st.terminal:  # idempotent re-delivery
                return st
            if st is not None:
                raise IllegalTransition("schedule", ctx.key, st.status, "ScheduleCreated",
                                        "a deleted schedule's name cannot be used again; pick another name")
            return ctx.persist(msg.event, msg.command)
        if isinstance(msg, ChangeSchedule):
            if st is None or st.terminal:
                return st
            if msg.how == "pause":
                return st if st.status is S.PAUSED else ctx.persist(SchedulePaused(reason=msg.reason), msg.command)
            if msg.how == "resume":
                return st if st.status is S.ACTIVE else ctx.persist(ScheduleResumed(reason=msg.reason), msg.command)
            if msg.how == "delete":
                return ctx.persist(ScheduleDeleted(reason=msg.reason), msg.command)
            raise ValueError(f"schedule {ctx.key}: unknown change {msg.how!r}")
        if type(msg).__name__ == "GetState":
            return st
        raise TypeError(f"schedule {ctx.key}: unexpected message {msg!r}")
