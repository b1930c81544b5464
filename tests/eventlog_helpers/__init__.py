"""Shared pieces of the event log tests: a private event registry, a fake clock, raw database access."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any, cast

from eventlog import Event, EventRegistry, event
from eventlog import open_log as _open_log
from eventlog._core import LogCore

REGISTRY = EventRegistry()
"""Test events live here, not in the process-wide registry the runtime's events use."""

HELPERS = Path(__file__).parent


@event("ThingCreated", 1, registry=REGISTRY)
class ThingCreated(Event, frozen=True):
    """A new thing, with a name and some tags."""

    name: str
    tags: tuple[str, ...] = ()


@event("ThingChanged", 1, registry=REGISTRY)
class ThingChanged(Event, frozen=True):
    """A numbered change of a thing."""

    n: int
    note: str = ""


@event("ThingChanged", 2, registry=REGISTRY)
class ThingChangedV2(Event, frozen=True):
    """Version 2 of ThingChanged: a float amount too."""

    n: int
    amount: float = 0.0


@event("ThingTouched", 1, registry=REGISTRY)
class ThingTouched(Event, frozen=True):
    """A thing was looked at: every field has a default, so ``{}`` decodes into it."""

    by: str = ""


class Clock:
    """A deterministic clock: each call moves time on by ``step`` seconds."""

    def __init__(self, start: float = 1000.0, step: float = 0.5) -> None:
        self.t = start
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def open_log(target: Path | str, **kwargs: Any) -> AbstractAsyncContextManager[LogCore]:
    """``eventlog.open_log`` (a SQLite path or a PostgreSQL URL) with the test registry (unless told otherwise).

    Typed as the backends' shared class: tests look at the writer's internals (``_incoming``, ``_cache``).
    """
    kwargs.setdefault("registry", REGISTRY)
    return cast(AbstractAsyncContextManager[LogCore], _open_log(target, **kwargs))


@contextmanager
def raw(path: Path | str) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to a log, committing on exit (for tampering and inspection)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def dump(path: Path | str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the log's event tables, in key order: two logs are identical when their dumps are."""
    with raw(path) as db:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("events", "entities", "event_types")
        }


async def pg_connect(url: str) -> Any:
    """A plain asyncpg connection to the database of a PostgreSQL log URL (for tampering and inspection)."""
    import asyncpg

    from eventlog._target import PgTarget

    return await asyncpg.connect(PgTarget(url).dsn)


def pg_schema(url: str) -> str:
    """The quoted schema that holds the log at ``url``."""
    from eventlog._target import PgTarget

    return '"' + PgTarget(url).schema + '"'
