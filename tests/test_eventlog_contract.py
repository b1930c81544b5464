"""The event log's contract, one abstract suite run against each backend and each way of running the writer.

``EventLogContract.create_log`` is the hook: each subclass opens the log its own way (natural batching,
batches held open for ``max_wait``, one append per transaction), and the ``log_target`` fixture gives every
test a SQLite file and then a PostgreSQL schema. Every behaviour here must hold for all.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from eventlog_helpers import REGISTRY, Clock, ThingChanged, ThingChangedV2, ThingCreated, open_log

from eventlog import ConcurrencyError, Event, Log, LogClosedError, Record

pytestmark = pytest.mark.timeout(30)


class EventLogContract:
    """Behaviour every configuration of the log must show."""

    options: dict[str, Any] = {}

    def create_log(self, target: str, **kwargs: Any) -> AbstractAsyncContextManager[Log]:
        return open_log(target, **{**self.options, **kwargs})

    async def test_first_append_gets_seq_1_and_entity_seq_1(self, log_target: str) -> None:
        """The first event of a new log and a new entity is seq 1, entity_seq 1, stamped by the clock."""
        clock = Clock(start=10.0, step=1.0)
        async with self.create_log(log_target, now=clock) as log:
            assert isinstance(log, Log)  # the protocol the runtime codes to
            assert clock.t == 11.0  # creating the log stamped created_at
            rec = await log.append("thing", "a", 0, ThingCreated(name="a"))
        assert Record(1, "thing", "a", 1, ThingCreated(name="a"), 12.0) == rec
        assert rec.type == "ThingCreated"

    async def test_returned_records_are_what_reopening_reads(self, log_target: str) -> None:
        """Close and reopen: read() returns exactly the returned records, in seq order."""
        path = log_target
        async with self.create_log(path) as log:
            written = [await log.append("thing", "a", i, ThingChanged(n=i)) for i in range(5)]
            written += await asyncio.gather(*(log.append("thing", f"b{i}", 0, ThingCreated(name=str(i)))
                                              for i in range(20)))
            assert log.last_seq == 25
        async with self.create_log(path) as log:
            read = [r async for r in log.read()]
            assert log.last_seq == 25
        assert sorted(written, key=lambda r: r.seq) == read

    async def test_seq_follows_call_order(self, log_target: str) -> None:
        """Concurrent appends get seqs in the order append was called."""
        async with self.create_log(log_target) as log:
            recs = await asyncio.gather(*(log.append("thing", f"t{i}", 0, ThingChanged(n=i)) for i in range(50)))
        assert list(range(1, 51)) == [r.seq for r in recs]

    async def test_stale_expected_seq_fails_alone(self, log_target: str) -> None:
        """A stale expected_entity_seq raises ConcurrencyError for that append; the others commit."""
        async with self.create_log(log_target) as log:
            await log.append("thing", "a", 0, ThingCreated(name="a"))
            results = await asyncio.gather(
                log.append("thing", "b", 0, ThingCreated(name="b")),
                log.append("thing", "a", 0, ThingChanged(n=1)),
                log.append("thing", "a", 1, ThingChanged(n=2)),
                return_exceptions=True,
            )
            ok_b, stale, ok_a = results
            assert isinstance(stale, ConcurrencyError)
            assert (stale.entity_kind, stale.entity_id, stale.expected, stale.actual) == ("thing", "a", 0, 1)
            assert "thing 'a': append expected entity_seq 0 but the log has 1" in str(stale)
            assert isinstance(ok_b, Record)
            assert isinstance(ok_a, Record)
            assert (ok_b.seq, ok_b.entity_seq, ok_a.seq, ok_a.entity_seq) == (2, 1, 3, 2)
            assert [r.entity_seq for r in await log.history("thing", "a")] == [1, 2]

    async def test_appends_to_one_entity_may_be_pipelined(self, log_target: str) -> None:
        """Appends that count on earlier, still pending appends of the same entity are accepted."""
        async with self.create_log(log_target) as log:
            recs = await asyncio.gather(*(log.append("thing", "a", i, ThingChanged(n=i)) for i in range(10)))
            assert list(range(1, 11)) == [r.entity_seq for r in recs]
            assert await log.entity_seq("thing", "a") == 10

    async def test_entity_seq_is_zero_for_unknown_entities(self, log_target: str) -> None:
        """entity_seq() is 0 for an entity the log has never seen, and counts after that."""
        path = log_target
        async with self.create_log(path) as log:
            assert await log.entity_seq("thing", "nope") == 0
            await log.append("thing", "a", 0, ThingCreated(name="a"))
            await log.append("thing", "a", 1, ThingChanged(n=1))
        async with self.create_log(path) as log:
            assert await log.entity_seq("thing", "a") == 2
            rec = await log.append("thing", "a", 2, ThingChanged(n=2))
            assert (rec.seq, rec.entity_seq) == (3, 3)

    async def test_same_id_under_two_kinds_is_two_entities(self, log_target: str) -> None:
        """An entity is (kind, id): the same id under another kind has its own history."""
        async with self.create_log(log_target) as log:
            await log.append("thing", "x", 0, ThingCreated(name="thing x"))
            rec = await log.append("other", "x", 0, ThingCreated(name="other x"))
            assert rec.entity_seq == 1
            assert [r.event.name for r in await log.history("other", "x")] == ["other x"]  # type: ignore[attr-defined]

    async def test_history_is_one_entity_in_order(self, log_target: str) -> None:
        """history() returns exactly one entity's records in order, optionally up to a seq."""
        async with self.create_log(log_target) as log:
            for i in range(6):
                for eid in ("a", "b", "c"):
                    await log.append("thing", eid, i, ThingChanged(n=i, note=eid))
            hist = await log.history("thing", "b")
            assert [(r.entity_id, r.entity_seq) for r in hist] == [("b", i) for i in range(1, 7)]
            assert [r.seq for r in hist] == [2, 5, 8, 11, 14, 17]
            assert [r.seq for r in await log.history("thing", "b", until_seq=8)] == [2, 5, 8]
            assert await log.history("thing", "zzz") == []
            assert [r async for r in log.read(entity_id="b")] == hist

    async def test_event_versions_round_trip(self, log_target: str) -> None:
        """Two versions of one event name are stored and decoded as their own classes."""
        path = log_target
        events: Sequence[Event] = [ThingChanged(n=1, note="v1"), ThingChangedV2(n=2, amount=2.5)]
        async with self.create_log(path) as log:
            for i, ev in enumerate(events):
                await log.append("thing", "a", i, ev)
        async with self.create_log(path) as log:
            assert list(events) == [r.event for r in await log.history("thing", "a")]

    async def test_append_after_close_raises(self, log_target: str) -> None:
        """After the log is closed, append and read raise LogClosedError naming the file."""
        path = log_target
        async with self.create_log(path) as log:
            await log.append("thing", "a", 0, ThingCreated(name="a"))
        with pytest.raises(LogClosedError, match=re.escape(f"{log.path}: the event log is closed")):
            await log.append("thing", "a", 1, ThingChanged(n=1))
        with pytest.raises(LogClosedError):
            [r async for r in log.read()]
        assert log.closed

    async def test_close_commits_what_is_pending(self, log_target: str) -> None:
        """Appends still queued when the log closes are committed, not dropped."""
        path = log_target
        async with self.create_log(path) as log:
            tasks = [asyncio.ensure_future(log.append("thing", f"t{i}", 0, ThingCreated(name="x"))) for i in range(30)]
            await asyncio.sleep(0)
        assert all(t.done() and not t.exception() for t in tasks)
        async with self.create_log(path) as log:
            assert log.last_seq == 30

    async def test_verify_accepts_a_healthy_log(self, log_target: str) -> None:
        """verify() finds no problem in a log written through the API."""
        async with self.create_log(log_target) as log:
            await asyncio.gather(*(log.append("thing", f"t{i % 7}", i // 7, ThingChanged(n=i)) for i in range(70)))
            report = await log.verify()
        assert (report.ok, report.events, report.entities, report.problems) == (True, 70, 7, ())
        assert str(report).endswith("70 events, 7 entities: ok")


class TestNaturalBatching(EventLogContract):
    """Default: each batch is what queued while the previous one committed."""

    options: dict[str, Any] = {}


class TestLingeringBatches(EventLogContract):
    """max_wait > 0: the writer holds a batch open briefly to gather more appends."""

    options: dict[str, Any] = {"max_wait": 0.002, "max_batch": 16}


class TestOneAppendPerTransaction(EventLogContract):
    """max_batch=1: every append is its own transaction."""

    options: dict[str, Any] = {"max_batch": 1}


def test_the_test_registry_is_not_the_global_one() -> None:
    """Test events are registered in the test registry only."""
    from eventlog import REGISTRY as GLOBAL

    assert ThingCreated in REGISTRY.all()
    assert ThingCreated not in GLOBAL.all()
