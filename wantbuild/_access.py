"""How the CLI reaches a log: read-only for queries, the command inbox for changes while a runtime runs.

Queries (``status``, ``want list``, ``explain``, ``events``, ``replay``) always read the log directly: it is
SQLite in WAL mode, so a reader never blocks the running runtime and sees every committed event. Changes
(``want create``, ``want cancel``, ``taint``) must go through the one writer: while a runtime runs they are
submitted to its command inbox and the CLI waits for the answer.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import click

from actors import World, rebuild
from eventlog import Command, EventLog, Lease, Log, LogNotFoundError, is_postgres, open_log, redact


class CliError(click.ClickException):
    """A failure the CLI reports as one line on stderr, exit code 1."""

    exit_code = 1


class LogURL(str):
    """A PostgreSQL log URL from the command line. Its value is the real URL (what ``open_log`` gets); every way
    of showing it (``str``, f-strings, ``%s``, ``repr``) hides the password, so no message can leak it."""

    __slots__ = ()

    def __str__(self) -> str:
        return redact(str.__str__(self))

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return repr(str(self))


Db = Path | LogURL
"""Where the CLI's log is: a SQLite file or a PostgreSQL URL."""


class DbParam(click.ParamType):  # type: ignore[type-arg]
    """``--db``: a ``postgresql://`` URL (kept whole) or a SQLite file path."""

    name = "PATH|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Db:
        if isinstance(value, Path | LogURL):
            return value
        text = str(value)
        if is_postgres(text):
            return LogURL(text)
        return Path(text)


def require_log(db: Db) -> None:
    if isinstance(db, LogURL):
        return  # opening it says what is wrong (unreachable, refused, no log in that schema)
    if not db.exists():
        raise CliError(
            f"no log at {db}: create one with `wantbuild demo` or `wantbuild run GRAPH.toml --db {db}`, "
            "or point --db at an existing log"
        )
    if db.is_dir():
        raise CliError(f"{db} is a folder, not a wantbuild log; give the path of the .db file")


@asynccontextmanager
async def reader(db: Db) -> AsyncIterator[Log]:
    """The log at ``db``, opened read-only (it must exist, or be about to: see _open_reader)."""
    # A runtime that has just started may not have created the file yet (a URL: opening it says what is wrong).
    if isinstance(db, Path) and not await runtime_active(db):
        require_log(db)
    async with _open_reader(db) as log:
        yield log


@asynccontextmanager
async def _open_reader(db: Db) -> AsyncIterator[Log]:
    # WORKAROUND (core): a runtime takes the writer lock before it creates the schema, so for a moment a new
    # log is "running" but empty and a reader gets LogNotFoundError. Retry while a writer holds the lock.
    async with AsyncExitStack() as stack:
        for attempt in range(40):
            try:
                log = await stack.enter_async_context(open_log(db, writer=False))
                break
            except LogNotFoundError:
                if attempt == 39 or not await runtime_active(db):
                    raise
                await anyio.sleep(0.05)
        yield log


async def load_world(db: Db, *, until_seq: int | None = None, until_time: float | None = None) -> World:
    async with reader(db) as log:
        return await rebuild(log, until_seq=until_seq, until_time=until_time)


async def runtime_active(db: Db) -> bool:
    """Whether a runtime is running on the log at ``db`` (it holds the writer lock, or the writer lease)."""
    if isinstance(db, LogURL):
        return await current_lease(db) is not None
    return EventLog.writer_active(db)


async def graph_logs(db: LogURL) -> list[LogURL]:
    """The URL of every wantbuild log (one per graph: a schema each) in the PostgreSQL database of ``db``."""
    import asyncpg

    from eventlog._target import PgTarget

    try:
        conn = await asyncpg.connect(PgTarget(db).dsn, timeout=10)
    except Exception as e:
        raise CliError(f"{db}: cannot list its database's logs: {redact(PgTarget(db).scrub(str(e)))}") from None
    try:
        rows = await conn.fetch(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'writer_lease' "
            "INTERSECT SELECT table_schema FROM information_schema.tables WHERE table_name = 'meta' ORDER BY 1")
    finally:
        await conn.close()
    parts = urlsplit(str.__str__(db))
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    return [LogURL(urlunsplit(parts._replace(query=urlencode([*query, ("schema", r[0])], safe="/:"))))
            for r in rows]


async def current_lease(db: Db) -> Lease | None:
    """Who serves the log at ``db`` now (the holder of its writer lease or lock), or None."""
    if isinstance(db, Path) and not db.exists():
        return None
    try:
        async with open_log(db, writer=False) as log:
            return await log.lease()
    except LogNotFoundError:
        return None


@dataclass(frozen=True)
class Submitted:
    """A command put in the inbox: its id, its result if a runtime completed it in time, and the commands a runtime
    rejected since the command before it was submitted (so whoever submits next hears of them)."""

    command_id: int
    result: dict[str, Any] | None
    rejected: list[Command]


async def submit(db: Db, name: str, payload: dict[str, Any], timeout: float) -> Submitted:
    """Put a command in the log's inbox; wait up to ``timeout`` s for a runtime to complete it (result ``None``:
    no answer yet, the command stays queued)."""
    async with reader(db) as log:
        command_id = await log.submit_command(name, payload)
        rejected = await rejected_since_previous(log, command_id)
        done = await wait_for_command(log, command_id, timeout)
    return Submitted(command_id, None if done is None else done.result, rejected)


async def wait_for_command(log: Log, command_id: int, timeout: float) -> Command | None:
    """The command once a runtime completed it, or ``None`` after ``timeout`` seconds."""
    if timeout <= 0:
        return None
    with anyio.move_on_after(timeout):
        while True:
            cmd = await log.command(command_id)
            if cmd is not None and cmd.done:
                return cmd
            await anyio.sleep(0.05)
    return None


async def rejected_since_previous(log: Log, command_id: int) -> list[Command]:
    """Commands a runtime rejected (completed with ``ok: false``) after the command before ``command_id`` was
    submitted: those nobody who submitted a command since has been told about."""
    before = [c for c in await log.commands(newest_first=True, limit=2) if c.id < command_id]
    if not before:
        return []
    since = before[0].submitted_at
    failed = await log.commands("failed", newest_first=True, limit=20)
    return sorted((c for c in failed if c.completed_at is not None and c.completed_at > since), key=lambda c: c.id)


def parse_until(text: str) -> tuple[int | None, float | None]:
    """``--until``: an integer is a ``seq``; a number with a point (or exponent) a clock time in seconds; else an
    ISO-8601 time (a naive one is local time)."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text), None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return None, value
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a seq (an integer such as 120), a clock time in seconds (1762070400.5) nor an "
            "ISO time (2026-11-02T10:15:00)"
        ) from None
    return None, when.timestamp()
