"""Every error the event log raises on purpose: provoked for real, message checked."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from eventlog_helpers import HELPERS, ThingChanged, ThingCreated, ThingTouched, open_log, raw

import eventlog
from eventlog import (
    SCHEMA_VERSION,
    CommitError,
    ConcurrencyError,
    CorruptLogError,
    Event,
    EventLog,
    EventLogError,
    FingerprintMismatch,
    LogClosedError,
    LogNotFoundError,
    ReadOnlyLogError,
    Record,
    SchemaVersionError,
    WantbuildError,
    WriterLockedError,
    event,
    redact,
)

pytestmark = pytest.mark.timeout(30)


async def make_log(path: Path | str, n: int = 3, **kwargs: object) -> None:
    """A small log: thing a with ``n`` events."""
    async with open_log(path, **kwargs) as log:
        await log.append("thing", "a", 0, ThingCreated(name="a"))
        for i in range(1, n):
            await log.append("thing", "a", i, ThingChanged(n=i))


def test_every_error_is_a_wantbuild_error() -> None:
    """All log errors derive from EventLogError and WantbuildError; a few also from the builtin that fits."""
    errors = [ConcurrencyError, SchemaVersionError, FingerprintMismatch, CorruptLogError, CommitError,
              LogClosedError, LogNotFoundError, ReadOnlyLogError, WriterLockedError]
    assert all(issubclass(e, EventLogError) and issubclass(e, WantbuildError) for e in errors)
    assert issubclass(LogClosedError, RuntimeError)
    assert issubclass(LogNotFoundError, FileNotFoundError)


# ---------------------------------------------------------------- ConcurrencyError


async def test_concurrency_error_fails_one_append_and_the_batch_commits(log_target: str) -> None:
    """In one batch, the stale append gets ConcurrencyError (entity, both numbers); the rest commit."""
    path = log_target
    async with open_log(path, autocommit=False) as log:
        first = asyncio.ensure_future(log.append("thing", "a", 0, ThingCreated(name="a")))
        await asyncio.sleep(0)  # let the task call append: commit() covers the appends made so far
        await log.commit()
        await first
        batch = [
            asyncio.ensure_future(log.append("thing", "b", 0, ThingCreated(name="b"))),
            asyncio.ensure_future(log.append("thing", "a", 5, ThingChanged(n=5))),
            asyncio.ensure_future(log.append("thing", "c", 0, ThingCreated(name="c"))),
        ]
        await asyncio.sleep(0)
        assert log.pending() == 3
        await log.commit()
        assert log.pending() == 0
        with pytest.raises(ConcurrencyError) as info:
            await batch[1]
        assert str(
            info.value
        ) == "thing 'a': append expected entity_seq 5 but the log has 1; reload the entity and retry"
        assert [(await batch[0]).seq, (await batch[2]).seq] == [2, 3]
    async with open_log(path) as log:
        assert [(r.entity_id, r.entity_seq) async for r in log.read()] == [("a", 1), ("b", 1), ("c", 1)]


# ---------------------------------------------------------------- SchemaVersionError


async def test_newer_schema_version_is_refused_with_the_fix(tmp_path: Path) -> None:
    """A log with a newer schema version raises SchemaVersionError naming file, both versions, the fix."""
    path = tmp_path / "log.db"
    await make_log(path)
    with raw(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    for writer in (True, False):
        with pytest.raises(SchemaVersionError) as info:
            async with open_log(path, writer=writer):
                pass  # pragma: no cover
        msg = str(info.value)
        assert str(path) in msg
        assert f"schema version {SCHEMA_VERSION + 1}" in msg
        assert f"reads schema version {SCHEMA_VERSION}" in msg
        assert "upgrade wantbuild" in msg
    assert not EventLog.writer_active(path)  # the failed open released the writer lock


async def test_unknown_older_schema_version_is_refused(tmp_path: Path) -> None:
    """A log claiming schema version 0 is refused: there is no upgrade from it."""
    path = tmp_path / "log.db"
    await make_log(path)
    with raw(path) as db:
        db.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(SchemaVersionError, match="has no upgrade from 0"):
        async with open_log(path):
            pass  # pragma: no cover


# ---------------------------------------------------------------- FingerprintMismatch


async def test_fingerprint_mismatch_names_both_and_the_fix(log_target: str) -> None:
    """Opening with another graph fingerprint raises FingerprintMismatch naming file, both, the fix."""
    path = log_target
    await make_log(path, fingerprint="graph-one")
    with pytest.raises(FingerprintMismatch) as info:
        async with open_log(path, fingerprint="graph-two"):
            pass  # pragma: no cover
    msg = str(info.value)
    for part in (redact(path), "graph-one", "graph-two", "accept_fingerprint_change=True", "--accept-graph-change"):
        assert part in msg
    async with open_log(path, fingerprint="graph-one") as log:  # nothing was changed by the refusal
        assert log.fingerprint == "graph-one"


async def test_accepted_fingerprint_change_is_recorded_with_history(tmp_path: Path) -> None:
    """accept_fingerprint_change records the new fingerprint and keeps the old one in meta history."""
    path = tmp_path / "log.db"
    await make_log(path, fingerprint="graph-one")
    async with open_log(path, fingerprint="graph-two", accept_fingerprint_change=True) as log:
        assert log.fingerprint == "graph-two"
        await log.append("thing", "a", 3, ThingChanged(n=3))
    async with open_log(path, fingerprint="graph-two") as log:
        assert log.last_seq == 4
    with pytest.raises(FingerprintMismatch):
        async with open_log(path, fingerprint="graph-one"):
            pass  # pragma: no cover
    with raw(path) as db:
        history = dict(db.execute("SELECT key, value FROM meta").fetchall())["fingerprint_history"]
    assert '"fingerprint":"graph-one"' in history
    assert '"replaced_by":"graph-two"' in history


async def test_no_fingerprint_means_no_check_and_first_one_is_recorded(log_target: str) -> None:
    """A log created without a fingerprint records the first one it is opened with."""
    path = log_target
    await make_log(path)
    async with open_log(path) as log:
        assert log.fingerprint is None
    async with open_log(path, fingerprint="graph-one") as log:
        assert log.fingerprint == "graph-one"
    async with open_log(path) as log:
        assert log.fingerprint == "graph-one"


# ---------------------------------------------------------------- CorruptLogError


async def test_unknown_event_type_in_a_row_names_its_seq(tmp_path: Path) -> None:
    """A row whose type is unknown to the registry: read raises CorruptLogError with seq and type."""
    path = tmp_path / "log.db"
    await make_log(path)
    with raw(path) as db:
        db.execute("INSERT INTO event_types VALUES (99, 'Ghost', 3)")
        db.execute("UPDATE events SET type_key = 99 WHERE seq = 2")
    async with open_log(path) as log:
        with pytest.raises(CorruptLogError) as info:
            [r async for r in log.read()]
        assert info.value.seq == 2
        assert str(info.value).startswith("seq 2: ")
        assert "unknown event type Ghost v3" in str(info.value)
        assert str(path) in str(info.value)
        report = await log.verify()
    assert not report.ok
    assert [p.seq for p in report.problems] == [2]
    assert "unknown event type Ghost v3" in report.problems[0].message


async def test_known_name_unknown_version_lists_known_versions(tmp_path: Path) -> None:
    """An unknown version of a known event name says which versions this wantbuild knows."""
    path = tmp_path / "log.db"
    await make_log(path)
    with raw(path) as db:
        db.execute("INSERT INTO event_types VALUES (98, 'ThingChanged', 7)")
        db.execute("UPDATE events SET type_key = 98 WHERE seq = 3")
    async with open_log(path) as log:
        with pytest.raises(CorruptLogError, match=r"seq 3: .*unknown event type ThingChanged v7 .*versions \[1\]"):
            await log.history("thing", "a")


async def test_type_key_missing_from_event_types(tmp_path: Path) -> None:
    """A row pointing at no event_types row is reported with its seq."""
    path = tmp_path / "log.db"
    await make_log(path)
    with raw(path) as db:
        db.execute("UPDATE events SET type_key = 1234 WHERE seq = 1")
    async with open_log(path, writer=False) as log:
        with pytest.raises(CorruptLogError, match=r"seq 1: .*event type key 1234 is not in the event_types table"):
            [b async for b in log.read_batches()]


async def test_undecodable_payload_names_its_seq(tmp_path: Path) -> None:
    """A payload that does not match its type: CorruptLogError with the seq and msgspec's reason."""
    path = tmp_path / "log.db"
    await make_log(path)
    with raw(path) as db:
        db.execute("""UPDATE events SET payload = CAST('{"n": "three"}' AS BLOB) WHERE seq = 3""")
        db.execute("UPDATE events SET payload = CAST('{not json' AS BLOB) WHERE seq = 2")
    async with open_log(path, writer=False) as log:  # a writer would refuse the damaged log
        with pytest.raises(CorruptLogError) as info:
            [r async for r in log.read(from_seq=3)]
        assert info.value.seq == 3
        assert "undecodable payload for ThingChanged v1" in str(info.value)
        assert "Expected `int`, got `str`" in str(info.value)
        with pytest.raises(CorruptLogError, match=r"seq 2: .*undecodable payload"):
            [r async for r in log.read()]
        report = await log.verify()
    assert [p.seq for p in report.problems] == [2, 3]


