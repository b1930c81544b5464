"""What runs on a cluster worker: one job run, by the same code as a local run, reporting back to wantbuild.

:func:`run_remote` is called by the engine's task (Dask runs it on the worker's event loop, Ray inside
``asyncio.run`` in the task's process). It builds a :class:`RemoteJobContext` and runs the job with
:func:`~supervisor._execution.run_callable` or :func:`~supervisor._execution.run_command`, so the job protocol
(``missing_deps`` and ``heartbeat`` lines, process-group kill, timeouts and heartbeat deadlines on the worker's
clock) is the one of local runs. It returns the outcome as a plain dict (small, picklable by any engine); it
raises only when it is cancelled from outside, after the job is stopped.

Stopping a job on the worker:

- a **command** runs in its own process group, killed as locally (SIGTERM, ``kill_grace``, SIGKILL);
- an **async function** is cancelled (anyio cancellation at its next ``await``);
- a **plain function** runs in a thread; it is stopped by raising :class:`JobInterrupted` in that thread
  (``PyThreadState_SetAsyncExc``), which takes effect at its next Python instruction: a thread blocked inside
  one C call (a socket read without timeout) is reported as not stoppable.

Every run is registered in :data:`RUNNING` (this process) from its start until the job is stopped, then its
outcome is kept in :data:`FINISHED` (the last few thousand), so that the orchestrator can ask a worker how a key
is doing (:func:`key_states`) before it records a run as ended: nothing is reported stopped while it may still
write its partitions, and the outcome of a job that finished after its task was released (nobody reads that
task's result) still reaches wantbuild, as a late result.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from eventlog import get_logger

from .._execution import JobContext, RunOutcome, run_callable, run_command
from .._jobs import _is_async_callable

log = get_logger("wantbuild.executors.worker")

STOP_POLL = 0.1
"""Seconds between two looks at whether the engine wants a running job stopped (one shared poller per
worker process, only while a job with a stop check runs)."""


class JobInterrupted(BaseException):
    """Raised inside a plain-function job's thread to stop it (a BaseException: ``except Exception`` passes it)."""


@dataclass(frozen=True)
class RemoteJob:
    """Everything a worker needs to run one job run; sent with the task (pickled by the engine)."""

    key: str
    job_run_id: str
    job_name: str
    partitions: tuple[str, ...]
    params: tuple[dict[str, str], ...]
    attempt: int
    generations: tuple[int, ...]
    run: Callable[..., Any] | None = None
    command: tuple[str, ...] | None = None
    timeout: float | None = None
    heartbeat_timeout: float | None = None
    log_dir: str | None = None
    kill_grace: float = 2.0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def beat_every(self) -> float | None:
        """How often heartbeats are forwarded to wantbuild: never without a heartbeat deadline, else at most
        four times per deadline (the deadline only needs the latest one)."""
        return None if self.heartbeat_timeout is None else self.heartbeat_timeout / 4


class RemoteJobContext(JobContext):
    """A :class:`JobContext` whose heartbeats also reach wantbuild (throttled to ``job.beat_every``)."""

    def __init__(self, job: RemoteJob, beat: Callable[[], None] | None) -> None:
        super().__init__(job_run_id=job.job_run_id, job_name=job.job_name, partitions=job.partitions,
                         attempt=job.attempt, params=job.params, generations=job.generations)
        self._beat = beat if job.beat_every is not None else None
        self._beat_every = job.beat_every or 0.0
        self._beat_sent = -1e18

    def heartbeat(self) -> None:
        super().heartbeat()
        if self._beat is not None:
            now = time.monotonic()
            if now - self._beat_sent >= self._beat_every:
                self._beat_sent = now
                try:
                    self._beat()
                except Exception as e:  # a heartbeat that cannot be sent must not fail the job
                    log.warning("cannot forward a heartbeat to wantbuild", job_run_id=self.job_run_id, error=str(e))


@dataclass
class _Running:
    scope: anyio.CancelScope
    stop_requested: Callable[[], bool] | None
    stopping: str | None = None


RUNNING: dict[str, _Running] = {}
"""Keys of the job runs executing in this process (until their job is stopped)."""
FINISHED: OrderedDict[str, dict[str, Any]] = OrderedDict()
"""The outcomes of the last :data:`FINISHED_KEPT` job runs that ended in this process, by key."""
FINISHED_KEPT = 4096
_poller: list[anyio.CancelScope] = []


def key_states(keys: Iterable[str]) -> dict[str, Any]:
    """For those of ``keys`` this process knows: ``"running"``, or the outcome of the ended job (the orchestrator
    asks every worker)."""
    out: dict[str, Any] = {}
    for k in keys:
        if k in RUNNING:
            out[k] = "running"
        elif k in FINISHED:
            out[k] = FINISHED[k]
    return out


def stop_keys(keys: Iterable[str], reason: str) -> list[str]:
    """Stop the jobs of ``keys`` running in this process (from the worker's event loop); returns those found."""
    found = []
    for k in keys:
        entry = RUNNING.get(k)
        if entry is not None:
            entry.stopping = entry.stopping or reason
            entry.scope.cancel()
            found.append(k)
    return found


async def _poll_stops() -> None:
    """One task per process: cancels running jobs whose engine asks for them to stop (their task was released)."""
    with anyio.CancelScope() as scope:
        _poller.append(scope)
        try:
            while any(e.stop_requested is not None for e in RUNNING.values()):
                await anyio.sleep(STOP_POLL)
                for entry in list(RUNNING.values()):
                    if entry.stopping is None and entry.stop_requested is not None and entry.stop_requested():
                        entry.stopping = "its task was canceled on the cluster"
                        entry.scope.cancel()
        finally:
            _poller.remove(scope)


