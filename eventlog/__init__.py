"""The append-only event log: typed events, group commit, replay, the command inbox.

``eventlog`` is the bottom of wantbuild's dependency order and imports nothing else of ours. Quick use::

    async with open_log("run.db", fingerprint=graph.fingerprint) as log:   # or "postgresql://..."
        rec = await log.append("want", want_id, 0, WantCreated(refs=("daily/2026-11-01",)))
        async for batch in log.read_batches():
            ...

See ``docs/eventlog.md`` for the schema, the group commit, the durability guarantee and the errors.
:func:`get_logger` gives the loggers every wantbuild package logs through: quiet unless the embedder asks.
"""

from ._core import DEFAULT_DURABILITY, Append, Durability
from ._errors import (
    CommandCompletedError,
    CommitError,
    ConcurrencyError,
    CorruptLogError,
    DamagedLogError,
    EventLogError,
    FingerprintMismatch,
    LeaseLost,
    LogAccessDenied,
    LogClosedError,
    LogNotFoundError,
    LogUnreachableError,
    ReadOnlyLogError,
    SchemaVersionError,
    SnapshotError,
    UnknownCommandError,
    WantbuildError,
    WriterFailedError,
    WriterLockedError,
)
from ._events import REGISTRY, Event, EventRegistry, event
from ._log import EventLog
from ._logging import LibraryLogger, get_logger
from ._open import Log, open_log
from ._postgres import PostgresEventLog
from ._records import Command, CommandState, Lease, Problem, Record, SnapshotInfo, VerifyReport
from ._schema import SCHEMA_VERSION
from ._target import is_postgres, log_label, redact

__all__ = [
    "DEFAULT_DURABILITY",
    "REGISTRY",
    "SCHEMA_VERSION",
    "Append",
    "Command",
    "CommandCompletedError",
    "CommandState",
    "CommitError",
    "ConcurrencyError",
    "CorruptLogError",
    "DamagedLogError",
    "Durability",
    "Event",
    "EventLog",
    "EventLogError",
    "EventRegistry",
    "FingerprintMismatch",
    "Lease",
    "LeaseLost",
    "LibraryLogger",
    "Log",
    "LogAccessDenied",
    "LogClosedError",
    "LogNotFoundError",
    "LogUnreachableError",
    "PostgresEventLog",
    "Problem",
    "ReadOnlyLogError",
    "Record",
    "SchemaVersionError",
    "SnapshotError",
    "SnapshotInfo",
    "UnknownCommandError",
    "VerifyReport",
    "WantbuildError",
    "WriterFailedError",
    "WriterLockedError",
    "event",
    "get_logger",
    "is_postgres",
    "log_label",
    "open_log",
    "redact",
]
