"""The log's SQLite schema and the SQL the log runs.

The shape was decided by measurement (see ``docs/eventlog.md``): the hot table ``events`` is a plain rowid
table with no secondary index, because an index keyed by entity scatters its keys across the B-tree and
dirties many pages per commit. Each event points at the previous event of its entity (``prev_seq``), and
``entities`` keeps each entity's last ``seq`` and ``entity_seq``, so one entity's history is a recursive
walk down that chain. Uniqueness of ``(entity, entity_seq)`` is kept by the single writer and checked by
``EventLog.verify``.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
"""Version of the on-disk format this code writes and reads."""

APPLICATION_ID = 0x57414E54
"""``PRAGMA application_id`` of a wantbuild log (``'WANT'``), so a foreign SQLite file is told apart."""

CREATE_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    entity_key INTEGER NOT NULL,
    entity_seq INTEGER NOT NULL,
    prev_seq INTEGER,
    type_key INTEGER NOT NULL,
    payload BLOB NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE entities (
    entity_key INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    last_entity_seq INTEGER NOT NULL,
    UNIQUE (kind, entity_id)
);
CREATE TABLE event_types (
    type_key INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    completed_at REAL,
    result TEXT
);
CREATE INDEX commands_pending ON commands (id) WHERE completed_at IS NULL;
"""

CREATE_SNAPSHOTS = """
CREATE TABLE IF NOT EXISTS snapshots (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    format TEXT NOT NULL,
    size INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    created_at REAL NOT NULL,
    pieces INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_pieces (
    seq INTEGER NOT NULL,
    piece INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (seq, piece)
) WITHOUT ROWID;
"""
"""Snapshots of the World (issue 15), beside the events. Added without a schema version bump: a writer creates
the tables when it opens a log that lacks them, an older wantbuild ignores them, and a reader of a log without
them finds no snapshot. A snapshot is listed once its head row (``snapshots``) is written, after its pieces."""

INSERT_EVENT = (
    "INSERT INTO events (seq, entity_key, entity_seq, prev_seq, type_key, payload, at) "
    "VALUES (?, ?, ?, NULLIF(?, 0), ?, ?, ?)"
)
"""An event row; ``prev_seq`` 0 (or NULL) is stored as NULL, the entity's first event. The writer binds 0 and the
payload as a ``bytearray``: the sqlite3 module binds an exact int, float, str or bytearray directly, but sends
``None`` and ``bytes`` through its adapter lookup first (~0.2 us each per row, a third of the row's insert)."""
INSERT_ENTITY = (
    "INSERT INTO entities (entity_key, kind, entity_id, last_seq, last_entity_seq) VALUES (?, ?, ?, ?, ?)"
)
UPDATE_ENTITY = "UPDATE entities SET last_seq = ?, last_entity_seq = ? WHERE entity_key = ?"

MULTI_ROWS_MAX = 256
"""The most rows one multi-row ``INSERT ... VALUES (...), (...)`` of the writer holds (7 bound parameters a row)."""


def multi_row_sql(single: str, rows: int) -> str:
    """``single`` (an ``INSERT ... VALUES (...)`` of one row) made into an insert of ``rows`` rows.

    The writer inserts a batch's rows this way rather than with ``executemany``: the sqlite3 module steps and
    resets a statement per row there, about a third of what the row's insert costs in all (the event row 0.93 to
    0.64 us, a new entity's 1.5 to 0.8). It runs only statements of a power-of-two number of rows, so a handful of
    statements serve every batch size from the connection's statement cache (compiling a 250-row statement costs
    ~0.6 ms, more than writing the rows)."""
    head, sep, values = single.partition(" VALUES ")
    assert sep, single
    return head + sep + ",".join([values] * rows)
INSERT_TYPE = "INSERT INTO event_types (type_key, name, version) VALUES (?, ?, ?)"

COMPLETE_COMMAND = "UPDATE commands SET completed_at = ?, result = ? WHERE id = ? AND completed_at IS NULL"

# A command's state from its row; a failed command's result holds "ok": false (json_type is 'false' for it).
COMMAND_STATE = (
    "CASE WHEN completed_at IS NULL THEN 'pending' "
    "WHEN json_type(result, '$.ok') = 'false' THEN 'failed' ELSE 'ok' END"
)

HIGH_WATER = "last_seq"
"""The ``meta`` key holding a committed ``seq`` (the high-water mark), written in the transaction of each batch
whose loss the writer's open check could not otherwise see (``EventLog._needs_mark``): a log whose last event is
below it has lost events from its end. (The other witness, the largest ``entities.last_seq``, needs a full scan.)"""
UPDATE_HIGH_WATER = f"UPDATE meta SET value = ? WHERE key = '{HIGH_WATER}'"

# Rows as the read paths want them: the entity's kind and id joined in, in seq order.
SELECT_EVENTS = (
    "SELECT e.seq, n.kind, n.entity_id, e.entity_seq, e.type_key, e.payload, e.at "
    "FROM events e JOIN entities n ON n.entity_key = e.entity_key "
)

# One entity's history: walk prev_seq down from the entity's last event.
SELECT_HISTORY = """
WITH RECURSIVE chain(seq) AS (
    SELECT last_seq FROM entities WHERE kind = ? AND entity_id = ?
    UNION ALL
    SELECT e.prev_seq FROM events e JOIN chain c ON e.seq = c.seq WHERE e.prev_seq IS NOT NULL
)
SELECT e.seq, e.entity_seq, e.type_key, e.payload, e.at
FROM chain c JOIN events e ON e.seq = c.seq
ORDER BY e.seq
"""

SELECT_HISTORIES = """
WITH RECURSIVE chain(entity_id, seq) AS (
    SELECT entity_id, last_seq FROM entities WHERE kind = ? AND entity_id IN ({marks})
    UNION ALL
    SELECT c.entity_id, e.prev_seq FROM events e JOIN chain c ON e.seq = c.seq WHERE e.prev_seq IS NOT NULL
)
SELECT c.entity_id, e.seq, e.entity_seq, e.type_key, e.payload, e.at
FROM chain c JOIN events e ON e.seq = c.seq
ORDER BY e.seq
"""
"""Several entities' chains at once (``{marks}``: one ``?`` per id, at most :data:`LOOKUP_ENTITIES_CHUNK`)."""

LOOKUP_ENTITIES_CHUNK = 400
"""How many (kind, id) pairs one batched entity lookup asks for (two bound parameters each)."""


def lookup_entities_sql(n: int) -> str:
    """SQL that fetches the cached state of ``n`` entities given as ``(kind, entity_id)`` parameter pairs."""
    # A join against the VALUES list searches the UNIQUE(kind, entity_id) index once per key; the row-value
    # form ``(kind, entity_id) IN (VALUES ...)`` scans the whole table (58 ms vs 0.9 ms at 200k entities).
    values = ",".join(["(?,?)"] * n)
    return (
        f"WITH v(k, i) AS (VALUES {values}) "
        "SELECT e.entity_key, e.kind, e.entity_id, e.last_seq, e.last_entity_seq "
        "FROM v JOIN entities AS e ON e.kind = v.k AND e.entity_id = v.i"
    )
