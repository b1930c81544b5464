"""The Schedule actor: records a schedule's changes and ticks (see :mod:`actors._schedule`)."""

from __future__ import annotations

from typing import Any

import msgspec

from ._entity import EntityActor
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
    """The inbox command this completes, in the same transaction (see ``EntityActor.persist``)."""


class RecordTick(msgspec.Struct, frozen=True):
    """Record ``tick`` unless it is not after the last one (then reply with the state unchanged: idempotent)."""

    tick: float
    want_id: str | None
    skipped: int = 0


class ChangeSchedule(msgspec.Struct, frozen=True):
    how: str  # pause | resume | delete
    reason: str = ""
    command: tuple[int, dict[str, Any]] | None = None


class ScheduleActor(EntityActor[ScheduleState]):
    kind = "schedule"

    async def handle(self, msg: Any) -> Any:
        st = self.state
        if isinstance(msg, CreateSchedule):
            if st is not None and not st.terminal:  # idempotent re-delivery
                return st
            if st is not None:
                raise IllegalTransition("schedule", self.key, st.status, "ScheduleCreated",
                                        "a deleted schedule's name cannot be used again; pick another name")
            return await self.persist(msg.event, msg.command)
        if isinstance(msg, RecordTick):
            if st is None or st.status is not S.ACTIVE or msg.tick <= st.last_tick:
                return st
            return await self.persist(ScheduleTicked(tick=msg.tick, want_id=msg.want_id, skipped=msg.skipped))
        if isinstance(msg, ChangeSchedule):
            if st is None or st.terminal:
                return st
            if msg.how == "pause":
                return st if st.status is S.PAUSED else await self.persist(SchedulePaused(reason=msg.reason),
                                                                           msg.command)
            if msg.how == "resume":
                return st if st.status is S.ACTIVE else await self.persist(ScheduleResumed(reason=msg.reason),
                                                                           msg.command)
            if msg.how == "delete":
                return await self.persist(ScheduleDeleted(reason=msg.reason), msg.command)
            raise ValueError(f"schedule {self.key}: unknown change {msg.how!r}")
        if type(msg).__name__ == "GetState":
            return st
        raise TypeError(f"schedule {self.key}: unexpected message {msg!r}")
