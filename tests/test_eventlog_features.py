"""Reading (filters, follow), the command inbox, abort, manual commits and cancellation."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from eventlog_helpers import Clock, ThingChanged, ThingChangedV2, ThingCreated, dump, open_log, raw

import eventlog
from eventlog import (
    CommitError,
    EventLog,
    EventLogError,
    LogClosedError,
    LogNotFoundError,
    ReadOnlyLogError,
    Record,
)
from eventlog._core import LogCore

pytestmark = pytest.mark.timeout(30)


def test_public_names_are_defined_in_private_modules() -> None:
    """Every exported class and function lives in an ``eventlog._*`` module (one front door)."""
    for name in eventlog.__all__:
        value = getattr(eventlog, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith("eventlog._"), name


async def _three_kinds(path: str) -> list[Record]:
    """A log with wants, partitions and runs, at times 1001, 1002, ... (one second apart)."""
    out = []
    async with open_log(path, now=Clock(start=1000.0, step=1.0)) as log:
        for i in range(4):
            out.append(await log.append("want", f"w{i}", 0, ThingCreated(name=f"w{i}")))
            out.append(await log.append("partition", f"p{i % 2}", i // 2, ThingChanged(n=i)))
            out.append(await log.append("run", f"r{i}", 0, ThingChangedV2(n=i, amount=i / 2)))
    return out


async def test_read_filters(log_target: str) -> None:
    """read() honours from_seq, until_seq, until_time, kinds, entity_id and types, in seq order."""
    path = log_target
    recs = await _three_kinds(path)
    async with open_log(path) as log:

        async def seqs(**kw: object) -> list[int]:
            return [r.seq async for r in log.read(**kw)]  # type: ignore[arg-type]

        assert [r.seq for r in recs] == await seqs()
        assert await seqs(from_seq=5, until_seq=7) == [5, 6, 7]
        assert await seqs(until_time=1004.0) == [1, 2, 3]  # the clock's first tick stamped created_at
        assert await seqs(kinds=["want"]) == [1, 4, 7, 10]
        assert await seqs(kinds={"partition", "run"}) == [2, 3, 5, 6, 8, 9, 11, 12]
        assert await seqs(entity_id="p0") == [2, 8]
        assert await seqs(entity_id="p0", kinds=["partition"]) == [2, 8]
        assert await seqs(entity_id="p0", kinds=["want"]) == []
        assert await seqs(types=["ThingChanged"]) == [2, 3, 5, 6, 8, 9, 11, 12]  # both versions
        assert await seqs(types=["ThingCreated", "NoSuchType"]) == [1, 4, 7, 10]
        assert await seqs(types=["NoSuchType"]) == []
        assert await seqs(kinds=[]) == []
        assert await seqs(from_seq=5, types=["ThingCreated"], kinds=["want"]) == [7, 10]
        assert [recs[4]] == [r async for r in log.read(5, until_seq=5)]


async def test_read_is_paged_not_loaded(log_target: str) -> None:
    """read() over more rows than one page returns them all, in order, from a reader process too."""
    path = log_target
    async with open_log(path) as log:
        await asyncio.gather(*(log.append("thing", f"t{i}", 0, ThingChanged(n=i)) for i in range(2500)))
    async with open_log(path, writer=False) as log:
        assert list(range(1, 2501)) == [r.seq async for r in log.read()]
        assert [len(b) async for b in log.read_batches(batch_size=1000)] == [1000, 1000, 500]
        assert [len(b) async for b in log.read_batches(500, batch_size=2000)] == [2000, 1]
        assert [len(b) async for b in log.read_batches(11, until_seq=20)] == [10]
        assert log.last_seq == 2500


async def test_follow_in_the_writer_process(log_target: str) -> None:
    """follow() yields the existing records, then each new one as the writer commits it."""
    async with open_log(log_target) as log:
        await log.append("thing", "a", 0, ThingCreated(name="a"))
        got: list[Record] = []

        async def follower() -> None:
            async for rec in log.follow(kinds=["thing"]):
                got.append(rec)
                if len(got) == 4:
                    return

        task = asyncio.ensure_future(follower())
        with anyio.fail_after(5):
            while not got:  # noqa: ASYNC110 - the follower has no signal of its own to wait on
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.01)
        assert [r.seq for r in got] == [1]
        await log.append("other", "x", 0, ThingCreated(name="x"))
        for i in range(1, 4):
            await log.append("thing", "a", i, ThingChanged(n=i))
        await asyncio.wait_for(task, 5)
        assert [r.seq for r in got] == [1, 3, 4, 5]


async def test_follow_stops_at_until_seq_and_at_close(log_target: str) -> None:
    """follow(until_seq=N) ends after N; an open-ended follow ends when the log closes."""
    async with open_log(log_target) as log:
        seen: list[int] = []
        bounded = asyncio.ensure_future(_collect(log, until_seq=2))
        endless = asyncio.ensure_future(_collect(log, into=seen))
        for i in range(3):
            await log.append("thing", "a", i, ThingChanged(n=i))
        assert await asyncio.wait_for(bounded, 5) == [1, 2]
        with anyio.fail_after(5):
            while len(seen) < 3:  # noqa: ASYNC110 - the follower has no signal of its own to wait on
                await asyncio.sleep(0.005)
        assert not endless.done()
    assert await asyncio.wait_for(endless, 5) == [1, 2, 3]


async def _collect(log: LogCore, until_seq: int | None = None, into: list[int] | None = None) -> list[int]:
    out = into if into is not None else []
    async for r in log.follow(until_seq=until_seq):
        out.append(r.seq)
    return out


async def test_follow_from_a_reader_polls(log_target: str) -> None:
    """A writer=False log sees the writer's new commits by polling."""
    path = log_target
    async with open_log(path) as writer, open_log(path, writer=False, poll_interval=0.01) as reader:
        task = asyncio.ensure_future(_collect(reader, until_seq=3))
        for i in range(3):
            await writer.append("thing", "a", i, ThingChanged(n=i))
            await asyncio.sleep(0.02)
        assert await asyncio.wait_for(task, 5) == [1, 2, 3]
        assert reader.last_seq == 3


