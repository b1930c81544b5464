"""What only the PostgreSQL log has: the writer lease and its fencing, LISTEN/NOTIFY, and its faults and bad input,
all on a real server (the session's, or one of a test's own where the test stops it)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import pytest
from conftest import drop_schema, need, with_schema
from eventlog_helpers import HELPERS, ThingChanged, ThingCreated, open_log, pg_connect, pg_schema

from eventlog import (
    SCHEMA_VERSION,
    CorruptLogError,
    EventLogError,
    LeaseLost,
    LogAccessDenied,
    LogNotFoundError,
    LogUnreachableError,
    PostgresEventLog,
    Record,
    SchemaVersionError,
    WriterLockedError,
)
from eventlog._target import redact

pytestmark = pytest.mark.timeout(60)
PASSWORD_IN_TESTS = "s3cret-pw"


async def _sql(url: str, statement: str, *args: Any) -> list[Any]:
    conn = await pg_connect(url)
    try:
        return list(await conn.fetch(statement.replace("{s}", pg_schema(url)), *args))
    finally:
        await conn.close()


async def _appender(log: Any, eid: str, acks: list[Record], stop: anyio.Event) -> None:
    """Append to one entity until told to stop, keeping every acknowledged record."""
    n = await log.entity_seq("thing", eid)
    while not stop.is_set():
        acks.append(await log.append("thing", eid, n, ThingChanged(n=n)))
        n += 1


class _Conn:
    """A writer connection whose ``fetchval`` a test replaces (asyncpg connections have read-only methods)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.fetchval: Any = conn.fetchval

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def _check_acks(url: str, acks: list[Record]) -> None:
    """Every acknowledged record is in the log exactly as acknowledged; the log verifies clean, no gaps."""
    async with open_log(url, writer=False) as reader:
        report = await reader.verify()
        assert report.ok, str(report)
        records = {r.seq: r async for r in reader.read()}
    assert sorted(records) == list(range(1, len(records) + 1))
    for rec in acks:
        assert records[rec.seq] == rec


# ---------------------------------------------------------------- the lease and fencing


async def test_a_writer_stalled_past_its_lease_is_fenced(pg_url: str) -> None:
    """A writer whose process stalls past its lease loses it to the next writer: its appends are refused with
    LeaseLost, nothing of them lands, and it says so (lease_lost, wait_lease_lost)."""
    async with open_log(pg_url, lease_ttl=1.0) as old:
        await old.append("thing", "a", 0, ThingCreated(name="old"))
        time.sleep(2.0)  # the whole process stalls (a GC pause, SIGSTOP): no renewal runs  # noqa: ASYNC251
        async with open_log(pg_url, lease_wait=0) as new:
            assert isinstance(new, PostgresEventLog)
            assert isinstance(old, PostgresEventLog)
            assert new.epoch == old.epoch + 1
            rec = await new.append("thing", "a", 1, ThingChanged(n=1))
            with pytest.raises(LeaseLost) as info:
                await old.append("thing", "a", 1, ThingChanged(n=99))
            msg = str(info.value)
            assert f"this writer (epoch {old.epoch}" in msg
            # Its renewal found out first (the lease had lapsed) or its append did (epoch 2 had taken it).
            assert "lapsed" in msg or f"now epoch {new.epoch}" in msg
            assert "stop this runtime" in msg
            assert PASSWORD_IN_TESTS not in msg
            assert old.lease_lost is info.value
            assert await asyncio.wait_for(old.wait_lease_lost(), 1) is info.value
            with pytest.raises(LeaseLost):
                await old.append("thing", "b", 0, ThingCreated(name="late"))
            with pytest.raises(LeaseLost):
                await old.commit()
            assert [r async for r in new.read()][-1] == rec
    async with open_log(pg_url, writer=False) as reader:
        assert [(r.entity_id, r.entity_seq) async for r in reader.read()] == [("a", 1), ("a", 2)]
        assert (await reader.verify()).ok