async def test_verify_decodes_strictly_unknown_and_missing_fields_are_problems(tmp_path: Path) -> None:
    """verify() names, with their seq, a payload with a field its type does not have (even when every field of
    the type has a default) and a payload missing a required field; read() stays lenient about the former."""
    path = tmp_path / "log.db"
    async with open_log(path) as log:
        await log.append("thing", "a", 0, ThingCreated(name="a"))
        await log.append("thing", "a", 1, ThingTouched(by="me"))
        await log.append("thing", "a", 2, ThingChanged(n=2))
        await log.append("thing", "a", 3, ThingChanged(n=3))
    with raw(path) as db:
        db.execute("""UPDATE events SET payload = CAST('{"not": "this event"}' AS BLOB) WHERE seq = 2""")
        db.execute("""UPDATE events SET payload = CAST('{"n": 3, "colour": "red"}' AS BLOB) WHERE seq = 4""")
        db.execute("""UPDATE events SET payload = CAST('{"note": "no n"}' AS BLOB) WHERE seq = 3""")
    async with open_log(path, writer=False) as log:
        assert [ThingTouched(), ThingChanged(n=3)] == [r.event async for r in log.read(types=["ThingTouched"])] + [
            r.event async for r in log.read(from_seq=4)]
        report = await log.verify()
    assert [p.seq for p in report.problems] == [2, 3, 4]
    assert "undecodable payload for ThingTouched v1: Object contains unknown field `not`" in report.problems[0].message
    assert "Object missing required field `n`" in report.problems[1].message
    assert "Object contains unknown field `colour`" in report.problems[2].message
    assert str(report.problems[0]).startswith("seq 2: ")


