"""The coordinating actor, the job graph, job execution, and the runtime that ties them together."""

from ._execution import JobContext, JobProtocolError, MissingDeps, RunOutcome, run_callable, run_command
from ._executors import DaskExecutor, Executor, ExecutorError, LocalExecutor, RayExecutor
from ._explain import Explanation, explain
from ._graph import Graph
from ._graph_errors import GraphError, NoJobForRef, UnknownJob
from ._graph_toml import load_graph
from ._hints import did_you_mean, sole_error, valid_choices
from ._jobs import Job, Retry
from ._pattern import Pattern
from ._runtime import Recovery, Runtime, RuntimeClosed, UnknownEntity, WantHandle, open_runtime
from ._schedules import (
    CATCH_UP,
    CatchUp,
    Schedule,
    ScheduleError,
    check_schedule,
    due_ticks,
    fire_times,
    render_template,
)
from ._sets import parse_partition_set, read_refs
from ._supervisor import Supervisor
from ._upstream import UpstreamLink

__all__ = [
    "CATCH_UP",
    "CatchUp",
    "DaskExecutor",
    "Executor",
    "ExecutorError",
    "Explanation",
    "Graph",
    "GraphError",
    "Job",
    "JobContext",
    "JobProtocolError",
    "LocalExecutor",
    "MissingDeps",
    "NoJobForRef",
    "Pattern",
    "RayExecutor",
    "Recovery",
    "Retry",
    "RunOutcome",
    "Runtime",
    "RuntimeClosed",
    "Schedule",
    "ScheduleError",
    "Supervisor",
    "UnknownEntity",
    "UnknownJob",
    "UpstreamLink",
    "WantHandle",
    "check_schedule",
    "did_you_mean",
    "due_ticks",
    "explain",
    "fire_times",
    "load_graph",
    "open_runtime",
    "parse_partition_set",
    "read_refs",
    "render_template",
    "run_callable",
    "run_command",
    "sole_error",
    "valid_choices",
]
