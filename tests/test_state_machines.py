"""The Want, Partition and JobRun state machines, tested against a plain model of the semantics."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors import (
    JOB_RUN,
    PARTITION,
    WANT,
    IllegalTransition,
    JobRunCanceled,
    JobRunDeferred,
    JobRunDepMiss,
    JobRunFailed,
    JobRunLost,
    JobRunQueued,
    JobRunResultIgnored,
    JobRunStarted,
    JobRunStatus,
    JobRunSucceeded,
    PartitionBuilding,
    PartitionFailed,
    PartitionLive,
    PartitionMissing,
    PartitionRestored,
    PartitionState,
    PartitionStatus,
    PartitionTainted,
    PartitionUpstreamFailed,
    PartitionUpstreamWaiting,
    TaintApplied,
    TaintCanceled,
    TaintCreated,
    TaintRestored,
    TaintStatus,
    WantBuilding,
    WantCanceled,
    WantCreated,
    WantExpired,
    WantFailed,
    WantIdle,
    WantSlaMissed,
    WantStatus,
    WantSucceeded,
    WantUpstreamBuilding,
    WantUpstreamFailed,
    apply_job_run,
    apply_partition,
    apply_taint,
    apply_want,
)
from eventlog import Event

# The semantics, written out independently of the tables in actors/ (the model the machines must match).
# The semantics' transitions, plus one documented extension (docs/decisions.md, "Recovery after faults"): any
# non-terminal want may end Failed, when wantbuild gives up on what it depends on (or on the want itself).
WANT_MODEL: dict[str | None, set[str]] = {
    None: {"New"},
    "New": {"Idle", "Building", "Successful", "Failed", "Canceled", "Expired"},
    "Idle": {"Building", "Failed", "Canceled", "Expired"},
    "Building": {"UpstreamBuilding", "Successful", "Failed", "Idle", "Canceled", "Expired"},
    "UpstreamBuilding": {"Idle", "UpstreamFailed", "Failed", "Canceled", "Expired"},
}
PARTITION_MODEL: dict[str, set[str]] = {
    "Missing": {"Building"},
    "Building": {"Live", "UpstreamWaiting", "Missing", "Failed", "Tainted"},
    "UpstreamWaiting": {"Missing", "UpstreamFailed"},
    # Three extensions (docs/decisions.md, "Lineage, taints..."): a canceled taint restores a partition it tainted
    # that was not rebuilt (Tainted -> Live), a run refreshing a stale partition leases it Live, and a run that
    # read a generation tainted while it ran ends its build Tainted.
    "Live": {"Tainted", "Building"},
    "Tainted": {"Building", "Live"},
    "Failed": {"Building"},
    "UpstreamFailed": {"Building"},
}
RUN_MODEL: dict[str | None, set[str]] = {
    None: {"Queued"},
    "Queued": {"Running", "Canceled", "Lost"},
    "Running": {"Succeeded", "Failed", "DepMiss", "Canceled", "Lost"},
}

WANT_EVENTS: dict[str, Any] = {
    "WantCreated": lambda: WantCreated(refs=("daily/1",)),
    "WantIdle": lambda: WantIdle(),
    "WantBuilding": lambda: WantBuilding(),
    "WantUpstreamBuilding": lambda: WantUpstreamBuilding(waiting_on=("raw/1",)),
    "WantSucceeded": lambda: WantSucceeded(),
    "WantFailed": lambda: WantFailed(failed_refs=("daily/1",)),
    "WantUpstreamFailed": lambda: WantUpstreamFailed(),
    "WantCanceled": lambda: WantCanceled(reason="x"),
    "WantExpired": lambda: WantExpired(),
    "WantSlaMissed": lambda: WantSlaMissed(sla=1.0),
}
WANT_TARGET = {"WantCreated": "New", "WantIdle": "Idle", "WantBuilding": "Building",
               "WantUpstreamBuilding": "UpstreamBuilding", "WantSucceeded": "Successful", "WantFailed": "Failed",
               "WantUpstreamFailed": "UpstreamFailed", "WantCanceled": "Canceled", "WantExpired": "Expired"}


class WantMachine(RuleBasedStateMachine):
    """Random want events: legal ones applied as the model says, illegal ones rejected, nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.state: Any = None
        self.seq = 0

    @rule(name=st.sampled_from(sorted(WANT_EVENTS)))
    def send(self, name: str) -> None:
        ev = WANT_EVENTS[name]()
        before = None if self.state is None else str(self.state.status)
        target = before if name == "WantSlaMissed" else WANT_TARGET[name]
        legal = before in WANT_MODEL and target in WANT_MODEL[before]
        if name == "WantCreated":
            legal = before is None
        if name == "WantSlaMissed":
            legal = before in ("New", "Idle", "Building", "UpstreamBuilding")
        if legal:
            self.state = apply_want(self.state, ev, "w-1", float(self.seq), self.seq + 1)
            self.seq += 1
            assert str(self.state.status) == target
            assert self.state.entity_seq == self.seq
        else:
            with pytest.raises(IllegalTransition) as info:
                apply_want(self.state, ev, "w-1", 0.0, self.seq + 1)
            assert "want 'w-1'" in str(info.value)
            assert name in str(info.value)

    @invariant()
    def status_in_closed_set(self) -> None:
        assert self.state is None or self.state.status in set(WantStatus)