async def test_idle_writer_keeps_its_lease_by_renewal(pg_url: str) -> None:
    """An idle writer renews its lease in the background: after several TTLs a second writer is still refused."""
    # A TTL of 1.2 s renews every 0.4 s: the loop may stall up to ~0.8 s (a loaded 2-core CI machine) and keep it.
    async with open_log(pg_url, lease_ttl=1.2) as log:
        await asyncio.sleep(3.0)
        with pytest.raises(WriterLockedError) as info:
            async with open_log(pg_url):
                pass  # pragma: no cover
        assert "holds the writer lease" in str(info.value)
        assert PASSWORD_IN_TESTS not in str(info.value)
        rec = await log.append("thing", "a", 0, ThingCreated(name="a"))
        assert rec.seq == 1
        lease = await log.lease()
        assert lease is not None
        assert lease.epoch == 1
        assert lease.expires_in is not None
        assert 0 < lease.expires_in <= 1.2


async def test_a_standby_waits_for_the_lease_and_takes_it_when_released(pg_url: str) -> None:
    """lease_wait=None waits as a standby; closing the writer gives the lease back and the standby takes it at
    once, with the next epoch, and continues the log where it ended."""
    took: list[float] = []
    async with open_log(pg_url, lease_ttl=30) as first:
        await first.append("thing", "a", 0, ThingCreated(name="a"))

        async def standby() -> None:
            async with open_log(pg_url, lease_wait=None, lease_ttl=30) as log:
                took.append(time.monotonic())
                assert isinstance(log, PostgresEventLog)
                assert log.epoch == 2
                assert log.last_seq == 2
                await log.append("thing", "a", 2, ThingChanged(n=2))

        task = asyncio.ensure_future(standby())
        await asyncio.sleep(0.3)
        assert not task.done()
        await first.append("thing", "a", 1, ThingChanged(n=1))
    released = time.monotonic()
    await asyncio.wait_for(task, 10)
    assert took[0] - released < 2.0  # not the 30 s TTL
    async with open_log(pg_url, writer=False) as reader:
        assert [r.entity_seq async for r in reader.read()] == [1, 2, 3]
        assert await reader.lease() is None


