"""Job runs on a real local Ray (one node bound to loopback, with a custom resource): few tests, Ray is slow to
start."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import need
from executor_jobs import TESTS, add_command, cell, graph, pids_in, read

from actors import JobRunStatus, WantStatus, check_log
from supervisor import Runtime, open_runtime
from supervisor._executors import RayExecutor

ray: Any
try:
    import ray
except ImportError:  # pragma: no cover - CI installs it
    ray = None


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A local Ray node with 2 CPUs and 2 units of a ``side`` resource, on loopback, no dashboard."""
    if ray is None:
        need("Ray", "pip install 'wantbuild[ray]'")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray's workers start from the raylet, with the environment the raylet got from this process: the tests'
    # job module must be importable there.
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), path) if p)
    try:
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=2,
                 resources={"side": 2}, log_to_driver=False)
    finally:
        if path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = path
    try:
        yield ray
    finally:
        ray.shutdown()


async def sound(rt: Runtime) -> None:
    await rt.wait_quiescent()
    _, violations = await check_log(rt.log)
    assert [str(v) for v in violations] == []


async def wait_for(pred: Any, timeout: float = 60.0) -> None:
    with anyio.fail_after(timeout):
        while not pred():  # noqa: ASYNC110 - conditions on files and other processes: nothing to await
            await anyio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def test_jobs_run_on_ray_with_resources_timeouts_and_cancel(cluster: Any, tmp_path: Path) -> None:
    """Async, plain-function and command jobs run in Ray workers with a placement hint; a hung command times out
    and its processes die; a canceled want's remote run ends Canceled."""
    logs = tmp_path / "logs"
    g = graph(tmp_path / "state", RayExecutor(log_dir=str(logs), kill_grace=0.5), resources={"side": 1})
    add_command(g, "hang", [sys.executable, str(TESTS / "jobs" / "hang.py")], timeout=1.5)
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        ok = await rt.want(["fast/1", "sync/1", "down/2"])
        hung = await rt.want("hang/1")
        held = await rt.want("slow/2")
        assert (await ok.done(timeout=120)).status is WantStatus.SUCCESSFUL
        assert os.getpid() not in {int(read(tmp_path / "state", r)[1]) for r in ("fast/1", "sync/1", "down/2")}
        assert (await hung.done(timeout=60)).status is WantStatus.FAILED
        hang_run = next(r for r in rt.runs() if r.job == "hang")
        assert hang_run.reason == "timed out after 1.5 s"
        assert hang_run.executor == "ray"
        pids = pids_in(f"{logs}/{hang_run.job_run_id}.stdout")
        await wait_for(lambda: not any(alive(p) for p in pids), timeout=10)
        await wait_for(lambda: cell(tmp_path / "state", "slow/2").exists())
        hold_run = next(r for r in rt.runs() if r.job == "slow")
        await rt.cancel(held.want_id)
        await wait_for(lambda: rt.get_run(hold_run.job_run_id).terminal)
        assert rt.get_run(hold_run.job_run_id).status is JobRunStatus.CANCELED
        assert read(tmp_path / "state", "slow/2")[-1] == "started"
        await sound(rt)


async def test_sigkill_of_the_ray_worker_mid_run_fails_the_run_and_the_retry_succeeds(cluster: Any,
                                                                                      tmp_path: Path) -> None:
    """The Ray worker process running a job is SIGKILLed: the run Fails saying its worker died; the retry
    succeeds, one success."""
    g = graph(tmp_path / "state", RayExecutor(), retries=1, resources={"side": 1})
    async with open_runtime(tmp_path / "wb.db", g) as rt:
        h = await rt.want("slow/1")
        await wait_for(lambda: cell(tmp_path / "state", "slow/1").exists())
        os.kill(int(read(tmp_path / "state", "slow/1")[1]), signal.SIGKILL)
        await wait_for(lambda: rt.runs()[0].terminal)
        first = rt.runs()[0]
        assert first.status is JobRunStatus.FAILED
        assert "the Ray worker running the job died" in first.reason
        assert (await h.done(timeout=120)).status is WantStatus.SUCCESSFUL
        runs = rt.runs()
        assert [str(r.status) for r in runs] == ["Failed", "Succeeded"]
        assert read(tmp_path / "state", "slow/1")[0] == runs[1].job_run_id
        await sound(rt)
