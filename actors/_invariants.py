"""Invariants I1-I6, checked by folding the log (tests, the scenario runner and ``replay --verify``).

- I1 exclusive build: a run starts only with every partition it builds leased to it, and no partition is
  claimed by two non-terminal runs.
- I2 legal history: every event applies (the fold raises :class:`ReplayError` otherwise) and entity_seq has
  no gaps.
- I3 replay fidelity and I4 durability compare a live runtime with its log; they are checked where a live
  runtime exists (:func:`check_replay_fidelity`, the scenario runner's crash points).
- I5 progress: at the end every want is terminal (checked when ``expect_all_terminal``).
- I6 consistency: a want is Successful only when all its partitions are Live; a partition becomes Live only
  through a Succeeded run that held its lease (and did not report it failed), so each generation is built by
  exactly one Succeeded run.
- I7 lineage: no Live partition was built from a generation that is Tainted now, within that taint's reach,
  unless it is stale (a newer generation of an input is Live). Tainting cascades through many commits, so I7
  holds where the runtime is quiescent (:meth:`InvariantChecker.check_lineage` with ``strict=True``, as the
  scenario runner and the tests check it); at the end of a log whose runtime may have died mid-cascade
  (``replay --verify``), a partition is only reported when the taint had already recorded that wave as applied
  (``TaintApplied``) after the partition became Live.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from eventlog import Log, Record

from ._jobrun import JobRunStarted, JobRunStatus
from ._lineage import tainted_reads
from ._partition import PartitionLive, PartitionRestored, PartitionStatus
from ._taint import TaintApplied, TaintStatus
from ._want import WantSucceeded
from ._world import ReplayError, World, rebuild


@dataclass(frozen=True)
class Violation:
    invariant: str
    seq: int | None
    message: str
    entities: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"seq {self.seq}: " if self.seq is not None else ""
        return f"{self.invariant} {where}{self.message}"


class InvariantChecker:
    """Feed records in seq order with :meth:`feed`; collect :attr:`violations`."""

    def __init__(self, world: World | None = None, stop_at_first: bool = False) -> None:
        self.world = world if world is not None else World()
        self.violations: list[Violation] = []
        self.stop_at_first = stop_at_first
        self._claims: dict[str, str] = {}
        self._live_seq: dict[str, int] = {}  # partition -> seq at which it last became Live (I7)
        self._applied_seq: dict[str, int] = {}  # taint -> seq of its last TaintApplied (I7)

    def _add(self, v: Violation) -> None:
        self.violations.append(v)

    def feed(self, rec: Record) -> None:
        w = self.world
        ev = rec.event
        # checks that look at the state *before* the record
        if isinstance(ev, JobRunStarted):
            for ref in ev.partitions:
                part = w.partition(ref)
                if part.status is not PartitionStatus.BUILDING or part.lease != rec.entity_id:
                    self._add(Violation("I1", rec.seq, f"run {rec.entity_id} started on {ref} without its lease "
                                        f"(partition is {part.status}, lease {part.lease})", (rec.entity_id, ref)))
                other = self._claims.get(ref)
                if other is not None and other != rec.entity_id:
                    orun = w.runs.get(other)
                    if orun is not None and not orun.terminal:
                        self._add(Violation("I1", rec.seq, f"{ref} is built by two non-terminal runs: {other} and "
                                            f"{rec.entity_id}", (other, rec.entity_id, ref)))
                self._claims[ref] = rec.entity_id
        elif isinstance(ev, PartitionLive):
            self._live_seq[rec.entity_id] = rec.seq
            run = w.runs.get(ev.job_run_id)
            if run is None or run.status is not JobRunStatus.SUCCEEDED or rec.entity_id not in run.partitions:
                self._add(Violation("I6", rec.seq, f"{rec.entity_id} became Live through run {ev.job_run_id}, "
                                    f"which is {run.status if run else 'unknown'}", (rec.entity_id, ev.job_run_id)))
            elif rec.entity_id in run.failed:
                self._add(Violation("I6", rec.seq, f"{rec.entity_id} became Live through run {ev.job_run_id}, which "
                                    f"reported it failed: {run.failed[rec.entity_id]}", (rec.entity_id,
                                                                                       ev.job_run_id)))
        elif isinstance(ev, PartitionRestored):
            self._live_seq[rec.entity_id] = rec.seq
        elif isinstance(ev, TaintApplied):
            self._applied_seq[rec.entity_id] = rec.seq
        elif isinstance(ev, WantSucceeded):
            want = w.wants.get(rec.entity_id)
            if want is not None:
                not_live = [r for r in want.refs if w.partition(r).status is not PartitionStatus.LIVE]
                if not_live:
                    self._add(Violation("I6", rec.seq, f"want {rec.entity_id} Successful while {not_live[0]} is "
                                        f"{w.partition(not_live[0]).status}", (rec.entity_id, *not_live[:3])))
        try:
            w.apply(rec)
        except ReplayError as e:
            self._add(Violation("I2", rec.seq, str(e).removeprefix(f"seq {rec.seq}: "),
                                (f"{rec.entity_kind}:{rec.entity_id}",)))
            raise
        if isinstance(ev, JobRunStarted):
            pass
        elif rec.entity_kind == "job_run" and w.runs[rec.entity_id].terminal:
            st = w.runs[rec.entity_id]
            for ref in st.partitions:
                if self._claims.get(ref) == rec.entity_id:
                    del self._claims[ref]

    def check_lineage(self, *, strict: bool) -> list[Violation]:
        """I7 over the World as fed so far (see the module docstring); the violations are also collected.

        ``strict``: the runtime is quiescent, so every Live partition a taint should have reached is a violation.
        Otherwise (the end of a log) only those the taint had recorded as applied after they became Live.
        """
        w = self.world
        found: list[Violation] = []
        for t in tainted_reads(w):
            taint = w.taints.get(t.taint_id or "")
            if not strict:
                if taint is None or taint.status is TaintStatus.APPLYING:
                    continue  # its cascade had not finished: a restarted runtime finishes it
                if self._live_seq.get(t.ref, 0) > self._applied_seq.get(taint.taint_id, 0):
                    continue  # became Live after the taint's last wave: the next wave taints it
            found.append(Violation(
                "I7", None, f"{t.ref} (generation {t.generation}, built by {t.built_by}) is Live, built from "
                f"{t.input} generation {t.input_generation}, which {t.taint_id} tainted and whose cascade reaches "
                f"below it", (t.ref, t.input, t.taint_id or "")))
        self.violations.extend(found)
        return found

    def finish(self, *, expect_all_terminal: bool = False, quiescent: bool = False) -> list[Violation]:
        """The end-of-log checks: I5 (``expect_all_terminal``), I6, I7 (strict when ``quiescent``)."""
        w = self.world
        if expect_all_terminal:
            for want in sorted(w.active_wants(), key=lambda x: x.want_id):
                self._add(Violation("I5", None, f"want {want.want_id} never reached a terminal status "
                                    f"(it is {want.status})", (want.want_id,)))
        for part in w.partitions.values():
            if part.status is PartitionStatus.LIVE:
                run = w.runs.get(part.built_by or "")
                if run is None or run.status is not JobRunStatus.SUCCEEDED:
                    self._add(Violation("I6", None, f"{part.ref} is Live but its builder {part.built_by} is "
                                        f"{run.status if run else 'unknown'}", (part.ref,)))
        self.check_lineage(strict=quiescent)
        return self.violations


def check_records(records: Iterable[Record], *, expect_all_terminal: bool = False,
                  quiescent: bool = False) -> list[Violation]:
    """Check I1, I2, I5 (optional), I6 and I7 over records in seq order."""
    checker = InvariantChecker()
    try:
        for rec in records:
            checker.feed(rec)
    except ReplayError:
        return checker.violations
    return checker.finish(expect_all_terminal=expect_all_terminal, quiescent=quiescent)


async def check_log(log: Log, *, expect_all_terminal: bool = False,
                    until_seq: int | None = None) -> tuple[World, list[Violation]]:
    """Check the invariants over a whole log; returns the rebuilt World too.

    A compacted log (``wantbuild compact``) is checked from the snapshot kept where it was compacted: the events
    before it are gone."""
    checker = InvariantChecker()
    start = 1
    if log.compacted_through:
        base = await rebuild(log, until_seq=log.compacted_through)
        checker = InvariantChecker(base)
        for run in base.in_flight_runs():
            if run.status is JobRunStatus.RUNNING:
                for ref in run.partitions:
                    checker._claims[ref] = run.job_run_id
        start = base.last_seq + 1
    try:
        async for batch in log.read_batches(start, until_seq=until_seq):
            for rec in batch:
                checker.feed(rec)
    except ReplayError:
        return checker.world, checker.violations
    return checker.world, checker.finish(expect_all_terminal=expect_all_terminal)


def check_replay_fidelity(live: World, replayed: World) -> list[Violation]:
    """I3: the World rebuilt from the log equals the live one."""
    return [Violation("I3", None, d) for d in live.diff(replayed)]
