"""The Partition: one ref's build state, the authority over its build lease.

``Missing -> Building`` (lease granted to a job run); ``Building -> Live | UpstreamWaiting | Missing | Failed``;
``UpstreamWaiting -> Missing | UpstreamFailed``; ``Live -> Tainted``; ``Tainted | Failed | UpstreamFailed ->
Building`` (a fresh attempt, new generation); ``Tainted -> Live`` (``PartitionRestored``: the taint was
canceled before the partition was rebuilt); ``Live -> Building`` only for a run refreshing stale partitions
(``JobRunQueued.refresh``); ``Building -> Tainted`` for a run that succeeded having read a generation tainted
while it ran (its output is built, and must not be read). A partition never mentioned in the log is
``Missing`` at generation 0: it has no creation event.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from eventlog import Event, event

from ._machine import IllegalTransition, Machine, sources


class PartitionStatus(StrEnum):
    MISSING = "Missing"
    BUILDING = "Building"
    LIVE = "Live"
    UPSTREAM_WAITING = "UpstreamWaiting"
    FAILED = "Failed"
    UPSTREAM_FAILED = "UpstreamFailed"
    TAINTED = "Tainted"


P = PartitionStatus
LEASABLE = frozenset({P.MISSING, P.TAINTED, P.FAILED, P.UPSTREAM_FAILED})
"""Statuses in which a partition grants a build lease."""


@event("PartitionBuilding", 1)
class PartitionBuilding(Event, frozen=True):
    job_run_id: str


@event("PartitionLive", 1)
class PartitionLive(Event, frozen=True):
    job_run_id: str


@event("PartitionUpstreamWaiting", 1)
class PartitionUpstreamWaiting(Event, frozen=True):
    """The run reported missing upstream partitions; they are listed once, in its ``JobRunDepMiss``."""

    job_run_id: str


@event("PartitionMissing", 1)
class PartitionMissing(Event, frozen=True):
    reason: str
    job_run_id: str | None = None


@event("PartitionFailed", 1)
class PartitionFailed(Event, frozen=True):
    job_run_id: str
    reason: str
    final: bool = True


@event("PartitionUpstreamFailed", 1)
class PartitionUpstreamFailed(Event, frozen=True):
    reason: str
    upstream: tuple[str, ...] = ()


@event("PartitionTainted", 1)
class PartitionTainted(Event, frozen=True, omit_defaults=True):
    """"Do not read". ``taint_id``: the Taint entity that did it (None in logs from before taints were
    entities); ``depth``: 0 for a partition the taint named, n for one n lineage levels below; ``via``: the
    input (``ref@generation``) the taint reached it through; ``job_run_id``: set when the partition is tainted as
    its build ends (``Building -> Tainted``): the Succeeded run that built it from a tainted generation."""

    reason: str
    taint_id: str | None = None
    depth: int = 0
    via: str | None = None
    job_run_id: str | None = None


@event("PartitionRestored", 1)
class PartitionRestored(Event, frozen=True):
    """Tainted -> Live again: the taint that tainted it was canceled before the partition was rebuilt, and no
    other active taint reaches it. The generation (and the run that built it) are unchanged."""

    taint_id: str
    reason: str = ""


PARTITION = Machine(
    kind="partition",
    statuses=PartitionStatus,
    initial=P.MISSING,
    terminal=frozenset(),
    table={
        "PartitionBuilding": (sources(*LEASABLE, P.LIVE), P.BUILDING),
        "PartitionLive": (sources(P.BUILDING), P.LIVE),
        "PartitionUpstreamWaiting": (sources(P.BUILDING), P.UPSTREAM_WAITING),
        "PartitionMissing": (sources(P.BUILDING, P.UPSTREAM_WAITING), P.MISSING),
        "PartitionFailed": (sources(P.BUILDING), P.FAILED),
        "PartitionUpstreamFailed": (sources(P.UPSTREAM_WAITING), P.UPSTREAM_FAILED),
        "PartitionTainted": (sources(P.LIVE, P.BUILDING), P.TAINTED),
        "PartitionRestored": (sources(P.TAINTED), P.LIVE),
    },
)


class PartitionState(msgspec.Struct, frozen=True, gc=False):
    """A partition's committed state. ``lease``: the run building it (Building only)."""

    ref: str
    status: PartitionStatus = P.MISSING
    generation: int = 0
    entity_seq: int = 0
    updated_at: float = 0.0
    lease: str | None = None
    built_by: str | None = None
    waiting_run: str | None = None
    """UpstreamWaiting: the DepMiss run whose missing refs this partition waits on (``World.needs``)."""
    reason: str = ""
    final: bool = False
    tainted_by: str | None = None
    """Tainted: the Taint entity that tainted it (None for a taint written before taints were entities)."""
    taint_depth: int = 0
    """Tainted: how many lineage levels below the taint's named partitions this one is (0: named)."""

    @staticmethod
    def missing(ref: str) -> PartitionState:
        return PartitionState(ref=ref)


