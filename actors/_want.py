"""The Want: a request for partitions, and its state machine.

``New -> Idle | Building | Successful``; ``Idle -> Building``; ``Building -> UpstreamBuilding | Successful |
Failed | Idle``; ``UpstreamBuilding -> Idle | UpstreamFailed``; any non-terminal ``-> Canceled | Expired``.
``WantSlaMissed`` records a missed SLA without changing the status.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Literal, TypeAlias

import msgspec

from eventlog import Event, event

from ._machine import IllegalTransition, Machine, sources
from ._partition_set import PartitionSet

Anchor: TypeAlias = Literal["created", "data_time"]
"""What a want's ``ttl`` and ``sla`` count from: its creation (default) or its data's time."""


class WantStatus(StrEnum):
    NEW = "New"
    IDLE = "Idle"
    BUILDING = "Building"
    UPSTREAM_BUILDING = "UpstreamBuilding"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    UPSTREAM_FAILED = "UpstreamFailed"
    CANCELED = "Canceled"
    EXPIRED = "Expired"


W = WantStatus


@event("WantCreated", 1)
class WantCreated(Event, frozen=True):
    refs: tuple[str, ...]
    source: str = "api"
    ttl: float | None = None
    sla: float | None = None
    parent_want_ids: tuple[str, ...] = ()
    root_want_id: str | None = None
    comment: str = ""
    command_id: int | None = None
    # Issue 16 (all optional, so older logs read unchanged):
    parts: dict[str, Any] | None = None
    """A partition set (``PartitionSet.to_json()``) in place of ``refs``: a range want stores its set, not its
    expansion."""
    data_time: float | None = None
    """The time of the data the want is for (seconds since the epoch, UTC), if it has one."""
    anchor: Anchor = "created"
    """What ``ttl`` and ``sla`` count from: ``created`` or ``data_time``."""
    priority: int = 0
    """Higher is planned first."""
    schedule: str | None = None
    """The schedule whose tick created this want, and the tick (``ScheduleTicked.at``)."""
    tick: float | None = None


@event("WantIdle", 1)
class WantIdle(Event, frozen=True):
    reason: str = ""


@event("WantBuilding", 1)
class WantBuilding(Event, frozen=True):
    reason: str = ""


@event("WantUpstreamBuilding", 1)
class WantUpstreamBuilding(Event, frozen=True):
    waiting_on: tuple[str, ...] = ()
    reason: str = ""


@event("WantSucceeded", 1)
class WantSucceeded(Event, frozen=True):
    pass


@event("WantFailed", 1)
class WantFailed(Event, frozen=True):
    failed_refs: tuple[str, ...] = ()
    reason: str = ""


@event("WantUpstreamFailed", 1)
class WantUpstreamFailed(Event, frozen=True):
    failed_refs: tuple[str, ...] = ()
    reason: str = ""


@event("WantCanceled", 1)
class WantCanceled(Event, frozen=True):
    reason: str = ""


@event("WantExpired", 1)
class WantExpired(Event, frozen=True):
    reason: str = ""


@event("WantSlaMissed", 1)
class WantSlaMissed(Event, frozen=True):
    sla: float = 0.0


_ACTIVE = (W.NEW, W.IDLE, W.BUILDING, W.UPSTREAM_BUILDING)

WANT = Machine(
    kind="want",
    statuses=WantStatus,
    initial=W.NEW,
    terminal=frozenset({W.SUCCESSFUL, W.FAILED, W.UPSTREAM_FAILED, W.CANCELED, W.EXPIRED}),
    table={
        "WantCreated": (sources(None), W.NEW),
        "WantIdle": (sources(W.NEW, W.BUILDING, W.UPSTREAM_BUILDING), W.IDLE),
        "WantBuilding": (sources(W.NEW, W.IDLE), W.BUILDING),
        "WantUpstreamBuilding": (sources(W.BUILDING), W.UPSTREAM_BUILDING),
        "WantSucceeded": (sources(W.NEW, W.BUILDING), W.SUCCESSFUL),
        "WantFailed": (sources(W.NEW, W.IDLE, W.BUILDING, W.UPSTREAM_BUILDING), W.FAILED),
        "WantUpstreamFailed": (sources(W.UPSTREAM_BUILDING), W.UPSTREAM_FAILED),
        "WantCanceled": (sources(*_ACTIVE), W.CANCELED),
        "WantExpired": (sources(*_ACTIVE), W.EXPIRED),
        "WantSlaMissed": (sources(*_ACTIVE), None),
    },
)

STATUS_EVENT: dict[WantStatus, type[Event]] = {
    W.IDLE: WantIdle,
    W.BUILDING: WantBuilding,
    W.UPSTREAM_BUILDING: WantUpstreamBuilding,
    W.SUCCESSFUL: WantSucceeded,
    W.FAILED: WantFailed,
    W.UPSTREAM_FAILED: WantUpstreamFailed,
    W.CANCELED: WantCanceled,
    W.EXPIRED: WantExpired,
}
"""The event that moves a want into each status (used to walk a legal path to a target status)."""


class WantState(msgspec.Struct, frozen=True, gc=False):
    """A want's committed state."""

    want_id: str
    status: WantStatus
    refs: Sequence[str]
    """The refs wanted: a tuple, or a :class:`~actors.PartitionSet` (a range want) that counts, tests
    membership and iterates without expanding."""
    source: str
    created_at: float
    updated_at: float
    entity_seq: int
    ttl: float | None = None
    sla: float | None = None
    parent_want_ids: tuple[str, ...] = ()
    root_want_id: str = ""
    comment: str = ""
    command_id: int | None = None
    reason: str = ""
    sla_missed: bool = False
    data_time: float | None = None
    anchor: Anchor = "created"
    priority: int = 0
    schedule: str | None = None
    tick: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in WANT.terminal

    @property
    def anchored_at(self) -> float:
        """Where ``ttl`` and ``sla`` count from: ``data_time`` when anchored there (and known), else creation."""
        if self.anchor == "data_time" and self.data_time is not None:
            return self.data_time
        return self.created_at

    @property
    def is_set(self) -> bool:
        """Whether the want names a partition set (planned lazily) rather than a list of refs."""
        return isinstance(self.refs, PartitionSet)