async def test_history_and_entity_seq_from_a_reader(log_target: str) -> None:
    """A reader process sees committed history and entity_seq."""
    path = log_target
    recs = await _three_kinds(path)
    async with open_log(path, writer=False) as log:
        assert [recs[1], recs[7]] == await log.history("partition", "p0")
        assert await log.entity_seq("partition", "p1") == 2
        assert (await log.verify()).ok


# ---------------------------------------------------------------- command inbox


async def test_command_round_trip_between_processes(log_target: str) -> None:
    """A reader submits, the writer sees it pending, completes it, the reader polls the result."""
    path = log_target
    async with open_log(path) as writer, open_log(path, writer=False) as cli:
        cid = await cli.submit_command("create_want", {"refs": ["daily/2026-11-01"], "ttl": 3600})
        other = await cli.submit_command("cancel", {"want_id": "w1"})
        pending = await writer.pending_commands()
        assert [(cid, "create_want"), (other, "cancel")] == [(c.id, c.name) for c in pending]
        assert pending[0].payload == {"refs": ["daily/2026-11-01"], "ttl": 3600}
        assert not pending[0].done
        await writer.complete_command(cid, {"want_id": "w-7"})
        done = await cli.command(cid)
        assert done is not None
        assert done.done
        assert done.result == {"want_id": "w-7"}
        assert done.completed_at is not None
        assert done.completed_at >= done.submitted_at
        assert [other] == [c.id for c in await writer.pending_commands()]
        assert await cli.command(9999) is None