_TABLE = PARTITION.table
_BUILDING = P.BUILDING
# Enum members bound once: ``P.BUILDING`` is a lookup through the enum's metaclass (~85 ns on Python 3.11), paid
# in this function for every partition transition, live or replayed.


def apply_partition(
    state: PartitionState | None, ev: Event, ref: str, at: float, entity_seq: int
) -> PartitionState:
    """The pure transition function of a partition, with the lease guard."""
    if state is None and type(ev) is PartitionBuilding:  # a partition's first event, nearly always: Missing ->
        # Building, made at once (the general path below gives the same state for ~0.2 us more)
        return PartitionState(ref, _BUILDING, 1, entity_seq, at, ev.job_run_id)
    cur = state if state is not None else PartitionState(ref=ref)
    status = cur.status
    name = ev.event_name
    entry = _TABLE.get(name)  # PARTITION.target, inlined: this runs for every partition transition
    if entry is None or status not in entry[0]:
        raise IllegalTransition("partition", ref, status, name)
    target = entry[1]
    run = getattr(ev, "job_run_id", None)
    if status is _BUILDING and run is not None and run != cur.lease:
        raise IllegalTransition(
            "partition", ref, cur.status, ev.event_name, f"the lease is held by {cur.lease}, not {run}"
        )
    rep = msgspec.structs.replace
    if isinstance(ev, PartitionBuilding):
        return rep(cur, status=target, entity_seq=entity_seq, updated_at=at, lease=ev.job_run_id,
                   generation=cur.generation + 1, waiting_run=None, reason="", final=False, tainted_by=None,
                   taint_depth=0)
    if isinstance(ev, PartitionLive):
        return rep(cur, status=target, entity_seq=entity_seq, updated_at=at, lease=None, built_by=ev.job_run_id,
                   reason="")
    if isinstance(ev, PartitionUpstreamWaiting):
        return rep(cur, status=target, entity_seq=entity_seq, updated_at=at, lease=None,
                   waiting_run=ev.job_run_id, reason="")
    if isinstance(ev, PartitionMissing):
        return rep(cur, status=target, entity_seq=entity_seq, updated_at=at, lease=None, waiting_run=None,
                   reason=ev.reason)
    if isinstance(ev, PartitionFailed):
        return rep(cur, status=target, entity_seq=entity_seq, updated_at=at, lease=None, reason=ev.reason,
                   final=ev.final)
    if isinstance(ev, PartitionTainted):
        if status is _BUILDING:  # tainted as its build ends: built by the lease holder (the guard above)
            if ev.job_run_id is None:
                raise IllegalTransition("partition", ref, status, ev.event_name,
                                        "only the run holding the lease can end its build tainted")
            return rep(cur, status=target, entity_seq=entity_seq, updated_at=at, reason=ev.reason, lease=None,
                       built_by=ev.job_run_id, tainted_by=ev.taint_id, taint_depth=ev.depth)
        return rep(cur, status=target, entity_seq=entity_seq, updated_at=at, reason=ev.reason,
                   tainted_by=ev.taint_id, taint_depth=ev.depth)
    if isinstance(ev, PartitionRestored):
        return rep(cur, status=target, entity_seq=entity_seq, updated_at=at, reason="", tainted_by=None,
                   taint_depth=0)
    if isinstance(ev, PartitionUpstreamFailed):
        return rep(cur, status=target, entity_seq=entity_seq, updated_at=at, reason=ev.reason)
    raise IllegalTransition("partition", ref, status, ev.event_name)  # pragma: no cover - table covers it