PARTITION_EVENTS: dict[str, Any] = {
    "PartitionBuilding": lambda run: PartitionBuilding(job_run_id=run),
    "PartitionLive": lambda run: PartitionLive(job_run_id=run),
    "PartitionUpstreamWaiting": lambda run: PartitionUpstreamWaiting(job_run_id=run),
    "PartitionMissing": lambda run: PartitionMissing(reason="lost", job_run_id=run),
    "PartitionFailed": lambda run: PartitionFailed(job_run_id=run, reason="boom"),
    "PartitionUpstreamFailed": lambda run: PartitionUpstreamFailed(reason="upstream"),
    "PartitionTainted": lambda run: PartitionTainted(reason="bad data", taint_id="t-1", depth=1, via="raw/1@1",
                                                     job_run_id=run),
    "PartitionRestored": lambda run: PartitionRestored(taint_id="t-1"),
}
PARTITION_TARGET = {k: k.removeprefix("Partition") for k in PARTITION_EVENTS}
PARTITION_TARGET["PartitionRestored"] = "Live"


class PartitionMachine(RuleBasedStateMachine):
    """Random partition events from random runs: the lease guard holds and generations only grow."""

    def __init__(self) -> None:
        super().__init__()
        self.state: Any = None
        self.seq = 0
        self.generation = 0

    @rule(name=st.sampled_from(sorted(PARTITION_EVENTS)), run=st.sampled_from(["r-1", "r-2"]))
    def send(self, name: str, run: str) -> None:
        ev = PARTITION_EVENTS[name](run)
        before = "Missing" if self.state is None else str(self.state.status)
        target = PARTITION_TARGET[name]
        legal = target in PARTITION_MODEL[before]
        if target == "Live":  # two events lead to Live: a build from Building, a restore from Tainted
            legal = before == ("Tainted" if name == "PartitionRestored" else "Building")
        holder = None if self.state is None else self.state.lease
        if legal and before == "Building" and getattr(ev, "job_run_id", None) not in (None, holder):
            legal = False  # only the lease holder settles a build
        if legal:
            self.state = apply_partition(self.state, ev, "daily/1", 0.0, self.seq + 1)
            self.seq += 1
            assert str(self.state.status) == target
            if target == "Building":
                self.generation += 1
                assert self.state.lease == run
            assert self.state.generation == self.generation
            assert (self.state.tainted_by is not None) == (target == "Tainted")
            if before == "Building" and target == "Tainted":
                assert self.state.built_by == run
        else:
            with pytest.raises(IllegalTransition) as info:
                apply_partition(self.state, ev, "daily/1", 0.0, self.seq + 1)
            assert "partition 'daily/1'" in str(info.value)

    @invariant()
    def lease_only_while_building(self) -> None:
        if self.state is not None:
            assert (self.state.lease is not None) == (self.state.status is PartitionStatus.BUILDING)


RUN_EVENTS: dict[str, Any] = {
    "JobRunQueued": lambda: JobRunQueued(job="daily", partitions=("daily/1", "daily/2")),
    "JobRunDeferred": lambda: JobRunDeferred(refused=(("daily/1", "r-9"),)),
    "JobRunStarted": lambda: JobRunStarted(partitions=("daily/1",), skipped=(("daily/2", "r-9"),)),
    "JobRunSucceeded": lambda: JobRunSucceeded(read={"raw/1": 2}, into={"raw/1": ("daily/1",)},
                                               failed={"daily/2": "bad day"}),
    "JobRunFailed": lambda: JobRunFailed(reason="exit code 3", exit_code=3),
    "JobRunDepMiss": lambda: JobRunDepMiss(missing=("raw/1",)),
    "JobRunCanceled": lambda: JobRunCanceled(reason="no want needs it"),
    "JobRunLost": lambda: JobRunLost(),
    "JobRunResultIgnored": lambda: JobRunResultIgnored(status="succeeded"),
}
RUN_TARGET = {"JobRunQueued": "Queued", "JobRunDeferred": "Queued", "JobRunStarted": "Running",
              "JobRunSucceeded": "Succeeded", "JobRunFailed": "Failed", "JobRunDepMiss": "DepMiss",
              "JobRunCanceled": "Canceled", "JobRunLost": "Lost", "JobRunResultIgnored": None}


