"""Executors: where job runs execute (the runtime's own processes, a Dask cluster, a Ray cluster).

The engines are optional extras (``pip install 'wantbuild[dask]'``, ``'wantbuild[ray]'``), imported only when
an executor of theirs is opened.
"""

from .base import Executor, ExecutorEnv, ExecutorError, LocalExecutor, RemoteExecution
from .dask import DaskExecutor
from .ray import RayExecutor
from .router import ExecutionRouter, executor_of

__all__ = [
    "DaskExecutor",
    "ExecutionRouter",
    "Executor",
    "ExecutorEnv",
    "ExecutorError",
    "LocalExecutor",
    "RayExecutor",
    "RemoteExecution",
    "executor_of",
]
