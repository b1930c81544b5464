"""How the CLI reaches a log: read-only for queries, the command inbox for changes while a runtime runs.

Queries (``status``, ``want list``, ``explain``, ``events``, ``replay``) always read the log directly: SQLite in
WAL mode or PostgreSQL, a reader never blocks the running runtime and sees every committed event. ``--db`` is a
file path or a ``postgresql://`` URL (:class:`LogURL`: shown everywhere with its password hidden). Changes
(``want create``, ``want cancel``, ``taint``) must go through the one writer: while a runtime runs they are
submitted to its command inbox and the CLI waits for the answer.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import click

from actors import World, rebuild
from eventlog import EventLog, Log, LogNotFoundError, is_postgres, open_log, redact


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


class CliError(click.ClickException):
    """A failure the CLI reports as one line on stderr, exit code 1."""

    exit_code = 1


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
        try:
            async with open_log(db, writer=False) as log:
                return await log.lease() is not None
        except LogNotFoundError:
            return False
    return EventLog.writer_active(db)


async def submit(db: Db, name: str, payload: dict[str, Any], timeout: float) -> tuple[int, dict[str, Any] | None]:
    """Put a command in the log's inbox; wait up to ``timeout`` s for its result (``None``: no answer yet)."""
    async with reader(db) as log:
        command_id = await log.submit_command(name, payload)
        if timeout <= 0:
            return command_id, None
        with anyio.move_on_after(timeout):
            while True:
                cmd = await log.command(command_id)
                if cmd is not None and cmd.done:
                    return command_id, cmd.result
                await anyio.sleep(0.05)
    return command_id, None


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
