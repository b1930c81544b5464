"""Faults injected into the SQLite writer: failed batches, bugs in the writer, and what commit() reports.

These reach into the SQLite backend's internals (the function that writes a batch, the writer's connection) to
make a fault happen at an exact point; behaviour that any backend must show is in ``test_eventlog_contract.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any, cast

import pytest
from eventlog_helpers import ThingChanged, ThingCreated, open_log

from eventlog import CommitError, EventLog, EventLogError, Record, WriterFailedError
from eventlog import _log as log_module

pytestmark = pytest.mark.timeout(30)


async def _fail_without_yielding(*args: Any) -> None:
    """A batch write that fails at once, without a thread round trip: the writer runs on without yielding."""
    raise sqlite3.OperationalError("disk I/O error")


async def test_commit_sees_its_failed_batch_after_many_later_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """commit() raises for its own failed batch even when 100 later batches failed before it looked."""
    monkeypatch.setattr(log_module, "_in_db_thread", _fail_without_yielding)
    async with open_log(tmp_path / "log.db", max_batch=1) as log:
        first = asyncio.ensure_future(log.append("thing", "a", 0, ThingCreated(name="a")))
        commit = asyncio.ensure_future(log.commit())
        later = [asyncio.ensure_future(log.append("thing", f"b{i}", 0, ThingCreated(name="b"))) for i in range(100)]
        results = await asyncio.gather(first, commit, *later, return_exceptions=True)
        assert [CommitError] * 102 == [type(r) for r in results]
        assert "commit failed: " in str(results[1])
        assert "disk I/O error" in str(results[1])
        assert log._commit_waits == []  # nothing is kept for commits that no longer wait


async def test_a_failed_entity_lookup_fails_its_batch_and_the_writer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error while loading entity tips fails that batch with CommitError; later appends work."""
    async with open_log(tmp_path / "log.db") as log:
        await log.append("thing", "a", 0, ThingCreated(name="a"))
        real = cast(EventLog, log)._wdb.execute_fetchall

        async def broken(*args: Any) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(cast(EventLog, log)._wdb, "execute_fetchall", broken)
        results = await asyncio.gather(
            log.append("thing", "new", 0, ThingCreated(name="n")),
            log.append("thing", "a", 1, ThingChanged(n=1)),
            return_exceptions=True,
        )
        assert [CommitError, CommitError] == [type(r) for r in results]
        assert "nothing of it was written: OperationalError: disk I/O error" in str(results[0])
        monkeypatch.setattr(cast(EventLog, log)._wdb, "execute_fetchall", real)
        rec = await log.append("thing", "new", 0, ThingCreated(name="n"))
        assert (rec.seq, rec.entity_seq) == (2, 1)


async def test_a_bug_in_the_writer_is_not_a_commit_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-database exception while writing fails the batch with WriterFailedError (caused by it) and stops
    the writer: later appends and commit() are refused, and closing the log raises the bug itself."""
    path = tmp_path / "log.db"
    seen: list[BaseException | Record | None] = []

    def buggy(*args: Any) -> None:
        raise KeyError("a bug in the writer")

    async def session() -> None:
        async with open_log(path) as log:
            await log.append("thing", "a", 0, ThingCreated(name="a"))
            monkeypatch.setattr(log_module, "_write_batch_sync", buggy)
            seen.extend(await asyncio.gather(
                *(log.append("thing", f"b{i}", 0, ThingCreated(name="b")) for i in range(5)), return_exceptions=True
            ))
            seen.extend(await asyncio.gather(log.append("thing", "a", 1, ThingChanged(n=1)), log.commit(),
                                             return_exceptions=True))

    with pytest.raises(KeyError, match="a bug in the writer"):
        await session()
    assert [WriterFailedError] * 7 == [type(r) for r in seen]
    err = seen[0]
    assert isinstance(err, WriterFailedError)
    assert not isinstance(err, CommitError)
    assert isinstance(err.__cause__, KeyError)
    assert f"{path}: the log's writer stopped on an unexpected error (a bug" in str(err)
    assert "KeyError: 'a bug in the writer'" in str(err)
    monkeypatch.undo()
    async with open_log(path) as log:
        assert [r.seq async for r in log.read()] == [1]  # nothing of the failed batch was written
        assert (await log.verify()).ok


async def test_a_programming_error_from_sqlite_is_a_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite3.ProgrammingError (the API used wrongly, e.g. a closed connection) stops the writer too."""
    seen: list[BaseException | Record] = []

    def misuse(*args: Any) -> None:
        raise sqlite3.ProgrammingError("Cannot operate on a closed database.")

    async def session() -> None:
        async with open_log(tmp_path / "log.db") as log:
            monkeypatch.setattr(log_module, "_write_batch_sync", misuse)
            seen.extend(await asyncio.gather(log.append("thing", "a", 0, ThingCreated(name="a")),
                                             return_exceptions=True))

    with pytest.raises(sqlite3.ProgrammingError):
        await session()
    assert [WriterFailedError] == [type(r) for r in seen]
    assert isinstance(seen[0], WriterFailedError)
    assert isinstance(seen[0].__cause__, sqlite3.ProgrammingError)


async def test_database_errors_remain_commit_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kind of database error (not the API's misuse) fails only its batch, with CommitError."""
    errors = [sqlite3.OperationalError("database is locked"), sqlite3.IntegrityError("UNIQUE constraint failed"),
              sqlite3.DatabaseError("database disk image is malformed"), OSError(5, "Input/output error")]
    original = log_module._write_batch_sync
    async with open_log(tmp_path / "log.db") as log:
        for n, error in enumerate(errors):

            def failing(*args: Any, error: BaseException = error) -> None:
                raise error

            monkeypatch.setattr(log_module, "_write_batch_sync", failing)
            with pytest.raises(CommitError) as info:
                await log.append("thing", "a", n, ThingChanged(n=n))
            assert info.value.__cause__ is error
            monkeypatch.setattr(log_module, "_write_batch_sync", original)
            rec = await log.append("thing", "a", n, ThingChanged(n=n))
            assert isinstance(rec, Record)
            assert n + 1 == rec.seq


def test_writer_failed_error_is_an_event_log_error() -> None:
    """WriterFailedError is an EventLogError and a RuntimeError, never a CommitError."""
    assert issubclass(WriterFailedError, EventLogError)
    assert issubclass(WriterFailedError, RuntimeError)
    assert not issubclass(WriterFailedError, CommitError)


async def test_a_command_stays_pending_when_its_batch_cannot_commit(tmp_path: Path) -> None:
    """A disk-full batch carrying a command's completion rolls both back: the command is pending again."""
    path = tmp_path / "log.db"
    async with open_log(path) as log:
        cid = await log.submit_command("want", {"refs": ["a/1"]})
        wdb = cast(EventLog, log)._wdb
        pages = (await wdb.execute_fetchall("PRAGMA page_count"))[0][0]
        await wdb.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(CommitError, match="database or disk is full"):
            await log.append("thing", "a", 0, ThingCreated(name="x" * 20_000), command=(cid, {"ok": True}))
        assert [cid] == [c.id for c in await log.pending_commands()]
        await wdb.execute("PRAGMA max_page_count = 1073741823")
        await log.append("thing", "a", 0, ThingCreated(name="a"), command=(cid, {"ok": True}))
        done = await log.command(cid)
        assert done is not None
        assert done.state == "ok"
    async with open_log(path, writer=False) as log:
        assert await log.pending_commands() == []
