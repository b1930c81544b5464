"""Jobs for the executor tests: made by a factory, so that the engine pickles them by value (with the folder they
report into) and any worker runs them. They record where they ran in ``<state>/<ref>`` files."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from supervisor import Graph, JobContext, MissingDeps
from supervisor._executors import Executor

TESTS = Path(__file__).resolve().parent


def cell(state: Path, ref: str) -> Path:
    return state / ref.replace("/", "__")


def record(state: Path, ctx: JobContext, ref: str, note: str = "") -> None:
    token = ctx.fence_token
    cell(state, ref).write_text(f"{ctx.job_run_id} {os.getpid()} {ctx.attempt} {token} {note}".strip())


def text(path: Path | str) -> str:
    return Path(path).read_text()


def pids_in(path: Path | str) -> list[int]:
    """The pids a job printed as ``pid N`` (tests/jobs/hang.py). Its shell and its Python print at the same time into
    one file, so two lines can interleave (``pid 26546pid 26550``): read every ``pid N`` wherever it is."""
    return [int(pid) for pid in re.findall(r"pid (\d+)", text(path))]


def read(state: Path, ref: str) -> list[str]:
    """``[run id, pid, attempt, fencing token, ...]`` as the job recorded them."""
    return cell(state, ref).read_text().split()


def graph(state: Path, executor: Executor | None, *, retries: int = 0, timeout: float | None = None,
          heartbeat_timeout: float | None = None, resources: dict[str, float] | None = None,
          slow_for: float = 30.0) -> Graph:
    """``fast/{x}`` (async), ``sync/{x}`` (a plain function), ``down/{x}`` (needs ``fast/{x}``: reports it missing
    until it is built), ``slow/{x}`` (attempt 1 records itself and sleeps ``slow_for`` s; later attempts finish),
    ``blocking/{x}`` (blocks the worker's event loop for 3 s, then succeeds), ``beat/{x}`` (heartbeats for 1.2 s
    then succeeds), ``silent/{x}`` (one heartbeat, then silence)."""
    state.mkdir(parents=True, exist_ok=True)
    g = Graph("executors", default_executor=executor)
    common: dict[str, Any] = {"retries": retries, "timeout": timeout, "resources": resources}

    async def fast(ctx: JobContext) -> None:
        for ref in ctx.partitions:
            record(state, ctx, ref)

    def sync(ctx: JobContext) -> None:
        time.sleep(0.01)
        for ref in ctx.partitions:
            record(state, ctx, ref, "sync")

    async def down(ctx: JobContext) -> None:
        missing = [f"fast/{p['x']}" for p in ctx.params if not cell(state, f"fast/{p['x']}").exists()]
        if missing:
            raise MissingDeps(missing)
        for ref in ctx.partitions:
            record(state, ctx, ref)

    async def slow(ctx: JobContext) -> None:
        for ref in ctx.partitions:
            record(state, ctx, ref, "started")
        if ctx.attempt == 1:
            await anyio.sleep(slow_for)
        for ref in ctx.partitions:
            record(state, ctx, ref, "done")

    async def blocking(ctx: JobContext) -> None:
        for ref in ctx.partitions:
            record(state, ctx, ref, "started")
        time.sleep(3.0)  # noqa: ASYNC251 - a job that blocks the worker's event loop: only the orchestrator can time it out
        for ref in ctx.partitions:
            record(state, ctx, ref, "done")

    async def beat(ctx: JobContext) -> None:
        for _ in range(12):
            ctx.heartbeat()
            await anyio.sleep(0.1)
        for ref in ctx.partitions:
            record(state, ctx, ref)

    async def silent(ctx: JobContext) -> None:
        ctx.heartbeat()
        for ref in ctx.partitions:
            record(state, ctx, ref, "started")
        await anyio.sleep(30)

    jobs: Sequence[tuple[str, Callable[..., Any]]] = (
        ("fast", fast), ("sync", sync), ("down", down), ("slow", slow), ("blocking", blocking), ("beat", beat),
        ("silent", silent),
    )
    for name, fn in jobs:
        extra: dict[str, Any] = {"heartbeat_timeout": heartbeat_timeout} if name in ("beat", "silent") else {}
        g.job(name, outputs=f"{name}/{{x}}", **common, **extra)(fn)
    return g


def add_command(g: Graph, name: str, argv: Sequence[str], **kwargs: Any) -> None:
    from supervisor import Job

    g.add_job(Job.create(name, outputs=f"{name}/{{x}}", command=list(argv), **kwargs))