def test_a_killed_writer_process_frees_the_lease_at_once(pg_url: str) -> None:
    """SIGKILL of the writing process: its session ends, so the next writer takes the lease without waiting for
    the TTL; while it lived, a second writer was refused."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPERS.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(HELPERS / "hold_writer.py"), pg_url],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "holding\n"
        with pytest.raises(WriterLockedError):
            asyncio.run(_open_and_append(pg_url, lease_wait=0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        t0 = time.monotonic()
        asyncio.run(_open_and_append(pg_url, lease_wait=5))
        assert time.monotonic() - t0 < 5  # far below the default 10 s TTL
    finally:
        if proc.poll() is None:  # pragma: no cover - only when an assertion failed above
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


async def _open_and_append(url: str, **options: Any) -> None:
    async with open_log(url, **options) as log:
        n = await log.entity_seq("thing", "k")
        await log.append("thing", "k", n, ThingChanged(n=n))


# ---------------------------------------------------------------- LISTEN / NOTIFY


async def test_a_reader_follows_by_notification(pg_url: str) -> None:
    """A reader in another connection gets each commit through NOTIFY (no polling: its poll interval is an
    hour), and a notification lost with its connection costs latency, never an event."""
    async with open_log(pg_url) as writer, open_log(pg_url, writer=False, poll_interval=3600) as reader:
        got: list[int] = []
        first = anyio.Event()

        async def follow() -> None:
            async for rec in reader.follow():
                got.append(rec.seq)
                first.set()
                if len(got) == 40:
                    return

        task = asyncio.ensure_future(follow())
        await writer.append("thing", "a", 0, ThingCreated(name="a"))
        with anyio.fail_after(2):
            await first.wait()
        for i in range(1, 20):
            await writer.append("thing", "a", i, ThingChanged(n=i))
        # Kill the listener's connection: the follower reconnects and catches up with a query.
        await _sql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name LIKE 'wantbuild listener %'")
        for i in range(20, 40):
            await writer.append("thing", "a", i, ThingChanged(n=i))
        await asyncio.wait_for(task, 10)
    assert got == list(range(1, 41))


# ---------------------------------------------------------------- faults


async def test_writer_connection_killed_mid_run_reconnects_and_loses_nothing(pg_url: str) -> None:
    """pg_terminate_backend on the writer's connection while 20 tasks append: it reconnects, every acknowledged
    append is in the log once, and appending goes on."""
    acks: list[Record] = []
    async with open_log(pg_url) as log:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(_appender, log, f"t{i}", acks, stop)
            for _ in range(3):
                await asyncio.sleep(0.15)
                killed = await _sql(pg_url, "SELECT pg_terminate_backend(backend_pid) FROM {s}.writer_lease")
                assert killed == [(True,)]
            await asyncio.sleep(0.15)
            stop.set()
        assert log.lease_lost is None
        before = len(acks)
        acks.append(await log.append("thing", "after", 0, ThingCreated(name="after")))
        assert log.last_seq == acks[-1].seq
    assert before > 100
    await _check_acks(pg_url, acks)


async def test_a_batch_whose_reply_is_lost_is_not_written_twice(pg_url: str) -> None:
    """The connection drops after a batch committed but before the reply: the writer learns from the lease row
    that it committed (its idempotency key), tells the appenders so, and does not write it again."""
    async with open_log(pg_url) as log:
        assert isinstance(log, PostgresEventLog)
        await log.append("thing", "a", 0, ThingCreated(name="a"))
        conn = log._wconn = _Conn(log._wconn)
        real = conn._conn.fetchval
        dropped: list[int] = []

        async def commit_then_drop(sql: str, *args: Any) -> Any:
            result = await real(sql, *args)
            if sql == log._sql_append and not dropped:
                dropped.append(args[3])
                conn.terminate()
                raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
            return result

        conn.fetchval = commit_then_drop
        recs = await asyncio.gather(*(log.append("thing", f"b{i}", 0, ThingCreated(name="b")) for i in range(5)))
        assert dropped == [2]  # the second batch lost its reply
        assert [r.seq for r in recs] == [2, 3, 4, 5, 6]
        rec = await log.append("thing", "a", 1, ThingChanged(n=1))
        assert rec.seq == 7
    await _check_acks(pg_url, [*recs, rec])


async def test_a_batch_lost_before_commit_is_sent_again(pg_url: str) -> None:
    """The connection drops before a batch reached the server: the writer reconnects and sends it again."""
    async with open_log(pg_url) as log:
        assert isinstance(log, PostgresEventLog)
        conn = log._wconn = _Conn(log._wconn)
        real = conn._conn.fetchval
        calls: list[int] = []

        async def drop_first(sql: str, *args: Any) -> Any:
            if sql == log._sql_append and not calls:
                calls.append(args[3])
                conn.terminate()
                raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
            return await real(sql, *args)

        conn.fetchval = drop_first
        recs = await asyncio.gather(*(log.append("thing", f"b{i}", 0, ThingCreated(name="b")) for i in range(5)))
        assert calls == [1]
        assert [r.seq for r in recs] == [1, 2, 3, 4, 5]
    await _check_acks(pg_url, recs)


@pytest.fixture
async def own_server() -> AsyncIterator[Any]:
    """A PostgreSQL server of this test's own, to stop and start (the session's stays up for the others)."""
    from pg_server import HOW, start_server

    server = await asyncio.to_thread(start_server)
    if server is None:
        need("PostgreSQL", HOW)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.remove)


@pytest.mark.timeout(90)
async def test_server_crash_and_restart_mid_run_loses_no_acknowledged_event(own_server: Any) -> None:
    """pg_ctl stop -m immediate, then start, while 20 tasks append: the writer rides it out within its lease,
    every acknowledged event survives, and appending goes on."""
    url = with_schema(own_server.url, "crash")
    acks: list[Record] = []
    async with open_log(url, lease_ttl=20) as log:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(_appender, log, f"t{i}", acks, stop)
            await asyncio.sleep(0.3)
            at_crash = len(acks)
            await asyncio.to_thread(own_server.stop, "immediate")
            await asyncio.sleep(0.3)
            await asyncio.to_thread(own_server.start)
            with anyio.fail_after(20):
                while len(acks) < at_crash + 200:  # noqa: ASYNC110 - appenders have no signal to wait on
                    await asyncio.sleep(0.05)
            stop.set()
        assert log.lease_lost is None
    assert at_crash > 50
    await _check_acks(url, acks)


# ---------------------------------------------------------------- bad input: one clear error each


async def test_unreachable_server_names_the_url_and_the_fix() -> None:
    """Nothing listens at the URL: LogUnreachableError naming the URL (password hidden) and what to check."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://postgres:{PASSWORD_IN_TESTS}@127.0.0.1:{port}/postgres"
    with pytest.raises(LogUnreachableError) as info:
        async with open_log(url, connect_timeout=2):
            pass  # pragma: no cover
    msg = str(info.value)
    assert redact(url) in msg
    assert "postgres:***@" in msg
    assert PASSWORD_IN_TESTS not in msg
    assert "check that it is running" in msg