def _outcome(o: RunOutcome, **extra: Any) -> dict[str, Any]:
    return {"status": o.status, "reason": o.reason, "missing": list(o.missing), "exit_code": o.exit_code,
            "error_type": o.error_type, "stdout_path": o.stdout_path, "stderr_path": o.stderr_path,
            # What the job read (no generations here: the orchestrator resolves them) and which partitions failed.
            "read": list(o.read), "into": {k: list(v) for k, v in o.into.items()}, "failed": dict(o.failed),
            **extra}


async def run_remote(
    job: RemoteJob,
    *,
    beat: Callable[[], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    spawn_poller: Callable[[Callable[[], Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``job`` on this worker and return its outcome as a dict (see :func:`_outcome`).

    ``beat()`` forwards a heartbeat to wantbuild; ``stop_requested()`` says whether the engine released the task
    (polled every :data:`STOP_POLL` s by one task per process, started with ``spawn_poller`` when given, so it
    outlives this run); either may be None. A job stopped through :func:`stop_keys` or ``stop_requested`` ends
    ``canceled``. An outside cancellation (the engine cancelling this coroutine) stops the job and propagates.
    """
    where = {"host": socket.gethostname(), "pid": os.getpid()}
    ctx = RemoteJobContext(job, beat)
    scope = anyio.CancelScope()
    entry = _Running(scope, stop_requested)
    RUNNING[job.key] = entry
    if stop_requested is not None and not _poller and spawn_poller is not None:
        spawn_poller(_poll_stops)
    result: dict[str, Any] = {"status": "failed", "reason": "the worker's entry raised", "missing": [],
                              "exit_code": None, **where}
    try:
        outcome: RunOutcome | None = None
        with scope:
            outcome = await _run(job, ctx)
        if outcome is None:
            result = {"status": "canceled", "reason": f"stopped on the worker: {entry.stopping or 'canceled'}",
                      "missing": [], "exit_code": None, **where}
        else:
            result = _outcome(outcome, **where)
        return result
    except BaseException:
        result = {"status": "canceled", "reason": "stopped on the worker: its task was cancelled", "missing": [],
                  "exit_code": None, **where}
        raise
    finally:
        FINISHED[job.key] = result
        if len(FINISHED) > FINISHED_KEPT:
            FINISHED.popitem(last=False)
        RUNNING.pop(job.key, None)


async def _run(job: RemoteJob, ctx: RemoteJobContext) -> RunOutcome:
    if job.command is not None:
        log_dir = Path(job.log_dir) if job.log_dir else Path(tempfile.gettempdir()) / "wantbuild-logs"
        return await run_command(job.command, ctx, log_dir=log_dir, timeout=job.timeout,
                                 heartbeat_timeout=job.heartbeat_timeout, env=job.env, kill_grace=job.kill_grace)
    assert job.run is not None
    fn = job.run if _is_async_callable(job.run) else _in_thread(job.run, job.kill_grace)
    return await run_callable(fn, ctx, timeout=job.timeout, heartbeat_timeout=job.heartbeat_timeout)


def _in_thread(fn: Callable[[JobContext], Any], kill_grace: float) -> Callable[[JobContext], Any]:
    """An async wrapper that runs the plain function ``fn`` in a thread of its own and stops that thread when
    cancelled (by raising :class:`JobInterrupted` in it, again until it ends or ``kill_grace`` + 1 s pass)."""

    async def call(ctx: JobContext) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        raised: list[BaseException] = []

        def target() -> None:
            try:
                fn(ctx)
            except BaseException as e:
                raised.append(e)
            finally:
                loop.call_soon_threadsafe(done.set)

        thread = threading.Thread(target=target, name=f"wantbuild job {ctx.job_run_id}", daemon=True)
        thread.start()
        try:
            await done.wait()
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                await _interrupt(thread, kill_grace, ctx)
            raise
        if raised:
            raise raised[0]

    return call


async def _interrupt(thread: threading.Thread, grace: float, ctx: JobContext) -> None:
    deadline = time.monotonic() + grace + 1.0
    while thread.is_alive() and time.monotonic() < deadline:
        if thread.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(JobInterrupted))
        with anyio.move_on_after(0.2):
            while thread.is_alive():  # noqa: ASYNC110 - a thread's end is not an event the loop can await
                await anyio.sleep(0.01)
    if thread.is_alive():
        ctx.log.warning("the job's thread did not stop (blocked in a C call?); it keeps running unsupervised")


def outcome_from(result: Mapping[str, Any]) -> RunOutcome:
    """The :class:`RunOutcome` of a dict returned by :func:`run_remote`."""
    status = result.get("status")
    if status not in ("succeeded", "failed", "dep_miss", "canceled"):
        return RunOutcome("failed", reason=f"the worker returned an unreadable outcome: {result!r:.200}")
    into = result.get("into") or {}
    return RunOutcome(status, reason=str(result.get("reason") or ""), missing=tuple(result.get("missing") or ()),
                      exit_code=result.get("exit_code"), stdout_path=result.get("stdout_path"),
                      stderr_path=result.get("stderr_path"), error_type=result.get("error_type"),
                      read=dict.fromkeys(result.get("read") or (), 0),
                      into={str(k): tuple(v) for k, v in into.items()} if isinstance(into, dict) else {},
                      failed=dict(result.get("failed") or {}))


with contextlib.suppress(AttributeError):  # not CPython: plain-function jobs cannot be interrupted
    ctypes.pythonapi.PyThreadState_SetAsyncExc.argtypes = (ctypes.c_ulong, ctypes.py_object)