async def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    """A file that is not SQLite raises CorruptLogError naming it, for writers and readers alike."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    for writer in (True, False):
        with pytest.raises(CorruptLogError) as info:
            async with open_log(path, writer=writer):
                pass  # pragma: no cover
        assert f"{path}: not a wantbuild event log: not a SQLite database" in str(info.value)
    assert path.read_bytes().startswith(b"these are my notes")


async def test_a_sqlite_database_of_something_else(tmp_path: Path) -> None:
    """A SQLite database with other tables is refused, not modified."""
    path = tmp_path / "other.db"
    with raw(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(CorruptLogError, match=r"other\.db: not a wantbuild event log .*tables: customers"):
        async with open_log(path):
            pass  # pragma: no cover
    with raw(path) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall() == [("customers",)]


# ---------------------------------------------------------------- CommitError


async def test_disk_full_fails_the_batch_and_nothing_is_half_written(tmp_path: Path) -> None:
    """SQLITE_FULL (max_page_count): the batch fails with CommitError, rolls back, and later appends work."""
    path = tmp_path / "log.db"
    async with open_log(path) as log:
        await log.append("thing", "a", 0, ThingCreated(name="a"))
        await log.append("thing", "b", 0, ThingCreated(name="b"))
        wdb = cast(EventLog, log)._wdb  # the writer's connection: max_page_count is a per-connection limit
        pages = (await wdb.execute_fetchall("PRAGMA page_count"))[0][0]
        await wdb.execute(f"PRAGMA max_page_count = {pages}")
        big = "x" * 20_000
        results = await asyncio.gather(
            log.append("thing", "a", 1, ThingChanged(n=1, note=big)),
            log.append("thing", "new", 0, ThingCreated(name=big)),
            return_exceptions=True,
        )
        for err in results:
            assert isinstance(err, CommitError)
            assert str(path) in str(err)
            assert "database or disk is full" in str(err)
            assert isinstance(err.__cause__, sqlite3.OperationalError)
        assert log.last_seq == 2
        assert await log.entity_seq("thing", "a") == 1
        await wdb.execute("PRAGMA max_page_count = 1073741823")
        # The in-memory tips rolled back: the same expected seqs work now, seq continues without a gap.
        rec_a = await log.append("thing", "a", 1, ThingChanged(n=1))
        rec_new = await log.append("thing", "new", 0, ThingCreated(name="new"))
        assert [(rec_a.seq, rec_a.entity_seq), (rec_new.seq, rec_new.entity_seq)] == [(3, 2), (4, 1)]
        assert (await log.verify()).ok
    async with open_log(path) as log:
        assert [r.seq async for r in log.read()] == [1, 2, 3, 4]


async def test_commit_raises_for_a_failed_batch(tmp_path: Path) -> None:
    """With autocommit=False, commit() raises CommitError when its batch cannot commit."""
    path = tmp_path / "log.db"
    async with open_log(path, autocommit=False) as log:
        wdb = cast(EventLog, log)._wdb
        pages = (await wdb.execute_fetchall("PRAGMA page_count"))[0][0]
        await wdb.execute(f"PRAGMA max_page_count = {pages}")
        pending = asyncio.ensure_future(log.append("thing", "a", 0, ThingCreated(name="x" * 20_000)))
        await asyncio.sleep(0)
        with pytest.raises(CommitError, match=r"commit failed: .*database or disk is full"):
            await log.commit()
        with pytest.raises(CommitError):
            await pending
        await wdb.execute("PRAGMA max_page_count = 1073741823")
        later = asyncio.ensure_future(log.append("thing", "a", 0, ThingCreated(name="a")))
        await asyncio.sleep(0)
        await log.commit()
        assert (await later).seq == 1


async def test_lock_held_past_busy_timeout_fails_the_batch(tmp_path: Path) -> None:
    """A write lock held by another connection past the busy timeout: CommitError, then recovery."""
    path = tmp_path / "log.db"
    async with open_log(path, busy_timeout=0.05) as log:
        await log.append("thing", "a", 0, ThingCreated(name="a"))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(CommitError) as info:
                await log.append("thing", "a", 1, ThingChanged(n=1))
            assert str(path) in str(info.value)
            assert "database is locked" in str(info.value)
            assert "nothing of it was written" in str(info.value)
        finally:
            other.execute("ROLLBACK")
            other.close()
        rec = await log.append("thing", "a", 1, ThingChanged(n=1))
        assert (rec.seq, rec.entity_seq) == (2, 2)


# ---------------------------------------------------------------- closed, read-only, missing


async def test_closed_log_refuses_everything(log_target: str) -> None:
    """After close: append, read, history, commands and commit raise LogClosedError."""
    path = log_target
    async with open_log(path) as log:
        pass
    with pytest.raises(LogClosedError, match="closed"):
        await log.append("thing", "a", 0, ThingCreated(name="a"))
    with pytest.raises(LogClosedError):
        await log.history("thing", "a")
    with pytest.raises(LogClosedError):
        await log.submit_command("noop", {})
    with pytest.raises(LogClosedError):
        await log.commit()
    await log.close()  # closing twice is harmless


async def test_reader_cannot_append(log_target: str) -> None:
    """A log opened with writer=False refuses appends with ReadOnlyLogError."""
    path = log_target
    await make_log(path)
    async with open_log(path, writer=False) as log:
        with pytest.raises(ReadOnlyLogError, match="writer=False"):
            await log.append("thing", "a", 3, ThingChanged(n=3))
        assert log.last_seq == 3


async def test_reader_of_a_missing_log(tmp_path: Path) -> None:
    """writer=False on a path with no log raises LogNotFoundError and creates nothing."""
    path = tmp_path / "missing.db"
    with pytest.raises(LogNotFoundError, match=r"missing\.db: no event log here"):
        async with open_log(path, writer=False):
            pass  # pragma: no cover
    assert not path.exists()


async def test_appending_an_unregistered_event(log_target: str) -> None:
    """An event class not in the log's registry is refused before it is queued."""

    @event("Stray", 1, registry=eventlog.EventRegistry())
    class Stray(Event, frozen=True):
        x: int

    async with open_log(log_target) as log:
        with pytest.raises(EventLogError, match="Stray: it is not a registered event type"):
            await log.append("thing", "a", 0, Stray(x=1))
        with pytest.raises(EventLogError, match="events are Event subclasses"):
            await log.append("thing", "a", 0, "not an event")  # type: ignore[arg-type]
        assert log.pending() == 0


