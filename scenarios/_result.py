"""What a scenario run produces: the recorded events, runs, wants, crashes, metrics and checks.

Everything here is plain data derived deterministically from the event log and the simulation, so two runs
of the same scenario and seed give equal results (``wall_seconds`` is the one exception and is kept out of
:meth:`ScenarioResult.to_dict` unless asked for). The reports render these objects; they never look at a
runtime.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Check",
    "CrashRow",
    "EventRow",
    "Metrics",
    "RunSpan",
    "ScenarioResult",
    "ViolationRow",
    "WantRow",
    "percentile",
]


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class EventRow:
    """One committed event, reduced to what determinism and the timeline need."""

    seq: int
    type: str
    kind: str
    entity_id: str
    entity_seq: int
    at: float

    def key(self) -> tuple[str, str, str, int, float]:
        """``(type, kind, id, entity_seq, at)``: what must be identical between two runs."""
        return (self.type, self.kind, self.entity_id, self.entity_seq, self.at)


@dataclass(frozen=True)
class RunSpan:
    """One job run from the log: when it was queued, ran and ended, and what it built or skipped."""

    job_run_id: str
    job: str
    status: str
    attempt: int
    planned: tuple[str, ...]
    partitions: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    """``(ref, holder)`` refused to this run: dropped at its start (shrink), or, for a run canceled before it
    started, held by other runs at the cancel."""
    deferrals: int
    queued_at: float
    started_at: float | None
    ended_at: float | None
    reason: str = ""
    retry_of: str | None = None
    worked_until: float | None = None
    """When the job's work really stopped: ``ended_at``, or the crash time for a run marked Lost."""


@dataclass(frozen=True)
class WantRow:
    want_id: str
    name: str | None
    refs: tuple[str, ...]
    source: str
    status: str
    created_at: float
    ended_at: float | None
    reason: str = ""
    sla_missed: bool = False

    @property
    def latency(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.created_at


@dataclass(frozen=True)
class CrashRow:
    at: float
    trigger: str
    last_seq: int
    lost_runs: tuple[str, ...] = ()
    requeued: tuple[str, ...] = ()
    i3_ok: bool = True
    i3_diff: tuple[str, ...] = ()
    downtime: float = 0.0


@dataclass(frozen=True)
class ViolationRow:
    invariant: str
    seq: int | None
    message: str
    entities: tuple[str, ...] = ()
    at: float | None = None

    def __str__(self) -> str:
        where = f"seq {self.seq}: " if self.seq is not None else ""
        ents = f" [{', '.join(self.entities)}]" if self.entities else ""
        return f"{self.invariant} {where}{self.message}{ents}"


@dataclass(frozen=True)
class Check:
    """One expectation and whether it held."""

    name: str
    ok: bool
    expected: str
    actual: str


@dataclass(frozen=True)
class Metrics:
    job_runs: int = 0
    duplicate_work: int = 0
    wasted_run_time: float = 0.0
    collisions: int = 0
    crashes: int = 0
    latency_p50: float | None = None
    latency_p95: float | None = None
    latency_max: float | None = None
    runs_by_status: dict[str, int] = field(default_factory=dict)
    events_by_type: dict[str, int] = field(default_factory=dict)
    deferrals: int = 0
    skipped: int = 0
    derived_wants: int = 0
    executions: int = 0
    faults: int = 0
    """Injected faults that fired (fault steps)."""
    gave_up: int = 0
    """Actors the runtime gave up on after repeated crashes (what depended on them ended with the reason)."""

    def value(self, name: str) -> float | None:
        v = getattr(self, name)
        return None if v is None else float(v)


@dataclass
class ScenarioResult:
    name: str
    description: str
    policy: str
    seed: int
    ok: bool
    end_time: float
    events: list[EventRow]
    runs: list[RunSpan]
    wants: list[WantRow]
    partitions: dict[str, str]
    crashes: list[CrashRow]
    violations: list[ViolationRow]
    checks: list[Check]
    metrics: Metrics
    timeline: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: str = ""
    """Why the run stopped early (an invariant violation, the horizon), or empty."""
    wall_seconds: float = 0.0

    @property
    def invariants_ok(self) -> bool:
        return not self.violations

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def event_keys(self) -> list[tuple[str, str, str, int, float]]:
        return [e.key() for e in self.events]

    def to_dict(self, *, events: bool = True, timing: bool = False) -> dict[str, Any]:
        """A JSON-ready dict. Deterministic unless ``timing`` adds the wall-clock duration."""
        d: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "policy": self.policy,
            "seed": self.seed,
            "ok": self.ok,
            "stopped": self.stopped,
            "end_time": self.end_time,
            "invariants_ok": self.invariants_ok,
            "metrics": asdict(self.metrics),
            "checks": [asdict(c) for c in self.checks],
            "violations": [asdict(v) for v in self.violations],
            "crashes": [asdict(c) for c in self.crashes],
            "wants": [{**asdict(w), "latency": w.latency} for w in self.wants],
            "runs": [asdict(r) for r in self.runs],
            "partitions": dict(sorted(self.partitions.items())),
            "timeline": list(self.timeline),
            "notes": list(self.notes),
        }
        if events:
            d["events"] = [asdict(e) for e in self.events]
        if timing:
            d["wall_seconds"] = round(self.wall_seconds, 3)
        return d


def runs_by_partition(runs: Iterable[RunSpan]) -> dict[str, list[RunSpan]]:
    """Runs that planned each partition, in run id order."""
    out: dict[str, list[RunSpan]] = {}
    for r in sorted(runs, key=lambda r: r.job_run_id):
        for ref in dict.fromkeys((*r.planned, *r.partitions)):
            out.setdefault(ref, []).append(r)
    return out