async def test_wrong_password_names_the_url_and_the_fix(pg_server: str) -> None:
    """A wrong password: LogAccessDenied naming the URL, the password hidden (the wrong one too)."""
    url = pg_server.replace(f":{PASSWORD_IN_TESTS}@", ":not-the-pw@")
    if url == pg_server:
        need("a password in WANTBUILD_TEST_PG_URL", "give the test server's URL with its password")
    for writer in (True, False):
        with pytest.raises(LogAccessDenied) as info:
            async with open_log(url, writer=writer):
                pass  # pragma: no cover
        msg = str(info.value)
        assert "postgres:***@" in msg
        assert "not-the-pw" not in msg
        assert "fix the password in the URL" in msg


async def test_missing_database_names_the_fix(pg_server: str) -> None:
    """A database that does not exist: LogNotFoundError saying how to create it."""
    url = pg_server.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(LogNotFoundError) as info:
        async with open_log(url):
            pass  # pragma: no cover
    assert "no_such_db" in str(info.value)
    assert "createdb" in str(info.value)
    assert PASSWORD_IN_TESTS not in str(info.value)


async def test_a_schema_of_something_else_is_not_a_log(pg_url: str) -> None:
    """A schema holding other tables: CorruptLogError naming them and how to choose another schema."""
    conn = await pg_connect(pg_url)
    try:
        await conn.execute(f"CREATE SCHEMA {pg_schema(pg_url)}; CREATE TABLE {pg_schema(pg_url)}.customers (id int)")
    finally:
        await conn.close()
    for writer in (True, False):
        with pytest.raises(CorruptLogError) as info:
            async with open_log(pg_url, writer=writer):
                pass  # pragma: no cover
        msg = str(info.value)
        assert "not a wantbuild event log" in msg
        assert "customers" in msg
        assert "?schema=NAME" in msg
        assert PASSWORD_IN_TESTS not in msg


async def test_a_reader_of_an_empty_schema_is_told_there_is_no_log(pg_url: str) -> None:
    """writer=False on a schema with no log: LogNotFoundError saying a runtime creates it."""
    with pytest.raises(LogNotFoundError, match="no event log here"):
        async with open_log(pg_url, writer=False):
            pass  # pragma: no cover


async def test_a_lease_never_taken_reads_as_no_lease(pg_url: str) -> None:
    """A log created but never leased (its writer between creating the schema and taking the lease, a window
    readers poll into): lease() is None, not an error about infinite timestamps; a writer then takes it."""
    async with open_log(pg_url):
        pass
    await _sql(pg_url, "UPDATE {s}.writer_lease SET expires_at = '-infinity', owner = '', epoch = 0")
    async with open_log(pg_url, writer=False) as reader:
        assert await reader.lease() is None
    async with open_log(pg_url) as writer:
        lease = await writer.lease()
        assert lease is not None
        assert lease.epoch == 1