async def test_bad_entity_names_fail_that_append_only(log_target: str) -> None:
    """An empty or non-string entity kind or id fails its own append; the batch commits."""
    async with open_log(log_target) as log:
        results = await asyncio.gather(
            log.append("thing", "", 0, ThingCreated(name="x")),
            log.append("thing", "ok", 0, ThingCreated(name="x")),
            log.append(7, "x", 0, ThingCreated(name="x")),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        assert isinstance(results[0], EventLogError)
        assert "must be non-empty strings" in str(results[0])
        assert isinstance(results[1], Record)
        assert isinstance(results[2], EventLogError)


# ---------------------------------------------------------------- WriterLockedError


async def test_second_writer_in_the_same_process_is_refused(tmp_path: Path) -> None:
    """A second writer on the same log raises WriterLockedError; readers are welcome."""
    path = tmp_path / "log.db"
    async with open_log(path) as log:
        assert EventLog.writer_active(path)
        with pytest.raises(WriterLockedError) as info:
            async with open_log(path):
                pass  # pragma: no cover
        msg = str(info.value)
        assert str(path) in msg
        assert "a wantbuild runtime is already running on this log" in msg
        assert "command inbox" in msg
        async with open_log(path, writer=False) as reader:
            assert reader.last_seq == 0
        await log.append("thing", "a", 0, ThingCreated(name="a"))  # the refused open left the writer alone
    assert not EventLog.writer_active(path)


def test_writer_in_another_process_holds_the_lock(tmp_path: Path) -> None:
    """A writer in another process makes writer_active true and a second writer fail; its death frees it."""
    path = tmp_path / "log.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPERS.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(HELPERS / "hold_writer.py"), str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "holding\n"
        assert EventLog.writer_active(path)
        with pytest.raises(WriterLockedError, match="already running"):
            asyncio.run(_open_and_close(path))
        proc.kill()
        proc.wait(timeout=10)
        assert not EventLog.writer_active(path)
        asyncio.run(_open_and_close(path))
    finally:
        if proc.poll() is None:  # pragma: no cover - only when an assertion failed above
            proc.kill()
            proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        if proc.stdout is not None:
            proc.stdout.close()


async def _open_and_close(path: Path) -> None:
    async with open_log(path):
        pass


def test_writer_active_without_a_lock_file(tmp_path: Path) -> None:
    """writer_active is false for a log nobody ever opened as writer."""
    assert not EventLog.writer_active(tmp_path / "nothing.db")


async def test_opening_a_log_another_process_keeps_locked_says_what_to_do(tmp_path: Path) -> None:
    """Opening for writing while another connection holds the write lock past the busy timeout fails with a
    message that says it is not a runtime and how to find the holder, not a bare "database is locked"."""
    path = tmp_path / "log.db"
    async with open_log(path):
        pass
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(EventLogError) as info:
            async with open_log(path, busy_timeout=0.05):
                pass
        assert "held its write lock for more than 0.05 s" in str(info.value)
        assert f"fuser {path}" in str(info.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
