"""The Schedule entity: a recurring want, its state machine and its actor (issue 16).

``ScheduleCreated`` -> Active; ``ScheduleTicked`` records a tick (Active, no status change); ``SchedulePaused``
Active -> Paused; ``ScheduleResumed`` Paused -> Active; ``ScheduleDeleted`` Active | Paused -> Deleted (terminal).

**Exactly once.** A tick is recorded (``ScheduleTicked``, with the id of the want it creates) before its want is
created, and the want's id is derived from the tick (:func:`tick_want_id`), so creating it is idempotent: after a
crash between the two, the runtime sees a recorded tick whose want is missing and creates it (behaviour follows
persisted state), and a tick is never recorded twice (the actor refuses a tick not after the last one). The tick
arithmetic (cron, timezone, catch-up policy) is pure and lives in ``supervisor._schedules``.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

import msgspec

from eventlog import Event, event

from ._machine import IllegalTransition, Machine, sources


class ScheduleStatus(StrEnum):
    ACTIVE = "Active"
    PAUSED = "Paused"
    DELETED = "Deleted"


S = ScheduleStatus


@event("ScheduleCreated", 1)
class ScheduleCreated(Event, frozen=True):
    cron: str
    want: str
    timezone: str = "UTC"
    catch_up: str = "all"
    priority: int = 0
    ttl: float | None = None
    sla: float | None = None
    grace: float = 60.0
    comment: str = ""
    source: str = "api"


@event("ScheduleTicked", 1)
class ScheduleTicked(Event, frozen=True):
    tick: float
    want_id: str | None = None
    """The want this tick creates (None: the tick was skipped by the catch-up policy)."""
    skipped: int = 0
    """Due ticks before this one that the catch-up policy skipped."""


@event("SchedulePaused", 1)
class SchedulePaused(Event, frozen=True):
    reason: str = ""


@event("ScheduleResumed", 1)
class ScheduleResumed(Event, frozen=True):
    reason: str = ""


@event("ScheduleDeleted", 1)
class ScheduleDeleted(Event, frozen=True):
    reason: str = ""


SCHEDULE = Machine(
    kind="schedule",
    statuses=ScheduleStatus,
    initial=S.ACTIVE,
    terminal=frozenset({S.DELETED}),
    table={
        "ScheduleCreated": (sources(None), S.ACTIVE),
        "ScheduleTicked": (sources(S.ACTIVE), None),
        "SchedulePaused": (sources(S.ACTIVE), S.PAUSED),
        "ScheduleResumed": (sources(S.PAUSED), S.ACTIVE),
        "ScheduleDeleted": (sources(S.ACTIVE, S.PAUSED), S.DELETED),
    },
)


class ScheduleState(msgspec.Struct, frozen=True, gc=False):
    """A schedule's committed state. ``last_tick``: the last tick recorded (its creation time before any)."""

    name: str
    status: ScheduleStatus
    spec: ScheduleCreated
    created_at: float
    updated_at: float
    entity_seq: int
    last_tick: float
    last_want_id: str | None = None
    ticks: int = 0
    skipped: int = 0
    resumed_at: float | None = None
    reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.status is S.DELETED


def apply_schedule(state: ScheduleState | None, ev: Event, name: str, at: float, entity_seq: int) -> ScheduleState:
    """The pure transition function of a schedule."""
    target = SCHEDULE.target(name, None if state is None else state.status, ev)
    if state is None:
        assert isinstance(ev, ScheduleCreated)
        return ScheduleState(name=name, status=S.ACTIVE, spec=ev, created_at=at, updated_at=at,
                             entity_seq=entity_seq, last_tick=at)
    if isinstance(ev, ScheduleTicked):
        if ev.tick <= state.last_tick:
            raise IllegalTransition("schedule", name, state.status, ev.event_name,
                                    f"tick {ev.tick} is not after the last one ({state.last_tick})")
        return msgspec.structs.replace(state, last_tick=ev.tick, last_want_id=ev.want_id,
                                       ticks=state.ticks + (ev.want_id is not None),
                                       skipped=state.skipped + ev.skipped + (ev.want_id is None),
                                       updated_at=at, entity_seq=entity_seq)
    assert target is not None
    extra: dict[str, Any] = {}
    if isinstance(ev, ScheduleResumed):
        extra["resumed_at"] = at
    return msgspec.structs.replace(state, status=target, reason=getattr(ev, "reason", ""), updated_at=at,
                                   entity_seq=entity_seq, **extra)


def tick_want_id(schedule: str, tick: float) -> str:
    """The id of the want a schedule's tick creates: ``w-s-<schedule>-<UTC time of the tick>``, unique per tick, so
    creating it twice is a no-op (exactly once across crashes)."""
    stamp = dt.datetime.fromtimestamp(tick, dt.UTC).strftime("%Y%m%dT%H%M%S")
    frac = round((tick % 1) * 1000)
    return f"w-s-{schedule}-{stamp}" + (f".{frac:03d}" if frac else "")