async def test_uncompleted_commands_are_redelivered_after_a_crash(log_target: str) -> None:
    """A command the writer never completed is pending again after restart; a completed one is not."""
    path = log_target
    async with open_log(path) as log:
        a = await log.submit_command("a", {})
        b = await log.submit_command("b", {})
        assert [a, b] == [c.id for c in await log.pending_commands()]
        await log.complete_command(a, {"ok": True})
        await log.abort()  # crash while handling b
    async with open_log(path) as log:
        assert [b] == [c.id for c in await log.pending_commands()]
        await log.complete_command(b, {"ok": True})
        assert await log.pending_commands() == []


async def test_completing_twice_or_unknown_is_an_error(log_target: str) -> None:
    """complete_command refuses a command already completed, an unknown id, and readers."""
    path = log_target
    async with open_log(path) as log:
        cid = await log.submit_command("taint", {"ref": "a/b"})
        await log.complete_command(cid, {})
        with pytest.raises(EventLogError, match=f"command {cid} \\(taint\\) was already completed"):
            await log.complete_command(cid, {})
        with pytest.raises(EventLogError, match="there is no command 77"):
            await log.complete_command(77, {})
        with pytest.raises(EventLogError, match="not JSON-serializable"):
            await log.submit_command("bad", {"x": object()})
        async with open_log(path, writer=False) as reader:
            with pytest.raises(ReadOnlyLogError):
                await reader.complete_command(cid, {})


# ---------------------------------------------------------------- abort, manual commit, cancellation


async def test_abort_loses_only_the_pending_appends(log_target: str) -> None:
    """abort() fails uncommitted appends with CommitError('log aborted') and keeps committed ones."""
    path = log_target
    async with open_log(path, autocommit=False) as log:
        committed = [asyncio.ensure_future(log.append("thing", f"t{i}", 0, ThingCreated(name="c"))) for i in range(3)]
        await asyncio.sleep(0)
        await log.commit()
        pending = [asyncio.ensure_future(log.append("thing", f"t{i}", 1, ThingChanged(n=1))) for i in range(3)]
        await asyncio.sleep(0)
        assert log.pending() == 3
        await log.abort()
        for fut in pending:
            with pytest.raises(CommitError, match="log aborted"):
                await fut
        assert [(await f).seq for f in committed] == [1, 2, 3]
        with pytest.raises(LogClosedError):
            await log.append("thing", "t0", 1, ThingChanged(n=1))
    async with open_log(path) as log:
        assert log.last_seq == 3
        assert (await log.verify()).ok
        assert await log.entity_seq("thing", "t0") == 1


async def test_abort_during_a_batch_rolls_it_back(log_target: str) -> None:
    """An abort while a batch is being written rolls that batch back; its appenders are told."""
    path = log_target
    async with open_log(path) as log:
        if isinstance(log, EventLog):
            log._inline_rows = 0  # every SQLite batch through the connection's thread: a batch that is in flight
        await log.append("thing", "a", 0, ThingCreated(name="a"))
        appends = [asyncio.ensure_future(log.append("thing", f"b{i}", 0, ThingCreated(name="b"))) for i in range(50)]
        # Poll the writer's private queue until it has taken the batch: that moment is what is tested.
        while log._incoming or log.pending() < 50:  # noqa: ASYNC110
            await asyncio.sleep(0)
        assert log.pending() == 50
        log._aborting = True  # what abort() sets first, here while the batch is in flight
        await log.abort()
        results = await asyncio.gather(*appends, return_exceptions=True)
        assert all(isinstance(r, CommitError) and "log aborted" in str(r) for r in results)
    async with open_log(path) as log:
        assert log.last_seq == 1


async def _deterministic_run(path: Path) -> None:
    async with open_log(path, autocommit=False, max_batch=7, now=Clock()) as log:
        tasks = []
        for step in range(5):
            for i in range(6):
                tasks.append(asyncio.ensure_future(log.append("thing", f"t{i}", step, ThingChanged(n=step * i))))
            await asyncio.sleep(0)
            await log.commit()
        await asyncio.gather(*tasks)


