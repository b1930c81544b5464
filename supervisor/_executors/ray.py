"""Job runs on a Ray cluster: :class:`RayExecutor` and its execution.

Each run is one Ray task (``max_retries=0``, ``retry_exceptions=False``, named after the run's key) that runs
:func:`ray_entry`: ``asyncio.run`` of the same worker code as Dask's. Ray's cancellation (``ray.cancel``)
cancels that event loop's main task, so the job is stopped as anywhere else (process group killed, async job
cancelled, thread interrupted); a task that has not ended ``kill_grace`` + 3 s later is cancelled with
``force=True`` (its worker process is killed).

How each fault surfaces:

- a worker or node that dies under a task makes its object ref raise (``WorkerCrashedError``,
  ``NodeDiedError``...): the run is Failed with a reason saying which died (a node by its IP and ID), and
  retried per the job's policy;
- heartbeats go to a small actor (``num_cpus=0``, made on the first run with a heartbeat deadline) that the
  runtime polls a few times per deadline;
- after a restart, the previous runtime's tasks belonged to a driver that is gone: Ray stops the tasks of a
  dead driver, and the fence waits until the cluster reports that driver's job dead (``lost_after`` at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from actors import JobRunState
from eventlog import get_logger

from .._execution import RunOutcome
from .base import Executor, ExecutorEnv, ExecutorError, RemoteExecution, RemoteRun
from .worker import RemoteJob, outcome_from, run_remote

log = get_logger("wantbuild.executors.ray")



def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ExecutorError(f"RayExecutor needs the 'ray' package: pip install 'wantbuild[ray]' "
                            f"(importing it failed: {e})") from e
    return ray


def ray_entry(job: RemoteJob, sink: Any) -> dict[str, Any]:
    """The task: runs ``job`` in an event loop of its own in this Ray worker."""

    def beat() -> None:
        sink.beat.remote(job.key)

    async def main() -> dict[str, Any]:
        try:
            return await run_remote(job, beat=beat if sink is not None else None)
        except asyncio.CancelledError:  # ray.cancel: the job is stopped (run_remote's cleanup ran)
            return {"status": "canceled", "reason": "stopped on the worker: the task was canceled",
                    "missing": [], "exit_code": None, "pid": os.getpid()}

    return asyncio.run(main())


class _HeartbeatSink:
    """A Ray actor: collects the latest heartbeat of each key until the runtime drains them."""

    def __init__(self) -> None:
        self.beats: dict[str, float] = {}

    def beat(self, key: str) -> None:
        self.beats[key] = time.time()

    def drain(self) -> list[str]:
        keys, self.beats = list(self.beats), {}
        return keys


class RayExecutor(Executor):
    """Run jobs on a Ray cluster: ``RayExecutor()`` (the cluster ``ray.init`` finds, or the one already
    initialized in this process), ``RayExecutor(address="auto")`` or ``RayExecutor(address="ray://host:10001")``.

    ``init``: more keyword arguments for ``ray.init`` when wantbuild initializes Ray (it then shuts it down when
    the runtime closes). ``log_dir``, ``lost_after`` and ``kill_grace`` as for :class:`DaskExecutor`.
    """

    kind = "ray"

    def __init__(self, address: str | None = None, *, init: Mapping[str, Any] | None = None,
                 log_dir: str | None = None, lost_after: float = 10.0, kill_grace: float = 2.0) -> None:
        if address is not None and (not isinstance(address, str) or not address):
            raise ValueError(f"RayExecutor: address must be 'auto', 'ray://host:port' or None, got {address!r}")
        for what, value in (("lost_after", lost_after), ("kill_grace", kill_grace)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ValueError(f"RayExecutor: {what} must be a number of seconds >= 0, got {value!r}")
        self.address = address
        self.init = dict(init or {})
        self.log_dir = log_dir
        self.lost_after = float(lost_after)
        self.kill_grace = float(kill_grace)

    def identity(self) -> Hashable:
        return ("ray", self.address, self.log_dir)

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r})"

    @asynccontextmanager
    async def open(self, env: ExecutorEnv) -> AsyncIterator[RayExecution]:
        ray = _import_ray()
        started = False
        if not ray.is_initialized():
            try:
                await anyio.to_thread.run_sync(
                    lambda: ray.init(address=self.address, **{"log_to_driver": False, **self.init}))
            except Exception as e:
                raise ExecutorError(f"cannot connect to Ray at {self.address or 'a new local cluster'}: "
                                    f"{type(e).__name__}: {e}; start one (`ray start --head`) or fix the "
                                    f"executor's address") from e
            started = True
        else:
            self._check_initialized_cluster(ray)
        execution = RayExecution(env, self, ray)
        try:
            yield execution
        finally:
            with anyio.CancelScope(shield=True):
                execution.closed = True
                if started:
                    await anyio.to_thread.run_sync(ray.shutdown)


    def _check_initialized_cluster(self, ray: Any) -> None:
        """Ray is already initialized in this process (one cluster per process): refuse a different address
        rather than run the jobs on a cluster the user did not name."""
        if self.address is None or self.address == "auto" or "://" in self.address:
            return  # no address, or one that cannot be compared with the GCS address (a Ray client's)
        connected = str(ray.get_runtime_context().gcs_address)
        if _host_port(self.address) != _host_port(connected):
            raise ExecutorError(
                f"RayExecutor(address={self.address!r}): this process is already connected to the Ray cluster at "
                f"{connected} (ray.init), and Ray connects a process to one cluster only; use "
                f"RayExecutor() for that cluster, or call ray.shutdown() first"
            )


def _host_port(address: str) -> tuple[str, str]:
    """``host:port`` with the host resolved (``localhost`` and ``127.0.0.1`` compare equal)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    with contextlib.suppress(OSError):
        host = socket.gethostbyname(host)
    return host, port


