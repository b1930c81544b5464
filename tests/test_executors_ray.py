"""Job runs on a real local Ray (a head bound to loopback, with a custom resource, and for one test more nodes that
join it and leave it): few tests, Ray is slow to start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from conftest import need
from executor_jobs import (
    OLD_RUN_SLEEPS,
    TESTS,
    add_command,
    alive,
    assert_never_finished,
    cell,
    check_remote_reads_and_partial_failures,
    graph,
    pids_in,
    proc_stat,
    read,
    sound,
    start_orchestrator,
    wait_for,
)

from actors import JobRunStatus, WantStatus
from supervisor import open_runtime
from supervisor._executors import ExecutorError, RayExecutor

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
        # The cluster learns that a node is gone by its health checks: every 1 s, 3 failed in a row (Ray's default,
        # 5 every 3 s, keeps a removed node's resources on offer, and a retry waiting for them, for 15 s).
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=2,
                 resources={"side": 2}, log_to_driver=False,
                 _system_config={"health_check_period_ms": 1000, "health_check_failure_threshold": 3})
    finally:
        if path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = path
    try:
        # conftest.py's RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is what really keeps Ray on loopback: without it the
        # head listens on every interface and advertises the machine's address.
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        yield ray
    finally:
        ray.shutdown()


def session_pids(sid: int) -> set[int]:
    """The live processes of session ``sid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with suppress(OSError):
                fields = proc_stat(entry)
                if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                    found.add(int(entry))
    return found


@dataclass
class RayNode:
    """A Ray node made by ``tests/ray_node.py`` in a session of its own: its processes are that session's."""

    proc: subprocess.Popen[str]
    node_id: str

    def pids(self) -> set[int]:
        return session_pids(self.proc.pid)

    def remove(self) -> set[int]:
        """SIGKILL every process of the node at once (raylet, agents, workers, the helper): a machine lost."""
        killed: set[int] = set()
        deadline = time.monotonic() + 10
        while pids := self.pids():  # again until none is left: a process may fork while the others die
            assert time.monotonic() < deadline, f"the Ray node's processes {sorted(pids)} do not die"
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed |= pids
            time.sleep(0.01)
        self.proc.wait()  # reaped only now: the session id cannot be reused while it was being swept
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        return killed


