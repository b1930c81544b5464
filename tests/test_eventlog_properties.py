"""Property tests: any interleaving of concurrent appends leaves a well-formed log that reads back exactly."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import drop_schema, with_schema
from eventlog_helpers import Clock, ThingChanged, ThingChangedV2, ThingCreated, open_log
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog import ConcurrencyError, Event, Record

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Step:
    """One append of a task: which entity, which event, and how often to yield to others first."""

    entity: int
    event: Event
    yields: int


events = st.one_of(
    st.builds(ThingCreated, name=st.text(max_size=8), tags=st.lists(st.text(max_size=3), max_size=2).map(tuple)),
    st.builds(ThingChanged, n=st.integers(-(2**40), 2**40), note=st.text(max_size=5)),
    st.builds(ThingChangedV2, n=st.integers(0, 10), amount=st.floats(allow_nan=False, allow_infinity=False)),
)
steps = st.builds(Step, entity=st.integers(0, 4), event=events, yields=st.integers(0, 3))
plans = st.lists(st.lists(steps, min_size=1, max_size=8), min_size=1, max_size=8)
configs = st.sampled_from([{}, {"max_batch": 1}, {"max_batch": 3}, {"max_wait": 0.0005, "max_batch": 5}])


async def run_plan(path: Path | str, plan: list[list[Step]], config: dict[str, float]) -> None:
    """Run every task's steps concurrently, retrying on ConcurrencyError; check the log as it is and reopened."""
    calls = itertools.count()
    accepted: list[tuple[int, Record]] = []  # (call order, record)
    conflicts: list[tuple[int, int, int]] = []  # (what we expected, what the error said, what it had)

    async with open_log(path, now=Clock(), **config) as log:

        async def task(steps: list[Step]) -> None:
            for step in steps:
                for _ in range(step.yields):
                    await asyncio.sleep(0)
                eid = f"e{step.entity}"
                while True:
                    expected = await log.entity_seq("thing", eid)  # the committed tip; may be stale
                    order = next(calls)
                    try:
                        rec = await log.append("thing", eid, expected, step.event)
                    except ConcurrencyError as e:
                        conflicts.append((expected, e.expected, e.actual))
                        await asyncio.sleep(0)
                        continue
                    accepted.append((order, rec))
                    break

        await asyncio.gather(*(task(steps) for steps in plan))
        report = await log.verify()
        assert report.ok, str(report)
        last_seq = log.last_seq

    # A conflict only ever means another append of that entity got in first.
    assert all(mine == said < actual for mine, said, actual in conflicts)
    records = sorted((rec for _, rec in accepted), key=lambda r: r.seq)
    # seq: 1..N without gaps (nothing failed), in the order append was called.
    assert list(range(1, len(records) + 1)) == [r.seq for r in records]
    assert last_seq == len(records)
    assert [r.seq for _, r in sorted(accepted, key=lambda x: x[0])] == [r.seq for r in records]
    # entity_seq: 1, 2, 3... per entity, in seq order.
    per_entity: dict[str, list[int]] = {}
    for r in records:
        per_entity.setdefault(r.entity_id, []).append(r.entity_seq)
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in per_entity.values())
    assert sum(len(steps) for steps in plan) == len(records)

    async with open_log(path, writer=False) as log:
        assert records == [r async for r in log.read()]
        for eid, seqs in per_entity.items():
            assert [r for r in records if r.entity_id == eid] == await log.history("thing", eid)
            assert len(seqs) == await log.entity_seq("thing", eid)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans, config=configs)
def test_concurrent_appends_make_a_well_formed_log(plan: list[list[Step]], config: dict[str, float]) -> None:
    """Any interleaving of appends from many tasks: seqs increase without gaps, entity_seqs too, reopen reads all."""
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(run_plan(Path(d) / "log.db", plan, config))


@settings(max_examples=30, deadline=None)
@given(plan=plans)
def test_manual_commits_are_deterministic(plan: list[list[Step]]) -> None:
    """With autocommit=False and commits at fixed points, the same plan writes the same records."""

    async def run(path: Path) -> list[Record]:
        async with open_log(path, now=Clock(), autocommit=False, max_batch=4) as log:
            seqs = [0] * 5
            for round_ in itertools.zip_longest(*plan):
                futs = []
                for step in round_:
                    if step is not None:
                        futs.append(asyncio.ensure_future(
                            log.append("thing", f"e{step.entity}", seqs[step.entity], step.event)))
                        seqs[step.entity] += 1
                await asyncio.sleep(0)
                await log.commit()
                await asyncio.gather(*futs)
            return [r async for r in log.read()]

    with tempfile.TemporaryDirectory() as d:
        one = asyncio.run(run(Path(d) / "one.db"))
        two = asyncio.run(run(Path(d) / "two.db"))
    assert sum(len(s) for s in plan) == len(one)
    assert one == two


def _on_postgres(pg_server: str, run: Callable[[str], None]) -> None:
    schema = f"t_prop_{uuid.uuid4().hex[:12]}"
    try:
        run(with_schema(pg_server, schema))
    finally:
        drop_schema(pg_server, schema)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans, config=configs)
def test_concurrent_appends_make_a_well_formed_log_on_postgres(pg_server: str, plan: list[list[Step]],
                                                                config: dict[str, float]) -> None:
    """The same property on PostgreSQL: any interleaving leaves gapless seqs and entity_seqs, read back exactly."""
    _on_postgres(pg_server, lambda url: asyncio.run(run_plan(url, plan, config)))
