"""The scenario model: the frozen dataclasses a scenario file is parsed into, and the format's vocabulary.

A :class:`Scenario` holds :class:`JobSpec` s (or :class:`GraphSpec` s of them, for several graphs), a timeline of
:class:`Step` s, and :class:`Expectations` (:class:`Bound` s, :class:`WantExpect`, :class:`PartitionExpect`).
The names a file may use (``ACTIONS``, ``BEHAVIOURS``, ``METRICS``, statuses, event types) and the fields of a
step of each action live here too, so that ``_parser`` (which reads them) and ``_dumper`` (which writes them)
both import this module and neither imports the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias, get_args

from actors import CollisionPolicy
from supervisor import Schedule

__all__ = [
    "ACTIONS",
    "BEHAVIOURS",
    "METRICS",
    "Attempt",
    "Bound",
    "Expectations",
    "GraphSpec",
    "JobSpec",
    "PartitionExpect",
    "Scenario",
    "Step",
    "WantExpect",
]

Behaviour: TypeAlias = Literal["succeed", "fail", "missing_deps", "hang", "flaky"]
BEHAVIOURS: Final[tuple[Behaviour, ...]] = get_args(Behaviour)
Action: TypeAlias = Literal["want", "cancel", "taint", "crash", "kill", "fault", "stall"]
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)

METRICS: Final[tuple[str, ...]] = (
    "job_runs",
    "duplicate_work",
    "wasted_run_time",
    "collisions",
    "crashes",
    "latency_p50",
    "latency_p95",
    "latency_max",
    "faults",
    "gave_up",
)
"""Scenario-wide numbers that ``[expect]`` can bound (see :class:`scenarios.Metrics`)."""

WANT_STATUSES: Final[tuple[str, ...]] = (
    "New", "Idle", "Building", "UpstreamBuilding", "Successful", "Failed", "UpstreamFailed", "Canceled", "Expired",
)
PARTITION_STATUSES: Final[tuple[str, ...]] = (
    "Missing", "Building", "Live", "UpstreamWaiting", "Failed", "UpstreamFailed", "Tainted",
)
RUN_STATUSES: Final[tuple[str, ...]] = ("Queued", "Running", "Succeeded", "Failed", "DepMiss", "Canceled", "Lost")
EVENT_TYPES: Final[tuple[str, ...]] = (
    "WantCreated", "WantIdle", "WantBuilding", "WantUpstreamBuilding", "WantSucceeded", "WantFailed",
    "WantUpstreamFailed", "WantCanceled", "WantExpired", "WantSlaMissed",
    "PartitionBuilding", "PartitionLive", "PartitionUpstreamWaiting", "PartitionMissing", "PartitionFailed",
    "PartitionUpstreamFailed", "PartitionTainted", "PartitionRestored",
    "JobRunQueued", "JobRunDeferred", "JobRunStarted", "JobRunAttached", "JobRunSucceeded", "JobRunFailed",
    "JobRunDepMiss", "JobRunCanceled", "JobRunLost", "JobRunResultIgnored",
    "ScheduleCreated", "ScheduleTicked", "SchedulePaused", "ScheduleResumed", "ScheduleDeleted",
    "TaintCreated", "TaintApplied", "TaintCanceled", "TaintRestored",
)
DEFAULT_HORIZON: Final[float] = 30 * 86400.0
DEFAULT_LEASE_TTL: Final[float] = 10.0
"""A ``stall`` step's lease when it sets none: the PostgreSQL log's default (``docs/deploy.md``)."""
INVARIANTS: Final[tuple[str, ...]] = ("I1", "I2", "I3", "I4", "I5", "I6", "I7")


@dataclass(frozen=True)
class Bound:
    """An inclusive range for a number; either end may be open. ``Bound.exactly(n)`` is ``n..n``."""

    min: float | None = None
    max: float | None = None

    @staticmethod
    def exactly(value: float) -> Bound:
        return Bound(value, value)

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min - 1e-9) and (self.max is None or value <= self.max + 1e-9)

    def __str__(self) -> str:
        if self.min is not None and self.min == self.max:
            return f"== {_num(self.min)}"
        parts = []
        if self.min is not None:
            parts.append(f">= {_num(self.min)}")
        if self.max is not None:
            parts.append(f"<= {_num(self.max)}")
        return " and ".join(parts) or "any"

    def to_toml(self) -> str:
        if self.min is not None and self.min == self.max:
            return _num(self.min)
        items = [f"{k} = {_num(v)}" for k, v in (("min", self.min), ("max", self.max)) if v is not None]
        return "{ " + ", ".join(items) + " }"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


@dataclass(frozen=True)
class JobSpec:
    """A simulated job: the graph fields of a real job plus its duration and behaviour.

    ``times`` (fail, hang): only the first ``times`` builds of each partition misbehave; None means every
    build. ``only``: the behaviour applies only to runs that build one of these refs (others succeed).
    ``missing`` (missing_deps): ref templates reported missing while they are not Live.
    ``heartbeat``: the job heartbeats every so many seconds while it works (None: a third of
    ``heartbeat_timeout`` if that is set, else never). ``bad_partitions``: partitions the job reports failed
    (``ctx.fail``) while it builds the rest of their batch, their first ``bad_times`` builds (None: every build).
    """

    name: str
    outputs: tuple[str, ...]
    deps: tuple[str, ...] = ()
    batch: int = 1
    concurrency: int | None = None
    retries: int = 0
    backoff: float = 1.0
    backoff_factor: float = 2.0
    max_backoff: float = 300.0
    timeout: float | None = None
    heartbeat_timeout: float | None = None
    collision_policy: CollisionPolicy | None = None
    duration: float = 60.0
    per_partition: float = 0.0
    behaviour: Behaviour = "succeed"
    times: int | None = None
    rate: float = 0.0
    missing: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    heartbeat: float | None = None
    params: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    """Types of the output patterns' parameters (``{ date = "date" }``), as in a graph file."""
    pool: str | None = None
    script: Mapping[str, tuple[Attempt, ...]] = field(default_factory=dict)
    """Replayed builds (``scenario from-log``): for a ref, how its 1st, 2nd... build goes (the last repeats). A
    run follows the script of its first ref that has one; runs without one follow ``behaviour``."""
    bad_partitions: tuple[str, ...] = ()
    bad_times: int | None = None
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Attempt:
    """One scripted build: how long it takes and how it ends (``succeed``, ``fail``, ``missing_deps`` reporting
    ``missing`` while they are not Live, or ``hang``: it runs until canceled, killed or timed out)."""

    duration: float = 0.0
    outcome: str = "succeed"
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """One timeline entry. Which fields matter depends on ``action`` (see docs/scenarios.md)."""

    at: float
    action: Action
    index: int = 0
    name: str | None = None
    refs: tuple[str, ...] = ()
    ttl: float | None = None
    sla: float | None = None
    comment: str = ""
    want: str | None = None
    taint: str | None = None
    cascade: bool = True
    depth: int | None = None
    reason: str = ""
    downtime: float = 0.0
    after_event: str | None = None
    entity: str | None = None
    ref: str | None = None
    job: str | None = None
    point: str | None = None
    kind: str | None = None
    match: str | None = None
    skip: int = 0
    times: int = 1
    priority: int = 0
    lease_ttl: float = DEFAULT_LEASE_TTL
    """``stall``: the stalled runtime's lease; a standby takes over when it lapses (if the stall lasts longer)."""
    graph: str | None = None
    """The graph the step acts on, in a scenario of several graphs (None in a one-graph scenario)."""
    line: int | None = field(default=None, compare=False)

    def describe(self) -> str:
        """One line for reports: ``t=30 want a [daily/1, daily/2]``."""
        head = f"t={_num(self.at)}"
        if self.after_event:
            head += f", after {self.after_event}" + (f" of {self.entity}" if self.entity else "") + ","
        head += f" {self.action}"
        if self.graph is not None:
            head += f" in {self.graph}"
        if self.action == "want":
            return f"{head} {self.name or '#' + str(self.index)} [{', '.join(self.refs)}]"
        if self.action == "cancel":
            return f"{head} {self.want if self.want is not None else 'taint ' + str(self.taint)}"
        if self.action == "taint":
            reach = "" if self.cascade and self.depth is None else (
                " (no cascade)" if not self.cascade else f" (depth {self.depth})")
            return f"{head} {self.name + ' ' if self.name else ''}[{', '.join(self.refs)}]{reach}"
        if self.action == "crash":
            return f"{head}, down {_num(self.downtime)} s" if self.downtime else head
        if self.action == "stall":
            return f"{head} for {_num(self.downtime)} s (lease {_num(self.lease_ttl)} s)"
        if self.action == "fault":
            what = " ".join(x for x in (self.kind, self.match) if x) or "anything"
            count = f"{self.times}x" + (f" after {self.skip}" if self.skip else "")
            return f"{head} {self.point} on {what} ({count})"
        return f"{head} {self.ref or 'job ' + str(self.job)}"


