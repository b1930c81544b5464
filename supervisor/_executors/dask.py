"""Job runs on a Dask cluster (``distributed``): :class:`DaskExecutor` and its execution.

The runtime keeps one asynchronous ``distributed.Client`` of its own on its event loop (to the scheduler of the
client or address it was given). Each run is one task, ``retries=0``, under the key
``wantbuild-<namespace>-<run id>-a<attempt>``, running :func:`dask_entry` on the worker's event loop.

How each fault surfaces, and why:

- **Results** arrive in batches: completed futures are gathered together (one round trip for all the runs that
  finished meanwhile), never one request per run.
- **Heartbeats** travel as Dask events (``Worker.log_event`` → ``Client.subscribe_topic``), throttled on the
  worker to four per heartbeat deadline; a job without ``heartbeat_timeout`` sends none.
- **Stopping a job.** Dask never interrupts a running task (a cancelled task keeps running until it returns),
  so the entry watches its own task: one poller per worker process looks every 0.1 s whether the scheduler
  released the task, and stops the job (process group killed, async job cancelled, thread interrupted). The
  orchestrator then asks every worker (``Client.run``) until the key runs nowhere, and only then records the
  run's end. The same holds when the orchestrator dies: the scheduler releases the tasks of a client that went
  away, and the workers stop them.
- **A worker that dies** is reported by the scheduler (its ``remove-worker`` event names the tasks it was
  processing); the run is Failed with a reason naming the worker, and its key is canceled so that the copy Dask
  reschedules elsewhere is stopped; wantbuild's retry policy decides what happens next.
- **The scheduler unreachable**: Dask cancels every future of the client; runs in flight are recorded Lost once
  it is confirmed (after reconnecting) that their jobs run nowhere, or after ``lost_after`` seconds, and their
  partitions are re-queued. New runs wait for the connection; the runtime keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from actors import JobRunState
from eventlog import get_logger

from .._execution import RunOutcome
from .base import Executor, ExecutorEnv, ExecutorError, RemoteExecution, RemoteRun
from .worker import RemoteJob, key_states, outcome_from, run_remote, stop_keys

log = get_logger("wantbuild.executors.dask")

_TASKS: set[asyncio.Task[Any]] = set()


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise ExecutorError(
            "DaskExecutor needs the 'distributed' package: pip install 'wantbuild[dask]' "
            f"(importing it failed: {e})"
        ) from e
    return distributed


async def dask_entry(job: RemoteJob, topic: str) -> dict[str, Any]:
    """The task: runs ``job`` on this worker's event loop (see :func:`~.worker.run_remote`)."""
    from distributed import get_worker

    worker = get_worker()

    def beat() -> None:
        worker.log_event(topic, {"beat": job.key})

    def stop_requested() -> bool:
        ts = worker.state.tasks.get(job.key)
        return ts is None or ts.state not in ("executing", "long-running")

    def spawn(fn: Any) -> None:
        task = asyncio.get_running_loop().create_task(fn())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    return await run_remote(job, beat=beat, stop_requested=stop_requested, spawn_poller=spawn)


