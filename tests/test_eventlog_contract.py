"""The event log's contract, one abstract suite run against each backend and each way of running the writer.

``EventLogContract.create_log`` is the hook: each subclass opens the log its own way (natural batching,
batches held open for ``max_wait``, one append per transaction, power durability), and the ``log_target``
fixture gives every test a SQLite file and then a PostgreSQL schema. Every behaviour here must hold for all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import pytest
from eventlog_helpers import REGISTRY, Clock, ThingChanged, ThingChangedV2, ThingCreated, open_log

from eventlog import (
    CommandCompletedError,
    CommitError,
    ConcurrencyError,
    Event,
    EventLogError,
    Log,
    LogClosedError,
    Record,
    UnknownCommandError,
)

pytestmark = pytest.mark.timeout(30)


class EventLogContract:
    """Behaviour every configuration of the log must show."""

    options: dict[str, Any] = {}

    def create_log(self, target: str, **kwargs: Any) -> AbstractAsyncContextManager[Log]:
        return cast(AbstractAsyncContextManager[Log], open_log(target, **{**self.options, **kwargs}))

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

    async def test_histories_are_each_entity_in_order(self, log_target: str) -> None:
        """histories() returns each asked entity's records in order, [] for one never seen, across id chunks;
        entity_ids() lists a kind's entities."""
        async with self.create_log(log_target) as log:
            ids = [f"e{i}" for i in range(450)]  # more than one SQLite chunk of 400 ids
            for n in range(3):
                for eid in ids:
                    log.submit("thing", eid, n, ThingChanged(n=n, note=eid), new=n == 0)
                await log.commit()
            await log.append("other", "e1", 0, ThingCreated(name="not a thing"))
            got = await log.histories("thing", [*reversed(ids), "never", "e7"])
            assert list(got) == [*reversed(ids), "never"]
            assert got["never"] == []
            for eid in ids:
                assert got[eid] == await log.history("thing", eid)
                assert [r.entity_seq for r in got[eid]] == [1, 2, 3]
            assert await log.histories("thing", []) == {}
            assert sorted(await log.entity_ids("thing")) == sorted(ids)
            assert await log.entity_ids("other") == ["e1"]

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

    async def test_commit_fails_when_an_abort_drops_its_appends(self, log_target: str) -> None:
        """A commit() waiting for appends that an abort() drops raises CommitError; it never reports success."""
        async with self.create_log(log_target, autocommit=False) as log:
            append = asyncio.ensure_future(log.append("thing", "a", 0, ThingCreated(name="a")))
            commit = asyncio.ensure_future(log.commit())
            await asyncio.sleep(0)  # both are waiting now: the append queued, commit() for it
            await log.abort()
            results = await asyncio.gather(append, commit, return_exceptions=True)
        assert [CommitError, CommitError] == [type(r) for r in results]
        assert "log aborted" in str(results[1])

    async def test_an_append_completes_its_command_in_its_own_transaction(self, log_target: str) -> None:
        """append(command=(id, result)) commits the event and the command's result together."""
        async with self.create_log(log_target) as log:
            cid = await log.submit_command("want", {"refs": ["a/1"]})
            other = await log.submit_command("want", {"refs": ["a/2"]})
            rec = await log.append("thing", "a", 0, ThingCreated(name="a"), command=(cid, {"ok": True, "id": "a"}))
            done = await log.command(cid)
            assert done is not None
            assert (done.done, done.result, done.state, done.error) == (True, {"ok": True, "id": "a"}, "ok", None)
            assert [other] == [c.id for c in await log.pending_commands()]
            assert rec == (await log.history("thing", "a"))[0]

    async def test_a_command_stays_pending_when_its_append_fails(self, log_target: str) -> None:
        """An append that fails (a stale expected seq) or is dropped (abort) leaves its command pending."""
        path = log_target
        async with self.create_log(path, autocommit=False) as log:
            cid = await log.submit_command("cancel", {"want_id": "w"})
            stale = asyncio.ensure_future(log.append("thing", "a", 3, ThingCreated(name="a"), command=(cid, {})))
            await asyncio.sleep(0)
            await log.commit()
            with pytest.raises(ConcurrencyError):
                await stale
            assert [cid] == [c.id for c in await log.pending_commands()]
            dropped = asyncio.ensure_future(log.append("thing", "a", 0, ThingCreated(name="a"), command=(cid, {})))
            await asyncio.sleep(0)
            await log.abort()
            with pytest.raises(CommitError):
                await dropped
        async with self.create_log(path) as log:
            assert [cid] == [c.id for c in await log.pending_commands()]
            assert log.last_seq == 0

    async def test_completing_a_completed_command_fails_that_append_only(self, log_target: str) -> None:
        """An append carrying a command already completed (or completed earlier in its own batch, or unknown)
        fails alone, naming the command; the rest of its batch commits."""
        async with self.create_log(log_target) as log:
            done = await log.submit_command("want", {})
            fresh = await log.submit_command("taint", {})
            await log.complete_command(done, {"ok": True})
            results = await asyncio.gather(
                log.append("thing", "a", 0, ThingCreated(name="a"), command=(done, {"ok": True})),
                log.append("thing", "b", 0, ThingCreated(name="b"), command=(fresh, {"ok": True, "n": 1})),
                log.append("thing", "c", 0, ThingCreated(name="c"), command=(fresh, {"ok": True, "n": 2})),
                log.append("thing", "d", 0, ThingCreated(name="d"), command=(999, {})),
                log.append("thing", "e", 0, ThingCreated(name="e")),
                return_exceptions=True,
            )
            assert [CommandCompletedError, Record, CommandCompletedError, UnknownCommandError, Record] == [
                type(r) for r in results]
            assert f"command {done} (want) was already completed" in str(results[0])
            assert "nothing of this append was written" in str(results[0])
            assert "there is no command 999" in str(results[3])
            assert (done, fresh, 999) == (results[0].command_id, results[2].command_id,  # type: ignore[union-attr]
                                          results[3].command_id)  # type: ignore[union-attr]
            assert [r.entity_id async for r in log.read()] == ["b", "e"]
            completed = await log.command(fresh)
            assert completed is not None
            assert completed.result == {"ok": True, "n": 1}
            assert await log.entity_seq("thing", "a") == 0

    async def test_a_result_that_is_not_json_is_refused_before_queueing(self, log_target: str) -> None:
        """append(command=...) with a result JSON cannot hold raises at the call; nothing is queued."""
        async with self.create_log(log_target) as log:
            cid = await log.submit_command("want", {})
            with pytest.raises(EventLogError, match=f"command {cid}: result is not JSON-serializable"):
                await log.append("thing", "a", 0, ThingCreated(name="a"), command=(cid, {"x": object()}))
            assert log.pending() == 0

    async def test_commands_are_listed_by_state(self, log_target: str) -> None:
        """commands() lists pending, ok or failed commands (a failed one's result has ok false and an error);
        command_counts() counts them."""
        async with self.create_log(log_target) as log:
            ids = [await log.submit_command("want", {"refs": [f"a/{i}"]}) for i in range(5)]
            await log.complete_command(ids[0], {"ok": True, "want_id": "w-1"})
            await log.complete_command(ids[1], {"ok": False, "error": "no job produces a/1"})
            await log.append("thing", "a", 0, ThingCreated(name="a"), command=(ids[2], {"ok": False, "error": "x"}))
            await log.complete_command(ids[3], {})
            assert [ids[4]] == [c.id for c in await log.commands("pending")]
            assert [ids[0], ids[3]] == [c.id for c in await log.commands("ok")]
            failed = await log.commands("failed")
            assert [ids[1], ids[2]] == [c.id for c in failed]
            assert [c.error for c in failed] == ["no job produces a/1", "x"]
            assert [c.state for c in failed] == ["failed", "failed"]
            assert [ids[2]] == [c.id for c in await log.commands("failed", limit=1, newest_first=True)]
            assert ids == [c.id for c in await log.commands()]
            assert await log.command_counts() == {"pending": 1, "ok": 2, "failed": 2}
            with pytest.raises(ValueError, match="state must be"):
                await log.commands("lost")  # type: ignore[arg-type]

    async def test_verify_accepts_a_healthy_log(self, log_target: str) -> None:
        """verify() finds no problem in a log written through the API."""
        async with self.create_log(log_target) as log:
            await asyncio.gather(*(log.append("thing", f"t{i % 7}", i // 7, ThingChanged(n=i)) for i in range(70)))
            report = await log.verify()
        assert (report.ok, report.events, report.entities, report.problems) == (True, 70, 7, ())
        assert str(report).endswith("70 events, 7 entities: ok")


    async def test_submit_queues_in_call_order_and_resolves_with_the_records(self, log_target: str) -> None:
        """submit() queues at once and its futures resolve, in call order, with what append() would return."""
        async with self.create_log(log_target) as log:
            futs = [log.submit("thing", f"s{i}", 0, ThingCreated(name=str(i)), new=True) for i in range(30)]
            futs.append(log.submit("thing", "s0", 1, ThingChanged(n=1)))
            recs = await asyncio.gather(*futs)
            assert [r.seq for r in recs] == list(range(1, 32))
            assert [(r.entity_id, r.entity_seq) for r in recs] == [(f"s{i}", 1) for i in range(30)] + [("s0", 2)]
        async with self.create_log(log_target) as log:
            assert [r async for r in log.read()] == recs

    async def test_submit_new_for_an_entity_the_log_has_fails_its_batch_only(self, log_target: str) -> None:
        """submit(new=True) for an entity that is in the log fails its whole batch with CommitError (the
        entities' unique key refuses it), writes nothing of it, and the writer goes on."""
        async with self.create_log(log_target) as log:
            await log.append("thing", "a", 0, ThingCreated(name="a"))
        async with self.create_log(log_target) as log:  # reopened: nothing cached, "a" only in the database
            wrong = log.submit("thing", "a", 0, ThingCreated(name="again"), new=True)
            other = log.submit("thing", "b", 0, ThingCreated(name="b"))
            results = await asyncio.gather(wrong, other, return_exceptions=True)
            assert isinstance(results[0], CommitError), results
            # "b" shares the wrong append's batch (and fails with it) unless batches hold one append each
            b_written = isinstance(results[1], Record)
            assert b_written or isinstance(results[1], CommitError), results
            assert log.last_seq == 1 + b_written
            rec = await log.append("thing", "a", 1, ThingChanged(n=1))
            assert (rec.seq, rec.entity_seq) == (2 + b_written, 2)
            assert await log.entity_seq("thing", "b") == b_written

    async def test_submit_many_resolves_once_with_each_appends_record_or_error(self, log_target: str) -> None:
        """submit_many() queues its appends in order as submit() would and resolves once, with each append's record
        or error in its place: a stale one fails alone (ConcurrencyError), an unregistered event type fails alone
        (EventLogError), a command completion rides on its append, and the rest commit."""

        @dataclasses.dataclass(frozen=True)
        class NotAnEvent:
            n: int

        async with self.create_log(log_target) as log:
            await log.append("thing", "a", 0, ThingCreated(name="a"))
            cid = await log.submit_command("want", {"refs": ["a/1"]})
            done = log.submit_many([
                ("thing", "b", 0, ThingCreated(name="b"), None, None, True),
                ("thing", "a", 5, ThingChanged(n=5), None, None, False),  # stale
                ("thing", "a", 1, ThingChanged(n=1), 7.5, (cid, {"ok": True}), False),
                ("thing", "c", 0, NotAnEvent(1), None, None, True),  # type: ignore[list-item]
                ("thing", "b", 1, ThingChanged(n=2), None, (cid, {"ok": True}), False),  # completed just before
            ])
            out = await done
            assert [type(o).__name__ for o in out] == ["Record", "ConcurrencyError", "Record", "EventLogError",
                                                       "CommandCompletedError"], out
            b, _, a, _, _ = out
            assert isinstance(b, Record)
            assert isinstance(a, Record)
            assert [(b.seq, b.entity_id, b.entity_seq), (a.seq, a.entity_id, a.entity_seq, a.at)] == [
                (2, "b", 1), (3, "a", 2, 7.5)]
            command = await log.command(cid)
            assert command is not None
            assert command.state == "ok"
            assert await log.submit_many([]) == []
        async with self.create_log(log_target) as log:
            assert [(r.seq, r.entity_id) async for r in log.read()] == [(1, "a"), (2, "b"), (3, "a")]

    async def test_submit_many_fails_every_append_of_a_batch_that_did_not_commit(self, log_target: str) -> None:
        """A batch that cannot commit (here: new=True for an entity the log has) fails each of its appends in the
        submit_many result with CommitError, writes nothing of it, and the log goes on; a closed log refuses
        submit_many at once."""
        async with self.create_log(log_target) as log:
            await log.append("thing", "a", 0, ThingCreated(name="a"))
        async with self.create_log(log_target) as log:  # reopened: "a" only in the database
            out = await log.submit_many([("thing", "a", 0, ThingCreated(name="again"), None, None, True),
                                         ("thing", "b", 0, ThingCreated(name="b"), None, None, True)])
            assert isinstance(out[0], CommitError), out
            b_written = isinstance(out[1], Record)  # in the failed batch unless batches hold one append each
            assert b_written or isinstance(out[1], CommitError), out
            assert log.last_seq == 1 + b_written
            again = await log.submit_many([("thing", "a", 1, ThingChanged(n=1), None, None, False)])
            assert [(r.seq, r.entity_seq) for r in again if isinstance(r, Record)] == [(2 + b_written, 2)]
        with pytest.raises(LogClosedError):
            log.submit_many([("thing", "a", 2, ThingChanged(n=2), None, None, False)])


class TestNaturalBatching(EventLogContract):
    """Default: each batch is what queued while the previous one committed."""

    options: dict[str, Any] = {}


class TestLingeringBatches(EventLogContract):
    """max_wait > 0: the writer holds a batch open briefly to gather more appends."""

    options: dict[str, Any] = {"max_wait": 0.002, "max_batch": 16}


class TestOneAppendPerTransaction(EventLogContract):
    """max_batch=1: every append is its own transaction."""

    options: dict[str, Any] = {"max_batch": 1}


class TestPowerDurability(EventLogContract):
    """durability="power": every batch is flushed to the disk before its appends return."""

    options: dict[str, Any] = {"durability": "power"}


def test_the_test_registry_is_not_the_global_one() -> None:
    """Test events are registered in the test registry only."""
    from eventlog import REGISTRY as GLOBAL

    assert ThingCreated in REGISTRY.all()
    assert ThingCreated not in GLOBAL.all()