async def test_manual_commits_make_identical_logs(tmp_path: Path) -> None:
    """autocommit=False + commit() at fixed points: the same appends give byte-identical logs."""
    await _deterministic_run(tmp_path / "one.db")
    await _deterministic_run(tmp_path / "two.db")
    one, two = dump(tmp_path / "one.db"), dump(tmp_path / "two.db")
    assert len(one["events"]) == 30
    assert one == two
    with raw(tmp_path / "one.db") as a, raw(tmp_path / "two.db") as b:
        q = "SELECT key, value FROM meta ORDER BY key"
        assert a.execute(q).fetchall() == b.execute(q).fetchall()


async def test_manual_mode_waits_for_commit(log_target: str) -> None:
    """With autocommit=False nothing is written until commit(); pending() counts the waiting appends."""
    path = log_target
    async with open_log(path, autocommit=False) as log, open_log(path, writer=False) as reader:
        fut = asyncio.ensure_future(log.append("thing", "a", 0, ThingCreated(name="a")))
        await asyncio.sleep(0.02)
        assert not fut.done()
        assert log.pending() == 1
        assert [r async for r in reader.read()] == []
        await log.commit()
        assert (await fut).seq == 1
        assert log.pending() == 0
        await log.commit()  # nothing pending: returns at once


async def test_commit_with_autocommit_waits_for_everything_appended(log_target: str) -> None:
    """With autocommit, commit() returns once every append made before it is committed."""
    async with open_log(log_target, max_wait=0.05) as log:
        futs = [asyncio.ensure_future(log.append("thing", f"t{i}", 0, ThingCreated(name="x"))) for i in range(10)]
        await asyncio.sleep(0)
        await log.commit()
        assert all(f.done() for f in futs)
        assert log.last_seq == 10


async def test_cancelled_appender_does_not_corrupt_the_batch(log_target: str) -> None:
    """Cancelling a task waiting in append: its event may still commit, the others are unaffected."""
    path = log_target
    async with open_log(path) as log:
        tasks = [asyncio.ensure_future(log.append("thing", f"t{i}", 0, ThingCreated(name="x"))) for i in range(20)]
        await asyncio.sleep(0)
        tasks[5].cancel()
        tasks[6].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert [i for i, r in enumerate(done) if isinstance(r, asyncio.CancelledError)] == [5, 6]
        assert log.last_seq == 20  # the cancelled appends were committed all the same
        rec = await log.append("thing", "t5", 1, ThingChanged(n=1))
        assert (rec.seq, rec.entity_seq) == (21, 2)
        assert (await log.verify()).ok


async def test_max_wait_gathers_appends_into_one_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With max_wait, appends arriving within the wait share one transaction."""
    from eventlog import _log

    calls = 0
    original = _log._write_batch_sync

    def counting(*args: Any) -> None:
        nonlocal calls
        calls += 1
        original(*args)

    monkeypatch.setattr(_log, "_write_batch_sync", counting)
    async with open_log(tmp_path / "log.db", max_wait=0.05) as log:

        async def late(i: int) -> Record:
            await asyncio.sleep(0.005)
            return await log.append("thing", f"t{i}", 0, ThingCreated(name="x"))

        first = asyncio.ensure_future(log.append("thing", "first", 0, ThingCreated(name="x")))
        await asyncio.gather(first, *(late(i) for i in range(5)))
        assert log.last_seq == 6
    assert calls == 1


def test_aiosqlite_still_has_the_primitive_the_writer_uses() -> None:
    """The writer runs each batch through aiosqlite's Connection._execute; fail loudly if it goes away."""
    import aiosqlite

    params = list(inspect.signature(aiosqlite.Connection._execute).parameters)
    assert params == ["self", "fn", "args", "kwargs"]


