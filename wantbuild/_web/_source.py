"""Which log the web view reads, and how it is opened (read-only; writes go through the command inbox)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import eventlog
from eventlog import EventLog, LogNotFoundError


def is_url(db: str) -> bool:
    """Whether ``db`` names a database server (``postgresql://...``) rather than a SQLite file."""
    return "://" in db


def display_name(db: str) -> str:
    """``db`` as pages and messages show it: a URL without its password, a path as given."""
    if not is_url(db):
        return db
    scheme, rest = db.split("://", 1)
    if "@" not in rest:
        return db
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}@{host}"


@asynccontextmanager
async def open_reader(db: str) -> AsyncIterator[EventLog]:
    """The log at ``db`` opened for reading and for submitting commands, never as its writer.

    A path is a SQLite log. A URL (``postgresql://...``) goes to ``eventlog.open_log`` once the PostgreSQL
    backend provides it (issue #12); until then it is refused with a message naming the input.
    """
    open_log: Any = getattr(eventlog, "open_log", None)
    if open_log is not None:
        async with open_log(db, writer=False) as log:
            yield log
        return
    if is_url(db):
        raise LogNotFoundError(
            f"{db}: this wantbuild reads SQLite logs (a file path); PostgreSQL logs come with the PostgreSQL "
            "backend (issue #12)"
        )
    async with EventLog.open(db, writer=False) as log:
        yield log