def apply_want(state: WantState | None, ev: Event, want_id: str, at: float, entity_seq: int) -> WantState:
    """The pure transition function of a want."""
    target = WANT.target(want_id, None if state is None else state.status, ev)
    if state is None:
        assert isinstance(ev, WantCreated)
        refs: Sequence[str] = ev.refs
        if ev.parts is not None:
            try:
                refs = PartitionSet.from_json(ev.parts)
            except (KeyError, TypeError, ValueError) as e:
                raise IllegalTransition("want", want_id, None, ev.event_name,
                                        f"its partition set is broken: {e}") from e
        if not refs:
            raise IllegalTransition("want", want_id, None, ev.event_name, "a want needs at least one ref")
        return WantState(
            want_id=want_id, status=W.NEW, refs=refs, source=ev.source, created_at=at, updated_at=at,
            entity_seq=entity_seq, ttl=ev.ttl, sla=ev.sla, parent_want_ids=ev.parent_want_ids,
            root_want_id=ev.root_want_id or want_id, comment=ev.comment, command_id=ev.command_id,
            data_time=ev.data_time, anchor=ev.anchor, priority=ev.priority, schedule=ev.schedule, tick=ev.tick,
        )
    if isinstance(ev, WantSlaMissed):
        return msgspec.structs.replace(state, sla_missed=True, updated_at=at, entity_seq=entity_seq)
    reason = getattr(ev, "reason", "")
    assert target is not None
    return msgspec.structs.replace(state, status=target, reason=reason, updated_at=at, entity_seq=entity_seq)
