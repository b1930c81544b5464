"""The log's PostgreSQL schema and the SQL the PostgreSQL backend runs.

A log is one PostgreSQL *schema* (``?schema=`` in the URL, ``wantbuild`` by default): several logs (several
graphs) can share a database, each with its own ``seq``, its own writer and its own lease. The tables mirror
the SQLite ones (``_schema.py``) with PostgreSQL types, plus ``writer_lease``: the one row that says who may
write, under which epoch, until when (on the database's clock). Every batch is one statement that first
extends the lease *if the writer's epoch still holds and has not expired*, and writes the events only then,
so a writer that lost its lease cannot land a single row (see ``docs/eventlog.md``, "Fencing").
"""

from __future__ import annotations

CREATE_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE {s}.meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE {s}.events (
    seq bigint PRIMARY KEY,
    entity_key bigint NOT NULL,
    entity_seq bigint NOT NULL,
    prev_seq bigint,
    type_key integer NOT NULL,
    payload bytea NOT NULL,
    at double precision NOT NULL
);
CREATE TABLE {s}.entities (
    entity_key bigint PRIMARY KEY,
    kind text NOT NULL,
    entity_id text NOT NULL,
    last_seq bigint NOT NULL,
    last_entity_seq bigint NOT NULL,
    UNIQUE (kind, entity_id)
) WITH (fillfactor = 70);
CREATE TABLE {s}.event_types (
    type_key integer PRIMARY KEY,
    name text NOT NULL,
    version integer NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE {s}.commands (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    payload text NOT NULL,
    submitted_at double precision NOT NULL,
    completed_at double precision,
    result text
);
CREATE INDEX commands_pending ON {s}.commands (id) WHERE completed_at IS NULL;
CREATE TABLE {s}.writer_lease (
    id integer PRIMARY KEY CHECK (id = 1),
    owner text NOT NULL,
    epoch bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    acquired_at timestamptz,
    renewed_at timestamptz,
    last_seq bigint NOT NULL,
    last_batch bigint NOT NULL,
    backend_pid integer,
    backend_start timestamptz
);
INSERT INTO {s}.writer_lease VALUES (1, '', 0, '-infinity', NULL, NULL, 0, 0, NULL, NULL);
"""
"""``{s}`` is the quoted schema name. ``entities`` leaves room in each page (fillfactor 70) so the per-batch
tip updates stay HOT updates (no index change, no new index entries)."""

CREATE_SNAPSHOTS = """
CREATE TABLE IF NOT EXISTS {s}.snapshots (
    seq bigint PRIMARY KEY,
    at double precision NOT NULL,
    format text NOT NULL,
    size bigint NOT NULL,
    stored bigint NOT NULL,
    checksum text NOT NULL,
    created_at double precision NOT NULL,
    pieces integer NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.snapshot_pieces (
    seq bigint NOT NULL,
    piece integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (seq, piece)
);
"""
"""Snapshots of the World (as SQLite's ``_schema.CREATE_SNAPSHOTS``): made by a writer that opens a log without
them, no schema version bump."""

TABLES = frozenset({"meta", "events", "entities", "event_types", "commands", "writer_lease", "snapshots",
                    "snapshot_pieces"})

# A transaction-scoped advisory lock serialises two writers creating the same log's schema at once.
CREATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('wantbuild log ' || $1))"

SCHEMA_TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = $1"

# The holder's session: a lease whose writer's database session is gone (the process died, or its connection
# did) may be taken at once, without waiting for it to lapse; the epoch fence keeps that safe either way.
_THIS_SESSION = "backend_pid = pg_backend_pid(), " \
    "backend_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"
HOLDER_ALIVE = (
    "(l.backend_pid IS NOT NULL AND EXISTS (SELECT 1 FROM pg_stat_activity a "
    "WHERE a.pid = l.backend_pid AND a.backend_start = l.backend_start))"
)

ACQUIRE_LEASE = f"""
UPDATE {{s}}.writer_lease AS l
SET owner = $1, epoch = epoch + 1, expires_at = clock_timestamp() + make_interval(secs => $2),
    acquired_at = clock_timestamp(), renewed_at = clock_timestamp(), last_batch = 0, {_THIS_SESSION}
WHERE id = 1 AND (expires_at <= clock_timestamp() OR NOT {HOLDER_ALIVE})
RETURNING epoch
"""

REATTACH_LEASE = f"UPDATE {{s}}.writer_lease SET {_THIS_SESSION} WHERE id = 1 AND epoch = $1"
"""After the writer reconnected: its lease now lives with the new session."""

DETACH_LEASE = "UPDATE {s}.writer_lease SET backend_pid = NULL WHERE id = 1 AND epoch = $1"
"""A simulated crash (``abort``): the lease stays, its session is marked gone, as after a real crash."""

RENEW_LEASE = """
UPDATE {s}.writer_lease
SET expires_at = clock_timestamp() + make_interval(secs => $1), renewed_at = clock_timestamp()
WHERE id = 1 AND epoch = $2 AND expires_at > clock_timestamp()
RETURNING epoch
"""

RELEASE_LEASE = "UPDATE {s}.writer_lease SET expires_at = clock_timestamp() WHERE id = 1 AND epoch = $1"

# A lease never taken expires at -infinity (a fresh log, between its creation and its writer's first lease):
# "seconds left" is then -Infinity, not an error (PostgreSQL cannot subtract infinite timestamps).
LEASE_STATE = f"""
SELECT owner, epoch,
       CASE WHEN isfinite(expires_at) THEN EXTRACT(EPOCH FROM expires_at - clock_timestamp())::float8
            ELSE '-Infinity'::float8 END,
       last_seq, last_batch,
       {HOLDER_ALIVE}
FROM {{s}}.writer_lease AS l WHERE id = 1
"""

# One batch, one statement, one round trip: the fence first; every write is conditional on it; the notify
# (sent at commit) only when it held. No row back means the fence did not hold: nothing was written.
APPEND_BATCH = """
WITH fence AS (
    UPDATE {s}.writer_lease
    SET expires_at = clock_timestamp() + make_interval(secs => $1), renewed_at = clock_timestamp(),
        last_seq = $3, last_batch = $4
    WHERE id = 1 AND epoch = $2 AND expires_at > clock_timestamp()
    RETURNING epoch
), ty AS (
    INSERT INTO {s}.event_types (type_key, name, version)
    SELECT * FROM unnest($5::integer[], $6::text[], $7::integer[]) WHERE EXISTS (SELECT FROM fence)
), ev AS (
    INSERT INTO {s}.events (seq, entity_key, entity_seq, prev_seq, type_key, payload, at)
    SELECT s, k, es, NULLIF(p, 0), tk, pl, a
    FROM unnest($8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::integer[], $13::bytea[],
                $14::float8[]) AS u(s, k, es, p, tk, pl, a)
    WHERE EXISTS (SELECT FROM fence)
), ne AS (
    INSERT INTO {s}.entities (entity_key, kind, entity_id, last_seq, last_entity_seq)
    SELECT * FROM unnest($15::bigint[], $16::text[], $17::text[], $18::bigint[], $19::bigint[])
    WHERE EXISTS (SELECT FROM fence)
), ue AS (
    UPDATE {s}.entities AS e SET last_seq = u.s, last_entity_seq = u.es
    FROM unnest($20::bigint[], $21::bigint[], $22::bigint[]) AS u(s, es, k)
    WHERE e.entity_key = u.k AND EXISTS (SELECT FROM fence)
), cm AS (
    UPDATE {s}.commands AS c SET completed_at = u.at, result = u.r
    FROM unnest($24::bigint[], $25::float8[], $26::text[]) AS u(id, at, r)
    WHERE c.id = u.id AND c.completed_at IS NULL AND EXISTS (SELECT FROM fence)
)
SELECT fence.epoch FROM fence, pg_notify($23, $3::text) AS notified
"""

COMMAND_STATE = (
    "CASE WHEN completed_at IS NULL THEN 'pending' "
    "WHEN (result::jsonb -> 'ok') = 'false'::jsonb THEN 'failed' ELSE 'ok' END"
)
"""A command's state from its row (as SQLite's ``_schema.COMMAND_STATE``)."""

LOOKUP_ENTITIES = """
SELECT e.entity_key, e.kind, e.entity_id, e.last_seq, e.last_entity_seq
FROM unnest($1::text[], $2::text[]) AS v(k, i) JOIN {s}.entities AS e ON e.kind = v.k AND e.entity_id = v.i
"""

SELECT_EVENTS = (
    "SELECT e.seq, n.kind, n.entity_id, e.entity_seq, e.type_key, e.payload, e.at "
    "FROM {s}.events e JOIN {s}.entities n ON n.entity_key = e.entity_key "
)

SELECT_HISTORY = """
WITH RECURSIVE chain(seq) AS (
    SELECT last_seq FROM {s}.entities WHERE kind = $1 AND entity_id = $2
    UNION ALL
    SELECT e.prev_seq FROM {s}.events e JOIN chain c ON e.seq = c.seq WHERE e.prev_seq IS NOT NULL
)
SELECT e.seq, e.entity_seq, e.type_key, e.payload, e.at
FROM chain c JOIN {s}.events e ON e.seq = c.seq
ORDER BY e.seq
"""

SELECT_HISTORIES = """
WITH RECURSIVE chain(entity_id, seq) AS (
    SELECT entity_id, last_seq FROM {s}.entities WHERE kind = $1 AND entity_id = ANY($2::text[])
    UNION ALL
    SELECT c.entity_id, e.prev_seq FROM {s}.events e JOIN chain c ON e.seq = c.seq WHERE e.prev_seq IS NOT NULL
)
SELECT c.entity_id, e.seq, e.entity_seq, e.type_key, e.payload, e.at
FROM chain c JOIN {s}.events e ON e.seq = c.seq
ORDER BY e.seq
"""


def channel(schema: str) -> str:
    """The NOTIFY channel a log's writer signals each commit on."""
    return f"wantbuild_{schema}"