class JobRunMachine(RuleBasedStateMachine):
    """Random job-run events: legal ones applied, terminal statuses final."""

    def __init__(self) -> None:
        super().__init__()
        self.state: Any = None
        self.seq = 0

    @rule(name=st.sampled_from(sorted(RUN_EVENTS)))
    def send(self, name: str) -> None:
        ev = RUN_EVENTS[name]()
        before = None if self.state is None else str(self.state.status)
        target = RUN_TARGET[name]
        legal = before in RUN_MODEL and target in RUN_MODEL[before]
        if name == "JobRunQueued":
            legal = before is None
        if name == "JobRunDeferred":
            legal = before == "Queued"
        if name == "JobRunResultIgnored":  # a late result: recorded once the run has ended, never before
            legal = before in ("Succeeded", "Failed", "DepMiss", "Canceled", "Lost")
        if legal:
            self.state = apply_job_run(self.state, ev, "r-1", 0.0, self.seq + 1)
            self.seq += 1
            assert str(self.state.status) == (before if target is None else target)
        else:
            with pytest.raises(IllegalTransition):
                apply_job_run(self.state, ev, "r-1", 0.0, self.seq + 1)

    @invariant()
    def status_in_closed_set(self) -> None:
        assert self.state is None or self.state.status in set(JobRunStatus)


TAINT_MODEL: dict[str | None, set[str]] = {
    None: {"Applying"},
    "Applying": {"Applied", "Canceled"},
    "Applied": {"Applied", "Canceled"},
}
TAINT_EVENTS: dict[str, Any] = {
    "TaintCreated": lambda: TaintCreated(refs=("raw/1",), generations=(1,), reason="bad rows"),
    "TaintApplied": lambda: TaintApplied(partitions=3),
    "TaintCanceled": lambda: TaintCanceled(reason="false alarm"),
    "TaintRestored": lambda: TaintRestored(partitions=2),
}
TAINT_TARGET = {"TaintCreated": "Applying", "TaintApplied": "Applied", "TaintCanceled": "Canceled"}


class TaintMachine(RuleBasedStateMachine):
    """Random taint events: created once, applied in waves, canceled for good, restored only once canceled."""

    def __init__(self) -> None:
        super().__init__()
        self.state: Any = None
        self.seq = 0
        self.applied = 0

    @rule(name=st.sampled_from(sorted(TAINT_EVENTS)))
    def send(self, name: str) -> None:
        ev = TAINT_EVENTS[name]()
        before = None if self.state is None else str(self.state.status)
        if name == "TaintRestored":
            legal, target = before == "Canceled", before
        else:
            target = TAINT_TARGET[name]
            legal = before in TAINT_MODEL and target in TAINT_MODEL[before]
        if legal:
            self.state = apply_taint(self.state, ev, "t-1", 0.0, self.seq + 1)
            self.seq += 1
            self.applied = 3 if name == "TaintApplied" else self.applied
            assert str(self.state.status) == target
            assert self.state.tainted == self.applied
        else:
            with pytest.raises(IllegalTransition, match="taint 't-1'"):
                apply_taint(self.state, ev, "t-1", 0.0, self.seq + 1)

    @invariant()
    def active_until_canceled(self) -> None:
        if self.state is not None:
            assert self.state.active == (self.state.status is not TaintStatus.CANCELED)
            assert self.state.restored is None or self.state.status is TaintStatus.CANCELED


TestWantMachine = WantMachine.TestCase
TestPartitionMachine = PartitionMachine.TestCase
TestJobRunMachine = JobRunMachine.TestCase
TestTaintMachine = TaintMachine.TestCase
for case in (TestWantMachine, TestPartitionMachine, TestJobRunMachine, TestTaintMachine):
    case.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


