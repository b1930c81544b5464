"""Jobs for the executor tests: made by a factory, so that the engine pickles them by value (with the folder they
report into) and any worker runs them. They record where they ran in ``<state>/<ref>`` files. Also what the Dask
and Ray tests share: waiting on conditions, looking at processes, checking a log, a runtime to kill."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from actors import check_log, check_replay_fidelity
from supervisor import Graph, JobContext, MissingDeps, Runtime, open_runtime
from supervisor._executors import Executor

TESTS = Path(__file__).resolve().parent


def cell(state: Path, ref: str) -> Path:
    return state / ref.replace("/", "__")


def record(state: Path, ctx: JobContext, ref: str, note: str = "") -> None:
    """``<state>/<ref>``: the last record; ``<state>/<ref>.history``: every one, a line each."""
    line = f"{ctx.job_run_id} {os.getpid()} {ctx.attempt} {ctx.fence_token} {note}".strip()
    cell(state, ref).write_text(line)
    with open(f"{cell(state, ref)}.history", "a") as f:
        f.write(line + "\n")


def history(state: Path, ref: str) -> list[list[str]]:
    """Every record of ``ref``, oldest first (each as :func:`read` gives one)."""
    return [line.split() for line in text(f"{cell(state, ref)}.history").splitlines()]


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


async def wait_for(pred: Callable[[], bool], timeout: float = 60.0) -> None:
    """Until ``pred()`` holds (looked at every 50 ms), at most ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not pred():  # noqa: ASYNC110 - conditions on files and other processes: nothing to await
            await anyio.sleep(0.05)


async def sound(rt: Runtime) -> None:
    """Once quiet, ``rt``'s log breaks no invariant and replays to the world the runtime holds."""
    await rt.wait_quiescent()
    world, violations = await check_log(rt.log)
    assert [str(v) for v in violations] == []
    assert check_replay_fidelity(rt.world, world) == []


async def check_remote_reads_and_partial_failures(executor: Executor, name: str, db: Path) -> None:
    """A batch on a worker reads each raw partition into its daily one and fails one day: the reads are resolved
    to generations when the outcome arrives, the bad day alone is Failed, the rest Live (the body of the Dask and
    Ray tests of issue 11)."""
    from lineage_graphs import lineage_graph

    from actors import WantStatus

    g, k = lineage_graph(batch=3, executor=executor)
    k.fail["daily/2"] = "an empty source"
    async with open_runtime(db, g) as rt:
        st = await (await rt.want(["daily/1", "daily/2", "daily/3"])).done(timeout=120)
        assert st.status is WantStatus.FAILED
        assert [str(rt.get_partition(f"daily/{i}").status) for i in (1, 2, 3)] == ["Live", "Failed", "Live"]
        run = rt.get_run(rt.get_partition("daily/1").built_by or "")
        assert run.executor == name
        assert run.read == {"raw/1": 1, "raw/2": 1, "raw/3": 1}
        assert run.into == {"raw/1": ("daily/1",), "raw/2": ("daily/2",), "raw/3": ("daily/3",)}
        assert run.failed == {"daily/2": "an empty source"}
        assert sorted((await rt.lineage("daily/3")).nodes) == ["daily/3@2", "raw/3@1"]
        await sound(rt)


def proc_stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, ppid, process group, session, ..."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
        return proc_stat(pid)[0] not in ("Z", "X")
    except (ProcessLookupError, FileNotFoundError):
        return False


def start_orchestrator(tmp: Path, db: Path, executor: str, **graph_kwargs: Any) -> subprocess.Popen[bytes]:
    """A runtime in a child process, on ``graph(tmp / "state", <executor>, **graph_kwargs)`` and the log ``db``:
    it wants ``slow/1`` and then waits until it is killed. ``executor``: Python source that makes the executor,
    e.g. ``"DaskExecutor(address='tcp://127.0.0.1:8786')"``."""
    script = tmp / "orchestrator.py"
    script.write_text(
        "import sys, anyio\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from pathlib import Path\n"
        "from executor_jobs import graph\n"
        "from supervisor import open_runtime\n"
        "from supervisor._executors import DaskExecutor, RayExecutor\n"
        "async def main():\n"
        f"    g = graph(Path({str(tmp / 'state')!r}), {executor}, **{graph_kwargs!r})\n"
        f"    async with open_runtime({str(db)!r}, g) as rt:\n"
        "        await rt.want('slow/1')\n"
        "        await anyio.sleep(1000)\n"
        "anyio.run(main)\n"
    )
    return subprocess.Popen([sys.executable, str(script)], cwd=TESTS.parent)


OLD_RUN_SLEEPS = 3.0
"""How long the killed runtime's ``slow/1`` job sleeps before it records ``done`` (if nothing stops it)."""


async def assert_never_finished(state: Path, ref: str, run_id: str, started_at: float) -> None:
    """Once the job of ``run_id`` (started at ``started_at``, monotonic) would have finished had nothing stopped it,
    it has not recorded ``done`` for ``ref``."""
    await anyio.sleep(max(0.0, started_at + OLD_RUN_SLEEPS + 1.0 - time.monotonic()))
    assert [h for h in history(state, ref) if h[0] == run_id and h[-1] == "done"] == []
