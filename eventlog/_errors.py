"""Errors of the event log, and the root of every wantbuild error.

The hierarchy (``wantbuild`` re-exports all of it)::

    WantbuildError
     └── EventLogError                  anything the log refuses or cannot do
          ├── ConcurrencyError          wrong expected_entity_seq (optimistic concurrency)
          ├── SchemaVersionError        the log was written by a newer wantbuild
          ├── FingerprintMismatch       the log belongs to another graph
          ├── CorruptLogError           a row that cannot be read back: unknown type, bad payload, gap
          │    ├── DamagedLogError      the log's structure is damaged: it is read, never written
          │    └── SnapshotError        a stored snapshot is incomplete or fails its checksum (skipped)
          ├── CommitError               a batch could not commit (disk full, I/O error, locked)
          ├── WriterFailedError         the writer stopped on an unexpected error (a bug): no more appends
          ├── LogClosedError            the log is closed or was never opened
          ├── LogNotFoundError          a reader (writer=False) found no log at the path
          ├── LogUnreachableError       the log's database server cannot be reached (PostgreSQL)
          ├── LogAccessDenied           the server refused the user, the password or a privilege
          ├── ReadOnlyLogError          a write through a log opened with writer=False
          ├── CommandCompletedError     completing an inbox command that was already completed
          ├── UnknownCommandError       completing an inbox command that does not exist (a LookupError)
          ├── WriterLockedError         another process already writes this log
          └── LeaseLost                 this writer's lease was taken or expired: it may write no more

``WantbuildError`` lives here because ``eventlog`` is the bottom of the dependency order and imports nothing
of ours; every other package derives its errors from it.
"""

from __future__ import annotations


class WantbuildError(Exception):
    """Root of every error wantbuild raises on purpose."""


class EventLogError(WantbuildError):
    """The event log refused an operation or could not carry it out."""


class ConcurrencyError(EventLogError):
    """An append's ``expected_entity_seq`` is not the entity's last ``entity_seq``."""

    def __init__(self, entity_kind: str, entity_id: str, expected: int, actual: int) -> None:
        self.entity_kind = entity_kind
        self.entity_id = entity_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{entity_kind} {entity_id!r}: append expected entity_seq {expected} "
            f"but the log has {actual}; reload the entity and retry"
        )


class SchemaVersionError(EventLogError):
    """The log was written with a schema version this wantbuild does not know."""


class FingerprintMismatch(EventLogError):
    """The log was written for another graph."""


class CorruptLogError(EventLogError):
    """A stored event cannot be read back. ``seq`` names the offending row."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        self.seq = seq
        super().__init__(message if seq is None else f"seq {seq}: {message}")


class DamagedLogError(CorruptLogError):
    """The log's structure is damaged (events missing, links broken), so nothing will be written to it.

    Raised when a writer opens a log whose tail fails the structural check, and by an append that finds the
    damage (its entity's last event missing). ``problems`` lists what was found; readers still open the log.
    """

    def __init__(self, path: str, problems: list[str] | tuple[str, ...]) -> None:
        self.path = path
        self.problems = tuple(problems)
        more = f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
        super().__init__(
            f"{path}: the log is damaged, so nothing will be written to it: {self.problems[0]}{more}. "
            f"To see every problem, check it with `wantbuild replay {path} --verify`; then restore it from a "
            "backup (or move it aside and start a new log). Reading it (status, events, replay) still works."
        )


class SnapshotError(CorruptLogError):
    """A stored snapshot cannot be used: pieces missing, bytes that do not decompress, or a checksum mismatch.

    Never fatal: whoever loads snapshots skips this one (using an older snapshot or a full replay) and reports it.
    ``seq`` is the snapshot's."""


class CommitError(EventLogError):
    """A batch could not be committed; none of its appends were written."""


class WriterFailedError(EventLogError, RuntimeError):
    """The log's writer stopped on an unexpected error (a bug, not a database error); ``__cause__`` is that error.

    The batch it was writing and every append after it fail with this error; nothing of them was written. The
    log accepts no more appends: close it (closing raises the original error) and fix the bug.
    """


class LogClosedError(EventLogError, RuntimeError):
    """The log is not open."""


class LogNotFoundError(EventLogError, FileNotFoundError):
    """There is no event log at the path (only writers create one)."""


class LogUnreachableError(EventLogError, ConnectionError):
    """The log's database server cannot be reached (refused, unknown host, timed out, starting up)."""


class LogAccessDenied(EventLogError, PermissionError):
    """The database server refused the user or password, or a privilege the log needs."""


class ReadOnlyLogError(EventLogError):
    """An append (or another writer-only call) on a log opened with ``writer=False``."""


class CommandCompletedError(EventLogError):
    """An inbox command was completed again (``complete_command``, or an append carrying its completion).

    ``command_id`` names it. Completing is what makes a command's effect happen exactly once: an append that
    carries an already-completed command is not written, so a redelivered command cannot apply its effect twice.
    """

    def __init__(self, message: str, command_id: int) -> None:
        self.command_id = command_id
        super().__init__(message)


class UnknownCommandError(EventLogError, LookupError):
    """There is no inbox command with that id. ``command_id`` names it."""

    def __init__(self, message: str, command_id: int) -> None:
        self.command_id = command_id
        super().__init__(message)


class WriterLockedError(EventLogError):
    """Another process holds this log's writer lock."""


class LeaseLost(EventLogError):
    """This writer no longer holds the log's writer lease (it expired, or another writer took it).

    Every append from then on fails with this error, and so does the batch that found out: nothing of it was
    written. The runtime that gets it must stop acting (its actors, its jobs' results) and exit; whoever holds
    the lease now owns the log.
    """
