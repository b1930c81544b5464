"""I7 as a property: after any sequence of builds and taints, no Live partition was built from a generation that is
Tainted now (within that taint's reach) unless it is itself Tainted or stale.

Hypothesis draws wants over a three-level graph whose jobs read their inputs (raw -> daily -> report, report/1
reading two dailies in one batch), taints with and without cascade and depth, cancels of taints, and sometimes a
crash. Each timeline runs as a scenario on the virtual clock (I1-I6 on every record, I7 strictly at the end,
where the runtime is settled); then the log is read again and I7 is checked once more, independently, from the
World it replays to.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from actors import PartitionStatus, World, newer_inputs, rebuild, tainted_reads
from eventlog import EventLog
from scenarios import Expectations, Scenario, Step, parse_scenario, run_scenario

BASE = parse_scenario('''
[scenario]
name = "lineage-property"
seed = 7
horizon = 20000

[job.raw]
outputs = "raw/{d}"
batch = 2
duration = 20

[job.daily]
outputs = "daily/{d}"
batch = 2
duration = 30
behaviour = "missing_deps"
missing = ["raw/{d}"]

[job.report]
outputs = "report/{d}"
duration = 10
behaviour = "missing_deps"
missing = ["daily/{d}", "daily/3"]
''', "lineage-property.toml")

REFS = [f"{job}/{d}" for job in ("raw", "daily", "report") for d in (1, 2, 3)]


@st.composite
def timelines(draw: Any) -> tuple[Step, ...]:
    steps: list[Step] = []
    for i in range(draw(st.integers(min_value=1, max_value=4))):
        steps.append(Step(at=draw(st.integers(min_value=0, max_value=300)), action="want", name=f"w{i}",
                          refs=tuple(draw(st.lists(st.sampled_from(REFS), min_size=1, max_size=4, unique=True)))))
    taints = []
    for i in range(draw(st.integers(min_value=1, max_value=4))):
        taints.append(f"t{i}")
        steps.append(Step(at=draw(st.integers(min_value=20, max_value=400)), action="taint", name=taints[-1],
                          refs=tuple(draw(st.lists(st.sampled_from(REFS), min_size=1, max_size=2, unique=True))),
                          cascade=draw(st.booleans()) or draw(st.booleans()),
                          depth=draw(st.sampled_from([None, None, 0, 1, 2]))))
    for name in taints:
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            steps.append(Step(at=draw(st.integers(min_value=30, max_value=500)), action="cancel", taint=name))
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        steps.append(Step(at=draw(st.integers(min_value=0, max_value=400)), action="crash",
                          after_event=draw(st.sampled_from([None, "PartitionTainted", "JobRunSucceeded"]))))
    # a taint must come before the cancel that names it, and names must precede use: order by time, then file order
    ordered = sorted(steps, key=lambda s: (s.at, s.action == "cancel"))
    seen: set[str] = set()
    kept = []
    for s in ordered:
        if s.action == "cancel" and s.taint not in seen:
            continue
        if s.action == "taint" and s.name is not None:
            seen.add(s.name)
        kept.append(s)
    return tuple(dataclasses.replace(s, index=i) for i, s in enumerate(kept))


def scenario(steps: tuple[Step, ...]) -> Scenario:
    return dataclasses.replace(BASE, timeline=steps, expect=Expectations(invariants=True, all_terminal=True))


def replayed(path: Path) -> World:
    async def main() -> World:
        async with EventLog.open(path, writer=False) as log:
            return await rebuild(log)

    return anyio.run(main)


@settings(max_examples=int(os.environ.get("WANTBUILD_LINEAGE_EXAMPLES", "40")), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(timelines())
def test_no_live_partition_is_built_from_a_tainted_generation(steps: tuple[Step, ...]) -> None:
    """After any builds, taints (cascading or not, any depth), cancels and crashes: I1-I7 hold, and the log's World
    has no Live partition built from a generation Tainted now within its taint's reach, unless stale."""
    with tempfile.TemporaryDirectory() as d:
        r = run_scenario(scenario(steps), workdir=d)
        assert [str(v) for v in r.violations] == [], "\n".join(s.describe() for s in steps)
        assert r.stopped == "", r.stopped
        world = replayed(Path(d) / "scenario.db")
    assert tainted_reads(world) == [], "\n".join(s.describe() for s in steps)
    # The property itself, spelled out without tainted_reads: every Live partition's inputs, at the generations
    # read, are not Tainted by an active taint reaching below them, or the partition is stale.
    for part in world.partitions.values():
        run = world.runs.get(part.built_by or "")
        if part.status is not PartitionStatus.LIVE or run is None or newer_inputs(world, run, part.ref):
            continue
        for ref, gen in world.lineage.inputs_in(run, part.ref).items():
            up = world.partition(ref)
            taint = world.taints.get(up.tainted_by or "")
            reaching = (taint is not None and taint.active and taint.reaches(up.taint_depth))
            assert not (up.status is PartitionStatus.TAINTED and up.generation == gen and reaching), (
                f"{part.ref} is Live, built from {ref}@{gen} tainted by {up.tainted_by}")
    event(f"tainted partitions: {min(3, sum(1 for p in world.partitions.values() if p.status == 'Tainted'))}")
    event(f"restored: {any(t.restored for t in world.taints.values())}")