# The fields of a step of each action: what the parser accepts and the dumper writes, in this order.
_TRIGGER = ("after_event", "entity")
_STEP_FIELDS: Mapping[str, tuple[str, ...]] = {
    "want": ("at", "action", "name", "refs", "ttl", "sla", "comment", "priority", *_TRIGGER),
    "cancel": ("at", "action", "want", "taint", "reason", *_TRIGGER),
    "taint": ("at", "action", "name", "refs", "reason", "cascade", "depth", *_TRIGGER),
    "crash": ("at", "action", "downtime", *_TRIGGER),
    "stall": ("at", "action", "downtime", "lease_ttl", *_TRIGGER),
    "kill": ("at", "action", "ref", "job", "reason", *_TRIGGER),
    "fault": ("at", "action", "point", "kind", "match", "skip", "times", *_TRIGGER),
}
_STEP_FIELDS = {action: (*fields, "graph") for action, fields in _STEP_FIELDS.items()}


@dataclass(frozen=True)
class WantExpect:
    status: str | None = None
    latency: Bound | None = None


@dataclass(frozen=True)
class PartitionExpect:
    status: str | None = None
    generation: Bound | None = None


@dataclass(frozen=True)
class Expectations:
    """What must hold at the end of the scenario (and, for the invariants, throughout)."""

    invariants: bool = True
    all_terminal: bool = True
    metrics: Mapping[str, Bound] = field(default_factory=dict)
    runs: Mapping[str, Bound] = field(default_factory=dict)
    events: Mapping[str, Bound] = field(default_factory=dict)
    wants: Mapping[str, WantExpect] = field(default_factory=dict)
    partitions: Mapping[str, PartitionExpect] = field(default_factory=dict)


