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
     │    │    ├── ReplayError          an event that does not apply to its entity (names its seq)
     │    │    ├── DamagedLogError      the log's structure is damaged: read, never written
     │    │    └── SnapshotError        a stored snapshot is incomplete or fails its checksum (skipped)
     │    ├── CommitError               a batch could not commit
     │    ├── WriterFailedError         the log's writer stopped on a bug (also a RuntimeError)
     │    ├── LogClosedError            the log is closed (also a RuntimeError)
     │    ├── LogNotFoundError          no log at the path (also a FileNotFoundError)
     │    ├── LogUnreachableError       the log's PostgreSQL server cannot be reached (a ConnectionError)
     │    ├── LogAccessDenied           the server refused the user or password (a PermissionError)
     │    ├── ReadOnlyLogError          a write through a log opened with writer=False (or a read-only file)
     │    ├── CommandCompletedError     an inbox command completed twice (its effect is not applied again)
     │    ├── UnknownCommandError       no inbox command with that id (also a LookupError)
     │    ├── WriterLockedError         another process already writes this log
     │    └── LeaseLost                 this writer's lease expired or was taken: it may write no more
     ├── IllegalTransition (ValueError) an event a state machine does not accept in its current state
     ├── InvalidRef (ValueError)        a malformed partition ref (names the ref and the rule)
     ├── GraphError (ValueError)        a graph definition that cannot be used (names the job and the fix)
     ├── NoJobForRef (LookupError)      no job of the graph produces the ref
     ├── PartitionSetError (ValueError) a range or partition set that cannot be read (names the spec and the fix)
     ├── ScheduleError (ValueError)     a schedule that cannot be used (cron, timezone, template)
     ├── UnknownJob (KeyError)          no job has that name
     ├── UnknownEntity (LookupError)    no want, partition or job run with that id
     ├── MissingDeps                    raised by a job: these upstream partitions are missing (not a failure)
     ├── RuntimeClosed (RuntimeError)   the runtime is shutting down or closed
     ├── ExecutorError (RuntimeError)   an executor's engine is missing or its cluster cannot be reached
     ├── ActorStopped (RuntimeError)    an actor stopped after repeated crashes
     ├── EntityEvicted (RuntimeError)   internal: an evicted entity was read without being loaded (a bug)
     ├── ActorSystemClosed (RuntimeError) the actor system is not running
     ├── AskDeadlock (RuntimeError)     an actor asked itself: it would wait for itself forever
     ├── UnknownActorKind (LookupError) no actor kind of that name is registered
     ├── AskTimeout (TimeoutError)      no reply from an actor in time
     ├── InjectedFault (RuntimeError)   raised on purpose by a Faults drill (``open(..., faults=...)``)
     ├── JobProtocolError (ValueError)  a job read its own output, a bad ref, or failed a partition not its own
     ├── NeverBuilt (LookupError)       a lineage query on a partition (or generation) no run built
     ├── StaleFence (RuntimeError)      publish(): a newer generation of the partition is already published
     └── ScenarioError (ValueError)     a scenario file that cannot be used (names the file, line and key)

``ScenarioError`` lives with the scenario runner (``scenarios.ScenarioError``); ``wantbuild.ScenarioError`` loads
it on first use, so ``import wantbuild`` does not pay for the runner.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version
from os import PathLike as _PathLike
from typing import Any as _Any

from actors import (
    JOB_RUN,
    PARTITION,
    WANT,
    ActorStopped,
    ActorSystemClosed,
    AskDeadlock,
    AskTimeout,
    Clock,
    EntityEvicted,
    EventFilter,
    Faults,
    IllegalTransition,
    InjectedFault,
    InvalidRef,
    JobRunState,
    JobRunStatus,
    LineageGraph,
    LineageNode,
    NeverBuilt,
    PartitionSet,
    PartitionSetError,
    PartitionState,
    PartitionStatus,
    ReplayError,
    Restored,
    SnapshotSkipped,
    Stale,
    SystemClock,
    TaintState,
    TaintStatus,
    UnknownActorKind,
    Violation,
    WantState,
    WantStatus,
    World,
    check_log,
    lineage,
    rebuild,
    validate_ref,
    validate_refs,
)
from eventlog import (
    CommandCompletedError,
    CommitError,
    ConcurrencyError,
    CorruptLogError,
    DamagedLogError,
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
    SnapshotError,
    SnapshotInfo,
    UnknownCommandError,
    WantbuildError,
    WriterFailedError,
    WriterLockedError,
)
from supervisor import (
    DaskExecutor,
    Executor,
    ExecutorError,
    Explanation,
    Graph,
    GraphError,
    JobContext,
    JobProtocolError,
    LocalExecutor,
    MissingDeps,
    NoJobForRef,
    RayExecutor,
    Recovery,
    Runtime,
    RuntimeClosed,
    Schedule,
    ScheduleError,
    UnknownEntity,
    UnknownJob,
    WantHandle,
    explain,
    load_graph,
    open_runtime,
    parse_partition_set,
)