@pytest.mark.parametrize(
    ("machine", "model"),
    [pytest.param(WANT, WANT_MODEL, id="want"), pytest.param(JOB_RUN, RUN_MODEL, id="job_run")],
)
def test_tables_match_the_semantics(machine: Any, model: dict[Any, set[str]]) -> None:
    """Every status change the table allows is one the semantics allow, and vice versa."""
    from_table: dict[Any, set[str]] = {}
    for src, target, _ in machine.edges():
        if target is None:  # records a fact without a status change (WantSlaMissed, JobRunDeferred)
            continue
        from_table.setdefault(None if src is None else str(src), set()).add(str(target))
    assert from_table == model


def test_partition_table_matches_the_semantics() -> None:
    """The partition table is exactly the semantics' transitions."""
    from_table: dict[str, set[str]] = {}
    for src, target, _ in PARTITION.edges():
        from_table.setdefault(str(src), set()).add(str(target))
    assert from_table == PARTITION_MODEL


def test_a_remembered_path_is_not_shared_with_its_caller() -> None:
    """Machine.path remembers its answers; a caller changing the list it got does not change the next answer."""
    first = WANT.path(WantStatus.IDLE, WantStatus.SUCCESSFUL)
    assert first
    assert first[-1][1] == WantStatus.SUCCESSFUL
    expected = list(first)
    first.clear()
    assert WANT.path(WantStatus.IDLE, WantStatus.SUCCESSFUL) == expected


@given(src=st.sampled_from([s for s in WantStatus if s not in WANT.terminal]), dst=st.sampled_from(list(WantStatus)))
def test_want_paths_are_legal(src: WantStatus, dst: WantStatus) -> None:
    """A path found between two want statuses is a sequence of legal transitions ending at the goal."""
    try:
        path = WANT.path(src, dst)
    except ValueError:
        assert dst == WantStatus.NEW  # only creation leads to New
        return
    cur = src
    for name, nxt in path:
        sources, target = WANT.table[name]
        assert cur in sources
        assert target == nxt
        cur = nxt
    assert cur == dst


def test_illegal_transition_names_entity_state_and_event() -> None:
    """The error says which entity, in which state, refused which event."""
    with pytest.raises(IllegalTransition, match=r"partition 'daily/1' is Missing; PartitionLive is not allowed"):
        apply_partition(None, PartitionLive(job_run_id="r-1"), "daily/1", 0.0, 1)


def test_lease_guard_names_the_holder() -> None:
    """Only the run holding the lease may settle the build; the error names the holder."""
    st0 = apply_partition(None, PartitionBuilding(job_run_id="r-1"), "daily/1", 0.0, 1)
    with pytest.raises(IllegalTransition, match="held by r-1, not r-2"):
        apply_partition(st0, PartitionLive(job_run_id="r-2"), "daily/1", 0.0, 2)


def test_a_first_lease_from_no_state_equals_the_general_path() -> None:
    """A partition's first Building (the short path for no state) is the state the general path makes from an
    explicit Missing state, field for field."""
    ev = PartitionBuilding(job_run_id="r-1")
    short = apply_partition(None, ev, "daily/1", 12.5, 1)
    general = apply_partition(PartitionState(ref="daily/1"), ev, "daily/1", 12.5, 1)
    assert msgspec.structs.asdict(short) == msgspec.structs.asdict(general)
    assert short.generation == 1
    assert short.lease == "r-1"


@pytest.mark.parametrize("machine", [pytest.param(m, id=m.kind) for m in (WANT, PARTITION, JOB_RUN)])
def test_mermaid_lists_every_transition(machine: Any) -> None:
    """The generated diagram has one line per table edge and marks terminal statuses."""
    text = machine.mermaid()
    assert text.startswith("stateDiagram-v2\n")
    for src, target, name in machine.edges():
        a = "[*]" if src is None else str(src)
        b = a if target is None else str(target)
        assert f"    {a} --> {b}: {name}\n" in text
    for s in machine.terminal:
        assert f"    {s} --> [*]\n" in text


def test_events_round_trip_through_the_registry() -> None:
    """Every event type encodes and decodes to an equal record."""
    from eventlog import REGISTRY

    samples: list[Event] = [f() for f in WANT_EVENTS.values()]
    samples += [f("r-1") for f in PARTITION_EVENTS.values()]
    samples += [f() for f in RUN_EVENTS.values()]
    samples += [f() for f in TAINT_EVENTS.values()]
    for ev in samples:
        cls = REGISTRY.lookup(ev.event_name, ev.event_version)
        assert REGISTRY.decode(cls, REGISTRY.encode(ev)) == ev
