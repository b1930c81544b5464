"""The coordinating actor, the job graph, job execution, and the runtime that ties them together."""

from ._execution import JobContext, JobProtocolError, MissingDeps, RunOutcome, run_callable, run_command
from ._executors import DaskExecutor, Executor, ExecutorError, LocalExecutor, RayExecutor
from ._explain import Explanation, explain
from ._graph import Graph, GraphError, Job, NoJobForRef, Pattern, Retry, UnknownJob
from ._graph_toml import load_graph
from ._hints import did_you_mean, sole_error, valid_choices
from ._runtime import Recovery, Runtime, RuntimeClosed, UnknownEntity, WantHandle, open_runtime
from ._supervisor import Supervisor

__all__ = [
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
    "Supervisor",
    "UnknownEntity",
    "UnknownJob",
    "WantHandle",
    "did_you_mean",
    "explain",
    "load_graph",
    "open_runtime",
    "run_callable",
    "run_command",
    "sole_error",
    "valid_choices",
]
