"""Event filters: which committed events concern a partition (or a ref pattern), a job, a run or a want.

A :class:`EventFilter` keeps a record when it passes every field that is set (within one field, any value
matches):

- ``refs`` / ``patterns``: the event concerns a matching partition: the partition's own events, a run's events
  when the run builds one (its planned partitions), a want's or a taint's events when it names one. A pattern
  is a glob over refs (``*`` and ``?`` stay inside one ``/`` segment, ``**`` crosses them) or a job's output
  pattern (``daily/{date}``: a placeholder matches one segment's worth);
- ``jobs``: the events of that job's runs and of the partitions its runs build;
- ``runs``: the events of those runs, and the partition events that name one (``PartitionBuilding`` ...);
- ``wants``: the events of those wants and of the runs that serve them;
- ``kinds`` and ``types``: entity kinds and event type names.

It learns which run builds what (``JobRunQueued``) and what a want or a taint names as records go by, so it
must see records in ``seq`` order; when it starts in the middle of a log, :meth:`EventFilter.seed` gives it the
World at that point.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING

from eventlog import Record

from ._jobrun import JobRunQueued
from ._partition_set import PartitionSet
from ._taint import TaintCreated
from ._want import WantCreated

if TYPE_CHECKING:
    from ._world import World


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A ref pattern as a regex: ``*``/``?`` within a segment, ``**`` across, ``{name}`` one segment's worth."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"a ref pattern is a non-empty str such as 'daily/*' or 'daily/{{date}}', got {pattern!r}")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "{":
            end = pattern.find("}", i)
            if end == -1:
                raise ValueError(f"ref pattern {pattern!r}: '{{' at {i} is never closed; write a placeholder as "
                                 f"{{name}}")
            out.append("[^/]+")
            i = end + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


class EventFilter:
    """A record filter by partition refs or patterns, jobs, runs, wants, kinds and types (see the module doc)."""

    def __init__(self, *, refs: Iterable[str] = (), patterns: Iterable[str] = (), jobs: Iterable[str] = (),
                 runs: Iterable[str] = (), wants: Iterable[str] = (), kinds: Collection[str] | None = None,
                 types: Collection[str] | None = None) -> None:
        self.refs = frozenset(refs)
        self.patterns = tuple(patterns)
        self._regexes = [compile_pattern(p) for p in self.patterns]
        self.jobs = frozenset(jobs)
        self.runs = frozenset(runs)
        self.wants = frozenset(wants)
        self.kinds = frozenset(kinds) if kinds else None
        self.types = frozenset(types) if types else None
        self._by_ref = bool(self.refs or self._regexes)
        self._ref_ok: dict[str, bool] = {}
        self._named_ok: dict[tuple[str, str], bool] = {}  # (kind, id) of a run/want/taint -> names a matching ref
        self._named: dict[tuple[str, str], Sequence[str]] = {}  # (kind, id) -> the refs it names
        self._run_job: dict[str, str] = {}
        self._run_wants: dict[str, tuple[str, ...]] = {}
        self._part_job: dict[str, str] = {}

    @property
    def needs_context(self) -> bool:
        """Whether matching depends on what earlier records said (runs' partitions, wants' refs)."""
        return self._by_ref or bool(self.jobs or self.wants)

    @property
    def empty(self) -> bool:
        """Whether the filter keeps everything."""
        return not (self.needs_context or self.runs or self.kinds or self.types)

    def seed(self, world: World) -> EventFilter:
        """Learn what the records before ``world.last_seq`` said (to start filtering in the middle of a log)."""
        for run in world.runs.values():
            self._learn_run(run.job_run_id, run.job, run.planned or run.partitions, run.wants)
        for want in world.wants.values():
            self._named[("want", want.want_id)] = want.refs
        for taint in world.taints.values():
            self._named[("taint", taint.taint_id)] = taint.refs
        return self

    def _learn_run(self, rid: str, job: str, partitions: tuple[str, ...], wants: tuple[str, ...]) -> None:
        self._named[("job_run", rid)] = partitions
        self._run_job[rid] = job
        self._run_wants[rid] = wants
        if self.jobs and job in self.jobs:
            for p in partitions:
                self._part_job[p] = job

    def _learn(self, rec: Record) -> None:
        ev = rec.event
        if isinstance(ev, JobRunQueued):
            self._learn_run(rec.entity_id, ev.job, ev.partitions, ev.wants)
        elif isinstance(ev, WantCreated):  # a range want names its partition set (tested without expanding it)
            self._named[("want", rec.entity_id)] = PartitionSet.from_json(ev.parts) if ev.parts else ev.refs
        elif isinstance(ev, TaintCreated):
            self._named[("taint", rec.entity_id)] = ev.refs

    def ref_matches(self, ref: str) -> bool:
        """Whether ``ref`` is one of ``refs`` or matches one of ``patterns``."""
        ok = self._ref_ok.get(ref)
        if ok is None:
            ok = ref in self.refs or any(rx.fullmatch(ref) is not None for rx in self._regexes)
            if len(self._ref_ok) < 1_000_000:
                self._ref_ok[ref] = ok
        return ok

    def _names_match(self, kind: str, eid: str) -> bool:
        key = (kind, eid)
        ok = self._named_ok.get(key)
        if ok is None:
            named = self._named.get(key, ())
            ok = any(r in named for r in self.refs) or (bool(self._regexes)
                                                          and any(self.ref_matches(r) for r in named))
            if named:
                self._named_ok[key] = ok
        return ok

    def __call__(self, rec: Record) -> bool:
        """Whether ``rec`` passes; feed every record in seq order (it learns from those it drops too)."""
        self._learn(rec)
        kind = rec.entity_kind
        eid = rec.entity_id
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.types is not None and rec.event.event_name not in self.types:
            return False
        if self._by_ref and not (self.ref_matches(eid) if kind == "partition" else self._names_match(kind, eid)):
            return False
        if self.jobs:
            job = self._run_job.get(eid) if kind == "job_run" else self._part_job.get(eid) if kind == "partition" \
                else None
            if job not in self.jobs:
                return False
        if self.runs:
            if kind == "job_run":
                if eid not in self.runs:
                    return False
            elif kind != "partition" or getattr(rec.event, "job_run_id", None) not in self.runs:
                return False
        if self.wants:
            if kind == "want":
                if eid not in self.wants:
                    return False
            elif kind != "job_run" or not self.wants.intersection(self._run_wants.get(eid, ())):
                return False
        return True
