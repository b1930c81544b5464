"""Set-up for benchmarks: write a real, replayable event log straight into SQLite, fast.

``EventLog.append`` awaits a commit per call, which is right for a runtime and slow for filling a log with a
million events (a task per append). :class:`RawLog` writes the same rows the log's writer would (the schema of
``eventlog._schema``, payloads encoded by the event registry, ``entity_seq`` and ``prev_seq`` chains, the
``entities`` tips) in transactions of 100,000 rows. ``EventLog.verify`` accepts what it writes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from eventlog import REGISTRY, Event, EventRegistry
from eventlog._schema import APPLICATION_ID, CREATE_SCHEMA, INSERT_ENTITY, INSERT_EVENT, INSERT_TYPE, SCHEMA_VERSION

CHUNK = 100_000


class RawLog:
    """A fresh log at ``path``; :meth:`add` events in order, then :meth:`close`."""

    def __init__(self, path: str | Path, registry: EventRegistry = REGISTRY) -> None:
        path = os.fspath(path)
        for suffix in ("", "-wal", "-shm", ".lock"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("BEGIN")
        for statement in CREATE_SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        self._db.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("schema_version", str(SCHEMA_VERSION)), ("created_at", "0"), ("format", "wantbuild event log")])
        self._encode = registry.encoder.encode
        self._registry = registry
        self._types: dict[type[Event], int] = {}
        self._entities: dict[tuple[str, str], list[int]] = {}  # (kind, id) -> [entity_key, last seq, entity_seq]
        self._rows: list[tuple[int, int, int, int | None, int, bytes, float]] = []
        self.seq = 0

    def add(self, kind: str, entity_id: str, event: Event, at: float) -> None:
        """Append one event of entity ``(kind, entity_id)`` (its ``entity_seq`` follows the previous one)."""
        tk = self._types.get(type(event))
        if tk is None:
            tk = self._types[type(event)] = len(self._types) + 1
            self._db.execute(INSERT_TYPE, (tk, event.event_name, event.event_version))
        ent = self._entities.get((kind, entity_id))
        if ent is None:
            ent = self._entities[(kind, entity_id)] = [len(self._entities) + 1, 0, 0]
        self.seq += 1
        self._rows.append((self.seq, ent[0], ent[2] + 1, ent[1] or None, tk, self._encode(event), at))
        ent[1] = self.seq
        ent[2] += 1
        if len(self._rows) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany(INSERT_EVENT, self._rows)
        self._rows = []
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")

    def close(self) -> None:
        """Write the last rows and every entity's tip, commit, and checkpoint the WAL into the file."""
        self._db.executemany(INSERT_EVENT, self._rows)
        self._rows = []
        self._db.executemany(INSERT_ENTITY, [(key, kind, eid, last, eseq)
                                             for (kind, eid), (key, last, eseq) in self._entities.items()])
        self._db.execute("COMMIT")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