async def test_reader_waits_for_the_schema_a_starting_writer_is_creating(tmp_path: Path) -> None:
    """A reader that arrives between a writer's lock and its schema commit waits for the schema (no false
    'no event log here')."""
    import sqlite3

    from eventlog._lock import WriterLock
    from eventlog._schema import APPLICATION_ID, CREATE_SCHEMA, SCHEMA_VERSION

    path = tmp_path / "starting.db"
    lock = WriterLock(str(path))  # the writer has its lock; its database is still empty
    sqlite3.connect(path).close()

    def create_schema() -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN")
        for statement in CREATE_SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.executemany("INSERT INTO meta VALUES (?, ?)",
                       [("schema_version", str(SCHEMA_VERSION)), ("created_at", "0")])
        db.execute("COMMIT")
        db.close()

    async def writer_finishes_starting() -> None:
        await anyio.sleep(0.2)
        await anyio.to_thread.run_sync(create_schema)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer_finishes_starting)
            async with EventLog.open(path, writer=False) as log:
                assert log.last_seq == 0
    finally:
        lock.release()


async def test_reader_of_an_empty_database_without_a_writer_is_told_there_is_no_log(tmp_path: Path) -> None:
    """With no writer starting, an empty database is reported at once as not an event log."""
    import sqlite3

    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    with anyio.fail_after(1.0), pytest.raises(LogNotFoundError, match="no event log here"):
        async with EventLog.open(path, writer=False):
            pass


async def test_a_small_entity_cache_evicts_old_tips_and_stays_correct(log_target: str) -> None:
    """With the tip cache far smaller than the entities, tips are evicted and reloaded: every append still
    gets the next entity_seq, a stale expectation still fails, and the cache stays bounded."""
    path = log_target
    n, rounds = 60, 4
    async with open_log(path, entity_cache_size=10) as log:
        for r in range(rounds):
            for i in range(n):  # one append per batch: the cache is trimmed after each
                assert (await log.append("thing", f"t{i}", r, ThingChanged(n=r))).entity_seq == r + 1
                assert log._hot_count() <= 10
        with pytest.raises(eventlog.ConcurrencyError):
            await log.append("thing", "t0", rounds - 1, ThingChanged(n=99))  # t0 (evicted early) is at `rounds`
        assert (await log.append("thing", "t0", rounds, ThingChanged(n=99))).entity_seq == rounds + 1
    report = await _verify(path)
    assert report.ok, report


async def _verify(path: str) -> Any:
    async with open_log(path) as log:
        return await log.verify()


async def test_a_writer_can_wait_for_the_lease(log_target: str) -> None:
    """lease_wait: a second writer waits (a standby) and takes over the moment the first one closes, on either
    backend; without it, it is refused at once."""
    async with open_log(log_target) as first:
        await first.append("thing", "a", 0, ThingCreated(name="a"))
        with pytest.raises(eventlog.WriterLockedError):
            async with open_log(log_target, lease_wait=0):
                pass  # pragma: no cover
        await first.renew_lease()
        waiting = asyncio.ensure_future(_take_over(log_target))
        await asyncio.sleep(0.2)
        assert not waiting.done()
    assert await asyncio.wait_for(waiting, 10) == 2


async def _take_over(target: str) -> int:
    async with open_log(target, lease_wait=None) as log:
        lease = await log.lease()
        assert lease is not None
        return (await log.append("thing", "a", 1, ThingChanged(n=1))).seq


# ---------------------------------------------------------------- durability


@pytest.mark.parametrize(
    ("durability", "synchronous"),
    [pytest.param("process", 1, id="process-NORMAL"), pytest.param("power", 2, id="power-FULL")],
)
async def test_durability_sets_how_sqlite_syncs(tmp_path: Path, durability: str, synchronous: int) -> None:
    """durability="process" runs WAL with synchronous=NORMAL, "power" with FULL, on every connection."""
    path = tmp_path / "log.db"
    async with open_log(path, durability=durability) as log, open_log(path, writer=False,
                                                                       durability=durability) as reader:
        assert durability == log.durability
        for db in (cast(EventLog, log)._wdb, cast(EventLog, log)._rdb, cast(EventLog, reader)._rdb):
            assert [(synchronous,)] == list(await db.execute_fetchall("PRAGMA synchronous"))
        assert list(await cast(EventLog, log)._wdb.execute_fetchall("PRAGMA journal_mode")) == [("wal",)]


