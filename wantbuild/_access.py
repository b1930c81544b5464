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

import anyio
import click

from actors import World, rebuild
from eventlog import Command, EventLog, LogNotFoundError


class CliError(click.ClickException):
    """A failure the CLI reports as one line on stderr, exit code 1."""

    exit_code = 1


def require_log(db: Path) -> None:
    if not db.exists():
        raise CliError(
            f"no log at {db}: create one with `wantbuild demo` or `wantbuild run GRAPH.toml --db {db}`, "
            "or point --db at an existing log"
        )
    if db.is_dir():
        raise CliError(f"{db} is a folder, not a wantbuild log; give the path of the .db file")


@asynccontextmanager
async def reader(db: Path) -> AsyncIterator[EventLog]:
    """The log at ``db``, opened read-only (it must exist, or be about to: see _open_reader)."""
    if not runtime_active(db):  # a runtime that has just started may not have created the file yet
        require_log(db)
    async with _open_reader(db) as log:
        yield log


@asynccontextmanager
async def _open_reader(db: Path) -> AsyncIterator[EventLog]:
    # WORKAROUND (core): a runtime takes the writer lock before it creates the schema, so for a moment a new
    # log is "running" but empty and a reader gets LogNotFoundError. Retry while a writer holds the lock.
    async with AsyncExitStack() as stack:
        for attempt in range(40):
            try:
                log = await stack.enter_async_context(EventLog.open(db, writer=False))
                break
            except LogNotFoundError:
                if attempt == 39 or not runtime_active(db):
                    raise
                await anyio.sleep(0.05)
        yield log


async def load_world(db: Path, *, until_seq: int | None = None, until_time: float | None = None) -> World:
    async with reader(db) as log:
        return await rebuild(log, until_seq=until_seq, until_time=until_time)


def runtime_active(db: Path) -> bool:
    """Whether a runtime is running on the log at ``db`` (it holds the writer lock)."""
    return EventLog.writer_active(db)


@dataclass(frozen=True)
class Submitted:
    """A command put in the inbox: its id, its result if a runtime completed it in time, and the commands a runtime
    rejected since the command before it was submitted (so whoever submits next hears of them)."""

    command_id: int
    result: dict[str, Any] | None
    rejected: list[Command]


async def submit(db: Path, name: str, payload: dict[str, Any], timeout: float) -> Submitted:
    """Put a command in the log's inbox; wait up to ``timeout`` s for a runtime to complete it (result ``None``:
    no answer yet, the command stays queued)."""
    async with reader(db) as log:
        command_id = await log.submit_command(name, payload)
        rejected = await rejected_since_previous(log, command_id)
        done = await wait_for_command(log, command_id, timeout)
    return Submitted(command_id, None if done is None else done.result, rejected)


async def wait_for_command(log: EventLog, command_id: int, timeout: float) -> Command | None:
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


async def rejected_since_previous(log: EventLog, command_id: int) -> list[Command]:
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
