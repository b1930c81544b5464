"""The Taint: one "do not read" decision, an entity with its own events, so it can be listed, followed and undone.

``TaintCreated`` (status ``Applying``) names the partitions it taints at their generations (the generations
that must not be read), the reason, and how far it reaches downstream: ``cascade`` (default) taints every Live
partition built, transitively through the lineage, from a tainted generation, up to ``depth`` levels below
(None: no limit). ``TaintApplied`` records that a wave of the cascade is done (``Applying -> Applied``; later
waves, for runs that read a tainted generation before the taint and finished after it, are facts on
``Applied``). ``TaintCanceled`` ends it; ``TaintRestored`` then records how many partitions went back to Live
(those not rebuilt meanwhile and reached by no other active taint).

The partitions themselves record which taint tainted them (``PartitionTainted.taint_id``); the Taint entity
holds the decision and the counts, never 100,000 refs.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from eventlog import Event, event

from ._machine import Machine, sources


class TaintStatus(StrEnum):
    APPLYING = "Applying"
    APPLIED = "Applied"
    CANCELED = "Canceled"


T = TaintStatus


@event("TaintCreated", 1)
class TaintCreated(Event, frozen=True, omit_defaults=True):
    refs: tuple[str, ...]
    generations: tuple[int, ...]
    """The generation of each ref (``refs`` order) that must not be read: the one Live when it was tainted."""
    reason: str
    cascade: bool = True
    depth: int | None = None
    """How many lineage levels below ``refs`` the cascade reaches (None: all); ignored without ``cascade``."""
    command_id: int | None = None
    """The inbox command that created it (a command redelivered after a crash finds it and does nothing)."""


@event("TaintApplied", 1)
class TaintApplied(Event, frozen=True):
    """A wave of the taint is done: ``partitions`` within its reach are Tainted by it now (recorded again only
    when that number changes: a later wave, or a rebuild)."""

    partitions: int


@event("TaintCanceled", 1)
class TaintCanceled(Event, frozen=True, omit_defaults=True):
    reason: str
    command_id: int | None = None


@event("TaintRestored", 1)
class TaintRestored(Event, frozen=True):
    """After a cancel: ``partitions`` went back to Live (not rebuilt meanwhile, reached by no other taint)."""

    partitions: int


TAINT = Machine(
    kind="taint",
    statuses=TaintStatus,
    initial=T.APPLYING,
    terminal=frozenset({T.CANCELED}),
    table={
        "TaintCreated": (sources(None), T.APPLYING),
        "TaintApplied": (sources(T.APPLYING, T.APPLIED), T.APPLIED),
        "TaintCanceled": (sources(T.APPLYING, T.APPLIED), T.CANCELED),
        "TaintRestored": (sources(T.CANCELED), None),
    },
)


class TaintState(msgspec.Struct, frozen=True, gc=False):
    """A taint's committed state."""

    taint_id: str
    status: TaintStatus
    refs: tuple[str, ...]
    generations: tuple[int, ...]
    reason: str
    cascade: bool
    depth: int | None
    created_at: float
    updated_at: float
    entity_seq: int
    command_id: int | None = None
    tainted: int = 0
    """Partitions Tainted by it within its reach at its last wave (``TaintApplied.partitions``)."""
    waves: int = 0
    canceled_reason: str = ""
    cancel_command_id: int | None = None
    restored: int | None = None
    """After ``TaintRestored``: how many partitions went back to Live (None: not yet done)."""

    @property
    def terminal(self) -> bool:
        return self.status is T.CANCELED

    @property
    def active(self) -> bool:
        return self.status is not T.CANCELED

    def roots(self) -> dict[str, int]:
        """``ref -> generation`` of the partitions the taint names."""
        return dict(zip(self.refs, self.generations, strict=False))

    def reaches(self, depth: int) -> bool:
        """Whether the cascade goes on below a partition ``depth`` levels under the roots."""
        return self.cascade and (self.depth is None or depth < self.depth)


def apply_taint(state: TaintState | None, ev: Event, taint_id: str, at: float, entity_seq: int) -> TaintState:
    """The pure transition function of a taint."""
    target = TAINT.target(taint_id, None if state is None else state.status, ev)
    if state is None:
        assert isinstance(ev, TaintCreated)
        return TaintState(taint_id=taint_id, status=T.APPLYING, refs=ev.refs, generations=ev.generations,
                          reason=ev.reason, cascade=ev.cascade, depth=ev.depth, created_at=at, updated_at=at,
                          entity_seq=entity_seq, command_id=ev.command_id)
    rep = msgspec.structs.replace
    if isinstance(ev, TaintApplied):
        return rep(state, status=target, updated_at=at, entity_seq=entity_seq, tainted=ev.partitions,
                   waves=state.waves + 1)
    if isinstance(ev, TaintCanceled):
        return rep(state, status=target, updated_at=at, entity_seq=entity_seq, canceled_reason=ev.reason,
                   cancel_command_id=ev.command_id)
    assert isinstance(ev, TaintRestored)
    return rep(state, updated_at=at, entity_seq=entity_seq, restored=(state.restored or 0) + ev.partitions)
