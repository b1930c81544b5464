"""What the log hands out: committed records, inbox commands and verification reports.

All three are frozen ``msgspec`` structs: cheap to build in the replay hot loop, compared field by field,
hashable where their fields are. :class:`Record` is built with ``gc=False``: a replay builds millions of
them and they never take part in reference cycles (they hold strings, numbers and an immutable event), so
keeping them out of the cyclic garbage collector avoids full collections that would otherwise grow with
the log.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ._events import Event


class Record(msgspec.Struct, frozen=True, gc=False):
    """One committed event, as stored: its global ``seq``, its entity and place in that entity's history."""

    seq: int
    """Global order, from 1, assigned by the writer in append-call order."""
    entity_kind: str
    entity_id: str
    entity_seq: int
    """The entity's own counter: 1 for its first event, without gaps."""
    event: Event
    at: float
    """The runtime clock when ``append`` was called."""

    @property
    def type(self) -> str:
        """The event's type name, e.g. ``"WantCreated"``."""
        return self.event.event_name


CommandState = Literal["pending", "ok", "failed"]
"""Where an inbox command is: not completed yet, completed, or completed with ``{"ok": false, ...}``."""


class Command(msgspec.Struct, frozen=True):
    """A request in the command inbox (``create want``, ``cancel``, ``taint``...), and its outcome.

    The runtime completes a command with a result mapping; by convention ``{"ok": true, ...}`` on success and
    ``{"ok": false, "error": "what went wrong"}`` when it refused or failed the command (:attr:`state`).
    """

    id: int
    name: str
    payload: dict[str, Any]
    submitted_at: float
    completed_at: float | None = None
    result: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        """Whether the runtime has completed the command (``result`` is then set)."""
        return self.completed_at is not None

    @property
    def state(self) -> CommandState:
        """``"pending"`` until completed; then ``"failed"`` if the result says ``"ok": false``, else ``"ok"``."""
        if self.completed_at is None:
            return "pending"
        return "failed" if self.result is not None and self.result.get("ok") is False else "ok"

    @property
    def error(self) -> str | None:
        """Why a failed command failed (its result's ``"error"``); ``None`` unless :attr:`state` is failed."""
        if self.state != "failed":
            return None
        assert self.result is not None
        return str(self.result.get("error", "the runtime refused the command (no reason given)"))


class Problem(msgspec.Struct, frozen=True):
    """One finding of :meth:`EventLog.verify`; ``seq`` is ``None`` for problems not tied to one row."""

    seq: int | None
    message: str

    def __str__(self) -> str:
        return self.message if self.seq is None else f"seq {self.seq}: {self.message}"


class VerifyReport(msgspec.Struct, frozen=True):
    """The result of :meth:`EventLog.verify`: what was checked and every problem found."""

    path: str
    events: int
    entities: int
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def __str__(self) -> str:
        head = f"{self.path}: {self.events} events, {self.entities} entities"
        if self.ok:
            return f"{head}: ok"
        return "\n".join([f"{head}: {len(self.problems)} problem(s)", *(f"  {p}" for p in self.problems)])


class Lease(msgspec.Struct, frozen=True):
    """Who may write a log now: the holder of its writer lease (SQLite: the holder of the lock file).

    ``epoch`` goes up by one each time the lease changes hands, and every batch a writer commits is
    conditional on its epoch still holding; ``expires_in`` is how long the lease lasts without renewal,
    measured on the database's clock (``None`` for a lock that lasts as long as its process).
    """

    owner: str
    epoch: int
    expires_in: float | None = None


class SnapshotInfo(msgspec.Struct, frozen=True):
    """A stored snapshot: the state of every entity after ``seq`` (its bytes are read with ``read_snapshot``).

    The log stores a snapshot's bytes without knowing what they mean (``format`` names that, e.g.
    ``wantbuild-world/1``); ``checksum`` is the BLAKE2b digest (hex, 16 bytes) of the uncompressed bytes, checked
    on every read.
    """

    seq: int
    """The last event the snapshot covers: it equals a replay of events ``1..seq``."""
    at: float
    """That event's ``at``."""
    format: str
    size: int
    """Uncompressed bytes."""
    stored: int
    """Bytes as stored (compressed)."""
    checksum: str
    created_at: float