class RayExecution(RemoteExecution):
    kind = "ray"

    def __init__(self, env: ExecutorEnv, spec: RayExecutor, ray: Any) -> None:
        super().__init__(env, log_dir=spec.log_dir, kill_grace=spec.kill_grace)
        self.spec = spec
        self.ray = ray
        context = ray.get_runtime_context()
        self.address = str(context.gcs_address)
        self.job_id = context.get_job_id()
        self._task: Any = ray.remote(ray_entry)
        self._sink: Any = None
        self._polling = False

    def placement(self, run: JobRunState) -> tuple[str, dict[str, Any]]:
        return "ray", {"key": self.key_of(run), "address": self.address, "job_id": self.job_id}

    def _options(self, resources: Mapping[str, float] | None, key: str) -> dict[str, Any]:
        opts: dict[str, Any] = {"name": key, "max_retries": 0, "retry_exceptions": False}
        custom: dict[str, float] = {}
        for name, amount in (resources or {}).items():
            low = name.lower()
            if low == "cpu":
                opts["num_cpus"] = amount
            elif low == "gpu":
                opts["num_gpus"] = amount
            elif low == "memory":
                opts["memory"] = amount
            else:
                custom[name] = amount
        if custom:
            opts["resources"] = custom
        return opts

    def _submit(self, runs: list[RemoteRun]) -> None:
        for r in runs:
            sink = None
            if r.job.heartbeat_timeout is not None:
                sink = self._heartbeat_sink()
            ref = self._task.options(**self._options(self.graph[r.run.job].resources, r.key)).remote(r.job, sink)
            r.handle = ref
            self._spawn(self._track(r, ref))
        if any(r.job.heartbeat_timeout is not None for r in runs) and not self._polling:
            self._polling = True
            self._spawn(self._poll_heartbeats())

    def _heartbeat_sink(self) -> Any:
        if self._sink is None:
            self._sink = self.ray.remote(num_cpus=0)(_HeartbeatSink).remote()
        return self._sink

    async def _poll_heartbeats(self) -> None:
        try:
            while not self.closed:
                beating = [r.job.heartbeat_timeout for r in self.runs.values()
                           if r.decided is None and r.job.heartbeat_timeout is not None]
                if not beating:
                    return
                await anyio.sleep(max(0.05, min(beating) / 8))
                for key in await asyncio.wrap_future(self._sink.drain.remote().future()):
                    self._beat(key)
        finally:
            self._polling = False

    async def _track(self, r: RemoteRun, ref: Any) -> None:
        try:
            result = await asyncio.wrap_future(ref.future())
        except Exception as e:
            r.settled = True
            r.handle = None
            died = _died(self.ray.exceptions, e)
            if isinstance(e, self.ray.exceptions.TaskCancelledError) or (r.stopping and died is None):
                self._forget_if_done(r)
                if r.decided is None:
                    self._decide(r, RunOutcome("failed", reason="the Ray task was canceled outside wantbuild"),
                                 stop=False)
                return
            if died is not None:
                self._decide(r, RunOutcome("failed", reason=died), stop=False)
                return
            name = type(e).__name__
            self._result(r, RunOutcome("failed", reason=f"the Ray task failed: {name}: {str(e)[:500]}",
                                       error_type=name))
            return
        r.handle = None
        self._result(r, outcome_from(result))

    async def _cancel_remote(self, runs: list[RemoteRun], reason: str) -> None:
        for r in runs:
            if r.handle is not None:
                with contextlib.suppress(Exception):
                    self.ray.cancel(r.handle, force=False)
                self._spawn(self._force_later(r))

    async def _force_later(self, r: RemoteRun) -> None:
        await anyio.sleep(self.kill_grace + 3.0)
        if not r.settled and r.handle is not None:
            log.warning("a canceled Ray task did not end; killing its worker", key=r.key)
            with contextlib.suppress(Exception):
                self.ray.cancel(r.handle, force=True)

    async def _still_running(self, keys: list[str]) -> list[str] | None:
        return [k for k in keys if (r := self.by_key.get(k)) is not None and not r.settled]

    async def fence(self, runs: Sequence[JobRunState]) -> None:
        """Ray stops the tasks of a driver that is gone: wait until the cluster says the old driver's job is.

        At most ``lost_after`` seconds; the log line says whether it was confirmed. If the job table cannot be
        read (see :func:`_live_jobs`), the fence waits the whole ``lost_after`` instead, and says so."""
        jobs = {str((run.handle or {}).get("job_id")) for run in runs if (run.handle or {}).get("job_id")}
        jobs.discard(self.job_id)
        if not jobs:
            return
        deadline = time.monotonic() + self.spec.lost_after
        alive = jobs
        while alive and time.monotonic() < deadline:
            try:
                alive = await anyio.to_thread.run_sync(_live_jobs, jobs)
            except Exception as e:
                log.warning("cannot read Ray's job table to confirm that the previous runtime's driver is gone; "
                            "waiting lost_after seconds instead", error=f"{type(e).__name__}: {e}",
                            ray_version=getattr(self.ray, "__version__", "?"), lost_after=self.spec.lost_after)
                await anyio.sleep(max(0.0, deadline - time.monotonic()))
                break
            if alive:
                await anyio.sleep(0.2)
        log.info("fenced the previous runtime's Ray tasks", jobs=sorted(jobs), confirmed=not alive)

