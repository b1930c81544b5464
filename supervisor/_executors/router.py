"""The runtime's execution: routes each run to the executor of its job.

Which executor runs a job: the job's own (``executor=`` on the job, ``executor = ...`` in the graph file), else
the runtime's (``wantbuild.open(..., executor=...)``), else the graph's (``[executor]`` in the graph file), else
the runtime's own processes. Each distinct executor is opened once when the runtime opens (a Dask or Ray
connection), so a cluster that cannot be reached fails the open with a message naming it, before anything runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from actors import JobRunState
from eventlog import get_logger

from .._execution_glue import LocalExecution
from .._graph import Graph
from .._graph_errors import GraphError
from .._jobs import Job, _is_async_callable
from .base import Executor, ExecutorEnv, LocalExecutor, RemoteExecution

log = get_logger("wantbuild.executors")


def executor_of(job: Job, graph: Graph, default: Executor | None) -> Executor:
    """The executor that runs ``job`` (see the module docstring for the order)."""
    own = job.executor
    if own == "local":
        return LocalExecutor()
    if isinstance(own, Executor):
        return own
    if default is not None:
        return default
    if graph.default_executor is not None:
        return graph.default_executor
    return LocalExecutor()


class ExecutionRouter:
    """Implements the JobRun actor's ``Execution`` protocol over the local execution and the opened remote ones."""

    def __init__(self, local: LocalExecution, by_job: dict[str, LocalExecution | RemoteExecution],
                 remotes: dict[Hashable, RemoteExecution], env: ExecutorEnv) -> None:
        self.local = local
        self.by_job = by_job
        self.remotes = remotes
        self.env = env

    @classmethod
    @asynccontextmanager
    async def open(cls, graph: Graph, local: LocalExecution, env: ExecutorEnv,
                   default: Executor | None) -> AsyncIterator[ExecutionRouter]:
        chosen = {name: executor_of(job, graph, default) for name, job in graph.jobs().items()}
        for name, executor in chosen.items():
            job = graph[name]
            if isinstance(executor, LocalExecutor) and job.run is not None and not _is_async_callable(job.run):
                raise GraphError(
                    f"job {name!r}: run is a plain function ({job.run!r}); the runtime runs local jobs on its event "
                    f"loop, so define it with async def (wrap blocking code with anyio.to_thread.run_sync), or run "
                    f"the job on a cluster (executor=DaskExecutor(...) or RayExecutor(...))"
                )
        async with contextlib.AsyncExitStack() as stack:
            remotes: dict[Hashable, RemoteExecution] = {}
            by_job: dict[str, LocalExecution | RemoteExecution] = {}
            for name, executor in chosen.items():
                if isinstance(executor, LocalExecutor):
                    by_job[name] = local
                    continue
                key = executor.identity()
                if key not in remotes:
                    remotes[key] = await stack.enter_async_context(executor.open(env))
                    log.info("executor opened", kind=executor.kind, executor=repr(executor))
                by_job[name] = remotes[key]
            yield cls(local, by_job, remotes, env)

    def _for(self, run: JobRunState) -> LocalExecution | RemoteExecution:
        return self.by_job.get(run.job, self.local)

    # -- the Execution protocol ---------------------------------------------------------------------
    def log_paths(self, run: JobRunState) -> tuple[str | None, str | None]:
        return self._for(run).log_paths(run)

    def placement(self, run: JobRunState) -> tuple[str, dict[str, Any]] | None:
        return self._for(run).placement(run)

    def start(self, run: JobRunState) -> None:
        self._for(run).start(run)

    def cancel(self, job_run_id: str, reason: str) -> bool:
        if self.local.cancel(job_run_id, reason):
            return True
        return any(remote.cancel(job_run_id, reason) for remote in self.remotes.values())

    def cancel_all(self, reason: str) -> None:
        self.local.cancel_all(reason)
        for remote in self.remotes.values():
            remote.cancel_all(reason)

    def running(self) -> int:
        return self.local.running() + sum(remote.running() for remote in self.remotes.values())

    def poll(self, job_run_id: str) -> Any:
        found = self.local.poll(job_run_id)
        for remote in self.remotes.values():
            if found is not None:
                break
            found = remote.poll(job_run_id)
        return found

    def release(self, job_run_id: str) -> None:
        self.local.release(job_run_id)
        for remote in self.remotes.values():
            remote.release(job_run_id)

    async def fence(self, runs: Sequence[JobRunState]) -> list[str]:
        """Before anything is leased after a restart: stop what the previous runtime started, here (surviving
        job processes, see ``_fence.py``) and on a cluster; lines saying what was done.

        Remote runs are fenced by the opened executor of their recorded kind and address; a run recorded on a
        cluster this runtime no longer uses is fenced through a connection opened for that purpose, when it
        answers.
        """
        lines = await self.local.fence([r for r in runs if r.executor in (None, "local")])
        remote_runs = [r for r in runs if r.executor not in (None, "local") and r.handle]
        if not remote_runs:
            return lines
        by_place: dict[tuple[str, str], list[JobRunState]] = {}
        for run in remote_runs:
            assert run.executor is not None
            assert run.handle is not None
            where = str(run.handle.get("scheduler") or run.handle.get("address") or "")
            by_place.setdefault((run.executor, where), []).append(run)
        for (kind, where), group in sorted(by_place.items()):
            ids = ", ".join(r.job_run_id for r in group[:5]) + (" ..." if len(group) > 5 else "")
            lines.append(f"{ids}: {len(group)} run(s) on {kind} {where or '(default cluster)'}: their tasks were "
                         f"canceled there (or stop when the engine releases them)")
            opened = [r for r in self.remotes.values() if r.kind == kind and r.address == where]
            if opened:
                await opened[0].fence(group)
                continue
            await _fence_elsewhere(kind, where, group, self.env, {r.kind: r for r in self.remotes.values()})
        return lines

    async def aclose(self, reason: str) -> None:
        await self.local.aclose(reason)
        for remote in self.remotes.values():
            await remote.aclose(reason)

    def crash(self) -> None:
        """A simulated crash: local jobs are killed (they die with a killed process); remote ones are left to
        the engine, which stops them when the runtime's connection goes away (as after a real crash)."""
        self.local.cancel_all("crash")
        for remote in self.remotes.values():
            remote.abandon()


async def _fence_elsewhere(kind: str, where: str, runs: list[JobRunState], env: ExecutorEnv,
                           opened_kinds: dict[str, RemoteExecution]) -> None:
    from .dask import DaskExecutor
    from .ray import RayExecutor

    spec: Executor
    if kind == "dask" and where:
        spec = DaskExecutor(address=where, connect_timeout=5.0)
    elif kind == "ray" and kind in opened_kinds:
        await opened_kinds[kind].fence(runs)  # one Ray cluster per process: the opened one
        return
    elif kind == "ray":
        spec = RayExecutor(address=where or None)
    else:
        log.warning("cannot fence runs of an unknown executor", executor=kind, runs=[r.job_run_id for r in runs])
        return
    try:
        async with spec.open(env) as execution:
            await execution.fence(runs)
    except Exception as e:
        log.warning("cannot reach the cluster that ran the previous runtime's runs; they stop when their engine "
                    "releases them", executor=kind, where=where, error=str(e), runs=[r.job_run_id for r in runs])