async def test_the_default_durability_is_process(tmp_path: Path) -> None:
    """Without durability=, a log survives process crashes (the documented default)."""
    async with open_log(tmp_path / "log.db") as log:
        assert log.durability == eventlog.DEFAULT_DURABILITY
    assert eventlog.DEFAULT_DURABILITY == "process"


async def test_an_unknown_durability_is_refused_with_the_choices(tmp_path: Path) -> None:
    """durability="disk" is refused, naming the two choices; no file is created."""
    with pytest.raises(ValueError, match=r"durability must be 'process' .* or 'power' .*, got 'disk'"):
        async with open_log(tmp_path / "log.db", durability="disk"):
            pass  # pragma: no cover
    assert not (tmp_path / "log.db").exists()


@pytest.mark.parametrize("n", [1, 2, 3, 255, 256, 257, 700])
async def test_batch_rows_of_any_size(tmp_path: Path, n: int) -> None:
    """A batch of n appends (new entities and moves, SQLite's multi-row inserts of 1..256 rows) stores each row."""
    path = str(tmp_path / "log.db")
    async with open_log(path, autocommit=False, max_batch=10_000) as log:
        firsts = [log.submit("thing", f"t{i:04d}", 0, ThingCreated(name=f"t{i}"), new=i % 2 == 0) for i in range(n)]
        await log.commit()
        moves = [log.submit("thing", f"t{i:04d}", 1, ThingChanged(n=i)) for i in range(n)]
        moves.append(log.submit("thing", "t0000", 2, ThingChanged(n=-1)))
        await log.commit()
        recs = [f.result() for f in firsts + moves]
        assert [r.seq for r in recs] == list(range(1, 2 * n + 2))
        report = await log.verify()
        assert report.ok, report.problems
        assert (report.events, report.entities) == (2 * n + 1, n)
        assert [r async for r in log.read()] == recs
    with raw(path) as db:
        rows = db.execute("SELECT seq, entity_seq, prev_seq FROM events ORDER BY seq").fetchall()
        tips = db.execute("SELECT entity_id, last_seq, last_entity_seq FROM entities ORDER BY entity_id").fetchall()
    assert rows == ([(i + 1, 1, None) for i in range(n)] + [(n + i + 1, 2, i + 1) for i in range(n)]
                    + [(2 * n + 1, 3, n + 1)])
    assert tips == [(f"t{i:04d}", 2 * n + 1 if i == 0 else n + i + 1, 3 if i == 0 else 2) for i in range(n)]


async def test_the_wal_stays_bounded_while_the_writer_never_pauses(tmp_path: Path) -> None:
    """Appends that never let up keep the WAL to about SQLite's checkpoint size: each checkpoint completes, so the
    WAL is reused from its start (a checkpointer beside the writer never caught up and the WAL grew without bound)."""
    path = str(tmp_path / "log.db")
    wal = Path(path + "-wal")
    async with open_log(path) as log:
        largest = 0
        for n in range(0, 60_000, 500):
            await asyncio.gather(*(log.append("thing", f"t{n + i}", 0, ThingCreated(name="x" * 400))
                                   for i in range(500)))
            largest = max(largest, wal.stat().st_size)  # noqa: ASYNC240 - one stat a batch
        size = Path(path).stat().st_size  # noqa: ASYNC240 - one stat
        assert (await log.verify()).ok
    assert size > 3 * 4096 * 1000  # more was written than one checkpoint's worth of WAL...
    assert largest < 2 * 4096 * 1000  # ...yet the WAL never held much more than that