async def test_a_log_of_a_newer_schema_is_refused_with_the_fix(pg_url: str) -> None:
    """A log written by a newer wantbuild: SchemaVersionError naming both versions and 'upgrade wantbuild'."""
    async with open_log(pg_url) as log:
        await log.append("thing", "a", 0, ThingCreated(name="a"))
    await _sql(pg_url, "UPDATE {s}.meta SET value = $1 WHERE key = 'schema_version'", str(SCHEMA_VERSION + 1))
    for writer in (True, False):
        with pytest.raises(SchemaVersionError) as info:
            async with open_log(pg_url, writer=writer):
                pass  # pragma: no cover
        msg = str(info.value)
        assert f"schema version {SCHEMA_VERSION + 1}" in msg
        assert "upgrade wantbuild" in msg
        assert PASSWORD_IN_TESTS not in msg


async def test_a_bad_schema_name_is_refused(pg_server: str) -> None:
    """?schema= must be a plain lower-case identifier; anything else is refused before connecting."""
    with pytest.raises(EventLogError, match="is not a valid log schema name"):
        async with open_log(with_schema(pg_server, "Robert'); DROP TABLE x;--")):
            pass  # pragma: no cover


def test_options_of_the_other_backend_are_refused(tmp_path: Any) -> None:
    """A SQLite-only option on a URL (or a PostgreSQL-only one on a path) is a TypeError naming it."""
    from eventlog import open_log as plain_open

    with pytest.raises(TypeError, match="busy_timeout apply only to SQLite"):
        plain_open(f"postgresql://u:{PASSWORD_IN_TESTS}@h/db", busy_timeout=1)
    with pytest.raises(TypeError, match="lease_ttl apply only to PostgreSQL"):
        plain_open(str(tmp_path / "x.db"), lease_ttl=1)


def test_redact_hides_passwords_everywhere() -> None:
    """redact() hides a password in the authority and in a password= parameter, and leaves paths alone."""
    assert redact("postgresql://u:pw@h:5/db?schema=s") == "postgresql://u:***@h:5/db?schema=s"
    assert redact("postgres://u@h/db?password=pw&sslmode=require") == "postgres://u@h/db?password=***&sslmode=require"
    assert redact("/tmp/x.db") == "/tmp/x.db"


def test_drop_schema_helper_is_idempotent(pg_server: str) -> None:
    """The per-test schema clean-up tolerates a schema that was never created."""
    drop_schema(pg_server, "t_never_created")


async def test_lease_ttl_in_the_url(pg_url: str) -> None:
    """?lease_ttl= in the URL sets the lease's TTL (what the CLI's --db can carry); a bad one is refused."""
    async with open_log(f"{pg_url}&lease_ttl=42") as log:
        assert isinstance(log, PostgresEventLog)
        assert log.lease_ttl == 42.0
        lease = await log.lease()
        assert lease is not None
        assert lease.expires_in is not None
        assert 40 < lease.expires_in <= 42
    with pytest.raises(EventLogError, match="lease_ttl='soon' is not a number of seconds"):
        async with open_log(f"{pg_url}&lease_ttl=soon"):
            pass  # pragma: no cover


async def test_a_fenced_writer_cannot_complete_a_command(pg_url: str) -> None:
    """Completing a command is fenced like a batch: after the lease moved on, LeaseLost, the command still pending."""
    async with open_log(pg_url) as old:
        cid = await old.submit_command("cancel", {"want_id": "w-1"})
        await _sql(pg_url, "UPDATE {s}.writer_lease SET expires_at = clock_timestamp()")
        async with open_log(pg_url, lease_wait=5):
            with pytest.raises(LeaseLost):
                await old.complete_command(cid, {"ok": True})
            assert [c.id for c in await old.pending_commands()] == [cid]


@pytest.mark.parametrize(("durability", "setting"), [("power", "on"), ("process", "off")])
async def test_durability_sets_the_writers_synchronous_commit(pg_url: str, durability: str, setting: str) -> None:
    """durability='power' commits with synchronous_commit=on (on the server's disk), 'process' with off."""
    async with open_log(pg_url, durability=durability) as log:
        assert isinstance(log, PostgresEventLog)
        assert await log._wconn.fetchval("SHOW synchronous_commit") == setting
        await log.append("thing", "a", 0, ThingCreated(name="a"))
    with pytest.raises(ValueError, match="durability must be 'process' or 'power'"):
        PostgresEventLog.open(pg_url, durability="sometimes")  # type: ignore[arg-type]