def _died(exceptions: Any, e: Exception) -> str | None:
    """The reason of a run whose task ended with ``e`` because a part of the cluster died, else None.

    ``NodeDiedError``'s message names the node (its IP and node ID); the advice that follows it is cut."""
    if isinstance(e, exceptions.NodeDiedError | exceptions.LocalRayletDiedError):
        what = "the Ray node running the job died"
    elif isinstance(e, exceptions.WorkerCrashedError | exceptions.OutOfMemoryError):
        what = "the Ray worker running the job died"
    elif isinstance(e, exceptions.ObjectLostError):  # OwnerDiedError, ObjectReconstructionFailedError too
        what = "the job's result was lost on the Ray cluster (the node holding it died) before it was read"
    else:
        return None
    text = str(e).strip().split(" This can happen", 1)[0].splitlines()
    return f"{what} ({type(e).__name__}: {(text[0] if text else '')[:300]})"


def _live_jobs(jobs: set[str]) -> set[str]:
    """Those of ``jobs`` (driver job ids, hex) that the cluster does not report dead.

    This reads the GCS job table through ``ray._private.state.jobs()``, a private function, on purpose: Ray
    (2.40-2.60) has no public call that answers "is this driver's job dead" without its dashboard.
    ``ray.util.state.list_jobs`` asks the dashboard's state server, which a cluster started with
    ``--include-dashboard=false`` or from a minimal ``pip install ray`` does not run, and ``JobSubmissionClient``
    knows only submitted jobs, not drivers. What this relies on: a list of dicts with ``"JobID"`` (the hex id
    that ``get_runtime_context().get_job_id()`` returns) and ``"IsDead"``. If a Ray release renames or reshapes
    it, this raises, the fence falls back to waiting ``lost_after`` without confirmation (a warning says so), and
    ``tests/test_executors_ray.py``'s restart test fails, which is where to notice (docs/decisions.md).
    """
    from ray._private import state

    table: list[dict[str, Any]] = state.jobs()  # type: ignore[no-untyped-call]
    return {str(j["JobID"]) for j in table if str(j["JobID"]) in jobs and not j["IsDead"]}