@dataclass(frozen=True)
class GraphSpec:
    """One graph of a scenario of several graphs: its jobs and the graphs it reads from (``GRAPH:REF`` refs)."""

    name: str
    jobs: tuple[JobSpec, ...]
    upstream: tuple[str, ...] = ()
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Scenario:
    name: str
    jobs: tuple[JobSpec, ...]
    timeline: tuple[Step, ...] = ()
    description: str = ""
    seed: int = 0
    policy: CollisionPolicy = "shrink"
    horizon: float = DEFAULT_HORIZON
    expect: Expectations = field(default_factory=Expectations)
    explore_params: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    pools: Mapping[str, int] = field(default_factory=dict)
    schedules: tuple[Schedule, ...] = ()
    """``[schedule.NAME]`` tables: the schedules of a graph file (``supervisor.Schedule``)."""
    graphs: tuple[GraphSpec, ...] = ()
    """``[graphs.NAME]`` tables: several graphs, each with its own log and runtime (``jobs`` is then empty)."""
    upstream: tuple[str, ...] = ()
    """The graphs this one reads from: set on one graph of several (:meth:`graph_scenario`), never parsed."""
    path: str | None = field(default=None, compare=False)

    def job(self, name: str) -> JobSpec:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    def with_policy(self, policy: CollisionPolicy) -> Scenario:
        return dataclasses.replace(self, policy=policy)

    def with_seed(self, seed: int) -> Scenario:
        return dataclasses.replace(self, seed=seed)

    def ordered_timeline(self) -> list[Step]:
        """Steps by time, file order for equal times."""
        return sorted(self.timeline, key=lambda s: (s.at, s.index))

    def graph_scenario(self, name: str) -> Scenario:
        """Graph ``name`` of a scenario of several graphs, as a one-graph scenario: its jobs, its upstream graphs,
        its steps (their ``index`` kept), and only the scenario-wide expectations (the rest is checked on the
        whole)."""
        spec = next((g for g in self.graphs if g.name == name), None)
        if spec is None:
            raise KeyError(name)
        return dataclasses.replace(
            self, name=name, jobs=spec.jobs, upstream=spec.upstream, graphs=(), explore_params={},
            timeline=tuple(s for s in self.timeline if s.graph == name),
            expect=Expectations(invariants=self.expect.invariants, all_terminal=self.expect.all_terminal),
        )