from ._publish import StaleFence, fence_from_env, publish

try:
    __version__ = _version("wantbuild")
except _PackageNotFoundError:  # pragma: no cover - running from a checkout that was never installed
    __version__ = "0+unknown"

open = open_runtime
"""``async with wantbuild.open(path, graph, *, policy=..., clock=..., ...) as rt``: the runtime on the log at
``path``; every keyword is typed and documented on :func:`supervisor.open_runtime`."""
del open_runtime


# -- the web view (the `web` extra) ------------------------------------------------------------------------------
def web_app(source: Runtime | str | _PathLike[str], *, allow_writes: bool = False, token: str | None = None,
            poll_interval: float = 0.25, command_wait: float = 5.0) -> _Any:
    """The web view and HTTP API as an ASGI app (Starlette), to serve or mount in your own server.

    ``source`` is a live :class:`Runtime` (the app shows its World as it changes; nothing is replayed) or the
    path of a log (the app replays it once when it starts, in its lifespan, and follows it). With
    ``allow_writes`` the app creates and cancels wants and taints partitions through the log's command inbox,
    for requests that carry ``token``. Needs ``pip install 'wantbuild[web]'``. See ``docs/web.md``.
    """
    try:
        from ._web import create_app
    except ModuleNotFoundError as e:
        raise WantbuildError(f"the web view needs the web extra ({e.name} is not installed): "
                             "pip install 'wantbuild[web]'") from None
    return create_app(source, allow_writes=allow_writes, token=token, poll_interval=poll_interval,
                      command_wait=command_wait)

__all__ = [
    "JOB_RUN",
    "PARTITION",
    "WANT",
    "ActorStopped",
    "ActorSystemClosed",
    "AskDeadlock",
    "AskTimeout",
    "Clock",
    "CommandCompletedError",
    "CommitError",
    "ConcurrencyError",
    "CorruptLogError",
    "DamagedLogError",
    "DaskExecutor",
    "EntityEvicted",
    "EventFilter",
    "EventLog",
    "EventLogError",
    "Executor",
    "ExecutorError",
    "Explanation",
    "Faults",
    "FingerprintMismatch",
    "Graph",
    "GraphError",
    "IllegalTransition",
    "InjectedFault",
    "InvalidRef",
    "JobContext",
    "JobProtocolError",
    "JobRunState",
    "JobRunStatus",
    "LeaseLost",
    "LineageGraph",
    "LineageNode",
    "LocalExecutor",
    "LogAccessDenied",
    "LogClosedError",
    "LogNotFoundError",
    "LogUnreachableError",
    "MissingDeps",
    "NeverBuilt",
    "NoJobForRef",
    "PartitionSet",
    "PartitionSetError",
    "PartitionState",
    "PartitionStatus",
    "RayExecutor",
    "ReadOnlyLogError",
    "Record",
    "Recovery",
    "ReplayError",
    "Restored",
    "Runtime",
    "RuntimeClosed",
    "ScenarioError",
    "Schedule",
    "ScheduleError",
    "SchemaVersionError",
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotSkipped",
    "Stale",
    "StaleFence",
    "SystemClock",
    "TaintState",
    "TaintStatus",
    "UnknownActorKind",
    "UnknownCommandError",
    "UnknownEntity",
    "UnknownJob",
    "Violation",
    "WantHandle",
    "WantState",
    "WantStatus",
    "WantbuildError",
    "World",
    "WriterFailedError",
    "WriterLockedError",
    "__version__",
    "check_log",
    "explain",
    "fence_from_env",
    "lineage",
    "load_graph",
    "open",
    "parse_partition_set",
    "publish",
    "rebuild",
    "validate_ref",
    "validate_refs",
    "web_app",
]


def __getattr__(name: str) -> object:
    """``wantbuild.ScenarioError``, imported on first use (the scenario runner is not loaded by ``import
    wantbuild``)."""
    if name == "ScenarioError":
        from scenarios import ScenarioError

        return ScenarioError
    raise AttributeError(f"module 'wantbuild' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "ScenarioError"})