class DaskExecutor(Executor):
    """Run jobs on a Dask cluster: ``DaskExecutor(client)`` or ``DaskExecutor(address="tcp://host:8786")``.

    wantbuild connects a client of its own (asynchronous, on the runtime's event loop) to the scheduler of
    ``client`` (with its security settings) or to ``address``. Workers need wantbuild and the jobs' code
    installed. ``log_dir``: where command jobs write their stdout/stderr on the worker (default: the worker's
    temporary folder, ``wantbuild-logs/``); ``lost_after``: seconds a run may stay in doubt after the scheduler
    became unreachable before it is recorded Lost; ``kill_grace``: seconds between SIGTERM and SIGKILL for a
    command job stopped on the worker.
    """

    kind = "dask"

    def __init__(self, client: Any = None, *, address: str | None = None, log_dir: str | None = None,
                 lost_after: float = 10.0, kill_grace: float = 2.0, connect_timeout: float = 10.0) -> None:
        if (client is None) == (address is None):
            raise ValueError("DaskExecutor needs exactly one of client (a distributed.Client) or address "
                             "(e.g. 'tcp://127.0.0.1:8786')")
        if address is not None and (not isinstance(address, str) or not address):
            raise ValueError(f"DaskExecutor: address must be a scheduler address such as 'tcp://host:8786', "
                             f"got {address!r}")
        for what, value in (("lost_after", lost_after), ("kill_grace", kill_grace),
                            ("connect_timeout", connect_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ValueError(f"DaskExecutor: {what} must be a number of seconds >= 0, got {value!r}")
        self.client = client
        self.address = address
        self.log_dir = log_dir
        self.lost_after = float(lost_after)
        self.kill_grace = float(kill_grace)
        self.connect_timeout = float(connect_timeout)

    def scheduler_address(self) -> str:
        if self.address is not None:
            return self.address
        address = getattr(getattr(self.client, "scheduler", None), "address", None)
        if not isinstance(address, str):
            raise ExecutorError(f"DaskExecutor: cannot tell the scheduler address of {self.client!r}; "
                                f"pass address='tcp://...' instead")
        return address

    def identity(self) -> Hashable:
        return ("dask", self.scheduler_address(), self.log_dir)

    def __repr__(self) -> str:
        return f"DaskExecutor(address={self.scheduler_address()!r})"

    @asynccontextmanager
    async def open(self, env: ExecutorEnv) -> AsyncIterator[DaskExecution]:
        execution = DaskExecution(env, self)
        await execution.connect()
        try:
            yield execution
        finally:
            with anyio.CancelScope(shield=True):
                await execution.disconnect()


class DaskExecution(RemoteExecution):
    kind = "dask"

    def __init__(self, env: ExecutorEnv, spec: DaskExecutor) -> None:
        super().__init__(env, log_dir=spec.log_dir, kill_grace=spec.kill_grace)
        self.spec = spec
        self.address = spec.scheduler_address()
        self.topic = f"wantbuild-{env.namespace}"
        self.client: Any = None
        self._distributed = _import_distributed()
        self._gather: list[RemoteRun] = []
        self._gathering = False
        self._monitor: asyncio.Task[None] | None = None
        self._doubt: dict[str, RemoteRun] = {}  # run id -> in flight when the connection was lost

    # -- connection ---------------------------------------------------------------------------------
    async def connect(self) -> None:
        self.client = await self._new_client()
        self._monitor = asyncio.get_running_loop().create_task(self._watch_connection())

    async def _new_client(self) -> Any:
        security = getattr(self.spec.client, "security", None) if self.spec.client is not None else None
        try:
            client = await self._distributed.Client(
                self.address, asynchronous=True, security=security, timeout=self.spec.connect_timeout,
                set_as_default=False, name="wantbuild",
            )
        except (OSError, TimeoutError) as e:
            raise ExecutorError(
                f"cannot connect to the Dask scheduler at {self.address}: {e}; start one (`dask scheduler`, "
                f"then `dask worker {self.address}`) or fix the executor's address"
            ) from e
        client.subscribe_topic(self.topic, self._on_event)
        client.subscribe_topic("all", self._on_cluster_event)
        return client

    async def disconnect(self) -> None:
        self.closed = True
        if self._monitor is not None:
            self._monitor.cancel()
        if self.client is not None:
            with contextlib.suppress(Exception), anyio.move_on_after(5):
                if self._connected():
                    # Else the scheduler sends this client's own departure to it on a closed comm, and logs
                    # that as CRITICAL with a traceback (distributed 2026.8).
                    for topic in (self.topic, "all"):
                        self.client.unsubscribe_topic(topic)
                await self.client.close()

    def _connected(self) -> bool:
        return self.client is not None and self.client.status == "running"

    def _can_submit(self) -> bool:
        return self._connected()

    async def _watch_connection(self) -> None:
        """Notice a lost scheduler, record in-flight runs Lost after ``lost_after``, and reconnect."""
        lost_since: float | None = None
        while not self.closed:
            await anyio.sleep(0.2)
            if self._connected():
                if lost_since is not None:
                    log.info("reconnected to the Dask scheduler", scheduler=self.address)
                    lost_since = None
                    await self._settle_doubt(confirmed=True)
                    self._resubmit_pending()
                continue
            if lost_since is None:
                lost_since = self.clock.now()
                log.warning("lost the connection to the Dask scheduler; runs in flight are in doubt",
                            scheduler=self.address, in_flight=self.running())
                for r in self.runs.values():
                    if r.decided is None and r.submitted_at is not None:
                        self._doubt[r.run.job_run_id] = r
            if self.clock.now() - lost_since >= self.spec.lost_after and self._doubt:
                await self._settle_doubt(confirmed=False)
            if self.client.status in ("closed", "closing") and not self.closed:
                with contextlib.suppress(ExecutorError):
                    old, self.client = self.client, await self._new_client()
                    with contextlib.suppress(Exception):
                        await old.close()

    async def _settle_doubt(self, *, confirmed: bool) -> None:
        doubt = [r for r in self._doubt.values() if r.decided is None]
        self._doubt.clear()
        if not doubt:
            return
        note = "it was not running on any worker when the connection came back"
        if confirmed:
            left = await self._still_running([r.key for r in doubt])
            if left is None or left:
                note = f"its job may still be running: {', '.join(left or ['unknown'])}"
        else:
            note = f"the scheduler stayed unreachable for {self.spec.lost_after:g} s"
        for r in doubt:
            r.settled = True
            self._decide(r, RunOutcome("lost", reason=f"lost the connection to the Dask scheduler at "
                                                      f"{self.address}; {note}"), stop=False)

    # -- the Execution protocol ---------------------------------------------------------------------
    def placement(self, run: JobRunState) -> tuple[str, dict[str, Any]]:
        return "dask", {"key": self.key_of(run), "scheduler": self.address}

    def _submit(self, runs: list[RemoteRun]) -> None:
        groups: dict[tuple[tuple[str, float], ...], list[RemoteRun]] = {}
        for r in runs:
            res = self.graph[r.run.job].resources
            groups.setdefault(tuple(sorted((res or {}).items())), []).append(r)
        for res_key, group in groups.items():
            futures = self.client.map(
                dask_entry, [r.job for r in group], [self.topic] * len(group), key=[r.key for r in group],
                pure=False, retries=0, resources=dict(res_key) or None,
            )
            for r, fut in zip(group, futures, strict=True):
                r.handle = fut
                self._spawn(self._track(r, fut))

    async def _track(self, r: RemoteRun, fut: Any) -> None:
        # Waits for the future to be done, on this loop, without fetching its result (no round trip, no
        # callback thread per future): results are gathered in batches by _gather_results.
        exc = await fut.exception()
        status = fut.status
        if status == "finished":
            self._gather.append(r)
            if not self._gathering:
                self._gathering = True
                self._spawn(self._gather_results())
            return
        if status == "error":
            r.settled = True
            if type(exc).__name__ == "KilledWorker":
                self._decide(r, RunOutcome("failed", reason=f"Dask workers died while running the job: {exc}"))
            else:
                self._result(r, RunOutcome("failed", reason=f"the Dask task failed: {type(exc).__name__}: {exc}",
                                           error_type=type(exc).__name__))
            r.handle = None
            return
        # cancelled (by us, by someone else, or because the connection to the scheduler was lost) or lost
        r.settled = True
        r.handle = None
        if r.stopping or r.decided is not None:
            self._forget_if_done(r)
            return
        if not self._connected():
            self._doubt[r.run.job_run_id] = r  # settled by _watch_connection
            return
        self._decide(r, RunOutcome("failed", reason="the Dask task was canceled outside wantbuild"))

    async def _gather_results(self) -> None:
        try:
            while self._gather:
                batch, self._gather = self._gather, []
                batch = [r for r in batch if r.handle is not None]
                try:
                    results = await self.client.gather([r.handle for r in batch], errors="raise")
                except Exception:
                    results = []
                    for r in batch:
                        try:
                            results.append(await self.client.gather(r.handle))
                        except Exception as e:
                            results.append({"status": "failed", "reason": f"cannot read the job's result from "
                                            f"the cluster: {type(e).__name__}: {e}"})
                for r, res in zip(batch, results, strict=True):
                    r.handle = None
                    self._result(r, outcome_from(res))
        finally:
            self._gathering = False

    async def _cancel_remote(self, runs: list[RemoteRun], reason: str) -> None:
        futures = [r.handle for r in runs if r.handle is not None]
        if futures and self._connected():
            await self.client.cancel(futures, reason=f"wantbuild: {reason}")

    async def _still_running(self, keys: list[str]) -> list[str] | None:
        """Ask every worker; outcomes of jobs that ended meanwhile are taken as their results (late or not)."""
        if not self._connected():
            return None
        replies = await self.client.run(key_states, keys, on_error="return")
        left: set[str] = set()
        unknown = False
        for reply in replies.values():
            if isinstance(reply, BaseException):
                unknown = True
                continue
            for key, state in reply.items():
                if state == "running":
                    left.add(key)
                elif (r := self.by_key.get(key) or self.ended.get(key)) is not None:
                    self._result(r, outcome_from(state))
        return None if unknown else sorted(left)

    # -- engine events ------------------------------------------------------------------------------
    def _on_event(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        if isinstance(msg, dict) and "beat" in msg:
            self._beat(msg["beat"])

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker":
            return
        worker = msg.get("worker", "?")
        how = "was retired" if msg.get("expected") else "died or was removed"
        for key in msg.get("processing-tasks", ()):
            r = self.by_key.get(key)
            if r is not None and r.decided is None:
                log.warning("a Dask worker running a job left the cluster", worker=worker, key=key)
                self._decide(r, RunOutcome("failed", reason=f"the Dask worker {worker} running the job {how}"))
        for key in msg.get("lost-computed-tasks", ()):
            r = self.by_key.get(key)
            if r is not None and r.decided is None and not r.settled:
                self._decide(r, RunOutcome("failed", reason=f"the Dask worker {worker} {how} after the job "
                                                            f"finished, before its result was read"))

    # -- restart ------------------------------------------------------------------------------------
    async def fence(self, runs: Sequence[JobRunState]) -> None:
        keys = [str((run.handle or {}).get("key")) for run in runs if (run.handle or {}).get("key")]
        if not keys:
            return
        if not self._connected():
            log.warning("cannot reach the Dask scheduler to fence the previous runtime's tasks; they stop when "
                        "the scheduler releases them", scheduler=self.address, keys=len(keys))
            return
        futures = [self._distributed.Future(k, self.client) for k in keys]
        await self.client.cancel(futures, force=True, reason="wantbuild: fenced after a restart")
        del futures
        await self.client.run(stop_keys, keys, "the runtime that started it is gone", on_error="return")
        note = await self._wait_gone(keys)
        log.info("fenced the previous runtime's Dask tasks", scheduler=self.address, keys=len(keys),
                 confirmed=not note)

