"""wantbuild: orchestrated state machines for partitioned data builds, on an append-only SQLite event log.

The embedding API. Everything public lives here; the packages underneath (``eventlog``, ``actors``,
``supervisor``) are the implementation::

    import wantbuild

    async with wantbuild.open("wantbuild.db", graph) as rt:
        handle = await rt.want(["daily/2026-11-02"])
        state = await handle.done()

``open`` is an async context manager: no global state, no event loop of its own, so it runs inside any
asyncio program, and several runtimes (on different logs) can live in one process.

Errors all derive from :class:`WantbuildError`::

    WantbuildError
     ├── EventLogError                  the event log refused an operation or could not carry it out
     │    ├── ConcurrencyError          wrong expected entity_seq (optimistic concurrency)
     │    ├── SchemaVersionError        the log was written by a newer wantbuild
     │    ├── FingerprintMismatch       the log belongs to another graph
     │    ├── CorruptLogError           a stored event cannot be read back (names its seq)
     │    │    └── ReplayError          an event that does not apply to its entity (names its seq)
     │    ├── CommitError               a batch could not commit
     │    ├── LogClosedError            the log is closed (also a RuntimeError)
     │    ├── LogNotFoundError          no log at the path (also a FileNotFoundError)
     │    ├── LogUnreachableError       the log's PostgreSQL server cannot be reached (a ConnectionError)
     │    ├── LogAccessDenied           the server refused the user or password (a PermissionError)
     │    ├── ReadOnlyLogError          a write through a log opened with writer=False
     │    ├── WriterLockedError         another process already writes this log
     │    └── LeaseLost                 this writer's lease expired or was taken: it may write no more
     ├── IllegalTransition (ValueError) an event a state machine does not accept in its current state
     ├── InvalidRef (ValueError)        a malformed partition ref (names the ref and the rule)
     ├── GraphError (ValueError)        a graph definition that cannot be used (names the job and the fix)
     ├── NoJobForRef (LookupError)      no job of the graph produces the ref
     ├── UnknownJob (KeyError)          no job has that name
     ├── UnknownEntity (LookupError)    no want, partition or job run with that id
     ├── RuntimeClosed (RuntimeError)   the runtime is shutting down or closed
     ├── ActorStopped (RuntimeError)    an actor stopped after repeated crashes
     ├── ActorSystemClosed (RuntimeError) the actor system is not running
     ├── AskTimeout (TimeoutError)      no reply from an actor in time
     └── InjectedFault (RuntimeError)   raised on purpose by a Faults drill (``open(..., faults=...)``)
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from actors import (
    JOB_RUN,
    PARTITION,
    WANT,
    ActorStopped,
    ActorSystemClosed,
    AskTimeout,
    Clock,
    Faults,
    IllegalTransition,
    InjectedFault,
    InvalidRef,
    JobRunState,
    JobRunStatus,
    PartitionState,
    PartitionStatus,
    ReplayError,
    SystemClock,
    Violation,
    WantState,
    WantStatus,
    World,
    check_log,
    rebuild,
    validate_ref,
    validate_refs,
)
from eventlog import (
    CommitError,
    ConcurrencyError,
    CorruptLogError,
    EventLog,
    EventLogError,
    FingerprintMismatch,
    LeaseLost,
    LogAccessDenied,
    LogClosedError,
    LogNotFoundError,
    LogUnreachableError,
    ReadOnlyLogError,
    Record,
    SchemaVersionError,
    WantbuildError,
    WriterLockedError,
)
from supervisor import (
    Explanation,
    Graph,
    GraphError,
    JobContext,
    MissingDeps,
    NoJobForRef,
    Recovery,
    Runtime,
    RuntimeClosed,
    UnknownEntity,
    WantHandle,
    explain,
    load_graph,
)
from supervisor import open_runtime as _open_runtime
from supervisor._graph import UnknownJob  # not in supervisor.__all__ (yet)

try:
    __version__ = _version("wantbuild")
except _PackageNotFoundError:  # pragma: no cover - running from a checkout that was never installed
    __version__ = "0+unknown"

open = _open_runtime
"""``async with wantbuild.open(path, graph, ...) as rt``: the runtime on the log at ``path`` (see
:func:`supervisor.open_runtime` for the options: ``clock``, ``policy``, ``log_dir``, ``accept_graph_change``...)."""

__all__ = [
    "JOB_RUN",
    "PARTITION",
    "WANT",
    "ActorStopped",
    "ActorSystemClosed",
    "AskTimeout",
    "Clock",
    "CommitError",
    "ConcurrencyError",
    "CorruptLogError",
    "EventLog",
    "EventLogError",
    "Explanation",
    "Faults",
    "FingerprintMismatch",
    "Graph",
    "GraphError",
    "IllegalTransition",
    "InjectedFault",
    "InvalidRef",
    "JobContext",
    "JobRunState",
    "JobRunStatus",
    "LeaseLost",
    "LogAccessDenied",
    "LogClosedError",
    "LogNotFoundError",
    "LogUnreachableError",
    "MissingDeps",
    "NoJobForRef",
    "PartitionState",
    "PartitionStatus",
    "ReadOnlyLogError",
    "Record",
    "Recovery",
    "ReplayError",
    "Runtime",
    "RuntimeClosed",
    "SchemaVersionError",
    "SystemClock",
    "UnknownEntity",
    "UnknownJob",
    "Violation",
    "WantHandle",
    "WantState",
    "WantStatus",
    "WantbuildError",
    "World",
    "WriterLockedError",
    "__version__",
    "check_log",
    "explain",
    "load_graph",
    "open",
    "rebuild",
    "validate_ref",
    "validate_refs",
]