@contextmanager
def ray_node(ray: Any, resources: dict[str, float]) -> Iterator[RayNode]:
    """One more node of ``ray``'s cluster on this machine (1 CPU and ``resources``), removed when done."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "ray_node.py"), ray.get_runtime_context().gcs_address, json.dumps(resources)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )
    node = RayNode(proc, "")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == ["node"], f"tests/ray_node.py did not start a node (exit code {proc.poll()})"
        node.node_id = line[1]
        deadline = time.monotonic() + 30
        while not any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()):
            assert time.monotonic() < deadline, "the new Ray node did not join the cluster within 30 s"
            time.sleep(0.05)
        yield node
    finally:
        node.remove()


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


async def test_a_ray_node_removed_mid_run_fails_the_run_and_the_retry_runs_on_its_replacement(
        cluster: Any, tmp_path: Path) -> None:
    """A second Ray node (raylet, agents, workers: all its processes) vanishes while a job pinned to it by a
    resource runs there: the run Fails saying the node died, and the retry waits for a node with that resource and
    succeeds on the one that replaces it; one success."""
    g = graph(tmp_path / "state", RayExecutor(), retries=1, resources={"nodeB": 1})
    with ray_node(cluster, {"nodeB": 1}) as first_node:
        async with open_runtime(tmp_path / "wb.db", g) as rt:
            h = await rt.want("slow/1")
            await wait_for(lambda: cell(tmp_path / "state", "slow/1").exists())
            worker = int(read(tmp_path / "state", "slow/1")[1])
            assert worker in first_node.pids()
            assert worker in first_node.remove()
            await wait_for(lambda: rt.runs()[0].terminal)
            first = rt.runs()[0]
            assert first.status is JobRunStatus.FAILED
            assert "the Ray node running the job died" in first.reason, first.reason
            assert first_node.node_id in first.reason
            with ExitStack() as stack:  # a node with the resource joins (started off the event loop)
                second_node = await anyio.to_thread.run_sync(stack.enter_context, ray_node(cluster, {"nodeB": 1}))
                assert (await h.done(timeout=120)).status is WantStatus.SUCCESSFUL
                runs = rt.runs()
                assert [str(r.status) for r in runs] == ["Failed", "Succeeded"]
                run_id, pid, attempt, *_ = read(tmp_path / "state", "slow/1")
                assert (run_id, attempt) == (runs[1].job_run_id, "2")
                assert int(pid) in second_node.pids()
                await sound(rt)


async def test_restart_waits_until_ray_has_ended_the_killed_runtimes_driver(cluster: Any, tmp_path: Path) -> None:
    """A runtime (a Ray driver of its own) SIGKILLed with a job running on the cluster: Ray ends its driver's job
    and the job's task; the restarted runtime confirms the job dead (fence) before it leases the partition again,
    the run is Lost, and a new run builds the partition; the old job never finishes."""
    db, state = tmp_path / "wb.db", tmp_path / "state"
    address = cluster.get_runtime_context().gcs_address
    proc = start_orchestrator(tmp_path, db, f"RayExecutor(address={address!r})", resources={"side": 1},
                              slow_for=OLD_RUN_SLEEPS)
    try:
        await wait_for(lambda: cell(state, "slow/1").exists())
        started_at, first = time.monotonic(), read(state, "slow/1")
    finally:
        proc.kill()
        proc.wait()
    g = graph(state, RayExecutor(), resources={"side": 1}, slow_for=0.2)
    with structlog.testing.capture_logs() as logs:
        async with open_runtime(db, g) as rt:
            fenced = [e for e in logs if e["event"] == "fenced the previous runtime's Ray tasks"]
            assert [e["confirmed"] for e in fenced] == [True]
            assert rt.recovery.lost_runs == (first[0],)
            assert rt.get_run(first[0]).status is JobRunStatus.LOST
            await wait_for(lambda: not alive(int(first[1])), timeout=10)  # Ray killed the old driver's task
            h = await rt.want("slow/1")
            assert (await h.done(timeout=60)).status is WantStatus.SUCCESSFUL
            last = read(state, "slow/1")
            assert last[0] != first[0]
            assert last[-1] == "done"
            await sound(rt)
    await assert_never_finished(state, "slow/1", first[0], started_at)


async def test_a_ray_executor_naming_another_cluster_than_the_connected_one_is_refused(cluster: Any,
                                                                                     tmp_path: Path) -> None:
    """Ray already connected to a cluster: a RayExecutor naming another address fails the open, naming both and
    the fix; the connected cluster's own address (spelt with localhost) runs jobs there."""
    connected = cluster.get_runtime_context().gcs_address
    elsewhere = graph(tmp_path / "state", RayExecutor(address="127.0.0.1:1"))
    with pytest.raises(ExecutorError, match=r"RayExecutor\(address='127\.0\.0\.1:1'\): this process is already "
                                            rf"connected to the Ray cluster at {connected} .*ray\.shutdown\(\)"):
        async with open_runtime(tmp_path / "refused.db", elsewhere):
            pass
    same = graph(tmp_path / "state", RayExecutor(address=f"localhost:{connected.rsplit(':', 1)[1]}"))
    async with open_runtime(tmp_path / "wb.db", same) as rt:
        assert (await (await rt.want("fast/1")).done(timeout=60)).status is WantStatus.SUCCESSFUL


async def test_remote_jobs_record_their_reads_and_partial_failures(cluster: Any, tmp_path: Path) -> None:
    """A batch in a Ray worker reads each raw partition into its daily one and fails one day: the reads are
    resolved to generations when the outcome arrives, the bad day alone is Failed, the rest Live."""
    await check_remote_reads_and_partial_failures(RayExecutor(log_dir=str(tmp_path / "logs")), "ray",
                                                  tmp_path / "wb.db")
